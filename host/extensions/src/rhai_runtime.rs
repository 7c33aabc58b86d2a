//! The Rhai runtime: one engine per extension, scripts compiled once, limits on every call.

pub use crate::host_api::CallError;
use crate::host_api::{HOST_FUNCTIONS, Host, HostCall, Ty};
use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, NativeCallContext, Scope};
use serde_json::Value as Json;
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits on one call into an extension's script.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Wall-clock time for the call, host calls included.
    pub deadline: Duration,
    /// Rhai operations (a loop that does nothing else still counts).
    pub max_operations: u64,
    pub max_call_depth: usize,
    /// Bytes the call may hold at once (by the [`crate::meter`], where the binary installs it).
    pub memory: u64,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_manifest(&crate::manifest::LimitsDecl::default())
    }
}

impl Limits {
    /// The limits a manifest's `[limits]` sets: its deadline, operations and memory cap; a
    /// string may take a 64th of the cap (1 MiB of the default 64).
    pub fn from_manifest(l: &crate::manifest::LimitsDecl) -> Limits {
        Limits {
            deadline: Duration::from_millis(l.deadline_ms),
            max_operations: l.max_operations,
            max_call_depth: 64,
            memory: l.memory_mib << 20,
            max_string_size: (l.memory_mib as usize) << 14,
            max_array_size: 100_000,
            max_map_size: 100_000,
        }
    }
}

thread_local! {
    /// The deadline of the call running on this thread (calls are synchronous).
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// What `on_progress` stops a call with: its deadline passed, or its memory cap was reached.
const STOP_DEADLINE: &str = "deadline";
const STOP_MEMORY: &str = "memory";

thread_local! {
    /// The host of the Rhai code running on this thread: an extension's call
    /// ([`RhaiExtension::call`]) or code in the model ([`ModelCode::run`]). Calls are synchronous
    /// and nest (code may call a service whose code is Rhai too): each sets its host for its run
    /// and puts the one before it back ([`HostFor`]). (Before issue 19, step 8, an extension's
    /// host rode in the call's tag: a boxed value made and dropped on every call.)
    static HOST: std::cell::RefCell<Option<Arc<dyn Host>>> = const { std::cell::RefCell::new(None) };
}

/// The host of one run on this thread, from [`HostFor::enter`] until dropped (a panic too).
struct HostFor(Option<Arc<dyn Host>>);

impl HostFor {
    fn enter(host: Arc<dyn Host>) -> HostFor {
        HostFor(HOST.with(|h| h.replace(Some(host))))
    }
}

impl Drop for HostFor {
    fn drop(&mut self) {
        let previous = self.0.take();
        let _ = HOST.try_with(|h| *h.borrow_mut() = previous);
    }
}

fn host_of(_ctx: &NativeCallContext) -> Result<Arc<dyn Host>, Box<EvalAltResult>> {
    HOST.with(|h| h.borrow().clone())
        .ok_or_else(|| "the host API is only available inside a service call".into())
}

fn to_dynamic(v: &Json) -> Result<Dynamic, Box<EvalAltResult>> {
    // Scalars directly, as rhai's serializer makes them (a test holds the two together);
    // arrays and objects through it.
    match v {
        Json::Null => Ok(Dynamic::UNIT),
        Json::Bool(b) => Ok(Dynamic::from_bool(*b)),
        Json::Number(n) if n.is_i64() => Ok(Dynamic::from_int(n.as_i64().unwrap_or_default())),
        Json::Number(n) if n.is_f64() => Ok(Dynamic::from_float(n.as_f64().unwrap_or_default())),
        Json::String(s) => Ok(Dynamic::from(rhai::ImmutableString::from(s.as_str()))),
        _ => rhai::serde::to_dynamic(v),
    }
}

fn from_dynamic(d: &Dynamic) -> Result<Json, Box<EvalAltResult>> {
    // Scalars directly, as rhai's deserializer gives them (the test above `to_dynamic`'s holds
    // the two together); anything else through it (a shared value too, which it refuses).
    if d.is_shared() {
        return rhai::serde::from_dynamic::<Json>(d);
    }
    if let Ok(f) = d.as_float() {
        return Ok(Json::from(f));
    }
    if let Ok(i) = d.as_int() {
        return Ok(Json::from(i));
    }
    if let Ok(b) = d.as_bool() {
        return Ok(Json::Bool(b));
    }
    if d.is_unit() {
        return Ok(Json::Null);
    }
    if let Some(s) = d.read_lock::<rhai::ImmutableString>() {
        return Ok(Json::String(s.to_string()));
    }
    rhai::serde::from_dynamic::<Json>(d)
}

fn run(ctx: &NativeCallContext, call: HostCall) -> Result<Dynamic, Box<EvalAltResult>> {
    let host = host_of(ctx)?;
    let out = host.call(call);
    // A host call may take long (a nested service); the clock is read every 64 operations
    // otherwise, so after each host call too: a loop of slow calls stops at its deadline.
    if DEADLINE
        .with(|d| d.get())
        .is_some_and(|t| Instant::now() > t)
    {
        return Err(Box::new(EvalAltResult::ErrorTerminated(
            Dynamic::from(STOP_DEADLINE),
            rhai::Position::NONE,
        )));
    }
    match out {
        Ok(v) => to_dynamic(&v),
        Err(e) => Err(e.to_string().into()),
    }
}

/// A compiled Rhai extension.
pub struct RhaiExtension {
    engine: Engine,
    ast: AST,
    limits: Limits,
}

/// An engine with `limits`, the host API, no modules, and output to the host's log: the one
/// configuration of extension scripts and code in the model alike.
fn engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_depth);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_expr_depths(64, 64);
    // No file or module access: `import` finds nothing.
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.on_progress(|operations| {
        if crate::meter::over_budget() {
            return Some(Dynamic::from(STOP_MEMORY));
        }
        // The clock every 64 operations (a few microseconds apart): reading it at each one was
        // a thirtieth of a short call. Not at the first: the deadline was set just before it.
        if operations % 64 != 0 {
            return None;
        }
        DEADLINE.with(|d| match d.get() {
            Some(t) if Instant::now() > t => Some(Dynamic::from(STOP_DEADLINE)),
            _ => None,
        })
    });
    engine.on_print(|s| tracing_line(None, s));
    engine.on_debug(|s, _, _| tracing_line(None, s));
    register_host_api(&mut engine);
    engine
}

/// Runs `f` (one evaluation) within `limits`: the deadline and the memory cap set for this
/// thread, restored after; a stop or a throw turned into the host API's errors.
fn limited(
    limits: &Limits,
    f: impl FnOnce() -> Result<Dynamic, Box<EvalAltResult>>,
) -> Result<Json, CallError> {
    let deadline = Instant::now() + limits.deadline;
    let previous = DEADLINE.with(|d| d.replace(Some(deadline)));
    let memory = crate::meter::enter(limits.memory);
    let result = f();
    DEADLINE.with(|d| d.set(previous));
    let budget = memory.budget();
    drop(memory);
    match result {
        Ok(v) => from_dynamic(&v).map_err(|e| CallError::BadResult(e.to_string())),
        Err(e) => Err(match *e {
            EvalAltResult::ErrorTerminated(ref token, _) if token.to_string() == STOP_MEMORY => {
                CallError::Limit(format!(
                    "the memory cap of {} MiB was reached",
                    budget.cap_mib()
                ))
            }
            EvalAltResult::ErrorTerminated(..) => CallError::Deadline(limits.deadline),
            EvalAltResult::ErrorTooManyOperations(..)
            | EvalAltResult::ErrorStackOverflow(..)
            | EvalAltResult::ErrorDataTooLarge(..) => CallError::Limit(e.to_string()),
            // A value the code threw (or a host error it let through) is its message.
            _ => CallError::Script(thrown(&e).unwrap_or_else(|| e.to_string())),
        }),
    }
}

impl RhaiExtension {
    /// Compiles `source`; `origin` names the file in errors.
    pub fn compile(source: &str, origin: &str, limits: Limits) -> Result<RhaiExtension, String> {
        let engine = engine(&limits);
        let ast = engine
            .compile(source)
            .map_err(|e| format!("{origin}: {e}"))?;
        Ok(RhaiExtension {
            engine,
            ast,
            limits,
        })
    }

    /// Names the extension in every line its `print` and `debug` write to the host's log.
    pub fn named(mut self, extension: &str) -> RhaiExtension {
        let (a, b) = (extension.to_string(), extension.to_string());
        self.engine.on_print(move |s| tracing_line(Some(&a), s));
        self.engine
            .on_debug(move |s, _, _| tracing_line(Some(&b), s));
        self
    }

    /// Does the script define `name` with `arity` parameters?
    pub fn defines(&self, name: &str, arity: usize) -> bool {
        self.arities(name).contains(&arity)
    }

    /// The parameter counts `name` is defined with.
    pub fn arities(&self, name: &str) -> Vec<usize> {
        self.ast
            .iter_functions()
            .filter(|f| f.name == name)
            .map(|f| f.params.len())
            .collect()
    }

    /// Calls `handler` with `args` (the service's parameters in declared order) for `host`.
    pub fn call(
        &self,
        host: Arc<dyn Host>,
        handler: &str,
        args: &[Json],
    ) -> Result<Json, CallError> {
        // On the stack for up to 4 arguments (rhai takes a `SmallVec` as it is).
        let args: smallvec::SmallVec<[Dynamic; 4]> = args
            .iter()
            .map(|a| to_dynamic(a).map_err(|e| CallError::Script(e.to_string())))
            .collect::<Result<_, _>>()?;
        let _host = HostFor::enter(host);
        limited(&self.limits, || {
            let options = CallFnOptions::new().eval_ast(false);
            self.engine.call_fn_with_options::<Dynamic>(
                options,
                &mut Scope::new(),
                &self.ast,
                handler,
                args,
            )
        })
    }
}

/// The host functions Rhai `source` calls, from its text: comments and string literals left
/// out, and a function the script defines itself (`fn log(...)`) not counted. What `plugin
/// check` and loading compare with the manifest's `[capabilities] functions`.
pub fn host_calls_in(source: &str) -> std::collections::BTreeSet<&'static str> {
    let code = strip_comments_and_strings(source);
    let defined: std::collections::BTreeSet<&str> = code
        .split("fn ")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| c == '(' || c.is_whitespace()).next())
        .collect();
    let bytes = code.as_bytes();
    let mut found = std::collections::BTreeSet::new();
    for f in crate::host_api::HOST_FUNCTIONS {
        if defined.contains(f.name) {
            continue;
        }
        let mut at = 0;
        while let Some(i) = code[at..].find(f.name) {
            let start = at + i;
            let end = start + f.name.len();
            at = end;
            let before_ok = start == 0 || {
                let b = bytes[start - 1];
                !(b.is_ascii_alphanumeric() || b == b'_')
            };
            let after = code[end..].trim_start();
            if before_ok && after.starts_with('(') {
                found.insert(f.name);
                break;
            }
        }
    }
    found
}

/// `source` with its comments and string literals blanked (their length kept).
fn strip_comments_and_strings(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for n in chars.by_ref() {
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
                out.push(' ');
            }
            '"' | '`' => {
                let quote = c;
                let mut escaped = false;
                for n in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if n == '\\' {
                        escaped = true;
                    } else if n == quote {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Code that does not compile: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for CodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// The one engine of code in the model: the limits of Rhai extensions (a manifest's defaults).
static MODEL_ENGINE: std::sync::LazyLock<(Engine, Limits)> = std::sync::LazyLock::new(|| {
    let limits = Limits::default();
    (engine(&limits), limits)
});

/// Rhai code stored in the model (B1, B4): a service's body, an override's, a subscription's.
/// Compiled once; run with the limits and the host API of Rhai extensions, its inputs as
/// variables. Its result is the value of its last expression (or of a `return`), else what it
/// assigned to `result` (the vendor's style).
pub struct ModelCode {
    ast: AST,
}

impl ModelCode {
    /// Compiles `source`, or says where it is wrong.
    pub fn compile(source: &str) -> Result<ModelCode, CodeError> {
        let ast = MODEL_ENGINE.0.compile(source).map_err(|e| {
            let p = e.position();
            CodeError {
                line: p.line().unwrap_or(0),
                column: p.position().unwrap_or(0),
                message: e.err_type().to_string(),
            }
        })?;
        Ok(ModelCode { ast })
    }

    /// Runs the code for `host`, with `vars` as variables (`me`, the parameters, an event's
    /// data), within the limits of Rhai extensions.
    pub fn run(&self, host: Arc<dyn Host>, vars: &[(&str, &Json)]) -> Result<Json, CallError> {
        let mut scope = Scope::new();
        for (name, value) in vars {
            let v = to_dynamic(value).map_err(|e| CallError::Script(e.to_string()))?;
            scope.push_dynamic(name.to_string(), v);
        }
        scope.push_dynamic("result", Dynamic::UNIT);
        let _host = HostFor::enter(host);
        limited(&MODEL_ENGINE.1, || {
            let value = MODEL_ENGINE
                .0
                .eval_ast_with_scope::<Dynamic>(&mut scope, &self.ast)?;
            if value.is_unit() {
                Ok(scope
                    .get_value::<Dynamic>("result")
                    .unwrap_or(Dynamic::UNIT))
            } else {
                Ok(value)
            }
        })
    }
}

/// The value a script threw, through the calls it passed.
fn thrown(e: &EvalAltResult) -> Option<String> {
    match e {
        EvalAltResult::ErrorRuntime(v, _) => Some(v.to_string()),
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => thrown(inner),
        _ => None,
    }
}

fn tracing_line(extension: Option<&str>, s: &str) {
    // Extensions' print/debug output goes to the host's log (text or JSON), one event each:
    // control characters escaped (a newline would forge a log line of the host's), at most
    // 8 KiB of it.
    let escaped: String = s
        .chars()
        .take(8192)
        .flat_map(|c| {
            let escape = c.is_control();
            let mut plain = Some(c);
            let mut esc = escape.then(|| c.escape_default());
            std::iter::from_fn(move || match &mut esc {
                Some(e) => e.next(),
                None => plain.take(),
            })
        })
        .collect();
    match extension {
        Some(name) => {
            tracing::info!(target: "extension", extension = name, message = %escaped, "extension print")
        }
        None => {
            tracing::info!(target: "extension", source = "model", message = %escaped, "model code print")
        }
    }
}

/// Registers every function of [`HOST_FUNCTIONS`], from its row: its name, its parameters' types
/// (a name or message is a string, parameters a map, a value anything), and the call
/// `HostCall::from_args` makes of them. A new host function is bound here without a line of its
/// own.
fn register_host_api(engine: &mut Engine) {
    for f in HOST_FUNCTIONS {
        let types: Vec<std::any::TypeId> = f
            .params
            .iter()
            .map(|(_, ty)| match ty {
                Ty::Str => std::any::TypeId::of::<rhai::ImmutableString>(),
                Ty::Params => std::any::TypeId::of::<rhai::Map>(),
                Ty::Json | Ty::Names | Ty::Unit => std::any::TypeId::of::<Dynamic>(),
            })
            .collect();
        let name = f.name;
        engine.register_raw_fn(
            name,
            types,
            move |ctx: NativeCallContext, args: &mut [&mut Dynamic]| {
                let args = args
                    .iter()
                    .map(|a| from_dynamic(a))
                    .collect::<Result<Vec<Json>, _>>()?;
                let call = HostCall::from_args(name, args).map_err(|e| e.to_string())?;
                run(&ctx, call)
            },
        );
    }
}

/// The Rhai API reference, generated from [`HOST_FUNCTIONS`].
pub fn reference() -> String {
    let mut out = String::from(
        "# The Rhai host API\n\nGenerated from `HOST_FUNCTIONS` (host/extensions/src/host_api.rs).\n\n| function | returns | what |\n|---|---|---|\n",
    );
    for f in HOST_FUNCTIONS {
        out.push_str(&format!(
            "| `{}({})` | {} | {} |\n",
            f.name,
            f.params
                .iter()
                .map(|(n, t)| format!("{n}: {}", t.rhai()))
                .collect::<Vec<_>>()
                .join(", "),
            f.returns.rhai(),
            if f.extensions_only {
                format!(
                    "{} (Extensions only: code in the model may not call it.)",
                    f.doc
                )
            } else {
                f.doc.to_string()
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_convert_as_rhais_serializer_converts_them() {
        let values = serde_json::json!([
            null,
            true,
            false,
            0,
            -7,
            9_007_199_254_740_993_i64,
            i64::MIN,
            u64::MAX,
            0.5,
            -1e300,
            "",
            "é\n\"x\"",
            [1, "a"],
            {"k": [1.5]}
        ]);
        for v in values.as_array().unwrap() {
            let fast = to_dynamic(v).unwrap();
            let slow = rhai::serde::to_dynamic(v).unwrap();
            assert_eq!(fast.type_name(), slow.type_name(), "{v}");
            assert_eq!(fast.to_string(), slow.to_string(), "{v}");
            assert_eq!(
                from_dynamic(&fast).unwrap(),
                from_dynamic(&slow).unwrap(),
                "{v}"
            );
            let back: Json = rhai::serde::from_dynamic(&fast).unwrap();
            assert_eq!(from_dynamic(&fast).unwrap(), back, "{v}");
        }
        // What scripts make that JSON has no literal for.
        for d in [
            Dynamic::from_float(f64::NAN),
            Dynamic::from_float(f64::INFINITY),
            Dynamic::from_float(-0.0),
            Dynamic::from_int(i64::MAX),
            Dynamic::from('c'),
            Dynamic::UNIT,
            Dynamic::from(rhai::ImmutableString::from("s")),
        ] {
            let slow: Json = rhai::serde::from_dynamic(&d).unwrap();
            assert_eq!(from_dynamic(&d).unwrap(), slow, "{d:?}");
        }
    }
}
