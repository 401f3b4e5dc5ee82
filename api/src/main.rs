//! `signer-api`: the HTTP API (and, with `--workers`, in-process workers), plus `keygen` and `migrate`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use signer_api::{router, AppState};
use signer_worker::config::Settings;
use signer_worker::service::{init_logging, shutdown_on_signals, Service};
use signer_worker::store::Store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The Kinto signing service's API: takes signing requests (from a Kinto webhook or a direct call), records them
/// as jobs in Postgres and answers their status. Workers (`signer-worker`, or `serve --workers N`) run the jobs.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML config file (every setting can also come from SIGNER_* environment variables).
    #[arg(long, short, global = true, env = "SIGNER_CONFIG")]
    config: Option<PathBuf>,
    /// Log one JSON object per line instead of text.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// Address to listen on (default: api.listen from the config).
        #[arg(long)]
        listen: Option<String>,
        /// Also run this many workers in this process (a single-node deployment needs no separate worker).
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// Write a new P-384 key pair: PRIVATE (mode 0600) and PRIVATE with `.pub` before its extension.
    Keygen {
        /// Where to write the private key (PKCS#8 PEM).
        #[arg(long, default_value = "ecdsa.private.pem")]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Apply the database migrations and exit (serve and the workers also apply them at start).
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.json_logs);
    let result = match cli.command {
        Command::Serve { listen, workers } => serve(cli.config.as_deref(), listen, workers).await,
        Command::Keygen { out, force } => keygen(&out, force),
        Command::Migrate => migrate(cli.config.as_deref()).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    config: Option<&Path>,
    listen: Option<String>,
    workers: usize,
) -> anyhow::Result<()> {
    let settings = Settings::load(config)?;
    let listen = listen.unwrap_or_else(|| settings.api.listen.clone());
    let max_body = settings.api.max_body_bytes;
    let service = Service::start(settings).await?;
    let state = AppState::new(service.store.clone(), &service.settings)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, workers, "signer-api listening");

    let shutdown = shutdown_on_signals();
    let pool = (workers > 0).then(|| service.spawn_pool(workers, shutdown.clone()));
    axum::serve(listener, router(state, max_body))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("HTTP server failed")?;
    if let Some(pool) = pool {
        pool.await.context("worker pool panicked")?;
    }
    Ok(())
}

fn keygen(out: &Path, force: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let public_path = public_key_path(out);
    let (private, public) = signer_worker::signing::generate_key_pair();
    let open = |path: &Path, mode: u32| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).mode(mode);
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        options.open(path).with_context(|| {
            format!(
                "cannot create {} (use --force to replace it)",
                path.display()
            )
        })
    };
    // 0600 from creation, not chmod afterwards: the key is never readable by others, even briefly.
    open(out, 0o600)?.write_all(private.as_bytes())?;
    std::fs::set_permissions(out, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    open(&public_path, 0o644)?.write_all(public.as_bytes())?;
    println!(
        "private key: {}\npublic key:  {}",
        out.display(),
        public_path.display()
    );
    Ok(())
}

/// `keys/ec.pem` → `keys/ec.pub.pem`.
fn public_key_path(private: &Path) -> PathBuf {
    let stem = private
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ecdsa".into());
    let ext = private
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pem".into());
    let stem = stem.strip_suffix(".private").unwrap_or(&stem).to_owned();
    private.with_file_name(format!("{stem}.pub.{ext}"))
}

async fn migrate(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = Settings::load(config)?;
    let store = Store::open(settings.database_url.as_deref(), &settings.data_dir, 1).await?;
    println!("migrations applied to {}", store.describe());
    Ok(())
}
