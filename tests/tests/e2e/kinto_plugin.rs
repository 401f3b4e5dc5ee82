//! The plugin's endpoints (`deploy/kinto/kinto_signer_webhook/push.py`) in a real Kinto. The bulk endpoint
//! refuses what Kinto would refuse and its writes are Kinto's own (fresh timestamps, tombstones, history
//! entries); the service writes through it when the server offers it, through `/v1/batch` otherwise, and falls
//! back when a server stops offering it. The in-flight endpoint lets a refresh find a write that committed after
//! a listing with an older timestamp, however long its transaction lasted.

use reqwest::Method;
use serde_json::{json, Value};
use signer_e2e::db::TestDb;
use signer_e2e::kinto::{Install, KintoAdmin, KintoServer, Storage, SIGNER};
use signer_e2e::records::sample_records;
use signer_e2e::service::{Api, Setup, TempDir};
use signer_e2e::{by_id_without_timestamps, metric, FAST_QUEUE};

const PUSH: &str = "/buckets/dst/collections/c/signer-push";

/// A POST of `body` (raw text) to the bulk endpoint, as `auth` (anonymous when `None`).
async fn push(kinto: &KintoServer, auth: Option<(&str, &str)>, body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{PUSH}", kinto.url))
        .header("Content-Type", "application/json")
        .body(body.to_owned());
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.expect("Kinto reachable");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A records listing of `collection`, asking for the plugin's `Signer-Visible-Before` header when `ask`: the
/// status and the header's value.
async fn listing_visible(
    kinto: &KintoServer,
    auth: Option<(&str, &str)>,
    collection: &str,
    ask: bool,
) -> (u16, Option<i64>) {
    let mut request = reqwest::Client::new().get(format!("{}{collection}/records", kinto.url));
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    if ask {
        request = request.header("Signer-Visible", "1");
    }
    let response = request.send().await.expect("Kinto reachable");
    let visible = response
        .headers()
        .get("signer-visible-before")
        .map(|v| v.to_str().unwrap().parse().expect("an instant"));
    (response.status().as_u16(), visible)
}

fn ids(records: &[Value]) -> Vec<&str> {
    records.iter().map(|r| r["id"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bulk_endpoint_refuses_what_kinto_would_and_writes_what_kinto_would() {
    let dir = TempDir::new("kinto-bulk");
    let kinto =
        KintoServer::start_with_settings(&dir.0, "kinto.includes = kinto.plugins.history\n").await;
    let signer = kinto.editor().as_user(SIGNER.0, SIGNER.1);
    let info = signer.ok(Method::GET, "/", None).await;
    assert!(
        info["capabilities"].get("signer-push").is_some(),
        "announced: {info}"
    );
    assert!(
        info["capabilities"].get("history").is_some(),
        "both includes loaded"
    );
    signer.ok(Method::PUT, "/buckets/dst", None).await;

    let records = r#"{"put": [{"id": "a", "n": 1}]}"#;
    let (status, body) = push(&kinto, Some(SIGNER), records).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["message"], "/buckets/dst/collections/c does not exist");
    signer
        .ok(Method::PUT, "/buckets/dst/collections/c", None)
        .await;
    let visible = "/buckets/dst/collections/c/signer-visible";
    let (status, body) = kinto
        .editor()
        .as_user("", "")
        .request(Method::GET, visible, None)
        .await;
    assert_eq!(status, 401, "anonymous: {body}");
    let (status, body) = kinto
        .editor()
        .as_user("mallory", "pw")
        .request(Method::GET, visible, None)
        .await;
    assert_eq!(status, 403, "no read permission: {body}");
    let public = "/buckets/dst/collections/public";
    signer
        .ok(
            Method::PUT,
            public,
            Some(json!({"permissions": {"read": ["system.Everyone"]}})),
        )
        .await;
    let (status, body) = kinto
        .editor()
        .as_user("", "")
        .request(Method::GET, &format!("{public}/signer-visible"), None)
        .await;
    assert_eq!(status, 200, "whoever may read the records may ask: {body}");
    let (status, body) = kinto
        .editor()
        .as_user("", "")
        .request(
            Method::POST,
            &format!("{public}/signer-push"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 401, "but not write them: {body}");
    let now = chrono::Utc::now().timestamp_millis();
    let visible_before = signer.ok(Method::GET, visible, None).await["visible_before"]
        .as_i64()
        .expect("an instant");
    assert!(
        (visible_before - now).abs() < 5_000,
        "the memory backend shows writes as they are stamped: {visible_before} vs {now}"
    );
    assert_eq!(
        info["capabilities"]["signer-push"]["visible_in_listings"], true,
        "{info}"
    );
    let collection = "/buckets/dst/collections/c";
    let (status, in_listing) = listing_visible(&kinto, Some(SIGNER), collection, true).await;
    assert_eq!(status, 200);
    let in_listing = in_listing.expect("a listing that asks carries the answer");
    assert!(
        (visible_before..visible_before + 5_000).contains(&in_listing),
        "the same answer, asked later: {in_listing} vs {visible_before}"
    );
    assert_eq!(
        listing_visible(&kinto, Some(SIGNER), collection, false).await,
        (200, None),
        "only when asked"
    );
    assert_eq!(
        listing_visible(&kinto, Some(("mallory", "pw")), collection, true).await,
        (403, None),
        "not to who may not read the records"
    );

    let (status, body) = push(&kinto, None, records).await;
    assert_eq!(status, 401, "anonymous: {body}");
    assert_eq!(body["errno"], 104);
    let (status, body) = push(&kinto, Some(("mallory", "pw")), records).await;
    assert_eq!(status, 403, "no write permission: {body}");
    assert_eq!(
        body["message"],
        "/buckets/dst/collections/c: write permission required"
    );
    for (bad, problem) in [
        ("{not json", "body is not JSON"),
        (r#"["a"]"#, "body must be an object"),
        (r#"{"put": {"id": "a"}}"#, "put must be a list of records"),
        (r#"{"delete": [1]}"#, "delete must be a list of record ids"),
        (r#"{"put": [{"n": 1}]}"#, "invalid record id: None"),
        (r#"{"put": [{"id": "a b"}]}"#, "invalid record id: 'a b'"),
        (
            r#"{"put": [{"id": "a"}], "delete": ["a"]}"#,
            "record a written twice",
        ),
    ] {
        let (status, body) = push(&kinto, Some(SIGNER), bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["errno"], 107, "{bad}: {body}");
        assert_eq!(body["details"][0]["description"], problem, "{bad}: {body}");
    }
    assert!(
        signer.records("dst", "c").await.is_empty(),
        "refused calls wrote nothing"
    );

    let (status, body) = push(
        &kinto,
        Some(SIGNER),
        r#"{"put": [{"id": "a", "n": 1, "last_modified": 5}, {"id": "b", "title": "ünï ✓"}, {"id": "c", "n": 3}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["written"].clone(), body["deleted"].clone()),
        (json!(3), json!(0))
    );
    let first = body["timestamp"].as_i64().unwrap();
    let stored = signer.records("dst", "c").await;
    assert_eq!(
        by_id_without_timestamps(&stored),
        by_id_without_timestamps(&[
            json!({"id": "a", "n": 1}),
            json!({"id": "b", "title": "ünï ✓"}),
            json!({"id": "c", "n": 3})
        ])
    );
    assert!(
        stored.iter().all(|r| r["last_modified"].as_i64() > Some(5)),
        "the server assigns timestamps: {stored:?}"
    );

    let (status, body) = push(
        &kinto,
        Some(SIGNER),
        r#"{"put": [{"id": "a", "n": 2}], "delete": ["b", "never-there"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["written"].clone(), body["deleted"].clone()),
        (json!(1), json!(1))
    );
    assert!(body["timestamp"].as_i64().unwrap() > first);
    let (_, changes) = signer
        .request(
            Method::GET,
            &format!("/buckets/dst/collections/c/records?_since={first}"),
            None,
        )
        .await;
    let mut changed = changes["data"].as_array().unwrap().clone();
    changed.sort_by(|x, y| x["id"].as_str().cmp(&y["id"].as_str()));
    assert_eq!(ids(&changed), ["a", "b"], "{changes}");
    assert_eq!(changed[0]["n"], 2);
    assert_eq!(
        changed[1]["deleted"], true,
        "a tombstone for clients: {changes}"
    );

    // Each write went through Kinto's events, as its own views' writes do: the history plugin saw them all.
    let history = signer
        .ok(
            Method::GET,
            "/buckets/dst/history?resource_name=record&_sort=last_modified",
            None,
        )
        .await;
    let mut entries: Vec<(&str, &str)> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["record_id"].as_str().unwrap(),
            )
        })
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            ("create", "a"),
            ("create", "b"),
            ("create", "c"),
            ("delete", "b"),
            ("update", "a")
        ],
        "{history}"
    );
    let signer_id = signer.principal().await;
    assert!(
        history["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user_id"] == signer_id.as_str()),
        "{history}"
    );
}

/// Signs `ws/c` (1,500 records, then 10 updated and 5 deleted) with an API running one worker that pushes
/// `bulk_push_size = 400`; returns the API (for its metrics) once both jobs succeeded and verified.
async fn sign_twice(kinto: &KintoServer, db: &TestDb) -> (Api, Setup) {
    let editor = kinto.editor();
    let records = sample_records(1500, 21);
    editor.create_source("ws", "c", json!({}), &records).await;
    let setup = Setup::new(&db.url, &kinto.url, "ws/c -> prod/c", FAST_QUEUE);
    let api = Api::start_env(
        &setup,
        1,
        signer_e2e::free_port(),
        &[("SIGNER_KINTO__SOURCE__BULK_PUSH_SIZE", "400")],
    )
    .await;
    let job = api.wait_final(&api.sign("ws/c").await, 120).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    assert_eq!(job["data"]["result"]["destination"]["created"], 1500);
    setup.assert_verifies(&kinto.url, "prod", "c", 1500);

    let mut changed = records[..10].to_vec();
    for r in &mut changed {
        r["title"] = json!("changed ✓");
    }
    editor.put_records("ws", "c", &changed).await;
    for r in &records[100..105] {
        editor
            .delete_record("ws", "c", r["id"].as_str().unwrap())
            .await;
    }
    let job = api.wait_final(&api.sign("ws/c").await, 120).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    let result = &job["data"]["result"]["destination"];
    assert_eq!(
        (result["updated"].clone(), result["deleted"].clone()),
        (json!(10), json!(5))
    );
    setup.assert_verifies(&kinto.url, "prod", "c", 1495);
    assert_eq!(
        by_id_without_timestamps(&editor.records("ws", "c").await),
        by_id_without_timestamps(&editor.records("prod", "c").await)
    );
    (api, setup)
}

async fn copied(api: &Api, via: &str) -> Option<f64> {
    metric(
        &api.metrics().await,
        "signer_records_copied_total",
        &[("via", via)],
    )
}

/// Both signs of `sign_twice` on `kinto` went through `via` alone.
async fn assert_pushed_via(kinto: KintoServer, via: &str, not: &str) {
    let db = TestDb::create().await;
    let (api, _setup) = sign_twice(&kinto, &db).await;
    assert_eq!(copied(&api, via).await, Some(1515.0));
    assert_eq!(copied(&api, not).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_pushes_through_the_bulk_endpoint_when_kinto_offers_it() {
    assert_pushed_via(KintoServer::start().await, "bulk", "batch").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_pushes_through_batch_where_kinto_has_no_bulk_endpoint() {
    assert_pushed_via(KintoServer::start_batch_only().await, "batch", "bulk").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kinto_redeployed_without_the_bulk_endpoint_is_written_through_batch() {
    let db = TestDb::create().await;
    let mut kinto = KintoServer::start().await;
    let records = sample_records(30, 4);
    kinto
        .editor()
        .create_source("ws", "c", json!({}), &records)
        .await;
    let setup = Setup::new(&db.url, &kinto.url, "ws/c -> prod/c", FAST_QUEUE);
    let api = Api::start(&setup, 1).await;
    let job = api.wait_final(&api.sign("ws/c").await, 60).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    assert_eq!(copied(&api, "bulk").await, Some(30.0));

    // Same port, memory backend emptied, no bulk endpoint: the worker learnt the capability before.
    kinto.restart_batch_only().await;
    let editor: KintoAdmin = kinto.editor();
    editor.create_source("ws", "c", json!({}), &records).await;
    let job = api.wait_final(&api.sign("ws/c").await, 60).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    assert_eq!(job["data"]["attempt"], 1, "no failed attempt: {job}");
    assert_eq!(copied(&api, "batch").await, Some(30.0));
    setup.assert_verifies(&kinto.url, "prod", "c", 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_committed_after_a_listing_with_an_older_timestamp_is_copied_by_the_next_sign() {
    use sqlx::Executor as _;
    let kinto_db = TestDb::create().await;
    let dir = TempDir::new("kinto-late-commit");
    let kinto = KintoServer::launch(
        &dir.0,
        Install::Ours,
        &Storage::Postgres(kinto_db.url.clone()),
        "",
    )
    .await;
    let editor = kinto.editor();
    let records = sample_records(20, 9);
    editor.create_source("ws", "c", json!({}), &records).await;
    let (late, other) = (
        records[3]["id"].as_str().unwrap(),
        records[7]["id"].as_str().unwrap(),
    );

    let signer = editor.as_user(SIGNER.0, SIGNER.1);
    let visible_before = || async {
        signer
            .ok(
                Method::GET,
                "/buckets/ws/collections/c/signer-visible",
                None,
            )
            .await["visible_before"]
            .as_i64()
            .unwrap()
    };
    let newest = |records: Vec<Value>| {
        records
            .iter()
            .map(|r| r["last_modified"].as_i64().unwrap())
            .max()
            .unwrap()
    };
    let loaded = newest(editor.records("ws", "c").await);
    assert!(
        visible_before().await > loaded,
        "nothing in flight: every stamp so far is visible"
    );

    // A writer stamps an update and holds its transaction; another write, stamped later, commits first.
    let mut writer = kinto_db.connect().await;
    writer.execute("BEGIN").await.unwrap();
    writer
        .execute(
            format!(
                // As Kinto's statements write: `last_modified` left to its trigger, which stamps it now.
                "UPDATE objects SET data = data || '{{\"title\": \"committed late\"}}'::jsonb, last_modified = NULL \
                 WHERE id = '{late}' AND parent_id = '/buckets/ws/collections/c' AND resource_name = 'record'"
            )
            .as_str(),
        )
        .await
        .unwrap();
    editor
        .patch_record("ws", "c", other, json!({"title": "committed first"}))
        .await;
    let held = visible_before().await;
    assert!(
        held < newest(editor.records("ws", "c").await),
        "the writer in flight holds the answer back to its start: {held}"
    );
    let (status, in_listing) =
        listing_visible(&kinto, Some(SIGNER), "/buckets/ws/collections/c", true).await;
    assert_eq!(
        (status, in_listing),
        (200, Some(held)),
        "a listing's answer is held back alike"
    );

    // No guessed overlap: only the plugin's answer can make the next refresh look back far enough. (Without it,
    // the bound is the listing's `Date`, whole seconds rounded down: a second later it is past the late stamp.)
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let db = TestDb::create().await;
    let setup = Setup::new(&db.url, &kinto.url, "ws/c -> prod/c", FAST_QUEUE);
    let api = Api::start_env(
        &setup,
        1,
        signer_e2e::free_port(),
        &[("SIGNER_KINTO__SOURCE__SINCE_OVERLAP_SECONDS", "0")],
    )
    .await;
    let job = api.wait_final(&api.sign("ws/c").await, 60).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    let published = by_id_without_timestamps(&editor.records("prod", "c").await);
    assert_eq!(published[other]["title"], "committed first");
    assert_ne!(
        published[late]["title"], "committed late",
        "the update was not visible yet"
    );

    writer.execute("COMMIT").await.unwrap();
    let job = api.wait_final(&api.sign("ws/c").await, 60).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    assert_eq!(
        by_id_without_timestamps(&editor.records("prod", "c").await),
        by_id_without_timestamps(&editor.records("ws", "c").await),
        "the late update reached the destination"
    );
    setup.assert_verifies(&kinto.url, "prod", "c", 20);
}

/// What clients syncing a destination see while it is published: a reader lists the records, reads the
/// signature, then asks whether the records changed (`If-None-Match`; unchanged means the reads were of one
/// state) and verifies each such state as a client would. Returns (states verified, states whose signature
/// does not cover their records, distinct record timestamps seen).
async fn states_a_reader_sees(atomic: bool) -> (usize, usize, usize) {
    // Through /v1/batch (25 writes per call) a publication of this many records takes 16 calls: windows enough.
    const RECORDS: usize = 400;
    use signer_worker::canonical::{Record, SignedPayload};
    use signer_worker::signing::{verify, Message};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let (db, kinto_db) = (TestDb::create().await, TestDb::create().await);
    let dir = TempDir::new("reader");
    let storage = Storage::Postgres(kinto_db.url.clone());
    let kinto = KintoServer::launch(&dir.0, Install::Ours, &storage, "").await;
    let editor = kinto.editor();
    let mut records = sample_records(RECORDS, 5);
    editor.create_source("ws", "c", json!({}), &records).await;
    let setup = Setup::new(&db.url, &kinto.url, "ws/c -> prod/c", FAST_QUEUE);
    let batch_only: &[(&str, &str)] = &[("SIGNER_KINTO__SOURCE__BULK_PUSH_SIZE", "0")];
    let env = if atomic { &[][..] } else { batch_only };
    let api = Api::start_env(&setup, 1, signer_e2e::free_port(), env).await;
    let first = api.wait_final(&api.sign("ws/c").await, 120).await;
    assert_eq!(first["data"]["state"], "succeeded", "{first}");
    for r in &mut records {
        r["title"] = json!("the next version");
    }
    editor.put_records("ws", "c", &records).await;

    let key = signer_worker::signing::parse_public_key(
        &std::fs::read_to_string(&setup.public_key).unwrap(),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (editor, stop) = (editor.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut states, mut mismatches, mut seen) = (0, 0, std::collections::BTreeSet::new());
            while !stop.load(Ordering::Relaxed) {
                let listed = editor
                    .send(
                        Method::GET,
                        "/buckets/prod/collections/c/records?_limit=10000",
                        None,
                        &[],
                    )
                    .await;
                let etag = listed.headers()["etag"].to_str().unwrap().to_owned();
                let body: Value = listed.json().await.unwrap();
                let metadata = editor
                    .ok(Method::GET, "/buckets/prod/collections/c", None)
                    .await;
                let again = editor
                    .send(
                        Method::GET,
                        "/buckets/prod/collections/c/records?_limit=1",
                        None,
                        &[("If-None-Match", &etag)],
                    )
                    .await;
                if again.status() != 304 {
                    continue; // the records moved between the reads: not one state
                }
                let timestamp: u64 = etag.trim_matches('"').parse().unwrap();
                let records: Vec<Record> = body["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| Record::from_value(r.clone()).unwrap())
                    .collect();
                let payload = SignedPayload::new(&records, timestamp).unwrap();
                let signature = metadata["data"]["signature"]["signature"].as_str().unwrap();
                states += 1;
                seen.insert(timestamp);
                if verify(&key, Message::of_payload(&payload).digest(), signature).is_err() {
                    mismatches += 1;
                }
            }
            (states, mismatches, seen.len())
        })
    };
    let job = api.wait_final(&api.sign("ws/c").await, 120).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    stop.store(true, Ordering::Relaxed);
    let seen = reader.await.unwrap();
    setup.assert_verifies(&kinto.url, "prod", "c", RECORDS);
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_never_see_records_their_signature_does_not_cover() {
    let (states, mismatches, timestamps) = states_a_reader_sees(true).await;
    println!(
        "atomic: {states} states read, {mismatches} not covered, {timestamps} record timestamps"
    );
    assert_eq!(mismatches, 0, "of {states} states read");
    assert!(
        timestamps >= 2,
        "the reader saw the state before and after ({timestamps})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_plugin_a_publication_has_a_window_readers_can_fall_in() {
    let (states, mismatches, timestamps) = states_a_reader_sees(false).await;
    println!(
        "batch: {states} states read, {mismatches} not covered, {timestamps} record timestamps"
    );
    assert!(
        mismatches > 0,
        "{states} states read, none mismatched: the test would not see the window"
    );
}

/// `signer-visible` reads Kinto's PostgreSQL schema, which is not a public API of Kinto: a Kinto whose schema is
/// not the one it reads (here, its records table renamed as an upgrade might) refuses to start, saying why,
/// instead of answering wrongly. The same probe passed on this Kinto before (it started).
#[tokio::test(flavor = "multi_thread")]
async fn a_kinto_whose_schema_moved_refuses_to_start_with_the_plugin() {
    let kinto_db = TestDb::create().await;
    let dir = TempDir::new("kinto-schema");
    let storage = Storage::Postgres(kinto_db.url.clone());
    let mut kinto = KintoServer::launch(&dir.0, Install::Ours, &storage, "").await;
    kinto.stop();
    let pool = sqlx::PgPool::connect(&kinto_db.url).await.unwrap();
    sqlx::query("ALTER TABLE objects RENAME TO objects_elsewhere")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let said = kinto.restart_refused().await;
    assert!(
        said.contains("kinto_signer_webhook.push reads Kinto's PostgreSQL schema")
            && said.contains("objects"),
        "{said}"
    );
}
