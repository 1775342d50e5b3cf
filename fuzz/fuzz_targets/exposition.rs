//! The exposition reader (fed the agent's own output to the OTLP exporter) never panics and
//! always gets to the end: the text is cut into small OTLP requests, so splitting families
//! between requests is exercised too; and the rule store's line filter takes it in pieces.
#![no_main]
use libfuzzer_sys::fuzz_target;
use steadfast::{
    export::otlp_metrics::{next_request, Cursor},
    metrics::exposition::SampleFilter,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut cursor = Cursor::default();
        while let Ok(Some(_)) = next_request(text, &mut cursor, 3, 1, 2) {}
        let mut filter = SampleFilter::new(|name: &str| name.len() % 2 == 0);
        for piece in text.split_inclusive(['\n', '{', ' ']) {
            let _ = std::fmt::Write::write_str(&mut filter, piece);
        }
        let _ = filter.into_text();
    }
});
