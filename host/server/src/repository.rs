//! FileRepository Things (U6): each is a folder under the data directory,
//! `DATA/repositories/NAME`, made when first written. Paths inside are relative, `/`-separated
//! names; one that would leave the folder (`..`, an absolute path, a link pointing out) is
//! refused, and so is every name starting with `.`.
//!
//! Services on every Thing made from `FileRepository` (each needs ServiceInvoke on it):
//! `ListFiles(path)` and `DeleteFile(path)`.

use crate::rest::{ApiError, Reply};
use crate::services::{Call, bad};
use serde_json::{Value as Json, json};
use std::path::{Component, Path, PathBuf};
use thinghost_core::infotable::{Field, InfoTable};
use thinghost_core::{BaseType, Body, Kind, Model, Permission, Target, View};

/// The data directory's folder of repositories.
pub const FOLDER: &str = "repositories";
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

/// The folder of repository `name`.
pub fn root(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(FOLDER).join(name)
}

/// The file `rel` of repository `name`: refused if it would leave the repository's folder.
pub fn resolve(data_dir: &Path, name: &str, rel: &str) -> Result<PathBuf, String> {
    let root = root(data_dir, name);
    let mut path = root.clone();
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
    // A link inside the folder must not lead out of it: the deepest part that exists is checked.
    let mut existing = path.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => break,
        }
    }
    if existing.starts_with(&root) && existing.exists() {
        let real = existing
            .canonicalize()
            .map_err(|e| format!("path {rel:?}: {e}"))?;
        let real_root = root
            .canonicalize()
            .map_err(|e| format!("repository {name}: {e}"))?;
        if !real.starts_with(&real_root) {
            return Err(format!("path {rel:?} leads out of the repository"));
        }
    }
    Ok(path)
}

fn require_invoke(call: &Call<'_>) -> Result<(), ApiError> {
    let access = call.model().access();
    let id = access.id(Kind::Thing, &call.entity).expect("resolved");
    let resource = access.sym(&call.service);
    call.require(
        Permission::ServiceInvoke,
        Target::Entity { id, resource },
        &format!("call {}", call.service),
    )
}

/// The services of FileRepository Things, or None.
pub fn service(call: &mut Call<'_>) -> Option<Result<Reply, ApiError>> {
    if !matches!(call.service.as_str(), "ListFiles" | "DeleteFile")
        || !is_repository(call.model(), &call.entity)
    {
        return None;
    }
    Some((|| {
        call.params(&[("path", BaseType::String, call.service == "DeleteFile")])?;
        require_invoke(call)?;
        let rel = call.opt_str("path").unwrap_or_default();
        let path = resolve(&call.app.data_dir, &call.entity, &rel).map_err(bad)?;
        if call.service == "DeleteFile" {
            if !path.is_file() {
                return Err(ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    format!("{} has no file {rel:?}", call.entity),
                ));
            }
            std::fs::remove_file(&path).map_err(|e| bad(format!("cannot delete {rel:?}: {e}")))?;
            return Ok(Reply::Empty);
        }
        let mut rows = Vec::new();
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&path)
                .map_err(|e| bad(format!("cannot list {rel:?}: {e}")))?
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let meta = e.metadata().ok();
                let name = e.file_name().to_string_lossy().into_owned();
                let modified = meta
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| thinghost_core::types::format_datetime(d.as_millis() as i64));
                let row = json!({
                    "name": name,
                    "path": if rel.is_empty() { name.clone() } else { format!("{}/{name}", rel.trim_end_matches('/')) },
                    "size": meta.as_ref().map(|m| m.len()).unwrap_or(0),
                    "lastModifiedDate": modified,
                    "isDirectory": meta.as_ref().is_some_and(|m| m.is_dir()),
                });
                if let Json::Object(m) = row {
                    rows.push(m);
                }
            }
        } else if !rel.is_empty() {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                format!("{} has no folder {rel:?}", call.entity),
            ));
        }
        let field = |name: &str, base_type| Field {
            name: name.into(),
            base_type,
        };
        Ok(Reply::Json(
            InfoTable {
                fields: vec![
                    field("name", BaseType::String),
                    field("path", BaseType::String),
                    field("size", BaseType::Long),
                    field("lastModifiedDate", BaseType::Datetime),
                    field("isDirectory", BaseType::Boolean),
                ],
                rows,
            }
            .into_json(),
        ))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u6_paths_stay_inside_their_repository() {
        let data = tempfile::tempdir().unwrap();
        let root = root(data.path(), "Repo");
        std::fs::create_dir_all(root.join("a")).unwrap();
        assert_eq!(
            resolve(data.path(), "Repo", "a/b.gz").unwrap(),
            root.join("a/b.gz")
        );
        assert_eq!(
            resolve(data.path(), "Repo", "/a/./b.gz").unwrap(),
            root.join("a/b.gz")
        );
        for bad in ["../x", "a/../../x", "..", ".hidden", "a/.git/x"] {
            assert!(resolve(data.path(), "Repo", bad).is_err(), "{bad}");
        }
        // A link inside pointing out.
        std::os::unix::fs::symlink("/tmp", root.join("out")).unwrap();
        assert!(resolve(data.path(), "Repo", "out/x").is_err());
    }
}
