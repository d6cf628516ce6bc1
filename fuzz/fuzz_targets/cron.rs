//! Fuzz target `cron`: the input goes to `highway_worker::fuzzing::cron`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| highway_worker::fuzzing::cron(data));
