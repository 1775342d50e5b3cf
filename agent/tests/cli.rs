//! The command line: config checks exit 64 with a message naming the problem, before anything
//! touches the kernel. These tests need no root.

use std::{path::Path, process::Command};

fn steadfast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(args)
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn shipped_default_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/steadfast.yaml");
    let out = steadfast(&["check", "config", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[test]
fn bad_configs_exit_64_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown.yaml",
            "http:\n  listen_address: 127.0.0.1:9\n  bogus_key: 1\n",
            &["unknown field `bogus_key`", "line 3"][..],
        ),
        (
            "type.yaml",
            "services:\n  max_services: lots\n",
            &["max_services", "line 2"][..],
        ),
        (
            "addr.yaml",
            "http:\n  listen_address: not-an-address\n",
            &["socket address", "line 2"][..],
        ),
        (
            "range.yaml",
            "probes:\n  process_events:\n    ring_buffer_bytes: 1000\n",
            &["probes.process_events.ring_buffer_bytes"][..],
        ),
    ];
    for (file, text, wanted) in cases {
        let path = write(dir.path(), file, text);
        for args in [
            vec!["check", "config", &path],
            vec!["run", "--config", &path],
        ] {
            let out = steadfast(&args);
            assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains(file), "{args:?} does not name the file: {err}");
            for w in wanted {
                assert!(err.contains(w), "{args:?}: expected {w:?} in: {err}");
            }
            // Nothing was attached: the daemon never got as far as logging.
            assert!(!err.contains("probes attached"), "{err}");
        }
    }
}

#[test]
fn missing_config_file_exits_64() {
    let out = steadfast(&["check", "config", "/nonexistent/steadfast.yaml"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("/nonexistent/steadfast.yaml"));
}

#[test]
fn version_and_help() {
    let out = steadfast(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("steadfast {}", env!("CARGO_PKG_VERSION"))
    );
    let out = steadfast(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run") && help.contains("check"), "{help}");
}
