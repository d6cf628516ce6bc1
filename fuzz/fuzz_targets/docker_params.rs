//! Fuzz target `docker_params`: the input goes to `highway_worker::fuzzing::docker_params`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| highway_worker::fuzzing::docker_params(data));
