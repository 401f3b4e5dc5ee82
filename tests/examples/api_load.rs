//! `make bench`: `POST /v1/jobs` under load with `wrk` (Debian's package), on loopback: a release `signer-api` on
//! a fresh Postgres database, no workers (the API's own cost: parse, authorize, one transaction that writes the
//! job, its first history row and the `NOTIFY`, the 202). Every request names a new collection of a bucket
//! rule, so each one inserts a job (the costlier path; repeated triggers of one collection coalesce), which the
//! run checks against the `jobs` table after each row. Runs at 2, 8 and 32 connections as fast as they go, then
//! paced near the issue's 500 requests/s (wrk cannot hold a rate, but its `delay` hook makes each connection wait
//! between requests): requests per second and latency percentiles, as wrk measures them.
//!
//! Usage: cargo run --release -p signer_e2e --example api_load -- [SECONDS] (default 10)

use signer_e2e::db::TestDb;
use signer_e2e::service::{Api, Setup};
use std::process::Command;

/// A row's wrk script. Each request names a collection of its own, so every POST records a new job: names are
/// made of the row, the thread and the thread's own count. (wrk runs a Lua state per thread, all seeded alike:
/// with `math.random` both threads sent the same names, and half the requests joined a job already queued.)
/// Paced, each connection waits `pause_ms` after a response before its next request.
fn script(row: usize, pause_ms: Option<u32>) -> String {
    let mut lua = format!(
        r#"
local threads = 0
function setup(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{{"resource": "ws/r{row}t%d-%d"}}', thread_number, counter)
  return wrk.format("POST", "/v1/jobs", {{["Content-Type"] = "application/json"}}, body)
end
"#
    );
    if let Some(ms) = pause_ms {
        lua.push_str(&format!("delay = function() return {ms} end\n"));
    }
    lua
}

/// Each row's connections, and the milliseconds each waits after a response before its next request when paced:
/// the last row is 10 × one per 19 ms and the answer's time, ~460 requests/s here (as near 500 as wrk's whole
/// milliseconds go).
const ROWS: [(u32, Option<u32>); 4] = [(2, None), (8, None), (32, None), (10, Some(19))];

/// wrk's `--latency` distribution line, in milliseconds (`50%    1.23ms`).
fn percentile(report: &str, label: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label} in:\n{report}"));
    let value = line.split_whitespace().nth(1).expect("a value");
    let (number, unit) = value.split_at(value.find(|c: char| c.is_alphabetic()).expect("a unit"));
    let number: f64 = number.parse().expect("a number");
    match unit {
        "us" => number / 1e3,
        "ms" => number,
        "s" => number * 1e3,
        other => panic!("unit {other}"),
    }
}

async fn count_jobs(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&mut db.connect().await)
        .await
        .expect("jobs counted")
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map_or(10, |s| s.parse().expect("seconds"));
    let db = TestDb::create().await;
    let setup = Setup::new(
        &db.url,
        "http://127.0.0.1:9/v1",
        "/buckets/ws -> /buckets/prod",
        "[feed]\nenabled = false\n",
    );
    let api = Api::start(&setup, 0).await;
    println!(
        "`POST /v1/jobs` for {seconds} s per row, each request a new job, wrk -t2 (loopback):\n"
    );
    println!("| connections | pace | requests/s | median | p90 | p99 | errors |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let mut jobs = 0;
    for (row, (connections, pause)) in ROWS.into_iter().enumerate() {
        let script_file = setup.dir.0.join(format!("row{row}.lua"));
        std::fs::write(&script_file, script(row, pause)).unwrap();
        let pace = match pause {
            Some(ms) => format!("{ms} ms between requests"),
            None => "as fast as it answers".to_owned(),
        };
        let output = Command::new("wrk")
            .args([
                "-t2",
                &format!("-c{connections}"),
                &format!("-d{seconds}s"),
                "--latency",
                "-s",
            ])
            .arg(&script_file)
            .arg(format!("{}/v1/jobs", api.url))
            .output()
            .expect("wrk runs (make bench-tools installs it)");
        let report = String::from_utf8_lossy(&output.stdout);
        let rate = report
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .unwrap_or_else(|| panic!("{report}"));
        let errors = report
            .lines()
            .find(|l| l.contains("Non-2xx"))
            .map_or("0".to_owned(), |l| l.rsplit(' ').next().unwrap().to_owned());
        // wrk's "N requests in 10.00s": each must have recorded a job of its own (a few more may have been
        // recorded for requests still in flight when wrk stopped).
        let requests: i64 = report
            .lines()
            .find_map(|l| l.trim().split_once(" requests in "))
            .map(|(n, _)| n.parse().unwrap())
            .unwrap_or_else(|| panic!("{report}"));
        let jobs_now = count_jobs(&db).await;
        let new_jobs = jobs_now - jobs;
        jobs = jobs_now;
        assert!(
            (requests..=requests + i64::from(connections)).contains(&new_jobs),
            "{requests} requests recorded {new_jobs} jobs"
        );
        println!(
            "| {connections} | {pace} | {rate:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {errors} |",
            percentile(&report, "50%"),
            percentile(&report, "90%"),
            percentile(&report, "99%"),
        );
    }
    drop(api);
    db.drop_now().await;
}
