//! Source vs destination, by record id, ignoring what Kinto owns (`last_modified`, `schema`): kinto-signer's
//! `records_diff`, which replaced the `_since`-based push that could lose records (kinto-signer #816).

use crate::canonical::Record;
use crate::kinto::{Listing, Write};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Diff<'a> {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Deletions first, then puts, each group sorted by id (deterministic batches). Puts borrow the source
    /// records; the client leaves out `last_modified`, so the destination assigns fresh, monotonic timestamps
    /// (kinto-signer 6.0.0, #779).
    pub writes: Vec<Write<'a>>,
}

pub fn diff_records<'a>(source: &'a [Record], destination: &'a [Record]) -> Diff<'a> {
    fn by_id(records: &[Record]) -> BTreeMap<&str, &Record> {
        records
            .iter()
            .filter(|r| !r.is_tombstone())
            .map(|r| (r.id(), r))
            .collect()
    }
    let src = by_id(source);
    let dst = by_id(destination);
    let mut diff = Diff::default();
    for id in dst.keys().filter(|id| !src.contains_key(*id)) {
        diff.deleted += 1;
        diff.writes.push(Write::Delete { id });
    }
    for (id, record) in &src {
        let Some(data) = record.body() else { continue };
        match dst.get(id) {
            Some(existing) if record.same_content(existing) => continue,
            Some(_) => diff.updated += 1,
            None => diff.created += 1,
        }
        diff.writes.push(Write::Put { id, data });
    }
    diff
}

/// What `before` holds once `diff` (made from `wanted`) is written with the n-th write stamped `stamps_from + n`:
/// the listing an atomic publication signs before writing it. Its timestamp is the last write's stamp.
pub fn stamped(before: &Listing, wanted: &Listing, diff: &Diff<'_>, stamps_from: i64) -> Listing {
    let wanted: BTreeMap<&str, &Record> = wanted
        .records
        .iter()
        .filter(|r| !r.is_tombstone())
        .map(|r| (r.id(), r))
        .collect();
    let mut held: BTreeMap<&str, Record> = before
        .records
        .iter()
        .filter(|r| !r.is_tombstone())
        .map(|r| (r.id(), r.clone()))
        .collect();
    let mut stamp = stamps_from;
    for write in &diff.writes {
        match write {
            Write::Delete { id } => {
                held.remove(*id);
            }
            Write::Put { id, .. } => {
                let record = wanted
                    .get(*id)
                    .expect("a put comes from the wanted records");
                held.insert(id, record.stamped(stamp));
            }
        }
        stamp += 1;
    }
    let timestamp = if diff.writes.is_empty() {
        before.timestamp
    } else {
        stamp - 1
    };
    Listing {
        records: held.into_values().collect(),
        timestamp,
        // Only what this publication wrote is known: the caller asks the server how far that holds.
        settled: before.settled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn records(values: Vec<Value>) -> Vec<Record> {
        values
            .into_iter()
            .map(|v| Record::from_value(v).unwrap())
            .collect()
    }

    fn ids<'a>(diff: &Diff<'a>) -> Vec<&'a str> {
        diff.writes
            .iter()
            .map(|w| match w {
                Write::Put { id, .. } | Write::Delete { id } => *id,
            })
            .collect()
    }

    #[test]
    fn creates_updates_deletes_and_ignores_kinto_fields() {
        let source = records(vec![
            json!({"id":"same","v":1,"last_modified":10}),
            json!({"id":"changed","v":2,"last_modified":11}),
            json!({"id":"new","v":3,"last_modified":12,"schema":5}),
            json!({"id":"gone-in-source","deleted":true,"last_modified":13}),
        ]);
        let destination = records(vec![
            json!({"id":"same","v":1,"last_modified":99,"schema":7}),
            json!({"id":"changed","v":1,"last_modified":98}),
            json!({"id":"stale","v":0,"last_modified":97}),
        ]);
        let diff = diff_records(&source, &destination);
        assert_eq!((diff.created, diff.updated, diff.deleted), (1, 1, 1));
        assert_eq!(ids(&diff), ["stale", "changed", "new"]);
        assert!(matches!(diff.writes[0], Write::Delete { .. }));
        assert!(
            matches!(&diff.writes[1], Write::Put { data, .. } if data == r#"{"id":"changed","v":2}"#)
        );
    }

    #[test]
    fn identical_collections_need_no_writes() {
        let listed = records(vec![json!({"id":"a","n":{"x":[1,2]},"last_modified":1})]);
        let moved = records(vec![json!({"id":"a","n":{"x":[1,2]},"last_modified":2})]);
        assert_eq!(diff_records(&listed, &moved), Diff::default());
        assert_eq!(diff_records(&[], &[]), Diff::default());
    }

    #[test]
    fn a_removed_or_added_field_is_a_change() {
        let with = records(vec![json!({"id":"a","x":1,"y":null})]);
        let without = records(vec![json!({"id":"a","x":1})]);
        assert_eq!(diff_records(&with, &without).updated, 1);
        assert_eq!(diff_records(&without, &with).updated, 1);
    }

    #[test]
    fn emptied_source_deletes_everything() {
        let destination = records(vec![json!({"id":"a"}), json!({"id":"b"})]);
        let diff = diff_records(&[], &destination);
        assert_eq!((diff.deleted, ids(&diff)), (2, vec!["a", "b"]));
    }

    #[test]
    fn a_stamped_listing_is_what_the_target_holds_after_the_writes() {
        let listing = |values: Vec<Value>, timestamp| Listing {
            records: records(values),
            timestamp,
            settled: timestamp,
        };
        let before = listing(
            vec![
                json!({"id":"keep","v":1,"last_modified":5}),
                json!({"id":"change","v":1,"last_modified":6}),
                json!({"id":"drop","v":1,"last_modified":7}),
            ],
            7,
        );
        let wanted = listing(
            vec![
                json!({"id":"keep","v":1,"last_modified":50}),
                json!({"id":"change","v":2,"last_modified":51}),
                json!({"id":"add","v":3,"last_modified":52}),
            ],
            52,
        );
        let diff = diff_records(&wanted.records, &before.records);
        let after = stamped(&before, &wanted, &diff, 100);
        // Writes in order: delete "drop" (100), put "add" (101), put "change" (102).
        assert_eq!(after.timestamp, 102);
        assert_eq!(after.settled, 7);
        let expected = records(vec![
            json!({"id":"add","v":3,"last_modified":101}),
            json!({"id":"change","v":2,"last_modified":102}),
            json!({"id":"keep","v":1,"last_modified":5}),
        ]);
        assert_eq!(after.records, expected);
        let unchanged = stamped(
            &before,
            &before,
            &diff_records(&before.records, &before.records),
            100,
        );
        assert_eq!(unchanged.timestamp, 7);
    }
}
