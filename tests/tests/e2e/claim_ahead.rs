//! The pool's `claim_ahead` (a local queue of jobs claimed beyond the free slots), on both stores: every job runs
//! once, jobs claimed ahead are given back at shutdown, and one that waits too long for a slot is given back
//! while the slots are still busy instead of keeping a lease nobody renews.

use serde_json::{json, Value};
use signer_e2e::db::TestDb;
use signer_e2e::service::TempDir;
use signer_types::job::{Job, JobKind, JobState, NewJob, Trigger};
use signer_types::{CollectionRef, Resource};
use signer_worker::dispatch::Waker;
use signer_worker::pool::{JobError, JobRunner, PoolSettings, WorkerPool};
use signer_worker::report::Report;
use signer_worker::store::{JobStore, PgStore, SqliteStore, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Counts the runs of each job; each run takes `pause`, or until `release` (whichever comes first), and says when
/// it started.
struct Counting {
    runs: Mutex<HashMap<Uuid, u32>>,
    pause: Duration,
    release: CancellationToken,
    started: mpsc::UnboundedSender<Uuid>,
}

impl JobRunner for Counting {
    async fn run(&self, job: &Job, _report: &Report) -> Result<Value, JobError> {
        *self.runs.lock().unwrap().entry(job.id).or_default() += 1;
        let _ = self.started.send(job.id);
        tokio::select! {
            () = tokio::time::sleep(self.pause) => {}
            () = self.release.cancelled() => {}
        }
        Ok(json!({}))
    }
}

struct Running {
    runner: Arc<Counting>,
    started: mpsc::UnboundedReceiver<Uuid>,
    shutdown: CancellationToken,
    pool: tokio::task::JoinHandle<()>,
}

fn settings(concurrency: usize, claim_ahead: usize, lease: Duration) -> PoolSettings {
    PoolSettings {
        worker_id: signer_worker::pool::new_worker_id("claim-ahead"),
        concurrency,
        claim_ahead,
        lease,
        poll_interval: Duration::from_millis(200),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        // No rescue during the test: a lease that expired would show as a rescue, not a give-back.
        rescue_interval: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(10),
        retention: Duration::from_secs(3600),
    }
}

async fn enqueue(store: &Store, jobs: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..jobs {
        let resource = Resource {
            source: CollectionRef::new("src", format!("c{i}")),
            preview: None,
            destination: CollectionRef::new("dst", format!("c{i}")),
        };
        let new = NewJob::new(&resource, JobKind::Sign, Trigger::Api, "test".into(), 3);
        ids.push(store.enqueue(new).await.unwrap().job.id);
    }
    ids
}

impl Running {
    /// SIGTERM's path: the pool stops claiming, drains and returns.
    async fn stop(&mut self) {
        self.shutdown.cancel();
        (&mut self.pool).await.unwrap();
    }
}

fn start(store: Arc<Store>, pause: Duration, settings: PoolSettings) -> Running {
    let (tx, started) = mpsc::unbounded_channel();
    let runner = Arc::new(Counting {
        runs: Mutex::default(),
        pause,
        release: CancellationToken::new(),
        started: tx,
    });
    let shutdown = CancellationToken::new();
    let pool = WorkerPool::new(store.clone(), runner.clone(), settings);
    let pool = tokio::spawn(pool.run(Waker::for_store(&store, true), shutdown.clone()));
    Running {
        runner,
        started,
        shutdown,
        pool,
    }
}

async fn states(store: &Store, ids: &[Uuid]) -> Vec<(JobState, i32)> {
    let mut states = Vec::new();
    for id in ids {
        let job = store.get(*id).await.unwrap().expect("job exists");
        states.push((job.state, job.attempt));
    }
    states
}

async fn wait_all_succeeded(store: &Store, ids: &[Uuid]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = states(store, ids).await;
        if states.iter().all(|(s, _)| *s == JobState::Succeeded) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not all succeed: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn events(store: &Store, id: Uuid) -> Vec<String> {
    let history = store.history(id).await.unwrap();
    history.into_iter().map(|e| e.event).collect()
}

/// 300 jobs through 3 slots and 40 claimed ahead: each runs once, on its first attempt, and the claims were
/// batches (fewer claim statements than jobs).
async fn every_job_runs_once(store: Arc<Store>) {
    let ids = enqueue(&store, 300).await;
    let mut run = start(
        store.clone(),
        Duration::ZERO,
        settings(3, 40, Duration::from_secs(60)),
    );
    wait_all_succeeded(&store, &ids).await;
    run.stop().await;
    let runs = run.runner.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 300);
    assert!(runs.values().all(|n| *n == 1), "a job ran twice: {runs:?}");
    for id in &ids {
        assert_eq!(
            events(&store, *id).await,
            ["queued", "running", "succeeded"]
        );
    }
    assert!(states(&store, &ids)
        .await
        .iter()
        .all(|(_, attempt)| *attempt == 1));
}

/// One slot, a long first job, 5 claimed behind it: at shutdown the running one finishes and the 5 go back to
/// the queue untouched (attempt refunded), ready for another worker.
async fn shutdown_gives_back_what_was_claimed_ahead(store: Arc<Store>) {
    let ids = enqueue(&store, 6).await;
    let mut run = start(
        store.clone(),
        Duration::from_millis(1500),
        settings(1, 5, Duration::from_secs(60)),
    );
    let first = run.started.recv().await.unwrap();
    let before = states(&store, &ids).await;
    assert!(
        before.iter().all(|(s, _)| *s == JobState::Running),
        "all six claimed by the one sweep: {before:?}"
    );
    run.stop().await;
    for (id, (state, attempt)) in ids.iter().zip(states(&store, &ids).await) {
        if *id == first {
            assert_eq!((state, attempt), (JobState::Succeeded, 1));
        } else {
            assert_eq!((state, attempt), (JobState::Queued, 0), "job {id}");
            assert_eq!(events(&store, *id).await, ["queued", "running", "released"]);
        }
    }
    assert_eq!(run.runner.runs.lock().unwrap().len(), 1);
}

/// A 3 s lease (a job claimed ahead may wait 1 s): while the one slot is busy (its job runs until the test
/// releases it), the two jobs claimed behind it are given back, and are claimed again and run once the slot frees.
async fn a_job_waiting_too_long_is_given_back_while_slots_are_busy(store: Arc<Store>) {
    let ids = enqueue(&store, 3).await;
    let mut run = start(
        store.clone(),
        Duration::from_secs(120),
        settings(1, 2, Duration::from_secs(3)),
    );
    let first = run.started.recv().await.unwrap();
    let waiting: Vec<Uuid> = ids.iter().copied().filter(|id| *id != first).collect();
    signer_e2e::eventually(30, "the jobs behind the busy slot to be given back", || {
        let (store, waiting) = (&store, &waiting);
        async move {
            for id in waiting {
                let events = events(store, *id).await;
                if events.get(..3) != Some(&["queued", "running", "released"].map(String::from)[..])
                {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    assert_eq!(
        store.get(first).await.unwrap().unwrap().state,
        JobState::Running,
        "given back while the slot is still busy"
    );
    run.runner.release.cancel();
    wait_all_succeeded(&store, &ids).await;
    run.stop().await;
    for id in &waiting {
        let events = events(&store, *id).await;
        assert_eq!(
            events[..3],
            ["queued", "running", "released"],
            "job {id}: {events:?}"
        );
        assert_eq!(events.last().map(String::as_str), Some("succeeded"));
        assert!(
            !events.contains(&"rescued".to_owned()),
            "job {id}: {events:?}"
        );
    }
    let runs = run.runner.runs.lock().unwrap().clone();
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
}

macro_rules! on_both_stores {
    ($($name:ident),+ $(,)?) => {
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let db = TestDb::create().await;
                    let store = PgStore::connect(&db.url, 8).await.expect("store connects and migrates");
                    super::$name(Arc::new(Store::Postgres(store))).await;
                }
            )+
        }

        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let dir = TempDir::new("claim-ahead");
                    let store = SqliteStore::open(&dir.0.join("jobs.db")).await.expect("store opens and migrates");
                    super::$name(Arc::new(Store::Sqlite(store))).await;
                }
            )+
        }
    };
}

on_both_stores!(
    every_job_runs_once,
    shutdown_gives_back_what_was_claimed_ahead,
    a_job_waiting_too_long_is_given_back_while_slots_are_busy,
);
