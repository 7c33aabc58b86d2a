//! H4: the provider's SQL against the reference: every query operator, over random rows with
//! missing values, must select exactly the rows `query::matches` (the in-memory evaluator with
//! SQLite's meaning) selects; and a data table's key constraints against a map.

use proptest::prelude::*;
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeMap;
use thinghost_core::BaseType;
use thinghost_store::history::{
    EntryField, EntryQuery, History, Put, SqliteHistory, StreamEntry, TableRow, query_value,
};
use thinghost_store::query::{self, Filter, Op, Value};

/// The DataShape of the rows: a number, an integer, text and a boolean.
fn fields() -> Vec<(String, BaseType)> {
    vec![
        ("n".into(), BaseType::Number),
        ("i".into(), BaseType::Integer),
        ("s".into(), BaseType::String),
        ("b".into(), BaseType::Boolean),
    ]
}

fn row_values() -> impl Strategy<Value = Map<String, Json>> {
    (
        proptest::option::of(prop_oneof![
            (-5i64..5).prop_map(|n| json!(n)),
            (-50i64..50).prop_map(|n| json!(n as f64 / 10.0))
        ]),
        proptest::option::of(-5i64..5),
        proptest::option::of(prop_oneof![
            Just("pump"),
            Just("Pump7"),
            Just("valve"),
            Just(""),
            Just("ä_b")
        ]),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(n, i, s, b)| {
            let mut m = Map::new();
            if let Some(n) = n {
                m.insert("n".into(), n);
            }
            if let Some(i) = i {
                m.insert("i".into(), json!(i));
            }
            if let Some(s) = s {
                m.insert("s".into(), json!(s));
            }
            if let Some(b) = b {
                m.insert("b".into(), json!(b));
            }
            m
        })
}

/// A value of a field's type (sometimes of another numeric kind, as a request may send).
fn value_for(field: usize) -> BoxedStrategy<Value> {
    match field {
        0 | 1 => prop_oneof![
            (-6i64..6).prop_map(Value::Int),
            (-60i64..60).prop_map(|n| Value::Real(n as f64 / 10.0))
        ]
        .boxed(),
        2 => prop_oneof![
            Just("pump"),
            Just("Pump7"),
            Just("valve"),
            Just("p%"),
            Just("_ump%"),
            Just("")
        ]
        .prop_map(|s| Value::Text(s.to_string()))
        .boxed(),
        _ => any::<bool>().prop_map(Value::Bool).boxed(),
    }
}

/// Every operator equally often: first the operator, then a field it applies to (LIKE: text).
fn leaf() -> BoxedStrategy<Filter<EntryField>> {
    (0usize..14, 0usize..4)
        .prop_flat_map(|(kind, f)| {
            let cmp = [
                Op::Eq,
                Op::Neq,
                Op::Gt,
                Op::Ge,
                Op::Lt,
                Op::Le,
                Op::Like,
                Op::NotLike,
            ];
            let f = if kind == 6 || kind == 7 { 2 } else { f };
            let field = EntryField::Data(f);
            match kind {
                0..=7 => value_for(f)
                    .prop_map(move |v| Filter::Cmp(field, cmp[kind], v))
                    .boxed(),
                8 => (value_for(f), value_for(f))
                    .prop_map(move |(a, b)| Filter::Between(field, a, b))
                    .boxed(),
                9 => (value_for(f), value_for(f))
                    .prop_map(move |(a, b)| Filter::NotBetween(field, a, b))
                    .boxed(),
                10 => proptest::collection::vec(value_for(f), 1..4)
                    .prop_map(move |v| Filter::In(field, v))
                    .boxed(),
                11 => proptest::collection::vec(value_for(f), 1..4)
                    .prop_map(move |v| Filter::NotIn(field, v))
                    .boxed(),
                12 => Just(Filter::Missing(field)).boxed(),
                _ => Just(Filter::NotMissing(field)).boxed(),
            }
        })
        .boxed()
}

fn filter() -> impl Strategy<Value = Filter<EntryField>> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Filter::And),
            proptest::collection::vec(inner, 1..4).prop_map(Filter::Or),
        ]
    })
}

fn query_of(table: &str, filter: Option<Filter<EntryField>>) -> EntryQuery {
    EntryQuery {
        stream: table.into(),
        fields: fields(),
        start: i64::MIN,
        end: i64::MAX,
        oldest_first: true,
        limit: 100_000,
        filter,
        sorts: vec![],
        source: None,
        tags: vec![],
    }
}

fn entry(values: Map<String, Json>) -> StreamEntry {
    StreamEntry {
        source: "test".into(),
        source_type: "User".into(),
        values,
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn h4_every_query_operator_selects_what_the_reference_selects(
        data in proptest::collection::vec(row_values(), 0..30),
        f in filter(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut h = SqliteHistory::open(&dir.path().join("history.db")).unwrap();
        for (k, values) in data.iter().enumerate() {
            let row = TableRow { key: json!([k]).to_string(), entry: entry(values.clone()) };
            prop_assert_eq!(h.put_row("T", &row, Put::Insert).unwrap(), Put::Insert);
        }
        let names = fields();
        let expected: Vec<String> = {
            let mut keys: Vec<(String, bool)> = data
                .iter()
                .enumerate()
                .map(|(k, values)| {
                    let get = |field: EntryField| match field {
                        EntryField::Data(i) => values.get(&names[i].0).and_then(query_value),
                        _ => None,
                    };
                    (json!([k]).to_string(), query::matches(&f, &get))
                })
                .collect();
            keys.sort();
            keys.into_iter().filter(|(_, m)| *m).map(|(k, _)| k).collect()
        };
        let got: Vec<String> = h
            .query_rows(&query_of("T", Some(f.clone())))
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        prop_assert_eq!(got, expected, "filter {:?}", f);
        // The same filter deletes exactly those rows.
        let selected = h.query_rows(&query_of("T", Some(f.clone()))).unwrap().len() as u64;
        prop_assert_eq!(h.delete_rows("T", None, &names, Some(&f)).unwrap(), selected);
        prop_assert_eq!(h.count_rows("T").unwrap(), data.len() as u64 - selected);
    }

    #[test]
    fn h4_key_constraints_hold_against_a_map(
        ops in proptest::collection::vec((0u8..4, 0u8..6, -3i64..3), 1..60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut h = SqliteHistory::open(&dir.path().join("history.db")).unwrap();
        let mut reference: BTreeMap<String, i64> = BTreeMap::new();
        for (op, key, value) in ops {
            let key = json!([format!("k{key}")]).to_string();
            let mut values = Map::new();
            values.insert("i".into(), json!(value));
            let row = TableRow { key: key.clone(), entry: entry(values) };
            match op {
                0 => {
                    let done = h.put_row("T", &row, Put::Insert).unwrap();
                    match reference.entry(key) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            prop_assert_eq!(done, Put::Duplicate);
                        }
                        std::collections::btree_map::Entry::Vacant(v) => {
                            prop_assert_eq!(done, Put::Insert);
                            v.insert(value);
                        }
                    }
                }
                1 => {
                    h.put_row("T", &row, Put::Upsert).unwrap();
                    reference.insert(key, value);
                }
                2 => {
                    let done = h.put_row("T", &row, Put::Update).unwrap();
                    match reference.get_mut(&key) {
                        Some(slot) => {
                            prop_assert_eq!(done, Put::Upsert);
                            *slot = value;
                        }
                        None => prop_assert_eq!(done, Put::Missing),
                    }
                }
                _ => {
                    let gone = h.delete_rows("T", Some(&key), &[], None).unwrap();
                    prop_assert_eq!(gone, u64::from(reference.remove(&key).is_some()));
                }
            }
        }
        let stored: BTreeMap<String, i64> = h
            .query_rows(&query_of("T", None))
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.entry.values["i"].as_i64().unwrap()))
            .collect();
        prop_assert_eq!(stored, reference);
    }
}
