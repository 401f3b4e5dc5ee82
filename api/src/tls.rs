//! HTTPS for the API (rustls), and client certificates verified at the handshake against every CA certificate in
//! `api.tls.client_ca_dir` (certified's `known_clients/`). No certificate (when required), an unknown issuer, an
//! expired certificate or an unknown critical extension end the handshake: the request never reaches a handler.
//! Each request of a connection carries what the handshake established ([`TlsPeer`]).

use crate::auth::TlsPeer;
use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore, ServerConfig};
use signer_worker::config::{ClientAuth, TlsSettings};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of every `*.crt` and `*.pem` file in `dir`.
fn client_roots(dir: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read client_ca_dir {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("crt" | "pem")
        ) {
            continue;
        }
        for cert in CertificateDer::pem_file_iter(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
        {
            let cert =
                cert.with_context(|| format!("{} holds a malformed certificate", path.display()))?;
            roots.add(cert).with_context(|| {
                format!(
                    "{} holds a certificate that cannot be a trust anchor",
                    path.display()
                )
            })?;
        }
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "client_ca_dir {} holds no *.crt or *.pem certificate",
        dir.display()
    );
    Ok(roots)
}

pub fn server_config(settings: &TlsSettings) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(&settings.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "cannot read the certificate chain {}",
                settings.cert_file.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).with_context(|| {
        format!(
            "cannot read the private key {}",
            settings.key_file.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &settings.client_ca_dir {
        None => builder.with_no_client_auth(),
        Some(dir) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(client_roots(dir)?),
                provider(),
            );
            let verifier = match settings.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder
                .with_client_cert_verifier(verifier.build().context("client certificate verifier")?)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not match or are unusable")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The metrics label of a failed handshake.
fn handshake_failure(error: &std::io::Error) -> &'static str {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::NoCertificatesPresented) => "missing",
        Some(rustls::Error::InvalidCertificate(e)) => match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not-yet-valid"
            }
            CertificateError::UnknownIssuer => "untrusted",
            _ => "invalid-certificate",
        },
        _ => "handshake",
    }
}

/// Serves `app` over TLS until `shutdown` completes, then waits for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
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
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    let reason = handshake_failure(&e);
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
            let service = tower::ServiceBuilder::new()
                .map_request(
                    move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(peer.clone());
                        request
                    },
                )
                .service(app);
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
