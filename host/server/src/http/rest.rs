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
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE) else {
        return false;
    };
    // What nearly every client sends, compared as it is.
    if value.as_bytes() == b"application/json" {
        return true;
    }
    value
        .to_str()
        .ok()
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

/// The most memory the JSON values of a body may take, per byte of the body (ordinary bodies
/// take 5 to 25 times their size: a small object is a map node of about 640 bytes).
pub const MEMORY_PER_BODY_BYTE: usize = 32;

/// What the values of a body may take in memory, counted as they are built: each value and
/// element 32 bytes, each object's map nodes 640 bytes per 11 members, each key's and string's
/// bytes. Building stops as soon as the count passes the cap, so a body of a million tiny values
/// never takes 30 times its size. Nesting is bounded by the parser's depth limit (128).
struct Budget {
    used: std::cell::Cell<usize>,
    cap: usize,
    over: std::cell::Cell<bool>,
}

impl Budget {
    const VALUE: usize = 32;
    /// A map node holds up to 11 keys and values: (24 + 32) x 11 and its links.
    const NODE: usize = 640;
    const PER_NODE: usize = 11;

    fn for_body(body: &[u8]) -> Budget {
        Budget {
            used: std::cell::Cell::new(0),
            cap: MEMORY_PER_BODY_BYTE * body.len() + 4096,
            over: std::cell::Cell::new(false),
        }
    }

    fn take<E: serde::de::Error>(&self, bytes: usize) -> Result<(), E> {
        let used = self.used.get() + bytes;
        self.used.set(used);
        if used > self.cap {
            self.over.set(true);
            return Err(E::custom("over the memory budget"));
        }
        Ok(())
    }

    /// The 400 of a parse that failed: over the budget, or where the text is wrong.
    fn refusal(&self, body: &[u8], e: serde_json::Error) -> ApiError {
        if self.over.get() {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body holds too many small values: more than {} KiB of memory for a body of {} KiB (at most {MEMORY_PER_BODY_BYTE} times its size)",
                    self.cap / 1024,
                    body.len() / 1024
                ),
            );
        }
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the body is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    }
}

/// One JSON value, built as `serde_json::Value` builds it, within a [`Budget`].
struct Value<'b>(&'b Budget);

impl<'de> serde::de::DeserializeSeed<'de> for Value<'_> {
    type Value = Json;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        self.0.take(Budget::VALUE)?;
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Value<'_> {
    type Value = Json;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Json, E> {
        self.0.take(v.len())?;
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Json, E> {
        self.0.take(v.len())?;
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Value(self.0))? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Json, A::Error> {
        let mut object = serde_json::Map::new();
        members(self.0, map, |k, v| {
            object.insert(k, v);
        })?;
        Ok(Json::Object(object))
    }
}

/// An object's members, each counted in `budget` before it is kept.
fn members<'de, A: serde::de::MapAccess<'de>>(
    budget: &Budget,
    mut map: A,
    mut keep: impl FnMut(String, Json),
) -> Result<(), A::Error> {
    let mut count = 0;
    while let Some(key) = map.next_key::<String>()? {
        if count % Budget::PER_NODE == 0 {
            budget.take(Budget::NODE)?;
        }
        count += 1;
        budget.take(key.len())?;
        let value = map.next_value_seed(Value(budget))?;
        keep(key, value);
    }
    Ok(())
}

/// A service call's body: its members, unbuilt into a map (see [`crate::api::Params`]), their
/// names borrowed from the body where they have no escapes.
struct Members<'b>(&'b Budget);

impl<'de> serde::de::Visitor<'de> for Members<'_> {
    type Value = crate::api::params::Pairs<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object of parameters")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<crate::api::params::Pairs<'de>, A::Error> {
        let mut out = crate::api::params::Pairs::with_capacity(4);
        let mut count = 0;
        while let Some(key) = map.next_key_seed(Name)? {
            if count % Budget::PER_NODE == 0 {
                self.0.take(Budget::NODE)?;
            }
            count += 1;
            // The list's own room too, twice a member's (a `Vec` doubles as it grows): the
            // list, and a host service's map of it, stay within the budget.
            self.0
                .take(key.len() + 2 * std::mem::size_of::<(std::borrow::Cow<str>, Json)>())?;
            let value = map.next_value_seed(Value(self.0))?;
            out.push((key, value));
        }
        Ok(out)
    }
}

/// A member's name, borrowed from the body when it can be.
struct Name;

impl<'de> serde::de::DeserializeSeed<'de> for Name {
    type Value = std::borrow::Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Name {
    type Value = std::borrow::Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v))
    }
}

fn refuse_unless_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if is_json(headers) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a write needs Content-Type: application/json",
    ))
}

/// Parses a JSON request body in one pass within its memory budget; malformed JSON is a 400
/// that says where, and so is a body whose values would take too much memory.
pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Json, ApiError> {
    refuse_unless_json(headers)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    parse_json(body)
}

/// A body's JSON value, within its budget (see [`Budget`]).
pub fn parse_json(body: &[u8]) -> Result<Json, ApiError> {
    let budget = Budget::for_body(body);
    let mut de = serde_json::Deserializer::from_slice(body);
    serde::de::DeserializeSeed::deserialize(Value(&budget), &mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| budget.refusal(body, e))
}

/// A service call's body: a JSON object of parameters (an empty body: none).
pub fn parse_params<'b>(
    headers: &HeaderMap,
    body: &'b [u8],
) -> Result<crate::api::Params<'b>, ApiError> {
    refuse_unless_json(headers)?;
    let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(crate::api::Params::new());
    };
    let not_object = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body of a service call is a JSON object of parameters",
        )
    };
    if *first != b'{' {
        // Any JSON but an object: said so once it is known to be JSON at all.
        parse_json(body)?;
        return Err(not_object());
    }
    let budget = Budget::for_body(body);
    budget
        .take::<serde_json::Error>(Budget::VALUE)
        .map_err(|e| budget.refusal(body, e))?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let pairs = serde::Deserializer::deserialize_map(&mut de, Members(&budget))
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| budget.refusal(body, e))?;
    Ok(crate::api::Params::from_pairs(pairs))
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
    // decoded. Most paths have nothing encoded: their segments are borrowed from the path.
    let trimmed = path.trim_matches('/');
    let decoded: Option<smallvec::SmallVec<[String; 4]>> = if trimmed.contains('%') {
        let segments = trimmed
            .split('/')
            .map(|seg| {
                percent_encoding::percent_decode_str(seg)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "the path is not valid UTF-8 once decoded",
                        )
                    })
            })
            .collect::<Result<smallvec::SmallVec<[String; 4]>, _>>()?;
        if segments.iter().any(|seg| seg.contains('/')) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no route for {path}"),
            ));
        }
        Some(segments)
    } else {
        None
    };
    let parts: smallvec::SmallVec<[&str; 8]> = match &decoded {
        Some(segments) => segments.iter().map(String::as_str).collect(),
        // A plain loop over the bytes: `split('/')` costs ten times more on a path of short
        // segments. Slicing at a '/' (ASCII) always falls on a character boundary.
        None => {
            let mut parts = smallvec::SmallVec::new();
            let mut start = 0;
            for (i, b) in trimmed.bytes().enumerate() {
                if b == b'/' {
                    parts.push(&trimmed[start..i]);
                    start = i + 1;
                }
            }
            parts.push(&trimmed[start..]);
            parts
        }
    };
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
            let params = parse_params(headers, body)?;
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
    fn k5_a_body_is_refused_before_its_values_take_more_than_32_times_its_size() {
        let refused = |body: &[u8]| super::parse_json(body).unwrap_err().message;
        // A hundred thousand one-member objects: 800 KB of text, 70 MB as values.
        let empty = format!("[{}{{}}]", r#"{"a":0},"#.repeat(100_000));
        assert!(
            refused(empty.as_bytes()).contains("too many small values"),
            "{}",
            refused(empty.as_bytes())
        );
        // As parameters of a service call too.
        let wide = format!(r#"{{"p": [{}{{}}]}}"#, r#"{"a":0},"#.repeat(100_000));
        match super::parse_params(&json_headers(), wide.as_bytes()) {
            Err(e) => assert!(e.message.contains("too many small values"), "{}", e.message),
            Ok(p) => panic!("{} parameters taken", p.len()),
        }
        // A flood of one name: its list counts too.
        let same = format!("{{{}\"a\":0}}", r#""a":0,"#.repeat(100_000));
        match super::parse_params(&json_headers(), same.as_bytes()) {
            Err(e) => assert!(e.message.contains("too many small values"), "{}", e.message),
            Ok(p) => panic!("{} parameters taken", p.len()),
        }
        // Ordinary bodies are far from the cap.
        assert!(super::parse_json(br#"{"a": [1, 2.5, "x"], "b": {"c": null}}"#).is_ok());
        // Broken text is reported where it breaks; deep nesting stops at the parser's limit.
        for broken in [&b"[1,"[..], b"{} {}", b"{\"a\" 1}"] {
            assert!(
                refused(broken).contains("not valid JSON"),
                "{}",
                refused(broken)
            );
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(refused(deep.as_bytes()).contains("recursion limit"));
    }

    fn json_headers() -> super::HeaderMap {
        let mut h = super::HeaderMap::new();
        h.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        h
    }

    /// The one-pass parse builds what `serde_json` builds.
    #[test]
    fn a_body_is_parsed_to_the_value_serde_json_gives() {
        for body in [
            r#"{"a": 1, "b": -2, "c": 2.5, "d": 18446744073709551615, "e": -9223372036854775808}"#,
            r#"{"s": "t\u00e9st \"q\" \n", "n": null, "t": true, "f": false}"#,
            r#"[{"x": [1, [2, [3]]]}, {}, [], "", 1e300, -0.0, 1.0]"#,
            r#"{"dup": 1, "other": 2, "dup": 3}"#,
            r#""just a string""#,
            "  7  ",
        ] {
            let ours = super::parse_json(body.as_bytes()).unwrap();
            let theirs: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(ours, theirs, "{body}");
            assert_eq!(ours.to_string(), theirs.to_string(), "{body}");
        }
    }

    #[test]
    fn a_service_calls_body_is_its_parameters_by_name() {
        fn params(body: &str) -> Result<crate::api::Params<'_>, super::ApiError> {
            super::parse_params(&json_headers(), body.as_bytes())
        }
        let p = params(r#"{"a": 1, "b": {"c": [true]}, "a": 2}"#).unwrap();
        assert_eq!(
            p.iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect::<Vec<_>>(),
            vec![
                ("a".to_string(), serde_json::json!(2)),
                ("b".to_string(), serde_json::json!({"c": [true]}))
            ]
        );
        // A name written with an escape is the name it stands for.
        let escaped = params(r#"{"\u0061b": 1, "ab": 2}"#).unwrap();
        assert_eq!(escaped.names().collect::<Vec<_>>(), vec!["ab"]);
        assert_eq!(escaped.get("ab"), Some(&serde_json::json!(2)));
        assert!(params("").unwrap().is_empty());
        assert!(params(" \n ").unwrap().is_empty());
        for not_object in ["[1]", "3", r#""x""#, "null"] {
            assert_eq!(
                params(not_object).unwrap_err().message,
                "the body of a service call is a JSON object of parameters"
            );
        }
        for broken in ["[1", r#"{"a": 1"#, r#"{"a": 1} x"#, "{,}"] {
            let e = params(broken).unwrap_err();
            assert_eq!(e.status, super::StatusCode::BAD_REQUEST);
            assert!(e.message.contains("not valid JSON"), "{}", e.message);
        }
        let e = super::parse_params(&super::HeaderMap::new(), b"{}").unwrap_err();
        assert_eq!(e.status, super::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
