//! `make bench`: the queue alone, with no-op jobs, on the same Postgres: ours (the worker pool and the Postgres
//! store, woken by `LISTEN/NOTIFY`) beside Graphile Worker 0.17 (npm, `tests/bench/graphile`), unbatched and
//! batched as its performance page tunes it. The two measures Graphile Worker publishes: jobs per second
//! burning down N queued jobs (with 1 and 2 worker processes, concurrency 24 each), and enqueue → start latency
//! over M sequential jobs (median, p99). Every run gets a fresh database.
//!
//! Usage: queue_throughput [JOBS] [LATENCY_JOBS]       (default 100000 1000)
//!        queue_throughput --worker DATABASE_URL CONCURRENCY CLAIM_AHEAD
//!            one no-op worker process: prints `{"ready":true}`, and at SIGTERM `{jobs, first, last}` (epoch ms)

use serde_json::{json, Value};
use signer_e2e::db::TestDb;
use signer_e2e::root;
use signer_types::job::{Job, JobKind, NewJob, Trigger};
use signer_worker::dispatch::Waker;
use signer_worker::pool::{JobError, JobRunner, PoolSettings, WorkerPool};
use signer_worker::report::Report;
use signer_worker::store::{JobStore as _, PgStore, Store};
use sqlx::{Connection as _, Row as _};
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const CONCURRENCY: usize = 24;
/// Ours tuned for short jobs as Graphile Worker's batched mode is (its local queue holds 500).
const CLAIM_AHEAD: usize = 500;

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1e3
}

/// Counts the jobs it is handed, and when the first and the last started.
#[derive(Default)]
struct Noop {
    jobs: AtomicU64,
    first: AtomicU64,
    last: AtomicU64,
    started: Option<mpsc::UnboundedSender<Instant>>,
}

impl JobRunner for Noop {
    async fn run(&self, _job: &Job, _report: &Report) -> Result<Value, JobError> {
        let now = (epoch_ms() * 1e3) as u64;
        let _ = self
            .first
            .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        self.last.fetch_max(now, Ordering::SeqCst);
        self.jobs.fetch_add(1, Ordering::SeqCst);
        if let Some(started) = &self.started {
            let _ = started.send(Instant::now());
        }
        Ok(json!({}))
    }
}

fn pool_settings(concurrency: usize, claim_ahead: usize) -> PoolSettings {
    PoolSettings {
        worker_id: signer_worker::pool::new_worker_id("bench"),
        concurrency,
        claim_ahead,
        lease: Duration::from_secs(60),
        poll_interval: Duration::from_secs(1),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        rescue_interval: Duration::from_secs(15),
        shutdown_grace: Duration::from_secs(5),
        retention: Duration::from_secs(3600),
    }
}

async fn open(url: &str, concurrency: usize) -> Arc<Store> {
    let connections = u32::try_from(concurrency).unwrap() + 2;
    Arc::new(Store::Postgres(
        PgStore::connect(url, connections).await.expect("Postgres"),
    ))
}

/// `--worker`: a worker process running no-op jobs until SIGTERM.
async fn worker(url: &str, concurrency: usize, claim_ahead: usize) {
    let store = open(url, concurrency).await;
    let runner = Arc::new(Noop::default());
    let shutdown = signer_worker::service::shutdown_on_signals();
    let waker = Waker::for_store(&store, true);
    let pool = WorkerPool::new(
        store,
        runner.clone(),
        pool_settings(concurrency, claim_ahead),
    );
    println!("{}", json!({"ready": true}));
    pool.run(waker, shutdown).await;
    let ms = |a: &AtomicU64| a.load(Ordering::SeqCst) as f64 / 1e3;
    println!(
        "{}",
        json!({"jobs": runner.jobs.load(Ordering::SeqCst), "first": ms(&runner.first), "last": ms(&runner.last)})
    );
}

/// A worker process of either queue, ready to take jobs.
struct WorkerProcess(Child, BufReader<std::process::ChildStdout>);

impl WorkerProcess {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("worker starts");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.contains("ready"), "worker said {line:?}");
        Self(child, out)
    }

    /// SIGTERM, then what it counted.
    fn stop(mut self) -> Value {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        let mut line = String::new();
        self.1.read_line(&mut line).unwrap();
        self.0.wait().unwrap();
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("worker printed {line:?}"))
    }
}

fn node(args: &[&str]) -> Command {
    let mut command = Command::new("node");
    command
        .current_dir(root().join("tests/bench/graphile"))
        .arg("bench.js")
        .args(args);
    command
}

fn node_json(args: &[&str]) -> Value {
    let output = node(args)
        .output()
        .expect("node runs (make bench-tools installs Graphile Worker)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON")
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(sql).fetch_one(&mut conn).await.unwrap().get(0)
}

/// What autovacuum does within a minute of a bulk load (both queues get it): without it the planner, knowing
/// nothing of the new rows, sorts the whole queue for a large claim instead of reading its index in order.
async fn analyze(url: &str, table: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(&format!("ANALYZE {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Starts `processes` workers, waits for the queue to empty, stops them: jobs per second between the first
/// job's start and the last's, across processes.
async fn burn(
    url: &str,
    processes: usize,
    spawn: impl Fn() -> Command,
    remaining: &str,
    jobs: usize,
) -> f64 {
    let workers: Vec<WorkerProcess> = (0..processes)
        .map(|_| WorkerProcess::spawn(spawn()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    while count(url, remaining).await > 0 {
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats: Vec<Value> = workers.into_iter().map(WorkerProcess::stop).collect();
    let done: u64 = stats.iter().map(|s| s["jobs"].as_u64().unwrap()).sum();
    assert_eq!(done as usize, jobs, "every job ran once: {stats:?}");
    let first = stats
        .iter()
        .filter_map(|s| s["first"].as_f64())
        .filter(|f| *f > 0.0)
        .fold(f64::MAX, f64::min);
    let last = stats
        .iter()
        .filter_map(|s| s["last"].as_f64())
        .fold(0.0, f64::max);
    jobs as f64 / ((last - first) / 1e3)
}

async fn ours_burn(jobs: usize, processes: usize, claim_ahead: usize) -> f64 {
    let db = TestDb::create().await;
    drop(open(&db.url, 1).await);
    let mut conn = db.connect().await;
    // Ids as the store makes them (UUIDv7, in creation order).
    let ids: Vec<uuid::Uuid> = (0..jobs).map(|_| uuid::Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO jobs (id, resource, destination, kind, state, max_attempts, trigger, requested_by)
         SELECT id, '/buckets/src/collections/c' || i, '/buckets/dst/collections/c' || i,
                'sign', 'queued', 3, 'api', 'bench'
         FROM unnest($1::uuid[]) WITH ORDINALITY AS j(id, i)",
    )
    .bind(&ids)
    .execute(&mut conn)
    .await
    .unwrap();
    analyze(&db.url, "jobs").await;
    let exe = std::env::current_exe().unwrap();
    let url = db.url.clone();
    let spawn = || {
        let mut c = Command::new(&exe);
        c.args([
            "--worker",
            &url,
            &CONCURRENCY.to_string(),
            &claim_ahead.to_string(),
        ]);
        c
    };
    let rate = burn(
        &db.url,
        processes,
        spawn,
        "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')",
        jobs,
    )
    .await;
    db.drop_now().await;
    rate
}

async fn graphile_burn(mode: &str, jobs: usize, processes: usize) -> f64 {
    let db = TestDb::create().await;
    node_json(&["queue", &db.url, &jobs.to_string()]);
    analyze(&db.url, "graphile_worker._private_jobs").await;
    let concurrency = CONCURRENCY.to_string();
    let spawn = || node(&["work", &db.url, mode, &concurrency]);
    let rate = burn(
        &db.url,
        processes,
        spawn,
        "SELECT count(*) FROM graphile_worker._private_jobs",
        jobs,
    )
    .await;
    db.drop_now().await;
    rate
}

/// Enqueue → start of `jobs` sequential jobs, through the store's own enqueue (and its `NOTIFY`).
async fn ours_latency(jobs: usize, claim_ahead: usize) -> Vec<f64> {
    let db = TestDb::create().await;
    let store = open(&db.url, 4).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let runner = Arc::new(Noop {
        started: Some(tx),
        ..Noop::default()
    });
    let shutdown = CancellationToken::new();
    let pool = WorkerPool::new(store.clone(), runner, pool_settings(4, claim_ahead));
    let running = tokio::spawn(pool.run(Waker::for_store(&store, true), shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let resource = signer_types::Resource {
            source: signer_types::CollectionRef::new("src", format!("c{i}")),
            preview: None,
            destination: signer_types::CollectionRef::new("dst", format!("c{i}")),
        };
        let before = Instant::now();
        store
            .enqueue(NewJob::new(
                &resource,
                JobKind::Sign,
                Trigger::Api,
                "bench".into(),
                3,
            ))
            .await
            .unwrap();
        let started = rx.recv().await.unwrap();
        latencies.push((started - before).as_secs_f64() * 1e3);
    }
    shutdown.cancel();
    running.await.unwrap();
    db.drop_now().await;
    latencies
}

async fn graphile_latency(mode: &str, jobs: usize) -> Vec<f64> {
    let db = TestDb::create().await;
    let result = node_json(&["latency", &db.url, mode, &jobs.to_string()]);
    db.drop_now().await;
    result["milliseconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return worker(&args[1], args[2].parse().unwrap(), args[3].parse().unwrap()).await;
    }
    let jobs: usize = args.first().map_or(100_000, |a| a.parse().unwrap());
    let latency_jobs: usize = args.get(1).map_or(1_000, |a| a.parse().unwrap());

    println!(
        "Burn-down of {jobs} queued no-op jobs, concurrency {CONCURRENCY} per process (jobs/s):\n"
    );
    println!(
        "| processes | ours | ours, claim-ahead {CLAIM_AHEAD} | Graphile Worker unbatched | Graphile Worker batched \
         | ours ÷ unbatched | claim-ahead ÷ batched |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for processes in [1, 2] {
        let ours = ours_burn(jobs, processes, 0).await;
        let ahead = ours_burn(jobs, processes, CLAIM_AHEAD).await;
        let unbatched = graphile_burn("unbatched", jobs, processes).await;
        let batched = graphile_burn("batched", jobs, processes).await;
        println!(
            "| {processes} | {ours:.0} | {ahead:.0} | {unbatched:.0} | {batched:.0} | {:.2}× | {:.2}× |",
            ours / unbatched,
            ahead / batched
        );
    }

    println!("\nEnqueue → start latency over {latency_jobs} sequential jobs (ms):\n");
    println!("| queue | median | p99 |");
    println!("|---|---:|---:|");
    let rows = [
        ("ours (LISTEN/NOTIFY)", ours_latency(latency_jobs, 0).await),
        (
            "ours, claim-ahead",
            ours_latency(latency_jobs, CLAIM_AHEAD).await,
        ),
        (
            "Graphile Worker unbatched",
            graphile_latency("unbatched", latency_jobs).await,
        ),
        (
            "Graphile Worker batched",
            graphile_latency("batched", latency_jobs).await,
        ),
    ];
    for (name, values) in rows {
        println!(
            "| {name} | {:.2} | {:.2} |",
            percentile(values.clone(), 0.5),
            percentile(values, 0.99)
        );
    }
}
