//! The services of FileRepository Things (`ListFiles`, `DeleteFile`): the files of a repository,
//! through its capability (`crate::state::repository::Repo`), without the model's lock.

use crate::api::{ApiError, Reply, Request, bad};
use crate::state::app::App;
use crate::state::auth::Caller;
use crate::state::repository::{Repo, relative};
use serde_json::{Value as Json, json};
use std::sync::Arc;
use thinghost_core::BaseType;
use thinghost_core::infotable::{Field, InfoTable};

/// `ListFiles(path)` of a FileRepository Thing (checked by its row: ServiceInvoke), without the
/// model's lock.
pub fn list_files(app: &Arc<App>, _: &Caller, request: Request) -> Result<Reply, ApiError> {
    let thing = request.entity;
    let text = path_param(&request.params);
    let rel = relative(&text).map_err(bad)?;
    let repo = Repo::open(&app.data_dir, &thing).map_err(bad)?;
    if !repo.is_dir(&rel) {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("{thing} has no folder {text:?}"),
        ));
    }
    let prefix = rel.to_string_lossy().into_owned();
    let rows = repo
        .list(&rel)
        .map_err(bad)?
        .into_iter()
        .filter_map(|f| {
            let name = f.name;
            let row = json!({
                "path": if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") },
                "name": name,
                "size": f.size,
                "lastModifiedDate": f.modified.map(thinghost_core::types::format_datetime),
                "isDirectory": f.is_dir,
            });
            match row {
                Json::Object(m) => Some(m),
                _ => None,
            }
        })
        .collect();
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
}

/// `DeleteFile(path)` of a FileRepository Thing, without the model's lock; a file of the audit
/// archive leaves audited.
pub fn delete_file(app: &Arc<App>, caller: &Caller, request: Request) -> Result<Reply, ApiError> {
    let thing = request.entity;
    let text = path_param(&request.params);
    let rel = relative(&text).map_err(bad)?;
    let repo = Repo::open(&app.data_dir, &thing).map_err(bad)?;
    if !repo.is_file(&rel) {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("{thing} has no file {text:?}"),
        ));
    }
    repo.remove_file(&rel).map_err(bad)?;
    if thing == thinghost_core::predefined::AUDIT_ARCHIVE_REPOSITORY {
        // Archived entries leave with the file: never silently.
        app.audit(
            &caller.name,
            crate::state::audit::category::AUDIT,
            "archiveFileDeleted",
            json!({"path": rel.to_string_lossy()}),
            &format!("Things/{thing}"),
            "Thing",
        );
    }
    Ok(Reply::Empty)
}

fn path_param(params: &serde_json::Map<String, Json>) -> String {
    params
        .get("path")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string()
}
