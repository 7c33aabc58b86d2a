//! Code in the model, compiled (B1): a service's Rhai body, an override's, a subscription's. Each
//! text is compiled once and kept by its SHA-256, so a model change that keeps a code keeps its
//! compiled form, and two entities with the same code share it.

use sha2::Digest as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use thinghost_extensions::rhai_runtime::{CodeError, ModelCode};

/// The most compiled codes kept; past it the cache starts again (a model rarely holds more, and
/// compiling again is the only cost).
const MAX_CACHED: usize = 4096;

/// The SHA-256 of a text, in hex: what the audit records of a code (B3), never the text.
pub fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compiled codes by the SHA-256 of their text.
#[derive(Default)]
pub struct CodeCache {
    compiled: Mutex<HashMap<[u8; 32], Arc<ModelCode>>>,
}

impl CodeCache {
    /// The compiled form of `source`, compiled now if it is not kept.
    pub fn get(&self, source: &str) -> Result<Arc<ModelCode>, CodeError> {
        let key: [u8; 32] = sha2::Sha256::digest(source.as_bytes()).into();
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(c.clone());
        }
        // Compiled outside the lock: another code compiles meanwhile.
        let code = Arc::new(ModelCode::compile(source)?);
        let mut map = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(key, code.clone());
        Ok(code)
    }
}

/// Compiles every code of these entities (service definitions and overrides): the first that
/// does not compile, named by its place.
pub fn check_entities(entities: &[thinghost_core::Entity]) -> Result<(), String> {
    for e in entities {
        let Some(defs) = e.definitions() else {
            continue;
        };
        let codes = defs
            .services
            .iter()
            .filter_map(|s| Some((&s.name, s.code.as_deref()?)))
            .chain(
                defs.overrides
                    .iter()
                    .filter_map(|o| Some((&o.name, o.code.as_deref()?))),
            );
        for (service, code) in codes {
            ModelCode::compile(code).map_err(|err| {
                format!(
                    "the code of service {service} of {} does not compile: {err}",
                    e.key()
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b1_code_is_compiled_once_and_errors_say_where() {
        let cache = CodeCache::default();
        let a = cache.get("let x = 1;\nx + 1").unwrap();
        let b = cache.get("let x = 1;\nx + 1").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let e = cache.get("let x = 1;\nlet = ;").err().unwrap();
        assert_eq!(e.line, 2);
        assert!(e.column > 0);
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
