//! What a device connected over AlwaysOn may do, decided here like any request (DOMAIN
//! section 10): binding Remote Things (C2). The adapter (`http/edge.rs`) speaks the protocol.

use crate::api::ApiError;
use crate::api::authz::{require, visible_entity};
use crate::state::app::App;
use crate::state::auth::Caller;
use crate::state::edge::BindRefused;
use axum::http::StatusCode;
use serde_json::json;
use thinghost_core::access::Target;
use thinghost_core::{Body, Kind, Permission};

/// The template every Remote Thing's chain holds (shipped by the connection-services extension).
pub const REMOTE_THING: &str = "RemoteThing";
/// The service whose ServiceInvoke a device needs to bind a Thing (and to push its values).
pub const UPDATE_VALUES: &str = "UpdateSubscribedPropertyValues";

/// Binds `thing` to connection `conn` for `caller` (C2): a Thing the caller cannot see answers
/// as a missing one; it must be a Remote Thing; the caller needs ServiceInvoke on its
/// `UpdateSubscribedPropertyValues` (a denial is audited); one connection at a time.
pub fn bind(
    app: &App,
    caller: &Caller,
    conn: u64,
    thing: &str,
    gateway: Option<&str>,
) -> Result<(), ApiError> {
    {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        let m = db.model();
        let (e, id) = visible_entity(m, caller, Kind::Thing, thing)?;
        let Body::Thing(t) = &e.body else {
            unreachable!("a Thing")
        };
        let remote = thinghost_core::validate::template_chain(m, &t.thing_template)
            .is_ok_and(|chain| chain.iter().any(|t| t.name == REMOTE_THING));
        if !remote {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "Thing {thing} is not a Remote Thing: only a Thing whose template is based on {REMOTE_THING} can be bound (install connection-services and base its template on {REMOTE_THING})"
                ),
            ));
        }
        if let Err(e) = require(
            m,
            caller,
            Permission::ServiceInvoke,
            Target::Entity {
                id,
                resource: m.access().sym(UPDATE_VALUES),
            },
            format_args!("Things/{thing}/Services/{UPDATE_VALUES}"),
        ) {
            e.audit_denial(app, &caller.name, json!({"via": "AlwaysOn BIND"}));
            return Err(e);
        }
    }
    match app.edge.bind(conn, thing, gateway) {
        Ok(()) => Ok(()),
        Err(BindRefused::Elsewhere { user, since }) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "Thing {thing} is bound to another connection (of {user}, since {}): a Thing is bound to one connection at a time; unbind it there first",
                thinghost_core::types::format_datetime(since)
            ),
        )),
        Err(BindRefused::Closed) => {
            Err(ApiError::new(StatusCode::GONE, "the connection is closed"))
        }
    }
}
