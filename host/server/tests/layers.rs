//! The server's folders import each other in one direction only (ARCHITECTURE.md):
//!
//! ```text
//! cli ──> http ──> api ──> state ──> runtime
//!   └───> jobs ───┘
//! ```
//!
//! `cli/` (the commands) may use everything; `http/` (the REST adapter, `/Thingworx/TWS`,
//! authentication from headers, TLS, the accept loop) and `jobs/` (the scheduler, the watch of the
//! plugin directory) are used by `cli/` alone; `api/` (the service table, the typed API, the
//! authorization module, the host calls of extension code, reloads) uses neither; `state/` (what
//! the server holds: the model, the audit log, callers, sessions, keys) decides nothing and
//! answers nothing; `runtime/` (the extensions loaded from the plugin directory) knows nothing of
//! the server. `src/` itself holds only `lib.rs` and `main.rs`.
//! Read from the source: every `crate::FOLDER` path of every file, comments excluded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each folder and the folders it may import (besides itself): the table is the rule.
const MAY_IMPORT: &[(&str, &[&str])] = &[
    ("cli", &["http", "jobs", "api", "state", "runtime"]),
    ("http", &["api", "state", "runtime"]),
    ("jobs", &["api", "state", "runtime"]),
    ("api", &["state", "runtime"]),
    ("state", &["runtime"]),
    ("runtime", &[]),
    // `main.rs` runs the command line; `lib.rs` names the folders.
    ("root", &["cli"]),
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top folder of a source file (`http`, `api`, `cli`), or `root` for `lib.rs` and `main.rs`.
fn folder(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts = rel.components();
    let first = parts
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    if parts.next().is_some() {
        first
    } else {
        match first.as_str() {
            "lib.rs" | "main.rs" => "root".into(),
            // Any other file at the root belongs to no folder (and fails the test).
            other => format!("src/{other}"),
        }
    }
}

/// A file's code without comment lines and without white space: `crate :: http`, and a `use`
/// spread over lines, read as one path.
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// The folders a file's code names as `crate::FOLDER` (comments excluded: a doc comment may
/// name another folder).
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    {
        let code = code(text);
        let mut rest = code.as_str();
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

#[test]
fn folders_import_each_other_in_one_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let folders: Vec<&str> = MAY_IMPORT.iter().map(|(f, _)| *f).collect();
    let mut wrong = Vec::new();
    for file in &all {
        let from = folder(&src, file);
        let Some((_, may)) = MAY_IMPORT.iter().find(|(f, _)| *f == from) else {
            wrong.push(format!(
                "{} is in no folder of the table (src/ holds lib.rs, main.rs and the folders {folders:?})",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for to in imports(&text) {
            if to == from || !folders.contains(&to.as_str()) {
                // Its own folder, or an item of lib.rs (`crate::now_ms`, `crate::VERSION`).
                continue;
            }
            if !may.contains(&to.as_str()) {
                wrong.push(format!("{} ({from}/) imports {to}/", file.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_check_sees_an_import_in_any_form() {
    let found = imports(
        "use crate::state::app::App;\nuse crate::{api, http};\n// crate::cli:: in a comment\nlet x = crate::jobs::watch::spawn();",
    );
    let want: BTreeSet<String> = ["state", "jobs"].iter().map(|s| s.to_string()).collect();
    // `crate::{api, http}` names no folder by itself: the braces are refused outright below.
    assert_eq!(found, want);
    let spread = imports("use crate ::\n    http::rest;\nlet y = crate:: jobs ::x;");
    assert!(
        spread.contains("http") && spread.contains("jobs"),
        "{spread:?}"
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    for file in &all {
        let text = code(&std::fs::read_to_string(file).unwrap());
        // Paths the check could not follow to a folder: a group at the crate's root, a glob,
        // a path up two folders, a macro exported to the crate's root.
        for (form, why) in [
            ("crate::{", "import folders by their path (`crate::api::x`)"),
            (
                "usecrate::*",
                "import folders by their path (`crate::api::x`)",
            ),
            ("super::super", "name another folder by `crate::FOLDER`"),
            (
                "#[macro_export]",
                "a macro exported to the crate's root hides its paths",
            ),
        ] {
            assert!(
                !text.contains(form),
                "{}: {why}, so the layer check can read it",
                file.display()
            );
        }
    }
    // `lib.rs` names the folders and re-exports nothing (a `pub use` there would be a path
    // around the table).
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    assert!(
        !lib.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("use ") || l.starts_with("pub use ") || l.starts_with("pub(crate) use ")
        }),
        "lib.rs declares the folders and nothing else of theirs"
    );
}
