//! A fault-injecting HTTP proxy in front of a real server, for the faults a load balancer or a proxy makes: a
//! success answer cut in half with a `Content-Length` that matches what is sent (`Truncate`), or cut in half with
//! the full length announced and the connection closed (`Reset`); or a slow upstream, the whole answer sent late
//! (`Slow`). Requests are forwarded as they come; each rule spoils the first `times` answers to requests it
//! matches, and counts what it spoiled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Records a test pushes through [`FaultProxy::slow_writes`] to act while a job runs: 20 calls of 25, each
/// answered [`SLOW_WRITE`] late, so that the push lasts at least 3 s.
pub const SLOW_RECORDS: usize = 500;
pub const SLOW_WRITE: std::time::Duration = std::time::Duration::from_millis(150);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Truncate,
    Reset,
    Slow(std::time::Duration),
}

struct Rule {
    method: String,
    path_contains: String,
    fault: Fault,
    left: usize,
}

pub struct FaultProxy {
    /// The proxy's base URL, with the upstream's path (`/v1`).
    pub url: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    spoiled: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`http://host:port/v1`).
    pub async fn start(upstream: &str) -> Self {
        let parsed = url::Url::parse(upstream).expect("an upstream URL");
        let origin = format!(
            "{}://{}:{}",
            parsed.scheme(),
            parsed.host_str().expect("a host"),
            parsed.port_or_known_default().expect("a port")
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://{}{}",
            listener.local_addr().unwrap(),
            parsed.path().trim_end_matches('/')
        );
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let spoiled = Arc::new(AtomicUsize::new(0));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let (task_rules, task_spoiled) = (rules.clone(), spoiled.clone());
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (http, origin) = (http.clone(), origin.clone());
                let (rules, spoiled) = (task_rules.clone(), task_spoiled.clone());
                tokio::spawn(async move {
                    let _ = serve(socket, &http, &origin, &rules, &spoiled).await;
                });
            }
        });
        Self {
            url,
            rules,
            spoiled,
            task,
        }
    }

    /// A proxy to `upstream` whose batch writes (`POST …/batch`) each answer `by` late: pushing records through
    /// it takes at least that long per call of 25 records, so that a test can act while a job runs, however fast
    /// the machine.
    pub async fn slow_writes(upstream: &str, by: std::time::Duration) -> Self {
        let proxy = Self::start(upstream).await;
        proxy.inject("POST", "/batch", Fault::Slow(by), usize::MAX);
        proxy
    }

    /// Spoils the next `times` answers to `method` requests whose path contains `path_contains`.
    pub fn inject(&self, method: &str, path_contains: &str, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            fault,
            left: times,
        });
    }

    /// Lets every answer through from now on.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// How many answers were spoiled so far.
    pub fn spoiled(&self) -> usize {
        self.spoiled.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request per connection (answered with `Connection: close`).
async fn serve(
    mut socket: TcpStream,
    http: &reqwest::Client,
    origin: &str,
    rules: &Mutex<Vec<Rule>>,
    spoiled: &AtomicUsize,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (
        request_line.next().unwrap_or_default().to_owned(),
        request_line.next().unwrap_or_default().to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 65536];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }

    let mut forwarded = http.request(
        method.parse().expect("an HTTP method"),
        format!("{origin}{path}"),
    );
    for (name, value) in &headers {
        if !matches!(name.as_str(), "host" | "connection" | "content-length") {
            forwarded = forwarded.header(name, value);
        }
    }
    let response = match forwarded.body(body).send().await {
        Ok(response) => response,
        Err(_) => return Ok(()),
    };
    let status = response.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in response.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "connection" | "transfer-encoding"
        ) {
            out += &format!("{name}: {}\r\n", value.to_str().unwrap_or_default());
        }
    }
    let bytes = response.bytes().await.unwrap_or_default();
    let fault = status.is_success().then(|| {
        let mut rules = rules.lock().unwrap();
        let rule = rules
            .iter_mut()
            .find(|r| r.left > 0 && r.method == method && path.contains(&r.path_contains))?;
        rule.left -= 1;
        spoiled.fetch_add(1, Ordering::SeqCst);
        Some(rule.fault)
    });
    let half = bytes.len() / 2;
    let (announced, sent) = match fault.flatten() {
        None => (bytes.len(), &bytes[..]),
        Some(Fault::Truncate) => (half, &bytes[..half]),
        Some(Fault::Reset) => (bytes.len(), &bytes[..half]),
        Some(Fault::Slow(by)) => {
            tokio::time::sleep(by).await;
            (bytes.len(), &bytes[..])
        }
    };
    out += &format!("content-length: {announced}\r\nconnection: close\r\n\r\n");
    socket.write_all(out.as_bytes()).await?;
    socket.write_all(sent).await?;
    socket.shutdown().await
}
