//! Real Kinto servers (from the venv, memory or PostgreSQL backend) and the few calls tests make to set them up.

use crate::{eventually, free_port, root, venv_bin};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const EDITOR: (&str, &str) = ("editor", "editor-pw");
pub const SIGNER: (&str, &str) = ("signer", "signer-pw");

/// The bulk endpoint of the plugin of `deploy/kinto`, as `deploy/kinto/kinto.ini` includes it.
const BULK_PUSH: &str = "kinto_signer_webhook.push";

/// Which installation of Kinto runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// The project's venv (`make venv`): Kinto and the plugin of `deploy/kinto` (listener, bulk endpoint).
    Ours,
    /// The same without the bulk endpoint: a Kinto where the service writes through `/v1/batch`, one
    /// sub-request per record (slow enough for a test to act in the middle of a push).
    OursBatchOnly,
    /// `.venv-reference` (`make reference-venv`): the same Kinto with kinto-signer 8.1.1, nothing of ours.
    Reference,
}

impl Install {
    fn kinto(self) -> PathBuf {
        match self {
            Install::Ours | Install::OursBatchOnly => venv_bin("kinto"),
            Install::Reference => {
                let kinto = root().join(".venv-reference/bin/kinto");
                assert!(
                    kinto.exists(),
                    "{} is missing: run `make reference-venv` (make test does it)",
                    kinto.display()
                );
                kinto
            }
        }
    }
}

/// Where Kinto keeps records and permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Memory,
    /// A PostgreSQL database URL (`postgres://…`), as in production.
    Postgres(String),
}

impl Storage {
    /// `deploy/kinto/kinto.ini` (memory backends) with this storage instead.
    fn configure(&self, ini: &str) -> String {
        let Storage::Postgres(url) = self else {
            return ini.to_owned();
        };
        // SQLAlchemy only knows the `postgresql` scheme.
        let url = url.replacen("postgres://", "postgresql://", 1);
        ini.replace(
            "kinto.storage_backend = kinto.core.storage.memory\nkinto.storage_url =",
            &format!("kinto.storage_backend = kinto.core.storage.postgresql\nkinto.storage_url = {url}"),
        )
        .replace(
            "kinto.permission_backend = kinto.core.permission.memory\nkinto.permission_url =",
            &format!("kinto.permission_backend = kinto.core.permission.postgresql\nkinto.permission_url = {url}"),
        )
    }
}

/// `ini` with `settings` (`[app:main]` lines) added; a `kinto.includes` among them joins the one `ini` has (one
/// key per section), without the bulk endpoint when `batch_only`.
fn app_settings(ini: &str, settings: &str, batch_only: bool) -> String {
    let is_includes = |line: &str| line.starts_with("kinto.includes =");
    let includes: Vec<&str> = ini
        .lines()
        .chain(settings.lines())
        .filter(|line| is_includes(line))
        .flat_map(|line| line["kinto.includes =".len()..].split_whitespace())
        .filter(|module| !(batch_only && *module == BULK_PUSH))
        .collect();
    let others: String = settings
        .lines()
        .filter(|line| !is_includes(line))
        .map(|line| format!("{line}\n"))
        .collect();
    let mut text = String::new();
    for line in ini.lines().filter(|line| !is_includes(line)) {
        text.push_str(line);
        text.push('\n');
        if line == "[app:main]" {
            text.push_str(&format!(
                "kinto.includes = {}\n{others}",
                includes.join(" ")
            ));
        }
    }
    text
}

/// The `[app:main]` lines of the listener plugin of `deploy/kinto`: events of `buckets` posted to `webhook_url`,
/// signed with `secret`.
pub fn webhook_settings(webhook_url: &str, secret: &str, buckets: &str) -> String {
    format!(
        "kinto.event_listeners = signer\nkinto.event_listeners.signer.use = kinto_signer_webhook\n\
         kinto.event_listeners.signer.url = {webhook_url}\nkinto.event_listeners.signer.hmac_secret = {secret}\n\
         kinto.event_listeners.signer.resources = collection record\n\
         kinto.event_listeners.signer.buckets = {buckets}\n"
    )
}

/// The secret `deploy/kinto/kinto.ini` gives Kinto to derive Basic-auth user ids.
const USERID_HMAC_SECRET: &str = "5c0d5c6e0e1c4e7ab0a3d6a6f2a1b9e8-test-only";

/// The principal Kinto gives a Basic-auth user (`basicauth:<HMAC-SHA256 of user:password>`), known before the
/// server starts, so that its settings can name it.
pub fn basicauth_userid(user: &str, password: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(USERID_HMAC_SECRET.as_bytes())
        .expect("any key length");
    mac.update(format!("{user}:{password}").as_bytes());
    format!("basicauth:{}", hex::encode(mac.finalize().into_bytes()))
}

/// The `[app:main]` lines of the plugin's review workflow (`signoff`): Remote Settings' rules decided in Kinto for
/// `resources` (kinto-signer syntax), the signing service known by its principal (the `SIGNER` user).
pub fn signoff_settings(resources: &str, to_review_enabled: bool) -> String {
    format!(
        "kinto.includes = kinto_signer_webhook.signoff\nkinto.signer.resources = {resources}\n\
         kinto.signer.to_review_enabled = {to_review_enabled}\nkinto.signer.service_userid = {}\n",
        basicauth_userid(SIGNER.0, SIGNER.1)
    )
}

/// The `[app:main]` lines that make kinto-signer 8.1.1 sign `resources` with a local ECDSA key pair.
pub fn reference_signer_settings(resources: &str, private_key: &Path, public_key: &Path) -> String {
    format!(
        "kinto.includes = kinto_signer\nkinto.signer.resources = {resources}\n\
         kinto.signer.ecdsa.private_key = {}\nkinto.signer.ecdsa.public_key = {}\n",
        private_key.display(),
        public_key.display()
    )
}

pub struct KintoServer {
    pub port: u16,
    pub url: String,
    child: Option<Child>,
    kinto: PathBuf,
    ini: PathBuf,
    /// Where a generated ini lives, when the server made it itself.
    _dir: Option<crate::service::TempDir>,
}

impl KintoServer {
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> Self {
        Self::start_with(
            port,
            venv_bin("kinto"),
            root().join("deploy/kinto/kinto.ini"),
        )
        .await
    }

    /// Kinto with the reference signer (kinto-signer 8.1.1, from `.venv-reference`) signing `resources` with
    /// the PEM key pair given; a `PATCH status: to-sign` signs inside the request.
    pub async fn start_reference_signer(
        dir: &Path,
        resources: &str,
        private_key: &Path,
        public_key: &Path,
    ) -> Self {
        let settings = reference_signer_settings(resources, private_key, public_key);
        Self::launch(dir, Install::Reference, &Storage::Memory, &settings).await
    }

    /// Kinto with the listener plugin of `deploy/kinto` posting collection events to `webhook_url`, signed with
    /// `secret`; `dir` holds the generated ini.
    /// Edits to records of `buckets` are tracked (status `work-in-progress`, `last_edit_by/date`).
    pub async fn start_with_webhook(
        dir: &Path,
        webhook_url: &str,
        secret: &str,
        buckets: &str,
    ) -> Self {
        Self::start_with_settings(dir, &webhook_settings(webhook_url, secret, buckets)).await
    }

    /// Kinto without the plugin's bulk endpoint (`Install::OursBatchOnly`).
    pub async fn start_batch_only() -> Self {
        let dir = crate::service::TempDir::new("kinto-batch-only");
        let mut server = Self::launch(&dir.0, Install::OursBatchOnly, &Storage::Memory, "").await;
        server._dir = Some(dir);
        server
    }

    /// Kinto with extra `[app:main]` settings (one per line); `dir` holds the generated ini.
    pub async fn start_with_settings(dir: &Path, settings: &str) -> Self {
        Self::launch(dir, Install::Ours, &Storage::Memory, settings).await
    }

    /// Kinto from `install`, keeping its data in `storage` (a PostgreSQL database is migrated first), with extra
    /// `[app:main]` settings (one per line); `dir` holds the generated ini.
    pub async fn launch(dir: &Path, install: Install, storage: &Storage, settings: &str) -> Self {
        let kinto = install.kinto();
        let base = std::fs::read_to_string(root().join("deploy/kinto/kinto.ini"))
            .expect("the local Kinto config");
        let ini = dir.join(format!("kinto-{}.ini", uuid::Uuid::new_v4().simple()));
        let text = app_settings(
            &storage.configure(&base),
            settings,
            install != Install::Ours,
        );
        std::fs::write(&ini, text).expect("can write the ini");
        if let Storage::Postgres(_) = storage {
            let status = Command::new(&kinto)
                .env("PYTHONPATH", root().join("deploy/kinto"))
                .args(["migrate", "--ini"])
                .arg(&ini)
                .stdout(Stdio::null())
                .status()
                .expect("can run kinto migrate");
            assert!(status.success(), "kinto migrate failed");
        }
        Self::start_with(free_port(), kinto, ini).await
    }

    async fn start_with(port: u16, kinto: PathBuf, ini: PathBuf) -> Self {
        let url = format!("http://127.0.0.1:{port}/v1");
        let mut server = Self {
            port,
            url,
            child: None,
            kinto,
            ini,
            _dir: None,
        };
        server.restart().await;
        server
    }

    /// `kinto start` on this server's ini and port, with the plugin importable.
    fn start_command(&self) -> Command {
        let mut command = Command::new(&self.kinto);
        command
            .env("PYTHONPATH", root().join("deploy/kinto"))
            // Where Kinto writes files of its own (pyramid_mailer's debug mails, `./mail`): beside its ini.
            .current_dir(self.ini.parent().expect("the ini is in a directory"))
            .args(["start", "--ini"])
            .arg(&self.ini)
            .args(["--port", &self.port.to_string()]);
        command
    }

    /// (Re)starts the process on the same port; the memory backend starts empty, PostgreSQL keeps its data.
    pub async fn restart(&mut self) {
        self.stop();
        let log = std::env::temp_dir().join(format!("kinto-{}.log", self.port));
        let child = self
            .start_command()
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("can create the Kinto log"))
            .spawn()
            .expect("can start kinto");
        self.child = Some(child);
        let url = format!("{}/", self.url);
        let http = reqwest::Client::new();
        eventually(60, "Kinto to answer", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
    }

    /// Starts the process again expecting it to refuse: it must exit on its own within 60 s. Returns what it said.
    pub async fn restart_refused(&mut self) -> String {
        self.stop();
        let child = tokio::process::Command::from(self.start_command())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("can start kinto");
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("Kinto exits on its own")
            .expect("Kinto's output");
        assert!(!output.status.success(), "Kinto started: {output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Restarts the process on the same port without the plugin's bulk endpoint (a Kinto redeployed without
    /// it); the memory backend starts empty.
    pub async fn restart_batch_only(&mut self) {
        let dir = crate::service::TempDir::new("kinto-batch-only");
        let ini = dir.0.join("kinto.ini");
        let text = std::fs::read_to_string(&self.ini).expect("the running Kinto's ini");
        std::fs::write(&ini, app_settings(&text, "", true)).expect("can write the ini");
        self.ini = ini;
        self._dir = Some(dir);
        self.restart().await;
    }

    /// The server process (`kinto start` serves in process).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn editor(&self) -> KintoAdmin {
        Self::admin(&self.url)
    }

    /// The `EDITOR` user's client for the Kinto at `url`.
    pub fn admin(url: &str) -> KintoAdmin {
        KintoAdmin {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            auth: EDITOR,
        }
    }
}

impl Drop for KintoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Kinto client for test set-up and inspection.
#[derive(Clone)]
pub struct KintoAdmin {
    http: reqwest::Client,
    pub url: String,
    auth: (&'static str, &'static str),
}

impl KintoAdmin {
    /// The same server, as another Basic-auth user (Kinto accepts any user name and password).
    pub fn as_user(&self, user: &'static str, password: &'static str) -> Self {
        Self {
            http: self.http.clone(),
            url: self.url.clone(),
            auth: (user, password),
        }
    }

    /// This user's principal as Kinto reports it (`basicauth:<hmac>`).
    pub async fn principal(&self) -> String {
        let (_, body) = self.request(reqwest::Method::GET, "/", None).await;
        body["user"]["id"]
            .as_str()
            .expect("an authenticated user id")
            .to_owned()
    }

    /// Creates (or replaces) a group of the bucket.
    pub async fn put_group(&self, bucket: &str, group: &str, members: &[String]) {
        self.ok(
            reqwest::Method::PUT,
            &format!("/buckets/{bucket}/groups/{group}"),
            Some(json!({"data": {"members": members}})),
        )
        .await;
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let response = self.send(method, path, body, &[]).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The response itself (headers included), with extra request `headers`.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .basic_auth(self.auth.0, Some(self.auth.1));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("Kinto reachable")
    }

    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.request(method.clone(), path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {body}"
        );
        body
    }

    /// A source bucket the signer may write (to set `status`), and a collection holding `records`.
    pub async fn create_source(
        &self,
        bucket: &str,
        collection: &str,
        metadata: Value,
        records: &[Value],
    ) {
        self.ok(
            reqwest::Method::PUT,
            &format!("/buckets/{bucket}"),
            Some(json!({"permissions": {"write": ["system.Authenticated"]}})),
        )
        .await;
        self.ok(
            reqwest::Method::PUT,
            &format!("/buckets/{bucket}/collections/{collection}"),
            Some(json!({"data": metadata})),
        )
        .await;
        self.put_records(bucket, collection, records).await;
    }

    pub async fn put_records(&self, bucket: &str, collection: &str, records: &[Value]) {
        self.load_records(bucket, collection, records, 1).await
    }

    /// `put_records` with up to `parallel` batches in flight (to fill large collections sooner). The first batch
    /// goes alone: on PostgreSQL concurrent first writes of a collection conflict on its timestamp row.
    pub async fn load_records(
        &self,
        bucket: &str,
        collection: &str,
        records: &[Value],
        parallel: usize,
    ) {
        use futures::StreamExt as _;
        if records.is_empty() {
            return;
        }
        let batch = |chunk: &[Value]| {
            let requests: Vec<Value> = chunk
                .iter()
                .map(|r| {
                    json!({"method": "PUT", "path": format!("/buckets/{bucket}/collections/{collection}/records/{}", r["id"].as_str().unwrap()), "body": {"data": r}})
                })
                .collect();
            self.ok(
                reqwest::Method::POST,
                "/batch",
                Some(json!({"requests": requests})),
            )
        };
        let check = |body: Value| {
            for response in body["responses"].as_array().unwrap() {
                assert!(
                    response["status"].as_u64().unwrap() < 300,
                    "batch item failed: {response}"
                );
            }
        };
        let (first, rest) = records.split_at(records.len().min(25));
        check(batch(first).await);
        let mut rest = futures::stream::iter(rest.chunks(25).map(batch)).buffer_unordered(parallel);
        while let Some(body) = rest.next().await {
            check(body);
        }
    }

    pub async fn delete_record(&self, bucket: &str, collection: &str, id: &str) {
        self.ok(
            reqwest::Method::DELETE,
            &format!("/buckets/{bucket}/collections/{collection}/records/{id}"),
            None,
        )
        .await;
    }

    pub async fn patch_record(&self, bucket: &str, collection: &str, id: &str, data: Value) {
        let path = format!("/buckets/{bucket}/collections/{collection}/records/{id}");
        self.ok(reqwest::Method::PATCH, &path, Some(json!({"data": data})))
            .await;
    }

    pub async fn patch_collection(&self, bucket: &str, collection: &str, data: Value) -> Value {
        self.ok(
            reqwest::Method::PATCH,
            &format!("/buckets/{bucket}/collections/{collection}"),
            Some(json!({"data": data})),
        )
        .await["data"]
            .clone()
    }

    pub async fn collection(&self, bucket: &str, collection: &str) -> Option<Value> {
        let (status, body) = self
            .request(
                reqwest::Method::GET,
                &format!("/buckets/{bucket}/collections/{collection}"),
                None,
            )
            .await;
        (status == 200).then(|| body["data"].clone())
    }

    /// Every live record, following pagination.
    pub async fn records(&self, bucket: &str, collection: &str) -> Vec<Value> {
        let mut url = format!(
            "{}/buckets/{bucket}/collections/{collection}/records?_limit=10000",
            self.url
        );
        let mut records = Vec::new();
        loop {
            let response = self
                .http
                .get(&url)
                .basic_auth(self.auth.0, Some(self.auth.1))
                .send()
                .await
                .expect("Kinto reachable");
            let next = response
                .headers()
                .get("next-page")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = response.json().await.expect("JSON list");
            records.extend(body["data"].as_array().cloned().unwrap_or_default());
            match next {
                Some(n) => url = n,
                None => return records,
            }
        }
    }
}
