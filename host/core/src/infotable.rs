//! The InfoTable, the vendor's tabular value: a data shape (ordered field definitions) and rows.
//!
//! JSON form (DOMAIN.md section 1):
//! `{"dataShape":{"fieldDefinitions":{"f":{"name":"f","baseType":"STRING","ordinal":0,"aspects":{}}}},"rows":[{"f":"x"}]}`

use crate::types::BaseType;
use serde_json::{Map, Value as Json};

/// One column of an InfoTable.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub base_type: BaseType,
}

/// A table of rows that follow one list of fields. Field names are unique (a data shape's
/// field definitions are a map by name); [`InfoTable::from_json`] and [`InfoTable::single`] keep
/// it so, and whoever builds `fields` by hand must too (written as text, two fields of one name
/// would give one JSON object two keys).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct InfoTable {
    pub fields: Vec<Field>,
    pub rows: Vec<Map<String, Json>>,
}

impl InfoTable {
    /// A one-row table with one field: how a primitive service result or a property read answers.
    pub fn single(name: &str, base_type: BaseType, value: Json) -> InfoTable {
        let mut row = Map::new();
        row.insert(name.to_string(), value);
        InfoTable {
            fields: vec![Field {
                name: name.to_string(),
                base_type,
            }],
            rows: vec![row],
        }
    }

    /// Parses and checks the JSON form; every row value is checked against its field's type.
    pub fn from_json(v: &Json) -> Result<InfoTable, String> {
        let obj = v.as_object().ok_or("an InfoTable is a JSON object")?;
        let defs = obj
            .get("dataShape")
            .and_then(|d| d.get("fieldDefinitions"))
            .and_then(Json::as_object)
            .ok_or("dataShape.fieldDefinitions is missing or not an object")?;
        let mut fields: Vec<(i64, Field)> = Vec::with_capacity(defs.len());
        for (key, def) in defs {
            crate::names::check_member_name(key).map_err(|e| format!("field {key:?}: {e}"))?;
            let bt = def
                .get("baseType")
                .and_then(Json::as_str)
                .ok_or_else(|| format!("field {key:?} has no baseType"))?;
            let base_type = BaseType::parse(bt)
                .ok_or_else(|| format!("field {key:?}: unknown baseType {bt:?}"))?;
            let ordinal = def
                .get("ordinal")
                .and_then(Json::as_i64)
                .unwrap_or(fields.len() as i64);
            fields.push((
                ordinal,
                Field {
                    name: key.clone(),
                    base_type,
                },
            ));
        }
        fields.sort_by_key(|(o, _)| *o);
        let fields: Vec<Field> = fields.into_iter().map(|(_, f)| f).collect();
        let mut rows = Vec::new();
        if let Some(rs) = obj.get("rows") {
            let rs = rs.as_array().ok_or("rows is not an array")?;
            for (i, r) in rs.iter().enumerate() {
                let r = r
                    .as_object()
                    .ok_or_else(|| format!("row {i} is not an object"))?;
                let mut row = Map::new();
                for (k, val) in r {
                    let f = fields.iter().find(|f| &f.name == k).ok_or_else(|| {
                        format!("row {i}: {k:?} is not a field of the data shape")
                    })?;
                    let norm = f
                        .base_type
                        .normalize(val)
                        .map_err(|e| format!("row {i}, field {k:?}: {e}"))?;
                    row.insert(k.clone(), norm);
                }
                rows.push(row);
            }
        }
        Ok(InfoTable { fields, rows })
    }

    /// Appends the JSON form's text to `out`: the same text as serializing the table (see its
    /// `Serialize`), with the fixed parts written as they are instead of escaped one by one
    /// (every reply of a service or a property read is written here).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.debug_assert_unique_names();
        // Writing into a Vec cannot fail, and every value here is representable as JSON.
        fn value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
            serde_json::to_writer(out, v).expect("a Vec takes any JSON text");
        }
        out.extend_from_slice(br#"{"dataShape":{"fieldDefinitions":{"#);
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            value(out, &f.name);
            out.extend_from_slice(br#":{"name":"#);
            value(out, &f.name);
            out.extend_from_slice(br#","baseType":""#);
            // Base type names are upper-case ASCII letters and digits: nothing to escape.
            out.extend_from_slice(f.base_type.name().as_bytes());
            out.extend_from_slice(br#"","ordinal":"#);
            value(out, &i);
            out.extend_from_slice(br#","aspects":{}}"#);
        }
        out.extend_from_slice(br#"}},"rows":"#);
        value(out, &self.rows);
        out.push(b'}');
    }

    /// Field names are unique (see the type's documentation): checked in debug builds where a
    /// table is written as text.
    fn debug_assert_unique_names(&self) {
        debug_assert!(
            self.fields
                .iter()
                .enumerate()
                .all(|(i, f)| self.fields[..i].iter().all(|g| g.name != f.name)),
            "an InfoTable's field names are unique"
        );
    }

    /// The JSON form.
    pub fn to_json(&self) -> Json {
        self.clone().into_json()
    }

    /// The JSON form, taking the rows without copying them. Built value by value: every reply
    /// of a service passes here, and `json!` would serialize each field on the way.
    pub fn into_json(self) -> Json {
        let mut defs = Map::with_capacity(self.fields.len());
        for (i, f) in self.fields.into_iter().enumerate() {
            let mut def = Map::with_capacity(4);
            def.insert("name".into(), Json::String(f.name.clone()));
            def.insert("baseType".into(), Json::String(f.base_type.name().into()));
            def.insert("ordinal".into(), Json::from(i));
            def.insert("aspects".into(), Json::Object(Map::new()));
            defs.insert(f.name, Json::Object(def));
        }
        let mut shape = Map::with_capacity(1);
        shape.insert("fieldDefinitions".into(), Json::Object(defs));
        let mut table = Map::with_capacity(2);
        table.insert("dataShape".into(), Json::Object(shape));
        table.insert(
            "rows".into(),
            Json::Array(self.rows.into_iter().map(Json::Object).collect()),
        );
        Json::Object(table)
    }
}

/// A one-row table of one field, kept as its three parts: how a service's result or a property
/// read answers. Its JSON form and text are those of [`InfoTable::single`]'s table; keeping the
/// parts saves that table's five allocations and a hashed map on every such answer (issue 19).
#[derive(Clone, Debug, PartialEq)]
pub struct OneValue {
    pub name: std::borrow::Cow<'static, str>,
    pub base_type: BaseType,
    pub value: Json,
}

impl OneValue {
    /// The table it stands for.
    pub fn into_table(self) -> InfoTable {
        InfoTable::single(&self.name, self.base_type, self.value)
    }

    /// Appends the JSON form's text to `out` (the text [`InfoTable::write_json`] writes for
    /// [`OneValue::into_table`]).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        fn value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
            serde_json::to_writer(out, v).expect("a Vec takes any JSON text");
        }
        // The name is written three times: as it is when nothing in it needs an escape (a
        // member name never does), else escaped once.
        let plain = self
            .name
            .bytes()
            .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f);
        let name: std::borrow::Cow<[u8]> = if plain {
            std::borrow::Cow::Borrowed(self.name.as_bytes())
        } else {
            let mut text = Vec::new();
            value(&mut text, self.name.as_ref());
            // Without its quotes.
            std::borrow::Cow::Owned(text[1..text.len() - 1].to_vec())
        };
        out.extend_from_slice(br#"{"dataShape":{"fieldDefinitions":{""#);
        out.extend_from_slice(&name);
        out.extend_from_slice(br#"":{"name":""#);
        out.extend_from_slice(&name);
        out.extend_from_slice(br#"","baseType":""#);
        out.extend_from_slice(self.base_type.name().as_bytes());
        out.extend_from_slice(br#"","ordinal":0,"aspects":{}}}},"rows":[{""#);
        out.extend_from_slice(&name);
        out.extend_from_slice(b"\":");
        value(out, &self.value);
        out.extend_from_slice(b"}]}");
    }
}

/// The JSON form written straight to text, without building the JSON value of
/// [`InfoTable::into_json`] first (the same text: `serde_json::to_value(&t) == t.to_json()`).
/// A reply's table is written this way: building the value was a tenth of a short service call.
impl serde::Serialize for InfoTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct NoAspects;
        impl serde::Serialize for NoAspects {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_map(Some(0))?.end()
            }
        }
        struct Definition<'a>(usize, &'a Field);
        impl serde::Serialize for Definition<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("name", &self.1.name)?;
                m.serialize_entry("baseType", self.1.base_type.name())?;
                m.serialize_entry("ordinal", &self.0)?;
                m.serialize_entry("aspects", &NoAspects)?;
                m.end()
            }
        }
        struct Definitions<'a>(&'a [Field]);
        impl serde::Serialize for Definitions<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (i, f) in self.0.iter().enumerate() {
                    m.serialize_entry(&f.name, &Definition(i, f))?;
                }
                m.end()
            }
        }
        struct Shape<'a>(&'a [Field]);
        impl serde::Serialize for Shape<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("fieldDefinitions", &Definitions(self.0))?;
                m.end()
            }
        }
        self.debug_assert_unique_names();
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("dataShape", &Shape(&self.fields))?;
        m.serialize_entry("rows", &self.rows)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn written_straight_to_text_it_is_its_json_form() {
        let many = InfoTable::from_json(&json!({"dataShape":{"fieldDefinitions":{
            "z":{"name":"z","baseType":"STRING","ordinal":0},
            "a":{"name":"a","baseType":"NUMBER","ordinal":1},
            "t":{"name":"t","baseType":"INFOTABLE","ordinal":2}}},
            "rows":[{"z":"x","a":1.5,"t":{"dataShape":{"fieldDefinitions":{}},"rows":[]}},{"z":"y"}]}))
        .unwrap();
        let tables = [
            InfoTable::default(),
            InfoTable::single("result", BaseType::Number, json!(2.5)),
            InfoTable::single("quoted \"name\"", BaseType::String, json!("é\n")),
            many,
        ];
        for t in tables {
            let text = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Json>(&text).unwrap(), t.to_json());
            let mut written = Vec::new();
            t.write_json(&mut written);
            assert_eq!(String::from_utf8(written).unwrap(), text);
            assert_eq!(serde_json::to_value(&t).unwrap(), t.to_json());
        }
        // In the vendor's order, whatever the order of serde_json's maps in this build.
        let text = serde_json::to_string(&InfoTable::single("n", BaseType::Integer, json!(1)));
        assert_eq!(
            text.unwrap(),
            r#"{"dataShape":{"fieldDefinitions":{"n":{"name":"n","baseType":"INTEGER","ordinal":0,"aspects":{}}}},"rows":[{"n":1}]}"#
        );
    }

    #[test]
    fn domain_example_round_trips() {
        let v = json!({"dataShape":{"fieldDefinitions":{"f":{"name":"f","baseType":"STRING","ordinal":0,"aspects":{}}}},"rows":[{"f":"x"}]});
        let t = InfoTable::from_json(&v).unwrap();
        assert_eq!(t.to_json(), v);
    }

    #[test]
    fn bad_rows_are_refused() {
        let v = json!({"dataShape":{"fieldDefinitions":{"n":{"name":"n","baseType":"INTEGER"}}},"rows":[{"n":"x"}]});
        assert!(InfoTable::from_json(&v).unwrap_err().contains("row 0"));
        let v = json!({"dataShape":{"fieldDefinitions":{}},"rows":[{"z":1}]});
        assert!(InfoTable::from_json(&v).is_err());
        assert!(InfoTable::from_json(&json!([])).is_err());
    }

    #[test]
    fn one_value_is_written_as_its_table() {
        for (name, bt, v) in [
            ("result", BaseType::Number, json!(2.5)),
            ("quoted \"name\" é", BaseType::String, json!("é\n\"")),
            ("t", BaseType::Json, json!({"a": [1, null, {"b": "c"}]})),
            ("n", BaseType::Integer, Json::Null),
        ] {
            let one = OneValue {
                name: name.to_string().into(),
                base_type: bt,
                value: v.clone(),
            };
            let mut written = Vec::new();
            one.write_json(&mut written);
            let mut expected = Vec::new();
            InfoTable::single(name, bt, v).write_json(&mut expected);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(expected).unwrap()
            );
            assert_eq!(
                one.clone().into_table(),
                InfoTable::single(name, bt, one.value)
            );
        }
    }

    #[test]
    fn single_answers_one_row() {
        let t = InfoTable::single("result", BaseType::Integer, json!(3));
        assert_eq!(t.to_json()["rows"][0]["result"], json!(3));
    }
}
