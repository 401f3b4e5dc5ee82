//! Canonical JSON: the exact bytes Firefox and kinto-signer (canonicaljson-rs) re-serialize before verifying.
//!
//! Keys are sorted explicitly (never trust the map's iteration order: serde_json's `preserve_order` feature
//! anywhere in a build would change it), output is pure ASCII, and every value a client could serialize
//! differently is refused: floats, integers beyond ±2^53 and `-0`.

mod listing;
mod payload;
mod record;
mod text;

pub use listing::PageReader;
pub use payload::{ensure_signable, SignedPayload};
pub use record::Record;

use serde_json::{Map, Value};

/// Largest integer magnitude a JavaScript client reproduces exactly (2^53).
const MAX_SAFE_INTEGER: u64 = 1 << 53;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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
    /// Text that is not a JSON value a `String` can hold, a lone UTF-16 surrogate escape (`"\ud800"`) say:
    /// Kinto refuses those on input, so only a server that is not Kinto, or a broken proxy, sends one.
    #[error("a record is not readable JSON ({reason}): {record}")]
    Unreadable { record: String, reason: String },
    #[error("not a page of records (`{{\"data\": [...]}}`): {0}")]
    NotAPage(String),
}

/// Canonical JSON of any value; `context` names the record in errors.
pub fn to_canonical_string(value: &Value, context: &str) -> Result<String, CanonicalError> {
    let mut out = String::new();
    write_value(&mut out, value, &Owner(context), &Crumb::Root)?;
    Ok(out)
}

/// The id of the record being serialized, for error messages.
struct Owner<'a>(&'a str);

/// Where a value sits in its record, kept on the stack and spelled out (`nested.list[1]`) only for an error:
/// the serializer must not pay for a path it almost never reports.
enum Crumb<'a> {
    Root,
    Key(&'a Crumb<'a>, &'a str),
    Index(&'a Crumb<'a>, usize),
}

impl Crumb<'_> {
    fn render(&self) -> String {
        match self {
            Crumb::Root => String::new(),
            Crumb::Key(parent, key) => match parent.render() {
                p if p.is_empty() => (*key).to_owned(),
                p => format!("{p}.{key}"),
            },
            Crumb::Index(parent, i) => format!("{}[{i}]", parent.render()),
        }
    }
}

fn write_value(
    out: &mut String,
    value: &Value,
    owner: &Owner<'_>,
    at: &Crumb<'_>,
) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n, owner, at)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, owner, &Crumb::Index(at, i))?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, value)) in sorted_entries(map).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, value, owner, &Crumb::Key(at, key))?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// An object's entries in canonical order. Rust string order is UTF-8 byte order, i.e. code-point order: what
/// canonicaljson-rs does. serde_json's default map already iterates in it; only a build with `preserve_order`
/// pays for a sorted copy.
fn sorted_entries(map: &Map<String, Value>) -> Entries<'_> {
    if *MAPS_ARE_ORDERED {
        Entries::Ordered(map.iter())
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Entries::Sorted(entries.into_iter())
    }
}

enum Entries<'a> {
    Ordered(serde_json::map::Iter<'a>),
    Sorted(std::vec::IntoIter<(&'a String, &'a Value)>),
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a String, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Entries::Ordered(entries) => entries.next(),
            Entries::Sorted(entries) => entries.next(),
        }
    }
}

/// Keeps the last of each run of neighbours that are `same` (sorted stably, the copy that counts).
pub(crate) fn keep_last_of_runs<T>(items: &mut Vec<T>, same: impl Fn(&T, &T) -> bool) {
    items.dedup_by(|later, earlier| {
        if same(later, earlier) {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
}

/// Whether `serde_json::Map` iterates in key order in this build (a `BTreeMap`: no `preserve_order` feature
/// anywhere in the dependency graph), asked once rather than checked on every object.
static MAPS_ARE_ORDERED: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    let probe: Map<String, Value> = ["b", "c", "a"]
        .into_iter()
        .map(|k| (k.to_owned(), Value::Null))
        .collect();
    probe.keys().is_sorted()
});

fn write_number(
    out: &mut String,
    n: &serde_json::Number,
    owner: &Owner<'_>,
    at: &Crumb<'_>,
) -> Result<(), CanonicalError> {
    let field = || match at.render() {
        p if p.is_empty() => "(root)".to_owned(),
        p => p,
    };
    if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(CanonicalError::UnsafeInteger {
                record_id: owner.0.to_owned(),
                path: field(),
                value: i.to_string(),
            });
        }
        out.push_str(itoa::Buffer::new().format(i));
        return Ok(());
    }
    if let Some(u) = n.as_u64() {
        return Err(CanonicalError::UnsafeInteger {
            record_id: owner.0.to_owned(),
            path: field(),
            value: u.to_string(),
        });
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f == 0.0 && f.is_sign_negative() {
        return Err(CanonicalError::NegativeZero {
            record_id: owner.0.to_owned(),
            path: field(),
        });
    }
    Err(CanonicalError::Float {
        record_id: owner.0.to_owned(),
        path: field(),
        value: n.to_string(),
    })
}

/// Whether an ASCII byte goes out as itself (printable, not a quote or a backslash).
fn verbatim(b: u8) -> bool {
    matches!(b, b' '..=b'~') && b != b'"' && b != b'\\'
}

fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut rest = s;
    while !rest.is_empty() {
        // Runs of printable ASCII (most of any record) are copied whole.
        let run = rest
            .bytes()
            .position(|b| !verbatim(b))
            .unwrap_or(rest.len());
        out.push_str(&rest[..run]);
        rest = &rest[run..];
        let Some(c) = rest.chars().next() else { break };
        rest = &rest[c.len_utf8()..];
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            _ => {
                let mut units = [0u16; 2];
                // Pushed digit by digit: checking the six bytes as UTF-8 cost more than the rest of the escape.
                for unit in c.encode_utf16(&mut units) {
                    out.push_str("\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(char::from(HEX[usize::from((*unit >> shift) & 0xf)]));
                    }
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

    /// The payload of records as Kinto lists them.
    fn signed_payload(values: &[Value], timestamp: u64) -> Result<String, CanonicalError> {
        let records = values
            .iter()
            .map(|v| Record::from_value(v.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        SignedPayload::new(&records, timestamp).map(|p| p.text())
    }

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
    fn a_payload_is_written_in_pieces_that_join_into_its_text() {
        let records: Vec<Record> = [
            json!({"id":"b","last_modified":1_700_000_000_123i64,"t":"é"}),
            json!({"id":"a","deleted":true,"last_modified":3}),
            json!({"id":"c"}),
        ]
        .into_iter()
        .map(|v| Record::from_value(v).unwrap())
        .collect();
        let payload = SignedPayload::new(&records, 1_700_000_000_124).unwrap();
        let mut joined = Vec::new();
        let mut pieces = 0;
        payload.write_to(|piece| {
            joined.extend_from_slice(piece);
            pieces += 1;
        });
        assert!(pieces > 3, "written in pieces, not as one copy");
        let joined = String::from_utf8(joined).unwrap();
        assert_eq!(
            joined,
            r#"{"data":[{"id":"b","last_modified":1700000000123,"t":"\u00e9"},{"id":"c"}],"last_modified":"1700000000124"}"#
        );
        assert_eq!(payload.text(), joined);
    }

    #[test]
    fn a_large_listing_is_its_records_sorted_and_joined() {
        let n = 5000;
        let records: Vec<Value> = (0..n)
            .rev()
            .map(|i| json!({"id": format!("r{i:05}"), "title": "Bücher", "n": i, "last_modified": i}))
            .collect();
        let joined = signed_payload(&records, 9).unwrap();
        let one_by_one: Vec<String> = {
            let mut sorted = records.clone();
            sorted.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
            sorted
                .iter()
                .map(|r| to_canonical_string(r, "r").unwrap())
                .collect()
        };
        assert_eq!(
            joined,
            format!(
                "{{\"data\":[{}],\"last_modified\":\"9\"}}",
                one_by_one.join(",")
            )
        );
        let mut bad = records;
        bad[0]["n"] = json!(1.5);
        let err = signed_payload(&bad, 9).unwrap_err();
        assert_eq!(
            err,
            CanonicalError::Float {
                record_id: format!("r{:05}", n - 1),
                path: "n".into(),
                value: "1.5".into()
            },
            "the first unsignable record in listing order is reported"
        );
    }

    #[test]
    fn record_without_id_is_an_error() {
        assert!(matches!(
            signed_payload(&[json!({"x":1})], 1),
            Err(CanonicalError::MissingId(_))
        ));
    }
}
