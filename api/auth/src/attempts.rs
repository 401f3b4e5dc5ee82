//! Failed password attempts, counted per user and per client address over a fixed window: past the limit, a
//! caller is refused before its password is checked (argon2 is expensive on purpose; an attacker must not get to
//! run it at will). Pure: the time (the request's, unix seconds) is passed in.

use std::collections::HashMap;
use std::hash::Hash;

/// Entries kept at most; beyond, expired ones are dropped, then (under a flood of new keys) all.
const MAX_ENTRIES: usize = 10_000;

pub struct Attempts<K> {
    limit: u32,
    window: i64,
    failures: HashMap<K, (u32, i64)>,
}

impl<K: Eq + Hash> Attempts<K> {
    /// `limit` failures per `window` seconds.
    pub fn new(limit: u32, window: i64) -> Self {
        Self {
            limit,
            window,
            failures: HashMap::new(),
        }
    }

    /// `Err(seconds to wait)` while `key` has used up its failures for the current window.
    pub fn check(&self, key: &K, now: i64) -> Result<(), u64> {
        match self.failures.get(key) {
            Some(&(count, since)) if count >= self.limit => {
                let ends = since.saturating_add(self.window);
                if now < ends {
                    Err(u64::try_from(ends - now).unwrap_or(u64::MAX))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&mut self, key: K, now: i64) {
        if self.failures.len() >= MAX_ENTRIES {
            let window = self.window;
            self.failures
                .retain(|_, (_, since)| now < since.saturating_add(window));
            if self.failures.len() >= MAX_ENTRIES {
                self.failures.clear();
            }
        }
        let entry = self.failures.entry(key).or_insert((0, now));
        if now >= entry.1.saturating_add(self.window) {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub fn succeeded(&mut self, key: &K) {
        self.failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_for_the_window_then_lifts() {
        let start = 1_700_000_000;
        let minute = 60;
        let mut attempts = Attempts::new(3, minute);
        for _ in 0..3 {
            assert_eq!(attempts.check(&"ops", start), Ok(()));
            attempts.failed("ops", start);
        }
        let wait = attempts.check(&"ops", start + 20).unwrap_err();
        assert_eq!(wait, 40);
        assert_eq!(attempts.check(&"other", start), Ok(()));
        assert_eq!(attempts.check(&"ops", start + minute), Ok(()));
        attempts.failed("ops", start + minute);
        assert_eq!(
            attempts.check(&"ops", start + minute),
            Ok(()),
            "a new window counts afresh"
        );
        attempts.succeeded(&"ops");
        assert!(attempts.failures.is_empty());
    }

    #[test]
    fn a_flood_of_keys_stays_bounded() {
        let now = 0;
        let mut attempts = Attempts::new(1, 60);
        for n in 0..(MAX_ENTRIES * 2) {
            attempts.failed(n, now);
        }
        assert!(attempts.failures.len() <= MAX_ENTRIES);
    }
}
