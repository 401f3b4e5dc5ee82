//! Where the job store reads the time. Left alone, each store keeps its own clock: Postgres's `now()`, which every
//! process sharing the database agrees on (leases, retries and rescues compare times that different machines
//! wrote), and this process's clock for the embedded store. A test sets the time by hand instead, so that a lease
//! expires, a retry falls due or a finished job ages past its retention because the test moved the clock, not
//! because it slept long enough on a busy machine.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Mutex<DateTime<Utc>>>>);

impl Clock {
    /// A clock that stands still at `start` until `advance` moves it.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self(Some(Arc::new(Mutex::new(start))))
    }

    /// Moves a manual clock forward (every store holding a clone sees it).
    ///
    /// # Panics
    /// On the system clock, which nobody moves.
    pub fn advance(&self, by: Duration) {
        let manual = self.0.as_ref().expect("only a manual clock is moved");
        let mut now = manual.lock().expect("clock lock");
        *now += chrono::Duration::from_std(by).expect("a duration a clock can add");
    }

    /// The time set by hand; `None` means "the store's own clock" (Postgres: `COALESCE($n, now())`).
    pub fn fixed(&self) -> Option<DateTime<Utc>> {
        self.0.as_ref().map(|now| *now.lock().expect("clock lock"))
    }

    /// The time set by hand, or this process's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.fixed().unwrap_or_else(Utc::now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_every_clone_sees_it() {
        let start = Utc::now() - chrono::Duration::days(1);
        let clock = Clock::manual(start);
        let clone = clock.clone();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clone.now(), start + chrono::Duration::milliseconds(1500));
        assert!(Clock::default().fixed().is_none());
    }
}
