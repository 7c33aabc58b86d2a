//! The host API: what extension code may ask of the host, defined once for every runtime.
//!
//! The Rhai functions, the Rhai reference and the WIT contract's imports are generated from [`HOST_FUNCTIONS`] and call
//! [`Host::call`]; the host implements that one function, which authorizes every call (the
//! extension's declared capabilities, then the caller's own rights) before doing anything.

use serde_json::Value as Json;
use thiserror::Error;

/// One request from extension code.
#[derive(Clone, Debug, PartialEq)]
pub enum HostCall {
    /// Reads a property of a Thing.
    GetProperty { thing: String, property: String },
    /// Writes a property of a Thing.
    SetProperty {
        thing: String,
        property: String,
        value: Json,
    },
    /// Runs a service of a Thing with a JSON object of parameters.
    InvokeService {
        thing: String,
        service: String,
        params: Json,
    },
    /// Runs a service of any entity (`Things`, `ThingTemplates`, `Groups`, ...).
    InvokeEntityService {
        collection: String,
        entity: String,
        service: String,
        params: Json,
    },
    /// The names of the Things the caller can see.
    ListThings,
    /// Starts a remote-access session of the caller on the running service's Thing.
    StartSession { endpoint: String },
    /// Ends a session on the running service's Thing.
    EndSession { session: String },
    /// One session on the running service's Thing.
    GetSession { session: String },
    /// The caller's current sessions on the running service's Thing.
    ListSessions,
    /// Writes a line to the host's log, attributed to the extension.
    Log { message: String },
    /// Writes an entry in the audit history.
    Audit { message: String },
    /// The name of the user the code runs for.
    Caller,
    /// The name of the entity whose service is running.
    Me,
    /// Fires an event of the running service's Thing with its data.
    FireEvent { event: String, data: Json },
}

impl HostCall {
    /// The row of [`HOST_FUNCTIONS`] this call belongs to.
    pub fn row(&self) -> &'static HostFn {
        let name = self.function();
        HOST_FUNCTIONS
            .iter()
            .find(|f| f.name == name)
            .expect("every call has its row")
    }

    /// The host function this call belongs to (as named in `[capabilities] functions`).
    pub fn function(&self) -> &'static str {
        match self {
            HostCall::GetProperty { .. } => "get_property",
            HostCall::SetProperty { .. } => "set_property",
            HostCall::InvokeService { .. } => "invoke_service",
            HostCall::InvokeEntityService { .. } => "invoke_entity_service",
            HostCall::ListThings => "list_things",
            HostCall::StartSession { .. } => "start_session",
            HostCall::EndSession { .. } => "end_session",
            HostCall::GetSession { .. } => "get_session",
            HostCall::ListSessions => "list_sessions",
            HostCall::Log { .. } => "log",
            HostCall::Audit { .. } => "audit",
            HostCall::Caller => "caller",
            HostCall::Me => "me",
            HostCall::FireEvent { .. } => "fire_event",
        }
    }
}

/// The type of a host function's parameter or result, as each runtime sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// A name or a message.
    Str,
    /// A value of any base type (JSON, as in the REST API).
    Json,
    /// A map of parameters (a JSON object).
    Params,
    /// A list of names.
    Names,
    /// Nothing.
    Unit,
}

impl Ty {
    /// The WIT spelling (in `sdk/wit/thinghost.wit`).
    pub fn wit(self) -> &'static str {
        match self {
            Ty::Str => "string",
            Ty::Json | Ty::Params => "json",
            Ty::Names => "list<string>",
            Ty::Unit => "_",
        }
    }

    /// The Rhai spelling (in `sdk/rhai-api.md`).
    pub fn rhai(self) -> &'static str {
        match self {
            Ty::Str => "string",
            Ty::Json => "value",
            Ty::Params => "map",
            Ty::Names => "array of strings",
            Ty::Unit => "()",
        }
    }
}

impl HostCall {
    /// A call from a host function's name and its arguments in order (for runtimes whose calls
    /// arrive as data: the native ABI).
    pub fn from_args(function: &str, args: Vec<Json>) -> Result<HostCall, HostError> {
        let f = HOST_FUNCTIONS
            .iter()
            .find(|f| f.name == function)
            .ok_or_else(|| HostError::Invalid(format!("there is no host function {function:?}")))?;
        if args.len() != f.params.len() {
            return Err(HostError::Invalid(format!(
                "{function} takes {} arguments, not {}",
                f.params.len(),
                args.len()
            )));
        }
        let mut it = args.into_iter();
        let mut next = |ty: Ty| -> Result<Json, HostError> {
            let v = it.next().expect("counted");
            match ty {
                Ty::Str if !v.is_string() => Err(HostError::Invalid(format!(
                    "{function}: a name or message must be a string, not {v}"
                ))),
                Ty::Params if !v.is_object() => Err(HostError::Invalid(format!(
                    "{function}: the parameters must be an object, not {v}"
                ))),
                _ => Ok(v),
            }
        };
        let text = |v: Json| v.as_str().unwrap_or_default().to_string();
        Ok(match function {
            "get_property" => HostCall::GetProperty {
                thing: text(next(Ty::Str)?),
                property: text(next(Ty::Str)?),
            },
            "set_property" => HostCall::SetProperty {
                thing: text(next(Ty::Str)?),
                property: text(next(Ty::Str)?),
                value: next(Ty::Json)?,
            },
            "invoke_service" => HostCall::InvokeService {
                thing: text(next(Ty::Str)?),
                service: text(next(Ty::Str)?),
                params: next(Ty::Params)?,
            },
            "invoke_entity_service" => HostCall::InvokeEntityService {
                collection: text(next(Ty::Str)?),
                entity: text(next(Ty::Str)?),
                service: text(next(Ty::Str)?),
                params: next(Ty::Params)?,
            },
            "list_things" => HostCall::ListThings,
            "start_session" => HostCall::StartSession {
                endpoint: text(next(Ty::Str)?),
            },
            "end_session" => HostCall::EndSession {
                session: text(next(Ty::Str)?),
            },
            "get_session" => HostCall::GetSession {
                session: text(next(Ty::Str)?),
            },
            "list_sessions" => HostCall::ListSessions,
            "log" => HostCall::Log {
                message: text(next(Ty::Str)?),
            },
            "audit" => HostCall::Audit {
                message: text(next(Ty::Str)?),
            },
            "caller" => HostCall::Caller,
            "me" => HostCall::Me,
            "fire_event" => HostCall::FireEvent {
                event: text(next(Ty::Str)?),
                data: next(Ty::Json)?,
            },
            other => unreachable!("{other} is in HOST_FUNCTIONS but not here"),
        })
    }
}

/// A host function as extension code sees it.
#[derive(Clone, Copy, Debug)]
pub struct HostFn {
    /// snake_case; the WIT name is the same in kebab-case.
    pub name: &'static str,
    pub params: &'static [(&'static str, Ty)],
    pub returns: Ty,
    pub doc: &'static str,
    /// Only extensions that list it may call it; code in the model never (the remote-access
    /// session functions: they make credentials, nonce keys, for the caller, and code that
    /// anyone with `Update` on a Thing wrote must not hold them).
    pub extensions_only: bool,
}

impl HostFn {
    /// The name in WIT (`get-property`).
    pub fn wit_name(&self) -> String {
        self.name.replace('_', "-")
    }
}

/// Every host function, in one place: the Rhai API, its reference page and the WIT contract's
/// `host` interface are generated from this (tests keep the checked-in files equal to it).
pub const HOST_FUNCTIONS: &[HostFn] = &[
    HostFn {
        name: "get_property",
        params: &[("thing", Ty::Str), ("property", Ty::Str)],
        returns: Ty::Json,
        doc: "The property's value, as the caller may read it.",
        extensions_only: false,
    },
    HostFn {
        name: "set_property",
        params: &[
            ("thing", Ty::Str),
            ("property", Ty::Str),
            ("value", Ty::Json),
        ],
        returns: Ty::Unit,
        doc: "Writes the property, as the caller may write it.",
        extensions_only: false,
    },
    HostFn {
        name: "invoke_service",
        params: &[
            ("thing", Ty::Str),
            ("service", Ty::Str),
            ("params", Ty::Params),
        ],
        returns: Ty::Json,
        doc: "Runs a service with a map of parameters, as the caller may. A service with one result gives that value; others give their InfoTable.",
        extensions_only: false,
    },
    HostFn {
        name: "invoke_entity_service",
        params: &[
            ("collection", Ty::Str),
            ("entity", Ty::Str),
            ("service", Ty::Str),
            ("params", Ty::Params),
        ],
        returns: Ty::Json,
        doc: "Runs a service of any entity (collection `Things`, `ThingTemplates`, `Groups`, ...), as the caller may; the result as for invoke_service.",
        extensions_only: false,
    },
    HostFn {
        name: "list_things",
        params: &[],
        returns: Ty::Names,
        doc: "The names of the Things the caller can see.",
        extensions_only: false,
    },
    HostFn {
        name: "start_session",
        params: &[("remote_endpoint", Ty::Str)],
        returns: Ty::Json,
        doc: "Starts a remote-access session of the caller on the running service's Thing (the caller must hold ServiceInvoke on its StartSession). Gives sessionId, launchUri (with a single-use nonce key), nonceExpiresInSeconds and the session.",
        extensions_only: true,
    },
    HostFn {
        name: "end_session",
        params: &[("session_id", Ty::Str)],
        returns: Ty::Json,
        doc: "Ends a session on the running service's Thing (the caller's own; an administrator's any). Gives the ended session.",
        extensions_only: true,
    },
    HostFn {
        name: "get_session",
        params: &[("session_id", Ty::Str)],
        returns: Ty::Json,
        doc: "A session on the running service's Thing that the caller may see (its own; an administrator's any).",
        extensions_only: true,
    },
    HostFn {
        name: "list_sessions",
        params: &[],
        returns: Ty::Json,
        doc: "The current sessions on the running service's Thing that the caller may see, as a list.",
        extensions_only: true,
    },
    HostFn {
        name: "log",
        params: &[("message", Ty::Str)],
        returns: Ty::Unit,
        doc: "A line in the host's log, attributed to the extension and the caller.",
        extensions_only: false,
    },
    HostFn {
        name: "audit",
        params: &[("message", Ty::Str)],
        returns: Ty::Unit,
        doc: "An entry in the audit history (category Extensions), attributed to the extension and the caller.",
        extensions_only: false,
    },
    HostFn {
        name: "caller",
        params: &[],
        returns: Ty::Str,
        doc: "The name of the user the code runs for.",
        extensions_only: false,
    },
    HostFn {
        name: "me",
        params: &[],
        returns: Ty::Str,
        doc: "The name of the entity whose service is running (ThingWorx's `me`): the Thing, also when the service comes from its template or a shape.",
        extensions_only: false,
    },
    HostFn {
        name: "fire_event",
        params: &[("event", Ty::Str), ("data", Ty::Json)],
        returns: Ty::Unit,
        doc: "Fires an event of the running service's Thing (`me`) with its data (an object of the event's DataShape fields), as the caller, who needs EventInvoke on it. Its subscriptions run from the event queue, not inside the call.",
        extensions_only: false,
    },
];

/// The WIT package version of the contract. A breaking change to the contract is a new major
/// version of the package; the host keeps serving the old one beside it.
pub const WIT_PACKAGE: &str = "thinghost:extension@0.1.0";

/// The whole WIT contract (`sdk/wit/thinghost.wit`), generated from [`HOST_FUNCTIONS`].
pub fn wit() -> String {
    let mut host = String::new();
    for f in HOST_FUNCTIONS {
        let params: Vec<String> = f
            .params
            .iter()
            .map(|(n, t)| format!("{}: {}", n.replace('_', "-"), t.wit()))
            .collect();
        host.push_str(&format!(
            "    /// {}\n    {}: func({}) -> result<{}, host-error>;\n",
            f.doc,
            f.wit_name(),
            params.join(", "),
            f.returns.wit()
        ));
    }
    WIT_TEMPLATE
        .replace("{package}", WIT_PACKAGE)
        .replace("{host}", host.trim_end())
}

const WIT_TEMPLATE: &str = r#"// The contract between thinghost and its WebAssembly extensions.
//
// Generated from HOST_FUNCTIONS (host/extensions/src/host_api.rs) by
// `thinghost plugin wit > sdk/wit/thinghost.wit`; a test keeps the two equal.
//
// An extension is a component of the world `extension`: it imports `host` and exports `handlers`.
// Values cross the boundary as JSON text, the same representation the REST API uses for each
// base type (a NUMBER is a JSON number, a DATETIME an ISO-8601 string, an INFOTABLE an object).
// Every host call is made as a request of the user who invoked the service, and only within the
// extension's declared [capabilities].

package {package};

interface types {
    /// A value as JSON text.
    type json = string;

    /// Why a host call failed. `not-found` is also the answer for what the caller cannot see.
    variant host-error {
        /// The entity does not exist, or the caller cannot see it.
        not-found(string),
        /// The caller lacks the permission.
        denied(string),
        /// The extension's manifest does not declare this in [capabilities].
        capability(string),
        /// A bad name, value or parameter.
        invalid(string),
        /// Anything else.
        failed(string),
    }
}

/// What extension code may ask of the host.
interface host {
    use types.{json, host-error};

{host}
}

/// What the extension gives the host.
interface handlers {
    use types.{json};

    /// A handler and how many parameters it takes.
    record handler {
        name: string,
        arity: u32,
    }

    /// Every handler the component defines (checked against the manifest at load).
    list-handlers: func() -> list<handler>;

    /// Runs a handler with the service's parameters in declared order (a JSON array). The result
    /// is JSON text, checked against the service's result type; an error is a message for the
    /// caller.
    call: func(name: string, args: json) -> result<json, string>;
}

world extension {
    import host;
    export handlers;
}
"#;

/// Why a host call failed. `NotFound` is also the answer for what the caller cannot see.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HostError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("not declared in the extension's [capabilities]: {0}")]
    Capability(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("failed: {0}")]
    Failed(String),
}

impl HostError {
    /// The message without the kind.
    pub fn message(&self) -> &str {
        match self {
            HostError::NotFound(m)
            | HostError::Denied(m)
            | HostError::Capability(m)
            | HostError::Invalid(m)
            | HostError::Failed(m) => m,
        }
    }
}

/// Why a call into an extension failed (every runtime).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CallError {
    #[error(
        "the call took longer than its deadline of {0:?} and was stopped (an extension's deadline is `[limits] deadline_ms` in its plugin.toml, at most 60000)"
    )]
    Deadline(std::time::Duration),
    #[error("the extension hit a limit: {0}")]
    Limit(String),
    #[error("the handler failed: {0}")]
    Script(String),
    #[error("the extension's code failed: {0}")]
    Trap(String),
    #[error("the extension returned a value that is not JSON-like: {0}")]
    BadResult(String),
}

impl CallError {
    /// A handler's refusal of the request rather than a failure: an error message that starts
    /// like a host error, `invalid: ` (a bad parameter: 400), `not found: ` (404) or `denied: `
    /// (403), whether the handler wrote it or let a host error through. Gives the HTTP status
    /// and the message.
    pub fn rejection(&self) -> Option<(u16, &str)> {
        let CallError::Script(m) = self else {
            return None;
        };
        [("invalid: ", 400), ("not found: ", 404), ("denied: ", 403)]
            .iter()
            .find_map(|(prefix, status)| m.strip_prefix(prefix).map(|rest| (*status, rest)))
    }
}

/// The host side of the API. One `call` for everything: the choke point.
pub trait Host: Send + Sync {
    fn call(&self, call: HostCall) -> Result<Json, HostError>;
}
