//! The bytes a collection's signature covers: its live records, canonical and sorted by id, and its timestamp.

use super::{CanonicalError, Record};

/// Fails with the first record (in listing order) that clients could not verify.
pub fn ensure_signable(records: &[Record]) -> Result<(), CanonicalError> {
    match records.iter().find_map(Record::unsignable) {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    }
}

/// `{"data": <live records sorted by id>, "last_modified": "<timestamp>"}`, canonically.
///
/// Tombstones (`deleted: true`) are dropped; duplicate ids keep the last occurrence, as Firefox does. Each
/// record is already canonical JSON: only a small index is sorted, then the pieces are joined.
pub fn signed_payload(records: &[Record], timestamp: u64) -> Result<String, CanonicalError> {
    ensure_signable(records)?;
    let mut index: Vec<(&str, usize)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.is_tombstone())
        .map(|(position, r)| (r.id(), position))
        .collect();
    // By id, then by position: the last of each run of equal ids is the copy that counts.
    index.sort_unstable();
    super::keep_last_of_runs(&mut index, |a, b| a.0 == b.0);
    let size: usize = index
        .iter()
        .map(|(_, i)| records[*i].signed_len() + 1)
        .sum();
    let mut out = String::with_capacity(size + 64);
    out.push_str("{\"data\":[");
    for (n, (_, i)) in index.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        records[*i].write_signed(&mut out);
    }
    out.push_str("],\"last_modified\":\"");
    out.push_str(itoa::Buffer::new().format(timestamp));
    out.push_str("\"}");
    Ok(out)
}
