//! `/openapi.json` is the API's contract: schemathesis (from PyPI) generates requests from it against the running
//! API, and every answer must be documented: no server error, no undocumented status, content type, header or
//! body shape.

use signer_e2e::db::TestDb;
use signer_e2e::kinto::KintoServer;
use signer_e2e::service::{Api, Setup};
use std::process::Command;

/// Response-side checks (what the API answers); the input-strictness checks are left out (JSON Schema calls
/// `1.0` an integer, serde does not).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let db = TestDb::create().await;
    let kinto = KintoServer::start().await;
    let setup = Setup::new(
        &db.url,
        &kinto.url,
        "ws/cfr -> prod/cfr",
        "[feed]\nenabled = false\n",
    );
    let api = Api::start(&setup, 0).await;
    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0", "{doc}");

    let output = Command::new(signer_e2e::venv_bin("schemathesis"))
        .current_dir(&setup.dir.0)
        .args(["run", &format!("{}/openapi.json", api.url)])
        .args([
            "--checks",
            CHECKS,
            "--max-examples",
            "60",
            "--seed",
            "20261122",
        ])
        .output()
        .expect("schemathesis runs (make venv installs it)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}
