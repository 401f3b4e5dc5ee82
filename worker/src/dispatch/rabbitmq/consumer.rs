//! The consumer: deliveries become doorbells for the pool, which acks each one after its claim committed. The
//! prefetch is the process's concurrency, so a busy worker holds no more than it could start.

use super::{Broker, BrokerError};
use crate::store::{JobStore, StoreError};
use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::Acker;
use signer_types::job::Job;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A delivered job id, to be acked once the claim it caused committed (or found nothing to claim).
pub struct Bell {
    pub job_id: Uuid,
    pub redelivered: bool,
    acker: Acker,
}

impl Bell {
    /// Claims the job this doorbell names, then acks it (whether the claim found the job or not: a duplicate is
    /// dropped), or requeues it when the store could not answer.
    pub async fn claim<S: JobStore>(
        self,
        store: &S,
        worker_id: &str,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        let claimed = store.claim_job(worker_id, lease, self.job_id).await;
        let outcome = match &claimed {
            Ok(Some(_)) => "claimed",
            Ok(None) => "duplicate",
            Err(_) => "store-error",
        };
        crate::metrics::metrics()
            .deliveries
            .with_label_values(&[outcome, &self.redelivered.to_string()])
            .inc();
        match claimed {
            Ok(_) => self.ack().await,
            Err(_) => self.requeue().await,
        }
        claimed.map(|job| job.into_iter().collect())
    }

    /// Done with this message. An acker from a connection that has since died cannot ack: the broker
    /// redelivers, and the claim it causes finds nothing.
    pub async fn ack(self) {
        if let Err(e) = self.acker.ack(BasicAckOptions::default()).await {
            tracing::debug!(job_id = %self.job_id, error = %e, "ack not sent; the broker will redeliver");
        }
    }

    /// Could not act on it now (the database is unreachable): back to the queue.
    pub async fn requeue(self) {
        let requeue = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        if let Err(e) = self.acker.nack(requeue).await {
            tracing::debug!(job_id = %self.job_id, error = %e, "nack not sent; the broker will redeliver");
        }
    }
}

/// The pool's end: one doorbell at a time, taken only when a slot is free.
pub struct Bells {
    rx: mpsc::Receiver<Bell>,
}

impl Bells {
    pub async fn next(&mut self) -> Option<Bell> {
        self.rx.recv().await
    }
}

pub(super) struct Consumer {
    broker: Broker,
    prefetch: u16,
    tx: mpsc::Sender<Bell>,
}

impl Consumer {
    pub fn new(broker: Broker, prefetch: u16) -> (Bells, Self) {
        let (tx, rx) = mpsc::channel(1);
        (
            Bells { rx },
            Self {
                broker,
                prefetch: prefetch.max(1),
                tx,
            },
        )
    }

    /// Consumes until the broker fails (an error: the supervisor reconnects) or `shutdown`: then the consumer
    /// is cancelled first, so the broker stops sending, and closing the channel requeues what was not acked.
    pub async fn session(&self, shutdown: CancellationToken) -> Result<(), BrokerError> {
        let (connection, channel) = self.broker.open().await?;
        let fail = |e| self.broker.error(e);
        // QoS is per channel and not part of what a connection recovery replays: set on every session.
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(fail)?;
        let tag = self.broker.name.replace(' ', "-");
        let mut deliveries = channel
            .basic_consume(
                self.broker.topology.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(fail)?;
        let metrics = crate::metrics::metrics();
        metrics
            .broker_connected
            .with_label_values(&["consumer"])
            .set(1);
        tracing::info!(queue = %self.broker.topology.queue, prefetch = self.prefetch, "consuming doorbells");
        loop {
            let delivery = tokio::select! {
                d = deliveries.next() => d,
                () = shutdown.cancelled() => break,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(fail(e)),
                None => return Err(self.broker.lost("the broker cancelled the consumer")),
            };
            let Some(job_id) = job_id(&delivery.data) else {
                metrics
                    .deliveries
                    .with_label_values(&["malformed", &delivery.redelivered.to_string()])
                    .inc();
                tracing::error!(payload = %String::from_utf8_lossy(&delivery.data),
                    "a message that is not a job id; dead-lettering it");
                let _ = delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await;
                continue;
            };
            let bell = Bell {
                job_id,
                redelivered: delivery.redelivered,
                acker: delivery.acker,
            };
            tokio::select! {
                sent = self.tx.send(bell) => if sent.is_err() { break },
                () = shutdown.cancelled() => break,
            }
        }
        let _ = channel
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        let _ = connection.close(200, "shutdown".into()).await;
        Ok(())
    }
}

/// The job id a doorbell carries: its body, a UUID in text.
pub fn job_id(body: &[u8]) -> Option<Uuid> {
    std::str::from_utf8(body).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_doorbell_body_is_a_job_id_and_nothing_else() {
        let id = Uuid::new_v4();
        assert_eq!(job_id(id.to_string().as_bytes()), Some(id));
        assert_eq!(job_id(b"not-a-uuid"), None);
        assert_eq!(job_id(&[0xff, 0xfe]), None);
        assert_eq!(job_id(format!("{id}; DROP").as_bytes()), None);
    }
}
