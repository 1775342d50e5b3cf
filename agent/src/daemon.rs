//! `steadfast run`: load the probes, start the tasks that read them, serve `/metrics`, and
//! detach everything on SIGTERM or SIGINT.

use std::{
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    config::Config,
    ebpf::{Attached, ProbeError, Probes},
    metrics::{self, server::AppState},
    pipeline::{Pipeline, Sources},
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

pub async fn run(config: Config) -> Result<(), DaemonError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let listener = tokio::net::TcpListener::bind(config.http.listen_address)
        .await
        .map_err(|source| DaemonError::Listen {
            address: config.http.listen_address,
            source,
        })?;

    let probes = Probes::load(&config)?;
    tracing::info!(
        syscalls = probes.syscalls.is_some(),
        tasks = probes.tasks.is_some(),
        "probes attached"
    );
    let (attached, sources): (Attached, Sources) = probes.into();
    let mut wakeups = Vec::new();
    if let Some(ring) = &sources.process_events {
        wakeups.push(ring.readiness().map_err(DaemonError::Epoll)?);
    }
    if let Some(maps) = &sources.syscalls {
        wakeups.push(maps.slow_events.readiness().map_err(DaemonError::Epoll)?);
    }
    let pipeline = Arc::new(Mutex::new(Pipeline::new(sources, &config)));

    let mut tasks = tokio::task::JoinSet::new();
    for ready in wakeups {
        tasks.spawn(drain_on_wakeup(ready, pipeline.clone()));
    }
    tasks.spawn(collect_periodically(pipeline.clone()));

    let mut registry = metrics::registry(pipeline.clone());
    let rules = crate::rules::runtime::setup(&config, &mut registry, &mut tasks);
    let registry = Arc::new(registry);
    crate::rules::runtime::spawn(&rules, registry.clone(), &mut tasks);
    let state = AppState { registry, pipeline };
    tracing::info!(address = %config.http.listen_address, "serving /metrics");
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: detaching probes"),
            _ = sigint.recv() => tracing::info!("SIGINT: detaching probes"),
        }
    };
    let router = metrics::server::router(state).merge(crate::rules::runtime::router(&rules));
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(DaemonError::Serve)?;
    tasks.abort_all();
    rules.shutdown();
    drop(attached);
    tracing::info!("probes detached, exiting");
    Ok(())
}

/// Sleeps in epoll until a ring buffer has records, then applies every waiting event.
async fn drain_on_wakeup(ready: AsyncFd<OwnedFd>, pipeline: Arc<Mutex<Pipeline>>) {
    loop {
        let mut guard = match ready.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "waiting on a ring buffer failed; draining once a second only");
                return;
            }
        };
        pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain_events();
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
