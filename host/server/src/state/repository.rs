//! FileRepository Things (U6): each is a folder under the data directory's `repositories/`.
//!
//! The folder is named by the repository's identity, never by its name: `r-` and the first 32
//! hex digits of the SHA-256 of `FileRepository`, a NUL and the Thing's name. Whatever a name
//! holds (`.`, `..`, a separator are refused by the name rules anyway), it cannot name another
//! folder, and no repository's folder lies inside another's: the audit archive
//! (`AuditArchiveFileRepository`) is reachable only through its own Thing. Like the vendor's, a
//! repository made again under a name finds the files it had.
//!
//! Every file operation goes through [`Repo`], a capability on the repository's folder
//! (`cap-std`: each path is resolved component by component with `openat`, and a path that
//! would leave the folder, through `..`, an absolute path or a symbolic link, is refused by the
//! operating-system calls themselves, not by a check before them). Paths inside are relative,
//! `/`-separated names; names starting with `.` are refused too (the server's temporary files).
//! The process's umask (0077, set by `cli::run`) keeps what is written 0600, folders 0700.
//!
//! Services on every Thing made from `FileRepository` (each needs ServiceInvoke on it):
//! `ListFiles(path)` and `DeleteFile(path)`.

use cap_std::fs::Dir;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use thinghost_core::{Body, Kind, Model, View};

/// The data directory's folder of repositories.
pub const FOLDER: &str = "repos";
/// Where an older thinghost kept them, each named as its repository (see [`migrate`]).
pub const LEGACY_FOLDER: &str = "repositories";
/// The template whose Things are repositories.
pub const TEMPLATE: &str = "FileRepository";

/// Is the Thing a FileRepository (made from the template, or from one based on it)?
pub fn is_repository(m: &Model, thing: &str) -> bool {
    let Some(Body::Thing(t)) = m.get(Kind::Thing, thing).map(|e| &e.body) else {
        return false;
    };
    thinghost_core::validate::template_chain(m, &t.thing_template)
        .is_ok_and(|chain| chain.iter().any(|t| t.name == TEMPLATE))
}

/// The folder name of repository `name` (see the module's documentation).
pub fn folder_of(name: &str) -> String {
    let mut h = Sha256::new();
    h.update(TEMPLATE.as_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    let hex = thinghost_core::hex(&h.finalize()[..16]);
    format!("r-{hex}")
}

/// Moves the folders an older thinghost kept as `DATA/repositories/NAME` to their identity
/// (`DATA/repos/r-...`), once, at start, before anything is served: only for repositories in
/// the model, only real folders (never a link), only names that are one path component, and
/// never over a folder that exists. (The two folders are apart, so no name can be taken for
/// another repository's identity.) Returns what moved.
pub fn migrate(data_dir: &Path, m: &Model) -> Result<Vec<String>, String> {
    let legacy = data_dir.join(LEGACY_FOLDER);
    if !legacy.is_dir() {
        return Ok(vec![]);
    }
    let target = data_dir.join(FOLDER);
    let mut moved = Vec::new();
    for thing in m.entities(Kind::Thing) {
        let name = &thing.name;
        if thinghost_core::names::check_entity_name(name).is_err() || !is_repository(m, name) {
            continue;
        }
        let old = legacy.join(name);
        let new = target.join(folder_of(name));
        if std::fs::symlink_metadata(&old).is_ok_and(|md| md.is_dir()) && !new.exists() {
            std::fs::create_dir_all(&target)
                .and_then(|_| std::fs::rename(&old, &new))
                .map_err(|e| {
                    format!(
                        "cannot move {} to {}: {e}; move it by hand, or remove it",
                        old.display(),
                        new.display()
                    )
                })?;
            moved.push(name.clone());
        }
    }
    Ok(moved)
}

/// A relative path inside a repository, checked for its form: no `..`, no absolute path, no
/// component starting with `.`. (Links are the operating system's to refuse, see [`Repo`].)
pub fn relative(rel: &str) -> Result<PathBuf, String> {
    let mut path = PathBuf::new();
    for part in Path::new(rel.trim_start_matches('/')).components() {
        match part {
            Component::Normal(p) if !p.to_string_lossy().starts_with('.') => path.push(p),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "path {rel:?}: name a file inside the repository (no .., no absolute path, no hidden names)"
                ));
            }
        }
    }
    Ok(path)
}

/// An entry of a repository's folder.
#[derive(Debug)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    /// Milliseconds since the epoch.
    pub modified: Option<i64>,
    pub is_dir: bool,
}

/// An open repository folder: every path is resolved inside it.
pub struct Repo {
    dir: Dir,
    name: String,
    /// Writes are refused while the disk has less free (0: never; `serve --min-free-disk-mib`).
    min_free: u64,
}

fn io(what: &str, rel: &Path, e: std::io::Error) -> String {
    let shown = rel.display();
    // cap-std answers "a path led outside of the filesystem" for an escape through a link.
    format!("cannot {what} {shown:?}: {e}")
}

impl Repo {
    /// Opens (creating it if needed) the folder of repository `name` under `data_dir`.
    pub fn open(data_dir: &Path, name: &str) -> Result<Repo, String> {
        let parent = data_dir.join(FOLDER);
        std::fs::create_dir_all(&parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let repositories = Dir::open_ambient_dir(&parent, cap_std::ambient_authority())
            .map_err(|e| format!("cannot open {}: {e}", parent.display()))?;
        let folder = folder_of(name);
        repositories
            .create_dir_all(&folder)
            .map_err(|e| format!("cannot create the folder of repository {name}: {e}"))?;
        let dir = repositories
            .open_dir(&folder)
            .map_err(|e| format!("cannot open the folder of repository {name}: {e}"))?;
        Ok(Repo {
            dir,
            name: name.to_string(),
            min_free: 0,
        })
    }

    /// Refuse writes while the disk has less than `bytes` free.
    pub fn keep_free(mut self, bytes: u64) -> Repo {
        self.min_free = bytes;
        self
    }

    /// The repository's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `rel` is a folder.
    pub fn is_dir(&self, rel: &Path) -> bool {
        rel.as_os_str().is_empty() || self.dir.metadata(rel).is_ok_and(|m| m.is_dir())
    }

    /// Whether `rel` is a file.
    pub fn is_file(&self, rel: &Path) -> bool {
        !rel.as_os_str().is_empty() && self.dir.metadata(rel).is_ok_and(|m| m.is_file())
    }

    /// The entries of folder `rel` (not hidden ones), sorted by name.
    pub fn list(&self, rel: &Path) -> Result<Vec<Listed>, String> {
        let entries = if rel.as_os_str().is_empty() {
            self.dir.entries()
        } else {
            self.dir.read_dir(rel)
        }
        .map_err(|e| io("list", rel, e))?;
        let mut out = Vec::new();
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let meta = e.metadata().ok();
            let modified = meta
                .as_ref()
                .and_then(|m| m.modified().ok())
                .map(|t| t.into_std())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64);
            out.push(Listed {
                name,
                size: meta.as_ref().map(|m| m.len()).unwrap_or(0),
                modified,
                is_dir: meta.as_ref().is_some_and(|m| m.is_dir()),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes file `rel`.
    pub fn remove_file(&self, rel: &Path) -> Result<(), String> {
        self.dir.remove_file(rel).map_err(|e| io("delete", rel, e))
    }

    /// Deletes folder `rel` and everything in it.
    pub fn remove_dir_all(&self, rel: &Path) -> Result<(), String> {
        self.dir
            .remove_dir_all(rel)
            .map_err(|e| io("delete", rel, e))
    }

    /// Whether file `rel` may be written: its folders are folders inside the repository, or do
    /// not exist yet, and it is no folder itself.
    pub fn writable(&self, rel: &Path) -> Result<(), String> {
        let mut at = PathBuf::new();
        let parts: Vec<_> = rel.components().collect();
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            match self.dir.metadata(&at) {
                Ok(m) if m.is_dir() && i + 1 < parts.len() => {}
                Ok(m) if m.is_file() && i + 1 == parts.len() => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Ok(_) if i + 1 == parts.len() => {
                    return Err(format!("{} is a folder; name a file", rel.display()));
                }
                Ok(_) => return Err(format!("{} is not a folder", at.display())),
                Err(e) => return Err(io("write", &at, e)),
            }
        }
        Ok(())
    }

    /// Reads file `rel` whole.
    pub fn read(&self, rel: &Path) -> Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        self.dir
            .open(rel)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| io("read", rel, e))?;
        Ok(bytes)
    }

    /// Writes file `rel` atomically: `write` fills a hidden temporary file beside it, which is
    /// synced and renamed over `rel` (the folder synced too); an error from `write` removes the
    /// temporary file and leaves `rel` as it was.
    pub fn write_atomic<T>(
        &self,
        rel: &Path,
        write: impl FnOnce(&mut dyn Write) -> Result<T, String>,
    ) -> Result<T, String> {
        let file_name = rel
            .file_name()
            .ok_or_else(|| format!("{rel:?} names no file"))?
            .to_string_lossy()
            .into_owned();
        let parent = rel.parent().unwrap_or(Path::new(""));
        let folder = if parent.as_os_str().is_empty() {
            self.dir.try_clone().map_err(|e| io("open", parent, e))?
        } else {
            self.dir
                .create_dir_all(parent)
                .map_err(|e| io("create", parent, e))?;
            self.dir
                .open_dir(parent)
                .map_err(|e| io("open", parent, e))?
        };
        if folder.metadata(&file_name).is_ok_and(|m| m.is_dir()) {
            return Err(format!("{} is a folder; name a file", rel.display()));
        }
        if self.min_free > 0 {
            let free = rustix::fs::fstatvfs(&folder)
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
                .map_err(|e| io("write", rel, e.into()))?;
            if free < self.min_free {
                return Err(format!(
                    "the disk has {} MiB free, below the {} MiB kept free (serve --min-free-disk-mib); {} was not written",
                    free >> 20,
                    self.min_free >> 20,
                    rel.display()
                ));
            }
        }
        let tmp = format!(".{file_name}.tmp");
        let mut file = folder.create(&tmp).map_err(|e| io("write", rel, e))?;
        let result = write(&mut file).and_then(|v| {
            file.flush()
                .and_then(|_| file.sync_all())
                .map_err(|e| io("write", rel, e))?;
            Ok(v)
        });
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = folder.remove_file(&tmp);
                return Err(e);
            }
        };
        folder
            .rename(&tmp, &folder, &file_name)
            .map_err(|e| io("write", rel, e))?;
        let _ = folder.into_std_file().sync_all();
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u6_paths_stay_inside_their_repository() {
        let data = tempfile::tempdir().unwrap();
        let repo = Repo::open(data.path(), "Repo").unwrap();
        let root = data.path().join(FOLDER).join(folder_of("Repo"));
        assert!(root.is_dir());
        assert_eq!(relative("/a/./b.gz").unwrap(), PathBuf::from("a/b.gz"));
        for bad in ["../x", "a/../../x", "..", ".hidden", "a/.git/x"] {
            assert!(relative(bad).is_err(), "{bad}");
        }
        repo.write_atomic(Path::new("a/b.gz"), |w| {
            w.write_all(b"x").map_err(|e| e.to_string())
        })
        .unwrap();
        assert_eq!(repo.read(Path::new("a/b.gz")).unwrap(), b"x");
        assert_eq!(repo.list(Path::new("a")).unwrap().len(), 1);
        // Links inside pointing out, absolute or relative: refused by the resolution itself.
        std::os::unix::fs::symlink("/tmp", root.join("out")).unwrap();
        std::os::unix::fs::symlink("../..", root.join("up")).unwrap();
        std::fs::write(data.path().join("secret"), "s").unwrap();
        for rel in ["out/x", "up/secret", "up", "up/repositories"] {
            let rel = Path::new(rel);
            assert!(repo.list(rel).is_err(), "{rel:?}");
            assert!(repo.read(rel).is_err(), "{rel:?}");
            assert!(
                repo.write_atomic(&rel.join("f"), |_| Ok(())).is_err(),
                "{rel:?}"
            );
        }
        assert!(repo.remove_file(Path::new("up/secret")).is_err());
        assert!(repo.remove_dir_all(Path::new("up/repositories")).is_err());
        assert!(data.path().join("secret").exists());
        assert!(data.path().join(FOLDER).exists());
        // Removing the link itself stays inside (the link goes, not what it points to).
        repo.remove_file(Path::new("up")).unwrap();
        assert!(data.path().join("secret").exists());
    }

    #[test]
    fn u6_a_repositorys_folder_is_its_identity_not_its_name() {
        let data = tempfile::tempdir().unwrap();
        for name in ["Repo", "AuditArchiveFileRepository", "x y"] {
            let f = folder_of(name);
            assert!(f.starts_with("r-") && f.len() == 34, "{f}");
            assert!(f[2..].chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert_ne!(folder_of("a"), folder_of("b"));
        // An older data directory's folders (named as their repositories) move to their
        // identity at start: only repositories of the model, only real folders.
        let m = thinghost_core::Model::with_predefined();
        let old = data.path().join(LEGACY_FOLDER);
        std::fs::create_dir_all(old.join(thinghost_core::predefined::AUDIT_ARCHIVE_REPOSITORY))
            .unwrap();
        std::fs::write(
            old.join(thinghost_core::predefined::AUDIT_ARCHIVE_REPOSITORY)
                .join("kept.txt"),
            "k",
        )
        .unwrap();
        std::fs::create_dir_all(old.join("NotARepository")).unwrap();
        let moved = migrate(data.path(), &m).unwrap();
        assert_eq!(
            moved,
            vec![thinghost_core::predefined::AUDIT_ARCHIVE_REPOSITORY.to_string()]
        );
        let repo = Repo::open(
            data.path(),
            thinghost_core::predefined::AUDIT_ARCHIVE_REPOSITORY,
        )
        .unwrap();
        assert_eq!(repo.read(Path::new("kept.txt")).unwrap(), b"k");
        assert!(old.join("NotARepository").exists(), "left alone");
        assert!(migrate(data.path(), &m).unwrap().is_empty(), "once");
    }
}
