//! The generated model ([`model`]) and the timing helpers ([`timing`]) of the benchmarks, with no
//! dependency beyond `thinghost-core`: the casbin anchor, which cannot share a build with the
//! host (see `benches/casbin-anchor`), uses them too.

pub mod model;
pub mod timing;
