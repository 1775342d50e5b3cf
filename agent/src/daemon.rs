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
    api::{self, ApiState},
    config::{Config, ControlConfig},
    control::{
        files::SignalFiles,
        host::{HostFacts, HOST_PROTECTION},
        page::StatePage,
        Control,
    },
    ebpf::{Attached, ProbeError, Probes},
    export::{self, ExportStats},
    lifecycle::Lifecycle,
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
    #[error("OTLP exporter: {0}")]
    Export(crate::export::transport::SendError),
    #[error("binding the API socket {path}: {source}")]
    Socket {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
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

    let probes = Probes::load(&config)?;
    tracing::info!(
        syscalls = probes.syscalls.is_some(),
        tasks = probes.tasks.is_some(),
        tcp = probes.tcp.is_some(),
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
    if let Some(tcp) = &sources.tcp {
        wakeups.push(tcp.events.readiness().map_err(DaemonError::Epoll)?);
    }
    if let Some(http) = &sources.http {
        wakeups.push(http.events.readiness().map_err(DaemonError::Epoll)?);
    }
    if let Some(conn) = &sources.connections {
        wakeups.push(conn.events.readiness().map_err(DaemonError::Epoll)?);
    }
    let pipeline = Arc::new(Mutex::new(Pipeline::new(sources, &config)));

    let mut tasks = tokio::task::JoinSet::new();
    for ready in wakeups {
        tasks.spawn(drain_on_wakeup(ready, pipeline.clone()));
    }
    tasks.spawn(collect_periodically(pipeline.clone()));

    let mut control = Control::new(
        config.control.signals_dir.clone().map(SignalFiles::new),
        Some(config.control.state_dir.join("overrides.json")),
    )
    .with_index_file(config.control.state_dir.join("snapshot_index"));
    if let Some(path) = &config.control.state_page {
        let group = config.control.api_socket_group.as_deref().and_then(|g| {
            let gid = api::group_id(g);
            if gid.is_none() {
                tracing::warn!(group = g, page = %path.display(), "no such group: only root and the agent's own group can read the state page");
            }
            gid
        });
        control = control.with_state_page(StatePage::new(path.clone(), group));
        tracing::info!(page = %path.display(), "state page on");
    }
    let control = Arc::new(Mutex::new(control));
    let snapshots = {
        let mut c = control.lock().unwrap_or_else(|e| e.into_inner());
        c.configure_breakers(Vec::new(), tokio::time::Instant::now());
        c.subscribe()
    };
    evaluate_control(&control, &config.control);
    tasks.spawn(control_loop(control.clone(), config.control.clone()));
    tasks.spawn(page_heartbeat(control.clone()));
    let api_state = ApiState {
        control: control.clone(),
        snapshots,
    };
    let (mut registry, scrape_duration) = metrics::registry(pipeline.clone());
    metrics::register_control(&mut registry, control.clone());
    let export_stats = Arc::new(ExportStats::default());
    if config.otlp.enabled() {
        metrics::register_export_stats(&mut registry, export_stats.clone());
    }
    let rules =
        crate::rules::runtime::setup(&config, &mut registry, &mut tasks, Some(control.clone()));
    let registry = Arc::new(registry);
    if let Some(path) = &config.control.api_socket {
        let listener =
            api::bind_unix(path, config.control.api_socket_group.as_deref()).map_err(|source| {
                DaemonError::Socket {
                    path: path.clone(),
                    source,
                }
            })?;
        // Changes (overrides, `POST /-/reload`) are served here only: see `api::read_only`.
        let app = api::router(api_state.clone()).merge(crate::rules::runtime::router(&rules));
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "API socket server failed");
            }
        });
        tracing::info!(socket = %path.display(), "local API listening");
    }

    crate::rules::runtime::spawn(&rules, registry.clone(), Some(pipeline.clone()), &mut tasks);
    let exporter = export::start(
        &config.otlp,
        registry.clone(),
        export::otlp::unix_now_ns(),
        export_stats,
    )
    .map_err(DaemonError::Export)?;
    if let Some(exporter) = &exporter {
        if let Some(sink) = &exporter.sink {
            pipeline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_span_sink(sink.clone());
        }
        let target = |s| {
            config
                .otlp
                .signal_target(s)
                .map(|(p, url)| format!("{url} ({})", p.label()))
        };
        tracing::info!(
            traces = target(crate::config::Signal::Traces).unwrap_or_else(|| "off".into()),
            metrics = target(crate::config::Signal::Metrics).unwrap_or_else(|| "off".into()),
            "OTLP export on"
        );
    }
    let reload_pipeline = pipeline.clone();
    let reload_rules = rules.clone();
    let state = AppState {
        registry,
        pipeline,
        scrape_duration,
        text_size: Default::default(),
    };
    tracing::info!(address = %config.http.listen_address, "serving /metrics");
    if let Some(watchdog) = lifecycle.watchdog() {
        tasks.spawn(watchdog);
    }
    lifecycle.ready(&format!(
        "probes attached, serving /metrics on {}",
        config.http.listen_address
    ));
    let served = axum::serve(
        listener,
        // Anyone local can reach the port: reading only (changes go to the unix socket).
        api::read_only(
            metrics::server::router(state)
                .merge(api::router(api_state))
                .merge(crate::rules::runtime::router(&rules)),
        ),
    )
    .with_graceful_shutdown({
        let control = control.clone();
        async move {
            lifecycle
                .until_shutdown(move |new: Option<Config>| {
                    let (pipeline, rules) = (reload_pipeline.clone(), reload_rules.clone());
                    async move {
                        // The one SIGHUP handler: the config's live parts, then the rules.
                        let applied = match new {
                            None => true,
                            Some(new) => {
                                let written = tokio::task::spawn_blocking(move || {
                                    pipeline
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .apply_thresholds(&new)
                                        .map_err(|e| e.to_string())
                                })
                                .await
                                .unwrap_or_else(|e| Err(e.to_string()));
                                if let Err(e) = &written {
                                    tracing::error!(error = %e, "reload: writing slow-syscall thresholds failed");
                                }
                                written.is_ok()
                            }
                        };
                        let _ = crate::rules::runtime::reload_off_the_runtime(&rules, "SIGHUP").await;
                        applied
                    }
                })
                .await;
            // First, so that held blocking queries and event streams end before the server
            // waits for its connections to close, and nothing reads a stale "running" page.
            control.lock().unwrap_or_else(|e| e.into_inner()).shutdown();
        }
    })
    .await;
    // Also when serving failed: the page must not keep saying "running".
    control.lock().unwrap_or_else(|e| e.into_inner()).shutdown();
    served.map_err(DaemonError::Serve)?;
    tasks.abort_all();
    rules.shutdown();
    drop(attached);
    if let Some(path) = &config.control.api_socket {
        let _ = std::fs::remove_file(path);
    }
    if let Some(exporter) = exporter {
        exporter.shutdown().await;
    }
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
        // Clear before draining: a record that lands after the drain read the ring wakes us
        // again, whereas clearing afterwards could swallow its (only) wakeup, leaving it for
        // the next once-a-second collection.
        guard.clear_ready();
        pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain_events();
    }
}

async fn collect_periodically(pipeline: Arc<Mutex<Pipeline>>) {
    let mut tick = tokio::time::interval(COLLECT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let p = pipeline.clone();
        let _ = tokio::task::spawn_blocking(move || {
            p.lock().unwrap_or_else(|e| e.into_inner()).collect()
        })
        .await;
    }
}

/// One control evaluation: the host-protection signal, then time-driven breaker changes.
fn evaluate_control(control: &Mutex<Control>, config: &ControlConfig) {
    let host = &config.host_protection;
    let facts = host.enabled.then(HostFacts::read);
    let mut c = control.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(facts) = facts {
        let (level, source) = host.level(&facts);
        c.set_signal(HOST_PROTECTION, level, source);
    }
    c.tick(tokio::time::Instant::now());
}

/// The state page's time, refreshed twice a second (readers allow it to be seconds old).
async fn page_heartbeat(control: Arc<Mutex<Control>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .heartbeat();
    }
}

/// Every `control.interval_ms`, after a first evaluation at start-up.
async fn control_loop(control: Arc<Mutex<Control>>, config: ControlConfig) {
    let period = Duration::from_millis(config.interval_ms);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        evaluate_control(&control, &config);
    }
}
