//! The `thinghost` binary: a thin shell over the `thinghost` library.

/// The memory meter counts what each thread holds, for the memory caps of Rhai extensions and
/// admin scripts (`thinghost_extensions::meter`).
#[global_allocator]
static ALLOCATOR: thinghost_extensions::meter::Meter = thinghost_extensions::meter::Meter;

fn main() {
    std::process::exit(thinghost::cli::run(std::env::args_os()));
}
