//! `sign`: asks a running signer-api for a signature and, with `--wait`, follows the job to its end with a
//! progress line whenever something changed.

use anyhow::Context as _;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct SignArgs {
    /// The source collection: `bucket/collection` or `/buckets/b/collections/c`.
    resource: String,
    /// Base URL of the signer API.
    #[arg(long, env = "SIGNER_API_URL", default_value = "http://127.0.0.1:8000")]
    api: String,
    /// Follow the job until it finishes; exit 1 if it fails.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Sent as the `Authorization` header (`Basic …`, `Bearer …`) when the API asks callers who they are.
    #[arg(long, env = "SIGNER_API_AUTHORIZATION", hide_env_values = true)]
    authorization: Option<String>,
}

pub async fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = &args.authorization {
        let mut value = reqwest::header::HeaderValue::from_str(value)
            .context("--authorization is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()?;
    let api = args.api.trim_end_matches('/');
    let response = http
        .post(format!("{api}/v1/jobs"))
        .json(&json!({"resource": args.resource}))
        .send()
        .await
        .with_context(|| {
            format!("signer API unreachable at {api}: is `signer-api serve` running?")
        })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .context("the API answered something that is not JSON")?;
    if status.as_u16() != 202 {
        anyhow::bail!(
            "{status}: {}",
            body["message"].as_str().unwrap_or("no message")
        );
    }
    let id = body["data"]["id"]
        .as_str()
        .context("the API answered no job id")?
        .to_owned();
    let coalesced = if body["coalesced"] == true {
        " (joined the job already queued)"
    } else {
        ""
    };
    println!("job {id} queued{coalesced}");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut shown = String::new();
    loop {
        let job: Value = http
            .get(format!("{api}/v1/jobs/{id}"))
            .send()
            .await?
            .json()
            .await?;
        let line = describe(&job["data"]);
        if line != shown {
            println!("{line}");
            shown = line;
        }
        match job["data"]["state"].as_str() {
            Some("succeeded") => return Ok(ExitCode::SUCCESS),
            Some("failed" | "cancelled") => return Ok(ExitCode::FAILURE),
            _ if Instant::now() > deadline => {
                anyhow::bail!("job {id} still not finished after {}s", args.timeout)
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// One line saying where a job is.
fn describe(job: &Value) -> String {
    let attempt = &job["attempt"];
    let progress = &job["progress"];
    match job["state"].as_str().unwrap_or("unknown") {
        "running" => match progress["phase"].as_str() {
            Some("snapshot") => {
                format!(
                    "running (attempt {attempt}): reading {}: {} records",
                    progress["collection"].as_str().unwrap_or("?"),
                    progress["records_fetched"]
                )
            }
            Some("push") => format!(
                "running (attempt {attempt}): pushing to {}: {}/{} changes",
                progress["collection"].as_str().unwrap_or("?"),
                progress["records_pushed"],
                progress["records_to_push"]
            ),
            Some(phase) => format!(
                "running (attempt {attempt}): {phase} {}",
                progress["collection"].as_str().unwrap_or("")
            ),
            None => format!("running (attempt {attempt})"),
        },
        "succeeded" => {
            let d = &job["result"]["destination"];
            format!(
                "succeeded: {} signed, {} records (+{} ~{} -{}), timestamp {}, signature {}…",
                d["uri"].as_str().unwrap_or("?"),
                d["records"],
                d["created"],
                d["updated"],
                d["deleted"],
                d["timestamp"],
                d["signature"]["signature"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(20)
                    .collect::<String>()
            )
        }
        "queued" if job["last_error"].is_string() => {
            format!(
                "queued for attempt {} after: {}",
                job["attempt"].as_i64().unwrap_or(0) + 1,
                job["last_error"].as_str().unwrap_or("")
            )
        }
        state @ ("failed" | "cancelled") => format!(
            "{state}: {}",
            job["last_error"].as_str().unwrap_or("no reason given")
        ),
        state => state.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_say_what_is_happening() {
        let pushing = json!({"state": "running", "attempt": 1, "progress": {"phase": "push",
            "collection": "/buckets/main/collections/c", "records_fetched": 10, "records_to_push": 10, "records_pushed": 5}});
        assert_eq!(
            describe(&pushing),
            "running (attempt 1): pushing to /buckets/main/collections/c: 5/10 changes"
        );
        let failed = json!({"state": "failed", "attempt": 1, "last_error": "record \"x\": field a contains a float"});
        assert_eq!(
            describe(&failed),
            "failed: record \"x\": field a contains a float"
        );
        let retrying = json!({"state": "queued", "attempt": 1, "last_error": "503"});
        assert_eq!(describe(&retrying), "queued for attempt 2 after: 503");
        assert_eq!(
            describe(&json!({"state": "queued", "attempt": 0})),
            "queued"
        );
    }
}
