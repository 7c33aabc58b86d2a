//! # thinghost-extensions
//!
//! Extension packages: the `plugin.toml` manifest ([`manifest`]), the load order ([`plan`]), and
//! the contribution of an extension's entities to the model ([`contribute`]). The code runtimes
//! (Rhai, WebAssembly components, native libraries) build on this crate.

pub mod code;
pub mod host_api;
pub mod manifest;
pub mod native_runtime;
pub mod package;
pub mod plan;
pub mod rhai_runtime;
pub mod wasm_runtime;

pub use manifest::{Manifest, ManifestError, Package};
pub use plan::{Plan, plan};

use thinghost_core::{Batch, Kind, Model, ModelError, Tx, View};

/// Brings an extension's entities into the model, all in one transaction: either every entity is
/// valid and becomes visible, or nothing changes (DOMAIN E3). The entities are marked as the
/// extension's. An entity of the same kind and name that belongs to someone else is refused.
pub fn contribute(model: &mut Model, manifest: &Manifest) -> Result<Batch, ModelError> {
    let change = contribution(manifest)?;
    model.change(change)
}

/// The change that contributes an extension's entities, for [`Model::change`] or a store's
/// `Db::change` (so that it is persisted in the same transaction).
pub fn contribution(
    manifest: &Manifest,
) -> Result<impl FnOnce(&mut Tx<'_>) -> Result<(), ModelError> + use<>, ModelError> {
    let entities = manifest.entities().map_err(|message| ModelError::Invalid {
        entity: format!("extension {}", manifest.name()),
        message,
    })?;
    let name = manifest.name().to_string();
    let declared: Vec<(Kind, String)> = entities
        .iter()
        .map(|e| (e.kind(), e.name.clone()))
        .collect();
    Ok(move |tx: &mut Tx<'_>| {
        // What an earlier version contributed and this one no longer declares goes (E5): a
        // template or shape still in use refuses the upgrade, naming its users.
        let stale: Vec<(Kind, String)> = Kind::ALL
            .iter()
            .flat_map(|k| {
                tx.entities(*k)
                    .filter(|e| e.extension.as_deref() == Some(name.as_str()))
                    .map(|e| (*k, e.name.clone()))
                    .collect::<Vec<_>>()
            })
            .filter(|key| !declared.contains(key))
            .collect();
        // Things first, then templates, then shapes and data shapes.
        let rank = |k: &Kind| match k {
            Kind::Thing => 0,
            Kind::ThingTemplate => 1,
            _ => 2,
        };
        let mut stale = stale;
        stale.sort_by_key(|(k, _)| rank(k));
        for (k, n) in stale {
            tx.delete(k, &n)?;
        }
        for mut e in entities {
            match tx.get(e.kind(), &e.name) {
                Some(existing) if existing.extension.as_deref() != Some(name.as_str()) => {
                    return Err(ModelError::Invalid {
                        entity: format!("extension {name}"),
                        message: format!(
                            "{}/{} already exists and is not this extension's ({})",
                            e.kind().collection(),
                            e.name,
                            existing
                                .extension
                                .as_deref()
                                .map(|x| format!("it belongs to extension {x}"))
                                .unwrap_or_else(|| "a user made it".into())
                        ),
                    });
                }
                Some(existing) => {
                    // A new start or version: keep what administrators granted and the values
                    // the Thing holds; the manifest's own entries are added to them.
                    e.permissions = union(&existing.permissions, &e.permissions);
                    if let (Some(old), Some(new)) =
                        (existing.instance_permissions(), e.instance_permissions())
                    {
                        let merged = union(old, new);
                        *e.instance_permissions_mut().expect("same kind") = merged;
                    }
                    if let (thinghost_core::Body::Thing(new), thinghost_core::Body::Thing(old)) =
                        (&mut e.body, &existing.body)
                    {
                        new.values = old.values.clone();
                    }
                    e.owner = existing.owner.clone();
                }
                None => {}
            }
            e.extension = Some(name.clone());
            tx.put(e);
        }
        Ok(())
    })
}

fn union(a: &thinghost_core::Acl, b: &thinghost_core::Acl) -> thinghost_core::Acl {
    let mut out = a.clone();
    for v in &b.visibility {
        if !out.visibility.contains(v) {
            out.visibility.push(v.clone());
        }
    }
    for e in &b.run_time {
        if !out.run_time.contains(e) {
            out.run_time.push(e.clone());
        }
    }
    for e in &b.design_time {
        if !out.design_time.contains(e) {
            out.design_time.push(e.clone());
        }
    }
    out
}

/// The entities an extension owns in the model.
pub fn owned(model: &Model, extension: &str) -> Vec<(Kind, String)> {
    Kind::ALL
        .iter()
        .flat_map(|k| {
            model
                .entities(*k)
                .filter(|e| e.extension.as_deref() == Some(extension))
                .map(|e| (*k, e.name.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}
