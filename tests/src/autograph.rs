//! The Autograph test server (`tests/python/autograph_server.py`) as a child process, with the Hawk credentials
//! the service must present and controls to inject faults.

use crate::service::TempDir;
use crate::{eventually, free_port, root, venv_bin};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};

pub const HAWK_ID: &str = "kinto-signer";
pub const HAWK_KEY: &str = "fs5wgcer9qj819kfptdlp8gm227ewxnzvsuj9ztycsx08hfhzu";
pub const SIGNER_NAME: &str = "remote-settings.content-signature.mozilla.org";

pub struct AutographServer {
    child: Child,
    pub url: String,
    pub key_ids: Vec<String>,
    /// Hex SHA-256 of the root certificate of every chain it serves.
    pub root_sha256: String,
    _dir: TempDir,
    http: reqwest::Client,
}

impl AutographServer {
    pub async fn start(key_ids: &[&str]) -> Self {
        let dir = TempDir::new("autograph");
        let port = free_port();
        let child = Command::new(venv_bin("python"))
            .arg(root().join("tests/python/autograph_server.py"))
            .arg(port.to_string())
            .arg(&dir.0)
            .args([SIGNER_NAME, HAWK_ID, HAWK_KEY])
            .args(key_ids)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("autograph.log")).expect("log file"))
            .spawn()
            .expect("the Autograph test server starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let heartbeat = format!("{url}/__heartbeat__");
        eventually(30, "the Autograph test server to answer", || {
            let (http, heartbeat) = (http.clone(), heartbeat.clone());
            async move {
                let ok = http
                    .get(&heartbeat)
                    .send()
                    .await
                    .ok()?
                    .status()
                    .is_success();
                ok.then_some(())
            }
        })
        .await;
        let root_sha256 = std::fs::read_to_string(dir.0.join("root.sha256")).expect("root.sha256");
        Self {
            child,
            url,
            key_ids: key_ids.iter().map(|k| (*k).to_owned()).collect(),
            root_sha256,
            _dir: dir,
            http,
        }
    }

    /// The `[autograph]` section that points the service here.
    pub fn settings(&self) -> String {
        format!(
            "[autograph]\nserver_url = \"{}\"\nhawk_id = \"{HAWK_ID}\"\nhawk_secret = \"{HAWK_KEY}\"\nkey_ids = {}\n\
             timeout_seconds = 2\nbackoff_min_ms = 100\nbackoff_max_ms = 500\n",
            self.url,
            json!(self.key_ids)
        )
    }

    /// Queues faults, consumed one per sign request: "503", "401", "429", "garbage", "hang:<seconds>".
    pub async fn inject(&self, faults: &[&str]) {
        let response = self
            .http
            .post(format!("{}/__faults__", self.url))
            .json(&json!(faults))
            .send()
            .await
            .expect("fault injection");
        assert!(response.status().is_success());
    }

    /// Counters: `sign_requests`, `signed`, `refused`, `faults`, `faults_left`.
    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/__stats__", self.url))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats JSON")
    }
}

impl Drop for AutographServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
