//! The agent's life as a service: signals (SIGTERM/SIGINT stop, SIGHUP reloads) and what it
//! tells systemd about them (READY, RELOADING, STOPPING, the watchdog).
//!
//! SIGHUP is handled here and only here. A reload re-reads and validates the config file and
//! logs every problem or change. An invalid file changes nothing. A valid one is handed to the
//! daemon, which applies what can change live (the slow-syscall thresholds, rewritten in their
//! kernel map) and becomes the configuration later reloads compare with, so that going back
//! to an earlier file (A -> B -> A) is a change again; everything else keeps the configuration
//! the agent started with until a restart. Every SIGHUP also reloads the rules (the daemon's
//! hook does both), valid config file or not.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::{
    config::{Config, ConfigError},
    notify::{self, Notifier},
};

/// What a reload found in the config file.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The file is invalid: the running configuration stays.
    Invalid(ConfigError),
    /// Valid and identical to the running configuration.
    Unchanged,
    /// Valid but different: live parts are applied, the rest takes effect at the next restart.
    Changed(Box<Config>),
}

/// Re-reads and validates `path` against the running configuration, and logs the outcome.
pub fn reload(path: &Path, running: &Config) -> ReloadOutcome {
    match Config::load(path) {
        Err(e) => {
            match &e {
                ConfigError::Invalid { path, problems } => {
                    for p in problems {
                        tracing::error!(file = %path, "reload: {p}");
                    }
                }
                other => tracing::error!("reload: {other}"),
            }
            tracing::error!("reload: configuration rejected, still running with the old one");
            ReloadOutcome::Invalid(e)
        }
        Ok(new) if &new == running => {
            tracing::info!(file = %path.display(), "reload: configuration valid and unchanged");
            ReloadOutcome::Unchanged
        }
        Ok(new) => {
            tracing::warn!(
                file = %path.display(),
                "reload: configuration valid and changed; slow-syscall thresholds apply now, \
                 other changes (probes, map sizes, listen address, logging, export) at restart"
            );
            ReloadOutcome::Changed(Box::new(new))
        }
    }
}

pub struct Lifecycle {
    notifier: Arc<Notifier>,
    sigterm: Signal,
    sigint: Signal,
    sighup: Signal,
    config_path: PathBuf,
    running: Config,
}

impl Lifecycle {
    /// Installs the signal handlers (from here on SIGHUP no longer kills the process) and
    /// opens `$NOTIFY_SOCKET` if systemd set it.
    pub fn install(config_path: &Path, running: &Config) -> std::io::Result<Self> {
        let notifier = Notifier::from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; not notifying systemd");
            Notifier::disabled()
        });
        Ok(Self {
            notifier: Arc::new(notifier),
            sigterm: signal(SignalKind::terminate())?,
            sigint: signal(SignalKind::interrupt())?,
            sighup: signal(SignalKind::hangup())?,
            config_path: config_path.to_path_buf(),
            running: running.clone(),
        })
    }

    /// Start-up is complete: probes attached and the listener serving.
    pub fn ready(&self, status: &str) {
        self.notifier
            .send_or_log(&format!("{}\n{}", notify::READY, notify::status(status)));
    }

    /// A task that feeds systemd's watchdog every half period, when `WatchdogSec=` is set.
    pub fn watchdog(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let every = notify::watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
        )?;
        let notifier = self.notifier.clone();
        tracing::info!(
            every_ms = every.as_millis() as u64,
            "feeding the systemd watchdog"
        );
        Some(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notifier.send_or_log(notify::WATCHDOG);
            }
        })
    }

    /// Handles SIGHUP (reload) until SIGTERM or SIGINT, then tells systemd it is stopping.
    /// On every SIGHUP `hook` runs with the valid changed configuration (`None` when the file
    /// is invalid or unchanged), to apply what can change live and reload the rules; when it
    /// returns `true` (applied), that configuration becomes the running one.
    pub async fn until_shutdown<F, Fut>(mut self, mut hook: F)
    where
        F: FnMut(Option<Config>) -> Fut + Send,
        Fut: std::future::Future<Output = bool> + Send,
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
                    let status = match reload(&self.config_path, &self.running) {
                        ReloadOutcome::Invalid(_) => {
                            hook(None).await;
                            "reload rejected: config invalid, old config kept"
                        }
                        ReloadOutcome::Unchanged => {
                            hook(None).await;
                            "running; config reloaded, unchanged"
                        }
                        ReloadOutcome::Changed(new) => {
                            if hook(Some((*new).clone())).await {
                                self.running = *new;
                                "running; config changed: thresholds applied, restart for the rest"
                            } else {
                                // Not recorded as running: the same file on the next SIGHUP
                                // is a change again, and is applied again.
                                "running; config changed but the thresholds could not be written"
                            }
                        }
                    };
                    self.ready(status);
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
    fn reload_classifies_the_file_and_never_replaces_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steadfast.yaml");
        let running = Config::default();

        std::fs::write(&path, "log:\n  level: info\n").unwrap();
        assert!(matches!(reload(&path, &running), ReloadOutcome::Unchanged));

        std::fs::write(&path, "services:\n  max_services: 7\n").unwrap();
        assert!(matches!(
            reload(&path, &running),
            ReloadOutcome::Changed(c) if c.services.max_services == 7
        ));

        std::fs::write(&path, "services:\n  max_services: lots\n").unwrap();
        assert!(matches!(
            reload(&path, &running),
            ReloadOutcome::Invalid(ConfigError::Parse { .. })
        ));

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            reload(&path, &running),
            ReloadOutcome::Invalid(ConfigError::Read { .. })
        ));
    }
}
