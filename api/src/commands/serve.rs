//! `serve` and `migrate`: the long-running API and the one-shot schema upgrade.

use anyhow::Context as _;
use signer_api::settings::Config;
use signer_api::{router, AppState};
use signer_worker::config::Settings;
use signer_worker::service::{shutdown_on_signals, Service};
use signer_worker::store::Store;
use std::path::Path;

pub async fn serve(
    config: Option<&Path>,
    listen: Option<String>,
    workers: usize,
) -> anyhow::Result<std::process::ExitCode> {
    let Config {
        service: settings,
        api,
        auth,
    } = Config::load(config)?;
    let listen = listen.unwrap_or_else(|| api.listen.clone());
    // Credentials' settings and keys are checked before anything connects anywhere.
    let tls = api
        .tls
        .as_ref()
        .map(signer_api::tls::server_config)
        .transpose()?;
    let auth = signer_auth::Authenticator::new(&auth).await?;
    let service = Service::start(settings).await?;
    let mut state = AppState::new(
        service.store.clone(),
        &service.settings,
        &api,
        service.health(),
        auth,
    )?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(address = %listener.local_addr()?, scheme, workers, "signer-api listening");

    let shutdown = shutdown_on_signals();
    state.draining = shutdown.clone();
    let delay = std::time::Duration::from_secs(api.shutdown_delay_seconds);
    let pool = match workers {
        0 => None,
        n => Some(service.spawn_pool(n, shutdown.clone())?),
    };
    let drained = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tracing::info!(
                ?delay,
                "draining: readiness fails; still serving until the delay is over"
            );
            tokio::time::sleep(delay).await;
        }
    };
    let limits = signer_api::server::Limits::of(&api);
    let app = router(state);
    signer_api::server::serve(listener, tls, app, limits, drained)
        .await
        .context("HTTP server failed")?;
    if let Some(pool) = pool {
        pool.await.context("worker pool panicked")?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

pub async fn migrate(config: Option<&Path>) -> anyhow::Result<std::process::ExitCode> {
    let settings = Settings::load(config)?;
    let store = Store::open(settings.database_url.as_deref(), &settings.data_dir, 1).await?;
    println!("migrations applied to {}", store.describe());
    Ok(std::process::ExitCode::SUCCESS)
}
