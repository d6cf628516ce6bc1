//! The `highway` binary: wiring only; everything lives in the library (`highway_worker::cli`).

fn main() -> std::process::ExitCode {
    highway_worker::cli::main()
}
