//! `thinghost script run FILE [--dry-run]` and `thinghost script reference`.

use super::Failure;
use super::remote::Remote;
use serde_json::Value as Json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(
    about = "Run an admin script (Rhai) on a running server, or print the script API's reference",
    long_about = "Run an admin script (Rhai) on a running server, in the security context of the key's user: \
every call the script makes is checked like a request of that user. The script is one transaction: on any \
error nothing it did remains, and the error names the line. --dry-run reports the plan (every change, in order) \
and the access impact (for every user, the permissions it gains or loses) and keeps nothing.\n\n\
Exit status: 0 the script ran; 1 the script failed (nothing was kept); 2 the server could not be reached or \
the command was wrong."
)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Run a script file on the server and print its output.
    Run(Run),
    /// Print the reference page of the script API (docs/script-api.md).
    Reference,
}

#[derive(clap::Args, Debug)]
struct Run {
    /// The script file (Rhai).
    file: PathBuf,
    /// Report what the script would change, and who would gain or lose which permissions;
    /// keep nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the server's answer as JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

pub fn run(args: Args) -> Result<i32, Failure> {
    match args.action {
        Action::Reference => {
            print!("{}", crate::api::script::reference());
            Ok(0)
        }
        Action::Run(r) => run_file(r),
    }
}

fn run_file(r: Run) -> Result<i32, Failure> {
    let script = std::fs::read_to_string(&r.file)
        .map_err(|e| Failure(format!("cannot read the script {}: {e}", r.file.display())))?;
    let body = serde_json::json!({"script": script, "dryRun": r.dry_run});
    let (status, reply) = r.remote.post(
        "/Thingworx/Resources/ScriptServices/Services/RunScript",
        &body,
    )?;
    if status != 200 {
        if status == 401 {
            return Err(Failure(
                "the server refused the application key (401); check --app-key-file".into(),
            ));
        }
        eprintln!("{}: {}", r.file.display(), Remote::message(&reply));
        return Ok(1);
    }
    let result = &reply["rows"][0]["result"];
    if r.json {
        println!(
            "{}",
            serde_json::to_string_pretty(result).unwrap_or_default()
        );
        return Ok(0);
    }
    print!("{}", result["output"].as_str().unwrap_or(""));
    if r.dry_run {
        print_dry_run(result);
    } else {
        eprintln!(
            "{}: {} change(s) kept",
            r.file.display(),
            result["changes"].as_u64().unwrap_or(0)
        );
    }
    Ok(0)
}

fn print_dry_run(result: &Json) {
    let empty = vec![];
    let plan = result["plan"].as_array().unwrap_or(&empty);
    println!("dry run: {} change(s), nothing kept", plan.len());
    for step in plan {
        println!(
            "  {:>3}. {} {} {}",
            step["step"],
            step["action"].as_str().unwrap_or(""),
            step["entity"].as_str().unwrap_or(""),
            match &step["parameters"] {
                Json::Null => String::new(),
                p => p.to_string(),
            }
        );
    }
    let impact = result["impact"].as_array().unwrap_or(&empty);
    let total = result["impactRows"].as_u64().unwrap_or(impact.len() as u64);
    if result["impactTruncated"] == true {
        println!(
            "access impact: {total} change(s), the first {} below",
            impact.len()
        );
    } else {
        println!("access impact: {total} change(s)");
    }
    if let Some(hidden) = result["impactHidden"].as_u64().filter(|n| *n > 0) {
        println!("  and {hidden} change(s) of users or entities you cannot see");
    }
    for i in impact {
        let sign = if i["change"] == "gained" { "+" } else { "-" };
        let resource = match i["resource"].as_str() {
            Some("*") | None => String::new(),
            Some(r) => format!(" ({r})"),
        };
        println!(
            "  {sign} {}: {} {}{resource}    because {}",
            i["user"].as_str().unwrap_or(""),
            i["permission"].as_str().unwrap_or(""),
            i["entity"].as_str().unwrap_or(""),
            i["why"].as_str().unwrap_or("")
        );
    }
}
