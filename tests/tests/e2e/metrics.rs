//! `/metrics` on the API and on a worker's own port, scraped after real work: the counters moved and the
//! histograms observed what happened.

use serde_json::json;
use signer_e2e::db::TestDb;
use signer_e2e::kinto::KintoServer;
use signer_e2e::records::sample_records;
use signer_e2e::service::{Api, Process, Setup};
use signer_e2e::{eventually, free_port, metric as sample, FAST_QUEUE};

fn at_least(text: &str, name: &str, labels: &[(&str, &str)], min: f64) {
    let value = sample(text, name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape:\n{text}"));
    assert!(
        value >= min,
        "{name}{labels:?} = {value}, expected at least {min}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_and_worker_metrics_follow_a_real_sign() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    kinto
        .editor()
        .create_source("ws", "cfr", json!({}), &sample_records(20, 6))
        .await;
    let metrics_port = free_port();
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        "/buckets/ws -> /buckets/main",
        &format!(
            "{FAST_QUEUE}[api]\nwebhook_secret = \"s\"\n[worker]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n"
        ),
    );
    let api = Api::start(&setup, 0).await;
    let _worker = Process::spawn(
        "signer-worker",
        &[],
        &setup.config,
        setup.dir.0.join("worker.log"),
    );

    let job = api.wait_final(&api.sign("ws/cfr").await, 30).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    let (status, _, _) = api.post("/v1/webhooks/kinto", "{}").await;
    assert_eq!(status, 401);

    let http = reqwest::Client::new();
    let scrape = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.ok()?.text().await.ok() }
    };
    let api_text = api.metrics().await;
    at_least(
        &api_text,
        "signer_jobs_enqueued_total",
        &[("trigger", "api"), ("coalesced", "false")],
        1.0,
    );
    at_least(
        &api_text,
        "signer_http_request_duration_seconds_count",
        &[("route", "/v1/jobs"), ("status", "202")],
        1.0,
    );
    at_least(
        &api_text,
        "signer_http_request_duration_seconds_count",
        &[("route", "/v1/jobs/{id}"), ("status", "200")],
        1.0,
    );
    at_least(
        &api_text,
        "signer_auth_failures_total",
        &[("scheme", "webhook_hmac"), ("reason", "missing")],
        1.0,
    );
    at_least(
        &api_text,
        "signer_queue_depth",
        &[("state", "succeeded")],
        1.0,
    );
    assert_eq!(
        sample(&api_text, "signer_queue_depth", &[("state", "queued")]),
        Some(0.0)
    );
    assert!(sample(&api_text, "signer_queue_oldest_runnable_age_seconds", &[]).is_some());

    let worker_text = eventually(10, "the worker's metrics", || {
        scrape(format!("http://127.0.0.1:{metrics_port}/metrics"))
    })
    .await;
    at_least(
        &worker_text,
        "signer_jobs_finished_total",
        &[("outcome", "succeeded")],
        1.0,
    );
    at_least(
        &worker_text,
        "signer_job_duration_seconds_count",
        &[("kind", "sign")],
        1.0,
    );
    for phase in ["snapshot", "push", "hash", "sign", "publish", "finish"] {
        at_least(
            &worker_text,
            "signer_job_phase_duration_seconds_count",
            &[("phase", phase)],
            1.0,
        );
    }
    at_least(
        &worker_text,
        "signer_signer_call_duration_seconds_count",
        &[("backend", "local_ecdsa"), ("outcome", "ok")],
        1.0,
    );
    let server = format!("127.0.0.1:{}", kinto.port);
    at_least(
        &worker_text,
        "signer_kinto_request_duration_seconds_count",
        &[("server", &server), ("status", "2xx")],
        5.0,
    );
    assert_eq!(
        sample(
            &worker_text,
            "signer_records_copied_total",
            &[("via", "bulk")]
        ),
        Some(20.0)
    );
    at_least(
        &worker_text,
        "signer_payload_bytes_signed_total",
        &[],
        1000.0,
    );
    assert_eq!(
        sample(&worker_text, "signer_job_retries_total", &[]),
        Some(0.0)
    );
}
