//! `signer-worker`: joins the pool of workers that sign Kinto collections.

use clap::Parser;
use signer_worker::config::Settings;
use signer_worker::service::{init_logging, serve_metrics, shutdown_on_signals, Service};
use std::path::PathBuf;
use std::process::ExitCode;

/// Claims signing jobs from the job store and runs them: snapshot the source collection, push the changes to the
/// destination, sign it, mark the source signed. Run as many as you like, on as many machines: they cooperate
/// through the database alone.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML config file (every setting can also come from SIGNER_* environment variables).
    #[arg(long, short, env = "SIGNER_CONFIG")]
    config: Option<PathBuf>,
    /// Jobs this process runs at once (default: worker.concurrency from the config).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Log one JSON object per line instead of text.
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.json_logs);
    // After logging, which reports a setting malloc refuses.
    signer_worker::allocator::tune();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return fatal(&e),
    };
    let concurrency = cli
        .concurrency
        .unwrap_or(settings.worker.concurrency)
        .max(1);
    let service = match Service::start(settings).await {
        Ok(s) => s,
        Err(e) => return fatal(&e),
    };
    let shutdown = shutdown_on_signals();
    if let Some(listen) = service.settings.worker.metrics_listen.clone() {
        if let Err(e) = serve_metrics(&listen, service.store.clone(), shutdown.clone()).await {
            return fatal(&format!("cannot serve metrics on {listen}: {e}"));
        }
    }
    let pool = match service.spawn_pool(concurrency, shutdown) {
        Ok(pool) => pool,
        Err(e) => return fatal(&e),
    };
    if let Err(e) = pool.await {
        return fatal(&e);
    }
    ExitCode::SUCCESS
}

fn fatal(e: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!("{e}");
    ExitCode::FAILURE
}
