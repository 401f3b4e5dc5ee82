//! Kinto's sync protocol on a listing held in memory: what `_since` returned, folded into what was listed
//! before (pure, so the rules are tested without a server).

use super::Listing;
use crate::canonical::keep_last_of_runs;

/// `base` with `changes` (a `_since` listing from when `base` settled: records modified since, tombstones
/// included) applied: changed records replace their old version, tombstones remove theirs, new records are
/// added; timestamps are the changes'. Re-read records (between settled and the timestamp of `base`) replace
/// themselves with the same content. The changes are matched by sorting them by id rather than through a map
/// keyed by copies of their ids: after a first push they are the whole collection.
pub fn merge_changes(mut base: Listing, changes: Listing) -> Listing {
    let Listing {
        records: mut changed,
        timestamp,
        settled,
    } = changes;
    changed.sort_by(|a, b| a.id().cmp(b.id()));
    // A record listed twice (it changed between pages) counts in its later version.
    keep_last_of_runs(&mut changed, |a, b| a.id() == b.id());
    let mut applied = vec![false; changed.len()];
    base.records.retain_mut(|record| {
        let Ok(i) = changed.binary_search_by(|c| c.id().cmp(record.id())) else {
            return true;
        };
        if std::mem::replace(&mut applied[i], true) {
            return true;
        }
        // The old version takes the new one's place, under the same id: the search order holds.
        std::mem::swap(record, &mut changed[i]);
        !record.is_tombstone()
    });
    base.records.extend(
        changed
            .into_iter()
            .zip(applied)
            .filter(|(r, applied)| !applied && !r.is_tombstone())
            .map(|(r, _)| r),
    );
    Listing {
        records: base.records,
        timestamp,
        settled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Record;
    use serde_json::{json, Value};

    fn listing(records: Vec<Value>, timestamp: i64) -> Listing {
        Listing {
            records: records
                .into_iter()
                .map(|r| Record::from_value(r).unwrap())
                .collect(),
            timestamp,
            settled: timestamp,
        }
    }

    fn by_id(listing: &Listing) -> Vec<(String, Value)> {
        let mut records: Vec<_> = listing
            .records
            .iter()
            .map(|r| {
                let data: Value = serde_json::from_str(&r.body().unwrap()).unwrap();
                (r.id().to_owned(), data["v"].clone())
            })
            .collect();
        records.sort_by(|a, b| a.0.cmp(&b.0));
        records
    }

    #[test]
    fn changes_replace_add_and_tombstones_remove() {
        let base = listing(
            vec![
                json!({"id": "a", "v": 1, "last_modified": 10}),
                json!({"id": "b", "v": 1, "last_modified": 11}),
                json!({"id": "c", "v": 1, "last_modified": 12}),
            ],
            12,
        );
        let changes = listing(
            vec![
                json!({"id": "b", "v": 2, "last_modified": 13}),
                json!({"id": "c", "deleted": true, "last_modified": 14}),
                json!({"id": "d", "v": 1, "last_modified": 15}),
                // A tombstone of a record never seen (created and deleted since): nothing to remove.
                json!({"id": "e", "deleted": true, "last_modified": 16}),
            ],
            16,
        );
        let merged = merge_changes(base, changes);
        assert_eq!(merged.timestamp, 16);
        assert_eq!(
            by_id(&merged),
            vec![
                ("a".into(), json!(1)),
                ("b".into(), json!(2)),
                ("d".into(), json!(1))
            ]
        );
    }

    #[test]
    fn re_read_records_of_the_overlap_change_nothing() {
        let records = vec![
            json!({"id": "a", "v": 1, "last_modified": 10}),
            json!({"id": "b", "v": 1, "last_modified": 11}),
        ];
        let merged = merge_changes(
            listing(records.clone(), 11),
            listing(vec![records[1].clone()], 11),
        );
        assert_eq!(merged.records.len(), 2);
        assert_eq!(by_id(&merged), by_id(&listing(records, 11)));
    }

    #[test]
    fn a_late_commit_with_an_older_timestamp_is_picked_up_from_the_overlap() {
        // `x` was written at 9 but committed after the base listing (timestamp 11) was read.
        let base = listing(vec![json!({"id": "a", "v": 1, "last_modified": 11})], 11);
        let changes = listing(
            vec![
                json!({"id": "x", "v": 1, "last_modified": 9}),
                json!({"id": "a", "v": 1, "last_modified": 11}),
            ],
            11,
        );
        let merged = merge_changes(base, changes);
        assert_eq!(
            by_id(&merged),
            vec![("a".into(), json!(1)), ("x".into(), json!(1))]
        );
    }

    #[test]
    fn a_record_listed_twice_counts_in_its_later_version() {
        let base = listing(vec![json!({"id": "a", "v": 1, "last_modified": 10})], 10);
        let changes = listing(
            vec![
                json!({"id": "b", "v": 1, "last_modified": 11}),
                json!({"id": "a", "v": 2, "last_modified": 12}),
                json!({"id": "b", "v": 3, "last_modified": 13}),
                json!({"id": "a", "v": 4, "last_modified": 14}),
            ],
            14,
        );
        let merged = merge_changes(base, changes);
        assert_eq!(
            by_id(&merged),
            vec![("a".into(), json!(4)), ("b".into(), json!(3))]
        );
        assert_eq!(merged.records.len(), 2);
    }
}
