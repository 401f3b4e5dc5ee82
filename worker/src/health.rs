//! What `/__heartbeat__` reports (as Kinto and Autograph do): each dependency checked, concurrently and with a
//! short timeout, one boolean per check; and what readiness needs (the job store takes writes).

use crate::kinto::KintoClient;
use crate::signing::{AnySigner, SignerSet};
use crate::store::{JobStore as _, Store};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Health {
    pub(crate) store: Arc<Store>,
    pub(crate) source: Arc<KintoClient>,
    /// Only when it is another server than the source.
    pub(crate) destination: Option<Arc<KintoClient>>,
    pub(crate) pipeline: Arc<crate::pipeline::Pipeline>,
    /// The RabbitMQ URL, with RabbitMQ dispatch.
    pub(crate) broker: Option<String>,
}

async fn within(check: impl Future<Output = bool>) -> bool {
    tokio::time::timeout(TIMEOUT, check).await.unwrap_or(false)
}

async fn signers_up(signers: &SignerSet) -> bool {
    for signer in signers.iter() {
        if let AnySigner::Autograph(autograph) = signer {
            if !autograph.heartbeat().await {
                return false;
            }
        }
    }
    true
}

#[cfg(feature = "rabbitmq")]
async fn broker_up(url: &str) -> bool {
    crate::dispatch::rabbitmq::ping(url).await
}

/// A build without RabbitMQ support refuses `queue.dispatch = "rabbitmq"` at start-up, so no broker is checked.
#[cfg(not(feature = "rabbitmq"))]
async fn broker_up(_: &str) -> bool {
    false
}

impl Health {
    /// Whether this process can take requests: jobs are recorded in the store, whatever else is down (Kinto,
    /// the signer and the broker only delay the work, which waits in the store).
    pub async fn store_writable(&self) -> bool {
        within(async { self.store.ping().await.is_ok() }).await
    }

    /// `database`, `kinto_source`, `kinto_destination` (when separate), `signer`, and `broker` with RabbitMQ
    /// dispatch.
    pub async fn report(&self) -> BTreeMap<&'static str, bool> {
        let (database, source, destination, signer, broker) = tokio::join!(
            self.store_writable(),
            within(async { self.source.ping().await }),
            async {
                match &self.destination {
                    Some(d) => Some(within(d.ping()).await),
                    None => None,
                }
            },
            within(signers_up(self.pipeline.signers())),
            async {
                match &self.broker {
                    Some(url) => Some(within(broker_up(url)).await),
                    None => None,
                }
            },
        );
        let mut checks = BTreeMap::from([
            ("database", database),
            ("kinto_source", source),
            ("signer", signer),
        ]);
        if let Some(destination) = destination {
            checks.insert("kinto_destination", destination);
        }
        if let Some(broker) = broker {
            checks.insert("broker", broker);
        }
        checks
    }
}
