//! Data tables (DOMAIN H4): rows of a DataShape with a primary key, in the persistence
//! provider. Writes run on the provider's writer (each durable when answered), reads on its
//! read connections; the table's DataShape is read under the model's shared lock first.

use crate::api::streams::{location_of, rows_of, shape_of, tags_of};
use crate::api::{ApiError, Reply, Request, bad};
use crate::state::app::App;
use crate::state::auth::Caller;
use axum::http::StatusCode;
use serde_json::{Map, Value as Json, json};
use std::sync::Arc;
use thinghost_core::infotable::{Field, InfoTable};
use thinghost_core::{BaseType, DataShapeBody};
use thinghost_store::history::{EntryField, EntryQuery, Put, StreamEntry, TableRow, query_type};
use thinghost_store::query::{Filter, Op, Schema, Type};

/// The columns a row has besides its DataShape's fields.
const ROW_COLUMNS: &[(&str, BaseType)] = &[
    ("timestamp", BaseType::Datetime),
    ("source", BaseType::String),
    ("sourceType", BaseType::String),
    ("tags", BaseType::Json),
    ("location", BaseType::Location),
];

/// A table's DataShape, read under the shared lock: its name, its fields, its key's fields.
struct Table {
    name: String,
    shape: DataShapeBody,
    fields: Vec<(String, BaseType)>,
}

fn table(app: &App, thing: &str) -> Result<Table, ApiError> {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    let (name, shape) = shape_of(db.model(), thing)?;
    if !shape.fields.iter().any(|f| f.is_primary_key) {
        return Err(bad(format!(
            "DataShape {name} of DataTable {thing} has no primary key (it was changed): mark a field isPrimaryKey"
        )));
    }
    let fields = shape
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.base_type))
        .collect();
    Ok(Table {
        name,
        shape,
        fields,
    })
}

/// The canonical key of a row: the JSON array of its primary key's values, in the DataShape's
/// order; every key field must have a value.
fn key_of(t: &Table, values: &Map<String, Json>) -> Result<String, ApiError> {
    let mut key = Vec::new();
    for f in t.shape.fields.iter().filter(|f| f.is_primary_key) {
        match values.get(&f.name) {
            Some(v) if !v.is_null() => key.push(canonical(v)),
            _ => {
                return Err(bad(format!(
                    "values: the primary key field {} of DataShape {} needs a value",
                    f.name, t.name
                )));
            }
        }
    }
    Ok(Json::Array(key).to_string())
}

/// A key value in one form: a whole NUMBER as an integer (`1.0` and `1` are one key).
fn canonical(v: &Json) -> Json {
    match v.as_f64() {
        Some(f) if v.is_f64() && f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
            Json::from(f as i64)
        }
        _ => v.clone(),
    }
}

fn provider_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The one row of `values`, with the row's own columns from the call's parameters.
fn one_row(t: &Table, caller: &Caller, params: &Map<String, Json>) -> Result<TableRow, ApiError> {
    let values = params.get("values").cloned().unwrap_or(json!({}));
    let mut rows = rows_of(&t.shape, &t.name, &values, &[])?;
    if rows.len() != 1 {
        return Err(bad(format!(
            "values: one row of DataShape {}, not {}",
            t.name,
            rows.len()
        )));
    }
    let values = rows.remove(0);
    let key = key_of(t, &values)?;
    let text = |name: &str| params.get(name).and_then(Json::as_str).map(str::to_string);
    Ok(TableRow {
        key,
        entry: StreamEntry {
            id: 0,
            time: crate::now_ms(),
            source: text("source").unwrap_or_else(|| caller.name.to_string()),
            source_type: text("sourceType").unwrap_or_else(|| "User".into()),
            tags: tags_of(params.get("tags"))?,
            location: location_of(params.get("location"))?,
            values,
        },
    })
}

fn put(app: &Arc<App>, caller: &Caller, req: &Request, mode: Put) -> Result<Reply, ApiError> {
    let t = table(app, &req.entity)?;
    let row = one_row(&t, caller, &req.params)?;
    let (thing, shown) = (req.entity.clone(), row.key.clone());
    let done = app
        .history
        .write(move |h| h.put_row(&thing, &row, mode))
        .map_err(provider_error)?;
    match done {
        Put::Duplicate => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "DataTable {} already has a row with the key {shown}: use AddOrUpdateDataTableEntry or UpdateDataTableEntry",
                req.entity
            ),
        )),
        Put::Missing => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "DataTable {} has no row with the key {shown}: use AddDataTableEntry",
                req.entity
            ),
        )),
        _ => Ok(Reply::Empty),
    }
}

/// `AddDataTableEntry(tags, location, source, sourceType, values)`: a new row; 409 when its key
/// is taken.
pub fn add(app: &Arc<App>, caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    put(app, caller, &req, Put::Insert)
}

/// `AddOrUpdateDataTableEntry(...)`: a new row, or the row of its key replaced.
pub fn add_or_update(app: &Arc<App>, caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    put(app, caller, &req, Put::Upsert)
}

/// `UpdateDataTableEntry(...)`: the row of its key replaced; 404 when there is none.
pub fn update(app: &Arc<App>, caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    put(app, caller, &req, Put::Update)
}

/// `DeleteDataTableEntry(values)`: the row of the key in `values`; 404 when there is none.
pub fn delete_entry(app: &Arc<App>, _caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    let t = table(app, &req.entity)?;
    let values = req.params.get("values").cloned().unwrap_or(json!({}));
    let rows = rows_of(&t.shape, &t.name, &values, &[])?;
    let [values] = rows.as_slice() else {
        return Err(bad("values: one row, with the key of the row to delete"));
    };
    let key = key_of(&t, values)?;
    let (thing, k) = (req.entity.clone(), key.clone());
    let gone = app
        .history
        .write(move |h| h.delete_rows(&thing, Some(&k), &[], None))
        .map_err(provider_error)?;
    if gone == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("DataTable {} has no row with the key {key}", req.entity),
        ));
    }
    Ok(Reply::Empty)
}

/// The fields a data table query may name: the row's own columns and the DataShape's fields.
struct RowFields<'a> {
    fields: &'a [(String, BaseType)],
}

impl Schema for RowFields<'_> {
    type Field = EntryField;
    fn field(&self, name: &str) -> Option<(EntryField, Type)> {
        if let Some(i) = self.fields.iter().position(|(n, _)| n == name) {
            return Some((EntryField::Data(i), query_type(self.fields[i].1)));
        }
        Some(match name {
            "timestamp" => (EntryField::Timestamp, Type::Int),
            "source" => (EntryField::Source, Type::Text),
            "sourceType" => (EntryField::SourceType, Type::Text),
            "tags" => (EntryField::Tags, Type::Text),
            _ => return None,
        })
    }
    fn names(&self) -> String {
        self.fields
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(["timestamp", "source", "sourceType", "tags"])
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `values` as equality filters on its fields (`FindDataTableEntries`, `QueryDataTableEntries`).
fn equalities(t: &Table, params: &Map<String, Json>) -> Result<Vec<Filter<EntryField>>, ApiError> {
    let Some(values) = params.get("values").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let rows = rows_of(&t.shape, &t.name, values, &[])?;
    if rows.len() > 1 {
        return Err(bad(format!(
            "values: one row of the fields to find, not {}",
            rows.len()
        )));
    }
    let mut out = Vec::new();
    for row in &rows {
        for (k, v) in row {
            let i = t.fields.iter().position(|(n, _)| n == k).expect("checked");
            let value = thinghost_store::history::query_value(v)
                .ok_or_else(|| bad(format!("values: {k} has no value to find")))?;
            out.push(Filter::Cmp(EntryField::Data(i), Op::Eq, value));
        }
    }
    Ok(out)
}

/// Rows as the answer: the DataShape's fields, then the row's own columns.
fn rows_table(fields: &[(String, BaseType)], rows: Vec<TableRow>) -> InfoTable {
    InfoTable {
        fields: fields
            .iter()
            .cloned()
            .chain(ROW_COLUMNS.iter().map(|(n, bt)| (n.to_string(), *bt)))
            .map(|(name, base_type)| Field { name, base_type })
            .collect(),
        rows: rows
            .into_iter()
            .map(|r| {
                let e = r.entry;
                let mut row = Map::new();
                for (k, v) in e.values {
                    if fields.iter().any(|(n, _)| *n == k) {
                        row.insert(k, v);
                    }
                }
                row.insert("timestamp".into(), json!(e.time));
                row.insert("source".into(), json!(e.source));
                row.insert("sourceType".into(), json!(e.source_type));
                row.insert("tags".into(), json!(e.tags));
                if let Some(l) = e.location {
                    row.insert("location".into(), l);
                }
                row
            })
            .collect(),
    }
}

/// `GetDataTableEntries(maxItems)`, `FindDataTableEntries(maxItems, values)` and
/// `QueryDataTableEntries(maxItems, values, query, source, tags)`: rows in the query's sorts'
/// order, then by key.
pub fn query_entries(app: &Arc<App>, _caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    let t = table(app, &req.entity)?;
    let r = crate::api::history::range(app, &req.params)?;
    let q = crate::api::history::query_param(&req.params, &RowFields { fields: &t.fields })?;
    let mut all = equalities(&t, &req.params)?;
    all.extend(q.filter);
    let filter = match all.len() {
        0 => None,
        1 => all.pop(),
        _ => Some(Filter::And(all)),
    };
    let eq = EntryQuery {
        stream: req.entity.clone(),
        fields: t.fields.clone(),
        start: i64::MIN,
        end: i64::MAX,
        oldest_first: true,
        limit: r.limit,
        filter,
        sorts: q.sorts,
        source: req
            .params
            .get("source")
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        tags: tags_of(req.params.get("tags"))?,
    };
    let rows = app
        .history
        .read(|h| h.query_rows(&eq))
        .map_err(provider_error)?;
    Ok(Reply::Table(rows_table(&t.fields, rows)))
}

/// `GetDataTableEntryByKey(key)`: the row of the key (no row: an empty table). A one-field key
/// is its value; a key of several fields, the JSON list of their values in the DataShape's
/// order.
pub fn by_key(app: &Arc<App>, _caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    let t = table(app, &req.entity)?;
    let raw = req.params.get("key").cloned().unwrap_or(Json::Null);
    let keys: Vec<&thinghost_core::FieldDef> =
        t.shape.fields.iter().filter(|f| f.is_primary_key).collect();
    let given: Vec<Json> = match (&raw, keys.len()) {
        (Json::Array(a), _) => a.clone(),
        (Json::String(s), n) if n > 1 => serde_json::from_str::<Vec<Json>>(s)
            .map_err(|_| bad("key: the JSON list of the key fields' values"))?,
        (v, _) => vec![v.clone()],
    };
    if given.len() != keys.len() {
        return Err(bad(format!(
            "key: {} values for the {} key fields of DataShape {} ({})",
            given.len(),
            keys.len(),
            t.name,
            keys.iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut values = Vec::new();
    for (f, v) in keys.iter().zip(given) {
        // A key given as text for a field of another type (a URL's key is text).
        let v = match (&v, f.base_type.normalize(&v)) {
            (_, Ok(n)) => n,
            (Json::String(s), Err(_)) => serde_json::from_str::<Json>(s)
                .ok()
                .and_then(|j| f.base_type.normalize(&j).ok())
                .ok_or_else(|| bad(format!("key: {s:?} is not a {} value", f.base_type)))?,
            (_, Err(e)) => return Err(bad(format!("key {}: {e}", f.name))),
        };
        values.push(canonical(&v));
    }
    let key = Json::Array(values).to_string();
    let thing = req.entity.clone();
    let row = app
        .history
        .read(|h| h.get_row(&thing, &key))
        .map_err(provider_error)?;
    Ok(Reply::Table(rows_table(
        &t.fields,
        row.into_iter().collect(),
    )))
}

/// `DeleteDataTableEntries(query)`: the rows its filters select (a query without filters is
/// refused: `PurgeDataTableEntries` removes every row). Answers how many went.
pub fn delete_entries(app: &Arc<App>, caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    let t = table(app, &req.entity)?;
    let q = crate::api::history::query_param(&req.params, &RowFields { fields: &t.fields })?;
    let Some(filter) = q.filter else {
        return Err(bad(
            "query: DeleteDataTableEntries needs filters; PurgeDataTableEntries removes every row",
        ));
    };
    let (thing, fields) = (req.entity.clone(), t.fields.clone());
    let gone = app
        .history
        .write(move |h| h.delete_rows(&thing, None, &fields, Some(&filter)))
        .map_err(provider_error)?;
    // A query may select every row: audited as a purge is.
    app.audit(
        &caller.name,
        crate::state::audit::category::MODEL,
        "dataTableEntriesDeleted",
        json!({"query": req.params.get("query"), "rows": gone}),
        &format!("Things/{}", req.entity),
        "Thing",
    );
    Ok(crate::api::result(BaseType::Long, json!(gone)))
}

/// `PurgeDataTableEntries()`: every row goes; answers how many. Audited.
pub fn purge(app: &Arc<App>, caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    let thing = req.entity.clone();
    let gone = app
        .history
        .write(move |h| h.delete_rows(&thing, None, &[], None))
        .map_err(provider_error)?;
    app.audit(
        &caller.name,
        crate::state::audit::category::MODEL,
        "dataTablePurged",
        json!({"rows": gone}),
        &format!("Things/{}", req.entity),
        "Thing",
    );
    Ok(crate::api::result(BaseType::Long, json!(gone)))
}

/// `GetDataTableEntryCount()`.
pub fn count(app: &Arc<App>, _caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    let thing = req.entity.clone();
    let n = app
        .history
        .read(|h| h.count_rows(&thing))
        .map_err(provider_error)?;
    Ok(crate::api::result(BaseType::Long, json!(n)))
}

/// `SetDataTableIndexes(fieldNames)`: the fields of the DataShape the table's rows are indexed
/// by, besides the key (the list replaces the one before; `[]`: none). Needs design-time Update
/// on the table (the row's rule is checked first, under the lock); the indexes are built by the
/// provider without the model's lock, then the declaration is stored, audited.
pub fn set_indexes(app: &Arc<App>, caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    let t = table(app, &req.entity)?;
    let fields: Vec<String> = match req.params.get("fieldNames") {
        Some(Json::Array(a)) => a
            .iter()
            .map(|f| {
                f.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("fieldNames: a list of field names"))
            })
            .collect::<Result<_, _>>()?,
        Some(Json::String(s)) => s
            .split(',')
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect(),
        _ => return Err(bad("fieldNames: a list of field names")),
    };
    let mut seen = std::collections::BTreeSet::new();
    for f in &fields {
        if !t.fields.iter().any(|(n, _)| n == f) {
            return Err(bad(format!(
                "fieldNames: {f:?} is not a field of DataShape {} (its fields: {})",
                t.name,
                t.fields
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !seen.insert(f.as_str()) {
            return Err(bad(format!("fieldNames: {f} is named twice")));
        }
    }
    let record = crate::state::audit::record(
        &caller.name,
        crate::state::audit::category::MODEL,
        "indexesSet",
        json!({"service": req.row.name, "fieldNames": fields}),
        &format!("Things/{}", req.entity),
        "Thing",
    );
    let records = if app.audit_log.enabled(&record.category) {
        vec![record]
    } else {
        vec![]
    };
    // The declaration first, then the indexes (without the model's lock): a failed build
    // leaves queries right, only slower, and says so.
    {
        let mut db = app.db.write().unwrap_or_else(|p| p.into_inner());
        let (thing, declared) = (req.entity.clone(), fields.clone());
        db.change_audited(
            |tx| {
                if let thinghost_core::Body::Thing(t) =
                    &mut tx.get_mut(thinghost_core::Kind::Thing, &thing)?.body
                {
                    t.storage.indexes = declared;
                }
                Ok(())
            },
            &records,
        )
        .map_err(crate::api::change_error)?;
    }
    let thing = req.entity.clone();
    app.history
        .write(move |h| h.set_indexes(&thing, &fields))
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the indexes are declared, but could not be built: {e}; queries still answer, without them"),
            )
        })?;
    Ok(Reply::Empty)
}
