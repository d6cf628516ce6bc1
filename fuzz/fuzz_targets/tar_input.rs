//! Fuzz target `tar_input`: the input goes to `highway_worker::fuzzing::tar_input`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| highway_worker::fuzzing::tar_input(data));
