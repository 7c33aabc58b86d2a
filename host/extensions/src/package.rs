//! An extension folder's content, as one hash: what the plugin directory's watcher compares with
//! the loaded version's to tell a real change from an editor touching a file (no change, no
//! reload).
//!
//! The hash covers every regular file under the folder: its path relative to the folder and its
//! bytes, in path order, each length-prefixed so that no two different folders encode alike.
//! Hidden files and folders (a name starting with `.`: editor swap files, `.git`) are left out,
//! and so are symbolic links, which the loader does not follow either.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The SHA-256 of the folder's content, in hex.
pub fn content_hash(folder: &Path) -> Result<String, String> {
    let files = files(folder)?;
    let mut h = Sha256::new();
    for rel in &files {
        let bytes = std::fs::read(folder.join(rel))
            .map_err(|e| format!("cannot read {}: {e}", folder.join(rel).display()))?;
        let name = rel.to_string_lossy();
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(thinghost_core::hex(&h.finalize()))
}

/// The files the hash covers (relative to `folder`, in path order): what a package is.
pub fn files(folder: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = Vec::new();
    collect(folder, folder, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
        if kind.is_dir() {
            collect(root, &entry.path(), out)?;
        } else if kind.is_file() {
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    #[test]
    fn the_same_content_hashes_alike_wherever_it_is_and_whenever_written() {
        let files = [("plugin.toml", "x = 1"), ("code/main.rhai", "fn f() { 1 }")];
        let a = folder(&files);
        let mut reversed = files;
        reversed.reverse();
        let b = folder(&reversed);
        assert_eq!(
            content_hash(a.path()).unwrap(),
            content_hash(b.path()).unwrap()
        );
    }

    #[test]
    fn any_change_of_a_byte_a_name_or_a_file_changes_the_hash() {
        let base = content_hash(folder(&[("plugin.toml", "x = 1"), ("a.rhai", "1")]).path());
        let changed = [
            folder(&[("plugin.toml", "x = 2"), ("a.rhai", "1")]),
            folder(&[("plugin.toml", "x = 1"), ("b.rhai", "1")]),
            folder(&[("plugin.toml", "x = 1"), ("a.rhai", "1"), ("c.rhai", "")]),
            folder(&[("plugin.toml", "x = 1")]),
            // The same bytes, split differently between the files.
            folder(&[("plugin.toml", "x = 11"), ("a.rhai", "")]),
        ];
        for c in &changed {
            assert_ne!(content_hash(c.path()), base);
        }
    }

    #[test]
    fn hidden_files_are_not_content() {
        let a = folder(&[("plugin.toml", "x = 1")]);
        let b = folder(&[("plugin.toml", "x = 1"), (".plugin.toml.swp", "junk")]);
        assert_eq!(
            content_hash(a.path()).unwrap(),
            content_hash(b.path()).unwrap()
        );
    }

    #[test]
    fn a_missing_folder_is_an_error_that_names_it() {
        let e = content_hash(Path::new("/nonexistent/thinghost-package")).unwrap_err();
        assert!(e.contains("/nonexistent/thinghost-package"), "{e}");
    }
}
