//! Links the WebAssembly component with a 64 KiB stack instead of Rust's 1 MiB (see the SDK's
//! README, "Stack size"): every call resets the memory it was given, and a smaller memory is
//! reset faster.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_FAMILY").as_deref() == Ok("wasm") {
        println!("cargo:rustc-link-arg-cdylib=-zstack-size=65536");
    }
}
