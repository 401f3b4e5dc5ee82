//! Wake-ups: how an idle worker learns that there may be work. The store stays the truth; a missed wake-up
//! only costs latency, bounded by the poll interval.

mod postgres;

pub use postgres::PgWaker;

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub enum Waker {
    /// `LISTEN` on the Postgres store's channel.
    Postgres(PgWaker),
    /// The embedded store signals in-process.
    Local(Arc<Notify>),
}

impl Waker {
    /// Returns when a job may be runnable: a wake-up arrived, or `max` elapsed.
    pub async fn wait(&mut self, max: Duration) {
        match self {
            Waker::Postgres(waker) => waker.wait(max).await,
            Waker::Local(signal) => {
                let _ = tokio::time::timeout(max, signal.notified()).await;
            }
        }
    }
}
