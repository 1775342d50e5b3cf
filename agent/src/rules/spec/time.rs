//! Time in rule files: durations in Prometheus notation, read with promql-parser's
//! [`parse_duration`](promql_parser::util::parse_duration) and written back with [`fmt_ms`],
//! and the multiwindow multi-burn-rate windows of an SLO (what the engine evaluates and
//! `rules export` writes out).

use std::time::Duration;

pub const DAY_MS: i64 = 86_400_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const MIN_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub long_ms: i64,
    pub short_ms: i64,
    pub factor: f64,
    pub page: bool,
}

/// The workbook windows for `period_ms`, scaled.
pub fn windows(period_ms: i64, scale: f64) -> Vec<Window> {
    let k = period_ms as f64 / (30.0 * DAY_MS as f64);
    let w = |long: i64, short: i64, factor: f64, page: bool| Window {
        long_ms: ((long as f64 * scale).round() as i64).max(1000),
        short_ms: ((short as f64 * scale).round() as i64).max(1000),
        factor: factor * k,
        page,
    };
    vec![
        w(HOUR_MS, 5 * MIN_MS, 14.4, true),
        w(6 * HOUR_MS, 30 * MIN_MS, 6.0, true),
        w(DAY_MS, 2 * HOUR_MS, 3.0, false),
        w(3 * DAY_MS, 6 * HOUR_MS, 1.0, false),
    ]
}

/// A duration in Prometheus notation (`1h`, `5m`, `90s`, `1d`, `1500ms`).
pub fn fmt_ms(ms: i64) -> String {
    for (unit, len) in [("d", DAY_MS), ("h", HOUR_MS), ("m", MIN_MS), ("s", 1000)] {
        if ms >= len && ms % len == 0 {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

/// Parses a Prometheus duration (`1h30m`, `5m`, `30s`, `100ms`, `1d`, `1w`, `1y`, or `0`)
/// with promql-parser's [`parse_duration`](promql_parser::util::parse_duration), stricter in
/// three ways: a unit is required (promql-parser also reads a bare number as seconds, `1.5`,
/// and panics on `-1`), a count beyond `u32::MAX` is refused (promql-parser skips it) and the
/// total must fit the engine's i64 milliseconds (longer durations are refused, not wrapped).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (like 30s, 5m, 1h30m, 28d)");
    let too_long = || format!("{s:?} is too long a duration");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if !(s.starts_with(|c: char| c.is_ascii_digit()) && s.ends_with(['y', 'w', 'd', 'h', 'm', 's']))
    {
        return Err(bad());
    }
    if s.split(|c: char| !c.is_ascii_digit())
        .any(|n| !n.is_empty() && n.parse::<u32>().is_err())
    {
        return Err(too_long());
    }
    let d = promql_parser::util::parse_duration(s).map_err(|e| {
        if e.contains("overflow") {
            too_long()
        } else {
            bad()
        }
    })?;
    if i64::try_from(d.as_millis()).is_err() {
        return Err(too_long());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(
            parse_duration("1y1w1d1h1m1s1ms").unwrap(),
            Duration::from_millis(
                365 * 86_400_000 + 7 * 86_400_000 + 86_400_000 + 3_600_000 + 60_000 + 1000 + 1
            )
        );
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in [
            "", "5", "m", "5x", "1m1h", "1.5h", "-1m", "5m5m", "1.5", "-1", "inf", "1e3", " 5m",
        ] {
            assert_eq!(
                parse_duration(bad).unwrap_err(),
                format!("{bad:?} is not a duration (like 30s, 5m, 1h30m, 28d)")
            );
        }
        // The engine keeps ms in an i64: longer durations are refused, not wrapped.
        assert!(parse_duration("292000000y").is_ok());
        assert_eq!(
            parse_duration("293000000y").unwrap_err(),
            "\"293000000y\" is too long a duration"
        );
        assert!(parse_duration("18446744073709551615ms").is_err());
        assert!(parse_duration("4294967296s").is_err());
    }

    #[test]
    fn formatted_durations_parse_back() {
        for ms in [
            1,
            999,
            1000,
            90_000,
            3_600_000,
            86_400_000,
            30 * 86_400_000,
            1500,
        ] {
            assert_eq!(parse_duration(&fmt_ms(ms)).unwrap().as_millis() as i64, ms);
        }
    }

    proptest::proptest! {
        #[test]
        fn bad_input_never_panics(text in "\\PC{0,40}") {
            let _ = parse_duration(&text);
        }
    }
}
