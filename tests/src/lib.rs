//! Helpers for the end-to-end tests: they run the real `thinghost` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The `thinghost` binary, built (or found up to date) once per test process.
pub fn thinghost_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--profile",
                "test",
                "-p",
                "thinghost",
                "--bin",
                "thinghost",
                "--message-format=json",
            ])
            .current_dir(workspace())
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "building thinghost failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"]["name"] == "thinghost")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the thinghost executable")
    })
}

/// Runs `thinghost` with these arguments.
pub fn thinghost(args: &[&str]) -> Output {
    Command::new(thinghost_bin())
        .args(args)
        .env_remove("THINGHOST_DATA")
        .output()
        .expect("thinghost runs")
}

/// Standard output and error of a run, as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
