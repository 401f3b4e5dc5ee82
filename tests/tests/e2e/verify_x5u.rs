//! `x5u` certificate chains: the chain checks on a PKI made by Python's `cryptography`, then a collection signed
//! with the end-entity key and published with its x5u, verified by `signer-api verify` from the served chain.

use serde_json::json;
use signer_e2e::kinto::{KintoServer, SIGNER};
use signer_e2e::records::sample_records;
use signer_e2e::service::{run_binary, Api, Setup, TempDir};
use signer_e2e::{eventually, free_port, root, venv_bin, FAST_QUEUE};
use signer_worker::signing::x5u::{check_chain, read_roots, ChainError, TrustAnchors};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NAME: &str = "demo.content-signature.example";

fn make_pki(dir: &std::path::Path) -> String {
    let status = Command::new(venv_bin("python"))
        .arg(root().join("tests/python/make_chain.py"))
        .arg(dir)
        .arg(NAME)
        .status()
        .expect("python runs");
    assert!(status.success());
    std::fs::read_to_string(dir.join("root.sha256")).unwrap()
}

fn check(dir: &std::path::Path, file: &str, anchors: &TrustAnchors) -> Result<String, ChainError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let pem = std::fs::read(dir.join(file)).unwrap();
    check_chain(&pem, now, NAME, anchors).map(|v| v.root_sha256)
}

#[test]
fn chains_are_checked_like_firefox_does() {
    let pki = TempDir::new("pki");
    let root_sha256 = make_pki(&pki.0);
    let pinned = TrustAnchors::Pinned(root_sha256.clone());
    let roots =
        TrustAnchors::Roots(read_roots(&std::fs::read(pki.0.join("roots.pem")).unwrap()).unwrap());
    assert_eq!(check(&pki.0, "good.pem", &pinned).unwrap(), root_sha256);
    assert_eq!(check(&pki.0, "good.pem", &roots).unwrap(), root_sha256);
    assert_eq!(
        check(&pki.0, "no-root.pem", &roots).unwrap(),
        root_sha256,
        "with a roots file the chain may leave its root out"
    );
    let colons: String = root_sha256
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    assert!(
        check(&pki.0, "good.pem", &TrustAnchors::Pinned(colons)).is_ok(),
        "fingerprints with colons and upper case"
    );
    assert!(matches!(
        check(&pki.0, "good.pem", &TrustAnchors::Pinned("0".repeat(64))),
        Err(ChainError::WrongRoot { .. })
    ));

    // Each flaw, refused whichever anchor is named.
    for anchors in [&pinned, &roots] {
        let refused = |file: &str| check(&pki.0, file, anchors).unwrap_err();
        assert!(matches!(refused("expired.pem"), ChainError::Expired(_)));
        assert_eq!(refused("no-eku.pem"), ChainError::NotCodeSigning);
        assert!(matches!(
            refused("wrong-name.pem"),
            ChainError::WrongName { .. }
        ));
        assert_eq!(refused("forged.pem"), ChainError::BadSignature);
        assert_eq!(
            refused("issuer-name.pem"),
            ChainError::UnknownIssuer,
            "signed by the intermediate's key, but naming another issuer: names must chain"
        );
        assert!(matches!(
            refused("inter-not-ca.pem"),
            ChainError::NotCa { .. }
        ));
        assert!(
            matches!(refused("no-keycertsign.pem"), ChainError::NotCa { .. }),
            "an intermediate whose keyUsage lacks keyCertSign signs nothing"
        );
        assert_eq!(refused("critical-ext.pem"), ChainError::CriticalExtension);
    }
    // The path-length test's root is another certificate (same key and name, pathLenConstraint 0): trusted by
    // its own pin, it still allows no intermediate.
    let pem = std::fs::read(pki.0.join("path-len.pem")).unwrap();
    let short_root = &pem[pem
        .windows(27)
        .rposition(|w| w == b"-----BEGIN CERTIFICATE-----")
        .unwrap()..];
    let short_root = read_roots(short_root).unwrap();
    assert_eq!(
        check(&pki.0, "path-len.pem", &TrustAnchors::Roots(short_root)),
        Err(ChainError::PathLength)
    );

    // An attacker's own chain, well formed, for the same name: only "any root" accepts it.
    assert!(matches!(
        check(&pki.0, "rogue.pem", &pinned),
        Err(ChainError::WrongRoot { .. })
    ));
    assert_eq!(
        check(&pki.0, "rogue.pem", &roots),
        Err(ChainError::BadSignature),
        "its intermediate names the real root as issuer, but the real root's key did not sign it"
    );
    assert!(check(&pki.0, "rogue.pem", &TrustAnchors::AnyRoot).is_ok());

    let pem = std::fs::read(pki.0.join("good.pem")).unwrap();
    let end_entity_only = &pem[..pem
        .windows(25)
        .position(|w| w == b"-----END CERTIFICATE-----")
        .unwrap()
        + 25];
    for anchors in [&pinned, &TrustAnchors::AnyRoot] {
        assert!(matches!(
            check_chain(end_entity_only, Duration::ZERO, NAME, anchors),
            Err(ChainError::TooShort(1))
        ));
    }
}

/// `python -m http.server` over the PKI directory: where the x5u points.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn verify(url: &str, args: &[&str]) -> (i32, String) {
    run_binary("signer-api", ["verify", url].iter().chain(args))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collection_signed_with_an_x5u_verifies_from_the_served_chain() {
    let pki = TempDir::new("pki");
    let root_sha256 = make_pki(&pki.0);
    let port = free_port();
    let _server = Served(
        Command::new(venv_bin("python"))
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&pki.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("http.server starts"),
    );
    let x5u = format!("http://127.0.0.1:{port}/good.pem");
    eventually(20, "the chain to be served", || {
        let x5u = x5u.clone();
        async move {
            reqwest::get(&x5u)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await;

    let kinto = KintoServer::start().await;
    kinto
        .editor()
        .create_source("ws", "certs", json!({}), &sample_records(30, 3))
        .await;
    let setup = Setup::new("", &kinto.url, "ws/certs -> prod/certs", FAST_QUEUE);
    let config = std::fs::read_to_string(&setup.config).unwrap().replace(
        &format!("private_key = \"{}\"", setup.private_key.display()),
        &format!(
            "private_key = \"{}\"\nx5u = \"{x5u}\"",
            pki.0.join("ee.key.pem").display()
        ),
    );
    std::fs::write(&setup.config, config).unwrap();
    let api = Api::start(&setup, 1).await;
    let job = api.wait_final(&api.sign("ws/certs").await, 60).await;
    assert_eq!(job["data"]["state"], "succeeded", "{job}");
    assert_eq!(
        job["data"]["result"]["destination"]["signature"]["x5u"],
        x5u.as_str()
    );

    let url = format!("{}/buckets/prod/collections/certs", kinto.url);
    let (code, text) = verify(
        &url,
        &["--signer-name", NAME, "--root-sha256", &root_sha256],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("x5u chain for demo.content-signature.example (pinned root")
            && text.contains("verdict     VALID"),
        "{text}"
    );

    let (code, text) = verify(&url, &["--signer-name", NAME]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("name the trust anchor") && !text.contains("VALID"),
        "no anchor named, no verdict: {text}"
    );

    let roots = pki.0.join("roots.pem");
    let (code, text) = verify(
        &url,
        &["--signer-name", NAME, "--roots", roots.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("(trusted root"), "{text}");

    let (code, text) = verify(&url, &["--root-sha256", &root_sha256]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("not \"remote-settings.content-signature.mozilla.org\""),
        "{text}"
    );

    let (code, text) = verify(
        &url,
        &["--signer-name", NAME, "--root-sha256", &"ab".repeat(32)],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not the pinned"), "{text}");

    // The same key under an attacker's own root: only --insecure-any-root calls it valid, and says so.
    let rogue = format!("http://127.0.0.1:{port}/rogue.pem");
    let signer = kinto.editor().as_user(SIGNER.0, SIGNER.1);
    let mut signature = signer.collection("prod", "certs").await.unwrap()["signature"].clone();
    signature["x5u"] = rogue.into();
    signer
        .patch_collection(
            "prod",
            "certs",
            json!({ "signature": signature, "signatures": [signature] }),
        )
        .await;
    let (code, text) = verify(
        &url,
        &["--signer-name", NAME, "--root-sha256", &root_sha256],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not the pinned"), "{text}");
    let (code, text) = verify(
        &url,
        &["--signer-name", NAME, "--roots", roots.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not signed by its issuer's key"), "{text}");
    let (code, text) = verify(&url, &["--signer-name", NAME, "--insecure-any-root"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("ANY root accepted (--insecure-any-root)"),
        "{text}"
    );
}
