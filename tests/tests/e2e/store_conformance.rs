//! The store contract (`signer_e2e::conformance`), run unchanged against both stores: a real Postgres (one fresh
//! database per test) and the embedded SQLite file (one fresh file per test), each on a manual clock.

use signer_e2e::conformance as suite;
use signer_e2e::db::TestDb;
use signer_e2e::service::TempDir;
use signer_worker::store::{PgStore, SqliteStore, Store};

macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let db = TestDb::create().await;
                    let clock = suite::clock();
                    let store = PgStore::connect(&db.url, 4).await.expect("store connects and migrates")
                        .with_clock(clock.clone());
                    suite::$name(&store, &clock).await;
                }
            )+
        }

        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let dir = TempDir::new("sqlite-store");
                    let clock = suite::clock();
                    let store = SqliteStore::open(&dir.0.join("jobs.db")).await.expect("store opens and migrates")
                        .with_clock(clock.clone());
                    suite::$name(&store, &clock).await;
                }
            )+
        }
    };
}

conformance!(
    enqueue_coalesces_and_claims_follow_priority_then_age,
    a_coalesced_request_brings_its_own_authority,
    a_destination_has_one_running_job,
    an_expired_lease_is_rescued_and_the_late_worker_cannot_write,
    retries_wait_their_delay_and_stop_at_max_attempts,
    a_retry_defers_to_a_newer_queued_job,
    release_gives_the_attempt_back_and_cancel_only_takes_queued_jobs,
    a_lease_expiring_on_the_last_attempt_fails_the_job,
    pruning_removes_only_old_finished_jobs,
    concurrent_claims_never_hand_out_a_job_twice,
    batched_claims_keep_one_writer_per_destination_and_concurrent_finishes_keep_their_guard,
    a_webhook_call_is_taken_once,
    stats_count_jobs_by_state_and_date_the_oldest_runnable,
    notes_join_the_history_only_while_the_lease_is_held,
    a_doorbell_claims_the_job_it_names_and_only_when_it_is_runnable,
    listing_filters_by_resource_state_and_requester_newest_first_by_pages,
);

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_says_what_to_do() {
    let dir = TempDir::new("no-db");
    let url = "postgres://nobody:secret@127.0.0.1:1/none";
    let err = Store::open(Some(url), &dir.0, 1)
        .await
        .err()
        .expect("cannot connect");
    let message = err.to_string();
    assert!(
        message.contains("database unreachable at postgres://nobody:***@127.0.0.1:1/none"),
        "{message}"
    );
    assert!(message.contains("to use the embedded store"), "{message}");
    assert!(
        !message.contains("secret"),
        "passwords stay out of messages"
    );
    let err = Store::open(Some("mysql://x/y"), &dir.0, 1)
        .await
        .err()
        .expect("unknown scheme");
    assert!(err.to_string().contains("expected postgres://"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_database_url_means_the_embedded_store_in_the_data_directory() {
    let dir = TempDir::new("embedded");
    let store = Store::open(None, &dir.0.join("data"), 1).await.unwrap();
    assert!(matches!(store, Store::Sqlite(_)));
    assert!(dir.0.join("data/signer.db").exists());
    let other = format!("sqlite://{}/other.db", dir.0.display());
    assert_eq!(
        Store::open(Some(&other), &dir.0, 1)
            .await
            .unwrap()
            .describe(),
        other
    );
}

/// Pooled connections are not pinged before every statement (see `CHECK_IDLE_AFTER` in the store), but one that
/// sat idle is: backends terminated while the pool was idle are replaced, not handed out dead.
#[tokio::test(flavor = "multi_thread")]
async fn connections_that_died_while_idle_are_replaced_before_use() {
    use signer_worker::store::JobStore as _;
    let db = TestDb::create().await;
    let store = PgStore::connect(&db.url, 2).await.unwrap();
    // Both pooled connections in use at once, so both are open when the backends go.
    let (a, b) = tokio::join!(store.stats(), store.stats());
    a.unwrap();
    b.unwrap();
    let mut admin = db.connect().await;
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(terminated, [true, true], "the pool's two backends");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    for _ in 0..3 {
        store
            .stats()
            .await
            .expect("a dead idle connection is replaced");
    }
}
