//! `add(a, b)` for the service-dispatch benchmark (BENCHMARKS.md, row 3): the smallest service an
//! extension can have, so that what is timed is the path to it and back.

use thinghost_sdk::{Error, Handlers};

fn add(a: f64, b: f64) -> Result<f64, Error> {
    Ok(a + b)
}

fn register(h: &mut Handlers) {
    h.add("add", add);
}

thinghost_sdk::extension!(register);
