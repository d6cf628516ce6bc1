//! Fuzz target `api_body`: the input goes to `highway_worker::fuzzing::api_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| highway_worker::fuzzing::api_body(data));
