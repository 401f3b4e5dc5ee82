//! HTTPS for the API (rustls), and client certificates verified at the handshake against every CA certificate in
//! `api.tls.client_ca_dir` (certified's `known_clients/`). No certificate (when required), an unknown issuer, an
//! expired certificate or an unknown critical extension end the handshake: the request never reaches a handler.
//! Each request of a connection carries what the handshake established (the auth module's `TlsPeer`; see `server`).

use crate::settings::{ClientAuth, TlsSettings};
use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

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
pub(crate) fn handshake_failure(error: &std::io::Error) -> &'static str {
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
