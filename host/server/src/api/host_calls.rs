//! Code's calls into the host: [`run_service`] runs a service's code (an extension's handler or
//! code in the model, B1, B4) and [`run_subscription`] a subscription's, each with a
//! [`HostCtx`]; [`HostCtx::call`] is the one choke point every
//! host call of every runtime passes (an extension's declared capabilities, then the typed API as
//! the calling user).

use crate::api::{ApiError, Reply};
use crate::runtime::extensions::{Loaded, MAX_DEPTH};
use crate::state::app::App;
use crate::state::auth::Caller;
use axum::http::StatusCode;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use thinghost_core::{Body, Kind, View};
use thinghost_extensions::host_api::{Host, HostCall, HostError};

/// Whose code makes host calls.
pub enum Origin {
    /// An extension's handler: held to its manifest's capabilities (E6).
    Extension(Arc<Loaded>),
    /// Code in the model (B4), by its place (`ThingTemplates/Pump/Services/Vent`): it runs with
    /// the caller's rights and lists no capabilities (whoever wrote it had design-time `Update`
    /// on its entity, B3).
    Model(String),
}

impl Origin {
    /// What the audit and the log say of it.
    fn context(&self) -> Json {
        match self {
            Origin::Extension(l) => json!({"extension": l.manifest.name()}),
            Origin::Model(place) => json!({"code": place}),
        }
    }

    fn name(&self) -> &str {
        match self {
            Origin::Extension(l) => l.manifest.name(),
            Origin::Model(place) => place,
        }
    }
}

/// The host side of one call of code: who called, whose code.
pub struct HostCtx {
    pub app: Arc<App>,
    pub caller: Caller,
    pub origin: Origin,
    /// The entity whose service runs.
    pub me: String,
}

/// Does `pattern` (`Things/*`, `Things/Pump*`, `Things/Hub/Services/*`) match `path`?
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == path,
        Some((pre, post)) => {
            path.len() >= pre.len() + post.len()
                && path.starts_with(pre)
                && pattern_matches_rest(post, &path[pre.len()..])
        }
    }
}

fn pattern_matches_rest(pattern: &str, path: &str) -> bool {
    if pattern.is_empty() {
        return true;
    }
    (0..=path.len())
        .filter(|i| path.is_char_boundary(*i))
        .any(|i| pattern_matches(pattern, &path[i..]))
}

impl HostCtx {
    /// Is the Thing the extension's own (contributed by it, or made from one of its templates)?
    fn own_thing(&self, extension: &Loaded, thing: &str) -> bool {
        let db = self.app.db.read().unwrap_or_else(|p| p.into_inner());
        let m = db.model();
        let name = extension.manifest.name();
        let Some(e) = m.get(Kind::Thing, thing) else {
            return false;
        };
        if e.extension.as_deref() == Some(name) {
            return true;
        }
        let Body::Thing(t) = &e.body else {
            return false;
        };
        thinghost_core::validate::template_chain(m, &t.thing_template)
            .map(|chain| chain.iter().any(|t| t.extension.as_deref() == Some(name)))
            .unwrap_or(false)
    }

    /// Is the entity the extension's own (contributed by it; for a Thing also one made from its
    /// templates)?
    fn own_entity(&self, extension: &Loaded, collection: &str, entity: &str) -> bool {
        if collection == "Things" {
            return self.own_thing(extension, entity);
        }
        let Some(kind) = Kind::from_collection(collection) else {
            return false;
        };
        let db = self.app.db.read().unwrap_or_else(|p| p.into_inner());
        db.model()
            .get(kind, entity)
            .is_some_and(|e| e.extension.as_deref() == Some(extension.manifest.name()))
    }

    /// The remote-access session functions act on the running service's Thing, for a caller who
    /// may invoke that Thing's session service of the same name (`StartSession`, ...): the host
    /// checks it, as it would a request. Gives whether the caller is an administrator (who sees
    /// every session of the Thing).
    fn session_rights(&self, service: &str) -> Result<bool, HostError> {
        let db = self.app.db.read().unwrap_or_else(|p| p.into_inner());
        let m = db.model();
        let access = m.access();
        let path = format!("Things/{}/Services/{service}", self.me);
        let Some(id) = access.id(Kind::Thing, &self.me) else {
            return Err(HostError::Invalid(format!(
                "remote-access sessions run on Things; {} is no Thing",
                self.me
            )));
        };
        let target = thinghost_core::Target::Entity {
            id,
            resource: access.sym(service),
        };
        match crate::api::require(
            m,
            &self.caller,
            thinghost_core::Permission::ServiceInvoke,
            target,
            &path,
        ) {
            Ok(_) => Ok(crate::api::authz::is_admin(m, self.caller.subject)),
            Err(e) => {
                e.audit_denial(&self.app, &self.caller.name, self.origin.context());
                Err(if e.status == StatusCode::NOT_FOUND {
                    HostError::NotFound(e.message)
                } else {
                    HostError::Denied(e.message)
                })
            }
        }
    }

    fn audit_session(&self, key: &str, session: &Json) {
        self.app.audit(
            &self.caller.name,
            crate::state::audit::category::REMOTE_ACCESS,
            key,
            {
                let mut args = self.origin.context();
                args["session"] = session.clone();
                args
            },
            &format!("Things/{}", self.me),
            "Thing",
        );
    }

    /// The extension's declared capabilities (least privilege for the extension itself). Code
    /// in the model declares none: the caller's rights bound it, and it may not call the
    /// functions only extensions may (`HostFn::extensions_only`).
    fn authorize(&self, call: &HostCall) -> Result<(), HostError> {
        // Code in the model ran for this request (here, or up the calls that led here).
        if call.row().extensions_only
            && (matches!(self.origin, Origin::Model(_)) || self.caller.in_model_code)
        {
            return Err(HostError::Capability(format!(
                "host function {} is for the extensions that list it in their [capabilities]; code in the model may not call it, nor what it calls",
                call.function()
            )));
        }
        let extension = match &self.origin {
            Origin::Extension(extension) => extension,
            Origin::Model(_) => return Ok(()),
        };
        let caps = &extension.manifest.capabilities;
        let f = call.function();
        // E6: deny by default. A manifest that lists no host functions may call none.
        if !caps.functions.iter().any(|x| x == f) {
            return Err(HostError::Capability(format!(
                "host function {f} (the manifest's [capabilities] functions does not list it: add \"{f}\" there)"
            )));
        }
        let (list, path, thing) = match call {
            HostCall::GetProperty { thing, .. } => {
                (&caps.read, format!("Things/{thing}"), Some(thing))
            }
            HostCall::SetProperty { thing, .. } => {
                (&caps.write, format!("Things/{thing}"), Some(thing))
            }
            HostCall::InvokeService { thing, service, .. } => (
                &caps.invoke,
                format!("Things/{thing}/Services/{service}"),
                Some(thing),
            ),
            HostCall::InvokeEntityService {
                collection,
                entity,
                service,
                ..
            } => {
                let path = format!("{collection}/{entity}/Services/{service}");
                return if self.own_entity(extension, collection, entity)
                    || caps.invoke.iter().any(|p| pattern_matches(p, &path))
                {
                    Ok(())
                } else {
                    Err(HostError::Capability(format!("{f} on {path}")))
                };
            }
            HostCall::ListThings => (&caps.read, "Things/*".to_string(), None),
            // The session functions act on the running service's own Thing only; the host checks
            // the caller's right to its session services (`session_rights`).
            HostCall::StartSession { .. }
            | HostCall::EndSession { .. }
            | HostCall::GetSession { .. }
            | HostCall::ListSessions
            | HostCall::Log { .. }
            | HostCall::Audit { .. }
            | HostCall::Caller
            | HostCall::Me
            // Fires an event of the running service's own Thing only; the caller needs
            // EventInvoke on it, checked as for a request.
            | HostCall::FireEvent { .. } => {
                return Ok(());
            }
        };
        if thing.is_some_and(|t| self.own_thing(extension, t))
            || list
                .iter()
                .any(|p| pattern_matches(p, &path) || (thing.is_none() && p.starts_with("Things/")))
        {
            Ok(())
        } else {
            Err(HostError::Capability(format!("{f} on {path}")))
        }
    }

    /// Runs a service as a request of the caller: a service with one result gives that value,
    /// others their InfoTable, a void one null.
    fn invoke(
        &self,
        kind: Kind,
        entity: &str,
        service: &str,
        params: Json,
    ) -> Result<Json, HostError> {
        let params = match params {
            Json::Object(o) => crate::api::Params::from(o),
            Json::Null => crate::api::Params::new(),
            other => {
                return Err(HostError::Invalid(format!(
                    "the parameters of {service} are a JSON object, not {other}"
                )));
            }
        };
        let reply = self.request(|app, caller| {
            crate::api::invoke(app, caller, kind, entity, service, params)
        })?;
        Ok(reply.into_value())
    }

    /// Makes one call of the API as the caller, one level deeper; a failure is audited (when a
    /// denial) and mapped to the host API's errors.
    fn request(
        &self,
        call: impl FnOnce(&Arc<App>, &Caller) -> Result<Reply, ApiError>,
    ) -> Result<Reply, HostError> {
        let caller = Caller {
            depth: self.caller.depth + 1,
            ..self.caller.clone()
        };
        // Code acts for its caller only while the caller still acts (enabled, not locked, the
        // same user): a handler that runs on after its user was disabled does nothing more.
        {
            let db = self.app.db.read().unwrap_or_else(|p| p.into_inner());
            crate::state::auth::still_acts(db.model(), &caller.name, caller.subject).map_err(
                |r| HostError::Denied(format!("{} can no longer act ({})", caller.name, r.detail)),
            )?;
        }
        call(&self.app, &caller).map_err(|e| {
            // Every denial is audited, also one met by extension code on the caller's behalf.
            e.audit_denial(&self.app, &caller.name, self.origin.context());
            let msg = e.message.clone();
            match e.status {
                StatusCode::NOT_FOUND => HostError::NotFound(msg),
                StatusCode::FORBIDDEN => HostError::Denied(msg),
                StatusCode::BAD_REQUEST | StatusCode::CONFLICT => HostError::Invalid(msg),
                _ => HostError::Failed(msg),
            }
        })
    }
}

impl Host for HostCtx {
    /// The choke point: every host call of every runtime comes here, is checked against the
    /// extension's capabilities, and is then made as a request of the calling user, through the
    /// same checks as any request of that user (DOMAIN E4).
    fn call(&self, call: HostCall) -> Result<Json, HostError> {
        if let Err(e) = self.authorize(&call) {
            self.app.audit(
                &self.caller.name,
                crate::state::audit::category::AUTHORIZATION,
                "extensionCapabilityDenied",
                json!({"extension": self.origin.name(), "call": format!("{call:?}")}),
                "",
                "",
            );
            return Err(e);
        }
        let first_row = |reply: Reply, field: &str| reply.first_value(field);
        match call {
            HostCall::GetProperty { thing, property } => {
                let reply = self.request(|app, caller| {
                    crate::api::entities::read_property(app, caller, Kind::Thing, &thing, &property)
                })?;
                Ok(first_row(reply, &property))
            }
            HostCall::SetProperty {
                thing,
                property,
                value,
            } => {
                self.request(|app, caller| {
                    crate::api::entities::write_property(
                        app,
                        caller,
                        Kind::Thing,
                        &thing,
                        &property,
                        Some(&value),
                    )
                })?;
                Ok(Json::Null)
            }
            HostCall::InvokeService {
                thing,
                service,
                params,
            } => self.invoke(Kind::Thing, &thing, &service, params),
            HostCall::InvokeEntityService {
                collection,
                entity,
                service,
                params,
            } => {
                let Some(kind) = Kind::from_collection(&collection) else {
                    return Err(HostError::Invalid(format!(
                        "{collection:?} is not a collection (Things, ThingTemplates, ThingShapes, Groups, ...)"
                    )));
                };
                self.invoke(kind, &entity, &service, params)
            }
            HostCall::StartSession { endpoint } => {
                self.session_rights("StartSession")?;
                if endpoint.trim().is_empty() || endpoint.len() > 512 {
                    return Err(HostError::Invalid(
                        "remoteEndpoint: the device-side address (host:port), 1 to 512 characters"
                            .into(),
                    ));
                }
                let thing_id = {
                    let db = self.app.db.read().unwrap_or_else(|p| p.into_inner());
                    crate::api::tunnels::parse_endpoint(&endpoint).map_err(HostError::Invalid)?;
                    // C7: an endpoint the Thing does not list is refused before anything starts.
                    crate::api::tunnels::endpoint_allowed(db.model(), &self.me, &endpoint, true)
                        .map_err(HostError::Denied)?;
                    db.model().access().id(Kind::Thing, &self.me)
                };
                let Some(thing_id) = thing_id else {
                    return Err(HostError::NotFound(format!(
                        "Thing {:?} was not found",
                        self.me
                    )));
                };
                let started = self
                    .app
                    .sessions
                    .start(
                        (&self.me, thing_id),
                        (&self.caller.name, self.caller.subject),
                        &endpoint,
                    )
                    .map_err(HostError::Failed)?;
                self.audit_session("remoteSessionStarted", &started.session);
                Ok(json!({
                    "sessionId": started.session["sessionId"],
                    "launchUri": started.launch_uri,
                    "nonceExpiresInSeconds": started.expires_in.as_secs(),
                    "session": started.session,
                }))
            }
            HostCall::EndSession { session } => {
                let admin = self.session_rights("EndSession")?;
                let ended = self
                    .app
                    .sessions
                    .end(&session, &self.me, self.caller.subject, admin)
                    .ok_or_else(|| {
                        HostError::NotFound(format!(
                            "there is no session {session:?} on {}",
                            self.me
                        ))
                    })?;
                self.audit_session("remoteSessionEnded", &ended);
                Ok(ended)
            }
            HostCall::GetSession { session } => {
                let admin = self.session_rights("GetSession")?;
                self.app
                    .sessions
                    .get(&session, &self.me, self.caller.subject, admin)
                    .ok_or_else(|| {
                        HostError::NotFound(format!(
                            "there is no session {session:?} on {}",
                            self.me
                        ))
                    })
            }
            HostCall::ListSessions => {
                let admin = self.session_rights("GetSessions")?;
                Ok(Json::Array(self.app.sessions.list(
                    &self.me,
                    self.caller.subject,
                    admin,
                )))
            }
            HostCall::ListThings => {
                let reply = self
                    .request(|app, caller| crate::api::entities::list(app, caller, Kind::Thing))?;
                Ok(Json::Array(match reply.into_json() {
                    Some(v) => v["rows"]
                        .as_array()
                        .map(|rows| rows.iter().map(|r| r["name"].clone()).collect())
                        .unwrap_or_default(),
                    None => vec![],
                }))
            }
            HostCall::Log { message } => {
                // One record per line: control characters (a newline would forge a log line)
                // escaped, the message a field of its own and bounded.
                tracing::info!(
                    extension = self.origin.name(),
                    user = %self.caller.name,
                    message = %crate::state::auth::bounded(&message, 8192),
                    "extension log"
                );
                Ok(Json::Null)
            }
            HostCall::Audit { message } => {
                if message.len() > 4096 {
                    return Err(HostError::Invalid(
                        "an audit message is at most 4096 bytes".into(),
                    ));
                }
                self.app.audit(
                    &self.caller.name,
                    crate::state::audit::category::EXTENSIONS,
                    "extensionAudit",
                    {
                        let mut args = self.origin.context();
                        args["message"] = json!(message);
                        args
                    },
                    self.origin.name(),
                    match self.origin {
                        Origin::Extension(_) => "Extension",
                        Origin::Model(_) => "Code",
                    },
                );
                Ok(Json::Null)
            }
            HostCall::Caller => Ok(json!(&*self.caller.name)),
            HostCall::Me => Ok(json!(self.me)),
            HostCall::FireEvent { event, data } => {
                self.request(|app, caller| {
                    crate::api::events::fire(app, caller, Kind::Thing, &self.me, &event, &data)
                })?;
                Ok(Json::Null)
            }
        }
    }
}

/// What implements a service.
pub enum Implemented {
    /// An extension's handler.
    Handler {
        loaded: Arc<Loaded>,
        handler: Arc<str>,
    },
    /// Code in the model, compiled, and where it is (`ThingTemplates/Pump/Services/Vent`).
    Code {
        code: Arc<thinghost_extensions::rhai_runtime::ModelCode>,
        place: String,
    },
}

impl Implemented {
    /// Whose code it is, for the choke point and the audit.
    fn origin(&self) -> Origin {
        match self {
            Implemented::Handler { loaded, .. } => Origin::Extension(loaded.clone()),
            Implemented::Code { place, .. } => Origin::Model(place.clone()),
        }
    }
}

/// One call of a service that code implements.
pub struct Invocation<'a> {
    pub implemented: Implemented,
    /// The parameters' names (for code in the model, whose variables they are; a handler's
    /// may be empty) and their checked values, in declared order.
    pub names: &'a [&'a str],
    pub args: &'a [Json],
    pub result: thinghost_core::BaseType,
    /// The entity the service runs on.
    pub me: &'a str,
    /// The service's path, for messages (written only when one is needed).
    pub what: &'a dyn std::fmt::Display,
}

/// Runs a service implemented by an extension's handler or by code in the model, as the
/// caller.
pub fn run_service(app: &Arc<App>, caller: &Caller, inv: Invocation) -> Result<Reply, ApiError> {
    let Invocation {
        implemented,
        names,
        args,
        result,
        me,
        what,
    } = inv;
    if caller.depth >= MAX_DEPTH {
        return Err(ApiError::new(
            StatusCode::LOOP_DETECTED,
            format!("{what}: services call each other more than {MAX_DEPTH} deep"),
        ));
    }
    let origin = implemented.origin();
    // Who implements it, in words ("extension hello", "its code on ThingTemplates/Pump"), and
    // what the audit says of it: made only when a call fails (a JSON object and a string per
    // call were a tenth of a short call).
    let by = |implemented: &Implemented| match implemented {
        Implemented::Handler { loaded, .. } => format!("extension {}", loaded.manifest.name()),
        Implemented::Code { place, .. } => format!("its code on {place}"),
    };
    let host = Arc::new(HostCtx {
        app: app.clone(),
        caller: Caller {
            in_model_code: caller.in_model_code || matches!(origin, Origin::Model(_)),
            ..caller.clone()
        },
        origin,
        me: me.to_string(),
    });
    let out = match &implemented {
        Implemented::Handler { loaded, handler } => loaded.runtime.call(host, handler, args),
        Implemented::Code { code, .. } => {
            let me_value = json!(me);
            let mut vars: Vec<(&str, &Json)> = vec![("me", &me_value)];
            vars.extend(names.iter().copied().zip(args.iter()));
            code.run(host, &vars)
        }
    };
    let out = out.map_err(|e| {
        if let Some((status, message)) = e.rejection() {
            // The code refused the request (a bad parameter, something not found, not
            // allowed): the caller's error, not the server's.
            return ApiError::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                format!("{what}: {message}"),
            );
        }
        let mut args = implemented.origin().context();
        args["service"] = json!(what.to_string());
        args["error"] = json!(e.to_string());
        app.audit(
            &caller.name,
            crate::state::audit::category::EXTENSIONS,
            "extensionCallFailed",
            args,
            "",
            "",
        );
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what} failed in {}: {e}", by(&implemented)),
        )
    })?;
    if result == thinghost_core::BaseType::Nothing {
        return Ok(Reply::Empty);
    }
    let value = result.normalize(&out).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what}: {} returned a wrong result: {e}", by(&implemented)),
        )
    })?;
    Ok(crate::api::result(result, value))
}

/// Runs a subscription's code (or its extension's handler, given the event's data as its one
/// argument) for `caller`, on `me`, with the event as variables (`eventName`, `source`,
/// `eventData`). Its error, in words, for the audit: a subscription's failure is never its
/// firer's.
pub fn run_subscription(
    app: &Arc<App>,
    caller: &Caller,
    implemented: Implemented,
    me: &str,
    vars: &[(&str, &Json)],
) -> Result<(), String> {
    let origin = implemented.origin();
    let host = Arc::new(HostCtx {
        app: app.clone(),
        caller: Caller {
            in_model_code: caller.in_model_code || matches!(origin, Origin::Model(_)),
            ..caller.clone()
        },
        origin,
        me: me.to_string(),
    });
    let me_value = json!(me);
    match &implemented {
        Implemented::Handler { loaded, handler } => {
            let data = vars
                .iter()
                .find(|(n, _)| *n == "eventData")
                .map(|(_, v)| (*v).clone())
                .unwrap_or(Json::Null);
            loaded.runtime.call(host, handler, &[data])
        }
        Implemented::Code { code, .. } => {
            let mut all: Vec<(&str, &Json)> = vec![("me", &me_value)];
            all.extend(vars.iter().copied());
            code.run(host, &all)
        }
    }
    .map(|_| ())
    .map_err(|e| e.to_string())
}
