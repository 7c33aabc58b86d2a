//! Remote-access tunnels, what the model decides (DOMAIN C7): which endpoints a Thing allows,
//! and the request that asks a device to open one (in the style of the vendor's Edge SDK tunnel
//! manager: its `StartTunnel` service, its tunnel WebSocket `/Thingworx/WSTunnelServer/{tid}`).
//!
//! A Thing allows the endpoints its `allowedEndpoints` property lists (a JSON array of
//! `host:port` strings, or one string of them separated by commas or spaces), while its
//! `tunnelsEnabled` is not false; both come with `RemoteThingWithTunnels`, and someone with
//! `Update` on the Thing sets them. Nothing is allowed by default. `StartSession` is refused for
//! an endpoint the Thing does not allow (when the Thing has the property at all: a provider
//! whose tunnels go elsewhere, ACE's Axeda models, has not), and a tunnel is refused for one
//! before its device is asked, whatever the Thing.

use crate::state::app::App;
use serde_json::{Value as Json, json};
use std::time::Duration;
use thinghost_alwayson::message::Request;
use thinghost_alwayson::{Code, Field, Table, Value, codes};
use thinghost_core::validate::find_property;
use thinghost_core::{Body, Kind, Model, View};

/// The property listing the endpoints a Thing's tunnels may reach.
pub const ALLOWED_ENDPOINTS: &str = "allowedEndpoints";
/// The property that turns a Thing's tunnels off.
pub const TUNNELS_ENABLED: &str = "tunnelsEnabled";
/// The device-side service that opens a tunnel (the vendor's name).
pub const START_TUNNEL: &str = "StartTunnel";
/// The WebSocket the device's side of a tunnel connects to, followed by the tunnel id.
pub const DEVICE_PATH: &str = "/Thingworx/WSTunnelServer/";
/// The WebSocket subprotocol a device asks for to exchange the bytes as binary frames; without
/// it, as the vendor's SDKs do, they travel base64-encoded in text frames.
pub const BINARY_PROTOCOL: &str = "thinghost-tunnel";

/// `host:port` (`[v6 address]:port` too): the host and the port, or why not.
pub fn parse_endpoint(endpoint: &str) -> Result<(String, u16), String> {
    let e = endpoint.trim();
    let bad = || {
        format!(
            "{endpoint:?} is not an endpoint: give host:port (10.0.0.5:22, [::1]:5900, device.local:80)"
        )
    };
    let (host, port) = if let Some(rest) = e.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        let (h, p) = e.rsplit_once(':').ok_or_else(bad)?;
        if h.contains(':') {
            return Err(bad());
        }
        (h, p)
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty()
        || port == 0
        || host.len() > 253
        || host.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// The endpoints a property value lists.
fn listed(value: &Json) -> Vec<String> {
    match value {
        Json::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Json::String(s) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether `thing` allows a tunnel to `endpoint`: `Ok`, or why not (naming what to set).
/// `declared_only`: a Thing without the `allowedEndpoints` property allows anything (the check
/// of `StartSession`, whose provider may tunnel elsewhere); otherwise it allows nothing.
pub fn endpoint_allowed(
    m: &Model,
    thing: &str,
    endpoint: &str,
    declared_only: bool,
) -> Result<(), String> {
    let wanted = parse_endpoint(endpoint)?;
    let Some(e) = m.get(Kind::Thing, thing) else {
        return Err(format!("Thing {thing} was not found"));
    };
    let Body::Thing(t) = &e.body else {
        return Err(format!("{thing} is not a Thing"));
    };
    let value = |name: &str| {
        find_property(m, e, name).map(|(def, _)| {
            t.values
                .get(name)
                .cloned()
                .or_else(|| def.default_value.clone())
                .unwrap_or(Json::Null)
        })
    };
    if value(TUNNELS_ENABLED) == Some(Json::Bool(false)) {
        return Err(format!(
            "Thing {thing} has its tunnels turned off ({TUNNELS_ENABLED} is false)"
        ));
    }
    let Some(list) = value(ALLOWED_ENDPOINTS) else {
        return if declared_only {
            Ok(())
        } else {
            Err(format!(
                "Thing {thing} allows no tunnel: it has no {ALLOWED_ENDPOINTS} property (RemoteThingWithTunnels has it)"
            ))
        };
    };
    if listed(&list)
        .iter()
        .filter_map(|s| parse_endpoint(s).ok())
        .any(|allowed| allowed == wanted)
    {
        return Ok(());
    }
    Err(format!(
        "Thing {thing} does not allow the endpoint {endpoint}: someone with Update on the Thing adds it to its property {ALLOWED_ENDPOINTS} (a JSON list such as [\"127.0.0.1:22\"])"
    ))
}

/// What the device is asked to open (the vendor's `StartTunnel` parameters).
#[derive(Clone, Debug)]
pub struct TunnelRequest {
    pub tid: String,
    pub host: String,
    pub port: u16,
    /// The most bytes of the endpoint's stream in one message.
    pub chunk_size: usize,
    pub idle: Duration,
}

/// The AlwaysOn request for the device of `thing`: `StartTunnel` with `tid`, `type`
/// (`tcp`), `chunksize`, `idle_timeout` and `read_timeout` (milliseconds), and `connection`, a
/// JSON text with `host`, `port` and `num_connects`, as the vendor's SDKs read it.
pub fn start_request(thing: &str, t: &TunnelRequest) -> Request {
    let connection = json!({"host": t.host, "port": t.port, "num_connects": 1}).to_string();
    let fields = [
        (
            "tid",
            codes::STRING,
            Value::Text(codes::STRING, t.tid.clone()),
        ),
        (
            "type",
            codes::STRING,
            Value::Text(codes::STRING, "tcp".into()),
        ),
        (
            "chunksize",
            codes::INTEGER,
            Value::Integer(t.chunk_size.min(i32::MAX as usize) as i32),
        ),
        (
            "idle_timeout",
            codes::INTEGER,
            Value::Integer(t.idle.as_millis().min(i32::MAX as u128) as i32),
        ),
        ("read_timeout", codes::INTEGER, Value::Integer(10)),
        (
            "connection",
            codes::STRING,
            Value::Text(codes::STRING, connection),
        ),
    ];
    service(thing, START_TUNNEL, &fields)
}

fn service(thing: &str, name: &str, fields: &[(&str, u8, Value)]) -> Request {
    Request {
        entity_type: codes::THING,
        entity_name: thing.to_string(),
        characteristic: codes::SERVICES,
        name: name.to_string(),
        headers: Vec::new(),
        params: Some(Table {
            fields: fields
                .iter()
                .map(|(n, bt, _)| Field::new(n.to_string(), *bt))
                .collect(),
            rows: vec![fields.iter().map(|(_, _, v)| v.clone()).collect()],
        }),
    }
}

/// Asks the device that has bound `thing` to open tunnel `t`, and waits for its answer (at
/// most the server's device timeout). Blocks: call it off the async workers. `Err`: why not, to
/// tell the client.
pub fn ask_device(app: &App, thing: &str, t: &TunnelRequest) -> Result<(), String> {
    use crate::state::edge::Unanswered;
    let timeout = app.edge.limits.device_timeout;
    match app
        .edge
        .forward(thing, Code::POST, start_request(thing, t), timeout)
    {
        Ok(a) if a.code == Code::SUCCESS => Ok(()),
        Ok(a) => Err(format!(
            "the device of Thing {thing} refused the tunnel: {}{}",
            a.code,
            a.reason
                .map(|r| format!(" ({})", crate::state::auth::bounded(&r, 200)))
                .unwrap_or_default()
        )),
        Err(Unanswered::NotBound | Unanswered::Gone) => Err(format!(
            "the device of Thing {thing} is not connected: no AlwaysOn connection has bound it"
        )),
        Err(Unanswered::Busy) => Err(format!(
            "the device of Thing {thing} has too many requests waiting; try again"
        )),
        Err(Unanswered::Timeout) => Err(format!(
            "the device of Thing {thing} did not answer StartTunnel within {} s",
            timeout.as_secs()
        )),
        Err(Unanswered::Loop) => Err("a device cannot open a tunnel to itself".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c7_endpoints_parse_as_host_and_port() {
        assert_eq!(
            parse_endpoint("10.0.0.5:22").unwrap(),
            ("10.0.0.5".into(), 22)
        );
        assert_eq!(
            parse_endpoint(" Device.local:80 ").unwrap(),
            ("device.local".into(), 80)
        );
        assert_eq!(parse_endpoint("[::1]:5900").unwrap(), ("::1".into(), 5900));
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:70000",
            ":22",
            "::1:22",
            "a b:1",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn c7_a_list_is_json_or_text() {
        assert_eq!(listed(&json!(["a:1", 2, "b:2"])), ["a:1", "b:2"]);
        assert_eq!(listed(&json!("a:1, b:2 c:3")), ["a:1", "b:2", "c:3"]);
        assert!(listed(&json!(null)).is_empty());
    }

    #[test]
    fn c7_start_tunnel_carries_the_vendors_parameters() {
        let r = start_request(
            "Pump",
            &TunnelRequest {
                tid: "abc".into(),
                host: "127.0.0.1".into(),
                port: 22,
                chunk_size: 8192,
                idle: Duration::from_secs(300),
            },
        );
        assert_eq!(
            (r.entity_name.as_str(), r.name.as_str()),
            ("Pump", START_TUNNEL)
        );
        let t = r.params.unwrap();
        let names: Vec<&str> = t.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "tid",
                "type",
                "chunksize",
                "idle_timeout",
                "read_timeout",
                "connection"
            ]
        );
        let Value::Text(_, c) = &t.rows[0][5] else {
            panic!()
        };
        let c: Json = serde_json::from_str(c).unwrap();
        assert_eq!(
            c,
            json!({"host": "127.0.0.1", "port": 22, "num_connects": 1})
        );
    }
}
