//! The agent's top-level modules in the order data flows through them, and a test that fails
//! when a module imports one downstream of it (`cargo test -p steadfast --lib layers`).
//!
//! kernel -> ebpf -> pipeline -> collector -> (metrics, export, store) -> rules -> control
//! -> api, with the foundations (config, input, ...) below everything and the wiring
//! (daemon, reload, lifecycle, cli) above everything. A module may import its own layer's
//! siblings and anything upstream.

/// `(module, layer)`: a module may import modules of its layer or a lower one.
pub const LAYERS: &[(&str, u8)] = &[
    // Foundations: plain data, parsing, small utilities.
    ("config", 0),
    ("clock", 0),
    ("input", 0),
    ("errno", 0),
    ("syscalls", 0),
    ("random", 0),
    ("backoff", 0),
    ("background", 0),
    ("notify", 0),
    ("logging", 0),
    ("yaml", 0),
    // The kernel side.
    ("ebpf", 1),
    ("telemetry", 2),
    ("pipeline", 3),
    ("collector", 4),
    // Readers of snapshots.
    ("metrics", 5),
    ("export", 5),
    ("store", 5),
    ("rules", 6),
    ("control", 7),
    ("api", 8),
    // Wiring.
    ("reload", 9),
    ("lifecycle", 9),
    ("daemon", 9),
    ("cli", 9),
    ("ruletest", 9),
];

/// Inside `rules`, the same rule one level down: a rule file's spec, then PromQL evaluation
/// over the store, then the engine (schedule, alert state, SLO budgets, what control is
/// told), then the runtime (files, persistence, timers, the Alertmanager client). Imports
/// between them are written `crate::rules::<layer>` (or `super::super::<layer>`), which the
/// test reads; there are no known debts.
pub const RULES_LAYERS: &[(&str, u8)] = &[("spec", 0), ("eval", 1), ("engine", 2), ("runtime", 3)];

/// Imports against the flow that are known and not yet undone, with why: each is a debt,
/// listed so that a new one fails the test. Remove a line when its import goes.
pub const KNOWN: &[(&str, &str, &str)] = &[];

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, path::Path};

    use super::*;

    /// The `crate::<module>` paths a module's code (not its comments or tests) names.
    fn imports(src: &Path, module: &str) -> BTreeSet<String> {
        imports_under(src, module, &["crate::"])
    }

    /// The modules a module's code names after one of `prefixes` (`crate::` for the top
    /// level, `crate::rules::` inside rules).
    fn imports_under(src: &Path, module: &str, prefixes: &[&str]) -> BTreeSet<String> {
        let mut files = Vec::new();
        let file = src.join(format!("{module}.rs"));
        if file.exists() {
            files.push(file);
        }
        let dir = src.join(module);
        if dir.is_dir() {
            let mut stack = vec![dir];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") {
                        files.push(p);
                    }
                }
            }
        }
        let mut out = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let mut in_use_group = false;
            let mut group_prefix = String::new();
            for line in code.lines().map(str::trim) {
                if line.starts_with("//") {
                    continue;
                }
                // `use crate::{a, b::c, ...};` over several lines.
                let group = prefixes
                    .iter()
                    .find(|p| line.starts_with(&format!("use {p}{{")));
                if let Some(p) = group {
                    in_use_group = true;
                    group_prefix = format!("use {p}{{");
                }
                if in_use_group {
                    let body = line.trim_start_matches(group_prefix.as_str());
                    for item in body.split(',') {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        // Only the first path segment of an item at the group's depth.
                        if !name.is_empty() && !item.trim().starts_with('{') {
                            out.insert(name);
                        }
                    }
                    if line.ends_with("};") {
                        in_use_group = false;
                    }
                    continue;
                }
                for p in prefixes {
                    for (i, _) in line.match_indices(p) {
                        let name: String = line[i + p.len()..]
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            out.insert(name);
                        }
                    }
                }
            }
        }
        out.remove(module);
        out
    }

    #[test]
    fn no_module_imports_one_downstream_of_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let layer = |m: &str| LAYERS.iter().find(|(n, _)| *n == m).map(|(_, l)| *l);
        // Every top-level module has a layer.
        for e in std::fs::read_dir(&src).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let m = name.trim_end_matches(".rs");
            if ["lib", "main", "layers"].contains(&m) {
                continue;
            }
            assert!(
                layer(m).is_some(),
                "module {m} has no layer in layers::LAYERS"
            );
        }
        let mut against = Vec::new();
        for (m, l) in LAYERS {
            for dep in imports(&src, m) {
                let Some(dl) = layer(&dep) else { continue };
                let known = KNOWN.iter().any(|(a, b, _)| a == m && *b == dep);
                if dl > *l && !known {
                    against.push(format!("{m} (layer {l}) imports {dep} (layer {dl})"));
                }
            }
        }
        assert!(
            against.is_empty(),
            "imports against the data flow (agent/src/layers.rs):\n{}",
            against.join("\n")
        );
        // Known debts that were paid must leave the list.
        for (a, b, _) in KNOWN {
            let (la, lb) = (layer(a).unwrap(), layer(b).unwrap());
            assert!(
                lb <= la || imports(&src, a).contains(*b),
                "{a} no longer imports {b}: remove it from layers::KNOWN"
            );
        }
    }

    /// The same inside `rules`: spec <- eval <- engine <- runtime, and every file of rules/
    /// belongs to one of them.
    #[test]
    fn no_rules_layer_imports_one_after_it() {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/rules");
        let layer = |m: &str| RULES_LAYERS.iter().find(|(n, _)| *n == m).map(|(_, l)| *l);
        for e in std::fs::read_dir(&rules).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let m = name.trim_end_matches(".rs");
            if m == "mod" {
                continue;
            }
            assert!(
                layer(m).is_some(),
                "rules::{m} has no layer in layers::RULES_LAYERS"
            );
        }
        let mut against = Vec::new();
        for (m, l) in RULES_LAYERS {
            let deps = imports_under(&rules, m, &["crate::rules::", "super::super::"]);
            assert!(
                !deps.is_empty() || *m == "spec",
                "rules::{m} imports no other layer: is the checker reading it?"
            );
            for dep in deps {
                let Some(dl) = layer(&dep) else { continue };
                if dl > *l {
                    against.push(format!(
                        "rules::{m} (layer {l}) imports rules::{dep} (layer {dl})"
                    ));
                }
            }
        }
        assert!(
            against.is_empty(),
            "imports against the order inside rules (agent/src/layers.rs):\n{}",
            against.join("\n")
        );
    }

    /// The checker sees an import written in each of the ways the code writes them.
    #[test]
    fn the_checker_sees_every_form_of_import() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("m.rs"),
            "use crate::{\n    a::X,\n    b,\n};\nuse crate::c::Y;\nfn f() { crate::d::g(); }\n// crate::e is a comment\n#[cfg(test)]\nmod tests { use crate::f; }\n",
        )
        .unwrap();
        let got: Vec<String> = imports(dir.path(), "m").into_iter().collect();
        assert_eq!(got, ["a", "b", "c", "d"]);
        std::fs::write(
            dir.path().join("n.rs"),
            "use crate::rules::{\n    a::X,\n    b,\n};\nuse crate::rules::c::Y;\nuse super::super::d;\nuse crate::store::e;\n",
        )
        .unwrap();
        let got: Vec<String> =
            imports_under(dir.path(), "n", &["crate::rules::", "super::super::"])
                .into_iter()
                .collect();
        assert_eq!(got, ["a", "b", "c", "d"]);
    }
}
