//! Manifests, load order and contributions (DOMAIN E1, E2, E3).

use semver::Version;
use std::path::Path;
use thinghost_core::*;
use thinghost_extensions::{Manifest, contribute, owned, plan};

/// The minimal example of the extensions issue, exactly as written there.
const HELLO: &str = r#"
[extension]
name = "hello"            # unique, [a-z0-9-]+
version = "1.0.0"         # semver
host = ">=0.1"            # host versions it runs on
runtime = "rhai"          # "rhai" | "wasm" | "native"
entry = "main.rhai"       # relative to this folder

[requires]                # other extensions and version requirements (optional)

[[things]]
name = "HelloThing"
template = "GenericThing"

[[things.properties]]
name = "greeting"
type = "STRING"
default = "Hello"

[[things.services]]
name = "Greet"
handler = "greet"
result = "STRING"
params = [{ name = "who", type = "STRING", required = true }]
"#;

fn parse(text: &str) -> Result<Manifest, thinghost_extensions::ManifestError> {
    Manifest::parse(text, Path::new("plugins/x/plugin.toml"))
}

fn ext(name: &str, version: &str, requires: &[(&str, &str)]) -> Manifest {
    let reqs: String = requires
        .iter()
        .map(|(n, r)| format!("{n} = \"{r}\"\n"))
        .collect();
    parse(&format!(
        "[extension]\nname = \"{name}\"\nversion = \"{version}\"\nhost = \">=0.1\"\nruntime = \"rhai\"\nentry = \"main.rhai\"\n[requires]\n{reqs}"
    ))
    .unwrap()
}

fn host() -> Version {
    Version::parse("0.1.0").unwrap()
}

#[test]
fn the_hello_example_parses_exactly_as_written() {
    let m = parse(HELLO).unwrap();
    assert_eq!(m.name(), "hello");
    assert_eq!(m.extension.version, Version::parse("1.0.0").unwrap());
    let handlers = m.handlers();
    assert_eq!(handlers.len(), 1);
    assert_eq!(
        (handlers[0].kind, handlers[0].entity, handlers[0].handler),
        (Kind::Thing, "HelloThing", "greet")
    );
    let es = m.entities().unwrap();
    let Body::Thing(t) = &es[0].body else {
        panic!()
    };
    assert_eq!(
        t.definitions.properties[0].default_value,
        Some(serde_json::json!("Hello"))
    );
    assert_eq!(
        t.definitions.services[0].parameters[0].base_type,
        BaseType::String
    );
    assert!(t.definitions.services[0].parameters[0].required);
}

#[test]
fn a_bad_manifest_is_refused_naming_the_extension_the_file_and_the_cause() {
    let cases = [
        (
            HELLO.replace("name = \"hello\"", "name = \"Hello World\""),
            "must be 1-64 characters",
        ),
        (
            HELLO.replace("version = \"1.0.0\"", "version = \"one\""),
            "version",
        ),
        (
            HELLO.replace("runtime = \"rhai\"", "runtime = \"lua\""),
            "lua",
        ),
        (
            HELLO.replace("entry = \"main.rhai\"", "entry = \"../main.rhai\""),
            "inside the extension folder",
        ),
        (
            HELLO.replace("type = \"STRING\"\ndefault", "type = \"INTEGER\"\ndefault"),
            "the default of property greeting",
        ),
        (
            HELLO.replace("type = \"STRING\"\ndefault", "type = \"WIDGET\"\ndefault"),
            "WIDGET",
        ),
        (
            HELLO.replace("[[things]]", "[[widgets]]\nname = \"w\"\n[[things]]"),
            "widgets",
        ),
        (
            HELLO.replace(
                "handler = \"greet\"",
                "handler = \"greet\"\ncolour = \"red\"",
            ),
            "colour",
        ),
        (
            format!(
                "{HELLO}\n[[permissions]]\nentity = \"Things/Other\"\nprincipal = \"Users\"\nprincipal_type = \"Group\"\ntype = \"ServiceInvoke\"\n"
            ),
            "not one of this extension's entities",
        ),
        (
            format!(
                "{HELLO}\n[[permissions]]\nentity = \"Things/HelloThing\"\nprincipal = \"Users\"\nprincipal_type = \"Group\"\ntype = \"Read\"\n"
            ),
            "not a run-time permission",
        ),
        (
            HELLO.replace("[requires]", "[requires]\nhello = \"1\""),
            "cannot require itself",
        ),
        ("not toml at all [".to_string(), "plugins/x/plugin.toml"),
    ];
    for (text, says) in cases {
        let err = parse(&text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(says), "{says}: {msg}");
        assert!(msg.contains("plugins/x/plugin.toml"), "{msg}");
        assert!(msg.starts_with("extension "), "{msg}");
    }
}

#[test]
fn e1_a_missing_dependency_refuses_the_extension_and_those_that_need_it() {
    let (a, b, c) = (
        ext("a", "1.0.0", &[("b", "^1")]),
        ext("c", "1.0.0", &[("a", "*")]),
        ext("d", "1.0.0", &[]),
    );
    let p = plan(&[&a, &b, &c], &host());
    assert_eq!(p.order, vec!["d"]);
    assert!(
        p.refused["a"].contains("needs b ^1, which is not installed; install b first"),
        "{:?}",
        p.refused
    );
    assert!(
        p.refused["c"].contains("needs a, which is waiting"),
        "{:?}",
        p.refused
    );
    // Both only wait for b: they load once it is installed.
    assert_eq!(
        p.waiting.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["a", "c"]
    );
}

#[test]
fn e1_an_unsatisfied_version_is_refused_naming_both_versions() {
    let (a, b) = (ext("a", "1.0.0", &[("b", "^2")]), ext("b", "1.4.0", &[]));
    let p = plan(&[&a, &b], &host());
    assert_eq!(p.order, vec!["b"]);
    assert_eq!(p.refused["a"], "needs b ^2, but b 1.4.0 is installed");
    assert!(
        p.waiting.is_empty(),
        "a wrong version is refused, not waiting"
    );
}

#[test]
fn e1_a_cycle_is_refused_naming_it() {
    let (a, b, c, d) = (
        ext("a", "1.0.0", &[("b", "*")]),
        ext("b", "1.0.0", &[("a", "*")]),
        ext("c", "1.0.0", &[("a", "*")]),
        ext("d", "1.0.0", &[]),
    );
    let p = plan(&[&a, &b, &c, &d], &host());
    assert_eq!(p.order, vec!["d"]);
    assert!(
        p.refused["a"].contains("dependency cycle: a -> b -> a"),
        "{:?}",
        p.refused
    );
    assert!(
        p.refused["b"].contains("dependency cycle: b -> a -> b"),
        "{:?}",
        p.refused
    );
    assert!(
        p.refused["c"].contains("in a dependency cycle"),
        "{:?}",
        p.refused
    );
}

#[test]
fn e1_a_host_version_mismatch_and_duplicate_names_are_refused() {
    let mut a = ext("a", "1.0.0", &[]);
    a.extension.host = semver::VersionReq::parse(">=2").unwrap();
    let p = plan(&[&a], &host());
    assert!(
        p.refused["a"].contains("needs host >=2, but this is thinghost 0.1.0"),
        "{:?}",
        p.refused
    );
    let (x1, x2) = (ext("x", "1.0.0", &[]), ext("x", "2.0.0", &[]));
    let p = plan(&[&x1, &x2], &host());
    assert!(p.refused["x"].contains("two packages are named x"));
    assert!(p.order.is_empty());
}

#[test]
fn e2_cse_then_rae_then_ace_whatever_the_order_found() {
    let cse = ext("cse", "1.0.0", &[]);
    let rae = ext("rae", "1.0.0", &[("cse", "^1")]);
    let ace = ext("ace", "1.0.0", &[("rae", "^1"), ("cse", "^1")]);
    for input in [
        vec![&ace, &rae, &cse],
        vec![&cse, &ace, &rae],
        vec![&rae, &cse, &ace],
    ] {
        let p = plan(&input, &host());
        assert_eq!(p.order, vec!["cse", "rae", "ace"]);
        assert!(p.refused.is_empty());
    }
    // Without RAE, ACE is refused with the reason.
    let p = plan(&[&cse, &ace], &host());
    assert_eq!(
        p.refused["ace"],
        "needs rae ^1, which is not installed; install rae first"
    );
}

#[test]
fn e3_contributions_enter_the_model_all_or_nothing_and_are_the_extensions() {
    let mut model = Model::with_predefined();
    let m = parse(HELLO).unwrap();
    contribute(&mut model, &m).unwrap();
    let e = model.get(Kind::Thing, "HelloThing").unwrap();
    assert_eq!(e.extension.as_deref(), Some("hello"));
    assert_eq!(
        owned(&model, "hello"),
        vec![(Kind::Thing, "HelloThing".to_string())]
    );
    // Loading the same version again changes nothing.
    assert!(contribute(&mut model, &m).unwrap().is_empty());
    // A broken contribution (a template that does not exist) changes nothing at all.
    let before = model.export();
    let broken = parse(&format!(
        "{}\n[[thing_shapes]]\nname = \"NewShape\"\n",
        HELLO
            .replace("name = \"hello\"", "name = \"broken\"")
            .replace("HelloThing", "Other")
            .replace(
                "template = \"GenericThing\"",
                "template = \"NoSuchTemplate\""
            )
    ))
    .unwrap();
    let err = contribute(&mut model, &broken).unwrap_err();
    assert!(err.to_string().contains("NoSuchTemplate"), "{err}");
    assert_eq!(model.export(), before);
    // An entity that is not the extension's is never taken over.
    model
        .create(Entity::thing("Taken", "GenericThing"))
        .unwrap();
    let grab = parse(
        &HELLO
            .replace("name = \"hello\"", "name = \"grab\"")
            .replace("HelloThing", "Taken"),
    )
    .unwrap();
    let err = contribute(&mut model, &grab).unwrap_err();
    assert!(
        err.to_string()
            .contains("Things/Taken already exists and is not this extension's"),
        "{err}"
    );
}

#[test]
fn e5_an_upgrade_keeps_users_things_and_refuses_to_remove_a_template_in_use() {
    let v1 = parse(&PUMPS_V1.replace("VERSION", "1.0.0")).unwrap();
    let mut model = Model::with_predefined();
    contribute(&mut model, &v1).unwrap();
    // A user makes a Thing from the extension's template, sets a value and a permission.
    model.create(Entity::user("op")).unwrap();
    let mut p = Entity::thing("MyPump", "PumpTemplate");
    if let Body::Thing(t) = &mut p.body {
        t.values.insert("rpm".into(), serde_json::json!(900));
    }
    p.permissions.run_time.push(PermissionEntry::new(
        PrincipalRef::user("op"),
        Permission::PropertyRead,
        "*",
        true,
    ));
    model.create(p.clone()).unwrap();
    // 1.1 drops the shape and the hub Thing: they go; the user's Thing stays as it was.
    let v11 = parse(&v1_text_without(
        &[
            "[[thing_shapes]]\nname = \"Obsolete\"\n",
            "[[things]]\nname = \"PumpHub\"\n",
        ],
        "1.1.0",
    ))
    .unwrap();
    contribute(&mut model, &v11).unwrap();
    assert!(model.get(Kind::ThingShape, "Obsolete").is_none());
    assert!(model.get(Kind::Thing, "PumpHub").is_none());
    assert_eq!(model.get(Kind::Thing, "MyPump").unwrap(), &p);
    // 2.0 drops the template the user's Thing is made from: refused, naming the Thing; nothing changes.
    let before = model.export();
    let v2 = parse(&v1_text_without(&["[[thing_templates]]\nname = \"PumpTemplate\"\n\n[[thing_templates.properties]]\nname = \"rpm\"\ntype = \"INTEGER\"\ndefault = 0\n"], "2.0.0")).unwrap();
    let err = contribute(&mut model, &v2).unwrap_err();
    assert!(
        err.to_string().contains("PumpTemplate") && err.to_string().contains("Things/MyPump"),
        "{err}"
    );
    assert_eq!(model.export(), before);
}

const PUMPS_V1: &str = r#"
[extension]
name = "pumps"
version = "VERSION"
host = ">=0.1"
runtime = "rhai"
entry = "main.rhai"

[[thing_templates]]
name = "PumpTemplate"

[[thing_templates.properties]]
name = "rpm"
type = "INTEGER"
default = 0

[[thing_shapes]]
name = "Obsolete"

[[things]]
name = "PumpHub"
"#;

fn v1_text_without(parts: &[&str], version: &str) -> String {
    let mut s = PUMPS_V1.replace("VERSION", version);
    for p in parts {
        assert!(s.contains(p), "{p:?} not in the manifest");
        s = s.replace(p, "");
    }
    s
}

#[test]
fn limits_default_per_key_and_out_of_range_values_are_refused() {
    let head = "[extension]\nname = \"x\"\nversion = \"1.0.0\"\nhost = \">=0.1\"\nruntime = \"wasm\"\nentry = \"x.wasm\"\n";
    let m = parse(&format!("{head}[limits]\ndeadline_ms = 5\n")).unwrap();
    assert_eq!(m.limits.deadline_ms, 5);
    assert_eq!(m.limits.memory_mib, 64, "an absent key keeps its default");
    assert_eq!(m.limits.max_operations, 1_000_000_000);
    for (line, cause) in [
        ("deadline_ms = 0", "deadline_ms = 0 must be 1-60000"),
        ("memory_mib = 5000", "memory_mib = 5000 must be 1-4096"),
        (
            "max_operations = 10",
            "max_operations = 10 must be at least 1000",
        ),
        ("fuel = 1", "unknown field `fuel`"),
    ] {
        let e = parse(&format!("{head}[limits]\n{line}\n")).unwrap_err();
        assert!(e.to_string().contains(cause), "{line}: {e}");
    }
    // An unknown key is reported at its own line, not its table's (issue 23): [limits] is
    // line 7, fuel line 9.
    let e = parse(&format!("{head}[limits]\ndeadline_ms = 5\nfuel = 1\n")).unwrap_err();
    assert!(
        e.to_string().contains("line 9: unknown field `fuel`")
            && e.to_string().contains("(fuel = 1)"),
        "{e}"
    );
    let e = parse(&format!("{head}[capabilities]\nfunctions = [\"spawn\"]\n")).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"spawn\", which is not a host function"),
        "{e}"
    );
}

/// Removing an extension (its folder left the plugin directory): its entities leave; a user's
/// Thing made from its template stays, parked on GenericThing with its own permissions, its
/// values kept aside; the extension's return restores template and values. A user's template
/// based on the extension's refuses the removal, naming it, and changes nothing.
#[test]
fn e5_a_removed_extension_leaves_users_things_parked_until_it_returns() {
    let v1 = parse(&PUMPS_V1.replace("VERSION", "1.0.0")).unwrap();
    let mut model = Model::with_predefined();
    contribute(&mut model, &v1).unwrap();
    model.create(Entity::user("op")).unwrap();
    let mut p = Entity::thing("MyPump", "PumpTemplate");
    if let Body::Thing(t) = &mut p.body {
        t.values.insert("rpm".into(), serde_json::json!(900));
        t.thing_shapes.push("Obsolete".into());
    }
    p.permissions.run_time.push(PermissionEntry::new(
        PrincipalRef::user("op"),
        Permission::PropertyRead,
        "*",
        true,
    ));
    model.create(p.clone()).unwrap();

    model
        .change(thinghost_extensions::removal("pumps"))
        .unwrap();
    assert!(owned(&model, "pumps").is_empty());
    assert!(model.get(Kind::ThingTemplate, "PumpTemplate").is_none());
    let parked = model.get(Kind::Thing, "MyPump").unwrap();
    assert_eq!(parked.permissions, p.permissions);
    let Body::Thing(t) = &parked.body else {
        panic!("a Thing")
    };
    assert_eq!(t.thing_template, "GenericThing");
    assert!(t.thing_shapes.is_empty() && t.values.is_empty());
    assert_eq!(
        t.parked,
        Some(Parked {
            extension: "pumps".into(),
            thing_template: "PumpTemplate".into(),
            thing_shapes: vec!["Obsolete".into()],
            values: [("rpm".to_string(), serde_json::json!(900))].into(),
        })
    );

    // The extension comes back: the Thing is as it was.
    contribute(&mut model, &v1).unwrap();
    assert_eq!(model.get(Kind::Thing, "MyPump").unwrap(), &p);

    // A user's template based on the extension's: the removal is refused, naming it.
    model
        .create(Entity::template("MyPumpTemplate", "PumpTemplate"))
        .unwrap();
    let before = model.export();
    let err = model
        .change(thinghost_extensions::removal("pumps"))
        .unwrap_err();
    assert!(err.to_string().contains("MyPumpTemplate"), "{err}");
    assert_eq!(model.export(), before);
}

/// A base extension: a shape with an overridable service, one that is not, and an event.
const BOILERS: &str = r#"
[extension]
name = "boilers"
version = "1.0.0"
host = ">=0.1"
runtime = "rhai"
entry = "main.rhai"

[[data_shapes]]
name = "Overheat"
fields = [{ name = "pressure", type = "NUMBER" }]

[[thing_shapes]]
name = "Ventable"

[[thing_shapes.services]]
name = "Vent"
handler = "vent"
allow_override = true
params = [{ name = "amount", type = "NUMBER", required = true }]

[[thing_shapes.services]]
name = "Seal"
handler = "seal"

[[thing_shapes.events]]
name = "Overheated"
data_shape = "Overheat"

[[thing_shapes.properties]]
name = "pressure"
type = "NUMBER"
"#;

/// An extension over it: a template that implements the shape, overrides `Vent`, and subscribes
/// to its own event and to changes of `pressure`.
const VENTS: &str = r#"
[extension]
name = "vents"
version = "1.0.0"
host = ">=0.1"
runtime = "rhai"
entry = "main.rhai"

[requires]
boilers = "^1"

[[thing_templates]]
name = "Boiler"
shapes = ["Ventable"]

[[thing_templates.service_overrides]]
name = "Vent"
handler = "vent_gently"

[[thing_templates.subscriptions]]
name = "OnOverheat"
event = "Overheated"
handler = "cool"

[[thing_templates.subscriptions]]
name = "OnPressure"
event = "DataChange"
property = "pressure"
handler = "watch"
enabled = false
"#;

#[test]
fn e3_b2_b6_overrides_and_subscriptions_of_a_manifest_enter_the_model() {
    let mut model = Model::with_predefined();
    contribute(&mut model, &parse(BOILERS).unwrap()).unwrap();
    let vents = parse(VENTS).unwrap();
    let handlers: Vec<_> = vents
        .handlers()
        .into_iter()
        .map(|h| (h.implements, h.name, h.handler, h.params))
        .collect();
    use thinghost_extensions::manifest::Implements;
    assert_eq!(
        handlers,
        vec![
            (Implements::Override, "Vent", "vent_gently", None),
            (
                Implements::Subscription,
                "OnOverheat",
                "cool",
                Some(vec!["eventData"])
            ),
            (
                Implements::Subscription,
                "OnPressure",
                "watch",
                Some(vec!["eventData"])
            ),
        ]
    );
    contribute(&mut model, &vents).unwrap();
    let t = model.get(Kind::ThingTemplate, "Boiler").unwrap();
    let d = t.definitions().unwrap();
    assert_eq!(d.overrides.len(), 1);
    assert_eq!(
        (d.overrides[0].name.as_str(), d.overrides[0].code.as_deref()),
        ("Vent", None)
    );
    assert_eq!(d.subscriptions.len(), 2);
    assert!(d.subscriptions[0].enabled && !d.subscriptions[1].enabled);
    assert_eq!(d.subscriptions[1].property.as_deref(), Some("pressure"));
    // The nearest implementation of a Thing of it is the template's override.
    model.create(Entity::thing("B1", "Boiler")).unwrap();
    let b1 = model.get(Kind::Thing, "B1").unwrap();
    let found = thinghost_core::validate::find_implementation(&model, b1, "Vent").unwrap();
    assert_eq!(
        (found.source.name.as_str(), found.implementer.name.as_str()),
        ("Ventable", "Boiler")
    );

    // Refused, each naming its reason, and nothing changes: an override of a service that does
    // not allow it, of one it does not inherit, a subscription to an event the template does
    // not have, an override on a shape.
    let before = model.export();
    let cases = [
        (
            VENTS.replace("name = \"Vent\"\nhandler", "name = \"Seal\"\nhandler"),
            "does not allow overrides",
        ),
        (
            VENTS.replace("name = \"Vent\"\nhandler", "name = \"Explode\"\nhandler"),
            "which it does not inherit",
        ),
        (
            VENTS.replace("event = \"Overheated\"", "event = \"Melted\""),
            "is to event Melted, which it does not have",
        ),
        (
            VENTS.replace("property = \"pressure\"", "property = \"colour\""),
            "changes of property colour",
        ),
        (
            format!(
                "{VENTS}\n[[thing_shapes]]\nname = \"Sneaky\"\n[[thing_shapes.service_overrides]]\nname = \"Vent\"\nhandler = \"x\"\n"
            ),
            "a ThingShape cannot override a service",
        ),
    ];
    for (text, why) in cases {
        let m = parse(
            &text
                .replace("name = \"vents\"", "name = \"vents-two\"")
                .replace("name = \"Boiler\"", "name = \"Boiler2\""),
        )
        .unwrap();
        let err = contribute(&mut model, &m).unwrap_err().to_string();
        assert!(err.contains(why), "{why}: {err}");
        assert_eq!(model.export(), before, "{why}");
    }
}

#[test]
fn e3_b2_an_override_handler_must_take_the_parameters_of_the_definition_it_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::with_predefined();
    contribute(&mut model, &parse(BOILERS).unwrap()).unwrap();
    let vents = parse(VENTS).unwrap();
    let load = |rhai: &str| {
        std::fs::write(dir.path().join("main.rhai"), rhai).unwrap();
        thinghost_extensions::code::Code::load(&vents, dir.path(), &Default::default())
    };
    // A handler the code does not define at all is refused when the code loads.
    let err = load("fn cool(data) {}\nfn watch(data) {}\n").err().unwrap();
    assert!(
        err.contains("does not define the handler vent_gently(...) of the override of service Vent on ThingTemplates/Boiler"),
        "{err}"
    );
    // A subscription handler takes the event's data, one parameter.
    let err = load("fn vent_gently(a) {}\nfn cool() {}\nfn watch(data) {}\n")
        .err()
        .unwrap();
    assert!(
        err.contains("defines cool with 0 parameters, but subscription OnOverheat on ThingTemplates/Boiler passes 1: write it as cool(eventData)"),
        "{err}"
    );
    // The override's parameter count is the inherited definition's, known to the model.
    let code = load("fn vent_gently(a, b) {}\nfn cool(d) {}\nfn watch(d) {}\n").unwrap();
    let before = model.export();
    let change = thinghost_extensions::contribution(&vents, Some(&code)).unwrap();
    let err = model.change(change).unwrap_err().to_string();
    assert!(
        err.contains("overrides service Vent(amount) of ThingShapes/Ventable with the handler vent_gently, which takes 2 parameters; it must take the definition's 1"),
        "{err}"
    );
    assert_eq!(model.export(), before);
    let code = load("fn vent_gently(amount) {}\nfn cool(d) {}\nfn watch(d) {}\n").unwrap();
    model
        .change(thinghost_extensions::contribution(&vents, Some(&code)).unwrap())
        .unwrap();
    assert!(model.contains(Kind::ThingTemplate, "Boiler"));
}

#[test]
fn e3_b6_a_manifests_subscription_to_another_thing_names_an_event_it_has() {
    let mut model = Model::with_predefined();
    contribute(&mut model, &parse(BOILERS).unwrap()).unwrap();
    contribute(&mut model, &parse(VENTS).unwrap()).unwrap();
    model.create(Entity::thing("B1", "Boiler")).unwrap();
    let watcher = |source: &str, event: &str, property: &str| {
        parse(&watcher_text(source, event, property)).unwrap()
    };
    let before = model.export();
    for (m, says) in [
        (
            watcher("B1", "Melted", ""),
            "Things/Watcher: subscription OnB1 to Melted of Things/B1: it has no such event (its events: DataChange, Overheated)",
        ),
        (
            watcher("B1", "DataChange", "property = \"colour\""),
            "it has no property colour",
        ),
        (watcher("Nobody", "DataChange", ""), "Nobody"),
    ] {
        let err = contribute(&mut model, &m).unwrap_err().to_string();
        assert!(err.contains(says), "{says}: {err}");
        assert_eq!(model.export(), before);
    }
    contribute(&mut model, &watcher("B1", "Overheated", "")).unwrap();
    contribute(
        &mut model,
        &watcher("B1", "DataChange", "property = \"pressure\""),
    )
    .unwrap();

    // A user's Thing with an event; the watcher subscribes to it. The Thing may lose the event
    // later (its subscriber then waits for events that no longer come): the same watcher loads
    // again (a restart must not refuse it), but a new subscription to the lost event is refused.
    let mut src = Entity::thing("Src", "GenericThing");
    src.definitions_mut().unwrap().events.push(EventDef {
        name: "Ping".into(),
        description: String::new(),
        data_shape: None,
    });
    model.create(src.clone()).unwrap();
    contribute(&mut model, &watcher("Src", "Ping", "")).unwrap();
    src.definitions_mut().unwrap().events.clear();
    model
        .change(|tx| {
            tx.put(src);
            Ok(())
        })
        .unwrap();
    contribute(&mut model, &watcher("Src", "Ping", "")).unwrap();
    let renamed =
        parse(&watcher_text("Src", "Ping", "").replace("name = \"OnB1\"", "name = \"OnSrc\""))
            .unwrap();
    let err = contribute(&mut model, &renamed).unwrap_err().to_string();
    assert!(
        err.contains("subscription OnSrc to Ping of Things/Src: it has no such event"),
        "{err}"
    );
}

/// An extension whose Thing `Watcher` subscribes (`OnB1`) to `event` of `source`.
fn watcher_text(source: &str, event: &str, property: &str) -> String {
    format!(
        r#"
[extension]
name = "watchers"
version = "1.0.0"
host = ">=0.1"
runtime = "rhai"
entry = "main.rhai"

[[things]]
name = "Watcher"

[[things.subscriptions]]
name = "OnB1"
source = "{source}"
event = "{event}"
{property}
handler = "seen"
"#
    )
}
