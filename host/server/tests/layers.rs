//! The server's folders import each other in one direction only (ARCHITECTURE.md): `cli/` may use
//! everything; `http/` (the REST adapter, `/Thingworx/TWS`, TLS, the accept loop) is used by
//! `cli/` alone; `api/` (the service table, the typed API, the authorization module, the host
//! calls of extension code) uses neither; `runtime/` (loading, reload, the watcher) uses none of
//! the three.
//! Read from the source: every `crate::FOLDER` path of every file.

use std::path::{Path, PathBuf};

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

/// The top folder of a source file (`http`, `api`, `cli`), or `root` for a file of `src/` itself.
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
        // `cli.rs` is the `cli` folder's module file.
        first
            .trim_end_matches(".rs")
            .replace("lib", "root")
            .replace("main", "root")
    }
}

#[test]
fn folders_import_each_other_in_one_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    // Who may import a folder (besides itself).
    let allowed: &[(&str, &[&str])] = &[("http", &["cli"]), ("cli", &[])];
    // What a folder may not import: the layers below an adapter never reach up.
    let forbidden: &[(&str, &[&str])] = &[
        ("api", &["http", "cli"]),
        ("runtime", &["api", "http", "cli"]),
    ];
    let mut wrong = Vec::new();
    for file in &all {
        let from = folder(&src, file);
        // The code, without comments (a doc comment may name another folder).
        let text: String = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (to, may) in allowed {
            if from != *to
                && !may.contains(&from.as_str())
                && text.contains(&format!("crate::{to}::"))
            {
                wrong.push(format!("{} imports {to}/", file.display()));
            }
        }
        for (layer, above) in forbidden {
            if from == *layer {
                for to in *above {
                    if text.contains(&format!("crate::{to}::")) {
                        wrong.push(format!("{} ({layer}/) imports {to}/", file.display()));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
