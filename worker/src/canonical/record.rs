//! One record as the worker holds it: its canonical JSON, written once when the record arrives. A listing then
//! costs about its serialized size in memory (a `serde_json::Value` tree of the same records is ~10× larger),
//! comparing two records is comparing bytes, and signing a listing is joining strings.

use super::text::{self, MemberList, Members};
use super::{
    sorted_entries, truncate, write_string, write_value, CanonicalError, Crumb, Owner,
    MAX_SAFE_INTEGER,
};
use serde::de::{self, Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;

/// Set by Kinto on every write: held apart, so a record's canonical JSON is what a `PUT` sends and what a diff
/// compares, and put back in its sorted place when the listing is signed.
const LAST_MODIFIED: &str = "last_modified";
/// Also Kinto's (the collection schema version a record was validated against): set aside by diffs, signed.
const SCHEMA: &str = "schema";

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    last_modified: Option<i64>,
    form: Form,
}

#[derive(Debug, Clone, PartialEq)]
enum Form {
    /// `deleted: true`: what `_since` lists for a deleted record. Never signed, never compared.
    Tombstone(Box<str>),
    /// Canonical JSON of the record without `last_modified`; the byte offset where `,"last_modified":…` goes back
    /// in (after the last key that sorts before it); the `schema` member with the comma before it, so that
    /// cutting it out leaves the canonical JSON of the record without it. Every record has an `id`, which sorts
    /// before both: neither is ever the first member.
    Canonical {
        json: Arc<str>,
        id: Id,
        last_modified_at: u32,
        schema: Option<Range<u32>>,
    },
    /// Holds a value clients would serialize differently (a float, an unsafe integer): kept as parsed, to be
    /// reported when signed and written back as it was when copied.
    Unsignable(Box<(Box<str>, Map<String, Value>, CanonicalError)>),
}

/// A canonical record's id: where it stands in its JSON when it needs no escape there (Kinto's ids never do),
/// else a copy. A listing of 10,000 records then holds 10,000 allocations fewer.
#[derive(Debug, Clone, PartialEq)]
enum Id {
    InJson(Range<u32>),
    Own(Box<str>),
}

impl Record {
    /// A record as Kinto listed it (`{"id": …, "last_modified": …, …}`).
    pub fn from_value(value: Value) -> Result<Self, CanonicalError> {
        let missing_id = |value: &Value| CanonicalError::MissingId(truncate(&value.to_string()));
        let Value::Object(mut map) = value else {
            return Err(missing_id(&value));
        };
        let id: Box<str> = match map.get("id") {
            Some(Value::String(id)) => id.as_str().into(),
            _ => return Err(missing_id(&Value::Object(map))),
        };
        if map.get("deleted") == Some(&Value::Bool(true)) {
            return Ok(Record::tombstone(id));
        }
        let written = (|| {
            let mut members = Members::default();
            for (key, value) in sorted_entries(&map) {
                let at = members.values.len();
                let at_key = Crumb::Key(&Crumb::Root, key);
                write_value(&mut members.values, value, &Owner(&id), &at_key)?;
                members
                    .entries
                    .push((Cow::Borrowed(key.as_str()), at..members.values.len()));
            }
            Ok(members)
        })();
        match written {
            Ok(members) => {
                Ok(assemble(&members.values, members.entries).expect("the record has a string id"))
            }
            Err(e) => {
                map.remove(LAST_MODIFIED);
                Ok(Record {
                    last_modified: None,
                    form: Form::Unsignable(Box::new((id, map, e))),
                })
            }
        }
    }

    /// The JSON text of a record (one item of a listing's `data`), canonical straight from the text; only a
    /// record canonical JSON refuses goes through a `Value`, to be reported precisely.
    pub fn from_json(json: &str) -> Result<Self, CanonicalError> {
        if let Some(record) = text::members(json).and_then(|m| assemble(&m.values, m.entries)) {
            return Ok(record);
        }
        let value = serde_json::from_str(json).map_err(|e| CanonicalError::Unreadable {
            record: truncate(json),
            reason: e.to_string(),
        })?;
        Self::from_value(value)
    }

    fn tombstone(id: Box<str>) -> Self {
        Record {
            last_modified: None,
            form: Form::Tombstone(id),
        }
    }

    pub fn id(&self) -> &str {
        match &self.form {
            Form::Tombstone(id) => id,
            Form::Canonical { json, id, .. } => match id {
                Id::InJson(at) => &json[at.start as usize..at.end as usize],
                Id::Own(id) => id,
            },
            Form::Unsignable(held) => &held.0,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        matches!(self.form, Form::Tombstone(_))
    }

    /// Why clients could not verify this record, if they could not.
    pub fn unsignable(&self) -> Option<&CanonicalError> {
        match &self.form {
            Form::Unsignable(held) => Some(&held.2),
            _ => None,
        }
    }

    /// The record as a `PUT` sends it: everything but `last_modified` (the server assigns a fresh one). `None`
    /// for a tombstone.
    pub fn body(&self) -> Option<Cow<'_, str>> {
        match &self.form {
            Form::Tombstone(_) => None,
            Form::Canonical { json, .. } => Some(Cow::Borrowed(json)),
            Form::Unsignable(held) => Some(Cow::Owned(Value::Object(held.1.clone()).to_string())),
        }
    }

    /// The same record as the server holds it once written with `last_modified` (an atomic publication stamps
    /// each write itself, so what is signed is known before it is written). Shares the text.
    pub fn stamped(&self, last_modified: i64) -> Record {
        Record {
            last_modified: Some(last_modified),
            form: self.form.clone(),
        }
    }

    /// Whether both hold the same data once what Kinto owns (`last_modified`, `schema`) is set aside. A record
    /// that cannot be signed is the same as nothing: a copy always rewrites it.
    pub fn same_content(&self, other: &Record) -> bool {
        match (self.content(), other.content()) {
            (Some((a1, a2)), Some((b1, b2))) => {
                a1.len() + a2.len() == b1.len() + b2.len()
                    && a1
                        .bytes()
                        .chain(a2.bytes())
                        .eq(b1.bytes().chain(b2.bytes()))
            }
            _ => false,
        }
    }

    /// Holds the text of `other` instead of its own when both are the same bytes.
    pub(super) fn share_text(&mut self, other: &Record) {
        if let (Form::Canonical { json, .. }, Form::Canonical { json: theirs, .. }) =
            (&mut self.form, &other.form)
        {
            if json == theirs {
                *json = Arc::clone(theirs);
            }
        }
    }

    /// The canonical JSON without `schema`, in the two pieces around it.
    fn content(&self) -> Option<(&str, &str)> {
        let Form::Canonical { json, schema, .. } = &self.form else {
            return None;
        };
        Some(match schema {
            Some(r) => (&json[..r.start as usize], &json[r.end as usize..]),
            None => (json, ""),
        })
    }

    /// Hands `sink` the record as clients verify it: its canonical JSON with `last_modified` in place.
    pub(super) fn write_signed(&self, sink: &mut impl FnMut(&[u8])) {
        let Form::Canonical {
            json,
            last_modified_at,
            ..
        } = &self.form
        else {
            unreachable!("only signable records are written: ensure_signable comes first")
        };
        let Some(last_modified) = self.last_modified else {
            sink(json.as_bytes());
            return;
        };
        let (before, after) = json.as_bytes().split_at(*last_modified_at as usize);
        sink(before);
        sink(b",\"last_modified\":");
        sink(itoa::Buffer::new().format(last_modified).as_bytes());
        sink(after);
    }
}

/// A record from its top-level members (values already canonical): `None` without a string `id`. Only a
/// timestamp that signs as itself is held apart; anything else in `last_modified` stays a field.
fn assemble(values: &str, mut entries: MemberList<'_>) -> Option<Record> {
    text::sort_members(&mut entries);
    let value = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, r)| &values[r.clone()])
    };
    let id_text = value("id")?;
    // Canonical text: a string without a backslash is its quotes around the id itself.
    let plain = id_text.len() >= 2 && id_text.starts_with('"') && !id_text.contains('\\');
    let own_id = || {
        serde_json::from_str::<String>(id_text)
            .ok()
            .map(Box::<str>::from)
    };
    if value("deleted") == Some("true") {
        return Some(Record::tombstone(own_id()?));
    }
    let mut id = if plain {
        None
    } else {
        Some(Id::Own(own_id()?))
    };
    let last_modified = value(LAST_MODIFIED)
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|t| t.unsigned_abs() <= MAX_SAFE_INTEGER);
    let (json, last_modified_at, schema) = LAYOUT.with_borrow_mut(|json| {
        json.clear();
        let mut last_modified_at = 0;
        let mut schema = None;
        json.push('{');
        for (key, range) in &entries {
            if key == LAST_MODIFIED && last_modified.is_some() {
                continue;
            }
            let start = json.len();
            if start > 1 {
                json.push(',');
            }
            write_string(json, key);
            json.push(':');
            json.push_str(&values[range.clone()]);
            if key == "id" && id.is_none() {
                id = Some(Id::InJson(
                    offset(json.len() - id_text.len() + 1)..offset(json.len() - 1),
                ));
            }
            if key == SCHEMA {
                schema = Some(offset(start)..offset(json.len()));
            }
            if &**key < LAST_MODIFIED {
                last_modified_at = offset(json.len());
            }
        }
        json.push('}');
        (Arc::<str>::from(json.as_str()), last_modified_at, schema)
    });
    Some(Record {
        last_modified,
        form: Form::Canonical {
            json,
            id: id.expect("the id is among the members"),
            last_modified_at,
            schema,
        },
    })
}

/// A record read straight off a listing's text by a deserializer standing on it (`listing`'s fast path):
/// refused, for the slow path to explain, unless it is a record with a string id that canonical JSON takes.
pub(super) struct Streamed(pub Record);

impl<'de> Deserialize<'de> for Streamed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        VALUES.with_borrow_mut(|values| {
            values.clear();
            let entries = text::read_members(deserializer, values)?;
            assemble(values, entries)
                .map(Streamed)
                .ok_or_else(|| de::Error::custom("a record needs a string id"))
        })
    }
}

thread_local! {
    /// Where a streamed record's members are written before they are laid out in key order.
    static VALUES: RefCell<String> = const { RefCell::new(String::new()) };
    /// Where a record's canonical JSON is laid out before it gets an allocation of its own, of its exact size:
    /// one buffer per thread rather than one per record (a page of a listing is thousands of records).
    static LAYOUT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records are far smaller than 4 GiB (Kinto refuses bodies of more than a few MB).
fn offset(at: usize) -> u32 {
    u32::try_from(at).expect("a record is smaller than 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(value: Value) -> Record {
        Record::from_value(value).unwrap()
    }

    fn signed(value: Value) -> String {
        let mut out = Vec::new();
        record(value).write_signed(&mut |piece| out.extend_from_slice(piece));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_id_is_read_back_as_it_was_written_whether_or_not_its_json_escapes_it() {
        for id in [
            "a",
            "ab-12_Z",
            "é\u{1F600}",
            "quote\"back\\slash",
            "\u{1}",
            "",
        ] {
            let from_text =
                Record::from_json(&json!({"aa":1,"id":id,"z":[id],"last_modified":7}).to_string());
            for r in [record(json!({"id": id, "title": id})), from_text.unwrap()] {
                assert_eq!(r.id(), id);
                assert_eq!(r.clone().id(), id);
            }
        }
        let tombstone = record(json!({"id":"gone-é","deleted":true}));
        assert!(tombstone.is_tombstone());
        assert_eq!(tombstone.id(), "gone-é");
        assert_eq!(record(json!({"id":"f","x":1.5})).id(), "f");
    }

    #[test]
    fn a_stamped_record_signs_with_its_new_timestamp_and_the_same_content() {
        let r = record(json!({"id":"a","last_modified":5,"z":1}));
        let stamped = r.stamped(1_700_000_000_123);
        assert!(stamped.same_content(&r));
        let mut text = Vec::new();
        stamped.write_signed(&mut |b: &[u8]| text.extend_from_slice(b));
        assert_eq!(
            String::from_utf8(text).unwrap(),
            r#"{"id":"a","last_modified":1700000000123,"z":1}"#
        );
    }

    #[test]
    fn last_modified_goes_back_in_its_sorted_place() {
        assert_eq!(
            signed(json!({"id":"a","last_modified":5})),
            r#"{"id":"a","last_modified":5}"#
        );
        assert_eq!(
            signed(json!({"id":"a","z":1,"last_modified":5})),
            r#"{"id":"a","last_modified":5,"z":1}"#
        );
        assert_eq!(
            signed(json!({"a":1,"id":"x","last_modified":5,"lb":2,"m":3})),
            r#"{"a":1,"id":"x","last_modified":5,"lb":2,"m":3}"#,
            "\"last_modified\" sorts after \"la\" and before \"lb\""
        );
        assert_eq!(
            signed(json!({"last_modified":5,"zid":"a","id":"q"})),
            r#"{"id":"q","last_modified":5,"zid":"a"}"#
        );
        assert_eq!(signed(json!({"id":"a"})), r#"{"id":"a"}"#);
    }

    #[test]
    fn the_body_leaves_last_modified_out_and_keeps_schema() {
        let r = record(json!({"id":"a","last_modified":5,"schema":9,"v":"é"}));
        assert_eq!(r.body().unwrap(), r#"{"id":"a","schema":9,"v":"\u00e9"}"#);
        assert_eq!(record(json!({"id":"t","deleted":true})).body(), None);
    }

    #[test]
    fn content_sets_last_modified_and_schema_aside_wherever_schema_sorts() {
        let base = record(json!({"id":"a","v":1}));
        for other in [
            json!({"id":"a","v":1,"schema":3,"last_modified":9}),
            json!({"id":"a","v":1,"last_modified":8}),
        ] {
            assert!(base.same_content(&record(other.clone())), "{other}");
            assert!(record(other.clone()).same_content(&base), "{other}");
        }
        // `schema` last, or between other keys.
        assert!(record(json!({"id":"s","schema":1})).same_content(&record(json!({"id":"s"}))));
        assert!(record(json!({"id":"s","r":0,"schema":1,"t":2}))
            .same_content(&record(json!({"id":"s","r":0,"t":2}))));
        assert!(!base.same_content(&record(json!({"id":"a","v":2}))));
        assert!(!base.same_content(&record(json!({"id":"a","v":1,"w":null}))));
    }

    #[test]
    fn unsignable_records_keep_their_data_and_error_and_match_nothing() {
        let r = Record::from_json(r#"{"id":"f","price":1.5,"last_modified":4}"#).unwrap();
        assert_eq!(
            r.unsignable().map(ToString::to_string).as_deref(),
            Some("record \"f\": field price contains a float value 1.5 (tip: use an integer or a string)")
        );
        assert_eq!(r.body().unwrap(), r#"{"id":"f","price":1.5}"#);
        assert!(!r.same_content(&r.clone()));
        let odd = record(json!({"id":"o","last_modified":"yesterday"}));
        assert_eq!(
            odd.body().unwrap(),
            r#"{"id":"o","last_modified":"yesterday"}"#
        );
    }

    #[test]
    fn identical_texts_are_shared_and_others_kept() {
        let source = record(json!({"id":"a","v":1,"last_modified":1}));
        let mut copy = record(json!({"id":"a","v":1,"last_modified":2}));
        let mut other = record(json!({"id":"a","v":2,"last_modified":2}));
        copy.share_text(&source);
        other.share_text(&source);
        let text = |r: &Record| match &r.form {
            Form::Canonical { json, .. } => Arc::clone(json),
            _ => unreachable!(),
        };
        assert!(Arc::ptr_eq(&text(&copy), &text(&source)));
        assert_eq!(copy.last_modified, Some(2), "the timestamp stays its own");
        assert_eq!(&*text(&other), r#"{"id":"a","v":2}"#);
    }

    #[test]
    fn a_record_needs_a_string_id() {
        for text in [r#"{"x":1}"#, r#"{"id":3}"#, "[1]"] {
            assert!(
                matches!(Record::from_json(text), Err(CanonicalError::MissingId(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn text_that_is_not_json_is_refused_as_unreadable_not_as_a_missing_id() {
        for (text, reason) in [
            (
                r#"{"id":"a","t":"x\ud800y"}"#,
                "unexpected end of hex escape",
            ),
            (r#"{"id":"a","t":"\udc00"}"#, "lone leading surrogate"),
            ("not json", "expected ident"),
        ] {
            match Record::from_json(text) {
                Err(CanonicalError::Unreadable {
                    record,
                    reason: why,
                }) => {
                    assert_eq!(record, text);
                    assert!(why.contains(reason), "{text}: {why}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_text_path_and_the_value_path_agree() {
        let texts = [
            r#"{"id":"a","last_modified":5,"z":[1,{"b":2,"a":[]}],"m":{"y":null,"x":true},"s":"é\n😀"}"#,
            r#"{"z":1,"id":"k\u00e9y","schema":3,"\u00e9":"escaped key","é":"same key, last wins"}"#,
            r#"{"id":"t","deleted":true,"last_modified":9}"#,
            r#"{"id":"t2","deleted":true,"f":1.5}"#,
            r#"{"id":"f","n":{"x":[1,2.5]},"last_modified":7}"#,
            r#"{"id":"big","n":9007199254740993}"#,
            r#"{"id":"neg","n":-9007199254740992,"z":-0}"#,
            r#"{"id":"lm","last_modified":"soon"}"#,
            r#"{"id":"e","o":{},"a":[],"last_modified":18446744073709551615}"#,
            r#"{"id":"dup","v":1,"v":2}"#,
            r#"{"id":"nest","o":{"b":1,"a":{"d":[{"z":1,"y":"é"}],"c":2},"b":3},"l":[{"q":1,"p":{}}]}"#,
        ];
        for text in texts {
            let value = Record::from_value(serde_json::from_str(text).unwrap()).unwrap();
            assert_eq!(Record::from_json(text).unwrap(), value, "{text}");
        }
        assert!(
            text::members(texts[0]).is_some(),
            "the fast path takes plain records"
        );
        assert!(
            text::members(texts[4]).is_none(),
            "and leaves floats to the value path"
        );
    }

    #[test]
    fn a_page_shares_the_texts_of_the_records_it_was_copied_from() {
        let source = record(json!({"id":"a","v":1,"last_modified":1}));
        let page =
            r#"{"data":[{"id":"a","v":1,"last_modified":2},{"id":"b","v":1,"last_modified":2}]}"#;
        let mut reader =
            crate::canonical::PageReader::new(|id: &str| (id == "a").then_some(&source));
        reader.feed(page.as_bytes()).unwrap();
        let parsed = reader.finish().unwrap();
        let text = |r: &Record| match &r.form {
            Form::Canonical { json, .. } => Arc::clone(json),
            _ => unreachable!(),
        };
        assert!(Arc::ptr_eq(&text(&parsed[0]), &text(&source)));
        assert_eq!(parsed[0].last_modified, Some(2));
        assert_eq!(&*text(&parsed[1]), r#"{"id":"b","v":1}"#);
    }
}
