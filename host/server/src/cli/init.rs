//! `thinghost init`.

use super::{DataDir, Failure};
use crate::state::keys;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use thinghost_core::{ApplicationKeyBody, Body, Entity, Model, predefined};
use thinghost_store::{DB_FILE, Db};

/// The file `init` writes the Administrator's first key to.
pub const ADMIN_KEY_FILE: &str = "admin.appkey";
/// The name of that key's ApplicationKey entity.
pub const ADMIN_KEY_NAME: &str = "AdministratorInitialKey";

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The key is written to DIR/admin.appkey (mode 0600) and never printed. \
Running init on an initialized directory refuses and changes nothing."
)]
pub struct Args {
    #[command(flatten)]
    data: DataDir,
    /// Days until the Administrator's first key expires.
    #[arg(long, value_name = "DAYS", default_value_t = DEFAULT_ADMIN_KEY_DAYS, value_parser = clap::value_parser!(u32).range(1..=365))]
    admin_key_days: u32,
}

/// Days the Administrator's first key lives by default.
pub const DEFAULT_ADMIN_KEY_DAYS: u32 = 30;

pub fn run(args: Args) -> Result<i32, Failure> {
    let report = initialize(&args.data.path, args.admin_key_days)?;
    println!("{}", report.info);
    eprintln!("warning: {}", report.warning);
    Ok(0)
}

/// What `initialize` did, for the caller to show: where the key is, and the K4 warning.
pub struct Initialized {
    pub info: String,
    pub warning: String,
}

/// Creates a data directory (used by `init`, and by `serve` on first start).
pub fn initialize(dir: &std::path::Path, admin_key_days: u32) -> Result<Initialized, Failure> {
    let db_path = dir.join(DB_FILE);
    let key_path = dir.join(ADMIN_KEY_FILE);
    if db_path.exists() {
        return Err(Failure(format!(
            "{} is already initialized ({} exists); nothing was changed",
            dir.display(),
            db_path.display()
        )));
    }
    if key_path.exists() {
        return Err(Failure(format!(
            "{} exists but {} does not; remove the stale key file or choose another directory",
            key_path.display(),
            db_path.display()
        )));
    }
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let now = crate::now_ms();
    let key = keys::generate()
        .map_err(|e| format!("no random numbers from the operating system: {e}"))?;
    let mut model = Model::with_predefined();
    let mut entity = Entity::new(
        ADMIN_KEY_NAME,
        Body::ApplicationKey(ApplicationKeyBody {
            user: predefined::ADMINISTRATOR.to_string(),
            key_hash: key.hash.clone(),
            fingerprint: key.fingerprint.clone(),
            expiration_date: now + i64::from(admin_key_days) * 86_400_000,
            whitelist: vec![],
            client_name: "thinghost init".to_string(),
            created: now,
        }),
    );
    entity.owner = Some(predefined::ADMINISTRATOR.to_string());
    entity.description = "The Administrator's first key, written by thinghost init".to_string();
    model.create(entity)?;

    // The key file first (create_new: never overwrite), then the database; if the database
    // cannot be written, the key file goes too, so a failed init leaves nothing behind.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
    f.write_all(key.secret.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
    let meta = [
        ("created".to_string(), now.to_string()),
        ("host_version".to_string(), crate::VERSION.to_string()),
    ];
    if let Err(e) = Db::create(dir, model, &meta) {
        let _ = fs::remove_file(&key_path);
        for suffix in ["", "-wal", "-shm"] {
            let _ = fs::remove_file(dir.join(format!("{DB_FILE}{suffix}")));
        }
        return Err(e.into());
    }
    Ok(Initialized {
        info: format!(
            "initialized {}\nthe Administrator's application key (fingerprint {}) is in {} (mode 0600); it expires in {} days",
            dir.display(),
            key.fingerprint,
            key_path.display(),
            admin_key_days
        ),
        warning: "this key carries Administrator rights (DOMAIN K4); keep it safe, create keys with least privilege \
                  for devices and scripts, and delete this one when you no longer need it"
            .to_string(),
    })
}
