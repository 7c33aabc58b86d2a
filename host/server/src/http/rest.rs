//! The REST adapter, in the vendor's conventions (DOMAIN.md section 4):
//! `/Thingworx/{Collection}/{Entity}/{Properties|Services|Events}/{name}`.
//! It decodes the path and the body and calls the typed API (`crate::api`); it names no service.
//!
//! Every answer about an entity the caller cannot see is exactly the answer about one that does
//! not exist (V1): same status, same body.

pub use crate::api::{ApiError, Reply};
use crate::state::app::App;
use crate::state::auth::Caller;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value as Json, json};
use thinghost_core::Kind;

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            // Compared without case and without a lowercased copy.
            let t = t.trim().as_bytes();
            let (start, end) = ("application/".as_bytes(), "+json".as_bytes());
            t.eq_ignore_ascii_case(b"application/json")
                || (t.len() >= start.len() + end.len()
                    && t[..start.len()].eq_ignore_ascii_case(start)
                    && t[t.len() - end.len()..].eq_ignore_ascii_case(end))
        })
}

/// Parses a JSON request body; malformed JSON is a 400 that says where.
/// The most memory the JSON values of a body may take, per byte of the body (ordinary bodies
/// take 5 to 25 times their size: a small object is a map node of about 640 bytes).
pub const MEMORY_PER_BODY_BYTE: usize = 32;

/// About how many bytes `serde_json::Value`s of `body` would take (each value and element; each
/// object's map nodes, one per 11 members; each key's and string's bytes), by one pass that
/// builds nothing. Nesting is bounded by the parser's depth limit (128).
pub fn json_cost(body: &[u8]) -> Result<usize, serde_json::Error> {
    use serde::de::{MapAccess, SeqAccess, Visitor};
    use std::cell::Cell;
    const VALUE: usize = 32;
    // A map node holds up to 11 keys and values: (24 + 32) x 11 and its links.
    const NODE: usize = 640;
    const PER_NODE: usize = 11;
    struct Cost<'c>(&'c Cell<usize>);
    impl<'de> Visitor<'de> for Cost<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, v: &str) -> Result<(), E> {
            self.0.set(self.0.get() + v.len());
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Seed(self.0))?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut members = 0;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if members % PER_NODE == 0 {
                    self.0.set(self.0.get() + NODE);
                }
                members += 1;
                self.0.set(self.0.get() + key.len());
                map.next_value_seed(Seed(self.0))?;
            }
            Ok(())
        }
    }
    struct Seed<'c>(&'c Cell<usize>);
    impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            self.0.set(self.0.get() + VALUE);
            d.deserialize_any(Cost(self.0))
        }
    }
    let cost = Cell::new(0);
    let mut de = serde_json::Deserializer::from_slice(body);
    serde::de::DeserializeSeed::deserialize(Seed(&cost), &mut de)?;
    de.end()?;
    Ok(cost.get())
}

pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Json, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a write needs Content-Type: application/json",
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    // Before a value is built: what it would take in memory, from one streaming pass that keeps
    // nothing (a body of a million tiny values would take 30 times its size as values).
    let budget = MEMORY_PER_BODY_BYTE * body.len() + 4096;
    match json_cost(body) {
        Ok(cost) if cost > budget => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body holds too many small values: about {} KiB of memory for a body of {} KiB (at most {MEMORY_PER_BODY_BYTE} times its size)",
                    cost / 1024,
                    body.len() / 1024
                ),
            ));
        }
        // A syntax error is reported by the parse below, with its line and column.
        _ => {}
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the body is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

/// Handles one API request for an authenticated caller.
pub fn handle(
    app: &std::sync::Arc<App>,
    caller: &Caller,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Reply, ApiError> {
    // Segments arrive percent-encoded (`Device%207`); entity and member names are matched
    // decoded (borrowed from the path where nothing is encoded).
    let decoded: smallvec::SmallVec<[std::borrow::Cow<str>; 8]> = path
        .trim_matches('/')
        .split('/')
        .map(|seg| {
            if !seg.contains('%') {
                return Ok(std::borrow::Cow::Borrowed(seg));
            }
            percent_encoding::percent_decode_str(seg)
                .decode_utf8()
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "the path is not valid UTF-8 once decoded",
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    if decoded.iter().any(|seg| seg.contains('/')) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no route for {path}"),
        ));
    }
    let parts: smallvec::SmallVec<[&str; 8]> = decoded.iter().map(|c| c.as_ref()).collect();
    let parts = match parts.as_slice() {
        ["Thingworx", rest @ ..] => rest,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "the API lives under /Thingworx/",
            ));
        }
    };
    if parts.is_empty() || parts.iter().any(|p| p.is_empty()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "name a collection: /Thingworx/{Collection}",
        ));
    }
    let kind = Kind::from_collection(parts[0]).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("there is no collection {:?}", parts[0]),
        )
    })?;
    match (method, &parts[1..]) {
        (&Method::GET, []) => crate::api::entities::list(app, caller, kind),
        (&Method::GET, [name]) => crate::api::entities::describe(app, caller, kind, name),
        (&Method::GET, [name, "Properties", prop]) => {
            crate::api::entities::read_property(app, caller, kind, name, prop)
        }
        (&Method::PUT, [name, "Properties", prop]) => {
            let parsed = parse_body(headers, body)?;
            crate::api::entities::write_property(app, caller, kind, name, prop, parsed.get(*prop))
        }
        (&Method::POST, [name, "Services", service]) => {
            let params = match parse_body(headers, body)? {
                Json::Object(o) => o,
                _ => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "the body of a service call is a JSON object of parameters",
                    ));
                }
            };
            crate::api::invoke(app, caller, kind, name, service, params)
        }
        (&Method::POST, [name, "Events", event]) => {
            let data = parse_body(headers, body)?;
            crate::api::events::fire(app, caller, kind, name, event, &data)
        }
        (&Method::DELETE, [name]) => crate::api::delete(app, caller, kind, name),
        (_, [] | [_] | [_, "Properties", _] | [_, "Services", _] | [_, "Events", _]) => {
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}"),
            ))
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no route for {path}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_json_body_is_named_so_in_any_case() {
        let with = |t: &str| {
            let mut h = super::HeaderMap::new();
            h.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_str(t).unwrap(),
            );
            super::is_json(&h)
        };
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ",
            "application/vnd.thing+json",
            "APPLICATION/LD+JSON",
            "application/+json",
        ] {
            assert!(with(yes), "{yes}");
        }
        for no in [
            "text/json",
            "application/jsonx",
            "application/xml",
            "json",
            "+json",
            "",
        ] {
            assert!(!with(no), "{no}");
        }
        assert!(!super::is_json(&super::HeaderMap::new()));
    }

    #[test]
    fn k5_the_memory_a_body_would_take_is_known_before_it_is_built() {
        assert_eq!(super::json_cost(b"[0,0,0]").unwrap(), 32 + 3 * 32);
        assert_eq!(
            super::json_cost(br#"{"a":"xy"}"#).unwrap(),
            32 + 640 + 1 + 32 + 2
        );
        assert!(super::json_cost(b"[1,").is_err());
        assert!(super::json_cost(b"{} {}").is_err());
        // A hundred thousand one-member objects: 800 KB of text, 70 MB as values.
        let empty = format!("[{}{{}}]", r#"{"a":0},"#.repeat(100_000));
        let cost = super::json_cost(empty.as_bytes()).unwrap();
        assert!(cost > super::MEMORY_PER_BODY_BYTE * empty.len(), "{cost}");
        // Deep nesting stops at the parser's limit, whatever the memory.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(super::json_cost(deep.as_bytes()).is_err());
    }
}
