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
    /// Print a running server's recent log lines of one extension (its code's print, debug
    /// and log, its refusals and failures); --follow keeps printing new ones. Administrators.
    Logs(Logs),
    /// Print the reference of the Rhai host API (generated from the host API's one definition).
    RhaiApi,
    /// Print the WIT contract of WebAssembly extensions (generated from the same definition).
    Wit,
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
