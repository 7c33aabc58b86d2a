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
        Ok(serde_json::from_str(&imp::get_property(thing, property)?)?)
    }

    /// Writes a property, as the caller may write it.
    pub fn set_property(thing: &str, property: &str, value: &impl Serialize) -> Result<(), Error> {
        imp::set_property(thing, property, &serde_json::to_string(value)?)
    }

    /// Runs a service with an object of parameters (`json!({"who": "Ada"})`), as the caller may.
    /// A service with one result gives that value; others give their InfoTable.
    pub fn invoke_service<T: DeserializeOwned>(
        thing: &str,
        service: &str,
        params: &Json,
    ) -> Result<T, Error> {
        let params = serde_json::to_string(params)?;
        Ok(serde_json::from_str(&imp::invoke_service(
            thing, service, &params,
        )?)?)
    }

    /// Runs a service of any entity (`collection` `Things`, `ThingTemplates`, `Groups`, ...),
    /// as the caller may; the result as for [`invoke_service`].
    pub fn invoke_entity_service<T: DeserializeOwned>(
        collection: &str,
        entity: &str,
        service: &str,
        params: &Json,
    ) -> Result<T, Error> {
        let params = serde_json::to_string(params)?;
        Ok(serde_json::from_str(&imp::invoke_entity_service(
            collection, entity, service, &params,
        )?)?)
    }

    /// The names of the Things the caller can see.
    pub fn list_things() -> Result<Vec<String>, Error> {
        imp::list_things()
    }

    /// Starts a remote-access session of the caller on the running service's Thing: its
    /// `sessionId`, `launchUri` (with a single-use nonce key), `nonceExpiresInSeconds` and
    /// `session`.
    pub fn start_session(remote_endpoint: &str) -> Result<Json, Error> {
        Ok(serde_json::from_str(&imp::session(
            "start_session",
            remote_endpoint,
        )?)?)
    }

    /// Ends a session on the running service's Thing (the caller's own; an administrator's
    /// any); gives the ended session.
    pub fn end_session(session_id: &str) -> Result<Json, Error> {
        Ok(serde_json::from_str(&imp::session(
            "end_session",
            session_id,
        )?)?)
    }

    /// A session on the running service's Thing that the caller may see.
    pub fn get_session(session_id: &str) -> Result<Json, Error> {
        Ok(serde_json::from_str(&imp::session(
            "get_session",
            session_id,
        )?)?)
    }

    /// The current sessions on the running service's Thing that the caller may see.
    pub fn list_sessions() -> Result<Json, Error> {
        Ok(serde_json::from_str(&imp::list_sessions()?)?)
    }

    /// A line in the host's log, attributed to the extension and the caller.
    pub fn log(message: &str) -> Result<(), Error> {
        imp::log(message)
    }

    /// An entry in the audit history, attributed to the extension and the caller.
    pub fn audit(message: &str) -> Result<(), Error> {
        imp::audit(message)
    }

    /// The name of the user the code runs for.
    pub fn caller() -> Result<String, Error> {
        imp::caller()
    }

    /// The name of the entity whose service is running (ThingWorx's `me`): the Thing, also
    /// when the service comes from its template or a shape.
    pub fn me() -> Result<String, Error> {
        imp::me()
    }

    /// Fires an event of the running service's Thing (`me`) with its data (an object of the
    /// event's DataShape fields), as the caller, who needs `EventInvoke` on it. Its
    /// subscriptions run from the event queue, not inside the call.
    pub fn fire_event(event: &str, data: &Json) -> Result<(), Error> {
        imp::fire_event(event, &serde_json::to_string(data)?)
    }
}

/// The host calls of a WebAssembly component: the contract's imports.
#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Error;
    use super::bindings::thinghost::extension::host as wit;

    pub fn get_property(thing: &str, property: &str) -> Result<String, Error> {
        Ok(wit::get_property(thing, property)?)
    }
    pub fn set_property(thing: &str, property: &str, value: &str) -> Result<(), Error> {
        Ok(wit::set_property(thing, property, value)?)
    }
    pub fn invoke_service(thing: &str, service: &str, params: &str) -> Result<String, Error> {
        Ok(wit::invoke_service(thing, service, params)?)
    }
    pub fn invoke_entity_service(
        collection: &str,
        entity: &str,
        service: &str,
        params: &str,
    ) -> Result<String, Error> {
        Ok(wit::invoke_entity_service(
            collection, entity, service, params,
        )?)
    }
    pub fn list_things() -> Result<Vec<String>, Error> {
        Ok(wit::list_things()?)
    }
    pub fn session(function: &str, arg: &str) -> Result<String, Error> {
        Ok(match function {
            "start_session" => wit::start_session(arg)?,
            "end_session" => wit::end_session(arg)?,
            _ => wit::get_session(arg)?,
        })
    }
    pub fn list_sessions() -> Result<String, Error> {
        Ok(wit::list_sessions()?)
    }
    pub fn log(message: &str) -> Result<(), Error> {
        Ok(wit::log(message)?)
    }
    pub fn audit(message: &str) -> Result<(), Error> {
        Ok(wit::audit(message)?)
    }
    pub fn caller() -> Result<String, Error> {
        Ok(wit::caller()?)
    }
    pub fn me() -> Result<String, Error> {
        Ok(wit::me()?)
    }
    pub fn fire_event(event: &str, data: &str) -> Result<(), Error> {
        Ok(wit::fire_event(event, data)?)
    }
}

/// The host calls of a native library: through the table the host passes to `thinghost_call`.
#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{Error, Json, native};

    fn text(function: &str, args: Json) -> Result<String, Error> {
        native::host_call(function, args).map(|v| v.to_string())
    }
    fn string(function: &str) -> Result<String, Error> {
        match native::host_call(function, Json::Array(vec![]))? {
            Json::String(s) => Ok(s),
            other => Err(Error::Value(format!("{function} answered {other}"))),
        }
    }

    pub fn get_property(thing: &str, property: &str) -> Result<String, Error> {
        text("get_property", serde_json::json!([thing, property]))
    }
    pub fn set_property(thing: &str, property: &str, value: &str) -> Result<(), Error> {
        let value: Json = serde_json::from_str(value)?;
        native::host_call("set_property", serde_json::json!([thing, property, value])).map(|_| ())
    }
    pub fn invoke_service(thing: &str, service: &str, params: &str) -> Result<String, Error> {
        let params: Json = serde_json::from_str(params)?;
        text(
            "invoke_service",
            serde_json::json!([thing, service, params]),
        )
    }
    pub fn invoke_entity_service(
        collection: &str,
        entity: &str,
        service: &str,
        params: &str,
    ) -> Result<String, Error> {
        let params: Json = serde_json::from_str(params)?;
        text(
            "invoke_entity_service",
            serde_json::json!([collection, entity, service, params]),
        )
    }
    pub fn list_things() -> Result<Vec<String>, Error> {
        Ok(serde_json::from_value(native::host_call(
            "list_things",
            Json::Array(vec![]),
        )?)?)
    }
    pub fn session(function: &str, arg: &str) -> Result<String, Error> {
        text(function, serde_json::json!([arg]))
    }
    pub fn list_sessions() -> Result<String, Error> {
        text("list_sessions", Json::Array(vec![]))
    }
    pub fn log(message: &str) -> Result<(), Error> {
        native::host_call("log", serde_json::json!([message])).map(|_| ())
    }
    pub fn audit(message: &str) -> Result<(), Error> {
        native::host_call("audit", serde_json::json!([message])).map(|_| ())
    }
    pub fn caller() -> Result<String, Error> {
        string("caller")
    }
    pub fn me() -> Result<String, Error> {
        string("me")
    }
    pub fn fire_event(event: &str, data: &str) -> Result<(), Error> {
        let data: Json = serde_json::from_str(data)?;
        native::host_call("fire_event", serde_json::json!([event, data])).map(|_| ())
    }
}

/// The C ABI of native extensions (`sdk/native/thinghost.h`), for [`extension!`] on targets other
/// than WebAssembly. Native extensions are trusted code: the server loads them only with
/// `--allow-native`.
#[cfg(not(target_arch = "wasm32"))]
pub mod native {
    use super::{Error, Handlers, Json};
    use std::cell::Cell;
    use std::ffi::c_void;

    pub use thinghost_abi::{ABI_VERSION, HostTable, WriteFn};

    thread_local! {
        static HOST: Cell<*const HostTable> = const { Cell::new(std::ptr::null()) };
    }

    unsafe extern "C" fn write_vec(sink: *mut c_void, ptr: *const u8, len: usize) {
        if sink.is_null() || ptr.is_null() || len == 0 {
            return;
        }
        // SAFETY: `sink` is the Vec this module passed; `ptr..ptr+len` is the host's buffer.
        unsafe {
            (*(sink as *mut Vec<u8>)).extend_from_slice(std::slice::from_raw_parts(ptr, len));
        }
    }

    pub(crate) fn host_call(function: &str, args: Json) -> Result<Json, Error> {
        let table = HOST.with(|h| h.get());
        if table.is_null() {
            return Err(Error::Failed(
                "the host API is only available inside a service call".into(),
            ));
        }
        let args = args.to_string();
        let mut out: Vec<u8> = Vec::new();
        // SAFETY: the table is the host's, valid for the duration of the current call.
        let rc = unsafe {
            ((*table).call)(
                (*table).ctx,
                function.as_ptr(),
                function.len(),
                args.as_ptr(),
                args.len(),
                &mut out as *mut Vec<u8> as *mut c_void,
                write_vec,
            )
        };
        let text = String::from_utf8_lossy(&out).into_owned();
        use thinghost_abi::status;
        match rc {
            status::OK => Ok(serde_json::from_str(&text)?),
            status::NOT_FOUND => Err(Error::NotFound(text)),
            status::DENIED => Err(Error::Denied(text)),
            status::CAPABILITY => Err(Error::Capability(text)),
            status::INVALID => Err(Error::Invalid(text)),
            _ => Err(Error::Failed(text)),
        }
    }

    fn write(sink: *mut c_void, write: WriteFn, text: &str) {
        // SAFETY: the host's sink and writer, per the ABI.
        unsafe { write(sink, text.as_ptr(), text.len()) }
    }

    #[doc(hidden)]
    pub unsafe fn __handlers(register: fn(&mut Handlers), sink: *mut c_void, w: WriteFn) -> i32 {
        let list = std::panic::catch_unwind(|| {
            let mut h = Handlers::default();
            register(&mut h);
            h.describe()
        });
        match list {
            Ok(list) => {
                let v: Vec<Json> = list
                    .into_iter()
                    .map(|(name, arity)| serde_json::json!({"name": name, "arity": arity}))
                    .collect();
                write(sink, w, &Json::Array(v).to_string());
                thinghost_abi::status::OK
            }
            Err(_) => {
                write(sink, w, "registering the handlers panicked");
                thinghost_abi::status::FAILED
            }
        }
    }

    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn __call(
        register: fn(&mut Handlers),
        host: *const HostTable,
        name: *const u8,
        name_len: usize,
        args: *const u8,
        args_len: usize,
        sink: *mut c_void,
        w: WriteFn,
    ) -> i32 {
        // SAFETY: the host's strings, valid for the call, per the ABI.
        let (name, args) = unsafe {
            (
                String::from_utf8_lossy(std::slice::from_raw_parts(name, name_len)).into_owned(),
                String::from_utf8_lossy(std::slice::from_raw_parts(args, args_len)).into_owned(),
            )
        };
        // SAFETY: as above; the table is the host's.
        if host.is_null() || unsafe { (*host).abi_version } != ABI_VERSION {
            write(sink, w, "the host speaks another version of the native ABI");
            return thinghost_abi::status::FAILED;
        }
        let previous = HOST.with(|h| h.replace(host));
        // A panic must not unwind into the host: it becomes the call's error.
        let out = std::panic::catch_unwind(|| super::__call(register, &name, &args));
        HOST.with(|h| h.set(previous));
        match out {
            Ok(Ok(json)) => {
                write(sink, w, &json);
                thinghost_abi::status::OK
            }
            Ok(Err(message)) => {
                write(sink, w, &message);
                thinghost_abi::status::FAILED
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                write(sink, w, &format!("the handler panicked: {why}"));
                thinghost_abi::status::FAILED
            }
        }
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
#[cfg(target_arch = "wasm32")]
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
/// root of a `cdylib` crate. Built for `wasm32-wasip2` it is a WebAssembly component (the
/// contract's world `extension`); built for the host's own target it is a native library with
/// the C ABI of `sdk/native/thinghost.h` (trusted code, loaded only with `--allow-native`).
#[macro_export]
macro_rules! extension {
    ($register:path) => {
        #[cfg(target_arch = "wasm32")]
        struct __ThinghostExtension;
        #[cfg(target_arch = "wasm32")]
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
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!(__ThinghostExtension with_types_in $crate::bindings);

        /// The native ABI version (checked by the host before anything else).
        #[cfg(not(target_arch = "wasm32"))]
        #[unsafe(no_mangle)]
        pub extern "C" fn thinghost_abi_version() -> u32 {
            $crate::native::ABI_VERSION
        }
        /// Writes the handlers as a JSON array of {name, arity}.
        ///
        /// # Safety
        /// `sink` and `write` are the host's, per the native ABI.
        #[cfg(not(target_arch = "wasm32"))]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn thinghost_handlers(
            sink: *mut ::std::ffi::c_void,
            write: $crate::native::WriteFn,
        ) -> i32 {
            unsafe { $crate::native::__handlers($register, sink, write) }
        }
        /// Runs a handler.
        ///
        /// # Safety
        /// Every pointer is the host's, valid for the call, per the native ABI.
        #[cfg(not(target_arch = "wasm32"))]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn thinghost_call(
            host: *const $crate::native::HostTable,
            name: *const u8,
            name_len: usize,
            args: *const u8,
            args_len: usize,
            sink: *mut ::std::ffi::c_void,
            write: $crate::native::WriteFn,
        ) -> i32 {
            unsafe {
                $crate::native::__call(
                    $register, host, name, name_len, args, args_len, sink, write,
                )
            }
        }
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
