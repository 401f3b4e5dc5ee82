//! RabbitMQ dispatch: Postgres stays the truth and RabbitMQ carries doorbells.
//! A relay publishes the job ids of the outbox with publisher confirms; a consumer hands each delivery to the
//! pool, which acks it once its claim committed. A duplicate or late id claims nothing and is acked: harmless.
//! Both sides rebuild their connection, channel, QoS and consumer after any broker failure.

mod consumer;
mod relay;

pub use consumer::{Bell, Bells};

use crate::config::RabbitmqSettings;
use crate::error_text::redact;
use crate::store::PgStore;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("RabbitMQ at {url}: {source}")]
    Amqp { url: String, source: lapin::Error },
    #[error("RabbitMQ at {url}: connecting timed out")]
    ConnectTimeout { url: String },
    #[error("RabbitMQ at {url}: {what}")]
    Lost { url: String, what: &'static str },
}

/// The names and arguments every process declares (idempotently) before using the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub delivery_limit: u32,
}

impl Topology {
    pub fn new(settings: &RabbitmqSettings) -> Self {
        Self {
            queue: settings.queue.clone(),
            dead_letter_exchange: format!("{}.dlx", settings.queue),
            dead_letter_queue: format!("{}.dead", settings.queue),
            delivery_limit: settings.delivery_limit,
        }
    }

    /// A replicated, durable quorum queue whose messages are dead-lettered (at least once) after
    /// `delivery_limit` deliveries, or when a consumer rejects them as unreadable.
    pub fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        let text = |s: &str| AMQPValue::LongString(s.into());
        args.insert("x-queue-type".into(), text("quorum"));
        args.insert(
            "x-dead-letter-exchange".into(),
            text(&self.dead_letter_exchange),
        );
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        // at-least-once dead-lettering requires it.
        args.insert("x-overflow".into(), text("reject-publish"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(self.delivery_limit).unwrap_or(i32::MAX)),
        );
        args
    }

    fn dead_letter_arguments() -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args
    }

    /// Declares the dead-letter exchange and queue, then the job queue.
    pub async fn declare(&self, channel: &Channel) -> Result<lapin::Queue, lapin::Error> {
        let durable = QueueDeclareOptions::durable();
        channel
            .exchange_declare(
                self.dead_letter_exchange.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                self.dead_letter_queue.as_str().into(),
                durable,
                Self::dead_letter_arguments(),
            )
            .await?;
        channel
            .queue_bind(
                self.dead_letter_queue.as_str().into(),
                self.dead_letter_exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(self.queue.as_str().into(), durable, self.queue_arguments())
            .await
    }

    /// Messages waiting in the dead-letter queue.
    pub async fn dead_letters(&self, channel: &Channel) -> Result<u32, lapin::Error> {
        let queue = channel
            .queue_declare(
                self.dead_letter_queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::durable()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(queue.message_count())
    }
}

/// One AMQP connection for one role (publishing and consuming use separate connections, so broker flow control
/// on the relay never stalls deliveries).
struct Broker {
    url: String,
    name: String,
    topology: Topology,
}

impl Broker {
    fn error(&self, source: lapin::Error) -> BrokerError {
        BrokerError::Amqp {
            url: redact(&self.url),
            source,
        }
    }

    fn lost(&self, what: &'static str) -> BrokerError {
        BrokerError::Lost {
            url: redact(&self.url),
            what,
        }
    }

    /// Connects, opens a channel and declares the topology, within `CONNECT_TIMEOUT`.
    async fn open(&self) -> Result<(Connection, Channel), BrokerError> {
        let properties =
            ConnectionProperties::default().with_connection_name(self.name.as_str().into());
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let connection = Connection::connect(&self.url, properties).await?;
            let channel = connection.create_channel().await?;
            self.topology.declare(&channel).await?;
            Ok::<_, lapin::Error>((connection, channel))
        })
        .await;
        match opened {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(_) => Err(BrokerError::ConnectTimeout {
                url: redact(&self.url),
            }),
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the broker accepts a connection (the health check: open, then close).
pub async fn ping(url: &str) -> bool {
    match Connection::connect(url, ConnectionProperties::default()).await {
        Ok(connection) => {
            let _ = connection.close(200, "health check".into()).await;
            true
        }
        Err(_) => false,
    }
}

/// Runs `session` again and again until `shutdown`, waiting with exponential backoff (100 ms to 10 s, jittered)
/// after each failure; a session that ran for a while resets the backoff. An outage is said once: a warning at
/// its first failed session, the later ones at debug level, and one line with the count when a session connects
/// again (the sessions raise `signer_broker_connected` once connected).
async fn supervise<F, Fut>(role: &'static str, shutdown: CancellationToken, mut session: F)
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), BrokerError>>,
{
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let connected = || {
        crate::metrics::metrics()
            .broker_connected
            .with_label_values(&[role])
            .get()
            == 1
    };
    let mut delays = backoff();
    let mut failed_sessions: u32 = 0;
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        // The session watches `shutdown` itself, to leave the broker cleanly.
        let running = session(shutdown.clone());
        tokio::pin!(running);
        let result = loop {
            tokio::select! {
                result = &mut running => break result,
                () = tokio::time::sleep(Duration::from_millis(500)), if failed_sessions > 0 => {
                    if connected() {
                        tracing::info!(role, failed_sessions, "broker reachable again");
                        failed_sessions = 0;
                    }
                }
            }
        };
        crate::metrics::metrics()
            .broker_connected
            .with_label_values(&[role])
            .set(0);
        match result {
            Ok(()) => return,
            Err(e) => {
                if started.elapsed() > Duration::from_secs(30) {
                    delays = backoff();
                }
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                failed_sessions += 1;
                crate::metrics::metrics()
                    .broker_sessions_failed
                    .with_label_values(&[role])
                    .inc();
                if failed_sessions == 1 {
                    tracing::warn!(role, error = %e, "broker session ended; reconnecting with backoff (said once per outage)");
                } else {
                    tracing::debug!(role, error = %e, ?delay, failed_sessions, "broker still unreachable");
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// What RabbitMQ dispatch needs from the rest of the worker.
pub struct RabbitDispatch {
    pub settings: RabbitmqSettings,
    pub store: Arc<PgStore>,
    pub worker_id: String,
    /// Unacked deliveries this process may hold: its concurrency.
    pub prefetch: u16,
    /// `LISTEN` for new doorbells (else the relay polls every `poll_interval`).
    pub listen: bool,
    pub poll_interval: Duration,
}

impl RabbitDispatch {
    /// Starts the relay and the consumer; the pool takes its jobs from the returned doorbells. The consumer
    /// stops at `stop_consuming` (a draining worker takes no more), the relay at `stop_relaying`.
    pub fn spawn(
        self,
        stop_consuming: CancellationToken,
        stop_relaying: CancellationToken,
    ) -> (Bells, tokio::task::JoinHandle<()>) {
        let topology = Topology::new(&self.settings);
        let broker = |role: &str| Broker {
            url: self.settings.url.clone(),
            name: format!("{} {role}", self.worker_id),
            topology: topology.clone(),
        };
        let relay = relay::Relay {
            broker: broker("relay"),
            store: self.store.clone(),
            listen: self.listen,
            poll_interval: self.poll_interval,
        };
        let (bells, consumer) = consumer::Consumer::new(broker("consumer"), self.prefetch);
        let relay = Arc::new(relay);
        let relay = tokio::spawn(supervise("relay", stop_relaying, move |stop| {
            let relay = relay.clone();
            async move { relay.session(stop).await }
        }));
        let consumer = Arc::new(consumer);
        let consumer = tokio::spawn(supervise("consumer", stop_consuming, move |stop| {
            let consumer = consumer.clone();
            async move { consumer.session(stop).await }
        }));
        let handle = tokio::spawn(async move {
            let _ = consumer.await;
            let _ = relay.await;
        });
        (bells, handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_queue_is_a_quorum_queue_that_dead_letters_after_its_delivery_limit() {
        let topology = Topology::new(&RabbitmqSettings {
            url: "amqp://localhost".into(),
            queue: "signer.jobs".into(),
            delivery_limit: 7,
        });
        assert_eq!(topology.dead_letter_exchange, "signer.jobs.dlx");
        assert_eq!(topology.dead_letter_queue, "signer.jobs.dead");
        let args = topology.queue_arguments();
        let get = |k: &str| args.inner().get(k).cloned();
        assert_eq!(
            get("x-queue-type"),
            Some(AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            get("x-dead-letter-exchange"),
            Some(AMQPValue::LongString("signer.jobs.dlx".into()))
        );
        assert_eq!(get("x-delivery-limit"), Some(AMQPValue::LongInt(7)));
        assert_eq!(
            get("x-overflow"),
            Some(AMQPValue::LongString("reject-publish".into()))
        );
    }
}
