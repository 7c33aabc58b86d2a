//! The `thinghost` binary: a thin shell over the `thinghost` library.

fn main() {
    std::process::exit(thinghost::cli::run(std::env::args_os()));
}
