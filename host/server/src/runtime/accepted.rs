//! The accepted packages: a copy of every extension package the server loaded, kept in the data
//! directory's `extensions/` under the name of its folder in the plugin directory.
//!
//! A package is copied (staged) before it loads, the staged copy is what loads, and it becomes
//! the accepted copy when its generation is published. So the accepted copies are always what the
//! running server serves, whatever the plugin directory holds meanwhile (a broken version it
//! refused, a lower version it was not forced to take, a folder it could not remove). At start
//! the server loads the accepted copies first and then applies the plugin directory to them by
//! the rules of a running server (`api::reload::load_accepted`, then `apply_plugin_dir`): a
//! restart yields the state the running server had.
//!
//! A copy is replaced by two renames (the old copy aside, the new one in); a crash between them
//! leaves the old copy aside, and [`Accepted::recover`] puts it back at the next start.

use std::path::{Path, PathBuf};

/// The data directory's folder of accepted packages.
pub const FOLDER: &str = "extensions";
const STAGING: &str = ".staging";
const ASIDE: &str = ".old-";

/// The accepted copies of one data directory.
#[derive(Clone, Debug)]
pub struct Accepted {
    root: PathBuf,
}

/// A copy of a package folder, not yet accepted: removed when dropped unless accepted.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
}

impl Staged {
    /// Where the copy is: the folder to load from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.path.exists() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl Accepted {
    pub fn new(data_dir: &Path) -> Accepted {
        Accepted {
            root: data_dir.join(FOLDER),
        }
    }

    /// The folder of the accepted copies.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Has this data directory kept accepted copies (false before the first start with a plugin
    /// directory, or in a data directory made by an older thinghost)?
    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    /// The accepted copy of the package in plugin folder `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The plugin folder names with an accepted copy, in name order.
    pub fn names(&self) -> Result<Vec<String>, String> {
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| format!("cannot read {}: {e}", self.root.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", self.root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().is_dir() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Creates the folder (empty: no package accepted yet) and clears what a crash left: staged
    /// copies go, a copy set aside by an interrupted replacement comes back.
    pub fn recover(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| format!("cannot create {}: {e}", self.root.display()))?;
        let staging = self.root.join(STAGING);
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .map_err(|e| format!("cannot clear {}: {e}", staging.display()))?;
        }
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| format!("cannot read {}: {e}", self.root.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(original) = name.strip_prefix(ASIDE) else {
                continue;
            };
            let back = self.root.join(original);
            if back.exists() {
                // The replacement finished: the old copy only had not been deleted yet.
                std::fs::remove_dir_all(entry.path())
            } else {
                std::fs::rename(entry.path(), &back)
            }
            .map_err(|e| format!("cannot recover {}: {e}", entry.path().display()))?;
        }
        Ok(())
    }

    /// Copies the package in `folder` (the files its content hash covers) to a staging folder.
    pub fn stage(&self, folder: &Path) -> Result<Staged, String> {
        let staging = self.root.join(STAGING);
        std::fs::create_dir_all(&staging)
            .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| format!("no randomness: {e}"))?;
        let id = thinghost_core::hex(&random);
        let staged = Staged {
            path: staging.join(id),
        };
        for rel in thinghost_extensions::package::files(folder)? {
            let to = staged.path.join(&rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            // Copied, not `fs::copy`: that would give the copy the source's mode, and what the
            // server writes is its own (0600, by the umask).
            std::io::copy(
                &mut std::fs::File::open(folder.join(&rel))
                    .map_err(|e| format!("cannot read {}: {e}", folder.join(&rel).display()))?,
                &mut std::fs::File::create(&to)
                    .map_err(|e| format!("cannot write {}: {e}", to.display()))?,
            )
            .map_err(|e| {
                format!(
                    "cannot copy {} to {}: {e}",
                    folder.join(&rel).display(),
                    to.display()
                )
            })?;
        }
        std::fs::create_dir_all(&staged.path)
            .map_err(|e| format!("cannot create {}: {e}", staged.path.display()))?;
        Ok(staged)
    }

    /// Makes `staged` the accepted copy of plugin folder `name`, replacing the one before.
    pub fn accept(&self, mut staged: Staged, name: &str) -> Result<(), String> {
        let target = self.path(name);
        let aside = self.root.join(format!("{ASIDE}{name}"));
        if target.exists() {
            if aside.exists() {
                std::fs::remove_dir_all(&aside)
                    .map_err(|e| format!("cannot remove {}: {e}", aside.display()))?;
            }
            std::fs::rename(&target, &aside)
                .map_err(|e| format!("cannot move {} aside: {e}", target.display()))?;
        }
        std::fs::rename(&staged.path, &target)
            .map_err(|e| format!("cannot accept {}: {e}", target.display()))?;
        staged.path = PathBuf::new();
        if aside.exists() {
            std::fs::remove_dir_all(&aside)
                .map_err(|e| format!("cannot remove {}: {e}", aside.display()))?;
        }
        Ok(())
    }

    /// The package of plugin folder `name` left: its accepted copy goes.
    pub fn forget(&self, name: &str) -> Result<(), String> {
        let target = self.path(name);
        if target.exists() {
            std::fs::remove_dir_all(&target)
                .map_err(|e| format!("cannot remove {}: {e}", target.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(dir: &Path, text: &str) {
        std::fs::create_dir_all(dir.join("code")).unwrap();
        std::fs::write(dir.join("plugin.toml"), text).unwrap();
        std::fs::write(dir.join("code/main.rhai"), "fn f() { 1 }").unwrap();
        std::fs::write(dir.join(".swap"), "editor junk").unwrap();
    }

    #[test]
    fn a_staged_copy_holds_the_hashed_files_and_is_gone_unless_accepted() {
        let data = tempfile::tempdir().unwrap();
        let plugins = tempfile::tempdir().unwrap();
        let folder = plugins.path().join("pump");
        package(&folder, "v1");
        let accepted = Accepted::new(data.path());
        accepted.recover().unwrap();
        let staged = accepted.stage(&folder).unwrap();
        let at = staged.path().to_path_buf();
        assert_eq!(
            thinghost_extensions::package::content_hash(&at).unwrap(),
            thinghost_extensions::package::content_hash(&folder).unwrap()
        );
        assert!(!at.join(".swap").exists(), "hidden files are no part of it");
        drop(staged);
        assert!(!at.exists());
        assert!(accepted.names().unwrap().is_empty());
    }

    #[test]
    fn accept_replaces_the_copy_and_forget_removes_it() {
        let data = tempfile::tempdir().unwrap();
        let plugins = tempfile::tempdir().unwrap();
        let folder = plugins.path().join("pump");
        let accepted = Accepted::new(data.path());
        accepted.recover().unwrap();
        package(&folder, "v1");
        accepted
            .accept(accepted.stage(&folder).unwrap(), "pump")
            .unwrap();
        package(&folder, "v2");
        accepted
            .accept(accepted.stage(&folder).unwrap(), "pump")
            .unwrap();
        assert_eq!(accepted.names().unwrap(), vec!["pump".to_string()]);
        assert_eq!(
            std::fs::read_to_string(accepted.path("pump").join("plugin.toml")).unwrap(),
            "v2"
        );
        accepted.forget("pump").unwrap();
        assert!(accepted.names().unwrap().is_empty());
    }

    #[test]
    fn a_replacement_cut_off_between_its_renames_is_undone_at_the_next_start() {
        let data = tempfile::tempdir().unwrap();
        let plugins = tempfile::tempdir().unwrap();
        let folder = plugins.path().join("pump");
        let accepted = Accepted::new(data.path());
        accepted.recover().unwrap();
        package(&folder, "v1");
        accepted
            .accept(accepted.stage(&folder).unwrap(), "pump")
            .unwrap();
        // The crash: the old copy was set aside, the new one never came in; a staged copy is left.
        std::fs::rename(
            accepted.path("pump"),
            data.path().join(FOLDER).join(".old-pump"),
        )
        .unwrap();
        let staged = accepted.stage(&folder).unwrap();
        std::mem::forget(staged);
        accepted.recover().unwrap();
        assert_eq!(accepted.names().unwrap(), vec!["pump".to_string()]);
        assert_eq!(
            std::fs::read_to_string(accepted.path("pump").join("plugin.toml")).unwrap(),
            "v1"
        );
        assert!(!data.path().join(FOLDER).join(STAGING).exists());
    }
}
