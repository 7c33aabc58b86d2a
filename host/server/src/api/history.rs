//! The history of Things (DOMAIN section 11): value streams and logged properties (H2), and the
//! persistence provider's answers (H1).
//!
//! Every accepted write of a logged property of a Thing with a value stream appends its value,
//! with its time (a device's own) and quality: the write paths (`entities::write_property`, a
//! device's pushes in `edge`, scripts through the first, extensions' host calls through the
//! first) call [`logged`] under the model's lock, queue with [`append`] under it (so the history's
//! order is the model's), and [`settle`] once it is released: a write is answered once its
//! history is durable too. A script's copy holds its values back until its changes land.

use crate::api::{ApiError, Reply, Request, bad, require, visible_entity};
use crate::state::app::App;
use crate::state::auth::Caller;
use crate::state::history::Pending;
use axum::http::StatusCode;
use serde_json::{Map, Value as Json, json};
use std::sync::Arc;
use thinghost_core::infotable::{Field, InfoTable};
use thinghost_core::validate::merged_definitions;
use thinghost_core::{BaseType, Body, Kind, Model, Permission, PropertyDef, Target, View};
use thinghost_store::history::{HistoryRow, Logged, PropertyField, PropertyQuery, query_type};
use thinghost_store::query::{self, Schema, Type};

/// The value stream entry an accepted write appends (H2): when the property is logged and the
/// Thing has a value stream.
pub fn logged(
    m: &Model,
    thing: &str,
    def: &PropertyDef,
    value: &Json,
    time: i64,
    quality: Option<&str>,
) -> Option<Logged> {
    if !def.logged {
        return None;
    }
    let Some(Body::Thing(t)) = m.get(Kind::Thing, thing).map(|e| &e.body) else {
        return None;
    };
    let stream = t.storage.value_stream.as_ref()?;
    Some(Logged {
        stream: stream.clone(),
        thing: thing.to_string(),
        property: def.name.clone(),
        base_type: def.base_type,
        time,
        value: value.clone(),
        quality: quality
            .filter(|q| !q.is_empty() && !q.eq_ignore_ascii_case("GOOD"))
            .map(str::to_ascii_uppercase),
    })
}

/// Queues values for their value streams (call it under the model's lock, in the order of the
/// changes); in a script's copy, holds them back until its changes land.
pub fn append(app: &App, values: Vec<Logged>) -> Pending {
    if values.is_empty() {
        return Pending::none();
    }
    if let Some(scope) = &app.script {
        scope
            .logged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(values);
        return Pending::none();
    }
    app.history.append(values)
}

/// Waits for queued values to be durable (call it after the model's lock is released). The
/// write itself has landed; a failure says so.
pub fn settle(pending: Pending) -> Result<(), ApiError> {
    pending.wait().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the value was written, but its value stream could not record it: {e}"),
        )
    })
}

/// `SetValueStream(name)`: the ValueStream Thing this Thing's logged properties go to (an empty
/// name: none). Needs Update on the Thing (the row) and sight of the value stream.
pub fn set_value_stream(call: &mut crate::api::Call<'_>) -> Result<Reply, ApiError> {
    let name = call.opt_str("name");
    if let Some(n) = &name {
        let m = call.model();
        let (e, _) = visible_entity(m, call.caller, Kind::Thing, n)?;
        let is_stream = match &e.body {
            Body::Thing(t) => thinghost_core::validate::based_on(
                m,
                &t.thing_template,
                thinghost_core::predefined::VALUE_STREAM,
            ),
            _ => false,
        };
        if !is_stream {
            return Err(bad(format!(
                "Thing {n} is not a ValueStream: create one with CreateThing(name, \"ValueStream\")"
            )));
        }
    }
    let thing = call.entity.clone();
    call.commit("valueStreamSet", (Kind::Thing, thing.clone()), |tx| {
        if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, &thing)?.body {
            t.storage.value_stream = name;
        }
        Ok(())
    })?;
    Ok(Reply::Empty)
}

/// The common parameters of the history queries: `maxItems` (at most the server's cap),
/// `startDate`, `endDate` (not reversed), `oldestFirst`.
pub(crate) struct Range {
    pub limit: usize,
    pub start: i64,
    pub end: i64,
    pub oldest_first: bool,
}

/// `startDate` and `endDate` (epoch milliseconds, both inclusive; absent: the beginning and
/// the end of time); a `startDate` after the `endDate` is a 400.
pub(crate) fn dates(params: &Map<String, Json>) -> Result<(i64, i64), ApiError> {
    let date = |name: &str| params.get(name).and_then(Json::as_i64);
    let start = date("startDate").unwrap_or(i64::MIN);
    let end = date("endDate").unwrap_or(i64::MAX);
    if start > end {
        return Err(bad(format!(
            "startDate ({}) is after endDate ({}): nothing could match",
            thinghost_core::types::format_datetime(start),
            thinghost_core::types::format_datetime(end)
        )));
    }
    Ok((start, end))
}

/// The `query` parameter (the vendor's QUERY) over `schema`: a 400 naming what is wrong.
pub(crate) fn query_param<S: Schema>(
    params: &Map<String, Json>,
    schema: &S,
) -> Result<query::Query<S::Field>, ApiError> {
    query::parse(params.get("query").unwrap_or(&Json::Null), schema)
        .map_err(|e| bad(format!("parameter query: {e}")))
}

pub(crate) fn range(app: &App, params: &Map<String, Json>) -> Result<Range, ApiError> {
    let cap = app.history.max_items;
    let limit = match params.get("maxItems").filter(|v| !v.is_null()) {
        None => 500.min(cap),
        Some(v) => {
            let n = v
                .as_f64()
                .filter(|n| n.is_finite() && *n >= 0.0 && n.fract() == 0.0)
                .ok_or_else(|| bad("maxItems is a whole number of 0 or more"))?;
            if n > cap as f64 {
                return Err(bad(format!(
                    "maxItems {n} is above the most a query answers ({cap}, serve --max-items): ask for fewer, or narrow startDate and endDate"
                )));
            }
            n as usize
        }
    };
    let (start, end) = dates(params)?;
    Ok(Range {
        limit,
        start,
        end,
        oldest_first: params
            .get("oldestFirst")
            .and_then(Json::as_bool)
            .unwrap_or(false),
    })
}

/// The fields a property history query may name: `timestamp` and the properties answered (the
/// typed services: `timestamp` and `value`).
struct HistoryFields<'a> {
    properties: &'a [(String, BaseType)],
    /// The typed services' single column is `value`.
    typed: bool,
}

impl Schema for HistoryFields<'_> {
    type Field = PropertyField;
    fn field(&self, name: &str) -> Option<(PropertyField, Type)> {
        if name == "timestamp" {
            return Some((PropertyField::Timestamp, Type::Int));
        }
        if self.typed {
            return (name == "value")
                .then(|| (PropertyField::Property(0), query_type(self.properties[0].1)));
        }
        let i = self.properties.iter().position(|(n, _)| n == name)?;
        Some((PropertyField::Property(i), query_type(self.properties[i].1)))
    }
    fn names(&self) -> String {
        if self.typed {
            "timestamp, value".into()
        } else {
            std::iter::once("timestamp")
                .chain(self.properties.iter().map(|(n, _)| n.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// What a history query reads, resolved under the model's lock: the value stream and the
/// properties the caller may read.
struct Resolved {
    stream: Option<String>,
    properties: Vec<(String, BaseType)>,
}

/// The Thing's value stream and its logged properties the caller may read (`only`: just this
/// one, which must be readable: else the read's own refusal).
fn resolve(
    app: &App,
    caller: &Caller,
    thing: &str,
    only: Option<&str>,
) -> Result<Resolved, ApiError> {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    let m = db.model();
    let (e, id) = visible_entity(m, caller, Kind::Thing, thing)?;
    let Body::Thing(t) = &e.body else {
        unreachable!("a Thing")
    };
    let merged = merged_definitions(m, e).map_err(|e| bad(e.to_string()))?;
    let mut properties = Vec::new();
    if let Some(name) = only {
        let Some((def, _)) = merged.properties.get(name) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("Thing {thing} has no property {name:?}"),
            ));
        };
        require(
            m,
            caller,
            Permission::PropertyRead,
            Target::Entity {
                id,
                resource: m.access().sym(name),
            },
            format_args!("Things/{thing}/Properties/{name}"),
        )?;
        properties.push((def.name.clone(), def.base_type));
    } else {
        for (def, _) in merged.properties.values() {
            if !def.logged {
                continue;
            }
            // A property the caller may not read is left out, as an entity it cannot see is
            // left out of a list (H2).
            let readable = m
                .check(
                    caller.subject,
                    Permission::PropertyRead,
                    Target::Entity {
                        id,
                        resource: m.access().sym(&def.name),
                    },
                )
                .allowed();
            if readable {
                properties.push((def.name.clone(), def.base_type));
            }
        }
    }
    Ok(Resolved {
        stream: t.storage.value_stream.clone(),
        properties,
    })
}

fn run_query(
    app: &App,
    thing: &str,
    resolved: &Resolved,
    params: &Map<String, Json>,
    typed: bool,
) -> Result<Vec<HistoryRow>, ApiError> {
    let r = range(app, params)?;
    let schema = HistoryFields {
        properties: &resolved.properties,
        typed,
    };
    let q = query_param(params, &schema)?;
    if !q.sorts.is_empty() {
        return Err(bad(
            "parameter query: property history is sorted by time (oldestFirst); it takes no sorts",
        ));
    }
    // The vendor's fillOption: Previous (the default) or None.
    let fill_previous = match params.get("fillOption").and_then(Json::as_str) {
        None | Some("") => !typed,
        Some(f) if f.eq_ignore_ascii_case("previous") => true,
        Some(f) if f.eq_ignore_ascii_case("none") => false,
        Some(f) => {
            return Err(bad(format!(
                "fillOption {f:?} is Previous (the last value before, the default) or None"
            )));
        }
    };
    let (Some(stream), false) = (&resolved.stream, resolved.properties.is_empty()) else {
        return Ok(Vec::new());
    };
    let pq = PropertyQuery {
        stream: stream.clone(),
        thing: thing.to_string(),
        properties: resolved.properties.iter().map(|(n, _)| n.clone()).collect(),
        start: r.start,
        end: r.end,
        oldest_first: r.oldest_first,
        limit: r.limit,
        filter: q.filter,
        fill_previous,
    };
    app.history
        .read(|h| h.query_properties(&pq))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn timestamp_field() -> Field {
    Field {
        name: "timestamp".into(),
        base_type: BaseType::Datetime,
    }
}

/// `QueryPropertyHistory(maxItems, startDate, endDate, oldestFirst, query)`: one row per
/// timestamp, a column per logged property the caller may read (H2).
pub fn query_property_history(
    app: &Arc<App>,
    caller: &Caller,
    req: Request,
) -> Result<Reply, ApiError> {
    let resolved = resolve(app, caller, &req.entity, None)?;
    let rows = run_query(app, &req.entity, &resolved, &req.params, false)?;
    let mut table = InfoTable {
        fields: std::iter::once(timestamp_field())
            .chain(resolved.properties.iter().map(|(n, bt)| Field {
                name: n.clone(),
                base_type: *bt,
            }))
            .collect(),
        rows: Vec::with_capacity(rows.len()),
    };
    for r in rows {
        let mut row = Map::new();
        row.insert("timestamp".into(), json!(r.time));
        for (i, v) in r.values {
            row.insert(resolved.properties[i].0.clone(), v);
        }
        table.rows.push(row);
    }
    Ok(Reply::Table(table))
}

/// The typed history services: their names and the base type each answers.
pub const TYPED: &[(&str, BaseType)] = &[
    ("QueryNumberPropertyHistory", BaseType::Number),
    ("QueryIntegerPropertyHistory", BaseType::Integer),
    ("QueryLongPropertyHistory", BaseType::Long),
    ("QueryBooleanPropertyHistory", BaseType::Boolean),
    ("QueryStringPropertyHistory", BaseType::String),
    // The vendor's spelling.
    ("QueryDateTimePropertyHistory", BaseType::Datetime),
    ("QueryJSONPropertyHistory", BaseType::Json),
    ("QueryInfoTablePropertyHistory", BaseType::Infotable),
];

/// `Query{Number,...}PropertyHistory(propertyName, maxItems, startDate, endDate, oldestFirst,
/// query)`: rows of `timestamp` and `value` (H2); the property must be readable and of the
/// service's type.
pub fn query_typed_history(
    app: &Arc<App>,
    caller: &Caller,
    req: Request,
) -> Result<Reply, ApiError> {
    let (service, base_type) = TYPED
        .iter()
        .find(|(n, _)| *n == req.row.name)
        .copied()
        .expect("a typed history row");
    let name = req
        .params
        .get("propertyName")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    let resolved = resolve(app, caller, &req.entity, Some(&name))?;
    let actual = resolved.properties[0].1;
    if actual != base_type {
        let fitting = TYPED
            .iter()
            .find(|(_, bt)| *bt == actual)
            .map(|(n, _)| format!("use {n}"))
            .unwrap_or_else(|| "use QueryPropertyHistory".into());
        return Err(bad(format!(
            "property {name} is a {actual}, and {service} answers {base_type} properties: {fitting}"
        )));
    }
    let rows = run_query(app, &req.entity, &resolved, &req.params, true)?;
    let table = InfoTable {
        fields: vec![
            timestamp_field(),
            Field {
                name: "value".into(),
                base_type,
            },
        ],
        rows: rows
            .into_iter()
            .map(|r| {
                let mut row = Map::new();
                row.insert("timestamp".into(), json!(r.time));
                if let Some((_, v)) = r.values.into_iter().next() {
                    row.insert("value".into(), v);
                }
                row
            })
            .collect(),
    };
    Ok(Reply::Table(table))
}

/// `PurgePropertyHistory(startDate, endDate)`: removes the Thing's history in its value stream
/// between the dates (both optional: everything); needs ServiceInvoke on it (the row). Audited.
pub fn purge_property_history(
    app: &Arc<App>,
    caller: &Caller,
    req: Request,
) -> Result<Reply, ApiError> {
    let stream = {
        let db = app.db.read().unwrap_or_else(|p| p.into_inner());
        match db.model().get(Kind::Thing, &req.entity).map(|e| &e.body) {
            Some(Body::Thing(t)) => t.storage.value_stream.clone(),
            _ => None,
        }
    };
    let (start, end) = dates(&req.params)?;
    let Some(stream) = stream else {
        return Ok(crate::api::result(BaseType::Long, json!(0)));
    };
    let gone = {
        let (stream, thing) = (stream.clone(), req.entity.clone());
        app.history
            .write(move |h| h.purge_properties(&stream, &thing, start, end))
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?
    };
    app.audit(
        &caller.name,
        crate::state::audit::category::MODEL,
        "historyPurged",
        json!({"valueStream": stream, "startDate": start, "endDate": end, "values": gone}),
        &format!("Things/{}", req.entity),
        "Thing",
    );
    Ok(crate::api::result(BaseType::Long, json!(gone)))
}

/// `SetRetention(retentionDays, maxEntries)` of a Stream or ValueStream (H5): entries older than
/// the days go, and at most the count stay (a value stream: per Thing); 0 keeps everything.
/// Applied by the retention job (`serve --retention-interval-seconds`), audited when it removes.
pub fn set_retention(call: &mut crate::api::Call<'_>) -> Result<Reply, ApiError> {
    let whole = |name: &str| -> Result<u64, ApiError> {
        match call.params.get(name) {
            None | Some(Json::Null) => Ok(0),
            Some(v) => v
                .as_f64()
                .filter(|n| *n >= 0.0 && n.fract() == 0.0 && *n <= 1e15)
                .map(|n| n as u64)
                .ok_or_else(|| bad(format!("{name} is a whole number of 0 or more"))),
        }
    };
    let days = whole("retentionDays")?;
    let days = u32::try_from(days).map_err(|_| bad("retentionDays is at most 4294967295"))?;
    let max = whole("maxEntries")?;
    let thing = call.entity.clone();
    call.commit("retentionSet", (Kind::Thing, thing.clone()), |tx| {
        if let Body::Thing(t) = &mut tx.get_mut(Kind::Thing, &thing)?.body {
            t.storage.retention_days = days;
            t.storage.max_entries = max;
        }
        Ok(())
    })?;
    Ok(Reply::Empty)
}
