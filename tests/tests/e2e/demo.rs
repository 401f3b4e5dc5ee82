//! `make demo` on the embedded store (no database configured): it creates, signs and verifies a collection and
//! says so. Its prerequisites are not remade here: the binaries are `make test`'s, and Kinto is the test venv's.

use signer_e2e::service::TempDir;
use signer_e2e::{free_port, root};
use std::process::Command;

#[test]
fn make_demo_signs_and_verifies_a_collection_without_postgres() {
    let dir = TempDir::new("demo");
    let output = Command::new("make")
        .args([
            "--no-print-directory",
            "-o",
            "build-run",
            "-o",
            "run-venv",
            "demo",
        ])
        .current_dir(root())
        .env("SIGNER_LOCAL_DIR", &dir.0)
        .env("KINTO_VENV", root().join(".venv"))
        .env("KINTO_PORT", free_port().to_string())
        .env("API_PORT", free_port().to_string())
        .env_remove("SIGNER_DATABASE_URL")
        .output()
        .expect("make runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "make demo failed:\n{stdout}\n{stderr}"
    );
    for expected in [
        "== creating /buckets/main-workspace/collections/demo-",
        "succeeded: /buckets/main/collections/demo-",
        // The collection's first signature (made when it was created) may have published some records already.
        "signed, 500 records (+",
        "records     500",
        "verdict     VALID",
        "== demo OK",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        dir.0.join("signer.db").exists(),
        "the jobs were kept in the embedded store"
    );
}
