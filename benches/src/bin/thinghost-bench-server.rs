//! The `thinghost` command, built inside the bench crate so that `cargo bench` has it in the
//! same build (a nested `cargo build` of the binary would wait for the lock `cargo bench` holds).
//! The same code as `host/server/src/main.rs`.

#[global_allocator]
static ALLOCATOR: thinghost_extensions::meter::Meter = thinghost_extensions::meter::Meter;

fn main() {
    std::process::exit(thinghost::cli::run(std::env::args_os()));
}
