//! The audit subsystem's schedulers (U6), on the tokio runtime.
//!
//! Each scheduler Thing carries `schedule` (cron with seconds: `sec min hour day month weekday`),
//! `enabled` and `runAsUser`. When its `ScheduledEvent` fires (on the one clock of every
//! Scheduler Thing, `jobs::timers`), its job is queued for the jobs' own thread ([`Jobs`]):
//!
//! - `AuditArchiveScheduler` (and `AuditArchiveSchedulerDirectPersistence`): archives the
//!   entries older than the retention window (`--audit-retention-days`), which the online log
//!   keeps;
//! - `AuditPurgeScheduler`: purges the online entries older than the retention;
//! - `AuditArchiveCleanupScheduler`: deletes the archive days older than `DaysToArchive` days;
//! - `AuditArchiveCleanupNotificationScheduler`: when archive days older than `DaysToArchive`
//!   wait to be cleaned up, says so in the log (a warning) and the audit (its `schedulerRan`
//!   entry lists them under `due`).
//!
//! A job runs as its `runAsUser`, who must be an enabled administrator (the seed: only
//! administrators should have access to these schedulers); otherwise it does not run, and the
//! refusal is logged and audited. A schedule that does not parse is reported (`jobs::timers`)
//! once per value.

use crate::state::app::App;
use crate::state::audit::category;
use crate::state::audit::{DAY_MS, days_to_archive, value_of};
use serde_json::{Value as Json, json};
use std::sync::Arc;
use thinghost_core::predefined::{
    AUDIT_ARCHIVE_SCHEDULER, AUDIT_ARCHIVE_SCHEDULER_DP, AUDIT_CLEANUP_NOTIFICATION_SCHEDULER,
    AUDIT_CLEANUP_SCHEDULER, AUDIT_PURGE_SCHEDULER,
};

/// The schedulers the runner knows, by Thing.
pub const SCHEDULERS: &[&str] = &[
    AUDIT_ARCHIVE_SCHEDULER,
    AUDIT_ARCHIVE_SCHEDULER_DP,
    AUDIT_PURGE_SCHEDULER,
    AUDIT_CLEANUP_SCHEDULER,
    AUDIT_CLEANUP_NOTIFICATION_SCHEDULER,
];

/// The audit jobs, one after the other on a thread of their own (an archive may take long: it
/// never delays a timer's tick), each when its scheduler's `ScheduledEvent` fires: the
/// schedules are read, parsed and kept to by the one scheduler of every Scheduler Thing
/// (`jobs::timers`, B7), on its clock. A job still waiting or running is not queued again.
pub struct Jobs {
    tx: std::sync::mpsc::Sender<&'static str>,
    pending: Arc<std::sync::Mutex<std::collections::HashSet<&'static str>>>,
}

impl Jobs {
    /// Starts the thread that runs the jobs (it ends with the server).
    pub fn start(app: &Arc<App>) -> Jobs {
        let (tx, rx) = std::sync::mpsc::channel::<&'static str>();
        let pending: Arc<std::sync::Mutex<std::collections::HashSet<&'static str>>> =
            Default::default();
        let server = Arc::downgrade(app);
        let done = pending.clone();
        let spawned = std::thread::Builder::new()
            .name("audit-jobs".into())
            .spawn(move || {
                for thing in rx {
                    let Some(app) = server.upgrade() else {
                        return;
                    };
                    let (run_as, days) = {
                        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
                        let m = db.model();
                        (
                            value_of(m, thing, "runAsUser")
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                            days_to_archive(m),
                        )
                    };
                    run_job(&app, thing, &run_as, days);
                    done.lock().unwrap_or_else(|p| p.into_inner()).remove(thing);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the audit jobs' thread; scheduled audit jobs do not run");
        }
        Jobs { tx, pending }
    }

    /// The schedulers among `fired` (Things whose `ScheduledEvent` fired now) whose job is an
    /// audit job: queued, in the order of [`SCHEDULERS`] (an archive before the purge).
    pub fn fired<'a>(&self, fired: impl IntoIterator<Item = &'a str>) {
        let fired: Vec<&str> = fired.into_iter().collect();
        for thing in SCHEDULERS {
            if !fired.contains(thing) {
                continue;
            }
            if self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(thing)
            {
                let _ = self.tx.send(thing);
            }
        }
    }
}

/// Runs `thing`'s job now, as `run_as`.
pub fn run_job(app: &App, thing: &str, run_as: &str, days_to_archive: f64) {
    let admin = {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        crate::state::auth::user_usable(db.model(), run_as)
            .is_ok_and(|s| crate::api::authz::is_admin(db.model(), s))
    };
    if !admin {
        tracing::warn!(
            scheduler = thing,
            run_as,
            "a scheduler's runAsUser must be an enabled administrator; the job did not run"
        );
        app.audit(
            run_as,
            category::AUDIT,
            "schedulerRefused",
            json!({"scheduler": thing, "reason": "runAsUser is not an enabled administrator"}),
            &format!("Things/{thing}"),
            "Thing",
        );
        return;
    }
    let now = crate::now_ms();
    // The online log keeps the retention window (`--audit-retention-days`, 60 by default); the
    // daily archive moves what is older into files, so the purge only has work when archiving is
    // off.
    let window_start = now - i64::from(app.audit_retention_days) * DAY_MS;
    let outcome: Result<Json, String> = match thing {
        AUDIT_ARCHIVE_SCHEDULER | AUDIT_ARCHIVE_SCHEDULER_DP => {
            crate::state::audit::archive_and_record(app, window_start, thing, now)
        }
        AUDIT_PURGE_SCHEDULER => crate::state::audit::purge(app, now).map(|n| json!({"purged": n})),
        AUDIT_CLEANUP_SCHEDULER => crate::state::audit::cleanup_cutoff(days_to_archive, now)
            .map_err(|e| format!("{e}; nothing was deleted"))
            .and_then(|cutoff| crate::state::audit::cleanup(app, cutoff))
            .map(|files| json!({"deleted": files})),
        _ => crate::state::audit::cleanup_cutoff(days_to_archive, now)
            .and_then(|cutoff| crate::state::audit::due_for_cleanup(app, cutoff))
            .map(|days| {
                if !days.is_empty() {
                    tracing::warn!(?days, "audit archive days older than DaysToArchive wait to be cleaned up (CleanupOfflineAudit)");
                }
                json!({"due": days})
            }),
    };
    match outcome {
        Ok(done) => app.audit(
            run_as,
            category::AUDIT,
            "schedulerRan",
            json!({"scheduler": thing, "outcome": done}),
            &format!("Things/{thing}"),
            "Thing",
        ),
        Err(e) => {
            tracing::error!(scheduler = thing, error = %e, "a scheduled audit job failed");
            app.audit(
                run_as,
                category::AUDIT,
                "schedulerFailed",
                json!({"scheduler": thing, "error": e}),
                &format!("Things/{thing}"),
                "Thing",
            );
        }
    }
}

/// Starts the runner on the current tokio runtime.
/// What the runner does every second besides the schedulers: remote-access sessions past
/// their idle time or maximum age end (audited `remoteSessionExpired`), and the failed sign-ins
/// counted rather than recorded one by one are written as summaries.
pub fn housekeeping(app: &App) {
    // Sessions act for a user on a Thing: when the user is disabled, locked or deleted, or the
    // Thing deleted (another of the name is not it), they end, and their connections close.
    let gone = {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        let m = db.model();
        app.sessions.end_unless(|s| {
            crate::state::auth::still_acts(m, &s.user, s.subject).map_err(|r| r.detail)?;
            if m.access().id(thinghost_core::Kind::Thing, &s.thing) != Some(s.thing_id) {
                return Err(format!("Thing {} was deleted", s.thing));
            }
            Ok(())
        })
    };
    let ended = gone.into_iter().map(|s| ("remoteSessionEnded", s)).chain(
        app.sessions
            .expire()
            .into_iter()
            .map(|s| ("remoteSessionExpired", s)),
    );
    for (key, session) in ended {
        let thing = session["thingName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let user = session["user"].as_str().unwrap_or_default().to_string();
        app.audit(
            &user,
            category::REMOTE_ACCESS,
            key,
            json!({ "session": session }),
            &format!("Things/{thing}"),
            "Thing",
        );
    }
    crate::state::auth::write_summaries(app, false);
}

pub fn spawn(app: Arc<App>) {
    // Timers and schedulers fire their events, and the audit schedulers start their jobs, on
    // one clock (B7).
    crate::jobs::timers::spawn(app.clone());
    // The housekeeping has a tick of its own, on a thread of its own (it reads the model under
    // its lock; not the blocking pool, see `timers::spawn`): a long archive or export never
    // delays the end of a session whose user no longer acts.
    let runtime = tokio::runtime::Handle::current();
    let started = std::thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || {
            let _context = runtime.enter();
            crate::jobs::timers::every(std::time::Duration::from_secs(1), || housekeeping(&app));
        });
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start the housekeeping's thread: sessions will not expire");
    }
}
