//! What happens when things break: a worker killed mid-job, Kinto down, the source edited during a job, a
//! second trigger while a job runs, a worker asked to stop mid-job.

use serde_json::{json, Value};
use signer_e2e::db::TestDb;
use signer_e2e::disk::Tmpfs;
use signer_e2e::faults::{Fault, FaultProxy, SLOW_RECORDS, SLOW_WRITE};
use signer_e2e::kinto::KintoServer;
use signer_e2e::records::sample_records;
use signer_e2e::service::{Api, Process, Setup};
use signer_e2e::{by_id_without_timestamps, eventually, free_port, metric, FAST_QUEUE};
use std::time::Duration;

/// Pushed through `/v1/batch` (`KintoServer::start_batch_only`) and a proxy that answers each call late, so that
/// a test can act during the push.
const BIG: usize = SLOW_RECORDS;

async fn job(api: &Api, id: &str) -> Value {
    api.get(&format!("/v1/jobs/{id}")).await.1
}

fn events(job: &Value) -> Vec<String> {
    job["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_running(api: &Api, id: &str) -> Value {
    eventually(30, "the job to run", || async move {
        let body = job(api, id).await;
        (body["data"]["state"] == "running").then_some(body)
    })
    .await
}

async fn wait_pushing(kinto: &KintoServer, bucket: &str, collection: &str) {
    let admin = kinto.editor();
    eventually(30, "the first records to reach the destination", || {
        let admin = admin.clone();
        async move {
            let (status, body) = admin
                .request(
                    reqwest::Method::GET,
                    &format!("/buckets/{bucket}/collections/{collection}/records?_limit=1"),
                    None,
                )
                .await;
            (status == 200 && !body["data"].as_array().unwrap().is_empty()).then_some(())
        }
    })
    .await;
}

fn worker(setup: &Setup, name: &str) -> Process {
    Process::spawn(
        "signer-worker",
        &["--concurrency", "2"],
        &setup.config,
        setup.dir.0.join(format!("{name}.log")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_job_loses_its_lease_and_another_worker_finishes() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start_batch_only().await;
    kinto
        .editor()
        .create_source(
            "ws",
            "big",
            json!({"status": "to-sign"}),
            &sample_records(BIG, 11),
        )
        .await;
    let proxy = FaultProxy::slow_writes(&kinto.url, SLOW_WRITE).await;
    let setup = Setup::new(&db.url, &proxy.url, "ws/big -> prod/big", FAST_QUEUE);
    let api = Api::start(&setup, 0).await;
    let mut doomed = worker(&setup, "doomed");

    let id = api.sign("ws/big").await;
    let running = wait_running(&api, &id).await;
    wait_pushing(&kinto, "prod", "big").await;
    doomed.kill();
    let dead_worker = running["data"]["worker_id"].as_str().unwrap().to_owned();
    assert_eq!(
        job(&api, &id).await["data"]["state"],
        "running",
        "the job was still in flight when killed"
    );
    assert_eq!(
        kinto.editor().collection("ws", "big").await.unwrap()["status"],
        "to-sign"
    );

    let _rescuer = worker(&setup, "rescuer");
    let done = api.wait_final(&id, 90).await;
    assert_eq!(done["data"]["state"], "succeeded", "{done}");
    assert_eq!(done["data"]["attempt"], 2);
    assert_ne!(done["data"]["worker_id"].as_str().unwrap(), dead_worker);
    let history = events(&done);
    assert_eq!(
        history,
        ["queued", "running", "rescued", "running", "succeeded"],
        "{done}"
    );
    setup.assert_verifies(&kinto.url, "prod", "big", BIG);
}

#[tokio::test(flavor = "multi_thread")]
async fn kinto_down_during_a_job_means_retries_then_success_when_it_returns() {
    let db = TestDb::create().await;
    let source = KintoServer::start().await;
    source
        .editor()
        .create_source("ws", "cfr", json!({}), &sample_records(50, 2))
        .await;
    let origin_port = free_port();
    let origin_url = format!("http://127.0.0.1:{origin_port}/v1");
    let extra = format!("{FAST_QUEUE}max_attempts = 30\n[kinto.destination]\nurl = \"{origin_url}\"\nuser = \"signer\"\npassword = \"signer-pw\"\n");
    let setup = Setup::new(&db.url, &source.url, "ws/cfr -> prod/cfr", &extra);
    let api = Api::start(&setup, 1).await;

    let id = api.sign("ws/cfr").await;
    let retrying = eventually(30, "a retry after the origin refused connections", || {
        let api = &api;
        let id = id.clone();
        async move {
            let body = job(api, &id).await;
            (body["data"]["attempt"].as_i64() >= Some(2)).then_some(body)
        }
    })
    .await;
    let error = retrying["data"]["last_error"].as_str().unwrap();
    assert!(
        error.contains(&origin_port.to_string()),
        "the error names the unreachable server: {error}"
    );
    assert!(events(&retrying).contains(&"retry".to_owned()));

    let origin = KintoServer::start_on(origin_port).await;
    let done = api.wait_final(&id, 60).await;
    assert_eq!(done["data"]["state"], "succeeded", "{done}");
    setup.assert_verifies(&origin.url, "prod", "cfr", 50);
    assert_eq!(
        source.editor().collection("ws", "cfr").await.unwrap()["status"],
        "signed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_edited_during_the_job_is_not_marked_signed_until_copied() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start_batch_only().await;
    let editor = kinto.editor();
    editor
        .create_source("ws", "big", json!({}), &sample_records(BIG, 5))
        .await;
    let proxy = FaultProxy::slow_writes(&kinto.url, SLOW_WRITE).await;
    let setup = Setup::new(&db.url, &proxy.url, "ws/big -> prod/big", FAST_QUEUE);
    let api = Api::start(&setup, 1).await;

    let id = api.sign("ws/big").await;
    wait_running(&api, &id).await;
    wait_pushing(&kinto, "prod", "big").await;
    editor
        .put_records(
            "ws",
            "big",
            &[json!({"id": "late-edit", "title": "written while signing"})],
        )
        .await;

    let done = api.wait_final(&id, 90).await;
    assert_eq!(done["data"]["state"], "succeeded", "{done}");
    assert!(
        done["data"]["attempt"].as_i64().unwrap() >= 2,
        "the first attempt must not have finished: {done}"
    );
    let history = done["history"].as_array().unwrap();
    assert!(
        history.iter().any(|e| e["event"] == "retry"
            && e["detail"]
                .as_str()
                .unwrap()
                .contains("changed during the job")),
        "{done}"
    );
    let destination = by_id_without_timestamps(&editor.records("prod", "big").await);
    assert!(
        destination.contains_key("late-edit"),
        "the late edit was copied before signing"
    );
    setup.assert_verifies(&kinto.url, "prod", "big", BIG + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_during_a_running_job_waits_for_it_never_two_writers() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start_batch_only().await;
    kinto
        .editor()
        .create_source("ws", "big", json!({}), &sample_records(BIG / 2, 9))
        .await;
    let proxy = FaultProxy::slow_writes(&kinto.url, SLOW_WRITE).await;
    let setup = Setup::new(&db.url, &proxy.url, "ws/big -> prod/big", FAST_QUEUE);
    let api = Api::start(&setup, 4).await;

    let first = api.sign("ws/big").await;
    wait_running(&api, &first).await;
    let second = api.sign("ws/big").await;
    assert_ne!(
        first, second,
        "a running job does not absorb new triggers: its snapshot may be stale"
    );
    for _ in 0..5 {
        let (a, b) = (job(&api, &first).await, job(&api, &second).await);
        assert!(
            !(a["data"]["state"] == "running" && b["data"]["state"] == "running"),
            "two writers on one destination"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (a, b) = (
        api.wait_final(&first, 90).await,
        api.wait_final(&second, 90).await,
    );
    assert_eq!(
        (a["data"]["state"].clone(), b["data"]["state"].clone()),
        (json!("succeeded"), json!("succeeded"))
    );
    let a_end = a["data"]["finished_at"].as_str().unwrap();
    let b_start = b["data"]["started_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(b_start).unwrap()
            >= chrono::DateTime::parse_from_rfc3339(a_end).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_releases_an_unfinished_job_within_the_grace_period_and_exits_zero() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start_batch_only().await;
    kinto
        .editor()
        .create_source("ws", "big", json!({}), &sample_records(BIG, 13))
        .await;
    let proxy = FaultProxy::slow_writes(&kinto.url, SLOW_WRITE).await;
    let extra = format!("{FAST_QUEUE}[worker]\nconcurrency = 1\nshutdown_grace_seconds = 1\n");
    let setup = Setup::new(&db.url, &proxy.url, "ws/big -> prod/big", &extra);
    let api = Api::start(&setup, 0).await;
    let mut stopping = worker(&setup, "stopping");

    let id = api.sign("ws/big").await;
    wait_running(&api, &id).await;
    wait_pushing(&kinto, "prod", "big").await;
    let progress = eventually(10, "progress in the job status", || async {
        let p = job(&api, &id).await["data"]["progress"].clone();
        (p["phase"] == "push" && p["records_pushed"].as_u64() > Some(0)).then_some(p)
    })
    .await;
    assert_eq!(progress["records_fetched"], BIG, "{progress}");
    assert_eq!(progress["records_to_push"], BIG, "{progress}");
    assert_eq!(progress["collection"], "/buckets/prod/collections/big");
    stopping.terminate();
    let status = stopping.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        stopping.log_text()
    );
    let released = job(&api, &id).await;
    assert_eq!(released["data"]["state"], "queued", "{released}");
    assert_eq!(
        released["data"]["attempt"], 0,
        "a release does not use up an attempt"
    );
    assert!(events(&released).contains(&"released".to_owned()));

    let _next = worker(&setup, "next");
    let done = api.wait_final(&id, 90).await;
    assert_eq!(done["data"]["state"], "succeeded", "{done}");
    let verdict = setup.verify(&kinto.url, "prod", "big");
    assert_eq!(verdict["valid"], true, "{verdict}");
}

/// A proxy cuts answers short, as a load balancer dropping a connection does: a source page with a matching
/// `Content-Length`, the status PATCH's answer (applied by Kinto, answer lost), and the destination write's answer
/// with the connection closed mid-body. Each is retried: the job succeeds, nothing fails for good.
#[tokio::test(flavor = "multi_thread")]
async fn answers_cut_short_are_retried_and_the_job_finishes() {
    let kinto = KintoServer::start().await;
    kinto
        .editor()
        .create_source("ws", "cfr", json!({}), &sample_records(200, 4))
        .await;
    let proxy = FaultProxy::start(&kinto.url).await;
    proxy.inject(
        "GET",
        "/buckets/ws/collections/cfr/records",
        Fault::Truncate,
        1,
    );
    proxy.inject("POST", "/buckets/prod/collections/cfr", Fault::Reset, 1);
    proxy.inject("PATCH", "/buckets/ws/collections/cfr", Fault::Truncate, 1);
    let setup = Setup::new("", &proxy.url, "ws/cfr -> prod/cfr", FAST_QUEUE);
    let api = Api::start(&setup, 1).await;

    let done = api.wait_final(&api.sign("ws/cfr").await, 60).await;
    assert_eq!(done["data"]["state"], "succeeded", "{done}");
    assert_eq!(proxy.spoiled(), 3, "every fault was met");
    setup.assert_verifies(&kinto.url, "prod", "cfr", 200);
    assert_eq!(
        kinto.editor().collection("ws", "cfr").await.unwrap()["status"],
        "signed"
    );
}

/// A request whose job ran out of attempts on transient failures (every answer cut short) is taken up again by
/// the change feed once the answers come through, as River and Oban leave a discarded job to be enqueued anew.
#[tokio::test(flavor = "multi_thread")]
async fn the_feed_takes_up_a_request_whose_job_ran_out_of_retries() {
    let kinto = KintoServer::start().await;
    let editor = kinto.editor();
    editor
        .create_source(
            "ws",
            "cfr",
            json!({"status": "work-in-progress"}),
            &sample_records(20, 6),
        )
        .await;
    let proxy = FaultProxy::start(&kinto.url).await;
    proxy.inject(
        "GET",
        "/buckets/ws/collections/cfr/records",
        Fault::Truncate,
        1000,
    );
    let setup = Setup::new(
        "",
        &proxy.url,
        "ws/cfr -> prod/cfr",
        &format!("{FAST_QUEUE}max_attempts = 2\n[feed]\ninterval_seconds = 1\n"),
    );
    let api = Api::start(&setup, 1).await;
    editor
        .patch_collection("ws", "cfr", json!({"status": "to-sign"}))
        .await;
    let failed = eventually(60, "the first job to run out of attempts", || {
        let api = &api;
        async move {
            let (_, jobs) = api
                .get("/v1/jobs?resource=/buckets/ws/collections/cfr")
                .await;
            jobs["data"]
                .as_array()?
                .iter()
                .find(|j| j["state"] == "failed")
                .cloned()
        }
    })
    .await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("cut short"),
        "{failed}"
    );
    proxy.clear();
    eventually(60, "a later job to sign it", || {
        let editor = &editor;
        async move {
            let status = editor.collection("ws", "cfr").await?["status"].clone();
            (status == "signed").then_some(())
        }
    })
    .await;
    setup.assert_verifies(&kinto.url, "prod", "cfr", 20);
    let (_, jobs) = api
        .get("/v1/jobs?resource=/buckets/ws/collections/cfr")
        .await;
    let states: Vec<&str> = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"succeeded") && states.contains(&"failed"),
        "{states:?}"
    );
}

/// `POST /v1/jobs` for `ws/cfr`: the status code.
async fn ask(api: &Api) -> u16 {
    api.post("/v1/jobs", r#"{"resource": "ws/cfr"}"#).await.0
}

/// The embedded store's file deleted while the API runs: it would keep answering 202 into an unlinked file whose
/// jobs vanish at the next restart. Refused with 503 instead, both health checks fail, and one log line says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_embedded_store_refuses_work_and_says_so() {
    let setup = Setup::new("", "http://127.0.0.1:9/v1", "ws/cfr -> prod/cfr", "");
    let api = Api::start(&setup, 0).await;
    assert_eq!(ask(&api).await, 202);
    assert_eq!(api.get("/__ready__").await.0, 200);
    let file = setup.dir.0.join("signer.db");
    std::fs::remove_file(&file).unwrap();
    refuses_work_and_says_once(&api, "was deleted or replaced while in use").await;
    // A new file at the same path is not the one the accepted job is in.
    std::fs::write(&file, b"").unwrap();
    refuses_work_and_says_once(&api, "was deleted or replaced while in use").await;
    assert!(api.process.log_text().contains(&file.display().to_string()));
}

/// Jobs refused with 503, readiness and heartbeat red for the database, and the cause (`said`) logged once.
async fn refuses_work_and_says_once(api: &Api, said: &str) {
    for _ in 0..3 {
        assert_eq!(ask(api).await, 503);
    }
    let (status, ready) = api.get("/__ready__").await;
    assert_eq!((status, ready["database"].clone()), (503, json!(false)));
    let (status, heartbeat) = api.get("/__heartbeat__").await;
    assert_eq!((status, heartbeat["database"].clone()), (503, json!(false)));
    let log = api.process.log_text();
    assert_eq!(log.matches(said).count(), 1, "said once: {log}");
}

/// The embedded store's file overwritten in place while the API runs (a restore over a running service, a bad
/// copy): the store's one connection would go on answering from its cache and its write-ahead log. Refused with
/// 503 instead, both health checks fail, and one log line says why.
#[tokio::test(flavor = "multi_thread")]
async fn an_embedded_store_overwritten_in_place_refuses_work_and_says_so() {
    let setup = Setup::new("", "http://127.0.0.1:9/v1", "ws/cfr -> prod/cfr", "");
    let api = Api::start(&setup, 0).await;
    assert_eq!(ask(&api).await, 202);
    let file = setup.dir.0.join("signer.db");
    let size = std::fs::metadata(&file).unwrap().len();
    {
        use std::io::Write as _;
        // The same file (inode) with other bytes in it.
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all(&vec![0x5a; size as usize]).unwrap();
        f.sync_all().unwrap();
    }
    refuses_work_and_says_once(&api, "no longer starts as an SQLite database").await;
}

/// The embedded store on a full disk (a small tmpfs the test fills): refused with 503 and readiness red while
/// full, both green again once there is room, without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_under_the_embedded_store_turns_readiness_red_until_there_is_room() {
    let setup = Setup::new("", "http://127.0.0.1:9/v1", "ws/cfr -> prod/cfr", "");
    let disk = setup.dir.0.join("disk");
    let Some(_tmpfs) = Tmpfs::mount(&disk, "8m") else {
        return;
    };
    let config = std::fs::read_to_string(&setup.config).unwrap().replace(
        &format!("data_dir = \"{}\"", setup.dir.0.display()),
        &format!("data_dir = \"{}\"", disk.display()),
    );
    std::fs::write(&setup.config, config).unwrap();
    let api = Api::start(&setup, 0).await;
    assert_eq!(ask(&api).await, 202);
    assert_eq!(api.get("/__ready__").await.0, 200);

    let filler = disk.join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
    }
    assert_eq!(ask(&api).await, 503);
    let (status, ready) = api.get("/__ready__").await;
    assert_eq!((status, ready["database"].clone()), (503, json!(false)));
    assert_eq!(api.get("/__heartbeat__").await.0, 503);
    assert!(api.process.log_text().contains("bytes free on its disk"));

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(api.get("/__ready__").await.0, 200);
    assert_eq!(ask(&api).await, 202);
    let (_, jobs) = api.get("/v1/jobs").await;
    assert_eq!(
        jobs["data"].as_array().unwrap().len(),
        1,
        "the job accepted before is there, and the refused ones are not: {jobs}"
    );
}

/// RabbitMQ is optional: with it unreachable, jobs are still recorded (and run through Postgres), so readiness
/// stays green while `__heartbeat__` reports the broker down.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_does_not_take_the_api_out_of_service() {
    let db = TestDb::create().await;
    let extra = format!(
        "[queue]\ndispatch = \"rabbitmq\"\n{}",
        signer_e2e::rabbitmq::dispatch_settings(
            &format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()),
            "signer-unreachable"
        )
    );
    let setup = Setup::new(
        &db.url,
        "http://127.0.0.1:9/v1",
        "ws/cfr -> prod/cfr",
        &extra,
    );
    let api = Api::start(&setup, 1).await;
    let (status, heartbeat) = api.get("/__heartbeat__").await;
    assert_eq!(
        (status, heartbeat["broker"].clone()),
        (503, json!(false)),
        "{heartbeat}"
    );
    let (status, ready) = api.get("/__ready__").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ask(&api).await, 202);
    // Several failed sessions later, the outage was said once per role (relay, consumer).
    eventually(30, "three failed broker sessions per role", || {
        let api = &api;
        async move {
            let scrape = api.metrics().await;
            ["relay", "consumer"]
                .iter()
                .all(|role| {
                    metric(
                        &scrape,
                        "signer_broker_sessions_failed_total",
                        &[("role", role)],
                    )
                    .is_some_and(|n| n >= 3.0)
                })
                .then_some(())
        }
    })
    .await;
    let log = api.process.log_text();
    assert_eq!(
        log.matches("broker session ended").count(),
        2,
        "one warning per role and outage: {log}"
    );
    assert!(!log.contains("ERROR"), "{log}");
}
