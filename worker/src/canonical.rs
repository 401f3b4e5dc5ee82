//! Canonical JSON: the exact bytes Firefox and kinto-signer (canonicaljson-rs) re-serialize before verifying.
//!
//! Keys are sorted explicitly (never trust the map's iteration order: serde_json's `preserve_order` feature
//! anywhere in a build would change it), output is pure ASCII, and every value a client could serialize
//! differently is refused: floats, integers beyond ±2^53 and `-0`.

use serde_json::{Map, Value};

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
///
/// Each record is serialized once, in listing order, noting its `id` and `deleted` on the way; then only the
/// small index is sorted and the pieces are joined. (Looking the ids up first, to sort the records themselves,
/// walked every record twice: for a large listing that is mostly cache misses.) A large listing is serialized in
/// two halves on two threads.
pub fn signed_payload(records: &[Value], timestamp: u64) -> Result<String, CanonicalError> {
    let chunks: Vec<Chunk<'_>> = if records.len() >= PARALLEL_ABOVE {
        let (head, tail) = records.split_at(records.len() / 2);
        let (head, tail) = std::thread::scope(|scope| {
            let tail = scope.spawn(|| serialize_chunk(tail, head.len()));
            (
                serialize_chunk(head, 0),
                tail.join().expect("serializing does not panic"),
            )
        });
        vec![head?, tail?]
    } else {
        vec![serialize_chunk(records, 0)?]
    };
    let mut index: Vec<(&Piece<'_>, &str)> = chunks
        .iter()
        .flat_map(|chunk| {
            chunk
                .pieces
                .iter()
                .map(move |piece| (piece, chunk.text.as_str()))
        })
        .filter(|(piece, _)| !piece.deleted)
        .collect();
    // By id, then by position: the last of each run of equal ids is the copy that counts.
    index.sort_unstable_by(|a, b| a.0.id.cmp(b.0.id).then(a.0.position.cmp(&b.0.position)));
    index.dedup_by(|later, earlier| {
        if later.0.id == earlier.0.id {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
    let size: usize = chunks.iter().map(|c| c.text.len() + c.pieces.len()).sum();
    let mut out = String::with_capacity(size + 64);
    out.push_str("{\"data\":[");
    for (i, (piece, text)) in index.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&text[piece.range.clone()]);
    }
    out.push_str("],\"last_modified\":\"");
    out.push_str(itoa::Buffer::new().format(timestamp));
    out.push_str("\"}");
    Ok(out)
}

/// From this many records, a listing is serialized on two threads.
const PARALLEL_ABOVE: usize = 4096;

/// Records serialized back to back, and where each one is.
struct Chunk<'a> {
    text: String,
    pieces: Vec<Piece<'a>>,
}

struct Piece<'a> {
    id: &'a str,
    deleted: bool,
    /// In the listing.
    position: usize,
    range: std::ops::Range<usize>,
}

fn serialize_chunk(records: &[Value], first_position: usize) -> Result<Chunk<'_>, CanonicalError> {
    let mut text = String::new();
    let mut pieces = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        let missing_id = || CanonicalError::MissingId(truncate(&record.to_string()));
        let Value::Object(map) = record else {
            return Err(missing_id());
        };
        let start = text.len();
        let seen = write_object(&mut text, map, &Record(map), &Crumb::Root)?;
        pieces.push(Piece {
            id: seen.id.ok_or_else(missing_id)?,
            deleted: seen.deleted,
            position: first_position + i,
            range: start..text.len(),
        });
        if i == 15 {
            // Size the rest from the first records, rather than grow (and copy) a large buffer many times.
            text.reserve(text.len() / 16 * (records.len() + 1));
        }
    }
    Ok(Chunk { text, pieces })
}

/// The record being serialized, for error messages only (its id is looked up when something is wrong).
struct Record<'a>(&'a Map<String, Value>);

impl Record<'_> {
    fn id(&self) -> String {
        self.0
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    }
}

/// What a record's top level says about it, noticed while it is written.
#[derive(Default)]
struct Seen<'a> {
    id: Option<&'a str>,
    deleted: bool,
}

/// Canonical JSON of any value; `context` names the record in errors.
pub fn to_canonical_string(value: &Value, context: &str) -> Result<String, CanonicalError> {
    let mut out = String::new();
    let context = Map::from_iter([("id".to_owned(), Value::from(context))]);
    write_value(&mut out, value, &Record(&context), &Crumb::Root)?;
    Ok(out)
}

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
    record: &Record<'_>,
    at: &Crumb<'_>,
) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n, record, at)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, record, &Crumb::Index(at, i))?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            write_object(out, map, record, at)?;
        }
    }
    Ok(())
}

/// Writes an object; at a record's top level, also says what its `id` and `deleted` are.
fn write_object<'a>(
    out: &mut String,
    map: &'a Map<String, Value>,
    record: &Record<'_>,
    at: &Crumb<'_>,
) -> Result<Seen<'a>, CanonicalError> {
    // Rust string order is UTF-8 byte order, i.e. code-point order: what canonicaljson-rs does. serde_json's
    // default map already iterates in it; only a build with `preserve_order` pays for a sorted copy.
    if *MAPS_ARE_ORDERED {
        write_entries(out, map.iter(), record, at)
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        write_entries(out, entries.into_iter(), record, at)
    }
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

fn write_entries<'a>(
    out: &mut String,
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    record: &Record<'_>,
    at: &Crumb<'_>,
) -> Result<Seen<'a>, CanonicalError> {
    let mut seen = Seen::default();
    let top = matches!(at, Crumb::Root);
    out.push('{');
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if top {
            match (key.as_str(), value) {
                ("id", Value::String(id)) => seen.id = Some(id),
                ("deleted", Value::Bool(deleted)) => seen.deleted = *deleted,
                _ => {}
            }
        }
        write_string(out, key);
        out.push(':');
        write_value(out, value, record, &Crumb::Key(at, key))?;
    }
    out.push('}');
    Ok(seen)
}

fn write_number(
    out: &mut String,
    n: &serde_json::Number,
    record: &Record<'_>,
    at: &Crumb<'_>,
) -> Result<(), CanonicalError> {
    let field = || match at.render() {
        p if p.is_empty() => "(root)".to_owned(),
        p => p,
    };
    if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(CanonicalError::UnsafeInteger {
                record_id: record.id(),
                path: field(),
                value: i.to_string(),
            });
        }
        out.push_str(itoa::Buffer::new().format(i));
        return Ok(());
    }
    if let Some(u) = n.as_u64() {
        return Err(CanonicalError::UnsafeInteger {
            record_id: record.id(),
            path: field(),
            value: u.to_string(),
        });
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f == 0.0 && f.is_sign_negative() {
        return Err(CanonicalError::NegativeZero {
            record_id: record.id(),
            path: field(),
        });
    }
    Err(CanonicalError::Float {
        record_id: record.id(),
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
                for unit in c.encode_utf16(&mut units) {
                    let escaped = [
                        b'\\',
                        b'u',
                        HEX[usize::from(*unit >> 12)],
                        HEX[usize::from((*unit >> 8) & 0xf)],
                        HEX[usize::from((*unit >> 4) & 0xf)],
                        HEX[usize::from(*unit & 0xf)],
                    ];
                    out.push_str(std::str::from_utf8(&escaped).expect("ASCII"));
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
    fn a_large_listing_is_the_same_bytes_and_the_same_errors_on_two_threads() {
        let n = PARALLEL_ABOVE + 3;
        let records: Vec<Value> = (0..n)
            .rev()
            .map(|i| json!({"id": format!("r{i:05}"), "title": "Bücher", "n": i, "last_modified": i}))
            .collect();
        let parallel = signed_payload(&records, 9).unwrap();
        let one_by_one: Vec<String> = {
            let mut sorted = records.clone();
            sorted.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
            sorted
                .iter()
                .map(|r| to_canonical_string(r, "r").unwrap())
                .collect()
        };
        assert_eq!(
            parallel,
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
            "the error of the second half is reported too"
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
