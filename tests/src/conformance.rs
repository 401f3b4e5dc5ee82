//! The job store contract, written once against the `JobStore` trait: every store implementation runs these
//! same checks, so implementations cannot drift. Each store runs on a manual clock: leases expire, retries fall
//! due and finished jobs age because a case moves the clock, never because it slept.

use signer_types::job::{JobKind, JobState, Lease, NewJob, Progress, Trigger};
use signer_worker::clock::Clock;
use signer_worker::store::{JobFilter, JobStore, RetryOutcome};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// A manual clock at the current millisecond: what both stores keep (SQLite milliseconds, Postgres microseconds),
/// so a time read back equals the time written.
pub fn clock() -> Clock {
    let ms = chrono::Utc::now().timestamp_millis();
    Clock::manual(chrono::DateTime::from_timestamp_millis(ms).expect("now is a valid time"))
}

pub fn new_job(resource: &str, destination: &str, priority: i32) -> NewJob {
    NewJob {
        resource: format!("/buckets/src/collections/{resource}"),
        destination: format!("/buckets/dst/collections/{destination}"),
        preview: None,
        kind: JobKind::Sign,
        priority,
        max_attempts: 3,
        trigger: Trigger::Api,
        requested_by: "test".into(),
        source_timestamp: None,
        previous_status: None,
    }
}

/// Enqueues `job`; its id.
async fn enqueued<S: JobStore>(store: &S, job: NewJob) -> uuid::Uuid {
    store.enqueue(job).await.unwrap().job.id
}

async fn events<S: JobStore>(store: &S, id: uuid::Uuid) -> Vec<String> {
    store
        .history(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

pub async fn enqueue_coalesces_and_claims_follow_priority_then_age<S: JobStore>(
    store: &S,
    _: &Clock,
) {
    let a = store.enqueue(new_job("a", "a", 0)).await.unwrap();
    let b = store.enqueue(new_job("b", "b", 5)).await.unwrap();
    let c = store.enqueue(new_job("c", "c", 0)).await.unwrap();
    let again = store.enqueue(new_job("a", "a", 0)).await.unwrap();
    assert!(!a.coalesced && again.coalesced);
    assert_eq!(again.job.id, a.job.id);
    // Ids in creation order (UUIDv7): the primary key's index stays local under a burst.
    assert!([a.job.id, b.job.id, c.job.id]
        .iter()
        .all(|id| id.get_version_num() == 7));
    assert!(a.job.id < b.job.id && b.job.id < c.job.id);
    let order: Vec<_> = [
        store.claim("w", LONG).await.unwrap().unwrap().id,
        store.claim("w", LONG).await.unwrap().unwrap().id,
        store.claim("w", LONG).await.unwrap().unwrap().id,
    ]
    .into();
    assert_eq!(order, vec![b.job.id, a.job.id, c.job.id]);
    assert!(store.claim("w", LONG).await.unwrap().is_none());
    assert_eq!(
        events(store, a.job.id).await,
        ["queued", "coalesced", "running"]
    );
    let running = store
        .list(&JobFilter {
            state: Some(JobState::Running),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 3);
    let mine = |who: &str| JobFilter {
        requested_by: Some(who.into()),
        limit: 10,
        ..JobFilter::default()
    };
    assert_eq!(store.list(&mine("test")).await.unwrap().len(), 3);
    assert!(store.list(&mine("someone else")).await.unwrap().is_empty());
}

/// The attack of issue "Close the trust boundary": an operator's API job is queued, a Kinto user's status change
/// coalesces onto it. The job must then run as that user's request (checked as one), never as the operator's.
pub async fn a_coalesced_request_brings_its_own_authority<S: JobStore>(store: &S, _: &Clock) {
    let operator = store.enqueue(new_job("a", "a", 0)).await.unwrap();
    let mut change = new_job("a", "a", 0);
    change.kind = JobKind::Rollback;
    change.trigger = Trigger::Webhook;
    change.requested_by = "account:nobody".into();
    change.previous_status = Some("work-in-progress".into());
    let joined = store.enqueue(change.clone()).await.unwrap();
    assert!(joined.coalesced);
    assert_eq!(joined.job.id, operator.job.id);
    let job = store.get(operator.job.id).await.unwrap().unwrap();
    assert_eq!(
        (job.kind, job.trigger, job.requested_by.as_str()),
        (JobKind::Rollback, Trigger::Webhook, "account:nobody"),
        "kind, trigger and requester are rewritten together"
    );
    // The same change relayed again (the webhook, then the feed) changes nothing more.
    let mut relayed = change.clone();
    relayed.trigger = Trigger::Feed;
    store.enqueue(relayed).await.unwrap();
    assert_eq!(
        store.get(operator.job.id).await.unwrap().unwrap().trigger,
        Trigger::Feed
    );
    // An operator's call coalescing onto it takes it back under the operator's authority.
    store.enqueue(new_job("a", "a", 0)).await.unwrap();
    let job = store.get(operator.job.id).await.unwrap().unwrap();
    assert_eq!(
        (job.kind, job.trigger, job.requested_by.as_str()),
        (JobKind::Sign, Trigger::Api, "test")
    );
}

pub async fn a_destination_has_one_running_job<S: JobStore>(store: &S, _: &Clock) {
    // Two resources publishing to one destination (a misconfiguration the store still survives).
    store.enqueue(new_job("one", "shared", 0)).await.unwrap();
    store.enqueue(new_job("two", "shared", 0)).await.unwrap();
    let first = store.claim("w1", LONG).await.unwrap().unwrap();
    assert!(
        store.claim("w2", LONG).await.unwrap().is_none(),
        "the second job waits for the destination"
    );
    assert!(store
        .succeed(&first.lease().unwrap(), serde_json::json!({}))
        .await
        .unwrap());
    assert!(store.claim("w2", LONG).await.unwrap().is_some());
}

pub async fn an_expired_lease_is_rescued_and_the_late_worker_cannot_write<S: JobStore>(
    store: &S,
    clock: &Clock,
) {
    let id = enqueued(store, new_job("r", "r", 0)).await;
    let first = store
        .claim("slow", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    let stale = first.lease().unwrap();
    let pushing = Progress {
        phase: "push".into(),
        collection: "/buckets/dst/collections/r".into(),
        records_fetched: 10,
        records_to_push: 10,
        records_pushed: 5,
    };
    assert!(store
        .heartbeat(&stale, Duration::from_millis(300), Some(&pushing))
        .await
        .unwrap());
    assert!(
        store.rescue_expired().await.unwrap().is_empty(),
        "a renewed lease is not rescued"
    );
    let progress = store.get(id).await.unwrap().unwrap().progress;
    assert_eq!(
        progress.as_ref(),
        Some(&pushing),
        "the heartbeat recorded the progress"
    );
    clock.advance(Duration::from_millis(299));
    assert!(
        store.rescue_expired().await.unwrap().is_empty(),
        "not before the lease ends"
    );
    clock.advance(Duration::from_millis(2));
    let rescued = store.rescue_expired().await.unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(
        (rescued[0].state, rescued[0].previous_worker.as_deref()),
        (JobState::Queued, Some("slow"))
    );

    let second = store.claim("fast", LONG).await.unwrap().unwrap();
    assert_eq!((second.id, second.attempt), (id, 2));
    assert!(
        !store.heartbeat(&stale, LONG, None).await.unwrap(),
        "the old lease is gone"
    );
    assert!(
        !store
            .succeed(&stale, serde_json::json!({"late": true}))
            .await
            .unwrap(),
        "a late finisher cannot write"
    );
    assert!(!store.fail(&stale, "late").await.unwrap());
    assert_eq!(
        store.retry(&stale, "late", Duration::ZERO).await.unwrap(),
        RetryOutcome::LeaseLost
    );
    assert!(store
        .succeed(&second.lease().unwrap(), serde_json::json!({"ok": true}))
        .await
        .unwrap());
    let done = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        (done.state, done.result),
        (JobState::Succeeded, Some(serde_json::json!({"ok": true})))
    );
    assert_eq!(
        events(store, id).await,
        ["queued", "running", "rescued", "running", "succeeded"]
    );
}

pub async fn retries_wait_their_delay_and_stop_at_max_attempts<S: JobStore>(
    store: &S,
    clock: &Clock,
) {
    let id = enqueued(store, new_job("x", "x", 0)).await;
    let job = store.claim("w", LONG).await.unwrap().unwrap();
    let outcome = store
        .retry(
            &job.lease().unwrap(),
            "Kinto answered 503",
            Duration::from_millis(400),
        )
        .await
        .unwrap();
    assert_eq!(outcome, RetryOutcome::Scheduled);
    assert!(
        store.claim("w", LONG).await.unwrap().is_none(),
        "not before its run_at"
    );
    let next = store.next_run_in().await.unwrap().expect("a queued job");
    assert_eq!(next, Duration::from_millis(400));
    clock.advance(Duration::from_millis(399));
    assert_eq!(
        store.next_run_in().await.unwrap(),
        Some(Duration::from_millis(1))
    );
    assert!(
        store.claim("w", LONG).await.unwrap().is_none(),
        "a millisecond early"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        store.next_run_in().await.unwrap(),
        Some(Duration::ZERO),
        "due"
    );
    let job = store
        .claim("w", LONG)
        .await
        .unwrap()
        .expect("runnable after the delay");
    assert_eq!(job.attempt, 2);
    assert_eq!(store.next_run_in().await.unwrap(), None, "nothing queued");
    assert_eq!(job.last_error.as_deref(), Some("Kinto answered 503"));
    store
        .retry(&job.lease().unwrap(), "again", Duration::ZERO)
        .await
        .unwrap();
    let job = store.claim("w", LONG).await.unwrap().unwrap();
    assert_eq!(job.attempt, 3);
    let outcome = store
        .retry(&job.lease().unwrap(), "still 503", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(outcome, RetryOutcome::Exhausted);
    let failed = store.get(id).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.finished_at.is_some());
    assert!(
        failed.ran_out_of_retries(),
        "out of attempts on transient failures, said so: {:?}",
        failed.result
    );
    assert_eq!(
        events(store, id).await,
        ["queued", "running", "retry", "running", "retry", "running", "failed"]
    );
}

pub async fn a_retry_defers_to_a_newer_queued_job<S: JobStore>(store: &S, _: &Clock) {
    let old = store.claim_new(new_job("s", "s", 0)).await;
    let newer = store.enqueue(new_job("s", "s", 0)).await.unwrap();
    assert!(!newer.coalesced, "a running job does not absorb triggers");
    let outcome = store
        .retry(&old.lease().unwrap(), "source changed", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(outcome, RetryOutcome::Superseded);
    assert_eq!(
        store.get(old.id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    assert_eq!(
        store.get(newer.job.id).await.unwrap().unwrap().state,
        JobState::Queued
    );
}

pub async fn release_gives_the_attempt_back_and_cancel_only_takes_queued_jobs<S: JobStore>(
    store: &S,
    _: &Clock,
) {
    let job = store.claim_new(new_job("rel", "rel", 0)).await;
    assert!(store.release(&job.lease().unwrap()).await.unwrap());
    let released = store.get(job.id).await.unwrap().unwrap();
    assert_eq!(
        (released.state, released.attempt, released.worker_id),
        (JobState::Queued, 0, None)
    );
    let running = store.claim("w", LONG).await.unwrap().unwrap();
    assert!(
        !store.cancel(running.id, "admin").await.unwrap(),
        "running jobs are not cancelled here"
    );
    store
        .succeed(&running.lease().unwrap(), serde_json::json!({}))
        .await
        .unwrap();
    let queued = store.enqueue(new_job("can", "can", 0)).await.unwrap().job;
    assert!(store.cancel(queued.id, "admin").await.unwrap());
    assert!(!store.cancel(queued.id, "admin").await.unwrap());
    assert!(store.claim("w", LONG).await.unwrap().is_none());
}

pub async fn a_lease_expiring_on_the_last_attempt_fails_the_job<S: JobStore>(
    store: &S,
    clock: &Clock,
) {
    let mut job = new_job("crashy", "crashy", 0);
    job.max_attempts = 1;
    let id = enqueued(store, job).await;
    store
        .claim("w", Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    clock.advance(Duration::from_millis(101));
    let rescued = store.rescue_expired().await.unwrap();
    assert_eq!(rescued[0].state, JobState::Failed);
    let failed = store.get(id).await.unwrap().unwrap();
    assert!(failed.last_error.unwrap().contains("lease expired"));
}

pub async fn pruning_removes_only_old_finished_jobs<S: JobStore>(store: &S, clock: &Clock) {
    let done = store.claim_new(new_job("p1", "p1", 0)).await;
    store
        .succeed(&done.lease().unwrap(), serde_json::json!({}))
        .await
        .unwrap();
    let queued = store.enqueue(new_job("p2", "p2", 0)).await.unwrap().job;
    assert_eq!(
        store.prune(Duration::from_secs(3600), 100).await.unwrap(),
        0,
        "too recent"
    );
    clock.advance(Duration::from_secs(3599));
    assert_eq!(
        store.prune(Duration::from_secs(3600), 100).await.unwrap(),
        0,
        "a second too recent"
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        store.prune(Duration::from_secs(3600), 100).await.unwrap(),
        1
    );
    assert!(store.get(done.id).await.unwrap().is_none());
    assert!(store.history(done.id).await.unwrap().is_empty());
    assert!(store.get(queued.id).await.unwrap().is_some());
}

pub async fn concurrent_claims_never_hand_out_a_job_twice<S: JobStore>(store: &S, _: &Clock) {
    for i in 0..200 {
        store
            .enqueue(new_job(&format!("c{i}"), &format!("c{i}"), 0))
            .await
            .unwrap();
    }
    let claimers = (0..8).map(|w| async move {
        let mut mine = Vec::new();
        while let Some(job) = store.claim(&format!("w{w}"), LONG).await.unwrap() {
            mine.push(job.id);
        }
        mine
    });
    let all: Vec<uuid::Uuid> = futures::future::join_all(claimers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (200, 200));
}

pub async fn batched_claims_keep_one_writer_per_destination_and_concurrent_finishes_keep_their_guard<
    S: JobStore,
>(
    store: &S,
    _: &Clock,
) {
    // Two jobs share a destination; the rest have their own.
    store.enqueue(new_job("a", "shared", 5)).await.unwrap();
    store.enqueue(new_job("b", "shared", 5)).await.unwrap();
    for i in 0..30 {
        store
            .enqueue(new_job(&format!("r{i}"), &format!("d{i}"), 0))
            .await
            .unwrap();
    }
    let first = store.claim_many("w1", LONG, 10).await.unwrap();
    assert_eq!(first.len(), 10, "a batch takes as many as asked");
    assert_eq!(first[0].priority, 5, "in claim order");
    let shared = |jobs: &[signer_types::job::Job]| {
        jobs.iter()
            .filter(|j| j.destination.ends_with("/shared"))
            .count()
    };
    assert_eq!(
        shared(&first),
        1,
        "one writer per destination inside a batch"
    );
    let rest = store.claim_many("w2", LONG, 100).await.unwrap();
    assert_eq!(rest.len(), 31 - 10, "everything else but the second writer");
    assert_eq!(shared(&rest), 0);
    assert!(store.claim_many("w3", LONG, 5).await.unwrap().is_empty());

    // Finished together (one group commit for Postgres); a stale lease among them is still refused. It goes
    // right after the real one, so that both usually share one flush.
    let mut leases: Vec<Lease> = first
        .iter()
        .chain(&rest)
        .map(|j| j.lease().unwrap())
        .collect();
    let mut stale = leases[0].clone();
    stale.worker_id = "someone-else".into();
    leases.insert(1, stale);
    let finished = futures::future::join_all(
        leases
            .iter()
            .map(|lease| store.succeed(lease, serde_json::json!({"ok": true}))),
    )
    .await;
    let accepted: Vec<bool> = finished.into_iter().map(Result::unwrap).collect();
    assert_eq!(accepted.iter().filter(|ok| **ok).count(), 31);
    assert!(!accepted[1], "the stale lease wrote nothing");
    let done = store.get(first[1].id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result, Some(serde_json::json!({"ok": true})));
    assert_eq!(
        events(store, done.id).await,
        ["queued", "running", "succeeded"]
    );
    // The destination is free again: its second job can run now.
    let second = store.claim("w4", LONG).await.unwrap().unwrap();
    assert!(second.destination.ends_with("/shared"));
}

/// Test shorthand: enqueue and claim in one go.
trait ClaimNew {
    async fn claim_new(&self, job: NewJob) -> signer_types::job::Job;
}

impl<S: JobStore> ClaimNew for S {
    async fn claim_new(&self, job: NewJob) -> signer_types::job::Job {
        let id = self.enqueue(job).await.unwrap().job.id;
        let claimed = self.claim("w", LONG).await.unwrap().unwrap();
        assert_eq!(claimed.id, id);
        claimed
    }
}

/// A webhook call's MAC is taken once while remembered, by every process on the store; once expired it is
/// forgotten (the timestamp window refuses it by then anyway).
pub async fn a_webhook_call_is_taken_once<S: JobStore>(store: &S, clock: &Clock) {
    let later = clock.now() + chrono::Duration::seconds(300);
    assert!(store.first_use("mac-a", later).await.unwrap());
    assert!(!store.first_use("mac-a", later).await.unwrap());
    assert!(store.first_use("mac-b", later).await.unwrap());
    // Many at once: one of them is first.
    let firsts = futures::future::join_all((0..16).map(|_| store.first_use("mac-c", later))).await;
    assert_eq!(
        firsts.into_iter().filter(|r| *r.as_ref().unwrap()).count(),
        1
    );
    assert!(store.first_use("mac-d", later).await.unwrap());
    clock.advance(Duration::from_secs(299));
    assert!(
        !store.first_use("mac-d", later).await.unwrap(),
        "remembered until it expires"
    );
    clock.advance(Duration::from_secs(2));
    assert!(
        store.first_use("mac-d", later).await.unwrap(),
        "an expired call is forgotten"
    );
}

pub async fn stats_count_jobs_by_state_and_date_the_oldest_runnable<S: JobStore>(
    store: &S,
    clock: &Clock,
) {
    let empty = store.stats().await.unwrap();
    assert!(
        empty.by_state.iter().all(|(_, n)| *n == 0),
        "{:?}",
        empty.by_state
    );
    assert_eq!(empty.oldest_runnable, None);
    let first_at = clock.now();
    store.enqueue(new_job("a", "a", 0)).await.unwrap();
    clock.advance(Duration::from_secs(5));
    store.enqueue(new_job("b", "b", 0)).await.unwrap();
    store.enqueue(new_job("c", "c", 0)).await.unwrap();
    assert_eq!(
        store.stats().await.unwrap().oldest_runnable,
        Some(first_at),
        "runnable since it was queued"
    );
    let done = store.claim("w", LONG).await.unwrap().unwrap();
    assert!(store
        .succeed(&done.lease().unwrap(), serde_json::json!({}))
        .await
        .unwrap());
    let running = store.claim("w", LONG).await.unwrap().unwrap();
    let later = store.claim("w", LONG).await.unwrap().unwrap();
    let scheduled = store
        .retry(&later.lease().unwrap(), "503", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(scheduled, RetryOutcome::Scheduled);
    let count = |stats: &signer_worker::store::QueueStats, state: &str| {
        stats
            .by_state
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n)
    };
    let stats = store.stats().await.unwrap();
    assert_eq!(
        ["queued", "running", "succeeded", "failed"].map(|s| count(&stats, s)),
        [1, 1, 1, 0]
    );
    assert_eq!(stats.oldest_runnable, None, "the queued job is not due yet");
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        store.stats().await.unwrap().oldest_runnable,
        Some(clock.now()),
        "due now: runnable since its run_at"
    );
    assert!(store
        .succeed(&running.lease().unwrap(), serde_json::json!({}))
        .await
        .unwrap());
}

pub async fn notes_join_the_history_only_while_the_lease_is_held<S: JobStore>(
    store: &S,
    _: &Clock,
) {
    let id = enqueued(store, new_job("n", "n", 0)).await;
    let job = store.claim("w", LONG).await.unwrap().unwrap();
    let lease = job.lease().unwrap();
    assert!(store
        .note(&lease, "kinto-retried", "503 on page 2")
        .await
        .unwrap());
    let history = store.history(id).await.unwrap();
    let note = history
        .iter()
        .find(|e| e.event == "kinto-retried")
        .expect("the note");
    assert_eq!(
        (
            note.attempt,
            note.worker_id.as_deref(),
            note.detail.as_deref()
        ),
        (1, Some("w"), Some("503 on page 2"))
    );
    assert!(store.succeed(&lease, serde_json::json!({})).await.unwrap());
    assert!(
        !store.note(&lease, "late", "after the end").await.unwrap(),
        "the lease is gone"
    );
    assert_eq!(
        events(store, id).await,
        ["queued", "running", "kinto-retried", "succeeded"]
    );
}

pub async fn a_doorbell_claims_the_job_it_names_and_only_when_it_is_runnable<S: JobStore>(
    store: &S,
    _: &Clock,
) {
    let urgent = enqueued(store, new_job("urgent", "u", 10)).await;
    let named = enqueued(store, new_job("named", "shared", 0)).await;
    let rival = enqueued(store, new_job("rival", "shared", 0)).await;
    let job = store
        .claim_one("w", LONG, Some(named))
        .await
        .unwrap()
        .expect("the named job");
    assert_eq!(job.id, named, "not the higher-priority one");
    let ring = |id| async move { store.claim_one("w", LONG, Some(id)).await.unwrap() };
    assert!(
        ring(named).await.is_none(),
        "already running: a second ring claims nothing"
    );
    assert!(
        ring(rival).await.is_none(),
        "its destination has a running job"
    );
    assert!(store
        .succeed(&job.lease().unwrap(), serde_json::json!({}))
        .await
        .unwrap());
    assert!(ring(named).await.is_none(), "finished");
    assert!(ring(uuid::Uuid::now_v7()).await.is_none(), "unknown");
    assert_eq!(
        store.claim("w", LONG).await.unwrap().map(|j| j.id),
        Some(urgent)
    );
    assert_eq!(
        store.claim("w", LONG).await.unwrap().map(|j| j.id),
        Some(rival)
    );
}

pub async fn listing_filters_by_resource_state_and_requester_newest_first_by_pages<S: JobStore>(
    store: &S,
    clock: &Clock,
) {
    let mut ids = Vec::new();
    for (resource, by) in [("l1", "alice"), ("l2", "bob"), ("l3", "alice")] {
        let job = NewJob {
            requested_by: by.into(),
            ..new_job(resource, resource, 0)
        };
        ids.push(store.enqueue(job).await.unwrap().job.id);
        clock.advance(Duration::from_millis(10));
    }
    let running = store.claim("w", LONG).await.unwrap().unwrap();
    assert_eq!(running.id, ids[0]);
    let list = |filter: JobFilter| async move {
        store
            .list(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect::<Vec<_>>()
    };
    let all = JobFilter {
        limit: 10,
        ..JobFilter::default()
    };
    assert_eq!(
        list(all.clone()).await,
        [ids[2], ids[1], ids[0]],
        "newest first"
    );
    let page = JobFilter {
        limit: 2,
        ..all.clone()
    };
    assert_eq!(list(page.clone()).await, [ids[2], ids[1]]);
    let next = JobFilter {
        before: Some(ids[1]),
        ..page
    };
    assert_eq!(list(next).await, [ids[0]], "the page after the cursor");
    let by_resource = JobFilter {
        resource: Some("/buckets/src/collections/l2".into()),
        ..all.clone()
    };
    assert_eq!(list(by_resource).await, [ids[1]]);
    let by_state = JobFilter {
        state: Some(JobState::Running),
        ..all.clone()
    };
    assert_eq!(list(by_state).await, [ids[0]]);
    let by_requester = JobFilter {
        requested_by: Some("alice".into()),
        ..all
    };
    assert_eq!(list(by_requester).await, [ids[2], ids[0]]);
}
