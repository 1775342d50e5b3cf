//! The rule-file parser never panics; every problem it reports has a position.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(problems) = steadfast::rules::spec::file::parse(text, "fuzz.yaml") {
            assert!(!problems.0.is_empty());
        }
    }
});
