//! The watched plugin directory: a change of an extension's folder reloads that extension
//! (`extensions::reload`) once the folder has been quiet for a while, so that an editor's save or
//! a `cp -r` (many events) makes one reload of the finished content. A folder whose content hash
//! did not change is no reload; a failed reload leaves the old version serving, with the reason
//! logged, audited and in the package list. A new folder loads; a removed one unloads
//! (`reload.rs` says how).

use crate::state::app::App;
use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// Starts watching `dir`; the watch ends when the returned watcher is dropped.
pub fn spawn(app: Arc<App>, dir: PathBuf, quiet: Duration) -> Result<impl Drop, String> {
    // Events name paths under the watched one as the watcher resolved it; compare absolute,
    // canonical paths on both sides (`--plugins ./plugins` must work as well as a full path).
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("cannot watch the plugin directory {}: {e}", dir.display()))?;
    let (tx, rx) = channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(tx)
        .map_err(|e| format!("cannot watch the plugin directory {}: {e}", dir.display()))?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch the plugin directory {}: {e}", dir.display()))?;
    std::thread::Builder::new()
        .name("plugin-watch".into())
        .spawn(move || {
            // The folders that changed, and when they last did.
            let mut pending: HashMap<String, Instant> = HashMap::new();
            // The content hash of each folder's last refused attempt: the same content is not
            // tried (nor logged, nor audited) again until it changes.
            let mut refused: HashMap<String, String> = HashMap::new();
            // Those refused at start count as tried.
            for st in app.extensions.load().packages.values() {
                if let crate::runtime::extensions::State::Refused { dir: folder, .. } = st
                    && let (Some(name), Ok(h)) = (
                        folder.file_name().map(|n| n.to_string_lossy().into_owned()),
                        thinghost_extensions::package::content_hash(folder),
                    )
                {
                    refused.insert(name, h);
                }
            }
            loop {
                let wait = if pending.is_empty() {
                    Duration::from_secs(3600)
                } else {
                    quiet / 4
                };
                match rx.recv_timeout(wait) {
                    // Reading a folder (a load, a hash) is no change of it: without this, a
                    // refused folder's every attempt set off the next.
                    Ok(Ok(event)) if matches!(event.kind, notify::EventKind::Access(_)) => {}
                    Ok(Ok(event)) => {
                        for path in &event.paths {
                            if let Some(folder) = top_folder(&dir, path) {
                                pending.insert(folder, Instant::now());
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the plugin directory watch reported an error")
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                let now = Instant::now();
                let quiet_now: Vec<String> = pending
                    .iter()
                    .filter(|(_, at)| now.duration_since(**at) >= quiet)
                    .map(|(f, _)| f.clone())
                    .collect();
                for folder in quiet_now {
                    pending.remove(&folder);
                    changed(&app, &dir, &folder, &mut refused);
                }
            }
        })
        .map_err(|e| format!("cannot start the plugin directory watcher: {e}"))?;
    Ok(watcher)
}

/// The first path segment of `path` below `dir`: the extension folder it belongs to.
fn top_folder(dir: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(dir).ok()?;
    let first = rel.components().next()?;
    let name = first.as_os_str().to_string_lossy().into_owned();
    (!name.starts_with('.')).then_some(name)
}

/// A folder of the plugin directory changed and is quiet now: add, change or remove its
/// extension, as `ReloadExtension` would (never forced: a downgrade needs a hand).
///
/// A folder whose content is what was refused last time is left alone (it would be refused
/// again, with the same log line and audit entry): one of each per distinct failure.
fn changed(app: &Arc<App>, dir: &Path, folder: &str, refused: &mut HashMap<String, String>) {
    let path = dir.join(folder);
    let hash = thinghost_extensions::package::content_hash(&path).ok();
    if let (Some(h), Some(last)) = (&hash, refused.get(folder))
        && h == last
    {
        tracing::debug!(
            folder,
            "the folder's content is what was refused: not tried again"
        );
        return;
    }
    match crate::api::reload::sync_audited(app, thinghost_core::predefined::SYSTEM, &path, false) {
        Err(_) => {
            if let Some(h) = hash {
                refused.insert(folder.to_string(), h);
            }
        }
        Ok(_) => {
            refused.remove(folder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_the_extension_folder_they_are_in() {
        let dir = Path::new("/srv/plugins");
        assert_eq!(
            top_folder(dir, Path::new("/srv/plugins/hello/main.rhai")).as_deref(),
            Some("hello")
        );
        assert_eq!(
            top_folder(dir, Path::new("/srv/plugins/hello")).as_deref(),
            Some("hello")
        );
        assert_eq!(top_folder(dir, Path::new("/srv/plugins")), None);
        assert_eq!(top_folder(dir, Path::new("/elsewhere/x")), None);
        assert_eq!(top_folder(dir, Path::new("/srv/plugins/.tmp-copy/x")), None);
    }
}
