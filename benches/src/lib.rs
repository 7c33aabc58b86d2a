//! # thinghost-benches
//!
//! The benchmark harness of BENCHMARKS.md: the generated model ([`model`]), its translation for
//! the anchors ([`cedar`]), and the timing helpers ([`timing`]). The benchmarks themselves are in
//! `benches/` (`cargo bench -p thinghost-benches`).

pub mod casbin;
pub mod cedar;
pub mod model;
pub mod timing;
