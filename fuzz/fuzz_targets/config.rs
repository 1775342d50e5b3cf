//! The agent's config parser and validator never panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = steadfast::config::Config::parse(text, "fuzz.yaml");
    }
});
