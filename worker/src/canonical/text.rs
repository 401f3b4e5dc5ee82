//! Canonical JSON straight from JSON text, without a `serde_json::Value` tree in between: building and
//! dropping a tree is one allocation per string, array and map node, which is most of the cost of turning a
//! listing into canonical records (perf: malloc and free were three quarters of it).
//!
//! Only the common case is handled here: text that is canonical-able. Anything canonical JSON refuses (a
//! float, an unsafe integer, `-0`) or malformed text answers `None`, and the caller takes the `Value` path,
//! which names the record and the field.

use super::{keep_last_of_runs, write_string, MAX_SAFE_INTEGER};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// Each key of an object with the range of its canonical value in a buffer of values.
pub(super) type MemberList<'k> = Vec<(Cow<'k, str>, Range<usize>)>;

/// An object's members in text order, with the buffer their values are written in.
#[derive(Default)]
pub(super) struct Members<'k> {
    pub values: String,
    pub entries: MemberList<'k>,
}

/// The members of the JSON object `json`, each value already canonical.
pub(super) fn members(json: &str) -> Option<Members<'_>> {
    let mut values = String::with_capacity(json.len());
    let mut de = serde_json::Deserializer::from_str(json);
    let entries = read_members(&mut de, &mut values).ok()?;
    de.end().ok()?;
    Some(Members { values, entries })
}

/// The members of the object a deserializer stands on, each value written canonically at the end of `values`.
pub(super) fn read_members<'de, D: Deserializer<'de>>(
    deserializer: D,
    values: &mut String,
) -> Result<MemberList<'de>, D::Error> {
    ObjectMembers(values).deserialize(deserializer)
}

/// Refused by canonical JSON: the caller goes the slow way to say why.
fn refused<E: de::Error>() -> E {
    E::custom("not canonical-able")
}

/// An object's members, each value written canonically at the end of the buffer: a record's top level, and
/// every nested object before it is laid out in key order.
struct ObjectMembers<'o>(&'o mut String);

impl<'de> DeserializeSeed<'de> for ObjectMembers<'_> {
    type Value = MemberList<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectMembers<'_> {
    type Value = MemberList<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let out = self.0;
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(Key(key)) = map.next_key()? {
            let at = out.len();
            map.next_value_seed(Canonical(&mut *out))?;
            entries.push((key, at..out.len()));
        }
        Ok(entries)
    }
}

/// A key, borrowed from the text unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Writes one value canonically at the end of the buffer.
struct Canonical<'o>(&'o mut String);

impl<'de> DeserializeSeed<'de> for Canonical<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canonical<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.push_str("null");
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push_str(if v { "true" } else { "false" });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        if v.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(refused());
        }
        self.0.push_str(itoa::Buffer::new().format(v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        if v > MAX_SAFE_INTEGER {
            return Err(refused());
        }
        self.0.push_str(itoa::Buffer::new().format(v));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(refused())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write_string(self.0, v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push('[');
        let mut first = true;
        loop {
            let at = out.len();
            if !first {
                out.push(',');
            }
            if seq.next_element_seed(Canonical(&mut *out))?.is_none() {
                out.truncate(at);
                break;
            }
            first = false;
        }
        out.push(']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let out = self.0;
        let start = out.len();
        let entries = ObjectMembers(&mut *out).visit_map(map)?;
        write_sorted(out, start, entries);
        Ok(())
    }
}

/// `{"key":value,…}` in canonical key order, in place of the values `entries` range over, written back to back
/// from `start` to the end of `out`. A repeated key keeps its last value, as a parsed map does. Laid out after
/// the values, which are then cut out: the buffer is reused, nothing is allocated per object.
fn write_sorted(out: &mut String, start: usize, mut entries: MemberList<'_>) {
    sort_members(&mut entries);
    let values_end = out.len();
    out.push('{');
    for (i, (key, range)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        out.extend_from_within(range.clone());
    }
    out.push('}');
    out.drain(start..values_end);
}

/// Key order (code points, as canonicaljson-rs), the last of repeated keys kept.
pub(super) fn sort_members(entries: &mut MemberList<'_>) {
    if entries.is_sorted_by(|a, b| a.0 < b.0) {
        return;
    }
    // Stable: equal keys stay in text order, and the last one wins.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    keep_last_of_runs(entries, |a, b| a.0 == b.0);
}
