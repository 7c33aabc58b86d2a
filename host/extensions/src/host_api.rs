//! The host API: what extension code may ask of the host, defined once for every runtime.
//!
//! The Rhai functions and (later) the WIT imports are generated from [`HOST_FUNCTIONS`] and call
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
    /// The names of the Things the caller can see.
    ListThings,
    /// Writes a line to the host's log, attributed to the extension.
    Log { message: String },
    /// The name of the user the code runs for.
    Caller,
}

impl HostCall {
    /// The host function this call belongs to (as named in `[capabilities] functions`).
    pub fn function(&self) -> &'static str {
        match self {
            HostCall::GetProperty { .. } => "get_property",
            HostCall::SetProperty { .. } => "set_property",
            HostCall::InvokeService { .. } => "invoke_service",
            HostCall::ListThings => "list_things",
            HostCall::Log { .. } => "log",
            HostCall::Caller => "caller",
        }
    }
}

/// A host function as extension code sees it.
#[derive(Clone, Copy, Debug)]
pub struct HostFn {
    pub name: &'static str,
    pub params: &'static [&'static str],
    pub returns: &'static str,
    pub doc: &'static str,
}

/// Every host function, in one place: the Rhai API and its reference are generated from this.
pub const HOST_FUNCTIONS: &[HostFn] = &[
    HostFn {
        name: "get_property",
        params: &["thing", "property"],
        returns: "value",
        doc: "The property's value, as the caller may read it.",
    },
    HostFn {
        name: "set_property",
        params: &["thing", "property", "value"],
        returns: "()",
        doc: "Writes the property, as the caller may write it.",
    },
    HostFn {
        name: "invoke_service",
        params: &["thing", "service", "params"],
        returns: "value",
        doc: "Runs a service with a map of parameters, as the caller may.",
    },
    HostFn {
        name: "list_things",
        params: &[],
        returns: "array of names",
        doc: "The Things the caller can see.",
    },
    HostFn {
        name: "log",
        params: &["message"],
        returns: "()",
        doc: "A line in the host's log, attributed to the extension.",
    },
    HostFn {
        name: "caller",
        params: &[],
        returns: "string",
        doc: "The name of the user the code runs for.",
    },
];

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

/// The host side of the API. One `call` for everything: the choke point.
pub trait Host: Send + Sync {
    fn call(&self, call: HostCall) -> Result<Json, HostError>;
}
