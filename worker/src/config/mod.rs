//! Typed settings: one TOML file plus `SIGNER_*` environment overrides (`__` separates sections, e.g.
//! `SIGNER_KINTO__SOURCE__URL`; `SIGNER_DATABASE_URL` is the top-level `database_url`).

mod permissions;
mod policy;

pub use permissions::{Grants, PermissionSettings, ALL_RESOURCES};
pub use policy::{AutographOverride, Override, ResourcePolicy, SignerBackend, SignerConfig};

use figment::providers::{Env, Format as _, Serialized, Toml};
use figment::Figment;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use signer_types::words::word_list;
use signer_types::{ResourceError, Resources};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `SIGNER_*` variables that belong to the command line or the tooling, not to the settings.
const NOT_SETTINGS: &[&str] = &[
    "CONFIG",
    "API_URL",
    "API_AUTHORIZATION",
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

/// `defaults`, then the TOML file (if any), then `SIGNER_*` variables: how every process reads its part of the
/// settings.
pub fn layered<T: Serialize + for<'de> Deserialize<'de>>(
    defaults: &T,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::Invalid(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment
        .merge(Env::prefixed("SIGNER_").ignore(NOT_SETTINGS).split("__"))
        .extract()
        .map_err(|e| ConfigError::Invalid(e.to_string()))
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
    /// `local_ecdsa` or `autograph` (kinto-signer's dotted names are accepted too).
    pub signer_backend: String,
    /// Principal recorded as `last_signature_by` when a request names nobody.
    pub plugin_userid: String,
    /// Changes need a review (`to-review` by an editor, then `to-sign` by another user, a reviewer).
    pub to_review_enabled: bool,
    /// Groups of the source bucket; `{bucket_id}` and `{collection_id}` are replaced (remote-settings' names).
    pub editors_group: String,
    pub reviewers_group: String,
    pub ecdsa: EcdsaSettings,
    pub autograph: Option<AutographSettings>,
    /// Per bucket (`"<bid>"`) or collection (`"<bid>/<cid>"`) settings, like kinto-signer's
    /// `signer.<bid>.<cid>.<name>`.
    pub overrides: BTreeMap<String, Override>,
    pub feed: FeedSettings,
    pub kinto: KintoSettings,
    pub queue: QueueSettings,
    pub rabbitmq: RabbitmqSettings,
    pub worker: WorkerSettings,
    /// Who may do what; without it, anyone who reaches the API may do anything.
    pub permissions: Option<PermissionSettings>,
    /// `[api]` and `[auth]` are the API's (`signer_api::settings`), read from the same file; here they are only
    /// allowed to be there.
    #[serde(default, skip_serializing, rename = "api")]
    _api: IgnoredAny,
    #[serde(default, skip_serializing, rename = "auth")]
    _auth: IgnoredAny,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct EcdsaSettings {
    pub private_key: Option<PathBuf>,
    /// Published as the signatures' `x5u`: the URL of a PEM chain whose end-entity certificate holds this key.
    /// Empty (kinto-signer's behaviour) when clients get the public key another way.
    #[serde(default)]
    pub x5u: String,
}

/// An Autograph server (`POST /sign/data` with Hawk).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct AutographSettings {
    pub server_url: String,
    pub hawk_id: String,
    pub hawk_secret: String,
    /// One signature per key id, in this order (`signature` is the first); a list or a space-separated string.
    #[serde(default = "default_key_ids", deserialize_with = "word_list")]
    pub key_ids: Vec<String>,
    #[serde(default = "default_connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
    /// Whole request, response included.
    #[serde(default = "default_autograph_timeout_seconds")]
    pub timeout_seconds: u64,
    /// Retries of one call on network errors, timeouts, 5xx and 429 (not on 4xx).
    #[serde(default = "default_autograph_retries")]
    pub max_retries: usize,
    #[serde(default = "default_autograph_backoff_min_ms")]
    pub backoff_min_ms: u64,
    #[serde(default = "default_autograph_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Payloads larger than this are signed through `/sign/hash` (only the 48-byte digest is sent).
    #[serde(default)]
    pub sign_hash_above_bytes: Option<u64>,
}

impl Default for AutographSettings {
    fn default() -> Self {
        Self {
            server_url: String::new(),
            hawk_id: String::new(),
            hawk_secret: String::new(),
            key_ids: default_key_ids(),
            connect_timeout_seconds: default_connect_timeout_seconds(),
            timeout_seconds: default_autograph_timeout_seconds(),
            max_retries: default_autograph_retries(),
            backoff_min_ms: default_autograph_backoff_min_ms(),
            backoff_max_ms: default_autograph_backoff_max_ms(),
            sign_hash_above_bytes: None,
        }
    }
}

impl std::fmt::Debug for AutographSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The Hawk secret never reaches a log line.
        f.debug_struct("AutographSettings")
            .field("server_url", &self.server_url)
            .field("hawk_id", &self.hawk_id)
            .field("key_ids", &self.key_ids)
            .finish_non_exhaustive()
    }
}

/// The change feed: how workers find collections whose status asks for work when no webhook told them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSettings {
    pub enabled: bool,
    pub interval_seconds: u64,
    /// Re-sign every signed destination this long before its `x5u` certificate expires (0: never).
    pub resign_before_expiry_hours: u64,
    /// Re-sign every signed destination at least this often, whatever its certificate (0: never).
    pub resign_interval_hours: u64,
    /// How often the leader looks at every destination's certificate and last signature.
    pub resign_check_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KintoSettings {
    /// The server editors write to (kinto-signer's "authority").
    pub source: ServerSettings,
    /// Where destinations are published ("origin"); the source server when absent.
    pub destination: Option<ServerSettings>,
    /// Records a worker keeps in memory between jobs (the listings it last signed), so that the next job
    /// fetches only what changed since (`_since`); 0 lists every collection in full every time.
    #[serde(default = "default_cached_records")]
    pub cached_records: usize,
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
    /// `/v1/batch` calls in flight at once while pushing records (each of `batch_max_requests` writes).
    #[serde(default = "default_parallel_batches")]
    pub parallel_batches: usize,
    /// Writes per call to the plugin's bulk endpoint (API capability `signer-push`), which applies them
    /// in one transaction through Kinto's storage layer; used when the server offers it. `0`: always
    /// `/v1/batch`.
    #[serde(default = "default_bulk_push_size")]
    pub bulk_push_size: usize,
    /// Where the server lacks the plugin's `signer-visible`: how far before a cached listing's timestamp its
    /// refresh re-reads, longer than any write transaction on the server lasts (PostgreSQL makes a write visible
    /// at commit, with the timestamp of its statement).
    #[serde(default = "default_since_overlap_seconds")]
    pub since_overlap_seconds: u64,
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
    /// How workers learn of runnable jobs: `postgres` (`LISTEN`/`NOTIFY` and polling) or `rabbitmq` (job ids
    /// published from a transactional outbox). Postgres stays the truth either way.
    pub dispatch: Dispatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dispatch {
    Postgres,
    Rabbitmq,
}

/// The broker behind `queue.dispatch = "rabbitmq"`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqSettings {
    pub url: String,
    /// A durable quorum queue; `<queue>.dlx` and `<queue>.dead` hold what it dead-letters.
    pub queue: String,
    /// Deliveries of one message before the broker dead-letters it (`x-delivery-limit`).
    pub delivery_limit: u32,
}

impl std::fmt::Debug for RabbitmqSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitmqSettings")
            .field("url", &crate::error_text::redact(&self.url))
            .field("queue", &self.queue)
            .field("delivery_limit", &self.delivery_limit)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub concurrency: usize,
    /// Jobs a sweep claims beyond its free slots and starts as slots free (Graphile Worker's local queue): fewer,
    /// larger claims for queues of many short jobs. They count as running meanwhile; one that waits a third of
    /// `queue.lease_seconds` for a slot is given back.
    #[serde(default)]
    pub claim_ahead: usize,
    pub shutdown_grace_seconds: u64,
    /// `signer-worker` serves `GET /metrics` here (e.g. `0.0.0.0:9102`) when set.
    pub metrics_listen: Option<String>,
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
fn default_parallel_batches() -> usize {
    1
}
fn default_bulk_push_size() -> usize {
    1_000
}
fn default_since_overlap_seconds() -> u64 {
    60
}
fn default_cached_records() -> usize {
    200_000
}
fn default_key_ids() -> Vec<String> {
    vec!["remote-settings".into()]
}
fn default_connect_timeout_seconds() -> u64 {
    5
}
fn default_autograph_timeout_seconds() -> u64 {
    30
}
fn default_autograph_retries() -> usize {
    3
}
fn default_autograph_backoff_min_ms() -> u64 {
    250
}
fn default_autograph_backoff_max_ms() -> u64 {
    5_000
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
            to_review_enabled: false,
            editors_group: "{collection_id}-editors".into(),
            reviewers_group: "{collection_id}-reviewers".into(),
            ecdsa: EcdsaSettings::default(),
            autograph: None,
            overrides: BTreeMap::new(),
            feed: FeedSettings {
                enabled: true,
                interval_seconds: 30,
                resign_before_expiry_hours: 24 * 7,
                resign_interval_hours: 0,
                resign_check_seconds: 600,
            },
            kinto: KintoSettings {
                source: ServerSettings {
                    url: "http://127.0.0.1:8888/v1".into(),
                    user: None,
                    password: None,
                    token: None,
                    token_type: default_token_type(),
                    timeout_seconds: default_timeout_seconds(),
                    page_size: default_page_size(),
                    parallel_batches: default_parallel_batches(),
                    bulk_push_size: default_bulk_push_size(),
                    since_overlap_seconds: default_since_overlap_seconds(),
                },
                destination: None,
                cached_records: default_cached_records(),
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
                dispatch: Dispatch::Postgres,
            },
            rabbitmq: RabbitmqSettings {
                url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
                queue: "signer.jobs".into(),
                delivery_limit: 20,
            },
            worker: WorkerSettings {
                concurrency: 4,
                claim_ahead: 0,
                shutdown_grace_seconds: 30,
                metrics_listen: None,
            },
            permissions: None,
            _api: IgnoredAny,
            _auth: IgnoredAny,
        }
    }
}

impl Settings {
    /// Defaults, then the TOML file (if any), then `SIGNER_*` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let settings: Settings = layered(&Settings::default(), file)?;
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
        for config in self.signer_configs()? {
            if let SignerConfig::Autograph(a) = config {
                url::Url::parse(&a.server_url).map_err(|e| {
                    ConfigError::Invalid(format!("autograph server_url {:?}: {e}", a.server_url))
                })?;
                if a.key_ids.is_empty() {
                    return Err(ConfigError::Invalid(
                        "autograph key_ids is empty: name at least one".into(),
                    ));
                }
            }
        }
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
        if self.queue.dispatch == Dispatch::Rabbitmq {
            if !cfg!(feature = "rabbitmq") {
                return Err(ConfigError::Invalid(
                    "queue.dispatch = \"rabbitmq\": this build has no RabbitMQ support (build with `--features \
                     signer_worker/rabbitmq`, as the Docker image and make test do)"
                        .into(),
                ));
            }
            let postgres = self
                .database_url
                .as_deref()
                .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
            if !postgres {
                return Err(ConfigError::Invalid(
                    "queue.dispatch = \"rabbitmq\" needs a Postgres database_url: the outbox and the jobs live there".into(),
                ));
            }
            url::Url::parse(&self.rabbitmq.url).map_err(|e| {
                ConfigError::Invalid(format!(
                    "rabbitmq.url {:?}: {e}",
                    crate::error_text::redact(&self.rabbitmq.url)
                ))
            })?;
            if self.rabbitmq.queue.is_empty() || self.rabbitmq.delivery_limit < 1 {
                return Err(ConfigError::Invalid(
                    "rabbitmq.queue must be named and rabbitmq.delivery_limit at least 1".into(),
                ));
            }
        }
        match &self.permissions {
            Some(permissions) => permissions.check(),
            None => Ok(()),
        }
    }

    pub fn parsed_resources(&self) -> Result<Resources, ConfigError> {
        Ok(Resources::parse(&self.resources)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use signer_types::CollectionRef;

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
        assert!(matches!(
            s.policy(&CollectionRef::new("x", "z")).unwrap().signer,
            SignerConfig::LocalEcdsa(_)
        ));
        let r = s.parsed_resources().unwrap();
        assert!(r.resolve(&CollectionRef::new("x", "z")).is_some());
        assert_eq!(s.destination_server(), &s.kinto.source);
    }

    /// RabbitMQ dispatch is a build option: a build without it says so at start-up instead of running without
    /// the broker the settings ask for.
    #[test]
    fn rabbitmq_dispatch_needs_a_build_with_it() {
        let loaded = load_toml(
            r#"
            resources = "a/b -> c/d"
            database_url = "postgres://signer@db/signer"
            [kinto.source]
            url = "http://kinto:8888/v1"
            [queue]
            dispatch = "rabbitmq"
            "#,
        );
        if cfg!(feature = "rabbitmq") {
            assert_eq!(loaded.unwrap().queue.dispatch, Dispatch::Rabbitmq);
        } else {
            let Err(refused) = loaded else {
                panic!("a build without RabbitMQ support loaded rabbitmq dispatch")
            };
            assert!(
                refused.to_string().contains("no RabbitMQ support"),
                "{refused}"
            );
        }
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
        let onecrl = s
            .policy(&CollectionRef::new("security-state-staging", "onecrl"))
            .unwrap();
        assert!(matches!(onecrl.signer, SignerConfig::Autograph(a) if a.key_ids == ["onecrl"]));
        assert!(onecrl.to_review_enabled);
        let quick = s
            .policy(&CollectionRef::new("main-workspace", "quicksuggest"))
            .unwrap();
        assert!(!quick.to_review_enabled);
    }

    #[test]
    fn overrides_apply_collection_then_bucket_then_global() {
        let s = load_toml(
            r#"
            resources = "/buckets/ws -> /buckets/main"
            to_review_enabled = true
            signer_backend = "kinto_signer.signer.autograph"
            [autograph]
            server_url = "http://autograph:8000"
            hawk_id = "alice"
            hawk_secret = "fs5wgcer9qj819kfptdlp8gm227ewxnzvsuj9ztycsx08hfhzu"
            key_ids = "remote-settings remote-settings-2024"
            [overrides.ws]
            reviewers_group = "{bucket_id}-{collection_id}-approvers"
            [overrides."ws/quick"]
            to_review_enabled = false
            signer_backend = "local_ecdsa"
            ecdsa = { private_key = "/keys/quick.pem" }
            [overrides."ws/onecrl"]
            autograph = { key_ids = ["onecrl"] }
            "#,
        )
        .unwrap();
        let cfr = s.policy(&CollectionRef::new("ws", "cfr")).unwrap();
        assert!(cfr.to_review_enabled);
        assert_eq!(cfr.reviewers_group, "ws-cfr-approvers");
        assert_eq!(cfr.editors_group, "cfr-editors");
        let SignerConfig::Autograph(a) = &cfr.signer else {
            panic!("{cfr:?}")
        };
        assert_eq!(a.key_ids, ["remote-settings", "remote-settings-2024"]);
        let quick = s.policy(&CollectionRef::new("ws", "quick")).unwrap();
        assert!(!quick.to_review_enabled);
        assert_eq!(
            quick.signer,
            SignerConfig::LocalEcdsa(EcdsaSettings {
                private_key: Some("/keys/quick.pem".into()),
                x5u: String::new()
            })
        );
        let SignerConfig::Autograph(onecrl) = s
            .policy(&CollectionRef::new("ws", "onecrl"))
            .unwrap()
            .signer
        else {
            panic!()
        };
        assert_eq!(
            (onecrl.key_ids, onecrl.hawk_id),
            (vec!["onecrl".to_owned()], "alice".to_owned())
        );
        assert_eq!(s.signer_configs().unwrap().len(), 3);
        assert!(
            !format!("{a:?}").contains("fs5wgcer"),
            "the Hawk secret is not in Debug output"
        );
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
                "resources = \"a/b -> c/d\"\nsigner_backend = \"autograph\"",
                "no [autograph]",
            ),
            (
                "resources = \"a/b -> c/d\"\n[overrides.\"a/b/c\"]\nto_review_enabled = true",
                "expected \"<bucket>\" or",
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
