//! Values between the AlwaysOn protocol (`thinghost_alwayson::Value`, typed by the vendor's
//! base-type bytes) and the model's JSON (typed by `BaseType`). Pure: no I/O.

use crate::api::Reply;
use base64::Engine as _;
use serde_json::{Map, Value as Json, json};
use thinghost_alwayson::{Field, Table, Value, codes};
use thinghost_core::BaseType;

/// The most memory the JSON of one message's InfoTables may take: 32 times the largest
/// message (the REST API's body budget, K5). A table's JSON repeats each field's name in every
/// row, so a small message can describe a large value: it is measured before it is built.
pub const MAX_JSON_BYTES: usize = 32 << 20;

/// About how many bytes `t` takes as JSON (names repeated per row, nested tables counted).
pub fn json_cost(t: &Table) -> usize {
    let names: usize = t.fields.iter().map(|f| f.name.len() + 48).sum();
    let mut cost = names.saturating_mul(2);
    for r in &t.rows {
        cost = cost.saturating_add(names);
        for v in r {
            cost = cost.saturating_add(value_cost(v));
        }
        if cost > MAX_JSON_BYTES {
            return cost;
        }
    }
    cost
}

fn value_cost(v: &Value) -> usize {
    match v {
        Value::Text(_, s) => s.len() + 16,
        Value::Bytes(_, b) => b.len() * 4 / 3 + 16,
        Value::Variant(inner) => value_cost(inner),
        Value::InfoTable(t) => json_cost(t),
        _ => 32,
    }
}

/// Refuses a table whose JSON would take more than [`MAX_JSON_BYTES`].
pub fn within_budget(t: Option<&Table>) -> Result<(), String> {
    match t {
        Some(t) if json_cost(t) > MAX_JSON_BYTES => Err(format!(
            "the InfoTable would take more than {} MiB as JSON (its field names repeat in every row); send fewer rows or shorter names",
            MAX_JSON_BYTES >> 20
        )),
        _ => Ok(()),
    }
}

/// The wire's base-type byte of a model type (a type the wire does not name goes as STRING).
pub fn wire_type(bt: BaseType) -> u8 {
    codes::base_type_byte(bt.name()).unwrap_or(codes::STRING)
}

/// The model's type of a wire base-type byte: the same name where the model has it (LOCATION
/// included); JSON for a VARIANT (its JSON carries its shape), STRING for the other string-like
/// types and for BLOB and IMAGE (base64).
pub fn model_type(byte: u8) -> BaseType {
    if let Some(bt) = codes::base_type_name(byte).and_then(BaseType::parse) {
        return bt;
    }
    match codes::form(byte) {
        Some(codes::Form::Location | codes::Form::Variant) => BaseType::Json,
        _ => BaseType::String,
    }
}

/// A protocol value as the model's JSON: numbers, strings, booleans, DATETIME as epoch
/// milliseconds, LOCATION as `{longitude, latitude, elevation}`, BLOB and IMAGE as base64, an
/// InfoTable in its JSON form, a VARIANT as what it holds.
pub fn to_json(v: &Value) -> Json {
    match v.unwrapped() {
        Value::Nothing | Value::Variant(_) => Json::Null,
        Value::Text(t, s) if *t == codes::JSON => {
            serde_json::from_str(s).unwrap_or_else(|_| json!(s))
        }
        Value::Text(_, s) => json!(s),
        Value::Number(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Value::Integer(i) => json!(i),
        Value::Long(l) => json!(l),
        Value::Boolean(b) => json!(b),
        Value::Datetime(ms) => json!(ms),
        Value::Location {
            longitude,
            latitude,
            elevation,
        } => json!({"longitude": longitude, "latitude": latitude, "elevation": elevation}),
        Value::Bytes(_, b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::InfoTable(t) => table_json(t),
    }
}

/// An InfoTable from the wire in the model's JSON form.
pub fn table_json(t: &Table) -> Json {
    let defs: Map<String, Json> = t
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                f.name.clone(),
                json!({"name": f.name, "baseType": model_type(f.base_type).name(), "ordinal": i, "aspects": {}}),
            )
        })
        .collect();
    let rows: Vec<Json> = t.rows.iter().map(|r| Json::Object(row(t, r))).collect();
    json!({"dataShape": {"fieldDefinitions": defs}, "rows": rows})
}

/// One row of a wire InfoTable as a JSON object by field name.
pub fn row(t: &Table, r: &[Value]) -> Map<String, Json> {
    t.fields
        .iter()
        .zip(r)
        .map(|(f, v)| (f.name.clone(), to_json(v)))
        .collect()
}

/// The first row of a wire InfoTable as a JSON object (an empty one when it has none): a
/// request's parameters, an event's data.
pub fn first_row(t: Option<&Table>) -> Map<String, Json> {
    match t {
        Some(t) => t.rows.first().map(|r| row(t, r)).unwrap_or_default(),
        None => Map::new(),
    }
}

/// A model value of type `bt` on the wire. A value that is not of its type goes as its text
/// (the model checked it when it was written: this is for values that came another way).
pub fn from_json(bt: BaseType, v: &Json) -> Value {
    if v.is_null() {
        return Value::Nothing;
    }
    let text = || match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    match bt {
        BaseType::Nothing => Value::Nothing,
        BaseType::Number => v
            .as_f64()
            .map_or_else(|| Value::string(text()), Value::Number),
        BaseType::Integer => v
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map_or_else(|| Value::string(text()), Value::Integer),
        BaseType::Long => v
            .as_i64()
            .map_or_else(|| Value::string(text()), Value::Long),
        BaseType::Boolean => v
            .as_bool()
            .map_or_else(|| Value::string(text()), Value::Boolean),
        BaseType::Datetime => match v {
            Json::Number(n) => n
                .as_i64()
                .map_or_else(|| Value::string(text()), Value::Datetime),
            Json::String(s) => thinghost_core::types::parse_datetime(s)
                .map_or_else(|_| Value::string(text()), Value::Datetime),
            _ => Value::string(text()),
        },
        BaseType::Location => {
            let num = |k: &str| v.get(k).and_then(Json::as_f64);
            match (num("latitude"), num("longitude")) {
                (Some(latitude), Some(longitude)) => Value::Location {
                    longitude,
                    latitude,
                    elevation: num("elevation").unwrap_or(0.0),
                },
                _ => Value::Text(codes::JSON, text()),
            }
        }
        BaseType::Infotable => match thinghost_core::infotable::InfoTable::from_json(v) {
            Ok(t) => Value::InfoTable(Box::new(wire_table(&t))),
            Err(_) => Value::Text(codes::JSON, text()),
        },
        other => Value::Text(wire_type(other), text()),
    }
}

/// A model InfoTable on the wire.
pub fn wire_table(t: &thinghost_core::infotable::InfoTable) -> Table {
    Table {
        fields: t
            .fields
            .iter()
            .map(|f| Field::new(f.name.clone(), wire_type(f.base_type)))
            .collect(),
        rows: t
            .rows
            .iter()
            .map(|r| {
                t.fields
                    .iter()
                    .map(|f| from_json(f.base_type, r.get(&f.name).unwrap_or(&Json::Null)))
                    .collect()
            })
            .collect(),
    }
}

/// An answer of the API as the content of a protocol response: its InfoTable (a JSON answer
/// that is not one goes as one JSON field `result`); `None` for a void answer.
pub fn reply_table(reply: Reply) -> Option<Table> {
    match reply {
        Reply::Empty => None,
        Reply::Table(t) => Some(wire_table(&t)),
        Reply::One(o) => {
            let mut t = Table::single(o.name.to_string(), from_json(o.base_type, &o.value));
            t.fields[0].base_type = wire_type(o.base_type);
            Some(t)
        }
        Reply::Json(j) => match thinghost_core::infotable::InfoTable::from_json(&j) {
            Ok(t) => Some(wire_table(&t)),
            Err(_) => {
                let mut t = Table::single("result", Value::Text(codes::JSON, j.to_string()));
                t.fields[0].base_type = codes::JSON;
                Some(t)
            }
        },
    }
}

/// A device's answer as the API's: the value of `field` (else the only field) of its first row
/// as a one-value answer named `name` of type `bt`, checked against the type; or, for an
/// INFOTABLE (or when `bt` is `None`), the whole table.
pub fn answer_reply(
    content: Option<&Table>,
    name: &str,
    field: &str,
    bt: BaseType,
) -> Result<Reply, String> {
    within_budget(content)?;
    let Some(t) = content else {
        return Ok(match bt {
            BaseType::Nothing => Reply::Empty,
            _ => Reply::One(thinghost_core::infotable::OneValue {
                name: name.to_string().into(),
                base_type: bt,
                value: Json::Null,
            }),
        });
    };
    if bt == BaseType::Infotable {
        let json = table_json(t);
        return thinghost_core::infotable::InfoTable::from_json(&json)
            .map(|t| Reply::Json(t.into_json()))
            .map_err(|e| format!("the device's answer is not an InfoTable: {e}"));
    }
    if bt == BaseType::Nothing {
        return Ok(Reply::Empty);
    }
    let column = t
        .field(field)
        .or_else(|| (t.fields.len() == 1).then_some(0));
    let raw = match (column, t.rows.first()) {
        (Some(c), Some(r)) => r.get(c).map(to_json).unwrap_or(Json::Null),
        _ => Json::Null,
    };
    let value = bt
        .normalize(&raw)
        .map_err(|e| format!("the device's answer: {e}"))?;
    Ok(Reply::One(thinghost_core::infotable::OneValue {
        name: name.to_string().into(),
        base_type: bt,
        value,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_values_go_and_come_back() {
        for (bt, v) in [
            (BaseType::Number, json!(21.5)),
            (BaseType::Integer, json!(-7)),
            (BaseType::Long, json!(9_007_199_254_740_000_i64)),
            (BaseType::Boolean, json!(true)),
            (BaseType::Datetime, json!(1_700_000_000_000_i64)),
            (BaseType::String, json!("déjà vu")),
            (BaseType::Thingname, json!("Pump1")),
            (BaseType::Json, json!({"a": [1, 2]})),
        ] {
            let wire = from_json(bt, &v);
            assert_eq!(to_json(&wire), v, "{bt}");
            assert_eq!(bt.normalize(&to_json(&wire)).unwrap(), v, "{bt}");
        }
        assert_eq!(from_json(BaseType::Number, &Json::Null), Value::Nothing);
    }

    #[test]
    fn tables_go_and_come_back() {
        let t = thinghost_core::infotable::InfoTable::from_json(&json!({
            "dataShape": {"fieldDefinitions": {
                "a": {"name": "a", "baseType": "NUMBER", "ordinal": 0},
                "b": {"name": "b", "baseType": "STRING", "ordinal": 1}}},
            "rows": [{"a": 1.5, "b": "x"}, {"a": 2.0, "b": null}]
        }))
        .unwrap();
        let wire = wire_table(&t);
        assert_eq!(wire.fields[0].base_type, codes::NUMBER);
        let back = thinghost_core::infotable::InfoTable::from_json(&table_json(&wire)).unwrap();
        assert_eq!(back.fields, t.fields);
        assert_eq!(back.rows[0], t.rows[0]);
    }

    #[test]
    fn a_table_whose_json_would_be_huge_is_measured_before_it_is_built() {
        // 1 MiB on the wire: a 500 KB field name and 100,000 empty rows would be 50 GB of JSON.
        let t = Table {
            fields: vec![Field::new("n".repeat(500_000), codes::STRING)],
            rows: vec![vec![Value::Nothing]; 100_000],
        };
        assert!(within_budget(Some(&t)).is_err());
        let small = Table::single("Temp", Value::Number(1.0));
        assert!(within_budget(Some(&small)).is_ok());
        assert!(within_budget(None).is_ok());
    }

    #[test]
    fn a_device_answer_becomes_a_checked_value() {
        let t = Table::single("Temp", Value::Number(21.5));
        let r = answer_reply(Some(&t), "temperature", "Temp", BaseType::Number).unwrap();
        assert_eq!(r.first_value("temperature"), json!(21.5));
        let wrong = Table::single("Temp", Value::string("hot"));
        assert!(answer_reply(Some(&wrong), "temperature", "Temp", BaseType::Number).is_err());
    }
}
