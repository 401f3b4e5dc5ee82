//! The review workflow end to end, as Remote Settings runs it: a real Kinto with the listener plugin of
//! `deploy/kinto` posting signed webhook calls, the Autograph test server signing with two key ids, and every
//! published signature checked by the independent Python verifier against the keys of its own `x5u` chain.

use serde_json::{json, Value};
use signer_e2e::autograph::AutographServer;
use signer_e2e::db::TestDb;
use signer_e2e::kinto::{KintoAdmin, KintoServer, SIGNER};
use signer_e2e::records::sample_records;
use signer_e2e::service::{verify_x5u, Api, Setup};
use signer_e2e::{by_id_without_timestamps, eventually, free_port, FAST_QUEUE};

const SECRET: &str = "webhook-test-secret";
const SOURCE: &str = "/buckets/ws/collections/cfr";

struct Stack {
    _db: TestDb,
    kinto: KintoServer,
    autograph: AutographServer,
    _setup: Setup,
    api: Api,
    editor: KintoAdmin,
    reviewer: KintoAdmin,
    outsider: KintoAdmin,
    editor_id: String,
    reviewer_id: String,
}

/// ws → ws-preview → main, review enabled, signed by Autograph with two key ids, events by the listener plugin.
async fn stack(records: usize) -> Stack {
    let db = TestDb::create().await;
    let autograph = AutographServer::start(&["remote-settings", "remote-settings-2026"]).await;
    let api_port = free_port();
    let dir = signer_e2e::service::TempDir::new("kinto-webhook");
    let kinto = KintoServer::start_with_webhook(
        &dir.0,
        &format!("http://127.0.0.1:{api_port}/v1/webhooks/kinto"),
        SECRET,
        "ws",
    )
    .await;
    let editor = kinto.editor();
    let reviewer = editor.as_user("reviewer", "reviewer-pw");
    let outsider = editor.as_user("eve", "eve-pw");
    let (editor_id, reviewer_id) = (editor.principal().await, reviewer.principal().await);
    editor
        .create_source(
            "ws",
            "cfr",
            json!({"status": "work-in-progress", "displayFields": ["title"]}),
            &sample_records(records, 11),
        )
        .await;
    editor
        .put_group("ws", "cfr-editors", std::slice::from_ref(&editor_id))
        .await;
    // The editor reviews too (as often), so only "not your own review request" stops them approving it.
    editor
        .put_group(
            "ws",
            "cfr-reviewers",
            &[reviewer_id.clone(), editor_id.clone()],
        )
        .await;
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        "/buckets/ws -> /buckets/ws-preview -> /buckets/main",
        &format!(
            "to_review_enabled = true\nsigner_backend = \"autograph\"\n{}{FAST_QUEUE}[api]\nwebhook_secret = \"{SECRET}\"\n[feed]\nenabled = false\n",
            autograph.settings()
        ),
    );
    let api = Api::start_on(&setup, 2, api_port).await;
    drop(dir);
    Stack {
        _db: db,
        kinto,
        autograph,
        _setup: setup,
        api,
        editor,
        reviewer,
        outsider,
        editor_id,
        reviewer_id,
    }
}

impl Stack {
    async fn set_status(&self, who: &KintoAdmin, status: &str) {
        who.patch_collection("ws", "cfr", json!({"status": status}))
            .await;
    }

    /// The jobs of the source, oldest first.
    async fn jobs(&self) -> Vec<Value> {
        let (_, body) = self.api.get(&format!("/v1/jobs?resource={SOURCE}")).await;
        let mut jobs = body["data"].as_array().cloned().unwrap_or_default();
        jobs.reverse();
        jobs
    }

    /// Waits for the `n`th job (1-based) of the source to finish; returns it with its history.
    async fn nth_job(&self, n: usize) -> Value {
        let id = eventually(60, &format!("job #{n} of {SOURCE}"), || async {
            let jobs = self.jobs().await;
            jobs.get(n - 1)
                .map(|j| j["id"].as_str().unwrap().to_owned())
        })
        .await;
        self.api.wait_final(&id, 60).await
    }

    async fn source(&self) -> Value {
        self.editor.collection("ws", "cfr").await.expect("source")
    }

    /// Asserts that the `n`th job was refused at its first attempt for `reason`, with the source's status put back
    /// to `status` and nothing published.
    async fn refused(&self, n: usize, reason: &str, status: &str) {
        let job = self.nth_job(n).await;
        assert_eq!(job["data"]["state"], "failed", "{job}");
        assert_eq!(job["data"]["attempt"], 1, "a refusal is not retried: {job}");
        let error = job["data"]["last_error"].as_str().unwrap();
        assert!(error.contains(reason), "{error}");
        assert!(job["history"].to_string().contains("refused"), "{job}");
        assert_eq!(self.source().await["status"], status);
        assert!(
            self.editor.collection("main", "cfr").await.is_none(),
            "the destination was never created"
        );
    }

    fn verified(&self, bucket: &str, records: usize) -> Value {
        let verdict = verify_x5u(&self.kinto.url, bucket, "cfr");
        assert_eq!(verdict["valid"], true, "{bucket}/cfr: {verdict}");
        assert_eq!(verdict["records"], records, "{bucket}/cfr: {verdict}");
        verdict
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn review_approve_rollback_and_resign_through_kinto_events() {
    let s = stack(20).await;

    // Editor asks for a review: the preview is published and signed, the destination is not touched.
    s.set_status(&s.editor, "to-review").await;
    let review = s.nth_job(1).await;
    assert_eq!(review["data"]["state"], "succeeded", "{review}");
    assert_eq!(review["data"]["trigger"], "webhook");
    assert_eq!(review["data"]["result"]["action"], "review");
    s.verified("ws-preview", 20);
    assert!(s.editor.collection("main", "cfr").await.is_none());
    let source = s.source().await;
    assert_eq!(source["status"], "to-review");
    assert_eq!(source["last_review_request_by"], s.editor_id);

    // A reviewer approves: destination signed with both key ids, each verifying with its own x5u chain.
    s.set_status(&s.reviewer, "to-sign").await;
    let sign = s.nth_job(2).await;
    assert_eq!(sign["data"]["state"], "succeeded", "{sign}");
    let verdict = s.verified("main", 20);
    assert_eq!(verdict["checks"], json!([true, true, true]));
    let destination = s.editor.collection("main", "cfr").await.unwrap();
    let signatures = destination["signatures"].as_array().unwrap();
    let signers: Vec<&str> = signatures
        .iter()
        .map(|sig| sig["signer_id"].as_str().unwrap())
        .collect();
    assert_eq!(signers, ["remote-settings", "remote-settings-2026"]);
    assert_eq!(destination["signature"], signatures[0]);
    assert_ne!(signatures[0]["x5u"], signatures[1]["x5u"]);
    for field in ["ref", "type", "mode", "public_key"] {
        assert!(signatures[1].get(field).is_some(), "{field} copied");
    }
    assert_eq!(destination["displayFields"], json!(["title"]));
    let source = s.source().await;
    assert_eq!(source["status"], "signed");
    assert_eq!(source["last_review_by"], s.reviewer_id);
    assert_eq!(source["last_signature_by"], s.reviewer_id);
    assert_eq!(source["last_review_request_by"], s.editor_id);

    // Edits, then a rollback: the source (and the preview) are what the destination publishes again.
    let published = by_id_without_timestamps(&s.editor.records("main", "cfr").await);
    s.editor
        .put_records(
            "ws",
            "cfr",
            &[json!({"id": "added-after-signing", "title": "new"})],
        )
        .await;
    let first = published.keys().next().unwrap().clone();
    s.editor.delete_record("ws", "cfr", &first).await;
    let source = s.source().await;
    assert_eq!(
        source["status"], "work-in-progress",
        "edits are tracked in Kinto's transaction"
    );
    assert_eq!(source["last_edit_by"], s.editor_id);
    s.set_status(&s.editor, "to-rollback").await;
    let rollback = s.nth_job(3).await;
    assert_eq!(rollback["data"]["state"], "succeeded", "{rollback}");
    assert_eq!(
        (
            &rollback["data"]["result"]["restored"]["created"],
            &rollback["data"]["result"]["restored"]["deleted"]
        ),
        (&json!(1), &json!(1))
    );
    assert_eq!(
        by_id_without_timestamps(&s.editor.records("ws", "cfr").await),
        published
    );
    assert_eq!(
        by_id_without_timestamps(&s.editor.records("ws-preview", "cfr").await),
        published
    );
    s.verified("ws-preview", 20);
    let source = s.source().await;
    assert_eq!(source["status"], "signed");
    assert_eq!(source["last_edit_by"], s.editor_id);

    // A re-sign: new signatures over the same records, the previous status given back.
    let before = s.editor.collection("main", "cfr").await.unwrap();
    let records_before = s.editor.records("main", "cfr").await;
    s.set_status(&s.editor, "to-resign").await;
    let resign = s.nth_job(4).await;
    assert_eq!(resign["data"]["state"], "succeeded", "{resign}");
    let after = s.editor.collection("main", "cfr").await.unwrap();
    assert_ne!(
        before["signature"]["signature"],
        after["signature"]["signature"]
    );
    assert_eq!(s.editor.records("main", "cfr").await, records_before);
    s.verified("main", 20);
    let source = s.source().await;
    assert_eq!(source["status"], "signed", "status restored");
    assert_eq!(source["last_signature_by"], s.editor_id);
    assert_eq!(
        s.jobs().await.len(),
        4,
        "the service's own status writes trigger nothing"
    );

    // A whole workflow's logs name jobs and collections, never a secret.
    let log = s.api.process.log_text();
    assert!(log.contains("job_id="), "job lines carry their job id");
    for secret in [
        signer_e2e::autograph::HAWK_KEY,
        SECRET,
        signer_e2e::kinto::SIGNER.1,
    ] {
        assert!(!log.contains(secret), "a secret reached the logs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_from_the_wrong_people_or_state_are_refused_and_nothing_is_published() {
    let s = stack(5).await;

    // Straight from work-in-progress to to-sign, although review is enabled.
    s.set_status(&s.reviewer, "to-sign").await;
    s.refused(1, "to-sign from \"work-in-progress\"", "work-in-progress")
        .await;

    s.set_status(&s.editor, "to-review").await;
    assert_eq!(s.nth_job(2).await["data"]["state"], "succeeded");

    // The editor who asked for the review cannot approve it.
    s.set_status(&s.editor, "to-sign").await;
    s.refused(3, "last editor cannot review", "to-review").await;

    // Nor can someone outside the reviewers group.
    s.set_status(&s.outsider, "to-sign").await;
    s.refused(4, "not in the cfr-reviewers group", "to-review")
        .await;
    assert_eq!(
        s.jobs().await.len(),
        4,
        "putting the status back asks for nothing"
    );

    // Edits after the review request put the collection back to work-in-progress, so approving is refused.
    s.editor
        .patch_record(
            "ws",
            "cfr",
            "rec-00000",
            json!({"title": "changed after review"}),
        )
        .await;
    assert_eq!(s.source().await["status"], "work-in-progress");
    s.set_status(&s.reviewer, "to-sign").await;
    s.refused(5, "to-sign from \"work-in-progress\"", "work-in-progress")
        .await;

    // A review whose preview is gone by the time it is approved: nothing was shown, so nothing is approved.
    s.set_status(&s.editor, "to-review").await;
    assert_eq!(s.nth_job(6).await["data"]["state"], "succeeded");
    s.editor
        .as_user(SIGNER.0, SIGNER.1)
        .ok(
            reqwest::Method::DELETE,
            "/buckets/ws-preview/collections/cfr",
            None,
        )
        .await;
    s.set_status(&s.reviewer, "to-sign").await;
    s.refused(
        7,
        "the preview /buckets/ws-preview/collections/cfr does not exist",
        "work-in-progress",
    )
    .await;

    // Unsigned or forged webhook calls are refused.
    let (status, _, body) = s
        .api
        .post(
            "/v1/webhooks/kinto",
            &json!({"action": "update"}).to_string(),
        )
        .await;
    assert_eq!((status, &body["errno"]), (401, &json!(104)), "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("x-signer-timestamp"));
    let _ = &s.autograph;
}
