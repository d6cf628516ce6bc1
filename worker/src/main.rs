//! The `highway` binary: wiring only; everything lives in the library.
fn main() {}
