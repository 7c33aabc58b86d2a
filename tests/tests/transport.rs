//! Transport (K7) and logging, end to end: certificates from a CA, the production refusals of
//! weak signatures, mutual TLS, and the request log.

use serde_json::{Value as Json, json};
use thinghost_tests::{Server, Setup, text, thinghost, tls_fixture};

fn tls_args(name: &str) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        tls_fixture(&format!("{name}.pem")).display().to_string(),
        "--tls-key".into(),
        tls_fixture(&format!("{name}.key")).display().to_string(),
    ]
}

#[test]
fn k7_production_accepts_a_ca_signed_sha256_certificate_and_refuses_sha1() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    let d = dir.to_str().unwrap();
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--data".into(),
        d.into(),
        "--production".into(),
    ];
    args.extend(tls_args("server-sha1"));
    let o = thinghost(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o).1;
    assert!(err.contains("SHA-1") && err.contains("reissue"), "{err}");

    let mut extra: Vec<String> = vec!["--production".into()];
    extra.extend(tls_args("server-sha256"));
    let setup = Setup {
        ca: Some(tls_fixture("ca.pem")),
        ..Setup::default()
    };
    let s = Server::start_with(
        &dir,
        &extra.iter().map(String::as_str).collect::<Vec<_>>(),
        &setup,
    );
    let r = s
        .client
        .get(s.at("/Thingworx/Users"))
        .header("appKey", s.admin_key())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn k7_a_verified_client_certificate_authenticates_as_the_user_it_names() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    let mut extra = tls_args("server-sha256");
    extra.extend([
        "--client-ca".to_string(),
        tls_fixture("client-ca.pem").display().to_string(),
    ]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let plain = Server::start_with(
        &dir,
        &extra,
        &Setup {
            ca: Some(tls_fixture("ca.pem")),
            ..Setup::default()
        },
    );
    let admin = plain.admin_key();
    let who = "/Thingworx/Resources/CurrentSessionInfo/Services/GetCurrentUser";
    // Without a certificate (and no key): 401. Clients with keys still connect.
    let r = plain
        .client
        .post(plain.at(who))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = plain
        .client
        .post(plain.at(who))
        .header("appKey", &admin)
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(
        r.json::<Json>().unwrap()["rows"][0]["result"],
        "Administrator"
    );
    drop(plain);

    let setup = Setup {
        ca: Some(tls_fixture("ca.pem")),
        identity: Some((tls_fixture("alice.pem"), tls_fixture("alice.key"))),
        ..Setup::default()
    };
    let s = Server::start_with(&dir, &extra, &setup);
    // alice does not exist yet: her certificate alone is refused.
    let r = s.client.post(s.at(who)).json(&json!({})).send().unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .client
        .post(s.at("/Thingworx/Resources/EntityServices/Services/CreateUser"))
        .header("appKey", &admin)
        .json(&json!({"name": "alice", "password": "a long password"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s.client.post(s.at(who)).json(&json!({})).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Json>().unwrap()["rows"][0]["result"], "alice");
}

#[test]
fn the_request_log_has_one_json_line_per_request_and_never_a_key() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    let log = t.path().join("log.jsonl");
    let setup = Setup {
        log: Some(log.clone()),
        ..Setup::default()
    };
    let s = Server::start_with(&dir, &["--dev", "--log-format", "json"], &setup);
    let key = s.admin_key();
    assert_eq!(
        s.client
            .get(s.at("/Thingworx/Things"))
            .header("appKey", &key)
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        s.client
            .get(s.at(&format!("/Thingworx/Things?appKey={key}")))
            .send()
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        s.client
            .get(s.at("/Thingworx/Users"))
            .basic_auth("Administrator", Some("guess-me-not"))
            .send()
            .unwrap()
            .status(),
        401
    );
    drop(s);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(&key) && !text.contains("guess-me-not"),
        "a secret reached the log"
    );
    let requests: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str::<Json>(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .filter(|v| v["fields"]["message"] == "request")
        .collect();
    let things = requests
        .iter()
        .find(|r| r["fields"]["path"] == "/Thingworx/Things" && r["fields"]["status"] == 200)
        .expect("logged");
    assert_eq!(things["fields"]["method"], "GET");
    assert_eq!(things["fields"]["user"], "Administrator");
    assert!(things["fields"]["duration_ms"].is_number());
    assert!(requests.iter().any(|r| r["fields"]["status"] == 401));
}
