//! The machine's RabbitMQ (or `SIGNER_TEST_AMQP_URL`), seen the way a test needs it: a queue of its own, and a
//! client that can publish to it, take a message and crash, and count what is left.

use futures::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use signer_worker::config::RabbitmqSettings;
use signer_worker::dispatch::rabbitmq::Topology;

pub fn shared_url() -> String {
    std::env::var("SIGNER_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A queue name no other test uses.
pub fn unique_queue() -> String {
    format!("signer-test-{}", uuid::Uuid::new_v4().simple())
}

/// The `[queue]` dispatch line and `[rabbitmq]` table of a config using `queue` on `url`.
pub fn dispatch_settings(url: &str, queue: &str) -> String {
    format!("[rabbitmq]\nurl = \"{url}\"\nqueue = \"{queue}\"\ndelivery_limit = 20\n")
}

pub struct TestBroker {
    connection: Connection,
    channel: Channel,
    pub topology: Topology,
}

impl TestBroker {
    /// Connects and declares the service's topology for `queue` (as the service would).
    pub async fn connect(url: &str, queue: &str) -> Self {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| {
                panic!("RabbitMQ must run at {url} (set SIGNER_TEST_AMQP_URL): {e}")
            });
        let channel = connection.create_channel().await.expect("a channel");
        let topology = Topology::new(&RabbitmqSettings {
            url: url.into(),
            queue: queue.into(),
            delivery_limit: 20,
        });
        topology
            .declare(&channel)
            .await
            .expect("declare the topology");
        Self {
            connection,
            channel,
            topology,
        }
    }

    /// Publishes `body` to the job queue, as the relay would (persistent), without waiting for a confirm.
    pub async fn publish(&self, body: &str) {
        self.channel
            .basic_publish(
                "".into(),
                self.topology.queue.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
    }

    /// A consumer that takes one message and dies before acking it: its connection closes, the broker requeues
    /// the message as redelivered. Returns the body it held.
    pub async fn take_one_and_crash(url: &str, queue: &str) -> String {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("connect");
        let channel = connection.create_channel().await.expect("a channel");
        channel
            .basic_qos(1, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "doomed-consumer".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
            .await
            .expect("a message within 10 s")
            .expect("the consumer is open")
            .expect("a delivery");
        let _ = connection.close(320, "crashed".into()).await;
        String::from_utf8(delivery.data).expect("text")
    }

    /// Messages ready in the job queue and in the dead-letter queue.
    pub async fn counts(&self) -> (u32, u32) {
        let ready = self
            .channel
            .queue_declare(
                self.topology.queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the job queue exists")
            .message_count();
        let dead = self
            .topology
            .dead_letters(&self.channel)
            .await
            .expect("the dead-letter queue exists");
        (ready, dead)
    }

    /// Deletes the test's queues and exchange.
    pub async fn delete(self) {
        for queue in [&self.topology.queue, &self.topology.dead_letter_queue] {
            let _ = self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self
            .channel
            .exchange_delete(
                self.topology.dead_letter_exchange.as_str().into(),
                Default::default(),
            )
            .await;
        let _ = self.connection.close(200, "done".into()).await;
    }
}
