//! `thinghost model import|export`.

use super::{DataDir, Failure};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use thinghost_core::{ModelFile, Policy, Write};
use thinghost_store::Db;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataDir,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Write the model (every entity and permission) as JSON.
    #[command(
        after_help = "The file holds password and key hashes (never keys); it is written with mode 0600."
    )]
    Export {
        /// Write to this file instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Create or replace the entities and collection permissions of a model file, all or nothing.
    Import {
        /// A file written by `thinghost model export` (format thinghost-model, version 1).
        file: PathBuf,
    },
}

pub fn run(args: Args) -> Result<i32, Failure> {
    match args.action {
        Action::Export { output } => {
            let db = Db::open(&args.data.path, Policy::default())?;
            let text = serde_json::to_string_pretty(&db.model().export())?;
            match output {
                None => println!("{text}"),
                Some(path) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    f.write_all(text.as_bytes())
                        .and_then(|_| f.write_all(b"\n"))
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    eprintln!(
                        "exported {} entities to {}",
                        db.model().len(),
                        path.display()
                    );
                }
            }
            Ok(0)
        }
        Action::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let model: ModelFile = serde_json::from_str(&text)
                .map_err(|e| format!("{} is not a thinghost model file: {e}", file.display()))?;
            let count = model.entities.len();
            eprintln!("read {count} entities from {}; validating", file.display());
            // Code in the model is compiled before anything is stored, as a service saving it
            // would (B1).
            crate::state::code::check_entities(&model.entities)
                .map_err(|e| format!("nothing was imported: {e}"))?;
            // A running server holds the directory: importing behind its back would be lost to it.
            let _lock = thinghost_store::DirLock::acquire(&args.data.path)?;
            let mut db = Db::open(&args.data.path, Policy::default())?;
            let batch = db
                .import(model)
                .map_err(|e| format!("nothing was imported: {e}"))?;
            let written = batch
                .writes
                .iter()
                .filter(|w| matches!(w, Write::Put(_)))
                .count();
            println!(
                "imported {}: {count} entities, {written} created or changed, {} already as in the file",
                file.display(),
                count - written
            );
            Ok(0)
        }
    }
}
