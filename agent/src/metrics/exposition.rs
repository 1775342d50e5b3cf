//! A parser of the Prometheus text exposition format (0.0.4): `# HELP`, `# TYPE`, and samples
//! with escaped label values, one line at a time. The agent's own consumers read typed
//! snapshots (`collector`); this reads series written as text by rule tests and the fuzzer
//! (`store::exposition`, `Engine::ingest_text`).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Untyped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Full sample name, e.g. `steadfast_syscall_duration_seconds_bucket`.
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The labels that tell a sample's series apart within its family: all but a
    /// histogram's `le`.
    pub fn point_labels(&self) -> impl Iterator<Item = &(String, String)> {
        self.labels.iter().filter(|(k, _)| k != "le")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// One line of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// `# HELP name text` (text unescaped).
    Help {
        name: String,
        help: String,
    },
    /// `# TYPE name kind`.
    Type {
        name: String,
        kind: Kind,
    },
    Sample(Sample),
    /// Blank lines and other comments.
    Skip,
}

/// Classifies and parses one line.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let line = line.trim_end();
    if line.is_empty() {
        return Ok(Line::Skip);
    }
    if let Some(rest) = line.strip_prefix("# HELP ") {
        let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
        return Ok(Line::Help {
            name: name.to_string(),
            help: help.replace("\\n", "\n").replace("\\\\", "\\"),
        });
    }
    if let Some(rest) = line.strip_prefix("# TYPE ") {
        let (name, kind) = rest.split_once(' ').ok_or("TYPE without a type")?;
        let kind = match kind {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            _ => Kind::Untyped,
        };
        return Ok(Line::Type {
            name: name.to_string(),
            kind,
        });
    }
    if line.starts_with('#') {
        return Ok(Line::Skip);
    }
    parse_sample(line).map(Line::Sample)
}

/// True when a sample named `sample` belongs to the family `family`: the same name, or the
/// name with a histogram or counter suffix.
pub fn belongs(family: &str, sample: &str) -> bool {
    sample == family
        || ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .any(|suffix| sample.strip_suffix(suffix) == Some(family))
}

/// The metric name a sample line starts with: up to its labels or its value (the whole line
/// when it has neither).
pub fn metric_name(line: &str) -> &str {
    line.find(|c: char| c == '{' || c.is_whitespace())
        .map_or(line, |end| &line[..end])
}

/// Parses one sample line `name{label="value",...} value [timestamp]` (the timestamp is
/// ignored). Label values may hold the escapes `\\`, `\"` and `\n`.
pub fn parse_sample(line: &str) -> Result<Sample, String> {
    let name = metric_name(line);
    if name.len() == line.len() {
        return Err("sample without a value".into());
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = Vec::new();
    let mut rest = &line[name.len()..];
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let value_text = rest
        .split_whitespace()
        .next()
        .ok_or("sample without a value")?;
    let value = parse_value(value_text).ok_or_else(|| format!("bad value {value_text:?}"))?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}` into `labels` and returns what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("label without =")?;
        let key = s[..eq].trim();
        if key.is_empty() {
            return Err("empty label name".into());
        }
        s = s[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value without quotes")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated escape".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        }
    }
}

/// A sample value: a float, `+Inf`/`Inf`, `-Inf` or `NaN`.
pub fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP steadfast_syscall_duration_seconds Time from entry to return.
# TYPE steadfast_syscall_duration_seconds histogram
steadfast_syscall_duration_seconds_bucket{syscall="read",service="a \"b\"",le="0.5"} 3
steadfast_syscall_duration_seconds_bucket{syscall="read",service="a \"b\"",le="+Inf"} 4
steadfast_syscall_duration_seconds_sum{syscall="read",service="a \"b\""} 1.5
steadfast_syscall_duration_seconds_count{syscall="read",service="a \"b\""} 4
# HELP steadfast_events_lost Lost.
# TYPE steadfast_events_lost counter
steadfast_events_lost_total{source="process"} 0
# HELP steadfast_tracked_processes Processes.
# TYPE steadfast_tracked_processes gauge
steadfast_tracked_processes 12
"#;

    fn lines(text: &str) -> Vec<Line> {
        text.lines().map(|l| parse_line(l).unwrap()).collect()
    }

    #[test]
    fn lines_samples_and_escapes() {
        let l = lines(TEXT);
        assert_eq!(l.len(), 12);
        assert_eq!(
            l[0],
            Line::Help {
                name: "steadfast_syscall_duration_seconds".into(),
                help: "Time from entry to return.".into()
            }
        );
        assert_eq!(
            l[1],
            Line::Type {
                name: "steadfast_syscall_duration_seconds".into(),
                kind: Kind::Histogram
            }
        );
        let Line::Sample(s) = &l[2] else {
            panic!("{:?}", l[2])
        };
        assert_eq!(s.label("service"), Some("a \"b\""));
        assert_eq!(s.label("le"), Some("0.5"));
        assert!(matches!(&l[3], Line::Sample(s) if s.label("le") == Some("+Inf")));
        assert!(matches!(&l[4], Line::Sample(s) if s.value == 1.5));
        assert!(matches!(
            &l[7],
            Line::Type {
                kind: Kind::Counter,
                ..
            }
        ));
        assert!(
            matches!(&l[8], Line::Sample(s) if s.name == "steadfast_events_lost_total" && s.value == 0.0)
        );
        assert!(matches!(&l[11], Line::Sample(s) if s.value == 12.0 && s.labels.is_empty()));
        assert_eq!(parse_line("").unwrap(), Line::Skip);
        assert_eq!(parse_line("# EOF").unwrap(), Line::Skip);
        assert_eq!(
            parse_line("# HELP x a\\\\b\\nc").unwrap(),
            Line::Help {
                name: "x".into(),
                help: "a\\b\nc".into()
            }
        );
    }

    #[test]
    fn samples_belong_to_their_family() {
        let f = "steadfast_syscall_duration_seconds";
        for s in ["", "_bucket", "_sum", "_count"] {
            assert!(belongs(f, &format!("{f}{s}")));
        }
        assert!(belongs(
            "steadfast_events_lost",
            "steadfast_events_lost_total"
        ));
        assert!(!belongs(f, "steadfast_syscall_duration_seconds_max"));
        assert!(!belongs(f, "steadfast_syscall"));
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse_line("x{a=\"1} 3").is_err());
        assert!(parse_line("x{a=1} 3").is_err());
        assert!(parse_line("x").is_err());
        assert!(parse_line("# TYPE x").is_err());
    }
}
