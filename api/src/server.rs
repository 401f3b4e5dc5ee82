//! The HTTP server: accepts connections (TLS when configured), at most `api.max_connections` at once, each with a
//! deadline for every request's headers (which also ends idle keep-alive connections) and, through
//! [`BodyDeadline`], for its body; on shutdown it stops accepting and lets open requests finish.

use crate::settings::ApiSettings;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use signer_auth::TlsPeer;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub body_read: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn of(api: &ApiSettings) -> Self {
        Self {
            header_read: Duration::from_secs(api.header_read_timeout_seconds.max(1)),
            body_read: Duration::from_secs(api.body_read_timeout_seconds.max(1)),
            max_connections: api.max_connections.max(1),
        }
    }
}

/// The address the request came from, as the socket saw it (behind a proxy, the proxy's: limits per client
/// address then belong to the proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// How long a request's body may take to arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub Duration);

/// Serves `app` until `shutdown` completes, then waits for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // A connection is accepted only with a free slot: beyond the cap, clients wait in the listen backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, watcher) = (acceptor.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                return serve_connection(tcp, None, remote, app, limits, watcher).await;
            };
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    let reason = crate::tls::handshake_failure(&e);
                    tracing::info!(%remote, reason, error = %e, "TLS handshake refused");
                    signer_worker::metrics::metrics()
                        .auth_failures
                        .with_label_values(&["mtls", reason])
                        .inc();
                    return;
                }
                Err(_) => return,
            };
            let peer = TlsPeer {
                certificate: stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| Arc::new(leaf.as_ref().to_vec())),
            };
            serve_connection(stream, Some(peer), remote, app, limits, watcher).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn serve_connection<S>(
    stream: S,
    peer: Option<TlsPeer>,
    remote: SocketAddr,
    app: axum::Router,
    limits: Limits,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = tower::ServiceBuilder::new()
        .map_request(move |mut request: axum::http::Request<Incoming>| {
            let extensions = request.extensions_mut();
            extensions.insert(ClientAddr(remote.ip()));
            extensions.insert(BodyDeadline(limits.body_read));
            if let Some(peer) = &peer {
                extensions.insert(peer.clone());
            }
            request
        })
        .service(app);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}
