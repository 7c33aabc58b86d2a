//! `thinghost api services` and `thinghost api readme-table`: the pages made from the service
//! table.

use super::Failure;

#[derive(clap::Args, Debug)]
#[command(
    about = "Print the reference of the host services, made from the service table",
    long_about = "Print the reference of every service the host answers itself (docs/services.md), or the \
README's table of them. Both are made from the one service table (host/server/src/api/table.rs); \
tests fail when the committed copies drift."
)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Print docs/services.md: every host service with its parameters, result, rule, lock,
    /// script binding and audit category.
    Services,
    /// Print the README's table of host services (with its markers).
    ReadmeTable,
}

pub fn run(args: Args) -> Result<i32, Failure> {
    match args.action {
        Action::Services => print!("{}", crate::api::docs::services_page()),
        Action::ReadmeTable => print!("{}", crate::api::docs::readme_table()),
    }
    Ok(0)
}
