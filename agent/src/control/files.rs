//! One file per signal and breaker under a directory (default `/run/steadfast/signals/`),
//! replaced atomically on change, holding a single number in [0, 1]: the format Envoy's
//! injected-resource overload monitor reads. A signal's file holds its level; a breaker's
//! holds the share of traffic to shed (1 - admit ratio: 0 admit, 1 shed).

use std::path::PathBuf;

use super::{persist::write_atomic, Snapshot};

pub struct SignalFiles {
    dir: PathBuf,
}

impl SignalFiles {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn write(&self, name: &str, value: f64) {
        // Names are validated to be file-name safe when rules load; refuse anything else.
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return;
        }
        let text = format!("{}\n", format_value(value));
        if let Err(e) = write_atomic(&self.dir.join(name), text.as_bytes()) {
            tracing::error!(error = %e, "writing a signal file failed");
        }
    }

    fn remove(&self, name: &str) {
        if !(name.is_empty() || name.contains('/') || name.starts_with('.')) {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    /// Writes the files whose value changed between two snapshots, removes the ones gone.
    pub fn write_changes(&self, old: &Snapshot, new: &Snapshot) {
        for (name, b) in &new.breakers {
            let shed = 1.0 - b.admit_ratio;
            if old.breakers.get(name).map(|o| 1.0 - o.admit_ratio) != Some(shed) {
                self.write(name, shed);
            }
        }
        for (name, s) in &new.signals {
            if old.signals.get(name).map(|o| o.level) != Some(s.level) {
                self.write(name, s.level);
            }
        }
        for name in old.breakers.keys().chain(old.signals.keys()) {
            if !new.breakers.contains_key(name) && !new.signals.contains_key(name) {
                self.remove(name);
            }
        }
    }
}

impl SignalFiles {
    /// Writes 0 into every file of `snap` (at shutdown: without an agent nothing is shed).
    pub fn reset_all(&self, snap: &Snapshot) {
        for name in snap.breakers.keys().chain(snap.signals.keys()) {
            self.write(name, 0.0);
        }
    }
}

/// At most two decimals, no trailing zeros beyond one: `0`, `0.5`, `0.25`, `1`.
fn format_value(v: f64) -> String {
    let v = (v.clamp(0.0, 1.0) * 100.0).round() / 100.0;
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::breaker::State;
    use crate::control::{BreakerView, SignalView};

    #[test]
    fn files_hold_one_number_and_follow_changes() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(0.254), "0.25");
        assert_eq!(format_value(1.0), "1");
        let dir = tempfile::tempdir().unwrap();
        let files = SignalFiles::new(dir.path().to_path_buf());
        let mut new = Snapshot::default();
        new.signals.insert(
            "freeze".into(),
            SignalView {
                level: 1.0,
                source: "slo".into(),
                inputs_unknown: false,
                unknown_reason: None,
            },
        );
        new.breakers.insert(
            "db".into(),
            BreakerView {
                state: State::Probe,
                admit_ratio: 0.25,
                forced: None,
                openings: 1,
                since_unix_ms: 0,
                reason: String::new(),
                inputs_unknown: false,
                unknown_reason: None,
            },
        );
        files.write_changes(&Snapshot::default(), &new);
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(read("freeze"), "1\n");
        assert_eq!(read("db"), "0.75\n");
        files.write_changes(&new, &Snapshot::default());
        assert!(!dir.path().join("db").exists());
        assert!(!dir.path().join("freeze").exists());
    }
}
