//! The review workflow end to end, as Remote Settings runs it: a real Kinto (memory and PostgreSQL backends) with
//! the plugin of `deploy/kinto` deciding every status change in the editor's own request (`signoff`) and posting
//! signed webhook calls, the Autograph test server signing with two key ids, and every published signature
//! checked by the independent Python verifier against the keys of its own `x5u` chain. Where kinto-signer 8.1.1
//! has a behaviour, the same steps run against it on the same kind of Kinto and must get the same answers.

use reqwest::Method;
use serde_json::{json, Value};
use signer_e2e::autograph::AutographServer;
use signer_e2e::db::TestDb;
use signer_e2e::kinto::{
    basicauth_userid, reference_signer_settings, signoff_settings, webhook_settings, Install,
    KintoAdmin, KintoServer, Storage, SIGNER,
};
use signer_e2e::records::sample_records;
use signer_e2e::service::{verify_x5u, Api, Setup, TempDir};
use signer_e2e::{by_id_without_timestamps, eventually, free_port, FAST_QUEUE};

const SECRET: &str = "webhook-test-secret";
const SOURCE: &str = "/buckets/ws/collections/cfr";
const RESOURCES: &str = "/buckets/ws -> /buckets/ws-preview -> /buckets/main";

/// Kinto's backend for a stack: the memory backend does not roll back a refused request, PostgreSQL does.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Memory,
    Postgres,
}

struct Stack {
    /// Kinto's ini and working directory.
    dir: TempDir,
    _db: TestDb,
    _kinto_db: Option<TestDb>,
    kinto: KintoServer,
    autograph: AutographServer,
    _setup: Setup,
    api: Api,
    editor: KintoAdmin,
    reviewer: KintoAdmin,
    outsider: KintoAdmin,
    editor_id: String,
    reviewer_id: String,
    /// The job the source's creation queued, before the test's steps.
    first_job: String,
}

/// The jobs of the source, newest first.
async fn source_jobs(api: &Api) -> Vec<Value> {
    let (_, body) = api.get(&format!("/v1/jobs?resource={SOURCE}")).await;
    body["data"].as_array().cloned().unwrap_or_default()
}

/// `ws/cfr` holding `records` records, its editors and reviewers groups: the editor is in both (as often), the
/// reviewer only reviews, the outsider is in neither. With the service running (`api`), the new collection's
/// first signature (the job its creation queues) is waited for before any record is written, so that it is a
/// job of its own that happened, not one racing the edits (the listener posts after Kinto's commit, from a thread
/// of its own); it is returned.
async fn source_with_groups(
    kinto_url: &str,
    records: usize,
    api: Option<&Api>,
) -> (KintoAdmin, String, String, Option<Value>) {
    let editor = KintoServer::admin(kinto_url);
    let reviewer = editor.as_user("reviewer", "reviewer-pw");
    let (editor_id, reviewer_id) = (editor.principal().await, reviewer.principal().await);
    let before = match api {
        Some(api) => source_jobs(api).await,
        None => Vec::new(),
    };
    editor
        .create_source(
            "ws",
            "cfr",
            json!({"status": "work-in-progress", "displayFields": ["title"]}),
            &[],
        )
        .await;
    let mut first = None;
    if let Some(api) = api {
        let id = eventually(60, "the new source's first job", || async {
            let jobs = source_jobs(api).await;
            let new = jobs
                .into_iter()
                .find(|j| before.iter().all(|old| old["id"] != j["id"]))?;
            Some(new["id"].as_str().unwrap().to_owned())
        })
        .await;
        first = Some(api.wait_final(&id, 60).await);
    }
    editor
        .put_records("ws", "cfr", &sample_records(records, 11))
        .await;
    editor
        .put_group("ws", "cfr-editors", std::slice::from_ref(&editor_id))
        .await;
    editor
        .put_group(
            "ws",
            "cfr-reviewers",
            &[reviewer_id.clone(), editor_id.clone()],
        )
        .await;
    (editor, editor_id, reviewer_id, first)
}

/// ws → ws-preview → main, review enabled and decided in Kinto, signed by Autograph with two key ids, events by
/// the listener plugin.
async fn stack(records: usize, backend: Backend) -> Stack {
    stack_with(records, backend, "").await
}

/// `stack`, with more `[app:main]` lines for Kinto.
async fn stack_with(records: usize, backend: Backend, kinto_settings: &str) -> Stack {
    let db = TestDb::create().await;
    let kinto_db = match backend {
        Backend::Memory => None,
        Backend::Postgres => Some(TestDb::create().await),
    };
    let storage = kinto_db
        .as_ref()
        .map_or(Storage::Memory, |db| Storage::Postgres(db.url.clone()));
    let autograph = AutographServer::start(&["remote-settings", "remote-settings-2026"]).await;
    let api_port = free_port();
    let dir = TempDir::new("kinto-webhook");
    let settings = webhook_settings(
        &format!("http://127.0.0.1:{api_port}/v1/webhooks/kinto"),
        SECRET,
        "ws",
    ) + &signoff_settings(RESOURCES, true)
        + kinto_settings;
    let kinto = KintoServer::launch(&dir.0, Install::Ours, &storage, &settings).await;
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        RESOURCES,
        &format!(
            "to_review_enabled = true\nsigner_backend = \"autograph\"\n{}{FAST_QUEUE}[api]\nwebhook_secret = \"{SECRET}\"\n[feed]\nenabled = false\n",
            autograph.settings()
        ),
    );
    let api = Api::start_on(&setup, 2, api_port).await;
    let (editor, editor_id, reviewer_id, first) =
        source_with_groups(&kinto.url, records, Some(&api)).await;
    let first = first.expect("the service ran");
    assert_eq!(
        (&first["data"]["kind"], &first["data"]["state"]),
        (&json!("sign"), &json!("succeeded")),
        "a new source is published as it is, empty: {first}"
    );
    Stack {
        first_job: first["data"]["id"].as_str().unwrap().to_owned(),
        dir,
        _db: db,
        _kinto_db: kinto_db,
        kinto,
        autograph,
        _setup: setup,
        reviewer: editor.as_user("reviewer", "reviewer-pw"),
        outsider: editor.as_user("eve", "eve-pw"),
        editor,
        api,
        editor_id,
        reviewer_id,
    }
}

/// What a Kinto answers to a change of `ws/cfr`: the status code and, for a refusal, its message.
async fn change(who: &KintoAdmin, data: Value) -> (u16, Option<String>) {
    let (status, body) = who
        .request(
            Method::PATCH,
            "/buckets/ws/collections/cfr",
            Some(json!({"data": data})),
        )
        .await;
    (status, body["message"].as_str().map(str::to_owned))
}

/// The collection's data without its timestamp (the memory backend stamps the restored object anew).
fn without_timestamp(mut collection: Value) -> Value {
    collection.as_object_mut().unwrap().remove("last_modified");
    collection
}

impl Stack {
    async fn set_status(&self, who: &KintoAdmin, status: &str) {
        who.patch_collection("ws", "cfr", json!({"status": status}))
            .await;
    }

    /// The jobs of the source the test's steps queued (after its creation's), oldest first.
    async fn jobs(&self) -> Vec<Value> {
        let mut jobs = source_jobs(&self.api).await;
        jobs.retain(|j| j["id"] != self.first_job.as_str());
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

    /// Asserts Kinto refuses `data` from `who` with `code` and `message`, and that the source is as it was.
    async fn refused(&self, who: &KintoAdmin, data: Value, code: u16, message: &str) {
        let before = without_timestamp(self.source().await);
        let answer = change(who, data.clone()).await;
        assert_eq!(answer, (code, Some(message.to_owned())), "{data}");
        assert_eq!(
            without_timestamp(self.source().await),
            before,
            "a refused change leaves the source as it was: {data}"
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
    let s = stack(20, Backend::Memory).await;

    // Editor asks for a review: the preview is published and signed, the destination is not touched.
    s.set_status(&s.editor, "to-review").await;
    let review = s.nth_job(1).await;
    assert_eq!(review["data"]["state"], "succeeded", "{review}");
    assert_eq!(review["data"]["trigger"], "webhook");
    assert_eq!(review["data"]["result"]["action"], "review");
    s.verified("ws-preview", 20);
    assert!(s.editor.records("main", "cfr").await.is_empty());
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

/// Every rule of Remote Settings' workflow, answered on the PATCH itself with kinto-remote-settings' code and
/// message; a refused change leaves the source as it was and queues nothing.
async fn refusals_are_answered_on_the_request(backend: Backend) {
    let s = stack(5, backend).await;
    let (editor, reviewer, outsider) = (&s.editor, &s.reviewer, &s.outsider);
    let tracking = |field: &str| {
        format!(
            "Cannot change <TRACKING_FIELDS.{}: '{field}'>",
            field.to_uppercase()
        )
    };

    s.refused(
        reviewer,
        json!({"status": "to-sign"}),
        400,
        "Collection not under review",
    )
    .await;
    s.refused(
        outsider,
        json!({"status": "to-review"}),
        403,
        "Not in cfr-editors group",
    )
    .await;
    s.refused(
        editor,
        json!({"status": "signed"}),
        400,
        "Cannot set status to 'signed'",
    )
    .await;
    s.refused(
        editor,
        json!({"status": "bogus"}),
        400,
        "Invalid status 'bogus'",
    )
    .await;
    s.refused(editor, json!({"status": null}), 400, "Cannot remove status")
        .await;
    s.refused(
        editor,
        json!({"last_edit_by": "account:someone-else"}),
        400,
        &tracking("last_edit_by"),
    )
    .await;
    let float = json!({"data": {"id": "rec-float", "details": {"ratio": [1, 2.5]}}});
    let (status, body) = editor
        .request(
            Method::PUT,
            "/buckets/ws/collections/cfr/records/rec-float",
            Some(float),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            400,
            Some("field contains float value (tip: use integer or string), 'details.ratio.1'")
        ),
        "floats are refused at write time: {body}"
    );

    // Accepted: who asked is recorded in the same transaction, so the answers below do not depend on timing.
    s.set_status(editor, "to-review").await;
    assert_eq!(s.source().await["last_review_request_by"], s.editor_id);
    // The requester cannot approve their own request, not even by naming someone else as the requester (the
    // four-eyes bypass); a reviewer cannot rewrite who asked; an outsider cannot approve.
    s.refused(
        editor,
        json!({"status": "to-sign"}),
        403,
        "Last editor cannot review",
    )
    .await;
    s.refused(
        editor,
        json!({"status": "to-sign", "last_review_request_by": s.reviewer_id}),
        403,
        "Last editor cannot review",
    )
    .await;
    s.refused(
        reviewer,
        json!({"status": "to-sign", "last_review_request_by": "account:someone-else"}),
        400,
        &tracking("last_review_request_by"),
    )
    .await;
    s.refused(
        outsider,
        json!({"status": "to-sign"}),
        403,
        "Not in cfr-reviewers group",
    )
    .await;
    let review = s.nth_job(1).await;
    assert_eq!(review["data"]["state"], "succeeded", "{review}");
    s.verified("ws-preview", 5);

    s.set_status(reviewer, "to-sign").await;
    let sign = s.nth_job(2).await;
    assert_eq!(sign["data"]["state"], "succeeded", "{sign}");
    s.verified("main", 5);
    let source = s.source().await;
    assert_eq!(
        (&source["status"], &source["last_review_by"]),
        (&json!("signed"), &json!(s.reviewer_id))
    );
    s.refused(
        reviewer,
        json!({"status": "to-sign"}),
        400,
        "Collection already signed",
    )
    .await;
    s.refused(
        editor,
        json!({"status": "to-rollback"}),
        400,
        "Collection has no work-in-progress",
    )
    .await;
    // A destination or preview in use cannot be deleted, even by the service's own user who created it. (Only
    // where Kinto can roll back: the memory backend has deleted the collection by the time the refusal comes, as
    // with kinto-signer.)
    let signer = editor.as_user(SIGNER.0, SIGNER.1);
    let rolls_back = backend == Backend::Postgres;
    for bucket in ["main", "ws-preview"].into_iter().filter(|_| rolls_back) {
        let (status, body) = signer
            .request(
                Method::DELETE,
                &format!("/buckets/{bucket}/collections/cfr"),
                None,
            )
            .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (403, Some("Collection is in use.")),
            "{bucket}: {body}"
        );
    }
    s.verified("main", 5);
    assert_eq!(
        s.jobs().await.len(),
        2,
        "refused changes queue nothing: only the review and its approval ran"
    );
    let _ = &s.autograph;
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_answered_on_the_request_memory() {
    refusals_are_answered_on_the_request(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_answered_on_the_request_postgresql() {
    refusals_are_answered_on_the_request(Backend::Postgres).await;
}

/// What kinto-http's `request_review()` then `approve_changes()` do, and Mozilla's release scripts after them:
/// the approval follows the request at once, before the review's job has run. Every round must end with the
/// preview and the destination signed over the new records.
#[tokio::test(flavor = "multi_thread")]
async fn back_to_back_review_then_approval_is_signed_every_time() {
    const ROUNDS: usize = 8;
    let s = stack(10, Backend::Postgres).await;
    for round in 0..ROUNDS {
        s.editor
            .put_records(
                "ws",
                "cfr",
                &[json!({"id": format!("round-{round}"), "title": "new"})],
            )
            .await;
        assert_eq!(s.source().await["status"], "work-in-progress");
        assert_eq!(
            change(&s.editor, json!({"status": "to-review"})).await,
            (200, None)
        );
        assert_eq!(
            change(&s.reviewer, json!({"status": "to-sign"})).await,
            (200, None)
        );
        eventually(60, &format!("round {round} signed"), || async {
            (s.source().await["status"] == "signed").then_some(())
        })
        .await;
        let expected = 10 + round + 1;
        s.verified("main", expected);
        s.verified("ws-preview", expected);
        assert_eq!(
            by_id_without_timestamps(&s.editor.records("main", "cfr").await),
            by_id_without_timestamps(&s.editor.records("ws", "cfr").await),
            "round {round}"
        );
    }
    let jobs = s.jobs().await;
    for job in &jobs {
        let id = job["id"].as_str().unwrap();
        let job = s.api.wait_final(id, 60).await;
        let data = &job["data"];
        let gave_way = data["result"]["skipped"]
            .as_str()
            .is_some_and(|why| why.contains("superseded"))
            || job["history"]
                .to_string()
                .contains("superseded by queued job");
        match (data["kind"].as_str(), data["state"].as_str()) {
            (Some("sign"), Some("succeeded")) => {}
            (Some("review"), Some("succeeded" | "cancelled"))
                if gave_way || data["result"]["action"] == "review" => {}
            _ => panic!(
                "each approval succeeded; a review either ran or gave way to its approval: {job}"
            ),
        }
    }
    assert!(jobs.iter().filter(|j| j["kind"] == "sign").count() == ROUNDS);
}

/// With `auto_create_resources`, Kinto starts with the source buckets (and the source collections a resource names)
/// made, writable by the configured principals, as kinto-remote-settings does; nothing else is created.
#[tokio::test(flavor = "multi_thread")]
async fn sources_are_created_at_start_when_asked() {
    let dir = TempDir::new("auto-create");
    let kinto = KintoServer::launch(
        &dir.0,
        Install::Ours,
        &Storage::Memory,
        &(signoff_settings(
            "/buckets/ws/collections/cfr -> /buckets/ws-preview/collections/cfr -> /buckets/main/collections/cfr\n    /buckets/other -> /buckets/other-main",
            true,
        ) + "kinto.signer.auto_create_resources = true\n\
             kinto.signer.auto_create_resources_principals = system.Authenticated account:ops\n"),
    )
    .await;
    let someone = KintoServer::admin(&kinto.url).as_user("someone", "someone-pw");
    for path in [
        "/buckets/ws",
        "/buckets/ws/collections/cfr",
        "/buckets/other",
    ] {
        let body = someone.ok(Method::GET, path, None).await;
        let mut writers = body["permissions"]["write"].as_array().unwrap().clone();
        writers.sort_by_key(Value::to_string);
        assert_eq!(
            writers,
            [json!("account:ops"), json!("system.Authenticated")],
            "{path}"
        );
    }
    for path in [
        "/buckets/main",
        "/buckets/ws-preview",
        "/buckets/other-main",
    ] {
        let (status, _) = someone.request(Method::GET, path, None).await;
        assert_eq!(status, 403, "{path} is the service's to create");
    }
}

/// A mail body as written (quoted-printable): soft line breaks joined, `=XX` decoded.
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let mut bytes = Vec::new();
    let mut rest = joined.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let hex = tail.get(..2).and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(decoded) if b == b'=' => {
                bytes.push(decoded);
                rest = &tail[2..];
            }
            _ => {
                bytes.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Accepted review requests, approvals and rejections reach kinto-emailer as kinto-remote-settings' review events
/// (same class names, so Remote Settings' existing emailer hooks match), with the editor's or reviewer's
/// comment; a refused change sends nothing.
#[tokio::test(flavor = "multi_thread")]
async fn review_events_reach_kinto_emailer() {
    let s = stack_with(
        2,
        Backend::Postgres,
        "kinto.includes = kinto_emailer\nmail.debug_mailer = true\n",
    )
    .await;
    let hook = |event: &str, subject: &str, template: &str| {
        json!({
            "event": format!("kinto_remote_settings.signer.events.{event}"),
            "subject": subject, "template": template, "recipients": ["reviewers@example.com"]
        })
    };
    s.editor
        .ok(
            Method::PATCH,
            "/buckets/ws",
            Some(json!({"data": {"kinto-emailer": {"hooks": [
                hook("ReviewRequested", "Review asked on {bucket_id}/{collection_id}", "Comment: {comment}"),
                hook("ReviewApproved", "Approved {collection_id}", "Action: {action}"),
                hook("ReviewRejected", "Rejected {collection_id}", "Comment: {comment}"),
            ]}}})),
        )
        .await;
    let mails = || {
        let mut mails: Vec<(std::time::SystemTime, String)> =
            std::fs::read_dir(s.dir.0.join("mail"))
                .map(|dir| {
                    dir.map(|entry| {
                        let path = entry.unwrap().path();
                        let text = std::fs::read_to_string(&path).unwrap();
                        (path.metadata().unwrap().modified().unwrap(), text)
                    })
                    .collect()
                })
                .unwrap_or_default();
        mails.sort();
        mails
            .into_iter()
            .map(|(_, text)| {
                let line = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or_default()
                        .to_owned()
                };
                let body = text.split("\n\n").last().unwrap_or_default();
                format!("{} | {}", line("Subject: "), quoted_printable(body).trim())
            })
            .collect::<Vec<_>>()
    };
    s.refused(
        &s.outsider,
        json!({"status": "to-review"}),
        403,
        "Not in cfr-editors group",
    )
    .await;
    assert_eq!(
        change(
            &s.editor,
            json!({"status": "to-review", "last_editor_comment": "new ads"})
        )
        .await,
        (200, None)
    );
    assert_eq!(
        change(&s.reviewer, json!({"status": "to-sign"})).await,
        (200, None)
    );
    eventually(60, "signed", || async {
        (s.source().await["status"] == "signed").then_some(())
    })
    .await;
    s.editor
        .put_records("ws", "cfr", &[json!({"id": "late", "title": "late"})])
        .await;
    assert_eq!(
        change(&s.editor, json!({"status": "to-review"})).await,
        (200, None)
    );
    assert_eq!(
        change(
            &s.reviewer,
            json!({"status": "work-in-progress", "last_reviewer_comment": "not yet"})
        )
        .await,
        (200, None)
    );
    assert_eq!(
        mails(),
        [
            "Review asked on ws/cfr | Comment: new ads",
            "Approved cfr | Action: update",
            "Review asked on ws/cfr | Comment:",
            "Rejected cfr | Comment: not yet",
        ]
    );
}

/// With `hard_delete_destination_on_source_deletion`, a deleted source takes its preview, destination and groups
/// with it, leaving no tombstone (kinto-remote-settings' setting); the cleanup job the deletion queued then
/// finds nothing to do. A source made again under the same name starts from nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_deleted_for_good_takes_its_preview_and_destination() {
    let s = stack_with(
        3,
        Backend::Postgres,
        "signer.hard_delete_destination_on_source_deletion = true\n",
    )
    .await;
    s.set_status(&s.editor, "to-review").await;
    s.set_status(&s.reviewer, "to-sign").await;
    eventually(60, "signed", || async {
        (s.source().await["status"] == "signed").then_some(())
    })
    .await;
    s.verified("main", 3);
    s.editor
        .ok(Method::DELETE, "/buckets/ws/collections/cfr", None)
        .await;
    // Asked as the service, which owns the preview and destination buckets (others get 403 for what is not there).
    let service = s.editor.as_user(SIGNER.0, SIGNER.1);
    for path in [
        "/buckets/ws-preview/collections/cfr",
        "/buckets/main/collections/cfr",
        "/buckets/main/collections/cfr/records?_since=0",
        "/buckets/ws/groups/cfr-editors",
        "/buckets/ws/groups/cfr-reviewers",
    ] {
        let (status, body) = service.request(Method::GET, path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let cleanup = eventually(60, "the cleanup job", || async {
        let jobs = s.jobs().await;
        let job = jobs.iter().find(|j| j["kind"] == "cleanup")?;
        Some(job["id"].as_str().unwrap().to_owned())
    })
    .await;
    let cleanup = s.api.wait_final(&cleanup, 60).await;
    assert_eq!(cleanup["data"]["kind"], "cleanup", "{cleanup}");
    assert_eq!(cleanup["data"]["state"], "succeeded", "{cleanup}");
    assert!(
        cleanup["data"]["result"]["skipped"]
            .as_str()
            .is_some_and(|why| why.contains("gone")),
        "{cleanup}"
    );
    // Refused while the source existed, the destination's deletion was what the source's deletion did.
    let (editor, _, _, _) = source_with_groups(&s.kinto.url, 1, Some(&s.api)).await;
    s.set_status(&editor, "to-review").await;
    s.set_status(&s.reviewer, "to-sign").await;
    eventually(60, "the new source signed", || async {
        (s.source().await["status"] == "signed").then_some(())
    })
    .await;
    s.verified("main", 1);
}

/// One user in both groups asks for a review and approves it at the same instant, many times: Kinto takes the
/// two requests one after the other, and the approval is refused whichever commits first (not under review yet,
/// or approved by the last editor). Nothing is ever published.
#[tokio::test(flavor = "multi_thread")]
async fn the_requester_never_approves_their_own_review_even_at_once() {
    const ROUNDS: usize = 20;
    let s = stack(3, Backend::Postgres).await;
    for round in 0..ROUNDS {
        let (review, approval) = tokio::join!(
            change(&s.editor, json!({"status": "to-review"})),
            change(&s.editor, json!({"status": "to-sign"})),
        );
        assert_eq!(review, (200, None), "round {round}");
        assert!(
            matches!(
                &approval,
                (400, Some(m)) if m == "Collection not under review"
            ) || matches!(&approval, (403, Some(m)) if m == "Last editor cannot review"),
            "round {round}: {approval:?}"
        );
        // Declined, ready for the next round.
        assert_eq!(
            change(&s.editor, json!({"status": "work-in-progress"})).await,
            (200, None)
        );
    }
    assert!(
        s.editor.records("main", "cfr").await.is_empty(),
        "nothing was published"
    );
    assert!(
        s.jobs().await.iter().all(|j| j["kind"] == "review"),
        "no approval was queued"
    );
}

/// The same steps against kinto-signer 8.1.1 (signing in Kinto) and against Kinto with our plugin and the
/// service, both on PostgreSQL: every answer is the same status code and message, except the float refusal,
/// whose wording kinto-remote-settings changed since 8.1.1 (we follow kinto-remote-settings).
#[tokio::test(flavor = "multi_thread")]
async fn answers_match_kinto_signer_side_by_side() {
    let (db, ours_db, reference_db) = (
        TestDb::create().await,
        TestDb::create().await,
        TestDb::create().await,
    );
    let dir = TempDir::new("side-by-side");
    let api_port = free_port();
    let ours = KintoServer::launch(
        &dir.0,
        Install::Ours,
        &Storage::Postgres(ours_db.url.clone()),
        &(webhook_settings(
            &format!("http://127.0.0.1:{api_port}/v1/webhooks/kinto"),
            SECRET,
            "ws",
        ) + &signoff_settings(RESOURCES, true)),
    )
    .await;
    let setup = Setup::new(
        &db.url,
        &ours.url,
        RESOURCES,
        &format!("to_review_enabled = true\n{FAST_QUEUE}[api]\nwebhook_secret = \"{SECRET}\"\n[feed]\nenabled = false\n"),
    );
    let _api = Api::start_on(&setup, 2, api_port).await;
    let reference = KintoServer::launch(
        &dir.0,
        Install::Reference,
        &Storage::Postgres(reference_db.url.clone()),
        &(reference_signer_settings(RESOURCES, &setup.private_key, &setup.public_key)
            + "kinto.signer.to_review_enabled = true\nkinto.signer.group_check_enabled = true\n\
               kinto.signer.editors_group = {collection_id}-editors\n\
               kinto.signer.reviewers_group = {collection_id}-reviewers\n"),
    )
    .await;

    let (mut answers, mut groups, mut firsts, mut deletions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for kinto in [&ours, &reference] {
        // Preview and destination buckets anyone may write, so that deleting one meets the workflow's rule and
        // not Kinto's permissions (kinto-signer creates them as its own user).
        for bucket in ["ws-preview", "main"] {
            KintoServer::admin(&kinto.url)
                .ok(
                    Method::PUT,
                    &format!("/buckets/{bucket}"),
                    Some(json!({"permissions": {"write": ["system.Authenticated"]}})),
                )
                .await;
        }
        let (editor, _, reviewer_id, _) = source_with_groups(&kinto.url, 4, None).await;
        let reviewer = editor.as_user("reviewer", "reviewer-pw");
        let outsider = editor.as_user("eve", "eve-pw");
        let settled = || async {
            eventually(60, "the status to settle", || async {
                let status = editor.collection("ws", "cfr").await.unwrap()["status"].clone();
                (!matches!(
                    status.as_str(),
                    Some("to-sign" | "to-resign" | "to-rollback")
                ))
                .then_some(())
            })
            .await
        };
        let steps: Vec<(&KintoAdmin, Value)> = vec![
            (&reviewer, json!({"status": "to-sign"})),
            (&outsider, json!({"status": "to-review"})),
            (&editor, json!({"status": "signed"})),
            (&editor, json!({"status": "bogus"})),
            (&editor, json!({"status": null})),
            (&editor, json!({"last_signature_by": "account:x"})),
            (&editor, json!({"status": "to-review"})),
            (&editor, json!({"status": "to-sign"})),
            (
                &editor,
                json!({"status": "to-sign", "last_review_request_by": reviewer_id}),
            ),
            (
                &reviewer,
                json!({"status": "to-sign", "last_review_request_by": "account:x"}),
            ),
            (&outsider, json!({"status": "to-sign"})),
            (&reviewer, json!({"status": "to-sign"})),
            (&reviewer, json!({"status": "to-sign"})),
            (&editor, json!({"status": "to-rollback"})),
            (&editor, json!({"status": "to-resign"})),
        ];
        let mut mine = Vec::new();
        for (who, data) in steps {
            mine.push((data.clone(), change(who, data).await));
            settled().await;
        }
        let (status, _) = editor
            .request(
                Method::PUT,
                "/buckets/ws/collections/cfr/records/rec-float",
                Some(json!({"data": {"n": 1.5}})),
            )
            .await;
        mine.push((json!("a float"), (status, None)));
        let (status, body) = editor
            .request(Method::DELETE, "/buckets/main/collections/cfr", None)
            .await;
        mine.push((
            json!("delete the destination"),
            (status, body["message"].as_str().map(str::to_owned)),
        ));
        answers.push(mine);

        // A new source collection gets its groups, as kinto-signer makes them.
        editor
            .ok(
                Method::PUT,
                "/buckets/ws/collections/other",
                Some(json!({"data": {}})),
            )
            .await;
        let editor_id = editor.principal().await;
        let mut made = Vec::new();
        for group in ["other-editors", "other-reviewers"] {
            let body = editor
                .ok(Method::GET, &format!("/buckets/ws/groups/{group}"), None)
                .await;
            made.push(json!([
                group,
                body["data"]["members"],
                body["permissions"]["write"]
            ]));
        }
        let collection = editor
            .ok(Method::GET, "/buckets/ws/collections/other", None)
            .await;
        let mut writers: Vec<Value> = collection["permissions"]["write"]
            .as_array()
            .unwrap()
            .clone();
        writers.sort_by_key(|w| w.to_string());
        made.push(json!(writers));
        assert_eq!(made[0], json!(["other-editors", [editor_id], [editor_id]]));
        groups.push(made);

        // ... and is signed as it is (empty, unreviewed): preview and destination verify, the source is `signed`
        // with its signer and no reviewer, as kinto-signer does in the creating request.
        let first = eventually(60, "the new source signed", || async {
            let source = editor.collection("ws", "other").await?;
            (source["status"] == "signed").then_some(source)
        })
        .await;
        for bucket in ["ws-preview", "main"] {
            setup.assert_verifies(&kinto.url, bucket, "other", 0);
        }
        firsts.push(json!({
            "status": first["status"],
            "signed by the creator": first["last_signature_by"] == json!(editor_id),
            "signature date": first["last_signature_date"].is_string(),
            "review": [&first["last_review_by"], &first["last_review_request_by"]],
        }));

        // Deleting the source empties its preview and destination, leaving a tombstone per record, and signs
        // them: clients that synced remove what they hold, and what is left verifies.
        let signed_before = editor.collection("main", "cfr").await.unwrap()["signature"].clone();
        editor
            .ok(Method::DELETE, "/buckets/ws/collections/cfr", None)
            .await;
        let mut left = Vec::new();
        for bucket in ["ws-preview", "main"] {
            eventually(60, &format!("{bucket}/cfr emptied and signed"), || async {
                let now = editor.collection(bucket, "cfr").await?;
                (editor.records(bucket, "cfr").await.is_empty()
                    && now["signature"] != signed_before)
                    .then_some(())
            })
            .await;
            setup.assert_verifies(&kinto.url, bucket, "cfr", 0);
            let tombstones = editor
                .ok(
                    Method::GET,
                    &format!("/buckets/{bucket}/collections/cfr/records?_since=0"),
                    None,
                )
                .await["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["deleted"] == true)
                .count();
            left.push((bucket, tombstones));
        }
        deletions.push(left);
    }
    assert_eq!(
        groups[0], groups[1],
        "groups: ours (left) and kinto-signer 8.1.1 (right)"
    );
    assert_eq!(
        firsts[0], firsts[1],
        "a new source: ours (left) and kinto-signer 8.1.1 (right)"
    );
    assert_eq!(firsts[0]["signed by the creator"], true, "{firsts:?}");
    assert_eq!(
        deletions[0], deletions[1],
        "after the source's deletion: ours (left) and kinto-signer 8.1.1 (right)"
    );
    assert!(deletions[0].iter().all(|(_, n)| *n == 4), "{deletions:?}");
    // kinto-remote-settings (not 8.1.1) also deletes the source's groups.
    for group in ["cfr-editors", "cfr-reviewers"] {
        let (status, _) = KintoServer::admin(&ours.url)
            .request(Method::GET, &format!("/buckets/ws/groups/{group}"), None)
            .await;
        assert_eq!(status, 404, "{group} goes with its source collection");
    }
    let (_, root) = KintoServer::admin(&ours.url)
        .request(Method::GET, "/", None)
        .await;
    let capability = root["capabilities"]["signer"].as_object().unwrap();
    let mut keys: Vec<&str> = capability.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "description",
            "editors_group",
            "group_check_enabled",
            "plugin_userid",
            "resources",
            "reviewers_group",
            "to_review_enabled",
            "url",
            "version"
        ],
        "kinto-remote-settings' capability fields"
    );
    assert_eq!(
        capability["resources"],
        json!([{
            "source": {"bucket": "ws", "collection": null},
            "preview": {"bucket": "ws-preview", "collection": null},
            "destination": {"bucket": "main", "collection": null}
        }])
    );
    assert_eq!(
        capability["plugin_userid"],
        basicauth_userid(SIGNER.0, SIGNER.1)
    );
    assert_eq!(
        answers[0], answers[1],
        "ours (left) and kinto-signer 8.1.1 (right)"
    );
    assert!(
        answers[0]
            .iter()
            .filter(|(_, (status, _))| *status >= 400)
            .count()
            >= 12,
        "the steps exercise the refusals: {:?}",
        answers[0]
    );
}

/// For tooling written against kinto-signer, which signed inside the request: with the listener's `wait_seconds`,
/// or a request's own `Prefer: wait=N`, a status change answers once its job finished, so what is read right
/// after is signed; `Signer-Jobs` says how the jobs ended.
#[tokio::test(flavor = "multi_thread")]
async fn a_status_change_can_answer_once_its_job_finished() {
    let s = stack_with(
        6,
        Backend::Postgres,
        "kinto.event_listeners.signer.wait_seconds = 30\n",
    )
    .await;
    let patch = |who: &KintoAdmin,
                 status: &'static str,
                 headers: &'static [(&'static str, &'static str)]| {
        let who = who.clone();
        async move {
            who.send(
                Method::PATCH,
                "/buckets/ws/collections/cfr",
                Some(json!({"data": {"status": status}})),
                headers,
            )
            .await
        }
    };
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };

    let review = patch(&s.editor, "to-review", &[]).await;
    assert_eq!(review.status(), 200);
    assert_eq!(header(&review, "signer-jobs").as_deref(), Some("succeeded"));
    assert_eq!(
        header(&review, "preference-applied"),
        None,
        "the setting, not the request, asked"
    );
    s.verified("ws-preview", 6);

    // A request's own preference; no polling anywhere below.
    let approval = patch(&s.reviewer, "to-sign", &[("Prefer", "wait=30")]).await;
    assert_eq!(
        header(&approval, "signer-jobs").as_deref(),
        Some("succeeded")
    );
    assert_eq!(
        header(&approval, "preference-applied").as_deref(),
        Some("wait=30")
    );
    assert_eq!(s.source().await["status"], "signed");
    s.verified("main", 6);

    // `Prefer: wait=0` opts a request out of the setting.
    s.editor
        .put_records("ws", "cfr", &[json!({"id": "later", "title": "new"})])
        .await;
    let quick = patch(&s.editor, "to-review", &[("Prefer", "wait=0")]).await;
    assert_eq!(
        (quick.status().as_u16(), header(&quick, "signer-jobs")),
        (200, None)
    );
    assert_eq!(s.nth_job(3).await["data"]["state"], "succeeded");
    let _ = &s.autograph;
}

/// What a helper program printed, standard output then standard error.
fn printed(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The flows of Mozilla's signer browser tests (full workflow, rollback, refresh, cannot skip to-review, same
/// editor cannot review, re-review after cancel), driven by kinto-http from `tests/python/rs_signer_flow.py`.
async fn mozilla_signer_flows(mode: &str, kinto_settings: &str) {
    let s = stack_with(1, Backend::Postgres, kinto_settings).await;
    let output = std::process::Command::new(signer_e2e::venv_bin("python"))
        .arg(signer_e2e::root().join("tests/python/rs_signer_flow.py"))
        .args([&s.kinto.url, "x5u", mode])
        .output()
        .expect("the flows run");
    let printed = printed(&output);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("7 passed, 0 failed"), "{printed}");
    let _ = &s.autograph;
}

#[tokio::test(flavor = "multi_thread")]
async fn mozilla_signer_flows_with_synchronous_answers() {
    mozilla_signer_flows("sync", "kinto.event_listeners.signer.wait_seconds = 30\n").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mozilla_signer_flows_each_step_waiting_for_its_job() {
    mozilla_signer_flows("poll", "").await;
}

/// kinto-admin's signoff UI (6.1.1, as `make browser-tools` unpacks it, served by Kinto's admin plugin) in
/// Debian's Chromium (`tests/browser/signoff.mjs`): the editor requests a review, the reviewer approves it, each in
/// their own browser session with the buttons a person uses. What they did must reach Kinto as the same review
/// (who asked, who approved, the comment) and the service must publish it signed.
#[tokio::test(flavor = "multi_thread")]
async fn kinto_admin_requests_a_review_and_another_user_approves_it() {
    let root = signer_e2e::root();
    let assets = root.join(".tools/kinto-admin");
    assert!(
        assets.join("index.html").exists(),
        "{} is missing: run `make browser-tools` (make test does it)",
        assets.display()
    );
    let s = stack_with(
        3,
        Backend::Postgres,
        &format!(
            "kinto.includes = kinto.plugins.admin\nkinto.admin_assets_path = {}\n\
             kinto.event_listeners.signer.wait_seconds = 30\n",
            assets.display()
        ),
    )
    .await;
    // Kept after the test: the screenshot of a failed step.
    let screenshots = root.join("target/kinto-admin-screenshots");
    std::fs::create_dir_all(&screenshots).expect("can create the screenshots directory");
    let output = std::process::Command::new("node")
        .current_dir(root.join("tests/browser"))
        .arg("signoff.mjs")
        .arg(format!("{}/admin/", s.kinto.url))
        .args(["ws", "cfr", "editor:editor-pw", "reviewer:reviewer-pw"])
        .arg(&screenshots)
        .output()
        .expect("node runs the browser test");
    let printed = printed(&output);
    assert!(
        output.status.success() && printed.contains("signoff: done"),
        "{printed}\n(screenshot of the failed step: {})",
        screenshots.join("failed.png").display()
    );

    let source = s.source().await;
    assert_eq!(source["status"], "signed", "{source}");
    assert_eq!(source["last_review_request_by"], s.editor_id.as_str());
    assert_eq!(source["last_review_by"], s.reviewer_id.as_str());
    assert_eq!(
        source["last_editor_comment"],
        "Please check the new records."
    );
    s.verified("ws-preview", 3);
    s.verified("main", 3);
}
