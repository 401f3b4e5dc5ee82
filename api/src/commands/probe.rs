//! `probe`: the container health check. The runtime image has no HTTP client of its own (no curl, no wget), so
//! the binary asks: one GET, exit 0 on a 2xx answer, 1 on anything else or no answer in time.

use signer_worker::error_text;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// What to ask: signer-api's readiness by default; a worker's liveness is `http://127.0.0.1:9102/__lbheartbeat__`
    /// (its `worker.metrics_listen`).
    #[arg(long, default_value = "http://127.0.0.1:8000/__ready__")]
    url: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

pub async fn probe(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .build()?;
    match http.get(&args.url).send().await {
        Ok(answer) if answer.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(answer) => {
            eprintln!("{}: {}", args.url, answer.status());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            let why = error_text::one_line(error_text::chain(&e));
            eprintln!("{}: no answer ({why})", args.url);
            Ok(ExitCode::FAILURE)
        }
    }
}
