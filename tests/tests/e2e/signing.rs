//! A collection goes in through the API or the webhook; the destination comes out equal to the source and signed
//! so that an independent verifier (Python canonicaljson-rs + cryptography) accepts it.

use serde_json::{json, Value};
use signer_e2e::db::TestDb;
use signer_e2e::kinto::KintoServer;
use signer_e2e::records::sample_records;
use signer_e2e::service::{Api, Setup};
use signer_e2e::{by_id_without_timestamps, FAST_QUEUE};

async fn assert_destination_mirrors_source(
    kinto: &KintoServer,
    source: (&str, &str),
    destination: (&str, &str),
) {
    let editor = kinto.editor();
    let src = by_id_without_timestamps(&editor.records(source.0, source.1).await);
    let dst = by_id_without_timestamps(&editor.records(destination.0, destination.1).await);
    assert_eq!(src.len(), dst.len(), "record counts differ");
    assert_eq!(src, dst, "destination records differ from the source");
}

#[tokio::test(flavor = "multi_thread")]
async fn signs_through_the_api_then_resigns_through_the_webhook_after_edits() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let editor = kinto.editor();
    let records = sample_records(300, 7);
    let metadata = json!({"status": "work-in-progress", "displayFields": ["title"], "sort": "-title", "secret": "not copied"});
    editor
        .create_source("workspace", "cfr", metadata, &records)
        .await;
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        "/buckets/workspace/collections/cfr -> /buckets/main/collections/cfr",
        FAST_QUEUE,
    );
    let api = Api::start(&setup, 2).await;

    let job = api.wait_final(&api.sign("workspace/cfr").await, 60).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    assert_eq!(job["data"]["attempt"], 1);
    assert_eq!(job["data"]["result"]["destination"]["created"], 300);
    assert_destination_mirrors_source(&kinto, ("workspace", "cfr"), ("main", "cfr")).await;
    let verdict = setup.assert_verifies(&kinto.url, "main", "cfr", 300);
    assert_eq!(
        job["data"]["result"]["destination"]["timestamp"],
        verdict["timestamp"]
    );

    let source = editor.collection("workspace", "cfr").await.unwrap();
    assert_eq!(source["status"], "signed");
    assert_eq!(source["last_signature_by"], "plugin:kinto-signer");
    assert!(
        chrono::DateTime::parse_from_rfc3339(source["last_signature_date"].as_str().unwrap())
            .is_ok()
    );
    let destination = editor.collection("main", "cfr").await.unwrap();
    assert_eq!(destination["displayFields"], json!(["title"]));
    assert_eq!(destination["sort"], "-title");
    assert!(destination.get("secret").is_none() && destination.get("status").is_none());
    assert_eq!(destination["signature"]["mode"], "p384ecdsa");
    assert_eq!(destination["signatures"], json!([destination["signature"]]));
    let anonymous = reqwest::get(format!(
        "{}/buckets/main/collections/cfr/records?_limit=1",
        kinto.url
    ))
    .await
    .unwrap();
    assert_eq!(
        anonymous.status(),
        200,
        "clients read the destination anonymously"
    );

    // Edit the source: 10 updates, 5 deletions, 3 creations; then ask for a signature as an editor would.
    let mut changed: Vec<Value> = records[..10].to_vec();
    for r in &mut changed {
        r["title"] = json!(format!("updated ✓ {}", r["id"]));
    }
    changed.extend(sample_records(303, 8).into_iter().skip(300));
    editor.put_records("workspace", "cfr", &changed).await;
    for r in &records[290..295] {
        editor
            .delete_record("workspace", "cfr", r["id"].as_str().unwrap())
            .await;
    }
    let old = editor.collection("workspace", "cfr").await.unwrap();
    let new = editor
        .patch_collection("workspace", "cfr", json!({"status": "to-sign"}))
        .await;
    let event = json!({
        "action": "update", "resource_name": "collection", "uri": "/buckets/workspace/collections/cfr",
        "bucket_id": "workspace", "collection_id": "cfr", "user_id": "basicauth:editor-id",
        "timestamp": new["last_modified"], "impacted_objects": [{"old": old, "new": new}],
    });
    let (status, headers, body) = api.post("/v1/webhooks/kinto", &event.to_string()).await;
    assert_eq!(status, 202, "{body}");
    let id = body["data"]["id"].as_str().unwrap();
    assert_eq!(headers["location"], format!("/v1/jobs/{id}").as_str());
    let job = api.wait_final(id, 60).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    let result = &job["data"]["result"]["destination"];
    assert_eq!(
        (
            result["created"].clone(),
            result["updated"].clone(),
            result["deleted"].clone()
        ),
        (json!(3), json!(10), json!(5))
    );
    assert_destination_mirrors_source(&kinto, ("workspace", "cfr"), ("main", "cfr")).await;
    setup.assert_verifies(&kinto.url, "main", "cfr", 298);
    let source = editor.collection("workspace", "cfr").await.unwrap();
    assert_eq!(source["status"], "signed");
    assert_eq!(
        source["last_signature_by"], "basicauth:editor-id",
        "the webhook's user is recorded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signs_on_the_embedded_store_with_no_database_configured() {
    let kinto = KintoServer::start().await;
    kinto
        .editor()
        .create_source("ws", "cfr", json!({}), &sample_records(120, 4))
        .await;
    let setup = Setup::new("", &kinto.url, "ws/cfr -> prod/cfr", FAST_QUEUE);
    let api = Api::start(&setup, 2).await;
    let (_, heartbeat) = api.get("/__heartbeat__").await;
    assert_eq!(heartbeat["database"], true);

    let job = api.wait_final(&api.sign("ws/cfr").await, 60).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    assert!(
        setup.dir.0.join("signer.db").exists(),
        "jobs live in the data directory"
    );
    assert_destination_mirrors_source(&kinto, ("ws", "cfr"), ("prod", "cfr")).await;
    setup.assert_verifies(&kinto.url, "prod", "cfr", 120);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_and_all_deleted_collections_sign_and_verify() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let editor = kinto.editor();
    editor.create_source("ws", "empty", json!({}), &[]).await;
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        "/buckets/ws -> /buckets/prod",
        FAST_QUEUE,
    );
    let api = Api::start(&setup, 1).await;

    let job = api
        .wait_final(&api.sign("/buckets/ws/collections/empty").await, 60)
        .await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    setup.assert_verifies(&kinto.url, "prod", "empty", 0);

    editor
        .put_records("ws", "empty", &sample_records(2, 1))
        .await;
    let job = api.wait_final(&api.sign("ws/empty").await, 60).await;
    assert_eq!(job["data"]["result"]["destination"]["records"], 2, "{job}");
    for id in ["rec-00000", "rec-00001"] {
        editor.delete_record("ws", "empty", id).await;
    }
    let job = api.wait_final(&api.sign("ws/empty").await, 60).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    assert_eq!(job["data"]["result"]["destination"]["deleted"], 2);
    setup.assert_verifies(&kinto.url, "prod", "empty", 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_float_is_refused_naming_the_record_and_nothing_is_published() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let editor = kinto.editor();
    let mut records = sample_records(5, 3);
    records.push(json!({"id": "price-list", "price": {"eur": 1.5}}));
    editor
        .create_source("ws", "floats", json!({"status": "to-sign"}), &records)
        .await;
    let setup = Setup::new(&db.url, &kinto.url, "ws/floats -> prod/floats", FAST_QUEUE);
    let api = Api::start(&setup, 1).await;

    let job = api.wait_final(&api.sign("ws/floats").await, 60).await;
    assert_eq!(job["data"]["state"], "failed", "{job}");
    assert_eq!(job["data"]["attempt"], 1, "invalid data is not retried");
    let error = job["data"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("\"price-list\"") && error.contains("price.eur") && error.contains("float"),
        "{error}"
    );
    assert!(
        editor.collection("prod", "floats").await.is_none(),
        "nothing was published"
    );
    assert_eq!(
        editor.collection("ws", "floats").await.unwrap()["status"],
        "to-sign",
        "source untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_ignores_other_events_with_a_reason_and_enqueues_nothing() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let setup = Setup::new(&db.url, &kinto.url, "ws/cfr -> prod/cfr", FAST_QUEUE);
    let api = Api::start(&setup, 0).await;
    let cases = [
        (
            json!({"action": "create", "resource_name": "record", "bucket_id": "ws", "collection_id": "cfr", "impacted_objects": [{"new": {"id": "r1"}}]}),
            "record events",
        ),
        (
            json!({"action": "update", "resource_name": "collection", "bucket_id": "ws", "impacted_objects": [{"old": {"id": "cfr", "status": "to-sign"}, "new": {"id": "cfr", "status": "signed"}}]}),
            "asks for nothing",
        ),
        (
            json!({"action": "update", "resource_name": "collection", "bucket_id": "other", "impacted_objects": [{"old": {"id": "x"}, "new": {"id": "x", "status": "to-sign"}}]}),
            "not a configured source",
        ),
    ];
    for (event, reason) in cases {
        let (status, _, body) = api.post("/v1/webhooks/kinto", &event.to_string()).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["ignored"][0]["reason"]
                .as_str()
                .unwrap()
                .contains(reason),
            "{body}"
        );
        assert_eq!(body["jobs"], json!([]));
    }
    let (_, listing) = api.get("/v1/jobs").await;
    assert_eq!(listing["data"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preview_is_signed_too_and_poll_only_mode_finds_the_job() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    kinto
        .editor()
        .create_source("ws", "cfr", json!({"sort": "id"}), &sample_records(80, 12))
        .await;
    // No LISTEN (PgBouncer in transaction mode): the poll interval alone must find the job.
    let extra = format!("{FAST_QUEUE}listen = false\n");
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        "/buckets/ws -> /buckets/preview -> /buckets/prod",
        &extra,
    );
    let api = Api::start(&setup, 1).await;

    let job = api.wait_final(&api.sign("ws/cfr").await, 60).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    assert_eq!(job["data"]["preview"], "/buckets/preview/collections/cfr");
    assert_eq!(job["data"]["result"]["preview"]["records"], 80, "{job}");
    for bucket in ["preview", "prod"] {
        assert_destination_mirrors_source(&kinto, ("ws", "cfr"), (bucket, "cfr")).await;
        setup.assert_verifies(&kinto.url, bucket, "cfr", 80);
        assert_eq!(
            kinto.editor().collection(bucket, "cfr").await.unwrap()["sort"],
            "id"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batched_webhook_event_enqueues_each_collection_that_asked() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        "/buckets/ws -> /buckets/prod",
        FAST_QUEUE,
    );
    let api = Api::start(&setup, 0).await;
    let event = json!({
        "action": "update", "resource_name": "collection", "bucket_id": "ws", "user_id": "account:alice",
        "impacted_objects": [
            {"old": {"id": "a", "status": "work-in-progress"}, "new": {"id": "a", "status": "to-sign"}},
            {"old": {"id": "b", "status": "signed"}, "new": {"id": "b", "status": "to-sign"}},
            {"old": {"id": "c", "status": "signed"}, "new": {"id": "c", "status": "work-in-progress"}},
        ],
    });
    let (status, _, body) = api.post("/v1/webhooks/kinto", &event.to_string()).await;
    assert_eq!(status, 202, "{body}");
    let resources: Vec<&str> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["data"]["resource"].as_str().unwrap())
        .collect();
    assert_eq!(
        resources,
        ["/buckets/ws/collections/a", "/buckets/ws/collections/b"]
    );
    assert_eq!(body["ignored"][0]["uri"], "/buckets/ws/collections/c");
    assert_eq!(body["jobs"][0]["data"]["requested_by"], "account:alice");
}

/// A worker keeps the listings it signed, and its next job of the collection fetches only what changed since
/// (`_since`, here with no overlap): edits, deletions and creations arrive; a record removed from the
/// destination behind the service's back is put back; a source deleted and recreated (its records gone without
/// tombstones) is caught by the record count and listed in full; a destination deleted is created again.
#[tokio::test(flavor = "multi_thread")]
async fn kept_listings_follow_every_change_and_a_recreated_source_is_listed_in_full() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let editor = kinto.editor();
    let records = sample_records(120, 3);
    editor.create_source("ws", "c", json!({}), &records).await;
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        "/buckets/ws/collections/c -> /buckets/prod/collections/c",
        FAST_QUEUE,
    );
    let api = Api::start_env(
        &setup,
        1,
        signer_e2e::free_port(),
        &[("SIGNER_KINTO__SOURCE__SINCE_OVERLAP_SECONDS", "0")],
    )
    .await;
    let sign = || async {
        let job = api.wait_final(&api.sign("ws/c").await, 60).await;
        assert_eq!(job["data"]["state"], "succeeded", "{job}");
        let d = &job["data"]["result"]["destination"];
        (
            d["created"].clone(),
            d["updated"].clone(),
            d["deleted"].clone(),
        )
    };
    assert_eq!(sign().await, (json!(120), json!(0), json!(0)));

    let mut changed: Vec<Value> = records[..5].to_vec();
    for r in &mut changed {
        r["title"] = json!("changed since the last signature");
    }
    changed.extend(sample_records(122, 4).into_iter().skip(120));
    editor.put_records("ws", "c", &changed).await;
    for r in &records[100..103] {
        editor
            .delete_record("ws", "c", r["id"].as_str().unwrap())
            .await;
    }
    assert_eq!(sign().await, (json!(2), json!(5), json!(3)));
    assert_destination_mirrors_source(&kinto, ("ws", "c"), ("prod", "c")).await;
    setup.assert_verifies(&kinto.url, "prod", "c", 119);

    let (user, password) = signer_e2e::kinto::SIGNER;
    editor
        .as_user(user, password)
        .delete_record("prod", "c", "rec-00007")
        .await;
    assert_eq!(sign().await, (json!(1), json!(0), json!(0)));
    assert_destination_mirrors_source(&kinto, ("ws", "c"), ("prod", "c")).await;
    setup.assert_verifies(&kinto.url, "prod", "c", 119);

    editor
        .ok(reqwest::Method::DELETE, "/buckets/ws/collections/c", None)
        .await;
    let fresh: Vec<Value> = sample_records(10, 5)
        .into_iter()
        .map(|mut r| {
            r["id"] = json!(format!("new-{}", r["id"].as_str().unwrap()));
            r
        })
        .collect();
    editor.create_source("ws", "c", json!({}), &fresh).await;
    assert_eq!(sign().await, (json!(10), json!(0), json!(119)));
    assert_destination_mirrors_source(&kinto, ("ws", "c"), ("prod", "c")).await;
    setup.assert_verifies(&kinto.url, "prod", "c", 10);
    assert!(
        api.process.log_text().contains("changes did not add up"),
        "the recreated source was listed in full"
    );

    // The destination's kept listing says it existed; deleted behind the service's back, it is created again and
    // filled in full instead of failing the job.
    editor
        .as_user(user, password)
        .ok(reqwest::Method::DELETE, "/buckets/prod/collections/c", None)
        .await;
    assert_eq!(sign().await, (json!(10), json!(0), json!(0)));
    assert_destination_mirrors_source(&kinto, ("ws", "c"), ("prod", "c")).await;
    setup.assert_verifies(&kinto.url, "prod", "c", 10);
    assert!(
        api.process
            .log_text()
            .contains("kept listing not refreshed: listing in full"),
        "the deleted destination's kept listing was given up"
    );
}
