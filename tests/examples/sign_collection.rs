//! `make bench`: the cost of signing a collection end to end, per size: the trigger request's latency, the time
//! until the job succeeded (snapshot, push, sign, publish), the same after 1% of the records changed, and the
//! worker process's peak memory. Real Kinto (memory backend), real Postgres, one `signer-worker` process; every
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
    trigger: Duration,
    first_sign: Duration,
    resign: Duration,
    peak_rss_mib: f64,
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
    println!("| records | trigger request | trigger → signed (all new) | re-sign after 1% changed | worker peak RSS |");
    println!("|--------:|----------------:|---------------------------:|-------------------------:|----------------:|");
    for size in sizes {
        let run = measure(size).await;
        println!(
            "| {} | {:.1} ms | {:.2} s | {:.2} s | {:.1} MiB |",
            run.records,
            run.trigger.as_secs_f64() * 1000.0,
            run.first_sign.as_secs_f64(),
            run.resign.as_secs_f64(),
            run.peak_rss_mib
        );
    }
}
