//! The Kubernetes deployment in `packaging/kubernetes/`: every manifest passes offline schema
//! validation against the Kubernetes 1.31 OpenAPI schemas (`kubernetes-validate`, installed by
//! `scripts/setup --test`), the validator itself rejects a broken manifest, the ConfigMaps hold
//! a config and rules the agent accepts (the rules exactly those of `packaging/rules.d`), and
//! the DaemonSet keeps its promises (host PID, not privileged, capabilities from a short list,
//! BTF and cgroups read-only, /run/steadfast shared with the node).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn validator() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let bin = Path::new(&home).join(".cache/steadfast/venv/bin/kubernetes-validate");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup --test",
        bin.display()
    );
    bin
}

fn validate(path: &Path) -> (bool, String) {
    let out = Command::new(validator())
        .args(["--strict", "-k", "1.31.0"])
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && !text.contains("ERROR"), text)
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(repo(&format!("packaging/kubernetes/{name}"))).unwrap();
    steadfast::yaml::from_str(&text).unwrap()
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string: {v:?}"))
}

/// The core manifests pass strict validation, and the validator catches a typo.
#[test]
fn manifests_pass_offline_schema_validation() {
    for name in [
        "namespace.yaml",
        "serviceaccount.yaml",
        "config.yaml",
        "rules.yaml",
        "daemonset.yaml",
    ] {
        let (ok, out) = validate(&repo(&format!("packaging/kubernetes/{name}")));
        assert!(ok, "{name}: {out}");
        assert!(out.contains("passed"), "{name} was not checked: {out}");
    }
    // The same DaemonSet with one misspelt field must fail: the check can fail.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(repo("packaging/kubernetes/daemonset.yaml")).unwrap();
    assert!(text.contains("hostPID: true"));
    std::fs::write(&broken, text.replace("hostPID: true", "hostPid: true")).unwrap();
    let (ok, out) = validate(&broken);
    assert!(!ok, "a misspelt field passed: {out}");
    assert!(out.contains("hostPid"), "{out}");
}

/// `kubectl apply -k` takes every manifest but the PodMonitor (which needs the operator's CRD),
/// and the PodMonitor scrapes the DaemonSet's pods on their metrics port.
#[test]
fn kustomization_and_podmonitor_point_at_the_daemonset() {
    let k = load("kustomization.yaml");
    let listed: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(repo("packaging/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml" && n != "podmonitor.yaml")
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted, on_disk,
        "kustomization.yaml must list every manifest"
    );

    let ds = load("daemonset.yaml");
    let pm = load("podmonitor.yaml");
    assert_eq!(str_of(&pm, &["kind"]), "PodMonitor");
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    let port = str_of(&pm["spec"]["podMetricsEndpoints"][0], &["port"]);
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"].as_str() == Some(port)),
        "the PodMonitor scrapes port {port:?}, which the container does not name"
    );
}

/// The config and rules in the ConfigMaps are what the agent accepts, and the rules are exactly
/// those of the Debian package (`cargo xtask k8s-rules` regenerates them).
#[test]
fn configmaps_hold_a_valid_config_and_the_packaged_rules() {
    let bin = env!("CARGO_BIN_EXE_steadfast");
    let dir = tempfile::tempdir().unwrap();

    let config = load("config.yaml");
    let path = dir.path().join("steadfast.yaml");
    std::fs::write(&path, str_of(&config, &["data", "steadfast.yaml"])).unwrap();
    let out = Command::new(bin)
        .args(["check", "config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rules = load("rules.yaml");
    let data: BTreeMap<String, String> = serde_json::from_value(rules["data"].clone()).unwrap();
    let mut packaged = BTreeMap::new();
    for e in std::fs::read_dir(repo("packaging/rules.d")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            packaged.insert(name, std::fs::read_to_string(&p).unwrap());
        }
    }
    assert_eq!(
        data, packaged,
        "packaging/kubernetes/rules.yaml is out of date: run `cargo xtask k8s-rules`"
    );
    let rules_dir = dir.path().join("rules.d");
    std::fs::create_dir(&rules_dir).unwrap();
    for (name, text) in &data {
        std::fs::write(rules_dir.join(name), text).unwrap();
    }
    let out = Command::new(bin)
        .args(["check", "rules"])
        .arg(&rules_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the DaemonSet promises: host PID, not privileged, only the listed capabilities, kernel
/// BTF and the cgroup tree read-only, the state page's directory shared with the node, the
/// config and rules from the ConfigMaps, no API token.
#[test]
fn daemonset_runs_unprivileged_with_host_pid_and_shares_run_steadfast() {
    let ds = load("daemonset.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    assert!(pod["hostNetwork"].is_null(), "no host network");
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    let allowed = [
        "BPF",
        "PERFMON",
        "SYS_ADMIN",
        "SYS_PTRACE",
        "DAC_READ_SEARCH",
        "SYS_RESOURCE",
        "CHOWN",
    ];
    for cap in sc["capabilities"]["add"].as_array().unwrap() {
        let cap = cap.as_str().unwrap();
        assert!(
            allowed.contains(&cap),
            "capability {cap} is not on the list"
        );
    }
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert!(c["resources"]["requests"]["cpu"].is_string());

    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mounts: BTreeMap<&str, &Value> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mountPath"].as_str().unwrap(), m))
        .collect();
    for (path, host, read_only) in [
        ("/sys/kernel/btf", Some("/sys/kernel/btf"), true),
        ("/sys/fs/cgroup", Some("/sys/fs/cgroup"), true),
        ("/run/steadfast", Some("/run/steadfast"), false),
        ("/var/lib/steadfast", Some("/var/lib/steadfast"), false),
        ("/etc/steadfast/rules.d", None, true),
        ("/etc/steadfast/steadfast.yaml", None, true),
    ] {
        let m = mounts
            .get(path)
            .unwrap_or_else(|| panic!("{path} not mounted"));
        assert_eq!(
            m["readOnly"].as_bool().unwrap_or(false),
            read_only,
            "{path} read-only"
        );
        let v = volumes[m["name"].as_str().unwrap()];
        match host {
            Some(h) => assert_eq!(v["hostPath"]["path"].as_str(), Some(h), "{path}"),
            None => assert!(
                v["configMap"]["name"].is_string(),
                "{path} from a ConfigMap"
            ),
        }
    }
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["run", "--config", "/etc/steadfast/steadfast.yaml"]);
}
