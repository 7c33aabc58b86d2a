//! Password checks in-process (K5): an unknown user costs the same check as a known one, and
//! password hashing never holds the model's lock.

use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use base64::Engine as _;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use thinghost::http::rest::{self, Reply};
use thinghost::state::app::{App, Peer};
use thinghost::state::auth::Caller;

fn app(data: &std::path::Path) -> Arc<App> {
    thinghost::cli::init::initialize(data, 1).unwrap();
    let db = thinghost_store::Db::open(data, thinghost_core::Policy::default()).unwrap();
    let audit_log = thinghost::state::audit::AuditLog::open(
        &data.join(thinghost_store::DB_FILE),
        Default::default(),
    )
    .unwrap();
    Arc::new(App::standalone(db, audit_log, data))
}

/// A server's state with user bob (password "bob's password"), and its Administrator.
fn with_bob(data: &std::path::Path) -> (Arc<App>, Caller) {
    let app = app(data);
    let admin = caller(&app, "Administrator");
    post(
        &app,
        &admin,
        "/Thingworx/Resources/EntityServices/Services/CreateUser",
        json!({"name": "bob", "password": "bob's password"}),
    )
    .unwrap();
    (app, admin)
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

fn post(app: &Arc<App>, who: &Caller, path: &str, body: serde_json::Value) -> Result<Reply, u16> {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    rest::handle(
        app,
        who,
        &Method::POST,
        path,
        &headers,
        body.to_string().as_bytes(),
    )
    .map_err(|e| e.status.as_u16())
}

fn basic(user: &str, password: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Basic {b64}")).unwrap(),
    );
    h
}

#[test]
fn k5_an_unknown_user_costs_the_same_password_check_as_a_known_one() {
    let data = tempfile::tempdir().unwrap();
    let (app, admin) = with_bob(data.path());
    post(
        &app,
        &admin,
        "/Thingworx/Resources/EntityServices/Services/CreateUser",
        json!({"name": "keyonly"}),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let peer = Peer {
        addr: "127.0.0.1".parse().unwrap(),
        client_cert_user: None,
        slot: None,
    };
    let uri: Uri = "/Thingworx/Things".parse().unwrap();
    for (user, password, ok) in [
        ("bob", "wrong password", false),
        ("nobody", "any password", false),
        ("keyonly", "any password", false),
        ("bob", "bob's password", true),
    ] {
        let before = app.hash_pool.taken();
        let result = rt.block_on(thinghost::http::auth::authenticate(
            &app,
            &basic(user, password),
            &uri,
            &peer,
        ));
        assert_eq!(result.is_ok(), ok, "{user}");
        assert_eq!(
            app.hash_pool.taken(),
            before + 1,
            "{user}: one argon2 check, like every other"
        );
    }
}

#[test]
fn k5_passwords_are_hashed_without_holding_the_model_lock() {
    let data = tempfile::tempdir().unwrap();
    let (app, admin) = with_bob(data.path());
    let bob = caller(&app, "bob");
    // Both hashing threads are held: a password change waits for them.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Arc::new(std::sync::Mutex::new(held));
    let blockers: Vec<_> = (0..thinghost::state::keys::HashPool::THREADS)
        .map(|_| {
            let held = held.clone();
            app.hash_pool
                .submit(move || {
                    let _ = held.lock().unwrap().recv();
                })
                .unwrap()
        })
        .collect();
    let changing = {
        let (app, bob) = (app.clone(), bob.clone());
        std::thread::spawn(move || {
            post(
                &app,
                &bob,
                "/Thingworx/Users/bob/Services/ChangePassword",
                json!({"oldPassword": "bob's password", "newPassword": "a new password"}),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    // Meanwhile reads and changes of others go through: the lock is free.
    let (done, finished) = std::sync::mpsc::channel();
    {
        let (app, admin) = (app.clone(), admin.clone());
        std::thread::spawn(move || {
            let created = post(
                &app,
                &admin,
                "/Thingworx/Resources/EntityServices/Services/CreateThing",
                json!({"name": "T", "thingTemplateName": "GenericThing"}),
            );
            let _ = done.send(created.is_ok());
        });
    }
    assert_eq!(
        finished.recv_timeout(Duration::from_secs(20)),
        Ok(true),
        "a change waited for a password being hashed"
    );
    for _ in &blockers {
        release.send(()).unwrap();
    }
    assert!(changing.join().unwrap().is_ok());
}
