//! The store contract (`signer_e2e::conformance`) against a real Postgres, one fresh database per test.

use signer_e2e::conformance as suite;
use signer_e2e::db::TestDb;
use signer_worker::store::PgStore;

macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            let db = TestDb::create().await;
            let store = PgStore::connect(&db.url, 4).await.expect("store connects and migrates");
            suite::$name(&store).await;
        }
    )+};
}

conformance!(
    enqueue_coalesces_and_claims_follow_priority_then_age,
    a_destination_has_one_running_job,
    an_expired_lease_is_rescued_and_the_late_worker_cannot_write,
    retries_wait_their_delay_and_stop_at_max_attempts,
    a_retry_defers_to_a_newer_queued_job,
    release_gives_the_attempt_back_and_cancel_only_takes_queued_jobs,
    a_lease_expiring_on_the_last_attempt_fails_the_job,
    pruning_removes_only_old_finished_jobs,
);

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_says_what_to_do() {
    let err = PgStore::connect("postgres://nobody:secret@127.0.0.1:1/none", 1)
        .await
        .err()
        .expect("cannot connect");
    let message = err.to_string();
    assert!(
        message.contains("database unreachable at postgres://nobody:***@127.0.0.1:1/none"),
        "{message}"
    );
    assert!(message.contains("start Postgres"), "{message}");
    assert!(
        !message.contains("secret"),
        "passwords stay out of messages"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_claims_never_hand_out_a_job_twice() {
    let db = TestDb::create().await;
    let store = std::sync::Arc::new(PgStore::connect(&db.url, 10).await.unwrap());
    for i in 0..200 {
        signer_worker::store::JobStore::enqueue(
            &*store,
            suite::new_job(&format!("c{i}"), &format!("c{i}"), 0),
        )
        .await
        .unwrap();
    }
    let claimers = (0..8).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = signer_worker::store::JobStore::claim(
                &*store,
                &format!("w{w}"),
                std::time::Duration::from_secs(60),
            )
            .await
            .unwrap()
            {
                mine.push(job.id);
            }
            mine
        })
    });
    let mut all: Vec<uuid::Uuid> = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (200, 200));
}
