//! Source vs destination, by record id, ignoring what Kinto owns (`last_modified`, `schema`): kinto-signer's
//! `records_diff`, which replaced the `_since`-based push that could lose records (kinto-signer #816).

use crate::kinto::Write;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const IGNORED_FIELDS: [&str; 2] = ["last_modified", "schema"];

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Diff {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Deletions first, then puts, each group sorted by id (deterministic batches).
    pub writes: Vec<Write>,
}

pub fn diff_records(source: &[Value], destination: &[Value]) -> Diff {
    let by_id = |records: &'_ [Value]| -> BTreeMap<String, Map<String, Value>> {
        records
            .iter()
            .filter(|r| r.get("deleted").and_then(Value::as_bool) != Some(true))
            .filter_map(|r| Some((r.get("id")?.as_str()?.to_owned(), r.as_object()?.clone())))
            .collect()
    };
    let src = by_id(source);
    let dst = by_id(destination);
    let mut diff = Diff::default();
    for id in dst.keys().filter(|id| !src.contains_key(*id)) {
        diff.deleted += 1;
        diff.writes.push(Write::Delete { id: id.clone() });
    }
    for (id, record) in &src {
        let content = without_ignored(record);
        match dst.get(id) {
            Some(existing) if without_ignored(existing) == content => continue,
            Some(_) => diff.updated += 1,
            None => diff.created += 1,
        }
        let mut data = record.clone();
        // Let the destination assign fresh, monotonic timestamps (kinto-signer 6.0.0, #779).
        data.remove("last_modified");
        diff.writes.push(Write::Put {
            id: id.clone(),
            data: Value::Object(data),
        });
    }
    diff
}

fn without_ignored(record: &Map<String, Value>) -> Map<String, Value> {
    record
        .iter()
        .filter(|(k, _)| !IGNORED_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn creates_updates_deletes_and_ignores_kinto_fields() {
        let source = vec![
            json!({"id":"same","v":1,"last_modified":10}),
            json!({"id":"changed","v":2,"last_modified":11}),
            json!({"id":"new","v":3,"last_modified":12,"schema":5}),
            json!({"id":"gone-in-source","deleted":true,"last_modified":13}),
        ];
        let destination = vec![
            json!({"id":"same","v":1,"last_modified":99,"schema":7}),
            json!({"id":"changed","v":1,"last_modified":98}),
            json!({"id":"stale","v":0,"last_modified":97}),
        ];
        let diff = diff_records(&source, &destination);
        assert_eq!((diff.created, diff.updated, diff.deleted), (1, 1, 1));
        assert_eq!(
            diff.writes,
            vec![
                Write::Delete { id: "stale".into() },
                Write::Put {
                    id: "changed".into(),
                    data: json!({"id":"changed","v":2})
                },
                Write::Put {
                    id: "new".into(),
                    data: json!({"id":"new","v":3,"schema":5})
                },
            ]
        );
    }

    #[test]
    fn identical_collections_need_no_writes() {
        let records = vec![json!({"id":"a","n":{"x":[1,2]},"last_modified":1})];
        let moved = vec![json!({"id":"a","n":{"x":[1,2]},"last_modified":2})];
        assert_eq!(diff_records(&records, &moved), Diff::default());
        assert_eq!(diff_records(&[], &[]), Diff::default());
    }

    #[test]
    fn emptied_source_deletes_everything() {
        let diff = diff_records(&[], &[json!({"id":"a"}), json!({"id":"b"})]);
        assert_eq!(diff.deleted, 2);
    }
}
