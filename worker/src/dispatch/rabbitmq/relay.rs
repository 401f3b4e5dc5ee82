//! The outbox relay: publishes due doorbells with publisher confirms and deletes only what the broker confirmed.
//! Every worker process runs one; they share the outbox through `SKIP LOCKED` and a short hold per row.

use super::{Broker, BrokerError};
use crate::dispatch::PgWaker;
use crate::store::{OutboxEntry, PgStore};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Doorbells published per round trip to the outbox.
const BATCH: i64 = 500;
/// How long a taken doorbell waits for this relay's confirm before another relay may publish it again.
const HOLD: Duration = Duration::from_secs(10);
/// How long a publish may wait for its confirm (well within the hold).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the dead-letter and outbox gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Relay {
    pub broker: Broker,
    pub store: Arc<PgStore>,
    pub listen: bool,
    pub poll_interval: Duration,
}

impl Relay {
    /// Publishes until the broker fails (an error: the supervisor reconnects) or `shutdown`.
    pub async fn session(&self, shutdown: CancellationToken) -> Result<(), BrokerError> {
        let (connection, channel) = self.broker.open().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.broker.error(e))?;
        let metrics = crate::metrics::metrics();
        metrics
            .broker_connected
            .with_label_values(&["relay"])
            .set(1);
        tracing::info!(queue = %self.broker.topology.queue, "outbox relay connected");
        let mut waker = PgWaker::new(self.store.pool().clone(), self.listen);
        let mut gauges_at = tokio::time::Instant::now();
        loop {
            let mut wait = self.poll_interval;
            match self.publish_due(&channel).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(RelayError::Broker(e)) => return Err(self.broker.error(e)),
                Err(RelayError::Store(e)) => {
                    tracing::warn!(error = %e, "outbox relay cannot read the outbox; waiting");
                }
            }
            if gauges_at.elapsed() >= GAUGES_EVERY {
                gauges_at = tokio::time::Instant::now();
                let dead = self
                    .broker
                    .topology
                    .dead_letters(&channel)
                    .await
                    .map_err(|e| self.broker.error(e))?;
                metrics.dead_letters.set(i64::from(dead));
                match self.store.outbox_pending().await {
                    Ok((pending, next_due)) => {
                        metrics.outbox_pending.set(pending);
                        if let Some(due) = next_due {
                            wait = wait.min(
                                (due - chrono::Utc::now())
                                    .to_std()
                                    .unwrap_or(Duration::ZERO),
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "outbox gauge not updated"),
                }
            }
            if !connection.status().connected() {
                return Err(self.broker.lost("the connection closed"));
            }
            tokio::select! {
                () = waker.wait(wait.max(Duration::from_millis(10)).min(GAUGES_EVERY)) => {}
                () = shutdown.cancelled() => {
                    let _ = connection.close(200, "shutdown".into()).await;
                    return Ok(());
                }
            }
        }
    }

    /// One batch: take due doorbells, publish them, wait for the confirms, delete the confirmed ones.
    async fn publish_due(&self, channel: &Channel) -> Result<usize, RelayError> {
        let due = self.store.outbox_take(BATCH, HOLD).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut pending = Vec::with_capacity(due.len());
        let mut failure = None;
        for entry in &due {
            match self.publish(channel, entry).await {
                Ok(confirm) => pending.push((entry, confirm)),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let mut confirmed: Vec<OutboxEntry> = Vec::with_capacity(pending.len());
        for (entry, confirm) in pending {
            match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => confirmed.push(entry.clone()),
                Ok(Ok(Confirmation::Ack(Some(returned)))) => tracing::warn!(job_id = %entry.job_id,
                    reply = %returned.reply_text, "doorbell unroutable; will publish again"),
                Ok(Ok(other)) => tracing::warn!(job_id = %entry.job_id, confirmation = ?other,
                    "broker refused a doorbell; will publish again"),
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    tracing::warn!(job_id = %entry.job_id, "no confirm in time; will publish again")
                }
            }
        }
        let published = confirmed.len();
        if published > 0 {
            self.store.outbox_done(&confirmed).await?;
            crate::metrics::metrics()
                .doorbells_published
                .inc_by(published as u64);
        }
        match failure {
            Some(e) => Err(RelayError::Broker(e)),
            None => Ok(due.len()),
        }
    }

    async fn publish(
        &self,
        channel: &Channel,
        entry: &OutboxEntry,
    ) -> Result<lapin::PublisherConfirm, lapin::Error> {
        let id = entry.job_id.to_string();
        channel
            .basic_publish(
                "".into(),
                self.broker.topology.queue.as_str().into(),
                // Mandatory: a message no queue takes comes back instead of vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                id.as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("text/plain".into())
                    .with_message_id(id.as_str().into()),
            )
            .await
    }
}

enum RelayError {
    Broker(lapin::Error),
    Store(crate::store::StoreError),
}

impl From<crate::store::StoreError> for RelayError {
    fn from(e: crate::store::StoreError) -> Self {
        RelayError::Store(e)
    }
}
