//! A parser of the Prometheus text exposition format (0.0.4), enough for the agent's own
//! output: `# HELP`, `# TYPE`, and samples with escaped label values. Consumers (the OTLP
//! metrics exporter) read every family through it, so a new family needs no exporter change.

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
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

/// Parses a whole exposition into families, in order of appearance.
pub fn parse(text: &str) -> Result<Vec<Family>, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |message: &str| ParseError {
            line: i + 1,
            message: message.to_string(),
        };
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            family(&mut families, name).help = help.replace("\\n", "\n").replace("\\\\", "\\");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| err("TYPE without a type"))?;
            family(&mut families, name).kind = match kind {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                "histogram" => Kind::Histogram,
                _ => Kind::Untyped,
            };
        } else if line.starts_with('#') {
            continue;
        } else {
            let sample = parse_sample(line).map_err(|m| err(&m))?;
            let owner = owner_of(&families, &sample.name).unwrap_or_else(|| sample.name.clone());
            family(&mut families, &owner).samples.push(sample);
        }
    }
    Ok(families)
}

fn family<'a>(families: &'a mut Vec<Family>, name: &str) -> &'a mut Family {
    if let Some(i) = families.iter().position(|f| f.name == name) {
        return &mut families[i];
    }
    families.push(Family {
        name: name.to_string(),
        help: String::new(),
        kind: Kind::Untyped,
        samples: Vec::new(),
    });
    families.last_mut().expect("just pushed")
}

/// The family a sample belongs to: its own name, or its name without a histogram or counter
/// suffix when such a family was declared.
fn owner_of(families: &[Family], sample: &str) -> Option<String> {
    if families.iter().any(|f| f.name == sample) {
        return Some(sample.to_string());
    }
    ["_bucket", "_sum", "_count", "_total"]
        .iter()
        .find_map(|suffix| {
            let base = sample.strip_suffix(suffix)?;
            families
                .iter()
                .any(|f| f.name == base)
                .then(|| base.to_string())
        })
}

/// Parses one sample line `name{label="value",...} value [timestamp]` (the timestamp is
/// ignored). Label values may hold the escapes `\\`, `\"` and `\n`. The rule store reads
/// the agent's exposition through this too (`store::exposition`).
pub fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("sample without a value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
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

    #[test]
    fn families_samples_and_escapes() {
        let f = parse(TEXT).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].kind, Kind::Histogram);
        assert_eq!(f[0].samples.len(), 4);
        assert_eq!(f[0].samples[0].label("service"), Some("a \"b\""));
        assert_eq!(f[0].samples[1].label("le"), Some("+Inf"));
        assert_eq!(f[0].samples[2].value, 1.5);
        assert_eq!(f[1].name, "steadfast_events_lost");
        assert_eq!(f[1].kind, Kind::Counter);
        assert_eq!(f[1].samples[0].name, "steadfast_events_lost_total");
        assert_eq!(f[2].samples[0].value, 12.0);
        assert!(f[2].samples[0].labels.is_empty());
    }

    #[test]
    fn bad_lines_name_their_line() {
        let e = parse("# TYPE x gauge\nx{a=\"1} 3\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse("x{a=1} 3").is_err());
        assert!(parse("x").is_err());
    }
}
