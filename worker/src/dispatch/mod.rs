//! Wake-ups: how an idle worker learns that there may be work. The store stays the truth; a missed wake-up
//! only costs latency, bounded by the poll interval.

mod postgres;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;

pub use postgres::PgWaker;

use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// What to claim next.
pub enum Wake {
    /// Whatever is runnable (a notification, a poll, or the sweep that backs up the broker).
    Sweep,
    /// The job a RabbitMQ doorbell named.
    #[cfg(feature = "rabbitmq")]
    Bell(rabbitmq::Bell),
}

pub enum Waker {
    /// `LISTEN` on the Postgres store's channel.
    Postgres(PgWaker),
    /// The embedded store signals in-process.
    Local(Arc<Notify>),
    /// Doorbells from RabbitMQ, and a sweep of the store every poll interval all the same.
    #[cfg(feature = "rabbitmq")]
    Rabbit {
        bells: rabbitmq::Bells,
        swept: tokio::time::Instant,
    },
}

impl Waker {
    /// How idle workers learn of new jobs in `store`: `LISTEN` (unless `listen` is false) or the in-process signal.
    pub fn for_store(store: &Store, listen: bool) -> Self {
        match store {
            Store::Postgres(s) => Waker::Postgres(PgWaker::new(s.pool().clone(), listen)),
            Store::Sqlite(s) => Waker::Local(s.wake_signal()),
        }
    }

    #[cfg(feature = "rabbitmq")]
    pub fn rabbit(bells: rabbitmq::Bells) -> Self {
        Waker::Rabbit {
            bells,
            swept: tokio::time::Instant::now(),
        }
    }

    /// Returns what to claim once a job may be runnable: a wake-up arrived, or `max` elapsed.
    pub async fn wait(&mut self, max: Duration) -> Wake {
        match self {
            Waker::Postgres(waker) => waker.wait(max).await,
            Waker::Local(signal) => {
                let _ = tokio::time::timeout(max, signal.notified()).await;
            }
            #[cfg(feature = "rabbitmq")]
            Waker::Rabbit { bells, swept } => {
                let sweep_at = *swept + max;
                match tokio::time::timeout_at(sweep_at, bells.next()).await {
                    Ok(Some(bell)) => return Wake::Bell(bell),
                    // The consumer is gone (the process is stopping): only the sweep is left.
                    Ok(None) => tokio::time::sleep_until(sweep_at).await,
                    Err(_) => {}
                }
                *swept = tokio::time::Instant::now();
            }
        }
        Wake::Sweep
    }

    /// Whether a successful claim should be followed by another at once. With doorbells, each job has its
    /// own message: claiming past it would only race the workers it was delivered to.
    pub fn claims_greedily(&self) -> bool {
        match self {
            Waker::Postgres(_) | Waker::Local(_) => true,
            #[cfg(feature = "rabbitmq")]
            Waker::Rabbit { .. } => false,
        }
    }
}
