//! The C ABI of thinghost native extensions (`sdk/native/thinghost.h`), in Rust: one definition
//! for the host (which loads libraries) and the SDK (which exports the symbols).

#![no_std]

use core::ffi::c_void;

/// The version of the ABI. A library answers it from `thinghost_abi_version`; the host checks it
/// before it calls anything else.
pub const ABI_VERSION: u32 = 1;

/// Appends `len` bytes at `ptr` to the buffer behind `sink` (the caller's).
pub type WriteFn = unsafe extern "C" fn(sink: *mut c_void, ptr: *const u8, len: usize);

/// A host call: a host function's name and a JSON array of its arguments in; the answer (JSON
/// text, or the error message) out through `write`. Returns [`status::OK`] or the error kind.
pub type HostCallFn = unsafe extern "C" fn(
    ctx: *const c_void,
    function: *const u8,
    function_len: usize,
    args: *const u8,
    args_len: usize,
    sink: *mut c_void,
    write: WriteFn,
) -> i32;

/// What the host passes on every call; valid until `thinghost_call` returns.
#[repr(C)]
pub struct HostTable {
    pub abi_version: u32,
    pub ctx: *const c_void,
    pub call: HostCallFn,
}

/// `thinghost_abi_version`.
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;

/// `thinghost_handlers`: writes a JSON array of `{name, arity}`.
pub type HandlersFn = unsafe extern "C" fn(sink: *mut c_void, write: WriteFn) -> i32;

/// `thinghost_call`: runs a handler with a JSON array of arguments.
pub type CallFn = unsafe extern "C" fn(
    host: *const HostTable,
    name: *const u8,
    name_len: usize,
    args: *const u8,
    args_len: usize,
    sink: *mut c_void,
    write: WriteFn,
) -> i32;

/// Status codes of host calls and of `thinghost_call` (which uses OK and FAILED).
pub mod status {
    pub const OK: i32 = 0;
    /// The entity does not exist, or the caller cannot see it.
    pub const NOT_FOUND: i32 = 1;
    /// The caller lacks the permission.
    pub const DENIED: i32 = 2;
    /// Not declared in the manifest's `[capabilities]`.
    pub const CAPABILITY: i32 = 3;
    /// A bad name, value or parameter.
    pub const INVALID: i32 = 4;
    /// Anything else; also a failed handler.
    pub const FAILED: i32 = 5;
}
