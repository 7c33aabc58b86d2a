//! Code in the model, compiled (B1): a service's Rhai body, an override's, a subscription's. Each
//! text is compiled once and kept by its SHA-256, so a model change that keeps a code keeps its
//! compiled form, and two entities with the same code share it.

use sha2::Digest as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use thinghost_extensions::rhai_runtime::{CodeError, ModelCode};

/// The largest code accepted, in bytes: compiling it is quick (it happens under the model's
/// lock when code is saved), and the cache below stays small.
pub const MAX_CODE: usize = 64 * 1024;

/// The most bytes of code kept compiled; past it the cache starts again (compiling again is the
/// only cost).
const MAX_CACHED_BYTES: usize = 64 << 20;

/// The SHA-256 of a text, in hex: what the audit records of a code (B3), never the text.
pub fn sha256_hex(text: &str) -> String {
    thinghost_core::hex(&sha2::Sha256::digest(text.as_bytes()))
}

/// Compiled codes by the SHA-256 of their text.
/// Compiled codes by the SHA-256 of their text, and the bytes of text they came from.
type Kept = (HashMap<[u8; 32], Arc<ModelCode>>, usize);

#[derive(Default)]
pub struct CodeCache {
    compiled: Mutex<Kept>,
}

impl CodeCache {
    /// The compiled form of `source`, compiled now if it is not kept.
    pub fn get(&self, source: &str) -> Result<Arc<ModelCode>, CodeError> {
        if source.len() > MAX_CODE {
            return Err(CodeError {
                line: 0,
                column: 0,
                message: format!(
                    "{} bytes of code; at most {MAX_CODE} (split it into services)",
                    source.len()
                ),
            });
        }
        let key: [u8; 32] = sha2::Sha256::digest(source.as_bytes()).into();
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(&key)
        {
            return Ok(c.clone());
        }
        // Compiled outside the lock: another code compiles meanwhile.
        let code = Arc::new(ModelCode::compile(source)?);
        let mut kept = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if kept.1 + source.len() > MAX_CACHED_BYTES {
            *kept = Default::default();
        }
        if kept.0.insert(key, code.clone()).is_none() {
            kept.1 += source.len();
        }
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
            .filter_map(|s| Some(("service", &s.name, s.code.as_deref()?)))
            .chain(
                defs.overrides
                    .iter()
                    .filter_map(|o| Some(("service", &o.name, o.code.as_deref()?))),
            )
            .chain(
                defs.subscriptions
                    .iter()
                    .filter_map(|s| Some(("subscription", &s.name, s.code.as_deref()?))),
            );
        for (what, name, code) in codes {
            let too_long = code.len() > MAX_CODE;
            ModelCode::compile(if too_long { "" } else { code })
                .map_err(|err| err.to_string())
                .and_then(|_| {
                    if too_long {
                        Err(format!("{} bytes; at most {MAX_CODE}", code.len()))
                    } else {
                        Ok(())
                    }
                })
                .map_err(|err| {
                    format!(
                        "the code of {what} {name} of {} does not compile: {err}",
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
