//! # thinghost-sdk
//!
//! Write a thinghost extension in Rust: plain functions that become the handlers of the services
//! your `plugin.toml` declares, compiled to a WebAssembly component (`wasm32-wasip2`).
//!
//! ```no_run
//! use thinghost_sdk::{Error, Handlers, host};
//!
//! fn greet(who: String) -> Result<String, Error> {
//!     let greeting: String = host::get_property("HelloThing", "greeting")?;
//!     Ok(format!("{greeting}, {who}!"))
//! }
//!
//! fn register(h: &mut Handlers) {
//!     h.add("greet", greet);
//! }
//!
//! thinghost_sdk::extension!(register);
//! ```
//!
//! A handler takes the service's parameters in the order the manifest declares them, each as any
//! type serde can read from its JSON form (a NUMBER as `f64` or `i64`, a STRING as `String`, a
//! BOOLEAN as `bool`, a JSON or INFOTABLE as [`Json`] or your own struct), and returns
//! `Result<T, E>` where `T` is serializable (checked by the host against the service's result
//! type) and `E` displays as the message the caller sees.
//!
//! Every function of [`host`] is a request of the user who called the service: the extension can
//! do nothing its caller could not, and only what its manifest's `[capabilities]` declare.

extern crate self as thinghost_sdk;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

pub use serde_json::{Value as Json, json};

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The bindings generated from `sdk/wit/thinghost.wit` (the contract; you rarely need them).
pub mod bindings {
    wit_bindgen::generate!({
        world: "extension",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "::thinghost_sdk::bindings",
        runtime_path: "::thinghost_sdk::__wit_bindgen::rt",
    });
}

use bindings::thinghost::extension::host as wit;
use bindings::thinghost::extension::types::HostError;

/// Why a host call failed: the host's answer, or a value that did not convert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The entity does not exist, or the caller cannot see it (the host does not tell which).
    NotFound(String),
    /// The caller lacks the permission.
    Denied(String),
    /// The manifest's `[capabilities]` do not declare this.
    Capability(String),
    /// A bad name, value or parameter.
    Invalid(String),
    /// Anything else the host reported.
    Failed(String),
    /// A value did not convert to or from JSON.
    Value(String),
    /// Your handler's own error.
    Handler(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::Denied(m) => write!(f, "denied: {m}"),
            Error::Capability(m) => {
                write!(f, "not declared in the extension's [capabilities]: {m}")
            }
            Error::Invalid(m) => write!(f, "invalid: {m}"),
            Error::Failed(m) => write!(f, "failed: {m}"),
            Error::Value(m) => write!(f, "bad value: {m}"),
            Error::Handler(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        match e {
            HostError::NotFound(m) => Error::NotFound(m),
            HostError::Denied(m) => Error::Denied(m),
            HostError::Capability(m) => Error::Capability(m),
            HostError::Invalid(m) => Error::Invalid(m),
            HostError::Failed(m) => Error::Failed(m),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Value(e.to_string())
    }
}

impl From<String> for Error {
    fn from(m: String) -> Self {
        Error::Handler(m)
    }
}

impl From<&str> for Error {
    fn from(m: &str) -> Self {
        Error::Handler(m.to_string())
    }
}

/// The host API: one function for each function of the contract's `host` interface.
pub mod host {
    use super::*;

    /// A property's value, as the caller may read it.
    pub fn get_property<T: DeserializeOwned>(thing: &str, property: &str) -> Result<T, Error> {
        Ok(serde_json::from_str(&wit::get_property(thing, property)?)?)
    }

    /// Writes a property, as the caller may write it.
    pub fn set_property(thing: &str, property: &str, value: &impl Serialize) -> Result<(), Error> {
        Ok(wit::set_property(
            thing,
            property,
            &serde_json::to_string(value)?,
        )?)
    }

    /// Runs a service with an object of parameters (`json!({"who": "Ada"})`), as the caller may.
    /// A service with one result gives that value; others give their InfoTable.
    pub fn invoke_service<T: DeserializeOwned>(
        thing: &str,
        service: &str,
        params: &Json,
    ) -> Result<T, Error> {
        let params = serde_json::to_string(params)?;
        Ok(serde_json::from_str(&wit::invoke_service(
            thing, service, &params,
        )?)?)
    }

    /// The names of the Things the caller can see.
    pub fn list_things() -> Result<Vec<String>, Error> {
        Ok(wit::list_things()?)
    }

    /// A line in the host's log, attributed to the extension and the caller.
    pub fn log(message: &str) -> Result<(), Error> {
        Ok(wit::log(message)?)
    }

    /// An entry in the audit history, attributed to the extension and the caller.
    pub fn audit(message: &str) -> Result<(), Error> {
        Ok(wit::audit(message)?)
    }

    /// The name of the user the code runs for.
    pub fn caller() -> Result<String, Error> {
        Ok(wit::caller()?)
    }

    /// The name of the entity whose service is running (ThingWorx's `me`): the Thing, also
    /// when the service comes from its template or a shape.
    pub fn me() -> Result<String, Error> {
        Ok(wit::me()?)
    }
}

type Erased = Box<dyn Fn(Vec<Json>) -> Result<Json, String>>;

/// The handlers of an extension, filled by the function given to [`extension!`].
#[derive(Default)]
pub struct Handlers {
    list: Vec<(String, usize, Erased)>,
}

impl Handlers {
    /// Registers `f` as the handler `name` (the `handler` key of a service in `plugin.toml`).
    pub fn add<Args, F: Handler<Args>>(&mut self, name: &str, f: F) -> &mut Self {
        self.list.push((name.to_string(), F::ARITY, f.erase()));
        self
    }

    /// Each handler's name and parameter count.
    pub fn describe(&self) -> Vec<(String, usize)> {
        self.list.iter().map(|(n, a, _)| (n.clone(), *a)).collect()
    }

    /// Runs the handler `name` with a JSON array of arguments; the result as JSON text.
    pub fn call(&self, name: &str, args: &str) -> Result<String, String> {
        let (_, _, f) = self
            .list
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| format!("this extension has no handler {name:?}"))?;
        let args: Vec<Json> = serde_json::from_str(args)
            .map_err(|e| format!("the host sent arguments that are not a JSON array: {e}"))?;
        f(args).map(|v| v.to_string())
    }
}

/// A Rust function that can be a handler: `Fn(A, B, ...) -> Result<T, E>` with up to eight
/// parameters that serde can read, `T: Serialize` and `E: Display`.
pub trait Handler<Args>: 'static {
    const ARITY: usize;
    #[doc(hidden)]
    fn erase(self) -> Erased;
}

macro_rules! handler_impl {
    ($n:expr; $($a:ident),*) => {
        impl<F, T, E, $($a),*> Handler<($($a,)*)> for F
        where
            F: Fn($($a),*) -> Result<T, E> + 'static,
            T: Serialize,
            E: fmt::Display,
            $($a: DeserializeOwned,)*
        {
            const ARITY: usize = $n;
            #[allow(non_snake_case, unused_mut, unused_variables)]
            fn erase(self) -> Erased {
                Box::new(move |args: Vec<Json>| {
                    if args.len() != $n {
                        return Err(format!("expected {} arguments, got {}", $n, args.len()));
                    }
                    let mut it = args.into_iter().enumerate();
                    $(
                        let $a: $a = {
                            let (i, v) = it.next().expect("counted");
                            serde_json::from_value(v)
                                .map_err(|e| format!("argument {} has the wrong type: {e}", i + 1))?
                        };
                    )*
                    let out = self($($a),*).map_err(|e| e.to_string())?;
                    serde_json::to_value(out).map_err(|e| format!("the result cannot be JSON: {e}"))
                })
            }
        }
    };
}

handler_impl!(0;);
handler_impl!(1; A1);
handler_impl!(2; A1, A2);
handler_impl!(3; A1, A2, A3);
handler_impl!(4; A1, A2, A3, A4);
handler_impl!(5; A1, A2, A3, A4, A5);
handler_impl!(6; A1, A2, A3, A4, A5, A6);
handler_impl!(7; A1, A2, A3, A4, A5, A6, A7);
handler_impl!(8; A1, A2, A3, A4, A5, A6, A7, A8);

#[doc(hidden)]
pub fn __list(
    register: fn(&mut Handlers),
) -> Vec<bindings::exports::thinghost::extension::handlers::Handler> {
    let mut h = Handlers::default();
    register(&mut h);
    h.describe()
        .into_iter()
        .map(
            |(name, arity)| bindings::exports::thinghost::extension::handlers::Handler {
                name,
                arity: arity as u32,
            },
        )
        .collect()
}

#[doc(hidden)]
pub fn __call(register: fn(&mut Handlers), name: &str, args: &str) -> Result<String, String> {
    let mut h = Handlers::default();
    register(&mut h);
    h.call(name, args)
}

/// Makes this crate a thinghost extension whose handlers `register` adds. Use it once, at the
/// root of a `cdylib` crate built for `wasm32-wasip2`.
#[macro_export]
macro_rules! extension {
    ($register:path) => {
        struct __ThinghostExtension;
        impl $crate::bindings::exports::thinghost::extension::handlers::Guest
            for __ThinghostExtension
        {
            fn list_handlers()
            -> ::std::vec::Vec<$crate::bindings::exports::thinghost::extension::handlers::Handler>
            {
                $crate::__list($register)
            }
            fn call(
                name: ::std::string::String,
                args: ::std::string::String,
            ) -> ::std::result::Result<::std::string::String, ::std::string::String> {
                $crate::__call($register, &name, &args)
            }
        }
        $crate::bindings::export!(__ThinghostExtension with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: f64, b: f64) -> Result<f64, Error> {
        Ok(a + b)
    }

    fn fails(why: String) -> Result<(), String> {
        Err(why)
    }

    #[test]
    fn handlers_decode_arguments_in_order_and_encode_results() {
        let mut h = Handlers::default();
        h.add("add", add).add("fails", fails);
        assert_eq!(
            h.describe(),
            vec![("add".to_string(), 2), ("fails".to_string(), 1)]
        );
        assert_eq!(h.call("add", "[1, 2.5]").unwrap(), "3.5");
        assert_eq!(h.call("fails", r#"["no"]"#).unwrap_err(), "no");
        assert!(
            h.call("add", r#"["x", 1]"#)
                .unwrap_err()
                .contains("argument 1")
        );
        assert!(h.call("add", "[1]").unwrap_err().contains("expected 2"));
        assert!(h.call("nope", "[]").unwrap_err().contains("no handler"));
    }

    #[test]
    fn host_errors_read_like_the_hosts() {
        assert_eq!(
            Error::from(HostError::NotFound("Thing X".into())).to_string(),
            "not found: Thing X"
        );
    }
}
