//! Bad requests get a Kinto-shaped 4xx naming the problem, and leave the job store untouched.

use serde_json::{json, Value};
use signer_e2e::db::TestDb;
use signer_e2e::kinto::KintoServer;
use signer_e2e::service::{Api, Setup};
use sqlx::Row as _;
use std::time::{Duration, Instant};

async fn job_count(db: &TestDb) -> i64 {
    sqlx::query("SELECT count(*) AS n FROM jobs")
        .fetch_one(&mut db.connect().await)
        .await
        .unwrap()
        .get("n")
}

fn assert_kinto_error(body: &Value, code: u16, errno: u16, message_part: &str) {
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["errno"], errno, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains(message_part),
        "{body}"
    );
}

/// Sends `head` on a new connection and returns what the server answers within 5 s (the body is never sent).
async fn raw_exchange(base_url: &str, head: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered before the body was sent")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_with_kinto_errors_and_enqueue_nothing() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        "ws/cfr -> prod/cfr",
        "[api]\nmax_body_bytes = 2048\nheader_read_timeout_seconds = 1\nbody_read_timeout_seconds = 1\nmax_connections = 4\n",
    );
    let api = Api::start(&setup, 0).await;

    let cases: Vec<(&str, String, u16, u16, &str)> = vec![
        (
            "/v1/jobs",
            json!({"resource": "ws/unknown"}).to_string(),
            404,
            111,
            "not a configured source collection",
        ),
        (
            "/v1/jobs",
            json!({"resource": "/buckets/ws"}).to_string(),
            400,
            109,
            "expected a collection",
        ),
        (
            "/v1/jobs",
            json!({"resource": "http://elsewhere/v1/buckets/ws/collections/cfr"}).to_string(),
            400,
            109,
            "not on the source server",
        ),
        (
            "/v1/jobs",
            "{\"resource\": ".to_owned(),
            400,
            106,
            "not valid JSON",
        ),
        (
            "/v1/jobs",
            json!({"resource": "ws/cfr", "colour": "red"}).to_string(),
            400,
            109,
            "unknown field `colour`",
        ),
        (
            "/v1/jobs",
            json!({"nothing": true}).to_string(),
            400,
            109,
            "invalid body",
        ),
        (
            "/v1/jobs",
            json!({"resource": "ws/cfr", "kind": "bake"}).to_string(),
            400,
            109,
            "unknown variant",
        ),
        (
            "/v1/jobs",
            json!({"resource": format!("ws/cfr{}", " ".repeat(4096))}).to_string(),
            413,
            113,
            "too large",
        ),
        (
            "/v1/webhooks/kinto",
            "[1, 2".to_owned(),
            400,
            106,
            "not valid JSON",
        ),
        (
            "/v1/webhooks/kinto",
            json!({"action": "update"}).to_string(),
            400,
            109,
            "missing field `resource_name`",
        ),
        (
            "/v1/webhooks/kinto",
            json!({"padding": "x".repeat(5000)}).to_string(),
            413,
            113,
            "too large",
        ),
    ];
    for (path, body, code, errno, message) in cases {
        let (status, _, answer) = api.post(path, &body).await;
        assert_eq!(status, code, "{path} {body:.80}: {answer}");
        assert_kinto_error(&answer, code, errno, message);
    }
    // What a web page can make a browser send across origins without asking first (issue 32, item 3): refused
    // before anything is read as a job, as is a JSON array (serde would read it as the fields in order).
    let http = reqwest::Client::new();
    for path in ["/v1/jobs", "/v1/webhooks/kinto"] {
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/xml"),
            None,
        ] {
            let mut request = http
                .post(format!("{}{path}", api.url))
                .body(r#"{"resource": "ws/cfr"}"#);
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 415, "{path} as {content_type:?}");
            let body: Value = answer.json().await.unwrap();
            assert_kinto_error(&body, 415, 107, "application/json");
        }
    }
    // CORS stays closed: neither a preflight nor a cross-origin answer grants another origin anything.
    for method in [reqwest::Method::OPTIONS, reqwest::Method::GET] {
        let answer = http
            .request(method.clone(), format!("{}/v1/jobs", api.url))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        let granted: Vec<_> = answer
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .collect();
        assert!(granted.is_empty(), "{method}: {granted:?}");
    }
    let (status, _, body) = api.post("/v1/jobs", r#"["ws/cfr", "sign", 0]"#).await;
    assert_eq!(status, 400, "{body}");
    assert_kinto_error(&body, 400, 109, "expected a JSON object");
    // Ids outside Kinto's grammar or past the cap, and URLs under the server's prefix only on a `/` boundary
    // (issue 32, item 7).
    let prefix_glued = format!("{}ws/cfr", kinto.url);
    for (resource, message) in [
        (prefix_glued.as_str(), "not on the source server"),
        ("-lead/cfr", "not a Kinto id"),
        ("ws/_lead", "not a Kinto id"),
        ("ws/régions", "not a Kinto id"),
        (&format!("ws/{}", "x".repeat(300)), "longer than 256"),
    ] {
        let (status, _, body) = api
            .post("/v1/jobs", &json!({"resource": resource}).to_string())
            .await;
        assert_eq!(status, 400, "{resource:.60}: {body}");
        assert_kinto_error(&body, 400, 109, message);
    }
    for id in [
        "x/../../../ws-b/collections/things",
        "regions?_since=1",
        "",
        "-lead",
    ] {
        let event = json!({
            "action": "update", "resource_name": "collection", "bucket_id": "ws",
            "impacted_objects": [{"old": {"id": id}, "new": {"id": id, "status": "to-sign"}}]
        });
        let (status, _, body) = api.post("/v1/webhooks/kinto", &event.to_string()).await;
        assert_eq!(status, 200, "{id}: {body}");
        assert!(
            body["ignored"][0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not a Kinto id")),
            "{id}: {body}"
        );
    }
    let crowd = json!({
        "action": "update", "resource_name": "collection", "bucket_id": "ws",
        "impacted_objects": vec![json!({}); 101]
    });
    let (status, _, body) = api.post("/v1/webhooks/kinto", &crowd.to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert_kinto_error(&body, 400, 109, "at most 100");
    // A declared 10 GB body is answered before a byte of it is sent (issue 32, item 6).
    let answer = raw_exchange(
        &api.url,
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(job_count(&db).await, 0, "no bad request enqueued anything");

    let (status, body) = api.get("/v1/jobs/not-a-uuid").await;
    assert_eq!(status, 400);
    assert_kinto_error(&body, 400, 110, "not a job id");
    let (status, body) = api.get(&format!("/v1/jobs/{}", uuid::Uuid::new_v4())).await;
    assert_kinto_error(&body, 404, 111, "no job");
    assert_eq!(status, 404);
    let (status, body) = api.get("/v1/jobs?state=done").await;
    assert_eq!(status, 400);
    assert_kinto_error(&body, 400, 107, "unknown JobState \"done\"");
    let (status, body) = api.get("/v1/nowhere").await;
    assert_eq!((status, body["errno"].clone()), (404, json!(111)));

    // Issue 32, item 6, as the attacks. Headers sent a byte at a time and never finished: the connection is
    // closed at the header deadline (1 s here), not held.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = api.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a connection that never finishes its headers is closed"
    );
    // A body that never finishes: 408 at the body deadline.
    let answer = raw_exchange(
        &api.url,
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"resource\"",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // At most 4 connections at once: a fifth is answered only once one of them is gone (here, closed at the
    // header deadline).
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    let started = Instant::now();
    // A client of its own: a new connection, not one kept from the calls above.
    let status = reqwest::get(format!("{}/__lbheartbeat__", api.url))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the fifth connection waited for a slot: {:?}",
        started.elapsed()
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_triggers_coalesce_onto_one_queued_job() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let setup = Setup::new(&db.url, &kinto.url, "ws/cfr -> prod/cfr", "");
    let api = Api::start(&setup, 0).await;

    let triggers = (0..20).map(|i| {
        let body = if i % 2 == 0 {
            json!({"resource": "ws/cfr"})
        } else {
            json!({"resource": "/buckets/ws/collections/cfr"})
        };
        let api = &api;
        async move { api.post("/v1/jobs", &body.to_string()).await }
    });
    let answers = futures::future::join_all(triggers).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, _, body)| {
            assert_eq!(*status, 202, "{body}");
            body["data"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every trigger got the same job: {ids:?}");
    assert_eq!(
        answers
            .iter()
            .filter(|(_, _, b)| b["coalesced"] == false)
            .count(),
        1
    );
    assert_eq!(job_count(&db).await, 1);
    let (_, job) = api.get(&format!("/v1/jobs/{}", ids.first().unwrap())).await;
    let events: Vec<&str> = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events.iter().filter(|e| **e == "coalesced").count(),
        19,
        "{events:?}"
    );

    // Listing: filters and Kinto-style pagination.
    let (status, page) = api
        .get("/v1/jobs?resource=ws/cfr&state=queued&_limit=1")
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let (_, none) = api.get("/v1/jobs?state=running").await;
    assert_eq!(none["data"], json!([]));

    // A queued job can be cancelled, once.
    let id = ids.first().unwrap();
    let (status, _, cancelled) = api.post(&format!("/v1/jobs/{id}/cancel"), "").await;
    assert_eq!(
        (status, cancelled["data"]["state"].clone()),
        (200, json!("cancelled"))
    );
    let (status, _, again) = api.post(&format!("/v1/jobs/{id}/cancel"), "").await;
    assert_eq!(status, 409);
    assert_kinto_error(&again, 409, 122, "only queued jobs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_database_is_a_503_and_an_unhealthy_heartbeat_not_a_crash() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let setup = Setup::new(&db.url, &kinto.url, "ws/cfr -> prod/cfr", "");
    let api = Api::start(&setup, 0).await;
    let (status, _) = api.get("/__heartbeat__").await;
    assert_eq!(status, 200);

    db.drop_now().await;
    let (status, _, body) = api
        .post("/v1/jobs", &json!({"resource": "ws/cfr"}).to_string())
        .await;
    assert_eq!(status, 503, "{body}");
    assert_kinto_error(&body, 503, 201, "job store is unavailable");
    let (status, body) = api.get("/__heartbeat__").await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"database": false, "kinto_source": true, "signer": true})
        )
    );
    let (status, _) = api.get("/__lbheartbeat__").await;
    assert_eq!(status, 200, "the process itself is alive");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_sigterm_readiness_fails_first_then_the_api_exits_zero() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let extra = "[api]\nshutdown_delay_seconds = 3\n";
    let setup = Setup::new(&db.url, &kinto.url, "ws/cfr -> prod/cfr", extra);
    let mut api = Api::start(&setup, 0).await;
    for check in ["/__heartbeat__", "/__ready__"] {
        let (status, body) = api.get(check).await;
        assert_eq!(status, 200, "{check}: {body}");
    }

    api.process.terminate();
    // The signal arrives asynchronously: poll, as a load balancer does, well within the 3 s delay.
    signer_e2e::eventually(2, "readiness to report draining", || async {
        let (status, body) = api.get("/__ready__").await;
        (status == 503 && body["draining"] == json!(true)).then_some(())
    })
    .await;
    let (status, body) = api.get("/__heartbeat__").await;
    assert_eq!((status, body["draining"].clone()), (503, json!(true)));
    let (status, _) = api.get("/v1/jobs").await;
    assert_eq!(status, 200, "requests are still served while draining");
    let exit = api
        .process
        .wait_exit(std::time::Duration::from_secs(8))
        .await;
    assert!(exit.success(), "{exit:?}\n{}", api.process.log_text());
}
