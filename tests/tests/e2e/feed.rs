//! The change feed: with no webhook at all, status changes are still found and handled, by exactly one poller
//! among many workers; and signed destinations are re-signed before their certificates expire.

use serde_json::json;
use signer_e2e::autograph::AutographServer;
use signer_e2e::db::TestDb;
use signer_e2e::kinto::{signoff_settings, KintoAdmin, KintoServer};
use signer_e2e::records::sample_records;
use signer_e2e::service::{verify_x5u, Api, Process, Setup};
use signer_e2e::{eventually, metric, FAST_QUEUE};

const LEADER: &str = "change feed: this worker is the leader";

fn leaders(workers: &[Process]) -> Vec<usize> {
    workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.log_text().contains(LEADER))
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_webhook_one_leader_among_three_workers_finds_to_sign() {
    let db = TestDb::create().await;
    // Plain Kinto: no listener plugin, so no webhook call is ever made.
    let kinto = KintoServer::start().await;
    let editor = kinto.editor();
    for c in ["a", "b"] {
        editor
            .create_source(
                "ws",
                c,
                json!({"status": "work-in-progress"}),
                &sample_records(15, 5),
            )
            .await;
    }
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        "/buckets/ws -> /buckets/main",
        &format!("{FAST_QUEUE}[feed]\ninterval_seconds = 1\n"),
    );
    let mut workers: Vec<Process> = (0..3)
        .map(|i| {
            Process::spawn(
                "signer-worker",
                &["--concurrency", "1"],
                &setup.config,
                setup.dir.0.join(format!("worker-{i}.log")),
            )
        })
        .collect();
    let api = Api::start(&setup, 0).await;
    eventually(30, "a feed leader", || async {
        (!leaders(&workers).is_empty()).then_some(())
    })
    .await;

    editor
        .patch_collection("ws", "a", json!({"status": "to-sign"}))
        .await;
    // The worker marks the source signed before it records the job as succeeded: wait for the job.
    newest_job_in_state(&api, "/buckets/ws/collections/a", "succeeded").await;
    assert_eq!(
        editor.collection("ws", "a").await.unwrap()["status"],
        "signed"
    );
    setup.assert_verifies(&kinto.url, "main", "a", 15);
    let (_, jobs) = api.get("/v1/jobs?resource=/buckets/ws/collections/a").await;
    let jobs = jobs["data"].as_array().unwrap();
    assert_eq!(
        jobs.len(),
        1,
        "one job, although three workers run the feed: {jobs:?}"
    );
    assert_eq!(jobs[0]["trigger"], "feed");
    assert_eq!(jobs[0]["kind"], "sign");
    assert_eq!(jobs[0]["state"], "succeeded");
    let leading = leaders(&workers);
    assert_eq!(leading.len(), 1, "exactly one worker polls");

    // The leader dies: another worker takes over and the feed keeps working.
    workers[leading[0]].kill();
    editor
        .patch_collection("ws", "b", json!({"status": "to-sign"}))
        .await;
    eventually(30, "ws/b signed after the leader died", || async {
        (editor.collection("ws", "b").await?["status"] == "signed").then_some(())
    })
    .await;
    let now_leading: Vec<usize> = leaders(&workers)
        .into_iter()
        .filter(|i| *i != leading[0])
        .collect();
    assert_eq!(now_leading.len(), 1, "one successor");
    setup.assert_verifies(&kinto.url, "main", "b", 15);
}

#[tokio::test(flavor = "multi_thread")]
async fn destinations_are_re_signed_before_the_certificate_expires_once_per_certificate() {
    let kinto = KintoServer::start().await;
    kinto
        .editor()
        .create_source(
            "ws",
            "cfr",
            json!({"status": "work-in-progress"}),
            &sample_records(8, 2),
        )
        .await;
    let autograph = AutographServer::start(&["remote-settings"]).await;
    // The test server's certificates last 30 days: a 40-day window makes them due at once.
    let setup = Setup::new(
        "",
        &kinto.url,
        "/buckets/ws -> /buckets/main",
        &format!(
            "signer_backend = \"autograph\"\n{}{FAST_QUEUE}[feed]\ninterval_seconds = 1\nresign_check_seconds = 1\nresign_before_expiry_hours = 960\n",
            autograph.settings()
        ),
    );
    let api = Api::start(&setup, 1).await;
    let first = api.wait_final(&api.sign("ws/cfr").await, 30).await;
    assert_eq!(first["data"]["state"], "succeeded", "{first}");
    let signed = first["data"]["result"]["destination"]["signature"]["signature"].clone();

    let resign = eventually(30, "a scheduled re-sign", || async {
        let (_, jobs) = api
            .get("/v1/jobs?resource=/buckets/ws/collections/cfr")
            .await;
        jobs["data"]
            .as_array()?
            .iter()
            .find(|j| j["kind"] == "resign" && j["state"] == "succeeded")
            .cloned()
    })
    .await;
    assert_eq!(resign["trigger"], "feed");
    assert_ne!(
        resign["result"]["destination"]["signature"]["signature"],
        signed
    );
    let verdict = verify_x5u(&kinto.url, "main", "cfr");
    assert_eq!(
        (verdict["valid"].clone(), verdict["records"].clone()),
        (json!(true), json!(8))
    );
    let source = kinto.editor().collection("ws", "cfr").await.unwrap();
    assert_eq!(
        source["status"], "signed",
        "a scheduled re-sign leaves the status alone"
    );

    // The same certificate does not ask again: no second re-sign over the next two checks.
    let checks = || async {
        let scrape = api.metrics().await;
        metric(
            &scrape,
            "signer_feed_checks_total",
            &[("check", "resigns"), ("outcome", "ok")],
        )
        .unwrap_or(0.0)
    };
    let seen = checks().await;
    eventually(30, "two more re-sign checks", || async {
        (checks().await >= seen + 2.0).then_some(())
    })
    .await;
    let (_, jobs) = api
        .get("/v1/jobs?resource=/buckets/ws/collections/cfr")
        .await;
    let resigns = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "resign")
        .count();
    assert_eq!(resigns, 1, "{jobs}");
}

const REVIEWED: &str = "/buckets/ws -> /buckets/ws-preview -> /buckets/main";

/// `ws/cfr` with 6 records; the editor edits and asks for reviews, the reviewer approves.
async fn reviewed_source(kinto: &KintoServer) -> (KintoAdmin, KintoAdmin, String, String) {
    let editor = kinto.editor();
    let reviewer = editor.as_user("reviewer", "reviewer-pw");
    let (editor_id, reviewer_id) = (editor.principal().await, reviewer.principal().await);
    editor
        .create_source(
            "ws",
            "cfr",
            json!({"status": "work-in-progress"}),
            &sample_records(6, 4),
        )
        .await;
    editor
        .put_group("ws", "cfr-editors", std::slice::from_ref(&editor_id))
        .await;
    editor
        .put_group("ws", "cfr-reviewers", std::slice::from_ref(&reviewer_id))
        .await;
    (editor, reviewer, editor_id, reviewer_id)
}

/// The service with review enabled on `REVIEWED`, learning of status changes from its change feed only.
async fn reviewing_service(db: &TestDb, kinto: &KintoServer) -> (Setup, Api) {
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        REVIEWED,
        &format!("to_review_enabled = true\n{FAST_QUEUE}[feed]\ninterval_seconds = 1\n"),
    );
    let api = Api::start(&setup, 1).await;
    (setup, api)
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_webhook_the_review_workflow_learns_who_asked_from_kintos_history() {
    let db = TestDb::create().await;
    let dir = signer_e2e::service::TempDir::new("kinto-history");
    let kinto = KintoServer::start_with_settings(
        &dir.0,
        &("kinto.includes = kinto.plugins.history\n".to_owned()
            + &signoff_settings(REVIEWED, true)),
    )
    .await;
    let (editor, reviewer, editor_id, reviewer_id) = reviewed_source(&kinto).await;
    let (setup, api) = reviewing_service(&db, &kinto).await;

    editor
        .patch_collection("ws", "cfr", json!({"status": "to-review"}))
        .await;
    assert_eq!(
        editor.collection("ws", "cfr").await.unwrap()["last_review_request_by"],
        editor_id.as_str(),
        "who asked is written with the request"
    );
    let review = newest_job_in_state(&api, "/buckets/ws/collections/cfr", "succeeded").await;
    assert_eq!(
        (&review["trigger"], &review["result"]["action"]),
        (&json!("feed"), &json!("review")),
        "{review}"
    );
    setup.assert_verifies(&kinto.url, "ws-preview", "cfr", 6);

    // An edit after the review request puts the collection back to work in progress, in Kinto's transaction: the
    // approval is refused on the spot and nothing reaches the service.
    editor
        .patch_record(
            "ws",
            "cfr",
            "rec-00001",
            json!({"title": "after the review request"}),
        )
        .await;
    let (status, body) = reviewer
        .request(
            reqwest::Method::PATCH,
            "/buckets/ws/collections/cfr",
            Some(json!({"data": {"status": "to-sign"}})),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("Collection not under review"))
    );
    assert!(
        editor.records("main", "cfr").await.is_empty(),
        "nothing published: the destination is as its source's creation left it"
    );

    editor
        .patch_collection("ws", "cfr", json!({"status": "to-review"}))
        .await;
    eventually(30, "the second review request handled", || async {
        let (_, jobs) = api
            .get("/v1/jobs?resource=/buckets/ws/collections/cfr&state=succeeded")
            .await;
        (jobs["data"].as_array()?.len() == 2).then_some(())
    })
    .await;
    reviewer
        .patch_collection("ws", "cfr", json!({"status": "to-sign"}))
        .await;
    let source = eventually(30, "the approval handled by the feed", || async {
        let source = editor.collection("ws", "cfr").await?;
        (source["status"] == "signed").then_some(source)
    })
    .await;
    assert_eq!(source["last_review_by"], reviewer_id.as_str());
    assert_eq!(source["last_signature_by"], reviewer_id.as_str());
    setup.assert_verifies(&kinto.url, "main", "cfr", 6);
    let (_, jobs) = api
        .get("/v1/jobs?resource=/buckets/ws/collections/cfr")
        .await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 3, "{jobs}");
}

/// Review enabled, but Kinto does not decide the workflow (no `signoff`): a status change there was answered 200
/// whoever made it, so the service does not carry it out, and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_review_enabled_resource_needs_kinto_to_decide_the_workflow() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let (editor, reviewer, _, _) = reviewed_source(&kinto).await;
    let (_setup, api) = reviewing_service(&db, &kinto).await;
    reviewer
        .patch_collection("ws", "cfr", json!({"status": "to-sign"}))
        .await;
    let failed = newest_job_in_state(&api, "/buckets/ws/collections/cfr", "failed").await;
    assert_eq!(failed["attempt"], 1, "not retried: {failed}");
    assert!(
        failed["last_error"].as_str().unwrap().contains(
            "Kinto does not decide its review workflow: add kinto_signer_webhook.signoff"
        ),
        "{failed}"
    );
    assert!(editor.collection("main", "cfr").await.is_none());
    assert!(editor.collection("ws-preview", "cfr").await.is_none());
}

/// Feed jobs have no id the test knows: find the resource's newest job once it reaches `state`.
async fn newest_job_in_state(api: &Api, resource: &str, state: &str) -> serde_json::Value {
    eventually(30, &format!("a {state} job for {resource}"), || async {
        let (_, jobs) = api
            .get(&format!("/v1/jobs?resource={resource}&state={state}"))
            .await;
        jobs["data"].as_array()?.first().cloned()
    })
    .await
}
