//! `thinghost access matrix --user U` and `thinghost access explain --user U --action A --target T`.

use super::Failure;
use super::remote::Remote;

#[derive(clap::Args, Debug)]
#[command(
    about = "Who can do what on a running server: a user's permission matrix, or why one decision falls as it does"
)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Every entity the user can see, with every permission it holds and why, as CSV
    /// (EffectivePermissions).
    Matrix(Matrix),
    /// Whether the user may do one thing, and which rule decides (ExplainAccess, DOMAIN X1).
    /// Exit status 0 allowed, 1 denied or not visible.
    Explain(Explain),
}

#[derive(clap::Args, Debug)]
struct Matrix {
    /// The user.
    #[arg(long)]
    user: String,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Args, Debug)]
struct Explain {
    /// The user.
    #[arg(long)]
    user: String,
    /// The permission: Read, Update, Delete, Create, PropertyRead, PropertyWrite,
    /// ServiceInvoke, EventInvoke, EventSubscribe.
    #[arg(long)]
    action: String,
    /// What it is about: Things/Pump1, Things/Pump1/Services/Reset, Things (a collection), ...
    #[arg(long)]
    target: String,
    #[command(flatten)]
    remote: Remote,
}

/// One CSV field, quoted when it must be (RFC 4180).
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

pub fn run(args: Args) -> Result<i32, Failure> {
    match args.action {
        Action::Matrix(m) => {
            let reply = m.remote.call(
                "/Thingworx/Resources/SecurityServices/Services/EffectivePermissions",
                &serde_json::json!({"user": m.user}),
            )?;
            println!("entity,permission,resource,allowed,why");
            for r in reply["rows"].as_array().into_iter().flatten() {
                let text = |f: &str| match &r[f] {
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                let line: Vec<String> = ["entity", "permission", "resource", "allowed", "why"]
                    .iter()
                    .map(|f| csv(&text(f)))
                    .collect();
                println!("{}", line.join(","));
            }
            Ok(0)
        }
        Action::Explain(e) => {
            let reply = e.remote.call(
                "/Thingworx/Resources/SecurityServices/Services/ExplainAccess",
                &serde_json::json!({"user": e.user, "action": e.action, "target": e.target}),
            )?;
            let row = &reply["rows"][0];
            println!("{}", row["explanation"].as_str().unwrap_or(""));
            Ok(if row["allowed"] == true { 0 } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(super::csv("plain"), "plain");
        assert_eq!(super::csv("a, b"), "\"a, b\"");
        assert_eq!(super::csv("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
