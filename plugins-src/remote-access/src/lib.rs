//! remote-access (RAE): remote sessions to devices, and the grant services that let a user group
//! use them (DOMAIN section 6, seed 002).
//!
//! The session services belong to the shape `RemoteAccessible`; the host keeps the sessions and
//! their nonce keys (host functions `start_session`, ...) and checks that the caller may invoke
//! the Thing's session services. The grant services give an organization visibility of a Thing
//! (or of every Thing of a template) and a user group exactly the seed's minimum: `Read`,
//! `PropertyRead`, and `ServiceInvoke` on the four session services (G3), in one change (one
//! transaction, one audit entry). Every host call runs as the user who called the service: only
//! an administrator, or a user with Update on the target, can grant (G4).

use thinghost_sdk::{Error, Handlers, Json, host, json};

/// The shape a target must implement (G2).
const SHAPE: &str = "RemoteAccessible";
/// The services a grant opens, and nothing else (G3).
const SESSION_SERVICES: [&str; 4] = ["StartSession", "EndSession", "GetSession", "GetSessions"];

/// The permissions of a grant: visibility for the organization; design-time Read,
/// PropertyRead, and ServiceInvoke on each session service for the group.
fn grant_permissions(organization: &str, group: &str) -> Json {
    let mut list = vec![
        json!({"family": "visibility", "principal": organization, "principalType": "Organization"}),
        json!({"family": "designTime", "principal": group, "principalType": "Group", "type": "Read", "allow": true}),
        json!({"family": "runTime", "principal": group, "principalType": "Group", "type": "PropertyRead", "resource": "*", "allow": true}),
    ];
    for service in SESSION_SERVICES {
        list.push(json!({"family": "runTime", "principal": group, "principalType": "Group", "type": "ServiceInvoke", "resource": service, "allow": true}));
    }
    Json::Array(list)
}

/// Grants on a Thing (`Things`) or on a template's Things (`ThingTemplates`, as instance
/// permissions).
fn grant(collection: &str, target: &str, organization: &str, group: &str) -> Result<String, Error> {
    let label = if collection == "Things" {
        "Thing"
    } else {
        "ThingTemplate"
    };
    let implements: bool = host::invoke_entity_service(
        collection,
        target,
        "ImplementsShape",
        &json!({"thingShapeName": SHAPE}),
    )?;
    if !implements {
        return Err(Error::Invalid(format!(
            "{label} {target} does not implement the shape {SHAPE}; nothing was granted"
        )));
    }
    if organization.trim().is_empty() {
        return Err(Error::Invalid("organization is required".into()));
    }
    let service = if collection == "Things" {
        "AddPermissions"
    } else {
        "AddInstancePermissions"
    };
    let _: Json = host::invoke_entity_service(
        collection,
        target,
        service,
        &json!({"permissions": grant_permissions(organization, group)}),
    )?;
    Ok(format!(
        "granted on {label} {target}{}: visibility to {organization}; Read, PropertyRead and ServiceInvoke on {} to {group}",
        if collection == "Things" {
            ""
        } else {
            " (every Thing of it)"
        },
        SESSION_SERVICES.join(", ")
    ))
}

/// `GrantPermissionsThingWorxInternalForThing(organization, userGroup, thingName)`.
fn grant_for_thing(organization: String, group: String, thing: String) -> Result<String, Error> {
    grant("Things", &thing, &organization, &group)
}

/// `GrantPermissionsThingWorxInternalForTemplate(organization, userGroup, templateName)`.
fn grant_for_template(
    organization: String,
    group: String,
    template: String,
) -> Result<String, Error> {
    grant("ThingTemplates", &template, &organization, &group)
}

/// The provider Thing sessions started here go through (ACE's Axeda templates override
/// `StartSession` to go through theirs).
const PROVIDER: &str = "ThingworxInternalRemoteAccessProvider";

/// `StartSession(remoteEndpoint)`: a session of the caller on this Thing, with the launch URI
/// that carries its single-use nonce key, and the provider it goes through.
fn start_session(endpoint: String) -> Result<Json, Error> {
    let mut started = host::start_session(&endpoint)?;
    started["provider"] = json!(PROVIDER);
    Ok(started)
}

/// `EndSession(sessionId)`.
fn end_session(session: String) -> Result<Json, Error> {
    host::end_session(&session)
}

/// `GetSession(sessionId)`.
fn get_session(session: String) -> Result<Json, Error> {
    host::get_session(&session)
}

/// `GetSessions()`: the caller's current sessions on this Thing.
fn get_sessions() -> Result<Json, Error> {
    host::list_sessions()
}

fn register(h: &mut Handlers) {
    h.add("grant_for_thing", grant_for_thing)
        .add("grant_for_template", grant_for_template)
        .add("start_session", start_session)
        .add("end_session", end_session)
        .add("get_session", get_session)
        .add("get_sessions", get_sessions);
}

thinghost_sdk::extension!(register);
