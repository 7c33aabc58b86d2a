//! Timers and schedulers fire their events (B7), on one clock: the one scheduler of the server
//! (the audit schedulers' jobs start here too, `jobs::scheduler::Jobs`).
//!
//! Every Thing whose template chain holds `Timer` fires `Timer` every `updateRate` milliseconds
//! while `enabled`; every Thing whose chain holds `Scheduler` fires `ScheduledEvent` when its
//! `schedule` (cron with seconds: `sec min hour day month weekday`) fires, while `enabled` (the
//! audit schedulers too, beside their jobs). Each fires as its `runAsUser`, who must be able to
//! sign in (enabled, not locked); otherwise it does not fire, and the refusal is logged and
//! audited once (again only after it fired in between, or for another reason). A firing reaches
//! its subscriptions like any other (`api::events`): nothing is queued for a Thing no
//! subscription listens to.

use crate::state::app::App;
use crate::state::audit::value_of;
use crate::state::auth::Caller;
use serde_json::json;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use thinghost_core::predefined::{SCHEDULED_EVENT, SCHEDULER, TIMER, TIMER_EVENT};
use thinghost_core::{Body, Kind, Model, View};

/// How often timers are looked at: the finest `updateRate` that is kept to.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// The timers and schedulers of the model, as of one structure version.
#[derive(Default)]
struct Known {
    version: Option<u64>,
    timers: Vec<String>,
    schedulers: Vec<String>,
}

impl Known {
    fn refresh(&mut self, db: &thinghost_store::Db) {
        let version = db.structure_version();
        if self.version == Some(version) {
            return;
        }
        let m = db.model();
        let of = |template: &str| -> Vec<String> {
            m.entities(Kind::Thing)
                .filter(|t| in_chain(m, t, template))
                .map(|t| t.name.clone())
                .collect()
        };
        self.timers = of(TIMER);
        self.schedulers = of(SCHEDULER);
        self.version = Some(version);
    }
}

/// Does `thing`'s template chain hold `template`?
fn in_chain(m: &Model, thing: &thinghost_core::Entity, template: &str) -> bool {
    let Body::Thing(t) = &thing.body else {
        return false;
    };
    thinghost_core::validate::template_chain(m, &t.thing_template)
        .is_ok_and(|chain| chain.iter().any(|x| x.name == template))
}

/// What the loop remembers between ticks.
#[derive(Default)]
struct State {
    known: Known,
    /// When each enabled timer last fired (or was first seen), in ms.
    last_fired: HashMap<String, i64>,
    /// Each scheduler's schedule as last parsed.
    parsed: HashMap<String, (String, Option<cron::Schedule>)>,
    /// The refusal last audited, per Thing.
    refused: HashMap<String, String>,
    last_tick: Option<chrono::DateTime<chrono::Utc>>,
    /// The audit schedulers' jobs, started when their `ScheduledEvent` fires.
    jobs: Option<crate::jobs::scheduler::Jobs>,
}

/// One look at every timer and scheduler: what is due fires.
fn tick(app: &App, st: &mut State) {
    let now_ms = crate::now_ms();
    let now = chrono::Utc::now();
    let since = st.last_tick.replace(now).unwrap_or(now);
    // (thing, event, runAsUser) due now, read under the model's lock, fired without it.
    let mut due: Vec<(String, &'static str, String)> = Vec::new();
    {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        st.known.refresh(&db);
        let m = db.model();
        let enabled = |t: &str| value_of(m, t, "enabled").and_then(|v| v.as_bool()) == Some(true);
        let run_as = |t: &str| {
            value_of(m, t, "runAsUser")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        for t in &st.known.timers {
            let rate = value_of(m, t, "updateRate")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0);
            if !enabled(t) || rate < 1.0 {
                st.last_fired.remove(t);
                continue;
            }
            let last = st.last_fired.entry(t.clone()).or_insert(now_ms);
            if (now_ms - *last) as f64 >= rate {
                *last = now_ms;
                due.push((t.clone(), TIMER_EVENT, run_as(t)));
            }
        }
        for t in &st.known.schedulers {
            let Some(text) =
                value_of(m, t, "schedule").and_then(|v| v.as_str().map(str::to_string))
            else {
                continue;
            };
            if !enabled(t) {
                continue;
            }
            if st.parsed.get(t).is_none_or(|(was, _)| *was != text) {
                let schedule = cron::Schedule::from_str(&text).ok();
                if schedule.is_none() {
                    tracing::warn!(scheduler = %t, schedule = %text, "a scheduler's schedule is not a cron expression (sec min hour day month weekday); it does not fire");
                }
                st.parsed.insert(t.clone(), (text, schedule));
            }
            let fired = st.parsed[t]
                .1
                .as_ref()
                .and_then(|s| s.after(&since).next())
                .is_some_and(|at| at <= now);
            if fired {
                due.push((t.clone(), SCHEDULED_EVENT, run_as(t)));
            }
        }
    }
    for (thing, event, run_as) in &due {
        fire_as(app, st, thing, event, run_as, now_ms);
    }
    if let Some(jobs) = &st.jobs {
        jobs.fired(
            due.iter()
                .filter(|(_, event, _)| *event == SCHEDULED_EVENT)
                .map(|(thing, _, _)| thing.as_str()),
        );
    }
}

/// Fires `event` of `thing` as `run_as`, if that user may act now and the queue has room (the
/// clock never waits); a refusal, or a skipped firing, is audited once until it changes.
fn fire_as(app: &App, st: &mut State, thing: &str, event: &str, run_as: &str, now_ms: i64) {
    let usable = {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        crate::state::auth::user_usable(db.model(), run_as)
    };
    let outcome = match usable {
        Ok(subject) => crate::api::events::fire_platform(
            app,
            &Caller::new(subject, run_as),
            thing,
            event,
            json!({"timestamp": thinghost_core::types::format_datetime(now_ms)}),
        )
        .map_err(|reason| {
            (
                "scheduledEventSkipped",
                crate::state::audit::category::EXTENSIONS,
                reason,
            )
        }),
        Err(r) => Err((
            "scheduledEventRefused",
            crate::state::audit::category::AUTHORIZATION,
            if run_as.is_empty() {
                "it has no runAsUser".to_string()
            } else {
                r.detail
            },
        )),
    };
    match outcome {
        Ok(()) => {
            st.refused.remove(thing);
        }
        Err((key, category, reason)) => {
            if st.refused.get(thing) != Some(&reason) {
                tracing::warn!(thing, event, run_as, reason = %reason, "a timer or scheduler did not fire");
                app.audit(
                    run_as,
                    category,
                    key,
                    json!({"thing": thing, "event": event, "runAsUser": run_as, "reason": reason}),
                    &format!("Things/{thing}"),
                    "Thing",
                );
                st.refused.insert(thing.to_string(), reason);
            }
        }
    }
}

/// Starts the loop on a thread of its own ("timers"), in the current tokio runtime's context:
/// it reads the model under its lock, and a task on the blocking pool every tick would wake that
/// pool's idle threads in turn, so that none of them ever ends (each keeps its stack and its
/// allocator's heap: a burst of work would cost its memory for good).
pub fn spawn(app: Arc<App>) {
    let jobs = crate::jobs::scheduler::Jobs::start(&app);
    let runtime = tokio::runtime::Handle::current();
    let started = std::thread::Builder::new()
        .name("timers".into())
        .spawn(move || {
            let _context = runtime.enter();
            let mut st = State {
                jobs: Some(jobs),
                ..State::default()
            };
            every(TICK, || tick(&app, &mut st));
        });
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start the timers' thread: timers and schedulers will not fire");
    }
}

/// Runs `f` every `period` on this thread, forever; a late run is not made up for, and a run
/// that panics is logged and the next one runs.
pub fn every(period: std::time::Duration, mut f: impl FnMut()) {
    let mut next = std::time::Instant::now();
    loop {
        next += period;
        let now = std::time::Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut f)).is_err() {
            tracing::error!(
                thread = std::thread::current().name().unwrap_or_default(),
                "a periodic job panicked; it runs again at its next tick"
            );
        }
    }
}
