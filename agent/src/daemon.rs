//! `steadfast run`: load the probes, start the tasks that read them, serve `/metrics`, and
//! detach everything on SIGTERM or SIGINT (SIGHUP, `POST /-/reload` and the rules directory
//! watch go to the one reload coordinator: see `reload`).

use std::{
    os::fd::OwnedFd,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{io::unix::AsyncFd, sync::watch};

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
    lifecycle::{Lifecycle, Progress},
    metrics::{self, server::AppState},
    pipeline::{Pipeline, Sources},
    reload::{Reloader, Trigger},
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
}

/// Test hook: when this variable names a file, the periodic collection waits (without
/// holding anything) for as long as that file exists, as a hung kernel map read would; read
/// once at start-up. tests/service.rs uses it to show the watchdog stops being fed.
pub const STALL_COLLECTION_ENV: &str = "STEADFAST_TEST_STALL_COLLECTION_WHILE";

/// Runs until SIGTERM or SIGINT; `config_path` is re-read on SIGHUP and `POST /-/reload`.
pub async fn run(config: Config, config_path: &Path) -> Result<(), DaemonError> {
    let lifecycle = Lifecycle::install().map_err(DaemonError::Signals)?;

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
    let progress = Arc::new(Progress::default());
    let stall = std::env::var_os(STALL_COLLECTION_ENV).map(std::path::PathBuf::from);
    if let Some(path) = &stall {
        tracing::warn!(file = %path.display(), "test hook {STALL_COLLECTION_ENV} set: collection waits while this file exists");
    }

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
    crate::control::metrics::register(&mut registry, control.clone());
    let export_stats = Arc::new(ExportStats::default());
    if config.otlp.enabled() {
        metrics::register_export_stats(&mut registry, export_stats.clone());
    }
    let rules = crate::rules::runtime::setup(
        &config,
        &mut registry,
        &mut tasks,
        Some(control.clone() as Arc<Mutex<dyn crate::rules::runtime::Decisions>>),
    );
    let reloader = {
        let pipeline = pipeline.clone();
        Reloader::new(
            config_path,
            &config,
            rules.clone(),
            Box::new(move |new: &Config| {
                pipeline
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .apply_thresholds(new)
                    .map_err(|e| e.to_string())
            }),
        )
    };
    crate::reload::register(&mut registry, &reloader);
    let registry = Arc::new(registry);
    // The registry is whole: from here on the collector owns collection.
    let snapshots = crate::collector::spawn(
        pipeline.clone(),
        registry,
        COLLECT_INTERVAL,
        progress.clone(),
        stall,
        &mut tasks,
    );
    // Set once the control has shut down: the socket's server then drains like the loopback's.
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let mut unix_server = None;
    if let Some(path) = &config.control.api_socket {
        let listener =
            api::bind_unix(path, config.control.api_socket_group.as_deref()).map_err(|source| {
                DaemonError::Socket {
                    path: path.clone(),
                    source,
                }
            })?;
        // Changes (overrides, `POST /-/reload`) are served here only: see `api::read_only`.
        let app = api::router(api_state.clone()).merge(crate::reload::router(&reloader));
        let mut stopping = stopping_rx;
        unix_server = Some(tokio::spawn(api::serve(listener, app, async move {
            let _ = stopping.wait_for(|s| *s).await;
        })));
        tracing::info!(socket = %path.display(), "local API listening");
    }

    crate::rules::runtime::spawn(&rules, snapshots.clone(), &mut tasks);
    tasks.spawn(crate::reload::watch_rules(reloader.clone()));
    let exporter = export::start(
        &config.otlp,
        snapshots.clone(),
        crate::clock::unix_now_ns(),
        export_stats,
    )
    .map_err(DaemonError::Export)?;
    if let Some(exporter) = &exporter {
        if let Some(sink) = &exporter.sink {
            pipeline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_span_sink(Arc::new(sink.clone()));
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
    let state = AppState {
        snapshots,
        scrape_duration,
    };
    tracing::info!(address = %config.http.listen_address, "serving /metrics");
    if let Some(watchdog) = lifecycle.watchdog(progress, COLLECT_INTERVAL) {
        tasks.spawn(watchdog);
    }
    lifecycle.ready(&format!(
        "probes attached, serving /metrics on {}",
        config.http.listen_address
    ));
    api::serve(
        // Each write of an answer goes out at once: a chunked answer's last chunk and its end
        // are two writes, which Nagle's algorithm would hold for the scraper's delayed ACK.
        axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
            }
        }),
        // Anyone local can reach the port: reading only (changes go to the unix socket).
        api::read_only(
            metrics::server::router(state)
                .merge(api::router(api_state))
                .merge(crate::reload::router(&reloader)),
        ),
        {
            let control = control.clone();
            async move {
                lifecycle
                    .until_shutdown(move || {
                        let reloader = reloader.clone();
                        async move { reloader.reload(Trigger::Signal).await.status_line() }
                    })
                    .await;
                // First, so that held blocking queries and event streams end before the server
                // waits for its connections to close, and nothing reads a stale "running" page.
                control.lock().unwrap_or_else(|e| e.into_inner()).shutdown();
                let _ = stopping_tx.send(true);
            }
        },
    )
    .await;
    // The socket's answers in progress (held queries, which the shutdown just answered) go
    // out before the process exits; a connection that will not finish is cut after 5 s.
    if let Some(server) = unix_server {
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
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
        drop(guard);
        // On the blocking pool, not on a runtime worker: a collection holds the pipeline's
        // lock for its map walks (tens of milliseconds at ~30,000 series), and a drain names
        // new processes from /proc and may attach uprobes to them, so a worker doing it would
        // leave the local API's requests queued behind it (two drains waiting on the lock
        // would stall both workers).
        let pipeline = pipeline.clone();
        let _ = tokio::task::spawn_blocking(move || {
            pipeline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain_events();
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
