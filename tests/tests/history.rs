//! Data storage Things (DOMAIN section 11) against the real server: what is in so far is H2's
//! `logged` flag of property definitions, in the model, in manifests and in the metadata.

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
