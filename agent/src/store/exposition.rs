//! The agent's exposition as store samples: every sample line (parsed by
//! [`crate::metrics::exposition::parse_sample`], the one exposition parser) becomes a label
//! set with `__name__` and bucket bounds in one canonical form. `# HELP`/`# TYPE` comments are
//! skipped; timestamps are ignored (the store stamps ingest time).

use super::Labels;
use crate::metrics::exposition::{self, parse_value};

/// One parsed sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSample {
    /// Every label including `__name__`.
    pub labels: Labels,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("exposition line {line}: {message}")]
pub struct ExpositionError {
    pub line: usize,
    pub message: String,
}

/// Parses the lines whose metric name `wanted` accepts (the others are not parsed further:
/// most of the agent's exposition is histogram buckets no rule reads); of those, only the
/// samples `keep` accepts become label sets (building them is most of the cost when a rule
/// selects a few series of a large family). A malformed line costs only itself: its error is
/// returned beside the good samples.
pub fn parse_selected(
    text: &str,
    wanted: impl Fn(&str) -> bool,
    keep: impl Fn(&exposition::Sample) -> bool,
) -> (Vec<ParsedSample>, Vec<ExpositionError>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !wanted(exposition::metric_name(line)) {
            continue;
        }
        match exposition::parse_sample(line) {
            Ok(s) if keep(&s) => out.push(to_store(s)),
            Ok(_) => {}
            Err(message) => errors.push(ExpositionError {
                line: i + 1,
                message,
            }),
        }
    }
    (out, errors)
}

fn to_store(sample: exposition::Sample) -> ParsedSample {
    let mut labels = Labels::new();
    for (k, v) in sample.labels {
        let v = if k == "le" { canonical_le(&v) } else { v };
        labels.insert(k, v);
    }
    labels.insert("__name__".into(), sample.name);
    ParsedSample {
        labels,
        value: sample.value,
    }
}

/// Bucket bounds are written back in one canonical form (Rust's shortest round-trip float,
/// `+Inf`), so rules can match them whatever float formatting the encoder used.
pub fn canonical_le(v: &str) -> String {
    match parse_value(v) {
        Some(f) if f == f64::INFINITY => "+Inf".into(),
        Some(f) if f.is_finite() => format!("{f}"),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line, nothing filtered.
    fn all(text: &str) -> (Vec<ParsedSample>, Vec<ExpositionError>) {
        parse_selected(text, |_| true, |_| true)
    }

    #[test]
    fn parses_samples_labels_and_escapes() {
        let text = "# HELP x help\n# TYPE x counter\nx_total 3\n\
            h_bucket{le=\"0.5\",svc=\"a\\\"b\\\\c\\n\"} 7 1700000000\n\
            h_bucket{le=\"+Inf\"} 9\ng{a=\"1\",} NaN\n";
        let (s, errors) = all(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].labels["__name__"], "x_total");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].labels["svc"], "a\"b\\c\n");
        assert_eq!(s[1].labels["le"], "0.5");
        assert_eq!(s[2].labels["le"], "+Inf");
        assert!(s[3].value.is_nan());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
            let _ = all(&text);
        }

        #[test]
        fn exposition_shaped_text_never_panics(
            name in "[a-z_]{1,8}", label in "[a-zé]{0,4}", value in "[a-z\"\\\\é]{0,6}", v in "\\PC{0,6}"
        ) {
            let _ = all(&format!("{name}{{{label}=\"{value}\"}} {v}\n"));
            let _ = all(&format!("{name}{{{label}=\"{value}}} {v}\n"));
        }
    }

    #[test]
    fn lenient_parsing_keeps_the_good_lines() {
        let (good, bad) = all("a 1\nb{x=1} 2\nc 3\n");
        assert_eq!(good.len(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 2);
    }

    #[test]
    fn filtered_parsing_skips_unwanted_names() {
        let (good, bad) = parse_selected("a 1\nb{x=1} 2\nc{y=\"2\"} 3\n", |n| n == "c", |_| true);
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].labels["y"], "2");
        assert!(bad.is_empty(), "the malformed line is not c's");
    }

    #[test]
    fn le_is_canonical() {
        assert_eq!(canonical_le("5.0e-1"), "0.5");
        assert_eq!(canonical_le("0.033554432"), "0.033554432");
        assert_eq!(canonical_le("+Inf"), "+Inf");
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for bad in [
            "x{a=1} 2",
            "x{a=\"1\" 2",
            "x",
            "x{=\"\"} 1",
            "x{a=\"1\"} one",
            "bad-name 1",
        ] {
            assert!(!all(bad).1.is_empty(), "{bad}");
        }
    }
}
