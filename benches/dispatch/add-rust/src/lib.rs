//! `add(a, b)` for the service-dispatch benchmark (BENCHMARKS.md, row 3): the smallest service an
//! extension can have, so that what is timed is the path to it and back. And `on_change(event)`
//! for the subscriptions benchmark (row 8): the smallest subscription handler, which reads the
//! new value as the Rhai subscription of that row does.

use thinghost_sdk::{Error, Handlers, Json};

fn add(a: f64, b: f64) -> Result<f64, Error> {
    Ok(a + b)
}

fn on_change(event: Json) -> Result<(), Error> {
    if event["newValue"].is_null() {
        return Err(Error::Invalid("a DataChange without newValue".into()));
    }
    Ok(())
}

fn register(h: &mut Handlers) {
    h.add("add", add).add("on_change", on_change);
}

thinghost_sdk::extension!(register);
