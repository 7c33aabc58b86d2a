//! `thinghost lint`: the security lint of a running server.

use super::Failure;
use super::remote::Remote;

#[derive(clap::Args, Debug)]
#[command(
    about = "Check a running server against the secure-modelling advice (DOMAIN.md section 8, U7)",
    long_about = "Check a running server's model and deployment against the secure-modelling advice of the vendor's \
help pages (DOMAIN.md section 8 and U7). Each finding has a rule id, a severity, the entities at fault, the fix \
and a link to the rule's documentation (docs/lint.md).\n\n\
Exit status: 0 no finding of severity high or above; 1 at least one (so it fits in a pipeline); 2 the server \
could not be reached or refused the key."
)]
pub struct Args {
    /// How to print the findings.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Print the rules' documentation (docs/lint.md) and exit; needs no server.
    #[arg(long, exclusive = true)]
    rules: bool,
    #[command(flatten)]
    remote: Option<Remote>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> Result<i32, Failure> {
    if args.rules {
        print!("{}", thinghost_core::lint::reference());
        return Ok(0);
    }
    let Some(remote) = args.remote else {
        return Err(Failure(
            "name the server: --url URL --app-key-file FILE (or --rules for the rules' documentation)"
                .into(),
        ));
    };
    let reply = remote.call(
        "/Thingworx/Resources/SecurityServices/Services/Lint",
        &serde_json::json!({}),
    )?;
    let empty = vec![];
    let findings = reply["rows"].as_array().unwrap_or(&empty);
    let serious = findings
        .iter()
        .any(|f| matches!(f["severity"].as_str(), Some("high" | "critical")));
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(findings).unwrap_or_default()
        ),
        Format::Text => {
            for f in findings {
                println!(
                    "{:<8} {}: {}",
                    f["severity"].as_str().unwrap_or("").to_uppercase(),
                    f["rule"].as_str().unwrap_or(""),
                    f["message"].as_str().unwrap_or("")
                );
                let entities: Vec<&str> = f["entities"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
                    .unwrap_or_default();
                if !entities.is_empty() {
                    println!("         entities: {}", entities.join(", "));
                }
                println!("         fix: {}", f["fix"].as_str().unwrap_or(""));
                println!("         see: {}", f["doc"].as_str().unwrap_or(""));
            }
            println!(
                "{} finding(s){}",
                findings.len(),
                if serious {
                    ", at least one of severity high or above"
                } else {
                    ""
                }
            );
        }
    }
    Ok(i32::from(serious))
}
