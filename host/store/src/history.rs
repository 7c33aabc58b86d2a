//! The data of data-storage Things (DOMAIN section 11): the predefined
//! `ThingworxPersistenceProvider` (H1).
//!
//! [`History`] is what every persistence provider implements; [`SqliteHistory`] is the embedded
//! one: its own SQLite file beside the model's (`history.db`, WAL, `synchronous=FULL`), so that
//! time-series writes never wait for the model's lock or its file, and the model never waits for
//! them. An append returns once it is durable.
//!
//! Value streams (H2) keep one *series* per (value stream, Thing) and one *prop* per (series,
//! property, base type); a sample is (series, time, sequence, prop, value, quality), clustered by
//! series and time (`WITHOUT ROWID`), so the newest entries of a Thing are one range read. Values
//! keep their base types exactly: each is stored in SQLite's own type for it (NUMBER as an
//! integer or a real as it came, INTEGER, LONG and DATETIME as integers, BOOLEAN as 0 or 1, text
//! as text, JSON and INFOTABLE as JSON text) and read back by the prop's base type.

use crate::StoreError;
use crate::query::{self, Filter, Type, Value};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thinghost_core::BaseType;

/// The file of the embedded provider, in the data directory.
pub const FILE: &str = "history.db";

/// One accepted value of a logged property (H2).
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    /// The ValueStream Thing.
    pub stream: String,
    pub thing: String,
    pub property: String,
    pub base_type: BaseType,
    /// When it was measured (a device's own time) or written, epoch milliseconds.
    pub time: i64,
    pub value: Json,
    /// The vendor's quality (`GOOD`, `BAD`, `UNKNOWN`, ...); `None` is GOOD.
    pub quality: Option<String>,
}

/// A query of a Thing's property history: `QueryPropertyHistory` (all the properties asked
/// for, one row per timestamp) and the typed `Query*PropertyHistory` (one property).
#[derive(Clone, Debug, PartialEq)]
pub struct PropertyQuery {
    pub stream: String,
    pub thing: String,
    /// The properties to answer, with their current base types (a value logged under another
    /// type is read back with its own).
    pub properties: Vec<String>,
    /// Inclusive bounds, epoch milliseconds.
    pub start: i64,
    pub end: i64,
    pub oldest_first: bool,
    /// At most this many rows.
    pub limit: usize,
    /// Over [`PropertyField`]s: evaluated on each row as it is put together (filled).
    pub filter: Option<Filter<PropertyField>>,
    /// The vendor's `fillOption`: a property with no value at a row's time gets its last value
    /// before it (`Previous`, true), or none (`None`, false).
    pub fill_previous: bool,
}

/// A field of a property history row: its timestamp, or the value of the `n`th property asked
/// for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertyField {
    Timestamp,
    Property(usize),
}

/// One row of property history: a timestamp and the values logged at it (by the index of the
/// property in the query; a property with no value at that time is absent).
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryRow {
    pub time: i64,
    pub values: Vec<(usize, Json)>,
}

/// One entry of a stream (H3): when, from where, tagged how, and values of the stream's
/// DataShape (checked before they get here).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct StreamEntry {
    /// Given by the provider when the entry is added.
    pub id: i64,
    pub time: i64,
    pub source: String,
    pub source_type: String,
    pub tags: Vec<String>,
    /// The vendor's LOCATION (`{"latitude", "longitude", "elevation"}`), if any.
    pub location: Option<Json>,
    pub values: serde_json::Map<String, Json>,
}

/// A data table's row: its key (the canonical JSON of its primary key's values, in the
/// DataShape's order), and an entry's columns.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TableRow {
    pub key: String,
    pub entry: StreamEntry,
}

/// How a row is written, and what writing it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// Asked: add a new row (a duplicate key is refused). Done: added.
    Insert,
    /// Asked: add or replace. Done: replaced.
    Upsert,
    /// Asked: replace an existing row (none with the key is refused).
    Update,
    /// Done: refused, the key is taken.
    Duplicate,
    /// Done: refused, no row has the key.
    Missing,
}

/// A field of a stream entry a query may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryField {
    Timestamp,
    Id,
    Source,
    SourceType,
    /// The tags, as JSON text (`LIKE '%Plant:North%'`).
    Tags,
    /// The `n`th field of the stream's DataShape ([`EntryQuery::fields`]).
    Data(usize),
}

/// A query of a stream's entries (`QueryStreamEntriesWithData`).
#[derive(Clone, Debug, PartialEq)]
pub struct EntryQuery {
    pub stream: String,
    /// The DataShape's fields, by name and base type ([`EntryField::Data`] indexes them).
    pub fields: Vec<(String, BaseType)>,
    pub start: i64,
    pub end: i64,
    pub oldest_first: bool,
    pub limit: usize,
    pub filter: Option<Filter<EntryField>>,
    /// Before the time order; none: by time only.
    pub sorts: Vec<(EntryField, bool)>,
    /// Only entries of this source.
    pub source: Option<String>,
    /// Only entries with every one of these tags.
    pub tags: Vec<String>,
}

impl EntryField {
    /// Its column (or JSON path into the entry's data) in the SQLite backend: names from the
    /// DataShape, which are member names (letters, digits, `_`), never from a request.
    fn column(self, fields: &[(String, BaseType)]) -> String {
        match self {
            EntryField::Timestamp => "ts".into(),
            EntryField::Id => "id".into(),
            EntryField::Source => "source".into(),
            EntryField::SourceType => "source_type".into(),
            EntryField::Tags => "tags".into(),
            EntryField::Data(i) => {
                let name = &fields[i].0;
                assert!(
                    thinghost_core::names::check_member_name(name).is_ok(),
                    "a DataShape's field name is a member name"
                );
                format!("json_extract(data, '$.{name}')")
            }
        }
    }
}

/// The type a query compares a base type's values as.
pub fn query_type(bt: BaseType) -> Type {
    match bt {
        BaseType::Number => Type::Real,
        BaseType::Integer | BaseType::Long | BaseType::Datetime => Type::Int,
        BaseType::Boolean => Type::Bool,
        _ => Type::Text,
    }
}

/// A stored value as a query compares it.
pub fn query_value(v: &Json) -> Option<Value> {
    match v {
        Json::Null => None,
        Json::Bool(b) => Some(Value::Bool(*b)),
        Json::Number(n) => Some(
            n.as_i64()
                .map(Value::Int)
                .unwrap_or_else(|| Value::Real(n.as_f64().unwrap_or(f64::NAN))),
        ),
        Json::String(s) => Some(Value::Text(s.clone())),
        other => Some(Value::Text(other.to_string())),
    }
}

/// A value as SQLite stores it (see the module's documentation).
pub fn encode(bt: BaseType, v: &Json) -> SqlValue {
    match v {
        Json::Null => SqlValue::Null,
        Json::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) if !json_text(bt) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

/// Is a base type's value stored as JSON text?
fn json_text(bt: BaseType) -> bool {
    matches!(
        bt,
        BaseType::Json
            | BaseType::Infotable
            | BaseType::Query
            | BaseType::Location
            | BaseType::Nothing
    )
}

/// A stored value back as JSON, by its base type.
pub fn decode(bt: BaseType, v: ValueRef<'_>) -> Json {
    match v {
        ValueRef::Null | ValueRef::Blob(_) => Json::Null,
        ValueRef::Integer(i) if bt == BaseType::Boolean => Json::Bool(i != 0),
        ValueRef::Integer(i) => Json::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        ValueRef::Text(t) => {
            let t = String::from_utf8_lossy(t);
            if json_text(bt) {
                serde_json::from_str(&t).unwrap_or(Json::String(t.into_owned()))
            } else {
                Json::String(t.into_owned())
            }
        }
    }
}

/// A persistence provider: where the data of data-storage Things lives.
pub trait History: Send {
    /// Appends logged values and stream entries in one transaction; returns once they are
    /// durable, with the id given to each entry (H3).
    fn write(
        &mut self,
        values: &[Logged],
        entries: &[(String, StreamEntry)],
    ) -> Result<Vec<i64>, StoreError>;
    /// Appends logged values in one transaction; returns once they are durable.
    fn append(&mut self, values: &[Logged]) -> Result<(), StoreError> {
        self.write(values, &[]).map(|_| ())
    }
    /// A stream's entries (H3), in the query's order.
    fn query_stream(&mut self, q: &EntryQuery) -> Result<Vec<StreamEntry>, StoreError>;
    /// Removes one entry of a stream; was it there?
    fn delete_stream_entry(&mut self, stream: &str, id: i64) -> Result<bool, StoreError>;
    /// Removes a stream's entries between two times (inclusive); returns how many went.
    fn purge_stream(&mut self, stream: &str, start: i64, end: i64) -> Result<u64, StoreError>;
    /// Applies a stream's retention (H5): entries older than `before` go, and of the rest only
    /// the newest `keep` stay (0: no maximum). Returns how many went.
    fn trim_stream(&mut self, stream: &str, before: i64, keep: u64) -> Result<u64, StoreError>;
    /// How many entries a stream holds.
    fn count_stream(&mut self, stream: &str) -> Result<u64, StoreError>;
    /// Writes a data table's row (H4) as `mode` says; returns what it did.
    fn put_row(&mut self, table: &str, row: &TableRow, mode: Put) -> Result<Put, StoreError> {
        self.put_rows(table, std::slice::from_ref(row), mode)
            .map(|done| done[0])
    }
    /// Writes rows in one transaction, all or nothing: when one is refused (a duplicate key,
    /// a missing row), none is written, and the answer says which (the others say what they
    /// would have done).
    fn put_rows(
        &mut self,
        table: &str,
        rows: &[TableRow],
        mode: Put,
    ) -> Result<Vec<Put>, StoreError>;
    /// A data table's row by its key.
    fn get_row(&mut self, table: &str, key: &str) -> Result<Option<TableRow>, StoreError>;
    /// A data table's rows (the query's `start`, `end` and `oldest_first` are not used: rows
    /// come in its sorts' order, then by key).
    fn query_rows(&mut self, q: &EntryQuery) -> Result<Vec<TableRow>, StoreError>;
    /// Removes a data table's row by its key, or the rows a filter selects (none: every row);
    /// returns how many went.
    fn delete_rows(
        &mut self,
        table: &str,
        key: Option<&str>,
        fields: &[(String, BaseType)],
        filter: Option<&Filter<EntryField>>,
    ) -> Result<u64, StoreError>;
    /// How many rows a data table holds.
    fn count_rows(&mut self, table: &str) -> Result<u64, StoreError>;
    /// Makes a data table's rows indexed by exactly these fields of its DataShape (besides its
    /// key): missing indexes are made, others dropped.
    fn set_indexes(&mut self, table: &str, fields: &[String]) -> Result<(), StoreError>;
    /// Removes everything held under a Thing's name (it is gone, or new): a stream's entries, a
    /// table's rows, a value stream's values, and the Thing's own history in every value
    /// stream, so that nothing of a deleted Thing reaches another of its name.
    fn forget(&mut self, thing: &str) -> Result<u64, StoreError>;
    /// The names of the Things anything is held under: streams, tables, value streams, and the
    /// Things with history.
    fn owners(&mut self) -> Result<Vec<String>, StoreError>;
    /// A Thing's property history, newest first unless `oldest_first`.
    fn query_properties(&mut self, q: &PropertyQuery) -> Result<Vec<HistoryRow>, StoreError>;
    /// Removes a Thing's history in a value stream between two times (inclusive); returns how
    /// many values went.
    fn purge_properties(
        &mut self,
        stream: &str,
        thing: &str,
        start: i64,
        end: i64,
    ) -> Result<u64, StoreError>;
    /// Applies a value stream's retention (H5): values older than `before` go, and of each
    /// Thing's values only the newest `keep` stay (0: no maximum). Returns how many went.
    fn trim_value_stream(
        &mut self,
        stream: &str,
        before: i64,
        keep: u64,
    ) -> Result<u64, StoreError>;
    /// How many values a value stream holds for a Thing (all Things: `None`).
    fn count_values(&mut self, stream: &str, thing: Option<&str>) -> Result<u64, StoreError>;
}

/// Numbered schema steps; `PRAGMA user_version` is how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: value streams.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
     INSERT INTO meta VALUES ('seq', 0);
     CREATE TABLE series (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         stream TEXT NOT NULL, thing TEXT NOT NULL, UNIQUE (stream, thing));
     CREATE TABLE props (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         series INTEGER NOT NULL, name TEXT NOT NULL, base_type TEXT NOT NULL,
         UNIQUE (series, name, base_type));
     CREATE TABLE samples (
         series INTEGER NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,
         prop INTEGER NOT NULL, value, quality TEXT,
         PRIMARY KEY (series, ts, seq)) WITHOUT ROWID;",
    // 2: streams.
    "CREATE TABLE streams (
         id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE);
     CREATE TABLE entries (
         stream INTEGER NOT NULL, ts INTEGER NOT NULL, id INTEGER NOT NULL,
         source TEXT NOT NULL, source_type TEXT NOT NULL, tags TEXT NOT NULL,
         location TEXT, data TEXT NOT NULL,
         PRIMARY KEY (stream, ts, id)) WITHOUT ROWID;
     CREATE INDEX entries_by_id ON entries (stream, id);",
    // 3: data tables.
    "CREATE TABLE tables (
         id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE);
     CREATE TABLE rows (
         tbl INTEGER NOT NULL, key TEXT NOT NULL, ts INTEGER NOT NULL, id INTEGER NOT NULL,
         source TEXT NOT NULL, source_type TEXT NOT NULL, tags TEXT NOT NULL,
         location TEXT, data TEXT NOT NULL,
         PRIMARY KEY (tbl, key)) WITHOUT ROWID;",
];

/// The embedded persistence provider: SQLite in WAL mode with `synchronous=FULL`.
pub struct SqliteHistory {
    conn: Connection,
    path: PathBuf,
    /// Ids of (stream, thing), and of (series, property, base type): ids are never reused
    /// (`AUTOINCREMENT`), so a cached one never names something else.
    series: HashMap<(String, String), i64>,
    props: HashMap<(i64, String, BaseType), i64>,
    streams: HashMap<String, i64>,
    tables: HashMap<String, i64>,
}

/// The SELECT of a stream's entries or a table's rows: `from` (`entries`, `rows`) whose
/// `owner` column is `owner_id`, within the query's time range when `timed`, its source, tags
/// and filter, in its sorts' order and then `tail_order`, at most its limit. Column names are
/// fixed or come from [`EntryField::column`]; every value is a parameter.
fn select(
    q: &EntryQuery,
    from: &'static str,
    owner: &'static str,
    owner_id: i64,
    timed: bool,
    tail_order: &str,
) -> (String, Vec<SqlValue>) {
    let key = if from == "rows" { "key, " } else { "" };
    // The owner's id as a literal (a number from the provider's own table): a table's partial
    // indexes name it so.
    let mut text = format!("SELECT {key}{ENTRY_SELECT} FROM {from} WHERE {owner} = {owner_id}");
    let mut params: Vec<SqlValue> = Vec::new();
    if timed {
        text.push_str(" AND ts BETWEEN ? AND ?");
        params.push(SqlValue::Integer(q.start));
        params.push(SqlValue::Integer(q.end));
    }
    if let Some(source) = &q.source {
        text.push_str(" AND source = ?");
        params.push(SqlValue::Text(source.clone()));
    }
    for tag in &q.tags {
        text.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM json_each({from}.tags) WHERE value = ?)"
        ));
        params.push(SqlValue::Text(tag.clone()));
    }
    if let Some(f) = &q.filter {
        let column = |field: EntryField| field.column(&q.fields);
        text.push_str(" AND ");
        text.push_str(&query::to_sql(f, &column, &mut params));
    }
    let mut order: Vec<String> = q
        .sorts
        .iter()
        .map(|(f, asc)| {
            format!(
                "{} {}",
                f.column(&q.fields),
                if *asc { "ASC" } else { "DESC" }
            )
        })
        .collect();
    order.push(tail_order.to_string());
    text.push_str(&format!(" ORDER BY {} LIMIT ?", order.join(", ")));
    params.push(SqlValue::Integer(q.limit.min(i64::MAX as usize) as i64));
    (text, params)
}

/// Retention (H5) of one owner's rows in `table` (`entries` by `stream`, `samples` by
/// `series`; `order` the column that orders rows of one time): those older than `before` go,
/// and of the rest only the newest `keep` stay (0: no maximum). Names are fixed by the callers.
fn trim(
    conn: &Connection,
    table: &'static str,
    owner: &'static str,
    order: &'static str,
    id: i64,
    before: i64,
    keep: u64,
) -> rusqlite::Result<u64> {
    let mut gone = conn.execute(
        &format!("DELETE FROM {table} WHERE {owner} = ?1 AND ts < ?2"),
        params![id, before],
    )? as u64;
    if keep > 0 {
        let cut: Option<(i64, i64)> = conn
            .query_row(
                &format!(
                    "SELECT ts, {order} FROM {table} WHERE {owner} = ?1 ORDER BY ts DESC, {order} DESC LIMIT 1 OFFSET ?2"
                ),
                params![id, (keep - 1).min(i64::MAX as u64) as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((ts, n)) = cut {
            gone += conn.execute(
                &format!(
                    "DELETE FROM {table} WHERE {owner} = ?1 AND (ts < ?2 OR (ts = ?2 AND {order} < ?3))"
                ),
                params![id, ts, n],
            )? as u64;
        }
    }
    Ok(gone)
}

fn sql(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.to_path_buf(),
        source: e,
    }
}

impl SqliteHistory {
    /// Opens (creating it if needed) the provider's file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteHistory, StoreError> {
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            // The history may hold anything a device measures: the server's alone.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql(path, e))?;
        // WAL: readers never wait for the writer; FULL: a commit is on disk when it returns.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;",
        )
        .map_err(|e| sql(path, e))?;
        let mut h = SqliteHistory {
            conn,
            path: path.to_path_buf(),
            series: HashMap::new(),
            props: HashMap::new(),
            streams: HashMap::new(),
            tables: HashMap::new(),
        };
        h.migrate()?;
        Ok(h)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql(&self.path, e))?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                known,
            });
        }
        for (v, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| sql(&self.path, e))?;
            // Another process may have migrated meanwhile: the version is read again under
            // the write lock.
            let now: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| sql(&self.path, e))?;
            if now > v as i64 {
                continue;
            }
            tx.execute_batch(step).map_err(|e| sql(&self.path, e))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", v + 1))
                .map_err(|e| sql(&self.path, e))?;
            tx.commit().map_err(|e| sql(&self.path, e))?;
        }
        Ok(())
    }

    /// The series of (stream, thing), made when `create`.
    fn series_id(
        conn: &Connection,
        cache: &mut HashMap<(String, String), i64>,
        stream: &str,
        thing: &str,
        create: bool,
    ) -> rusqlite::Result<Option<i64>> {
        // Only the writer (`create`) trusts its cache: what it forgets (`forget`) it forgets
        // itself; a reader asks the file every time.
        let key = (stream.to_string(), thing.to_string());
        if create && let Some(id) = cache.get(&key) {
            return Ok(Some(*id));
        }
        let found: Option<i64> = conn
            .query_row(
                "SELECT id FROM series WHERE stream = ?1 AND thing = ?2",
                params![stream, thing],
                |r| r.get(0),
            )
            .optional()?;
        let id = match (found, create) {
            (Some(id), _) => id,
            (None, true) => {
                conn.execute(
                    "INSERT INTO series (stream, thing) VALUES (?1, ?2)",
                    params![stream, thing],
                )?;
                conn.last_insert_rowid()
            }
            (None, false) => return Ok(None),
        };
        cache.insert(key, id);
        Ok(Some(id))
    }

    /// The props of a series: id, name and base type.
    fn props_of(&self, series: i64) -> rusqlite::Result<Vec<(i64, String, BaseType)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, name, base_type FROM props WHERE series = ?1")?;
        let rows = st.query_map([series], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, bt) = row?;
            if let Some(bt) = BaseType::parse(&bt) {
                out.push((id, name, bt));
            }
        }
        Ok(out)
    }

    /// The id of a stream, made when `create`.
    fn stream_id(
        conn: &Connection,
        cache: &mut HashMap<String, i64>,
        stream: &str,
        create: bool,
    ) -> rusqlite::Result<Option<i64>> {
        Self::owner_id(conn, cache, "streams", stream, create)
    }

    /// The id of a stream or table (`of`: `streams` or `tables`, fixed names), made when
    /// `create`.
    fn owner_id(
        conn: &Connection,
        cache: &mut HashMap<String, i64>,
        of: &'static str,
        stream: &str,
        create: bool,
    ) -> rusqlite::Result<Option<i64>> {
        if create && let Some(id) = cache.get(stream) {
            return Ok(Some(*id));
        }
        let found: Option<i64> = conn
            .query_row(
                &format!("SELECT id FROM {of} WHERE name = ?1"),
                [stream],
                |r| r.get(0),
            )
            .optional()?;
        let id = match (found, create) {
            (Some(id), _) => id,
            (None, true) => {
                conn.execute(&format!("INSERT INTO {of} (name) VALUES (?1)"), [stream])?;
                conn.last_insert_rowid()
            }
            (None, false) => return Ok(None),
        };
        cache.insert(stream.to_string(), id);
        Ok(Some(id))
    }

    fn write_in(
        &mut self,
        values: &[Logged],
        entries: &[(String, StreamEntry)],
    ) -> rusqlite::Result<Vec<i64>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Read under the write lock: any number of writers keep the sequence unique.
        let mut seq: i64 =
            tx.query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0))?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO samples (series, ts, seq, prop, value, quality) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for v in values {
                let series = Self::series_id(&tx, &mut self.series, &v.stream, &v.thing, true)?
                    .expect("created");
                let key = (series, v.property.clone(), v.base_type);
                let prop = match self.props.get(&key) {
                    Some(id) => *id,
                    None => {
                        let found: Option<i64> = tx
                            .query_row(
                                "SELECT id FROM props WHERE series = ?1 AND name = ?2 AND base_type = ?3",
                                params![series, v.property, v.base_type.name()],
                                |r| r.get(0),
                            )
                            .optional()?;
                        let id = match found {
                            Some(id) => id,
                            None => {
                                tx.execute(
                                    "INSERT INTO props (series, name, base_type) VALUES (?1, ?2, ?3)",
                                    params![series, v.property, v.base_type.name()],
                                )?;
                                tx.last_insert_rowid()
                            }
                        };
                        self.props.insert(key, id);
                        id
                    }
                };
                seq += 1;
                insert.execute(params![
                    series,
                    v.time,
                    seq,
                    prop,
                    encode(v.base_type, &v.value),
                    v.quality
                ])?;
            }
        }
        let mut ids = Vec::with_capacity(entries.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO entries (stream, ts, id, source, source_type, tags, location, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for (stream, e) in entries {
                let stream =
                    Self::stream_id(&tx, &mut self.streams, stream, true)?.expect("created");
                seq += 1;
                insert.execute(params![
                    stream,
                    e.time,
                    seq,
                    e.source,
                    e.source_type,
                    Json::from(e.tags.clone()).to_string(),
                    e.location.as_ref().map(Json::to_string),
                    Json::Object(e.values.clone()).to_string(),
                ])?;
                ids.push(seq);
            }
        }
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'seq'", [seq])?;
        tx.commit()?;
        Ok(ids)
    }
}

/// The columns [`entry_of`] reads, in its order.
const ENTRY_SELECT: &str = "ts, id, source, source_type, tags, location, data";

/// An entry as the `entries` and `rows` tables hold it, read back from [`ENTRY_SELECT`]'s
/// columns starting at `at`.
fn entry_of(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<StreamEntry> {
    let tags: String = r.get(at + 4)?;
    let location: Option<String> = r.get(at + 5)?;
    let data: String = r.get(at + 6)?;
    Ok(StreamEntry {
        time: r.get(at)?,
        id: r.get(at + 1)?,
        source: r.get(at + 2)?,
        source_type: r.get(at + 3)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        location: location.and_then(|l| serde_json::from_str(&l).ok()),
        values: match serde_json::from_str(&data) {
            Ok(Json::Object(m)) => m,
            _ => serde_json::Map::new(),
        },
    })
}

impl History for SqliteHistory {
    fn write(
        &mut self,
        values: &[Logged],
        entries: &[(String, StreamEntry)],
    ) -> Result<Vec<i64>, StoreError> {
        if values.is_empty() && entries.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.write_in(values, entries);
        if out.is_err() {
            // Ids made in a transaction that rolled back are not ids.
            self.series.clear();
            self.props.clear();
            self.streams.clear();
            self.tables.clear();
        }
        out.map_err(|e| sql(&self.path, e))
    }

    fn query_stream(&mut self, q: &EntryQuery) -> Result<Vec<StreamEntry>, StoreError> {
        let path = self.path.clone();
        let Some(stream) = Self::stream_id(&self.conn, &mut self.streams, &q.stream, false)
            .map_err(|e| sql(&path, e))?
        else {
            return Ok(Vec::new());
        };
        if q.limit == 0 || q.start > q.end {
            return Ok(Vec::new());
        }
        let time_order = if q.oldest_first { "ASC" } else { "DESC" };
        let (sql_text, params) = select(
            q,
            "entries",
            "stream",
            stream,
            true,
            &format!("ts {time_order}, id {time_order}"),
        );
        let mut st = self
            .conn
            .prepare_cached(&sql_text)
            .map_err(|e| sql(&path, e))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(params), |r| entry_of(r, 0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| sql(&path, e))?;
        Ok(rows)
    }

    fn delete_stream_entry(&mut self, stream: &str, id: i64) -> Result<bool, StoreError> {
        let path = self.path.clone();
        let Some(stream) = Self::stream_id(&self.conn, &mut self.streams, stream, false)
            .map_err(|e| sql(&path, e))?
        else {
            return Ok(false);
        };
        let n = self
            .conn
            .execute(
                "DELETE FROM entries WHERE stream = ?1 AND id = ?2",
                params![stream, id],
            )
            .map_err(|e| sql(&path, e))?;
        Ok(n > 0)
    }

    fn purge_stream(&mut self, stream: &str, start: i64, end: i64) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let Some(stream) = Self::stream_id(&self.conn, &mut self.streams, stream, false)
            .map_err(|e| sql(&path, e))?
        else {
            return Ok(0);
        };
        let n = self
            .conn
            .execute(
                "DELETE FROM entries WHERE stream = ?1 AND ts BETWEEN ?2 AND ?3",
                params![stream, start, end],
            )
            .map_err(|e| sql(&path, e))?;
        Ok(n as u64)
    }

    fn trim_stream(&mut self, stream: &str, before: i64, keep: u64) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let Some(stream) = Self::stream_id(&self.conn, &mut self.streams, stream, false)
            .map_err(|e| sql(&path, e))?
        else {
            return Ok(0);
        };
        trim(&self.conn, "entries", "stream", "id", stream, before, keep).map_err(|e| sql(&path, e))
    }

    fn count_stream(&mut self, stream: &str) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM entries WHERE stream = (SELECT id FROM streams WHERE name = ?1)",
                [stream],
                |r| r.get(0),
            )
            .map_err(|e| sql(&path, e))?;
        Ok(n as u64)
    }

    fn put_rows(
        &mut self,
        table: &str,
        rows: &[TableRow],
        mode: Put,
    ) -> Result<Vec<Put>, StoreError> {
        let path = self.path.clone();
        let run = |h: &mut SqliteHistory| -> rusqlite::Result<Vec<Put>> {
            let tx = h
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let tbl = Self::owner_id(&tx, &mut h.tables, "tables", table, true)?.expect("created");
            let mut seq: i64 =
                tx.query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0))?;
            let mut outcomes = Vec::with_capacity(rows.len());
            let mut refused = false;
            {
                let mut exists_st =
                    tx.prepare_cached("SELECT 1 FROM rows WHERE tbl = ?1 AND key = ?2")?;
                let mut write = tx.prepare_cached(
                    "INSERT OR REPLACE INTO rows (tbl, key, ts, id, source, source_type, tags, location, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for row in rows {
                    let exists = exists_st.exists(params![tbl, row.key])?;
                    let done = match (mode, exists) {
                        (Put::Insert, true) => Put::Duplicate,
                        (Put::Update, false) => Put::Missing,
                        (_, true) => Put::Upsert,
                        (_, false) => Put::Insert,
                    };
                    outcomes.push(done);
                    if matches!(done, Put::Duplicate | Put::Missing) {
                        refused = true;
                    }
                    if refused {
                        continue;
                    }
                    seq += 1;
                    let e = &row.entry;
                    write.execute(params![
                        tbl,
                        row.key,
                        e.time,
                        seq,
                        e.source,
                        e.source_type,
                        Json::from(e.tags.clone()).to_string(),
                        e.location.as_ref().map(Json::to_string),
                        Json::Object(e.values.clone()).to_string(),
                    ])?;
                }
            }
            if refused {
                // Nothing is written; the table's id it may have made is cached: drop both.
                drop(tx);
                h.tables.clear();
                return Ok(outcomes);
            }
            tx.execute("UPDATE meta SET value = ?1 WHERE key = 'seq'", [seq])?;
            tx.commit()?;
            Ok(outcomes)
        };
        let out = run(self);
        if out.is_err() {
            self.tables.clear();
        }
        out.map_err(|e| sql(&path, e))
    }

    fn get_row(&mut self, table: &str, key: &str) -> Result<Option<TableRow>, StoreError> {
        let path = self.path.clone();
        self.conn
            .query_row(
                &format!(
                    "SELECT key, {ENTRY_SELECT} FROM rows WHERE tbl = (SELECT id FROM tables WHERE name = ?1) AND key = ?2"
                ),
                params![table, key],
                |r| {
                    Ok(TableRow {
                        key: r.get(0)?,
                        entry: entry_of(r, 1)?,
                    })
                },
            )
            .optional()
            .map_err(|e| sql(&path, e))
    }

    fn query_rows(&mut self, q: &EntryQuery) -> Result<Vec<TableRow>, StoreError> {
        let path = self.path.clone();
        let Some(tbl) = Self::owner_id(&self.conn, &mut self.tables, "tables", &q.stream, false)
            .map_err(|e| sql(&path, e))?
        else {
            return Ok(Vec::new());
        };
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        let (sql_text, params) = select(q, "rows", "tbl", tbl, false, "key ASC");
        let mut st = self
            .conn
            .prepare_cached(&sql_text)
            .map_err(|e| sql(&path, e))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(params), |r| {
                Ok(TableRow {
                    key: r.get(0)?,
                    entry: entry_of(r, 1)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| sql(&path, e))?;
        Ok(rows)
    }

    fn delete_rows(
        &mut self,
        table: &str,
        key: Option<&str>,
        fields: &[(String, BaseType)],
        filter: Option<&Filter<EntryField>>,
    ) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let Some(tbl) = Self::owner_id(&self.conn, &mut self.tables, "tables", table, false)
            .map_err(|e| sql(&path, e))?
        else {
            return Ok(0);
        };
        let mut text = format!("DELETE FROM rows WHERE tbl = {tbl}");
        let mut params: Vec<SqlValue> = Vec::new();
        if let Some(k) = key {
            text.push_str(" AND key = ?");
            params.push(SqlValue::Text(k.to_string()));
        }
        if let Some(f) = filter {
            let column = |field: EntryField| field.column(fields);
            text.push_str(" AND ");
            text.push_str(&query::to_sql(f, &column, &mut params));
        }
        let n = self
            .conn
            .execute(&text, rusqlite::params_from_iter(params))
            .map_err(|e| sql(&path, e))?;
        Ok(n as u64)
    }

    fn count_rows(&mut self, table: &str) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM rows WHERE tbl = (SELECT id FROM tables WHERE name = ?1)",
                [table],
                |r| r.get(0),
            )
            .map_err(|e| sql(&path, e))?;
        Ok(n as u64)
    }

    fn set_indexes(&mut self, table: &str, fields: &[String]) -> Result<(), StoreError> {
        let path = self.path.clone();
        if let Some(bad) = fields
            .iter()
            .find(|f| thinghost_core::names::check_member_name(f).is_err())
        {
            return Err(StoreError::Corrupt {
                path,
                what: format!("the indexes of {table}"),
                message: format!("{bad:?} is not a field name"),
            });
        }
        let run = |h: &mut SqliteHistory| -> rusqlite::Result<()> {
            let tx = h
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let tbl = Self::owner_id(&tx, &mut h.tables, "tables", table, true)?.expect("created");
            let prefix = format!("rows_{tbl}_");
            let existing: Vec<String> = {
                let mut st = tx.prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'rows'",
                )?;
                st.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?
                    .into_iter()
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            };
            for name in &existing {
                if !fields.iter().any(|f| format!("{prefix}{f}") == *name) {
                    tx.execute_batch(&format!("DROP INDEX IF EXISTS \"{name}\""))?;
                }
            }
            // A partial index per table and field: the table's id and the field's name are a
            // number and a member name (checked), never a request's text. Queries name the
            // table by the same literal, so the planner can use it.
            for f in fields {
                tx.execute_batch(&format!(
                    "CREATE INDEX IF NOT EXISTS {prefix}{f} ON rows (json_extract(data, '$.{f}')) WHERE tbl = {tbl}"
                ))?;
            }
            tx.commit()
        };
        let out = run(self);
        if out.is_err() {
            self.tables.clear();
        }
        out.map_err(|e| sql(&path, e))
    }

    fn owners(&mut self) -> Result<Vec<String>, StoreError> {
        let path = self.path.clone();
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT name FROM streams UNION SELECT name FROM tables UNION SELECT stream FROM series UNION SELECT thing FROM series",
            )
            .map_err(|e| sql(&path, e))?;
        st.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(|e| sql(&path, e))
    }

    fn forget(&mut self, thing: &str) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let run = |conn: &mut Connection| -> rusqlite::Result<u64> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut gone = tx.execute(
                "DELETE FROM entries WHERE stream = (SELECT id FROM streams WHERE name = ?1)",
                [thing],
            )? as u64;
            tx.execute("DELETE FROM streams WHERE name = ?1", [thing])?;
            // As a data table, with its indexes.
            let tbl: Option<i64> = tx
                .query_row("SELECT id FROM tables WHERE name = ?1", [thing], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(tbl) = tbl {
                gone += tx.execute("DELETE FROM rows WHERE tbl = ?1", [tbl])? as u64;
                tx.execute("DELETE FROM tables WHERE id = ?1", [tbl])?;
                let indexes: Vec<String> = {
                    let mut st = tx.prepare(
                        "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE ?1",
                    )?;
                    st.query_map(["rows%"], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?
                };
                for i in indexes {
                    if i.starts_with(&format!("rows_{tbl}_")) {
                        tx.execute_batch(&format!("DROP INDEX IF EXISTS \"{i}\""))?;
                    }
                }
            }
            // As a value stream (every Thing's history in it), and as a Thing (its history in
            // every value stream).
            gone += tx.execute(
                "DELETE FROM samples WHERE series IN (SELECT id FROM series WHERE stream = ?1 OR thing = ?1)",
                [thing],
            )? as u64;
            tx.execute(
                "DELETE FROM props WHERE series IN (SELECT id FROM series WHERE stream = ?1 OR thing = ?1)",
                [thing],
            )?;
            tx.execute(
                "DELETE FROM series WHERE stream = ?1 OR thing = ?1",
                [thing],
            )?;
            tx.commit()?;
            Ok(gone)
        };
        let out = run(&mut self.conn).map_err(|e| sql(&path, e));
        // Ids of what went are never given again; the caches forget them.
        self.series.clear();
        self.props.clear();
        self.streams.clear();
        self.tables.clear();
        out
    }

    fn query_properties(&mut self, q: &PropertyQuery) -> Result<Vec<HistoryRow>, StoreError> {
        let path = self.path.clone();
        let Some(series) =
            Self::series_id(&self.conn, &mut self.series, &q.stream, &q.thing, false)
                .map_err(|e| sql(&path, e))?
        else {
            return Ok(Vec::new());
        };
        // Which prop ids answer which property of the query, read back by which type.
        let mut wanted: HashMap<i64, (usize, BaseType)> = HashMap::new();
        for (id, name, bt) in self.props_of(series).map_err(|e| sql(&path, e))? {
            if let Some(i) = q.properties.iter().position(|p| *p == name) {
                wanted.insert(id, (i, bt));
            }
        }
        if wanted.is_empty() || q.limit == 0 || q.start > q.end {
            return Ok(Vec::new());
        }
        let order = if q.oldest_first { "ASC" } else { "DESC" };
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT ts, prop, value FROM samples WHERE series = ?1 AND ts BETWEEN ?2 AND ?3 ORDER BY ts {order}, seq {order}"
            ))
            .map_err(|e| sql(&path, e))?;
        let mut rows = st
            .query(params![series, q.start, q.end])
            .map_err(|e| sql(&path, e))?;
        let mut out: Vec<HistoryRow> = Vec::new();
        let mut current: Option<HistoryRow> = None;
        // Filling: each property's prop ids, and (oldest first) its last value so far.
        let mut ids_of: Vec<Vec<(i64, BaseType)>> = vec![Vec::new(); q.properties.len()];
        for (id, (i, bt)) in &wanted {
            ids_of[*i].push((*id, *bt));
        }
        let mut last: Vec<Option<Option<Json>>> = vec![None; q.properties.len()];
        let conn = &self.conn;
        let before = |i: usize, time: i64| -> rusqlite::Result<Option<Json>> {
            let marks = vec!["?"; ids_of[i].len()].join(", ");
            let mut st = conn.prepare_cached(&format!(
                "SELECT prop, value FROM samples WHERE series = ? AND ts < ? AND prop IN ({marks}) ORDER BY ts DESC, seq DESC LIMIT 1"
            ))?;
            let mut args: Vec<SqlValue> = vec![SqlValue::Integer(series), SqlValue::Integer(time)];
            args.extend(ids_of[i].iter().map(|(id, _)| SqlValue::Integer(*id)));
            st.query_row(rusqlite::params_from_iter(args), |r| {
                let prop: i64 = r.get(0)?;
                let bt = ids_of[i]
                    .iter()
                    .find(|(id, _)| *id == prop)
                    .map_or(BaseType::Json, |(_, bt)| *bt);
                Ok(decode(bt, r.get_ref(1)?))
            })
            .optional()
        };
        // A row is complete when the next timestamp starts; it is filled, then kept if the
        // filter takes it.
        let mut finish = |mut row: HistoryRow, out: &mut Vec<HistoryRow>| -> rusqlite::Result<()> {
            if q.fill_previous {
                let own: Vec<usize> = row.values.iter().map(|(i, _)| *i).collect();
                for (i, known) in last.iter().enumerate() {
                    if own.contains(&i) {
                        continue;
                    }
                    let filled = match (known, q.oldest_first) {
                        (Some(v), true) => v.clone(),
                        _ => before(i, row.time)?,
                    };
                    if let Some(v) = filled {
                        row.values.push((i, v));
                    }
                }
                if q.oldest_first {
                    for (i, slot) in last.iter_mut().enumerate() {
                        *slot = Some(
                            row.values
                                .iter()
                                .find(|(j, _)| *j == i)
                                .map(|(_, v)| v.clone()),
                        );
                    }
                }
            }
            row.values.sort_by_key(|(i, _)| *i);
            let keep = match &q.filter {
                None => true,
                Some(f) => query::matches(f, &|field| match field {
                    PropertyField::Timestamp => Some(Value::Int(row.time)),
                    PropertyField::Property(i) => row
                        .values
                        .iter()
                        .find(|(j, _)| *j == i)
                        .and_then(|(_, v)| query_value(v)),
                }),
            };
            if keep {
                out.push(row);
            }
            Ok(())
        };
        while let Some(r) = rows.next().map_err(|e| sql(&path, e))? {
            let ts: i64 = r.get(0).map_err(|e| sql(&path, e))?;
            let prop: i64 = r.get(1).map_err(|e| sql(&path, e))?;
            let Some((i, bt)) = wanted.get(&prop).copied() else {
                continue;
            };
            let value = decode(bt, r.get_ref(2).map_err(|e| sql(&path, e))?);
            // A row is one timestamp; a second value of a property at the same millisecond
            // starts a row of its own (nothing accepted is lost).
            if current
                .as_ref()
                .is_some_and(|c| c.time != ts || c.values.iter().any(|(j, _)| *j == i))
            {
                finish(current.take().expect("some"), &mut out).map_err(|e| sql(&path, e))?;
                if out.len() >= q.limit {
                    return Ok(out);
                }
            }
            let row = current.get_or_insert_with(|| HistoryRow {
                time: ts,
                values: Vec::new(),
            });
            row.values.push((i, value));
        }
        if let Some(c) = current {
            finish(c, &mut out).map_err(|e| sql(&path, e))?;
        }
        out.truncate(q.limit);
        Ok(out)
    }

    fn purge_properties(
        &mut self,
        stream: &str,
        thing: &str,
        start: i64,
        end: i64,
    ) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let Some(series) = Self::series_id(&self.conn, &mut self.series, stream, thing, false)
            .map_err(|e| sql(&path, e))?
        else {
            return Ok(0);
        };
        let n = self
            .conn
            .execute(
                "DELETE FROM samples WHERE series = ?1 AND ts BETWEEN ?2 AND ?3",
                params![series, start, end],
            )
            .map_err(|e| sql(&path, e))?;
        Ok(n as u64)
    }

    fn trim_value_stream(
        &mut self,
        stream: &str,
        before: i64,
        keep: u64,
    ) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let series: Vec<i64> = {
            let mut st = self
                .conn
                .prepare_cached("SELECT id FROM series WHERE stream = ?1")
                .map_err(|e| sql(&path, e))?;
            st.query_map([stream], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<i64>>>())
                .map_err(|e| sql(&path, e))?
        };
        let mut gone = 0u64;
        for s in series {
            // One series at a time, each its own short statements: writers wait for one
            // series' trim at most.
            gone += trim(&self.conn, "samples", "series", "seq", s, before, keep)
                .map_err(|e| sql(&path, e))?;
        }
        Ok(gone)
    }

    fn count_values(&mut self, stream: &str, thing: Option<&str>) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let n: i64 = match thing {
            Some(t) => self.conn.query_row(
                "SELECT count(*) FROM samples WHERE series = (SELECT id FROM series WHERE stream = ?1 AND thing = ?2)",
                params![stream, t],
                |r| r.get(0),
            ),
            None => self.conn.query_row(
                "SELECT count(*) FROM samples WHERE series IN (SELECT id FROM series WHERE stream = ?1)",
                params![stream],
                |r| r.get(0),
            ),
        }
        .map_err(|e| sql(&path, e))?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn logged(thing: &str, property: &str, bt: BaseType, time: i64, value: Json) -> Logged {
        Logged {
            stream: "VS".into(),
            thing: thing.into(),
            property: property.into(),
            base_type: bt,
            time,
            value,
            quality: None,
        }
    }

    fn query(properties: &[&str]) -> PropertyQuery {
        PropertyQuery {
            stream: "VS".into(),
            thing: "P".into(),
            properties: properties.iter().map(|p| p.to_string()).collect(),
            start: i64::MIN,
            end: i64::MAX,
            oldest_first: false,
            limit: 100,
            filter: None,
            fill_previous: false,
        }
    }

    #[test]
    fn h1_values_keep_their_base_types_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = SqliteHistory::open(&dir.path().join(FILE)).unwrap();
        let values = [
            (BaseType::Number, json!(8)),
            (BaseType::Number, json!(0.1)),
            (BaseType::Integer, json!(-7)),
            (BaseType::Long, json!(9_007_199_254_740_000i64)),
            (BaseType::Datetime, json!(1_764_000_000_123i64)),
            (BaseType::Boolean, json!(true)),
            (BaseType::String, json!("{\"not\": \"json\"}")),
            (BaseType::Json, json!({"a": [1, 2.5, null]})),
            (
                BaseType::Location,
                json!({"latitude": 48.1, "longitude": 11.5, "elevation": 520.25}),
            ),
            (
                BaseType::Infotable,
                json!({"dataShape": {"fieldDefinitions": {}}, "rows": []}),
            ),
        ];
        for (i, (bt, v)) in values.iter().enumerate() {
            h.append(&[logged("P", &format!("p{i}"), *bt, i as i64, v.clone())])
                .unwrap();
        }
        let names: Vec<String> = (0..values.len()).map(|i| format!("p{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut q = query(&names);
        q.oldest_first = true;
        let rows = h.query_properties(&q).unwrap();
        assert_eq!(rows.len(), values.len());
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.time, i as i64);
            assert_eq!(
                row.values,
                vec![(i, values[i].1.clone())],
                "{:?}",
                values[i]
            );
        }
    }

    #[test]
    fn h2_rows_group_by_time_newest_first_within_range_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = SqliteHistory::open(&dir.path().join(FILE)).unwrap();
        let mut batch = Vec::new();
        for t in 0..10 {
            batch.push(logged("P", "a", BaseType::Number, t, json!(t)));
            if t % 2 == 0 {
                batch.push(logged("P", "b", BaseType::Boolean, t, json!(t % 4 == 0)));
            }
            batch.push(logged("Q", "a", BaseType::Number, t, json!(100 + t)));
        }
        // Two values of one property at one time: two rows, the later one first.
        batch.push(logged("P", "a", BaseType::Number, 9, json!(99)));
        h.append(&batch).unwrap();
        let mut q = query(&["a", "b"]);
        q.start = 2;
        q.end = 9;
        q.limit = 3;
        let rows = h.query_properties(&q).unwrap();
        assert_eq!(
            rows,
            vec![
                HistoryRow {
                    time: 9,
                    values: vec![(0, json!(99))]
                },
                HistoryRow {
                    time: 9,
                    values: vec![(0, json!(9))]
                },
                HistoryRow {
                    time: 8,
                    values: vec![(0, json!(8)), (1, json!(true))]
                },
            ]
        );
        q.oldest_first = true;
        q.limit = 100;
        let rows = h.query_properties(&q).unwrap();
        assert_eq!(rows.first().unwrap().time, 2);
        assert_eq!(rows.last().unwrap().values, vec![(0, json!(99))]);
        // A filter over a row's fields.
        let schema = Fields(vec![("a", Type::Real), ("b", Type::Bool)]);
        q.filter = Some(
            Filter::parse_with(
                &json!({"type": "EQ", "fieldName": "b", "value": false}),
                &schema,
            )
            .unwrap(),
        );
        let times: Vec<i64> = h
            .query_properties(&q)
            .unwrap()
            .iter()
            .map(|r| r.time)
            .collect();
        assert_eq!(times, vec![2, 6]);
        assert_eq!(h.count_values("VS", Some("P")).unwrap(), 16);
        assert_eq!(h.purge_properties("VS", "P", 0, 4).unwrap(), 8);
        assert_eq!(h.count_values("VS", Some("Q")).unwrap(), 10);
    }

    #[test]
    fn h2_fill_previous_gives_a_row_the_last_value_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = SqliteHistory::open(&dir.path().join(FILE)).unwrap();
        h.append(&[
            logged("P", "a", BaseType::Number, 1, json!(1)),
            logged("P", "b", BaseType::String, 2, json!("x")),
            logged("P", "a", BaseType::Number, 3, json!(3)),
            logged("P", "b", BaseType::String, 4, json!("y")),
        ])
        .unwrap();
        let mut q = query(&["a", "b"]);
        q.fill_previous = true;
        q.start = 2;
        for oldest_first in [true, false] {
            q.oldest_first = oldest_first;
            let mut rows = h.query_properties(&q).unwrap();
            if !oldest_first {
                rows.reverse();
            }
            // Time 2: a from time 1 (before the range); time 3: b from 2; time 4: a from 3.
            assert_eq!(
                rows.iter().map(|r| r.values.clone()).collect::<Vec<_>>(),
                vec![
                    vec![(0, json!(1)), (1, json!("x"))],
                    vec![(0, json!(3)), (1, json!("x"))],
                    vec![(0, json!(3)), (1, json!("y"))],
                ],
                "oldest first: {oldest_first}"
            );
        }
        q.fill_previous = false;
        q.oldest_first = true;
        assert_eq!(
            h.query_properties(&q).unwrap()[0].values,
            vec![(1, json!("x"))]
        );
    }

    struct Fields(Vec<(&'static str, Type)>);
    impl query::Schema for Fields {
        type Field = PropertyField;
        fn field(&self, name: &str) -> Option<(PropertyField, Type)> {
            if name == "timestamp" {
                return Some((PropertyField::Timestamp, Type::Int));
            }
            let i = self.0.iter().position(|(n, _)| *n == name)?;
            Some((PropertyField::Property(i), self.0[i].1))
        }
        fn names(&self) -> String {
            String::new()
        }
    }

    #[test]
    fn h4_a_declared_index_serves_queries_of_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = SqliteHistory::open(&dir.path().join(FILE)).unwrap();
        h.set_indexes("T", &["qty".into()]).unwrap();
        let q = EntryQuery {
            stream: "T".into(),
            fields: vec![("qty".into(), BaseType::Integer)],
            start: i64::MIN,
            end: i64::MAX,
            oldest_first: true,
            limit: 10,
            filter: Some(Filter::Cmp(
                EntryField::Data(0),
                query::Op::Eq,
                Value::Int(3),
            )),
            sorts: vec![],
            source: None,
            tags: vec![],
        };
        let (text, params) = select(&q, "rows", "tbl", 1, false, "key ASC");
        let plan: Vec<String> = {
            let mut st = h
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {text}"))
                .unwrap();
            st.query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
        };
        assert!(plan.iter().any(|p| p.contains("rows_1_qty")), "{plan:?}");
        // Dropped when no longer declared.
        h.set_indexes("T", &[]).unwrap();
        let n: i64 = h
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'rows_1_qty'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0);
        assert!(h.set_indexes("T", &["a'b".into()]).is_err());
    }

    #[test]
    fn h5_trimming_keeps_the_newest_per_thing_and_drops_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = SqliteHistory::open(&dir.path().join(FILE)).unwrap();
        let batch: Vec<Logged> = (0..20)
            .flat_map(|t| {
                [
                    logged("P", "a", BaseType::Number, t, json!(t)),
                    logged("Q", "a", BaseType::Number, t, json!(t)),
                ]
            })
            .collect();
        h.append(&batch).unwrap();
        assert_eq!(h.trim_value_stream("VS", 5, 0).unwrap(), 10);
        assert_eq!(h.trim_value_stream("VS", 5, 4).unwrap(), 22);
        let rows = h.query_properties(&query(&["a"])).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.time).collect::<Vec<_>>(),
            vec![19, 18, 17, 16]
        );
        // Reopened, the sequence goes on: nothing collides.
        drop(h);
        let mut h = SqliteHistory::open(&dir.path().join(FILE)).unwrap();
        h.append(&[logged("P", "a", BaseType::Number, 19, json!(-1))])
            .unwrap();
        assert_eq!(
            h.query_properties(&query(&["a"])).unwrap()[0].values,
            vec![(0, json!(-1))]
        );
    }
}
