//! Streams (DOMAIN H3) and what streams and data tables share: a Thing's DataShape
//! (`SetDataShape`) and values checked against it, given as the vendor's InfoTable JSON or as a
//! plain object of field values.
//!
//! A stream's entries are appended by the history writer (group commit, durable before the
//! answer); reads run on the provider's read connections; purges and deletions on its writer.
//! None of it holds the model's lock while it touches the provider: the stream's DataShape is
//! read under the shared lock first.

use crate::api::{ApiError, Call, Reply, Request, bad};
use crate::state::app::App;
use crate::state::auth::Caller;
use axum::http::StatusCode;
use serde_json::{Map, Value as Json, json};
use std::sync::Arc;
use thinghost_core::infotable::{Field, InfoTable};
use thinghost_core::{BaseType, Body, DataShapeBody, Kind, View};
use thinghost_store::history::{EntryField, EntryQuery, StreamEntry, query_type};
use thinghost_store::query::{Schema, Type};

/// The columns every stream entry has besides its DataShape's fields (a DataShape with a field
/// of one of these names cannot be a stream's).
pub const ENTRY_COLUMNS: &[(&str, BaseType)] = &[
    ("timestamp", BaseType::Datetime),
    ("streamEntryId", BaseType::String),
    ("source", BaseType::String),
    ("sourceType", BaseType::String),
    ("tags", BaseType::Json),
    ("location", BaseType::Location),
];

/// The DataShape of a Stream or DataTable Thing: its name and fields; 400 when it has none.
pub(crate) fn shape_of(
    m: &thinghost_core::Model,
    thing: &str,
) -> Result<(String, DataShapeBody), ApiError> {
    let Some(Body::Thing(t)) = m.get(Kind::Thing, thing).map(|e| &e.body) else {
        return Err(crate::api::authz::not_found(Kind::Thing, thing));
    };
    let Some(name) = &t.storage.data_shape else {
        return Err(bad(format!(
            "Thing {thing} has no DataShape: give it one with SetDataShape(name) first"
        )));
    };
    match m.get(Kind::DataShape, name).map(|e| &e.body) {
        Some(Body::DataShape(d)) => Ok((name.clone(), d.clone())),
        _ => Err(bad(format!(
            "the DataShape {name} of Thing {thing} is gone"
        ))),
    }
}

/// `SetDataShape(name)` of a Stream or a DataTable: needs Update on the Thing (the row) and
/// sight of the DataShape. A DataTable's needs a primary key. While the Thing holds data, the
/// new shape must keep every field (and, for a table, its key) with its type.
pub fn set_data_shape(call: &mut Call<'_>) -> Result<Reply, ApiError> {
    let name = call.str("name");
    let thing = call.entity.clone();
    let (kind, old) = {
        let m = call.model();
        let (e, _) = crate::api::visible_entity(m, call.caller, Kind::DataShape, &name)?;
        let Body::DataShape(new) = &e.body else {
            unreachable!("a DataShape")
        };
        let Some(Body::Thing(t)) = m.get(Kind::Thing, &thing).map(|e| &e.body) else {
            unreachable!("checked")
        };
        let kind = thinghost_core::validate::storage_kind(m, &t.thing_template);
        let is_table = kind == Some(thinghost_core::predefined::DATA_TABLE);
        if is_table && !new.fields.iter().any(|f| f.is_primary_key) {
            return Err(bad(format!(
                "DataShape {name} has no primary key: a DataTable's rows are found by it; mark a field isPrimaryKey"
            )));
        }
        if !is_table
            && let Some(f) = new
                .fields
                .iter()
                .find(|f| ENTRY_COLUMNS.iter().any(|(c, _)| *c == f.name))
        {
            return Err(bad(format!(
                "DataShape {name} has a field {}, which every stream entry has already; rename it",
                f.name
            )));
        }
        let old = t.storage.data_shape.as_ref().and_then(|o| {
            match m.get(Kind::DataShape, o).map(|e| &e.body) {
                Some(Body::DataShape(d)) => Some((o.clone(), d.clone())),
                _ => None,
            }
        });
        if let Some((old_name, old)) = &old
            && let Some(lost) = old.fields.iter().find(|f| {
                !new.fields.iter().any(|n| {
                    n.name == f.name
                        && n.base_type == f.base_type
                        && (!is_table || n.is_primary_key == f.is_primary_key)
                })
            })
        {
            (kind, Some((old_name.clone(), lost.name.clone())))
        } else {
            (kind, None)
        }
    };
    if let Some((old_name, lost)) = old {
        let held = entry_count(call.app, &thing, kind)?;
        if held > 0 {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "Thing {thing} holds {held} entries of DataShape {old_name}, and {name} does not keep its field {lost} as it is: purge the entries first, or keep every field with its type"
                ),
            ));
        }
    }
    call.commit("dataShapeSet", (Kind::Thing, thing.clone()), |tx| {
        if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, &thing)?.body {
            t.storage.data_shape = Some(name);
        }
        Ok(())
    })?;
    Ok(Reply::Empty)
}

fn entry_count(app: &App, thing: &str, kind: Option<&str>) -> Result<u64, ApiError> {
    let thing = thing.to_string();
    let out = if kind == Some(thinghost_core::predefined::DATA_TABLE) {
        app.history.read(|h| h.count_rows(&thing))
    } else {
        app.history.read(|h| h.count_stream(&thing))
    };
    out.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `values` as rows of field values: the vendor's InfoTable JSON (every row), or a plain JSON
/// object (one row). Every field must be the shape's and every value of its field's type, or a
/// 400 naming it; `extra` names columns a row may also carry (a stream entry's own).
pub(crate) fn rows_of(
    shape: &DataShapeBody,
    shape_name: &str,
    v: &Json,
    extra: &[(&str, BaseType)],
) -> Result<Vec<Map<String, Json>>, ApiError> {
    let Json::Object(obj) = v else {
        return Err(bad(
            "values is an InfoTable or a JSON object of field values",
        ));
    };
    let rows: Vec<&Map<String, Json>> = if obj.contains_key("dataShape") || obj.contains_key("rows")
    {
        obj.get("rows")
            .and_then(Json::as_array)
            .ok_or_else(|| bad("values: an InfoTable's rows are a list"))?
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.as_object()
                    .ok_or_else(|| bad(format!("values: row {i} is not an object")))
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![obj]
    };
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut out = Map::new();
            for (k, val) in row {
                let bt = shape
                    .fields
                    .iter()
                    .find(|f| f.name == *k)
                    .map(|f| f.base_type)
                    .or_else(|| extra.iter().find(|(c, _)| c == k).map(|(_, bt)| *bt))
                    .ok_or_else(|| {
                        bad(format!(
                            "values{}: {k:?} is not a field of DataShape {shape_name} (its fields: {})",
                            at(i),
                            shape
                                .fields
                                .iter()
                                .map(|f| f.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                // An entry's tags and location are checked as the parameters are (`entry`).
                let own = shape.fields.iter().any(|f| f.name == *k);
                let norm = if !own && (k == "tags" || k == "location") {
                    val.clone()
                } else {
                    bt.normalize(val)
                        .map_err(|e| bad(format!("values{}, field {k}: {e}", at(i))))?
                };
                if !norm.is_null() {
                    out.insert(k.clone(), norm);
                }
            }
            Ok(out)
        })
        .collect()
}

fn at(i: usize) -> String {
    if i == 0 {
        String::new()
    } else {
        format!(" row {i}")
    }
}

/// The most tags an entry, a row or a query names.
pub const MAX_TAGS: usize = 64;

/// The vendor's tags: a list of strings, or text with commas (`Plant:North,Line:2`).
pub(crate) fn tags_of(v: Option<&Json>) -> Result<Vec<String>, ApiError> {
    let tags: Vec<String> = match v {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::String(s)) => s
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        Some(Json::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("tags: a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("tags: a list of strings, or text with commas")),
    };
    if tags.len() > MAX_TAGS {
        return Err(bad(format!("tags: at most {MAX_TAGS}, not {}", tags.len())));
    }
    for t in &tags {
        thinghost_core::names::check_tag(t).map_err(|e| bad(format!("tag {t:?}: {e}")))?;
    }
    Ok(tags)
}

/// The vendor's LOCATION: an object with numeric `latitude` and `longitude` (and `elevation`).
pub(crate) fn location_of(v: Option<&Json>) -> Result<Option<Json>, ApiError> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(v) => BaseType::Location
            .normalize(v)
            .map(Some)
            .map_err(|e| bad(format!("location: {e}"))),
    }
}

/// What a stream's services read under the model's lock: its DataShape.
fn stream_shape(app: &App, thing: &str) -> Result<(String, DataShapeBody), ApiError> {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    shape_of(db.model(), thing)
}

/// One entry from a row's own columns (those present) and the call's parameters.
fn entry(
    caller: &Caller,
    mut row: Map<String, Json>,
    params: &Map<String, Json>,
) -> Result<StreamEntry, ApiError> {
    let mut take = |name: &str| row.remove(name).or_else(|| params.get(name).cloned());
    let time = take("timestamp")
        .and_then(|t| t.as_i64())
        .unwrap_or_else(crate::now_ms);
    let source = take("source")
        .and_then(|s| s.as_str().map(str::to_string))
        .unwrap_or_else(|| caller.name.to_string());
    let source_type = take("sourceType")
        .and_then(|s| s.as_str().map(str::to_string))
        .unwrap_or_else(|| "User".to_string());
    let tags = tags_of(take("tags").as_ref())?;
    let location = location_of(take("location").as_ref())?;
    row.remove("streamEntryId");
    Ok(StreamEntry {
        id: 0,
        time,
        source,
        source_type,
        tags,
        location,
        values: row,
    })
}

fn appended(pending: crate::state::history::Pending) -> Result<Vec<i64>, ApiError> {
    pending.ids().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the entry could not be written: {e}"),
        )
    })
}

/// `AddStreamEntry(timestamp, source, sourceType, tags, location, values)`: one entry, durable
/// when answered; needs ServiceInvoke on it (the row).
pub fn add_stream_entry(app: &Arc<App>, caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    let (shape_name, shape) = stream_shape(app, &req.entity)?;
    let values = req.params.get("values").cloned().unwrap_or(json!({}));
    let mut rows = rows_of(&shape, &shape_name, &values, &[])?;
    if rows.len() != 1 {
        return Err(bad(format!(
            "values: AddStreamEntry adds one entry, and these are {} rows; use AddStreamEntries",
            rows.len()
        )));
    }
    let e = entry(caller, rows.remove(0), &req.params)?;
    appended(app.history.append_all(Vec::new(), vec![(req.entity, e)]))?;
    Ok(Reply::Empty)
}

/// `AddStreamEntries(values)`: rows of the DataShape's fields, each with its own `timestamp`,
/// `source`, `sourceType`, `tags` and `location` if it has them; all or nothing.
pub fn add_stream_entries(
    app: &Arc<App>,
    caller: &Caller,
    req: Request,
) -> Result<Reply, ApiError> {
    let (shape_name, shape) = stream_shape(app, &req.entity)?;
    let values = req.params.get("values").cloned().unwrap_or(json!({}));
    let rows = rows_of(&shape, &shape_name, &values, ENTRY_COLUMNS)?;
    let no_params = Map::new();
    let entries = rows
        .into_iter()
        .map(|r| entry(caller, r, &no_params).map(|e| (req.entity.clone(), e)))
        .collect::<Result<Vec<_>, _>>()?;
    let n = entries.len();
    appended(app.history.append_all(Vec::new(), entries))?;
    Ok(crate::api::result(BaseType::Integer, json!(n)))
}

/// The fields a stream query may name: the entry's own columns and the DataShape's fields.
struct EntryFields<'a> {
    fields: &'a [(String, BaseType)],
}

impl Schema for EntryFields<'_> {
    type Field = EntryField;
    fn field(&self, name: &str) -> Option<(EntryField, Type)> {
        Some(match name {
            "timestamp" => (EntryField::Timestamp, Type::Int),
            "streamEntryId" | "id" => (EntryField::Id, Type::Int),
            "source" => (EntryField::Source, Type::Text),
            "sourceType" => (EntryField::SourceType, Type::Text),
            "tags" => (EntryField::Tags, Type::Text),
            _ => {
                let i = self.fields.iter().position(|(n, _)| n == name)?;
                (EntryField::Data(i), query_type(self.fields[i].1))
            }
        })
    }
    fn names(&self) -> String {
        ["timestamp", "streamEntryId", "source", "sourceType", "tags"]
            .into_iter()
            .chain(self.fields.iter().map(|(n, _)| n.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The answer of a stream query: the entry's columns, then the DataShape's fields.
fn entries_table(fields: &[(String, BaseType)], entries: Vec<StreamEntry>) -> InfoTable {
    InfoTable {
        fields: ENTRY_COLUMNS
            .iter()
            .map(|(n, bt)| (n.to_string(), *bt))
            .chain(fields.iter().cloned())
            .map(|(name, base_type)| Field { name, base_type })
            .collect(),
        rows: entries
            .into_iter()
            .map(|e| {
                let mut row = Map::new();
                row.insert("timestamp".into(), json!(e.time));
                row.insert("streamEntryId".into(), json!(e.id.to_string()));
                row.insert("source".into(), json!(e.source));
                row.insert("sourceType".into(), json!(e.source_type));
                row.insert("tags".into(), json!(e.tags));
                if let Some(l) = e.location {
                    row.insert("location".into(), l);
                }
                for (k, v) in e.values {
                    // A field the DataShape no longer has is not answered.
                    if fields.iter().any(|(n, _)| *n == k) {
                        row.insert(k, v);
                    }
                }
                row
            })
            .collect(),
    }
}

/// `QueryStreamEntriesWithData(maxItems, startDate, endDate, oldestFirst, query, source, tags)`
/// and `GetStreamEntriesWithData(maxItems, oldestFirst)`: entries newest first (unless
/// `oldestFirst`), filtered and sorted by `query`.
pub fn query_stream_entries(
    app: &Arc<App>,
    _caller: &Caller,
    req: Request,
) -> Result<Reply, ApiError> {
    let (_, shape) = stream_shape(app, &req.entity)?;
    let fields: Vec<(String, BaseType)> = shape
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.base_type))
        .collect();
    let r = crate::api::history::range(app, &req.params)?;
    let q = crate::api::history::query_param(&req.params, &EntryFields { fields: &fields })?;
    let eq = EntryQuery {
        stream: req.entity.clone(),
        fields: fields.clone(),
        start: r.start,
        end: r.end,
        oldest_first: r.oldest_first,
        limit: r.limit,
        filter: q.filter,
        sorts: q.sorts,
        source: req
            .params
            .get("source")
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        tags: tags_of(req.params.get("tags"))?,
    };
    let entries = app
        .history
        .read(|h| h.query_stream(&eq))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Reply::Table(entries_table(&fields, entries)))
}

/// `DeleteStreamEntry(streamEntryId)`: 404 when the stream has no such entry.
pub fn delete_stream_entry(
    app: &Arc<App>,
    caller: &Caller,
    req: Request,
) -> Result<Reply, ApiError> {
    let raw = req.params.get("streamEntryId").cloned().unwrap_or_default();
    let id = raw
        .as_i64()
        .or_else(|| raw.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or_else(|| bad(format!("streamEntryId {raw} is not an entry's id")))?;
    let stream = req.entity.clone();
    let found = app
        .history
        .write(move |h| h.delete_stream_entry(&stream, id))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    if !found {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Stream {} has no entry {id}", req.entity),
        ));
    }
    app.audit(
        &caller.name,
        crate::state::audit::category::MODEL,
        "streamEntryDeleted",
        json!({"streamEntryId": id.to_string()}),
        &format!("Things/{}", req.entity),
        "Thing",
    );
    Ok(Reply::Empty)
}

/// `PurgeStreamEntries(startDate, endDate)`: removes the entries between the dates (both
/// optional: everything); answers how many went. Audited (H5).
pub fn purge_stream_entries(
    app: &Arc<App>,
    caller: &Caller,
    req: Request,
) -> Result<Reply, ApiError> {
    let (start, end) = crate::api::history::dates(&req.params)?;
    let stream = req.entity.clone();
    let gone = app
        .history
        .write(move |h| h.purge_stream(&stream, start, end))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    app.audit(
        &caller.name,
        crate::state::audit::category::MODEL,
        "streamPurged",
        json!({"startDate": start, "endDate": end, "entries": gone}),
        &format!("Things/{}", req.entity),
        "Thing",
    );
    Ok(crate::api::result(BaseType::Long, json!(gone)))
}

/// `GetStreamEntryCount()`.
pub fn stream_entry_count(
    app: &Arc<App>,
    _caller: &Caller,
    req: Request,
) -> Result<Reply, ApiError> {
    let n = entry_count(app, &req.entity, None)?;
    Ok(crate::api::result(BaseType::Long, json!(n)))
}
