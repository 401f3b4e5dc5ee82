//! The listings a worker signed last, kept between jobs so that the next job of a collection fetches only
//! what changed since (`KintoClient::refresh`) instead of every record again. A kept listing is what the server
//! held at its timestamp, and a refresh corrects whatever happened since, whoever wrote it. An entry is taken out
//! while a job uses it (a job that fails drops it; the next one lists in full).

use crate::kinto::{KintoClient, KintoError, Listing};
use signer_types::CollectionRef;
use std::collections::HashMap;
use std::sync::Mutex;

pub struct Listings {
    /// By server and collection URI, with the order they were stored in (oldest evicted first).
    entries: Mutex<HashMap<String, (u64, Listing)>>,
    max_records: usize,
}

impl Listings {
    pub fn new(max_records: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_records,
        }
    }

    fn key(kinto: &KintoClient, c: &CollectionRef) -> String {
        format!("{}{}", kinto.base_url(), c.uri())
    }

    /// The collection's records now: the kept listing refreshed, or a full listing when none is kept.
    pub async fn current(
        &self,
        kinto: &KintoClient,
        c: &CollectionRef,
        on_page: impl FnMut(usize),
    ) -> Result<Listing, KintoError> {
        match self.take(kinto, c) {
            Some(listing) => kinto.refresh(c, listing, None).await,
            None => kinto.list_records(c, on_page).await,
        }
    }

    /// The listing kept for the collection, taken out for the job that uses it.
    pub fn take(&self, kinto: &KintoClient, c: &CollectionRef) -> Option<Listing> {
        self.entries
            .lock()
            .expect("listings lock")
            .remove(&Self::key(kinto, c))
            .map(|(_, listing)| listing)
    }

    /// Keeps `listing` for the next job, evicting the oldest entries beyond the record budget.
    pub fn keep(&self, kinto: &KintoClient, c: &CollectionRef, listing: Listing) {
        if listing.records.len() > self.max_records {
            return;
        }
        let mut entries = self.entries.lock().expect("listings lock");
        let order = entries.values().map(|(n, _)| *n).max().map_or(0, |n| n + 1);
        entries.insert(Self::key(kinto, c), (order, listing));
        while entries
            .values()
            .map(|(_, l)| l.records.len())
            .sum::<usize>()
            > self.max_records
        {
            let oldest = entries
                .iter()
                .min_by_key(|(_, (n, _))| *n)
                .map(|(k, _)| k.clone())
                .expect("over budget means not empty");
            entries.remove(&oldest);
        }
    }
}
