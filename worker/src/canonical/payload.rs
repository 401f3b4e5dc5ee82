//! The bytes a collection's signature covers: its live records, canonical and sorted by id, and its timestamp.

use super::{CanonicalError, Record};

/// Fails with the first record (in listing order) that clients could not verify.
pub fn ensure_signable(records: &[Record]) -> Result<(), CanonicalError> {
    match records.iter().find_map(Record::unsignable) {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    }
}

/// `{"data": <live records sorted by id>, "last_modified": "<timestamp>"}`, canonically, described rather than
/// written out: each record is already canonical JSON, so only a small index is sorted, and the pieces are fed
/// in order to whatever consumes them (a hash needs no copy of a payload as large as the listing).
#[derive(Debug)]
pub struct SignedPayload<'a> {
    records: &'a [Record],
    /// Positions in `records` of the records signed, in signed order.
    order: Vec<u32>,
    timestamp: String,
}

impl<'a> SignedPayload<'a> {
    /// Tombstones (`deleted: true`) are dropped; duplicate ids keep the last occurrence, as Firefox does.
    pub fn new(records: &'a [Record], timestamp: u64) -> Result<Self, CanonicalError> {
        ensure_signable(records)?;
        let mut index: Vec<(&str, u32)> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_tombstone())
            .map(|(position, r)| (r.id(), position_of(position)))
            .collect();
        // By id, then by position: the last of each run of equal ids is the copy that counts.
        index.sort_unstable();
        super::keep_last_of_runs(&mut index, |a, b| a.0 == b.0);
        let order: Vec<u32> = index.into_iter().map(|(_, i)| i).collect();
        Ok(SignedPayload {
            records,
            order,
            timestamp: timestamp.to_string(),
        })
    }

    /// Hands the payload's bytes to `sink`, in order, a few pieces per record.
    pub fn write_to(&self, mut sink: impl FnMut(&[u8])) {
        sink(b"{\"data\":[");
        for (n, i) in self.order.iter().enumerate() {
            if n > 0 {
                sink(b",");
            }
            self.records[*i as usize].write_signed(&mut sink);
        }
        sink(b"],\"last_modified\":\"");
        sink(self.timestamp.as_bytes());
        sink(b"\"}");
    }

    /// The whole payload as one string.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        self.write_to(|piece| out.extend_from_slice(piece));
        String::from_utf8(out).expect("canonical JSON is ASCII")
    }
}

/// A listing holds fewer than 4 billion records (Kinto pages them, a worker holds them in memory).
fn position_of(position: usize) -> u32 {
    u32::try_from(position).expect("fewer than 2^32 records")
}
