//! `Resources/SecurityServices`: `EffectivePermissions(user)` and `Lint()` (issue 9), beside
//! `ExplainAccess` (in `services.rs`). The answers come from `thinghost_core::insight` and
//! `thinghost_core::lint`, which ask the access engine.

use crate::api::{ApiError, Call, Reply, forbidden};
use serde_json::{Map, Value as Json};
use thinghost_core::infotable::{Field, InfoTable};
use thinghost_core::{BaseType, Permission};

use crate::api::authz::may_inspect;

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
pub fn effective(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let (m, caller, user) = (call.model(), call.caller, call.str("user"));
    let user = user.as_str();
    if *user != *caller.name && !may_inspect(m, caller) {
        return Err(forbidden(
            caller,
            "read another user's effective permissions (Administrators and SecurityAdministrators may)",
            "Resources/SecurityServices".into(),
            Permission::ServiceInvoke,
        ));
    }
    let holdings =
        thinghost_core::insight::effective_permissions(m, user, true).ok_or_else(|| {
            crate::api::services::bad(format!("parameter user: there is no User named {user:?}"))
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
/// (The row's rule: the SecurityAdministrators' role, P2, or an entry naming the service.)
pub fn lint(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let findings = thinghost_core::lint::lint(call.model(), &call.app.deployment, crate::now_ms());
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
