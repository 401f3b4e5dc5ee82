//! Source vs destination, by record id, ignoring what Kinto owns (`last_modified`, `schema`): kinto-signer's
//! `records_diff`, which replaced the `_since`-based push that could lose records (kinto-signer #816).

use crate::canonical::Record;
use crate::kinto::Write;
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
}
