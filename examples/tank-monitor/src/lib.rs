//! tank-monitor: a complete thinghost extension in Rust.
//!
//! Its manifest (`plugin.toml`) contributes the template `WaterTank` with the services below and
//! one Thing, `Tank1`. Each function here is a handler: it receives the service's parameters in
//! declared order, and every host call it makes is a request of the user who called the service.

use thinghost_sdk::{Error, Handlers, Json, host, json};

/// `FillPercent()`: how full the tank the service runs on is, in percent.
fn fill_percent() -> Result<f64, Error> {
    let me = host::me()?;
    let level: f64 = host::get_property(&me, "level")?;
    let capacity: f64 = host::get_property(&me, "capacity")?;
    if capacity <= 0.0 {
        return Err(Error::Handler(format!("{me} has no capacity")));
    }
    Ok((level / capacity * 1000.0).round() / 10.0)
}

/// `Fill(liters)`: adds water up to the capacity and returns the new level (the subscription
/// `WatchLevel` then sets the alarm).
fn fill(liters: f64) -> Result<f64, Error> {
    if !(liters.is_finite() && liters > 0.0) {
        return Err(Error::Handler(format!(
            "liters must be a positive number, not {liters}"
        )));
    }
    let me = host::me()?;
    let level: f64 = host::get_property(&me, "level")?;
    let capacity: f64 = host::get_property(&me, "capacity")?;
    let new_level = (level + liters).min(capacity);
    host::set_property(&me, "level", &new_level)?;
    host::log(&format!(
        "{} filled {me} with {liters} l: {new_level} l",
        host::caller()?
    ))?;
    Ok(new_level)
}

/// `FleetReport()`: one line per tank the caller can see, with its fill percentage.
fn fleet_report() -> Result<String, Error> {
    let mut lines = Vec::new();
    for thing in host::list_things()? {
        // A Thing that is not a tank has no such service: skip it.
        match host::invoke_service::<f64>(&thing, "FillPercent", &json!({})) {
            Ok(p) => lines.push(format!("{thing}: {p}%")),
            Err(Error::NotFound(_)) | Err(Error::Invalid(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    lines.sort();
    Ok(lines.join("\n"))
}

/// Subscription `WatchLevel` (DataChange of `level`): its one parameter is the event's data,
/// `{property, newValue, oldValue, timestamp}`. Sets `alarm` when the tank is fuller than
/// `alarmAt` percent, and fires `Overflow` when the alarm goes on.
fn level_changed(event: Json) -> Result<(), Error> {
    let me = host::me()?;
    let level = event["newValue"].as_f64().unwrap_or(0.0);
    let capacity: f64 = host::get_property(&me, "capacity")?;
    let alarm_at: f64 = host::get_property(&me, "alarmAt")?;
    let was: bool = host::get_property(&me, "alarm")?;
    let alarm = capacity > 0.0 && level / capacity * 100.0 >= alarm_at;
    if alarm != was {
        host::set_property(&me, "alarm", &alarm)?;
    }
    if alarm && !was {
        host::fire_event("Overflow", &json!({"level": level, "capacity": capacity}))?;
    }
    Ok(())
}

/// Subscription `CountOverflows` (the tank's own `Overflow`): counts them.
fn count_overflow(_event: Json) -> Result<(), Error> {
    let me = host::me()?;
    let n: f64 = host::get_property(&me, "overflows")?;
    host::set_property(&me, "overflows", &(n + 1.0))
}

fn register(h: &mut Handlers) {
    h.add("fill_percent", fill_percent)
        .add("fill", fill)
        .add("fleet_report", fleet_report)
        .add("level_changed", level_changed)
        .add("count_overflow", count_overflow);
}

thinghost_sdk::extension!(register);
