//! RabbitMQ dispatch against the machine's broker: a doorbell is only a hint, so duplicates and redeliveries
//! make one run, unreadable messages are dead-lettered, and the outbox empties once the broker confirmed.

use serde_json::{json, Value};
use signer_e2e::db::TestDb;
use signer_e2e::faults::{FaultProxy, SLOW_RECORDS, SLOW_WRITE};
use signer_e2e::kinto::KintoServer;
use signer_e2e::rabbitmq::{dispatch_settings, shared_url, unique_queue, TestBroker};
use signer_e2e::records::sample_records;
use signer_e2e::service::{Api, Process, Setup};
use signer_e2e::{assert_deployed_metrics_exist, eventually, free_port, metric};
use sqlx::Connection as _;
use std::time::Duration;

/// Pushed through `/v1/batch` and a proxy that answers each call late, so that the test can act during the push.
const BIG: usize = SLOW_RECORDS;

async fn outbox_rows(db: &TestDb) -> i64 {
    let mut conn = db.connect().await;
    let n = sqlx::query_scalar("SELECT count(*) FROM job_outbox")
        .fetch_one(&mut conn)
        .await
        .expect("the outbox table exists");
    let _ = conn.close().await;
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn doorbells_published_twice_or_redelivered_after_a_crash_make_one_run() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    kinto
        .editor()
        .create_source("ws", "cfr", json!({}), &sample_records(40, 5))
        .await;
    let (url, queue) = (shared_url(), unique_queue());
    let broker = TestBroker::connect(&url, &queue).await;
    let metrics_port = free_port();
    // The sweep that backs up the broker waits 30 s here: every claim must come from a doorbell.
    let extra = format!(
        "[queue]\npoll_interval_ms = 30000\ndispatch = \"rabbitmq\"\n{}[worker]\nconcurrency = 1\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n[feed]\nenabled = false\n",
        dispatch_settings(&url, &queue)
    );
    let setup = Setup::new(&db.url, &kinto.url, "ws/cfr -> prod/cfr", &extra);
    let api = Api::start(&setup, 0).await;

    let (status, health) = api.get("/__heartbeat__").await;
    assert_eq!((status, &health["broker"]), (200, &json!(true)), "{health}");

    let id = api.sign("ws/cfr").await;
    assert_eq!(
        outbox_rows(&db).await,
        1,
        "the job and its doorbell commit together"
    );
    broker.publish(&id).await;
    broker.publish(&id).await;
    broker.publish("not-a-job-id").await;
    let held = TestBroker::take_one_and_crash(&url, &queue).await;
    assert_eq!(held, id, "the crashed consumer held the job's doorbell");

    let worker = Process::spawn(
        "signer-worker",
        &[],
        &setup.config,
        setup.dir.0.join("worker.log"),
    );
    let done = api.wait_final(&id, 60).await;
    assert_eq!(done["data"]["state"], "succeeded", "{done}");
    let history: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        ["queued", "running", "succeeded"],
        "one run: {done}"
    );
    setup.assert_verifies(&kinto.url, "prod", "cfr", 40);

    // Three doorbells for the job (two published here, one by the relay): one claim, two dropped; one was a
    // redelivery; the garbage went to the dead-letter queue.
    let http = reqwest::Client::new();
    let scrape_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let scrape = eventually(30, "every doorbell handled", || {
        let (http, scrape_url) = (http.clone(), scrape_url.clone());
        async move {
            let text = http.get(&scrape_url).send().await.ok()?.text().await.ok()?;
            let handled = metric(&text, "signer_doorbells_delivered_total", &[])?;
            let dead = metric(&text, "signer_dead_letters", &[])?;
            (handled >= 4.0 && dead >= 1.0).then_some(text)
        }
    })
    .await;
    let count = |labels: &[(&str, &str)]| {
        metric(&scrape, "signer_doorbells_delivered_total", labels).unwrap_or(0.0)
    };
    assert_eq!(count(&[("outcome", "claimed")]), 1.0, "{scrape}");
    assert_eq!(count(&[("outcome", "duplicate")]), 2.0, "{scrape}");
    assert_eq!(count(&[("outcome", "malformed")]), 1.0, "{scrape}");
    assert!(
        count(&[("redelivered", "true")]) >= 1.0,
        "the crashed consumer's message came back redelivered: {scrape}"
    );
    assert_eq!(
        metric(&scrape, "signer_doorbells_published_total", &[]),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(metric(&scrape, "signer_dead_letters", &[]), Some(1.0));
    assert_eq!(
        broker.counts().await,
        (0, 1),
        "nothing left but the garbage"
    );
    let api_scrape = api.metrics().await;
    assert_deployed_metrics_exist(&format!("{api_scrape}{scrape}"));
    assert_eq!(outbox_rows(&db).await, 0, "confirmed doorbells are deleted");
    drop(worker);
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_released_at_sigterm_rings_again_and_another_worker_finishes_it() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start_batch_only().await;
    kinto
        .editor()
        .create_source("ws", "big", json!({}), &sample_records(BIG, 17))
        .await;
    let proxy = FaultProxy::slow_writes(&kinto.url, SLOW_WRITE).await;
    let (url, queue) = (shared_url(), unique_queue());
    let broker = TestBroker::connect(&url, &queue).await;
    let extra = format!(
        "[queue]\npoll_interval_ms = 30000\nlease_seconds = 4\ndispatch = \"rabbitmq\"\n{}[worker]\nconcurrency = 1\nshutdown_grace_seconds = 1\n[feed]\nenabled = false\n",
        dispatch_settings(&url, &queue)
    );
    let setup = Setup::new(&db.url, &proxy.url, "ws/big -> prod/big", &extra);
    let api = Api::start(&setup, 0).await;
    let log = |name: &str| setup.dir.0.join(format!("{name}.log"));
    let mut stopping = Process::spawn("signer-worker", &[], &setup.config, log("stopping"));

    let id = api.sign("ws/big").await;
    eventually(30, "the job to push records", || async {
        let body = api.get(&format!("/v1/jobs/{id}")).await.1;
        (body["data"]["progress"]["records_pushed"].as_u64() > Some(0)).then_some(())
    })
    .await;
    stopping.terminate();
    let exit = stopping.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}\n{}", stopping.log_text());
    let released = api.get(&format!("/v1/jobs/{id}")).await.1;
    assert_eq!(released["data"]["state"], "queued", "{released}");

    let _next = Process::spawn("signer-worker", &[], &setup.config, log("next"));
    let done = api.wait_final(&id, 90).await;
    assert_eq!(done["data"]["state"], "succeeded", "{done}");
    let runs: Vec<&Value> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "running")
        .collect();
    assert_eq!(runs.len(), 2, "{done}");
    assert!(
        runs.iter().all(|r| r["detail"] == "doorbell"),
        "both runs were claimed from RabbitMQ (the sweep waits 30 s): {done}"
    );
    setup.assert_verifies(&kinto.url, "prod", "big", BIG);
    broker.delete().await;
}
