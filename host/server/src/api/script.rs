//! Admin scripts (issue 9): `Resources/ScriptServices/Services/RunScript(script, dryRun)` runs a
//! Rhai script in the caller's security context, as one transaction.
//!
//! - **No extra rights.** Every function a script calls is a call of the typed API
//!   (`crate::api::invoke`, `crate::api::entities`) as the caller: the same checks, denials
//!   audited, as an HTTP request.
//! - **One transaction.** The script runs on a private copy of the server ([`App::for_script`])
//!   whose model is a fork ([`thinghost_store::Db::fork`]). When it ends well, its changes and
//!   their audit records land in one store transaction ([`thinghost_store::Db::adopt`]); on
//!   any error, or for a dry run, the copy is dropped and nothing remains. Changes that landed
//!   meanwhile and wrote only property values of other Things (devices' data) do not stop it
//!   (snapshot isolation); any other change does (its checks were made on a model that is
//!   gone): the script runs again on a fresh copy, up to three times, then answers 409. No
//!   attempt holds the model's lock while the script runs.
//! - **Dry run.** The plan (every change, in order) and the access impact (for every user,
//!   which permissions on which entities it gains or loses: `thinghost_core::insight`).
//! - **Limits.** Rhai operations, host calls, wall-clock time and printed output.
//!
//! The functions are the service table's rows (`crate::api::table`), through [`functions`]: the
//! Rhai bindings and the reference page (`docs/script-api.md`, checked by a test) both come
//! from it.

use crate::api::{ApiError, Reply};
use crate::state::app::App;
use crate::state::auth::Caller;
use crate::state::scripts::Limits;
use axum::http::StatusCode;
use rhai::{AST, Dynamic, Engine, EvalAltResult, NativeCallContext, Position, Scope};
use serde_json::{Value as Json, json};
use sha2::Digest;
use std::any::TypeId;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use thinghost_core::{BaseType, Kind};

/// The largest script accepted, in bytes.
pub const MAX_SCRIPT: usize = 1 << 20;

/// The most access-impact rows a dry run answers with (`impactRows` counts them all).
pub const MAX_IMPACT: usize = 10_000;

/// Where a function's request goes.
#[derive(Clone, Debug)]
pub enum On {
    /// A fixed entity (`Resources/EntityServices`).
    Fixed(Kind, &'static str),
    /// The first argument names an entity of this kind (`add_member(group, ...)`).
    Named(Kind),
    /// The first argument is an entity's path, `Collection/Name` (`Things/Pump1`).
    Path,
}

pub use crate::api::table::Returns;

/// One function of the script API: a host service (a row of `api::table`) in snake case, its
/// parameters in the same order.
#[derive(Clone, Debug)]
pub struct ScriptFn {
    pub name: String,
    pub on: On,
    pub service: &'static str,
    /// The service's parameter names, in order (after the entity argument, for `Named` and
    /// `Path`).
    pub params: Vec<&'static str>,
    /// How many of `params` must be passed (up to the last required one); the others may be
    /// left out at the end (or passed as `()`).
    pub required: usize,
    pub returns: Returns,
    pub doc: String,
    pub example: String,
}

/// `AddRunTimePermission` -> `add_run_time_permission`, `GetKeyID` -> `get_key_id`,
/// `GetRunTimePermissionsAsJSON` -> `get_run_time_permissions_as_json`.
pub fn snake(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let starts_word = match prev {
                None => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) => p.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase()),
            };
            if starts_word {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

/// A sample value of a parameter, for a made-up example.
fn sample(p: &crate::api::table::Param) -> String {
    use BaseType as T;
    match p.base_type {
        T::Boolean => "true".into(),
        T::Number | T::Integer | T::Long => "10".into(),
        T::Datetime => "\"2026-01-01T00:00:00Z\"".into(),
        T::Json => "#{}".into(),
        T::Username => "\"device-017\"".into(),
        T::Groupname => "\"PumpDevices\"".into(),
        T::Thingname => "\"Pump7\"".into(),
        _ => format!("\"{}\"", p.name),
    }
}

/// The script API, in the order of the service table (the generic functions `call_service`,
/// `get_property`, `set_property`, `list`, `get_entity` and `print` are bound by hand; see
/// [`GENERIC`]).
pub fn functions() -> Vec<ScriptFn> {
    use crate::api::table::{On as Where, SERVICES};
    SERVICES
        .iter()
        .filter_map(|row| {
            let name = row.script_name()?;
            let on = match row.on {
                Where::Entity(k, n) => On::Fixed(k, n),
                Where::Kinds([k]) => On::Named(*k),
                Where::ThingsOf(_) => On::Named(Kind::Thing),
                Where::Kinds(_) => On::Path,
            };
            let required = row.script_required();
            let example = row.example.map(str::to_string).unwrap_or_else(|| {
                let entity = match &on {
                    On::Fixed(..) => None,
                    On::Named(k) => Some(format!("\"My{}\"", k.label())),
                    On::Path => Some("\"Things/Pump7\"".to_string()),
                };
                let args: Vec<String> = entity
                    .into_iter()
                    .chain(
                        row.params[..required]
                            .iter()
                            .map(|p| if p.required { sample(p) } else { "()".into() }),
                    )
                    .collect();
                let call = format!("{name}({})", args.join(", "));
                match row.returns {
                    Returns::Nothing => format!("{call};"),
                    Returns::Rows => format!("for row in {call} {{ print(row); }}"),
                    _ => format!("print({call});"),
                }
            });
            Some(ScriptFn {
                name,
                on,
                service: row.name,
                params: row.params.iter().map(|p| p.name).collect(),
                required,
                returns: row.returns,
                doc: row.doc.to_string(),
                example,
            })
        })
        .collect()
}

/// The functions bound by hand: (signature, doc, example).
pub const GENERIC: &[(&str, &str, &str)] = &[
    (
        "call_service(entity, service, params)",
        "Runs any service of an entity (a host service or an extension's), as a request of the caller; gives its result (a value, the rows of an InfoTable, or `()`).",
        r#"call_service("Things/RemoteAccessPermissionsServices", "GrantPermissionsThingWorxInternalForThing", #{organization: "PumpFleet", userGroup: "PumpSupport", thingName: "Pump7"});"#,
    ),
    (
        "get_property(entity, name)",
        "Reads a property (needs PropertyRead).",
        r#"let p = get_property("Things/Pump7", "pressure");"#,
    ),
    (
        "set_property(entity, name, value)",
        "Writes a property (needs PropertyWrite).",
        r#"set_property("Things/Pump7", "pressure", 2.5);"#,
    ),
    (
        "list(collection)",
        "The names of the entities of a collection that the caller can see.",
        r#"for t in list("Things") { print(t); }"#,
    ),
    (
        "get_entity(entity)",
        "An entity as the REST API describes it (needs Read): name, description, owner, template, definitions, ...",
        r#"print(get_entity("Things/Pump7").thingTemplate);"#,
    ),
    (
        "print(value)",
        "Adds a line to the script's output (at most 1 MiB in all).",
        r#"print("provisioned");"#,
    ),
];

/// The reference page, `docs/script-api.md`.
pub fn reference() -> String {
    let mut out = String::from(
        "# The admin script API\n\n\
         <!-- Generated from host/server/src/api/table.rs and api/script.rs by `thinghost script reference`; a test keeps it current. -->\n\n\
         Scripts are [Rhai](https://rhai.rs). They run on the server with `RunScript` (or `thinghost script run FILE`) in the\n\
         caller's security context: every function below is a request of the caller, checked like one (a script gives no\n\
         extra rights). A script is one transaction: when it fails (a permission denied, a bad parameter, a limit hit, a\n\
         `throw`), nothing it did remains, and the error names its line. `dryRun` runs it, reports every change it would\n\
         make and, for every user, the permissions it would gain or lose, and keeps nothing.\n\n\
         Functions are the REST services in snake case, with the same parameters in the same order. An entity is named by\n\
         its path (`Things/Pump7`, `ThingTemplates/PumpTemplate`) where the service runs on any kind of entity, and by its\n\
         name where the kind is fixed (`add_member(group, ...)`). Optional parameters may be left out at the end, or passed\n\
         as `()`. A failed call throws: catch it with `try { ... } catch (e) { ... }` (`e.status`, `e.message`) to go on.\n\n",
    );
    let l = Limits::default();
    out.push_str(&format!(
        "Limits: {} operations, {} calls, {} s for the whole run (`serve --script-timeout-seconds`), {} MiB\n\
         of memory (`serve --script-memory-mib`), {} MiB of output; a string holds at most {} MiB and an array or a map\n\
         {} items; `import` is not available. At most {} scripts run at once on a server (`serve --max-scripts`), at most {}\n\
         of them one user's (`serve --max-scripts-per-user`); another answers 503 until one ends.\n\
         Services that cannot be undone are refused in a script: `ReloadExtension`, the audit archive, export, purge and\n\
         cleanup services, and file deletion in a repository. Remote-access sessions a script starts end with it.\n\n",
        thousands(l.max_operations),
        thousands(l.max_calls),
        l.timeout.as_secs(),
        l.max_memory >> 20,
        l.max_output >> 20,
        MAX_STRING >> 20,
        thousands(MAX_ITEMS as u64),
        l.max_running,
        l.max_per_user,
    ));
    let fns = functions();
    out.push_str("## Functions\n\n");
    for s in &fns {
        let entity = match &s.on {
            On::Fixed(..) => None,
            On::Named(k) => Some(snake(k.label())),
            On::Path => Some("entity".to_string()),
        };
        let params: Vec<String> = entity
            .into_iter()
            .chain(s.params.iter().enumerate().map(|(i, p)| {
                if i < s.required {
                    snake(p)
                } else {
                    format!("[{}]", snake(p))
                }
            }))
            .collect();
        let target = match &s.on {
            On::Fixed(k, e) => format!("`{}/{e}/Services/{}`", k.collection(), s.service),
            On::Named(k) => format!("`{}/NAME/Services/{}`", k.collection(), s.service),
            On::Path => format!("`ENTITY/Services/{}`", s.service),
        };
        let returns = match s.returns {
            Returns::Nothing => "",
            Returns::Value(_) => " Gives the result.",
            Returns::Rows => " Gives an array of maps.",
            Returns::Row => " Gives a map.",
        };
        out.push_str(&format!(
            "### `{}({})`\n\n{}{returns} REST: {target}.\n\n```rhai\n{}\n```\n\n",
            s.name,
            params.join(", "),
            s.doc,
            s.example
        ));
    }
    out.push_str("## Generic functions\n\n");
    for (sig, doc, example) in GENERIC {
        out.push_str(&format!(
            "### `{sig}`\n\n{doc}\n\n```rhai\n{example}\n```\n\n"
        ));
    }
    out
}

/// What ended a script.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
    line: Option<usize>,
}

impl Failure {
    fn api(&self) -> ApiError {
        let at = match self.line {
            Some(l) => format!("script line {l}: "),
            None => "script: ".to_string(),
        };
        ApiError::new(
            self.status,
            format!("{at}{}; nothing the script did was kept", self.message),
        )
    }
}

/// Why the progress callback stopped a script.
const STOP_TIME: &str = "time";
const STOP_OUTPUT: &str = "output";
const STOP_MEMORY: &str = "memory";

/// A failed call, as a script sees it in `catch (e)`: `e.status`, `e.message`. A type of its
/// own (not a map), so that a script cannot forge one to choose the answer's status.
#[derive(Clone, Debug)]
pub struct CallFailed {
    status: u16,
    message: String,
}

/// One run's state, shared by the bound functions.
struct Run {
    app: Arc<App>,
    caller: Caller,
    calls: AtomicU64,
    limits: Limits,
    output: Mutex<String>,
    output_full: AtomicBool,
}

impl Run {
    fn error(&self, e: ApiError, pos: Position) -> Box<EvalAltResult> {
        let failed = CallFailed {
            status: e.status.as_u16(),
            message: e.message,
        };
        Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(failed), pos))
    }

    /// Makes one call of the API as the caller (counted; a failure audited and thrown).
    fn request(
        &self,
        ctx: &NativeCallContext,
        call: impl FnOnce(&Arc<App>, &Caller) -> Result<Reply, ApiError>,
    ) -> Result<Reply, Box<EvalAltResult>> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.limits.max_calls {
            return Err(self.error(
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the script made more than {} calls (the limit)",
                        self.limits.max_calls
                    ),
                ),
                ctx.call_position(),
            ));
        }
        call(&self.app, &self.caller).map_err(|e| {
            e.audit_denial(&self.app, &self.caller.name, json!({"script": true}));
            self.error(e, ctx.call_position())
        })
    }

    fn print(&self, s: &str) {
        let mut out = self.output.lock().unwrap_or_else(|p| p.into_inner());
        if out.len() + s.len() + 1 > self.limits.max_output {
            self.output_full.store(true, Ordering::Relaxed);
            return;
        }
        out.push_str(s);
        out.push('\n');
    }
}

fn to_dynamic(v: &Json) -> Result<Dynamic, Box<EvalAltResult>> {
    rhai::serde::to_dynamic(v)
}

fn from_dynamic(d: &Dynamic) -> Result<Json, Box<EvalAltResult>> {
    rhai::serde::from_dynamic::<Json>(d)
}

/// `Things/Pump 7` -> (Thing, `Pump 7`); anything but `Collection/Name` is refused.
fn entity_path(
    ctx: &NativeCallContext,
    run: &Run,
    entity: &str,
) -> Result<(Kind, String), Box<EvalAltResult>> {
    match entity.split_once('/') {
        Some((c, n)) if !n.is_empty() && !n.contains('/') => match Kind::from_collection(c) {
            Some(k) => Ok((k, n.to_string())),
            None => Err(not_a_path(ctx, run, entity)),
        },
        _ => Err(not_a_path(ctx, run, entity)),
    }
}

fn not_a_path(ctx: &NativeCallContext, run: &Run, entity: &str) -> Box<EvalAltResult> {
    run.error(
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{entity:?} is not an entity's path; name it as Collection/Name, e.g. Things/Pump7"
            ),
        ),
        ctx.call_position(),
    )
}

/// A reply as a script value.
fn give(reply: Reply, returns: Returns) -> Result<Dynamic, Box<EvalAltResult>> {
    let Some(v) = reply.into_json() else {
        return Ok(Dynamic::UNIT);
    };
    let rows = v["rows"].clone();
    match returns {
        Returns::Nothing => Ok(Dynamic::UNIT),
        Returns::Value(_) => to_dynamic(&rows[0]["result"]),
        Returns::Row => to_dynamic(&rows[0]),
        Returns::Rows => to_dynamic(&rows),
    }
}

/// A reply of a service whose shape the script cannot know: a one-result InfoTable gives its
/// value, another its rows, anything else itself.
fn give_any(reply: Reply) -> Result<Dynamic, Box<EvalAltResult>> {
    match reply.into_json() {
        None => Ok(Dynamic::UNIT),
        Some(v) => {
            let fields = v["dataShape"]["fieldDefinitions"].as_object();
            match fields {
                Some(f) if f.len() == 1 && f.contains_key("result") => {
                    to_dynamic(&v["rows"][0]["result"])
                }
                Some(_) => to_dynamic(&v["rows"]),
                None => to_dynamic(&v),
            }
        }
    }
}

fn register(engine: &mut Engine, run: &Arc<Run>) {
    // The table is built once per process; each binding borrows its row.
    static FUNCTIONS: std::sync::LazyLock<Vec<ScriptFn>> = std::sync::LazyLock::new(functions);
    for s in FUNCTIONS.iter() {
        let lead = usize::from(!matches!(s.on, On::Fixed(..)));
        for n in s.required..=s.params.len() {
            let run = run.clone();
            let types = vec![TypeId::of::<Dynamic>(); lead + n];
            engine.register_raw_fn(
                s.name.clone(),
                types,
                move |ctx: NativeCallContext, args: &mut [&mut Dynamic]| {
                    let (kind, entity) = match &s.on {
                        On::Fixed(k, e) => (*k, e.to_string()),
                        On::Named(k) => (*k, args[0].to_string()),
                        On::Path => entity_path(&ctx, &run, &args[0].to_string())?,
                    };
                    let mut params = crate::api::Params::new();
                    for (i, p) in s.params.iter().take(n).enumerate() {
                        let a = &args[lead + i];
                        if !a.is_unit() {
                            params.insert((*p).to_string(), from_dynamic(a)?);
                        }
                    }
                    let reply = run.request(&ctx, |app, caller| {
                        crate::api::invoke(app, caller, kind, &entity, s.service, params)
                    })?;
                    give(reply, s.returns)
                },
            );
        }
    }
    let r = run.clone();
    engine.register_fn(
        "call_service",
        move |ctx: NativeCallContext, entity: &str, service: &str, params: rhai::Map| {
            let (kind, name) = entity_path(&ctx, &r, entity)?;
            let params = match from_dynamic(&Dynamic::from_map(params))? {
                Json::Object(o) => crate::api::Params::from(o),
                _ => crate::api::Params::new(),
            };
            let reply = r.request(&ctx, |app, caller| {
                crate::api::invoke(app, caller, kind, &name, service, params)
            })?;
            give_any(reply)
        },
    );
    let r = run.clone();
    engine.register_fn(
        "get_property",
        move |ctx: NativeCallContext, entity: &str, name: &str| {
            let (kind, thing) = entity_path(&ctx, &r, entity)?;
            let reply = r.request(&ctx, |app, caller| {
                crate::api::entities::read_property(app, caller, kind, &thing, name)
            })?;
            match reply {
                Reply::Empty => Ok(Dynamic::UNIT),
                reply => to_dynamic(&reply.first_value(name)),
            }
        },
    );
    let r = run.clone();
    engine.register_fn(
        "set_property",
        move |ctx: NativeCallContext, entity: &str, name: &str, value: Dynamic| {
            let (kind, thing) = entity_path(&ctx, &r, entity)?;
            let value = from_dynamic(&value)?;
            r.request(&ctx, |app, caller| {
                crate::api::entities::write_property(app, caller, kind, &thing, name, Some(&value))
            })?;
            Ok::<Dynamic, Box<EvalAltResult>>(Dynamic::UNIT)
        },
    );
    let r = run.clone();
    engine.register_fn("list", move |ctx: NativeCallContext, collection: &str| {
        let Some(kind) = Kind::from_collection(collection) else {
            return Err(r.error(
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("{collection:?} is not a collection (Things, Users, Groups, ...)"),
                ),
                ctx.call_position(),
            ));
        };
        let reply = r.request(&ctx, |app, caller| {
            crate::api::entities::list(app, caller, kind)
        })?;
        let names: Vec<Json> = match reply.into_json() {
            Some(v) => v["rows"]
                .as_array()
                .map(|rows| rows.iter().map(|r| r["name"].clone()).collect())
                .unwrap_or_default(),
            None => vec![],
        };
        to_dynamic(&Json::Array(names))
    });
    let r = run.clone();
    engine.register_fn("get_entity", move |ctx: NativeCallContext, entity: &str| {
        let (kind, name) = entity_path(&ctx, &r, entity)?;
        let reply = r.request(&ctx, |app, caller| {
            crate::api::entities::describe(app, caller, kind, &name)
        })?;
        give_any(reply)
    });
}

/// An engine with Rhai's defaults made safe: no `import` of files from the server's disk, and
/// bounded values (a string holds at most 1 MiB, an array or a map 10,000 items, nested ones
/// counted whole; how many values a script keeps is bounded by the memory cap of [`engine`]).
fn bare_engine() -> Engine {
    let mut engine = Engine::new();
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.set_max_expr_depths(64, 64);
    engine.set_max_call_levels(64);
    engine.set_max_string_size(MAX_STRING);
    engine.set_max_array_size(MAX_ITEMS);
    engine.set_max_map_size(MAX_ITEMS);
    engine
}

/// The longest string a script may make, in bytes.
const MAX_STRING: usize = 1 << 20;
/// The most items in a script's array or map (nested ones counted whole).
const MAX_ITEMS: usize = 10_000;

/// `10000000` -> `10,000,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The engine of one attempt: the script API, and the limits checked at every step (the memory
/// budget is the thread's, see `run_service`).
fn engine(run: &Arc<Run>, deadline: Instant) -> Engine {
    let mut engine = bare_engine();
    let limits = run.limits;
    engine.set_max_operations(limits.max_operations);
    engine
        .register_type_with_name::<CallFailed>("CallFailed")
        .register_get("status", |f: &mut CallFailed| i64::from(f.status))
        .register_get("message", |f: &mut CallFailed| f.message.clone())
        .register_fn("to_string", |f: &mut CallFailed| {
            format!("{} {}", f.status, f.message)
        });
    let r = run.clone();
    engine.on_progress(move |_| {
        if r.output_full.load(Ordering::Relaxed) {
            Some(Dynamic::from(STOP_OUTPUT))
        } else if thinghost_extensions::meter::over_budget() {
            Some(Dynamic::from(STOP_MEMORY))
        } else if Instant::now() >= deadline {
            Some(Dynamic::from(STOP_TIME))
        } else {
            None
        }
    });
    let r = run.clone();
    engine.on_print(move |s| r.print(s));
    let r = run.clone();
    engine.on_debug(move |s, _, pos| r.print(&format!("[line {}] {s}", pos.line().unwrap_or(0))));
    register(&mut engine, run);
    engine
}

/// The innermost error of a chain of calls, with its line.
fn failure(e: &EvalAltResult, limits: &Limits) -> Failure {
    let line = e.position().line();
    match e {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => {
            let mut f = failure(inner, limits);
            f.line = f.line.or(line);
            f
        }
        EvalAltResult::ErrorRuntime(v, _) => {
            if let Some(f) = v.read_lock::<CallFailed>() {
                return Failure {
                    status: StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_REQUEST),
                    message: f.message.clone(),
                    line,
                };
            }
            Failure {
                status: StatusCode::BAD_REQUEST,
                message: format!("the script threw {v}"),
                line,
            }
        }
        EvalAltResult::ErrorTerminated(why, _) => Failure {
            status: StatusCode::BAD_REQUEST,
            message: if why.to_string() == STOP_OUTPUT {
                format!(
                    "the script printed more than {} bytes (the limit)",
                    limits.max_output
                )
            } else if why.to_string() == STOP_MEMORY {
                format!(
                    "the script held more than {} MiB of memory (the limit; serve --script-memory-mib)",
                    limits.max_memory >> 20
                )
            } else {
                format!(
                    "the script ran longer than {} s (the limit; serve --script-timeout-seconds)",
                    limits.timeout.as_secs()
                )
            },
            line,
        },
        EvalAltResult::ErrorTooManyOperations(_) => Failure {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "the script ran more than {} operations (the limit)",
                limits.max_operations
            ),
            line,
        },
        other => {
            // Rhai's message ends with the position, which the failure gives on its own.
            let mut message = other.to_string();
            if let Some(i) = message.rfind(" (line ") {
                message.truncate(i);
            }
            Failure {
                status: StatusCode::BAD_REQUEST,
                message,
                line,
            }
        }
    }
}

/// One step of a dry run's plan, from one change the script made.
/// The plan of a dry run: each step and what it wrote. `sees` says which entities the caller may
/// be told of (V1): writes to others (a deletion's cascade reaches entities the caller cannot
/// see) are counted in the step's `hiddenWrites`, not named.
fn plan_of(pending: &[thinghost_store::Pending], sees: &dyn Fn(Kind, &str) -> bool) -> Vec<Json> {
    pending
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut hidden = 0;
            let writes: Vec<String> = p
                .writes
                .iter()
                .filter_map(|w| {
                    let (kind, name, text) = match w {
                        thinghost_core::Write::Put(e) => (
                            e.kind(),
                            e.name.as_str(),
                            format!("put {}/{}", e.kind().collection(), e.name),
                        ),
                        thinghost_core::Write::Remove(k) => (
                            k.kind,
                            k.name.as_str(),
                            format!("remove {}/{}", k.kind.collection(), k.name),
                        ),
                        thinghost_core::Write::Collection(k, _) => {
                            return Some(format!(
                                "set the permissions of the {} collection",
                                k.collection()
                            ));
                        }
                    };
                    if sees(kind, name) {
                        Some(text)
                    } else {
                        hidden += 1;
                        None
                    }
                })
                .collect();
            let record = p.audit.first();
            json!({
                "step": i + 1,
                "action": record.map(|r| r.message_key.as_str()).unwrap_or("changed"),
                "entity": record.map(|r| r.source.clone()).unwrap_or_else(|| writes.first().cloned().unwrap_or_default()),
                "service": record.map(|r| r.args["service"].clone()).unwrap_or(Json::Null),
                "parameters": record
                    .map(|r| r.args.get("parameters").cloned().unwrap_or_else(|| r.args.clone()))
                    .unwrap_or(Json::Null),
                "writes": writes,
                "hiddenWrites": hidden,
            })
        })
        .collect()
}

/// `RunScript(script, dryRun)`: see the module's documentation.
pub fn run_service(
    app: &Arc<App>,
    caller: &Caller,
    request: crate::api::Request,
) -> Result<Reply, ApiError> {
    // (A script cannot run another: its row is refused in a script.)
    let params = request.params;
    let script = params
        .get("script")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    let dry_run = params
        .get("dryRun")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    if script.len() > MAX_SCRIPT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("parameter script: at most {MAX_SCRIPT} bytes"),
        ));
    }
    let limits = app.script_limits;
    let _slot = app
        .scripts_running
        .take(&caller.name, &limits)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let compiler = bare_engine();
    let ast: AST = compiler.compile(&script).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "script line {}: {}; nothing was run",
                e.1.line().unwrap_or(0),
                e.0
            ),
        )
    })?;
    let digest = thinghost_core::hex(&sha2::Sha256::digest(script.as_bytes()));
    let summary = |extra: Json| {
        let mut args = json!({"sha256": digest, "bytes": script.len(), "dryRun": dry_run});
        if let (Some(a), Json::Object(e)) = (args.as_object_mut(), extra) {
            a.extend(e);
        }
        args
    };
    let started = Instant::now();
    // One deadline for the whole run, attempts included.
    let deadline = started + limits.timeout;
    // Each attempt runs beside other requests, on a copy; it lands unless the model changed
    // meanwhile in a way that conflicts (see `Db::adopt`), and then runs again on a new copy.
    // A script acts as its caller only while the caller still acts (enabled, not locked, the
    // same user): checked before each attempt and again, under the model's lock, before its
    // changes land.
    let still_acts = |m: &thinghost_core::Model| {
        crate::state::auth::still_acts(m, &caller.name, caller.subject).map_err(|r| {
            app.audit(
                &caller.name,
                crate::state::audit::category::SCRIPTS,
                "scriptFailed",
                summary(json!({"error": r.detail})),
                "Resources/ScriptServices",
                "Resource",
            );
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} can no longer act ({}); nothing was changed",
                    caller.name, r.detail
                ),
            )
        })
    };
    for attempt in 1..=3u32 {
        let fork = app.db.read().unwrap_or_else(|p| p.into_inner()).fork();
        still_acts(fork.model())?;
        let before = dry_run.then(|| fork.model().clone());
        let script_app = Arc::new(app.for_script(fork));
        let run = Arc::new(Run {
            app: script_app.clone(),
            caller: caller.clone(),
            calls: AtomicU64::new(0),
            limits,
            output: Mutex::new(String::new()),
            output_full: AtomicBool::new(false),
        });
        // The memory budget counts from here, on the thread the script runs on (its copy of
        // the model is made: only what the script adds counts); extensions it calls spend it.
        let memory = thinghost_extensions::meter::enter(limits.max_memory);
        let engine = engine(&run, deadline);
        let mut result = engine.run_ast_with_scope(&mut Scope::new(), &ast);
        drop(engine);
        drop(memory);
        // Output past the limit stops the script at its next step; past it at the very end,
        // the run still fails.
        if result.is_ok() && run.output_full.load(Ordering::Relaxed) {
            result = Err(Box::new(EvalAltResult::ErrorTerminated(
                Dynamic::from(STOP_OUTPUT),
                Position::NONE,
            )));
        }
        let output = run.output.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let calls = run.calls.load(Ordering::Relaxed);
        let mut fork = script_app.db.write().unwrap_or_else(|p| p.into_inner());
        let held_back: Vec<thinghost_store::AuditRecord> = script_app
            .script
            .as_ref()
            .map(|s| std::mem::take(&mut *s.audit.lock().unwrap_or_else(|p| p.into_inner())))
            .unwrap_or_default();
        let changes = fork.pending().len();
        if let Err(e) = result {
            let failed = failure(&e, &limits);
            app.audit(
                &caller.name,
                crate::state::audit::category::SCRIPTS,
                "scriptFailed",
                summary(json!({"line": failed.line, "error": failed.message, "calls": calls})),
                "Resources/ScriptServices",
                "Resource",
            );
            let mut err = failed.api();
            if !output.is_empty() {
                err.message
                    .push_str(&format!("\noutput before the error:\n{output}"));
            }
            return Err(err);
        }
        if let Some(before) = before {
            // What the caller may be told of: entities it sees after the script, or saw before
            // it (a removed one), unless it may inspect everything.
            // Whether it may inspect everything is decided on the model before the script (a
            // script that joins SecurityAdministrators is not told more by its own change).
            let everything = crate::api::authz::may_inspect(&before, caller);
            let sees = |kind: Kind, name: &str| {
                everything
                    || crate::api::authz::sees(fork.model(), caller.subject, kind, name)
                    || crate::api::authz::sees(&before, caller.subject, kind, name)
            };
            let plan = plan_of(fork.pending(), &sees);
            let touched = thinghost_core::insight::Touched::from_writes(
                fork.pending().iter().flat_map(|p| &p.writes),
            );
            let impact = thinghost_core::insight::access_impact_of(&before, fork.model(), &touched);
            // V1: the impact names only users and entities the caller can see (after the
            // script), unless it may inspect everyone's permissions; the others are counted.
            let (impact, impact_hidden) = {
                let m = fork.model();
                if everything {
                    (impact, 0)
                } else {
                    let sees = |kind: Kind, name: &str| {
                        crate::api::authz::sees(m, caller.subject, kind, name)
                    };
                    let (shown, hidden): (Vec<_>, Vec<_>) = impact.into_iter().partition(|row| {
                        let entity = row
                            .entity
                            .split_once('/')
                            .and_then(|(c, n)| Kind::from_collection(c).map(|k| (k, n)));
                        sees(Kind::User, &row.user) && entity.is_none_or(|(k, n)| sees(k, n))
                    });
                    (shown, hidden.len())
                }
            };
            app.audit(
                &caller.name,
                crate::state::audit::category::SCRIPTS,
                "scriptDryRun",
                summary(json!({"changes": changes, "calls": calls, "impactRows": impact.len()})),
                "Resources/ScriptServices",
                "Resource",
            );
            // A change of a big group's membership can move many thousands of permissions: the
            // answer carries the first MAX_IMPACT rows and the count of all.
            let total = impact.len();
            let shown: Vec<_> = impact.into_iter().take(MAX_IMPACT).collect();
            return Ok(crate::api::services::result(
                BaseType::Json,
                json!({
                    "dryRun": true,
                    "output": output,
                    "changes": changes,
                    "plan": plan,
                    "impact": shown,
                    "impactRows": total,
                    "impactTruncated": total > MAX_IMPACT,
                    "impactHidden": impact_hidden,
                    "milliseconds": started.elapsed().as_millis() as u64,
                }),
            ));
        }
        let mut records = held_back;
        if app
            .audit_log
            .enabled(crate::state::audit::category::SCRIPTS)
        {
            records.push(crate::state::audit::record(
                &caller.name,
                crate::state::audit::category::SCRIPTS,
                "scriptRan",
                summary(json!({"changes": changes, "calls": calls, "attempt": attempt})),
                "Resources/ScriptServices",
                "Resource",
            ));
        }
        // Back-pressure before the lock: room for the firings of its changes.
        let sources: Vec<String> = script_app
            .script
            .as_ref()
            .map(|s| {
                let fired = s.fired.lock().unwrap_or_else(|p| p.into_inner());
                let mut v: Vec<String> = fired.iter().map(|f| f.source.clone()).collect();
                v.sort();
                v.dedup();
                v
            })
            .unwrap_or_default();
        crate::api::events::room(app, caller, sources.iter().map(String::as_str));
        let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
        still_acts(db.model())?;
        match db.adopt(&mut fork, &records) {
            Ok(()) => {
                // The events its changes fired go now that they landed (B6: after the firing
                // change is durable), queued under the lock in the order of the changes.
                let fired = script_app
                    .script
                    .as_ref()
                    .map(|s| {
                        std::mem::take(&mut *s.fired.lock().unwrap_or_else(|p| p.into_inner()))
                    })
                    .unwrap_or_default();
                for f in fired {
                    crate::api::events::send(app, f);
                }
                // And the values its writes of logged properties appended (H2).
                let logged = script_app
                    .script
                    .as_ref()
                    .map(|s| {
                        std::mem::take(&mut *s.logged.lock().unwrap_or_else(|p| p.into_inner()))
                    })
                    .unwrap_or_default();
                let pending = crate::api::history::append(app, logged);
                drop(db);
                // The script's changes have landed: a history that could not follow is said
                // (logged, and in the answer), never a failure a client would run again.
                let history_error = crate::api::history::settle(pending).err().map(|e| {
                    tracing::error!(error = %e.message, "a script's logged values were not recorded");
                    e.message
                });
                drop(fork);
                return Ok(crate::api::services::result(BaseType::Json, {
                    let mut v = json!({
                        "dryRun": false,
                        "output": output,
                        "changes": changes,
                        "milliseconds": started.elapsed().as_millis() as u64,
                    });
                    if let Some(e) = history_error {
                        v["historyError"] = json!(e);
                    }
                    v
                }));
            }
            Err(thinghost_store::AdoptError::Changed) => {
                tracing::info!(
                    attempt,
                    user = %caller.name,
                    "the model changed while a script ran; running it again on the new model"
                );
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "a script's changes could not be stored");
                let error = "its changes could not be stored";
                app.audit(
                    &caller.name,
                    crate::state::audit::category::SCRIPTS,
                    "scriptFailed",
                    summary(json!({"error": error, "calls": calls, "attempt": attempt})),
                    "Resources/ScriptServices",
                    "Resource",
                );
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the script's changes could not be stored; nothing was changed; try again",
                ));
            }
        }
    }
    app.audit(
        &caller.name,
        crate::state::audit::category::SCRIPTS,
        "scriptFailed",
        summary(json!({"error": "the model kept changing while it ran", "attempts": 3})),
        "Resources/ScriptServices",
        "Resource",
    );
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "the model kept changing while the script ran; nothing was changed; run it again",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_written_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(10_000_000), "10,000,000");
    }

    #[test]
    fn the_reference_page_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/script-api.md");
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == reference(),
            "docs/script-api.md is out of date: regenerate it with `cargo run -p thinghost -- script reference > docs/script-api.md`"
        );
    }

    #[test]
    fn every_function_has_an_example_that_compiles_and_calls_it() {
        let engine = Engine::new();
        let mut names = std::collections::BTreeSet::new();
        for s in functions() {
            assert!(names.insert(s.name.clone()), "{} twice", s.name);
            assert!(s.example.contains(&format!("{}(", s.name)), "{}", s.name);
            engine
                .compile(&s.example)
                .unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert!(s.required <= s.params.len());
            // Where two services would have the same name, the row names the binding.
            let row = crate::api::table::SERVICES
                .iter()
                .find(|r| r.script_name().as_deref() == Some(s.name.as_str()))
                .expect("a row");
            let expected = match row.script {
                crate::api::table::Script::BoundAs(n) => n.to_string(),
                _ => snake(s.service),
            };
            assert_eq!(s.name, expected, "functions are the services in snake case");
        }
        for (sig, _, example) in GENERIC {
            let name = sig.split('(').next().unwrap();
            assert!(example.contains(&format!("{name}(")), "{sig}");
            engine
                .compile(example)
                .unwrap_or_else(|e| panic!("{sig}: {e}"));
        }
    }

    #[test]
    fn snake_case_of_services() {
        assert_eq!(snake("AddRunTimePermission"), "add_run_time_permission");
        assert_eq!(snake("CreateUser"), "create_user");
        assert_eq!(snake("GetKeyID"), "get_key_id");
        assert_eq!(
            snake("GetRunTimePermissionsAsJSON"),
            "get_run_time_permissions_as_json"
        );
    }
}
