//! `thinghost check`.

use super::{DataDir, Failure};
use thinghost_core::access::RequestPath;
use thinghost_core::{Outcome, Permission, Policy};
use thinghost_store::Db;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  thinghost check --data ./data --user dev1 --action ServiceInvoke --target Things/Pump1/Services/Reset\n  \
thinghost check --data ./data --user dev1 --action Create --target Things\n\n\
Exit status: 0 allowed, 1 denied or not visible, 2 error."
)]
pub struct Args {
    #[command(flatten)]
    data: DataDir,
    /// The user whose security context is checked.
    #[arg(long, value_name = "NAME")]
    user: String,
    /// The permission: Create, Read, Update, Delete, PropertyRead, PropertyWrite, ServiceInvoke, EventInvoke, EventSubscribe.
    #[arg(long, value_name = "ACTION")]
    action: String,
    /// What is accessed, in the REST layout: Things/Pump1, Things/Pump1/Services/Reset, or a collection such as Users.
    #[arg(long, value_name = "PATH")]
    target: String,
    /// Apply the strict policy: a deny on any level wins (DOMAIN R4).
    #[arg(long)]
    strict: bool,
    /// Print the decision as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<i32, Failure> {
    let permission = Permission::parse(&args.action).ok_or_else(|| {
        let names: Vec<&str> = Permission::ALL.iter().map(|p| p.name()).collect();
        Failure(format!(
            "{:?} is not a permission; use one of {}",
            args.action,
            names.join(", ")
        ))
    })?;
    let path = RequestPath::parse(&args.target)?;
    path.check_fits(permission)?;
    let policy = Policy {
        strict: args.strict,
        ..Policy::default()
    };
    let db = Db::open(&args.data.path, policy)?;
    let model = db.model();
    let subject = model
        .subject(&args.user)
        .ok_or_else(|| Failure(format!("there is no user named {:?}", args.user)))?;
    let target = model.access().target_of(&path)?;
    let decision = model.check(subject, permission, target);
    let explanation = model.explain(&decision);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        println!("{explanation}");
    }
    Ok(if decision.outcome == Outcome::Allowed {
        0
    } else {
        1
    })
}
