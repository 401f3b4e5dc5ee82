//! The claim loop: up to `concurrency` jobs at once, each under a lease renewed by heartbeat; transient failures
//! retried with exponential backoff and jitter, permanent ones failed at once; expired leases rescued; on
//! shutdown, claiming stops, running jobs get a grace period, and what is left is released for others.

use crate::dispatch::{Wake, Waker};
use crate::pipeline::Pipeline;
use crate::report::{Note, Report};
use crate::store::{JobStore, RetryOutcome, StoreError};
use backon::{BackoffBuilder as _, ExponentialBuilder};
use signer_types::job::{Job, JobState, Lease, Progress};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// How a job's work failed, as far as the pool cares.
#[derive(Debug, Clone)]
pub struct JobError {
    pub message: String,
    pub transient: bool,
    /// Kept with a permanent failure (what the job saw or wrote, for whoever looks next).
    pub result: Option<serde_json::Value>,
}

/// The work behind a job (the signing pipeline in production).
pub trait JobRunner: Send + Sync + 'static {
    fn run(
        &self,
        job: &Job,
        report: &Report,
    ) -> impl Future<Output = Result<serde_json::Value, JobError>> + Send;
}

impl JobRunner for Pipeline {
    async fn run(&self, job: &Job, report: &Report) -> Result<serde_json::Value, JobError> {
        match Pipeline::run(self, job, report).await {
            Ok(outcome) => Ok(serde_json::to_value(outcome).expect("outcome serializes")),
            Err(e) => Err(JobError {
                transient: e.is_transient(),
                message: e.to_string(),
                result: match &e {
                    crate::pipeline::PipelineError::Refused {
                        source_metadata_timestamp,
                        ..
                    } => Some(serde_json::json!({
                        "source_metadata_timestamp": source_metadata_timestamp
                    })),
                    _ => None,
                },
            }),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub worker_id: String,
    pub concurrency: usize,
    /// Jobs a sweep claims beyond its free slots, started as slots free (0: none).
    pub claim_ahead: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub rescue_interval: Duration,
    pub shutdown_grace: Duration,
    pub retention: Duration,
}

impl PoolSettings {
    pub fn from_settings(settings: &crate::config::Settings, worker_id: String) -> Self {
        Self {
            worker_id,
            concurrency: settings.worker.concurrency,
            claim_ahead: settings.worker.claim_ahead,
            lease: settings.lease(),
            poll_interval: Duration::from_millis(settings.queue.poll_interval_ms),
            backoff_min: Duration::from_millis(settings.queue.backoff_min_ms),
            backoff_max: Duration::from_millis(settings.queue.backoff_max_ms),
            rescue_interval: Duration::from_secs(settings.queue.rescue_interval_seconds),
            shutdown_grace: Duration::from_secs(settings.worker.shutdown_grace_seconds),
            retention: Duration::from_secs(settings.queue.retention_hours * 3600),
        }
    }

    /// Delay before attempt `attempt + 1`: exponential from `backoff_min`, capped, with jitter.
    pub fn retry_delay(&self, attempt: i32) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.backoff_min)
            .with_max_delay(self.backoff_max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(usize::try_from(attempt.max(1) - 1).unwrap_or_default())
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

/// A unique, readable worker id: host, pid and a random suffix (pids repeat across containers).
pub fn new_worker_id(prefix: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{host}-{}-{}", std::process::id(), &suffix[..8])
}

pub struct WorkerPool<S, R> {
    store: Arc<S>,
    runner: Arc<R>,
    settings: PoolSettings,
}

impl<S: JobStore, R: JobRunner> WorkerPool<S, R> {
    pub fn new(store: Arc<S>, runner: Arc<R>, settings: PoolSettings) -> Self {
        Self {
            store,
            runner,
            settings,
        }
    }

    /// Runs until `shutdown` is cancelled, then drains within the grace period.
    pub async fn run(self, mut waker: Waker, shutdown: CancellationToken) {
        let settings = Arc::new(self.settings);
        tracing::info!(worker_id = %settings.worker_id, concurrency = settings.concurrency, "worker pool started");
        let slots = Arc::new(Semaphore::new(settings.concurrency));
        // A finished job's slot frees before its outcome is committed (group commits take a few milliseconds,
        // in which the next jobs can run); this bounds how many outcomes wait for a commit, as many as jobs may be
        // claimed at once so that one commit can record them all.
        let recording = Arc::new(Semaphore::new(settings.concurrency + settings.claim_ahead));
        let hard_stop = CancellationToken::new();
        let mut running = JoinSet::new();
        let maintenance = tokio::spawn(maintain(
            self.store.clone(),
            settings.clone(),
            shutdown.clone(),
        ));

        let launcher = Launcher {
            store: self.store.clone(),
            runner: self.runner.clone(),
            settings: settings.clone(),
            recording,
            hard_stop: hard_stop.clone(),
        };
        let mut ahead = ClaimedAhead::new(settings.lease / 3);

        // With doorbells the first sweep waits for the poll interval: the queue holds the messages to start with.
        let mut next = waker.claims_greedily().then_some(Wake::Sweep);
        loop {
            let give_back_stale = |ahead: &mut ClaimedAhead, running: &mut JoinSet<()>| {
                for stale in ahead.take_stale(Instant::now()) {
                    running.spawn(give_back(
                        self.store.clone(),
                        stale,
                        "waited too long for a slot",
                    ));
                }
            };
            let stale_at = ahead.stale_at();
            // `biased`: once shutdown fired, no branch that would claim more work may win the race.
            let slot = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                () = sleep_until(stale_at) => {
                    give_back_stale(&mut ahead, &mut running);
                    continue;
                }
            };
            while running.try_join_next().is_some() {}
            give_back_stale(&mut ahead, &mut running);
            if let Some(job) = ahead.pop() {
                launcher.start(&mut running, job, slot);
                continue;
            }
            let wake = match next.take() {
                Some(wake) => wake,
                None => {
                    let idle = idle_time(self.store.as_ref(), &waker, &settings).await;
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        wake = waker.wait(idle) => wake,
                    }
                }
            };
            // A sweep fills every free slot with one claim, and claims `claim_ahead` more to start as slots free;
            // a doorbell names one job.
            let mut slots_held = vec![slot];
            let mut wanted = 1;
            if matches!(wake, Wake::Sweep) {
                while let Ok(more) = slots.clone().try_acquire_owned() {
                    slots_held.push(more);
                }
                wanted = slots_held.len() + settings.claim_ahead;
            }
            match claim(self.store.as_ref(), &settings, wake, wanted).await {
                Ok(jobs) => {
                    let claimed_any = !jobs.is_empty();
                    let mut jobs = jobs.into_iter();
                    // Slots first: `zip` takes a job only for a slot it has.
                    for (slot, job) in slots_held.drain(..).zip(jobs.by_ref()) {
                        launcher.start(&mut running, job, slot);
                    }
                    ahead.extend(jobs, Instant::now());
                    if claimed_any && waker.claims_greedily() {
                        next = Some(Wake::Sweep);
                    }
                }
                Err(e) => {
                    drop(slots_held);
                    tracing::error!(error = %e, "claim failed");
                    tokio::select! {
                        () = tokio::time::sleep(settings.backoff_min) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }

        for job in ahead.take_all() {
            running.spawn(give_back(
                self.store.clone(),
                job,
                "claimed ahead, not started before shutdown",
            ));
        }
        while running.try_join_next().is_some() {}
        tracing::info!(running = running.len(), grace = ?settings.shutdown_grace, "stopped claiming; draining");
        let drained = tokio::time::timeout(settings.shutdown_grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                running = running.len(),
                "grace period over: releasing the remaining jobs"
            );
            hard_stop.cancel();
            while running.join_next().await.is_some() {}
        }
        maintenance.abort();
        tracing::info!("worker pool stopped");
    }
}

/// Claims what `wake` names: up to `slots` runnable jobs for a sweep, the named one for a doorbell.
async fn claim<S: JobStore>(
    store: &S,
    settings: &PoolSettings,
    wake: Wake,
    slots: usize,
) -> Result<Vec<Job>, StoreError> {
    match wake {
        Wake::Sweep => {
            store
                .claim_many(&settings.worker_id, settings.lease, slots)
                .await
        }
        #[cfg(feature = "rabbitmq")]
        Wake::Bell(bell) => bell.claim(store, &settings.worker_id, settings.lease).await,
    }
}

/// Until the earliest scheduled retry, but never longer than the poll interval (doorbells ring for retries
/// when they fall due, so with RabbitMQ the poll interval is only the sweep's).
async fn idle_time<S: JobStore>(store: &S, waker: &Waker, settings: &PoolSettings) -> Duration {
    if !waker.claims_greedily() {
        return settings.poll_interval;
    }
    idle_for(
        store.next_run_in().await.ok().flatten(),
        settings.poll_interval,
    )
}

/// The wait before the next sweep, given how long until the next queued job is due: at least 10 ms (a due job the
/// sweep could not take, its destination busy, must not make the loop spin), at most the poll interval.
fn idle_for(next_run_in: Option<Duration>, poll_interval: Duration) -> Duration {
    next_run_in.map_or(poll_interval, |wait| {
        wait.clamp(Duration::from_millis(10), poll_interval)
    })
}

/// Starts claimed jobs, each in its own task with a slot.
struct Launcher<S, R> {
    store: Arc<S>,
    runner: Arc<R>,
    settings: Arc<PoolSettings>,
    recording: Arc<Semaphore>,
    hard_stop: CancellationToken,
}

impl<S: JobStore, R: JobRunner> Launcher<S, R> {
    fn start(&self, running: &mut JoinSet<()>, job: Job, slot: OwnedSemaphorePermit) {
        let span = tracing::info_span!("job", job_id = %job.id, resource = %job.resource, attempt = job.attempt);
        let work = execute(
            self.store.clone(),
            self.runner.clone(),
            self.settings.clone(),
            job,
            Slot {
                running: slot,
                recording: self.recording.clone(),
            },
            self.hard_stop.clone(),
        );
        running.spawn(work.instrument(span));
    }
}

/// Jobs a sweep claimed beyond its free slots (`claim_ahead`, as Graphile Worker's local queue), in claim order.
/// Their leases run from the claim and are not renewed while they wait, so one that waited `max_wait` (a third
/// of the lease: its first heartbeat, a third of a lease after it starts, then still comes in time) is given
/// back instead of started.
struct ClaimedAhead<J = Job> {
    jobs: VecDeque<(J, Instant)>,
    max_wait: Duration,
}

impl<J> ClaimedAhead<J> {
    fn new(max_wait: Duration) -> Self {
        Self {
            jobs: VecDeque::new(),
            max_wait,
        }
    }

    fn extend(&mut self, jobs: impl IntoIterator<Item = J>, now: Instant) {
        self.jobs.extend(jobs.into_iter().map(|job| (job, now)));
    }

    fn pop(&mut self) -> Option<J> {
        self.jobs.pop_front().map(|(job, _)| job)
    }

    /// The jobs that have waited too long by `now` (the oldest are first).
    fn take_stale(&mut self, now: Instant) -> Vec<J> {
        let fresh = self
            .jobs
            .iter()
            .position(|(_, claimed)| now.duration_since(*claimed) < self.max_wait)
            .unwrap_or(self.jobs.len());
        self.jobs.drain(..fresh).map(|(job, _)| job).collect()
    }

    /// When the oldest job waiting will have waited too long.
    fn stale_at(&self) -> Option<Instant> {
        self.jobs
            .front()
            .map(|(_, claimed)| *claimed + self.max_wait)
    }

    fn take_all(&mut self) -> Vec<J> {
        self.jobs.drain(..).map(|(job, _)| job).collect()
    }
}

/// Until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Releases a job claimed but never started: queued again at once, its attempt not counted.
async fn give_back<S: JobStore>(store: Arc<S>, job: Job, why: &'static str) {
    let Some(lease) = job.lease() else { return };
    match store.release(&lease).await {
        Ok(_) => tracing::info!(job_id = %job.id, why, "claimed job given back to the queue"),
        Err(e) => {
            tracing::warn!(job_id = %job.id, error = %e, "could not give a claimed job back; its lease will expire")
        }
    }
}

/// A job's place in the pool: a running slot, and once its work is done, a place among the outcomes waiting to
/// be recorded.
struct Slot {
    running: OwnedSemaphorePermit,
    recording: Arc<Semaphore>,
}

impl Slot {
    /// The work is done: trades the running slot for a recording one (waiting while too many outcomes do).
    async fn into_recording(self) -> OwnedSemaphorePermit {
        let recording = self
            .recording
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        drop(self.running);
        recording
    }
}

/// One attempt of one job, start to recorded outcome.
async fn execute<S: JobStore, R: JobRunner>(
    store: Arc<S>,
    runner: Arc<R>,
    settings: Arc<PoolSettings>,
    job: Job,
    slot: Slot,
    hard_stop: CancellationToken,
) {
    let Some(lease) = job.lease() else { return };
    tracing::info!("job started");
    let started = std::time::Instant::now();
    let lease_lost = CancellationToken::new();
    let (report, seen) = Report::channel();
    let notes = Arc::new(tokio::sync::Mutex::new(seen.notes));
    let heartbeat = tokio::spawn(keep_lease(
        store.clone(),
        lease.clone(),
        settings.lease,
        seen.progress,
        notes.clone(),
        lease_lost.clone(),
    ));
    let outcome = tokio::select! {
        result = runner.run(&job, &report) => Some(result),
        () = lease_lost.cancelled() => None,
        () = hard_stop.cancelled() => {
            heartbeat.abort();
            match store.release(&lease).await {
                Ok(_) => tracing::info!("job released for another worker"),
                Err(e) => tracing::error!(error = %e, "could not release the job; its lease will expire"),
            }
            return;
        }
    };
    // The lease is still renewed while the outcome waits for a place among those being recorded.
    let _recording = slot.into_recording().await;
    heartbeat.abort();
    write_notes(store.as_ref(), &lease, &notes).await;
    drop(report);
    crate::metrics::metrics()
        .job_duration
        .with_label_values(&[job.kind.as_str()])
        .observe(started.elapsed().as_secs_f64());
    let Some(outcome) = outcome else {
        tracing::warn!("lease lost: another worker owns this job now; abandoning this attempt");
        return;
    };
    if let Err(e) = record(store.as_ref(), &settings, &job, &lease, outcome).await {
        tracing::error!(error = %e, "could not record the outcome; the lease will expire and the job run again");
    }
}

async fn record<S: JobStore>(
    store: &S,
    settings: &PoolSettings,
    job: &Job,
    lease: &Lease,
    outcome: Result<serde_json::Value, JobError>,
) -> Result<(), crate::store::StoreError> {
    let finished = |outcome: &str| {
        crate::metrics::metrics()
            .jobs_finished
            .with_label_values(&[outcome])
            .inc();
    };
    match outcome {
        Ok(result) => {
            if store.succeed(lease, result).await? {
                finished("succeeded");
                tracing::info!("job succeeded");
            } else {
                tracing::warn!("job finished but its lease was gone; result discarded");
            }
        }
        Err(e) if e.transient => {
            let delay = settings.retry_delay(job.attempt);
            match store.retry(lease, &e.message, delay).await? {
                RetryOutcome::Scheduled => {
                    finished("retried");
                    crate::metrics::metrics().retries.inc();
                    tracing::warn!(error = %e.message, ?delay, "attempt failed; retry scheduled")
                }
                RetryOutcome::Exhausted => {
                    finished("failed");
                    tracing::error!(error = %e.message, "attempt failed; out of attempts")
                }
                RetryOutcome::Superseded => {
                    finished("cancelled");
                    tracing::info!(error = %e.message, "attempt failed; a newer job will do it")
                }
                RetryOutcome::LeaseLost => {
                    tracing::warn!(error = %e.message, "attempt failed after its lease was lost")
                }
            }
        }
        Err(e) => {
            store
                .finish(lease, JobState::Failed, e.result, Some(&e.message))
                .await?;
            finished("failed");
            tracing::error!(error = %e.message, "job failed");
        }
    }
    Ok(())
}

type Notes = Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Note>>>;

/// Appends the notes the job made since the last call to its history.
async fn write_notes<S: JobStore>(store: &S, lease: &Lease, notes: &Notes) {
    let mut notes = notes.lock().await;
    while let Ok(note) = notes.try_recv() {
        if let Err(e) = store.note(lease, note.event, &note.detail).await {
            tracing::warn!(error = %e, event = note.event, "could not record a note in the job history");
        }
    }
}

/// Renews the lease every third of its length, and writes new progress and notes at most once a second;
/// cancels `lost` once the store says the lease is no longer ours.
async fn keep_lease<S: JobStore>(
    store: Arc<S>,
    lease: Lease,
    duration: Duration,
    mut progress: tokio::sync::watch::Receiver<Progress>,
    notes: Notes,
    lost: CancellationToken,
) {
    let renew_every = duration / 3;
    let mut tick = tokio::time::interval(renew_every.min(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        write_notes(store.as_ref(), &lease, &notes).await;
        let changed = progress.has_changed().unwrap_or(false);
        if !changed && renewed.elapsed() < renew_every {
            continue;
        }
        let latest = changed.then(|| progress.borrow_and_update().clone());
        match store.heartbeat(&lease, duration, latest.as_ref()).await {
            Ok(true) => renewed = tokio::time::Instant::now(),
            Ok(false) => {
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed; will try again"),
        }
    }
}

/// Rescues expired leases and prunes old finished jobs. Safe on every worker at once: the store's updates are
/// guarded and skip locked rows.
async fn maintain<S: JobStore>(
    store: Arc<S>,
    settings: Arc<PoolSettings>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(settings.rescue_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        crate::metrics::metrics()
            .worker_heartbeat
            .set(chrono::Utc::now().timestamp());
        if let Err(e) = crate::store::publish_queue_metrics(store.as_ref()).await {
            tracing::warn!(error = %e, "queue metrics not updated");
        }
        match store.rescue_expired().await {
            Ok(rescued) => {
                crate::metrics::metrics()
                    .rescued
                    .inc_by(rescued.len() as u64);
                for r in rescued {
                    tracing::warn!(job_id = %r.job_id, attempt = r.attempt, previous_worker = ?r.previous_worker,
                        state = %r.state, "rescued a job whose lease expired");
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease rescue failed"),
        }
        match store.prune(settings.retention, 1000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned finished jobs"),
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_exponentially_within_bounds() {
        let s = PoolSettings {
            worker_id: "w".into(),
            concurrency: 1,
            claim_ahead: 0,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            rescue_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            retention: Duration::from_secs(1),
        };
        // Jitter adds up to one extra delay: attempt n waits within [min*2^(n-1), 2*min*2^(n-1)].
        for (attempt, low) in [(1, 100), (2, 200), (3, 400), (4, 800)] {
            let d = s.retry_delay(attempt).as_millis() as u64;
            assert!((low..=2 * low).contains(&d), "attempt {attempt}: {d} ms");
        }
        assert!(s.retry_delay(50) <= Duration::from_secs(10));
    }

    #[test]
    fn the_idle_wait_is_the_time_to_the_next_due_job_within_bounds() {
        let poll = Duration::from_secs(5);
        assert_eq!(
            idle_for(None, poll),
            poll,
            "nothing queued: the poll interval"
        );
        assert_eq!(
            idle_for(Some(Duration::from_millis(1200)), poll),
            Duration::from_millis(1200)
        );
        assert_eq!(
            idle_for(Some(Duration::ZERO), poll),
            Duration::from_millis(10)
        );
        assert_eq!(idle_for(Some(Duration::from_secs(60)), poll), poll);
    }

    #[test]
    fn jobs_claimed_ahead_go_stale_after_max_wait_oldest_first() {
        let start = Instant::now();
        let wait = Duration::from_secs(20);
        let mut ahead = ClaimedAhead::new(wait);
        assert_eq!(ahead.stale_at(), None);
        ahead.extend([1, 2], start);
        ahead.extend([3], start + Duration::from_secs(5));
        assert_eq!(ahead.stale_at(), Some(start + wait));
        assert!(ahead
            .take_stale(start + wait - Duration::from_millis(1))
            .is_empty());
        assert_eq!(ahead.take_stale(start + wait), [1, 2]);
        assert_eq!(ahead.stale_at(), Some(start + Duration::from_secs(25)));
        assert_eq!(ahead.pop(), Some(3));
        assert_eq!(ahead.pop(), None);
        ahead.extend([4], start);
        assert_eq!(ahead.take_all(), [4]);
    }
}
