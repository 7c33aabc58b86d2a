//! The audit log's storage model (DOMAIN U1-U3): entries, their hash chain, and queries.
//!
//! Entries are append-only. Each stores the hash of its predecessor and its own hash over a
//! canonical encoding (`entry_hash`), so that changing, removing or inserting an entry anywhere
//! breaks the chain at that point, and `verify` names the first broken link. Archiving or purging
//! removes the oldest entries only; the hash before the first kept entry is kept as the chain's
//! anchor.
//!
//! Queries are values ([`AuditQuery`], with the vendor's QUERY filters as [`Filter`]) that each
//! backend translates to its own language; the SQLite backend answers them from indexes on
//! (source, time), (user, time), (category, time) and time.

use crate::AuditRecord;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// The chain's start: the predecessor hash of the first entry ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A stored entry.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub record: AuditRecord,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an entry whose predecessor's hash is `prev`: SHA-256 (hex) of `prev`, a newline,
/// and the JSON array `[timestamp, user, category, message_key, args, source, source_type]`
/// (serde_json writes object keys in sorted order, so the encoding is canonical).
pub fn entry_hash(prev: &str, r: &AuditRecord) -> String {
    entry_hash_at(prev, r.timestamp, r)
}

/// [`entry_hash`] of `r` stamped at `timestamp` (the time the chain stores, which may be later
/// than the record's own: see the store's `append_in`).
pub fn entry_hash_at(prev: &str, timestamp: i64, r: &AuditRecord) -> String {
    // The canonical encoding is the JSON array [timestamp, user, category, message key, args,
    // source, source type] (objects with sorted keys): a tuple of references serializes to
    // exactly that, without copying the record into a `Value` first.
    let canonical = serde_json::to_vec(&(
        timestamp,
        &r.user,
        &r.category,
        &r.message_key,
        &r.args,
        &r.source,
        &r.source_type,
    ))
    .expect("an audit record serializes");
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(&canonical);
    let digest = h.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// What `VerifyAuditChain` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Entries checked.
    pub checked: u64,
    /// The first broken link: the entry's id and what is wrong with it.
    pub broken: Option<(i64, String)>,
}

/// Checks entries in id order against `anchor` (the hash before the first of them).
pub fn verify(anchor: &str, entries: impl IntoIterator<Item = AuditEntry>) -> ChainReport {
    let mut prev = anchor.to_string();
    let mut checked = 0;
    for e in entries {
        checked += 1;
        if e.prev_hash != prev {
            return ChainReport {
                checked,
                broken: Some((
                    e.id,
                    format!(
                        "entry {} names {} as its predecessor's hash, but the entry before it hashes to {prev}: an entry before it was removed, inserted or changed",
                        e.id, e.prev_hash
                    ),
                )),
            };
        }
        let computed = entry_hash(&e.prev_hash, &e.record);
        if e.hash != computed {
            return ChainReport {
                checked,
                broken: Some((
                    e.id,
                    format!(
                        "entry {} was changed after it was written: its content hashes to {computed}, not to its stored {}",
                        e.id, e.hash
                    ),
                )),
            };
        }
        prev = e.hash;
    }
    ChainReport {
        checked,
        broken: None,
    }
}

/// A field of an entry, as queries name it (the vendor's `AuditHistory` names, and ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Id,
    Timestamp,
    User,
    Category,
    MessageKey,
    Source,
    SourceType,
    /// The entry's arguments as JSON text (LIKE searches it).
    Args,
}

impl Field {
    /// From a QUERY's `fieldName`.
    pub fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "id" => Field::Id,
            "timestamp" => Field::Timestamp,
            "user" => Field::User,
            "auditCategory" | "category" => Field::Category,
            "messageKey" | "message" => Field::MessageKey,
            "source" => Field::Source,
            "sourceType" => Field::SourceType,
            "args" | "arguments" => Field::Args,
            _ => return None,
        })
    }

    pub const NAMES: &'static str =
        "id, timestamp, user, auditCategory, message (the message key), source, sourceType, args";

    /// The column in the SQLite backend.
    pub fn column(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::Timestamp => "timestamp",
            Field::User => "user",
            Field::Category => "category",
            Field::MessageKey => "message_key",
            Field::Source => "source",
            Field::SourceType => "source_type",
            Field::Args => "args",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Field::Id | Field::Timestamp)
    }
}

/// The audit's QUERY filters (the shared parser, [`crate::query`], over the audit's fields).
pub type Filter = crate::query::Filter<Field>;
pub use crate::query::{MAX_FILTER_VALUES, Op, Value};

/// The fields of an audit entry a query may name.
pub struct AuditFields;

impl crate::query::Schema for AuditFields {
    type Field = Field;
    fn field(&self, name: &str) -> Option<(Field, crate::query::Type)> {
        let f = Field::parse(name)?;
        Some((
            f,
            if f.numeric() {
                crate::query::Type::Int
            } else {
                crate::query::Type::Text
            },
        ))
    }
    fn names(&self) -> String {
        Field::NAMES.to_string()
    }
}

/// A query: the fixed criteria of `QueryAuditHistory`, the QUERY filter, sorts and a page.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct AuditQuery {
    /// Inclusive bounds, epoch milliseconds.
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub category: Option<String>,
    pub user: Option<String>,
    /// The entity (`Things/Pump1`).
    pub source: Option<String>,
    pub filter: Option<Filter>,
    /// (field, ascending); none: newest first.
    pub sorts: Vec<(Field, bool)>,
    pub offset: u64,
    pub limit: u64,
}

impl crate::query::Filter<Field> {
    /// Parses the `filters` part of the vendor's QUERY JSON over the audit's fields.
    pub fn parse(v: &Json) -> Result<Filter, String> {
        Filter::parse_with(v, &AuditFields)
    }
}

/// Parses the `sorts` of a QUERY: `[{"fieldName": "timestamp", "isAscending": false}]`.
pub fn parse_sorts(v: &Json) -> Result<Vec<(Field, bool)>, String> {
    crate::query::parse_sorts(v, &AuditFields)
}

/// A filter as SQL with its parameters (for the SQLite backend): field names come from a fixed
/// list, values are always parameters.
pub(crate) fn to_sql(f: &Filter, params: &mut Vec<rusqlite::types::Value>) -> String {
    crate::query::to_sql(f, &|field: Field| field.column().to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(user: &str) -> AuditRecord {
        AuditRecord {
            timestamp: 1,
            user: user.into(),
            category: "MODEL".into(),
            message_key: "created".into(),
            args: json!({"b": 1, "a": 2}),
            source: "Things/P".into(),
            source_type: "Thing".into(),
        }
    }

    fn chain(users: &[&str]) -> Vec<AuditEntry> {
        let mut prev = GENESIS.to_string();
        users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let r = record(u);
                let hash = entry_hash(&prev, &r);
                let e = AuditEntry {
                    id: i as i64 + 1,
                    record: r,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    /// The hash of an entry never changes between versions (chains written before must still
    /// verify): it is SHA-256 over `prev`, a newline and the JSON array of the record's fields.
    #[test]
    fn u2_the_entry_hash_is_the_documented_encoding() {
        let r = AuditRecord {
            timestamp: 1_764_000_000_123,
            user: "änn \"q\"".into(),
            category: "MODEL".into(),
            message_key: "entityCreated".into(),
            args: json!({"z": [1, 2.5, null], "a": {"y": "ü\n", "b": true}}),
            source: "Things/P 1".into(),
            source_type: "Thing".into(),
        };
        let canonical = json!([
            r.timestamp,
            r.user,
            r.category,
            r.message_key,
            r.args,
            r.source,
            r.source_type
        ])
        .to_string();
        let mut h = Sha256::new();
        h.update(b"prev\n");
        h.update(canonical.as_bytes());
        let expected = thinghost_core::hex(&h.finalize());
        assert_eq!(entry_hash("prev", &r), expected);
    }

    #[test]
    fn u2_a_changed_removed_or_inserted_entry_breaks_the_chain_at_that_entry() {
        let good = chain(&["a", "b", "c", "d"]);
        assert_eq!(
            verify(GENESIS, good.clone()),
            ChainReport {
                checked: 4,
                broken: None
            }
        );
        let mut changed = good.clone();
        changed[1].record.user = "mallory".into();
        let r = verify(GENESIS, changed);
        assert_eq!(r.broken.as_ref().unwrap().0, 2, "{r:?}");
        assert!(r.broken.unwrap().1.contains("changed after it was written"));
        let mut removed = good.clone();
        removed.remove(2);
        assert_eq!(verify(GENESIS, removed).broken.unwrap().0, 4);
        // An archived prefix: the chain goes on from its anchor.
        assert_eq!(verify(&good[1].hash, good[2..].to_vec()).broken, None);
    }

    #[test]
    fn u3_a_filter_holds_at_most_ten_thousand_values_in_all() {
        let values: Vec<i64> = (0..1000).collect();
        let inner = json!({"type": "IN", "fieldName": "id", "values": values});
        let ten = json!({"type": "And", "filters": vec![inner.clone(); 10]});
        assert!(Filter::parse(&ten).is_ok());
        let eleven = json!({"type": "And", "filters": vec![inner; 11]});
        let e = Filter::parse(&eleven).unwrap_err();
        assert!(e.contains("11000 values in all"), "{e}");
    }

    #[test]
    fn u3_query_filters_parse_with_their_errors_named() {
        let f = Filter::parse(&json!({"type": "And", "filters": [
            {"type": "EQ", "fieldName": "user", "value": "ann"},
            {"type": "Between", "fieldName": "timestamp", "from": "2026-01-01T00:00:00Z", "to": 2000000000000i64},
            {"type": "in", "fieldName": "auditCategory", "values": ["MODEL", "SECURITY"]},
            {"type": "LIKE", "fieldName": "message", "value": "perm*"}
        ]}))
        .unwrap();
        let mut params = Vec::new();
        let sql = to_sql(&f, &mut params);
        assert_eq!(
            sql,
            "(user = ? AND timestamp BETWEEN ? AND ? AND category IN (?, ?) AND message_key LIKE ?)"
        );
        assert_eq!(params.len(), 6);
        assert_eq!(params[5], rusqlite::types::Value::Text("perm%".into()));
        for (bad, says) in [
            (
                json!({"type": "EQ", "fieldName": "password", "value": 1}),
                "no field",
            ),
            (
                json!({"type": "SOUNDEX", "fieldName": "user", "value": 1}),
                "not a filter type",
            ),
            (
                json!({"type": "GT", "fieldName": "timestamp", "value": "soon"}),
                "neither a date",
            ),
            (json!({"type": "And", "filters": []}), "1 to 64"),
            (
                json!({"type": "EQ", "fieldName": "user; DROP TABLE audit", "value": 1}),
                "no field",
            ),
        ] {
            let e = Filter::parse(&bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
