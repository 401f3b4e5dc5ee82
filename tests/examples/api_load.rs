//! `make bench`: `POST /v1/jobs` under load with `wrk` (Debian's package), on loopback: a release `signer-api` on
//! a fresh Postgres database, no workers (the API's own cost: parse, authorize, one transaction that writes the
//! job, its first history row and the `NOTIFY`, the 202). Every request names a new collection of a bucket
//! rule, so each one inserts a job (the costlier path; repeated triggers of one collection coalesce). Runs at
//! 2, 8 and 32 connections: requests per second and latency percentiles, as wrk measures them.
//!
//! Usage: cargo run --release -p signer_e2e --example api_load -- [SECONDS] (default 10)

use signer_e2e::db::TestDb;
use signer_e2e::service::{Api, Setup};
use std::process::Command;

/// Each request a collection of its own, so every POST records a new job.
const SCRIPT: &str = r#"
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"resource": "ws/c%d-%d"}', math.random(1, 1000000000), counter)
  return wrk.format("POST", "/v1/jobs", {["Content-Type"] = "application/json"}, body)
end
"#;

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
    let script = setup.dir.0.join("post.lua");
    std::fs::write(&script, SCRIPT).unwrap();
    println!(
        "`POST /v1/jobs` for {seconds} s per row, each request a new job, wrk -t2 (loopback):\n"
    );
    println!("| connections | requests/s | median | p90 | p99 | errors |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for connections in [2, 8, 32] {
        let output = Command::new("wrk")
            .args([
                "-t2",
                &format!("-c{connections}"),
                &format!("-d{seconds}s"),
                "--latency",
                "-s",
            ])
            .arg(&script)
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
        println!(
            "| {connections} | {rate:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {errors} |",
            percentile(&report, "50%"),
            percentile(&report, "90%"),
            percentile(&report, "99%"),
        );
    }
    drop(api);
    db.drop_now().await;
}
