//! Canonical JSON: the exact bytes Firefox and kinto-signer (canonicaljson-rs) re-serialize before verifying.
//!
//! Keys are sorted explicitly (never trust the map's iteration order: serde_json's `preserve_order` feature
//! anywhere in a build would change it), output is pure ASCII, and every value a client could serialize
//! differently is refused: floats, integers beyond ±2^53 and `-0`.

use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Largest integer magnitude a JavaScript client reproduces exactly (2^53).
const MAX_SAFE_INTEGER: u64 = 1 << 53;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    #[error("record {record_id:?}: field {path} contains a float value {value} (tip: use an integer or a string)")]
    Float {
        record_id: String,
        path: String,
        value: String,
    },
    #[error("record {record_id:?}: field {path} holds the integer {value}, beyond ±2^53 that clients cannot represent exactly")]
    UnsafeInteger {
        record_id: String,
        path: String,
        value: String,
    },
    #[error("record {record_id:?}: field {path} holds -0, which clients serialize differently")]
    NegativeZero { record_id: String, path: String },
    #[error("a record has no string `id`: {0}")]
    MissingId(String),
}

/// Serializes `{"data": <live records sorted by id>, "last_modified": "<timestamp>"}` canonically.
///
/// Tombstones (`deleted: true`) are dropped; duplicate ids keep the last occurrence, as Firefox does.
pub fn signed_payload(records: &[Value], timestamp: u64) -> Result<String, CanonicalError> {
    let mut live: Vec<(&str, &Value)> = Vec::with_capacity(records.len());
    for record in records {
        let id = record
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| CanonicalError::MissingId(truncate(&record.to_string())))?;
        if record.get("deleted").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        live.push((id, record));
    }
    // Stable sort, then keep the last of each run of equal ids.
    live.sort_by(|a, b| a.0.cmp(b.0));
    live.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });

    let mut out = String::with_capacity(records.len() * 256 + 64);
    out.push_str("{\"data\":[");
    for (i, (id, record)) in live.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut path = String::new();
        write_value(&mut out, record, id, &mut path)?;
    }
    out.push_str("],\"last_modified\":\"");
    write!(out, "{timestamp}").expect("writing to a String cannot fail");
    out.push_str("\"}");
    Ok(out)
}

/// Canonical JSON of any value; `context` names the record in errors.
pub fn to_canonical_string(value: &Value, context: &str) -> Result<String, CanonicalError> {
    let mut out = String::new();
    write_value(&mut out, value, context, &mut String::new())?;
    Ok(out)
}

fn write_value(
    out: &mut String,
    value: &Value,
    record_id: &str,
    path: &mut String,
) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n, record_id, path)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let len = path.len();
                write!(path, "[{i}]").expect("writing to a String cannot fail");
                write_value(out, item, record_id, path)?;
                path.truncate(len);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, record_id, path)?,
    }
    Ok(())
}

fn write_object(
    out: &mut String,
    map: &Map<String, Value>,
    record_id: &str,
    path: &mut String,
) -> Result<(), CanonicalError> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    // Rust string order is UTF-8 byte order, i.e. code-point order: what canonicaljson-rs does.
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        write_value(out, value, record_id, path)?;
        path.truncate(len);
    }
    out.push('}');
    Ok(())
}

fn write_number(
    out: &mut String,
    n: &serde_json::Number,
    record_id: &str,
    path: &str,
) -> Result<(), CanonicalError> {
    let field = || {
        if path.is_empty() {
            "(root)".to_owned()
        } else {
            path.to_owned()
        }
    };
    if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(CanonicalError::UnsafeInteger {
                record_id: record_id.into(),
                path: field(),
                value: i.to_string(),
            });
        }
        write!(out, "{i}").expect("writing to a String cannot fail");
        return Ok(());
    }
    if let Some(u) = n.as_u64() {
        return Err(CanonicalError::UnsafeInteger {
            record_id: record_id.into(),
            path: field(),
            value: u.to_string(),
        });
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f == 0.0 && f.is_sign_negative() {
        return Err(CanonicalError::NegativeZero {
            record_id: record_id.into(),
            path: field(),
        });
    }
    Err(CanonicalError::Float {
        record_id: record_id.into(),
        path: field(),
        value: n.to_string(),
    })
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(out, "\\u{unit:04x}").expect("writing to a String cannot fail");
                }
            }
        }
    }
    out.push('"');
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_example_sorts_records_and_keys_and_drops_tombstones() {
        let records = vec![
            json!({"id":"b","last_modified":2,"foo":"bar"}),
            json!({"id":"a","last_modified":1,"z":1,"y":[3,2,1]}),
            json!({"id":"c","deleted":true,"last_modified":3}),
        ];
        assert_eq!(
            signed_payload(&records, 1700000000003).unwrap(),
            r#"{"data":[{"id":"a","last_modified":1,"y":[3,2,1],"z":1},{"foo":"bar","id":"b","last_modified":2}],"last_modified":"1700000000003"}"#
        );
    }

    #[test]
    fn spec_example_empty_collection() {
        assert_eq!(
            signed_payload(&[], 1600000000000).unwrap(),
            r#"{"data":[],"last_modified":"1600000000000"}"#
        );
    }

    #[test]
    fn all_deleted_collection_signs_as_empty() {
        let records = vec![json!({"id":"a","deleted":true,"last_modified":3})];
        assert_eq!(
            signed_payload(&records, 7).unwrap(),
            r#"{"data":[],"last_modified":"7"}"#
        );
    }

    #[test]
    fn spec_example_escapes_unicode_and_controls() {
        let records = vec![
            json!({"id":"x","last_modified":5,"a":"Ich ♥ Bücher","é":"𝄞","q":"\"/\\\n\t\u{1}\u{7f}'"}),
        ];
        assert_eq!(
            signed_payload(&records, 42).unwrap(),
            r#"{"data":[{"a":"Ich \u2665 B\u00fccher","id":"x","last_modified":5,"q":"\"/\\\n\t\u0001\u007f'","\u00e9":"\ud834\udd1e"}],"last_modified":"42"}"#
        );
    }

    #[test]
    fn remaining_escapes() {
        let v = json!("\u{8}\u{c}\r\u{2028}");
        assert_eq!(to_canonical_string(&v, "r").unwrap(), r#""\b\f\r\u2028""#);
    }

    #[test]
    fn keys_sort_by_code_point_not_insertion() {
        let v: Value = serde_json::from_str(r#"{"😀":2,"\ue000":1,"B":0,"a":0}"#).unwrap();
        assert_eq!(
            to_canonical_string(&v, "r").unwrap(),
            r#"{"B":0,"a":0,"\ue000":1,"\ud83d\ude00":2}"#
        );
    }

    #[test]
    fn duplicate_ids_keep_the_last_copy() {
        let records = vec![json!({"id":"a","v":1}), json!({"id":"a","v":2})];
        assert_eq!(
            signed_payload(&records, 1).unwrap(),
            r#"{"data":[{"id":"a","v":2}],"last_modified":"1"}"#
        );
    }

    #[test]
    fn safe_integers_pass_and_unsafe_ones_name_record_and_path() {
        let ok = vec![json!({"id":"a","n":9007199254740992i64,"m":-9007199254740992i64})];
        assert!(signed_payload(&ok, 1).is_ok());
        let bad = vec![json!({"id":"big","nested":{"list":[1, 9007199254740993u64]}})];
        let err = signed_payload(&bad, 1).unwrap_err();
        assert_eq!(
            err,
            CanonicalError::UnsafeInteger {
                record_id: "big".into(),
                path: "nested.list[1]".into(),
                value: "9007199254740993".into()
            }
        );
        let huge = vec![json!({"id":"u","n":18446744073709551615u64})];
        assert!(matches!(
            signed_payload(&huge, 1),
            Err(CanonicalError::UnsafeInteger { .. })
        ));
    }

    #[test]
    fn floats_are_refused_with_record_and_path() {
        let records: Vec<Value> =
            vec![serde_json::from_str(r#"{"id":"rec-1","price":{"eur":1.5}}"#).unwrap()];
        let err = signed_payload(&records, 1).unwrap_err();
        assert_eq!(err.to_string(), "record \"rec-1\": field price.eur contains a float value 1.5 (tip: use an integer or a string)");
        let whole: Vec<Value> = vec![serde_json::from_str(r#"{"id":"w","n":1.0}"#).unwrap()];
        assert!(matches!(
            signed_payload(&whole, 1),
            Err(CanonicalError::Float { .. })
        ));
    }

    #[test]
    fn negative_zero_is_refused() {
        let records: Vec<Value> = vec![serde_json::from_str(r#"{"id":"z","n":-0.0}"#).unwrap()];
        assert!(matches!(
            signed_payload(&records, 1),
            Err(CanonicalError::NegativeZero { .. })
        ));
    }

    #[test]
    fn record_without_id_is_an_error() {
        assert!(matches!(
            signed_payload(&[json!({"x":1})], 1),
            Err(CanonicalError::MissingId(_))
        ));
    }
}
