//! `Resources/SecurityServices`: `EffectivePermissions(user)` and `Lint()` (issue 9), beside
//! `ExplainAccess` (in `services.rs`). The answers come from `thinghost_core::insight` and
//! `thinghost_core::lint`, which ask the access engine.

use crate::app::App;
use crate::auth::Caller;
use crate::rest::{ApiError, Reply};
use crate::services::{Call, forbidden};
use serde_json::{Map, Value as Json};
use thinghost_core::infotable::{Field, InfoTable};
use thinghost_core::{BaseType, Kind, Model, Permission, predefined};

/// May the caller look at everyone's permissions and the lint? Administrators and members of
/// SecurityAdministrators may.
pub(crate) fn security_admin(call: &Call<'_>) -> bool {
    may_inspect(call.model(), call.caller)
}

fn may_inspect(m: &Model, caller: &Caller) -> bool {
    let access = m.access();
    if access.is_administrator(caller.subject) {
        return true;
    }
    let Some(group) = access.id(Kind::Group, predefined::SECURITY_ADMINISTRATORS) else {
        return false;
    };
    access.principals(caller.subject).any(|p| p == group)
}

/// `Lint` and `EffectivePermissions`: they read the whole model (for long, on a large one), so
/// they run under the model's shared lock, beside other readers, not under the lock of changes.
pub fn read_only(
    app: &App,
    caller: &Caller,
    service: &str,
    mut params: Map<String, Json>,
) -> Result<Reply, ApiError> {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    let m = db.model();
    if service == "Lint" {
        crate::services::check_params(m, caller, service, &mut params, &[])?;
        return lint(app, m, caller);
    }
    crate::services::check_params(
        m,
        caller,
        service,
        &mut params,
        &[("user", BaseType::String, true)],
    )?;
    let user = params
        .get("user")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    effective(m, caller, &user)
}

fn table(fields: &[(&str, BaseType)], rows: Vec<Map<String, Json>>) -> Reply {
    Reply::Json(
        InfoTable {
            fields: fields
                .iter()
                .map(|(n, t)| Field {
                    name: (*n).into(),
                    base_type: *t,
                })
                .collect(),
            rows,
        }
        .into_json(),
    )
}

/// `EffectivePermissions(user)`: every entity the user can see, with every permission it holds
/// and why. Administrators and security administrators may ask about anyone; a user about
/// itself.
/// (`user` is a plain STRING: a security administrator asks about users it need not see; anyone
/// else only about itself.)
fn effective(m: &Model, caller: &Caller, user: &str) -> Result<Reply, ApiError> {
    if user != caller.name && !may_inspect(m, caller) {
        return Err(forbidden(
            caller,
            "read another user's effective permissions (Administrators and SecurityAdministrators may)",
            "Resources/SecurityServices".into(),
            Permission::ServiceInvoke,
        ));
    }
    let holdings =
        thinghost_core::insight::effective_permissions(m, user, true).ok_or_else(|| {
            crate::services::bad(format!("parameter user: there is no User named {user:?}"))
        })?;
    let rows = holdings.iter().map(row).collect();
    Ok(table(
        &[
            ("entity", BaseType::String),
            ("permission", BaseType::String),
            ("resource", BaseType::String),
            ("allowed", BaseType::Boolean),
            ("why", BaseType::String),
        ],
        rows,
    ))
}

/// A value as an InfoTable row: its serialized fields (the shapes above name the same fields).
fn row(v: &impl serde::Serialize) -> Map<String, Json> {
    match serde_json::to_value(v) {
        Ok(Json::Object(m)) => m,
        _ => unreachable!("holdings and findings serialize as objects"),
    }
}

/// `Lint()`: the security lint's findings, most severe first.
fn lint(app: &App, m: &Model, caller: &Caller) -> Result<Reply, ApiError> {
    if !may_inspect(m, caller) {
        return Err(forbidden(
            caller,
            "run the security lint (Administrators and SecurityAdministrators may)",
            "Resources/SecurityServices".into(),
            Permission::ServiceInvoke,
        ));
    }
    let findings = thinghost_core::lint::lint(m, &app.deployment, crate::now_ms());
    let rows = findings.iter().map(row).collect();
    Ok(table(
        &[
            ("rule", BaseType::String),
            ("severity", BaseType::String),
            ("title", BaseType::String),
            ("message", BaseType::String),
            ("entities", BaseType::Json),
            ("fix", BaseType::String),
            ("doc", BaseType::String),
        ],
        rows,
    ))
}
