//! The error budget's arithmetic on injected time (no agent, no kernel): the rule engine takes
//! its evaluation time as an argument, so a minute of `rate[1m]` passes in microseconds.
//! tests/rules.rs then checks only what needs the real agent (the budget a real workload spent
//! survives a restart) and does not wait a minute for the window to pass.
//!
//! The SLO is the one tests/rules.rs loads: 99% of a service's nanosleep calls under 10 ms
//! (judged at the bucket bound 0.0078125 s), fed the series the agent serves for it, one
//! sample a second as the agent's 1 s rule group ingests them.

use steadfast::rules::{
    engine::{Engine, EngineOptions},
    spec::file,
};

const SLO: &str = r#"groups:
  - name: test-budget
    interval: 1s
    slos:
      - name: budget
        objective: 99
        period: 30d
        window_scale: 0.016666666666666666
        min_events: 5
        sli:
          latency:
            histogram: steadfast_syscall_duration_seconds{syscall="nanosleep",service="svc"}
            threshold_seconds: 0.01
"#;

fn engine(state_dir: Option<std::path::PathBuf>) -> Engine {
    let mut e = Engine::new(EngineOptions {
        eval_interval_ms: 1000,
        max_series: 1000,
        max_retention_ms: 86_400_000,
        max_alerts: 10_000,
        state_dir,
        resend_ms: 60_000,
        generator_url: "http://127.0.0.1/".into(),
    });
    e.load(vec![(
        "slo.yaml".into(),
        file::parse(SLO, "slo.yaml").unwrap(),
    )]);
    e
}

/// The agent's histogram of the service's nanosleep calls after `fast` calls of 0 ns and
/// `slow` calls of 20 ms (bucket (2^-6, 2^-5] s).
fn histogram(fast: u64, slow: u64) -> String {
    let total = fast + slow;
    let mut text = String::from("# TYPE steadfast_syscall_duration_seconds histogram\n");
    for (le, n) in [
        ("0.00390625", fast),
        ("0.0078125", fast),
        ("0.015625", fast),
        ("0.03125", total),
        ("+Inf", total),
    ] {
        text.push_str(&format!(
            "steadfast_syscall_duration_seconds_bucket{{syscall=\"nanosleep\",service=\"svc\",le=\"{le}\"}} {n}\n"
        ));
    }
    text.push_str(&format!(
        "steadfast_syscall_duration_seconds_sum{{syscall=\"nanosleep\",service=\"svc\"}} {}\n\
         steadfast_syscall_duration_seconds_count{{syscall=\"nanosleep\",service=\"svc\"}} {total}\n",
        slow as f64 * 0.02
    ));
    text
}

/// Feeds the engine one sample at second `s` and evaluates it then.
fn tick(e: &mut Engine, s: i64, fast: u64, slow: u64) {
    e.ingest_text(s * 1000, &histogram(fast, slow)).unwrap();
    e.evaluate(s * 1000);
}

fn remaining(e: &Engine) -> f64 {
    e.slos().next().unwrap().budget_remaining()
}

/// (errors, events) accounted in the budget.
fn totals(e: &Engine) -> (f64, f64) {
    e.slos().next().unwrap().budget.totals()
}

/// The workload of tests/rules.rs when the whole burst lands between two samples: 1000 fast
/// calls create the series, then 300 fast and 100 slow ones (25% errors against a 1% budget).
/// The budget integrates `rate[1m]` over time, so every evaluation whose window holds the
/// burst adds errors and events at the same 1 : 4 ratio: the remaining share is 1 - 25 = -24
/// from the first evaluation that sees the burst, the events accounted grow for one minute to
/// about the 400 calls (the window's rate extrapolates a little past its samples), and
/// nothing more is added once the burst has left the window.
#[test]
fn a_burst_spends_its_error_share_of_the_budget_over_one_minute() {
    let mut e = engine(None);
    for s in 0..=10 {
        tick(&mut e, s, 1000, 0);
    }
    assert_eq!(remaining(&e), 1.0, "no events yet");
    assert_eq!(totals(&e), (0.0, 0.0));

    tick(&mut e, 11, 1300, 100);
    let first = remaining(&e);
    assert!((first + 24.0).abs() < 1e-9, "after one evaluation: {first}");
    let (err, ev) = totals(&e);
    assert!(ev > 0.0 && ev < 20.0, "one second of a minute's rate: {ev}");
    assert!((err / ev - 0.25).abs() < 1e-12, "{err} / {ev}");

    for s in 12..=80 {
        tick(&mut e, s, 1300, 100);
        let r = remaining(&e);
        assert!((r + 24.0).abs() < 1e-9, "at {s} s: {r}");
    }
    let (err, ev) = totals(&e);
    assert!(
        (400.0..=410.0).contains(&ev),
        "the minute's integral of rate[1m] is the burst's 400 calls and a little \
         extrapolation: {ev}"
    );
    assert!((err / ev - 0.25).abs() < 1e-12, "{err} / {ev}");

    // The burst has left the window: the budget stays as it is.
    for s in 81..=200 {
        tick(&mut e, s, 1300, 100);
    }
    assert_eq!(totals(&e), (err, ev), "nothing added after the window");
}

/// The same burst on series that start near zero (10 calls): `rate` extrapolates each series
/// towards its start only as far as the series would stay above zero, and that limit differs
/// between the `_count` and the `_bucket` series, so the share spent is near 25%, not exactly
/// it (1 - 25 = -24 within 0.7 throughout, within 0.1 once the minute has passed). This is
/// why tests/rules.rs creates its series with 1000 calls.
#[test]
fn on_series_that_start_near_zero_the_share_is_near_its_error_share() {
    let mut e = engine(None);
    for s in 0..=10 {
        tick(&mut e, s, 10, 0);
    }
    for s in 11..=80 {
        tick(&mut e, s, 310, 100);
        let r = remaining(&e);
        assert!((r + 24.0).abs() < 0.7, "at {s} s: {r}");
    }
    let r = remaining(&e);
    assert!((r + 24.0).abs() < 0.1, "after the minute: {r}");
    let (err, ev) = totals(&e);
    assert!((400.0..=410.0).contains(&ev), "{ev}");
    assert!((err - 100.0).abs() < 1.0, "{err}");
}

/// `rate` never counts a series' first value: a burst that creates the series spends nothing
/// (which is why tests/rules.rs runs its workload once before the burst).
#[test]
fn a_burst_that_creates_the_series_spends_nothing() {
    let mut e = engine(None);
    for s in 0..=100 {
        tick(&mut e, s, 300, 100);
    }
    assert_eq!(remaining(&e), 1.0);
    assert_eq!(totals(&e), (0.0, 0.0));
}

/// A burst split between samples (its fast calls and a few slow ones first, the other slow
/// ones a second later): the first evaluation sees fewer errors than the whole, so the
/// remaining share starts above -24 and moves towards it as evaluations that see the whole
/// burst outweigh it, never past it, and is within 0.1 of it once the minute has passed.
/// (tests/rules.rs waits for the budget to settle before it restarts the agent.)
#[test]
fn a_burst_split_between_samples_converges_to_its_error_share() {
    let mut e = engine(None);
    for s in 0..=10 {
        tick(&mut e, s, 1000, 0);
    }
    tick(&mut e, 11, 1120, 5);
    let mut last = remaining(&e);
    assert!(last > -24.0, "{last}");
    for s in 12..=80 {
        tick(&mut e, s, 1120, 40);
        let r = remaining(&e);
        assert!(
            r <= last + 1e-9 && r >= -24.0 - 1e-9,
            "at {s} s: {r} after {last}"
        );
        last = r;
    }
    assert!((last + 24.0).abs() < 0.1, "after the minute: {last}");
    for s in 81..=200 {
        tick(&mut e, s, 1120, 40);
    }
    assert_eq!(remaining(&e), last, "nothing added after the window");
}

/// What the agent does at shutdown and start: the budget persisted in the state directory is
/// the one restored (to within a few units in the last place: serde_json without its
/// `float_roundtrip` feature may read a float back one unit off).
#[test]
fn a_spent_budget_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(Some(dir.path().into()));
    for s in 0..=10 {
        tick(&mut e, s, 1000, 0);
    }
    for s in 11..=40 {
        tick(&mut e, s, 1300, 100);
    }
    let spent = remaining(&e);
    assert!((spent + 24.0).abs() < 1e-9, "{spent}");
    e.persist_all(40_000);
    assert!(dir.path().join("slo/budget.json").exists());
    let restarted = engine(Some(dir.path().into()));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    assert!(
        close(remaining(&restarted), spent),
        "{} vs {spent}",
        remaining(&restarted)
    );
    let ((e1, n1), (e2, n2)) = (totals(&restarted), totals(&e));
    assert!(
        close(e1, e2) && close(n1, n2),
        "{:?} vs {:?}",
        (e1, n1),
        (e2, n2)
    );
}
