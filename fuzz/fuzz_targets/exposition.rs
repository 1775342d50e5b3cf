//! The exposition parser (fed the agent's own output, and by the OTLP exporter) never panics,
//! and whatever it accepts converts to an OTLP request.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(families) = steadfast::metrics::exposition::parse(text) {
            let _ = steadfast::export::otlp_metrics::request(&families, 1, 2);
        }
    }
});
