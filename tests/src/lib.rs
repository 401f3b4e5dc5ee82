//! Test support for the end-to-end suite: throw-away Postgres databases, real Kinto servers, the service's
//! binaries as child processes, and the independent Python verifier. Everything runs on loopback.

pub mod autograph;
pub mod conformance;
pub mod db;
pub mod disk;
pub mod faults;
pub mod kinto;
pub mod peers;
pub mod private;
pub mod rabbitmq;
pub mod records;
pub mod service;

use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Python venv holding Kinto and the verifier's packages (`make venv`).
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("SIGNER_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make venv` (make test does it)",
        path.display()
    );
    path
}

/// A port nobody listens on right now and no other test process holds, for a server started a moment later
/// (Kinto and the helper servers cannot say which port they took when given 0). Drawn at random below the
/// kernel's ephemeral range (32768+), so neither an outgoing connection nor a `bind(0)` takes it in the meantime;
/// each port handed out is held, until this test process ends, by a lock on a file named after it that every test
/// process checks, so two tests running side by side never get the same port between the check and the bind.
pub fn free_port() -> u16 {
    use rand::Rng as _;
    use std::sync::Mutex;
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("signer-e2e-ports");
    std::fs::create_dir_all(&dir).expect("can create the port lock directory");
    let mut rng = rand::thread_rng();
    loop {
        let port = rng.gen_range(20_000..32_000);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .expect("can open a port lock file");
        if lock.try_lock().is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().expect("port locks").push(lock);
            return port;
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {seconds}s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Queue timings that keep tests short: short leases, quick retries, frequent rescues.
pub const FAST_QUEUE: &str = "[queue]\nlease_seconds = 4\npoll_interval_ms = 500\nbackoff_min_ms = 200\nbackoff_max_ms = 2000\nrescue_interval_seconds = 1\n";

/// Records keyed by id, without the `last_modified` each server assigns.
pub fn by_id_without_timestamps(
    records: &[serde_json::Value],
) -> std::collections::BTreeMap<String, serde_json::Value> {
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut()
                .expect("records are objects")
                .remove("last_modified");
            (r["id"].as_str().expect("records have ids").to_owned(), r)
        })
        .collect()
}

/// The sum of the samples of `name` carrying every `labels` pair, in a Prometheus text scrape; `None` when
/// there is no such sample.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let bare = series.split('{').next() == Some(name);
            let labelled = labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")));
            (bare && labelled).then(|| value.parse::<f64>().ok())?
        })
        .reduce(|a, b| a + b)
}

/// Every `signer_*` series the Grafana dashboard and the Prometheus alert rules in `deploy/` name.
pub fn deployed_metric_names() -> std::collections::BTreeSet<String> {
    let files = [
        "deploy/grafana/signer-dashboard.json",
        "deploy/prometheus/signer-alerts.yml",
    ];
    let mut names = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(root().join(file)).expect("deploy file");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("signer_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

/// Asserts every series the deploy files query appears in `scrape` (as samples, not only as help lines).
pub fn assert_deployed_metrics_exist(scrape: &str) {
    let samples: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<String> = deployed_metric_names()
        .into_iter()
        .filter(|n| !samples.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or alert rules query series no process exports: {missing:?}"
    );
}

#[cfg(test)]
mod tests {
    /// The lock that keeps other test processes off a port handed out also keeps this one off it: 300 ports in a
    /// row, no port twice.
    #[test]
    fn a_port_handed_out_is_not_handed_out_again() {
        let ports: std::collections::HashSet<u16> = (0..300).map(|_| super::free_port()).collect();
        assert_eq!(ports.len(), 300);
    }
}
