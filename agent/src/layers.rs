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
    ("notify", 0),
    ("logging", 0),
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
];

/// Imports against the flow that are known and not yet undone, with why: each is a debt,
/// listed so that a new one fails the test. Remove a line when its import goes.
pub const KNOWN: &[(&str, &str, &str)] = &[
    (
        "rules",
        "control",
        "the rule runtime pushes breaker observations and signal levels into Control (control should subscribe to the rules' outputs instead)",
    ),
];

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, path::Path};

    use super::*;

    /// The `crate::<module>` paths a module's code (not its comments or tests) names.
    fn imports(src: &Path, module: &str) -> BTreeSet<String> {
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
            for line in code.lines().map(str::trim) {
                if line.starts_with("//") {
                    continue;
                }
                // `use crate::{a, b::c, ...};` over several lines.
                if line.starts_with("use crate::{") {
                    in_use_group = true;
                }
                if in_use_group {
                    let body = line.trim_start_matches("use crate::{");
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
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.insert(name);
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
    }
}
