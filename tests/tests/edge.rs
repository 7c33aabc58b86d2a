//! Devices over AlwaysOn (`/Thingworx/WS`, DOMAIN section 10) against the real server over TLS,
//! with frames built by the project's codec: AUTH first (C1), binding Remote Things (C2), the
//! protocol's limits and garbage (C6).

use serde_json::{Value as Json, json};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use thinghost_alwayson::{Body, Code, Frame, Header, Message, codes, decode};
use thinghost_tests::{Server, audited, copy_dir, ok, workspace};

const ES: &str = "/Thingworx/Resources/EntityServices/Services";
const HUB: &str = "/Thingworx/Things/ConnectionServicesHub/Services/GrantThingTemplatePermissions";

type Socket = tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;
type Ws<S> = tungstenite::WebSocket<S>;

fn serve(t: &Path, extra: &[&str]) -> Server {
    let p: PathBuf = t.join("plugins");
    std::fs::create_dir_all(&p).unwrap();
    copy_dir(
        &workspace().join("plugins/connection-services"),
        &p.join("connection-services"),
    );
    let mut args = vec!["--plugins", p.to_str().unwrap(), "--no-watch"];
    if !extra.contains(&"--insecure-http") {
        args.push("--dev");
    }
    args.extend_from_slice(extra);
    Server::start_with(
        &t.join("d"),
        &args,
        &thinghost_tests::Setup {
            log: Some(t.join("server.log")),
            ..Default::default()
        },
    )
}

/// Opens `/Thingworx/WS` over TLS (reads time out after 20 s instead of hanging the test).
fn connect(s: &Server) -> Socket {
    let stream = thinghost_tests::tls_stream(s);
    stream
        .sock
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let (socket, _) =
        tungstenite::client::client(format!("wss://localhost:{}/Thingworx/WS", s.port()), stream)
            .expect("the WebSocket handshake");
    socket
}

/// Opens `/Thingworx/WS` without TLS (a server started with `--insecure-http`).
fn connect_plain(s: &Server) -> Ws<TcpStream> {
    let port = s.url.rsplit(':').next().unwrap().trim_end_matches('/');
    let tcp = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let (socket, _) =
        tungstenite::client::client(format!("ws://localhost:{port}/Thingworx/WS"), tcp)
            .expect("the WebSocket handshake");
    socket
}

fn send<S: std::io::Read + std::io::Write>(socket: &mut Ws<S>, m: &Message) {
    socket
        .send(tungstenite::Message::Binary(m.to_frame().into()))
        .unwrap();
}

/// The next message, or `None` once the server closed the connection.
fn receive<S: std::io::Read + std::io::Write>(socket: &mut Ws<S>) -> Option<Message> {
    loop {
        match socket.read() {
            Ok(tungstenite::Message::Binary(b)) => match decode(&b).unwrap() {
                Frame::Whole(m) => return Some(m),
                Frame::Chunk(_) => panic!("a chunk"),
            },
            Ok(tungstenite::Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

fn reason(m: &Message) -> String {
    match &m.body {
        Body::Response(r) => r.reason.clone().unwrap_or_default(),
        other => panic!("not a response: {other:?}"),
    }
}

/// Authenticates with `key`; the session id the server gave.
fn auth<S: std::io::Read + std::io::Write>(socket: &mut Ws<S>, key: &str) -> u32 {
    send(socket, &Message::auth(1, key));
    let m = receive(socket).expect("an answer to AUTH");
    assert_eq!(m.header.code, Code::SUCCESS, "{}", reason(&m));
    assert_eq!(m.header.request_id, 1);
    m.header.session_id
}

fn keep_alive(session: u32, request: u32) -> Message {
    Message {
        header: Header {
            code: Code::KEEP_ALIVE,
            request_id: request,
            endpoint_id: 0,
            session_id: session,
        },
        body: Body::KeepAlive,
    }
}

fn bind_message(session: u32, request: u32, unbind: bool, names: &[&str]) -> Message {
    Message {
        header: Header {
            code: if unbind { Code::UNBIND } else { Code::BIND },
            request_id: request,
            endpoint_id: 0,
            session_id: session,
        },
        body: Body::Bind {
            gateway: None,
            names: names.iter().map(|n| n.to_string()).collect(),
        },
    }
}

fn bind<S: std::io::Read + std::io::Write>(
    socket: &mut Ws<S>,
    session: u32,
    names: &[&str],
) -> Message {
    send(socket, &bind_message(session, 2, false, names));
    let m = receive(socket).expect("an answer to BIND");
    assert_eq!(m.header.request_id, 2);
    m
}

/// A Thing's property, read over REST by the Administrator.
fn property(s: &Server, thing: &str, prop: &str) -> Json {
    let r = s
        .client
        .get(s.at(&format!("/Thingworx/Things/{thing}/Properties/{prop}")))
        .header("appKey", s.admin_key())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Json>().unwrap()["rows"][0][prop].clone()
}

/// A device user (`dev`, in `devices`, in `devOrg`) with a key; the template `Pump` (a Remote
/// Thing) granted to them as CSE grants; `Pump1` of it; `Hidden1` (a Remote Thing they cannot
/// see); `Lamp1` (visible, not remote); and `idle`, in `devOrg` but with no run-time rights.
/// The keys of dev and idle.
fn devices(s: &Server) -> (String, String) {
    let admin = s.admin_key();
    let mut keys = Vec::new();
    ok(
        s,
        &admin,
        &format!("{ES}/CreateOrganization"),
        json!({"name": "devOrg"}),
    );
    for (user, group) in [("dev", "devices"), ("idle", "idlers")] {
        ok(
            s,
            &admin,
            &format!("{ES}/CreateUser"),
            json!({"name": user, "password": "a long password 1"}),
        );
        ok(
            s,
            &admin,
            &format!("{ES}/CreateGroup"),
            json!({"name": group}),
        );
        ok(
            s,
            &admin,
            &format!("/Thingworx/Groups/{group}/Services/AddMember"),
            json!({"member": user, "type": "User"}),
        );
        ok(
            s,
            &admin,
            "/Thingworx/Organizations/devOrg/Services/AddMember",
            json!({"name": "devOrg", "member": group, "type": "Group"}),
        );
        let v = ok(
            s,
            &admin,
            &format!("{ES}/CreateApplicationKey"),
            json!({"name": format!("{user}-key"), "user": user}),
        );
        keys.push(v["rows"][0]["keyId"].as_str().unwrap().to_string());
    }
    ok(
        s,
        &admin,
        &format!("{ES}/CreateThingTemplate"),
        json!({"name": "Pump", "thingTemplateName": "RemoteThing"}),
    );
    ok(
        s,
        &admin,
        HUB,
        json!({"thingTemplateName": "Pump", "organizationName": "devOrg", "userGroupName": "devices"}),
    );
    ok(
        s,
        &admin,
        &format!("{ES}/CreateThingTemplate"),
        json!({"name": "Lamp", "thingTemplateName": "GenericThing"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/ThingTemplates/Lamp/Services/AddInstancePermissions",
        json!({"permissions": [{"family": "visibility", "principal": "devOrg", "principalType": "Organization"}]}),
    );
    for (name, template) in [
        ("Pump1", "Pump"),
        ("Pump2", "Pump"),
        ("Hidden1", "RemoteThing"),
        ("Lamp1", "Lamp"),
    ] {
        ok(
            s,
            &admin,
            &format!("{ES}/CreateThing"),
            json!({"name": name, "thingTemplateName": template}),
        );
    }
    (keys.remove(0), keys.remove(0))
}

/// C1: AUTH must come first: anything else first closes the connection, audited; a wrong key
/// is answered UNAUTHORIZED and closed, audited as any refused key; a right one is answered
/// with the connection's session, which later messages must carry.
#[test]
fn c1_auth_first_with_a_good_key_or_the_connection_is_closed() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let (dev, _) = devices(&s);

    let mut first_bind = connect(&s);
    send(&mut first_bind, &bind_message(0, 1, false, &["Pump1"]));
    assert!(receive(&mut first_bind).is_none(), "BIND first: closed");
    let refused = audited(&s, "edgeNotAuthenticated");
    assert!(
        refused[0]["args"]["detail"]
            .as_str()
            .unwrap()
            .contains("BIND"),
        "{refused:?}"
    );
    assert_eq!(refused[0]["args"]["endpoint"], "/Thingworx/WS");

    let mut wrong = connect(&s);
    send(&mut wrong, &Message::auth(1, "not-a-key"));
    let m = receive(&mut wrong).expect("an answer");
    assert_eq!(m.header.code, Code::UNAUTHORIZED);
    assert!(receive(&mut wrong).is_none(), "closed after a wrong key");
    let unknown = audited(&s, "unknownKey");
    assert_eq!(unknown.last().unwrap()["args"]["endpoint"], "/Thingworx/WS");

    let mut device = connect(&s);
    let session = auth(&mut device, &dev);
    assert_ne!(session, thinghost_alwayson::message::NO_SESSION);
    let connected = audited(&s, "deviceConnected");
    assert_eq!(connected.last().unwrap()["user"], "dev");
    // KEEP_ALIVE is answered; a message with another session is refused, the connection kept.
    let keep = keep_alive(session, 5);
    send(&mut device, &keep);
    assert_eq!(receive(&mut device).unwrap().header.code, Code::SUCCESS);
    let m = bind(&mut device, session.wrapping_add(1), &["Pump1"]);
    assert_eq!(m.header.code, Code::UNAUTHORIZED, "{}", reason(&m));
    let m = bind(&mut device, session, &["Pump1"]);
    assert_eq!(m.header.code, Code::SUCCESS, "{}", reason(&m));
}

/// C1: a connection that sends no AUTH within the limit is closed, and the refusal audited.
#[test]
fn c1_no_auth_within_the_limit_closes_the_connection() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &["--edge-auth-timeout-seconds", "1"]);
    let mut silent = connect(&s);
    let started = std::time::Instant::now();
    assert!(receive(&mut silent).is_none());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(audited(&s, "edgeAuthTimeout").len(), 1);
}

/// C2: a visible Remote Thing with ServiceInvoke on UpdateSubscribedPropertyValues binds; an
/// invisible one answers exactly as a missing one; a Thing that is not remote, or a user
/// without the right, is refused with the reason (the denial audited); a Thing is bound to one
/// connection at a time, and free again once unbound or its connection closes.
#[test]
fn c2_binding_needs_a_visible_remote_thing_the_right_and_no_other_connection() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let (dev, idle) = devices(&s);
    let mut device = connect(&s);
    let session = auth(&mut device, &dev);

    let missing = bind(&mut device, session, &["Nothing1"]);
    let hidden = bind(&mut device, session, &["Hidden1"]);
    assert_eq!(missing.header.code, Code::NOT_FOUND);
    assert_eq!(hidden.header.code, Code::NOT_FOUND);
    assert_eq!(
        reason(&missing).replace("Nothing1", "X"),
        reason(&hidden).replace("Hidden1", "X")
    );

    let lamp = bind(&mut device, session, &["Lamp1"]);
    assert_eq!(lamp.header.code, Code::BAD_REQUEST);
    assert!(reason(&lamp).contains("RemoteThing"), "{}", reason(&lamp));

    assert_eq!(property(&s, "Pump1", "isConnected"), json!(false));
    let before = thinghost::now_ms();
    // A name twice is bound once.
    let both = bind(&mut device, session, &["Pump1", "Pump2", "Pump1"]);
    assert_eq!(both.header.code, Code::SUCCESS, "{}", reason(&both));
    assert_eq!(audited(&s, "thingBound").len(), 2);
    // C3: bound, connected, and when.
    assert_eq!(property(&s, "Pump1", "isConnected"), json!(true));
    assert!(property(&s, "Pump2", "lastConnection").as_i64().unwrap() >= before);

    let mut other = connect(&s);
    let other_session = auth(&mut other, &dev);
    let taken = bind(&mut other, other_session, &["Pump1"]);
    assert_eq!(taken.header.code, Code::PRECONDITION_FAILED);
    assert!(
        reason(&taken).contains("another connection"),
        "{}",
        reason(&taken)
    );

    send(&mut device, &bind_message(session, 3, true, &["Pump1"]));
    assert_eq!(receive(&mut device).unwrap().header.code, Code::SUCCESS);
    assert_eq!(property(&s, "Pump1", "isConnected"), json!(false));
    let rebound = bind(&mut other, other_session, &["Pump1"]);
    assert_eq!(rebound.header.code, Code::SUCCESS);
    assert_eq!(property(&s, "Pump1", "isConnected"), json!(true));
    // Pump2 is free, and disconnected, once its connection closes.
    device.close(None).unwrap();
    while receive(&mut device).is_some() {}
    thinghost_tests::within_20s("Pump2 disconnected", || {
        (property(&s, "Pump2", "isConnected") == json!(false)).then_some(())
    });
    let pump2 = bind(&mut other, other_session, &["Pump2"]);
    assert_eq!(pump2.header.code, Code::SUCCESS);

    let mut idler = connect(&s);
    let idle_session = auth(&mut idler, &idle);
    let denied = bind(&mut idler, idle_session, &["Pump1"]);
    assert_eq!(denied.header.code, Code::FORBIDDEN, "{}", reason(&denied));
    assert!(
        reason(&denied).contains("UpdateSubscribedPropertyValues"),
        "{}",
        reason(&denied)
    );
    thinghost_tests::within_20s("the denial audited", || {
        audited(&s, "permissionDenied")
            .iter()
            .any(|r| r["user"] == "idle")
            .then_some(())
    });
}

/// C6: frames of random bytes and truncated headers close their connection and leave the
/// server serving; a message over the size limit is answered BAD_REQUEST and the connection
/// kept. (Without TLS: a thousand handshakes of a debug-built client would be most of the
/// test; the other tests run over TLS.)
#[test]
fn c6_garbage_closes_its_connection_and_the_server_keeps_serving() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(
        t.path(),
        &["--insecure-http", "--edge-max-message-kib", "16"],
    );
    let (dev, _) = devices(&s);
    // A small deterministic generator: the same frames on every run.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut sent, mut connections) = (0, 0);
    while sent < 1000 {
        connections += 1;
        let mut socket = connect_plain(&s);
        let session = auth(&mut socket, &dev);
        // A valid frame answered first, then garbage until the server closes.
        let keep = keep_alive(session, 2);
        send(&mut socket, &keep);
        assert_eq!(receive(&mut socket).unwrap().header.code, Code::SUCCESS);
        loop {
            let len = (next() % 64) as usize;
            let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 && frame.len() > 2 {
                // A truncated valid header, or a valid header with garbage after it.
                frame[0] = 1;
                frame[1] = Code::POST.0;
            }
            sent += 1;
            if socket
                .send(tungstenite::Message::Binary(frame.into()))
                .is_err()
            {
                break;
            }
            match socket.read() {
                Ok(tungstenite::Message::Binary(b)) => {
                    // Bytes that happened to be a message get an answer; go on.
                    assert!(decode(&b).is_ok());
                }
                _ => break,
            }
        }
    }
    assert_eq!(s.client.get(s.at("/health")).send().unwrap().status(), 200);
    // Every one of those connections was closed for its garbage, on purpose: none ended any
    // other way (a panic in its task would end it without this entry).
    thinghost_tests::within_20s("every garbage connection closed as malformed", || {
        (audited(&s, "connectionClosedMalformed").len() == connections).then_some(())
    });

    // Over the message limit (16 KiB here): BAD_REQUEST, and the connection goes on.
    let mut socket = connect_plain(&s);
    let session = auth(&mut socket, &dev);
    let big = Message {
        header: Header {
            code: Code::POST,
            request_id: 9,
            endpoint_id: 0,
            session_id: session,
        },
        body: Body::Request(thinghost_alwayson::Request {
            entity_type: codes::THING,
            entity_name: "Pump1".into(),
            characteristic: codes::SERVICES,
            name: "Store".into(),
            headers: vec![],
            params: Some(thinghost_alwayson::Table::single(
                "text",
                thinghost_alwayson::Value::string("x".repeat(40_000)),
            )),
        }),
    };
    let frames = thinghost_alwayson::frames(&big, 8192, 1 << 20).unwrap();
    for f in &frames {
        socket
            .send(tungstenite::Message::Binary(f.clone().into()))
            .unwrap();
    }
    let m = receive(&mut socket).expect("an answer");
    assert_eq!(m.header.code, Code::BAD_REQUEST, "{}", reason(&m));
    assert_eq!(m.header.request_id, 9);
    // The connection goes on: the chunks after the refused first are refused the same way or
    // dropped; a KEEP_ALIVE is still answered.
    let keep = keep_alive(session, 10);
    send(&mut socket, &keep);
    let answered = std::iter::from_fn(|| receive(&mut socket))
        .find(|m| m.header.request_id == 10)
        .expect("KEEP_ALIVE answered after a refused message");
    assert_eq!(answered.header.code, Code::SUCCESS);
}

/// C1 with K1-K3: the connection acts for its key's user only while that user may sign in: a
/// user disabled after AUTH has the connection closed within seconds, its Things disconnected,
/// audited. A key in the URL is refused before any upgrade.
#[test]
fn c1_a_connection_ends_when_its_user_may_no_longer_sign_in() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let (dev, _) = devices(&s);
    let mut device = connect(&s);
    let session = auth(&mut device, &dev);
    assert_eq!(
        bind(&mut device, session, &["Pump1"]).header.code,
        Code::SUCCESS
    );
    ok(
        &s,
        &s.admin_key(),
        "/Thingworx/Users/dev/Services/DisableUser",
        json!({}),
    );
    let started = std::time::Instant::now();
    let last = std::iter::from_fn(|| receive(&mut device)).last();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let last = last.expect("the reason before the close");
    assert_eq!(last.header.code, Code::UNAUTHORIZED);
    assert!(reason(&last).contains("no longer"), "{}", reason(&last));
    thinghost_tests::within_20s("Pump1 disconnected", || {
        (property(&s, "Pump1", "isConnected") == json!(false)).then_some(())
    });
    thinghost_tests::within_20s("the disconnect audited", || {
        audited(&s, "deviceDisconnected")
            .last()
            .filter(|r| {
                r["args"]["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no longer")
            })
            .map(|_| ())
    });

    let port = s
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let r = s
        .client
        .get(format!(
            "https://localhost:{port}/Thingworx/WS?appKey={dev}"
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // Its name encoded, as the REST API refuses it too.
    let r = s
        .client
        .get(format!("https://localhost:{port}/Thingworx/WS?app%4Bey=x"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(audited(&s, "keyInUrl").len(), 2);
}

/// C3: a connection that sends nothing (no message, no ping) for the idle limit is closed and
/// its Things marked disconnected; one that keeps sending stays.
#[test]
fn c3_missed_keep_alives_disconnect_the_things() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &["--edge-idle-seconds", "2"]);
    let (dev, _) = devices(&s);
    let mut quiet = connect(&s);
    let session = auth(&mut quiet, &dev);
    assert_eq!(
        bind(&mut quiet, session, &["Pump1"]).header.code,
        Code::SUCCESS
    );
    let mut chatty = connect(&s);
    let chatty_session = auth(&mut chatty, &dev);
    assert_eq!(
        bind(&mut chatty, chatty_session, &["Pump2"]).header.code,
        Code::SUCCESS
    );
    for i in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(700));
        let keep = keep_alive(chatty_session, 10 + i);
        send(&mut chatty, &keep);
        assert_eq!(receive(&mut chatty).unwrap().header.code, Code::SUCCESS);
    }
    assert!(receive(&mut quiet).is_none(), "the quiet one is closed");
    thinghost_tests::within_20s("Pump1 disconnected", || {
        (property(&s, "Pump1", "isConnected") == json!(false)).then_some(())
    });
    assert_eq!(property(&s, "Pump2", "isConnected"), json!(true));
}

/// An `UpdateSubscribedPropertyValues` of `thing` as the Edge SDKs send it: the parameter
/// `values`, an InfoTable of the NamedVTQ shape.
fn push_message(
    session: u32,
    request: u32,
    thing: &str,
    rows: &[(&str, thinghost_alwayson::Value, Option<i64>)],
) -> Message {
    use thinghost_alwayson::{Field, Table, Value};
    let vtq = Table {
        fields: vec![
            Field::new("name", codes::STRING),
            Field::new("value", codes::VARIANT),
            Field::new("time", codes::DATETIME),
            Field::new("quality", codes::STRING),
        ],
        rows: rows
            .iter()
            .map(|(name, value, time)| {
                vec![
                    Value::string(*name),
                    value.clone(),
                    time.map_or(Value::Nothing, Value::Datetime),
                    Value::string("GOOD"),
                ]
            })
            .collect(),
    };
    Message {
        header: Header {
            code: Code::POST,
            request_id: request,
            endpoint_id: 0,
            session_id: session,
        },
        body: Body::Request(thinghost_alwayson::Request {
            entity_type: codes::THING,
            entity_name: thing.to_string(),
            characteristic: codes::SERVICES,
            name: "UpdateSubscribedPropertyValues".into(),
            headers: vec![],
            params: Some(Table {
                fields: vec![Field::new("values", codes::INFOTABLE)],
                rows: vec![vec![Value::InfoTable(Box::new(vtq))]],
            }),
        }),
    }
}

/// C4: a device's pushed values are property writes of its key's user, one change per push:
/// visible over REST; an older value does not replace a newer one; one value the user may not
/// write refuses the whole push (nothing half-applied, the denial audited); a wrong base type
/// is a BAD_REQUEST; only a Thing bound to the connection takes pushes, and an invisible one
/// answers as a missing one.
#[test]
fn c4_pushed_values_are_writes_of_the_keys_user_all_or_nothing() {
    use thinghost_alwayson::Value;
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let (dev, _) = devices(&s);
    let admin = s.admin_key();
    for (name, kind) in [
        ("pressure", "NUMBER"),
        ("running", "BOOLEAN"),
        ("secret", "NUMBER"),
        ("alarm", "BOOLEAN"),
    ] {
        ok(
            &s,
            &admin,
            "/Thingworx/ThingTemplates/Pump/Services/AddPropertyDefinition",
            json!({"name": name, "type": kind}),
        );
    }
    // A DataChange subscription: it runs as the device's user, who may write alarm.
    ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/AddSubscription",
        json!({"name": "Watch", "event": "DataChange", "property": "pressure",
               "code": "if eventData.newValue > 9.0 { set_property(me, \"alarm\", true); }"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Pump1/Services/AddRunTimePermission",
        json!({"principal": "devices", "principalType": "Group", "type": "PropertyWrite", "resource": "secret", "allow": false}),
    );
    let mut device = connect(&s);
    let session = auth(&mut device, &dev);
    assert_eq!(
        bind(&mut device, session, &["Pump1"]).header.code,
        Code::SUCCESS
    );
    let mut ask = |request: u32, thing: &str, rows: &[(&str, Value, Option<i64>)]| {
        send(&mut device, &push_message(session, request, thing, rows));
        let m = receive(&mut device).expect("an answer");
        assert_eq!(m.header.request_id, request);
        m
    };

    let m = ask(
        10,
        "Pump1",
        &[
            ("pressure", Value::Number(3.5), Some(1_000)),
            ("running", Value::Boolean(true), Some(1_000)),
        ],
    );
    assert_eq!(m.header.code, Code::SUCCESS, "{}", reason(&m));
    assert_eq!(property(&s, "Pump1", "pressure"), json!(3.5));
    assert_eq!(property(&s, "Pump1", "running"), json!(true));

    // Older than the stored value: left out; newer: written.
    let m = ask(11, "Pump1", &[("pressure", Value::Number(2.0), Some(500))]);
    assert_eq!(m.header.code, Code::SUCCESS, "{}", reason(&m));
    assert_eq!(property(&s, "Pump1", "pressure"), json!(3.5));
    ask(12, "Pump1", &[("pressure", Value::Integer(4), Some(2_000))]);
    assert_eq!(property(&s, "Pump1", "pressure"), json!(4));

    // One value refused: nothing written.
    let m = ask(
        13,
        "Pump1",
        &[
            ("pressure", Value::Number(9.0), Some(3_000)),
            ("secret", Value::Number(1.0), Some(3_000)),
        ],
    );
    assert_eq!(m.header.code, Code::FORBIDDEN, "{}", reason(&m));
    assert!(reason(&m).contains("nothing was written"), "{}", reason(&m));
    assert_eq!(property(&s, "Pump1", "pressure"), json!(4));
    thinghost_tests::within_20s("the denial audited", || {
        audited(&s, "permissionDenied")
            .iter()
            .any(|r| {
                r["user"] == "dev"
                    && r["args"]["target"]
                        .as_str()
                        .unwrap_or("")
                        .contains("secret")
            })
            .then_some(())
    });

    // A pushed value fires the subscription.
    assert_eq!(property(&s, "Pump1", "alarm"), json!(null));
    let m = ask(
        19,
        "Pump1",
        &[("pressure", Value::Number(12.0), Some(4_000))],
    );
    assert_eq!(m.header.code, Code::SUCCESS, "{}", reason(&m));
    thinghost_tests::within_20s("the DataChange subscription ran", || {
        (property(&s, "Pump1", "alarm") == json!(true)).then_some(())
    });

    let m = ask(14, "Pump1", &[("pressure", Value::string("high"), None)]);
    assert_eq!(m.header.code, Code::BAD_REQUEST, "{}", reason(&m));
    let m = ask(15, "Pump1", &[("nosuch", Value::Number(1.0), None)]);
    assert_eq!(m.header.code, Code::NOT_FOUND, "{}", reason(&m));

    // Not bound here, invisible, missing.
    let m = ask(16, "Pump2", &[("pressure", Value::Number(1.0), None)]);
    assert_eq!(m.header.code, Code::PRECONDITION_FAILED, "{}", reason(&m));
    let hidden = ask(17, "Hidden1", &[("pressure", Value::Number(1.0), None)]);
    let missing = ask(18, "Nothing1", &[("pressure", Value::Number(1.0), None)]);
    assert_eq!(hidden.header.code, Code::NOT_FOUND);
    assert_eq!(
        reason(&hidden).replace("Hidden1", "X"),
        reason(&missing).replace("Nothing1", "X")
    );
}

/// `thinghost edge simulate`, the project's device, as a process: its lines as they come.
struct Simulator(thinghost_tests::Running);

impl Simulator {
    fn start(s: &Server, key_file: &Path, extra: &[&str]) -> Simulator {
        let ca = s.dir.join("dev-cert.pem");
        let mut args: Vec<std::ffi::OsString> = ["edge", "simulate", "--url", &s.url, "--ca-cert"]
            .iter()
            .map(Into::into)
            .collect();
        args.push(ca.into());
        args.push("--app-key-file".into());
        args.push(key_file.into());
        args.extend(extra.iter().map(Into::into));
        Simulator(thinghost_tests::Running::start(&args))
    }

    fn wait_for(&self, text: &str) -> String {
        self.0.wait_for(text)
    }

    fn said(&self) -> String {
        self.0.said()
    }
}

fn key_file(t: &Path, name: &str, key: &str) -> PathBuf {
    let f = t.join(name);
    std::fs::write(&f, key).unwrap();
    f
}

/// A REST call's status and JSON body.
fn rest(
    s: &Server,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Json>,
) -> (u16, Json) {
    let mut r = s.client.request(method, s.at(path)).header("appKey", key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json::<Json>().unwrap_or(Json::Null))
}

/// The Pump template with a device-side property and service, bound on Pump1 under other names.
fn remote_pump(s: &Server) {
    let admin = s.admin_key();
    for (name, kind) in [("temperature", "NUMBER"), ("mode", "STRING")] {
        ok(
            s,
            &admin,
            "/Thingworx/ThingTemplates/Pump/Services/AddPropertyDefinition",
            json!({"name": name, "type": kind}),
        );
    }
    ok(
        s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/AddServiceDefinition",
        json!({"name": "Reboot", "parameters": [{"name": "delay", "baseType": "NUMBER", "required": true}],
               "resultType": "JSON"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/Things/Pump1/Services/SetRemotePropertyBinding",
        json!({"propertyName": "temperature", "sourceName": "Temp", "pushType": "VALUE"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/Things/Pump1/Services/SetRemotePropertyBinding",
        json!({"propertyName": "mode"}),
    );
    ok(
        s,
        &admin,
        "/Thingworx/Things/Pump1/Services/SetRemoteServiceBinding",
        json!({"serviceName": "Reboot", "sourceServiceName": "RebootNow"}),
    );
}

/// C5: reads, writes and service calls of bound members of a bound Thing go to the device
/// under its names, after the caller's own check, and its answers are the REST answers; not
/// bound: 503 naming the Thing. The device learns what to push (GetPropertySubscriptions), its
/// pushes under its own names land on the bound properties, and administrators see the
/// connection (WSCommunicationsSubsystem).
#[test]
fn c5_the_platform_reads_writes_and_calls_the_device() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let (dev, idle) = devices(&s);
    let admin = s.admin_key();
    remote_pump(&s);
    let get = reqwest::Method::GET;
    let put = reqwest::Method::PUT;
    let post = reqwest::Method::POST;

    // Bad bindings are refused with the reason.
    let (st, v) = rest(
        &s,
        &admin,
        post.clone(),
        "/Thingworx/Things/Pump1/Services/SetRemotePropertyBinding",
        Some(json!({"propertyName": "nosuch"})),
    );
    assert_eq!(st, 404, "{v}");
    let (st, v) = rest(
        &s,
        &admin,
        post.clone(),
        "/Thingworx/Things/Pump1/Services/SetRemotePropertyBinding",
        Some(json!({"propertyName": "mode", "pushType": "SOMETIMES"})),
    );
    assert_eq!(st, 400, "{v}");
    // A device-side name means one property.
    for clash in [
        json!({"propertyName": "mode", "sourceName": "Temp"}),
        json!({"propertyName": "mode", "sourceName": "temperature"}),
    ] {
        let (st, v) = rest(
            &s,
            &admin,
            post.clone(),
            "/Thingworx/Things/Pump1/Services/SetRemotePropertyBinding",
            Some(clash),
        );
        assert_eq!(st, 400, "{v}");
    }
    // Lamp1 is no Remote Thing: it has no binding services.
    let (st, _) = rest(
        &s,
        &admin,
        post.clone(),
        "/Thingworx/Things/Lamp1/Services/SetRemotePropertyBinding",
        Some(json!({"propertyName": "x"})),
    );
    assert_eq!(st, 404);

    // No device yet: 503, naming the Thing.
    let (st, v) = rest(
        &s,
        &admin,
        get.clone(),
        "/Thingworx/Things/Pump1/Properties/temperature",
        None,
    );
    assert_eq!(st, 503, "{v}");
    assert!(v.to_string().contains("Pump1"), "{v}");
    let (st, _) = rest(
        &s,
        &admin,
        post.clone(),
        "/Thingworx/Things/Pump1/Services/Reboot",
        Some(json!({"delay": 5})),
    );
    assert_eq!(st, 503);

    let key = key_file(t.path(), "dev.key", &dev);
    let device = Simulator::start(
        &s,
        &key,
        &[
            "--thing",
            "Pump1",
            "--property",
            "Temp=21.5",
            "--property",
            "mode=auto",
        ],
    );
    device.wait_for("bound Pump1");
    let subscribed = device.wait_for("the platform binds");
    assert!(
        subscribed.contains("Temp") && subscribed.contains("mode"),
        "{subscribed}"
    );
    // Its first push, under its own names, lands on the bound properties.
    device.wait_for("pushed 2 values: accepted");
    assert_eq!(property(&s, "Pump1", "isConnected"), json!(true));

    // A read goes to the device.
    let (st, v) = rest(
        &s,
        &admin,
        get.clone(),
        "/Thingworx/Things/Pump1/Properties/temperature",
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"][0]["temperature"], json!(21.5));
    device.wait_for("answered GET Pump1/Temp: SUCCESS");

    // A write goes to the device, which pushes the new value back.
    let (st, v) = rest(
        &s,
        &admin,
        put.clone(),
        "/Thingworx/Things/Pump1/Properties/temperature",
        Some(json!({"temperature": 30})),
    );
    assert_eq!(st, 200, "{v}");
    let (_, v) = rest(
        &s,
        &admin,
        get.clone(),
        "/Thingworx/Things/Pump1/Properties/temperature",
        None,
    );
    assert_eq!(v["rows"][0]["temperature"], json!(30.0));
    // A wrong type is refused before the device hears of it.
    let (st, _) = rest(
        &s,
        &admin,
        put.clone(),
        "/Thingworx/Things/Pump1/Properties/temperature",
        Some(json!({"temperature": "hot"})),
    );
    assert_eq!(st, 400);

    // A service call runs on the device, under its name, with the parameters.
    let (st, v) = rest(
        &s,
        &admin,
        post.clone(),
        "/Thingworx/Things/Pump1/Services/Reboot",
        Some(json!({"delay": 5})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["rows"][0]["result"],
        json!({"service": "RebootNow", "parameters": {"delay": 5.0}})
    );

    // The caller's own check comes first: idle may not read it (403, audited), and the device
    // is not asked.
    let answered = device.said().matches("answered").count();
    let (st, _) = rest(
        &s,
        &idle,
        get.clone(),
        "/Thingworx/Things/Pump1/Properties/temperature",
        None,
    );
    assert_eq!(st, 403);
    assert_eq!(device.said().matches("answered").count(), answered);

    // The device's errors are the REST answer's.
    ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/AddPropertyDefinition",
        json!({"name": "gone", "type": "NUMBER"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Pump1/Services/SetRemotePropertyBinding",
        json!({"propertyName": "gone"}),
    );
    device.wait_for("answered POST Pump1/NotifyPropertyUpdate");
    let (st, v) = rest(
        &s,
        &admin,
        get.clone(),
        "/Thingworx/Things/Pump1/Properties/gone",
        None,
    );
    assert_eq!(st, 404, "{v}");
    assert!(v.to_string().contains("NOT_FOUND"), "{v}");

    // Unbound again: the platform's own value.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Pump1/Services/RemoveRemotePropertyBinding",
        json!({"propertyName": "gone"}),
    );
    let (st, _) = rest(
        &s,
        &admin,
        get.clone(),
        "/Thingworx/Things/Pump1/Properties/gone",
        None,
    );
    assert_eq!(st, 200);

    // Administrators see the connection; others may not ask.
    let (st, v) = rest(
        &s,
        &admin,
        post.clone(),
        "/Thingworx/Subsystems/WSCommunicationsSubsystem/Services/GetConnections",
        Some(json!({})),
    );
    assert_eq!(st, 200, "{v}");
    let row = &v["rows"][0];
    assert_eq!(row["user"], "dev");
    assert_eq!(row["things"], json!(["Pump1"]));
    assert!(row["framesIn"].as_i64().unwrap() >= 4, "{row}");
    assert!(row["framesOut"].as_i64().unwrap() >= 4, "{row}");
    let (st, _) = rest(
        &s,
        &dev,
        post.clone(),
        "/Thingworx/Subsystems/WSCommunicationsSubsystem/Services/GetConnections",
        Some(json!({})),
    );
    // (A subsystem is no device user's to see: as if there were none.)
    assert_eq!(st, 404);

    // The device gone: 503 again.
    drop(device);
    thinghost_tests::within_20s("Pump1 disconnected", || {
        (property(&s, "Pump1", "isConnected") == json!(false)).then_some(())
    });
    let (st, _) = rest(
        &s,
        &admin,
        get,
        "/Thingworx/Things/Pump1/Properties/temperature",
        None,
    );
    assert_eq!(st, 503);
}

/// C5: a device that does not answer within the binding's timeout is a 504; its late answer is
/// dropped and the connection goes on.
#[test]
fn c5_no_answer_in_time_is_504() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let (dev, _) = devices(&s);
    let admin = s.admin_key();
    remote_pump(&s);
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Pump1/Services/SetRemotePropertyBinding",
        json!({"propertyName": "temperature", "sourceName": "Temp", "timeout": 300}),
    );
    let key = key_file(t.path(), "dev.key", &dev);
    let device = Simulator::start(
        &s,
        &key,
        &[
            "--thing",
            "Pump1",
            "--property",
            "Temp=1",
            "--answer-delay-ms",
            "1500",
        ],
    );
    device.wait_for("pushed 1 values: accepted");
    let started = std::time::Instant::now();
    let (st, v) = rest(
        &s,
        &admin,
        reqwest::Method::GET,
        "/Thingworx/Things/Pump1/Properties/temperature",
        None,
    );
    assert_eq!(st, 504, "{v}");
    assert!(v.to_string().contains("300 ms"), "{v}");
    assert!(started.elapsed() < std::time::Duration::from_millis(1400));
    // The late answer comes and is dropped; the device is still connected and served.

    device.wait_for("answered GET Pump1/Temp");
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Pump1/Services/SetRemotePropertyBinding",
        json!({"propertyName": "temperature", "sourceName": "Temp", "timeout": 10000}),
    );
    let (st, v) = rest(
        &s,
        &admin,
        reqwest::Method::GET,
        "/Thingworx/Things/Pump1/Properties/temperature",
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"][0]["temperature"], json!(1.0));
}

/// A request of a device (C1: as its key's user): GET and PUT of a property, POST of a service
/// or an event, each with the user's own checks.
fn device_request(
    session: u32,
    request: u32,
    code: Code,
    characteristic: u8,
    thing: &str,
    name: &str,
    params: Option<thinghost_alwayson::Table>,
) -> Message {
    Message {
        header: Header {
            code,
            request_id: request,
            endpoint_id: 0,
            session_id: session,
        },
        body: Body::Request(thinghost_alwayson::Request {
            entity_type: codes::THING,
            entity_name: thing.to_string(),
            characteristic,
            name: name.to_string(),
            headers: vec![],
            params,
        }),
    }
}

/// C4: a device's own requests are its user's: it reads and writes properties, calls services
/// (GetPropertySubscriptions), and fires events (a POST to the event, or ProcessRemoteEvents)
/// that reach subscriptions; what its user may not do is refused (audited).
#[test]
fn c4_device_requests_and_events_are_its_users() {
    use thinghost_alwayson::{Field, Table, Value};
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let (dev, _) = devices(&s);
    let admin = s.admin_key();
    for (path, body) in [
        (
            "/Thingworx/ThingTemplates/Pump/Services/AddPropertyDefinition",
            json!({"name": "trips", "type": "NUMBER", "defaultValue": 0}),
        ),
        (
            "/Thingworx/ThingTemplates/Pump/Services/AddEventDefinition",
            json!({"name": "Tripped"}),
        ),
        (
            "/Thingworx/ThingTemplates/Pump/Services/AddSubscription",
            json!({"name": "Count", "event": "Tripped",
                   "code": "set_property(me, \"trips\", get_property(me, \"trips\") + 1.0);"}),
        ),
        (
            "/Thingworx/Things/Pump1/Services/AddRunTimePermission",
            json!({"principal": "devices", "principalType": "Group", "type": "EventInvoke", "resource": "Forbidden", "allow": false}),
        ),
        (
            "/Thingworx/ThingTemplates/Pump/Services/AddEventDefinition",
            json!({"name": "Forbidden"}),
        ),
    ] {
        ok(&s, &admin, path, body);
    }
    let mut device = connect(&s);
    let session = auth(&mut device, &dev);
    assert_eq!(
        bind(&mut device, session, &["Pump1"]).header.code,
        Code::SUCCESS
    );
    let mut ask = |m: Message| {
        let id = m.header.request_id;
        send(&mut device, &m);
        let a = receive(&mut device).expect("an answer");
        assert_eq!(a.header.request_id, id);
        a
    };

    let a = ask(device_request(
        session,
        10,
        Code::GET,
        codes::PROPERTIES,
        "Pump1",
        "isConnected",
        None,
    ));
    assert_eq!(a.header.code, Code::SUCCESS, "{}", reason(&a));
    let Body::Response(r) = &a.body else { panic!() };
    assert_eq!(r.content.as_ref().unwrap().rows[0][0], Value::Boolean(true));

    let a = ask(device_request(
        session,
        11,
        Code::PUT,
        codes::PROPERTIES,
        "Pump1",
        "trips",
        Some(Table::single("trips", Value::Number(10.0))),
    ));
    assert_eq!(a.header.code, Code::SUCCESS, "{}", reason(&a));
    assert_eq!(property(&s, "Pump1", "trips"), json!(10.0));

    let a = ask(device_request(
        session,
        12,
        Code::POST,
        codes::SERVICES,
        "Pump1",
        "GetPropertySubscriptions",
        None,
    ));
    assert_eq!(a.header.code, Code::SUCCESS, "{}", reason(&a));

    // A POST to the event fires it; the subscription counts it.
    let a = ask(device_request(
        session,
        13,
        Code::POST,
        codes::EVENTS,
        "Pump1",
        "Tripped",
        None,
    ));
    assert_eq!(a.header.code, Code::SUCCESS, "{}", reason(&a));
    thinghost_tests::within_20s("the subscription ran", || {
        (property(&s, "Pump1", "trips") == json!(11.0)).then_some(())
    });
    // ProcessRemoteEvents: two at once.
    let events = Table {
        fields: vec![
            Field::new("eventName", codes::STRING),
            Field::new("eventData", codes::INFOTABLE),
        ],
        rows: (0..2)
            .map(|_| {
                vec![
                    Value::string("Tripped"),
                    Value::InfoTable(Box::new(Table {
                        fields: vec![],
                        rows: vec![vec![]],
                    })),
                ]
            })
            .collect(),
    };
    let mut params = Table::single("events", Value::InfoTable(Box::new(events)));
    params.fields[0].base_type = codes::INFOTABLE;
    let a = ask(device_request(
        session,
        14,
        Code::POST,
        codes::SERVICES,
        "Pump1",
        "ProcessRemoteEvents",
        Some(params),
    ));
    assert_eq!(a.header.code, Code::SUCCESS, "{}", reason(&a));
    thinghost_tests::within_20s("both events reached the subscription", || {
        (property(&s, "Pump1", "trips") == json!(13.0)).then_some(())
    });

    // What the user may not do: refused, audited.
    let a = ask(device_request(
        session,
        15,
        Code::POST,
        codes::EVENTS,
        "Pump1",
        "Forbidden",
        None,
    ));
    assert_eq!(a.header.code, Code::FORBIDDEN, "{}", reason(&a));
    let a = ask(device_request(
        session,
        16,
        Code::POST,
        codes::SERVICES,
        "Pump1",
        "SetRemotePropertyBinding",
        Some(Table::single("propertyName", Value::string("trips"))),
    ));
    assert_eq!(a.header.code, Code::FORBIDDEN, "{}", reason(&a));
    thinghost_tests::within_20s("the denials audited", || {
        (audited(&s, "permissionDenied")
            .iter()
            .filter(|r| r["user"] == "dev")
            .count()
            >= 2)
            .then_some(())
    });
    // An invisible Thing answers as a missing one.
    let hidden = ask(device_request(
        session,
        17,
        Code::GET,
        codes::PROPERTIES,
        "Hidden1",
        "isConnected",
        None,
    ));
    let missing = ask(device_request(
        session,
        18,
        Code::GET,
        codes::PROPERTIES,
        "Nothing1",
        "isConnected",
        None,
    ));
    assert_eq!(hidden.header.code, Code::NOT_FOUND);
    assert_eq!(
        reason(&hidden).replace("Hidden1", "X"),
        reason(&missing).replace("Nothing1", "X")
    );
}

/// Seed 000's provisioning, for 100 devices: one user and one application key per device (no
/// design-time rights), their Remote Things visible through an organization, each user with
/// run-time rights on its own Thing only. 100 simulated devices connect at once, each binds and
/// pushes to its own Thing; none may bind or push to another's.
#[test]
fn c2_seed_000_provisioning_100_devices_each_on_its_own_thing() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let admin = s.admin_key();
    const N: usize = 100;
    let script = format!(
        r#"
        create_organization("plant");
        create_group("pumps");
        add_organization_member("plant", "plant", "pumps", "Group");
        create_thing_template("Pump", "RemoteThing");
        add_property_definition("ThingTemplates/Pump", "pressure", "NUMBER");
        add_instance_visibility_permission("ThingTemplates/Pump", "plant", "Organization");
        for n in 1..={N} {{
            let user = `device-${{n}}`;
            create_user(user);
            add_member("pumps", user, "User");
            create_thing(`Pump${{n}}`, "Pump");
            for type in ["PropertyRead", "PropertyWrite", "ServiceInvoke", "EventInvoke"] {{
                add_run_time_permission(`Things/Pump${{n}}`, user, "User", type);
            }}
            print(create_application_key(`${{user}}-key`, user).keyId);
        }}
        "#
    );
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Resources/ScriptServices/Services/RunScript",
        json!({"script": script}),
    );
    let keys: Vec<Json> = v["rows"][0]["result"]["output"]
        .as_str()
        .unwrap_or_else(|| panic!("the keys: {v}"))
        .lines()
        .map(|k| json!(k.trim()))
        .collect();
    assert_eq!(keys.len(), N);
    let dir = t.path().join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, k) in keys.iter().enumerate() {
        std::fs::write(dir.join(format!("{}.key", i + 1)), k.as_str().unwrap()).unwrap();
    }

    let fleet = Simulator::start(
        &s,
        &dir.join("%n.key"),
        &[
            "--devices",
            &N.to_string(),
            "--thing",
            "Pump%n",
            "--property",
            "pressure=7",
        ],
    );
    thinghost_tests::within_20s("every device pushed", || {
        let said = fleet.said();
        (said.matches("pushed 1 values: accepted").count() == N).then_some(())
    });
    assert!(!fleet.said().contains("refused"), "{}", fleet.said());
    for n in [1, 50, N] {
        assert_eq!(property(&s, &format!("Pump{n}"), "pressure"), json!(7.0));
        assert_eq!(
            property(&s, &format!("Pump{n}"), "isConnected"),
            json!(true)
        );
    }
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Subsystems/WSCommunicationsSubsystem/Services/GetConnections",
        json!({}),
    );
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), N);
    for row in rows {
        let user = row["user"].as_str().unwrap();
        let n = user.trim_start_matches("device-");
        assert_eq!(row["things"], json!([format!("Pump{n}")]), "{row}");
    }

    // Device 1's key on device 2's Thing: no bind, no push.
    let mut intruder = connect(&s);
    let session = auth(&mut intruder, keys[0].as_str().unwrap());
    let m = bind(&mut intruder, session, &["Pump2"]);
    assert_eq!(m.header.code, Code::FORBIDDEN, "{}", reason(&m));
    send(
        &mut intruder,
        &push_message(
            session,
            3,
            "Pump2",
            &[("pressure", thinghost_alwayson::Value::Number(0.0), None)],
        ),
    );
    let m = receive(&mut intruder).unwrap();
    assert_eq!(m.header.code, Code::FORBIDDEN, "{}", reason(&m));
    assert_eq!(property(&s, "Pump2", "pressure"), json!(7.0));
}

/// C1: a device that offers permessage-deflate (the SDKs may) is answered without the
/// extension (RFC 7692's negotiation: the server declines), and speaks uncompressed.
#[test]
fn c1_an_offer_of_permessage_deflate_is_declined_and_the_device_served() {
    use tungstenite::client::IntoClientRequest;
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let (dev, _) = devices(&s);
    let mut request = format!("wss://localhost:{}/Thingworx/WS", s.port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let (mut socket, response) =
        tungstenite::client::client(request, thinghost_tests::tls_stream(&s))
            .expect("the WebSocket handshake");
    assert!(
        response.headers().get("Sec-WebSocket-Extensions").is_none(),
        "{:?}",
        response.headers()
    );
    let session = auth(&mut socket, &dev);
    assert_eq!(
        bind(&mut socket, session, &["Pump1"]).header.code,
        Code::SUCCESS
    );
}

/// H2 with a device: `edge simulate` pushes a logged property at 100 Hz for a minute; then
/// `QueryNumberPropertyHistory` over REST answers every accepted value, in order, each with the
/// device's own timestamp (the simulator's values count up by one from 0, so a lost, doubled
/// or reordered value shows).
#[test]
fn h2_a_device_pushing_at_100_hz_for_a_minute_has_every_value_in_history() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path(), &[]);
    let (dev, _) = devices(&s);
    let admin = s.admin_key();
    ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/AddPropertyDefinition",
        json!({"name": "pressure", "type": "NUMBER", "logged": true}),
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "PumpHistory", "thingTemplateName": "ValueStream"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Pump1/Services/SetValueStream",
        json!({"name": "PumpHistory"}),
    );
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let key = key_file(t.path(), "dev.key", &dev);
    let device = Simulator::start(
        &s,
        &key,
        &[
            "--thing",
            "Pump1",
            "--property",
            "pressure=0",
            "--every",
            "10ms",
            "--step",
            "1",
            "--for",
            "60s",
        ],
    );
    // It runs a minute, then says what it did.
    std::thread::sleep(std::time::Duration::from_secs(55));
    device.wait_for("devices connected;");
    let said = device.said();
    let accepted = said.matches("pushed 1 values: accepted").count();
    assert!(!said.contains("values: refused"), "{said}");
    // At least 80 Hz on this machine, or the test proves little.
    assert!(
        accepted >= 4_800,
        "{accepted} pushes accepted in 60 s: {said:.2000}"
    );
    let (st, v) = rest(
        &s,
        &admin,
        reqwest::Method::POST,
        "/Thingworx/Things/Pump1/Services/QueryNumberPropertyHistory",
        Some(json!({"propertyName": "pressure", "oldestFirst": true, "maxItems": 100000})),
    );
    assert_eq!(st, 200, "{v}");
    let rows = v["rows"].as_array().unwrap();
    // Pushes still in flight when the simulator stopped may have landed unanswered.
    assert!(
        rows.len() >= accepted,
        "{} rows, {accepted} accepted",
        rows.len()
    );
    let mut last = started;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["value"], json!(i as f64), "row {i}: {r}");
        let ts = r["timestamp"].as_i64().unwrap();
        assert!(ts >= last, "row {i}: {ts} before {last}");
        last = ts;
    }
    // The device's times: spread over the minute, not the moments the server wrote them.
    let first = rows[0]["timestamp"].as_i64().unwrap();
    assert!(last - first >= 55_000, "{first}..{last}");
}
