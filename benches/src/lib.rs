//! # thinghost-benches
//!
//! The benchmark harness of BENCHMARKS.md: the model's translation for the Cedar anchor
//! ([`cedar`]); the generated model and the timing helpers are in `thinghost-bench-model`, and
//! casbin runs in its own build (`benches/casbin-anchor`). The benchmarks are in `benches/`
//! (`cargo bench -p thinghost-benches`). [`dispatch`] builds the world of the service-dispatch
//! and HTTP rows (3 and 4).

pub mod cedar;

pub use thinghost_bench_model::{model, timing};
pub mod dispatch;
pub mod load;

/// A bench's setting from the environment (`THINGHOST_BENCH_...`), or its default.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Copies the shipped extension `name` (`plugins/NAME` of this repository) into the plugin
/// directory `plugins`.
pub fn shipped_plugin(name: &str, plugins: &std::path::Path) {
    let from = dispatch::root().join("plugins").join(name);
    let to = plugins.join(name);
    std::fs::create_dir_all(&to).expect("the plugin directory");
    for f in std::fs::read_dir(&from).expect("a shipped extension") {
        let f = f.expect("a file").path();
        std::fs::copy(&f, to.join(f.file_name().expect("a name"))).expect("copied");
    }
}
