//! Extensions in the server: loading the plugin directory into a generation of loaded
//! extensions (`Registry`). Running their code, and the choke point of their host calls, is
//! `crate::api::host_calls`.

use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thinghost_core::Kind;
use thinghost_extensions::code::{Code, LoadOptions};
use thinghost_extensions::manifest::{Implements, MANIFEST, Member};
use thinghost_extensions::{Manifest, contribution, plan};
use thinghost_store::Db;

/// How deep extension services may call each other.
pub const MAX_DEPTH: u8 = 8;

/// A loaded extension.
pub struct Loaded {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub runtime: Code,
    /// The folder's content hash when it was loaded (`package::content_hash`): a change of the
    /// folder that leaves it equal is no change.
    pub hash: String,
}

/// A handler linked on an entity: (kind, name space, service or subscription, extension,
/// handler).
type Linked = (Kind, Member, String, Arc<Loaded>, Arc<str>);

/// What became of one package.
#[derive(Clone)]
pub enum State {
    Loaded(Arc<Loaded>),
    Refused {
        dir: PathBuf,
        version: Option<String>,
        reason: String,
        /// Refused only because a dependency is not installed: it loads once that is.
        waiting: bool,
    },
}

/// The extensions of a running server: one generation. A generation is never changed; a reload
/// builds the next one beside it and publishes it with one pointer swap
/// ([`App::extensions`](crate::state::app::App)), and a call holds the extension it started on until
/// it ends.
#[derive(Clone, Default)]
pub struct Registry {
    pub packages: BTreeMap<String, State>,
    /// entity -> (kind, name space, service or subscription, extension, handler): looked up by
    /// the entity's name without building a key (a service call's hot path), then among the
    /// entity's few handlers. Fx hashing, as the access index's maps: the names inserted are
    /// those of installed manifests, never a caller's.
    handlers: rustc_hash::FxHashMap<String, Vec<Linked>>,
    /// Why the last reload of a package failed, while its previous version keeps serving.
    pub reload_failures: BTreeMap<String, String>,
}

impl Registry {
    /// The extension handler of a service (defined or overridden) on `kind`/`entity`, or of a
    /// subscription it holds.
    pub fn handler(
        &self,
        kind: Kind,
        entity: &str,
        member: Member,
        name: &str,
    ) -> Option<(Arc<Loaded>, Arc<str>)> {
        self.handlers
            .get(entity)?
            .iter()
            .find_map(|(k, m, n, l, h)| {
                (*k == kind && *m == member && n == name).then(|| (l.clone(), h.clone()))
            })
    }

    /// Links the handlers of one loaded extension.
    fn link(&mut self, l: &Arc<Loaded>) {
        for h in l.manifest.handlers() {
            let linked = self.handlers.entry(h.entity.to_string()).or_default();
            let member = h.implements.member();
            linked.retain(|(k, m, n, _, _)| !(*k == h.kind && *m == member && n == h.name));
            linked.push((
                h.kind,
                member,
                h.name.to_string(),
                l.clone(),
                Arc::from(h.handler),
            ));
        }
    }

    /// Rebuilds the handlers from the loaded packages: every generation links its services,
    /// overrides and subscriptions anew, so a dependent's handlers are re-linked in the same swap
    /// as its dependency.
    pub(crate) fn relink(&mut self) {
        self.handlers.clear();
        let loaded: Vec<Arc<Loaded>> = self
            .packages
            .values()
            .filter_map(|st| match st {
                State::Loaded(l) => Some(l.clone()),
                State::Refused { .. } => None,
            })
            .collect();
        for l in &loaded {
            self.link(l);
        }
    }

    /// The package whose folder is `folder`, if any.
    pub fn at(&self, folder: &Path) -> Option<(&String, &State)> {
        let same = |d: &Path| d == folder || d.canonicalize().is_ok_and(|d| d == folder);
        self.packages.iter().find(|(_, st)| match st {
            State::Loaded(l) => same(&l.dir),
            State::Refused { dir, .. } => same(dir),
        })
    }

    /// A summary per package, for logs, `plugin list` and `GetExtensionPackageList`.
    pub fn summary(&self) -> Vec<Json> {
        self.packages
            .iter()
            .map(|(name, st)| match st {
                State::Loaded(l) => json!({
                    "name": name, "version": l.manifest.extension.version.to_string(), "state": "loaded",
                    "runtime": format!("{:?}", l.manifest.extension.runtime).to_lowercase(),
                    "things": l.manifest.things.len(), "thingTemplates": l.manifest.thing_templates.len(),
                    "thingShapes": l.manifest.thing_shapes.len(), "dataShapes": l.manifest.data_shapes.len(),
                    "services": l.manifest.services(),
                    "overrides": l.manifest.handlers().iter().filter(|h| h.implements == Implements::Override).count(),
                    "subscriptions": l.manifest.handlers().iter().filter(|h| h.implements == Implements::Subscription).count(),
                    "capabilities": {"functions": l.manifest.capabilities.functions, "read": l.manifest.capabilities.read,
                                     "write": l.manifest.capabilities.write, "invoke": l.manifest.capabilities.invoke},
                    "limits": {"deadlineMs": l.manifest.limits.deadline_ms, "memoryMib": l.manifest.limits.memory_mib,
                               "maxOperations": l.manifest.limits.max_operations},
                    "trusted": matches!(l.runtime, Code::Native(_)),
                    "auditCategories": l.manifest.extension.audit_categories,
                    "requires": l.manifest.requires.iter().map(|(k, v)| (k.clone(), json!(v.to_string()))).collect::<serde_json::Map<_, _>>(),
                    "folder": l.dir.display().to_string(),
                    "contentHash": l.hash,
                    "reloadError": self.reload_failures.get(name),
                }),
                State::Refused { dir, version, reason, waiting } => json!({
                    "name": name, "version": version, "state": if *waiting { "waiting" } else { "refused" },
                    "reason": reason, "folder": dir.display().to_string(),
                }),
            })
            .collect()
    }
}

/// Where the extensions come from, for reloads.
pub struct Source {
    /// The plugin directory (absolute).
    pub dir: PathBuf,
    pub options: LoadOptions,
    /// The copies of the packages the server accepted (`DATA/extensions`).
    pub accepted: crate::runtime::accepted::Accepted,
}

/// Reads, orders, compiles and contributes every package of `dir`. A package that fails anything
/// is refused with its reason (and so is every package that needs it); the others load.
pub fn load_dir(dir: &Path, options: &LoadOptions, db: &mut Db) -> Result<Registry, String> {
    load_dir_with(dir, options, &mut |m: &Manifest, code: &Code| {
        let change = contribution(m, Some(code)).map_err(|e| e.to_string())?;
        db.change(change).map(|_| ()).map_err(|e| e.to_string())
    })
}

/// Like [`load_dir`], with the contribution step given: `serve` stores it, `plugin check` only
/// applies it to a model in memory.
pub fn load_dir_with(
    dir: &Path,
    options: &LoadOptions,
    contribute: &mut dyn FnMut(&Manifest, &Code) -> Result<(), String>,
) -> Result<Registry, String> {
    load_copies(dir, dir, options, contribute)
}

/// Like [`load_dir_with`], from copies of the packages of plugin directory `shown` kept in `dir`
/// (the accepted copies, at start): each package is recorded, and named in errors, as the
/// folder of `shown` it is a copy of.
pub fn load_copies(
    dir: &Path,
    shown: &Path,
    options: &LoadOptions,
    contribute: &mut dyn FnMut(&Manifest, &Code) -> Result<(), String>,
) -> Result<Registry, String> {
    let mut registry = Registry::default();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the plugin directory {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        // Hidden folders (`.git`, a staging area) hold no package.
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    entries.sort();
    let mut manifests: Vec<(Manifest, PathBuf)> = Vec::new();
    for folder in entries {
        let folder_name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let presented = shown.join(&folder_name);
        if !folder.join(MANIFEST).exists() {
            registry.packages.insert(
                folder_name,
                State::Refused {
                    dir: presented.clone(),
                    version: None,
                    reason: format!("{} has no {MANIFEST}", presented.display()),
                    waiting: false,
                },
            );
            continue;
        }
        match read_manifest(&folder, &presented) {
            Ok(m) => manifests.push((m, folder)),
            Err(e) => {
                registry.packages.insert(
                    e.extension.clone(),
                    State::Refused {
                        dir: presented,
                        version: None,
                        reason: e.to_string(),
                        waiting: false,
                    },
                );
            }
        }
    }
    let host = semver::Version::parse(crate::VERSION).expect("the host version is semver");
    let refs: Vec<&Manifest> = manifests.iter().map(|(m, _)| m).collect();
    let p = plan(&refs, &host);
    let presented = |folder: &Path| shown.join(folder.file_name().unwrap_or_default());
    for (m, folder) in &manifests {
        if let Some(reason) = p.refused.get(m.name()) {
            registry.packages.insert(
                m.name().to_string(),
                State::Refused {
                    dir: presented(folder),
                    version: Some(m.extension.version.to_string()),
                    reason: format!("extension {}: {reason}", m.name()),
                    waiting: p.waiting.contains(m.name()),
                },
            );
        }
    }
    for name in &p.order {
        let (m, folder) = manifests
            .iter()
            .find(|(m, _)| m.name() == name)
            .expect("planned from these");
        let refuse = |reason: String| State::Refused {
            dir: presented(folder),
            version: Some(m.extension.version.to_string()),
            reason: format!("extension {name}: {reason}"),
            waiting: false,
        };
        // A dependency refused while loading refuses this one too.
        if let Some(dep) = m
            .requires
            .keys()
            .find(|d| !matches!(registry.packages.get(d.as_str()), Some(State::Loaded(_))))
        {
            registry.packages.insert(
                name.clone(),
                refuse(format!("needs {dep}, which was refused")),
            );
            continue;
        }
        match load_one(m, folder, &presented(folder), options, contribute) {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                registry.link(&loaded);
                registry
                    .packages
                    .insert(name.clone(), State::Loaded(loaded));
            }
            Err(reason) => {
                registry.packages.insert(name.clone(), refuse(reason));
            }
        }
    }
    Ok(registry)
}

/// Loads the package in `folder` (the package folder `shown`, or a copy of it).
pub(crate) fn load_one(
    m: &Manifest,
    folder: &Path,
    shown: &Path,
    options: &LoadOptions,
    contribute: &mut dyn FnMut(&Manifest, &Code) -> Result<(), String>,
) -> Result<Loaded, String> {
    // Hashed before it is read: a change made during the load shows as a change next time.
    let hash = thinghost_extensions::package::content_hash(folder)?;
    let runtime = Code::load_as(m, folder, shown, options)?;
    contribute(m, &runtime)?;
    Ok(Loaded {
        manifest: m.clone(),
        dir: shown.to_path_buf(),
        runtime,
        hash,
    })
}

/// The manifest in `folder` (the package folder `shown`, or a copy of it); errors name `shown`.
pub fn read_manifest(
    folder: &Path,
    shown: &Path,
) -> Result<Manifest, thinghost_extensions::manifest::ManifestError> {
    let origin = shown.join(MANIFEST);
    match std::fs::read_to_string(folder.join(MANIFEST)) {
        Ok(text) => Manifest::parse(&text, &origin),
        Err(e) => Err(thinghost_extensions::manifest::ManifestError {
            extension: shown
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            file: origin.display().to_string(),
            cause: format!("cannot read it: {e}"),
        }),
    }
}
