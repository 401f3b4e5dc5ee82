//! Autograph misbehaving, through the Autograph test server's fault injection: overload and slowness are retried
//! with backoff (each retry in the job's history), refusals and nonsense fail the job at once, and in no case is
//! a destination left with records its signature does not cover. Also: the signer chosen per collection, and
//! large payloads signed through `/sign/hash`.

use serde_json::{json, Value};
use signer_e2e::autograph::AutographServer;
use signer_e2e::kinto::KintoServer;
use signer_e2e::records::sample_records;
use signer_e2e::service::{verify_x5u, Api, Setup};
use signer_e2e::FAST_QUEUE;

struct Stack {
    kinto: KintoServer,
    autograph: AutographServer,
    _setup: Setup,
    api: Api,
}

async fn stack() -> Stack {
    let kinto = KintoServer::start().await;
    let editor = kinto.editor();
    for collection in ["overloaded", "refused", "slow", "garbage"] {
        editor
            .create_source("ws", collection, json!({}), &sample_records(10, 3))
            .await;
    }
    let autograph = AutographServer::start(&["remote-settings"]).await;
    // The embedded store: Autograph handling does not depend on the job store.
    let setup = Setup::new(
        "",
        &kinto.url,
        "/buckets/ws -> /buckets/main",
        &format!(
            "signer_backend = \"autograph\"\n{}{FAST_QUEUE}",
            autograph.settings()
        ),
    );
    let api = Api::start(&setup, 1).await;
    Stack {
        kinto,
        autograph,
        _setup: setup,
        api,
    }
}

impl Stack {
    async fn sign_with_faults(&self, collection: &str, faults: &[&str]) -> Value {
        self.autograph.inject(faults).await;
        let job = self.api.sign(&format!("ws/{collection}")).await;
        self.api.wait_final(&job, 60).await
    }

    fn notes(job: &Value, event: &str) -> Vec<String> {
        job["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == event)
            .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn untouched(&self, collection: &str) {
        let editor = self.kinto.editor();
        assert!(
            editor.records("main", collection).await.is_empty(),
            "nothing was published to main/{collection}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn overload_and_timeouts_are_retried_refusals_and_garbage_fail_at_once() {
    let s = stack().await;

    let overloaded = s.sign_with_faults("overloaded", &["503", "503"]).await;
    assert_eq!(overloaded["data"]["state"], "succeeded", "{overloaded}");
    let retries = Stack::notes(&overloaded, "signer-retry");
    assert_eq!(retries.len(), 2, "{overloaded}");
    assert!(retries[0].contains("503"), "{retries:?}");
    let verdict = verify_x5u(&s.kinto.url, "main", "overloaded");
    assert_eq!(
        (verdict["valid"].clone(), verdict["records"].clone()),
        (json!(true), json!(10))
    );

    let refused = s.sign_with_faults("refused", &["401"]).await;
    assert_eq!(refused["data"]["state"], "failed", "{refused}");
    assert_eq!(refused["data"]["attempt"], 1, "a 401 is not retried");
    let error = refused["data"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("Autograph refused the request (401)"),
        "{error}"
    );
    assert!(error.contains("request id "), "{error}");
    assert!(Stack::notes(&refused, "signer-retry").is_empty());
    s.untouched("refused").await;

    // The test settings time calls out after 2 s.
    let slow = s.sign_with_faults("slow", &["hang:4"]).await;
    assert_eq!(slow["data"]["state"], "succeeded", "{slow}");
    let retries = Stack::notes(&slow, "signer-retry");
    assert!(
        retries.iter().any(|r| r.contains("timed out")),
        "{retries:?}"
    );

    let garbage = s.sign_with_faults("garbage", &["garbage"]).await;
    assert_eq!(garbage["data"]["state"], "failed", "{garbage}");
    let error = garbage["data"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("Autograph answered something unusable: invalid JSON"),
        "{error}"
    );
    s.untouched("garbage").await;

    let stats = s.autograph.stats().await;
    assert_eq!(stats["faults_left"], json!([]), "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_hawk_credentials_are_refused_by_the_server_not_retried() {
    let kinto = KintoServer::start().await;
    kinto
        .editor()
        .create_source("ws", "cfr", json!({}), &sample_records(3, 1))
        .await;
    let autograph = AutographServer::start(&["remote-settings"]).await;
    let settings = autograph
        .settings()
        .replace(signer_e2e::autograph::HAWK_KEY, "not-the-key");
    let setup = Setup::new(
        "",
        &kinto.url,
        "/buckets/ws -> /buckets/main",
        &format!("signer_backend = \"autograph\"\n{settings}{FAST_QUEUE}"),
    );
    let api = Api::start(&setup, 1).await;
    let job = api.wait_final(&api.sign("ws/cfr").await, 30).await;
    assert_eq!(job["data"]["state"], "failed", "{job}");
    let error = job["data"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("(401)") && error.contains("MacMismatch"),
        "{error}"
    );
    assert_eq!(autograph.stats().await["signed"], 0);
    assert!(kinto.editor().collection("main", "cfr").await.is_none());

    // The heartbeat reports each dependency; Autograph's own heartbeat stands for the signer.
    let (status, body) = api.get("/__heartbeat__").await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"database": true, "kinto_source": true, "signer": true})
        )
    );
    drop(autograph);
    let (status, body) = api.get("/__heartbeat__").await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"database": true, "kinto_source": true, "signer": false})
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_collection_gets_its_own_signer_and_large_payloads_go_by_hash() {
    let kinto = KintoServer::start().await;
    let editor = kinto.editor();
    for collection in ["local", "remote"] {
        editor
            .create_source("ws", collection, json!({}), &sample_records(30, 9))
            .await;
    }
    let autograph = AutographServer::start(&["remote-settings"]).await;
    // Local key by default; Autograph for ws/remote only, by hash above 1 kB.
    let setup = Setup::new(
        "",
        &kinto.url,
        "/buckets/ws -> /buckets/main",
        &format!(
            "{}sign_hash_above_bytes = 1024\n{FAST_QUEUE}[overrides.\"ws/remote\"]\nsigner_backend = \"autograph\"\n",
            autograph.settings()
        ),
    );
    let api = Api::start(&setup, 1).await;
    for collection in ["local", "remote"] {
        let job = api
            .wait_final(&api.sign(&format!("ws/{collection}")).await, 30)
            .await;
        assert_eq!(job["data"]["state"], "succeeded", "{job}");
    }
    setup.assert_verifies(&kinto.url, "main", "local", 30);
    assert_eq!(
        editor.collection("main", "local").await.unwrap()["signature"]["x5u"],
        ""
    );
    let remote = verify_x5u(&kinto.url, "main", "remote");
    assert_eq!(
        (remote["valid"].clone(), remote["records"].clone()),
        (json!(true), json!(30))
    );
    let stats = autograph.stats().await;
    // The probe payload is small (/sign/data); the collection's payload went by hash.
    assert_eq!(
        (stats["signed"].clone(), stats["hash_requests"].clone()),
        (json!(2), json!(1)),
        "{stats}"
    );
}
