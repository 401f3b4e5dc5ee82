//! `signer-api verify` checks collections signed by the Python reference signer (kinto-signer 8.1.1 inside a real
//! Kinto) and refuses them once a record is tampered with.

use serde_json::json;
use signer_e2e::kinto::KintoServer;
use signer_e2e::records::sample_records;
use signer_e2e::service::{run_binary, Setup};

fn verify(url: &str, public_key: &std::path::Path) -> (i32, String) {
    run_binary(
        "signer-api",
        [
            std::ffi::OsStr::new("verify"),
            url.as_ref(),
            "--public-key".as_ref(),
            public_key.as_ref(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_accepts_the_reference_signers_signature_and_refuses_a_tampered_record() {
    // Only the key pair of the setup is used: the reference signer signs with it.
    let setup = Setup::new("", "http://unused/v1", "a/b -> c/d", "");
    let kinto = KintoServer::start_reference_signer(
        &setup.dir.0,
        "/buckets/ws -> /buckets/prod",
        &setup.private_key,
        &setup.public_key,
    )
    .await;
    let editor = kinto.editor();
    editor
        .create_source("ws", "cfr", json!({}), &sample_records(40, 21))
        .await;
    let signed = editor
        .patch_collection("ws", "cfr", json!({"status": "to-sign"}))
        .await;
    assert_eq!(
        signed["last_signature_by"]
            .as_str()
            .map(|s| s.starts_with("basicauth:")),
        Some(true),
        "{signed}"
    );

    let url = format!("{}/buckets/prod/collections/cfr", kinto.url);
    let (code, text) = verify(&url, &setup.public_key);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("records     40") && text.contains("verdict     VALID"),
        "{text}"
    );
    assert_eq!(
        setup.verify(&kinto.url, "prod", "cfr")["valid"],
        true,
        "the independent verifier agrees"
    );

    editor
        .patch_record("prod", "cfr", "rec-00007", json!({"title": "tampered"}))
        .await;
    let (code, text) = verify(&url, &setup.public_key);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("INVALID"), "{text}");

    let (code, text) = verify(&url, &setup.private_key);
    assert_eq!(code, 1, "a private key is not a public key: {text}");
    assert!(text.contains("is not a P-384 public key"), "{text}");
}
