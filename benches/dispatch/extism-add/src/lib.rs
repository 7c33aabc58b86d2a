//! `add(a, b)` as an extism plugin, written the way extism's documentation writes plugins: JSON
//! in, JSON out, as thinghost's services take and give JSON.

use extism_pdk::{FnResult, Json, plugin_fn};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Add {
    a: f64,
    b: f64,
}

#[derive(Serialize)]
struct Sum {
    result: f64,
}

#[plugin_fn]
pub fn add(Json(p): Json<Add>) -> FnResult<Json<Sum>> {
    Ok(Json(Sum { result: p.a + p.b }))
}
