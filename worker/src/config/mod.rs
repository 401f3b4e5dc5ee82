//! Typed settings: one TOML file plus `SIGNER_*` environment overrides (`__` separates sections, e.g.
//! `SIGNER_KINTO__SOURCE__URL`; `SIGNER_DATABASE_URL` is the top-level `database_url`).

mod resources;

pub use resources::{CollectionRef, Resource, ResourceError, Resources};

use figment::providers::{Env, Format as _, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `SIGNER_*` variables that belong to the command line or the tooling, not to the settings.
const NOT_SETTINGS: &[&str] = &[
    "CONFIG",
    "API_URL",
    "LOCAL_DIR",
    "TEST_DATABASE_URL",
    "TEST_VENV",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error(transparent)]
    Resource(#[from] ResourceError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `postgres://…` to scale out; `sqlite://<path>`; or nothing for the embedded store in `data_dir`.
    pub database_url: Option<String>,
    /// Where the embedded store (and `make run`'s keys) live.
    pub data_dir: PathBuf,
    /// kinto-signer syntax; a string with one rule per line, or a list of rules.
    #[serde(deserialize_with = "resources_text")]
    pub resources: String,
    /// `local_ecdsa` (kinto-signer's names `…local_ecdsa` are accepted too).
    pub signer_backend: String,
    /// Principal recorded as `last_signature_by` when a request names nobody.
    pub plugin_userid: String,
    pub ecdsa: EcdsaSettings,
    pub kinto: KintoSettings,
    pub queue: QueueSettings,
    pub api: ApiSettings,
    pub worker: WorkerSettings,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcdsaSettings {
    pub private_key: Option<PathBuf>,
    /// Published as the signatures' `x5u`: the URL of a PEM chain whose end-entity certificate holds this key.
    /// Empty (kinto-signer's behaviour) when clients get the public key another way.
    #[serde(default)]
    pub x5u: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KintoSettings {
    /// The server editors write to (kinto-signer's "authority").
    pub source: ServerSettings,
    /// Where destinations are published ("origin"); the source server when absent.
    pub destination: Option<ServerSettings>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Base URL including `/v1`.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Sent as `Authorization: <token_type> <token>` (e.g. an OpenID bearer token) instead of Basic auth.
    pub token: Option<String>,
    #[serde(default = "default_token_type")]
    pub token_type: String,
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
    /// Records per page when listing (capped by the server's `storage_max_fetch_size`).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    pub max_attempts: i32,
    /// A running job's lease; a worker renews it every third of it.
    pub lease_seconds: u64,
    /// Safety-net poll when no NOTIFY arrives.
    pub poll_interval_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// How often each worker looks for expired leases (and prunes old jobs).
    pub rescue_interval_seconds: u64,
    /// Finished jobs are deleted this long after they finish.
    pub retention_hours: u64,
    /// `false` for poll-only mode (PgBouncer in transaction mode cannot `LISTEN`).
    pub listen: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub listen: String,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub shutdown_grace_seconds: u64,
}

fn default_token_type() -> String {
    "Bearer".into()
}
fn default_timeout_seconds() -> u64 {
    30
}
fn default_page_size() -> u32 {
    10_000
}

fn resources_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Text::deserialize(d)? {
        Text::One(s) => s,
        Text::Many(v) => v.join("\n"),
    })
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: None,
            data_dir: PathBuf::from("var"),
            resources: String::new(),
            signer_backend: "local_ecdsa".into(),
            plugin_userid: "plugin:kinto-signer".into(),
            ecdsa: EcdsaSettings::default(),
            kinto: KintoSettings {
                source: ServerSettings {
                    url: "http://127.0.0.1:8888/v1".into(),
                    user: None,
                    password: None,
                    token: None,
                    token_type: default_token_type(),
                    timeout_seconds: default_timeout_seconds(),
                    page_size: default_page_size(),
                },
                destination: None,
            },
            queue: QueueSettings {
                max_attempts: 10,
                lease_seconds: 60,
                poll_interval_ms: 5_000,
                backoff_min_ms: 1_000,
                backoff_max_ms: 300_000,
                rescue_interval_seconds: 15,
                retention_hours: 24 * 7,
                listen: true,
            },
            api: ApiSettings {
                listen: "127.0.0.1:8000".into(),
                max_body_bytes: 1 << 20,
            },
            worker: WorkerSettings {
                concurrency: 4,
                shutdown_grace_seconds: 30,
            },
        }
    }
}

impl Settings {
    /// Defaults, then the TOML file (if any), then `SIGNER_*` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        let settings: Settings = figment
            .merge(Env::prefixed("SIGNER_").ignore(NOT_SETTINGS).split("__"))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let resources = self.parsed_resources()?;
        if resources.is_empty() {
            return Err(ConfigError::Invalid(
                "`resources` is empty: name at least one `source -> destination` rule".into(),
            ));
        }
        self.signer_backend_kind()?;
        for server in [Some(&self.kinto.source), self.kinto.destination.as_ref()]
            .into_iter()
            .flatten()
        {
            url::Url::parse(&server.url).map_err(|e| {
                ConfigError::Invalid(format!("kinto server url {:?}: {e}", server.url))
            })?;
        }
        if self.queue.max_attempts < 1
            || self.queue.lease_seconds < 3
            || self.worker.concurrency < 1
        {
            return Err(ConfigError::Invalid(
                "queue.max_attempts and worker.concurrency must be at least 1, queue.lease_seconds at least 3".into(),
            ));
        }
        Ok(())
    }

    pub fn parsed_resources(&self) -> Result<Resources, ConfigError> {
        Ok(Resources::parse(&self.resources)?)
    }

    pub fn signer_backend_kind(&self) -> Result<SignerBackend, ConfigError> {
        match self.signer_backend.rsplit('.').next() {
            Some("local_ecdsa") => Ok(SignerBackend::LocalEcdsa),
            _ => Err(ConfigError::Invalid(format!(
                "unknown signer_backend {:?} (expected local_ecdsa)",
                self.signer_backend
            ))),
        }
    }

    pub fn destination_server(&self) -> &ServerSettings {
        self.kinto
            .destination
            .as_ref()
            .unwrap_or(&self.kinto.source)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.queue.lease_seconds)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerBackend {
    LocalEcdsa,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(text: &str) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!("signer-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("signer.toml");
        std::fs::write(&path, text).unwrap();
        let result = Settings::load(Some(&path));
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn file_with_list_of_resources_and_kinto_signer_backend_name() {
        let s = load_toml(
            r#"
            resources = ["a/b -> c/d", "/buckets/x -> /buckets/y"]
            signer_backend = "kinto_signer.signer.local_ecdsa"
            [kinto.source]
            url = "http://kinto:8888/v1"
            user = "signer"
            password = "s3cret"
            "#,
        )
        .unwrap();
        assert_eq!(s.signer_backend_kind().unwrap(), SignerBackend::LocalEcdsa);
        let r = s.parsed_resources().unwrap();
        assert!(r.resolve(&CollectionRef::new("x", "z")).is_some());
        assert_eq!(s.destination_server(), &s.kinto.source);
    }

    #[test]
    fn the_shipped_example_config_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/signer.example.toml"
        ));
        let s = Settings::load(Some(path)).unwrap();
        let onecrl = s
            .parsed_resources()
            .unwrap()
            .resolve(&CollectionRef::new("security-state-staging", "onecrl"));
        assert_eq!(
            onecrl.unwrap().destination,
            CollectionRef::new("security-state", "onecrl")
        );
        assert_eq!(s.worker.concurrency, 4);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let cases = [
            ("resources = \"a/b -> /buckets/c\"", "cannot mix"),
            ("resources = \"\"", "`resources` is empty"),
            (
                "resources = \"a/b -> c/d\"\nsigner_backend = \"hsm\"",
                "unknown signer_backend",
            ),
            (
                "resources = \"a/b -> c/d\"\nunknown_key = 1",
                "unknown field",
            ),
            (
                "resources = \"a/b -> c/d\"\n[kinto.source]\nurl = \"not a url\"",
                "kinto server url",
            ),
        ];
        for (text, expected) in cases {
            let err = load_toml(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?} gave {err:?}");
        }
        let missing = Settings::load(Some(Path::new("/nonexistent/signer.toml"))).unwrap_err();
        assert!(missing.to_string().contains("does not exist"));
    }
}
