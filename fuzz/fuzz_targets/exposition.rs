//! The readers of snapshots never panic and always get to the end, whatever the families hold
//! (families decoded from arbitrary bytes as length-delimited `io.prometheus.client`
//! messages, so histograms with any spans, deltas and buckets): the text encoders, OTLP
//! conversion in small requests (exponential and explicit) and the rule store's samples.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use steadfast::{
    collector::model::MetricFamily,
    config::OtlpHistograms,
    export::otlp_metrics::{next_request, Cursor},
    metrics::encode,
    store::families,
};

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    let mut fams = Vec::new();
    while !buf.is_empty() && fams.len() < 64 {
        match MetricFamily::decode_length_delimited(&mut buf) {
            Ok(f) => fams.push(f),
            Err(_) => break,
        }
    }
    let mut text = String::new();
    encode::prometheus_text(&fams, &mut text);
    encode::openmetrics(&fams, &mut text);
    let _ = encode::protobuf(&fams);
    for h in [OtlpHistograms::Exponential, OtlpHistograms::Explicit] {
        let mut cursor = Cursor::default();
        while next_request(&fams, &mut cursor, 3, 1, 2, h).is_some() {}
    }
    let _ = families::samples(&fams, |n| n.len() % 2 == 0);
});
