//! Data storage Things (DOMAIN section 11) against the real server: the persistence provider
//! (H1), value streams and logged properties (H2).

use serde_json::{Value as Json, json};
use thinghost_tests::{Server, ok};

const ES: &str = "/Thingworx/Resources/EntityServices/Services";

fn definition(s: &Server, key: &str, thing: &str, prop: &str) -> Json {
    let v: Json = s
        .client
        .get(s.at(&format!("/Thingworx/Things/{thing}")))
        .header("appKey", key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["propertyDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["definition"]["name"] == prop)
        .unwrap_or_else(|| panic!("{thing} has no {prop}: {v}"))["definition"]
        .clone()
}

/// H2: `logged` is part of a property definition: `AddPropertyDefinition(logged)` sets it, the
/// metadata shows it, an extension's manifest declares it (`logged = true`), and it stays
/// across a restart; a property not logged says nothing of it.
#[test]
fn h2_logged_is_part_of_a_property_definition() {
    let t = tempfile::tempdir().unwrap();
    let plugins = t.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let ext = plugins.join("logged-props");
    std::fs::create_dir_all(&ext).unwrap();
    // A Rhai extension of its own: a template with a logged property.
    std::fs::write(
        ext.join("plugin.toml"),
        r#"[extension]
name = "logged-props"
version = "1.0.0"
host = ">=0.1"
runtime = "rhai"
entry = "main.rhai"

[[thing_templates]]
name = "Boiler"
base = "GenericThing"

[[thing_templates.properties]]
name = "pressure"
type = "NUMBER"
logged = true

[[thing_templates.properties]]
name = "label"
type = "STRING"
"#,
    )
    .unwrap();
    std::fs::write(ext.join("main.rhai"), "").unwrap();
    let data = t.path().join("d");
    let args = [
        "--dev",
        "--plugins",
        plugins.to_str().unwrap(),
        "--no-watch",
    ];
    let s = Server::start(&data, &args);
    let admin = s.admin_key();
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "B1", "thingTemplateName": "Boiler"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/AddPropertyDefinition",
        json!({"name": "temperature", "type": "NUMBER", "logged": true}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/AddPropertyDefinition",
        json!({"name": "note", "type": "STRING"}),
    );
    let check = |s: &Server| {
        assert_eq!(definition(s, &admin, "B1", "pressure")["logged"], true);
        assert_eq!(definition(s, &admin, "B1", "temperature")["logged"], true);
        assert_eq!(definition(s, &admin, "B1", "label")["logged"], Json::Null);
        assert_eq!(definition(s, &admin, "B1", "note")["logged"], Json::Null);
    };
    check(&s);
    // A wrong type of the parameter is a 400, and nothing is defined.
    let (st, _) = thinghost_tests::post(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/AddPropertyDefinition",
        json!({"name": "bad", "type": "NUMBER", "logged": "very"}),
    );
    assert_eq!(st.as_u16(), 400);
    drop(s);
    let s = Server::start(&data, &args);
    check(&s);
}

/// The admin's POST of a service; its status and body.
fn call(s: &Server, key: &str, path: &str, body: Json) -> (u16, Json) {
    let (st, v) = thinghost_tests::post(s, key, path, body);
    (st.as_u16(), v)
}

/// A ValueStream `VS`, a Thing `B1` recording its logged `pressure` (NUMBER) and `running`
/// (BOOLEAN) there, and `label` (STRING, not logged).
fn boiler(s: &Server, admin: &str) {
    ok(
        s,
        admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "VS", "thingTemplateName": "ValueStream"}),
    );
    ok(
        s,
        admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "B1", "thingTemplateName": "GenericThing"}),
    );
    for (name, ty, logged) in [
        ("pressure", "NUMBER", true),
        ("running", "BOOLEAN", true),
        ("label", "STRING", false),
    ] {
        ok(
            s,
            admin,
            "/Thingworx/Things/B1/Services/AddPropertyDefinition",
            json!({"name": name, "type": ty, "logged": logged}),
        );
    }
    ok(
        s,
        admin,
        "/Thingworx/Things/B1/Services/SetValueStream",
        json!({"name": "VS"}),
    );
}

fn put(s: &Server, key: &str, thing: &str, prop: &str, value: Json) -> u16 {
    s.client
        .put(s.at(&format!("/Thingworx/Things/{thing}/Properties/{prop}")))
        .header("appKey", key)
        .json(&json!({ prop: value }))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// H1: the predefined ThingworxPersistenceProvider keeps its data in a file of its own beside
/// the model's (WAL); `GetDefaultDataPersistenceProviderName` answers the configured default,
/// and a default that is no PersistenceProvider stops the server with what to do.
#[test]
fn h1_the_default_provider_is_configured_and_keeps_its_own_file() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("d");
    let s = Server::start(
        &data,
        &[
            "--dev",
            "--default-persistence-provider",
            "ThingworxPersistenceProvider",
        ],
    );
    let admin = s.admin_key();
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Subsystems/PlatformSubsystem/Services/GetDefaultDataPersistenceProviderName",
        json!({}),
    );
    assert_eq!(v["rows"][0]["result"], "ThingworxPersistenceProvider");
    boiler(&s, &admin);
    assert_eq!(put(&s, &admin, "B1", "pressure", json!(2.5)), 200);
    assert!(data.join("history.db").exists());
    assert!(data.join("history.db-wal").exists(), "WAL mode");
    drop(s);
    let out = thinghost_tests::thinghost(&[
        "serve",
        "--data",
        data.to_str().unwrap(),
        "--dev",
        "--default-persistence-provider",
        "Elsewhere",
    ]);
    assert!(!out.status.success());
    let (_, err) = thinghost_tests::text(&out);
    assert!(
        err.contains(
            "--default-persistence-provider Elsewhere: there is no such PersistenceProvider"
        ) && err.contains("ThingworxPersistenceProvider"),
        "{err}"
    );
}

/// H2: every accepted write of a logged property of a Thing with a value stream is recorded:
/// over REST, from a script, from a service's code; a refused write is not, nor a property that
/// is not logged. `QueryPropertyHistory` answers a row per timestamp, newest first (or oldest),
/// within dates and `maxItems`, filtered by `query`; the typed services answer `timestamp` and
/// `value` of their own base type; `PurgePropertyHistory` removes it, audited. Bad input is a
/// 400 naming it. History stays across a restart.
#[test]
fn h2_every_accepted_write_of_a_logged_property_is_in_its_value_stream() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("d");
    let s = Server::start(&data, &["--dev", "--max-items", "1000"]);
    let admin = s.admin_key();
    boiler(&s, &admin);
    let desc: Json = s
        .client
        .get(s.at("/Thingworx/Things/B1"))
        .header("appKey", &admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(desc["valueStream"], "VS");
    for p in [1.5, 2.5, 3.5] {
        assert_eq!(put(&s, &admin, "B1", "pressure", json!(p)), 200);
    }
    assert_eq!(put(&s, &admin, "B1", "running", json!(true)), 200);
    assert_eq!(put(&s, &admin, "B1", "label", json!("not logged")), 200);
    // A value of the wrong type is refused, and not recorded.
    assert_eq!(put(&s, &admin, "B1", "pressure", json!("high")), 400);
    // A script's write, and a service's code.
    ok(
        &s,
        &admin,
        "/Thingworx/Resources/ScriptServices/Services/RunScript",
        json!({"script": "set_property(\"Things/B1\", \"pressure\", 4.5);"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/AddServiceDefinition",
        json!({"name": "Bump", "code": "set_property(me, \"pressure\", get_property(me, \"pressure\") + 1.0);"}),
    );
    ok(&s, &admin, "/Thingworx/Things/B1/Services/Bump", json!({}));
    let history = |mut body: Json| {
        body["fillOption"] = json!("None");
        ok(
            &s,
            &admin,
            "/Thingworx/Things/B1/Services/QueryPropertyHistory",
            body,
        )
    };
    // By default a row shows a property's last value before it (the vendor's fillOption
    // Previous): the row of running's write shows pressure 3.5.
    let filled = ok(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/QueryPropertyHistory",
        json!({}),
    );
    let running_row = filled["rows"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|r| r["running"] == true)
        .unwrap()
        .clone();
    // (The newer rows show running too: its last value.)
    assert_eq!(running_row["pressure"], 3.5, "{filled}");
    assert_eq!(filled["rows"][0]["running"], true, "{filled}");
    let v = history(json!({}));
    let fields = v["dataShape"]["fieldDefinitions"].as_object().unwrap();
    // (Key order is serde_json's: compared as a set.)
    let mut names: Vec<&String> = fields.keys().collect();
    names.sort();
    assert_eq!(names, ["pressure", "running", "timestamp"], "{v}");
    assert_eq!(fields["timestamp"]["baseType"], "DATETIME");
    let pressures: Vec<Json> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.get("pressure").cloned())
        .collect();
    assert_eq!(
        pressures,
        [json!(5.5), json!(4.5), json!(3.5), json!(2.5), json!(1.5)],
        "{v}"
    );
    let times: Vec<i64> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["timestamp"].as_i64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    // Oldest first, at most two.
    let v = history(json!({"oldestFirst": true, "maxItems": 2}));
    assert_eq!(v["rows"].as_array().unwrap().len(), 2);
    assert_eq!(v["rows"][0]["pressure"], 1.5);
    // A query over the row's fields.
    let v =
        history(json!({"query": {"filters": {"type": "GT", "fieldName": "pressure", "value": 3}}}));
    assert_eq!(v["rows"].as_array().unwrap().len(), 3, "{v}");
    // Typed: rows of timestamp and value.
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/QueryNumberPropertyHistory",
        json!({"propertyName": "pressure", "maxItems": 1}),
    );
    assert_eq!(
        v["rows"],
        json!([{"timestamp": times[0], "value": 5.5}]),
        "{v}"
    );
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/QueryBooleanPropertyHistory",
        json!({"propertyName": "running"}),
    );
    assert_eq!(v["rows"][0]["value"], true);
    // Bad input: 400 naming it.
    for (path, body, says) in [
        (
            "QueryNumberPropertyHistory",
            json!({"propertyName": "running"}),
            "use QueryBooleanPropertyHistory",
        ),
        (
            "QueryPropertyHistory",
            json!({"maxItems": 1001}),
            "maxItems 1001 is above",
        ),
        (
            "QueryPropertyHistory",
            json!({"startDate": "2026-02-01", "endDate": "2026-01-01"}),
            "is after endDate",
        ),
        (
            "QueryPropertyHistory",
            json!({"query": {"filters": {"type": "EQ", "fieldName": "label", "value": "x"}}}),
            "no field \"label\"",
        ),
        (
            "QueryPropertyHistory",
            json!({"query": {"filters": {"type": "EQ", "fieldName": "pressure", "value": "x"}}}),
            "not a number",
        ),
    ] {
        let (st, v) = call(
            &s,
            &admin,
            &format!("/Thingworx/Things/B1/Services/{path}"),
            body.clone(),
        );
        assert_eq!(st, 400, "{path} {body}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(says),
            "{path} {body}: {v}"
        );
    }
    let (st, _) = call(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/QueryNumberPropertyHistory",
        json!({"propertyName": "nothing"}),
    );
    assert_eq!(st, 404);
    // Not a ValueStream: 400; one the caller cannot see: as a missing one.
    let (st, v) = call(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/SetValueStream",
        json!({"name": "B1"}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("not a ValueStream"), "{v}");
    // A ValueStream in use is not deleted.
    let (st, v) = call(
        &s,
        &admin,
        &format!("{ES}/DeleteThing"),
        json!({"name": "VS"}),
    );
    assert_eq!(st, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("still used by Things/B1"),
        "{v}"
    );
    drop(s);
    let s = Server::start(&data, &["--dev", "--max-items", "1000"]);
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/QueryPropertyHistory",
        json!({}),
    );
    assert_eq!(v["rows"].as_array().unwrap().len(), 6, "{v}");
    // Purge: everything up to the third value.
    let purged = ok(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/PurgePropertyHistory",
        json!({"endDate": times[2]}),
    );
    assert!(
        purged["rows"][0]["result"].as_i64().unwrap() >= 3,
        "{purged}"
    );
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/QueryNumberPropertyHistory",
        json!({"propertyName": "pressure"}),
    );
    let left: Vec<Json> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].clone())
        .collect();
    assert_eq!(left, [json!(5.5), json!(4.5)], "{v}");
    let audit = thinghost_tests::audited(&s, "historyPurged");
    assert!(
        audit
            .iter()
            .any(|e| e["source"] == "Things/B1" && e["args"]["valueStream"] == "VS"),
        "{audit:?}"
    );
}

/// H2: history answers only what the caller may read: a property without `PropertyRead` is
/// left out of `QueryPropertyHistory` and refused by the typed service (403, audited), as its
/// value is; a Thing the caller cannot see is a 404 as a missing one; purging needs
/// `ServiceInvoke` on `PurgePropertyHistory`.
#[test]
fn h2_history_of_a_property_the_caller_may_not_read_is_absent() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let admin = s.admin_key();
    boiler(&s, &admin);
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateUser"),
        json!({"name": "ann", "password": "a long password 1"}),
    );
    let ann = ok(
        &s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "ann-key", "user": "ann"}),
    )["rows"][0]["keyId"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateOrganization"),
        json!({"name": "annOrg"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Organizations/annOrg/Services/AddMember",
        json!({"name": "annOrg", "member": "ann", "type": "User"}),
    );
    for (path, body) in [
        (
            "/Thingworx/Things/B1/Services/AddVisibilityPermission",
            json!({"principal": "annOrg", "principalType": "Organization"}),
        ),
        (
            "/Thingworx/Things/B1/Services/AddRunTimePermission",
            json!({"principal": "ann", "principalType": "User", "type": "PropertyRead"}),
        ),
        (
            "/Thingworx/Things/B1/Services/AddRunTimePermission",
            json!({"principal": "ann", "principalType": "User", "type": "PropertyRead", "resource": "running", "allow": false}),
        ),
        (
            "/Thingworx/Things/B1/Services/AddRunTimePermission",
            json!({"principal": "ann", "principalType": "User", "type": "ServiceInvoke"}),
        ),
        (
            "/Thingworx/Things/B1/Services/AddRunTimePermission",
            json!({"principal": "ann", "principalType": "User", "type": "ServiceInvoke", "resource": "PurgePropertyHistory", "allow": false}),
        ),
    ] {
        ok(&s, &admin, path, body);
    }
    assert_eq!(put(&s, &admin, "B1", "pressure", json!(1.0)), 200);
    assert_eq!(put(&s, &admin, "B1", "running", json!(true)), 200);
    let v = ok(
        &s,
        &ann,
        "/Thingworx/Things/B1/Services/QueryPropertyHistory",
        json!({}),
    );
    let fields: Vec<&String> = v["dataShape"]["fieldDefinitions"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let mut fields = fields;
    fields.sort();
    assert_eq!(fields, ["pressure", "timestamp"], "{v}");
    assert!(!v.to_string().contains("running"), "{v}");
    // A query naming it is as one naming a field that is not there.
    let (st, v) = call(
        &s,
        &ann,
        "/Thingworx/Things/B1/Services/QueryPropertyHistory",
        json!({"query": {"filters": {"type": "EQ", "fieldName": "running", "value": true}}}),
    );
    assert_eq!(st, 400, "{v}");
    let (st, _) = call(
        &s,
        &ann,
        "/Thingworx/Things/B1/Services/QueryBooleanPropertyHistory",
        json!({"propertyName": "running"}),
    );
    assert_eq!(st, 403);
    let (st, _) = call(
        &s,
        &ann,
        "/Thingworx/Things/B1/Services/PurgePropertyHistory",
        json!({}),
    );
    assert_eq!(st, 403);
    // Denials are queued: on disk within milliseconds.
    thinghost_tests::within_20s("ann's denial audited", || {
        thinghost_tests::audited(&s, "permissionDenied")
            .iter()
            .any(|e| e["user"] == "ann" && e["args"].to_string().contains("Properties/running"))
            .then_some(())
    });
    // Nothing was purged.
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/QueryPropertyHistory",
        json!({}),
    );
    assert_eq!(v["rows"].as_array().unwrap().len(), 2);
    // A Thing ann cannot see: as one that does not exist.
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Hidden", "thingTemplateName": "GenericThing"}),
    );
    let (hidden, a) = call(
        &s,
        &ann,
        "/Thingworx/Things/Hidden/Services/QueryPropertyHistory",
        json!({}),
    );
    let (missing, b) = call(
        &s,
        &ann,
        "/Thingworx/Things/Nothing/Services/QueryPropertyHistory",
        json!({}),
    );
    assert_eq!((hidden, missing), (404, 404));
    assert_eq!(
        a.to_string().replace("Hidden", "X"),
        b.to_string().replace("Nothing", "X")
    );
}

/// H1: a crash mid-append loses no acknowledged value: four writers write logged values to
/// their own Things until the server is killed (`kill -9`); after a restart, every value a
/// writer had an answer for is in its value stream.
#[test]
fn h1_acknowledged_logged_values_survive_kill_9() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("d");
    let mut s = Server::start(&data, &["--dev"]);
    let admin = s.admin_key();
    boiler(&s, &admin);
    for n in 2..=4 {
        ok(
            &s,
            &admin,
            &format!("{ES}/CreateThing"),
            json!({"name": format!("B{n}"), "thingTemplateName": "GenericThing"}),
        );
        ok(
            &s,
            &admin,
            &format!("/Thingworx/Things/B{n}/Services/AddPropertyDefinition"),
            json!({"name": "pressure", "type": "NUMBER", "logged": true}),
        );
        ok(
            &s,
            &admin,
            &format!("/Thingworx/Things/B{n}/Services/SetValueStream"),
            json!({"name": "VS"}),
        );
    }
    // And a stream, written by a fifth writer.
    data_shape(&s, &admin, "Count", &[("n", "INTEGER", false)]);
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Log", "thingTemplateName": "Stream"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Log/Services/SetDataShape",
        json!({"name": "Count"}),
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut entries_acked: Vec<i64> = Vec::new();
    let acked: Vec<Vec<i64>> = std::thread::scope(|scope| {
        let entries = {
            let client = s.client.clone();
            let url = s.at("/Thingworx/Things/Log/Services/AddStreamEntry");
            let (admin, stop) = (admin.clone(), &stop);
            scope.spawn(move || {
                let mut acked = Vec::new();
                for i in 0i64.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let r = client
                        .post(&url)
                        .header("appKey", &admin)
                        .json(&json!({"values": {"n": i}}))
                        .send();
                    match r {
                        Ok(r) if r.status() == 200 => acked.push(i),
                        _ => break,
                    }
                }
                acked
            })
        };
        let writers: Vec<_> = (1..=4)
            .map(|n| {
                let client = s.client.clone();
                let url = s.at(&format!("/Thingworx/Things/B{n}/Properties/pressure"));
                let (admin, stop) = (admin.clone(), &stop);
                scope.spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0i64.. {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let r = client
                            .put(&url)
                            .header("appKey", &admin)
                            .json(&json!({"pressure": i}))
                            .send();
                        match r {
                            Ok(r) if r.status() == 200 => acked.push(i),
                            _ => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        s.child.kill().unwrap(); // SIGKILL, mid-stream
        s.child.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        entries_acked = entries.join().unwrap();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    drop(s);
    let s = Server::start(&data, &["--dev"]);
    let mut total = 0;
    for (k, acked) in acked.iter().enumerate() {
        let v = ok(
            &s,
            &admin,
            &format!(
                "/Thingworx/Things/B{}/Services/QueryNumberPropertyHistory",
                k + 1
            ),
            json!({"propertyName": "pressure", "oldestFirst": true, "maxItems": 100000}),
        );
        let stored: Vec<i64> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"].as_i64().unwrap())
            .collect();
        // In order, each once; one more than was answered may have landed unanswered.
        let expected: Vec<i64> = (0..stored.len() as i64).collect();
        assert_eq!(stored, expected, "B{}", k + 1);
        assert!(
            stored.len() == acked.len() || stored.len() == acked.len() + 1,
            "B{}: {} acknowledged, {} stored",
            k + 1,
            acked.len(),
            stored.len()
        );
        total += acked.len();
    }
    assert!(
        total >= 20,
        "only {total} writes acknowledged before the kill"
    );
    let v = ok(
        &s,
        &admin,
        "/Thingworx/Things/Log/Services/QueryStreamEntriesWithData",
        json!({"oldestFirst": true, "maxItems": 100000}),
    );
    let stored: Vec<i64> = rows(&v).iter().map(|r| r["n"].as_i64().unwrap()).collect();
    assert_eq!(stored, (0..stored.len() as i64).collect::<Vec<_>>());
    assert!(
        stored.len() == entries_acked.len() || stored.len() == entries_acked.len() + 1,
        "{} entries acknowledged, {} stored",
        entries_acked.len(),
        stored.len()
    );
    assert!(!entries_acked.is_empty());
}

/// A DataShape of `fields` (name, base type, is a key).
fn data_shape(s: &Server, admin: &str, name: &str, fields: &[(&str, &str, bool)]) {
    let fields: Vec<Json> = fields
        .iter()
        .map(|(n, t, k)| json!({"name": n, "baseType": t, "isPrimaryKey": k}))
        .collect();
    ok(
        s,
        admin,
        &format!("{ES}/CreateDataShape"),
        json!({"name": name, "fields": fields}),
    );
}

fn rows(v: &Json) -> Vec<Json> {
    v["rows"].as_array().cloned().unwrap_or_default()
}

/// H3: a Stream with a DataShape takes entries with a timestamp, source, tags, location and
/// values of its shape (an InfoTable or a plain object; a wrong type or an unknown field is a
/// 400 and nothing is written); `QueryStreamEntriesWithData` filters by dates, source, tags and
/// the shared QUERY, sorts, and pages; `DeleteStreamEntry`, `PurgeStreamEntries` (audited) and
/// `GetStreamEntryCount` do what they say; the shape cannot change a field's type while entries
/// exist; a Stream deleted and made again starts empty.
#[test]
fn h3_stream_entries_with_the_vendors_parameters() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let admin = s.admin_key();
    data_shape(
        &s,
        &admin,
        "Reading",
        &[
            ("value", "NUMBER", false),
            ("label", "STRING", false),
            ("ok", "BOOLEAN", false),
        ],
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Log", "thingTemplateName": "Stream"}),
    );
    let svc = |name: &str| format!("/Thingworx/Things/Log/Services/{name}");
    // A LOCATION field keeps its value exactly, in a stream of its own.
    data_shape(&s, &admin, "Fix", &[("where", "LOCATION", false)]);
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Fixes", "thingTemplateName": "Stream"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Fixes/Services/SetDataShape",
        json!({"name": "Fix"}),
    );
    let here = json!({"latitude": 48.137, "longitude": 11.575, "elevation": 519.5});
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Fixes/Services/AddStreamEntry",
        json!({"values": {"where": here}}),
    );
    let (st, _) = call(
        &s,
        &admin,
        "/Thingworx/Things/Fixes/Services/AddStreamEntry",
        json!({"values": {"where": {"latitude": "north"}}}),
    );
    assert_eq!(st, 400);
    let fixes = ok(
        &s,
        &admin,
        "/Thingworx/Things/Fixes/Services/GetStreamEntriesWithData",
        json!({}),
    );
    assert_eq!(rows(&fixes)[0]["where"], here);
    assert_eq!(
        fixes["dataShape"]["fieldDefinitions"]["where"]["baseType"],
        "LOCATION"
    );
    // No DataShape yet: 400 saying what to do.
    let (st, v) = call(
        &s,
        &admin,
        &svc("AddStreamEntry"),
        json!({"values": {"value": 1}}),
    );
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("SetDataShape"), "{v}");
    ok(&s, &admin, &svc("SetDataShape"), json!({"name": "Reading"}));
    ok(
        &s,
        &admin,
        &svc("AddStreamEntry"),
        json!({"timestamp": 1000, "source": "Pump1", "tags": ["Plant:North"],
        "location": {"latitude": 48.1, "longitude": 11.5}, "values": {"value": 1.5, "label": "a", "ok": true}}),
    );
    ok(
        &s,
        &admin,
        &svc("AddStreamEntry"),
        json!({"timestamp": 2000, "source": "Pump2", "tags": "Plant:South,Line:2",
        "values": {"dataShape": {"fieldDefinitions": {"value": {"name": "value", "baseType": "NUMBER"}}}, "rows": [{"value": 2.5}]}}),
    );
    let n = ok(
        &s,
        &admin,
        &svc("AddStreamEntries"),
        json!({"values": {"rows": [
            {"timestamp": 3000, "source": "Pump1", "value": 3.5, "label": "c"},
            {"timestamp": 4000, "source": "Pump1", "value": 4.5, "ok": false, "tags": ["Plant:North"]}
        ]}}),
    );
    assert_eq!(n["rows"][0]["result"], 2);
    for (body, says) in [
        (json!({"values": {"value": "high"}}), "field value"),
        (
            json!({"values": {"pressure": 1}}),
            "\"pressure\" is not a field of DataShape Reading",
        ),
        (
            json!({"values": {"value": 1}, "location": {"latitude": "north"}}),
            "location",
        ),
        (json!({"values": {"value": 1}, "tags": 5}), "tags"),
    ] {
        let (st, v) = call(&s, &admin, &svc("AddStreamEntry"), body.clone());
        assert_eq!(st, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    // All or nothing: one bad row, none written.
    let (st, _) = call(
        &s,
        &admin,
        &svc("AddStreamEntries"),
        json!({"values": {"rows": [{"value": 9}, {"value": "x"}]}}),
    );
    assert_eq!(st, 400);
    assert_eq!(
        ok(&s, &admin, &svc("GetStreamEntryCount"), json!({}))["rows"][0]["result"],
        4
    );
    // Newest first, fields of the entry and of the shape.
    let v = ok(&s, &admin, &svc("QueryStreamEntriesWithData"), json!({}));
    let all = rows(&v);
    assert_eq!(
        all.iter()
            .map(|r| r["timestamp"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [4000, 3000, 2000, 1000]
    );
    assert_eq!(all[3]["location"]["latitude"], 48.1);
    assert_eq!(all[3]["tags"], json!(["Plant:North"]));
    assert_eq!(all[2]["tags"], json!(["Plant:South", "Line:2"]));
    assert_eq!(all[3]["source"], "Pump1");
    assert_eq!(
        v["dataShape"]["fieldDefinitions"]["value"]["baseType"],
        "NUMBER"
    );
    let times = |body: Json| -> Vec<i64> {
        rows(&ok(&s, &admin, &svc("QueryStreamEntriesWithData"), body))
            .iter()
            .map(|r| r["timestamp"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        times(json!({"oldestFirst": true, "maxItems": 2})),
        [1000, 2000]
    );
    assert_eq!(
        times(json!({"startDate": 2000, "endDate": 3000})),
        [3000, 2000]
    );
    assert_eq!(times(json!({"source": "Pump1"})), [4000, 3000, 1000]);
    assert_eq!(times(json!({"tags": ["Plant:North"]})), [4000, 1000]);
    assert_eq!(
        times(json!({"query": {"filters": {"type": "GT", "fieldName": "value", "value": 2}}})),
        [4000, 3000, 2000]
    );
    assert_eq!(
        times(json!({"query": {"filters": {"type": "MISSINGVALUE", "fieldName": "label"}}})),
        [4000, 2000]
    );
    assert_eq!(
        times(json!({"query": {"filters": {"type": "EQ", "fieldName": "ok", "value": false}}})),
        [4000]
    );
    assert_eq!(
        times(json!({"query": {"sorts": [{"fieldName": "value", "isAscending": true}]}})),
        [1000, 2000, 3000, 4000]
    );
    for (body, says) in [
        (
            json!({"query": {"filters": {"type": "EQ", "fieldName": "pressure", "value": 1}}}),
            "no field \"pressure\"",
        ),
        (json!({"maxItems": 100001}), "maxItems"),
        (json!({"startDate": 5, "endDate": 4}), "after endDate"),
    ] {
        let (st, v) = call(&s, &admin, &svc("QueryStreamEntriesWithData"), body.clone());
        assert_eq!(st, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    // Delete one entry by its id; a second time it is not there.
    let id = all[0]["streamEntryId"].as_str().unwrap().to_string();
    ok(
        &s,
        &admin,
        &svc("DeleteStreamEntry"),
        json!({"streamEntryId": id}),
    );
    let (st, _) = call(
        &s,
        &admin,
        &svc("DeleteStreamEntry"),
        json!({"streamEntryId": id}),
    );
    assert_eq!(st, 404);
    // The shape may grow, but not change a field's type while entries exist.
    data_shape(
        &s,
        &admin,
        "Reading2",
        &[
            ("value", "NUMBER", false),
            ("label", "STRING", false),
            ("ok", "BOOLEAN", false),
            ("extra", "STRING", false),
        ],
    );
    data_shape(&s, &admin, "Changed", &[("value", "STRING", false)]);
    let (st, v) = call(&s, &admin, &svc("SetDataShape"), json!({"name": "Changed"}));
    assert_eq!(st, 409, "{v}");
    ok(
        &s,
        &admin,
        &svc("SetDataShape"),
        json!({"name": "Reading2"}),
    );
    // A shape with a field every entry has is refused.
    data_shape(&s, &admin, "Clash", &[("source", "STRING", false)]);
    let (st, _) = call(&s, &admin, &svc("SetDataShape"), json!({"name": "Clash"}));
    assert_eq!(st, 400);
    let purged = ok(
        &s,
        &admin,
        &svc("PurgeStreamEntries"),
        json!({"endDate": 2000}),
    );
    assert_eq!(purged["rows"][0]["result"], 2);
    assert_eq!(times(json!({})), [3000]);
    assert!(!thinghost_tests::audited(&s, "streamPurged").is_empty());
    // Deleted and made again: empty.
    ok(
        &s,
        &admin,
        &format!("{ES}/DeleteThing"),
        json!({"name": "Log"}),
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Log", "thingTemplateName": "Stream"}),
    );
    ok(&s, &admin, &svc("SetDataShape"), json!({"name": "Reading"}));
    assert_eq!(
        ok(&s, &admin, &svc("GetStreamEntryCount"), json!({}))["rows"][0]["result"],
        0
    );
}

/// H4: a DataTable's DataShape has a primary key; a duplicate key is 409; add-or-update,
/// update (404 when missing), by key, find by values, the shared QUERY with sorts, delete by key
/// and by query, count, purge (audited).
#[test]
fn h4_data_table_rows_by_their_key() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let admin = s.admin_key();
    data_shape(
        &s,
        &admin,
        "Part",
        &[
            ("sku", "STRING", true),
            ("qty", "INTEGER", false),
            ("price", "NUMBER", false),
        ],
    );
    data_shape(&s, &admin, "Keyless", &[("sku", "STRING", false)]);
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Parts", "thingTemplateName": "DataTable"}),
    );
    let svc = |name: &str| format!("/Thingworx/Things/Parts/Services/{name}");
    let (st, v) = call(&s, &admin, &svc("SetDataShape"), json!({"name": "Keyless"}));
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("primary key"), "{v}");
    ok(&s, &admin, &svc("SetDataShape"), json!({"name": "Part"}));
    for (sku, qty, price) in [("A1", 5, 1.5), ("B2", 0, 20.0), ("C3", 12, 3.25)] {
        ok(
            &s,
            &admin,
            &svc("AddDataTableEntry"),
            json!({"values": {"sku": sku, "qty": qty, "price": price}}),
        );
    }
    let (st, v) = call(
        &s,
        &admin,
        &svc("AddDataTableEntry"),
        json!({"values": {"sku": "A1", "qty": 1}}),
    );
    assert_eq!(st, 409, "{v}");
    let (st, v) = call(
        &s,
        &admin,
        &svc("AddDataTableEntry"),
        json!({"values": {"qty": 1}}),
    );
    assert_eq!(st, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("primary key field sku"),
        "{v}"
    );
    let (st, _) = call(
        &s,
        &admin,
        &svc("AddDataTableEntry"),
        json!({"values": {"sku": "D4", "qty": 1.5}}),
    );
    assert_eq!(st, 400, "an INTEGER is whole");
    ok(
        &s,
        &admin,
        &svc("AddOrUpdateDataTableEntry"),
        json!({"values": {"sku": "A1", "qty": 6, "price": 1.5}}),
    );
    let (st, _) = call(
        &s,
        &admin,
        &svc("UpdateDataTableEntry"),
        json!({"values": {"sku": "Z9", "qty": 1}}),
    );
    assert_eq!(st, 404);
    ok(
        &s,
        &admin,
        &svc("UpdateDataTableEntry"),
        json!({"values": {"sku": "B2", "qty": 1, "price": 19.5}}),
    );
    let one = ok(
        &s,
        &admin,
        &svc("GetDataTableEntryByKey"),
        json!({"key": "A1"}),
    );
    assert_eq!(rows(&one).len(), 1);
    assert_eq!(rows(&one)[0]["qty"], 6);
    assert!(
        rows(&ok(
            &s,
            &admin,
            &svc("GetDataTableEntryByKey"),
            json!({"key": "nope"})
        ))
        .is_empty()
    );
    let skus = |service: &str, body: Json| -> Vec<String> {
        rows(&ok(&s, &admin, &svc(service), body))
            .iter()
            .map(|r| r["sku"].as_str().unwrap().to_string())
            .collect()
    };
    // An index on qty: declared, stored in the model; a field the shape lacks is a 400.
    ok(
        &s,
        &admin,
        &svc("SetDataTableIndexes"),
        json!({"fieldNames": ["qty"]}),
    );
    let (st, v) = call(
        &s,
        &admin,
        &svc("SetDataTableIndexes"),
        json!({"fieldNames": ["colour"]}),
    );
    assert_eq!(st, 400, "{v}");
    let desc: Json = s
        .client
        .get(s.at("/Thingworx/Things/Parts"))
        .header("appKey", &admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(desc["indexes"], json!(["qty"]), "{desc}");
    assert_eq!(skus("GetDataTableEntries", json!({})), ["A1", "B2", "C3"]);
    assert_eq!(skus("GetDataTableEntries", json!({"maxItems": 1})), ["A1"]);
    assert_eq!(
        skus("FindDataTableEntries", json!({"values": {"qty": 12}})),
        ["C3"]
    );
    assert_eq!(
        skus(
            "QueryDataTableEntries",
            json!({"query": {
        "filters": {"type": "LT", "fieldName": "price", "value": 10},
        "sorts": [{"fieldName": "qty", "isAscending": false}]}})
        ),
        ["C3", "A1"]
    );
    let (st, v) = call(
        &s,
        &admin,
        &svc("QueryDataTableEntries"),
        json!({"query": {"filters": {"type": "EQ", "fieldName": "colour", "value": "red"}}}),
    );
    assert_eq!(st, 400, "{v}");
    ok(
        &s,
        &admin,
        &svc("DeleteDataTableEntry"),
        json!({"values": {"sku": "A1"}}),
    );
    let (st, _) = call(
        &s,
        &admin,
        &svc("DeleteDataTableEntry"),
        json!({"values": {"sku": "A1"}}),
    );
    assert_eq!(st, 404);
    let gone = ok(
        &s,
        &admin,
        &svc("DeleteDataTableEntries"),
        json!({"query": {"filters": {"type": "GT", "fieldName": "price", "value": 10}}}),
    );
    assert_eq!(gone["rows"][0]["result"], 1);
    let (st, _) = call(
        &s,
        &admin,
        &svc("DeleteDataTableEntries"),
        json!({"query": {}}),
    );
    assert_eq!(st, 400, "no filters: PurgeDataTableEntries");
    assert_eq!(
        ok(&s, &admin, &svc("GetDataTableEntryCount"), json!({}))["rows"][0]["result"],
        1
    );
    assert_eq!(
        ok(&s, &admin, &svc("PurgeDataTableEntries"), json!({}))["rows"][0]["result"],
        1
    );
    assert!(!thinghost_tests::audited(&s, "dataTablePurged").is_empty());
}

/// H5: a stream's and a value stream's retention: entries older than the days and beyond the
/// maximum count go at the next pass of the retention job (here every second), while writes go
/// on; each removal is audited as System's.
#[test]
fn h5_retention_trims_while_writes_continue() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(
        &t.path().join("d"),
        &["--dev", "--retention-interval-seconds", "1"],
    );
    let admin = s.admin_key();
    boiler(&s, &admin);
    data_shape(&s, &admin, "Reading", &[("value", "NUMBER", false)]);
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Log", "thingTemplateName": "Stream"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Log/Services/SetDataShape",
        json!({"name": "Reading"}),
    );
    // Old entries (two days ago) and new ones.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in 0..10 {
        let ts = if i < 4 {
            now - 2 * 86_400_000 + i
        } else {
            now + i
        };
        ok(
            &s,
            &admin,
            "/Thingworx/Things/Log/Services/AddStreamEntry",
            json!({"timestamp": ts, "values": {"value": i}}),
        );
    }
    // Not on a GenericThing.
    let (st, _) = call(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/SetRetention",
        json!({"retentionDays": 1}),
    );
    assert_eq!(st, 404);
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Log/Services/SetRetention",
        json!({"retentionDays": 1, "maxEntries": 5}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/VS/Services/SetRetention",
        json!({"maxEntries": 3}),
    );
    // Writes go on while the job trims.
    let mut written = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        assert_eq!(put(&s, &admin, "B1", "pressure", json!(written)), 200);
        written += 1;
    }
    assert!(written > 3);
    thinghost_tests::within_20s("the retention applied", || {
        let count = ok(
            &s,
            &admin,
            "/Thingworx/Things/Log/Services/GetStreamEntryCount",
            json!({}),
        )["rows"][0]["result"]
            .as_i64()
            .unwrap();
        let history = rows(&ok(
            &s,
            &admin,
            "/Thingworx/Things/B1/Services/QueryNumberPropertyHistory",
            json!({"propertyName": "pressure"}),
        ));
        (count == 5 && history.len() == 3).then_some(history)
    });
    // The newest stay.
    let left: Vec<i64> = rows(&ok(
        &s,
        &admin,
        "/Thingworx/Things/Log/Services/QueryStreamEntriesWithData",
        json!({"oldestFirst": true}),
    ))
    .iter()
    .map(|r| r["value"].as_i64().unwrap())
    .collect();
    assert_eq!(left, [5, 6, 7, 8, 9]);
    let trimmed = thinghost_tests::audited(&s, "historyTrimmed");
    assert!(
        trimmed
            .iter()
            .any(|e| e["source"] == "Things/Log" && e["user"] == "System"),
        "{trimmed:?}"
    );
    assert!(
        trimmed.iter().any(|e| e["source"] == "Things/VS"),
        "{trimmed:?}"
    );
}
