//! The WebAssembly runtime: extensions as components of the world `extension` (`sdk/wit`).
//!
//! A narrow wrapper over wasmtime, in the manner of spin-core: it exposes only what thinghost
//! uses, and each knob it sets says why. One engine per process; one compiled component per
//! extension version (cached in the data directory). No state leaks from one caller to the
//! next: a call runs in an instance kept from earlier calls and put back, after each call, to
//! the snapshot taken when it was made (memories, globals, tables, element and data segments,
//! the component's flags and handles: `wasmtime::component::Instance::restore`, a patch of
//! `third_party/`), or, for a component that runs code while it is instantiated or an instance
//! that could not be put back, in a new instance.
//!
//! What a component gets: the `host` interface (every call through [`Host::call`], the choke
//! point) and a WASI environment with nothing in it: no files, no network, no environment
//! variables or arguments, stdin empty, stdout discarded, stderr kept (up to 64 KiB) for error
//! messages, clocks that stand still at the Unix epoch, and no way to sleep.

use crate::host_api::{CallError, Host, HostCall, HostError};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreContextMut, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod bindings {
    wasmtime::component::bindgen!({
        world: "extension",
        path: "../../sdk/wit",
    });
}

use bindings::thinghost::extension::types::HostError as WitHostError;

/// How often the epoch advances: the resolution of every deadline.
const TICK: Duration = Duration::from_millis(10);
/// What a component may write to stderr in one call (a panic message fits many times).
const STDERR_CAPACITY: usize = 64 << 10;
/// The WASI clock interface whose waiting functions are replaced (the version wasmtime-wasi 48
/// defines; components built against any 0.2.x match it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Limits on one call into a component.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Wall-clock time for the call, host calls included.
    pub deadline: Duration,
    /// Linear memory of the instance, in bytes.
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_manifest(&crate::manifest::LimitsDecl::default())
    }
}

impl Limits {
    /// The limits a manifest's `[limits]` sets.
    pub fn from_manifest(l: &crate::manifest::LimitsDecl) -> Limits {
        Limits {
            deadline: Duration::from_millis(l.deadline_ms),
            memory: (l.memory_mib as usize) << 20,
        }
    }
}

/// The process's one engine, with its epoch ticker.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        // Deadlines: compiled code checks the epoch at loop headers and function entries, and a
        // ticker advances it every TICK. Much cheaper than fuel, which counts every block.
        config.epoch_interruption(true);
        // Extensions are components; core modules have no contract to check.
        config.wasm_component_model(true);
        // A bounded guest stack: deep recursion traps instead of reaching the host's stack.
        config.max_wasm_stack(1 << 20);
        // Cranelift at its default optimization level; compile time is paid once per version,
        // on every core (the `parallel-compilation` feature): a never-seen component is what a
        // reload waits for.
        //
        // The pooling instance allocator: every instance (a new one, or one kept between calls
        // and put back after each: no state survives a call) gets a slot of memory reserved
        // once and reused. On this kernel (Linux 6.7 and
        // later) the `PAGEMAP_SCAN` ioctl tells which pages a call wrote: only those are copied
        // back from the component's memory image (or zeroed), and the pages stay mapped. So a
        // call maps, unmaps and faults nothing in a steady state: no page-table work under the
        // process's memory lock, no TLB shoot-downs of the other cores. (Without the ioctl, or
        // past `KEEP_RESIDENT`, wasmtime falls back to `madvise`, which is still correct.)
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool()));
        // The pool reserves its address space up front (terabytes of it, none of it memory); a
        // process held to less (`ulimit -v`) gets the on-demand allocator instead: slower,
        // isolated the same.
        let engine = match Engine::new(&config) {
            Ok(engine) => {
                POOLED.store(true, Relaxed);
                if !pagemap_scan_works() {
                    tracing::info!("this kernel has no PAGEMAP_SCAN (Linux before 6.7): a WebAssembly call's memory is given back after it and faulted in again by the next (correct, about three times slower per call)");
                }
                engine
            }
            Err(e) => {
                tracing::warn!(error = %e, "the WebAssembly instance pool cannot reserve its address space; instances are allocated one by one");
                config.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
                Engine::new(&config).expect("the wasmtime configuration is valid")
            }
        };
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(e) = weak.upgrade() {
                    e.increment_epoch();
                    drop(e);
                    std::thread::sleep(TICK);
                }
            })
            .expect("the epoch ticker thread starts");
        engine
    })
}

/// Whether the engine allocates instances from the pool (else one by one: see [`engine`]).
static POOLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Do calls run in pooled memory slots (reused, and reset between calls)? The isolation test
/// asks, so that it knows it tests the reset.
pub fn pooled() -> bool {
    engine();
    POOLED.load(Relaxed)
}

/// How many component instances may be live at once (calls in progress, nested ones included,
/// and the instances waiting between calls: at most [`MAX_IDLE_TOTAL`] of them).
/// A call beyond it fails with an error that names the limit.
pub const MAX_CONCURRENT_INSTANCES: u32 = 1000;

/// How much of a memory slot stays mapped between calls, reset page by page (what a call of a
/// Rust component touches: the top of its stack, its data, its first heap pages).
const KEEP_RESIDENT: usize = 4 << 20;

/// The pool's sizes.
fn pool() -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(MAX_CONCURRENT_INSTANCES)
        // A component instance holds a few core instances (its modules and the shims between
        // them), one or two memories and tables.
        .total_core_instances(8 * MAX_CONCURRENT_INSTANCES)
        .total_memories(2 * MAX_CONCURRENT_INSTANCES)
        .total_tables(8 * MAX_CONCURRENT_INSTANCES)
        // The largest `[limits] memory_mib` a manifest may declare (a 32-bit memory's all):
        // address space only, reserved once; what a call may use is its own limit.
        .max_memory_size((crate::manifest::LimitsDecl::MAX_MEMORY_MIB as usize) << 20)
        // What a store allows a call (`State::new`'s `StoreLimits`), so that the pool refuses
        // nothing the on-demand allocator took: memories and tables per module, table sizes.
        .max_memories_per_module(16)
        .max_tables_per_module(64)
        .table_elements(1 << 20)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        .table_keep_resident(64 << 10);
    if pagemap_scan_works() {
        pool.linear_memory_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Yes);
    } else {
        // Without the scan, what is kept resident is reset with `memset` whole: slower than
        // giving the pages back (`madvise`) for memories of a MiB or more.
        pool.linear_memory_keep_resident(0)
            .pagemap_scan(wasmtime::Enabled::No);
    }
    pool
}

/// Does this kernel answer the `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap` (Linux 6.7 and
/// later, with the page monitor configured)? Asked once, as wasmtime asks it: an empty range.
fn pagemap_scan_works() -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        /// `struct pm_scan_arg` of `linux/fs.h`.
        #[repr(C)]
        struct PmScanArg {
            size: u64,
            flags: u64,
            start: u64,
            end: u64,
            walk_end: u64,
            vec: u64,
            vec_len: u64,
            max_pages: u64,
            category_inverted: u64,
            category_mask: u64,
            category_anyof_mask: u64,
            return_mask: u64,
        }
        /// `_IOWR('f', 16, struct pm_scan_arg)`.
        const PAGEMAP_SCAN: u64 = 0xC060_6610;
        let Ok(file) = std::fs::File::open("/proc/self/pagemap") else {
            return false;
        };
        // Room for one `struct page_region` (start, end, categories).
        let mut region = [0u64; 3];
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: 0,
            start: 0,
            end: 0,
            walk_end: 0,
            vec: region.as_mut_ptr() as u64,
            vec_len: 1,
            max_pages: 1,
            category_inverted: 0,
            category_mask: 0xff,
            category_anyof_mask: 0,
            return_mask: 0,
        };
        // SAFETY: the ioctl reads `arg` and writes at most one region into `region`, both alive
        // and of the sizes it is told, on a file descriptor this function owns.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                PAGEMAP_SCAN as _,
                &mut arg as *mut PmScanArg,
            )
        };
        rc >= 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The data of one call's store.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    host: Option<Arc<dyn Host>>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Clocks that stand still: the host API is the only source of time an extension has.
struct Epoch;

impl wasmtime_wasi::HostWallClock for Epoch {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for Epoch {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl State {
    fn new(limits: &Limits, host: Option<Arc<dyn Host>>) -> (State, MemoryOutputPipe) {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .wall_clock(Epoch)
            .monotonic_clock(Epoch)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = State {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory)
                .instances(16)
                .memories(16)
                .tables(64)
                .table_elements(1 << 20)
                // A failed growth traps with a message that names it, instead of returning -1
                // to an allocator that would abort with a bare `unreachable`.
                .trap_on_grow_failure(true)
                .build(),
            host,
        };
        (state, stderr)
    }

    fn call(&mut self, call: HostCall) -> Result<Json, WitHostError> {
        let Some(host) = &self.host else {
            return Err(WitHostError::Failed(
                "the host API is only available inside a service call".into(),
            ));
        };
        host.call(call).map_err(|e| match e {
            HostError::NotFound(m) => WitHostError::NotFound(m),
            HostError::Denied(m) => WitHostError::Denied(m),
            HostError::Capability(m) => WitHostError::Capability(m),
            HostError::Invalid(m) => WitHostError::Invalid(m),
            HostError::Failed(m) => WitHostError::Failed(m),
        })
    }
}

/// The parameters of a service call: a JSON object.
fn params_object(text: &str) -> Result<Json, WitHostError> {
    let params = parse("the parameters", text)?;
    if !params.is_object() {
        return Err(WitHostError::Invalid(
            "the parameters must be a JSON object".into(),
        ));
    }
    Ok(params)
}

fn parse(what: &str, text: &str) -> Result<Json, WitHostError> {
    serde_json::from_str(text)
        .map_err(|e| WitHostError::Invalid(format!("{what} is not JSON text: {e}")))
}

impl bindings::thinghost::extension::types::Host for State {}

impl bindings::thinghost::extension::host::Host for State {
    fn get_property(&mut self, thing: String, property: String) -> Result<String, WitHostError> {
        self.call(HostCall::GetProperty { thing, property })
            .map(|v| v.to_string())
    }

    fn set_property(
        &mut self,
        thing: String,
        property: String,
        value: String,
    ) -> Result<(), WitHostError> {
        let value = parse("the value", &value)?;
        self.call(HostCall::SetProperty {
            thing,
            property,
            value,
        })
        .map(|_| ())
    }

    fn invoke_service(
        &mut self,
        thing: String,
        service: String,
        params: String,
    ) -> Result<String, WitHostError> {
        let params = params_object(&params)?;
        self.call(HostCall::InvokeService {
            thing,
            service,
            params,
        })
        .map(|v| v.to_string())
    }

    fn invoke_entity_service(
        &mut self,
        collection: String,
        entity: String,
        service: String,
        params: String,
    ) -> Result<String, WitHostError> {
        let params = params_object(&params)?;
        self.call(HostCall::InvokeEntityService {
            collection,
            entity,
            service,
            params,
        })
        .map(|v| v.to_string())
    }

    fn start_session(&mut self, remote_endpoint: String) -> Result<String, WitHostError> {
        self.call(HostCall::StartSession {
            endpoint: remote_endpoint,
        })
        .map(|v| v.to_string())
    }

    fn end_session(&mut self, session_id: String) -> Result<String, WitHostError> {
        self.call(HostCall::EndSession {
            session: session_id,
        })
        .map(|v| v.to_string())
    }

    fn get_session(&mut self, session_id: String) -> Result<String, WitHostError> {
        self.call(HostCall::GetSession {
            session: session_id,
        })
        .map(|v| v.to_string())
    }

    fn list_sessions(&mut self) -> Result<String, WitHostError> {
        self.call(HostCall::ListSessions).map(|v| v.to_string())
    }

    fn list_things(&mut self) -> Result<Vec<String>, WitHostError> {
        let v = self.call(HostCall::ListThings)?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn log(&mut self, message: String) -> Result<(), WitHostError> {
        self.call(HostCall::Log { message }).map(|_| ())
    }

    fn audit(&mut self, message: String) -> Result<(), WitHostError> {
        self.call(HostCall::Audit { message }).map(|_| ())
    }

    fn fire_event(&mut self, event: String, data: String) -> Result<(), WitHostError> {
        let data = parse("the event's data", &data)?;
        self.call(HostCall::FireEvent { event, data }).map(|_| ())
    }

    fn caller(&mut self) -> Result<String, WitHostError> {
        let v = self.call(HostCall::Caller)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    fn me(&mut self) -> Result<String, WitHostError> {
        let v = self.call(HostCall::Me)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }
}

/// A compiled, linked extension component.
pub struct WasmExtension {
    pre: bindings::ExtensionPre<State>,
    handlers: Vec<(String, usize)>,
    limits: Limits,
    /// Instances between calls, each put back to its snapshot; `None` for a component whose
    /// instances are not reused (it runs code while it is instantiated: [`starts_code`]).
    idle: Option<std::sync::Mutex<Vec<Kept>>>,
    /// Cleared when an instance of the component could not be snapshot: calls then get a new
    /// instance each, without trying again.
    reuse: std::sync::atomic::AtomicBool,
    /// How many times an instance was put back after a call (for the isolation test).
    put_back: std::sync::atomic::AtomicU64,
    /// How many instances in a row could not be put back (see [`MAX_REFUSALS`]).
    refused: std::sync::atomic::AtomicU32,
    /// Only for the isolation test, to show that it catches a broken reset: one instance kept
    /// and called again and again, resetting nothing ([`WasmExtension::break_isolation_for_test`]).
    #[cfg(feature = "test-hooks")]
    broken: Option<std::sync::Mutex<Option<KeptInstance>>>,
}

/// An instance kept between calls: only [`WasmExtension::break_isolation_for_test`]'s.
#[cfg(feature = "test-hooks")]
type KeptInstance = (Store<State>, bindings::Extension);

/// An instance reused from call to call: after each call it is put back to `snapshot`, taken
/// when it was made, before any call; an instance that cannot be put back (its call trapped,
/// or left a resource handle) is dropped instead.
struct Kept {
    store: Store<State>,
    instance: wasmtime::component::Instance,
    bindings: bindings::Extension,
    snapshot: wasmtime::component::InstanceSnapshot,
}

/// Instances waiting between calls, all extensions together: a quarter of the pool, so that the
/// calls in progress always have the rest.
pub const MAX_IDLE_TOTAL: usize = MAX_CONCURRENT_INSTANCES as usize / 4;

/// How many instances wait between calls now, all extensions together.
static IDLE_TOTAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A snapshot bigger than this (what every put-back copies: `VMContext`s, tables, element
/// segments) is not worth reusing: its component gets a new instance per call.
const MAX_SNAPSHOT_BYTES: usize = 1 << 20;

/// How many instances in a row may fail to be put back (their calls leave a resource handle)
/// before the component's calls get a new instance each, without trying again.
const MAX_REFUSALS: u32 = 8;

/// How many instances of one extension wait between calls: one for each thread that runs calls
/// (two per core, the call lane's), so that a steady load finds one ready.
fn max_idle() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        2 * std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// Does the component run code while it is instantiated: a core module's `start` section or a
/// component's `start`? A reset puts memories back to their image, not to what such code wrote,
/// so these components get a new instance per call. A component that does not parse counts as
/// one (wasmtime will have refused it already).
fn starts_code(bytes: &[u8]) -> bool {
    use wasmparser::Payload;
    wasmparser::Parser::new(0).parse_all(bytes).any(|p| {
        matches!(
            p,
            Err(_) | Ok(Payload::StartSection { .. } | Payload::ComponentStartSection { .. })
        )
    })
}

impl Drop for WasmExtension {
    /// The instances waiting between calls go with the extension (a reload, an uninstall): they
    /// no longer count against [`MAX_IDLE_TOTAL`].
    fn drop(&mut self) {
        if let Some(idle) = &self.idle {
            let n = idle.lock().unwrap_or_else(|p| p.into_inner()).len();
            IDLE_TOTAL.fetch_sub(n, Relaxed);
        }
    }
}

/// The cache of compiled components: a folder, and the secret key that authenticates what is
/// in it. Loading a compiled artifact is `unsafe` (wasmtime runs its machine code as it is), so
/// a file reaches [`Component::deserialize`] only if its HMAC-SHA-256 under this key, which only
/// this server knows, is the one written after it: a file the server did not write is compiled
/// anew, never loaded.
#[derive(Clone)]
pub struct WasmCache {
    pub dir: PathBuf,
    key: [u8; 32],
}

impl std::fmt::Debug for WasmCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmCache").field("dir", &self.dir).finish()
    }
}

/// The length of the tag after each cached artifact.
const TAG: usize = 32;

impl WasmCache {
    /// The cache of data directory `data`: `DATA/cache/wasm`, keyed by `DATA/cache.key` (32
    /// random bytes, made on first use, mode 0600).
    pub fn in_data_dir(data: &Path) -> Result<WasmCache, String> {
        let key_file = data.join("cache.key");
        let key = match std::fs::read(&key_file) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = [0u8; 32];
                getrandom::fill(&mut k).map_err(|e| format!("no random numbers: {e}"))?;
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_file)
                    .and_then(|mut f| f.write_all(&k).and_then(|_| f.sync_all()));
                match written {
                    Ok(()) => k.to_vec(),
                    // Made meanwhile by another process: read it.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read(&key_file)
                            .map_err(|e| format!("cannot read {}: {e}", key_file.display()))?
                    }
                    Err(e) => return Err(format!("cannot write {}: {e}", key_file.display())),
                }
            }
            Err(e) => return Err(format!("cannot read {}: {e}", key_file.display())),
        };
        let key: [u8; 32] = key.try_into().map_err(|_| {
            format!(
                "{} is not a 32-byte key; delete it (the compiled cache is then made anew)",
                key_file.display()
            )
        })?;
        Ok(WasmCache {
            dir: data.join("cache").join("wasm"),
            key,
        })
    }

    /// The tag of `artifact` cached as `file` (the file name is signed too: two files the server
    /// wrote cannot be swapped for each other).
    fn mac(&self, file: &Path, artifact: &[u8]) -> [u8; TAG] {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        let name = file
            .file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or(b"");
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name);
        mac.update(artifact);
        mac.finalize().into_bytes().into()
    }

    /// Where the compiled artifact of `bytes` is cached: keyed by the component's hash and by
    /// the engine's compatibility hash (a new wasmtime or another CPU compiles anew).
    fn path(&self, bytes: &[u8]) -> PathBuf {
        let digest = Sha256::digest(bytes);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine().precompile_compatibility_hash().hash(&mut h);
        let hex = thinghost_core::hex(&digest);
        self.dir.join(format!("{hex}-{:016x}.cwasm", h.finish()))
    }

    /// The cached artifact of `bytes`, if there is one and its tag is this server's.
    fn load(&self, bytes: &[u8]) -> Option<Component> {
        let p = self.path(bytes);
        let file = std::fs::read(&p).ok()?;
        let (artifact, tag) = file.split_at(file.len().checked_sub(TAG)?);
        let expected = self.mac(&p, artifact);
        if !bool::from(subtle_eq(&expected, tag)) {
            tracing::warn!(file = %p.display(), "a cached compiled extension is not one this server wrote (its tag does not match); compiling again");
            return None;
        }
        // SAFETY: the artifact carries this server's HMAC under a key only it knows (checked
        // just above), so it is the bytes `store` serialized from a component wasmtime
        // compiled; wasmtime also checks the engine's compatibility and the artifact's header,
        // and a failure falls through to compiling.
        match unsafe { Component::deserialize(engine(), artifact) } {
            Ok(c) => Some(c),
            Err(_) => {
                tracing::warn!(file = %p.display(), "a cached compiled extension could not be used; compiling again");
                None
            }
        }
    }

    /// Caches the compiled `c` of `bytes`, with its tag (written to a temporary file, renamed).
    fn store(&self, bytes: &[u8], c: &Component) {
        let Ok(mut art) = c.serialize() else { return };
        let p = self.path(bytes);
        let tag = self.mac(&p, &art);
        art.extend_from_slice(&tag);
        let tmp = p.with_extension("tmp");
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|_| std::fs::write(&tmp, &art))
            .and_then(|_| std::fs::rename(&tmp, &p));
        if let Err(e) = written {
            tracing::warn!(file = %p.display(), "cannot cache the compiled extension: {e}");
        }
    }
}

/// Constant-time equality of two byte strings (a tag check).
fn subtle_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    a.ct_eq(b)
}

/// Compiles a component, or loads its compiled form from `cache` (written there after the first
/// compilation; a stale, damaged or foreign file is compiled anew and replaced).
fn component(bytes: &[u8], origin: &str, cache: Option<&WasmCache>) -> Result<Component, String> {
    if let Some(c) = cache.and_then(|c| c.load(bytes)) {
        return Ok(c);
    }
    let c = Component::from_binary(engine(), bytes).map_err(|e| {
        format!("{origin} is not a WebAssembly component that thinghost can compile: {e:#}")
    })?;
    if let Some(cache) = cache {
        cache.store(bytes, &c);
    }
    Ok(c)
}

/// Extensions cannot wait: the host API is their only clock, and a sleep would hold a server
/// thread beyond any deadline. Both ways to make a clock pollable trap with this message.
const NO_SLEEP: &str =
    "extensions cannot sleep or wait on a clock (the host API is their only source of time)";

fn linker() -> Result<Linker<State>, String> {
    let mut linker = Linker::new(engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| e.to_string())?;
    bindings::Extension::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
        .map_err(|e| e.to_string())?;
    linker.allow_shadowing(true);
    let mut clock = linker
        .instance(MONOTONIC_CLOCK)
        .map_err(|e| e.to_string())?;
    type Pollable = Resource<wasmtime_wasi::p2::DynPollable>;
    clock
        .func_wrap(
            "subscribe-duration",
            |_: StoreContextMut<State>, _: (u64,)| -> wasmtime::Result<(Pollable,)> {
                wasmtime::bail!(NO_SLEEP)
            },
        )
        .map_err(|e| e.to_string())?;
    clock
        .func_wrap(
            "subscribe-instant",
            |_: StoreContextMut<State>, _: (u64,)| -> wasmtime::Result<(Pollable,)> {
                wasmtime::bail!(NO_SLEEP)
            },
        )
        .map_err(|e| e.to_string())?;
    Ok(linker)
}

impl WasmExtension {
    /// Compiles (or loads from `cache`) and links a component, and asks it for its handlers.
    /// `origin` names the file in errors.
    pub fn load(
        bytes: &[u8],
        origin: &str,
        limits: Limits,
        cache: Option<&WasmCache>,
    ) -> Result<WasmExtension, String> {
        let component = component(bytes, origin, cache)?;
        let pre = linker()?.instantiate_pre(&component).map_err(|e| {
            format!("{origin} cannot be linked: {e:#} (an extension imports only the thinghost host interface and WASI 0.2)")
        })?;
        let pre = bindings::ExtensionPre::new(pre).map_err(|e| {
            format!(
                "{origin} is not a thinghost extension (the world `extension` of {}): {e:#}",
                crate::host_api::WIT_PACKAGE
            )
        })?;
        let idle = (!starts_code(bytes)).then(|| std::sync::Mutex::new(Vec::new()));
        let mut ext = WasmExtension {
            #[cfg(feature = "test-hooks")]
            broken: None,
            pre,
            handlers: Vec::new(),
            limits,
            idle,
            reuse: std::sync::atomic::AtomicBool::new(true),
            put_back: std::sync::atomic::AtomicU64::new(0),
            refused: std::sync::atomic::AtomicU32::new(0),
        };
        let handlers = ext
            .with_instance(None, |store, inst| {
                inst.thinghost_extension_handlers()
                    .call_list_handlers(store)
            })
            .map_err(|e| format!("{origin}: listing its handlers failed: {e}"))?;
        ext.handlers = handlers
            .into_iter()
            .map(|h| (h.name, h.arity as usize))
            .collect();
        Ok(ext)
    }

    /// Does the component define `name` with `arity` parameters?
    pub fn defines(&self, name: &str, arity: usize) -> bool {
        self.handlers.iter().any(|(n, a)| n == name && *a == arity)
    }

    /// Do calls run in instances reused from call to call (put back after each)? Not for a
    /// component that runs code while it is instantiated, or whose instance could not be
    /// snapshot; the isolation test asks, so that it knows which reset it tests.
    pub fn reuses_instances(&self) -> bool {
        self.idle.is_some() && self.reuse.load(Relaxed)
    }

    /// How many times an instance of this component was put back after a call, to serve the
    /// next (the isolation test asks, so that it knows the next caller ran in the same one).
    pub fn instances_put_back(&self) -> u64 {
        self.put_back.load(Relaxed)
    }

    /// The handlers the component defines.
    pub fn handlers(&self) -> &[(String, usize)] {
        &self.handlers
    }

    /// Breaks isolation on purpose: from now on every call of this extension runs in one instance
    /// kept from the first call, whose memory and globals nothing resets. Only the isolation
    /// test calls it, to show that it would catch such a reset; no server path does.
    #[cfg(feature = "test-hooks")]
    pub fn break_isolation_for_test(&mut self) {
        self.broken = Some(std::sync::Mutex::new(None));
    }

    /// Runs `f` on an instance in its first state (a kept one, put back after the call, or a new
    /// one), within the limits.
    fn with_instance<R>(
        &self,
        host: Option<Arc<dyn Host>>,
        f: impl FnOnce(&mut Store<State>, &bindings::Extension) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        #[cfg(feature = "test-hooks")]
        if let Some(kept) = &self.broken {
            let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
            if kept.is_none() {
                let (state, _) = State::new(&self.limits, None);
                let mut store = Store::new(engine(), state);
                store.limiter(|s| &mut s.limits);
                store.set_epoch_deadline(1_000_000);
                let inst = self
                    .pre
                    .instantiate(&mut store)
                    .map_err(|e| CallError::Trap(format!("{e:#}")))?;
                *kept = Some((store, inst));
            }
            let (store, inst) = kept.as_mut().expect("kept above");
            store.data_mut().host = host;
            store.set_epoch_deadline(1_000_000);
            return f(store, inst).map_err(|e| CallError::Trap(format!("{e:#}")));
        }
        if let Some(idle) = &self.idle
            && self.reuse.load(Relaxed)
        {
            let kept = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            if kept.is_some() {
                IDLE_TOTAL.fetch_sub(1, Relaxed);
            }
            let kept = match kept {
                Some(kept) => Some(kept),
                None => match self.keep(idle) {
                    Ok(kept) => kept,
                    Err(e) => return Err(self.explain(e, &MemoryOutputPipe::new(0))),
                },
            };
            if let Some(mut kept) = kept {
                // A new WASI context, resource table and stderr for each call, with its host.
                let (state, stderr) = State::new(&self.limits, host);
                *kept.store.data_mut() = state;
                kept.store.set_epoch_deadline(self.ticks());
                let result = f(&mut kept.store, &kept.bindings);
                kept.store.data_mut().host = None;
                return match result {
                    Ok(out) => {
                        // Put back as it was made, or dropped: never called unreset.
                        match kept.instance.restore(&mut kept.store, &kept.snapshot) {
                            Ok(()) => {
                                self.put_back.fetch_add(1, Relaxed);
                                self.refused.store(0, Relaxed);
                                self.park(idle, kept);
                            }
                            Err(e) => {
                                if self.refused.fetch_add(1, Relaxed) + 1 >= MAX_REFUSALS {
                                    self.stop_reuse(idle, &e);
                                }
                            }
                        }
                        Ok(out)
                    }
                    Err(e) => Err(self.explain(e, &stderr)),
                };
            }
        }
        let (mut store, stderr) = self.new_store(host);
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|inst| f(&mut store, &inst));
        result.map_err(|e| self.explain(e, &stderr))
    }

    /// A store for one instance: its state, its limits and its deadline (which trap).
    fn new_store(&self, host: Option<Arc<dyn Host>>) -> (Store<State>, MemoryOutputPipe) {
        let (state, stderr) = State::new(&self.limits, host);
        let mut store = Store::new(engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.ticks());
        store.epoch_deadline_trap();
        (store, stderr)
    }

    /// From now on each call of this component gets a new instance; the ones waiting go, and
    /// no longer count against [`MAX_IDLE_TOTAL`].
    fn stop_reuse(&self, idle: &std::sync::Mutex<Vec<Kept>>, why: &wasmtime::Error) {
        tracing::info!(error = %why, "a WebAssembly component whose instances cannot be put back after a call: each call gets a new instance");
        self.reuse.store(false, Relaxed);
        let waiting = std::mem::take(&mut *idle.lock().unwrap_or_else(|p| p.into_inner()));
        IDLE_TOTAL.fetch_sub(waiting.len(), Relaxed);
    }

    /// The epoch deadline of a call: its deadline in ticks, and one more for the tick in
    /// progress.
    fn ticks(&self) -> u64 {
        let ticks = self.limits.deadline.as_millis().div_ceil(TICK.as_millis()) as u64;
        ticks.max(1) + 1
    }

    /// Puts a put-back instance among the idle ones, or drops it when the extension or the
    /// process has enough waiting.
    fn park(&self, idle: &std::sync::Mutex<Vec<Kept>>, kept: Kept) {
        let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < max_idle()
            && IDLE_TOTAL
                .fetch_update(Relaxed, Relaxed, |n| (n < MAX_IDLE_TOTAL).then_some(n + 1))
                .is_ok()
        {
            idle.push(kept);
        }
    }

    /// A new instance to reuse, with its snapshot; `None` when its state cannot be snapshot
    /// (the calls then get a new instance each, as a component that starts code does).
    fn keep(&self, idle: &std::sync::Mutex<Vec<Kept>>) -> wasmtime::Result<Option<Kept>> {
        let (mut store, _) = self.new_store(None);
        let instance = self.pre.instance_pre().instantiate(&mut store)?;
        let bindings = bindings::Extension::new(&mut store, &instance)?;
        let snapshot = instance.snapshot(&mut store).and_then(|s| {
            if s.size_bytes() > MAX_SNAPSHOT_BYTES {
                wasmtime::bail!(
                    "its snapshot holds {} bytes, more than {MAX_SNAPSHOT_BYTES}",
                    s.size_bytes()
                );
            }
            Ok(s)
        });
        match snapshot {
            Ok(snapshot) => Ok(Some(Kept {
                store,
                instance,
                bindings,
                snapshot,
            })),
            Err(e) => {
                self.stop_reuse(idle, &e);
                Ok(None)
            }
        }
    }

    fn explain(&self, e: wasmtime::Error, stderr: &MemoryOutputPipe) -> CallError {
        let said = String::from_utf8_lossy(&stderr.contents())
            .trim()
            .to_string();
        // The whole error, the WebAssembly backtrace included, goes to the server's log; the
        // caller gets what failed, without the frames (issue 23).
        let full = format!("{e:#}");
        tracing::warn!(error = %full, "a WebAssembly call failed");
        let text = match e.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => e.root_cause().to_string(),
        };
        let text = text.lines().next().unwrap_or_default().to_string();
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => return CallError::Deadline(self.limits.deadline),
            Some(Trap::StackOverflow) => {
                return CallError::Limit("the call stack overflowed".into());
            }
            _ => {}
        }
        if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some()
        {
            return CallError::Limit(format!(
                "the server runs the most WebAssembly instances it may at once ({MAX_CONCURRENT_INSTANCES}, calls in progress and the calls they made); try again shortly"
            ));
        }
        if full.contains("forcing a memory growth failure")
            || full.contains("forcing trap when growing memory")
        {
            return CallError::Limit(format!(
                "the memory cap of {} MiB was reached",
                self.limits.memory >> 20
            ));
        }
        let last = said
            .lines()
            .filter(|l| !l.trim().is_empty())
            // Rust's hint about backtraces means nothing to the caller.
            .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
            .take(8)
            .collect::<Vec<_>>()
            .join(" / ");
        if last.is_empty() {
            CallError::Trap(text)
        } else {
            CallError::Trap(format!("{text}; it wrote: {last}"))
        }
    }

    /// Calls `handler` with `args` (the service's parameters in declared order) for `host`.
    pub fn call(
        &self,
        host: Arc<dyn Host>,
        handler: &str,
        args: &[Json],
    ) -> Result<Json, CallError> {
        let args = Json::Array(args.to_vec()).to_string();
        let out = self.with_instance(Some(host), |store, inst| {
            inst.thinghost_extension_handlers()
                .call_call(store, handler, &args)
        })?;
        match out {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| CallError::BadResult(format!("{e}: {text:.200}"))),
            Err(message) => Err(CallError::Script(message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component whose `plant` changes every kind of state a core instance has (memory, a
    /// page it grows into, memory size, a mutable global that is not exported, a table's element
    /// and size, a passive data and element segment dropped), whose `find` tells which it finds
    /// changed, and whose `segments` traps if a segment was dropped. (The component-level state,
    /// flags and handles, is the isolation test's: a Rust component through the WASI adapter.)
    const PLANTER: &str = r#"
      (component
        (core module $m
          (memory 1)
          (global $g (mut i32) (i32.const 0))
          (table $t 2 funcref)
          (func $f (result i32) i32.const 42)
          (data $d "secret")
          (elem $e funcref (ref.func $f))
          (func (export "plant") (param i32)
            (i32.store (i32.const 100) (local.get 0))
            (drop (memory.grow (i32.const 1)))
            (i32.store (i32.const 65536) (local.get 0))
            (global.set $g (local.get 0))
            (table.set $t (i32.const 0) (ref.func $f))
            (drop (table.grow $t (ref.func $f) (i32.const 3)))
            (data.drop $d)
            (elem.drop $e))
          (func (export "find") (result i32)
            ;; The page a call grew into, grown into again: it must read zero.
            (drop (memory.grow (i32.const 1)))
            (i32.or
             (i32.shl (i32.ne (i32.load (i32.const 65536)) (i32.const 0)) (i32.const 5))
             (i32.or
              (i32.or
                (i32.or (i32.ne (i32.load (i32.const 100)) (i32.const 0))
                        (i32.shl (i32.ne (memory.size) (i32.const 2)) (i32.const 1)))
                (i32.shl (i32.ne (global.get $g) (i32.const 0)) (i32.const 2)))
              (i32.or
                (i32.shl (i32.eqz (ref.is_null (table.get $t (i32.const 0)))) (i32.const 3))
                (i32.shl (i32.ne (table.size $t) (i32.const 2)) (i32.const 4))))))
          (func (export "segments")
            (memory.init $d (i32.const 200) (i32.const 0) (i32.const 6))
            (table.init $t $e (i32.const 1) (i32.const 0) (i32.const 1))
            (i32.store (i32.const 200) (i32.const 0))
            (table.set $t (i32.const 1) (ref.null func)))
          (func (export "trap") unreachable))
        (core instance $i (instantiate $m))
        (func (export "plant") (param "v" u32) (canon lift (core func $i "plant")))
        (func (export "find") (result u32) (canon lift (core func $i "find")))
        (func (export "segments") (canon lift (core func $i "segments")))
        (func (export "trap") (canon lift (core func $i "trap"))))
    "#;

    #[test]
    fn a_restored_instance_has_none_of_a_calls_state() {
        assert!(pooled(), "the reset under test is the pool's");
        let bytes = wat::parse_str(PLANTER).unwrap();
        assert!(!starts_code(&bytes));
        let component = Component::new(engine(), &bytes).unwrap();
        let linker = Linker::<()>::new(engine());
        type F<P, R> = wasmtime::component::TypedFunc<P, R>;
        // A new store and instance, its snapshot, and its functions.
        let new = || {
            let mut store = Store::new(engine(), ());
            store.set_epoch_deadline(1_000_000);
            let instance = linker.instantiate(&mut store, &component).unwrap();
            let snapshot = instance.snapshot(&mut store).unwrap();
            let plant: F<(u32,), ()> = instance.get_typed_func(&mut store, "plant").unwrap();
            let find: F<(), (u32,)> = instance.get_typed_func(&mut store, "find").unwrap();
            let segments: F<(), ()> = instance.get_typed_func(&mut store, "segments").unwrap();
            (store, instance, snapshot, plant, find, segments)
        };
        for round in 0..3u32 {
            let (mut store, instance, snapshot, plant, find, segments) = new();
            assert_eq!(find.call(&mut store, ()).unwrap(), (0,));
            segments.call(&mut store, ()).unwrap();
            instance.restore(&mut store, &snapshot).unwrap();
            plant.call(&mut store, (0xdead,)).unwrap();
            // Unreset, the check sees every change (so it would catch a reset that missed one).
            assert_eq!(
                find.call(&mut store, ()).unwrap(),
                (0b111111,),
                "round {round}"
            );
            assert!(
                segments.call(&mut store, ()).is_err(),
                "the segments were dropped"
            );
            // The trap leaves the store unfit to put back: refused (the runtime drops it).
            assert!(instance.restore(&mut store, &snapshot).is_err());

            let (mut store, instance, snapshot, plant, find, segments) = new();
            plant.call(&mut store, (0xbeef,)).unwrap();
            instance.restore(&mut store, &snapshot).unwrap();
            assert_eq!(find.call(&mut store, ()).unwrap(), (0,), "round {round}");
            // The dropped segments are back.
            segments.call(&mut store, ()).unwrap();
            instance.restore(&mut store, &snapshot).unwrap();
            // And again, many times in one instance.
            for _ in 0..50 {
                plant.call(&mut store, (round + 1,)).unwrap();
                instance.restore(&mut store, &snapshot).unwrap();
                assert_eq!(find.call(&mut store, ()).unwrap(), (0,));
                instance.restore(&mut store, &snapshot).unwrap();
            }
        }
    }

    #[test]
    fn an_instance_whose_data_a_reset_would_lose_is_not_snapshot() {
        // Module b writes its data into a's memory when instantiated: a reset puts a's memory
        // back to a's image (empty), so b's data would be lost.
        let bytes = wat::parse_str(
            r#"(component
                 (core module $a (memory (export "m") 1))
                 (core instance $ia (instantiate $a))
                 (core module $b
                   (import "a" "m" (memory 1))
                   (data (i32.const 16) "b's data")
                   (func (export "f")))
                 (core instance $ib (instantiate $b (with "a" (instance $ia))))
                 (func (export "f") (canon lift (core func $ib "f"))))"#,
        )
        .unwrap();
        let component = Component::new(engine(), &bytes).unwrap();
        let mut store = Store::new(engine(), ());
        store.set_epoch_deadline(1_000_000);
        let instance = Linker::<()>::new(engine())
            .instantiate(&mut store, &component)
            .unwrap();
        let err = instance.snapshot(&mut store).err().expect("refused");
        // (wasmtime applies data for an imported memory by code, so it is refused as such.)
        assert!(format!("{err:#}").contains("data"), "{err:#}");
    }

    #[test]
    fn a_component_that_starts_code_is_not_reused() {
        let starts = wat::parse_str(
            r#"(component (core module $m (func $s) (start $s)) (core instance (instantiate $m)))"#,
        )
        .unwrap();
        assert!(starts_code(&starts));
        assert!(starts_code(b"not wasm"));
        assert!(!starts_code(&wat::parse_str(PLANTER).unwrap()));
    }

    #[test]
    fn e3_the_compiled_cache_loads_only_what_this_server_wrote() {
        let data = tempfile::tempdir().unwrap();
        let cache = WasmCache::in_data_dir(data.path()).unwrap();
        let key = std::fs::read(data.path().join("cache.key")).unwrap();
        assert_eq!(key.len(), 32);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("cache.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The same key on the next start.
        assert_eq!(WasmCache::in_data_dir(data.path()).unwrap().key, cache.key);
        let bytes = wat::parse_str("(component)").unwrap();
        assert!(cache.load(&bytes).is_none(), "nothing cached yet");
        component(&bytes, "test", Some(&cache)).unwrap();
        assert!(cache.load(&bytes).is_some(), "what it wrote, it loads");
        let path = cache.path(&bytes);
        let written = std::fs::read(&path).unwrap();
        // A file another key signed (another server's, or one made up) is compiled anew.
        let other = WasmCache {
            dir: cache.dir.clone(),
            key: [7; 32],
        };
        let (artifact, _) = written.split_at(written.len() - TAG);
        let mut foreign = artifact.to_vec();
        foreign.extend_from_slice(&other.mac(&path, artifact));
        std::fs::write(&path, &foreign).unwrap();
        assert!(cache.load(&bytes).is_none(), "signed with another key");
        // A file this server wrote for another component, moved into this one's place.
        let mut moved = artifact.to_vec();
        moved.extend_from_slice(&cache.mac(&path.with_file_name("other.cwasm"), artifact));
        std::fs::write(&path, &moved).unwrap();
        assert!(cache.load(&bytes).is_none(), "signed for another file");
        // One changed byte, a bare artifact without its tag, an empty file.
        let mut changed = written.clone();
        changed[written.len() / 2] ^= 1;
        for file in [changed, artifact.to_vec(), vec![]] {
            std::fs::write(&path, &file).unwrap();
            assert!(cache.load(&bytes).is_none());
        }
        // Compiling again replaces the bad file with a good one.
        component(&bytes, "test", Some(&cache)).unwrap();
        assert!(cache.load(&bytes).is_some());
    }
}
