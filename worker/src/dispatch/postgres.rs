//! `LISTEN signer_jobs` on a dedicated connection, with the poll interval as the safety net (and the only
//! mechanism when the listener cannot connect, e.g. behind PgBouncer in transaction mode).

use crate::store::postgres_channel;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::Duration;

pub struct PgWaker {
    pool: PgPool,
    listener: Option<PgListener>,
    enabled: bool,
}

impl PgWaker {
    /// `listen = false` is the poll-only mode.
    pub fn new(pool: PgPool, listen: bool) -> Self {
        Self {
            pool,
            listener: None,
            enabled: listen,
        }
    }

    /// Returns when a job may be runnable: a notification arrived, or `max` elapsed.
    pub async fn wait(&mut self, max: Duration) {
        if self.enabled && self.listener.is_none() {
            self.listener = self.connect().await;
        }
        let Some(listener) = self.listener.as_mut() else {
            tokio::time::sleep(max).await;
            return;
        };
        match tokio::time::timeout(max, listener.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "job listener lost its connection; polling until it reconnects");
                self.listener = None;
            }
        }
    }

    async fn connect(&self) -> Option<PgListener> {
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the job listener; polling");
                return None;
            }
        };
        match listener.listen(postgres_channel()).await {
            Ok(()) => Some(listener),
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN refused; polling");
                None
            }
        }
    }
}
