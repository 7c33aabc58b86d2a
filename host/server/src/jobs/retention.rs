//! H5: the retention of streams and value streams, and what deleted data-storage Things leave.
//!
//! Every `serve --retention-interval-seconds` (60), on a thread of its own: the settings are
//! read under the model's shared lock, which is released before anything is deleted; each
//! stream's and value stream's retention (`SetRetention`: days, and a maximum entry count) is
//! applied by the provider's writer, and what a Thing that no longer exists left behind (a
//! Stream's entries, a DataTable's rows, a ValueStream's values, a Thing's history) is removed.
//! Every removal is recorded in the audit (MODEL, as `System`).

use crate::state::app::App;
use serde_json::json;
use std::sync::Arc;
use thinghost_core::{Body, Kind, View, predefined};

/// What one pass looks at, read under the lock.
struct Plan {
    /// (Thing, is a value stream, retention days, maximum entries).
    trims: Vec<(String, bool, u32, u64)>,
    /// The Things there are.
    things: std::collections::BTreeSet<String>,
}

fn plan(app: &App) -> Plan {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    let m = db.model();
    let mut out = Plan {
        trims: Vec::new(),
        things: Default::default(),
    };
    for e in m.entities(Kind::Thing) {
        let Body::Thing(t) = &e.body else { continue };
        out.things.insert(e.name.clone());
        let Some(kind) = thinghost_core::validate::storage_kind(m, &t.thing_template) else {
            continue;
        };
        let s = &t.storage;
        if s.retention_days != 0 || s.max_entries != 0 {
            out.trims.push((
                e.name.clone(),
                kind == predefined::VALUE_STREAM,
                s.retention_days,
                s.max_entries,
            ));
        }
    }
    out
}

/// One pass, at `now` (epoch milliseconds): what it removed, per Thing.
pub fn run_once(app: &App, now: i64) -> Vec<(String, u64)> {
    let plan = plan(app);
    let mut done = Vec::new();
    for (thing, value_stream, days, keep) in plan.trims {
        let before = if days == 0 {
            i64::MIN
        } else {
            now - i64::from(days) * 86_400_000
        };
        let name = thing.clone();
        let gone = app.history.write(move |h| {
            if value_stream {
                h.trim_value_stream(&name, before, keep)
            } else {
                h.trim_stream(&name, before, keep)
            }
        });
        match gone {
            Ok(0) => {}
            Ok(n) => {
                app.audit(
                    predefined::SYSTEM,
                    crate::state::audit::category::MODEL,
                    "historyTrimmed",
                    json!({"retentionDays": days, "maxEntries": keep, "removed": n}),
                    &format!("Things/{thing}"),
                    "Thing",
                );
                done.push((thing, n));
            }
            Err(e) => {
                tracing::error!(thing = %thing, error = %e, "the retention of a stream could not be applied")
            }
        }
    }
    // What deleted Things left behind: their streams, tables and value streams, their history.
    let owners = match app.history.read(|h| h.owners()) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "the persistence provider could not list what it holds");
            return done;
        }
    };
    for owner in owners {
        if plan.things.contains(&owner) {
            continue;
        }
        // Under the model's shared lock, checked again: a Thing of this name made meanwhile
        // (its creation empties what the name held, then its data is its own) waits for this.
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        if db
            .model()
            .get(thinghost_core::Kind::Thing, &owner)
            .is_some()
        {
            continue;
        }
        let name = owner.clone();
        let gone = app.history.write(move |h| h.forget(&name));
        drop(db);
        match gone {
            Ok(n) => {
                app.audit(
                    predefined::SYSTEM,
                    crate::state::audit::category::MODEL,
                    "historyForgotten",
                    json!({"removed": n, "why": "the Thing it was held under was deleted"}),
                    &format!("Things/{owner}"),
                    "Thing",
                );
                done.push((owner, n));
            }
            Err(e) => {
                tracing::error!(thing = %owner, error = %e, "the data of a deleted Thing could not be removed")
            }
        }
    }
    done
}

/// Starts the retention thread.
pub fn spawn(app: Arc<App>, every: std::time::Duration) {
    let started = std::thread::Builder::new()
        .name("retention".into())
        .spawn(move || {
            crate::jobs::timers::every(every, || {
                run_once(&app, crate::now_ms());
            })
        });
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start the retention's thread: streams keep everything");
    }
}
