//! Who may ask for a signature. Every scheme of `[auth]` against the real client its users run, accepted when
//! right and refused when wrong: pyjwt tokens, httpsig (Cavage) and Flask-Cavage-style requests,
//! http-message-signatures and requests-http-signature (RFC 9421), Python's `ssl` with certificates made by
//! `cryptography` (mTLS), kmsauth's generator with moto as KMS. And `[permissions]`: on the API, on the metrics,
//! and on the status changes Kinto relays.

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};
use signer_e2e::db::TestDb;
use signer_e2e::kinto::{KintoAdmin, KintoServer};
use signer_e2e::peers::{auth_clients, PeerServer};
use signer_e2e::rabbitmq::{dispatch_settings, shared_url, unique_queue, TestBroker};
use signer_e2e::records::sample_records;
use signer_e2e::service::{run_binary, Api, Process, Setup, TempDir};
use signer_e2e::{eventually, free_port, metric, FAST_QUEUE};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

const RESOURCES: &str = "ws/cfr -> prod/cfr";
const JOB: &str = r#"{"resource": "ws/cfr"}"#;
const WEBHOOK_SECRET: &str = "webhook-secret";

/// An API on the embedded store, no workers, no feed: these tests are about who gets in.
async fn start_api(kinto: &KintoServer, extra: &str) -> (Setup, Api) {
    let setup = Setup::new(
        "",
        &kinto.url,
        RESOURCES,
        &format!("{extra}\n[feed]\nenabled = false\n"),
    );
    let api = Api::start(&setup, 0).await;
    (setup, api)
}

fn basic(user: &str, password: &str) -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {pair}")
}

/// `signer-api hash-password`, reading the password from standard input.
fn hash_password(password: &str) -> String {
    let mut child = Command::new(signer_e2e::service::bin("signer-api"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("signer-api runs");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// A 401 in Kinto's shape whose message names the cause.
fn assert_unauthorized(case: &str, answer: &Value, cause: &str) {
    assert_eq!(answer["status"], 401, "{case}: {answer}");
    assert_eq!(answer["body"]["errno"], 104, "{case}: {answer}");
    let message = answer["body"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(cause), "{case}: {answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_and_permissions_decide_who_may_sign_read_cancel_list_and_scrape() {
    let kinto = KintoServer::start().await;
    let users: String = ["alice", "bob", "ops", "prometheus"]
        .iter()
        .map(|u| format!("{u} = \"{}\"\n", hash_password(&format!("{u}-pw"))))
        .collect();
    let (_setup, api) = start_api(
        &kinto,
        &format!(
            "[auth]\npolicies = [\"basicauth\"]\n[auth.basicauth.users]\n{users}\
             [permissions]\nadmin = [\"basicauth:ops\"]\nmetrics = [\"basicauth:prometheus\"]\n\
             [permissions.resources.ws]\nsign = [\"basicauth:alice\"]\n"
        ),
    )
    .await;
    let alice = api.as_caller(&basic("alice", "alice-pw"));
    let bob = api.as_caller(&basic("bob", "bob-pw"));
    let ops = api.as_caller(&basic("ops", "ops-pw"));

    let (status, headers, body) = api.post("/v1/jobs", JOB).await;
    assert_eq!((status, &body["errno"]), (401, &json!(104)), "{body}");
    assert_eq!(headers["www-authenticate"], "Basic realm=\"kinto-signer\"");
    let (status, _, body) = api
        .as_caller(&basic("alice", "wrong"))
        .post("/v1/jobs", JOB)
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["message"], "basicauth: wrong user name or password");
    // An unknown user is told the same (issue 32, item 5).
    let (status, _, unknown) = api
        .as_caller(&basic("mallory", "wrong"))
        .post("/v1/jobs", JOB)
        .await;
    assert_eq!((status, &unknown["message"]), (401, &body["message"]));
    let (status, _, body) = bob.post("/v1/jobs", JOB).await;
    assert_eq!((status, &body["errno"]), (403, &json!(121)), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("basicauth:bob may not request a sign of"),
        "{body}"
    );

    let (status, _, body) = alice.post("/v1/jobs", JOB).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["requested_by"], "basicauth:alice");
    let job = body["data"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/jobs/{job}");
    assert_eq!(
        alice.get(&path).await.0,
        200,
        "the requester reads their job"
    );
    assert_eq!(ops.get(&path).await.0, 200, "an admin reads any job");
    assert_eq!(bob.get(&path).await.0, 403);
    assert_eq!(api.get(&path).await.0, 401);
    let (_, mine) = bob.get("/v1/jobs").await;
    assert_eq!(mine["data"], json!([]), "bob sees his own jobs: none");
    let (_, all) = ops.get("/v1/jobs").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
    assert_eq!(api.get("/v1/jobs").await.0, 401);
    assert_eq!(bob.post(&format!("{path}/cancel"), "").await.0, 403);
    assert_eq!(alice.post(&format!("{path}/cancel"), "").await.0, 200);

    assert_eq!(
        api.get("/__heartbeat__").await.0,
        200,
        "Dockerflow endpoints stay public"
    );
    assert_eq!(api.get("/__version__").await.0, 200);
    assert_eq!(api.get("/metrics").await.0, 401);
    assert_eq!(alice.get("/metrics").await.0, 403);
    let scrape = api
        .http
        .get(format!("{}/metrics", api.url))
        .header("authorization", basic("prometheus", "prometheus-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.unwrap();
    let failures = |scheme, reason| {
        metric(
            &text,
            "signer_auth_failures_total",
            &[("scheme", scheme), ("reason", reason)],
        )
    };
    assert_eq!(failures("basicauth", "mismatch"), Some(1.0), "{text}");
    assert_eq!(failures("basicauth", "unknown"), Some(1.0));
    assert!(failures("basicauth", "forbidden") >= Some(3.0));
    assert!(failures("anonymous", "missing") >= Some(3.0));

    // The operator's CLI presents credentials the same way.
    let (code, out) = run_binary("signer-api", ["sign", "ws/cfr", "--api", &api.url]);
    assert!(code == 1 && out.contains("401"), "{out}");
    let alice_header = basic("alice", "alice-pw");
    let (code, out) = run_binary(
        "signer-api",
        [
            "sign",
            "ws/cfr",
            "--api",
            &api.url,
            "--authorization",
            &alice_header,
        ],
    );
    assert!(code == 0 && out.contains("queued"), "{out}");

    // With permissions enforced and no webhook secret, the webhook cannot tell Kinto from anyone.
    let (status, _, body) = api.post("/v1/webhooks/kinto", "{}").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("webhook_secret"),
        "{body}"
    );
    // A guesser spraying user names from one address is stopped before any more hashes are checked: 429 with
    // Retry-After, for every Basic caller from that address (here, everyone: the test runs on loopback).
    let mut answers = Vec::new();
    for n in 0..31 {
        let (status, headers, _) = api
            .as_caller(&basic(&format!("guess-{n}"), "password-{n}"))
            .post("/v1/jobs", JOB)
            .await;
        answers.push((status, headers.get("retry-after").cloned()));
    }
    let first_429 = answers
        .iter()
        .position(|(s, _)| *s == 429)
        .expect("throttled");
    assert!(
        first_429 >= 20,
        "the earlier refusals in this test count too: {answers:?}"
    );
    assert!(
        answers[..first_429].iter().all(|(s, _)| *s == 401),
        "{answers:?}"
    );
    for (status, retry_after) in &answers[first_429..] {
        assert_eq!(*status, 429);
        let wait: u64 = retry_after
            .as_ref()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    let log = api.process.log_text();
    for user in ["alice", "bob", "ops", "prometheus", "mallory", "guess-1"] {
        assert!(
            !log.contains(&format!("{user}-pw")) && !log.contains(&format!("\"{user}\"")),
            "a password or an attempted user name reached the log"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pyjwt_tokens_are_checked_as_kinto_jwt_does_and_refused_where_it_was_lax() {
    let kinto = KintoServer::start().await;
    let dir = TempDir::new("jwt");
    let tokens = auth_clients([std::ffi::OsStr::new("jwt-tokens"), dir.0.as_os_str()]);
    let jwt = |extra: &str| {
        format!(
            "[auth]\npolicies = [\"jwt\"]\n[auth.jwt]\nalgorithm = \"RS256\"\nleeway = 30\naudience = \"kinto-signer\"\n{extra}\
             [permissions.resources.\"*\"]\nsign = [\"jwt:ci-bot\"]\n"
        )
    };
    let key = dir.0.join("jwt-public.pem");
    let (_setup, api) = start_api(
        &kinto,
        &jwt(&format!("public_key_file = \"{}\"\n", key.display())),
    )
    .await;
    let send = |token: &str| {
        let api = &api;
        let value = format!("JWT {}", token);
        async move { api.as_caller(&value).post("/v1/jobs", JOB).await }
    };
    for accepted in ["valid", "expired_within_leeway"] {
        let (status, _, body) = send(tokens[accepted].as_str().unwrap()).await;
        assert_eq!(status, 202, "{accepted}: {body}");
        assert_eq!(body["data"]["requested_by"], "jwt:ci-bot");
    }
    let refusals = [
        ("expired", "expired"),
        ("not_yet_valid", "not valid yet"),
        ("issued_in_the_future", "issued in the future"),
        ("wrong_audience", "another audience"),
        ("no_audience", "no \"aud\" claim"),
        ("no_sub", "no \"sub\" claim"),
        ("alg_none", "not a JWT"),
        (
            "hs256_with_the_public_key",
            "algorithm is not the one accepted",
        ),
        ("other_key", "does not verify"),
    ];
    for (case, message) in refusals {
        let (status, headers, body) = send(tokens[case].as_str().unwrap()).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{case}: {body}"
        );
        assert_eq!(
            headers["www-authenticate"], "JWT realm=\"kinto-signer\"",
            "{case}"
        );
    }
    // kinto_jwt compares the scheme exactly: a Bearer token is not this policy's, so the caller is anonymous.
    let bearer = format!("Bearer {}", tokens["valid"].as_str().unwrap());
    let (status, _, body) = api.as_caller(&bearer).post("/v1/jobs", JOB).await;
    assert!(
        status == 401
            && body["message"]
                .as_str()
                .unwrap()
                .contains("authentication required"),
        "{body}"
    );

    // Keys from an identity provider's JWKS, served over HTTP; then the provider is gone.
    let idp = PeerServer::files(&dir.0).await;
    let (_setup, jwks) = start_api(
        &kinto,
        &jwt(&format!("jwks_url = \"{}/jwks.json\"\n", idp.url)),
    )
    .await;
    let with = |token: &Value| format!("JWT {}", token.as_str().unwrap());
    let (status, _, body) = jwks
        .as_caller(&with(&tokens["jwks_k1"]))
        .post("/v1/jobs", JOB)
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, _, body) = jwks
        .as_caller(&with(&tokens["jwks_unknown_kid"]))
        .post("/v1/jobs", JOB)
        .await;
    assert!(
        status == 401 && body["message"].as_str().unwrap().contains("no key k9"),
        "{body}"
    );
    let (status, _, _) = jwks
        .as_caller(&with(&tokens["valid"]))
        .post("/v1/jobs", JOB)
        .await;
    assert_eq!(status, 401, "a key outside the JWKS proves nothing");
    let closed = format!(
        "jwks_url = \"http://127.0.0.1:{}/jwks.json\"\n",
        free_port()
    );
    let (_setup, no_idp) = start_api(&kinto, &jwt(&closed)).await;
    let (status, _, body) = no_idp
        .as_caller(&with(&tokens["jwks_k1"]))
        .post("/v1/jobs", JOB)
        .await;
    assert_eq!(
        (status, &body["errno"]),
        (503, &json!(201)),
        "the provider is down: retry later, {body}"
    );
    let logs = [&api, &jwks, &no_idp]
        .map(|a| a.process.log_text())
        .concat();
    for token in tokens.as_object().unwrap().values() {
        let signature = token.as_str().unwrap().rsplit('.').next().unwrap();
        assert!(
            signature.is_empty() || !logs.contains(signature),
            "a token reached the log"
        );
    }
}

/// Keys for both signature drafts, made by the Python side: `<dir>/<id>.key` / `.pub`, and their settings.
fn signature_keys(dir: &TempDir) -> BTreeMap<String, Value> {
    let keys = auth_clients([std::ffi::OsStr::new("rfc9421-keys"), dir.0.as_os_str()]);
    serde_json::from_value(keys).unwrap()
}

fn key_table(table: &str, id: &str, key: &Value) -> String {
    let mut toml = format!(
        "[{table}.keys.{id}]\nalgorithm = \"{}\"\n",
        key["algorithm"].as_str().unwrap()
    );
    for field in ["public_key_file", "secret_base64"] {
        if let Some(v) = key[field].as_str() {
            toml.push_str(&format!("{field} = \"{v}\"\n"));
        }
    }
    toml
}

#[tokio::test(flavor = "multi_thread")]
async fn httpsig_and_flask_cavage_style_requests_are_verified_without_flask_cavages_bugs() {
    let kinto = KintoServer::start().await;
    let dir = TempDir::new("cavage");
    let keys = signature_keys(&dir);
    let secret = "cavage-test-secret";
    let (_setup, api) = start_api(
        &kinto,
        &format!(
            "[auth]\npolicies = [\"cavage\"]\n[auth.cavage.keys.svc-a]\nalgorithm = \"hmac-sha256\"\nsecret = \"{secret}\"\n\
             {}[permissions.resources.ws]\nsign = [\"cavage:svc-a\", \"cavage:svc-rsa\"]\nread = [\"cavage:svc-a\"]\n",
            key_table("auth.cavage", "svc-rsa", &json!({"algorithm": "rsa-sha256", "public_key_file": keys["v15"]["public_key_file"]})),
        ),
    )
    .await;
    let rsa_key = dir.0.join("v15.key");
    let results = auth_clients([
        "cavage",
        api.url.as_str(),
        secret,
        rsa_key.to_str().unwrap(),
    ]);
    for accepted in [
        "post",
        "post_rsa",
        "post_with_query",
        "signature_header",
        "no_algorithm_parameter",
    ] {
        assert_eq!(
            results[accepted]["status"], 202,
            "{accepted}: {}",
            results[accepted]
        );
    }
    assert_eq!(results["get"]["status"], 200, "{}", results["get"]);
    assert_eq!(
        results["post"]["body"]["data"]["requested_by"], "cavage:svc-a",
        "the whole keyId counts"
    );
    assert_eq!(
        results["post_rsa"]["body"]["data"]["requested_by"],
        "cavage:svc-rsa"
    );
    let refusals = [
        ("tampered_body", "Digest does not match the body"),
        ("stale_date", "Date is"),
        ("future_date", "Date is"),
        ("digest_not_covered", "must also cover: digest"),
        ("date_not_covered", "must also cover: date"),
        ("unknown_key", "unknown keyId \"svc-b\""),
        ("wrong_secret", "does not verify"),
        ("wrong_algorithm", "is not the algorithm of key"),
    ];
    for (case, message) in refusals {
        let answer = &results[case];
        assert_unauthorized(case, answer, message);
        let challenge = answer["www_authenticate"].as_str().unwrap_or_default();
        assert!(
            challenge.starts_with(
                "Signature realm=\"kinto-signer\",headers=\"(request-target) host date\""
            ),
            "{case}: {challenge}"
        );
    }
    assert!(
        !api.process.log_text().contains(secret),
        "the HMAC secret reached the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_message_signatures_verify_for_every_algorithm_and_refuse_tampering_age_and_replay() {
    let kinto = KintoServer::start().await;
    let dir = TempDir::new("rfc9421");
    let keys = signature_keys(&dir);
    let tables: String = keys
        .iter()
        .map(|(id, key)| key_table("auth.rfc9421", id, key))
        .collect();
    let principals: Vec<String> = keys.keys().map(|id| format!("\"rfc9421:{id}\"")).collect();
    let (_setup, api) = start_api(
        &kinto,
        &format!(
            "[auth]\npolicies = [\"rfc9421\"]\n[auth.rfc9421]\nmax_age_seconds = 300\n{tables}\
             [permissions.resources.\"*\"]\nsign = [{}]\nread = [\"rfc9421:ed25519\"]\n",
            principals.join(", ")
        ),
    )
    .await;
    let results = auth_clients([
        std::ffi::OsStr::new("rfc9421"),
        std::ffi::OsStr::new(&api.url),
        dir.0.as_os_str(),
    ]);
    for id in keys.keys() {
        for case in [
            format!("post_{id}"),
            format!("requests_http_signature_{id}"),
        ] {
            assert_eq!(results[&case]["status"], 202, "{case}: {}", results[&case]);
            assert_eq!(
                results[&case]["body"]["data"]["requested_by"],
                format!("rfc9421:{id}")
            );
        }
    }
    assert_eq!(
        results["nonce_first_use"]["status"], 202,
        "{}",
        results["nonce_first_use"]
    );
    let refusals = [
        ("tampered_query", "does not verify"),
        ("tampered_body", "Content-Digest does not match the body"),
        ("digest_not_covered", "must also cover: content-digest"),
        ("expired", "older than 300 s"),
        ("expires_passed", "expired"),
        ("created_in_the_future", "in the future"),
        (
            "missing_required_component",
            "must also cover: @path @query",
        ),
        ("nonce_replayed", "nonce was already used"),
    ];
    for (case, message) in refusals {
        let answer = &results[case];
        assert_unauthorized(case, answer, message);
    }
}

/// `signer-api serve` over HTTPS: ready once it says so (a probe would need a client certificate).
async fn https_api(setup: &Setup, port: u16) -> Process {
    let process = Process::spawn(
        "signer-api",
        &["serve", "--listen", &format!("127.0.0.1:{port}")],
        &setup.config,
        setup.dir.0.join("api-tls.log"),
    );
    eventually(30, "signer-api to listen over https", || async {
        process
            .log_text()
            .contains("signer-api listening")
            .then_some(())
    })
    .await;
    process
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_name_the_caller_carry_scopes_and_bad_ones_never_finish_the_handshake()
{
    let kinto = KintoServer::start().await;
    let dir = TempDir::new("mtls");
    let pki = auth_clients([std::ffi::OsStr::new("mtls-pki"), dir.0.as_os_str()]);
    let d = dir.0.display();
    let setup = Setup::new(
        "",
        &kinto.url,
        RESOURCES,
        &format!(
            "[api.tls]\ncert_file = \"{d}/server.crt\"\nkey_file = \"{d}/server.key\"\nclient_ca_dir = \"{d}/known_clients\"\n\
             [auth]\npolicies = [\"mtls\"]\n[permissions.resources.ws]\nsign = [\"scope:sign\"]\n[feed]\nenabled = false\n"
        ),
    );
    let port = free_port();
    let _api = https_api(&setup, port).await;
    let mut args = vec![
        "mtls".to_owned(),
        format!("https://127.0.0.1:{port}"),
        dir.0.display().to_string(),
    ];
    args.extend(
        pki["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned()),
    );
    let results = auth_clients(&args);

    assert_eq!(results["scoped"]["status"], 202, "{}", results["scoped"]);
    assert_eq!(
        results["scoped"]["body"]["data"]["requested_by"],
        "mtls:ci.example"
    );
    assert_eq!(results["ed25519"]["status"], 202, "{}", results["ed25519"]);
    assert_eq!(
        results["ed25519"]["body"]["data"]["requested_by"],
        "mtls:ed.example"
    );
    assert_eq!(
        results["unscoped"]["status"], 403,
        "{}",
        results["unscoped"]
    );
    assert!(
        results["unscoped"]["body"]["message"]
            .as_str()
            .unwrap()
            .contains("mtls:release-bot may not"),
        "the common name names a certificate without subjectAltName: {}",
        results["unscoped"]
    );
    for refused in ["none", "expired", "untrusted", "critical_policies"] {
        let error = results[refused]["error"].as_str().unwrap_or_default();
        assert!(
            !error.is_empty(),
            "{refused} got through the handshake: {}",
            results[refused]
        );
    }
    let metrics = results["metrics"].as_str().unwrap();
    for reason in ["missing", "expired", "untrusted", "invalid-certificate"] {
        let count = metric(
            metrics,
            "signer_auth_failures_total",
            &[("scheme", "mtls"), ("reason", reason)],
        );
        assert!(count >= Some(1.0), "{reason}: {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kmsauth_tokens_from_lyfts_generator_are_validated_against_kms_like_the_python_validator() {
    let kinto = KintoServer::start().await;
    let dir = TempDir::new("kmsauth");
    let moto = PeerServer::moto(&dir.0).await;
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let made = {
        let output = Command::new(signer_e2e::venv_bin("python"))
            .arg(signer_e2e::root().join("tests/python/auth_clients.py"))
            .args(["kmsauth-tokens", &moto.url])
            .envs(env)
            .output()
            .unwrap();
        let parsed: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
        parsed
    };
    let setup = Setup::new(
        "",
        &kinto.url,
        RESOURCES,
        &format!(
            "[auth]\npolicies = [\"basicauth\", \"kmsauth\"]\n[auth.basicauth.users]\nops = \"{}\"\n\
             [auth.kmsauth]\nauth_key = \"alias/signer-auth\"\nuser_auth_key = [\"alias/signer-user\"]\n\
             scoped_auth_keys = {{ \"alias/signer-scoped\" = \"deploy\" }}\nto_auth_context = \"kinto-signer\"\n\
             region = \"us-east-1\"\nendpoint_url = \"{}\"\n\
             [permissions.resources.\"*\"]\nsign = [\"kmsauth:service/ci-bot\", \"kmsauth:user/alice\", \"scope:deploy\"]\n\
             [feed]\nenabled = false\n",
            hash_password("ops-pw"),
            moto.url
        ),
    );
    let api = Api::start_env(&setup, 0, free_port(), &env).await;
    let cases = made["cases"].as_object().unwrap();
    for (case, token) in cases {
        let (user, token_text) = (
            token["username"].as_str().unwrap(),
            token["token"].as_str().unwrap(),
        );
        let (status, _, body) = api
            .request(
                Method::POST,
                "/v1/jobs",
                &[("x-auth-from", user), ("x-auth-token", token_text)],
                Some(JOB),
            )
            .await;
        let python_accepts = token["python"] == "valid";
        if case == "multi_day" {
            // The Python validator reads `timedelta.seconds`: a day and five minutes passes its 60-minute cap.
            assert!(python_accepts, "{token}");
            assert_eq!(status, 401, "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("more than the 3600 s allowed"),
                "{body}"
            );
            continue;
        }
        assert_eq!(
            status == 202,
            python_accepts,
            "{case}: ours {status} {body}, Python {}",
            token["python"]
        );
    }
    let accepted = |case: &str| cases[case]["python"] == "valid";
    assert!(["v1", "v2_service", "v2_user", "scoped_key"]
        .iter()
        .all(|c| accepted(c)));
    assert!([
        "wrong_to",
        "user_token_on_a_service_key",
        "key_not_allowed",
        "expired",
        "tampered",
        "from_mismatch"
    ]
    .iter()
    .all(|c| !accepted(c)));
    let v2 = &cases["v2_service"];
    let (status, _, body) = api
        .as_caller(&basic(
            v2["username"].as_str().unwrap(),
            v2["token"].as_str().unwrap(),
        ))
        .post("/v1/jobs", JOB)
        .await;
    assert_eq!(
        (status, &body["data"]["requested_by"]),
        (202, &json!("kmsauth:service/ci-bot")),
        "{body}"
    );
    // Basic credentials of a configured user stay basicauth's, with kmsauth listed after it.
    let (status, _, body) = api
        .as_caller(&basic("ops", "ops-pw"))
        .post("/v1/jobs", JOB)
        .await;
    assert_eq!(status, 403, "ops is known but not granted sign: {body}");
    let log = api.process.log_text();
    assert!(
        cases
            .values()
            .all(|c| !log.contains(c["token"].as_str().unwrap())),
        "a token reached the log"
    );
}

/// A Kinto whose listener posts to an API to come on `api_port` (signed with `WEBHOOK_SECRET`), its editor, and
/// "eve", a Kinto user the service's permissions grant nothing.
async fn kinto_with_an_outsider(api_port: u16) -> (TempDir, KintoServer, KintoAdmin, KintoAdmin) {
    let dir = TempDir::new("kinto-permissions");
    let kinto = KintoServer::start_with_webhook(
        &dir.0,
        &format!("http://127.0.0.1:{api_port}/v1/webhooks/kinto"),
        WEBHOOK_SECRET,
        "ws",
    )
    .await;
    let editor = kinto.editor();
    let outsider = editor.as_user("eve", "eve-pw");
    (dir, kinto, editor, outsider)
}

/// The service's settings for those tests: `queue` lines (after `[queue]`), the webhook's secret, Basic auth with
/// the operator `ops` as admin, and only `editor_id` granted signatures of `ws/cfr`.
fn guarded_settings(queue: &str, editor_id: &str) -> String {
    format!(
        "{FAST_QUEUE}{queue}[api]\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n[auth]\npolicies = [\"basicauth\"]\n\
         [auth.basicauth.users]\nops = \"{}\"\n[permissions]\nadmin = [\"basicauth:ops\"]\n\
         [permissions.resources.\"ws/cfr\"]\nsign = [\"{editor_id}\"]\n[feed]\nenabled = false\n",
        hash_password("ops-pw")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kinto_user_without_a_grant_is_refused_by_the_worker_and_the_status_is_put_back() {
    let api_port = free_port();
    let (_dir, kinto, editor, outsider) = kinto_with_an_outsider(api_port).await;
    let editor_id = editor.principal().await;
    editor
        .create_source(
            "ws",
            "cfr",
            json!({"status": "work-in-progress"}),
            &sample_records(20, 3),
        )
        .await;
    let setup = Setup::new("", &kinto.url, RESOURCES, &guarded_settings("", &editor_id));
    let mut api = Api::start_on(&setup, 1, api_port).await;
    api.authorization = Some(basic("ops", "ops-pw"));
    let job = |n: usize| {
        let api = &api;
        async move {
            let id = eventually(30, &format!("job #{n}"), || async {
                let (_, jobs) = api.get("/v1/jobs?resource=ws/cfr").await;
                let jobs = jobs["data"].as_array().cloned().unwrap_or_default();
                (jobs.len() >= n).then(|| jobs[jobs.len() - n]["id"].as_str().unwrap().to_owned())
            })
            .await;
            api.wait_final(&id, 60).await
        }
    };

    editor
        .patch_collection("ws", "cfr", json!({"status": "to-sign"}))
        .await;
    let granted = job(1).await;
    assert_eq!(granted["data"]["state"], "succeeded", "{granted}");
    setup.assert_verifies(&kinto.url, "prod", "cfr", 20);

    outsider
        .patch_collection("ws", "cfr", json!({"status": "to-sign"}))
        .await;
    let refused = job(2).await;
    assert_eq!(refused["data"]["state"], "failed", "{refused}");
    let error = refused["data"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("may not request a sign of /buckets/ws/collections/cfr (permissions)"),
        "{error}"
    );
    let source = editor.collection("ws", "cfr").await.unwrap();
    assert_eq!(
        source["status"], "signed",
        "the status before the refused request is back: {source}"
    );
    assert_ne!(source["last_signature_by"], refused["data"]["requested_by"]);
    let scrape = api.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            "signer_auth_failures_total",
            &[("scheme", "kinto"), ("reason", "forbidden")]
        ),
        Some(1.0)
    );
}

/// Where the jobs of `a_kinto_users_change_never_rides_on_an_operators_queued_job` wait, and how workers learn of
/// them.
#[derive(Clone, Copy, Debug)]
enum Queue {
    Sqlite,
    Postgres,
    PostgresRabbitmq,
}

/// Issue 32, item 1, as the attack: while an operator's API job for a collection waits in the queue (no worker
/// free), a Kinto user with no grant asks for a rollback; the webhook's job coalesces onto the operator's. It must
/// then run as that user's request and be refused, not carried out on the operator's authority: the editor's
/// pending record stays, the destination keeps its signed records.
async fn a_kinto_users_change_never_rides_on_an_operators_queued_job(queue: Queue) {
    let api_port = free_port();
    let (_dir, kinto, editor, outsider) = kinto_with_an_outsider(api_port).await;
    let (editor_id, outsider_id) = (editor.principal().await, outsider.principal().await);
    editor
        .create_source("ws", "cfr", json!({}), &sample_records(20, 3))
        .await;
    let db = match queue {
        Queue::Sqlite => None,
        Queue::Postgres | Queue::PostgresRabbitmq => Some(TestDb::create().await),
    };
    let rabbitmq_queue = unique_queue();
    let dispatch = match queue {
        Queue::PostgresRabbitmq => format!(
            "dispatch = \"rabbitmq\"\n{}",
            dispatch_settings(&shared_url(), &rabbitmq_queue)
        ),
        Queue::Sqlite | Queue::Postgres => String::new(),
    };
    let setup = Setup::new(
        db.as_ref().map_or("", |db| db.url.as_str()),
        &kinto.url,
        RESOURCES,
        &guarded_settings(&dispatch, &editor_id),
    );
    // The API takes calls; the worker is a process of its own, started when the queue should move.
    let mut api = Api::start_on(&setup, 0, api_port).await;
    api.authorization = Some(basic("ops", "ops-pw"));
    let worker = || {
        Process::spawn(
            "signer-worker",
            &[],
            &setup.config,
            setup
                .dir
                .0
                .join(format!("worker-{}.log", uuid::Uuid::new_v4().simple())),
        )
    };

    let first = api.sign("ws/cfr").await;
    let running = worker();
    let first = api.wait_final(&first, 60).await;
    assert_eq!(first["data"]["state"], "succeeded", "{first}");
    drop(running);
    setup.assert_verifies(&kinto.url, "prod", "cfr", 20);

    // The editor's change, waiting for a review; the operator queues a re-sign while no worker runs.
    editor
        .put_records(
            "ws",
            "cfr",
            &[json!({"id": "pending", "title": "not reviewed yet"})],
        )
        .await;
    let queued = api.sign("ws/cfr").await;
    outsider
        .patch_collection("ws", "cfr", json!({"status": "to-rollback"}))
        .await;
    let joined = eventually(30, "the rollback to join the queued job", || async {
        let (_, job) = api.get(&format!("/v1/jobs/{queued}")).await;
        (job["data"]["requested_by"] == outsider_id.as_str()).then_some(job)
    })
    .await;
    assert_eq!(joined["data"]["kind"], "rollback", "{joined}");

    let running = worker();
    let done = api.wait_final(&queued, 60).await;
    drop(running);
    assert_eq!(done["data"]["state"], "failed", "{done}");
    let error = done["data"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "{outsider_id} may not request a rollback of /buckets/ws/collections/cfr (permissions)"
        )),
        "{queue:?}: {done}"
    );
    let records = editor.records("ws", "cfr").await;
    assert!(
        records.iter().any(|r| r["id"] == "pending"),
        "{queue:?}: the editor's pending record survives"
    );
    setup.assert_verifies(&kinto.url, "prod", "cfr", 20);
    if let Queue::PostgresRabbitmq = queue {
        TestBroker::connect(&shared_url(), &rabbitmq_queue)
            .await
            .delete()
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kinto_users_change_never_rides_on_an_operators_queued_job_sqlite() {
    a_kinto_users_change_never_rides_on_an_operators_queued_job(Queue::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kinto_users_change_never_rides_on_an_operators_queued_job_postgres() {
    a_kinto_users_change_never_rides_on_an_operators_queued_job(Queue::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kinto_users_change_never_rides_on_an_operators_queued_job_rabbitmq() {
    a_kinto_users_change_never_rides_on_an_operators_queued_job(Queue::PostgresRabbitmq).await;
}

/// The listener's signature over a webhook call sent at `timestamp` (`sha256=<hex>` of `<ts>.<body>`).
fn webhook_signature(secret: &str, timestamp: i64, body: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn signed_call(api: &Api, event: &str, timestamp: i64, signature: &str) -> (u16, Value) {
    let timestamp = timestamp.to_string();
    let headers = [
        ("x-signer-timestamp", timestamp.as_str()),
        ("x-signer-signature", signature),
    ];
    let (status, _, body) = api
        .request(Method::POST, "/v1/webhooks/kinto", &headers, Some(event))
        .await;
    (status, body)
}

/// Issue 32, item 2, as the attack: a captured signed call sent again, to the same API process and to another
/// one on the same job store, within the timestamp window. Only the first is taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_webhook_call_is_taken_once_whichever_api_process_gets_it() {
    let db = signer_e2e::db::TestDb::create().await;
    let secret = "webhook-secret";
    let setup = Setup::new(
        &db.url,
        "http://127.0.0.1:9/v1",
        RESOURCES,
        &format!("[api]\nwebhook_secret = \"{secret}\"\n[feed]\nenabled = false\n"),
    );
    let (first_api, second_api) = (Api::start(&setup, 0).await, Api::start(&setup, 0).await);
    let event = json!({
        "action": "update", "resource_name": "collection", "bucket_id": "ws", "collection_id": "cfr",
        "uri": "/buckets/ws/collections/cfr", "user_id": "account:alice", "timestamp": 1,
        "impacted_objects": [{"old": {"id": "cfr", "status": "work-in-progress"}, "new": {"id": "cfr", "status": "to-sign"}}]
    })
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let signed = webhook_signature(secret, now, &event);
    assert_eq!(signed_call(&first_api, &event, now, &signed).await.0, 202);
    for (name, api) in [("first", &first_api), ("second", &second_api)] {
        let (status, body) = signed_call(api, &event, now, &signed).await;
        assert_eq!(status, 409, "replay to the {name} process: {body}");
        assert_eq!(body["errno"], 122, "{body}");
    }
    // The same MAC in capitals is the same call.
    let shouted = signed.to_uppercase().replace("SHA256=", "sha256=");
    let (status, _) = signed_call(&second_api, &event, now, &shouted).await;
    assert_eq!(status, 409);
    // A new call (a new timestamp, so a new signature) is taken: it joins the queued job.
    let resigned = webhook_signature(secret, now + 1, &event);
    let (status, body) = signed_call(&second_api, &event, now + 1, &resigned).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["coalesced"], true, "{body}");
    let (_, jobs) = first_api.get("/v1/jobs").await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 1, "{jobs}");
    for (api, replays) in [(&first_api, 1.0), (&second_api, 2.0)] {
        let scrape = api.metrics().await;
        assert_eq!(
            metric(
                &scrape,
                "signer_auth_failures_total",
                &[("scheme", "webhook_hmac"), ("reason", "replayed")]
            ),
            Some(replays)
        );
    }
}
