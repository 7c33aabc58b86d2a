//! Base types of properties, parameters and fields, and the validation of values against them.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::fmt;

/// A base type, in the vendor's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BaseType {
    Nothing,
    String,
    Number,
    Integer,
    Long,
    Boolean,
    Datetime,
    Json,
    Infotable,
    /// The vendor's LOCATION: `{"latitude", "longitude", "elevation"}` (numbers; elevation and
    /// `units` optional).
    Location,
    Query,
    Password,
    Text,
    Guid,
    Thingname,
    Thingtemplatename,
    Thingshapename,
    Datashapename,
    Username,
    Groupname,
    Organizationname,
    Applicationkeyname,
    Projectname,
}

impl BaseType {
    pub const ALL: [BaseType; 23] = [
        BaseType::Nothing,
        BaseType::String,
        BaseType::Number,
        BaseType::Integer,
        BaseType::Long,
        BaseType::Boolean,
        BaseType::Datetime,
        BaseType::Json,
        BaseType::Infotable,
        BaseType::Location,
        BaseType::Query,
        BaseType::Password,
        BaseType::Text,
        BaseType::Guid,
        BaseType::Thingname,
        BaseType::Thingtemplatename,
        BaseType::Thingshapename,
        BaseType::Datashapename,
        BaseType::Username,
        BaseType::Groupname,
        BaseType::Organizationname,
        BaseType::Applicationkeyname,
        BaseType::Projectname,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BaseType::Nothing => "NOTHING",
            BaseType::String => "STRING",
            BaseType::Number => "NUMBER",
            BaseType::Integer => "INTEGER",
            BaseType::Long => "LONG",
            BaseType::Boolean => "BOOLEAN",
            BaseType::Datetime => "DATETIME",
            BaseType::Json => "JSON",
            BaseType::Infotable => "INFOTABLE",
            BaseType::Location => "LOCATION",
            BaseType::Query => "QUERY",
            BaseType::Password => "PASSWORD",
            BaseType::Text => "TEXT",
            BaseType::Guid => "GUID",
            BaseType::Thingname => "THINGNAME",
            BaseType::Thingtemplatename => "THINGTEMPLATENAME",
            BaseType::Thingshapename => "THINGSHAPENAME",
            BaseType::Datashapename => "DATASHAPENAME",
            BaseType::Username => "USERNAME",
            BaseType::Groupname => "GROUPNAME",
            BaseType::Organizationname => "ORGANIZATIONNAME",
            BaseType::Applicationkeyname => "APPLICATIONKEYNAME",
            BaseType::Projectname => "PROJECTNAME",
        }
    }

    /// Parses a base type name, case-insensitively.
    pub fn parse(s: &str) -> Option<BaseType> {
        BaseType::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s))
    }

    /// For the `*NAME` types: the kind of entity the value must name.
    pub fn names_kind(self) -> Option<crate::Kind> {
        use crate::Kind;
        Some(match self {
            BaseType::Thingname => Kind::Thing,
            BaseType::Thingtemplatename => Kind::ThingTemplate,
            BaseType::Thingshapename => Kind::ThingShape,
            BaseType::Datashapename => Kind::DataShape,
            BaseType::Username => Kind::User,
            BaseType::Groupname => Kind::Group,
            BaseType::Organizationname => Kind::Organization,
            BaseType::Applicationkeyname => Kind::ApplicationKey,
            _ => return None,
        })
    }

    /// Checks `value` against this type and returns its normal form: a `DATETIME` given as an
    /// ISO 8601 string becomes epoch milliseconds, an integral `NUMBER` stays a number, and so on.
    /// `null` is accepted for every type (an unset value). Existence of named entities is the
    /// caller's check (it needs the caller's visibility); here only their shape is checked.
    pub fn normalize(self, value: &Json) -> Result<Json, String> {
        if value.is_null() {
            return Ok(Json::Null);
        }
        let wrong = || {
            Err(format!(
                "expected a {} value, got {}",
                self.name(),
                describe(value)
            ))
        };
        match self {
            BaseType::Nothing => wrong(),
            BaseType::String
            | BaseType::Text
            | BaseType::Password
            | BaseType::Projectname
            | BaseType::Thingname
            | BaseType::Thingtemplatename
            | BaseType::Thingshapename
            | BaseType::Datashapename
            | BaseType::Username
            | BaseType::Groupname
            | BaseType::Organizationname
            | BaseType::Applicationkeyname => match value {
                Json::String(s) if self.names_kind().is_some() || self == BaseType::Projectname => {
                    match crate::names::check_entity_name(s) {
                        Ok(()) => Ok(value.clone()),
                        Err(why) => Err(format!("{s:?} is not a valid entity name: {why}")),
                    }
                }
                Json::String(_) => Ok(value.clone()),
                _ => wrong(),
            },
            BaseType::Number => match value {
                Json::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Ok(value.clone()),
                _ => wrong(),
            },
            BaseType::Integer => match value.as_i64() {
                Some(i) if i32::try_from(i).is_ok() => Ok(Json::from(i)),
                _ => match value.as_f64() {
                    Some(f) if f.fract() == 0.0 && f >= i32::MIN as f64 && f <= i32::MAX as f64 => {
                        Ok(Json::from(f as i64))
                    }
                    _ => wrong(),
                },
            },
            BaseType::Long => match value.as_i64() {
                Some(i) => Ok(Json::from(i)),
                None => match value.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
                        Ok(Json::from(f as i64))
                    }
                    _ => wrong(),
                },
            },
            BaseType::Boolean => match value {
                Json::Bool(_) => Ok(value.clone()),
                _ => wrong(),
            },
            BaseType::Datetime => match value {
                Json::Number(_) => match value.as_i64() {
                    Some(ms) => Ok(Json::from(ms)),
                    None => wrong(),
                },
                Json::String(s) => parse_datetime(s).map(Json::from).map_err(|e| {
                    format!("{s:?} is not a DATETIME (epoch milliseconds or ISO 8601): {e}")
                }),
                _ => wrong(),
            },
            BaseType::Json => match value {
                Json::Object(_) | Json::Array(_) => Ok(value.clone()),
                Json::String(s) => serde_json::from_str::<Json>(s)
                    .map_err(|e| format!("the string is not JSON: {e}")),
                _ => wrong(),
            },
            BaseType::Infotable => crate::infotable::InfoTable::from_json(value)
                .map(|t| t.to_json())
                .map_err(|e| format!("not an INFOTABLE: {e}")),
            BaseType::Query => match value {
                Json::Object(_) => Ok(value.clone()),
                _ => wrong(),
            },
            BaseType::Location => {
                match value {
                    Json::Object(o)
                        if ["latitude", "longitude"].iter().all(|k| {
                            o.get(*k).and_then(Json::as_f64).is_some_and(f64::is_finite)
                        }) && o.get("elevation").is_none_or(|e| {
                            e.is_null() || e.as_f64().is_some_and(f64::is_finite)
                        }) && o.keys().all(|k| {
                            matches!(k.as_str(), "latitude" | "longitude" | "elevation" | "units")
                        }) =>
                    {
                        Ok(value.clone())
                    }
                    _ => Err(format!(
                        "expected a LOCATION (an object of numeric latitude and longitude, and elevation), got {}",
                        describe(value)
                    )),
                }
            }
            BaseType::Guid => match value {
                Json::String(s) if is_guid(s) => Ok(value.clone()),
                _ => wrong(),
            },
        }
    }
}

impl fmt::Display for BaseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn describe(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Parses an ISO 8601 / RFC 3339 date-time (a date alone means midnight UTC) to epoch milliseconds.
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    let parsed = time::OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(s, &Iso8601::DEFAULT))
        .or_else(|_| time::PrimitiveDateTime::parse(s, &Iso8601::DEFAULT).map(|p| p.assume_utc()))
        .or_else(|_| time::Date::parse(s, &Iso8601::DEFAULT).map(|d| d.midnight().assume_utc()))
        .map_err(|e| e.to_string())?;
    Ok((parsed.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Formats epoch milliseconds as RFC 3339 (UTC).
pub fn format_datetime(ms: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_base_type_parses_by_name() {
        for b in BaseType::ALL {
            assert_eq!(BaseType::parse(b.name()), Some(b));
            assert_eq!(serde_json::to_value(b).unwrap(), json!(b.name()));
        }
        assert_eq!(BaseType::parse("string"), Some(BaseType::String));
        assert_eq!(BaseType::parse("FLOAT"), None);
    }

    #[test]
    fn values_are_checked_and_normalized() {
        assert_eq!(BaseType::Integer.normalize(&json!(3.0)).unwrap(), json!(3));
        assert!(BaseType::Integer.normalize(&json!(3.5)).is_err());
        assert!(BaseType::Integer.normalize(&json!(1u64 << 40)).is_err());
        assert!(BaseType::Long.normalize(&json!(1u64 << 40)).is_ok());
        assert!(BaseType::Boolean.normalize(&json!("true")).is_err());
        assert!(BaseType::String.normalize(&json!(1)).is_err());
        assert!(BaseType::Thingname.normalize(&json!("a/b")).is_err());
        assert_eq!(
            BaseType::Datetime
                .normalize(&json!("1970-01-01T00:00:01Z"))
                .unwrap(),
            json!(1000)
        );
        assert_eq!(BaseType::Datetime.normalize(&json!(5)).unwrap(), json!(5));
        assert_eq!(
            BaseType::Datetime.normalize(&json!("1970-01-02")).unwrap(),
            json!(86_400_000)
        );
        assert!(BaseType::Datetime.normalize(&json!("yesterday")).is_err());
        assert!(
            BaseType::Guid
                .normalize(&json!("0f8fad5b-d9cb-469f-a165-70867728950e"))
                .is_ok()
        );
        assert!(BaseType::Guid.normalize(&json!("nope")).is_err());
        assert!(BaseType::Nothing.normalize(&json!(1)).is_err());
        assert_eq!(BaseType::Number.normalize(&Json::Null).unwrap(), Json::Null);
    }

    #[test]
    fn datetimes_format_back() {
        assert_eq!(format_datetime(1000), "1970-01-01T00:00:01Z");
    }
}
