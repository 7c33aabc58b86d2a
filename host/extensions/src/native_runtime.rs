//! The native runtime: an extension as a shared library with a C ABI (`sdk/native/thinghost.h`).
//!
//! Native code runs inside the server's process with all of its rights: it is trusted code, off
//! unless the operator starts the server with `--allow-native`. Its host calls still go through
//! the one choke point (as requests of the calling user, within the declared capabilities), but
//! nothing stops the library from doing anything else a process can do; there is no memory cap.
//! What the host does enforce: the ABI version, checked before anything else is called; the
//! deadline (a call runs on a worker thread, and the caller gets its answer at the deadline even
//! if the library never returns: that thread is abandoned); and a library is never unloaded,
//! because unloading Rust code is unsound (a changed native extension needs a restart).

use crate::host_api::{CallError, Host, HostCall, HostError};
use serde_json::Value as Json;
use std::ffi::c_void;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use thinghost_abi::{ABI_VERSION, HostTable, status};
use thinghost_abi::{AbiVersionFn, CallFn, HandlersFn, WriteFn};

unsafe extern "C" fn write_vec(sink: *mut c_void, ptr: *const u8, len: usize) {
    if sink.is_null() || (ptr.is_null() && len > 0) {
        return;
    }
    // SAFETY: `sink` is the `Vec<u8>` the host passed for this call, alive until it returns;
    // `ptr..ptr+len` is the library's readable buffer, per the ABI.
    unsafe {
        let v = &mut *(sink as *mut Vec<u8>);
        if len > 0 {
            v.extend_from_slice(std::slice::from_raw_parts(ptr, len));
        }
    }
}

unsafe extern "C" fn host_call(
    ctx: *const c_void,
    function: *const u8,
    function_len: usize,
    args: *const u8,
    args_len: usize,
    sink: *mut c_void,
    write: WriteFn,
) -> i32 {
    // A library that passes a null range gets an error, not undefined behaviour.
    let bytes = |ptr: *const u8, len: usize| -> &[u8] {
        if ptr.is_null() {
            &[]
        } else {
            // SAFETY: a non-null range is the library's readable buffer, per the ABI.
            unsafe { std::slice::from_raw_parts(ptr, len) }
        }
    };
    if ctx.is_null() || sink.is_null() {
        return status::INVALID;
    }
    // SAFETY: `ctx` is the `Arc<dyn Host>` behind the table the host made for this call, alive
    // until the call returns.
    let host = unsafe { &*(ctx as *const Arc<dyn Host>) };
    let (function, args) = (bytes(function, function_len), bytes(args, args_len));
    let answer = (|| {
        let function = std::str::from_utf8(function)
            .map_err(|_| HostError::Invalid("the function name is not UTF-8".into()))?;
        let args: Vec<Json> = serde_json::from_slice(args)
            .map_err(|e| HostError::Invalid(format!("the arguments are not a JSON array: {e}")))?;
        host.call(HostCall::from_args(function, args)?)
    })();
    let (code, text) = match answer {
        Ok(v) => (status::OK, v.to_string()),
        Err(e) => (
            match e {
                HostError::NotFound(_) => status::NOT_FOUND,
                HostError::Denied(_) => status::DENIED,
                HostError::Capability(_) => status::CAPABILITY,
                HostError::Invalid(_) => status::INVALID,
                HostError::Failed(_) => status::FAILED,
            },
            e.message().to_string(),
        ),
    };
    // SAFETY: `write` and `sink` are the library's, per the ABI.
    unsafe { write(sink, text.as_ptr(), text.len()) };
    code
}

/// What a native call answers: the status and the bytes the library wrote.
type Answer = (i32, Vec<u8>);

/// One native call: the work, run on a worker thread, and where its answer goes.
struct Job {
    work: Box<dyn FnOnce() -> Answer + Send>,
    reply: mpsc::Sender<Answer>,
}

/// The threads native calls run on. A call goes to an idle worker (or a new one when none is
/// idle); a worker that finishes its call is idle again before it delivers the answer (so the
/// caller's next call finds it), unless enough already wait. A call that passes its deadline
/// keeps its worker: that thread is abandoned, never reused, and the next call gets another.
/// Handing a call to a waiting thread costs a few microseconds where starting a thread per call
/// cost tens.
struct Workers {
    idle: Mutex<Vec<mpsc::Sender<Job>>>,
}

/// How many idle workers wait at most; more are let go.
const MAX_IDLE_WORKERS: usize = 16;

static WORKERS: Workers = Workers {
    idle: Mutex::new(Vec::new()),
};

impl Workers {
    fn run(&'static self, mut job: Job) -> std::io::Result<()> {
        loop {
            let worker = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match worker {
                Some(tx) => match tx.send(job) {
                    Ok(()) => return Ok(()),
                    // That worker is gone; try the next.
                    Err(mpsc::SendError(back)) => job = back,
                },
                None => break,
            }
        }
        std::thread::Builder::new()
            .name("native-call".into())
            .spawn(move || {
                let (tx, rx) = mpsc::channel::<Job>();
                loop {
                    let answer = (job.work)();
                    let idle = {
                        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                        let room = idle.len() < MAX_IDLE_WORKERS;
                        if room {
                            idle.push(tx.clone());
                        }
                        room
                    };
                    let _ = job.reply.send(answer);
                    if !idle {
                        return;
                    }
                    match spin_then_wait(&rx) {
                        Some(next) => job = next,
                        None => return,
                    }
                }
            })
            .map(|_| ())
    }
}

/// How long a thread that hands work to another, or waits for work, looks again before it
/// sleeps. Waking a sleeping thread costs tens of microseconds on a virtual machine (an idle
/// vCPU halts, and waking it is an exit to the hypervisor): two per call, where the call itself
/// takes one or two. A short spin finds the answer, or the caller's next call, awake. It yields
/// between looks: under load the core goes to the threads with work.
const SPIN: Duration = Duration::from_micros(30);

/// The next message of `rx` if it comes during [`SPIN`] (`Some(Err(()))`: the sender is gone);
/// `None` when the spin ended without one.
fn spin<T>(rx: &mpsc::Receiver<T>) -> Option<Result<T, ()>> {
    let until = std::time::Instant::now() + SPIN;
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(Ok(v)),
            Err(mpsc::TryRecvError::Disconnected) => return Some(Err(())),
            Err(mpsc::TryRecvError::Empty) if std::time::Instant::now() < until => {
                std::thread::yield_now();
            }
            Err(mpsc::TryRecvError::Empty) => return None,
        }
    }
}

/// The next message of `rx`: looked for during [`SPIN`], then waited for. None once the sender
/// is gone.
fn spin_then_wait<T>(rx: &mpsc::Receiver<T>) -> Option<T> {
    match spin(rx) {
        Some(got) => got.ok(),
        None => rx.recv().ok(),
    }
}

/// A loaded native library.
pub struct NativeExtension {
    handlers: Vec<(String, usize)>,
    call: CallFn,
    deadline: Duration,
}

impl NativeExtension {
    /// Loads the library at `path`, checks its ABI version, and asks for its handlers.
    pub fn load(path: &Path, deadline: Duration) -> Result<NativeExtension, String> {
        let origin = path.display();
        // SAFETY: loading runs the library's initializers. Native extensions are trusted code,
        // loaded only when the operator allows them (`--allow-native`).
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load the native library {origin}: {e}"))?;
        // Never unloaded: the library's code must outlive every pointer into it.
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        // SAFETY (each `get`): the symbol's type is the one the ABI fixes for that name.
        let version = unsafe { lib.get::<AbiVersionFn>(b"thinghost_abi_version\0") }
            .map_err(|_| format!("{origin} is not a thinghost native extension: it has no thinghost_abi_version symbol"))?;
        // SAFETY: as above; the function takes nothing and returns a number.
        let v = unsafe { version() };
        if v != ABI_VERSION {
            return Err(format!(
                "{origin} speaks version {v} of the native ABI; this host speaks version {ABI_VERSION}: rebuild it against this host's sdk/native/thinghost.h"
            ));
        }
        let handlers_fn = *unsafe { lib.get::<HandlersFn>(b"thinghost_handlers\0") }
            .map_err(|_| format!("{origin} has no thinghost_handlers symbol"))?;
        let call = *unsafe { lib.get::<CallFn>(b"thinghost_call\0") }
            .map_err(|_| format!("{origin} has no thinghost_call symbol"))?;
        let mut out: Vec<u8> = Vec::new();
        // SAFETY: the sink is `out`, alive for the call.
        let rc = unsafe { handlers_fn(&mut out as *mut Vec<u8> as *mut c_void, write_vec) };
        if rc != status::OK {
            return Err(format!(
                "{origin}: thinghost_handlers failed: {}",
                String::from_utf8_lossy(&out)
            ));
        }
        #[derive(serde::Deserialize)]
        struct H {
            name: String,
            arity: usize,
        }
        let list: Vec<H> = serde_json::from_slice(&out).map_err(|e| {
            format!("{origin}: thinghost_handlers wrote no JSON array of {{name, arity}}: {e}")
        })?;
        Ok(NativeExtension {
            handlers: list.into_iter().map(|h| (h.name, h.arity)).collect(),
            call,
            deadline,
        })
    }

    /// Does the library define `name` with `arity` parameters?
    pub fn defines(&self, name: &str, arity: usize) -> bool {
        self.arities(name).contains(&arity)
    }

    /// The parameter counts `name` is defined with.
    pub fn arities(&self, name: &str) -> Vec<usize> {
        self.handlers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .collect()
    }

    /// Calls `handler` on a worker thread, and waits until the deadline.
    pub fn call(
        &self,
        host: Arc<dyn Host>,
        handler: &str,
        args: &[Json],
    ) -> Result<Json, CallError> {
        let call = self.call;
        let name = handler.to_string();
        let args = Json::Array(args.to_vec()).to_string();
        let (reply, rx) = mpsc::channel();
        let work = move || {
            let host: Arc<dyn Host> = host;
            let table = HostTable {
                abi_version: ABI_VERSION,
                ctx: &host as *const Arc<dyn Host> as *const c_void,
                call: host_call,
            };
            let mut out: Vec<u8> = Vec::new();
            // SAFETY: the table, the strings and the sink live on this thread's stack until the
            // call returns; the library follows the ABI (it is trusted code).
            let rc = unsafe {
                call(
                    &table,
                    name.as_ptr(),
                    name.len(),
                    args.as_ptr(),
                    args.len(),
                    &mut out as *mut Vec<u8> as *mut c_void,
                    write_vec,
                )
            };
            (rc, out)
        };
        WORKERS
            .run(Job {
                work: Box::new(work),
                reply,
            })
            .map_err(|e| CallError::Trap(format!("cannot start a thread for the call: {e}")))?;
        // The answer often comes within the spin: no sleep, no wake-up.
        let answer = match spin(&rx) {
            Some(Ok(a)) => Ok(a),
            Some(Err(())) => Err(mpsc::RecvTimeoutError::Disconnected),
            None => rx.recv_timeout(self.deadline),
        };
        match answer {
            Ok((status::OK, out)) => serde_json::from_slice(&out).map_err(|e| {
                CallError::BadResult(format!("{e}: {:.200}", String::from_utf8_lossy(&out)))
            }),
            Ok((_, out)) => Err(CallError::Script(
                String::from_utf8_lossy(&out).into_owned(),
            )),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::error!(
                    handler,
                    "a native extension call passed its deadline; its thread is abandoned"
                );
                Err(CallError::Deadline(self.deadline))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CallError::Trap(
                "the native call ended without an answer".into(),
            )),
        }
    }
}
