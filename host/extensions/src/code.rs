//! An extension's code, whatever its runtime: loaded from its package, asked which handlers it
//! defines, and called with the host API.

use crate::host_api::{CallError, Host};
use crate::manifest::{Manifest, Runtime};
use crate::native_runtime::NativeExtension;
use crate::rhai_runtime::{self, RhaiExtension};
use crate::wasm_runtime::{self, WasmExtension};
use serde_json::Value as Json;
use std::path::Path;
use std::sync::Arc;

/// How the server loads code.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Where compiled WebAssembly is cached (the data directory's `cache/wasm`), and the key
    /// that authenticates each cached file; none: compile every time.
    pub wasm_cache: Option<wasm_runtime::WasmCache>,
    /// Native libraries are trusted code in the server's process: off unless the operator
    /// turns them on (`serve --allow-native`).
    pub allow_native: bool,
}

/// The code of a loaded extension.
pub enum Code {
    Rhai(Box<RhaiExtension>),
    Wasm(WasmExtension),
    Native(NativeExtension),
}

/// What a Rhai package's code calls that its manifest's `[capabilities] functions` does not
/// list, read from the code (`rhai_runtime::host_calls_in`), as a message that names every
/// one and what to add; `None` when nothing is missing (or the package is not Rhai). `plugin
/// check` refuses such a package; the server loads it, warns, and denies each such call when
/// it is made (E6), naming the same fix.
pub fn capability_gaps(m: &Manifest, dir: &Path) -> Option<String> {
    if m.extension.runtime != Runtime::Rhai {
        return None;
    }
    let source = std::fs::read_to_string(dir.join(&m.extension.entry)).ok()?;
    let missing: Vec<&str> = rhai_runtime::host_calls_in(&source)
        .into_iter()
        .filter(|f| !m.capabilities.functions.iter().any(|x| x == f))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut all: Vec<String> = m.capabilities.functions.clone();
    all.extend(missing.iter().map(|f| f.to_string()));
    Some(format!(
        "{} calls the host function{} {}, which [capabilities] functions does not list: add {}, as functions = [{}]",
        m.extension.entry,
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", "),
        if missing.len() == 1 { "it" } else { "them" },
        all.iter()
            .map(|f| format!("{f:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

impl Code {
    /// Loads the entry of the package in `folder` with the runtime its manifest names, and checks
    /// that it defines every handler the manifest declares (with the declared parameter count).
    pub fn load(m: &Manifest, folder: &Path, options: &LoadOptions) -> Result<Code, String> {
        Code::load_as(m, folder, folder, options)
    }

    /// Like [`Code::load`], from a copy of the package (in `folder`) of the package folder
    /// `shown`, which errors name: the operator knows the folder, not the copy.
    pub fn load_as(
        m: &Manifest,
        folder: &Path,
        shown: &Path,
        options: &LoadOptions,
    ) -> Result<Code, String> {
        let entry = folder.join(&m.extension.entry);
        let origin = shown.join(&m.extension.entry).display().to_string();
        if !entry.exists() {
            return Err(match m.extension.runtime {
                Runtime::Wasm => format!(
                    "{origin} does not exist: build the component (cargo build --release --target wasm32-wasip2) and copy it into the package folder"
                ),
                Runtime::Native => format!(
                    "{origin} does not exist: build the library (cargo build --release) and copy it into the package folder"
                ),
                Runtime::Rhai => format!("{origin} does not exist: the manifest's entry names it"),
            });
        }
        let code = match m.extension.runtime {
            Runtime::Rhai => {
                let source = std::fs::read_to_string(&entry)
                    .map_err(|e| format!("cannot read {origin}: {e}"))?;
                Code::Rhai(Box::new(
                    RhaiExtension::compile(
                        &source,
                        &origin,
                        rhai_runtime::Limits::from_manifest(&m.limits),
                    )?
                    .named(&m.extension.name),
                ))
            }
            Runtime::Wasm => {
                let bytes =
                    std::fs::read(&entry).map_err(|e| format!("cannot read {origin}: {e}"))?;
                Code::Wasm(WasmExtension::load(
                    &bytes,
                    &origin,
                    wasm_runtime::Limits::from_manifest(&m.limits),
                    options.wasm_cache.as_ref(),
                )?)
            }
            Runtime::Native => {
                if !options.allow_native {
                    return Err(format!(
                        "{origin} is a native library, which runs as trusted code inside the server; \
                         native extensions are off unless the server is started with --allow-native"
                    ));
                }
                Code::Native(NativeExtension::load(
                    &entry,
                    std::time::Duration::from_millis(m.limits.deadline_ms),
                )?)
            }
        };
        for h in m.handlers() {
            let arities = code.arities(h.handler);
            let ok = match &h.params {
                Some(params) => arities.contains(&params.len()),
                // An override's parameters are the inherited definition's: the contribution
                // checks the count against the model (`contribution`).
                None => !arities.is_empty(),
            };
            if !ok {
                let wanted = match &h.params {
                    Some(params) => format!("{}({})", h.handler, params.join(", ")),
                    None => format!("{}(...)", h.handler),
                };
                // Defined with another number of parameters is not missing: say so.
                if let (Some(params), false) = (&h.params, arities.is_empty()) {
                    return Err(format!(
                        "{origin} defines {} with {} parameters, but {} passes {}: write it as {wanted}",
                        h.handler,
                        arities
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(" or "),
                        h.describe(),
                        params.len()
                    ));
                }
                return Err(format!(
                    "{origin} does not define the handler {wanted} of {}",
                    h.describe()
                ));
            }
        }
        Ok(code)
    }

    /// Does the code define `name` with `arity` parameters?
    pub fn defines(&self, name: &str, arity: usize) -> bool {
        self.arities(name).contains(&arity)
    }

    /// The parameter counts the code defines `name` with (none: it does not define it).
    pub fn arities(&self, name: &str) -> Vec<usize> {
        let mut out: Vec<usize> = match self {
            Code::Rhai(c) => c.arities(name),
            Code::Wasm(c) => c
                .handlers()
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, a)| *a)
                .collect(),
            Code::Native(c) => c.arities(name),
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Calls `handler` with `args` (the service's parameters in declared order) for `host`.
    pub fn call(
        &self,
        host: Arc<dyn Host>,
        handler: &str,
        args: &[Json],
    ) -> Result<Json, CallError> {
        match self {
            Code::Rhai(c) => c.call(host, handler, args),
            Code::Wasm(c) => c.call(host, handler, args),
            Code::Native(c) => c.call(host, handler, args),
        }
    }
}
