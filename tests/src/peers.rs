//! Python peers of the authentication tests: `tests/python/auth_clients.py` (real clients from PyPI, printing
//! JSON), and throw-away servers from the venv (moto as KMS, a static file server as an identity provider).

use crate::{eventually, free_port, root, venv_bin};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Runs `auth_clients.py <args>` to completion; its JSON output.
pub fn auth_clients<I, S>(args: I) -> serde_json::Value
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(venv_bin("python"))
        .arg(root().join("tests/python/auth_clients.py"))
        .args(args)
        .output()
        .expect("python runs");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "auth_clients.py printed no JSON:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A server from the venv on a free loopback port, killed on drop.
pub struct PeerServer {
    child: Child,
    pub url: String,
}

impl PeerServer {
    async fn start(program: &str, args: &[&str], port: u16, log: &Path) -> Self {
        let child = Command::new(venv_bin(program))
            .args(args)
            .env("MOTO_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{program} starts: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        eventually(
            30,
            &format!("{program} to listen on {port}"),
            || async move {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        Self { child, url }
    }

    /// moto's server: KMS (and the rest of AWS) on loopback.
    pub async fn moto(log_dir: &Path) -> Self {
        let port = free_port();
        let p = port.to_string();
        Self::start(
            "moto_server",
            &["-H", "127.0.0.1", "-p", &p],
            port,
            &log_dir.join("moto.log"),
        )
        .await
    }

    /// Python's static file server over `dir` (an identity provider's JWKS document, say).
    pub async fn files(dir: &Path) -> Self {
        let port = free_port();
        let p = port.to_string();
        let d = dir.to_str().expect("utf-8 path");
        Self::start(
            "python",
            &[
                "-m",
                "http.server",
                &p,
                "--bind",
                "127.0.0.1",
                "--directory",
                d,
            ],
            port,
            &dir.join("http.log"),
        )
        .await
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
