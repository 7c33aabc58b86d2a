//! The vendor's QUERY (`{"filters": {...}, "sorts": [...]}`), parsed once for every place that
//! takes one: the audit (U3), value streams (H2), streams (H3) and data tables (H4).
//!
//! A [`Schema`] says which fields a query may name and how each compares (its [`Type`]); the
//! parser checks every field name against it and turns every value into that type, so nothing a
//! client sends reaches SQL but bound parameters. Each backend translates a [`Filter`] (SQLite:
//! [`to_sql`], with the columns the caller names); [`matches`] evaluates one in memory with the
//! same meaning as SQLite's (a comparison with a missing value is false, `LIKE` ignores ASCII
//! case), which the tests hold the SQL translation to.

use serde_json::Value as Json;
use std::cmp::Ordering;

/// How a field's values compare and bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// Whole numbers, and dates (epoch milliseconds; ISO 8601 text accepted).
    Int,
    /// Numbers.
    Real,
    Text,
    Bool,
}

/// The fields a query may name.
pub trait Schema {
    type Field: Copy + PartialEq + std::fmt::Debug;
    /// The field a QUERY's `fieldName` names, and its type.
    fn field(&self, name: &str) -> Option<(Self::Field, Type)>;
    /// The names, for an error message.
    fn names(&self) -> String;
}

/// A comparison of a QUERY filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    NotLike,
}

/// A value in a filter, of its field's type.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

/// The vendor's QUERY filters, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter<F> {
    And(Vec<Filter<F>>),
    Or(Vec<Filter<F>>),
    Cmp(F, Op, Value),
    Between(F, Value, Value),
    NotBetween(F, Value, Value),
    In(F, Vec<Value>),
    NotIn(F, Vec<Value>),
    /// The field has no value (`MISSINGVALUE`).
    Missing(F),
    /// The field has a value (`NOTMISSINGVALUE`).
    NotMissing(F),
}

/// The most values a QUERY filter may hold in all.
pub const MAX_FILTER_VALUES: usize = 10_000;

/// The filter types, for error messages.
pub const FILTER_TYPES: &str = "AND, OR, EQ, NEQ, GT, GE, LT, LE, LIKE, NOTLIKE, BETWEEN, NOTBETWEEN, IN, NOTIN, MISSINGVALUE or NOTMISSINGVALUE";

fn value_of(ty: Type, v: &Json, at: &str) -> Result<Value, String> {
    match ty {
        Type::Int => match v {
            Json::Number(n) => n
                .as_i64()
                .map(Value::Int)
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(Value::Real))
                .ok_or_else(|| format!("{at}: {v} is not a number")),
            // Dates may come as ISO 8601 text, as everywhere in the REST API.
            Json::String(s) => thinghost_core::types::parse_datetime(s)
                .ok()
                .or_else(|| s.parse::<i64>().ok())
                .map(Value::Int)
                .ok_or_else(|| format!("{at}: {s:?} is neither a date nor a number")),
            _ => Err(format!("{at}: {v} is not a number or a date")),
        },
        Type::Real => match v {
            Json::Number(n) => n
                .as_i64()
                .map(Value::Int)
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(Value::Real))
                .ok_or_else(|| format!("{at}: {v} is not a number")),
            Json::String(s) => s
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Value::Real)
                .ok_or_else(|| format!("{at}: {s:?} is not a number")),
            _ => Err(format!("{at}: {v} is not a number")),
        },
        Type::Text => match v {
            Json::String(s) => Ok(Value::Text(s.clone())),
            Json::Number(n) => Ok(Value::Text(n.to_string())),
            Json::Bool(b) => Ok(Value::Text(b.to_string())),
            _ => Err(format!("{at}: {v} is not text")),
        },
        Type::Bool => match v {
            Json::Bool(b) => Ok(Value::Bool(*b)),
            Json::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Json::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(format!("{at}: {v} is not true or false")),
        },
    }
}

impl<F: Copy + PartialEq + std::fmt::Debug> Filter<F> {
    /// Parses the `filters` part of the vendor's QUERY JSON against a schema:
    /// `{"type": "And", "filters": [...]}`, `{"type": "EQ", "fieldName": "user", "value": "ann"}`,
    /// `{"type": "Between", "fieldName": "timestamp", "from": ..., "to": ...}`,
    /// `{"type": "IN", "fieldName": ..., "values": [...]}`, `{"type": "MISSINGVALUE",
    /// "fieldName": ...}`, with the types of [`FILTER_TYPES`] (any case). `LIKE` patterns use `%`
    /// and `_` (the vendor's `*` and `?` too).
    pub fn parse_with<S: Schema<Field = F>>(v: &Json, schema: &S) -> Result<Filter<F>, String> {
        let f = Filter::parse_at(v, "filters", schema)?;
        // Each value is one bound parameter, and SQLite takes at most 32,766 in a statement.
        let n = f.values();
        if n > MAX_FILTER_VALUES {
            return Err(format!(
                "filters: {n} values in all; a query takes at most {MAX_FILTER_VALUES}"
            ));
        }
        Ok(f)
    }

    /// How many values the filter compares with (each is one bound parameter).
    fn values(&self) -> usize {
        match self {
            Filter::And(parts) | Filter::Or(parts) => parts.iter().map(Filter::values).sum(),
            Filter::Cmp(..) => 1,
            Filter::Between(..) | Filter::NotBetween(..) => 2,
            Filter::In(_, v) | Filter::NotIn(_, v) => v.len(),
            Filter::Missing(_) | Filter::NotMissing(_) => 0,
        }
    }

    /// Every field the filter names.
    pub fn fields(&self, out: &mut Vec<F>) {
        match self {
            Filter::And(parts) | Filter::Or(parts) => parts.iter().for_each(|p| p.fields(out)),
            Filter::Cmp(f, ..)
            | Filter::Between(f, ..)
            | Filter::NotBetween(f, ..)
            | Filter::In(f, _)
            | Filter::NotIn(f, _)
            | Filter::Missing(f)
            | Filter::NotMissing(f) => out.push(*f),
        }
    }

    fn parse_at<S: Schema<Field = F>>(v: &Json, at: &str, schema: &S) -> Result<Filter<F>, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{at}: a filter is an object with a type"))?;
        let kind = obj
            .get("type")
            .and_then(Json::as_str)
            .ok_or_else(|| format!("{at}: a filter needs a type"))?
            .to_ascii_uppercase();
        if kind == "AND" || kind == "OR" {
            let list = obj
                .get("filters")
                .and_then(Json::as_array)
                .ok_or_else(|| format!("{at}: {kind} needs a list of filters"))?;
            if list.is_empty() || list.len() > 64 {
                return Err(format!("{at}: {kind} takes 1 to 64 filters"));
            }
            let parts = list
                .iter()
                .enumerate()
                .map(|(i, f)| Filter::parse_at(f, &format!("{at}.{kind}[{i}]"), schema))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if kind == "AND" {
                Filter::And(parts)
            } else {
                Filter::Or(parts)
            });
        }
        let name = obj
            .get("fieldName")
            .and_then(Json::as_str)
            .ok_or_else(|| format!("{at}: {kind} needs a fieldName"))?;
        let (field, ty) = schema.field(name).ok_or_else(|| {
            format!(
                "{at}: there is no field {name:?}; the fields are {}",
                schema.names()
            )
        })?;
        let one = |key: &str| -> Result<Value, String> {
            let v = obj
                .get(key)
                .filter(|v| !v.is_null())
                .ok_or_else(|| format!("{at}: {kind} needs {key} (MISSINGVALUE asks for none)"))?;
            value_of(ty, v, at)
        };
        let op = |op: Op| -> Result<Filter<F>, String> {
            if matches!(op, Op::Like | Op::NotLike) && ty != Type::Text {
                return Err(format!(
                    "{at}: LIKE compares text fields; {name} is not one"
                ));
            }
            let mut value = one("value")?;
            if matches!(op, Op::Like | Op::NotLike) {
                match &mut value {
                    Value::Text(t) => *t = t.replace('*', "%").replace('?', "_"),
                    _ => {
                        return Err(format!(
                            "{at}: LIKE compares text fields; {name} is not one"
                        ));
                    }
                }
            }
            Ok(Filter::Cmp(field, op, value))
        };
        match kind.as_str() {
            "EQ" => op(Op::Eq),
            "NE" | "NEQ" => op(Op::Neq),
            "GT" => op(Op::Gt),
            "GE" => op(Op::Ge),
            "LT" => op(Op::Lt),
            "LE" => op(Op::Le),
            "LIKE" => op(Op::Like),
            "NOTLIKE" => op(Op::NotLike),
            "BETWEEN" => Ok(Filter::Between(field, one("from")?, one("to")?)),
            "NOTBETWEEN" => Ok(Filter::NotBetween(field, one("from")?, one("to")?)),
            "MISSINGVALUE" => Ok(Filter::Missing(field)),
            "NOTMISSINGVALUE" => Ok(Filter::NotMissing(field)),
            "IN" | "NOTIN" => {
                let values = obj
                    .get("values")
                    .and_then(Json::as_array)
                    .ok_or_else(|| format!("{at}: {kind} needs a list of values"))?;
                if values.is_empty() || values.len() > 1000 {
                    return Err(format!("{at}: {kind} takes 1 to 1000 values"));
                }
                let values = values
                    .iter()
                    .map(|v| value_of(ty, v, at))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if kind == "IN" {
                    Filter::In(field, values)
                } else {
                    Filter::NotIn(field, values)
                })
            }
            other => Err(format!(
                "{at}: {other:?} is not a filter type; use {FILTER_TYPES}"
            )),
        }
    }
}

/// Parses the `sorts` of a QUERY against a schema: `[{"fieldName": "timestamp", "isAscending":
/// false}]` (at most 16).
pub fn parse_sorts<S: Schema>(v: &Json, schema: &S) -> Result<Vec<(S::Field, bool)>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| "sorts: a list of {fieldName, isAscending}".to_string())?;
    if list.len() > 16 {
        return Err("sorts: at most 16".into());
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let name = s
                .get("fieldName")
                .and_then(Json::as_str)
                .ok_or_else(|| format!("sorts[{i}]: needs a fieldName"))?;
            let (field, _) = schema.field(name).ok_or_else(|| {
                format!(
                    "sorts[{i}]: there is no field {name:?}; the fields are {}",
                    schema.names()
                )
            })?;
            let ascending = s.get("isAscending").and_then(Json::as_bool).unwrap_or(true);
            Ok((field, ascending))
        })
        .collect()
}

/// A whole QUERY: its filter (if any) and its sorts.
pub fn parse<S: Schema>(v: &Json, schema: &S) -> Result<Query<S::Field>, String> {
    let mut q = Query {
        filter: None,
        sorts: Vec::new(),
    };
    if v.is_null() {
        return Ok(q);
    }
    let obj = v
        .as_object()
        .ok_or("a query is an object with filters and sorts")?;
    for key in obj.keys() {
        if key != "filters" && key != "sorts" {
            return Err(format!("a query has filters and sorts, not {key:?}"));
        }
    }
    if let Some(f) = obj.get("filters").filter(|f| !f.is_null()) {
        q.filter = Some(Filter::parse_with(f, schema)?);
    }
    if let Some(s) = obj.get("sorts").filter(|s| !s.is_null()) {
        q.sorts = parse_sorts(s, schema)?;
    }
    Ok(q)
}

/// A parsed QUERY.
#[derive(Clone, Debug, PartialEq)]
pub struct Query<F> {
    pub filter: Option<Filter<F>>,
    /// (field, ascending), in order.
    pub sorts: Vec<(F, bool)>,
}

/// A filter as SQL with its parameters (for the SQLite backends): `column` names each field's
/// column or expression (from the backend's fixed list, never from the query); values are
/// always parameters.
pub fn to_sql<F: Copy>(
    f: &Filter<F>,
    column: &dyn Fn(F) -> String,
    params: &mut Vec<rusqlite::types::Value>,
) -> String {
    let mut bind = |v: &Value| {
        params.push(sql_value(v));
        "?"
    };
    match f {
        Filter::And(parts) | Filter::Or(parts) => {
            let joiner = if matches!(f, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            let inner: Vec<String> = parts.iter().map(|p| to_sql(p, column, params)).collect();
            format!("({})", inner.join(joiner))
        }
        Filter::Cmp(field, op, v) => {
            let sql_op = match op {
                Op::Eq => "=",
                Op::Neq => "<>",
                Op::Gt => ">",
                Op::Ge => ">=",
                Op::Lt => "<",
                Op::Le => "<=",
                Op::Like => "LIKE",
                Op::NotLike => "NOT LIKE",
            };
            format!("{} {sql_op} {}", column(*field), bind(v))
        }
        Filter::Between(field, a, b) | Filter::NotBetween(field, a, b) => {
            let not = if matches!(f, Filter::NotBetween(..)) {
                "NOT "
            } else {
                ""
            };
            let (a, b) = (bind(a), bind(b));
            format!("{} {not}BETWEEN {a} AND {b}", column(*field))
        }
        Filter::In(field, values) | Filter::NotIn(field, values) => {
            let not = if matches!(f, Filter::NotIn(..)) {
                "NOT "
            } else {
                ""
            };
            let marks: Vec<&str> = values.iter().map(&mut bind).collect();
            format!("{} {not}IN ({})", column(*field), marks.join(", "))
        }
        Filter::Missing(field) => format!("{} IS NULL", column(*field)),
        Filter::NotMissing(field) => format!("{} IS NOT NULL", column(*field)),
    }
}

/// A filter value as SQLite binds it (a boolean as 0 or 1, as the backends store booleans).
pub fn sql_value(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Int(i) => V::Integer(*i),
        Value::Real(r) => V::Real(*r),
        Value::Text(t) => V::Text(t.clone()),
        Value::Bool(b) => V::Integer(i64::from(*b)),
    }
}

/// Does a record match the filter? `get` gives a field's value (`None`: missing). The meaning is
/// SQLite's: numbers compare by value whatever their kind, a boolean is 0 or 1, numbers sort
/// before text, text compares by bytes, `LIKE` ignores ASCII case, and any comparison with a
/// missing value is false (`NEQ`, `NOTLIKE`, `NOTBETWEEN` and `NOTIN` included).
pub fn matches<F: Copy>(f: &Filter<F>, get: &dyn Fn(F) -> Option<Value>) -> bool {
    match f {
        Filter::And(parts) => parts.iter().all(|p| matches(p, get)),
        Filter::Or(parts) => parts.iter().any(|p| matches(p, get)),
        Filter::Missing(field) => get(*field).is_none(),
        Filter::NotMissing(field) => get(*field).is_some(),
        Filter::Cmp(field, op, v) => {
            let Some(x) = get(*field) else { return false };
            match op {
                Op::Eq => compare(&x, v) == Ordering::Equal,
                Op::Neq => compare(&x, v) != Ordering::Equal,
                Op::Gt => compare(&x, v) == Ordering::Greater,
                Op::Ge => compare(&x, v) != Ordering::Less,
                Op::Lt => compare(&x, v) == Ordering::Less,
                Op::Le => compare(&x, v) != Ordering::Greater,
                Op::Like => like(&text_of(&x), &text_of(v)),
                Op::NotLike => !like(&text_of(&x), &text_of(v)),
            }
        }
        Filter::Between(field, a, b) | Filter::NotBetween(field, a, b) => {
            let Some(x) = get(*field) else { return false };
            let inside = compare(&x, a) != Ordering::Less && compare(&x, b) != Ordering::Greater;
            inside == matches!(f, Filter::Between(..))
        }
        Filter::In(field, values) | Filter::NotIn(field, values) => {
            let Some(x) = get(*field) else { return false };
            let found = values.iter().any(|v| compare(&x, v) == Ordering::Equal);
            found == matches!(f, Filter::In(..))
        }
    }
}

/// SQLite's order of two values (BINARY collation).
pub fn compare(a: &Value, b: &Value) -> Ordering {
    let num = |v: &Value| match v {
        Value::Int(i) => Some(Num::Int(*i)),
        Value::Bool(b) => Some(Num::Int(i64::from(*b))),
        Value::Real(r) => Some(Num::Real(*r)),
        Value::Text(_) => None,
    };
    match (num(a), num(b)) {
        (Some(Num::Int(x)), Some(Num::Int(y))) => x.cmp(&y),
        (Some(x), Some(y)) => x.real().partial_cmp(&y.real()).unwrap_or(Ordering::Equal),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => text_of(a).as_bytes().cmp(text_of(b).as_bytes()),
    }
}

enum Num {
    Int(i64),
    Real(f64),
}

impl Num {
    fn real(&self) -> f64 {
        match self {
            Num::Int(i) => *i as f64,
            Num::Real(r) => *r,
        }
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Real(r) => format!("{r:?}"),
        Value::Text(t) => t.clone(),
        Value::Bool(b) => i64::from(*b).to_string(),
    }
}

/// SQLite's `LIKE`: `%` any run, `_` one character, ASCII letters in any case.
pub fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Dynamic programming over (pattern position, text position): no backtracking blow-up.
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for pc in &p {
        let mut next = vec![false; t.len() + 1];
        match pc {
            '%' => {
                let mut any = false;
                for i in 0..=t.len() {
                    any |= row[i];
                    next[i] = any;
                }
            }
            _ => {
                for i in 0..t.len() {
                    if row[i] && (*pc == '_' || pc.eq_ignore_ascii_case(&t[i])) {
                        next[i + 1] = true;
                    }
                }
            }
        }
        row = next;
    }
    row[t.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Two;
    impl Schema for Two {
        type Field = u8;
        fn field(&self, name: &str) -> Option<(u8, Type)> {
            match name {
                "n" => Some((0, Type::Real)),
                "s" => Some((1, Type::Text)),
                "b" => Some((2, Type::Bool)),
                _ => None,
            }
        }
        fn names(&self) -> String {
            "n, s, b".into()
        }
    }

    #[test]
    fn h4_like_is_sqlites() {
        assert!(like("Pump7", "pump%"));
        assert!(like("Pump7", "_ump_"));
        assert!(!like("Pump7", "_ump"));
        assert!(like("", "%"));
        assert!(!like("a", ""));
        assert!(like("ä", "_"));
    }

    #[test]
    fn h4_a_comparison_with_a_missing_value_is_false() {
        let f = Filter::parse_with(&json!({"type": "NEQ", "fieldName": "n", "value": 1}), &Two)
            .unwrap();
        assert!(!matches(&f, &|_| None));
        assert!(matches(&f, &|_| Some(Value::Int(2))));
        let m =
            Filter::parse_with(&json!({"type": "missingvalue", "fieldName": "s"}), &Two).unwrap();
        assert!(matches(&m, &|_| None));
    }

    #[test]
    fn h4_fields_and_values_are_checked_against_the_schema() {
        for (bad, says) in [
            (
                json!({"type": "EQ", "fieldName": "x", "value": 1}),
                "no field \"x\"",
            ),
            (
                json!({"type": "EQ", "fieldName": "n", "value": "many"}),
                "not a number",
            ),
            (
                json!({"type": "EQ", "fieldName": "b", "value": 3}),
                "not true or false",
            ),
            (
                json!({"type": "LIKE", "fieldName": "n", "value": "1%"}),
                "LIKE compares text",
            ),
            (
                json!({"type": "EQ", "fieldName": "s", "value": null}),
                "MISSINGVALUE",
            ),
        ] {
            let e = Filter::parse_with(&bad, &Two).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = parse(&json!({"filter": {}}), &Two).unwrap_err();
        assert!(e.contains("not \"filter\""), "{e}");
    }
}
