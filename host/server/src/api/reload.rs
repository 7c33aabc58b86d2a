//! Hot reload: one extension folder of the plugin directory is brought in line with what the
//! running server has loaded, by the watcher (`watch.rs`) or by hand (`ReloadExtension`,
//! `thinghost plugin reload`). The folder decides what happens:
//!
//! - **Add** (a folder with no loaded package): load it as at start; then the packages that were
//!   waiting for it as a dependency load too.
//! - **Change** (the loaded package's folder, different content): the new version is loaded
//!   completely beside the old one; its contributions replace the old ones in one model
//!   transaction, and the dependents are re-validated against it.
//! - **Remove** (the loaded package's folder is gone): its contributions leave the model; Things
//!   users made from its templates stay, parked (disabled) until it comes back.
//!
//! Each outcome is a new generation of the [`Registry`], built off the hot path and published
//! with one pointer swap while the model's write lock is held, so that the model change and the
//! code change land together: a service call finds its definition and its handler under that same
//! lock, so it sees both old or both new. A call already running keeps the extension it started
//! on. A refusal changes nothing but the record of why (`reloadError`, or the refused package's
//! `reason`): the old version keeps serving.

use crate::runtime::accepted::Staged;
use crate::runtime::extensions::{Loaded, Registry, Source, State, read_manifest};
use crate::state::app::App;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thinghost_core::{Kind, ModelError, Tx, View};
use thinghost_extensions::Manifest;
use thinghost_extensions::code::Code;
use thinghost_extensions::manifest::{MANIFEST, Runtime};

/// What a sync did to one package.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The folder's content is what is loaded: nothing to do.
    Unchanged,
    /// A new package loaded.
    Added { version: String },
    /// The new version serves every call that starts from now on.
    Replaced { from: String, to: String },
    /// The package and its contributions left.
    Removed { version: String },
    /// A refused package's folder left: it leaves the package list.
    Forgotten,
}

/// Why a sync changed nothing (the loaded version, if any, keeps serving).
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub extension: String,
    /// `load`, `reload` or `remove`.
    pub action: &'static str,
    pub reason: String,
}

/// One package's outcome.
pub type Done = (String, Outcome);

/// Brings the extension in `folder` (a folder of the plugin directory) in line with the running
/// server: add, change or remove, as the folder says. `force` allows a lower version than the
/// loaded one. Returns what happened to each package (an add may load waiting ones too).
pub fn sync_folder(app: &App, folder: &Path, force: bool) -> Result<Vec<Done>, Refusal> {
    let Some(source) = &app.plugins else {
        return Err(Refusal {
            extension: folder_name(folder),
            action: "reload",
            reason: "the server runs without a plugin directory (serve --plugins DIR)".into(),
        });
    };
    let _one_at_a_time = app.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
    let current = app.extensions.load_full();
    let here = current
        .at(folder)
        .map(|(name, st)| (name.clone(), st.clone()));
    let present = folder.join(MANIFEST).is_file();
    match (here, present) {
        (None, false) => Ok(vec![]),
        (Some((name, State::Refused { .. })), false) => {
            // A copy that failed to load at start goes with its folder.
            if let Err(e) = source.accepted.forget(&folder_name(folder)) {
                tracing::error!(extension = %name, error = %e, "cannot remove the accepted copy");
            }
            let mut next = (*current).clone();
            next.packages.remove(&name);
            next.reload_failures.remove(&name);
            app.extensions.store(Arc::new(next));
            Ok(vec![(name, Outcome::Forgotten)])
        }
        (Some((name, State::Loaded(old))), false) => remove(app, source, &current, &name, &old),
        (Some((name, State::Loaded(old))), true) => {
            change(app, source, &current, &name, &old, force)
        }
        (Some((_, State::Refused { .. })) | None, true) => add(app, source, &current, folder),
    }
}

/// The folder of the plugin directory that holds package `name`: the loaded or refused
/// package's, else `DIR/name` (a new folder named after its package).
pub fn folder_of(app: &App, name: &str) -> Option<PathBuf> {
    let source = app.plugins.as_ref()?;
    let current = app.extensions.load();
    match current.packages.get(name) {
        Some(State::Loaded(l)) => Some(l.dir.clone()),
        Some(State::Refused { dir, .. }) => Some(dir.clone()),
        None => {
            // One folder name, never a path: nothing outside the plugin directory loads.
            let mut parts = Path::new(name).components();
            if !matches!(
                (parts.next(), parts.next()),
                (Some(std::path::Component::Normal(_)), None)
            ) {
                return None;
            }
            let dir = source.dir.join(name);
            dir.is_dir().then_some(dir)
        }
    }
}

/// [`sync_folder`], logged, and audited for `user` (category `Extensions`): `extensionLoaded`,
/// `extensionReloaded`, `extensionRemoved`, or `extension{Load,Reload,Remove}Refused` with the
/// reason. An unchanged folder is none of them.
pub fn sync_audited(
    app: &App,
    user: &str,
    folder: &Path,
    force: bool,
) -> Result<Vec<Done>, Refusal> {
    let outcome = sync_folder(app, folder, force);
    match &outcome {
        Ok(done) => {
            for (name, what) in done {
                let (key, args) = match what {
                    Outcome::Unchanged => continue,
                    Outcome::Added { version } => {
                        tracing::info!(extension = %name, %version, "extension loaded");
                        (
                            "extensionLoaded",
                            json!({"extension": name, "version": version}),
                        )
                    }
                    Outcome::Replaced { from, to } => {
                        tracing::info!(extension = %name, %from, %to, "extension reloaded");
                        (
                            "extensionReloaded",
                            json!({"extension": name, "from": from, "to": to}),
                        )
                    }
                    Outcome::Removed { version } => {
                        tracing::info!(extension = %name, %version, "extension removed");
                        (
                            "extensionRemoved",
                            json!({"extension": name, "version": version}),
                        )
                    }
                    Outcome::Forgotten => {
                        tracing::info!(extension = %name, "a refused extension's folder left");
                        ("extensionForgotten", json!({"extension": name}))
                    }
                };
                app.audit(
                    user,
                    crate::state::audit::category::EXTENSIONS,
                    key,
                    args,
                    name,
                    "Extension",
                );
            }
        }
        Err(r) => {
            tracing::warn!(extension = %r.extension, action = r.action, reason = %r.reason, "extension change refused; the loaded version, if any, keeps serving");
            let key = match r.action {
                "load" => "extensionLoadRefused",
                "remove" => "extensionRemoveRefused",
                _ => "extensionReloadRefused",
            };
            app.audit(
                user,
                crate::state::audit::category::EXTENSIONS,
                key,
                json!({"extension": r.extension, "reason": r.reason}),
                &r.extension,
                "Extension",
            );
        }
    }
    outcome
}

/// The published package's copy becomes its accepted copy. If that fails, the server serves the
/// new version all the same; the next start loads the copy before and applies the folder again.
fn keep(source: &Source, staged: Staged, folder: &Path, name: &str) {
    if let Err(e) = source.accepted.accept(staged, &folder_name(folder)) {
        tracing::error!(extension = %name, error = %e, "cannot keep the accepted copy; the next start applies the plugin folder again");
    }
}

fn folder_name(folder: &Path) -> String {
    folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A change of the model, applied in one transaction.
type ModelChange<'a> = Box<dyn FnOnce(&mut Tx<'_>) -> Result<(), ModelError> + 'a>;

/// Publishes `next`, after applying `change` to the model, both under the model's write lock.
/// If the model refuses the change, nothing is published and the reason is returned.
fn publish(app: &App, mut next: Registry, change: Option<ModelChange<'_>>) -> Result<(), String> {
    next.relink();
    let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
    if let Some(change) = change {
        db.change(change).map_err(|e| e.to_string())?;
    }
    app.extensions.store(Arc::new(next));
    Ok(())
}

/// Records why a loaded package's change was refused (shown as its `reloadError`).
fn refuse_loaded(
    app: &App,
    current: &Registry,
    name: &str,
    action: &'static str,
    reason: String,
) -> Refusal {
    let mut next = current.clone();
    next.reload_failures
        .insert(name.to_string(), reason.clone());
    app.extensions.store(Arc::new(next));
    Refusal {
        extension: name.to_string(),
        action,
        reason,
    }
}

/// The loaded packages that require `name`.
fn dependents<'r>(current: &'r Registry, name: &str) -> Vec<(&'r String, &'r Arc<Loaded>)> {
    current
        .packages
        .iter()
        .filter_map(|(n, st)| match st {
            State::Loaded(l) if l.manifest.requires.contains_key(name) => Some((n, l)),
            _ => None,
        })
        .collect()
}

/// Does the host version and every dependency of `m` hold in `current`? Else why not, and
/// whether `m` only waits for a dependency that is not installed (yet).
fn requirements(current: &Registry, m: &Manifest) -> Result<(), (String, bool)> {
    let host = semver::Version::parse(crate::VERSION).expect("the host version is semver");
    if !m.extension.host.matches(&host) {
        return Err((
            format!(
                "needs host {}, but this is thinghost {host}",
                m.extension.host
            ),
            false,
        ));
    }
    for (dep, req) in &m.requires {
        match current.packages.get(dep) {
            Some(State::Loaded(d)) if req.matches(&d.manifest.extension.version) => {}
            Some(State::Loaded(d)) => {
                return Err((
                    format!(
                        "needs {dep} {req}, but {dep} {} is loaded",
                        d.manifest.extension.version
                    ),
                    false,
                ));
            }
            Some(State::Refused { waiting: true, .. }) | None => {
                return Err((
                    format!("needs {dep} {req}, which is not installed; install {dep} first"),
                    true,
                ));
            }
            Some(State::Refused { .. }) => {
                return Err((format!("needs {dep} {req}, which was refused"), false));
            }
        }
    }
    Ok(())
}

/// Add: the folder holds a package that is not loaded.
fn add(
    app: &App,
    source: &Source,
    current: &Arc<Registry>,
    folder: &Path,
) -> Result<Vec<Done>, Refusal> {
    let mut next = (**current).clone();
    // Whatever was recorded for this folder before (a refusal) is replaced by what it holds now.
    if let Some((old, _)) = current.at(folder) {
        next.packages.remove(old);
    }
    let refused = |mut next: Registry,
                   name: String,
                   version: Option<String>,
                   reason: String,
                   waiting: bool| {
        next.packages.insert(
            name.clone(),
            State::Refused {
                dir: folder.to_path_buf(),
                version,
                reason: reason.clone(),
                waiting,
            },
        );
        app.extensions.store(Arc::new(next));
        Refusal {
            extension: name,
            action: "load",
            reason,
        }
    };
    // What loads is a copy: the folder may change meanwhile, the copy cannot; once published it
    // is the accepted copy, which the next start loads.
    let staged = match source.accepted.stage(folder) {
        Ok(s) => s,
        Err(e) => {
            let reason = format!("cannot copy the package: {e}");
            return Err(refused(next, folder_name(folder), None, reason, false));
        }
    };
    let m = match read_manifest(staged.path(), folder) {
        Ok(m) => m,
        Err(e) => {
            return Err(refused(
                next,
                e.extension.clone(),
                None,
                e.to_string(),
                false,
            ));
        }
    };
    let name = m.name().to_string();
    let version = m.extension.version.to_string();
    if let Some(State::Loaded(other)) = current.packages.get(&name) {
        // Another folder holds the loaded package of that name: that one keeps serving.
        let reason = format!(
            "the folder {} holds extension {name}, which {} already provides; remove one of the two",
            folder.display(),
            other.dir.display()
        );
        return Err(refuse_loaded(app, current, &name, "load", reason));
    }
    if let Err((why, waiting)) = requirements(current, &m) {
        let reason = format!("extension {name}: {why}");
        return Err(refused(next, name, Some(version), reason, waiting));
    }
    let loaded = match crate::runtime::extensions::load_one(
        &m,
        staged.path(),
        folder,
        &source.options,
        &mut |_, _| Ok(()),
    ) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            let reason = format!("extension {name}: {e}");
            return Err(refused(next, name, Some(version), reason, false));
        }
    };
    let contribute = match thinghost_extensions::contribution(&m, Some(&loaded.runtime)) {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("extension {name}: {e}");
            return Err(refused(next, name, Some(version), reason, false));
        }
    };
    let mut published = next.clone();
    published
        .packages
        .insert(name.clone(), State::Loaded(loaded));
    published.reload_failures.remove(&name);
    if let Err(e) = publish(app, published, Some(Box::new(contribute))) {
        let reason = format!("extension {name}: {e}");
        return Err(refused(next, name, Some(version), reason, false));
    }
    keep(source, staged, folder, &name);
    let mut done = vec![(name, Outcome::Added { version })];
    // The packages that waited for this one try again (and those that wait for them, in turn).
    loop {
        let now = app.extensions.load_full();
        let waiting: Vec<PathBuf> = now
            .packages
            .values()
            .filter_map(|st| match st {
                State::Refused {
                    dir, waiting: true, ..
                } if dir.join(MANIFEST).is_file() => Some(dir.clone()),
                _ => None,
            })
            .filter(|dir| Manifest::read(dir).is_ok_and(|m| requirements(&now, &m).is_ok()))
            .collect();
        let Some(dir) = waiting.first() else {
            break;
        };
        match add(app, source, &now, dir) {
            Ok(more) => done.extend(more),
            // Recorded as that package's reason; this add still succeeded.
            Err(r) => {
                tracing::warn!(extension = %r.extension, reason = %r.reason, "a waiting extension was refused");
            }
        }
    }
    Ok(done)
}

/// Change: the loaded package's folder changed.
fn change(
    app: &App,
    source: &Source,
    current: &Arc<Registry>,
    name: &str,
    old: &Arc<Loaded>,
    force: bool,
) -> Result<Vec<Done>, Refusal> {
    let refuse = |reason: String| refuse_loaded(app, current, name, "reload", reason);
    let from = old.manifest.extension.version.to_string();
    if matches!(old.runtime, Code::Native(_)) {
        return Err(refuse(format!(
            "extension {name} is a native library, which is never unloaded (unloading Rust code is unsound): restart the server to replace it"
        )));
    }
    let hash = thinghost_extensions::package::content_hash(&old.dir)
        .map_err(|e| refuse(format!("extension {name}: {e}")))?;
    if hash == old.hash {
        // The folder is back to what is loaded: a failure recorded since is void.
        if current.reload_failures.contains_key(name) {
            let mut next = (**current).clone();
            next.reload_failures.remove(name);
            app.extensions.store(Arc::new(next));
        }
        return Ok(vec![(name.to_string(), Outcome::Unchanged)]);
    }
    let staged = source
        .accepted
        .stage(&old.dir)
        .map_err(|e| refuse(format!("extension {name}: cannot copy the package: {e}")))?;
    let hash = thinghost_extensions::package::content_hash(staged.path())
        .map_err(|e| refuse(format!("extension {name}: {e}")))?;
    let m = read_manifest(staged.path(), &old.dir).map_err(|e| refuse(e.to_string()))?;
    let to = m.extension.version.to_string();
    if m.name() != name {
        return Err(refuse(format!(
            "the folder {} now holds the extension {:?}, not {name:?}: move it to a folder of its own",
            old.dir.display(),
            m.name()
        )));
    }
    if m.extension.version < old.manifest.extension.version && !force {
        return Err(refuse(format!(
            "extension {name}: version {to} is lower than the loaded {from}; to go back, reload it by hand with force (ReloadExtension with force=true, or thinghost plugin reload {name} --force)"
        )));
    }
    if let Err((why, _)) = requirements(current, &m) {
        return Err(refuse(format!("extension {name} {to}: {why}")));
    }
    let deps = dependents(current, name);
    for (other, l) in &deps {
        let req = &l.manifest.requires[name];
        if !req.matches(&m.extension.version) {
            return Err(refuse(format!(
                "extension {other} needs {name} {req}, which version {to} is not; the loaded version keeps serving"
            )));
        }
    }
    if m.extension.runtime == Runtime::Native {
        return Err(refuse(format!(
            "extension {name} {to} turns into a native library, which loads only at start: restart the server"
        )));
    }
    let runtime = Code::load_as(&m, staged.path(), &old.dir, &source.options)
        .map_err(|e| refuse(format!("extension {name} {to}: {e}")))?;
    let contribute = thinghost_extensions::contribution(&m, Some(&runtime))
        .map_err(|e| refuse(format!("extension {name} {to}: {e}")))?;
    // The services the dependents name in their capabilities, on this extension's Things: each
    // must still be there after the change.
    let used: Vec<(String, String, String)> = {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        let model = db.model();
        deps.iter()
            .flat_map(|(other, l)| {
                l.manifest
                    .capabilities
                    .invoke
                    .iter()
                    .filter(|p| !p.contains('*'))
                    .filter_map(|p| {
                        let rest = p.strip_prefix("Things/")?;
                        let (thing, service) = rest.split_once("/Services/")?;
                        let e = model.get(Kind::Thing, thing)?;
                        (e.extension.as_deref() == Some(name))
                            .then(|| (other.to_string(), thing.to_string(), service.to_string()))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    // The other extensions' overrides (of this one's services, directly or through templates
    // between): their handlers must still take the parameters of the definitions after the
    // change (B2).
    let overriding: Vec<(String, Vec<thinghost_extensions::OverrideHandler>)> = current
        .packages
        .iter()
        .filter(|(other, _)| other.as_str() != name)
        .filter_map(|(other, st)| match st {
            State::Loaded(l) => Some((
                other.to_string(),
                thinghost_extensions::override_handlers(&l.manifest, &l.runtime),
            )),
            State::Refused { .. } => None,
        })
        .filter(|(_, o)| !o.is_empty())
        .collect();
    let ext = name.to_string();
    let version = to.clone();
    let change = move |tx: &mut Tx<'_>| -> Result<(), ModelError> {
        contribute(tx)?;
        for (other, overrides) in &overriding {
            thinghost_extensions::check_override_handlers(tx, other, overrides).map_err(|e| {
                ModelError::Invalid {
                    entity: format!("extension {ext} {version}"),
                    message: format!("{e} (extension {other} overrides it)"),
                }
            })?;
        }
        for (other, thing, service) in &used {
            let still = tx
                .get(Kind::Thing, thing)
                .is_some_and(|e| thinghost_core::validate::find_service(tx, e, service).is_some());
            if !still {
                return Err(ModelError::Invalid {
                    entity: format!("extension {ext} {version}"),
                    message: format!(
                        "extension {other} uses Things/{thing}/Services/{service}, which this version no longer has"
                    ),
                });
            }
        }
        Ok(())
    };
    let loaded = Arc::new(Loaded {
        manifest: m,
        dir: old.dir.clone(),
        runtime,
        hash,
    });
    let mut next = (**current).clone();
    next.packages
        .insert(name.to_string(), State::Loaded(loaded));
    next.reload_failures.remove(name);
    publish(app, next, Some(Box::new(change))).map_err(|e| {
        refuse(format!(
            "extension {name} {to} is refused, the loaded {from} keeps serving: {e}"
        ))
    })?;
    keep(source, staged, &old.dir, name);
    Ok(vec![(name.to_string(), Outcome::Replaced { from, to })])
}

/// Remove: the loaded package's folder is gone.
fn remove(
    app: &App,
    source: &Source,
    current: &Arc<Registry>,
    name: &str,
    old: &Arc<Loaded>,
) -> Result<Vec<Done>, Refusal> {
    let refuse = |reason: String| refuse_loaded(app, current, name, "remove", reason);
    let version = old.manifest.extension.version.to_string();
    let deps = dependents(current, name);
    if !deps.is_empty() {
        let names: Vec<&str> = deps.iter().map(|(n, _)| n.as_str()).collect();
        return Err(refuse(format!(
            "extension {name} stays loaded: {} need{} it; remove {} first",
            names.join(", "),
            if names.len() == 1 { "s" } else { "" },
            if names.len() == 1 { "it" } else { "them" },
        )));
    }
    if matches!(old.runtime, Code::Native(_)) {
        return Err(refuse(format!(
            "extension {name} is a native library, which is never unloaded (unloading Rust code is unsound): it leaves at the next start"
        )));
    }
    let mut next = (**current).clone();
    next.packages.remove(name);
    next.reload_failures.remove(name);
    publish(
        app,
        next,
        Some(Box::new(thinghost_extensions::removal(name))),
    )
    .map_err(|e| refuse(format!("extension {name} stays loaded: {e}")))?;
    if let Err(e) = source.accepted.forget(&folder_name(&old.dir)) {
        tracing::error!(extension = %name, error = %e, "cannot remove the accepted copy; it loads at the next start and leaves again");
    }
    Ok(vec![(name.to_string(), Outcome::Removed { version })])
}

/// At start, step one: the accepted copies load, so the server begins where it stopped. Native
/// packages change only at a start (they are never unloaded): their copies follow their
/// folders first, so a new native version, or its removal, takes effect now.
pub fn load_accepted(db: &mut thinghost_store::Db, source: &Source) -> Result<Registry, String> {
    let accepted = &source.accepted;
    accepted.recover()?;
    for name in accepted.names()? {
        let copy = accepted.path(&name);
        if !Manifest::read(&copy).is_ok_and(|m| m.extension.runtime == Runtime::Native) {
            continue;
        }
        let folder = source.dir.join(&name);
        if !folder.join(MANIFEST).is_file() {
            accepted.forget(&name)?;
        } else if thinghost_extensions::package::content_hash(&folder)?
            != thinghost_extensions::package::content_hash(&copy)?
        {
            accepted.accept(accepted.stage(&folder)?, &name)?;
        }
    }
    crate::runtime::extensions::load_copies(
        accepted.root(),
        &source.dir,
        &source.options,
        &mut |m: &Manifest, code: &Code| {
            let change =
                thinghost_extensions::contribution(m, Some(code)).map_err(|e| e.to_string())?;
            db.change(change).map(|_| ()).map_err(|e| e.to_string())
        },
    )
}

/// At start, step two (before the server listens): the plugin directory is applied to the
/// accepted packages by the rules of a running server, as if its folders had changed while it
/// ran: first the folders that left (dependents before what they need), then the folders there
/// (dependencies first). A version the running server refused is refused again, and the
/// accepted one serves. Last, what is in the model without a package leaves
/// ([`remove_absent`]). Audited like the watcher's changes.
pub fn apply_plugin_dir(app: &App) -> Result<(), String> {
    let Some(source) = &app.plugins else {
        return Ok(());
    };
    let system = thinghost_core::predefined::SYSTEM;
    let host = semver::Version::parse(crate::VERSION).expect("the host version is semver");
    let current = app.extensions.load_full();
    let loaded: Vec<&Loaded> = current
        .packages
        .values()
        .filter_map(|st| match st {
            State::Loaded(l) => Some(l.as_ref()),
            State::Refused { .. } => None,
        })
        .collect();
    let manifests: Vec<&Manifest> = loaded.iter().map(|l| &l.manifest).collect();
    let order = thinghost_extensions::plan(&manifests, &host).order;
    for name in order.iter().rev() {
        if let Some(l) = loaded.iter().find(|l| l.manifest.name() == name)
            && !l.dir.join(MANIFEST).is_file()
        {
            let _ = sync_audited(app, system, &l.dir, false);
        }
    }
    let gone: Vec<PathBuf> = current
        .packages
        .values()
        .filter_map(|st| match st {
            State::Refused { dir, .. } if !dir.join(MANIFEST).is_file() => Some(dir.clone()),
            _ => None,
        })
        .collect();
    for dir in gone {
        let _ = sync_audited(app, system, &dir, false);
    }
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&source.dir)
        .map_err(|e| {
            format!(
                "cannot read the plugin directory {}: {e}",
                source.dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && !folder_name(p).starts_with('.'))
        .collect();
    folders.sort();
    let present: Vec<(Manifest, PathBuf)> = folders
        .iter()
        .filter_map(|f| Manifest::read(f).ok().map(|m| (m, f.clone())))
        .collect();
    let refs: Vec<&Manifest> = present.iter().map(|(m, _)| m).collect();
    let mut ordered: Vec<PathBuf> = thinghost_extensions::plan(&refs, &host)
        .order
        .iter()
        .filter_map(|name| {
            present
                .iter()
                .find(|(m, _)| m.name() == name)
                .map(|(_, f)| f.clone())
        })
        .collect();
    for f in folders {
        if !ordered.contains(&f) {
            ordered.push(f);
        }
    }
    for folder in ordered {
        let _ = sync_audited(app, system, &folder, false);
    }
    let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
    remove_absent(&mut db, &app.extensions.load());
    Ok(())
}

/// At start: the extensions whose contributions are in the model but whose package is neither
/// accepted nor in the plugin directory leave, as if their folder had been removed while the
/// server ran. One that cannot leave (a user's template still based on one of its templates,
/// say) stays, with a warning.
pub fn remove_absent(db: &mut thinghost_store::Db, registry: &Registry) {
    // A folder whose manifest cannot be read may hold any of them: remove none until it is fixed.
    if let Some((folder, _)) = registry.packages.iter().find(|(_, st)| {
        matches!(st, State::Refused { version: None, dir, .. } if dir.join(MANIFEST).is_file())
    }) {
        tracing::warn!(
            package = %folder,
            "a package's manifest cannot be read: extensions whose folder left the plugin directory keep their contributions until it is fixed"
        );
        return;
    }
    let mut absent: Vec<String> = Kind::ALL
        .iter()
        .flat_map(|k| {
            db.model()
                .entities(*k)
                .filter_map(|e| e.extension.clone())
                .collect::<Vec<_>>()
        })
        .filter(|x| !registry.packages.contains_key(x))
        .collect();
    absent.sort();
    absent.dedup();
    // One may use another's entities: repeat while some leave.
    loop {
        let before = absent.len();
        absent.retain(|x| match db.change(thinghost_extensions::removal(x)) {
            Ok(_) => {
                tracing::info!(extension = %x, "an extension no longer in the plugin directory: its contributions left the model");
                false
            }
            Err(_) => true,
        });
        if absent.is_empty() || absent.len() == before {
            break;
        }
    }
    for x in absent {
        let why = db
            .change(thinghost_extensions::removal(&x))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        tracing::warn!(extension = %x, reason = %why, "an extension no longer in the plugin directory keeps its contributions");
    }
}
