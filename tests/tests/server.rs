//! The server end to end: the real binary on a loopback port, a real HTTP client over TLS.

use reqwest::StatusCode;
use serde_json::{Value as Json, json};
use std::path::Path;
use thinghost_core::{Policy, View};
use thinghost_store::Db;
use thinghost_tests::{Server, import, text, thinghost};

const DEV1: &str = "3f1c2a9e-0d4b-4e7a-9c55-1a2b3c4d5e6f";
const DEV2: &str = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d";
const EXPIRED: &str = "00000000-1111-2222-3333-444444444444";
const FENCED: &str = "55555555-6666-7777-8888-999999999999";
const RETIRED: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const FROZEN: &str = "12121212-3434-5656-7878-909090909090";

fn key(name: &str, user: &str, secret: &str, expires: i64, whitelist: &[&str]) -> Json {
    json!({"kind": "ApplicationKey", "name": name, "user": user, "keyHash": thinghost::state::keys::hash(secret),
           "expirationDate": expires, "whitelist": whitelist})
}

/// Seed 000 as a model: an organization with a unit per device, one user and one key per device,
/// a Remote Thing per device visible to its unit, run-time permissions for its user only.
fn seed000(dir: &Path) {
    let o = thinghost(&["init", "--data", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let far = 4_102_444_800_000i64; // 2100-01-01
    let mut entities = vec![
        json!({"kind": "User", "name": "dev1"}),
        json!({"kind": "User", "name": "dev2"}),
        json!({"kind": "Organization", "name": "Plant", "units": [
            {"name": "Plant"},
            {"name": "Line1", "parent": "Plant", "members": [{"principal": "dev1", "principalType": "User"}]},
            {"name": "Line2", "parent": "Plant", "members": [{"principal": "dev2", "principalType": "User"}]}
        ]}),
        json!({"kind": "ThingTemplate", "name": "RemoteThing", "baseThingTemplate": "GenericThing",
               "definitions": {"properties": [
                   {"name": "pressure", "baseType": "NUMBER", "defaultValue": 0},
                   {"name": "serial", "baseType": "STRING", "readOnly": true, "defaultValue": "SN-1"}]}}),
        key("dev1-key", "dev1", DEV1, far, &[]),
        key("dev2-key", "dev2", DEV2, far, &[]),
        key("dev1-old", "dev1", EXPIRED, 1, &[]),
        key("dev1-fenced", "dev1", FENCED, far, &["10.0.0.0/8"]),
        json!({"kind": "User", "name": "retired", "enabled": false}),
        json!({"kind": "User", "name": "frozen", "locked": true}),
        key("retired-key", "retired", RETIRED, far, &[]),
        key("frozen-key", "frozen", FROZEN, far, &[]),
    ];
    for (thing, unit, user) in [("Pump1", "Line1", "dev1"), ("Pump2", "Line2", "dev2")] {
        let rt: Vec<Json> = ["PropertyRead", "PropertyWrite", "ServiceInvoke"]
            .iter()
            .map(|p| json!({"principal": user, "principalType": "User", "type": p, "resource": "*", "allow": true}))
            .collect();
        entities.push(json!({"kind": "Thing", "name": thing, "thingTemplate": "RemoteThing",
            "permissions": {"visibility": [{"principal": format!("Plant:{unit}"), "principalType": "OrganizationalUnit"}], "runTime": rt}}));
    }
    let file = dir.parent().unwrap().join("seed000.json");
    std::fs::write(
        &file,
        json!({"format": "thinghost-model", "version": 1, "entities": entities}).to_string(),
    )
    .unwrap();
    import(dir, &file);
}

fn get(s: &Server, key: &str, path: &str) -> (StatusCode, String) {
    let r = s
        .client
        .get(s.at(path))
        .header("appKey", key)
        .send()
        .unwrap();
    (r.status(), r.text().unwrap())
}

fn put(
    s: &Server,
    key: &str,
    path: &str,
    body: &str,
    content_type: Option<&str>,
) -> (StatusCode, String) {
    let mut req = s
        .client
        .put(s.at(path))
        .header("appKey", key)
        .body(body.to_string());
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let r = req.send().unwrap();
    (r.status(), r.text().unwrap())
}

fn audit_keys(dir: &Path) -> Vec<String> {
    let mut db = Db::open(dir, Policy::default()).unwrap();
    db.audit_records(100)
        .unwrap()
        .into_iter()
        .map(|r| r.message_key)
        .collect()
}

#[test]
fn seed000_a_device_reads_and_writes_its_own_thing_and_cannot_see_another() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    seed000(&dir);
    let s = Server::start(&dir, &["--dev"]);
    let (st, body) = get(&s, DEV1, "/Thingworx/Things/Pump1/Properties/pressure");
    assert_eq!(st, 200, "{body}");
    let v: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rows"][0]["pressure"], json!(0));
    assert_eq!(
        v["dataShape"]["fieldDefinitions"]["pressure"]["baseType"],
        "NUMBER"
    );
    let (st, body) = put(
        &s,
        DEV1,
        "/Thingworx/Things/Pump1/Properties/pressure",
        r#"{"pressure": 3.5}"#,
        Some("application/json"),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, "");
    let (_, body) = get(&s, DEV1, "/Thingworx/Things/Pump1/Properties/pressure");
    assert!(body.contains("3.5"), "{body}");
    // Another device's Thing answers exactly like a Thing that does not exist.
    let hidden = get(&s, DEV1, "/Thingworx/Things/Pump2/Properties/pressure");
    let absent = get(&s, DEV1, "/Thingworx/Things/Pump9/Properties/pressure");
    assert_eq!(hidden.0, 404);
    assert_eq!(
        hidden.1.replace("Pump2", "X"),
        absent.1.replace("Pump9", "X")
    );
    let (st, _) = put(
        &s,
        DEV1,
        "/Thingworx/Things/Pump2/Properties/pressure",
        r#"{"pressure": 1}"#,
        Some("application/json"),
    );
    assert_eq!(st, 404);
    // The list shows what it can see, and nothing else.
    let (st, body) = get(&s, DEV1, "/Thingworx/Things");
    assert_eq!(st, 200);
    assert!(body.contains("Pump1") && !body.contains("Pump2"), "{body}");
    // No design time: reading the entity's definition is forbidden (it is visible), and audited.
    let (st, body) = get(&s, DEV1, "/Thingworx/Things/Pump1");
    assert_eq!(st, 403, "{body}");
    // (Denials are queued: on disk within milliseconds, so look until it is.)
    thinghost_tests::within_20s("the denial in the audit log", || {
        audit_keys(&dir)
            .contains(&"permissionDenied".to_string())
            .then_some(())
    });
    // The other device works with its own.
    assert_eq!(
        get(&s, DEV2, "/Thingworx/Things/Pump2/Properties/pressure").0,
        200
    );
    // A write survives a restart.
    drop(s);
    let s = Server::start(&dir, &["--dev"]);
    assert!(
        get(&s, DEV1, "/Thingworx/Things/Pump1/Properties/pressure")
            .1
            .contains("3.5")
    );
}

#[test]
fn bad_writes_get_415_400_403_405_and_change_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    seed000(&dir);
    let s = Server::start(&dir, &["--dev"]);
    let p = "/Thingworx/Things/Pump1/Properties/pressure";
    assert_eq!(put(&s, DEV1, p, r#"{"pressure": 1}"#, None).0, 415);
    assert_eq!(
        put(&s, DEV1, p, r#"{"pressure": 1}"#, Some("text/plain")).0,
        415
    );
    let (st, body) = put(&s, DEV1, p, "{\n\"pressure\": }", Some("application/json"));
    assert_eq!(st, 400);
    assert!(body.contains("line 2"), "{body}");
    let (st, body) = put(
        &s,
        DEV1,
        p,
        r#"{"pressure": "high"}"#,
        Some("application/json"),
    );
    assert_eq!(st, 400);
    assert!(
        body.contains("pressure") && body.contains("NUMBER"),
        "{body}"
    );
    let (st, body) = put(&s, DEV1, p, r#"{"other": 1}"#, Some("application/json"));
    assert_eq!(st, 400, "{body}");
    let (st, body) = put(
        &s,
        DEV1,
        "/Thingworx/Things/Pump1/Properties/serial",
        r#"{"serial": "x"}"#,
        Some("application/json"),
    );
    assert_eq!(st, 403, "{body}");
    let (st, _) = get(&s, DEV1, "/Thingworx/Things/Pump1/Properties/nope");
    assert_eq!(st, 404);
    let r = s
        .client
        .delete(s.at(p))
        .header("appKey", DEV1)
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = s
        .client
        .get(s.at("/Thingworx/Widgets"))
        .header("appKey", DEV1)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(get(&s, DEV1, p).1.contains("\"pressure\":0"));
}

#[test]
fn k3_expired_out_of_range_and_unknown_keys_answer_one_401_and_each_refusal_is_audited() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    seed000(&dir);
    let s = Server::start(&dir, &["--dev"]);
    let p = "/Thingworx/Things/Pump1/Properties/pressure";
    let r = s
        .client
        .get(s.at(&format!("{p}?appKey={DEV1}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s.client.get(s.at(p)).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"thinghost\"");
    let unknown = get(&s, "not-a-key", p);
    let expired = get(&s, EXPIRED, p);
    let fenced = get(&s, FENCED, p);
    let retired = get(&s, RETIRED, p);
    let frozen = get(&s, FROZEN, p);
    for (st, body) in [&unknown, &expired, &fenced, &retired, &frozen] {
        assert_eq!(*st, 401);
        assert_eq!(body, &unknown.1, "every 401 says the same");
    }
    let r = s
        .client
        .get(s.at(p))
        .basic_auth("dev1", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let keys = audit_keys(&dir);
    for k in [
        "keyInUrl",
        "noCredentials",
        "unknownKey",
        "keyExpired",
        "addressNotAllowed",
        "badPassword",
    ] {
        assert!(keys.contains(&k.to_string()), "{k} not audited: {keys:?}");
    }
    // The keys are stored only as hashes.
    let mut bytes = Vec::new();
    for f in ["thinghost.db", "thinghost.db-wal"] {
        bytes.extend(std::fs::read(dir.join(f)).unwrap_or_default());
    }
    for k in [DEV1, DEV2, FENCED] {
        assert!(
            !bytes.windows(k.len()).any(|w| w == k.as_bytes()),
            "{k} stored in clear"
        );
    }
    let db = Db::open(&dir, Policy::default()).unwrap();
    assert!(
        db.model()
            .get(thinghost_core::Kind::ApplicationKey, "dev1-key")
            .is_some()
    );
}

#[test]
fn k7_tls_is_the_default_and_production_refuses_what_it_must() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    let d = dir.to_str().unwrap();
    let o = thinghost(&["serve", "--data", d, "--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("TLS is the default"), "{:?}", text(&o));
    let o = thinghost(&["serve", "--data", d, "--production", "--insecure-http"]);
    assert!(
        text(&o).1.contains("--production refuses --insecure-http"),
        "{:?}",
        text(&o)
    );
    let o = thinghost(&["serve", "--data", d, "--production", "--dev"]);
    assert!(
        text(&o).1.contains("--production refuses --dev"),
        "{:?}",
        text(&o)
    );
    // A self-signed certificate given as a file is refused too.
    drop(Server::start(&dir, &["--dev"]));
    let cert = dir.join("dev-cert.pem");
    let key = dir.join("dev-key.pem");
    let o = thinghost(&[
        "serve",
        "--data",
        d,
        "--production",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("self-signed"), "{:?}", text(&o));
    // Plain HTTP works only when asked for, with a warning.
    let s = Server::start(&dir, &["--insecure-http"]);
    assert!(s.url.starts_with("http://"));
    let k = s.admin_key();
    assert_eq!(get(&s, &k, "/Thingworx/Users").0, 200);
    drop(s);
    // The TLS server does not speak plain HTTP.
    let s = Server::start(&dir, &["--dev"]);
    let plain = reqwest::blocking::Client::new()
        .get(s.url.replace("https", "http") + "/health")
        .send();
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[test]
fn serve_initializes_a_new_data_directory_like_init() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("fresh");
    let s = Server::start(&dir, &["--dev"]);
    let k = s.admin_key();
    let (st, body) = get(&s, &k, "/Thingworx/Groups");
    assert_eq!(st, 200);
    for g in ["Administrators", "Users", "Auditors"] {
        assert!(body.contains(g), "{body}");
    }
    let db = Db::open(&dir, Policy::default()).unwrap();
    assert_eq!(
        db.model()
            .entities(thinghost_core::Kind::ApplicationKey)
            .count(),
        1
    );
}

#[test]
fn k1_a_key_runs_as_its_user_and_only_in_the_appkey_header() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    seed000(&dir);
    let s = Server::start(&dir, &["--dev"]);
    let who = "/Thingworx/Resources/CurrentSessionInfo/Services/GetCurrentUser";
    for (key, user) in [(DEV1, "dev1"), (DEV2, "dev2")] {
        let r = s
            .client
            .post(s.at(who))
            .header("appKey", key)
            .json(&json!({}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Json>().unwrap()["rows"][0]["result"], user);
    }
    // With that user's permissions: dev1 reaches Pump1, not Pump2.
    assert_eq!(
        get(&s, DEV1, "/Thingworx/Things/Pump1/Properties/pressure").0,
        200
    );
    assert_eq!(
        get(&s, DEV1, "/Thingworx/Things/Pump2/Properties/pressure").0,
        404
    );
    // In the URL, even with a valid header beside it: refused.
    let r = s
        .client
        .post(s.at(&format!("{who}?appKey={DEV1}")))
        .header("appKey", DEV1)
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .client
        .post(s.at(&format!("{who}?APPKEY={DEV1}")))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn a_second_server_or_an_import_on_a_served_directory_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    seed000(&dir);
    let s = Server::start(&dir, &["--dev"]);
    let o = thinghost(&[
        "serve",
        "--data",
        dir.to_str().unwrap(),
        "--dev",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("server is running"), "{:?}", text(&o));
    let file = t.path().join("seed000.json");
    let o = thinghost(&[
        "model",
        "--data",
        dir.to_str().unwrap(),
        "import",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("server is running"), "{:?}", text(&o));
    // Reading is fine while it runs.
    let o = thinghost(&[
        "check",
        "--data",
        dir.to_str().unwrap(),
        "--user",
        "dev1",
        "--action",
        "PropertyRead",
        "--target",
        "Things/Pump1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    drop(s);
    import(&dir, &file);
}
