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
