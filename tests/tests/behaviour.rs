//! Behaviour in the model (DOMAIN section 9) against the real server: services written in Rhai
//! (B1, B3, B4) and implementation overrides along shapes, templates and Things (B2).

use serde_json::{Value as Json, json};
use std::path::Path;
use thinghost_tests::{Server, import, ok, post, text, thinghost};

const ES: &str = "/Thingworx/Resources/EntityServices/Services";
const AUDIT: &str = "/Thingworx/Subsystems/AuditSubsystem/Services";

/// A data directory holding `model` (imported before the server starts: templates implement
/// shapes only in a model file or an extension).
fn serve_with(t: &Path, model: Json) -> Server {
    let dir = t.join("d");
    let o = thinghost(&["init", "--data", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let file = t.join("model.json");
    std::fs::write(&file, model.to_string()).unwrap();
    import(&dir, &file);
    Server::start(&dir, &["--dev"])
}

/// The one value a service answers.
fn call(s: &Server, key: &str, path: &str, body: Json) -> Json {
    ok(s, key, path, body)["rows"][0]["result"].clone()
}

/// A shape with an overridable `Reset`, a template chain Base <- Derived implementing it, and
/// Things of both.
fn chain() -> Json {
    json!({
        "format": "thinghost-model",
        "version": 1,
        "entities": [
            {"kind": "ThingShape", "name": "Resettable", "definitions": {"services": [
                {"name": "Reset", "result": "STRING", "allowOverride": true, "code": "\"shape\""}
            ]}},
            {"kind": "ThingTemplate", "name": "Base", "baseThingTemplate": "GenericThing",
             "thingShapes": ["Resettable"],
             "definitions": {"services": [
                {"name": "Describe", "result": "STRING", "allowOverride": true, "code": "`base ${me}`"},
                {"name": "Fixed", "result": "STRING", "code": "\"fixed\""}
             ]}},
            {"kind": "ThingTemplate", "name": "Derived", "baseThingTemplate": "Base"},
            {"kind": "Thing", "name": "T1", "thingTemplate": "Derived"},
            {"kind": "Thing", "name": "T2", "thingTemplate": "Derived"},
            {"kind": "Thing", "name": "T3", "thingTemplate": "Base"}
        ]
    })
}

#[test]
fn b2_each_thing_runs_its_nearest_implementation_and_removal_falls_back() {
    let t = tempfile::tempdir().unwrap();
    let s = serve_with(t.path(), chain());
    let admin = s.admin_key();
    let reset = |thing: &str| {
        call(
            &s,
            &admin,
            &format!("/Thingworx/Things/{thing}/Services/Reset"),
            json!({}),
        )
    };
    assert_eq!(reset("T1"), "shape");
    // The template overrides the shape's service; a Thing of it overrides again.
    ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Derived/Services/OverrideService",
        json!({"name": "Reset", "code": "\"template\""}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/T2/Services/OverrideService",
        json!({"name": "Reset", "code": "`thing ${me}`"}),
    );
    assert_eq!(reset("T1"), "template");
    assert_eq!(reset("T2"), "thing T2");
    assert_eq!(reset("T3"), "shape");
    assert_eq!(
        call(
            &s,
            &admin,
            "/Thingworx/Things/T3/Services/Describe",
            json!({})
        ),
        "base T3"
    );
    // Metadata: the definition's source and the override that runs.
    let meta: Json = s
        .client
        .get(s.at("/Thingworx/Things/T2"))
        .header("appKey", &admin)
        .header("Accept", "application/json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let reset_meta = meta["serviceDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["definition"]["name"] == "Reset")
        .unwrap()
        .clone();
    assert_eq!(
        reset_meta["source"], "ThingShapes/Resettable",
        "{reset_meta}"
    );
    assert_eq!(
        reset_meta["override"]["source"], "Things/T2",
        "{reset_meta}"
    );
    assert_eq!(reset_meta["definition"]["allowOverride"], true);
    // Refused: a definition that does not allow overrides (named with its source), another
    // signature, an inherited name defined anew, an override of nothing inherited.
    for (path, body, says) in [
        (
            "/Thingworx/ThingTemplates/Derived/Services/OverrideService",
            json!({"name": "Fixed", "code": "\"no\""}),
            "does not allow overrides",
        ),
        (
            "/Thingworx/ThingTemplates/Derived/Services/OverrideService",
            json!({"name": "Reset", "code": "\"no\"", "parameters": [{"name": "x", "baseType": "STRING"}]}),
            "keeps its definition's parameters",
        ),
        (
            "/Thingworx/Things/T1/Services/AddServiceDefinition",
            json!({"name": "Describe", "resultType": "STRING", "code": "\"no\""}),
            "ThingTemplates/Base",
        ),
        (
            "/Thingworx/Things/T1/Services/OverrideService",
            json!({"name": "Nothing", "code": "\"no\""}),
            "does not inherit",
        ),
    ] {
        let (st, v) = post(&s, &admin, path, body.clone());
        assert_eq!(st, 400, "{body}: {v}");
        assert!(v.to_string().contains(says), "{body}: {v}");
    }
    assert!(
        post(
            &s,
            &admin,
            "/Thingworx/Things/T2/Services/OverrideService",
            json!({"name": "Fixed", "code": "\"no\""})
        )
        .1
        .to_string()
        .contains("Base")
    );
    // Removal falls back along the chain.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/T2/Services/RemoveServiceOverride",
        json!({"name": "Reset"}),
    );
    assert_eq!(reset("T2"), "template");
    ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Derived/Services/RemoveServiceOverride",
        json!({"name": "Reset"}),
    );
    assert_eq!(reset("T1"), "shape");
    let (st, v) = post(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Derived/Services/RemoveServiceOverride",
        json!({"name": "Reset"}),
    );
    assert_eq!(st, 400, "{v}");
    // An override survives a restart.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/T1/Services/OverrideService",
        json!({"name": "Describe", "code": "`own ${me}`"}),
    );
    let dir = s.dir.clone();
    drop(s);
    let s = Server::start(&dir, &["--dev"]);
    assert_eq!(
        call(
            &s,
            &admin,
            "/Thingworx/Things/T1/Services/Describe",
            json!({})
        ),
        "own T1"
    );
}

#[test]
fn b4_code_in_the_model_runs_as_its_caller_within_rhai_limits_compiles_on_save_and_is_audited_by_digest()
 {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let admin = s.admin_key();
    let steps: Vec<(String, Json)> = vec![
        (format!("{ES}/CreateThingTemplate"), json!({"name": "Pump"})),
        (
            "/Thingworx/ThingTemplates/Pump/Services/AddPropertyDefinition".into(),
            json!({"name": "pressure", "type": "NUMBER", "defaultValue": 10}),
        ),
        (
            format!("{ES}/CreateThing"),
            json!({"name": "P1", "thingTemplateName": "Pump"}),
        ),
        (format!("{ES}/CreateUser"), json!({"name": "alice"})),
        (format!("{ES}/CreateOrganization"), json!({"name": "Acme"})),
        (
            "/Thingworx/Organizations/Acme/Services/AddMember".into(),
            json!({"name": "Acme", "member": "alice", "type": "User"}),
        ),
    ];
    for (path, body) in steps {
        ok(&s, &admin, &path, body);
    }
    let vent = "let p = get_property(me, \"pressure\");\nset_property(me, \"pressure\", p - amount);\nget_property(me, \"pressure\")";
    // Code that does not compile is refused with its line and column, and nothing is saved.
    let (st, v) = post(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/AddServiceDefinition",
        json!({"name": "Vent", "resultType": "NUMBER", "code": "let p = 1;\nlet = ;"}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("line 2, column"), "{v}");
    let (st, _) = post(&s, &admin, "/Thingworx/Things/P1/Services/Vent", json!({}));
    assert_eq!(st, 404);
    ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/AddServiceDefinition",
        json!({
            "name": "Vent",
            "parameters": [{"name": "amount", "baseType": "NUMBER", "required": true}],
            "resultType": "NUMBER",
            "code": vent,
            "description": "lets off pressure"
        }),
    );
    assert_eq!(
        call(
            &s,
            &admin,
            "/Thingworx/Things/P1/Services/Vent",
            json!({"amount": 3})
        ),
        7.0
    );
    // A missing required parameter is the definition's 400, before the code runs.
    let (st, v) = post(&s, &admin, "/Thingworx/Things/P1/Services/Vent", json!({}));
    assert_eq!(st, 400, "{v}");
    // The code runs as its caller (B4): alice may invoke Vent and read, not write.
    let alice = ok(
        &s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "alice-key", "user": "alice"}),
    )["rows"][0]["keyId"]
        .as_str()
        .unwrap()
        .to_string();
    for (service, body) in [
        (
            "AddVisibilityPermission",
            json!({"principal": "Acme", "principalType": "Organization"}),
        ),
        (
            "AddRunTimePermission",
            json!({"principal": "alice", "principalType": "User", "type": "ServiceInvoke", "resource": "Vent"}),
        ),
        (
            "AddRunTimePermission",
            json!({"principal": "alice", "principalType": "User", "type": "PropertyRead"}),
        ),
    ] {
        ok(
            &s,
            &admin,
            &format!("/Thingworx/Things/P1/Services/{service}"),
            body,
        );
    }
    let (st, v) = post(
        &s,
        &alice,
        "/Thingworx/Things/P1/Services/Vent",
        json!({"amount": 1}),
    );
    assert_eq!(st, 403, "{v}");
    // The denial met inside the code is audited, naming the code.
    let denials = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"auditCategory": "AUTHORIZATION", "maxItems": 50}),
    )
    .to_string();
    assert!(
        denials.contains("ThingTemplates/Pump/Services/Vent"),
        "{denials}"
    );
    assert_eq!(
        call(
            &s,
            &admin,
            "/Thingworx/Things/P1/Services/Vent",
            json!({"amount": 0})
        ),
        7.0
    );
    // Limits of Rhai extensions: a loop is stopped, answered, and the server goes on.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/AddServiceDefinition",
        json!({"name": "Spin", "code": "loop { }"}),
    );
    let (st, v) = post(&s, &admin, "/Thingworx/Things/P1/Services/Spin", json!({}));
    assert_eq!(st, 500, "{v}");
    assert!(v.to_string().contains("Things/P1/Services/Spin"), "{v}");
    // B1: a definition with neither code nor a handler answers 501 naming it.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/AddServiceDefinition",
        json!({"name": "Nothing"}),
    );
    let (st, v) = post(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/Nothing",
        json!({}),
    );
    assert_eq!(st, 501, "{v}");
    assert!(v.to_string().contains("Nothing"), "{v}");
    // Updating and deleting a definition of its own; not an inherited one.
    ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/Pump/Services/UpdateServiceDefinition",
        json!({
            "name": "Vent",
            "parameters": [{"name": "amount", "baseType": "NUMBER", "required": true}],
            "resultType": "NUMBER",
            "code": "amount * 2"
        }),
    );
    assert_eq!(
        call(
            &s,
            &admin,
            "/Thingworx/Things/P1/Services/Vent",
            json!({"amount": 4})
        ),
        8.0
    );
    let (st, v) = post(
        &s,
        &admin,
        "/Thingworx/Things/P1/Services/DeleteServiceDefinition",
        json!({"name": "Vent"}),
    );
    assert_eq!(st, 400, "{v}");
    // B3: the audit records the code's SHA-256, never its text.
    let v = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"auditCategory": "MODEL", "maxItems": 500}),
    );
    let entries = v.to_string();
    assert!(entries.contains("sha256"), "{entries}");
    assert!(
        !entries.contains("set_property"),
        "the code's text is in the audit"
    );
    // Code is part of the model: exported with it.
    let dir = s.dir.clone();
    drop(s);
    let file = t.path().join("export.json");
    let o = thinghost(&[
        "model",
        "--data",
        dir.to_str().unwrap(),
        "export",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let exported = std::fs::read_to_string(&file).unwrap();
    assert!(exported.contains("amount * 2"), "{exported}");
}

#[test]
fn b1_a_model_file_with_code_that_does_not_compile_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    let o = thinghost(&["init", "--data", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let file = t.path().join("model.json");
    let model = json!({
        "format": "thinghost-model",
        "version": 1,
        "entities": [
            {"kind": "ThingTemplate", "name": "Broken", "baseThingTemplate": "GenericThing",
             "definitions": {"services": [{"name": "Go", "code": "let x = ;"}]}}
        ]
    });
    std::fs::write(&file, model.to_string()).unwrap();
    let o = thinghost(&[
        "model",
        "--data",
        dir.to_str().unwrap(),
        "import",
        file.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let (_, err) = text(&o);
    assert!(
        err.contains("ThingTemplates/Broken") && err.contains("Go") && err.contains("line 1"),
        "{err}"
    );
}

/// A property of a Thing, as the administrator reads it.
fn value(s: &Server, key: &str, thing: &str, prop: &str) -> Json {
    let v: Json = s
        .client
        .get(s.at(&format!("/Thingworx/Things/{thing}/Properties/{prop}")))
        .header("appKey", key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["rows"][0][prop].clone()
}

fn put(s: &Server, key: &str, thing: &str, prop: &str, v: Json) -> u16 {
    let r = s
        .client
        .put(s.at(&format!("/Thingworx/Things/{thing}/Properties/{prop}")))
        .header("appKey", key)
        .json(&json!({ prop: v }))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    if status >= 500 {
        panic!("{thing}.{prop}: {status} {}", r.text().unwrap_or_default());
    }
    status
}

/// The event queue's figures.
fn metrics(s: &Server, admin: &str) -> Json {
    call(
        s,
        admin,
        "/Thingworx/Subsystems/EventProcessingSubsystem/Services/GetPerformanceMetrics",
        json!({}),
    )
}

/// Waits until every firing so far is delivered (the queue is empty), at most 20 s.
fn drained(s: &Server, admin: &str) -> Json {
    for _ in 0..400 {
        let m = metrics(s, admin);
        if m["queueDepth"] == 0 {
            return m;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the event queue did not drain: {}", metrics(s, admin));
}

#[test]
fn b5_b6_b8_events_reach_subscriptions_as_their_firer_in_order_and_chains_are_cut() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let admin = s.admin_key();
    let tpl = "/Thingworx/ThingTemplates/Pump/Services";
    let steps: Vec<(String, Json)> = vec![
        (
            format!("{ES}/CreateDataShape"),
            json!({"name": "Alarm", "fields": [{"name": "level", "baseType": "NUMBER"}]}),
        ),
        (format!("{ES}/CreateThingTemplate"), json!({"name": "Pump"})),
        (
            format!("{tpl}/AddPropertyDefinition"),
            json!({"name": "pressure", "type": "NUMBER", "defaultValue": 0}),
        ),
        (
            format!("{tpl}/AddPropertyDefinition"),
            json!({"name": "alarm", "type": "BOOLEAN", "defaultValue": false}),
        ),
        (
            format!("{tpl}/AddPropertyDefinition"),
            json!({"name": "counter", "type": "NUMBER", "defaultValue": 0}),
        ),
        (
            format!("{tpl}/AddPropertyDefinition"),
            json!({"name": "seen", "type": "NUMBER", "defaultValue": 0}),
        ),
        (
            format!("{tpl}/AddEventDefinition"),
            json!({"name": "Overheated", "dataShape": "Alarm"}),
        ),
        // Every Pump watches its own pressure.
        (
            format!("{tpl}/AddSubscription"),
            json!({"name": "Watch", "event": "DataChange", "property": "pressure",
                   "code": "if eventData.newValue > 9.0 { set_property(me, \"alarm\", true); }"}),
        ),
        // A loop: each change of counter writes counter again (B8 cuts it).
        (
            format!("{tpl}/AddSubscription"),
            json!({"name": "Loop", "event": "DataChange", "property": "counter",
                   "code": "set_property(me, \"counter\", eventData.newValue + 1.0);"}),
        ),
        (
            format!("{ES}/CreateThing"),
            json!({"name": "P1", "thingTemplateName": "Pump"}),
        ),
        (
            format!("{ES}/CreateThing"),
            json!({"name": "P2", "thingTemplateName": "Pump"}),
        ),
        (
            format!("{ES}/CreateThing"),
            json!({"name": "Monitor", "thingTemplateName": "Pump"}),
        ),
        (format!("{ES}/CreateUser"), json!({"name": "alice"})),
        (format!("{ES}/CreateOrganization"), json!({"name": "Acme"})),
        (
            "/Thingworx/Organizations/Acme/Services/AddMember".into(),
            json!({"name": "Acme", "member": "alice", "type": "User"}),
        ),
    ];
    for (path, body) in steps {
        ok(&s, &admin, &path, body);
    }
    // A DataChange subscription on the template reacts on each Thing of it, for that Thing.
    assert_eq!(put(&s, &admin, "P1", "pressure", json!(12)), 200);
    drained(&s, &admin);
    assert_eq!(value(&s, &admin, "P1", "alarm"), true);
    assert_eq!(value(&s, &admin, "P2", "alarm"), false);
    // It runs as the writer: alice may write P2's pressure, not its alarm; the subscription's
    // write is denied (audited), and her write still answers 200.
    let alice = ok(
        &s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "alice-key", "user": "alice"}),
    )["rows"][0]["keyId"]
        .as_str()
        .unwrap()
        .to_string();
    for (service, body) in [
        (
            "AddVisibilityPermission",
            json!({"principal": "Acme", "principalType": "Organization"}),
        ),
        (
            "AddRunTimePermission",
            json!({"principal": "alice", "principalType": "User", "type": "PropertyWrite", "resource": "pressure"}),
        ),
        (
            "AddRunTimePermission",
            json!({"principal": "alice", "principalType": "User", "type": "PropertyRead"}),
        ),
    ] {
        ok(
            &s,
            &admin,
            &format!("/Thingworx/Things/P2/Services/{service}"),
            body,
        );
    }
    let failed_before = metrics(&s, &admin)["subscriptionsFailed"].as_u64().unwrap();
    assert_eq!(put(&s, &alice, "P2", "pressure", json!(15)), 200);
    let m = drained(&s, &admin);
    assert_eq!(value(&s, &admin, "P2", "alarm"), false);
    assert!(
        m["subscriptionsFailed"].as_u64().unwrap() > failed_before,
        "{m}"
    );
    let audit = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"maxItems": 200}),
    )
    .to_string();
    assert!(audit.contains("subscriptionFailed"), "{audit}");
    assert!(audit.contains("Subscriptions/Watch"), "{audit}");
    // Firing an event needs EventInvoke for it, and data that fits its DataShape.
    let fire =
        |key: &str, body: Json| post(&s, key, "/Thingworx/Things/P2/Events/Overheated", body);
    let (st, v) = fire(&alice, json!({"level": 3}));
    assert_eq!(st, 403, "{v}");
    let (st, v) = fire(&admin, json!({"temperature": 3}));
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("temperature"), "{v}");
    let (st, v) = fire(&admin, json!({"level": "high"}));
    assert_eq!(st, 400, "{v}");
    let (st, v) = post(&s, &admin, "/Thingworx/Things/P2/Events/Nothing", json!({}));
    assert_eq!(st, 404, "{v}");
    // Another Thing's events: Monitor counts P2's Overheated events.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Monitor/Services/AddSubscription",
        json!({"name": "Count", "source": "P2", "event": "Overheated",
               "code": "set_property(me, \"seen\", get_property(me, \"seen\") + eventData.level);"}),
    );
    for level in [1, 2, 3] {
        let (st, v) = fire(&admin, json!({"level": level}));
        assert_eq!(st, 200, "{v}");
    }
    drained(&s, &admin);
    assert_eq!(value(&s, &admin, "Monitor", "seen"), 6.0);
    // Disabled, it receives nothing; enabled again, it does.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Monitor/Services/DisableSubscription",
        json!({"subscriptionName": "Count"}),
    );
    fire(&admin, json!({"level": 10}));
    drained(&s, &admin);
    assert_eq!(value(&s, &admin, "Monitor", "seen"), 6.0);
    // alice may change Monitor's definitions and sees P1, but may not subscribe to its events.
    for thing in ["Monitor", "P1"] {
        ok(
            &s,
            &admin,
            &format!("/Thingworx/Things/{thing}/Services/AddVisibilityPermission"),
            json!({"principal": "Acme", "principalType": "Organization"}),
        );
    }
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Monitor/Services/AddDesignTimePermission",
        json!({"principal": "alice", "principalType": "User", "type": "Update"}),
    );
    let subscribe = |source: &str| {
        post(
            &s,
            &alice,
            "/Thingworx/Things/Monitor/Services/AddSubscription",
            json!({"name": "Spy", "source": source, "event": "Overheated", "code": "1"}),
        )
    };
    let (st, v) = subscribe("P1");
    assert_eq!(st, 403, "{v}");
    // A source she cannot see answers as a missing one (V1).
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "Hidden", "thingTemplateName": "Pump"}),
    );
    let (st_hidden, hidden) = subscribe("Hidden");
    let (st_missing, missing) = subscribe("Nowhere");
    assert_eq!((st_hidden.as_u16(), st_missing.as_u16()), (404, 404));
    assert_eq!(
        hidden.to_string().replace("Hidden", "X"),
        missing.to_string().replace("Nowhere", "X")
    );
    // A subscription to an event its source does not have, and code that does not compile.
    for (body, says) in [
        (
            json!({"name": "Bad", "event": "Exploded", "code": "1"}),
            "does not have",
        ),
        (
            json!({"name": "Bad", "event": "DataChange", "code": "let = ;"}),
            "line 1",
        ),
    ] {
        let (st, v) = post(
            &s,
            &admin,
            "/Thingworx/Things/P1/Services/AddSubscription",
            body,
        );
        assert_eq!(st, 400, "{v}");
        assert!(v.to_string().contains(says), "{v}");
    }
    // B8: the loop is cut at its depth limit, audited naming the chain.
    assert_eq!(put(&s, &admin, "P1", "counter", json!(0.5)), 200);
    drained(&s, &admin);
    // Eight firings in the chain are delivered (MAX_CHAIN): the writes 0.5 .. 7.5 fire, the
    // eighth delivery writes 8.5, and that write's firing is the one cut.
    let counter = value(&s, &admin, "P1", "counter").as_f64().unwrap();
    assert_eq!(counter, 8.5);
    let audit = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"maxItems": 50}),
    )
    .to_string();
    assert!(
        audit.contains("subscriptionChainCut") && audit.contains("Things/P1:DataChange"),
        "{audit}"
    );
    // Restart: subscriptions and their state stay.
    let dir = s.dir.clone();
    drop(s);
    let s = Server::start(&dir, &["--dev"]);
    let meta: Json = s
        .client
        .get(s.at("/Thingworx/Things/Monitor"))
        .header("appKey", &admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let count = meta["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["definition"]["name"] == "Count")
        .unwrap()
        .clone();
    assert_eq!(count["definition"]["enabled"], false, "{count}");
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Monitor/Services/EnableSubscription",
        json!({"subscriptionName": "Count"}),
    );
    let (st, _) = post(
        &s,
        &admin,
        "/Thingworx/Things/P2/Events/Overheated",
        json!({"level": 4}),
    );
    assert_eq!(st, 200);
    drained(&s, &admin);
    assert_eq!(value(&s, &admin, "Monitor", "seen"), 10.0);
}

#[test]
fn b6_a_scripts_firings_go_when_its_changes_land_and_a_dry_run_fires_nothing() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let admin = s.admin_key();
    let tpl = "/Thingworx/ThingTemplates/Pump/Services";
    for (path, body) in [
        (format!("{ES}/CreateThingTemplate"), json!({"name": "Pump"})),
        (
            format!("{tpl}/AddPropertyDefinition"),
            json!({"name": "pressure", "type": "NUMBER", "defaultValue": 0}),
        ),
        (
            format!("{tpl}/AddPropertyDefinition"),
            json!({"name": "changes", "type": "NUMBER", "defaultValue": 0}),
        ),
        (
            format!("{tpl}/AddSubscription"),
            json!({"name": "Count", "event": "DataChange", "property": "pressure",
                   "code": "set_property(me, \"changes\", get_property(me, \"changes\") + 1.0);"}),
        ),
        (
            format!("{ES}/CreateThing"),
            json!({"name": "P1", "thingTemplateName": "Pump"}),
        ),
    ] {
        ok(&s, &admin, &path, body);
    }
    let run = |dry: bool| {
        ok(
            &s,
            &admin,
            "/Thingworx/Resources/ScriptServices/Services/RunScript",
            json!({"script": "set_property(\"Things/P1\", \"pressure\", 5.0);\nset_property(\"Things/P1\", \"pressure\", 6.0);", "dryRun": dry}),
        )
    };
    run(true);
    drained(&s, &admin);
    assert_eq!(value(&s, &admin, "P1", "changes"), 0.0);
    assert_eq!(value(&s, &admin, "P1", "pressure"), 0.0);
    run(false);
    drained(&s, &admin);
    assert_eq!(value(&s, &admin, "P1", "pressure"), 6.0);
    assert_eq!(value(&s, &admin, "P1", "changes"), 2.0);
    // A write of the same value fires nothing (dataChangeType VALUE).
    put(&s, &admin, "P1", "pressure", json!(6.0));
    drained(&s, &admin);
    assert_eq!(value(&s, &admin, "P1", "changes"), 2.0);
}

/// Waits until `thing`'s `prop` reaches `at_least`, at most 20 s: its value.
fn reaches(s: &Server, admin: &str, thing: &str, prop: &str, at_least: f64) -> f64 {
    for _ in 0..400 {
        let v = value(s, admin, thing, prop).as_f64().unwrap_or(0.0);
        if v >= at_least {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{thing}.{prop} did not reach {at_least}");
}

#[test]
fn b7_timers_and_schedulers_fire_as_their_run_as_user_and_not_at_all_for_a_disabled_one() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let admin = s.admin_key();
    let count_code = "set_property(me, \"who\", caller());\nset_property(me, \"count\", get_property(me, \"count\") + 1.0);";
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateUser"),
        json!({"name": "bob"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Users/bob/Services/DisableUser",
        json!({}),
    );
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateOrganization"),
        json!({"name": "Acme"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Organizations/Acme/Services/AddMember",
        json!({"name": "Acme", "member": "bob", "type": "User"}),
    );
    for (name, template, run_as) in [
        ("Tick", "Timer", "Administrator"),
        ("Tock", "Timer", "bob"),
        ("Cron", "Scheduler", "Administrator"),
    ] {
        ok(
            &s,
            &admin,
            &format!("{ES}/CreateThing"),
            json!({"name": name, "thingTemplateName": template}),
        );
        let thing = format!("/Thingworx/Things/{name}/Services");
        ok(
            &s,
            &admin,
            &format!("{thing}/AddPropertyDefinition"),
            json!({"name": "count", "type": "NUMBER", "defaultValue": 0}),
        );
        ok(
            &s,
            &admin,
            &format!("{thing}/AddPropertyDefinition"),
            json!({"name": "who", "type": "STRING", "defaultValue": ""}),
        );
        if template == "Scheduler" {
            for (p, ty, v) in [
                ("schedule", "STRING", json!("* * * * * *")),
                ("enabled", "BOOLEAN", json!(true)),
                ("runAsUser", "STRING", json!(run_as)),
            ] {
                ok(
                    &s,
                    &admin,
                    &format!("{thing}/AddPropertyDefinition"),
                    json!({"name": p, "type": ty, "defaultValue": v}),
                );
            }
        }
        let event = if template == "Timer" {
            "Timer"
        } else {
            "ScheduledEvent"
        };
        ok(
            &s,
            &admin,
            &format!("{thing}/AddSubscription"),
            json!({"name": "Count", "event": event, "code": count_code}),
        );
        if template == "Timer" {
            put(&s, &admin, name, "updateRate", json!(200));
            put(&s, &admin, name, "runAsUser", json!(run_as));
            put(&s, &admin, name, "enabled", json!(true));
        }
    }
    reaches(&s, &admin, "Tick", "count", 3.0);
    reaches(&s, &admin, "Cron", "count", 1.0);
    // Tock's runAsUser is disabled: it never fired, and the refusal is audited (once).
    assert_eq!(value(&s, &admin, "Tock", "count"), 0.0);
    let audit = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"maxItems": 500, "auditCategory": "AUTHORIZATION"}),
    );
    let refusals = audit["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["messageKey"] == "scheduledEventRefused" && r["source"] == "Things/Tock")
        .count();
    assert_eq!(refusals, 1, "{audit}");
    // Enabled again, bob's timer fires, and its code runs as bob (who needs the rights it uses:
    // seeing Tock, reading and writing its properties).
    ok(
        &s,
        &admin,
        "/Thingworx/Users/bob/Services/EnableUser",
        json!({}),
    );
    for (service, body) in [
        (
            "AddVisibilityPermission",
            json!({"principal": "Acme", "principalType": "Organization"}),
        ),
        (
            "AddRunTimePermission",
            json!({"principal": "bob", "principalType": "User", "type": "PropertyRead"}),
        ),
        (
            "AddRunTimePermission",
            json!({"principal": "bob", "principalType": "User", "type": "PropertyWrite"}),
        ),
    ] {
        ok(
            &s,
            &admin,
            &format!("/Thingworx/Things/Tock/Services/{service}"),
            body,
        );
    }
    reaches(&s, &admin, "Tock", "count", 1.0);
    assert_eq!(value(&s, &admin, "Tock", "who"), "bob");
    assert_eq!(value(&s, &admin, "Tick", "who"), "Administrator");
    // Only an administrator names another user as runAsUser: bob may name himself only.
    let bob = ok(
        &s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "bob-key", "user": "bob"}),
    )["rows"][0]["keyId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        put(&s, &bob, "Tock", "runAsUser", json!("Administrator")),
        403
    );
    assert_eq!(put(&s, &bob, "Tock", "runAsUser", json!("bob")), 200);
    assert_eq!(value(&s, &admin, "Tock", "runAsUser"), "bob");
    // A subscription to another Thing's Timer runs as that timer's runAsUser: only that user or
    // an administrator may make one, whatever EventSubscribe says (B7, B4).
    for (service, body) in [
        (
            "Tick/Services/AddVisibilityPermission",
            json!({"principal": "Acme", "principalType": "Organization"}),
        ),
        (
            "Tick/Services/AddRunTimePermission",
            json!({"principal": "bob", "principalType": "User", "type": "EventSubscribe", "resource": "Timer"}),
        ),
        (
            "Tock/Services/AddDesignTimePermission",
            json!({"principal": "bob", "principalType": "User", "type": "Update"}),
        ),
    ] {
        ok(&s, &admin, &format!("/Thingworx/Things/{service}"), body);
    }
    let (st, v) = post(
        &s,
        &bob,
        "/Thingworx/Things/Tock/Services/AddSubscription",
        json!({"name": "Borrow", "source": "Tick", "event": "Timer", "code": "1"}),
    );
    assert_eq!(st, 403, "{v}");
    assert!(
        v.to_string()
            .contains("fires as its runAsUser (Administrator)"),
        "{v}"
    );
    put(&s, &admin, "Tick", "runAsUser", json!("bob"));
    let (st, v) = post(
        &s,
        &bob,
        "/Thingworx/Things/Tock/Services/AddSubscription",
        json!({"name": "Borrow", "source": "Tick", "event": "Timer", "code": "1"}),
    );
    assert_eq!(st, 200, "{v}");
    put(&s, &admin, "Tick", "runAsUser", json!("Administrator"));
    // Nor on the timer itself: Update on an administrator's timer does not make its Timer
    // event's code bob's to write.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Tick/Services/AddDesignTimePermission",
        json!({"principal": "bob", "principalType": "User", "type": "Update"}),
    );
    let (st, v) = post(
        &s,
        &bob,
        "/Thingworx/Things/Tick/Services/AddSubscription",
        json!({"name": "Mine", "event": "Timer", "code": "1"}),
    );
    assert_eq!(st, 403, "{v}");
    assert!(
        v.to_string()
            .contains("only that user or an administrator may add it"),
        "{v}"
    );
    // bob's own timer's Timer event is his to subscribe to.
    let (st, v) = post(
        &s,
        &bob,
        "/Thingworx/Things/Tock/Services/AddSubscription",
        json!({"name": "Mine", "event": "Timer", "code": "1"}),
    );
    assert_eq!(st, 200, "{v}");
    // A disabled timer stops.
    put(&s, &admin, "Tick", "enabled", json!(false));
    // (A look that read `enabled` just before the write may still fire once: let it land.)
    std::thread::sleep(std::time::Duration::from_millis(300));
    drained(&s, &admin);
    let stopped = value(&s, &admin, "Tick", "count").as_f64().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600));
    drained(&s, &admin);
    assert_eq!(
        value(&s, &admin, "Tick", "count").as_f64().unwrap(),
        stopped
    );
    // Only timers have Timer events; requests cannot fire the platform's events.
    let (st, v) = post(
        &s,
        &admin,
        "/Thingworx/Things/Cron/Services/AddSubscription",
        json!({"name": "Wrong", "event": "Timer", "code": "1"}),
    );
    assert_eq!(st, 400, "{v}");
    let (st, v) = post(&s, &admin, "/Thingworx/Things/Tick/Events/Timer", json!({}));
    assert_eq!(st, 400, "{v}");
}

#[test]
fn b6_b8_a_subscription_to_another_thing_survives_its_sources_changes_and_fan_out_is_bounded() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let admin = s.admin_key();
    let steps: Vec<(String, Json)> = vec![
        (format!("{ES}/CreateThingTemplate"), json!({"name": "Fan"})),
        (
            format!("{ES}/CreateThing"),
            json!({"name": "Src", "thingTemplateName": "Fan"}),
        ),
        (
            format!("{ES}/CreateThing"),
            json!({"name": "Sink", "thingTemplateName": "Fan"}),
        ),
        (
            "/Thingworx/Things/Src/Services/AddEventDefinition".into(),
            json!({"name": "Ping"}),
        ),
        (
            "/Thingworx/Things/Src/Services/AddPropertyDefinition".into(),
            json!({"name": "level", "type": "NUMBER"}),
        ),
        (
            "/Thingworx/Things/Sink/Services/AddSubscription".into(),
            json!({"name": "OnPing", "source": "Src", "event": "Ping", "code": "1"}),
        ),
        (
            "/Thingworx/Things/Sink/Services/AddSubscription".into(),
            json!({"name": "OnLevel", "source": "Src", "event": "DataChange", "property": "level", "code": "1"}),
        ),
    ];
    for (path, body) in steps {
        ok(&s, &admin, &path, body);
    }
    // Another Thing's event or property that it does not have is refused when subscribing.
    for body in [
        json!({"name": "X", "source": "Src", "event": "Pong", "code": "1"}),
        json!({"name": "X", "source": "Src", "event": "DataChange", "property": "nope", "code": "1"}),
    ] {
        let (st, v) = post(
            &s,
            &admin,
            "/Thingworx/Things/Sink/Services/AddSubscription",
            body,
        );
        assert_eq!(st, 400, "{v}");
    }
    // The source may change later: the subscriptions wait for events that no longer come, and
    // the model still starts.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Src/Services/DeleteEventDefinition",
        json!({"name": "Ping"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/Src/Services/DeletePropertyDefinition",
        json!({"name": "level"}),
    );
    let dir = s.dir.clone();
    drop(s);
    let s = Server::start(&dir, &["--dev"]);
    // Fan-out: each change of any property of Sink writes three of them again; however deep
    // the chain may go, one write causes at most MAX_FIRINGS (1,000) firings, then it is cut.
    let f = "/Thingworx/Things/Sink/Services";
    for p in ["a", "b", "c"] {
        ok(
            &s,
            &admin,
            &format!("{f}/AddPropertyDefinition"),
            json!({"name": p, "type": "NUMBER", "defaultValue": 0}),
        );
    }
    ok(
        &s,
        &admin,
        &format!("{f}/AddSubscription"),
        json!({"name": "Spread", "event": "DataChange",
               "code": "let v = eventData.newValue; set_property(me, \"a\", v + 1.1); set_property(me, \"b\", v + 1.2); set_property(me, \"c\", v + 1.3);"}),
    );
    assert_eq!(put(&s, &admin, "Sink", "a", json!(1)), 200);
    let m = drained(&s, &admin);
    let fired = m["eventsFired"].as_u64().unwrap();
    assert!(fired <= 1_000, "{m}");
    let audit = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"maxItems": 50}),
    )
    .to_string();
    assert!(audit.contains("at most 1000 more"), "{audit}");
    // Cut once, audited once.
    assert_eq!(
        audit
            .matches("\"messageKey\":\"subscriptionChainCut\"")
            .count(),
        1,
        "{audit}"
    );
}

/// `thinghost model export` of a data directory (the server stopped).
fn export(dir: &Path) -> String {
    let o = thinghost(&["model", "--data", dir.to_str().unwrap(), "export"]);
    assert!(o.status.success(), "{:?}", text(&o));
    text(&o).0
}

#[test]
fn b1_b2_b6_every_definition_kind_round_trips_through_export_and_import() {
    let t = tempfile::tempdir().unwrap();
    let s = serve_with(t.path(), chain());
    let admin = s.admin_key();
    let steps: Vec<(&str, Json)> = vec![
        (
            "/Thingworx/ThingTemplates/Derived/Services/OverrideService",
            json!({"name": "Reset", "code": "\"template\""}),
        ),
        (
            "/Thingworx/ThingTemplates/Derived/Services/AddEventDefinition",
            json!({"name": "Alarm"}),
        ),
        (
            "/Thingworx/ThingTemplates/Derived/Services/AddPropertyDefinition",
            json!({"name": "level", "type": "NUMBER", "dataChangeType": "ALWAYS"}),
        ),
        (
            "/Thingworx/ThingTemplates/Derived/Services/AddSubscription",
            json!({"name": "OnLevel", "event": "DataChange", "property": "level", "code": "1", "enabled": false}),
        ),
        (
            "/Thingworx/Things/T3/Services/AddSubscription",
            json!({"name": "OnAlarm", "source": "T1", "event": "Alarm", "code": "2"}),
        ),
    ];
    for (path, body) in steps {
        ok(&s, &admin, path, body);
    }
    let dir = s.dir.clone();
    drop(s);
    let exported = export(&dir);
    for needle in [
        "\"allowOverride\":true",
        "\"overrides\"",
        "\"subscriptions\"",
        "\"dataChangeType\":\"ALWAYS\"",
        "\"enabled\":false",
        "\"source\":\"T1\"",
    ] {
        assert!(
            exported.replace(' ', "").contains(needle),
            "{needle} in {exported}"
        );
    }
    // Into a new data directory, then out again: the same model.
    let other = t.path().join("other");
    let o = thinghost(&["init", "--data", other.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let file = t.path().join("export.json");
    std::fs::write(&file, &exported).unwrap();
    import(&other, &file);
    let again: Json = serde_json::from_str(&export(&other)).unwrap();
    let first: Json = serde_json::from_str(&exported).unwrap();
    let named = |v: &Json, name: &str| -> Json {
        v["entities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap()
    };
    for name in ["Resettable", "Base", "Derived", "T1", "T3"] {
        let (mut a, mut b) = (named(&first, name), named(&again, name));
        // (Who made an entity and when is the data directory's own.)
        for e in [&mut a, &mut b] {
            if let Some(o) = e.as_object_mut() {
                o.remove("owner");
            }
        }
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn b3_code_on_the_platforms_own_templates_is_an_administrators() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(&t.path().join("d"), &["--dev"]);
    let admin = s.admin_key();
    let cf = "/Thingworx/Resources/CollectionFunctions/Services";
    let steps: Vec<(String, Json)> = vec![
        (format!("{ES}/CreateUser"), json!({"name": "dev"})),
        (format!("{ES}/CreateOrganization"), json!({"name": "Lab"})),
        (
            "/Thingworx/Organizations/Lab/Services/AddMember".into(),
            json!({"name": "Lab", "member": "dev", "type": "User"}),
        ),
        // dev sees every template and may create and change templates (a common grant).
        (
            format!("{cf}/AddCollectionVisibilityPermission"),
            json!({"collectionName": "ThingTemplates", "principal": "Lab", "principalType": "Organization"}),
        ),
        (
            format!("{cf}/AddCollectionDesignTimePermission"),
            json!({"collectionName": "ThingTemplates", "principal": "dev", "principalType": "User", "type": "Update"}),
        ),
        (
            format!("{cf}/AddCollectionDesignTimePermission"),
            json!({"collectionName": "ThingTemplates", "principal": "dev", "principalType": "User", "type": "Create"}),
        ),
    ];
    for (path, body) in steps {
        ok(&s, &admin, &path, body);
    }
    let dev = ok(
        &s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "dev-key", "user": "dev"}),
    )["rows"][0]["keyId"]
        .as_str()
        .unwrap()
        .to_string();
    // Code on Scheduler would run as Administrator when the audit schedulers fire; on
    // GenericThing, for every write of every Thing.
    for template in ["Scheduler", "GenericThing"] {
        let (st, v) = post(
            &s,
            &dev,
            &format!("/Thingworx/ThingTemplates/{template}/Services/AddSubscription"),
            json!({"name": "Mine", "event": "DataChange", "code": "1"}),
        );
        assert_eq!(st, 403, "{template}: {v}");
        assert!(v.to_string().contains("platform's own"), "{v}");
    }
    // On a template of its own, dev writes code.
    ok(
        &s,
        &dev,
        &format!("{ES}/CreateThingTemplate"),
        json!({"name": "DevPump"}),
    );
    ok(
        &s,
        &dev,
        "/Thingworx/ThingTemplates/DevPump/Services/AddSubscription",
        json!({"name": "Mine", "event": "DataChange", "code": "1"}),
    );
    // An administrator may.
    ok(
        &s,
        &admin,
        "/Thingworx/ThingTemplates/GenericThing/Services/AddServiceDefinition",
        json!({"name": "Hello", "resultType": "STRING", "code": "\"hello\""}),
    );
}

/// A Rhai extension with an event, subscriptions with handlers, and a service that fires the
/// event with `fire_event`.
const BOILERS_MANIFEST: &str = r#"
[extension]
name = "boilers"
version = "1.0.0"
host = ">=0.1"
runtime = "rhai"
entry = "main.rhai"

[capabilities]
functions = ["get_property", "set_property", "me", "fire_event"]

[[data_shapes]]
name = "Overheat"
fields = [{ name = "pressure", type = "NUMBER" }]

[[thing_templates]]
name = "Boiler"

[[thing_templates.properties]]
name = "pressure"
type = "NUMBER"
default = 0

[[thing_templates.properties]]
name = "alarms"
type = "NUMBER"
default = 0

[[thing_templates.properties]]
name = "lastAlarm"
type = "NUMBER"
default = 0

[[thing_templates.events]]
name = "Overheated"
data_shape = "Overheat"

[[thing_templates.services]]
name = "Check"
handler = "check"
params = [{ name = "limit", type = "NUMBER", required = true }]

[[thing_templates.services]]
name = "Garble"
handler = "garble"

[[thing_templates.subscriptions]]
name = "CountAlarms"
event = "Overheated"
handler = "count_alarm"

[[thing_templates.subscriptions]]
name = "WatchPressure"
event = "DataChange"
property = "pressure"
handler = "watch"
"#;

const BOILERS_CODE: &str = r#"
fn check(limit) {
    let p = get_property(me(), "pressure");
    if p > limit { fire_event("Overheated", #{ pressure: p }); }
}
fn garble() { fire_event("Overheated", #{ temperature: 5 }); }
fn count_alarm(data) {
    set_property(me(), "alarms", get_property(me(), "alarms") + 1);
    set_property(me(), "lastAlarm", data.pressure);
}
fn watch(data) {
    if data.newValue > 100 { fire_event("Overheated", #{ pressure: data.newValue }); }
}
"#;

/// E3, B5, B6, E4: an extension declares an event and subscriptions with handlers; its code fires
/// the event with `fire_event`, as the caller, who needs `EventInvoke` (a denial is the
/// caller's 403, audited; data that does not match the DataShape a 400 naming the field); the
/// handlers run as the firer, once per firing; all of it survives a restart.
#[test]
fn e3_b5_b6_an_extensions_events_and_subscriptions_and_fire_event_as_the_caller() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("plugins/boilers");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("plugin.toml"), BOILERS_MANIFEST).unwrap();
    std::fs::write(p.join("main.rhai"), BOILERS_CODE).unwrap();
    let plugins = t.path().join("plugins");
    let dir = t.path().join("d");
    let args = [
        "--dev",
        "--no-watch",
        "--plugins",
        plugins.to_str().unwrap(),
    ];
    let s = Server::start(&dir, &args);
    let admin = s.admin_key();
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateThing"),
        json!({"name": "B1", "thingTemplateName": "Boiler"}),
    );
    // A write fires DataChange; the extension's handler sees its data and fires Overheated,
    // which the other handler counts.
    assert_eq!(put(&s, &admin, "B1", "pressure", json!(150)), 200);
    drained(&s, &admin);
    assert_eq!(value(&s, &admin, "B1", "alarms").as_f64(), Some(1.0));
    assert_eq!(value(&s, &admin, "B1", "lastAlarm").as_f64(), Some(150.0));
    // A service fires it with fire_event.
    call(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/Check",
        json!({"limit": 10}),
    );
    let m = drained(&s, &admin);
    assert_eq!(value(&s, &admin, "B1", "alarms").as_f64(), Some(2.0));
    assert_eq!(m["subscriptionsFailed"], 0, "{m}");
    // Data that does not match the event's DataShape: the caller's 400, naming the field.
    let (st, v) = post(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/Garble",
        json!({}),
    );
    assert_eq!(st.as_u16(), 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("temperature"), "{v}");

    // op may invoke Check and read, but not fire the event: Check is refused as op's own
    // request would be, and the denial is audited.
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateUser"),
        json!({"name": "op", "password": "a long password 1"}),
    );
    for (ty, resource) in [("ServiceInvoke", "Check"), ("PropertyRead", "*")] {
        ok(
            &s,
            &admin,
            "/Thingworx/Things/B1/Services/AddRunTimePermission",
            json!({"principal": "op", "principalType": "User", "type": ty, "resource": resource, "allow": true}),
        );
    }
    ok(
        &s,
        &admin,
        &format!("{ES}/CreateOrganization"),
        json!({"name": "Plant"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Organizations/Plant/Services/AddMember",
        json!({"name": "Plant", "member": "op", "type": "User"}),
    );
    ok(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/AddVisibilityPermission",
        json!({"principal": "Plant", "principalType": "Organization"}),
    );
    let op = ok(
        &s,
        &admin,
        &format!("{ES}/CreateApplicationKey"),
        json!({"name": "op-key", "user": "op"}),
    )["rows"][0]["keyId"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, v) = post(
        &s,
        &op,
        "/Thingworx/Things/B1/Services/Check",
        json!({"limit": 10}),
    );
    assert_eq!(st.as_u16(), 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("EventInvoke"), "{v}");
    // With EventInvoke on Overheated, op fires it; the subscription runs as op, who may not
    // write `alarms`: its failure is audited, never op's error.
    ok(
        &s,
        &admin,
        "/Thingworx/Things/B1/Services/AddRunTimePermission",
        json!({"principal": "op", "principalType": "User", "type": "EventInvoke", "resource": "Overheated", "allow": true}),
    );
    call(
        &s,
        &op,
        "/Thingworx/Things/B1/Services/Check",
        json!({"limit": 10}),
    );
    let m = drained(&s, &admin);
    assert_eq!(m["subscriptionsFailed"], 1, "{m}");
    assert_eq!(value(&s, &admin, "B1", "alarms").as_f64(), Some(2.0));
    let text = ok(
        &s,
        &admin,
        &format!("{AUDIT}/QueryAuditHistory"),
        json!({"maxItems": 100}),
    )
    .to_string();
    assert!(
        text.contains("subscriptionFailed")
            && text.contains("ThingTemplates/Boiler/Subscriptions/CountAlarms"),
        "{text}"
    );

    // A restart: the extension's subscriptions still run on the Thing made from its template.
    drop(s);
    let s = Server::start(&dir, &args);
    assert_eq!(put(&s, &admin, "B1", "pressure", json!(200)), 200);
    drained(&s, &admin);
    assert_eq!(value(&s, &admin, "B1", "alarms").as_f64(), Some(3.0));
    assert_eq!(value(&s, &admin, "B1", "lastAlarm").as_f64(), Some(200.0));
}

/// Issue 23 (quiet failures): the request log line of a failed request carries its reason,
/// quoted (a service whose code throws: `status=500` and the error's text).
#[test]
fn the_request_log_line_of_a_failed_request_says_why() {
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("server.log");
    let s = thinghost_tests::Server::start_with(
        &t.path().join("d"),
        &["--dev"],
        &thinghost_tests::Setup {
            log: Some(log.clone()),
            ..Default::default()
        },
    );
    let admin = s.admin_key();
    thinghost_tests::ok(
        &s,
        &admin,
        "/Thingworx/Resources/EntityServices/Services/CreateThing",
        serde_json::json!({"name": "Kettle", "thingTemplateName": "GenericThing"}),
    );
    thinghost_tests::ok(
        &s,
        &admin,
        "/Thingworx/Things/Kettle/Services/AddServiceDefinition",
        serde_json::json!({"name": "Boil", "code": "throw \"the kettle is empty\";"}),
    );
    let (st, _) = thinghost_tests::post(
        &s,
        &admin,
        "/Thingworx/Things/Kettle/Services/Boil",
        serde_json::json!({}),
    );
    assert_eq!(st.as_u16(), 500);
    let line = thinghost_tests::within_20s("the request logged", || {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .find(|l| l.contains("path=/Thingworx/Things/Kettle/Services/Boil"))
            .map(str::to_string)
    });
    assert!(line.contains("status=500"), "{line}");
    assert!(line.contains("the kettle is empty"), "{line}");
}
