//! `make bench`: signing a collection end to end, ours beside the Python reference (kinto-signer 8.1.1 inside
//! the same Kinto 26.5 version), on Kinto's memory and PostgreSQL backends. Both sides are triggered the way
//! editors trigger them, `PATCH status: to-sign` on the source collection, and measured the same way:
//! - the trigger request: how long the PATCH holds Kinto (the reference signs inside it; ours relays a webhook);
//! - time to signed: from the PATCH until the source reads `signed` (the destination holds its signature): for
//!   ours, the source's `last_modified` once its job succeeded;
//! - the same after 1% of the records changed;
//! - memory: the reference's Kinto growth during the sign, and our worker's peak RSS;
//! - completeness: records in the destination, and the independent Python verifier's verdict.
//!
//! - with `without-plugin`, ours once more on a Kinto without the plugin's endpoints (`/v1/batch` and the guessed
//!   overlap), to show what the plugin is worth.
//!
//! Usage: cargo run --release -p signer_e2e --example sign_collection -- [memory] [postgresql] [without-plugin]
//! [SIZES…] (default: memory postgresql 1000 10000)

use serde_json::{json, Value};
use signer_e2e::db::TestDb;
use signer_e2e::free_port;
use signer_e2e::kinto::{
    reference_signer_settings, webhook_settings, Install, KintoAdmin, KintoServer, Storage,
};
use signer_e2e::records::sample_records;
use signer_e2e::service::{Api, Process, Setup};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "bench-webhook-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Memory,
    Postgresql,
}

impl Backend {
    /// Batches in flight while filling a source (setup, not measured): concurrent writes to one collection
    /// conflict on Kinto's PostgreSQL backend (409 "please retry"); the memory backend takes them in turn.
    fn load_parallel(self) -> usize {
        match self {
            Backend::Memory => 4,
            Backend::Postgresql => 1,
        }
    }
}

/// One side's figures for one collection.
struct Side {
    trigger: Duration,
    signed: Duration,
    trigger_resign: Duration,
    resigned: Duration,
    /// The reference: Kinto's RSS growth during the first sign; ours: the worker's peak RSS.
    memory_mib: f64,
    /// Ours: the worker's RSS once started, before its first job (the reference: 0).
    idle_mib: f64,
    destination_records: usize,
    valid: bool,
}

fn status_kib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples a process's RSS every 10 ms until dropped; `peak` is the highest seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<f64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak: f64 = 0.0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(status_kib(pid, "VmRSS:").unwrap_or(0.0));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        });
        Self { stop, task }
    }

    async fn peak_mib(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("sampler") / 1024.0
    }
}

/// `PATCH status: to-sign`: how long the request took.
async fn trigger(editor: &KintoAdmin) -> Duration {
    let start = Instant::now();
    editor
        .patch_collection("ws", "bench", json!({"status": "to-sign"}))
        .await;
    start.elapsed()
}

/// Jobs the API holds for the bench's source.
async fn jobs(api: &Api) -> Vec<Value> {
    let (_, body) = api
        .get("/v1/jobs?resource=/buckets/ws/collections/bench")
        .await;
    body["data"].as_array().cloned().unwrap_or_default()
}

/// Waits until the job after the `known` ones succeeded, asking the signer's API every 100 ms (asking Kinto
/// often would take the CPU of the Kinto process the job is waiting on), then answers how long after `started`
/// the source was written `signed`: its `last_modified`, stamped by Kinto with this host's clock.
async fn until_signed(
    api: &Api,
    editor: &KintoAdmin,
    known: usize,
    started: SystemTime,
) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let jobs = jobs(api).await;
        if jobs.len() > known {
            match jobs[0]["state"].as_str() {
                Some("succeeded") => break,
                Some("failed" | "cancelled") => panic!("the job did not sign: {}", jobs[0]),
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "not signed within an hour");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let source = editor
        .collection("ws", "bench")
        .await
        .expect("source exists");
    assert_eq!(source["status"], "signed", "{source}");
    let signed_at =
        UNIX_EPOCH + Duration::from_millis(source["last_modified"].as_u64().expect("a timestamp"));
    signed_at
        .duration_since(started)
        .expect("signed after the trigger")
}

/// Every 100th record with a changed title.
fn one_percent_changed(data: &[Value]) -> Vec<Value> {
    data.iter()
        .step_by(100)
        .map(|r| {
            let mut r = r.clone();
            r["title"] = json!("changed");
            r
        })
        .collect()
}

/// A Kinto database and what keeps its statistics fresh.
struct KintoDb {
    _db: TestDb,
    analyzer: tokio::task::JoinHandle<()>,
}

impl Drop for KintoDb {
    fn drop(&mut self) {
        self.analyzer.abort();
    }
}

/// This machine's Postgres runs with `autovacuum = off`; a production one analyzes tables as they grow. Without
/// statistics the planner finds a record through the (resource, parent) index and filters on its id, scanning
/// the whole collection on every write: Kinto's write path turns quadratic (14 ms per lookup at 37k records),
/// on both sides. So the run analyzes Kinto's database every few seconds, as autovacuum would.
async fn kinto_storage(backend: Backend) -> (Option<KintoDb>, Storage) {
    match backend {
        Backend::Memory => (None, Storage::Memory),
        Backend::Postgresql => {
            use sqlx::Executor as _;
            let db = TestDb::create().await;
            let storage = Storage::Postgres(db.url.clone());
            let mut conn = db.connect().await;
            let analyzer = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    if let Err(e) = conn.execute("ANALYZE").await {
                        eprintln!("ANALYZE of Kinto's database failed: {e}");
                    }
                }
            });
            (Some(KintoDb { _db: db, analyzer }), storage)
        }
    }
}

async fn reference(backend: Backend, data: &[Value]) -> Side {
    let (_kinto_db, storage) = kinto_storage(backend).await;
    let setup = Setup::new("", "http://unused/v1", "a/b -> c/d", "");
    let settings = reference_signer_settings(
        "/buckets/ws/collections/bench -> /buckets/prod/collections/bench",
        &setup.private_key,
        &setup.public_key,
    );
    let kinto = KintoServer::launch(&setup.dir.0, Install::Reference, &storage, &settings).await;
    let editor = kinto.editor();
    editor.create_source("ws", "bench", json!({}), &[]).await;
    editor
        .load_records("ws", "bench", data, backend.load_parallel())
        .await;
    let pid = kinto.pid().expect("Kinto runs");
    let before = status_kib(pid, "VmRSS:").unwrap_or(0.0) / 1024.0;
    let sampler = RssSampler::start(pid);
    let trigger_first = trigger(&editor).await;
    let growth = sampler.peak_mib().await - before;
    editor
        .put_records("ws", "bench", &one_percent_changed(data))
        .await;
    let trigger_resign = trigger(&editor).await;
    let verdict = setup.verify(&kinto.url, "prod", "bench");
    Side {
        trigger: trigger_first,
        signed: trigger_first,
        trigger_resign,
        resigned: trigger_resign,
        memory_mib: growth,
        idle_mib: 0.0,
        destination_records: editor.records("prod", "bench").await.len(),
        valid: verdict["valid"] == true,
    }
}

/// `install` is `Install::Ours`, or `Install::OursBatchOnly` for a Kinto without the plugin's endpoints.
async fn signed_by_us(backend: Backend, data: &[Value], install: Install) -> Side {
    let (_kinto_db, storage) = kinto_storage(backend).await;
    let db = TestDb::create().await;
    let api_port = free_port();
    let dir = signer_e2e::service::TempDir::new("bench-kinto");
    let settings = webhook_settings(
        &format!("http://127.0.0.1:{api_port}/v1/webhooks/kinto"),
        SECRET,
        "ws",
    );
    let kinto = KintoServer::launch(&dir.0, install, &storage, &settings).await;
    let editor = kinto.editor();
    editor.create_source("ws", "bench", json!({}), &[]).await;
    editor
        .load_records("ws", "bench", data, backend.load_parallel())
        .await;
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        "/buckets/ws/collections/bench -> /buckets/prod/collections/bench",
        &format!(
            "[queue]\npoll_interval_ms = 1000\n[api]\nwebhook_secret = \"{SECRET}\"\n[feed]\nenabled = false\n"
        ),
    );
    // Kinto's own page size (`storage_max_fetch_size`), not the tests' small pages.
    let config = std::fs::read_to_string(&setup.config).expect("the config");
    std::fs::write(
        &setup.config,
        config.replace("page_size = 1000\n", "page_size = 10000\n"),
    )
    .expect("can write the config");
    let api = Api::start_on(&setup, 0, api_port).await;
    let worker = Process::spawn(
        "signer-worker",
        &["--concurrency", "1"],
        &setup.config,
        setup.dir.0.join("worker.log"),
    );

    signer_e2e::eventually(30, "the worker to start", || {
        let started = worker.log_text().contains("worker pool started");
        async move { started.then_some(()) }
    })
    .await;
    let idle = status_kib(worker.pid(), "VmRSS:").unwrap_or(0.0) / 1024.0;
    let start = SystemTime::now();
    let trigger_first = trigger(&editor).await;
    let signed = until_signed(&api, &editor, 0, start).await;
    let peak = status_kib(worker.pid(), "VmHWM:").unwrap_or(0.0) / 1024.0;

    editor
        .put_records("ws", "bench", &one_percent_changed(data))
        .await;
    let start = SystemTime::now();
    let trigger_resign = trigger(&editor).await;
    let resigned = until_signed(&api, &editor, 1, start).await;
    let verdict = setup.verify(&kinto.url, "prod", "bench");
    Side {
        trigger: trigger_first,
        signed,
        trigger_resign,
        resigned,
        memory_mib: peak,
        idle_mib: idle,
        destination_records: editor.records("prod", "bench").await.len(),
        valid: verdict["valid"] == true,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn s(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ratio(reference: Duration, ours: Duration) -> String {
    format!("{:.2}×", reference.as_secs_f64() / ours.as_secs_f64())
}

fn complete(side: &Side, records: usize) -> String {
    format!(
        "{}{} {}",
        side.destination_records,
        if side.destination_records == records {
            ""
        } else {
            " (incomplete)"
        },
        if side.valid { "valid" } else { "INVALID" }
    )
}

#[tokio::main]
async fn main() {
    let mut backends = Vec::new();
    let mut sizes = Vec::new();
    let mut without_plugin = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "memory" => backends.push(Backend::Memory),
            "postgresql" => backends.push(Backend::Postgresql),
            "without-plugin" => without_plugin = true,
            n => sizes.push(n.parse::<usize>().expect("sizes are integers")),
        }
    }
    if backends.is_empty() {
        backends = vec![Backend::Memory, Backend::Postgresql];
    }
    if sizes.is_empty() {
        sizes = vec![1_000, 10_000];
    }
    let extra = if without_plugin {
        " ours without the plugin: to signed / re-sign |"
    } else {
        ""
    };
    println!("| backend | records | payload | trigger request: reference / ours | to signed: reference / ours | ratio | re-sign after 1%: reference / ours | ratio | reference Kinto growth / our worker peak (idle) | destination: reference / ours |{extra}");
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|{}",
        if without_plugin { "---|" } else { "" }
    );
    for backend in backends {
        for &records in &sizes {
            let data = sample_records(records, 42);
            let payload_mib =
                serde_json::to_vec(&data).expect("records serialize").len() as f64 / 1048576.0;
            let reference = reference(backend, &data).await;
            let ours = signed_by_us(backend, &data, Install::Ours).await;
            let batch_only = if without_plugin {
                let side = signed_by_us(backend, &data, Install::OursBatchOnly).await;
                format!(
                    " {} / {} ({}) |",
                    s(side.signed),
                    s(side.resigned),
                    complete(&side, records)
                )
            } else {
                String::new()
            };
            println!(
                "| {backend:?} | {records} | {payload_mib:.1} MiB | {} / {} | {} / {} | {} | {} / {} | {} | {:.0} MiB / {:.1} MiB (idle {:.1}: +{:.1}, {:.2}× the payload) | {} / {} |{batch_only}",
                ms(reference.trigger),
                ms(ours.trigger),
                s(reference.signed),
                s(ours.signed),
                ratio(reference.signed, ours.signed),
                s(reference.resigned),
                s(ours.resigned),
                ratio(reference.resigned, ours.resigned),
                reference.memory_mib,
                ours.memory_mib,
                ours.idle_mib,
                ours.memory_mib - ours.idle_mib,
                (ours.memory_mib - ours.idle_mib) / payload_mib,
                complete(&reference, records),
                complete(&ours, records),
            );
            println!(
                "|  | (trigger of the re-sign: reference {} / ours {}) |||||||||",
                ms(reference.trigger_resign),
                ms(ours.trigger_resign)
            );
        }
    }
}
