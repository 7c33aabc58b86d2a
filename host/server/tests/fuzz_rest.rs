//! V1 / REST: property-based fuzzing of the request path and of parameter decoding, in-process.
//!
//! Every request goes through `rest::handle` exactly as the HTTP layer hands it over (the path
//! still percent-encoded, the headers, the raw body), once as `Administrator` and once as an
//! ordinary user `bob` who sees `T1` and may read, write and invoke on it. Whatever arrives, the
//! server answers: it never panics, and it never answers 500 (a 500 is a bug the client cannot
//! fix; bad input is a 4xx).
//!
//! The generators mix the API's real words (collections, predefined entities, services,
//! parameters) with arbitrary text, percent-encodings valid and not (`%ZZ`, `%FF`, `%2F`, `%00`),
//! `.`/`..`, empty and very long segments; bodies are arbitrary bytes, arbitrary JSON, JSON nested
//! up to 300 levels, numbers out of every range, and objects of each real service's own
//! parameters with values of every type.
//!
//! Left out of the generators (slow, or acting outside the model): `RunScript`,
//! `ReloadExtension`, the audit log's archive, export, purge and cleanup, `ChangePassword`, and
//! `CreateUser` with a password (argon2 takes a while at opt-level 1); a request that decodes to
//! one of them anyway is skipped (see [`skipped`]).
//!
//! One property sends each request as a user deleted after the server resolved it (a request in
//! flight while an administrator deletes its user). Random requests may delete or lock `bob`,
//! take `T1` away and so on: the world is made again when they do. Each property prints how
//! many answers of each status it saw (`--nocapture`); `THINGHOST_FUZZ_CASES=N` runs N cases per
//! property instead of the default.
// The test looks at the engine's state directly, to check what the API answered.
#![allow(clippy::disallowed_methods)]

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value as Json, json};
use std::cell::RefCell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use thinghost::http::rest;
use thinghost::state::app::App;
use thinghost::state::audit::AuditLog;
use thinghost::state::auth::Caller;
use thinghost_core::{Kind, View};
use thinghost_store::{DB_FILE, Db};

// ---------------------------------------------------------------------------------------------
// The world: a data directory, the server's state, two callers.
// ---------------------------------------------------------------------------------------------

/// A server on a new data directory, with `bob`, `T1` (properties `temperature`, `label`,
/// `when`, `doc`, `count`, `table`), a file repository `Repo1`, a shape, a template, a DataShape,
/// a group and an organization `O1` with `bob` in it.
struct World {
    app: Arc<App>,
    admin: Caller,
    bob: Caller,
    /// How often random requests broke the fixture (deleted, disabled or locked a caller...)
    /// and the world was made again.
    rebuilds: u32,
    /// 503 answers seen (allowed, but worth a look): the first few requests.
    unavailable: Vec<String>,
    /// How many answers of each status (0: success), shown at the end.
    statuses: std::collections::BTreeMap<u16, u32>,
    _dir: tempfile::TempDir,
}

fn caller(app: &App, name: &str) -> Option<Caller> {
    let db = app.db.read().unwrap_or_else(|p| p.into_inner());
    let subject = thinghost::state::auth::user_usable(db.model(), name).ok()?;
    Some(Caller {
        subject,
        name: name.into(),
        depth: 0,
        chain: None,
        in_model_code: false,
    })
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h
}

/// A POST the fixture needs: it must succeed.
fn setup_call(app: &Arc<App>, who: &Caller, path: &str, body: Json) {
    let body = body.to_string();
    match rest::handle(
        app,
        who,
        &Method::POST,
        path,
        &json_headers(),
        body.as_bytes(),
    ) {
        Ok(_) => {}
        Err(e) => panic!(
            "setting up: POST {path} {body} answered {}: {}",
            e.status, e.message
        ),
    }
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().join("data");
        thinghost::cli::init::initialize(&data, 1).expect("a new data directory");
        let db = Db::open(&data, thinghost_core::Policy::default()).expect("the model opens");
        let audit_log =
            AuditLog::open(&data.join(DB_FILE), Default::default()).expect("the audit log opens");
        let app = Arc::new(App::standalone(db, audit_log, &data));
        let admin = caller(&app, "Administrator").expect("Administrator may act");

        let entity = "/Thingworx/Resources/EntityServices/Services";
        let call = |path: &str, body: Json| setup_call(&app, &admin, path, body);
        call(
            &format!("{entity}/CreateUser"),
            json!({"name": "bob", "password": "pw-12345678"}),
        );
        call(
            &format!("{entity}/CreateThing"),
            json!({"name": "T1", "thingTemplateName": "GenericThing"}),
        );
        call(
            &format!("{entity}/CreateThing"),
            json!({"name": "Repo1", "thingTemplateName": "FileRepository"}),
        );
        call(&format!("{entity}/CreateThingShape"), json!({"name": "S1"}));
        call(
            &format!("{entity}/CreateThingTemplate"),
            json!({"name": "TT1"}),
        );
        call(&format!("{entity}/CreateDataShape"), json!({"name": "DS1"}));
        call(&format!("{entity}/CreateGroup"), json!({"name": "G1"}));
        call(
            &format!("{entity}/CreateOrganization"),
            json!({"name": "O1"}),
        );
        for (name, base_type, default) in [
            ("temperature", "NUMBER", json!(20)),
            ("label", "STRING", json!("a label")),
            ("when", "DATETIME", Json::Null),
            ("doc", "JSON", Json::Null),
            ("count", "INTEGER", json!(1)),
            ("table", "INFOTABLE", Json::Null),
        ] {
            call(
                "/Thingworx/Things/T1/Services/AddPropertyDefinition",
                json!({"name": name, "type": base_type, "defaultValue": default}),
            );
        }
        call(
            "/Thingworx/Organizations/O1/Services/AddMember",
            json!({"name": "O1", "member": "bob", "type": "User"}),
        );
        call(
            "/Thingworx/Groups/G1/Services/AddMember",
            json!({"member": "bob", "type": "User"}),
        );
        for thing in ["T1", "Repo1"] {
            call(
                &format!("/Thingworx/Things/{thing}/Services/AddVisibilityPermission"),
                json!({"principal": "O1", "principalType": "Organization"}),
            );
            for permission in ["PropertyRead", "PropertyWrite", "ServiceInvoke"] {
                call(
                    &format!("/Thingworx/Things/{thing}/Services/AddRunTimePermission"),
                    json!({"principal": "bob", "principalType": "User", "type": permission,
                           "resource": "*", "allow": true}),
                );
            }
            call(
                &format!("/Thingworx/Things/{thing}/Services/AddDesignTimePermission"),
                json!({"principal": "bob", "principalType": "User", "type": "Read", "allow": true}),
            );
        }
        let bob = caller(&app, "bob").expect("bob may act");
        World {
            app,
            admin,
            bob,
            rebuilds: 0,
            unavailable: vec![],
            statuses: Default::default(),
            _dir: dir,
        }
    }

    /// Whether the fixture is still what the properties expect (random requests may delete,
    /// disable or lock a caller, or take away Administrator's group); the callers are resolved
    /// again (a caller's subject is per request in the server too).
    fn intact(&mut self) -> bool {
        let (Some(admin), Some(bob)) =
            (caller(&self.app, "Administrator"), caller(&self.app, "bob"))
        else {
            return false;
        };
        let db = self.app.db.read().unwrap_or_else(|p| p.into_inner());
        let m = db.model();
        let access = m.access();
        let fine = access.is_administrator(admin.subject)
            && m.get(Kind::Thing, "T1").is_some()
            && access
                .id(Kind::Thing, "T1")
                .is_some_and(|id| access.visible(bob.subject, id));
        drop(db);
        self.admin = admin;
        self.bob = bob;
        fine
    }

    /// Makes the world again if random requests broke it.
    fn repair(&mut self) {
        if !self.intact() {
            let mut fresh = World::new();
            fresh.rebuilds = self.rebuilds + 1;
            fresh.unavailable = std::mem::take(&mut self.unavailable);
            fresh.statuses = std::mem::take(&mut self.statuses);
            *self = fresh;
        }
    }

    /// Sends one request as both callers; fails the case on a panic or a 500.
    fn check(&mut self, req: &Request) -> Result<(), TestCaseError> {
        if skipped(req) {
            return Ok(());
        }
        self.repair();
        for who in [self.admin.clone(), self.bob.clone()] {
            self.send(&who, req)?;
        }
        Ok(())
    }

    /// Sends one request as a user deleted after the server resolved it (a request in flight
    /// while an administrator deletes its user), after the same request as Administrator (which
    /// may make new entities in the deleted user's place).
    fn check_stale(&mut self, req: &Request) -> Result<(), TestCaseError> {
        if skipped(req) {
            return Ok(());
        }
        self.repair();
        let admin = self.admin.clone();
        // Without a password: no argon2.
        setup_call(
            &self.app,
            &admin,
            "/Thingworx/Resources/EntityServices/Services/CreateUser",
            json!({"name": "carol"}),
        );
        let carol = caller(&self.app, "carol").expect("carol may act");
        rest::handle(
            &self.app,
            &admin,
            &Method::DELETE,
            "/Thingworx/Users/carol",
            &HeaderMap::new(),
            b"",
        )
        .map_err(|e| TestCaseError::fail(format!("deleting carol: {}", e.message)))?;
        self.send(&admin, req)?;
        self.send(&carol, req)
    }

    /// Sends one request as `who`; fails the case on a panic or a 500.
    fn send(&mut self, who: &Caller, req: &Request) -> Result<(), TestCaseError> {
        let headers = req.headers();
        let out = catch_unwind(AssertUnwindSafe(|| {
            rest::handle(&self.app, who, &req.method, &req.path, &headers, &req.body)
        }));
        let status = match &out {
            Ok(Ok(_)) => 0,
            Ok(Err(e)) => e.status.as_u16(),
            Err(_) => 1,
        };
        *self.statuses.entry(status).or_default() += 1;
        match out {
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "(not a string)".into());
                Err(TestCaseError::fail(format!(
                    "rest::handle panicked as {}: {what}\n  request: {req:?}",
                    who.name
                )))
            }
            Ok(Err(e)) if e.status == StatusCode::INTERNAL_SERVER_ERROR => {
                Err(TestCaseError::fail(format!(
                    "rest::handle answered 500 as {}: {}\n  request: {req:?}",
                    who.name, e.message
                )))
            }
            Ok(Err(e)) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
                if self.unavailable.len() < 5 {
                    self.unavailable
                        .push(format!("as {}: {}: {req:?}", who.name, e.message));
                }
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }
}

/// Runs `strategy` for `cases` cases against one world (made again when random requests break
/// it).
fn fuzz(cases: u32, strategy: impl Strategy<Value = Request>) {
    fuzz_with(cases, strategy, World::check);
}

/// [`fuzz`] with another check than [`World::check`].
fn fuzz_with(
    cases: u32,
    strategy: impl Strategy<Value = Request>,
    check: fn(&mut World, &Request) -> Result<(), TestCaseError>,
) {
    let world = RefCell::new(World::new());
    // THINGHOST_FUZZ_CASES runs longer (or shorter) than the default.
    let cases = std::env::var("THINGHOST_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    });
    let result = runner.run(&strategy, |req| check(&mut world.borrow_mut(), &req));
    let world = world.into_inner();
    eprintln!("answers by status (0: success): {:?}", world.statuses);
    if world.rebuilds > 0 {
        eprintln!("the world was made again {} times", world.rebuilds);
    }
    for u in &world.unavailable {
        eprintln!("503 (allowed, but look): {u}");
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Requests.
// ---------------------------------------------------------------------------------------------

/// What the request says its body is.
#[derive(Clone, Debug)]
enum ContentType {
    None,
    Text(&'static str),
    /// Any bytes a header value may hold (not always UTF-8).
    Raw(Vec<u8>),
    /// `application/json` and `text/plain`, both.
    Twice,
}

#[derive(Clone)]
struct Request {
    method: Method,
    /// As it arrives: percent-encoded.
    path: String,
    content_type: ContentType,
    body: Vec<u8>,
}

impl Request {
    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        match &self.content_type {
            ContentType::None => {}
            ContentType::Text(t) => {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(t));
            }
            ContentType::Raw(bytes) => {
                if let Ok(v) = HeaderValue::from_bytes(bytes) {
                    h.insert(header::CONTENT_TYPE, v);
                }
            }
            ContentType::Twice => {
                h.append(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                h.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
        }
        h
    }
}

/// `bytes` escaped, at most 600 of them (and how many there are when there are more).
fn show(bytes: &[u8]) -> String {
    if bytes.len() <= 600 {
        format!("\"{}\"", bytes.escape_ascii())
    } else {
        format!(
            "\"{}\"... ({} bytes)",
            bytes[..600].escape_ascii(),
            bytes.len()
        )
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} content-type: {:?} body: {}",
            self.method,
            show(self.path.as_bytes()),
            self.content_type,
            show(&self.body)
        )
    }
}

/// Services left out (slow, or acting outside the model).
const EXCLUDED: &[&str] = &[
    "RunScript",
    "ReloadExtension",
    "ArchiveAuditHistory",
    "ArchiveAuditHistoryDirectPersistence",
    "ExportAuditData",
    "ExportOnlineAuditData",
    "PurgeAuditData",
    "CleanupOfflineAudit",
    "ChangePassword",
];

/// Whether a request calls an excluded service (once decoded, as the server decodes it), or
/// CreateUser with a password (argon2).
fn skipped(req: &Request) -> bool {
    let decoded: Vec<String> = req
        .path
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    if decoded.iter().any(|s| EXCLUDED.contains(&s.as_str())) {
        return true;
    }
    decoded.iter().any(|s| s == "CreateUser")
        && serde_json::from_slice::<Json>(&req.body)
            .ok()
            .is_some_and(|b| b.get("password").is_some_and(Json::is_string))
}

// ---------------------------------------------------------------------------------------------
// Words.
// ---------------------------------------------------------------------------------------------

const COLLECTIONS: &[&str] = &[
    "Things",
    "ThingTemplates",
    "ThingShapes",
    "DataShapes",
    "Users",
    "Groups",
    "Organizations",
    "ApplicationKeys",
    "Subsystems",
    "Resources",
    "PersistenceProviders",
];

/// Entities that exist: (collection, name).
const ENTITIES: &[(&str, &str)] = &[
    ("Things", "T1"),
    ("Things", "Repo1"),
    ("Things", "AuditArchiveFileRepository"),
    ("Things", "AuditArchiveScheduler"),
    ("Things", "AuditPurgeScheduler"),
    ("Things", "AuditArchiveCleanupScheduler"),
    ("ThingTemplates", "GenericThing"),
    ("ThingTemplates", "FileRepository"),
    ("ThingTemplates", "Scheduler"),
    ("ThingTemplates", "TT1"),
    ("ThingShapes", "S1"),
    ("DataShapes", "AuditHistory"),
    ("DataShapes", "DS1"),
    ("Users", "bob"),
    ("Users", "Administrator"),
    ("Users", "System"),
    ("Groups", "Administrators"),
    ("Groups", "SecurityAdministrators"),
    ("Groups", "Users"),
    ("Groups", "Auditors"),
    ("Groups", "G1"),
    ("Organizations", "Everyone"),
    ("Organizations", "O1"),
    ("ApplicationKeys", "AdministratorInitialKey"),
    ("Subsystems", "AuditSubsystem"),
    ("Subsystems", "PlatformSubsystem"),
    ("Resources", "EntityServices"),
    ("Resources", "CurrentSessionInfo"),
    ("Resources", "CollectionFunctions"),
    ("Resources", "SecurityServices"),
    ("PersistenceProviders", "ThingworxPersistenceProvider"),
];

const PERMISSION_PARAMS: &[&str] = &["principal", "principalType", "type", "resource", "allow"];
const CREATE_PARAMS: &[&str] = &["name", "description", "tags"];
const DESIGN_PARAMS: &[&str] = &["principal", "principalType", "type", "allow"];
const QUERY_PARAMS: &[&str] = &["maxItems", "startDate", "endDate", "auditCategory", "query"];
const CRITERIA_PARAMS: &[&str] = &["query", "maxItems", "offset", "startDate", "endDate"];
const COUNT_PARAMS: &[&str] = &["startDate", "endDate", "auditCategory", "query"];

/// The services (none of [`EXCLUDED`]) and their parameters.
const SERVICES: &[(&str, &[&str])] = &[
    (
        "CreateThing",
        &["name", "description", "tags", "thingTemplateName"],
    ),
    (
        "CreateThingTemplate",
        &["name", "description", "tags", "thingTemplateName"],
    ),
    ("CreateThingShape", CREATE_PARAMS),
    (
        "CreateDataShape",
        &["name", "description", "tags", "fields"],
    ),
    ("CreateGroup", CREATE_PARAMS),
    (
        "CreateOrganization",
        &["name", "description", "tags", "topOUName"],
    ),
    (
        "CreateApplicationKey",
        &[
            "name",
            "description",
            "tags",
            "user",
            "expirationDate",
            "whitelist",
            "clientName",
        ],
    ),
    ("CreateUser", CREATE_PARAMS),
    ("DeleteThing", &["name"]),
    ("DeleteThingTemplate", &["name"]),
    ("DeleteThingShape", &["name"]),
    ("DeleteDataShape", &["name"]),
    ("DeleteUser", &["name"]),
    ("DeleteGroup", &["name"]),
    ("DeleteOrganization", &["name"]),
    ("DeleteApplicationKey", &["name"]),
    ("AddRunTimePermission", PERMISSION_PARAMS),
    ("DeleteRunTimePermission", PERMISSION_PARAMS),
    ("GetRunTimePermissions", &[]),
    ("AddDesignTimePermission", DESIGN_PARAMS),
    ("DeleteDesignTimePermission", DESIGN_PARAMS),
    ("GetDesignTimePermissions", &[]),
    ("AddVisibilityPermission", &["principal", "principalType"]),
    (
        "DeleteVisibilityPermission",
        &["principal", "principalType"],
    ),
    ("GetVisibilityPermissions", &[]),
    ("AddInstanceRunTimePermission", PERMISSION_PARAMS),
    ("DeleteInstanceDesignTimePermission", DESIGN_PARAMS),
    (
        "AddInstanceVisibilityPermission",
        &["principal", "principalType"],
    ),
    ("GetInstanceRunTimePermissions", &[]),
    (
        "AddCollectionRunTimePermission",
        &[
            "collectionName",
            "principal",
            "principalType",
            "type",
            "resource",
            "allow",
        ],
    ),
    (
        "DeleteCollectionDesignTimePermission",
        &[
            "collectionName",
            "principal",
            "principalType",
            "type",
            "allow",
        ],
    ),
    ("GetCollectionVisibilityPermissions", &["collectionName"]),
    ("AddPermissions", &["permissions"]),
    ("AddInstancePermissions", &["permissions"]),
    ("GetPermissionsForCurrentUser", &[]),
    ("CheckPermissionForUser", &["user", "type", "resource"]),
    (
        "AddPropertyDefinition",
        &["name", "type", "description", "defaultValue", "readOnly"],
    ),
    ("DeletePropertyDefinition", &["name"]),
    ("AddShapeToThing", &["thingShapeName"]),
    ("ImplementsShape", &["thingShapeName"]),
    ("AddMember", &["name", "member", "type"]),
    ("DeleteMember", &["name", "member", "type"]),
    ("AddOrganizationalUnit", &["parentName", "name"]),
    ("DeleteOrganizationalUnit", &["name"]),
    ("GetKeyID", &[]),
    ("EnableUser", &[]),
    ("DisableUser", &[]),
    ("LockUser", &[]),
    ("UnlockUser", &[]),
    ("ExplainAccess", &["user", "action", "target"]),
    ("EffectivePermissions", &["user"]),
    ("Lint", &[]),
    ("ListFiles", &["path"]),
    ("DeleteFile", &["path"]),
    ("GetCurrentUser", &[]),
    ("GetCurrentUserGroups", &[]),
    ("GetCurrentUserOrganizations", &[]),
    ("GetDefaultDataPersistenceProviderName", &[]),
    ("GetExtensionPackageList", &[]),
    ("GetExtensionPackageDetails", &["packageName"]),
    ("QueryAuditHistory", QUERY_PARAMS),
    ("QueryAuditHistoryWithQueryCriteria", CRITERIA_PARAMS),
    ("GetAuditEntryCount", COUNT_PARAMS),
    ("VerifyAuditChain", &[]),
    ("GetPropertyValues", &[]),
    ("SetPropertyValues", &["values"]),
];

/// Every parameter name the services know, and a few they do not.
const PARAM_NAMES: &[&str] = &[
    "name",
    "description",
    "tags",
    "thingTemplateName",
    "thingShapeName",
    "fields",
    "user",
    "password",
    "expirationDate",
    "whitelist",
    "clientName",
    "topOUName",
    "principal",
    "principalType",
    "type",
    "resource",
    "allow",
    "collectionName",
    "permissions",
    "defaultValue",
    "readOnly",
    "member",
    "parentName",
    "action",
    "target",
    "path",
    "packageName",
    "maxItems",
    "offset",
    "startDate",
    "endDate",
    "auditCategory",
    "query",
    "temperature",
    "label",
    "when",
    "doc",
    "count",
    "table",
    "schedule",
    "runAsUser",
    "enabled",
    "",
    "__proto__",
    "constructor",
];

/// T1's properties, the audit Things' properties, and some that do not exist.
const PROPERTIES: &[(&str, &str)] = &[
    ("T1", "temperature"),
    ("T1", "label"),
    ("T1", "when"),
    ("T1", "doc"),
    ("T1", "count"),
    ("T1", "table"),
    ("T1", "nothing"),
    ("AuditArchiveScheduler", "schedule"),
    ("AuditArchiveScheduler", "runAsUser"),
    ("AuditArchiveScheduler", "enabled"),
    ("AuditArchiveScheduler", "lastArchivedTime"),
    ("AuditArchiveCleanupScheduler", "DaysToArchive"),
    ("AuditPurgeScheduler", "schedule"),
    ("Repo1", "nothing"),
];

const OTHER_WORDS: &[&str] = &[
    "Thingworx",
    "Properties",
    "Services",
    "Events",
    "T1",
    "Repo1",
    "bob",
    "Administrator",
    "System",
    "Everyone",
    "O1",
    "G1",
    "S1",
    "TT1",
    "DS1",
    "GenericThing",
    "FileRepository",
    "AuditSubsystem",
    "PlatformSubsystem",
    "EntityServices",
    "SecurityServices",
    "ScriptServices",
    "CurrentSessionInfo",
    "CollectionFunctions",
    "temperature",
    "thingworx",
    "THINGS",
    "Things ",
    "T1\u{0}",
];

/// Strings as parameter values: names that exist, names the rules refuse, base types,
/// permissions, principal types, dates, cron expressions, JSON in a string, file paths.
const STRING_VALUES: &[&str] = &[
    "T1",
    "Repo1",
    "bob",
    "Administrator",
    "System",
    "Administrators",
    "SecurityAdministrators",
    "Auditors",
    "Users",
    "Everyone",
    "O1",
    "O1:O1",
    "O1:",
    ":O1",
    ":",
    "Everyone:Everyone",
    "G1",
    "S1",
    "TT1",
    "DS1",
    "GenericThing",
    "FileRepository",
    "Scheduler",
    "DataTable",
    "Stream",
    "ValueStream",
    "AuditHistory",
    "AdministratorInitialKey",
    "Things",
    "Users",
    "Groups",
    "Organizations",
    "ThingTemplates",
    "NewThing",
    "new thing",
    "a/b",
    "a\\b",
    "..",
    ".",
    "",
    " ",
    "\u{0}",
    "x\u{0}y",
    "\u{feff}",
    "é",
    "\u{202e}evil",
    "🦀",
    "NUMBER",
    "STRING",
    "INTEGER",
    "LONG",
    "BOOLEAN",
    "DATETIME",
    "JSON",
    "INFOTABLE",
    "QUERY",
    "PASSWORD",
    "TEXT",
    "GUID",
    "THINGNAME",
    "USERNAME",
    "NOTHING",
    "number",
    "Create",
    "Read",
    "Update",
    "Delete",
    "PropertyRead",
    "PropertyWrite",
    "ServiceInvoke",
    "EventInvoke",
    "EventSubscribe",
    "Service Execute",
    "Fly",
    "*",
    "User",
    "Group",
    "Organization",
    "OrganizationalUnit",
    "visibility",
    "designTime",
    "runTime",
    "AUTHORIZATION",
    "MODEL",
    "SECURITY",
    "AUDIT",
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00.123+05:30",
    "2024-02-30T00:00:00Z",
    "2024-13-45T99:99:99Z",
    "+275760-09-13T00:00:00Z",
    "-271821-04-20T00:00:00Z",
    "9999-12-31T23:59:59.999999999+14:00",
    "0000-01-01T00:00:00Z",
    "1970-01-01",
    "T",
    "1e400",
    "9223372036854775808",
    "-9223372036854775809",
    "0 0 0 * * *",
    "* * * * * *",
    "61 * * * * *",
    "0/0 * * * * *",
    "@yearly",
    "* * * * * * * * *",
    "{}",
    "[]",
    "[",
    "{\"filters\":{\"type\":\"EQ\",\"fieldName\":\"user\",\"value\":\"bob\"}}",
    "{\"a\":1e400}",
    "null",
    "../..",
    "../../etc/passwd",
    "/etc/passwd",
    "a/../../b",
    ".hidden",
    "dir/file.txt",
    "//",
    "%2e%2e",
    "file\u{0}name",
    "Things/T1",
    "Things/T1/Properties/temperature",
    "Subsystems/AuditSubsystem",
];

const ENCODINGS: &[&str] = &[
    "%ZZ",
    "%FF",
    "%2F",
    "%2f",
    "%00",
    "%",
    "%2",
    "%%",
    "%C3%A9",
    "%E2%82",
    "%2e",
    "%2e%2e",
    "%20",
    "%252F",
    "%C0%AF",
    "%ED%A0%80",
    "%F4%90%80%80",
    "%EF%BB%BF",
    "%3F",
    "%23",
    "%5C",
    "%0A",
    "%0D%0A",
    "%7F",
    "%C3",
    "+",
    "?",
    "#",
    "?x=1",
    ";jsessionid=1",
];

/// Number literals no `f64` or `i64` holds, or barely.
const NUMBER_LITERALS: &[&str] = &[
    "1e400",
    "-1e400",
    "1E+99999999999",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "4.9e-324",
    "1e-400",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "9007199254740993",
    "123456789012345678901234567890123456789",
    "-0",
    "-0.0",
    "0e0",
    "0.5",
    "-1",
    "2147483648",
    "-2147483649",
    "NaN",
    "Infinity",
    "-Infinity",
    "01",
    "1.",
    ".5",
    "+1",
    "0x10",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    " application/json ",
    "application/vnd.thinghost+json",
    "application/+json",
    "application/json;;;",
    "application/jsonx",
    "text/plain",
    "text/json",
    "multipart/form-data; boundary=x",
    "",
    ";",
];

// ---------------------------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------------------------

fn word() -> BoxedStrategy<String> {
    let services: Vec<&'static str> = SERVICES.iter().map(|(s, _)| *s).collect();
    let entities: Vec<&'static str> = ENTITIES.iter().map(|(_, e)| *e).collect();
    prop_oneof![
        select(COLLECTIONS),
        select(services),
        select(entities),
        select(OTHER_WORDS),
        select(PARAM_NAMES),
    ]
    .prop_map(String::from)
    .boxed()
}

/// Every byte of `s` percent-encoded (upper or lower case hex): it decodes to `s`.
fn encode_all(s: &str, lower: bool) -> String {
    s.bytes()
        .map(|b| {
            if lower {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A piece of a path segment.
fn piece() -> BoxedStrategy<String> {
    prop_oneof![
        4 => word(),
        2 => "[A-Za-z0-9 _.~:@!$&'()*+,;=-]{0,12}",
        1 => any::<String>(),
        3 => select(ENCODINGS).prop_map(String::from),
        1 => select(&[".", "..", "", "...", "./", ".%2e"][..]).prop_map(String::from),
        1 => (word(), any::<bool>()).prop_map(|(w, lower)| encode_all(&w, lower)),
    ]
    .boxed()
}

/// One path segment: real words, arbitrary text, percent-encodings, dots, very long runs.
fn segment() -> BoxedStrategy<String> {
    prop_oneof![
        8 => piece(),
        3 => prop::collection::vec(piece(), 1..4).prop_map(|p| p.concat()),
        1 => (1usize..70_000, select(&["A", "%41", "é", "%", "."][..]))
            .prop_map(|(n, s)| s.repeat(n)),
    ]
    .boxed()
}

/// Paths of anything: segments joined by `/`, with or without `/Thingworx` first.
fn any_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(segment(), 0..8),
        0..4u8,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(segments, prefix, leading, trailing)| {
            let mut path = String::new();
            if leading {
                path.push('/');
            }
            match prefix {
                0 | 1 => path.push_str("Thingworx/"),
                2 => path.push_str("Thingworx//"),
                _ => {}
            }
            path.push_str(&segments.join("/"));
            if trailing {
                path.push('/');
            }
            path
        })
}

/// A real entity, mostly; sometimes a collection with an arbitrary name.
fn entity() -> BoxedStrategy<(String, String)> {
    prop_oneof![
        6 => select(ENTITIES).prop_map(|(c, e)| (c.to_string(), e.to_string())),
        1 => (select(COLLECTIONS).prop_map(String::from), segment()),
    ]
    .boxed()
}

/// Maybe percent-encodes a segment entirely (it still decodes to the same name).
fn maybe_encoded(s: String, how: u8) -> String {
    match how {
        0 => encode_all(&s, false),
        1 => encode_all(&s, true),
        _ => s,
    }
}

/// Paths of the API's shape: `/Thingworx/{Collection}/{Entity}[/{Properties|Services|Events}/{member}]`.
fn api_path() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        4 => select(SERVICES).prop_map(|(s, _)| s.to_string()),
        2 => select(PROPERTIES).prop_map(|(_, p)| p.to_string()),
        1 => segment(),
    ];
    let tail = prop_oneof![
        2 => Just(String::new()),
        6 => (select(&["Properties", "Services", "Events", "properties"][..]), member)
            .prop_map(|(k, m)| format!("/{k}/{m}")),
        1 => select(&["Properties", "Services", "Events"][..]).prop_map(|k| format!("/{k}")),
        1 => (segment(), segment()).prop_map(|(a, b)| format!("/{a}/{b}")),
        1 => (select(SERVICES), segment()).prop_map(|((s, _), x)| format!("/Services/{s}/{x}")),
    ];
    (entity(), tail, 0..8u8, 0..8u8).prop_map(|((c, e), tail, ec, ee)| {
        format!(
            "/Thingworx/{}/{}{tail}",
            maybe_encoded(c, ec),
            maybe_encoded(e, ee)
        )
    })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        select(vec![
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::HEAD,
            Method::OPTIONS,
        ]),
        Just(Method::from_bytes(b"BREW").expect("a method")),
    ]
}

fn content_type() -> impl Strategy<Value = ContentType> {
    prop_oneof![
        6 => Just(ContentType::Text("application/json")),
        2 => Just(ContentType::None),
        3 => select(CONTENT_TYPES).prop_map(ContentType::Text),
        1 => prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..24)
            .prop_map(ContentType::Raw),
        1 => Just(ContentType::Twice),
    ]
}

fn string_value() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(STRING_VALUES).prop_map(String::from),
        2 => "[A-Za-z0-9_ -]{0,16}",
        1 => any::<String>(),
        1 => (1usize..5_000, select(&["x", "é", "\u{0}", "../", "*"][..]))
            .prop_map(|(n, s)| s.repeat(n)),
    ]
    .boxed()
}

/// Doubles at the edges: of i32, of i64, of the exact integers, of DATETIME's range.
const ODD_FLOATS: &[f64] = &[
    0.0,
    -0.0,
    -1.0,
    0.5,
    1.5,
    -1.5,
    1e308,
    -1e308,
    f64::MAX,
    f64::MIN,
    f64::MIN_POSITIVE,
    5e-324,
    9_007_199_254_740_993.0,
    9.3e18,
    1.8e19,
    2_147_483_648.0,
    -2_147_483_649.0,
    8.64e15,
    8_640_000_000_000_001.0,
    -8_640_000_000_000_001.0,
    1e15,
];

const ODD_INTS: &[i64] = &[i64::MIN, i64::MAX, -1, 0, 1, 2_147_483_648, -2_147_483_649];

fn number_value() -> BoxedStrategy<Json> {
    prop_oneof![
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        select(ODD_FLOATS).prop_map(Json::from),
        select(ODD_INTS).prop_map(Json::from),
        Just(Json::from(u64::MAX)),
    ]
    .boxed()
}

fn json_leaf() -> BoxedStrategy<Json> {
    prop_oneof![
        1 => Just(Json::Null),
        1 => any::<bool>().prop_map(Json::Bool),
        3 => number_value(),
        4 => string_value().prop_map(Json::String),
    ]
    .boxed()
}

/// Any JSON, a few levels deep.
fn json_value() -> BoxedStrategy<Json> {
    json_leaf()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                prop::collection::vec(
                    (
                        prop_oneof![select(PARAM_NAMES).prop_map(String::from), string_value()],
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| Json::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// JSON nested `depth` levels: arrays or objects.
fn nested(depth: usize, objects: bool) -> Json {
    let mut v = json!(1);
    for _ in 0..depth {
        v = if objects {
            json!({ "a": v })
        } else {
            json!([v])
        };
    }
    v
}

/// An audit QUERY: filters (nested AND/OR) and sorts, mostly well-formed, with odd values.
fn audit_query() -> BoxedStrategy<Json> {
    let field = select(
        &[
            "id",
            "timestamp",
            "user",
            "auditCategory",
            "category",
            "message",
            "messageKey",
            "source",
            "sourceType",
            "args",
            "arguments",
            "nope",
        ][..],
    );
    let kind = select(
        &[
            "EQ",
            "NE",
            "NEQ",
            "GT",
            "GE",
            "LT",
            "LE",
            "LIKE",
            "NOTLIKE",
            "like",
            "BETWEEN",
            "NOTBETWEEN",
            "IN",
            "NOTIN",
            "XOR",
        ][..],
    );
    let value = prop_oneof![
        json_leaf(),
        select(&["%", "_", "*", "?", "\\", "'", "\"; DROP TABLE audit; --"][..])
            .prop_map(Json::from),
    ]
    .boxed();
    let leaf = (
        kind,
        field,
        value.clone(),
        value.clone(),
        value.clone(),
        prop::collection::vec(value, 0..5),
    )
        .prop_map(|(k, f, v, from, to, values)| {
            json!({"type": k, "fieldName": f, "value": v, "from": from, "to": to, "values": values})
        });
    let filter = leaf.prop_recursive(6, 40, 4, |inner| {
        (
            select(&["AND", "OR", "and", "EQ"][..]),
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|(k, parts)| json!({"type": k, "filters": parts}))
    });
    let sorts = prop::collection::vec(
        (
            select(&["timestamp", "id", "user", "nope"][..]),
            json_leaf(),
        )
            .prop_map(|(f, asc)| json!({"fieldName": f, "isAscending": asc})),
        0..3,
    );
    prop_oneof![
        4 => (filter, sorts, any::<bool>()).prop_map(|(f, s, as_text)| {
            let q = json!({"filters": f, "sorts": s});
            if as_text { Json::String(q.to_string()) } else { q }
        }),
        // Many values: SQLite takes at most 32,766 bound parameters.
        1 => (1usize..1100, 1usize..40).prop_map(|(n, k)| {
            let inn = json!({"type": "IN", "fieldName": "user", "values": vec![json!("bob"); n]});
            json!({"filters": {"type": "OR", "filters": vec![inn; k]}})
        }),
        1 => (1usize..130).prop_map(|d| {
            let mut f = json!({"type": "EQ", "fieldName": "user", "value": "bob"});
            for _ in 0..d {
                f = json!({"type": "AND", "filters": [f]});
            }
            json!({"filters": f})
        }),
    ]
    .boxed()
}

/// Strings from `pool` mostly, any string now and then.
fn one_of(pool: &'static [&'static str]) -> BoxedStrategy<Json> {
    prop_oneof![
        6 => select(pool).prop_map(Json::from),
        1 => string_value().prop_map(Json::String),
    ]
    .boxed()
}

const PERMISSIONS: &[&str] = &[
    "Create",
    "Read",
    "Update",
    "Delete",
    "PropertyRead",
    "PropertyWrite",
    "ServiceInvoke",
    "EventInvoke",
    "EventSubscribe",
    "Service Execute",
    "property read",
    "Fly",
    "",
];

const BASE_TYPES: &[&str] = &[
    "NUMBER",
    "STRING",
    "INTEGER",
    "LONG",
    "BOOLEAN",
    "DATETIME",
    "JSON",
    "INFOTABLE",
    "QUERY",
    "PASSWORD",
    "TEXT",
    "GUID",
    "THINGNAME",
    "THINGTEMPLATENAME",
    "USERNAME",
    "GROUPNAME",
    "NOTHING",
    "number",
    "Number",
    "VEC3",
];

const PRINCIPAL_TYPES: &[&str] = &[
    "User",
    "Group",
    "Organization",
    "OrganizationalUnit",
    "user",
    "Thing",
    "",
];

const PRINCIPALS: &[&str] = &[
    "bob",
    "Administrator",
    "System",
    "Administrators",
    "SecurityAdministrators",
    "Developers",
    "Users",
    "Auditors",
    "G1",
    "O1",
    "O1:O1",
    "Everyone",
    "Everyone:Everyone",
    "O1:Nowhere",
    "nobody",
    "T1",
];

const TARGETS: &[&str] = &[
    "Things/T1",
    "Things/T1/Properties/temperature",
    "Things/T1/Services/Lint",
    "Things",
    "Subsystems/AuditSubsystem",
    "Things/Nope",
    "Nope/T1",
    "Things/T1/Properties",
    "/Thingworx/Things/T1",
    "",
];

const DATES: &[&str] = &[
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00.123+05:30",
    "2024-02-30T00:00:00Z",
    "+275760-09-13T00:00:00Z",
    "-271821-04-20T00:00:00Z",
    "9999-12-31T23:59:59.999999999+14:00",
    "0000-01-01T00:00:00Z",
    "1970-01-01",
    "2100-01-01T00:00:00Z",
    "",
];

const ADDRESSES: &[&str] = &[
    "127.0.0.1",
    "10.0.0.0/8",
    "::1",
    "fe80::/10",
    "0.0.0.0/0",
    "300.1.1.1/99",
    "10.0.0.0/33",
    "::/129",
    "*",
    "localhost",
];

/// A value for a parameter called `name`: what it expects, mostly, or anything.
fn param_value(name: &'static str) -> BoxedStrategy<Json> {
    let fitting: BoxedStrategy<Json> = match name {
        "query" => audit_query(),
        "permissions" => prop::collection::vec(
            (
                select(&["visibility", "designTime", "runTime", "bogus"][..]),
                one_of(PRINCIPALS),
                one_of(PRINCIPAL_TYPES),
                one_of(PERMISSIONS),
                prop_oneof![4 => any::<bool>().prop_map(Json::Bool), 1 => json_leaf()],
                one_of(&["*", "temperature", "Lint", ""]),
            )
                .prop_map(|(fam, p, pt, t, allow, r)| {
                    json!({"family": fam, "principal": p, "principalType": pt, "type": t,
                           "allow": allow, "resource": r})
                }),
            0..4,
        )
        .prop_map(Json::Array)
        .boxed(),
        "fields" => prop::collection::vec(
            (string_value(), one_of(BASE_TYPES), json_leaf())
                .prop_map(|(n, t, pk)| json!({"name": n, "baseType": t, "isPrimaryKey": pk})),
            0..4,
        )
        .prop_map(Json::Array)
        .boxed(),
        "tags" => prop::collection::vec(json_leaf(), 0..4)
            .prop_map(Json::Array)
            .boxed(),
        "whitelist" => prop::collection::vec(one_of(ADDRESSES), 0..4)
            .prop_map(Json::Array)
            .boxed(),
        "table" => (
            prop::collection::vec((string_value(), one_of(BASE_TYPES)), 0..3),
            prop::collection::vec(json_value(), 0..3),
        )
            .prop_map(|(fields, rows)| {
                let fields: serde_json::Map<String, Json> = fields
                    .into_iter()
                    .map(|(n, t)| (n.clone(), json!({"name": n, "baseType": t})))
                    .collect();
                json!({"dataShape": {"fieldDefinitions": fields}, "rows": rows})
            })
            .boxed(),
        // New names (a Create succeeds), names that exist, names the rules refuse.
        "name" | "parentName" | "topOUName" => prop_oneof![
            3 => "N[0-9]".prop_map(Json::String),
            3 => one_of(&["T1", "O1", "G1", "S1", "TT1", "DS1", "bob", "temperature", "Everyone"]),
            1 => string_value().prop_map(Json::String),
        ]
        .boxed(),
        "thingTemplateName" => one_of(&[
            "GenericThing",
            "TT1",
            "FileRepository",
            "Scheduler",
            "DataTable",
            "Stream",
            "ValueStream",
            "T1",
        ]),
        "thingShapeName" => one_of(&["S1", "TT1", "Nope"]),
        "user" | "principal" | "member" => one_of(PRINCIPALS),
        "principalType" => one_of(PRINCIPAL_TYPES),
        "type" => prop_oneof![
            one_of(PERMISSIONS),
            one_of(BASE_TYPES),
            one_of(PRINCIPAL_TYPES)
        ]
        .boxed(),
        "action" => one_of(PERMISSIONS),
        "target" => one_of(TARGETS),
        "resource" => one_of(&["*", "temperature", "Lint", "QueryAuditHistory", ""]),
        "collectionName" => one_of(COLLECTIONS),
        "auditCategory" => one_of(&["AUTHORIZATION", "MODEL", "SECURITY", "AUDIT", "nope"]),
        "path" => one_of(&[
            "",
            "/",
            ".",
            "..",
            "../..",
            "/etc/passwd",
            "a/../../b",
            ".hidden",
            "dir/file.txt",
            "//",
            "a\u{0}b",
        ]),
        "packageName" | "clientName" | "description" => {
            string_value().prop_map(Json::String).boxed()
        }
        "allow" | "readOnly" | "enabled" => prop_oneof![
            4 => any::<bool>().prop_map(Json::Bool),
            1 => one_of(&["true", "false", "yes"]),
        ]
        .boxed(),
        "maxItems" | "offset" | "count" | "temperature" | "DaysToArchive" => prop_oneof![
            2 => (0u32..1000).prop_map(Json::from),
            3 => number_value(),
            1 => one_of(&["10", "1e3", "-1"]),
        ]
        .boxed(),
        "startDate" | "endDate" | "expirationDate" | "when" | "lastArchivedTime" => prop_oneof![
            1 => number_value(),
            2 => one_of(DATES),
        ]
        .boxed(),
        "schedule" => one_of(&[
            "0 0 0 * * *",
            "* * * * * *",
            "61 * * * * *",
            "0/0 * * * * *",
            "@yearly",
            "* * * * * * * * *",
            "0 0 0 31 2 *",
            "",
        ]),
        "runAsUser" => one_of(PRINCIPALS),
        "defaultValue" | "doc" => json_value(),
        _ => json_leaf(),
    };
    prop_oneof![
        40 => fitting,
        6 => json_leaf(),
        3 => json_value(),
        1 => (1usize..=200, any::<bool>()).prop_map(|(d, o)| nested(d, o)),
    ]
    .boxed()
}

/// A parameter object for a service taking `params`: each of them, mostly (with a value that
/// fits, mostly), and now and then a stranger.
fn params_for(params: &'static [&'static str]) -> BoxedStrategy<Json> {
    let own: Vec<BoxedStrategy<Option<(String, Json)>>> = params
        .iter()
        .map(|&n| {
            prop::option::weighted(0.9, param_value(n).prop_map(move |v| (n.to_string(), v)))
                .boxed()
        })
        .collect();
    let stranger = (
        prop_oneof![select(PARAM_NAMES).prop_map(String::from), any::<String>()],
        json_leaf(),
    );
    (own, prop::option::weighted(0.1, stranger))
        .prop_map(|(kv, stranger)| Json::Object(kv.into_iter().flatten().chain(stranger).collect()))
        .boxed()
}

/// JSON text nested up to 300 levels (serde_json stops at 128), balanced or not, alone or as
/// a parameter's value (or a parameter's JSON-in-a-string).
fn deep_text() -> impl Strategy<Value = Vec<u8>> {
    (1usize..=300, 0..6u8, select(PARAM_NAMES)).prop_map(|(n, form, param)| {
        let arrays = format!("{}{}", "[".repeat(n), "]".repeat(n));
        let text = match form {
            0 => arrays,
            1 => format!("{}0{}", "{\"a\":".repeat(n), "}".repeat(n)),
            2 => "[".repeat(n),
            3 => format!("{{{}: {arrays}}}", json!(param)),
            4 => format!("{{{}: {}}}", json!(param), json!(arrays)),
            _ => format!("{{\"query\": {}}}", json!(nested(n, true).to_string())),
        };
        text.into_bytes()
    })
}

/// A parameter with a number literal no double or i64 holds.
fn literal_body() -> impl Strategy<Value = Vec<u8>> {
    (
        select(PARAM_NAMES),
        prop_oneof![
            4 => select(NUMBER_LITERALS).prop_map(String::from),
            1 => (1usize..2000).prop_map(|n| "9".repeat(n)),
            1 => (1usize..2000).prop_map(|n| format!("0.{}1", "0".repeat(n))),
        ],
    )
        .prop_map(|(p, lit)| format!("{{{}: {lit}}}", json!(p)).into_bytes())
}

/// Valid JSON with one byte changed, or cut short.
fn mutated(json: BoxedStrategy<Json>) -> impl Strategy<Value = Vec<u8>> {
    (
        json,
        any::<prop::sample::Index>(),
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(|(v, at, byte, cut)| {
            let mut bytes = serde_json::to_vec(&v).expect("serializes");
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                if cut {
                    bytes.truncate(i);
                } else {
                    bytes[i] = byte;
                }
            }
            bytes
        })
}

const ODD_BODIES: &[&str] = &[
    "",
    " ",
    "\n\t\r ",
    "null",
    "[]",
    "[{}]",
    "{",
    "}",
    "{}}",
    "\"x\"",
    "1",
    "true",
    "{\"a\":1,}",
    "\u{feff}{}",
    "{\"name\":\"\\ud800\"}",
    "{\"name\":\"\\u0000\"}",
    "{\"name\":\"T1\",\"name\":\"T2\"}",
    "{\"name\":1}{\"name\":2}",
    "/* comment */ {}",
    "{'name': 'T1'}",
];

/// Any body: parameters of `params` (or of anything), arbitrary JSON, deep JSON, odd numbers,
/// arbitrary bytes.
fn body(params: &'static [&'static str]) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        8 => params_for(params).prop_map(|v| serde_json::to_vec(&v).expect("serializes")),
        2 => json_value().prop_map(|v| serde_json::to_vec(&v).expect("serializes")),
        2 => deep_text(),
        2 => literal_body(),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => select(ODD_BODIES).prop_map(|s| s.as_bytes().to_vec()),
        1 => mutated(params_for(params)),
    ]
    .boxed()
}

/// Any request: any method, any path, any headers, any body.
fn any_request() -> impl Strategy<Value = Request> {
    (
        method(),
        prop_oneof![any_path(), api_path()],
        content_type(),
        body(&[]),
    )
        .prop_map(|(method, path, content_type, body)| Request {
            method,
            path,
            content_type,
            body,
        })
}

/// Any method on a path of the API's shape.
fn api_path_request() -> impl Strategy<Value = Request> {
    (method(), api_path(), content_type(), body(&[])).prop_map(
        |(method, path, content_type, body)| Request {
            method,
            path,
            content_type,
            body,
        },
    )
}

/// A call of a real service on an entity (real, mostly), with a body of its parameters (mostly).
fn service_request() -> impl Strategy<Value = Request> {
    (select(SERVICES), entity(), 0..12u8).prop_flat_map(|((service, params), (c, e), how)| {
        let path = format!(
            "/Thingworx/{}/{}/Services/{}",
            c,
            maybe_encoded(e, how),
            maybe_encoded(service.to_string(), how.wrapping_add(1))
        );
        (
            prop_oneof![
                12 => Just(Method::POST),
                1 => method(),
            ],
            Just(path),
            prop_oneof![
                10 => Just(ContentType::Text("application/json")),
                1 => content_type(),
            ],
            body(params),
        )
            .prop_map(|(method, path, content_type, body)| Request {
                method,
                path,
                content_type,
                body,
            })
    })
}

/// The Delete services of `Resources/EntityServices`.
const ENTITY_DELETES: &[&str] = &[
    "DeleteThing",
    "DeleteThingTemplate",
    "DeleteThingShape",
    "DeleteDataShape",
    "DeleteUser",
    "DeleteGroup",
    "DeleteOrganization",
    "DeleteApplicationKey",
];

/// Calls of each real service where it lives (its entity, or the entities it acts on), with
/// its own parameters, mostly.
fn targeted_service_request() -> impl Strategy<Value = Request> {
    /// Where each service is meant to be called.
    fn home(service: &str) -> &'static [(&'static str, &'static str)] {
        match service {
            s if s.starts_with("Create") || ENTITY_DELETES.contains(&s) => {
                &[("Resources", "EntityServices")]
            }
            s if s.contains("Collection") => &[("Resources", "CollectionFunctions")],
            s if s.contains("Instance") => &[("ThingTemplates", "TT1"), ("ThingShapes", "S1")],
            "ExplainAccess" | "EffectivePermissions" | "Lint" => {
                &[("Resources", "SecurityServices")]
            }
            "GetCurrentUser" | "GetCurrentUserGroups" | "GetCurrentUserOrganizations" => {
                &[("Resources", "CurrentSessionInfo")]
            }
            "GetDefaultDataPersistenceProviderName"
            | "GetExtensionPackageList"
            | "GetExtensionPackageDetails" => &[("Subsystems", "PlatformSubsystem")],
            "QueryAuditHistoryWithQueryCriteria" | "GetAuditEntryCount" | "VerifyAuditChain" => {
                &[("Subsystems", "AuditSubsystem")]
            }
            "QueryAuditHistory" => &[("Subsystems", "AuditSubsystem"), ("Things", "T1")],
            "ListFiles" | "DeleteFile" => &[
                ("Things", "Repo1"),
                ("Things", "AuditArchiveFileRepository"),
            ],
            "AddShapeToThing" => &[("Things", "T1")],
            "ImplementsShape" | "AddPropertyDefinition" | "DeletePropertyDefinition" => &[
                ("Things", "T1"),
                ("ThingTemplates", "TT1"),
                ("ThingShapes", "S1"),
            ],
            "AddMember" | "DeleteMember" => &[("Groups", "G1"), ("Organizations", "O1")],
            "AddOrganizationalUnit" | "DeleteOrganizationalUnit" => &[("Organizations", "O1")],
            "GetKeyID" => &[("ApplicationKeys", "AdministratorInitialKey")],
            "EnableUser" | "DisableUser" | "LockUser" | "UnlockUser" => {
                &[("Users", "bob"), ("Users", "System")]
            }
            _ => &[("Things", "T1"), ("Groups", "G1"), ("Users", "bob")],
        }
    }
    select(SERVICES).prop_flat_map(|(service, params)| {
        let body = prop_oneof![
            6 => params_for(params).prop_map(|v| serde_json::to_vec(&v).expect("serializes")),
            1 => body(params),
        ];
        (select(home(service)), body).prop_map(move |((c, e), body)| Request {
            method: Method::POST,
            path: format!("/Thingworx/{c}/{e}/Services/{service}"),
            content_type: ContentType::Text("application/json"),
            body,
        })
    })
}

/// Reads and writes of properties, with values of every type.
fn property_request() -> impl Strategy<Value = Request> {
    (
        select(PROPERTIES),
        prop_oneof![
            6 => Just(Method::PUT),
            3 => Just(Method::GET),
            1 => method(),
        ],
        prop_oneof![
            8 => Just(ContentType::Text("application/json")),
            1 => content_type(),
        ],
        0..12u8,
    )
        .prop_flat_map(|((thing, prop), method, content_type, how)| {
            let as_object = param_value(prop)
                .prop_map(move |v| serde_json::to_vec(&json!({ prop: v })).expect("serializes"));
            let body = prop_oneof![
                8 => as_object,
                1 => select(NUMBER_LITERALS)
                    .prop_map(move |lit| format!("{{{}: {lit}}}", json!(prop)).into_bytes()),
                2 => body(&[]),
            ];
            (
                Just(format!(
                    "/Thingworx/Things/{thing}/Properties/{}",
                    maybe_encoded(prop.to_string(), how)
                )),
                body,
            )
                .prop_map(move |(path, body)| Request {
                    method: method.clone(),
                    path,
                    content_type: content_type.clone(),
                    body,
                })
        })
}

// ---------------------------------------------------------------------------------------------
// The properties.
// ---------------------------------------------------------------------------------------------

#[test]
fn v1_rest_path_never_panics_or_answers_500_for_arbitrary_requests() {
    fuzz(512, any_request());
}

#[test]
fn v1_rest_path_never_panics_or_answers_500_for_arbitrary_bodies_of_service_calls() {
    fuzz(256, service_request());
}

#[test]
fn v1_rest_path_never_panics_or_answers_500_for_random_parameters_of_real_services() {
    fuzz(512, targeted_service_request());
}

#[test]
fn v1_rest_path_never_panics_or_answers_500_for_property_reads_and_writes() {
    fuzz(256, property_request());
}

#[test]
fn v1_rest_path_never_panics_or_answers_500_for_a_caller_deleted_meanwhile() {
    fuzz_with(
        256,
        prop_oneof![
            targeted_service_request(),
            property_request(),
            api_path_request()
        ],
        World::check_stale,
    );
}
