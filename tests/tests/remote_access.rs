//! The shipped extensions CSE, RAE and ACE against the real server over HTTPS: the seed 002
//! walk-through (grants G1-G4, sessions S1), nonce keys on `/Thingworx/TWS` (K6), and their load
//! order (E2) in every arrangement of the plugin directory.

use serde_json::{Value as Json, json};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use thinghost_tests::{Server, audited, copy_dir, ok, post, workspace};

const ES: &str = "/Thingworx/Resources/EntityServices/Services";
const RAE_GRANTS: &str = "/Thingworx/Things/RemoteAccessPermissionsServices/Services";
const ACE_GRANTS: &str = "/Thingworx/Things/eMessageServices/Services";

/// The shipped plugin directory, copied (only the named extensions).
fn plugins(t: &Path, names: &[&str]) -> PathBuf {
    let p = t.join("plugins");
    std::fs::create_dir_all(&p).unwrap();
    for n in names {
        copy_dir(&workspace().join("plugins").join(n), &p.join(n));
    }
    p
}

fn serve(t: &Path, p: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--dev", "--plugins", p.to_str().unwrap(), "--no-watch"];
    args.extend_from_slice(extra);
    Server::start(&t.join("d"), &args)
}

fn get(s: &Server, key: &str, path: &str) -> (u16, Json) {
    let r = s
        .client
        .get(s.at(path))
        .header("appKey", key)
        .send()
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Json::Null))
}

fn call(s: &Server, key: &str, thing: &str, service: &str, params: Json) -> (u16, Json) {
    let (st, v) = post(
        s,
        key,
        &format!("/Thingworx/Things/{thing}/Services/{service}"),
        params,
    );
    (st.as_u16(), v)
}

fn result(s: &Server, key: &str, thing: &str, service: &str, params: Json) -> Json {
    let (st, v) = call(s, key, thing, service, params);
    assert_eq!(st, 200, "{thing}.{service}: {v}");
    v["rows"][0]["result"].clone()
}

/// raUser (with a key) in raUserGroup, in raOrg: the seed's setup. Returns raUser's key.
fn seed_users(s: &Server, admin: &str) -> String {
    ok(
        s,
        admin,
        &format!("{ES}/CreateUser"),
        json!({"name": "raUser", "password": "a long password 1"}),
    );
    ok(
        s,
        admin,
        &format!("{ES}/CreateGroup"),
        json!({"name": "raUserGroup"}),
    );
    ok(
        s,
        admin,
        "/Thingworx/Groups/raUserGroup/Services/AddMember",
        json!({"member": "raUser", "type": "User"}),
    );
    ok(
        s,
        admin,
        &format!("{ES}/CreateOrganization"),
        json!({"name": "raOrg"}),
    );
    ok(
        s,
        admin,
        "/Thingworx/Organizations/raOrg/Services/AddMember",
        json!({"name": "raOrg", "member": "raUserGroup", "type": "Group"}),
    );
    let v = ok(
        s,
        admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "raUser-key", "user": "raUser"}),
    );
    v["rows"][0]["keyId"].as_str().unwrap().to_string()
}

fn thing(s: &Server, admin: &str, name: &str, template: &str) {
    ok(
        s,
        admin,
        &format!("{ES}/CreateThing"),
        json!({"name": name, "thingTemplateName": template}),
    );
    // The endpoints the tests' sessions name (C7: nothing is allowed by default).
    if template == "RemoteThingWithTunnels" {
        allow(s, admin, name, json!(["10.0.0.5:22", "10.0.0.9:5900"]));
    }
}

/// Sets the endpoints `thing`'s tunnels may reach (as `key`'s user): the status.
fn allow(s: &Server, key: &str, thing: &str, endpoints: Json) -> u16 {
    s.client
        .put(s.at(&format!(
            "/Thingworx/Things/{thing}/Properties/allowedEndpoints"
        )))
        .header("appKey", key)
        .json(&json!({ "allowedEndpoints": endpoints }))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// A grant Thing and what goes with it: RAE's or ACE's.
struct Flavor {
    grants: &'static str,
    for_thing: &'static str,
    for_template: &'static str,
    template: &'static str,
    shape: &'static str,
}

const FLAVORS: [Flavor; 2] = [
    Flavor {
        grants: RAE_GRANTS,
        for_thing: "GrantPermissionsThingWorxInternalForThing",
        for_template: "GrantPermissionsThingWorxInternalForTemplate",
        template: "RemoteThingWithTunnels",
        shape: "RemoteAccessible",
    },
    Flavor {
        grants: ACE_GRANTS,
        for_thing: "GrantRemoteAccessPermissionsForThing",
        for_template: "GrantRemoteAccessPermissionsForTemplate",
        template: "AxedaManagedModel",
        shape: "AxedaRemoteAccessible",
    },
];

/// A server with the three extensions, the seed's raUser, raUserGroup and raOrg, and Device1
/// made from the flavor's template, which raUser cannot see yet. (temp dir, server, admin key,
/// raUser's key)
fn seed(f: &Flavor) -> (tempfile::TempDir, Server, String, String) {
    let t = tempfile::tempdir().unwrap();
    let p = plugins(
        t.path(),
        &["connection-services", "remote-access", "axeda-compat"],
    );
    let s = serve(t.path(), &p, &[]);
    let admin = s.admin_key();
    let ra = seed_users(&s, &admin);
    thing(&s, &admin, "Device1", f.template);
    assert_eq!(get(&s, &ra, "/Thingworx/Things/Device1").0, 404);
    (t, s, admin, ra)
}

/// G1, for RAE's and ACE's grant services: every parameter is required and of its base type.
#[test]
fn g1_every_grant_parameter_is_required_and_of_its_base_type() {
    for f in &FLAVORS {
        let Flavor {
            grants, for_thing, ..
        } = *f;
        let (_t, s, admin, _ra) = seed(f);
        // G1: all parameters required, each of its base type.
        let (st, v) = post(
            &s,
            &admin,
            &format!("{grants}/{for_thing}"),
            json!({"organization": "raOrg", "userGroup": "raUserGroup"}),
        );
        assert_eq!(st, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("thingName"), "{v}");
        let (st, v) = post(
            &s,
            &admin,
            &format!("{grants}/{for_thing}"),
            json!({"organization": "raOrg", "userGroup": "noSuchGroup", "thingName": "Device1"}),
        );
        assert_eq!(st, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("userGroup"), "{v}");
    }
}

/// G2: a target without the shape is refused, naming the missing shape, and nothing changes.
#[test]
fn g2_a_target_without_the_shape_is_refused_naming_it_and_nothing_changes() {
    for f in &FLAVORS {
        let Flavor {
            grants,
            for_thing,
            shape,
            ..
        } = *f;
        let (_t, s, admin, ra) = seed(f);
        // G2: a Thing without the shape is refused, naming it, and nothing changes.
        thing(&s, &admin, "Plain", "RemoteThing");
        let (st, v) = post(
            &s,
            &admin,
            &format!("{grants}/{for_thing}"),
            json!({"organization": "raOrg", "userGroup": "raUserGroup", "thingName": "Plain"}),
        );
        assert_eq!(st, 400, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains(&format!("Thing Plain does not implement the shape {shape}")),
            "{v}"
        );
        let v = ok(
            &s,
            &admin,
            "/Thingworx/Things/Plain/Services/GetVisibilityPermissions",
            json!({}),
        );
        assert_eq!(v["rows"], json!([]), "nothing was granted");
        assert_eq!(get(&s, &ra, "/Thingworx/Things/Plain").0, 404);
    }
}

/// G3 and S1, the seed 002 walk-through: after the administrator's grant, raUser sees the Thing,
/// reads its properties, starts, gets, lists and ends a session, and can do nothing else on it;
/// the grant is one change with one audit entry; the template variant grants every Thing of the
/// template, also those made after it.
#[test]
fn g3_s1_the_seed_002_walk_through_gives_exactly_the_minimum_and_sessions_run() {
    for f in &FLAVORS {
        let Flavor {
            grants,
            for_thing,
            for_template,
            template,
            shape,
            ..
        } = *f;
        let (_t, s, admin, ra) = seed(f);
        let granted = result(
            &s,
            &admin,
            grants.rsplit('/').nth(1).unwrap(),
            for_thing,
            json!({"organization": "raOrg", "userGroup": "raUserGroup", "thingName": "Device1"}),
        );
        assert!(granted.as_str().unwrap().contains("Device1"), "{granted}");
        // One transaction, one audit entry, listing what it granted.
        let entries = audited(&s, "permissionsChanged");
        let grant_entries: Vec<&Json> = entries
            .iter()
            .filter(|e| e["source"] == "Things/Device1")
            .collect();
        assert_eq!(grant_entries.len(), 1, "{entries:?}");
        let listed = grant_entries[0]["args"]["parameters"]["permissions"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(
            listed, 7,
            "visibility, Read, PropertyRead, 4 x ServiceInvoke"
        );

        // G3: exactly visibility, Read, PropertyRead and the four session services.
        let (st, d) = get(&s, &ra, "/Thingworx/Things/Device1");
        assert_eq!(st, 200, "{d}");
        let (st, v) = get(&s, &ra, "/Thingworx/Things/Device1/Properties/isConnected");
        assert_eq!(st, 200, "{v}");
        let started = result(
            &s,
            &ra,
            "Device1",
            "StartSession",
            json!({"remoteEndpoint": "10.0.0.5:22"}),
        );
        let id = started["sessionId"].as_str().unwrap().to_string();
        let uri = started["launchUri"].as_str().unwrap();
        assert!(
            uri.starts_with("thinghost-rac://") && uri.contains(&format!("/{id}?nonce=")),
            "{uri}"
        );
        let session = result(&s, &ra, "Device1", "GetSession", json!({"sessionId": id}));
        assert_eq!(
            (&session["user"], &session["thingName"], &session["state"]),
            (&json!("raUser"), &json!("Device1"), &json!("started"))
        );
        let list = result(&s, &ra, "Device1", "GetSessions", json!({}));
        assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
        let ended = result(&s, &ra, "Device1", "EndSession", json!({"sessionId": id}));
        assert_eq!(ended["state"], "ended");
        let list = result(&s, &ra, "Device1", "GetSessions", json!({}));
        assert_eq!(list, json!([]));
        let starts = audited(&s, "remoteSessionStarted");
        assert_eq!(starts.len(), 1);
        assert_eq!(starts[0]["category"], "REMOTE_ACCESS");
        assert_eq!(audited(&s, "remoteSessionEnded").len(), 1);
        // Nothing else: no write, no other service, no design-time change.
        let r = s
            .client
            .put(s.at("/Thingworx/Things/Device1/Properties/isConnected"))
            .header("appKey", &ra)
            .json(&json!({"isConnected": true}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 403);
        let (st, _) = call(
            &s,
            &ra,
            "Device1",
            "AddRunTimePermission",
            json!({"principal": "raUser", "principalType": "User", "type": "PropertyWrite", "allow": true}),
        );
        assert_eq!(st, 403);
        let (st, _) = call(
            &s,
            &ra,
            "Device1",
            "AddPropertyDefinition",
            json!({"name": "x", "type": "STRING"}),
        );
        assert_eq!(st, 403);
        // The grant services are not raUser's.
        let (st, _) = post(
            &s,
            &ra,
            &format!("{grants}/{for_thing}"),
            json!({"organization": "raOrg", "userGroup": "raUserGroup", "thingName": "Device1"}),
        );
        assert_eq!(st, 404);

        // The template variant: every Thing of the template, also one made after the grant.
        thing(&s, &admin, "Before", template);
        let (st, v) = post(
            &s,
            &admin,
            &format!("{grants}/{for_template}"),
            json!({"organization": "raOrg", "userGroup": "raUserGroup", "templateName": "RemoteThing"}),
        );
        assert_eq!(st, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(shape), "{v}");
        ok(
            &s,
            &admin,
            &format!("{grants}/{for_template}"),
            json!({"organization": "raOrg", "userGroup": "raUserGroup", "templateName": template}),
        );
        thing(&s, &admin, "After", template);
        for name in ["Before", "After"] {
            assert_eq!(
                get(&s, &ra, &format!("/Thingworx/Things/{name}")).0,
                200,
                "{name}"
            );
            let started = result(
                &s,
                &ra,
                name,
                "StartSession",
                json!({"remoteEndpoint": "10.0.0.9:5900"}),
            );
            let id = started["sessionId"].as_str().unwrap();
            result(&s, &ra, name, "EndSession", json!({"sessionId": id}));
            let r = s
                .client
                .put(s.at(&format!("/Thingworx/Things/{name}/Properties/isConnected")))
                .header("appKey", &ra)
                .json(&json!({"isConnected": true}))
                .send()
                .unwrap();
            assert_eq!(r.status(), 403, "{name}");
        }
    }
}

/// G4: a user who may run the grant service but has no Update on the target cannot grant; with
/// Update on it, it can.
#[test]
fn g4_only_administrators_or_users_with_update_on_the_target_may_grant() {
    for f in &FLAVORS {
        let Flavor {
            grants,
            for_thing,
            template,
            ..
        } = *f;
        let (_t, s, admin, ra) = seed(f);
        // G4: a user who may run the grant service but has no Update on the target cannot grant;
        // with Update on it, it can.
        ok(
            &s,
            &admin,
            &format!("{ES}/CreateUser"),
            json!({"name": "operator", "password": "a long password 2"}),
        );
        ok(
            &s,
            &admin,
            &format!("{ES}/CreateOrganization"),
            json!({"name": "opsOrg"}),
        );
        ok(
            &s,
            &admin,
            "/Thingworx/Organizations/opsOrg/Services/AddMember",
            json!({"name": "opsOrg", "member": "operator", "type": "User"}),
        );
        let grant_thing = grants.rsplit('/').nth(1).unwrap();
        // The grant's parameters name a group and an organization the operator must see (V1: a
        // principal the caller cannot see answers as a missing one).
        for principal in ["Groups/raUserGroup", "Organizations/raOrg"] {
            ok(
                &s,
                &admin,
                &format!("/Thingworx/{principal}/Services/AddVisibilityPermission"),
                json!({"principal": "opsOrg", "principalType": "Organization"}),
            );
        }
        for target in [grant_thing, "Device2"] {
            if target == "Device2" {
                thing(&s, &admin, "Device2", template);
            }
            ok(
                &s,
                &admin,
                &format!("/Thingworx/Things/{target}/Services/AddVisibilityPermission"),
                json!({"principal": "opsOrg", "principalType": "Organization"}),
            );
        }
        ok(
            &s,
            &admin,
            &format!("/Thingworx/Things/{grant_thing}/Services/AddRunTimePermission"),
            json!({"principal": "operator", "principalType": "User", "type": "ServiceInvoke", "resource": for_thing, "allow": true}),
        );
        ok(
            &s,
            &admin,
            "/Thingworx/Things/Device2/Services/AddDesignTimePermission",
            json!({"principal": "operator", "principalType": "User", "type": "Read", "allow": true}),
        );
        let op = ok(
            &s,
            &admin,
            &format!("{ES}/CreateApplicationKey"),
            json!({"name": "operator-key", "user": "operator"}),
        )["rows"][0]["keyId"]
            .as_str()
            .unwrap()
            .to_string();
        let body =
            json!({"organization": "raOrg", "userGroup": "raUserGroup", "thingName": "Device2"});
        let (st, v) = post(&s, &op, &format!("{grants}/{for_thing}"), body.clone());
        assert_eq!(st, 403, "{v}");
        assert_eq!(get(&s, &ra, "/Thingworx/Things/Device2").0, 404);
        ok(
            &s,
            &admin,
            "/Thingworx/Things/Device2/Services/AddDesignTimePermission",
            json!({"principal": "operator", "principalType": "User", "type": "Update", "allow": true}),
        );
        ok(&s, &op, &format!("{grants}/{for_thing}"), body);
        assert_eq!(get(&s, &ra, "/Thingworx/Things/Device2").0, 200);
    }
}

// ---- nonce keys on /Thingworx/TWS -------------------------------------------------------------

type Socket = tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// Opens `/Thingworx/TWS` over TLS with `headers`: the socket, or the refusal's status.
fn tws(s: &Server, headers: &[(&str, &str)]) -> Result<Socket, u16> {
    let port = s.port();
    let stream = thinghost_tests::tls_stream(s);
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("wss://localhost:{port}/Thingworx/TWS")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            tungstenite::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    match tungstenite::client::client(request, stream) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(r.status().as_u16())
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

/// The next JSON message (the tunnel's events, which the tunnel tests read, are skipped).
fn receive(socket: &mut Socket) -> Json {
    loop {
        match socket.read().unwrap() {
            tungstenite::Message::Text(t) => {
                let v: Json = serde_json::from_str(t.as_str()).unwrap();
                if v["event"] != "tunnel" {
                    return v;
                }
            }
            tungstenite::Message::Close(_) => return Json::Null,
            _ => continue,
        }
    }
}

fn ask(socket: &mut Socket, msg: Json) -> Json {
    socket
        .send(tungstenite::Message::Text(msg.to_string().into()))
        .unwrap();
    receive(socket)
}

/// A granted Device1 for raUser on a server with the three extensions; raUser's key.
fn granted_device(t: &Path, extra: &[&str]) -> (Server, String) {
    let p = plugins(t, &["connection-services", "remote-access"]);
    let s = serve(t, &p, extra);
    let admin = s.admin_key();
    let ra = seed_users(&s, &admin);
    thing(&s, &admin, "Device1", "RemoteThingWithTunnels");
    ok(
        &s,
        &admin,
        &format!("{RAE_GRANTS}/GrantPermissionsThingWorxInternalForThing"),
        json!({"organization": "raOrg", "userGroup": "raUserGroup", "thingName": "Device1"}),
    );
    (s, ra)
}

/// (sessionId, nonce) of a new session of raUser on Device1.
fn start(s: &Server, key: &str) -> (String, String) {
    let started = result(
        s,
        key,
        "Device1",
        "StartSession",
        json!({"remoteEndpoint": "10.0.0.5:22"}),
    );
    let uri = started["launchUri"].as_str().unwrap();
    let nonce = uri.split("nonce=").nth(1).unwrap().to_string();
    (started["sessionId"].as_str().unwrap().to_string(), nonce)
}

/// K6: a nonce opens its session's connection once; the connection runs as raUser with the
/// seed's minimum rights and reports the session's end; a second use, another session's nonce,
/// an application key or a password on `/Thingworx/TWS`, and a nonce on the REST API are
/// refused with 401, each audited.
#[test]
fn k6_a_nonce_key_opens_its_session_once_and_nothing_else() {
    let t = tempfile::tempdir().unwrap();
    let (s, ra) = granted_device(t.path(), &["--public-url", "https://rac.example.com:9443"]);
    let (id, nonce) = start(&s, &ra);
    let (other_id, other_nonce) = start(&s, &ra);
    assert_ne!(nonce, other_nonce);
    let started = result(&s, &ra, "Device1", "GetSession", json!({"sessionId": id}));
    assert_eq!(started["state"], "started");

    // An application key, or no nonce, never opens the connection.
    assert_eq!(
        tws(&s, &[("appKey", &ra), ("sessionId", &id)]).err(),
        Some(401)
    );
    assert_eq!(
        tws(
            &s,
            &[("appKey", &ra), ("nonce", &nonce), ("sessionId", &id)]
        )
        .err(),
        Some(401)
    );
    // A nonce on the REST API is no credential.
    let r = s
        .client
        .get(s.at("/Thingworx/Things/Device1"))
        .header("nonce", &nonce)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .client
        .get(s.at("/Thingworx/Things/Device1"))
        .header("appKey", &nonce)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    // Its own session, once.
    let mut socket = tws(&s, &[("nonce", &nonce), ("sessionId", &id)]).expect("the nonce opens");
    let hello = receive(&mut socket);
    assert_eq!(hello["state"], "connected", "{hello}");
    assert_eq!(hello["session"]["user"], "raUser");
    assert_eq!(
        tws(&s, &[("nonce", &nonce), ("sessionId", &id)]).err(),
        Some(401),
        "used twice"
    );
    // Another session's nonce, presented for this session: refused (and spent).
    assert_eq!(
        tws(&s, &[("nonce", &other_nonce), ("sessionId", &id)]).err(),
        Some(401)
    );
    assert_eq!(
        tws(&s, &[("nonce", &other_nonce), ("sessionId", &other_id)]).err(),
        Some(401)
    );

    // The connection: the minimum rights of the seed, as raUser.
    let v = ask(&mut socket, json!({"op": "GetSession"}));
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["result"]["rows"][0]["result"]["state"], "connected");
    let v = ask(
        &mut socket,
        json!({"op": "GetProperty", "name": "isConnected"}),
    );
    assert_eq!(v["status"], 200, "{v}");
    let v = ask(
        &mut socket,
        json!({"op": "SetProperty", "name": "isConnected", "value": true}),
    );
    assert_eq!(v["status"], 403, "{v}");
    let v = ask(&mut socket, json!({"op": "EndSession"}));
    assert_eq!(v["status"], 200, "{v}");
    let end = receive(&mut socket);
    assert_eq!(end["state"], "ended", "{end}");
    assert_eq!(
        result(&s, &ra, "Device1", "GetSessions", json!({}))
            .as_array()
            .unwrap()
            .len(),
        1,
        "only the other session is left"
    );
    let refusals = audited(&s, "nonceRefused").len() + audited(&s, "remoteAccessRefused").len();
    assert!(refusals >= 4, "each refusal is audited");
    assert_eq!(audited(&s, "remoteConnectionOpened").len(), 1);
}

#[test]
fn k6_an_expired_nonce_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let (s, ra) = granted_device(t.path(), &["--nonce-lifetime-seconds", "1"]);
    let (id, nonce) = start(&s, &ra);
    std::thread::sleep(std::time::Duration::from_millis(1300));
    assert_eq!(
        tws(&s, &[("nonce", &nonce), ("sessionId", &id)]).err(),
        Some(401)
    );
    assert_eq!(audited(&s, "nonceExpired").len(), 1);
    // The session itself is still there: a new StartSession gives a new nonce.
    let (id2, nonce2) = start(&s, &ra);
    assert!(tws(&s, &[("nonce", &nonce2), ("sessionId", &id2)]).is_ok());
}

/// S1 with fair shares: one user holds at most `--max-sessions-per-user` sessions (one more is
/// refused naming the option), and a session unused for `--session-idle-seconds` ends by itself
/// (audited `remoteSessionExpired`), which frees its slot.
#[test]
fn s1_sessions_are_capped_per_user_and_end_when_idle() {
    let t = tempfile::tempdir().unwrap();
    let (s, ra) = granted_device(
        t.path(),
        &[
            "--max-sessions-per-user",
            "2",
            "--session-idle-seconds",
            "2",
        ],
    );
    start(&s, &ra);
    start(&s, &ra);
    let (st, v) = call(
        &s,
        &ra,
        "Device1",
        "StartSession",
        json!({"remoteEndpoint": "10.0.0.5:22"}),
    );
    assert_ne!(st, 200, "{v}");
    assert!(v.to_string().contains("--max-sessions-per-user"), "{v}");
    // Two seconds unused: both end (the runner looks once a second), and a slot is free again.
    let expired = thinghost_tests::within_20s("the sessions to expire", || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let e = audited(&s, "remoteSessionExpired");
        (e.len() == 2).then_some(e)
    });
    assert_eq!(expired.len(), 2);
    start(&s, &ra);
}

/// The next message of a connection that must come within 10 s (a read timeout: a connection
/// that stays open when it should close fails the test instead of hanging it).
fn receive_soon(socket: &mut Socket) -> Json {
    socket
        .get_ref()
        .sock
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    receive(socket)
}

/// K3 for long-lived contexts: an open `/Thingworx/TWS` connection acts for its user; when the
/// user is disabled, the connection closes within a second or two, saying why, and every session
/// of the user ends (audited `remoteSessionEnded` / `remoteConnectionClosed`).
#[test]
fn k3_a_disabled_users_connection_closes_and_its_sessions_end() {
    let t = tempfile::tempdir().unwrap();
    let (s, ra) = granted_device(t.path(), &[]);
    let admin = s.admin_key();
    let (id, nonce) = start(&s, &ra);
    start(&s, &ra);
    let mut socket = tws(&s, &[("nonce", &nonce), ("sessionId", &id)]).expect("the nonce opens");
    assert_eq!(receive(&mut socket)["state"], "connected");
    ok(
        &s,
        &admin,
        "/Thingworx/Users/raUser/Services/DisableUser",
        json!({}),
    );
    let end = receive_soon(&mut socket);
    assert_eq!(end["state"], "ended", "{end}");
    assert!(
        end["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{end}"
    );
    assert_eq!(receive_soon(&mut socket), Json::Null, "then it closes");
    let sessions = thinghost_tests::within_20s("the sessions to end", || {
        let v = result(&s, &admin, "Device1", "GetSessions", json!({}));
        v.as_array().unwrap().is_empty().then_some(v)
    });
    assert!(sessions.as_array().unwrap().is_empty());
    assert_eq!(audited(&s, "remoteConnectionClosed").len(), 1);
    assert!(!audited(&s, "remoteSessionEnded").is_empty());
}

/// A user deleted and created again under the same name is another user: it gains nothing of
/// the old one's connections, sessions, keys or permission entries.
#[test]
fn a3_a_user_created_again_gains_nothing_of_the_deleted_one() {
    let t = tempfile::tempdir().unwrap();
    let (s, ra) = granted_device(t.path(), &[]);
    let admin = s.admin_key();
    let (id, nonce) = start(&s, &ra);
    let (unused_id, unused_nonce) = start(&s, &ra);
    let mut socket = tws(&s, &[("nonce", &nonce), ("sessionId", &id)]).expect("the nonce opens");
    assert_eq!(receive(&mut socket)["state"], "connected");
    ok(
        &s,
        &admin,
        &format!("{ES}/DeleteUser"),
        json!({"name": "raUser"}),
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateUser"),
        json!({"name": "raUser"}),
    );
    // The old connection closes; the old nonce opens nothing; the old key is gone.
    let end = receive_soon(&mut socket);
    assert_eq!(end["state"], "ended", "{end}");
    assert_eq!(
        tws(&s, &[("nonce", &unused_nonce), ("sessionId", &unused_id)]).err(),
        Some(401)
    );
    let (st, _) = get(&s, &ra, "/Thingworx/Things/Device1");
    assert_eq!(st, 401);
    // The new raUser, with a key of its own: it sees nothing the old one was given.
    let v = ok(
        &s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "raUser-key-2", "user": "raUser"}),
    );
    let key = v["rows"][0]["keyId"].as_str().unwrap().to_string();
    let (st, _) = get(&s, &key, "/Thingworx/Things/Device1");
    assert_eq!(st, 404, "no visibility, no group, no entries");
    // Put back in the group, it has the group's rights, but none of the old user's sessions.
    ok(
        &s,
        &admin,
        "/Thingworx/Groups/raUserGroup/Services/AddMember",
        json!({"member": "raUser", "type": "User"}),
    );
    let mine = result(&s, &key, "Device1", "GetSessions", json!({}));
    assert_eq!(
        mine,
        json!([]),
        "the old raUser's sessions are not the new one's"
    );
}

// ---- load order (E2) ---------------------------------------------------------------------------

/// (name, state, reason) of every package.
fn packages(s: &Server) -> Vec<(String, String, String)> {
    let admin = s.admin_key();
    let v = ok(
        s,
        &admin,
        "/Thingworx/Subsystems/PlatformSubsystem/Services/GetExtensionPackageList",
        json!({}),
    );
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// E2: with all three, they load CSE, RAE, ACE whatever the folders are called (every order in
/// which the directory lists them); ACE without RAE is refused, saying to install RAE first.
#[test]
fn e2_the_trio_loads_cse_rae_ace_in_any_arrangement_and_ace_needs_rae() {
    let names = ["connection-services", "remote-access", "axeda-compat"];
    // Folder names that make the directory list them in each of the six orders.
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("plugins");
        for (position, which) in order.iter().enumerate() {
            copy_dir(
                &workspace().join("plugins").join(names[*which]),
                &p.join(format!("{position}-{}", names[*which])),
            );
        }
        let s = serve(t.path(), &p, &[]);
        let loaded = packages(&s);
        assert!(
            loaded.iter().all(|(_, st, _)| st == "loaded"),
            "{order:?}: {loaded:?}"
        );
        // Loaded in dependency order: the audit records the loads in order.
        let loads: Vec<String> = audited(&s, "extensionLoaded")
            .iter()
            .map(|e| e["args"]["extension"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(loads, names, "{order:?}");
    }

    for (present, refused, why) in [
        (
            &["axeda-compat"][..],
            "axeda-compat",
            "install connection-services first",
        ),
        (
            &["connection-services", "axeda-compat"][..],
            "axeda-compat",
            "install remote-access first",
        ),
        (
            &["remote-access"][..],
            "remote-access",
            "install connection-services first",
        ),
    ] {
        let t = tempfile::tempdir().unwrap();
        let p = plugins(t.path(), present);
        let s = serve(t.path(), &p, &[]);
        let list = packages(&s);
        let (_, st, reason) = list.iter().find(|(n, _, _)| n == refused).unwrap();
        assert_eq!(st, "waiting", "{present:?}: {list:?}");
        assert!(reason.contains(why), "{present:?}: {reason}");
        for (n, st, _) in &list {
            if n != refused {
                assert_eq!(st, "loaded", "{n}");
            }
        }
    }
}

/// The shipped component is built from the source in the repository: a change to
/// plugins-src/remote-access, the Rust SDK or the WIT contract needs `scripts/build-plugins`, and
/// the committed artifact is the one that script made (its SHA-256 is recorded beside the
/// source's).
#[test]
fn the_shipped_remote_access_component_is_built_from_the_current_source() {
    let out = std::process::Command::new(workspace().join("scripts/source-hash"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let now = String::from_utf8(out.stdout).unwrap();
    let built =
        std::fs::read_to_string(workspace().join("plugins/remote-access/BUILT_FROM")).unwrap();
    let field = |name: &str| {
        built
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("BUILT_FROM has no {name} line: run scripts/build-plugins"))
            .trim()
            .to_string()
    };
    assert_eq!(
        field("source"),
        now.trim(),
        "plugins/remote-access/remote_access.wasm is older than its source: run scripts/build-plugins and commit the result"
    );
    use sha2::Digest;
    let artifact =
        std::fs::read(workspace().join("plugins/remote-access/remote_access.wasm")).unwrap();
    let hash: String = sha2::Sha256::digest(&artifact)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        field("artifact"),
        hash,
        "plugins/remote-access/remote_access.wasm is not the artifact scripts/build-plugins made from that source: run it and commit the result"
    );
}

/// CSE's `GrantThingTemplatePermissions`: on a template based on `RemoteThing`, the organization
/// sees its Things and the group may do what a connected device does on them; a template that is
/// no connectable device is refused, naming the shape, and nothing changes. `AddPermissions`
/// itself is all or nothing: one bad item, and none is added.
#[test]
fn cse_grants_a_connectable_template_and_add_permissions_is_all_or_nothing() {
    let t = tempfile::tempdir().unwrap();
    let p = plugins(t.path(), &["connection-services"]);
    let s = serve(t.path(), &p, &[]);
    let admin = s.admin_key();
    let ra = seed_users(&s, &admin);
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThingTemplate"),
        json!({"name": "Sensor", "thingTemplateName": "RemoteThing"}),
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThingTemplate"),
        json!({"name": "Lamp", "thingTemplateName": "GenericThing"}),
    );
    thing(&s, &admin, "Sensor1", "Sensor");
    const HUB: &str =
        "/Thingworx/Things/ConnectionServicesHub/Services/GrantThingTemplatePermissions";
    let (st, v) = post(
        &s,
        &admin,
        HUB,
        json!({"thingTemplateName": "Lamp", "organizationName": "raOrg", "userGroupName": "raUserGroup"}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("ConnectableThing"),
        "{v}"
    );
    let v = ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Lamp/Services/GetInstanceVisibilityPermissions",
        json!({}),
    );
    assert_eq!(v["rows"], json!([]));
    ok(
        &s,
        &admin,
        HUB,
        json!({"thingTemplateName": "Sensor", "organizationName": "raOrg", "userGroupName": "raUserGroup"}),
    );
    thing(&s, &admin, "Sensor2", "Sensor");
    for name in ["Sensor1", "Sensor2"] {
        let r = s
            .client
            .put(s.at(&format!("/Thingworx/Things/{name}/Properties/isConnected")))
            .header("appKey", &ra)
            .json(&json!({"isConnected": true}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        // Run time only: no design-time right came with it.
        let (st, _) = call(
            &s,
            &ra,
            name,
            "AddPropertyDefinition",
            json!({"name": "x", "type": "STRING"}),
        );
        assert_eq!(st, 403, "{name}");
    }

    // AddPermissions: one unknown principal, and nothing of the list is added.
    let (st, v) = post(
        &s,
        &admin,
        "/Thingworx/Things/Sensor1/Services/AddPermissions",
        json!({"permissions": [
            {"family": "runTime", "principal": "raUser", "principalType": "User", "type": "PropertyWrite", "resource": "*"},
            {"family": "visibility", "principal": "noSuchOrg", "principalType": "Organization"},
        ]}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("noSuchOrg"), "{v}");
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/Sensor1/Services/GetRunTimePermissions",
        json!({}),
    );
    assert_eq!(v["rows"], json!([]), "nothing added");
}

// ---- ACE over RAE (B2, E3) --------------------------------------------------------------------

const RELOAD: &str = "/Thingworx/Subsystems/PlatformSubsystem/Services/ReloadExtension";

/// A service's entry in an entity's metadata.
fn service_meta(s: &Server, key: &str, path: &str, service: &str) -> Json {
    let meta: Json = s
        .client
        .get(s.at(path))
        .header("appKey", key)
        .header("Accept", "application/json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    meta["serviceDefinitions"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: {meta}"))
        .iter()
        .find(|d| d["definition"]["name"] == service)
        .cloned()
        .unwrap_or_else(|| panic!("{path} has no {service}: {meta}"))
}

/// B2, E3: ACE's Axeda templates are RAE's `RemoteAccessible` devices and override only
/// `StartSession` (routed through `GASRemoteAccessProvider`); the other three session services
/// are RAE's. Both grant services accept both kinds of device (G2). A new ACE replaces the
/// override without a restart; RAE cannot leave while ACE needs it, and keeps serving; an ACE
/// whose override handler takes other parameters than the definition is refused, and the loaded
/// one keeps serving.
#[test]
fn b2_ace_overrides_raes_start_session_reloads_and_rae_stays_while_ace_needs_it() {
    let t = tempfile::tempdir().unwrap();
    let p = plugins(
        t.path(),
        &["connection-services", "remote-access", "axeda-compat"],
    );
    let s = serve(t.path(), &p, &[]);
    let admin = s.admin_key();
    let ra = seed_users(&s, &admin);
    thing(&s, &admin, "Axeda1", "AxedaManagedModel");
    thing(&s, &admin, "Tunnel1", "RemoteThingWithTunnels");

    // The nearest implementation runs: ACE's on the Axeda device, RAE's on the other.
    let endpoint = json!({"remoteEndpoint": "10.0.0.5:22"});
    let axeda = result(&s, &admin, "Axeda1", "StartSession", endpoint.clone());
    assert_eq!(axeda["provider"], "GASRemoteAccessProvider", "{axeda}");
    assert!(axeda["launchUri"].as_str().unwrap().contains("nonce="));
    let tunnel = result(&s, &admin, "Tunnel1", "StartSession", endpoint.clone());
    assert_eq!(
        tunnel["provider"], "ThingworxInternalRemoteAccessProvider",
        "{tunnel}"
    );
    // The rest is RAE's on both: the Axeda session is one of RAE's sessions.
    let id = axeda["sessionId"].as_str().unwrap();
    let got = result(&s, &admin, "Axeda1", "GetSession", json!({"sessionId": id}));
    assert_eq!(got["sessionId"], id, "{got}");
    let ended = result(&s, &admin, "Axeda1", "EndSession", json!({"sessionId": id}));
    assert_eq!(ended["state"], "ended", "{ended}");
    // Metadata: the definition is RAE's shape's; the override ACE's template's, by its handler.
    let m = service_meta(&s, &admin, "/Thingworx/Things/Axeda1", "StartSession");
    assert_eq!(m["source"], "ThingShapes/RemoteAccessible", "{m}");
    assert_eq!(m["definition"]["allowOverride"], true, "{m}");
    assert_eq!(
        m["override"],
        json!({"source": "ThingTemplates/AxedaManagedModel", "code": null, "extension": "axeda-compat"})
    );
    let m = service_meta(&s, &admin, "/Thingworx/Things/Axeda1", "GetSessions");
    assert!(m["override"].is_null(), "{m}");
    // A Thing of the template overrides again, in the model: the nearest runs; removed, ACE's
    // runs again. The extension's own entities are its manifest's: changing them is refused.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Axeda1/Services/OverrideService",
        json!({"name": "StartSession", "code": "#{ provider: \"mine\", endpoint: remoteEndpoint }"}),
    );
    assert_eq!(
        result(&s, &admin, "Axeda1", "StartSession", endpoint.clone()),
        json!({"provider": "mine", "endpoint": "10.0.0.5:22"})
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Axeda1/Services/RemoveServiceOverride",
        json!({"name": "StartSession"}),
    );
    assert_eq!(
        result(&s, &admin, "Axeda1", "StartSession", endpoint.clone())["provider"],
        "GASRemoteAccessProvider"
    );
    // Code in the model may not call the session functions (they make nonce keys for the
    // caller): an override that tries fails, and starts nothing.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Axeda1/Services/OverrideService",
        json!({"name": "StartSession", "code": "start_session(remoteEndpoint)"}),
    );
    let (st, v) = call(&s, &admin, "Axeda1", "StartSession", endpoint.clone());
    assert_eq!(st, 500, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("host function start_session is for the extensions that list it in their [capabilities]; code in the model may not call it"),
        "{v}"
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Axeda1/Services/RemoveServiceOverride",
        json!({"name": "StartSession"}),
    );
    // Nor through a service: code in the model that invokes StartSession gets no nonce key
    // (the extension's handler it reaches may not start a session for it).
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Axeda1/Services/AddServiceDefinition",
        json!({"name": "Sneak", "resultType": "JSON",
               "code": "invoke_service(me, \"StartSession\", #{ remoteEndpoint: \"10.0.0.5:22\" })"}),
    );
    let (st, v) = call(&s, &admin, "Axeda1", "Sneak", json!({}));
    assert_eq!(st, 500, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("code in the model may not call it, nor what it calls"),
        "{v}"
    );
    for (path, body) in [
        (
            "ThingTemplates/AxedaManagedModel/Services/RemoveServiceOverride",
            json!({"name": "StartSession"}),
        ),
        (
            "ThingTemplates/RemoteThingWithTunnels/Services/AddSubscription",
            json!({"name": "S", "event": "DataChange", "code": "1"}),
        ),
        (
            "Things/GASRemoteAccessProvider/Services/AddShapeToThing",
            json!({"thingShapeName": "RemoteAccessible"}),
        ),
    ] {
        let (st, v) = post(&s, &admin, &format!("/Thingworx/{path}"), body);
        assert_eq!(st.as_u16(), 400, "{path}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap_or_default()
                .contains("belongs to extension"),
            "{path}: {v}"
        );
    }

    // G2: each grant service accepts both kinds of device; the grantee then starts a session,
    // through the implementation of the device's template.
    for (grants, for_thing, target) in [
        (
            ACE_GRANTS,
            "GrantRemoteAccessPermissionsForThing",
            "Tunnel1",
        ),
        (
            RAE_GRANTS,
            "GrantPermissionsThingWorxInternalForThing",
            "Axeda1",
        ),
    ] {
        ok(
            &s,
            &admin,
            &format!("{grants}/{for_thing}"),
            json!({"organization": "raOrg", "userGroup": "raUserGroup", "thingName": target}),
        );
    }
    let mine = result(&s, &ra, "Axeda1", "StartSession", endpoint.clone());
    assert_eq!(mine["provider"], "GASRemoteAccessProvider");
    assert_eq!(mine["session"]["user"], "raUser");
    assert_eq!(
        result(&s, &ra, "Tunnel1", "StartSession", endpoint.clone())["provider"],
        "ThingworxInternalRemoteAccessProvider"
    );

    // A new ACE: its override replaces the old one without a restart.
    let script = p.join("axeda-compat/main.rhai");
    let original = std::fs::read_to_string(&script).unwrap();
    std::fs::write(
        &script,
        original.replace(
            "started.provider = provider();",
            "started.provider = provider();\n    started.via = \"GAS relay 2\";",
        ),
    )
    .unwrap();
    let (st, v) = post(&s, &admin, RELOAD, json!({"packageName": "axeda-compat"}));
    assert_eq!(st.as_u16(), 200, "{v}");
    let again = result(&s, &ra, "Axeda1", "StartSession", endpoint.clone());
    assert_eq!(
        (&again["provider"], &again["via"]),
        (&json!("GASRemoteAccessProvider"), &json!("GAS relay 2"))
    );

    // An override handler that takes other parameters than StartSession(remoteEndpoint) is
    // refused, naming both; the loaded ACE keeps serving.
    std::fs::write(
        &script,
        original.replace(
            "fn gas_start_session(endpoint) {",
            "fn gas_start_session(endpoint, port) {",
        ),
    )
    .unwrap();
    let (st, v) = post(&s, &admin, RELOAD, json!({"packageName": "axeda-compat"}));
    assert_eq!(st.as_u16(), 409, "{v}");
    let why = v["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("overrides service StartSession(remoteEndpoint) of ThingShapes/RemoteAccessible with the handler gas_start_session, which takes 2 parameters; it must take the definition's 1"),
        "{v}"
    );
    assert_eq!(
        result(&s, &ra, "Axeda1", "StartSession", endpoint.clone())["via"],
        "GAS relay 2"
    );

    // RAE's folder goes: refused while ACE needs it; RAE and ACE keep serving.
    std::fs::remove_dir_all(p.join("remote-access")).unwrap();
    let (st, v) = post(&s, &admin, RELOAD, json!({"packageName": "remote-access"}));
    assert_eq!(st.as_u16(), 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("axeda-compat needs it"),
        "{v}"
    );
    let list = packages(&s);
    assert!(
        list.iter()
            .any(|(n, st, _)| n == "remote-access" && st == "loaded"),
        "{list:?}"
    );
    assert_eq!(
        result(&s, &ra, "Axeda1", "StartSession", endpoint.clone())["provider"],
        "GASRemoteAccessProvider"
    );
    assert_eq!(
        result(&s, &ra, "Tunnel1", "StartSession", endpoint)["provider"],
        "ThingworxInternalRemoteAccessProvider"
    );
}

// ---- tunnels (C7) ----------------------------------------------------------------------------

const HUB: &str = "/Thingworx/Things/ConnectionServicesHub/Services/GrantThingTemplatePermissions";

/// An echo server on loopback, the device's endpoint: its port.
fn echo_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut r = conn.try_clone().unwrap();
                let mut w = conn;
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// An endpoint that speaks first (as SSH and VNC servers do), then echoes: its port.
fn greeter() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                use std::io::Write;
                let mut w = conn.try_clone().unwrap();
                let _ = w.write_all(GREETING);
                let mut r = conn;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    port
}

const GREETING: &[u8] = b"SSH-2.0-thinghost_test\r\n";

/// A free local port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The seed 002 set-up for tunnels: raUser granted on Device1 (allowed to reach the echo
/// server), the device's own user `dev1` (granted as CSE grants a device), and the simulated
/// device bound to Device1 with `--tunnels`.
struct Rig {
    _t: tempfile::TempDir,
    s: Server,
    admin: String,
    ra: String,
    echo: u16,
    device_key: PathBuf,
    device: Option<thinghost_tests::Running>,
}

fn rig() -> Rig {
    rig_with(&[])
}

fn rig_with(serve: &[&str]) -> Rig {
    let t = tempfile::tempdir().unwrap();
    let (s, ra) = granted_device(t.path(), serve);
    let admin = s.admin_key();
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateUser"),
        json!({"name": "dev1", "password": "a long password 1"}),
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateGroup"),
        json!({"name": "devices"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Groups/devices/Services/AddMember",
        json!({"member": "dev1", "type": "User"}),
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateOrganization"),
        json!({"name": "devOrg"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Organizations/devOrg/Services/AddMember",
        json!({"name": "devOrg", "member": "devices", "type": "Group"}),
    );
    ok(
        &s,
        &admin,
        HUB,
        json!({"thingTemplateName": "RemoteThingWithTunnels", "organizationName": "devOrg", "userGroupName": "devices"}),
    );
    let v = ok(
        &s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "dev1-key", "user": "dev1"}),
    );
    let device_key = t.path().join("dev1.key");
    std::fs::write(&device_key, v["rows"][0]["keyId"].as_str().unwrap()).unwrap();
    let echo = echo_server();
    assert_eq!(
        allow(&s, &admin, "Device1", json!([format!("127.0.0.1:{echo}")])),
        200
    );
    let mut r = Rig {
        _t: t,
        s,
        admin,
        ra,
        echo,
        device_key,
        device: None,
    };
    r.device = Some(r.simulate(&[]));
    r
}

impl Rig {
    fn ca(&self) -> PathBuf {
        self.s.dir.join("dev-cert.pem")
    }

    fn simulate(&self, extra: &[&str]) -> thinghost_tests::Running {
        let ca = self.ca();
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "edge".as_ref(),
            "simulate".as_ref(),
            "--url".as_ref(),
            self.s.url.as_ref(),
            "--ca-cert".as_ref(),
            ca.as_os_str(),
            "--app-key-file".as_ref(),
            self.device_key.as_os_str(),
            "--thing".as_ref(),
            "Device1".as_ref(),
            "--tunnels".as_ref(),
            std::ffi::OsStr::new("--property=status=ok"),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        let sim = thinghost_tests::Running::start(&args);
        sim.wait_for("bound Device1");
        sim
    }

    /// A session of raUser to the echo server (or `endpoint`): its launch URI.
    fn session(&self, endpoint: Option<&str>) -> String {
        let endpoint = endpoint
            .map(str::to_string)
            .unwrap_or_else(|| format!("127.0.0.1:{}", self.echo));
        let started = result(
            &self.s,
            &self.ra,
            "Device1",
            "StartSession",
            json!({ "remoteEndpoint": endpoint }),
        );
        started["launchUri"].as_str().unwrap().to_string()
    }

    /// `thinghost rac connect URI --local-port P`.
    fn rac(&self, uri: &str, port: u16) -> thinghost_tests::Running {
        thinghost_tests::Running::start(&[
            "rac".as_ref(),
            "connect".as_ref(),
            std::ffi::OsStr::new(uri),
            "--local-port".as_ref(),
            std::ffi::OsStr::new(&port.to_string()),
            "--ca-cert".as_ref(),
            self.ca().as_os_str(),
        ])
    }
}

/// Sends `n` bytes of a pseudo-random stream through `port` while reading what comes back:
/// (sha-256 of what was sent, of what came back).
fn round_trip(port: u16, n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    use sha2::Digest;
    use std::io::{Read, Write};
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut sent = sha2::Sha256::new();
        let mut x = seed | 1;
        let mut left = n;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let len = left.min(buf.len());
            for b in &mut buf[..len] {
                // xorshift: bytes that a lost or reordered chunk would not reproduce.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            w.write_all(&buf[..len]).unwrap();
            sent.update(&buf[..len]);
            left -= len;
        }
        sent.finalize().to_vec()
    });
    let mut r = conn;
    let mut got = sha2::Sha256::new();
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while total < n {
        let k = r.read(&mut buf).expect("the echo comes back");
        assert!(k > 0, "the tunnel closed after {total} of {n} bytes");
        got.update(&buf[..k]);
        total += k;
    }
    (writer.join().unwrap(), got.finalize().to_vec())
}

/// Sends `n` bytes, then half-closes (no more to send), and reads until the tunnel's end: the
/// whole answer must come back.
fn half_closed(port: u16, n: usize) {
    use std::io::{Read, Write};
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    conn.write_all(&data).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    assert_eq!(
        back.len(),
        n,
        "after the half-close, the whole answer comes back"
    );
    assert!(back == data);
}

/// C7: a session's tunnel carries the bytes unchanged both ways between the remote-access
/// client and the device's endpoint: 10 MiB each way, hashes compared, while a second session
/// runs beside it; the end of a local connection ends its tunnel, and the next one opens
/// another; each tunnel is audited with its bytes each way.
#[test]
fn c7_a_tunnel_carries_10_mib_each_way_unchanged_beside_another_session() {
    let r = rig();
    let (p1, p2) = (free_port(), free_port());
    let a = r.rac(&r.session(None), p1);
    let b = r.rac(&r.session(None), p2);
    a.wait_for("listening on");
    b.wait_for("listening on");
    const MIB10: usize = 10 << 20;
    let beside = std::thread::spawn(move || round_trip(p2, MIB10, 7));
    let (sent, back) = round_trip(p1, MIB10, 3);
    assert_eq!(sent, back, "what came back through the tunnel differs");
    let (sent2, back2) = beside.join().unwrap();
    assert_eq!(sent2, back2);
    assert_ne!(sent, sent2);
    a.wait_for("tunnel closed");
    // The next local connection gets a tunnel of its own; a half-close (the local side sends
    // no more) still gets the endpoint's whole answer.
    half_closed(p1, 300_000);
    thinghost_tests::within_20s("three tunnels end, audited", || {
        let ended = audited(&r.s, "tunnelEnded");
        (ended.len() >= 3).then_some(ended)
    });
    let ended = audited(&r.s, "tunnelEnded");
    let big: Vec<&Json> = ended
        .iter()
        .filter(|e| e["args"]["bytesToDevice"] == json!(MIB10))
        .collect();
    assert_eq!(big.len(), 2, "{ended:?}");
    for e in &big {
        assert_eq!(e["args"]["bytesFromDevice"], json!(MIB10), "{e}");
        assert_eq!(e["user"], "raUser");
        assert_eq!(e["category"], "REMOTE_ACCESS");
        assert_eq!(e["args"]["deviceUser"], "dev1");
        assert_eq!(e["args"]["endpoint"], format!("127.0.0.1:{}", r.echo));
    }
    assert_eq!(audited(&r.s, "tunnelStarted").len(), 3);
    let device = r.device.as_ref().unwrap();
    device.wait_for(&format!("{MIB10} bytes to the endpoint, {MIB10} from it"));
}

/// C7 refusals, each told to the client with its reason and audited: a nonce used twice; an
/// endpoint the Thing does not list (at StartSession, and at the tunnel when the list changed
/// since); a device not connected; a device-side connection with an unknown tunnel id. The list
/// is the Thing's design: raUser, and the device's own user, may not change it.
#[test]
fn c7_refused_tunnels_say_why_and_are_audited() {
    let mut r = rig();
    // Not listed: refused before anything starts.
    let (st, v) = call(
        &r.s,
        &r.ra,
        "Device1",
        "StartSession",
        json!({"remoteEndpoint": "127.0.0.1:1"}),
    );
    assert_eq!(st, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("allowedEndpoints"),
        "{v}"
    );
    let (st, v) = call(
        &r.s,
        &r.ra,
        "Device1",
        "StartSession",
        json!({"remoteEndpoint": "nowhere"}),
    );
    assert_eq!(st, 400, "{v}");
    // Only someone with Update on Device1 changes the list.
    assert_eq!(allow(&r.s, &r.ra, "Device1", json!(["127.0.0.1:1"])), 403);
    let dev_key = std::fs::read_to_string(&r.device_key).unwrap();
    assert_eq!(
        allow(&r.s, &dev_key, "Device1", json!(["127.0.0.1:1"])),
        403
    );
    // So is the switch: the device's user (PropertyWrite on every property) may not turn it.
    let switch = |key: &str, on: bool| {
        r.s.client
            .put(r.s.at("/Thingworx/Things/Device1/Properties/tunnelsEnabled"))
            .header("appKey", key)
            .json(&json!({ "tunnelsEnabled": on }))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(switch(&dev_key, true), 403);
    assert_eq!(switch(&r.admin, false), 200);
    let (st, v) = call(
        &r.s,
        &r.ra,
        "Device1",
        "StartSession",
        json!({"remoteEndpoint": format!("127.0.0.1:{}", r.echo)}),
    );
    assert_eq!(st, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("tunnelsEnabled"),
        "{v}"
    );
    assert_eq!(switch(&r.admin, true), 200);

    // A nonce is good once: the second client is refused and says so.
    let uri = r.session(None);
    let first = r.rac(&uri, free_port());
    first.wait_for("listening on");
    let mut second = r.rac(&uri, free_port());
    assert!(!second.exited().success());
    assert!(second.said().contains("401"), "{}", second.said());
    assert!(second.said().contains("nonce"), "{}", second.said());
    drop(first);

    // Listed when the session started, no longer when the client connects.
    let uri = r.session(None);
    assert_eq!(
        allow(&r.s, &r.admin, "Device1", json!(["127.0.0.1:2"])),
        200
    );
    let mut refused = r.rac(&uri, free_port());
    assert!(!refused.exited().success());
    assert!(
        refused.said().contains("does not allow the endpoint"),
        "{}",
        refused.said()
    );
    assert_eq!(
        allow(
            &r.s,
            &r.admin,
            "Device1",
            json!([format!("127.0.0.1:{}", r.echo)])
        ),
        200
    );

    // The device not connected.
    r.device.take();
    thinghost_tests::within_20s("Device1 disconnected", || {
        let (_, v) = get(
            &r.s,
            &r.admin,
            "/Thingworx/Things/Device1/Properties/isConnected",
        );
        (v["rows"][0]["isConnected"] == json!(false)).then_some(())
    });
    let mut unbound = r.rac(&r.session(None), free_port());
    assert!(!unbound.exited().success());
    assert!(
        unbound.said().contains("is not connected"),
        "{}",
        unbound.said()
    );
    let refusals = audited(&r.s, "tunnelRefused");
    assert!(refusals.len() >= 2, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .all(|e| e["category"] == "REMOTE_ACCESS" && e["user"] == "raUser"),
        "{refusals:?}"
    );

    // A device-side connection for a tunnel nobody waits for: 404, audited.
    // (An id the server could not have given is answered the same, before the key is checked.)
    for tid in [
        "0123456789abcdef0123456789abcdef",
        "..%2F..%2Fetc",
        &"a".repeat(4000),
    ] {
        let stream = thinghost_tests::tls_stream(&r.s);
        stream
            .sock
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "wss://localhost:{}/Thingworx/WSTunnelServer/{tid}",
            r.s.port()
        ))
        .unwrap();
        request
            .headers_mut()
            .insert("appKey", dev_key.trim().parse().unwrap());
        match tungstenite::client::client(request, stream) {
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(res))) => {
                assert_eq!(res.status(), 404, "{tid}")
            }
            other => panic!("not refused: {:?}", other.map(|_| ())),
        }
    }
    thinghost_tests::within_20s("the device side's refusal audited", || {
        audited(&r.s, "tunnelRefused")
            .into_iter()
            .find(|e| e["args"]["side"] == "device" && e["user"] == "dev1")
    });
}

/// C7 with K3: a user disabled while their tunnel carries bytes is cut off within about a
/// second: the client is told why and exits, the local connection closes, the end audited
/// with the reason.
#[test]
fn c7_a_user_disabled_mid_tunnel_is_cut_off() {
    use std::io::{Read, Write};
    let r = rig();
    let port = free_port();
    let mut client = r.rac(&r.session(None), port);
    client.wait_for("listening on");
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    ok(
        &r.s,
        &r.admin,
        "/Thingworx/Users/raUser/Services/DisableUser",
        json!({}),
    );
    let cut = std::time::Instant::now();
    let mut rest = Vec::new();
    // The local connection closes (EOF or reset), whatever was in flight.
    let _ = conn.read_to_end(&mut rest);
    assert!(
        cut.elapsed() < std::time::Duration::from_secs(3),
        "closed after {:?}",
        cut.elapsed()
    );
    client.exited();
    assert!(client.said().contains("disabled"), "{}", client.said());
    let ended = thinghost_tests::within_20s("the tunnel's end audited", || {
        audited(&r.s, "tunnelEnded").into_iter().next()
    });
    assert!(
        ended["args"]["reason"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{ended}"
    );
}

/// Seed 002 and C7: the grantee tunnels (the other tests); a user of the same organization
/// without the group's grant cannot start a session, so cannot tunnel.
#[test]
fn c7_only_the_seed_002_grantee_may_tunnel() {
    let r = rig();
    ok(
        &r.s,
        &r.admin,
        &format!("{ES}/CreateUser"),
        json!({"name": "other", "password": "a long password 1"}),
    );
    ok(
        &r.s,
        &r.admin,
        "/Thingworx/Organizations/raOrg/Services/AddMember",
        json!({"name": "raOrg", "member": "other", "type": "User"}),
    );
    let v = ok(
        &r.s,
        &r.admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "other-key", "user": "other"}),
    );
    let other = v["rows"][0]["keyId"].as_str().unwrap().to_string();
    let (st, v) = call(
        &r.s,
        &other,
        "Device1",
        "StartSession",
        json!({"remoteEndpoint": format!("127.0.0.1:{}", r.echo)}),
    );
    assert!(st == 403 || st == 404, "{st} {v}");
    let port = free_port();
    let client = r.rac(&r.session(None), port);
    client.wait_for("listening on");
    let (sent, back) = round_trip(port, 4096, 11);
    assert_eq!(sent, back);

    // An endpoint that speaks first: its greeting waits for the local connection.
    let hello = greeter();
    assert_eq!(
        allow(
            &r.s,
            &r.admin,
            "Device1",
            json!([
                format!("127.0.0.1:{}", r.echo),
                format!("127.0.0.1:{hello}")
            ])
        ),
        200
    );
    let port = free_port();
    let client = r.rac(&r.session(Some(&format!("127.0.0.1:{hello}"))), port);
    client.wait_for("listening on");
    std::thread::sleep(std::time::Duration::from_millis(300));
    {
        use std::io::{Read, Write};
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut greeting = vec![0u8; GREETING.len()];
        conn.read_exact(&mut greeting).unwrap();
        assert_eq!(greeting, GREETING);
        conn.write_all(b"ping").unwrap();
        let mut pong = [0u8; 4];
        conn.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"ping");
    }

    // A device that sends the bytes as the vendor's SDKs do (base64 in text frames).
    let mut r = r;
    r.device.take();
    r.device = Some(r.simulate(&["--tunnels-base64"]));
    let port = free_port();
    let client = r.rac(&r.session(None), port);
    client.wait_for("listening on");
    let (sent, back) = round_trip(port, 200_000, 13);
    assert_eq!(sent, back);
}

/// C7: a tunnel that carries no byte for the idle limit closes (and the next local connection
/// opens another); EndSession ends the tunnel and the client.
#[test]
fn c7_idle_tunnels_close_and_end_session_ends_the_tunnel() {
    use std::io::{Read, Write};
    let r = rig_with(&["--tunnel-idle-seconds", "1"]);
    let port = free_port();
    let client = r.rac(&r.session(None), port);
    client.wait_for("listening on");
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"hi").unwrap();
    let mut b = [0u8; 2];
    conn.read_exact(&mut b).unwrap();
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    client.wait_for("no byte either way for 1 s");
    let (sent, back) = round_trip(port, 1000, 17);
    assert_eq!(sent, back);
    let idle = audited(&r.s, "tunnelEnded");
    assert!(
        idle.iter()
            .any(|e| e["args"]["reason"].as_str().unwrap().contains("no byte")),
        "{idle:?}"
    );

    let uri = r.session(None);
    let session = uri
        .split('/')
        .nth(3)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let mut ended = r.rac(&uri, free_port());
    ended.wait_for("listening on");
    result(
        &r.s,
        &r.ra,
        "Device1",
        "EndSession",
        json!({"sessionId": session}),
    );
    assert!(ended.exited().success());
    assert!(
        ended.said().contains("the session ended"),
        "{}",
        ended.said()
    );
}
