//! Wiring: settings in, a ready store and signing pipeline out, and the worker pools that run on them. Shared by
//! `signer-worker` and `signer-api serve --workers N`, so both start the same way and fail the same way.

use crate::config::{ConfigError, Dispatch, Settings};
use crate::dispatch::Waker;
use crate::feed::{Feed, Leader};
use crate::kinto::KintoClient;
use crate::pipeline::Pipeline;
use crate::pool::{new_worker_id, PoolSettings, WorkerPool};
use crate::signing::{SignerSet, SigningError};
use crate::store::{Store, StoreError};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signer: {0}")]
    Signer(#[from] SigningError),
    #[error("kinto server {url}: {reason}")]
    Kinto { url: String, reason: String },
}

/// Everything a worker or the API needs, built once.
pub struct Service {
    pub settings: Settings,
    pub store: Arc<Store>,
    pub pipeline: Arc<Pipeline>,
    source: Arc<KintoClient>,
    destination: Arc<KintoClient>,
}

impl Service {
    pub async fn start(settings: Settings) -> Result<Self, StartupError> {
        let signers = SignerSet::build(settings.signer_configs()?)?;
        let client = |s: &crate::config::ServerSettings| {
            KintoClient::new(s)
                .map(Arc::new)
                .map_err(|reason| StartupError::Kinto {
                    url: s.url.clone(),
                    reason,
                })
        };
        let source = client(&settings.kinto.source)?;
        let destination = match &settings.kinto.destination {
            Some(d) if d != &settings.kinto.source => client(d)?,
            _ => source.clone(),
        };
        let pipeline = Arc::new(Pipeline::new(
            settings.clone(),
            source.clone(),
            destination.clone(),
            signers,
        )?);
        let connections = u32::try_from(settings.worker.concurrency)
            .unwrap_or(u32::MAX)
            .saturating_mul(2)
            .max(5);
        let store = Store::open(
            settings.database_url.as_deref(),
            &settings.data_dir,
            connections,
        );
        let store = match store.await? {
            Store::Postgres(pg) => {
                Store::Postgres(pg.with_outbox(settings.queue.dispatch == Dispatch::Rabbitmq))
            }
            embedded => embedded,
        };
        let store = Arc::new(store);
        tracing::info!(store = %store.describe(), "job store ready");
        Ok(Self {
            settings,
            store,
            pipeline,
            source,
            destination,
        })
    }

    /// The dependency checks behind `/__heartbeat__`.
    pub fn health(&self) -> crate::health::Health {
        crate::health::Health {
            store: self.store.clone(),
            source: self.source.clone(),
            destination: (!Arc::ptr_eq(&self.source, &self.destination))
                .then(|| self.destination.clone()),
            pipeline: self.pipeline.clone(),
            broker: (self.settings.queue.dispatch == Dispatch::Rabbitmq)
                .then(|| self.settings.rabbitmq.url.clone()),
        }
    }

    /// Starts one pool of `concurrency` workers, and the change feed (it polls only while this process leads);
    /// it returns once `shutdown` fired and the pool drained.
    pub fn spawn_pool(
        &self,
        concurrency: usize,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, StartupError> {
        let mut pool_settings =
            PoolSettings::from_settings(&self.settings, new_worker_id("worker"));
        pool_settings.concurrency = concurrency;
        // The relay outlives the pool's drain: jobs finishing then may ring for others.
        let relay_stop = CancellationToken::new();
        let (waker, dispatch): (Waker, Option<tokio::task::JoinHandle<()>>) =
            match (self.settings.queue.dispatch, &*self.store) {
                #[cfg(feature = "rabbitmq")]
                (Dispatch::Rabbitmq, Store::Postgres(pg)) => {
                    let (bells, task) = crate::dispatch::rabbitmq::RabbitDispatch {
                        settings: self.settings.rabbitmq.clone(),
                        store: Arc::new(pg.clone()),
                        worker_id: pool_settings.worker_id.clone(),
                        prefetch: u16::try_from(concurrency).unwrap_or(u16::MAX),
                        listen: self.settings.queue.listen,
                        poll_interval: pool_settings.poll_interval,
                    }
                    .spawn(shutdown.clone(), relay_stop.clone());
                    (Waker::rabbit(bells), Some(task))
                }
                _ => (
                    Waker::for_store(&self.store, self.settings.queue.listen),
                    None,
                ),
            };
        let pool = WorkerPool::new(self.store.clone(), self.pipeline.clone(), pool_settings);
        let feed = self
            .feed()?
            .map(|(feed, leader)| tokio::spawn(feed.run(leader, shutdown.clone())));
        let pool = tokio::spawn(pool.run(waker, shutdown));
        Ok(tokio::spawn(async move {
            let _ = pool.await;
            relay_stop.cancel();
            if let Some(dispatch) = dispatch {
                let _ = dispatch.await;
            }
            if let Some(feed) = feed {
                let _ = feed.await;
            }
        }))
    }

    fn feed(&self) -> Result<Option<(Feed, Leader)>, StartupError> {
        if !self.settings.feed.enabled {
            return Ok(None);
        }
        let leader = match &*self.store {
            Store::Postgres(pg) => Leader::postgres(pg.url()).map_err(StoreError::from)?,
            Store::Sqlite(_) => Leader::Alone,
        };
        let feed = Feed::new(
            self.settings.clone(),
            self.settings.parsed_resources()?,
            self.source.clone(),
            self.destination.clone(),
            self.store.clone(),
        );
        Ok(Some((feed, leader)))
    }
}

/// Serves `GET /metrics` and `GET /__lbheartbeat__` on `listen` until `shutdown` (the worker's own port; the API
/// serves its own).
pub async fn serve_metrics(
    listen: &str,
    store: Arc<Store>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "metrics served");
    // `/__lbheartbeat__` is the worker's liveness probe: the process (and its runtime) answers.
    let app = axum::Router::new()
        .route("/__lbheartbeat__", get(|| async { "{}" }))
        .route(
            "/metrics",
            get(move || {
                let store = store.clone();
                async move {
                    if let Err(e) = crate::store::publish_queue_metrics(store.as_ref()).await {
                        tracing::warn!(error = %e, "queue metrics not updated");
                    }
                    crate::metrics::metrics().render()
                }
            }),
        );
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics server failed");
        }
    }))
}

/// A token cancelled on SIGTERM or SIGINT (Ctrl-C).
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
        let signal = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        };
        // Shutdown first: nothing that follows (a log line included) can keep it from happening.
        trigger.cancel();
        tracing::info!(signal, "shutting down");
    });
    token
}

/// Stderr for log lines, where a line that cannot be written (the reader of a pipe gone, a full disk) is dropped
/// and counted, never an error: the logging library would otherwise report it on stderr itself, and Rust's
/// `eprintln!` panics when stderr fails, in whichever task was logging (the signal handler's, say).
struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().write_all(buf).is_err() {
            crate::metrics::metrics().log_writes_dropped.inc();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Logs to stderr, as text or one JSON object per line; `RUST_LOG` filters (default `info`). lapin is silent by
/// default: it logs every failed recovery attempt at ERROR (dozens of lines per worker and outage), where
/// the broker supervisor says an outage once.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,lapin=off"));
    use std::io::IsTerminal as _;
    // Colours only for a person at a terminal: files and log shippers get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .with_writer(|| LogSink);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.init();
    }
}
