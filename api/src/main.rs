//! `signer-api`: the HTTP API (and, with `--workers`, in-process workers), plus the operator's commands.

mod commands;

use clap::{Parser, Subcommand};
use signer_worker::service::init_logging;
use std::path::PathBuf;
use std::process::ExitCode;

/// The Kinto signing service's API: takes signing requests (from a Kinto webhook or a direct call), records them
/// as jobs in the job store and answers their status. Workers (`signer-worker`, or `serve --workers N`) run the jobs.
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
    /// Read a password from standard input and print its argon2id hash, for `[auth.basicauth] users`.
    HashPassword,
    /// Ask a running signer-api to sign a collection; with --wait, follow the job and exit 1 if it fails.
    Sign(commands::sign::SignArgs),
    /// Check a collection's signature the way a client does; exits 1 when it does not verify.
    Verify(commands::verify::VerifyArgs),
    /// Ask a running signer-api (or worker) whether it is ready: exit 0 on a 2xx answer, 1 otherwise (the
    /// container health check; the image has no curl).
    Probe(commands::probe::ProbeArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.json_logs);
    // After logging, which reports a setting malloc refuses.
    signer_worker::allocator::tune();
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Serve { listen, workers } => commands::serve::serve(config, listen, workers).await,
        Command::Keygen { out, force } => commands::keygen::keygen(&out, force),
        Command::Migrate => commands::serve::migrate(config).await,
        Command::HashPassword => commands::hash_password(),
        Command::Sign(args) => commands::sign::sign(args).await,
        Command::Verify(args) => commands::verify::verify(args).await,
        Command::Probe(args) => commands::probe::probe(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{}", signer_worker::error_text::one_line(e.chain()));
            ExitCode::FAILURE
        }
    }
}
