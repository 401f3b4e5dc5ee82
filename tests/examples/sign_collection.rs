//! `make bench`: the cost of signing a collection end to end, per size: the trigger request's latency, the time
//! until the job succeeded (snapshot, push, sign, publish), the same after 1% of the records changed, and the
//! worker process's peak memory; and, in process, what canonical JSON + SHA-384 + P-384 of that many records costs. Real Kinto (memory backend), real Postgres, one `signer-worker` process; every
//! result is checked by the independent Python verifier.
//!
//! Usage: cargo run --release -p signer_e2e --example sign_collection -- [SIZES…] (default 1000 10000)

use serde_json::json;
use signer_e2e::db::TestDb;
use signer_e2e::kinto::KintoServer;
use signer_e2e::records::sample_records;
use signer_e2e::service::{Api, Process, Setup};
use std::time::{Duration, Instant};

struct Run {
    records: usize,
    serialize_and_sign: Duration,
    trigger: Duration,
    first_sign: Duration,
    resign: Duration,
    peak_rss_mib: f64,
}

/// Median of 5 in-process runs of what the worker does to a listing: canonical JSON, SHA-384, P-384 signature.
fn serialize_and_sign(records: &[serde_json::Value]) -> Duration {
    let stored: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r["last_modified"] = json!(1_700_000_000_000i64 + i as i64);
            r
        })
        .collect();
    let (private, _) = signer_worker::signing::generate_key_pair();
    let signer = signer_worker::signing::LocalEcdsaSigner::from_pem(&private).expect("fresh key");
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let payload = signer_worker::canonical::signed_payload(&stored, 1_700_000_100_000)
                .expect("signable");
            std::hint::black_box(signer.sign_payload(payload.as_bytes()));
            start.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

/// Peak resident set size of a live process, from /proc (`VmHWM`).
fn peak_rss_mib(pid: u32) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the worker is alive");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status");
    kib / 1024.0
}

async fn timed_sign(api: &Api, resource: &str) -> (Duration, Duration, serde_json::Value) {
    let start = Instant::now();
    let id = api.sign(resource).await;
    let trigger = start.elapsed();
    let job = api.wait_final(&id, 600).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    (trigger, start.elapsed(), job)
}

async fn measure(records: usize) -> Run {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let editor = kinto.editor();
    let data = sample_records(records, 42);
    editor.create_source("ws", "bench", json!({}), &data).await;
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        "ws/bench -> prod/bench",
        "[queue]\npoll_interval_ms = 200\n",
    );
    let api = Api::start(&setup, 0).await;
    let worker = Process::spawn(
        "signer-worker",
        &["--concurrency", "1"],
        &setup.config,
        setup.dir.0.join("worker.log"),
    );

    let (trigger, first_sign, _) = timed_sign(&api, "ws/bench").await;
    assert_eq!(setup.verify(&kinto.url, "prod", "bench")["valid"], true);

    let changed: Vec<_> = data
        .iter()
        .step_by(100)
        .map(|r| {
            let mut r = r.clone();
            r["title"] = json!("changed");
            r
        })
        .collect();
    editor.put_records("ws", "bench", &changed).await;
    let (_, resign, job) = timed_sign(&api, "ws/bench").await;
    assert_eq!(
        job["data"]["result"]["destination"]["updated"],
        changed.len()
    );
    assert_eq!(setup.verify(&kinto.url, "prod", "bench")["valid"], true);
    Run {
        records,
        serialize_and_sign: serialize_and_sign(&data),
        trigger,
        first_sign,
        resign,
        peak_rss_mib: peak_rss_mib(worker.pid()),
    }
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are integers"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    println!("| records | trigger request | trigger → signed (all new) | re-sign after 1% changed | worker peak RSS | canonical JSON + sign |");
    println!("|--------:|----------------:|---------------------------:|-------------------------:|----------------:|----------------------:|");
    for size in sizes {
        let run = measure(size).await;
        println!(
            "| {} | {:.1} ms | {:.2} s | {:.2} s | {:.1} MiB | {:.1} ms |",
            run.records,
            run.trigger.as_secs_f64() * 1000.0,
            run.first_sign.as_secs_f64(),
            run.resign.as_secs_f64(),
            run.peak_rss_mib,
            run.serialize_and_sign.as_secs_f64() * 1000.0
        );
    }
}
