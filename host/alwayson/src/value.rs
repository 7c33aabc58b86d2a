//! Typed values and InfoTables as the protocol writes them.
//!
//! ```text
//! typed value: baseType u8, then its value (codes::Form)
//! data shape:  repeat { 0x01, name str, description str, baseType u8, aspectCount u16,
//!                       aspectCount x (name str, typed value) } then 0x00
//! rows:        repeat { 0x01, fieldCount u16, fieldCount x typed value } then 0x00
//! ```

use crate::Error;
use crate::codes::{self, Form};
use crate::wire::{Reader, Writer};

/// How deep values may nest (a VARIANT or an InfoTable in a row of an InfoTable ...): beyond,
/// the frame is refused, so no input can recurse without bound.
pub const MAX_DEPTH: usize = 16;

/// A typed value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nothing,
    /// A string-like value and its base type byte (STRING, TEXT, JSON, THINGNAME, ...).
    Text(u8, String),
    Number(f64),
    Integer(i32),
    Long(i64),
    Boolean(bool),
    /// Milliseconds since the epoch.
    Datetime(i64),
    Location {
        longitude: f64,
        latitude: f64,
        elevation: f64,
    },
    /// BLOB or IMAGE bytes and the base type byte.
    Bytes(u8, Vec<u8>),
    /// A VARIANT: a value that says its own type.
    Variant(Box<Value>),
    InfoTable(Box<Table>),
}

impl Value {
    /// A STRING.
    pub fn string(s: impl Into<String>) -> Value {
        Value::Text(codes::STRING, s.into())
    }

    /// Its base type byte.
    pub fn base_type(&self) -> u8 {
        match self {
            Value::Nothing => codes::NOTHING,
            Value::Text(t, _) | Value::Bytes(t, _) => *t,
            Value::Number(_) => codes::NUMBER,
            Value::Integer(_) => codes::INTEGER,
            Value::Long(_) => codes::LONG,
            Value::Boolean(_) => codes::BOOLEAN,
            Value::Datetime(_) => codes::DATETIME,
            Value::Location { .. } => 6,
            Value::Variant(_) => codes::VARIANT,
            Value::InfoTable(_) => codes::INFOTABLE,
        }
    }

    /// The value inside any VARIANTs.
    pub fn unwrapped(&self) -> &Value {
        match self {
            Value::Variant(v) => v.unwrapped(),
            v => v,
        }
    }

    /// Reads a typed value: its type byte, then the value.
    pub fn read(r: &mut Reader, depth: usize) -> Result<Value, Error> {
        let at = r.offset();
        let t = r.u8("a base type")?;
        Value::read_as(r, t, depth).map_err(|e| match e {
            Error::UnknownBaseType { .. } => Error::UnknownBaseType { base_type: t, at },
            e => e,
        })
    }

    /// Reads the value of a known base type (its type byte already read).
    pub fn read_as(r: &mut Reader, t: u8, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep { at: r.offset() });
        }
        let form = codes::form(t).ok_or(Error::UnknownBaseType {
            base_type: t,
            at: r.offset(),
        })?;
        Ok(match form {
            Form::Nothing => Value::Nothing,
            Form::Text => Value::Text(t, r.string("a string value")?),
            Form::Number => Value::Number(r.f64("a NUMBER")?),
            Form::Integer => Value::Integer(r.i32("an INTEGER")?),
            Form::Long => Value::Long(r.i64("a LONG")?),
            Form::Boolean => Value::Boolean(r.u8("a BOOLEAN")? != 0),
            Form::Datetime => Value::Datetime(r.i64("a DATETIME")?),
            Form::Location => Value::Location {
                longitude: r.f64("a LOCATION")?,
                latitude: r.f64("a LOCATION")?,
                elevation: r.f64("a LOCATION")?,
            },
            Form::Bytes => {
                // A u32 length; one independent codec sets bit 0x80 of its first byte, as
                // strings do: accepted and masked off.
                let n = r.u32("a BLOB's length")? & 0x7fff_ffff;
                Value::Bytes(t, r.take(n as usize, "a BLOB")?.to_vec())
            }
            Form::Variant => Value::Variant(Box::new(Value::read(r, depth + 1)?)),
            Form::InfoTable => Value::InfoTable(Box::new(Table::read(r, depth + 1)?)),
        })
    }

    /// See [`Table::check_counts`].
    pub fn check_counts(&self, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep { at: 0 });
        }
        match self {
            Value::Variant(v) => v.check_counts(depth + 1),
            Value::InfoTable(t) => t.check_counts(depth + 1),
            _ => Ok(()),
        }
    }

    /// Writes a typed value: its type byte, then the value.
    pub fn write(&self, w: &mut Writer) {
        w.u8(self.base_type());
        self.write_value(w);
    }

    /// Writes the value alone.
    pub fn write_value(&self, w: &mut Writer) {
        match self {
            Value::Nothing => {}
            Value::Text(_, s) => w.string(s),
            Value::Number(n) => w.f64(*n),
            Value::Integer(i) => w.i32(*i),
            Value::Long(l) => w.i64(*l),
            Value::Boolean(b) => w.u8(u8::from(*b)),
            Value::Datetime(ms) => w.i64(*ms),
            Value::Location {
                longitude,
                latitude,
                elevation,
            } => {
                w.f64(*longitude);
                w.f64(*latitude);
                w.f64(*elevation);
            }
            Value::Bytes(_, b) => {
                w.u32(b.len() as u32);
                w.raw(b);
            }
            Value::Variant(v) => v.write(w),
            Value::InfoTable(t) => t.write(w),
        }
    }
}

/// One field of an InfoTable's data shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub description: String,
    pub base_type: u8,
    pub aspects: Vec<(String, Value)>,
}

impl Field {
    pub fn new(name: impl Into<String>, base_type: u8) -> Field {
        Field {
            name: name.into(),
            description: String::new(),
            base_type,
            aspects: Vec::new(),
        }
    }
}

/// An InfoTable: a data shape and rows whose values are in the shape's order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub fields: Vec<Field>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    /// A one-row table of one field.
    pub fn single(name: impl Into<String>, value: Value) -> Table {
        Table {
            fields: vec![Field::new(name, value.base_type())],
            rows: vec![vec![value]],
        }
    }

    /// The index of a field by name.
    pub fn field(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    pub fn read(r: &mut Reader, depth: usize) -> Result<Table, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep { at: r.offset() });
        }
        let mut fields = Vec::new();
        loop {
            let at = r.offset();
            match r.u8("a data shape entry marker")? {
                0 => break,
                1 => {}
                other => {
                    return Err(Error::BadMarker {
                        what: "a data shape entry",
                        found: other,
                        at,
                    });
                }
            }
            let name = r.string("a field's name")?;
            let description = r.string("a field's description")?;
            let base_type = r.u8("a field's base type")?;
            if codes::form(base_type).is_none() {
                return Err(Error::UnknownBaseType {
                    base_type,
                    at: r.offset() - 1,
                });
            }
            let count = r.u16("an aspect count")?;
            let mut aspects = Vec::with_capacity((count as usize).min(r.remaining() / 2));
            for _ in 0..count {
                let name = r.string("an aspect's name")?;
                aspects.push((name, Value::read(r, depth + 1)?));
            }
            fields.push(Field {
                name,
                description,
                base_type,
                aspects,
            });
        }
        let mut rows = Vec::new();
        loop {
            let at = r.offset();
            match r.u8("a row marker")? {
                0 => break,
                1 => {}
                other => {
                    return Err(Error::BadMarker {
                        what: "a row",
                        found: other,
                        at,
                    });
                }
            }
            let count = r.u16("a row's field count")? as usize;
            // Each value takes at least its type byte: no more room than the bytes left.
            let mut row = Vec::with_capacity(count.min(r.remaining()));
            for _ in 0..count {
                row.push(Value::read(r, depth + 1)?);
            }
            rows.push(row);
        }
        Ok(Table { fields, rows })
    }

    pub fn write(&self, w: &mut Writer) {
        for f in &self.fields {
            w.u8(1);
            w.string(&f.name);
            w.string(&f.description);
            w.u8(f.base_type);
            w.u16(f.aspects.len() as u16);
            for (name, value) in &f.aspects {
                w.string(name);
                value.write(w);
            }
        }
        w.u8(0);
        for row in &self.rows {
            w.u8(1);
            w.u16(row.len() as u16);
            for v in row {
                v.write(w);
            }
        }
        w.u8(0);
    }

    /// Whether its counts fit the protocol's fields (65,535 fields, aspects, rows and values
    /// per row) and its values nest at most [`MAX_DEPTH`] deep, `depth` levels down already.
    pub fn check_counts(&self, depth: usize) -> Result<(), Error> {
        let max = u16::MAX as usize;
        let over = |what: &str, n: usize| {
            if n > max {
                Err(Error::Counts(format!("{n} {what} (at most {max})")))
            } else {
                Ok(())
            }
        };
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep { at: 0 });
        }
        over("fields", self.fields.len())?;
        over("rows", self.rows.len())?;
        for f in &self.fields {
            over("aspects", f.aspects.len())?;
            for (_, v) in &f.aspects {
                v.check_counts(depth + 1)?;
            }
        }
        for row in &self.rows {
            over("values in a row", row.len())?;
            for v in row {
                v.check_counts(depth + 1)?;
            }
        }
        Ok(())
    }

    /// Its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The protocol note's worked InfoTable: one NUMBER field `Temp`, one row 21.5.
    #[test]
    fn the_worked_infotable_byte_for_byte() {
        let t = Table::single("Temp", Value::Number(21.5));
        let mut expected = vec![0x01, 0x04];
        expected.extend_from_slice(b"Temp");
        expected.extend(hex("00 01 0000 00 01 0001 01 4035800000000000 00"));
        assert_eq!(t.to_bytes(), expected);
        let mut r = Reader::new(&expected);
        assert_eq!(Table::read(&mut r, 0).unwrap(), t);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn every_kind_of_value_round_trips() {
        let inner = Table::single("n", Value::Integer(-7));
        let values = vec![
            Value::Nothing,
            Value::string("héllo"),
            Value::Text(8, r#"{"a":1}"#.into()),
            Value::Text(100, "Pump1".into()),
            Value::Number(-0.25),
            Value::Integer(i32::MIN),
            Value::Long(i64::MAX),
            Value::Boolean(true),
            Value::Boolean(false),
            Value::Datetime(1_700_000_000_123),
            Value::Location {
                longitude: 8.5,
                latitude: 47.3,
                elevation: 400.0,
            },
            Value::Bytes(21, vec![0, 1, 2, 255]),
            Value::Bytes(10, vec![]),
            Value::Variant(Box::new(Value::Number(3.0))),
            Value::InfoTable(Box::new(inner)),
        ];
        let mut t = Table {
            fields: values
                .iter()
                .enumerate()
                .map(|(i, v)| Field::new(format!("f{i}"), v.base_type()))
                .collect(),
            rows: vec![values.clone(), values],
        };
        t.fields[0].description = "the first".into();
        t.fields[1]
            .aspects
            .push(("defaultValue".into(), Value::string("x")));
        let bytes = t.to_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(Table::read(&mut r, 0).unwrap(), t);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn a_table_whose_counts_do_not_fit_is_refused_before_it_is_written() {
        let wide = Table {
            fields: vec![Field::new("n", codes::NUMBER)],
            rows: vec![vec![Value::Number(1.0)]; 65_536],
        };
        assert!(wide.check_counts(0).is_err());
        let fits = Table {
            rows: vec![vec![Value::Number(1.0)]; 65_535],
            ..wide.clone()
        };
        assert!(fits.check_counts(0).is_ok());
        let message = crate::Message::answer(
            &crate::Header {
                code: crate::Code::SUCCESS,
                request_id: 1,
                endpoint_id: 0,
                session_id: 1,
            },
            crate::Code::SUCCESS,
            None,
            Some(wide),
        );
        assert!(crate::frames(&message, 8192, usize::MAX).is_err());
    }

    #[test]
    fn values_nest_only_so_deep() {
        let mut v = Value::Number(1.0);
        for _ in 0..MAX_DEPTH + 2 {
            v = Value::Variant(Box::new(v));
        }
        let mut w = Writer::new();
        v.write(&mut w);
        let e = Value::read(&mut Reader::new(&w.bytes), 0).unwrap_err();
        assert!(matches!(e, Error::TooDeep { .. }), "{e}");
    }

    #[test]
    fn an_unknown_base_type_is_named_with_its_place() {
        let e = Value::read(&mut Reader::new(&[0x04, 0, 0]), 0).unwrap_err();
        assert_eq!(e.to_string(), "unknown base type 0x04 at byte 0");
    }

    #[test]
    fn a_blob_length_with_the_string_bit_set_is_read_as_its_length() {
        let bytes = [21, 0x80, 0, 0, 2, 7, 8];
        assert_eq!(
            Value::read(&mut Reader::new(&bytes), 0).unwrap(),
            Value::Bytes(21, vec![7, 8])
        );
    }
}
