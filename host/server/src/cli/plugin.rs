//! `thinghost plugin list|check DIR`, `plugin reload NAME`.

use super::Failure;
use std::path::PathBuf;
use thinghost_core::{Model, Policy};
use thinghost_extensions::{Manifest, contribution};
use thinghost_store::Db;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "list and check do what `serve --plugins DIR` does at start (read the manifests, order them, compile \
the code, check every handler, contribute the entities) on a model in memory: nothing is written. With --data, \
the contributions are checked against that data directory's model.\n\nExit status of check: 0 if every package \
would load, 1 if any would be refused, 2 on error."
)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Show each package: loaded (version, contributions, capabilities) or refused (why).
    List(Target),
    /// Like list, and exit with status 1 if any package would be refused.
    Check(Target),
    /// Bring one package of a running server's plugin directory in line with its folder (load a
    /// new one, replace a changed one, remove one whose folder is gone), as the directory's
    /// watcher does; the server's ReloadExtension service. Exit status 1 if refused.
    Reload(Reload),
    /// Write a new, working extension package: a manifest (a template with a property and a
    /// service, a Thing of it, least-privilege capabilities), its code and a README, ready for
    /// `plugin check` and a plugin directory.
    New(New),
    /// Print a running server's recent log lines of one extension (its code's print, debug
    /// and log, its refusals and failures); --follow keeps printing new ones. Administrators.
    Logs(Logs),
    /// Print the reference of the Rhai host API (generated from the host API's one definition).
    RhaiApi,
    /// Print the WIT contract of WebAssembly extensions (generated from the same definition).
    Wit,
}

#[derive(clap::Args, Debug)]
struct New {
    /// The extension's name (1-64 characters of a-z, 0-9 and -): also its folder's.
    name: String,
    /// The runtime of its code.
    #[arg(long, value_enum, default_value_t = NewRuntime::Rhai)]
    runtime: NewRuntime,
    /// Where to write the package's folder (it must not exist yet).
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: std::path::PathBuf,
}

/// The runtimes `plugin new` writes packages for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum NewRuntime {
    /// A Rhai script: nothing to build.
    Rhai,
}

#[derive(clap::Args, Debug)]
struct Logs {
    /// The package's name.
    name: String,
    /// Keep printing new lines (every second) until interrupted.
    #[arg(long)]
    follow: bool,
    /// How many of the newest lines to print first.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=500))]
    lines: u64,
    #[command(flatten)]
    remote: super::remote::Remote,
}

#[derive(clap::Args, Debug)]
struct Reload {
    /// The package's name (its folder's, for a new one).
    name: String,
    /// Accept a lower version than the loaded one.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    remote: super::remote::Remote,
}

#[derive(clap::Args, Debug)]
struct Target {
    /// The plugin directory.
    dir: PathBuf,
    /// Check against this data directory's model (read only).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Load native libraries (trusted code), as `serve --allow-native` does.
    #[arg(long)]
    allow_native: bool,
}

pub fn run(args: Args) -> Result<i32, Failure> {
    let (target, check) = match args.action {
        Action::List(t) => (t, false),
        Action::Check(t) => (t, true),
        Action::RhaiApi => {
            print!("{}", thinghost_extensions::rhai_runtime::reference());
            return Ok(0);
        }
        Action::Wit => {
            print!("{}", thinghost_extensions::host_api::wit());
            return Ok(0);
        }
        Action::Reload(r) => return reload(r),
        Action::Logs(l) => return logs(l),
        Action::New(n) => return new_package(n),
    };
    let mut model = match &target.data {
        Some(d) => {
            let db = Db::open(d, Policy::default())?;
            let f = db.model().export();
            Model::from_parts(f.entities, f.collections, Policy::default())?
        }
        None => Model::with_predefined(),
    };
    let options = thinghost_extensions::code::LoadOptions {
        wasm_cache: None,
        allow_native: target.allow_native,
    };
    let registry = crate::runtime::extensions::load_dir_with(
        &target.dir,
        &options,
        &mut |m: &Manifest, code| {
            let change = contribution(m, Some(code)).map_err(|e| e.to_string())?;
            model.change(change).map(|_| ()).map_err(|e| e.to_string())
        },
    )?;
    let mut summary = registry.summary();
    // What Rhai code calls that its [capabilities] do not list: every such call would be
    // refused (E6); `check` fails on it, naming every one and what to add.
    let mut gaps: Vec<(String, String, String)> = Vec::new();
    for st in registry.packages.values() {
        if let crate::runtime::extensions::State::Loaded(l) = st
            && let Some(gap) = thinghost_extensions::code::capability_gaps(&l.manifest, &l.dir)
        {
            gaps.push((
                l.manifest.extension.name.clone(),
                l.manifest.extension.version.to_string(),
                gap,
            ));
        }
    }
    for p in summary.iter_mut() {
        if let Some((_, _, gap)) = gaps.iter().find(|(n, ..)| p["name"] == n.as_str()) {
            p["capabilityGap"] = serde_json::json!(gap);
        }
    }
    if target.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if summary.is_empty() {
        println!("no extension packages in {}", target.dir.display());
    } else {
        for p in &summary {
            let name = p["name"].as_str().unwrap_or("");
            let version = p["version"].as_str().unwrap_or("?");
            if p["state"] == "loaded" {
                println!(
                    "{name} {version}: loads ({} runtime; {} things, {} templates, {} shapes, {} data shapes, {} services)",
                    p["runtime"].as_str().unwrap_or(""),
                    p["things"],
                    p["thingTemplates"],
                    p["thingShapes"],
                    p["dataShapes"],
                    p["services"]
                );
                println!(
                    "  content: sha256 {}",
                    p["contentHash"].as_str().unwrap_or("")
                );
                let caps = &p["capabilities"];
                if caps.as_object().is_some_and(|c| {
                    c.values()
                        .any(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                }) {
                    println!("  capabilities: {caps}");
                }
            } else if p["state"] == "waiting" {
                println!(
                    "{name} {version}: WAITING for a dependency: {}",
                    p["reason"].as_str().unwrap_or("")
                );
            } else {
                println!(
                    "{name} {version}: REFUSED: {}",
                    p["reason"].as_str().unwrap_or("")
                );
            }
        }
    }
    if !target.json {
        let word = if check { "REFUSED" } else { "WARNING" };
        for (name, version, gap) in &gaps {
            println!("{name} {version}: {word}: {gap}");
        }
    }
    let refused = summary.iter().any(|p| p["state"] != "loaded");
    Ok(if check && (refused || !gaps.is_empty()) {
        1
    } else {
        0
    })
}

/// `Boiler` from `boiler`, `WaterTank` from `water-tank`: the template's name.
fn pascal(name: &str) -> String {
    name.split('-')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn new_package(n: New) -> Result<i32, Failure> {
    thinghost_extensions::manifest::check_extension_name(&n.name)
        .map_err(|e| Failure(format!("{}: {e}", n.name)))?;
    let folder = n.dir.join(&n.name);
    if folder.exists() {
        return Err(Failure(format!(
            "{} exists already: plugin new writes a new folder; choose another name or --dir",
            folder.display()
        )));
    }
    let mut template = pascal(&n.name);
    if !template.starts_with(|c: char| c.is_ascii_alphabetic()) {
        template = format!("X{template}");
    }
    let NewRuntime::Rhai = n.runtime;
    let manifest = format!(
        r#"# {name}: written by `thinghost plugin new`. Check it with `thinghost plugin check DIR`,
# where DIR holds this folder; run it with `thinghost serve --plugins DIR`.
[extension]
name = "{name}"
version = "0.1.0"
host = ">=0.1"
runtime = "rhai"
entry = "main.rhai"
description = "A {template} with a pressure and a Vent(amount) service."

# Deny by default: the host functions the code calls, nothing more. Its own Things (made from
# its templates) it may read and write without more; add `read`, `write` or `invoke` patterns
# for anything else.
[capabilities]
functions = ["get_property", "set_property", "me"]

# The defaults, to raise when a service needs more.
[limits]
deadline_ms = 1000
memory_mib = 64

[[thing_templates]]
name = "{template}"
base = "GenericThing"
description = "What a {template} has and does."

[[thing_templates.properties]]
name = "pressure"
type = "NUMBER"
default = 0.0

[[thing_templates.services]]
name = "Vent"
handler = "vent"
result = "NUMBER"
params = [{{ name = "amount", type = "NUMBER", required = true }}]

[[things]]
name = "{template}1"
template = "{template}"
"#,
        name = n.name
    );
    let code = r#"// The handlers of the manifest's services: each runs with the rights of the user who called
// the service, and may call the host functions [capabilities] lists (sdk/rhai-api.md).

// A number as a float, whether it came as 8 or 8.0.
fn num(x) { if type_of(x) == "i64" { x.to_float() } else { x } }

// Vent(amount): lowers the Thing's pressure by `amount`, never below 0; answers the new pressure.
fn vent(amount) {
    if num(amount) < 0.0 {
        throw "invalid: amount must be 0 or more";
    }
    let next = num(get_property(me(), "pressure")) - num(amount);
    if next < 0.0 {
        next = 0.0;
    }
    set_property(me(), "pressure", next);
    next
}
"#;
    let readme = format!(
        r#"# {name}

A Rhai extension written by `thinghost plugin new`: the template `{template}` (a `pressure`
and the service `Vent(amount)`), and the Thing `{template}1`.

```sh
thinghost plugin check .          # from the folder that holds {name}/: what would load, and why not
thinghost serve --data ./data --dev --plugins .
# then, as the Administrator:
curl -s --cacert data/dev-cert.pem -H "appKey: $(cat data/admin.appkey)" -H 'Content-Type: application/json'   -X PUT https://localhost:8443/Thingworx/Things/{template}1/Properties/pressure -d '{{"pressure": 5}}'
curl -s --cacert data/dev-cert.pem -H "appKey: $(cat data/admin.appkey)" -H 'Content-Type: application/json'   -X POST https://localhost:8443/Thingworx/Things/{template}1/Services/Vent -d '{{"amount": 2}}'
```

The server reloads the extension when this folder changes (`thinghost plugin logs {name}` shows
its recent log lines). `plugin.toml` says what it contributes, which host functions it may call
and its limits; `main.rhai` is its code.
"#,
        name = n.name
    );
    let write = |file: &str, text: &str| -> Result<(), Failure> {
        std::fs::write(folder.join(file), text)
            .map_err(|e| Failure(format!("cannot write {}: {e}", folder.join(file).display())))
    };
    std::fs::create_dir_all(&folder)
        .map_err(|e| Failure(format!("cannot create {}: {e}", folder.display())))?;
    write("plugin.toml", &manifest)?;
    write("main.rhai", code)?;
    write("README.md", &readme)?;
    println!(
        "wrote {} (plugin.toml, main.rhai, README.md): `thinghost plugin check {}` checks it",
        folder.display(),
        n.dir.display()
    );
    Ok(0)
}

fn logs(l: Logs) -> Result<i32, Failure> {
    let path = "/Thingworx/Subsystems/PlatformSubsystem/Services/GetExtensionLog";
    let mut after = 0u64;
    let mut first = true;
    loop {
        let max = if first { l.lines } else { 500 };
        let body = serde_json::json!({"packageName": l.name, "maxItems": max, "after": after});
        let (status, reply) = l.remote.post(path, &body)?;
        if status != 200 {
            return Err(super::remote::Remote::refused(status, &reply));
        }
        for row in reply["rows"].as_array().into_iter().flatten() {
            let time = row["timestamp"]
                .as_i64()
                .map(thinghost_core::types::format_datetime)
                .unwrap_or_default();
            println!(
                "{time} {:5} {}",
                row["level"].as_str().unwrap_or(""),
                row["message"].as_str().unwrap_or("")
            );
            after = after.max(row["seq"].as_u64().unwrap_or(0));
        }
        if !l.follow {
            return Ok(0);
        }
        first = false;
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn reload(r: Reload) -> Result<i32, Failure> {
    let body = serde_json::json!({"packageName": r.name, "force": r.force});
    let (status, reply) = r.remote.post(
        "/Thingworx/Subsystems/PlatformSubsystem/Services/ReloadExtension",
        &body,
    )?;
    match status {
        200 => {}
        // Refused: the loaded version, if any, keeps serving.
        409 => {
            eprintln!("refused: {}", super::remote::Remote::message(&reply));
            return Ok(1);
        }
        _ => return Err(super::remote::Remote::refused(status, &reply)),
    }
    for o in reply["rows"][0]["result"]["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let package = o["package"].as_str().unwrap_or("");
        match o["outcome"].as_str().unwrap_or("") {
            "unchanged" => println!("{package}: unchanged (the folder holds what is loaded)"),
            "added" => println!("{package} {}: loaded", o["version"].as_str().unwrap_or("")),
            "replaced" => println!(
                "{package}: {} -> {}",
                o["from"].as_str().unwrap_or(""),
                o["to"].as_str().unwrap_or("")
            ),
            "removed" => println!("{package} {}: removed", o["version"].as_str().unwrap_or("")),
            other => println!("{package}: {other}"),
        }
    }
    Ok(0)
}
