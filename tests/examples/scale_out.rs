//! `make bench` (scale-out part): jobs per second with 1, 2 and 4 `signer-worker` processes, with Postgres and
//! with RabbitMQ dispatch, on no-op-sized collections (empty by default: the cost is the queue and Kinto round
//! trips, not the data) or collections of RECORDS records; and how long after a worker's SIGKILL its job runs
//! elsewhere. Real Kinto (memory backend), real Postgres and RabbitMQ on this machine. Medians of three runs.
//!
//! Usage: cargo run --release -p signer_e2e --example scale_out -- [JOBS [RECORDS]] (default 200 0)

use serde_json::json;
use signer_e2e::db::TestDb;
use signer_e2e::eventually;
use signer_e2e::kinto::KintoServer;
use signer_e2e::rabbitmq::{dispatch_settings, shared_url, unique_queue, TestBroker};
use signer_e2e::records::sample_records;
use signer_e2e::service::{Api, Process, Setup};
use sqlx::Row as _;
use std::time::Duration;

const RUNS: usize = 3;
const CONCURRENCY: usize = 4;

fn queue_table(rabbit: Option<&str>, lease_seconds: u64) -> String {
    let dispatch = match rabbit {
        Some(queue) => format!(
            "dispatch = \"rabbitmq\"\n{}",
            dispatch_settings(&shared_url(), queue)
        ),
        None => "dispatch = \"postgres\"\n".into(),
    };
    format!(
        "[queue]\nlease_seconds = {lease_seconds}\nrescue_interval_seconds = 1\npoll_interval_ms = 1000\n{dispatch}\
         [worker]\nconcurrency = {CONCURRENCY}\n[feed]\nenabled = false\n"
    )
}

/// `jobs` collections of `records` records on a fresh Kinto (the memory backend slows down as it fills), all
/// queued before any worker starts; then `workers` processes drain them. Returns jobs per second, first claim
/// to last success (process start-up excluded).
async fn drain(jobs: usize, records: usize, workers: usize, rabbit: bool, run: usize) -> f64 {
    let kinto = KintoServer::start().await;
    let bucket = format!("b{}", uuid::Uuid::new_v4().simple());
    let editor = kinto.editor();
    editor
        .ok(
            reqwest::Method::PUT,
            &format!("/buckets/{bucket}"),
            Some(json!({"permissions": {"write": ["system.Authenticated"]}})),
        )
        .await;
    let creates: Vec<_> = (0..jobs)
        .map(|i| json!({"method": "PUT", "path": format!("/buckets/{bucket}/collections/c{i}"), "body": {"data": {}}}))
        .collect();
    for chunk in creates.chunks(25) {
        editor
            .ok(
                reqwest::Method::POST,
                "/batch",
                Some(json!({"requests": chunk})),
            )
            .await;
    }
    let content = sample_records(records, 1);
    for i in 0..jobs {
        editor
            .put_records(&bucket, &format!("c{i}"), &content)
            .await;
    }
    let db = TestDb::create().await;
    let queue = unique_queue();
    let broker = match rabbit {
        true => Some(TestBroker::connect(&shared_url(), &queue).await),
        false => None,
    };
    let extra = queue_table(rabbit.then_some(queue.as_str()), 30);
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        &format!("/buckets/{bucket} -> /buckets/p{bucket}"),
        &extra,
    );
    let api = Api::start(&setup, 0).await;
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(16) {
        let posts = chunk.iter().map(|i| {
            let resource = format!("{bucket}/c{i}");
            let api = &api;
            async move { api.sign(&resource).await }
        });
        futures::future::join_all(posts).await;
    }
    let procs: Vec<Process> = (0..workers)
        .map(|w| {
            Process::spawn(
                "signer-worker",
                &[],
                &setup.config,
                setup.dir.0.join(format!("w{run}-{w}.log")),
            )
        })
        .collect();
    let seconds = eventually(600, "every job to succeed", || async {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE state = 'succeeded') AS done,
                    extract(epoch FROM max(finished_at) - min(started_at))::float8 AS seconds FROM jobs",
        )
        .fetch_one(&mut db.connect().await)
        .await
        .ok()?;
        (row.get::<i64, _>("done") == jobs as i64).then(|| row.get::<f64, _>("seconds"))
    })
    .await;
    drop(procs);
    if let Some(broker) = broker {
        broker.delete().await;
    }
    jobs as f64 / seconds
}

/// One job on a worker that is SIGKILLed mid-push while a second worker idles: seconds from the kill to the
/// job's next `running` event.
async fn takeover(kinto: &KintoServer, rabbit: bool, lease_seconds: u64) -> f64 {
    let bucket = format!("k{}", uuid::Uuid::new_v4().simple());
    kinto
        .editor()
        .create_source(&bucket, "big", json!({}), &sample_records(3000, 7))
        .await;
    let db = TestDb::create().await;
    let queue = unique_queue();
    let broker = match rabbit {
        true => Some(TestBroker::connect(&shared_url(), &queue).await),
        false => None,
    };
    let extra = queue_table(rabbit.then_some(queue.as_str()), lease_seconds);
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        &format!("{bucket}/big -> p{bucket}/big"),
        &extra,
    );
    let api = Api::start(&setup, 0).await;
    let mut doomed = Process::spawn(
        "signer-worker",
        &["--concurrency", "1"],
        &setup.config,
        setup.dir.0.join("doomed.log"),
    );
    let id = api.sign(&format!("{bucket}/big")).await;
    eventually(60, "the job to push", || async {
        let body = api.get(&format!("/v1/jobs/{id}")).await.1;
        (body["data"]["progress"]["records_pushed"].as_u64() > Some(0)).then_some(())
    })
    .await;
    let _spare = Process::spawn(
        "signer-worker",
        &["--concurrency", "1"],
        &setup.config,
        setup.dir.0.join("spare.log"),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    doomed.kill();
    let killed = chrono::Utc::now();
    let rerun: chrono::DateTime<chrono::Utc> = eventually(120, "the job to run elsewhere", || async {
        sqlx::query_scalar(
            "SELECT at FROM job_events WHERE job_id = $1::uuid AND event = 'running' ORDER BY id OFFSET 1 LIMIT 1",
        )
        .bind(&id)
        .fetch_optional(&mut db.connect().await)
        .await
        .ok()?
    })
    .await;
    api.wait_final(&id, 120).await;
    if let Some(broker) = broker {
        broker.delete().await;
    }
    (rerun - killed).num_milliseconds() as f64 / 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let arg = |n: usize, default: usize, name: &str| {
        std::env::args()
            .nth(n)
            .map_or(default, |a| a.parse().expect(name))
    };
    let (jobs, records) = (
        arg(1, 200, "JOBS is a number"),
        arg(2, 0, "RECORDS is a number"),
    );
    println!("Jobs per second, {jobs} collections of {records} records queued, then drained by N worker processes x {CONCURRENCY} (median of {RUNS}):\n");
    println!("| dispatch | 1 process | 2 processes | 4 processes | 4 vs 1 |");
    println!("|---|---|---|---|---|");
    for rabbit in [false, true] {
        let mut rates = Vec::new();
        for workers in [1, 2, 4] {
            let mut runs = Vec::new();
            for run in 0..RUNS {
                runs.push(drain(jobs, records, workers, rabbit, run).await);
            }
            rates.push(median(runs));
        }
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2}x |",
            if rabbit { "rabbitmq" } else { "postgres" },
            rates[0],
            rates[1],
            rates[2],
            rates[2] / rates[0]
        );
    }
    let lease = 5;
    println!("\nSIGKILL of a worker mid-job to its job running on another worker (lease {lease} s, rescue every 1 s, median of {RUNS}):\n");
    println!("| dispatch | seconds |");
    println!("|---|---|");
    for rabbit in [false, true] {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            // Through /v1/batch: a push of seconds, long enough to kill its worker in the middle.
            runs.push(takeover(&KintoServer::start_batch_only().await, rabbit, lease).await);
        }
        println!(
            "| {} | {:.2} |",
            if rabbit { "rabbitmq" } else { "postgres" },
            median(runs)
        );
    }
}
