//! The service's own binaries as child processes, with a config file and keys in a throw-away directory.

use crate::eventually;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// `target/debug` (or whichever profile runs the tests): where cargo put `signer-api` and `signer-worker`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (make test does)",
        path.display()
    );
    path
}

/// Runs one of the binaries to completion: its exit code and everything it printed (stdout then stderr).
pub fn run_binary<I, S>(name: &str, args: I) -> (i32, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = Command::new(bin(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("can create a temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A key pair made by `signer-api keygen`, plus a config file next to it.
pub struct Setup {
    pub dir: TempDir,
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub config: PathBuf,
}

impl Setup {
    /// `extra` is appended to the generated TOML (tests tune queue timings and add servers there). An empty
    /// `database_url` selects the embedded SQLite store, in this setup's directory.
    /// Lines of `extra` before its first `[table]` are top-level settings.
    pub fn new(database_url: &str, source_url: &str, resources: &str, extra: &str) -> Self {
        let split = if extra.starts_with('[') {
            Some(0)
        } else {
            extra.find("\n[").map(|i| i + 1)
        };
        let (top, tables) = extra.split_at(split.unwrap_or(extra.len()));
        let dir = TempDir::new("signer-e2e");
        let private_key = dir.0.join("ecdsa.private.pem");
        let status = Command::new(bin("signer-api"))
            .args(["keygen", "--out"])
            .arg(&private_key)
            .stdout(Stdio::null())
            .status()
            .expect("keygen runs");
        assert!(status.success(), "keygen failed");
        let config = dir.0.join("signer.toml");
        let toml = format!(
            r#"database_url = "{database_url}"
data_dir = "{data_dir}"
resources = """
{resources}
"""
{top}
[ecdsa]
private_key = "{key}"
[kinto.source]
url = "{source_url}"
user = "{user}"
password = "{password}"
# Small pages, so that collections of a few thousand records exercise Next-Page.
page_size = 1000
{extra}
"#,
            key = private_key.display(),
            extra = tables,
            data_dir = dir.0.display(),
            user = crate::kinto::SIGNER.0,
            password = crate::kinto::SIGNER.1,
        );
        std::fs::write(&config, toml).expect("can write the config");
        Self {
            public_key: dir.0.join("ecdsa.pub.pem"),
            dir,
            private_key,
            config,
        }
    }

    /// Asserts the independent verifier accepts `bucket/collection` holding `records` records; returns its verdict.
    pub fn assert_verifies(
        &self,
        server: &str,
        bucket: &str,
        collection: &str,
        records: usize,
    ) -> serde_json::Value {
        let verdict = self.verify(server, bucket, collection);
        let expected = (serde_json::json!(true), serde_json::json!(records));
        assert_eq!(
            (verdict["valid"].clone(), verdict["records"].clone()),
            expected,
            "{bucket}/{collection}: {verdict}"
        );
        verdict
    }

    /// Asserts the independent verifier accepts every `bucket/collection` named, in one run of it.
    pub fn assert_all_verify(&self, server: &str, collections: &[String]) {
        let output = Command::new(crate::venv_bin("python"))
            .arg(crate::root().join("tests/python/verify_signature.py"))
            .args(["--many", server])
            .arg(&self.public_key)
            .args(collections)
            .output()
            .expect("python verifier runs");
        let verdict: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
                panic!(
                    "verifier printed no verdict: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        assert_eq!(verdict["valid"], true, "{verdict}");
        assert_eq!(verdict["checked"], collections.len(), "{verdict}");
    }

    /// Checks `bucket/collection` on `server` with the independent Python verifier; returns its JSON verdict.
    pub fn verify(&self, server: &str, bucket: &str, collection: &str) -> serde_json::Value {
        verify_with(server, bucket, collection, self.public_key.as_os_str())
    }
}

/// The independent verifier's verdict on `bucket/collection`, each signature checked with the key of its own
/// `x5u` chain (what Autograph publishes) instead of a key file.
pub fn verify_x5u(server: &str, bucket: &str, collection: &str) -> serde_json::Value {
    verify_with(server, bucket, collection, std::ffi::OsStr::new("x5u"))
}

fn verify_with(
    server: &str,
    bucket: &str,
    collection: &str,
    key: &std::ffi::OsStr,
) -> serde_json::Value {
    let output = Command::new(crate::venv_bin("python"))
        .arg(crate::root().join("tests/python/verify_signature.py"))
        .args([server, bucket, collection])
        .arg(key)
        .output()
        .expect("python verifier runs");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "verifier printed no verdict: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A running binary; SIGKILLed on drop unless it already exited.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, args: &[&str], config: &Path, log: PathBuf) -> Self {
        Self::spawn_env(name, args, config, log, &[])
    }

    /// With more environment variables (credentials an SDK reads from the environment, say).
    pub fn spawn_env(
        name: &str,
        args: &[&str],
        config: &Path,
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> Self {
        let child = Command::new(bin(name))
            .arg("--config")
            .arg(config)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("can create the log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, the way an orchestrator stops a process.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("can poll the child") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process did not exit within {within:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `signer-api serve` on a free port, ready to answer.
pub struct Api {
    pub process: Process,
    pub url: String,
    pub http: reqwest::Client,
    /// Sent as `Authorization` with every call of [`Api::post`] and [`Api::get`].
    pub authorization: Option<String>,
}

impl Api {
    pub async fn start(setup: &Setup, workers: usize) -> Self {
        Self::start_on(setup, workers, crate::free_port()).await
    }

    /// On a port chosen in advance (a Kinto listener must know where to post before the API starts).
    pub async fn start_on(setup: &Setup, workers: usize, port: u16) -> Self {
        Self::start_env(setup, workers, port, &[]).await
    }

    /// With more environment variables for the process.
    pub async fn start_env(setup: &Setup, workers: usize, port: u16, env: &[(&str, &str)]) -> Self {
        let listen = format!("127.0.0.1:{port}");
        let log = setup.dir.0.join(format!("api-{port}.log"));
        let process = Process::spawn_env(
            "signer-api",
            &[
                "serve",
                "--listen",
                &listen,
                "--workers",
                &workers.to_string(),
            ],
            &setup.config,
            log,
            env,
        );
        let api = Self {
            process,
            url: format!("http://{listen}"),
            http: reqwest::Client::new(),
            authorization: None,
        };
        // `__version__` names the program: a port taken meanwhile by another server (Kinto answers
        // `__lbheartbeat__` too) is not mistaken for ours.
        let probe = format!("{}/__version__", api.url);
        let http = api.http.clone();
        eventually(30, "signer-api to listen", || {
            let (http, probe) = (http.clone(), probe.clone());
            async move {
                let version: serde_json::Value =
                    http.get(&probe).send().await.ok()?.json().await.ok()?;
                version["name"]
                    .as_str()
                    .filter(|n| n.contains("signer"))
                    .map(|_| ())
            }
        })
        .await;
        api
    }

    /// The same API, calling as `authorization` (an `Authorization` header value).
    pub fn as_caller(&self, authorization: &str) -> Caller<'_> {
        Caller {
            api: self,
            authorization: Some(authorization.to_owned()),
        }
    }

    /// Any call: status, headers and JSON body (`null` when not JSON).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        let explicit = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"));
        if let Some(authorization) = self.authorization.as_ref().filter(|_| !explicit) {
            request = request.header("authorization", authorization);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.expect("API reachable");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn post(
        &self,
        path: &str,
        body: &str,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        self.request(reqwest::Method::POST, path, &[], Some(body))
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, _, body) = self.request(reqwest::Method::GET, path, &[], None).await;
        (status, body)
    }

    /// The `/metrics` scrape, as Prometheus reads it (no credentials).
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("signer-api reachable")
            .text()
            .await
            .expect("a text scrape")
    }

    /// Polls a job until it reaches a final state; returns `{data, history}`.
    pub async fn wait_final(&self, job_id: &str, seconds: u64) -> serde_json::Value {
        eventually(seconds, &format!("job {job_id} to finish"), || async move {
            let (_, body) = self.get(&format!("/v1/jobs/{job_id}")).await;
            matches!(
                body["data"]["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
            .then_some(body)
        })
        .await
    }

    /// Starts a sign through `POST /v1/jobs`; returns the job id.
    pub async fn sign(&self, resource: &str) -> String {
        let (status, _, body) = self
            .post(
                "/v1/jobs",
                &serde_json::json!({"resource": resource}).to_string(),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["data"]["id"].as_str().expect("job id").to_owned()
    }
}

/// Calls to an [`Api`] with credentials of their own.
pub struct Caller<'a> {
    api: &'a Api,
    authorization: Option<String>,
}

impl Caller<'_> {
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let headers: Vec<(&str, &str)> = self
            .authorization
            .as_deref()
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        self.api.request(method, path, &headers, body).await
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, _, body) = self.request(reqwest::Method::GET, path, None).await;
        (status, body)
    }

    pub async fn post(
        &self,
        path: &str,
        body: &str,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }
}
