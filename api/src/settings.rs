//! The API's own sections of the settings file, `[api]` (serving) and `[auth]` (who is calling: the auth crate's
//! settings), read from the same file and `SIGNER_*` variables as the job engine's sections
//! (`signer_worker::config`), which the API hosts too.

use serde::{Deserialize, Serialize};
use signer_auth::settings::AuthSettings;
use signer_worker::config::{layered, ConfigError, Settings};
use std::path::{Path, PathBuf};

/// Everything `signer-api` reads.
#[derive(Debug, Clone)]
pub struct Config {
    /// The job engine's settings (store, Kinto, signers, queue, permissions).
    pub service: Settings,
    pub api: ApiSettings,
    pub auth: AuthSettings,
}

/// The sections only the API reads; the others are the job engine's, which refuses unknown ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ApiSections {
    api: ApiSettings,
    auth: AuthSettings,
}

impl Config {
    /// Defaults, then the TOML file (if any), then `SIGNER_*` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let service = Settings::load(file)?;
        let ApiSections { api, auth } = layered(&ApiSections::default(), file)?;
        let has_client_ca = api.tls.as_ref().is_some_and(|t| t.client_ca_dir.is_some());
        auth.check(has_client_ca)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(Self { service, api, auth })
    }
}

/// `[api]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub listen: String,
    pub max_body_bytes: usize,
    /// When set, webhook calls must carry the Kinto listener plugin's HMAC signature made with this secret.
    pub webhook_secret: Option<String>,
    /// After SIGTERM, readiness fails at once but requests are served this long, while load balancers notice.
    pub shutdown_delay_seconds: u64,
    /// Serve HTTPS (and, with a client CA directory, require client certificates).
    pub tls: Option<TlsSettings>,
    /// A connection must send a request's headers within this long (also how long an idle keep-alive
    /// connection is kept).
    pub header_read_timeout_seconds: u64,
    /// A request's body must arrive within this long.
    pub body_read_timeout_seconds: u64,
    /// Connections served at once; beyond, new ones wait to be accepted.
    pub max_connections: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            max_body_bytes: 1 << 20,
            webhook_secret: None,
            shutdown_delay_seconds: 2,
            tls: None,
            header_read_timeout_seconds: 10,
            body_read_timeout_seconds: 30,
            max_connections: 1024,
        }
    }
}

/// `[api.tls]`: serve HTTPS; with `client_ca_dir`, ask for client certificates (mTLS).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM chain, server certificate first.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Every `*.crt` / `*.pem` in it is a trusted client CA (certified's `known_clients/`).
    pub client_ca_dir: Option<PathBuf>,
    /// `required`: no certificate, no connection. `optional`: callers without one use another scheme.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Required,
    Optional,
}

#[cfg(test)]
mod tests {
    use super::*;
    use signer_auth::settings::Scheme;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("signer-api-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("signer.toml");
        std::fs::write(&path, text).unwrap();
        let result = Config::load(Some(&path));
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    const SERVICE: &str = "resources = \"a/b -> c/d\"\n";

    #[test]
    fn the_api_reads_its_sections_of_the_shared_file() {
        let config = load(&format!(
            "{SERVICE}[api]\nmax_connections = 7\n[auth]\npolicies = [\"basicauth\"]\n[auth.basicauth.users]\nops = \"x\"\n"
        ))
        .unwrap();
        assert_eq!(config.api.max_connections, 7);
        assert_eq!(
            config.api.listen,
            ApiSettings::default().listen,
            "defaults fill the rest of [api]"
        );
        assert_eq!(config.auth.policies, [Scheme::Basicauth]);
        assert_eq!(
            config.service.parsed_resources().unwrap().sources(),
            ["/buckets/a/collections/b"]
        );
    }

    #[test]
    fn its_sections_are_checked_and_typos_refused() {
        let typo = load(&format!("{SERVICE}[api]\nlissten = \"0.0.0.0:1\"\n")).unwrap_err();
        assert!(
            typo.to_string().contains("unknown field: found `lissten`"),
            "{typo}"
        );
        let mtls = load(&format!("{SERVICE}[auth]\npolicies = [\"mtls\"]\n")).unwrap_err();
        assert!(mtls.to_string().contains("api.tls.client_ca_dir"), "{mtls}");
        let service = load("[api]\nmax_connections = 7\n").unwrap_err();
        assert!(
            service.to_string().contains("`resources` is empty"),
            "{service}"
        );
    }
}
