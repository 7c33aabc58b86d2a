//! Command-line interface.

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

mod access;
mod api;
mod check;
pub mod edge;
pub mod init;
mod lint;
mod model;
mod plugin;
pub mod remote;
mod script;
mod serve;
pub mod tunnel;

/// thinghost: a platform core for connected devices, in the style of PTC ThingWorx.
#[derive(Parser, Debug)]
#[command(name = "thinghost", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a data directory with the predefined entities and the Administrator's first key.
    Init(init::Args),
    /// Decide whether a user may do something, and explain why (DOMAIN X1).
    Check(check::Args),
    /// Export or import the model (entities and permissions) as JSON.
    Model(model::Args),
    /// Run the server: the REST API over TLS (see --help for the transport options).
    Serve(Box<serve::Args>),
    /// List or check the extension packages of a plugin directory; reload one in a running server.
    Plugin(plugin::Args),
    /// Run an admin script (Rhai) on a running server, as one transaction; --dry-run shows the
    /// plan and who would gain or lose which permissions.
    Script(script::Args),
    /// Check a running server against the secure-modelling advice; exit status 1 on a finding
    /// of severity high or above.
    Lint(lint::Args),
    /// Who can do what: a user's permission matrix (CSV), or the explanation of one decision.
    Access(access::Args),
    /// The host services' reference, made from the service table (docs/services.md).
    Api(api::Args),
    /// Simulated devices that connect over AlwaysOn (/Thingworx/WS), push values and answer
    /// the platform's requests.
    Edge(edge::Args),
    /// The remote-access client: present a session's nonce, then relay a local port to the
    /// session's endpoint on the device (through its tunnel).
    Rac(tunnel::Args),
}

/// An error that ends a command: printed as `error: ...`, exit status 2.
#[derive(Debug)]
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

/// The data directory option shared by the commands.
#[derive(clap::Args, Debug)]
pub struct DataDir {
    /// The data directory (holds thinghost.db and admin.appkey).
    #[arg(long = "data", value_name = "DIR", env = "THINGHOST_DATA")]
    pub path: PathBuf,
}

/// Runs the command line; returns the process exit status.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    // What the server writes (the database, keys, archives, exports, the compiled cache) is
    // its own: files 0600, folders 0700, whatever the umask it was started with.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let result = match cli.command {
        Command::Init(a) => init::run(a),
        Command::Check(a) => check::run(a),
        Command::Model(a) => model::run(a),
        Command::Serve(a) => serve::run(*a),
        Command::Plugin(a) => plugin::run(a),
        Command::Script(a) => script::run(a),
        Command::Lint(a) => lint::run(a),
        Command::Access(a) => access::run(a),
        Command::Api(a) => api::run(a),
        Command::Edge(a) => edge::run(a),
        Command::Rac(a) => tunnel::run(a),
    };
    match result {
        Ok(code) => code,
        Err(Failure(msg)) => {
            eprintln!("error: {msg}");
            2
        }
    }
}
