//! The world of rows 3 and 4 of BENCHMARKS.md: the service `Add(a, b)` as three extensions (Rhai,
//! a WebAssembly component and a native library built from one Rust crate with the SDK), each
//! contributing a Thing with that service and a property `value`; a user `bench` in an
//! organization that sees the three Things and may invoke `Add` and read `value` on them, and
//! nothing else.

use serde_json::{Value as Json, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use thinghost::http::rest::{self, Reply};
use thinghost::state::app::App;
use thinghost::state::auth::Caller;

/// The three ways to write `Add`: (runtime, Thing).
pub const ADDERS: [(&str, &str); 3] = [
    ("native", "AdderNative"),
    ("rhai", "AdderRhai"),
    ("wasm", "AdderWasm"),
];

/// The workspace's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The target directory, or a folder of it.
pub fn target(sub: &str) -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"))
        .join(sub)
}

/// Builds the `cdylib` of the crate at `dir` (a workspace of its own) in release mode, for
/// `target` (None: natively), and returns the file.
pub fn build_cdylib(dir: &Path, target_triple: Option<&str>) -> PathBuf {
    build_cdylib_with_env(dir, target_triple, &[])
}

/// [`build_cdylib`] with these environment variables set for the build (a crate may read them
/// with `env!`).
pub fn build_cdylib_with_env(
    dir: &Path,
    target_triple: Option<&str>,
    env: &[(&str, &str)],
) -> PathBuf {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "build",
        "--quiet",
        "--locked",
        "--release",
        "--message-format=json",
    ])
    .arg("--manifest-path")
    .arg(dir.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(target("extensions"))
    .env_remove("RUSTFLAGS")
    .env_remove("CARGO_BUILD_TARGET")
    .envs(env.iter().copied());
    if let Some(t) = target_triple {
        cmd.args(["--target", t]);
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building {} failed (is the target installed? `rustup target add wasm32-wasip2 wasm32-unknown-unknown`):\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["kind"][0] == "cdylib")
        .filter_map(|v| v["filenames"][0].as_str().map(PathBuf::from))
        .next_back()
        .expect("cargo names the library it built")
}

fn manifest(runtime: &str, thing: &str, entry: &str) -> String {
    format!(
        r#"[extension]
name = "add-{runtime}"
version = "1.0.0"
host = ">=0.1"
runtime = "{runtime}"
entry = "{entry}"
description = "The service-dispatch benchmark's Add(a, b)."

[[things]]
name = "{thing}"
template = "GenericThing"

[[things.properties]]
name = "value"
type = "NUMBER"
default = 42

[[things.services]]
name = "Add"
handler = "add"
result = "NUMBER"
params = [{{ name = "a", type = "NUMBER", required = true }}, {{ name = "b", type = "NUMBER", required = true }}]
"#
    )
}

/// Builds the Rust `add` (as a component and natively) and writes the plugin directory
/// `plugins` with the three extensions.
pub fn plugin_dir(plugins: &Path) {
    let crate_dir = root().join("benches/dispatch/add-rust");
    let wasm = build_cdylib(&crate_dir, Some("wasm32-wasip2"));
    let native = build_cdylib(&crate_dir, None);
    let write = |runtime: &str, thing: &str, entry: &str, code: &dyn Fn(&Path)| {
        let dir = plugins.join(format!("add-{runtime}"));
        std::fs::create_dir_all(&dir).expect("a plugin folder");
        std::fs::write(dir.join("plugin.toml"), manifest(runtime, thing, entry)).expect("written");
        code(&dir.join(entry));
    };
    write("rhai", "AdderRhai", "add.rhai", &|f| {
        std::fs::write(f, "fn add(a, b) { a + b }\n").expect("written")
    });
    write("wasm", "AdderWasm", "add.wasm", &|f| {
        std::fs::copy(&wasm, f).expect("copied");
    });
    let lib = native
        .file_name()
        .expect("a file")
        .to_string_lossy()
        .to_string();
    write("native", "AdderNative", &lib, &|f| {
        std::fs::copy(&native, f).expect("copied");
    });
}

const ES: &str = "/Thingworx/Resources/EntityServices/Services";

/// Creates the user `bench` and its rights, through `post(path, body)` as the Administrator, and
/// returns an application key of `bench`.
pub fn setup(mut post: impl FnMut(&str, Json) -> Result<Json, String>) -> Result<String, String> {
    post(
        &format!("{ES}/CreateUser"),
        json!({"name": "bench", "password": "a long bench password"}),
    )?;
    post(
        &format!("{ES}/CreateOrganization"),
        json!({"name": "BenchOrg"}),
    )?;
    post(
        "/Thingworx/Organizations/BenchOrg/Services/AddMember",
        json!({"name": "BenchOrg", "member": "bench", "type": "User"}),
    )?;
    for (_, thing) in ADDERS {
        let at = |s: &str| format!("/Thingworx/Things/{thing}/Services/{s}");
        post(
            &at("AddVisibilityPermission"),
            json!({"principal": "BenchOrg", "principalType": "Organization"}),
        )?;
        post(
            &at("AddRunTimePermission"),
            json!({"principal": "bench", "principalType": "User", "type": "ServiceInvoke", "resource": "Add", "allow": true}),
        )?;
        post(
            &at("AddRunTimePermission"),
            json!({"principal": "bench", "principalType": "User", "type": "PropertyRead", "resource": "value", "allow": true}),
        )?;
    }
    let v = post(
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "bench-key", "user": "bench"}),
    )?;
    v["rows"][0]["keyId"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("CreateApplicationKey answered {v}"))
}

/// A server's state without its network: a new data directory in `data`, the extensions of
/// `plugins`, and the world of [`setup`]. Returns the state, the `bench` caller and its key.
pub fn local_app(data: &Path, plugins: &Path) -> (Arc<App>, Caller, String) {
    thinghost::cli::init::initialize(data, 1).expect("a new data directory");
    let mut db = thinghost_store::Db::open(data, thinghost_core::Policy::default()).expect("opens");
    let options = thinghost_extensions::code::LoadOptions {
        wasm_cache: Some(
            thinghost_extensions::wasm_runtime::WasmCache::in_data_dir(data).expect("a cache key"),
        ),
        allow_native: true,
    };
    let extensions =
        thinghost::runtime::extensions::load_dir(plugins, &options, &mut db).expect("loads");
    for p in extensions.summary() {
        assert_eq!(p["state"], "loaded", "{p}");
    }
    let audit_log = thinghost::state::audit::AuditLog::open(
        &data.join(thinghost_store::DB_FILE),
        Default::default(),
    )
    .expect("opens");
    let mut app = App::standalone(db, audit_log, data);
    app.key_lifetime_ms = 3_600_000;
    app.extensions = arc_swap::ArcSwap::from_pointee(extensions);
    let app = Arc::new(app);
    let admin = caller(&app, thinghost_core::predefined::ADMINISTRATOR);
    let key = setup(
        |path, body| match call(&app, &admin, path, body.to_string().as_bytes()) {
            Ok(reply) => Ok(reply.into_json().unwrap_or(Json::Null)),
            Err(e) => Err(format!("{path}: {}", e.message)),
        },
    )
    .expect("the bench world");
    let bench = caller(&app, "bench");
    (app, bench, key)
}

/// The caller `name`, as authentication would make it.
pub fn caller(app: &App, name: &str) -> Caller {
    let db = app.db.read().expect("not poisoned");
    let subject = thinghost::state::auth::user_usable(db.model(), name).expect("a usable user");
    Caller {
        subject,
        name: name.into(),
        depth: 0,
        chain: None,
        in_model_code: false,
    }
}

/// One POST through the whole host path but the network: routing, the caller's checks,
/// parameter validation, dispatch, result conversion. (The body text is [`Reply::body`].)
pub fn call(
    app: &Arc<App>,
    caller: &Caller,
    path: &str,
    body: &[u8],
) -> Result<Reply, rest::ApiError> {
    // The request's headers, as hyper hands them over: parsed once, like the bodies, outside
    // what is timed.
    thread_local! {
        static HEADERS: axum::http::HeaderMap = {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            headers
        };
    }
    HEADERS
        .with(|headers| rest::handle(app, caller, &axum::http::Method::POST, path, headers, body))
}
