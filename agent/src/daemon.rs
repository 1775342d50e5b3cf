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
    ebpf::{ProbeError, Probes},
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

pub async fn run(config: Config) -> Result<(), DaemonError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

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
        tcp,
    } = Probes::load(&config)?;
    tracing::info!(syscalls = syscall_hist.is_some(), "probes attached");
    let events_ready = process_events.readiness().map_err(DaemonError::Epoll)?;
    let tcp_ready = match &tcp {
        Some(t) => Some(t.events.readiness().map_err(DaemonError::Epoll)?),
        None => None,
    };
    let pipeline = Arc::new(Mutex::new(Pipeline::new(
        Some(process_events),
        syscall_hist,
        Some(loss),
        config.services.max_services,
    )));
    pipeline
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_tcp(tcp, config.probes.tcp.top_peers as usize);

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(read_process_events(events_ready, pipeline.clone()));
    tasks.spawn(collect_periodically(pipeline.clone()));
    if let Some(ready) = tcp_ready {
        tasks.spawn(read_tcp_events(ready, pipeline.clone()));
    }

    let state = AppState {
        registry: Arc::new(metrics::registry(pipeline.clone())),
        pipeline,
    };
    tracing::info!(address = %config.http.listen_address, "serving /metrics");
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: detaching probes"),
            _ = sigint.recv() => tracing::info!("SIGINT: detaching probes"),
        }
    };
    axum::serve(listener, metrics::server::router(state))
        .with_graceful_shutdown(shutdown)
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

/// Sleeps in epoll until the kernel forces a wakeup (the TCP ring buffer passed
/// `probes.tcp.wakeup_min_bytes`), then drains it; below that, the collection tick drains it.
async fn read_tcp_events(ready: AsyncFd<OwnedFd>, pipeline: Arc<Mutex<Pipeline>>) {
    loop {
        let mut guard = match ready.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "waiting on the TCP event ring buffer failed");
                return;
            }
        };
        pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain_tcp_events();
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
