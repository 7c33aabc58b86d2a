//! # thinghost-extensions
//!
//! Extension packages: the `plugin.toml` manifest ([`manifest`]), the load order ([`plan`]), and
//! the contribution of an extension's entities to the model ([`contribute`]). The code runtimes
//! (Rhai, WebAssembly components, native libraries) build on this crate.

pub mod host_api;
pub mod manifest;
pub mod plan;
pub mod rhai_runtime;

pub use manifest::{Manifest, ManifestError, Package};
pub use plan::{Plan, plan};

use thinghost_core::{Batch, Kind, Model, ModelError, View};

/// Brings an extension's entities into the model, all in one transaction: either every entity is
/// valid and becomes visible, or nothing changes (DOMAIN E3). The entities are marked as the
/// extension's. An entity of the same kind and name that belongs to someone else is refused.
pub fn contribute(model: &mut Model, manifest: &Manifest) -> Result<Batch, ModelError> {
    let entities = manifest.entities().map_err(|message| ModelError::Invalid {
        entity: format!("extension {}", manifest.name()),
        message,
    })?;
    let name = manifest.name().to_string();
    model.change(|tx| {
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
                _ => {}
            }
            e.extension = Some(name.clone());
            tx.put(e);
        }
        Ok(())
    })
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
