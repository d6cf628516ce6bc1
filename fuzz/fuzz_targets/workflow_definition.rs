//! Fuzz target `workflow_definition`: the input goes to `highway_worker::fuzzing::workflow_definition`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| highway_worker::fuzzing::workflow_definition(data));
