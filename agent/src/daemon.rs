//! `steadfast run`: load the probes, start the tasks that read them, serve `/metrics`, and
//! detach everything on SIGTERM or SIGINT (SIGHUP re-checks the config: see `lifecycle`).

use std::{
    os::fd::OwnedFd,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::io::unix::AsyncFd;

use crate::{
    config::Config,
    ebpf::{ProbeError, Probes},
    lifecycle::Lifecycle,
    metrics::{self, server::AppState},
    pipeline::Pipeline,
};

/// How often the kernel maps are folded into series even when nobody scrapes, so process
/// keys are cleaned up and the LRU does not evict unread counts.
const COLLECT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error("listening on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("registering the ring buffer with epoll: {0}")]
    Epoll(std::io::Error),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// Runs until SIGTERM or SIGINT; `config_path` is re-read (and only validated) on SIGHUP.
pub async fn run(config: Config, config_path: &Path) -> Result<(), DaemonError> {
    let lifecycle = Lifecycle::install(config_path, &config).map_err(DaemonError::Signals)?;

    let listener = tokio::net::TcpListener::bind(config.http.listen_address)
        .await
        .map_err(|source| DaemonError::Listen {
            address: config.http.listen_address,
            source,
        })?;

    let Probes {
        attached,
        syscall_hist,
        process_events,
        loss,
    } = Probes::load(&config)?;
    tracing::info!(syscalls = syscall_hist.is_some(), "probes attached");
    let events_ready = process_events.readiness().map_err(DaemonError::Epoll)?;
    let pipeline = Arc::new(Mutex::new(Pipeline::new(
        Some(process_events),
        syscall_hist,
        Some(loss),
        config.services.max_services,
    )));

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(read_process_events(events_ready, pipeline.clone()));
    tasks.spawn(collect_periodically(pipeline.clone()));

    let state = AppState {
        registry: Arc::new(metrics::registry(pipeline.clone())),
        pipeline,
    };
    tracing::info!(address = %config.http.listen_address, "serving /metrics");
    if let Some(watchdog) = lifecycle.watchdog() {
        tasks.spawn(watchdog);
    }
    lifecycle.ready(&format!(
        "probes attached, serving /metrics on {}",
        config.http.listen_address
    ));
    axum::serve(listener, metrics::server::router(state))
        .with_graceful_shutdown(lifecycle.until_shutdown())
        .await
        .map_err(DaemonError::Serve)?;
    tasks.abort_all();
    drop(attached);
    tracing::info!("probes detached, exiting");
    Ok(())
}

/// Sleeps in epoll until process events arrive, then applies them.
async fn read_process_events(ready: AsyncFd<OwnedFd>, pipeline: Arc<Mutex<Pipeline>>) {
    loop {
        let mut guard = match ready.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "waiting on the process event ring buffer failed");
                return;
            }
        };
        pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain_process_events();
        guard.clear_ready();
    }
}

async fn collect_periodically(pipeline: Arc<Mutex<Pipeline>>) {
    let mut tick = tokio::time::interval(COLLECT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        pipeline.lock().unwrap_or_else(|e| e.into_inner()).collect();
    }
}
