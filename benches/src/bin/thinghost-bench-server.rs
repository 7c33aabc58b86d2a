//! The `thinghost` command, built inside the bench crate so that `cargo bench` has it in the
//! same build (a nested `cargo build` of the binary would wait for the lock `cargo bench` holds).
//! The same code as `host/server/src/main.rs`.

fn main() {
    std::process::exit(thinghost::cli::run(std::env::args_os()));
}
