//! The agent's life as a service: signals (SIGTERM/SIGINT stop, SIGHUP reloads) and what it
//! tells systemd about them (READY, RELOADING, STOPPING, the watchdog).
//!
//! SIGHUP is received here and only here; what a reload does is the reload coordinator's
//! (`crate::reload`), whose one-line outcome goes to systemd as the READY=1 `STATUS=`.
//!
//! The watchdog (`WatchdogSec=`) is fed every half period only while collection makes
//! progress: the daemon's periodic collection (kernel map reads and ring drains) bumps a
//! [`Progress`] each time it completes, and the watchdog task sends `WATCHDOG=1` only when
//! the last completion is at most one collection interval plus half the watchdog period old.
//! A collection that hangs therefore stops the pings, and systemd restarts the agent one
//! watchdog period later, although the runtime, the API and `/metrics` still answer.

use std::{sync::Arc, time::Duration};

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::notify::{self, Notifier};

pub use crate::collector::Progress;

/// Whether the watchdog is fed: the last collection is at most one collection interval and
/// half the watchdog period (the ping interval) old.
pub fn collection_alive(age: Duration, collect_interval: Duration, ping_every: Duration) -> bool {
    age <= collect_interval + ping_every
}

pub struct Lifecycle {
    notifier: Arc<Notifier>,
    sigterm: Signal,
    sigint: Signal,
    sighup: Signal,
}

impl Lifecycle {
    /// Installs the signal handlers (from here on SIGHUP no longer kills the process) and
    /// opens `$NOTIFY_SOCKET` if systemd set it.
    pub fn install() -> std::io::Result<Self> {
        let notifier = Notifier::from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; not notifying systemd");
            Notifier::disabled()
        });
        Ok(Self {
            notifier: Arc::new(notifier),
            sigterm: signal(SignalKind::terminate())?,
            sigint: signal(SignalKind::interrupt())?,
            sighup: signal(SignalKind::hangup())?,
        })
    }

    /// Start-up is complete: probes attached and the listener serving.
    pub fn ready(&self, status: &str) {
        self.notifier
            .send_or_log(&format!("{}\n{}", notify::READY, notify::status(status)));
    }

    /// A task that feeds systemd's watchdog every half period, when `WatchdogSec=` is set,
    /// while `progress` shows collection completing (see [`collection_alive`]); a stall and
    /// the recovery from one are logged once each.
    pub fn watchdog(
        &self,
        progress: Arc<Progress>,
        collect_interval: Duration,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let every = notify::watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
        )?;
        let notifier = self.notifier.clone();
        tracing::info!(
            every_ms = every.as_millis() as u64,
            "feeding the systemd watchdog while collection makes progress"
        );
        Some(async move {
            let mut tick = tokio::time::interval(every);
            let mut stalled = false;
            loop {
                tick.tick().await;
                let age = progress.age();
                if collection_alive(age, collect_interval, every) {
                    if stalled {
                        tracing::warn!(
                            "collection completes again: feeding the systemd watchdog again"
                        );
                        notifier.send_or_log(&notify::status("running"));
                        stalled = false;
                    }
                    notifier.send_or_log(notify::WATCHDOG);
                } else if !stalled {
                    tracing::error!(
                        last_completed_ms_ago = age.as_millis() as u64,
                        collections = progress.completions(),
                        "collection has stopped making progress: no longer feeding the \
                         systemd watchdog (systemd restarts the agent when WatchdogSec= passes)"
                    );
                    notifier.send_or_log(&notify::status("collection stalled; watchdog not fed"));
                    stalled = true;
                }
            }
        })
    }

    /// Handles SIGHUP (reload) until SIGTERM or SIGINT, then tells systemd it is stopping.
    /// On every SIGHUP: RELOADING=1, then `reload` (the coordinator), then READY=1 with the
    /// one-line outcome `reload` returns as the status.
    pub async fn until_shutdown<F, Fut>(mut self, mut reload: F)
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = String> + Send,
    {
        loop {
            tokio::select! {
                _ = self.sigterm.recv() => {
                    tracing::info!("SIGTERM: detaching probes");
                    break;
                }
                _ = self.sigint.recv() => {
                    tracing::info!("SIGINT: detaching probes");
                    break;
                }
                _ = self.sighup.recv() => {
                    self.notifier.send_or_log(&notify::reloading(notify::monotonic_usec()));
                    let status = reload().await;
                    self.ready(&status);
                }
            }
        }
        self.notifier.send_or_log(notify::STOPPING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_only_after_recent_progress() {
        let (collect, ping) = (Duration::from_secs(1), Duration::from_millis(200));
        assert!(collection_alive(Duration::ZERO, collect, ping));
        assert!(collection_alive(Duration::from_millis(1200), collect, ping));
        assert!(!collection_alive(
            Duration::from_millis(1201),
            collect,
            ping
        ));
        let p = Progress::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(p.age() >= Duration::from_millis(30));
        p.bump();
        assert!(p.age() < Duration::from_millis(30));
        assert_eq!(p.completions(), 1);
    }
}
