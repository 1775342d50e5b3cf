//! The expression parser and evaluator never panic: any accepted expression evaluates (to a
//! value or an error) over a store holding a few series.
#![no_main]
use libfuzzer_sys::fuzz_target;
use steadfast::{rules::{eval, spec::promql}, store::{Store, StoreLimits}};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(e) = promql::parse(text) else { return };
    let store = Store::new(StoreLimits::default());
    let mut engine = steadfast::rules::engine::Engine::new(steadfast::rules::engine::EngineOptions {
        eval_interval_ms: 1000,
        max_series: 100,
        max_alerts: 100,
        max_retention_ms: 600_000,
        state_dir: None,
        resend_ms: 60_000,
        generator_url: String::new(),
    });
    let sample = "# TYPE steadfast_x_total counter\nsteadfast_x_total{a=\"1\"} 5\n# TYPE steadfast_h_seconds histogram\nsteadfast_h_seconds_bucket{le=\"0.1\"} 1\nsteadfast_h_seconds_bucket{le=\"+Inf\"} 2\nsteadfast_h_seconds_sum 0.3\nsteadfast_h_seconds_count 2\n";
    let _ = engine.ingest_text(1_000, sample);
    let _ = eval::eval(&e, &engine.store, 2_000);
    let _ = eval::eval(&e, &store, 2_000);
});
