//! Code that runs for a user acts only while that user still acts (issue 17, long-lived
//! contexts): an admin script of a user disabled before it starts, or while it runs, changes
//! nothing.

use serde_json::json;
use std::sync::Arc;
use thinghost::state::app::App;
use thinghost::state::auth::Caller;
use thinghost_core::Kind;

fn app(data: &std::path::Path) -> Arc<App> {
    thinghost::cli::init::initialize(data, 1).unwrap();
    let db = thinghost_store::Db::open(data, thinghost_core::Policy::default()).unwrap();
    let audit_log = thinghost::state::audit::AuditLog::open(
        &data.join(thinghost_store::DB_FILE),
        Default::default(),
    )
    .unwrap();
    let mut app = App::standalone(db, audit_log, data);
    // A script long enough to be overtaken (operations, not time, bound it).
    app.script_limits.max_operations = 1_000_000_000;
    app.script_limits.timeout = std::time::Duration::from_secs(120);
    Arc::new(app)
}

fn caller(app: &App, name: &str) -> Caller {
    let db = app.db.read().unwrap();
    Caller {
        subject: db.model().subject(name).unwrap(),
        name: name.into(),
        depth: 0,
        chain: None,
        in_model_code: false,
    }
}

fn call(
    app: &Arc<App>,
    who: &Caller,
    kind: Kind,
    entity: &str,
    service: &str,
    params: serde_json::Value,
) -> Result<thinghost::api::Reply, thinghost::api::ApiError> {
    let serde_json::Value::Object(params) = params else {
        panic!("parameters are an object")
    };
    thinghost::api::invoke(app, who, kind, entity, service, params.into())
}

/// bob, an administrator (who may create groups), and the Administrator.
fn with_bob(data: &std::path::Path) -> (Arc<App>, Caller, Caller) {
    let app = app(data);
    let admin = caller(&app, "Administrator");
    let es = |service: &str, params| {
        call(
            &app,
            &admin,
            Kind::Resource,
            "EntityServices",
            service,
            params,
        )
        .unwrap();
    };
    es("CreateUser", json!({"name": "bob"}));
    call(
        &app,
        &admin,
        Kind::Group,
        "Administrators",
        "AddMember",
        json!({"member": "bob", "type": "User"}),
    )
    .unwrap();
    let bob = caller(&app, "bob");
    (app, admin, bob)
}

fn group_exists(app: &App, name: &str) -> bool {
    use thinghost_core::View as _;
    app.db
        .read()
        .unwrap()
        .model()
        .get(Kind::Group, name)
        .is_some()
}

fn run_script(app: &Arc<App>, who: &Caller, script: &str) -> Result<(), (u16, String)> {
    call(
        app,
        who,
        Kind::Resource,
        "ScriptServices",
        "RunScript",
        json!({"script": script}),
    )
    .map(|_| ())
    .map_err(|e| (e.status.as_u16(), e.message))
}

#[test]
fn a3_a_script_of_a_disabled_user_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let (app, admin, bob) = with_bob(data.path());
    run_script(&app, &bob, r#"create_group("Before");"#).unwrap();
    assert!(group_exists(&app, "Before"));
    call(&app, &admin, Kind::User, "bob", "DisableUser", json!({})).unwrap();
    let (status, message) = run_script(&app, &bob, r#"create_group("After");"#).unwrap_err();
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("can no longer act"), "{message}");
    assert!(!group_exists(&app, "After"));
}

#[test]
fn a3_a_script_whose_user_is_disabled_while_it_runs_lands_nothing() {
    let data = tempfile::tempdir().unwrap();
    let (app, admin, bob) = with_bob(data.path());
    let running = {
        let (app, bob) = (app.clone(), bob.clone());
        std::thread::spawn(move || {
            run_script(
                &app,
                &bob,
                "create_group(\"During\");\nlet n = 0;\nfor i in 0..15000000 { n += 1; }",
            )
        })
    };
    // The script makes its change on its copy, then counts for seconds; meanwhile bob is
    // disabled. Its change must not land.
    std::thread::sleep(std::time::Duration::from_millis(200));
    call(&app, &admin, Kind::User, "bob", "DisableUser", json!({})).unwrap();
    let (status, message) = running.join().unwrap().unwrap_err();
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("can no longer act"), "{message}");
    assert!(!group_exists(&app, "During"));
}
