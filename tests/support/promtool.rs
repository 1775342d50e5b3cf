//! Prometheus's own `promtool` beside `steadfast` on the same rule unit-test files.

use std::{path::Path, process::Command};

/// Debian's promtool (scripts/setup --test installs prometheus).
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// Runs a rule unit-test file through steadfast and promtool: (steadfast passed, promtool
/// passed, their output).
pub fn both(test_file: &Path) -> (bool, bool, String) {
    let ours = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["test", "rules"])
        .arg(test_file)
        .output()
        .unwrap();
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} missing: scripts/setup --test installs Debian's prometheus"
    );
    let theirs = Command::new(PROMTOOL)
        .args(["test", "rules"])
        .arg(test_file)
        .output()
        .unwrap();
    let text = format!(
        "steadfast:\n{}{}\npromtool:\n{}{}",
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&ours.stderr),
        String::from_utf8_lossy(&theirs.stdout),
        String::from_utf8_lossy(&theirs.stderr)
    );
    (ours.status.success(), theirs.status.success(), text)
}
