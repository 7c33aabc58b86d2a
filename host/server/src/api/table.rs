//! The table of host services: every service the host itself answers is one row here.
//!
//! A row says where the service lives, its parameters (in order), its result, who may call it,
//! how it uses the model (the shared lock, the exclusive lock, or no model lock while it works),
//! whether an admin script may call it, what it records in the audit log, and what it does.
//! Routing ([`find`]), parameter validation (`api::check_params`), the script bindings
//! (`script.rs`), `docs/services.md`, `docs/script-api.md` and the README's service table are
//! derived from it. To add a host service: add one row here and one function.

use crate::api::{ApiError, Call, Reply, Request};
use crate::state::app::App;
use crate::state::auth::Caller;
use std::sync::{Arc, LazyLock};
use thinghost_core::{BaseType, Kind, Permission};

/// A parameter whose value may take any JSON shape: the service checks it against something
/// else (a default value against its property's type, say).
pub const ANY: BaseType = BaseType::Nothing;

/// One parameter of a service.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    /// Its type; values are checked and normalized by it ([`ANY`]: any JSON).
    pub base_type: BaseType,
    pub required: bool,
    /// What an absent value means, in words (for the docs; the service applies it).
    pub default: Option<&'static str>,
    /// Another name accepted for it (an older name of ours beside the vendor's).
    pub alias: Option<&'static str>,
    /// The audit records its SHA-256, never its value (code in the model, B3). A PASSWORD is
    /// recorded as `***`.
    pub digest: bool,
}

/// A required parameter.
pub const fn req(name: &'static str, base_type: BaseType) -> Param {
    Param {
        name,
        base_type,
        required: true,
        default: None,
        alias: None,
        digest: false,
    }
}

/// An optional parameter.
pub const fn opt(name: &'static str, base_type: BaseType) -> Param {
    Param {
        name,
        base_type,
        required: false,
        default: None,
        alias: None,
        digest: false,
    }
}

impl Param {
    /// What an absent value means.
    pub const fn or(mut self, default: &'static str) -> Param {
        self.default = Some(default);
        self
    }
    /// Another accepted name.
    pub const fn alias(mut self, alias: &'static str) -> Param {
        self.alias = Some(alias);
        self
    }
    /// Recorded in the audit by its SHA-256 only.
    pub const fn digest(mut self) -> Param {
        self.digest = true;
        self
    }
}

/// Where a service lives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum On {
    /// Every entity of these kinds.
    Kinds(&'static [Kind]),
    /// The Things whose template chain holds one of these templates.
    ThingsOf(&'static [&'static str]),
    /// One entity.
    Entity(Kind, &'static str),
}

/// Every kind but Resources (platform functions carry no permission services of their own).
pub const NOT_RESOURCES: &[Kind] = &[
    Kind::Thing,
    Kind::ThingTemplate,
    Kind::ThingShape,
    Kind::DataShape,
    Kind::User,
    Kind::Group,
    Kind::Organization,
    Kind::ApplicationKey,
    Kind::Subsystem,
    Kind::PersistenceProvider,
];
/// Every kind.
pub const EVERY_KIND: &[Kind] = &Kind::ALL;
const THINGS: &[Kind] = &[Kind::Thing];
const TEMPLATES_AND_SHAPES: &[Kind] = &[Kind::ThingTemplate, Kind::ThingShape];
const DEFINED: &[Kind] = &[Kind::Thing, Kind::ThingTemplate, Kind::ThingShape];
const THINGS_AND_TEMPLATES: &[Kind] = &[Kind::Thing, Kind::ThingTemplate];

/// What a service gives back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Returns {
    /// Nothing (an empty 200).
    Nothing,
    /// One value, as a one-row InfoTable with the field `result`.
    Value(BaseType),
    /// An InfoTable of one row.
    Row,
    /// An InfoTable of rows.
    Rows,
}

/// Who may call a service: the rule the router checks before the service runs (all but
/// [`Rule::Own`], which the service checks itself, as described).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// Every signed-in user who can see the entity.
    Anyone,
    /// A design-time permission on the entity; the words say what it allows ("change this
    /// group's members").
    On(Permission, &'static str),
    /// `ServiceInvoke` on the entity, for this service (on the platform's own entities the
    /// engine's P1 and P2 decide: every signed-in user, or a role's members).
    Invoke,
    /// `Create` on the collection.
    Create(Kind),
    /// A permission on the entity of this kind that the parameter `name` names.
    Named(Permission, Kind),
    /// The service's own rule, described.
    Own(&'static str),
}

/// How a service uses the model.
#[derive(Clone, Copy)]
pub enum Run {
    /// Under the shared lock, beside other readers.
    Shared(fn(&mut Call<'_>) -> Result<Reply, ApiError>),
    /// Under the exclusive lock: it changes the model (stored before the lock is released).
    Exclusive(fn(&mut Call<'_>) -> Result<Reply, ApiError>),
    /// Checked under the shared lock, then run without any model lock (it takes one itself if
    /// it needs to): reloads, the audit log's reads and maintenance, files, scripts.
    Unlocked(fn(&Arc<App>, &Caller, Request) -> Result<Reply, ApiError>),
}

impl Run {
    pub fn lock(&self) -> &'static str {
        match self {
            Run::Shared(_) => "shared",
            Run::Exclusive(_) => "exclusive",
            Run::Unlocked(_) => "none",
        }
    }
}

/// Whether an admin script may call a service, and its binding's name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Script {
    /// Bound as the service's name in snake case.
    Bound,
    /// Bound under another name (two services would have the same).
    BoundAs(&'static str),
    /// Refused in a script: it acts outside the model and could not be undone.
    Refused,
}

/// What a service records in the audit log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Audit {
    /// Nothing (a read).
    None,
    /// Its change, in the category of the entity's kind: SECURITY for application keys, MODEL
    /// for the rest.
    Change,
    /// In this category.
    In(&'static str),
}

/// Password work a service needs before the model's lock is taken (argon2 is slow).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Passwords {
    None,
    /// The new user's `password` is hashed.
    NewUser,
    /// `ChangePassword`: the old one checked (a user changing its own), the new one hashed.
    Change,
}

/// Row data of the services built from families (the permission services).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    None,
    /// An entity kind (`CreateThing`, `DeleteThing`, ...).
    Kind(Kind),
    /// A permission service: which family, what it does, on which list of entries.
    Permissions(Family, Action, AclOf),
    /// Adding or removing (members, units).
    Add(bool),
}

/// The three families of permission entries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Family {
    RunTime,
    DesignTime,
    Visibility,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::RunTime, Family::DesignTime, Family::Visibility];
    /// `RunTime`, `DesignTime`, `Visibility`: as in the services' names.
    pub fn word(self) -> &'static str {
        match self {
            Family::RunTime => "RunTime",
            Family::DesignTime => "DesignTime",
            Family::Visibility => "Visibility",
        }
    }
    fn words(self) -> &'static str {
        match self {
            Family::RunTime => "run-time permission",
            Family::DesignTime => "design-time permission",
            Family::Visibility => "visibility permission",
        }
    }
}

/// What a permission service does with its family's entries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    Add,
    Delete,
    Get,
    /// Every entry of the family, as JSON (`Get...PermissionsAsJSON`).
    GetJson,
    /// Every entry of the family replaced (`Set...PermissionsAsJSON`).
    SetJson,
}

/// Which entries a permission service works on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AclOf {
    /// The entity's own.
    Own,
    /// A template's or shape's instance permissions (for all its Things).
    Instance,
    /// A collection's (`collectionName`), on `Resources/CollectionFunctions`.
    Collection,
}

/// One host service.
#[derive(Clone, Copy)]
pub struct Service {
    pub on: On,
    pub name: &'static str,
    pub params: &'static [Param],
    pub returns: Returns,
    pub rule: Rule,
    pub run: Run,
    pub script: Script,
    pub audit: Audit,
    pub passwords: Passwords,
    pub op: Op,
    pub doc: &'static str,
    /// A script example (one is made from the parameters when there is none).
    pub example: Option<&'static str>,
    /// Its request body may be large (`serve --max-script-body-mib`, not `--max-body-kib`).
    pub large_body: bool,
}

impl Service {
    /// Does this row serve `entity` of `kind` (without the model: [`On::ThingsOf`] rows serve
    /// Things, and the router checks their template)?
    pub fn serves(&self, kind: Kind, entity: &str) -> bool {
        match self.on {
            On::Kinds(ks) => ks.contains(&kind),
            On::ThingsOf(_) => kind == Kind::Thing,
            On::Entity(k, n) => k == kind && n == entity,
        }
    }

    /// The name of its script binding, if a script may call it.
    pub fn script_name(&self) -> Option<String> {
        match self.script {
            Script::Bound => Some(crate::api::script::snake(self.name)),
            Script::BoundAs(n) => Some(n.to_string()),
            Script::Refused => None,
        }
    }

    /// The params a script passes by position: all of them, and how many lead up to the last
    /// required one (those must be passed; `()` leaves an optional one out).
    pub fn script_required(&self) -> usize {
        self.params
            .iter()
            .rposition(|p| p.required)
            .map_or(0, |i| i + 1)
    }

    /// `Collection/Entity` or `Collection/{Entity}`, for messages and docs.
    pub fn where_(&self) -> String {
        match self.on {
            On::Kinds(ks) if ks == EVERY_KIND => "every entity".into(),
            On::Kinds(ks) if ks == NOT_RESOURCES => "every entity but Resources".into(),
            On::Kinds(ks) => ks
                .iter()
                .map(|k| format!("{}/{{name}}", k.collection()))
                .collect::<Vec<_>>()
                .join(", "),
            On::ThingsOf(t) => format!("Things of {}", t.join(" or ")),
            On::Entity(k, n) => format!("{}/{n}", k.collection()),
        }
    }
}

/// A row with the defaults of most: shared lock, anyone, bound in scripts, no audit.
const fn row(on: On, name: &'static str, run: Run) -> Service {
    Service {
        on,
        name,
        params: &[],
        returns: Returns::Nothing,
        rule: Rule::Anyone,
        run,
        script: Script::Bound,
        audit: Audit::None,
        passwords: Passwords::None,
        op: Op::None,
        doc: "",
        example: None,
        large_body: false,
    }
}

impl Service {
    const fn params(mut self, params: &'static [Param]) -> Self {
        self.params = params;
        self
    }
    const fn returns(mut self, returns: Returns) -> Self {
        self.returns = returns;
        self
    }
    const fn rule(mut self, rule: Rule) -> Self {
        self.rule = rule;
        self
    }
    const fn script(mut self, script: Script) -> Self {
        self.script = script;
        self
    }
    const fn audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }
    const fn passwords(mut self, passwords: Passwords) -> Self {
        self.passwords = passwords;
        self
    }
    const fn op(mut self, op: Op) -> Self {
        self.op = op;
        self
    }
    const fn doc(mut self, doc: &'static str) -> Self {
        self.doc = doc;
        self
    }
    const fn example(mut self, example: &'static str) -> Self {
        self.example = Some(example);
        self
    }
    const fn large_body(mut self) -> Self {
        self.large_body = true;
        self
    }
}

use crate::state::audit::category::{AUDIT, EXTENSIONS, SCRIPTS, SECURITY};
use BaseType as T;
use Run::{Exclusive, Shared, Unlocked};

const ENTITY_SERVICES: On = On::Entity(Kind::Resource, "EntityServices");
const SECURITY_SERVICES: On = On::Entity(Kind::Resource, "SecurityServices");
const SESSION_INFO: On = On::Entity(Kind::Resource, "CurrentSessionInfo");
const PLATFORM: On = On::Entity(Kind::Subsystem, "PlatformSubsystem");
const AUDIT_SUBSYSTEM: On = On::Entity(Kind::Subsystem, "AuditSubsystem");
const EVENT_PROCESSING: On = On::Entity(Kind::Subsystem, "EventProcessingSubsystem");
const COLLECTIONS: On = On::Entity(Kind::Resource, "CollectionFunctions");
const REMOTE: On = On::ThingsOf(&[crate::api::edge::REMOTE_THING]);
const STORAGE: On = On::ThingsOf(&[
    thinghost_core::predefined::STREAM,
    thinghost_core::predefined::DATA_TABLE,
]);
const RETAINED: On = On::ThingsOf(&[
    thinghost_core::predefined::STREAM,
    thinghost_core::predefined::VALUE_STREAM,
]);
const STREAM: On = On::ThingsOf(&[thinghost_core::predefined::STREAM]);
const DATA_TABLE: On = On::ThingsOf(&[thinghost_core::predefined::DATA_TABLE]);
const REPOSITORY: On = On::ThingsOf(&[crate::state::repository::TEMPLATE]);
const WS_COMMUNICATIONS: On = On::Entity(
    Kind::Subsystem,
    thinghost_core::predefined::WS_COMMUNICATIONS,
);

const NAME: Param = req("name", T::String);
/// The parameters of `AddServiceDefinition` and `UpdateServiceDefinition`, the vendor's order.
const SERVICE_DEFINITION: &[Param] = &[
    NAME,
    opt("parameters", T::Json).or("none"),
    opt("resultType", T::String).or("NOTHING"),
    opt("code", T::String)
        .digest()
        .or("none: an extension's handler implements it, or nothing (501)"),
    opt("allowOverride", T::Boolean).or("false"),
    DESCRIPTION,
];
const DESCRIPTION: Param = opt("description", T::String);
const TAGS: Param = opt("tags", T::Json);
const DATE_FROM: Param = opt("startDate", T::Datetime);
const DATE_TO: Param = opt("endDate", T::Datetime);
const MAX_ITEMS: Param = opt("maxItems", T::Number).or("500, at most 5000");
const CATEGORY: Param = opt("auditCategory", T::String);
const QUERY: Param = opt("query", T::Json);
const OLDER_THAN: Param = opt("olderThanDate", T::Datetime);
const EXPORT: &[Param] = &[
    DATE_FROM,
    DATE_TO,
    req("targetRepositoryName", T::Thingname),
    opt("targetPath", T::String),
    req("targetFileName", T::String),
];
const MAX_HISTORY: Param = opt("maxItems", T::Number).or("500, at most serve --max-items (100000)");
const OLDEST_FIRST: Param = opt("oldestFirst", T::Boolean).or("false: newest first");
const VALUES: Param = req("values", T::Json);
const TAGS_PARAM: Param = opt("tags", ANY).or("none (a list of strings, or text with commas)");
const LOCATION: Param = opt("location", T::Json);
const ROW_PARAMS: &[Param] = &[
    TAGS_PARAM,
    LOCATION,
    opt("source", T::String).or("the caller's name"),
    opt("sourceType", T::String).or("User"),
    VALUES,
];
const HISTORY_QUERY: &[Param] = &[MAX_HISTORY, DATE_FROM, DATE_TO, OLDEST_FIRST, QUERY,
    opt("fillOption", T::String).or("Previous: a property with no value at a row's time shows its last value before (None: nothing)")];
const IMMEDIATE: Param = opt("immediate", T::Boolean).or("true (a purge is always done at once)");
const AUDIT_QUERY: &[Param] = &[MAX_ITEMS, DATE_FROM, DATE_TO, CATEGORY, QUERY];
const PRINCIPAL: Param = req("principal", T::String);
const PRINCIPAL_TYPE: Param = req("principalType", T::String);
const PERMISSION_TYPE: Param = req("type", T::String);
const ALLOW: Param = opt("allow", T::Boolean).or("true");
const RUN_TIME: &[Param] = &[
    PRINCIPAL,
    PRINCIPAL_TYPE,
    PERMISSION_TYPE,
    opt("resource", T::String).or("* (every property, service and event)"),
    ALLOW,
];
const DESIGN_TIME: &[Param] = &[PRINCIPAL, PRINCIPAL_TYPE, PERMISSION_TYPE, ALLOW];
const VISIBILITY: &[Param] = &[PRINCIPAL, PRINCIPAL_TYPE];
const COLLECTION: Param = req("collectionName", T::String);
const RESOURCE_NAME: Param = opt("name", T::String)
    .alias("resource")
    .or("* (the entity itself)");
const AS_JSON: Param = req("permissions", T::Json);

use crate::api::audit;
use crate::api::definitions::{self, DefOp, SubOp};
use crate::api::services::Whose;
use crate::api::{edge, events, history, repository, script, security, services, streams, tables};

/// The table, built once.
pub static SERVICES: LazyLock<Vec<Service>> = LazyLock::new(services);

fn services() -> Vec<Service> {
    let mut v = vec![
        // ---- Resources/EntityServices: creating and deleting entities ----
        row(ENTITY_SERVICES, "CreateThing", Exclusive(|c| services::create(c, Kind::Thing)))
            .params(const { &[NAME, req("thingTemplateName", T::Thingtemplatename), DESCRIPTION, TAGS] })
            .rule(Rule::Create(Kind::Thing)).audit(Audit::Change)
            .doc("Creates a Thing from a template; needs Create on Things (and, for a data-storage template, P1's rights).")
            .example(r#"create_thing("Pump7", "GenericThing");"#),
        row(ENTITY_SERVICES, "CreateThingTemplate", Exclusive(|c| services::create(c, Kind::ThingTemplate)))
            .params(const { &[NAME, opt("thingTemplateName", T::Thingtemplatename).or("GenericThing"), DESCRIPTION, TAGS] })
            .rule(Rule::Create(Kind::ThingTemplate)).audit(Audit::Change)
            .doc("Creates a ThingTemplate, based on `thingTemplateName`.")
            .example(r#"create_thing_template("PumpTemplate", "GenericThing");"#),
        row(ENTITY_SERVICES, "CreateThingShape", Exclusive(|c| services::create(c, Kind::ThingShape)))
            .params(const { &[NAME, DESCRIPTION, TAGS] })
            .rule(Rule::Create(Kind::ThingShape)).audit(Audit::Change)
            .doc("Creates a ThingShape.")
            .example(r#"create_thing_shape("Resettable");"#),
        row(ENTITY_SERVICES, "CreateDataShape", Exclusive(|c| services::create(c, Kind::DataShape)))
            .params(const { &[NAME, opt("fields", T::Json), DESCRIPTION, TAGS] })
            .rule(Rule::Create(Kind::DataShape)).audit(Audit::Change)
            .doc("Creates a DataShape; `fields` is a list of {name, baseType, isPrimaryKey} (or an InfoTable of them).")
            .example(r#"create_data_shape("Reading", [#{name: "at", baseType: "DATETIME"}, #{name: "value", baseType: "NUMBER"}]);"#),
        row(ENTITY_SERVICES, "CreateUser", Exclusive(|c| services::create(c, Kind::User)))
            .params(const { &[NAME, opt("password", T::Password).or("none: the user signs in only with keys or a client certificate"), DESCRIPTION, TAGS] })
            .rule(Rule::Create(Kind::User)).audit(Audit::Change).passwords(Passwords::NewUser)
            .doc("Creates a user (the password: 8 to 1,024 characters, not the name). Without a password the user signs in only with application keys or a client certificate, as a device user should.")
            .example("create_user(\"operator-1\", \"a long random password\");\ncreate_user(\"device-017\");"),
        row(ENTITY_SERVICES, "CreateGroup", Exclusive(|c| services::create(c, Kind::Group)))
            .params(const { &[NAME, DESCRIPTION, TAGS] })
            .rule(Rule::Create(Kind::Group)).audit(Audit::Change)
            .doc("Creates a user group.")
            .example(r#"create_group("PumpDevices");"#),
        row(ENTITY_SERVICES, "CreateOrganization", Exclusive(|c| services::create(c, Kind::Organization)))
            .params(const { &[NAME, opt("topOUName", T::String).or("the organization's name"), DESCRIPTION, TAGS] })
            .rule(Rule::Create(Kind::Organization)).audit(Audit::Change)
            .doc("Creates an organization with its top unit.")
            .example(r#"create_organization("PumpFleet");"#),
        row(ENTITY_SERVICES, "CreateApplicationKey", Exclusive(|c| services::create(c, Kind::ApplicationKey)))
            .params(const { &[NAME, opt("user", T::Username).or("the caller"), opt("expirationDate", T::Datetime).or("now + serve --key-lifetime-hours"),
                opt("whitelist", ANY).or("anywhere"), opt("clientName", T::String), DESCRIPTION, TAGS] })
            .rule(Rule::Create(Kind::ApplicationKey)).audit(Audit::Change).returns(Returns::Row)
            .doc("Creates an application key for `user` (only administrators make keys for someone else), usable from the addresses or CIDR ranges of `whitelist`. The answer's `keyId` is the key: it is shown this once, and stored only as a hash.")
            .example("let key = create_application_key(\"device-017-key\", \"device-017\");\nprint(key.keyId);"),
    ];
    for (kind, base_type) in [
        (Kind::Thing, T::Thingname),
        (Kind::ThingTemplate, T::Thingtemplatename),
        (Kind::ThingShape, T::Thingshapename),
        (Kind::DataShape, T::Datashapename),
        (Kind::User, T::Username),
        (Kind::Group, T::Groupname),
        (Kind::Organization, T::Organizationname),
        (Kind::ApplicationKey, T::Applicationkeyname),
    ] {
        let params: &'static [Param] = Box::leak(Box::new([req("name", base_type)]));
        v.push(
            row(ENTITY_SERVICES, delete_name(kind), Exclusive(services::delete_named))
                .params(params)
                .rule(Rule::Named(Permission::Delete, kind))
                .audit(Audit::Change)
                .op(Op::Kind(kind))
                .doc("Deletes the entity `name`; refused while something still uses it (the answer names what)."),
        );
    }
    v.extend([
        // ---- definitions, shapes, membership, users, keys ----
        row(On::Kinds(DEFINED), "AddPropertyDefinition", Exclusive(|c| services::property_definition(c, true)))
            .params(const { &[NAME, req("type", T::String), DESCRIPTION, opt("defaultValue", ANY), opt("readOnly", T::Boolean).or("false"), opt("dataChangeType", T::String).or("VALUE: a write fires DataChange when the value changes (ALWAYS: at every write; NEVER)"), opt("logged", T::Boolean).or("false: true records every accepted value in the Thing's value stream")] })
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Defines a property on a Thing, template or shape.")
            .example(r#"add_property_definition("Things/Pump7", "pressure", "NUMBER");"#),
        row(On::Kinds(DEFINED), "DeletePropertyDefinition", Exclusive(|c| services::property_definition(c, false)))
            .params(const { &[NAME] })
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Removes a property definition of the entity's own (and a Thing's value of it).")
            .example(r#"delete_property_definition("Things/Pump7", "pressure");"#),
        row(On::Kinds(DEFINED), "AddServiceDefinition", Exclusive(|c| definitions::service_definition(c, DefOp::Add)))
            .params(SERVICE_DEFINITION)
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Defines a service on a Thing, template or shape, implemented by its Rhai `code` (compiled now: a syntax error is refused with its line and column). `parameters`: a JSON array of `{name, baseType, required, description}`. The code sees its parameters and `me` as variables and calls the host API of Rhai extensions, as the caller (B1, B3, B4).")
            .example(r#"add_service_definition("ThingTemplates/Pump", "Vent", [#{name: "amount", baseType: "NUMBER", required: true}], "NUMBER", "set_property(me, \"pressure\", get_property(me, \"pressure\") - amount); get_property(me, \"pressure\")", true, "Lets off pressure");"#),
        row(On::Kinds(DEFINED), "UpdateServiceDefinition", Exclusive(|c| definitions::service_definition(c, DefOp::Update)))
            .params(SERVICE_DEFINITION)
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Replaces a service definition of the entity's own: its parameters, result, code, `allowOverride` and description.")
            .example(r#"update_service_definition("ThingTemplates/Pump", "Vent", [#{name: "amount", baseType: "NUMBER", required: true}], "NUMBER", "amount * 2", true, "");"#),
        row(On::Kinds(DEFINED), "DeleteServiceDefinition", Exclusive(|c| definitions::service_definition(c, DefOp::Delete)))
            .params(const { &[NAME] })
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Removes a service definition of the entity's own; refused while a derived template or Thing overrides it.")
            .example(r#"delete_service_definition("ThingTemplates/Pump", "Vent");"#),
        row(On::Kinds(THINGS_AND_TEMPLATES), "OverrideService", Exclusive(|c| definitions::override_service(c, true)))
            .params(const { &[NAME, req("code", T::String).digest(), opt("parameters", T::Json).or("the definition's (if given, must be the same)"), opt("resultType", T::String).or("the definition's (if given, must be the same)")] })
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Gives an inherited service whose definition allows overrides a new implementation on this template or Thing (B2); its Things run the nearest one.")
            .example(r#"override_service("Things/Pump7", "Vent", "amount * 3");"#),
        row(On::Kinds(THINGS_AND_TEMPLATES), "RemoveServiceOverride", Exclusive(|c| definitions::override_service(c, false)))
            .params(const { &[NAME] })
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Takes away this entity's override of a service: the next one along the chain runs again.")
            .example(r#"remove_service_override("Things/Pump7", "Vent");"#),
        row(On::Kinds(DEFINED), "AddEventDefinition", Exclusive(|c| definitions::event_definition(c, true)))
            .params(const { &[NAME, opt("dataShape", T::Datashapename).or("none: the event carries no data"), DESCRIPTION] })
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Defines an event on a Thing, template or shape; its data has the fields of `dataShape` (B5). Fire it with `POST /Thingworx/Things/{name}/Events/{event}`.")
            .example(r#"add_event_definition("ThingTemplates/Pump", "Overheated", "PumpAlarm", "too hot");"#),
        row(On::Kinds(DEFINED), "DeleteEventDefinition", Exclusive(|c| definitions::event_definition(c, false)))
            .params(const { &[NAME] })
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Removes an event definition of the entity's own; refused while a subscription of a Thing that has the event is to it (another Thing's subscription to it then waits for events that no longer come).")
            .example(r#"delete_event_definition("ThingTemplates/Pump", "Overheated");"#),
        row(On::Kinds(DEFINED), "AddSubscription", Exclusive(definitions::add_subscription))
            .params(const { &[NAME, opt("source", T::String).or("me: each Thing that has it, for its own events"), req("event", T::String), opt("property", T::String).or("any (DataChange only)"), req("code", T::String).digest(), opt("enabled", T::Boolean).or("true"), DESCRIPTION] })
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Runs Rhai `code` for each firing of `event` by `source`, in the firer's security context, after the firing change is durable; the code sees `me`, `eventName`, `source` and `eventData` (B6). Another Thing's events need `EventSubscribe` on it.")
            .example(r#"add_subscription("ThingTemplates/Pump", "Watch", "", "DataChange", "pressure", "if eventData.newValue > 9 { set_property(me, \"alarm\", true); }", true, "");"#),
        row(On::Kinds(DEFINED), "DeleteSubscription", Exclusive(|c| definitions::subscription(c, SubOp::Delete)))
            .params(const { &[NAME] })
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Removes a subscription the entity defines.")
            .example(r#"delete_subscription("ThingTemplates/Pump", "Watch");"#),
        row(On::Kinds(DEFINED), "EnableSubscription", Exclusive(|c| definitions::subscription(c, SubOp::Enable)))
            .params(const { &[req("subscriptionName", T::String)] })
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Enables a subscription, at the level that defines it.")
            .example(r#"enable_subscription("ThingTemplates/Pump", "Watch");"#),
        row(On::Kinds(DEFINED), "DisableSubscription", Exclusive(|c| definitions::subscription(c, SubOp::Disable)))
            .params(const { &[req("subscriptionName", T::String)] })
            .rule(Rule::On(Permission::Update, "change this entity's definitions")).audit(Audit::Change)
            .doc("Disables a subscription, at the level that defines it: it receives nothing until enabled.")
            .example(r#"disable_subscription("ThingTemplates/Pump", "Watch");"#),
        row(On::Kinds(THINGS), "AddShapeToThing", Exclusive(services::add_shape))
            .params(const { &[req("thingShapeName", T::Thingshapename)] })
            .rule(Rule::On(Permission::Update, "change this Thing's shapes")).audit(Audit::Change)
            .doc("Makes a Thing implement a ThingShape.")
            .example(r#"add_shape_to_thing("Pump7", "Resettable");"#),
        row(On::Kinds(THINGS_AND_TEMPLATES), "ImplementsShape", Shared(services::implements_shape))
            .params(const { &[req("thingShapeName", T::String)] }).returns(Returns::Value(T::Boolean))
            .rule(Rule::On(Permission::Read, "read this entity's definition"))
            .doc("Whether a Thing or template implements a shape (its own or along its template chain).")
            .example(r#"if implements_shape("Things/Pump7", "Resettable") { print("yes"); }"#),
        row(On::Kinds(&[Kind::Group]), "AddMember", Exclusive(|c| services::group_member(c, true)))
            .params(const { &[req("member", T::String), req("type", T::String)] })
            .rule(Rule::On(Permission::Update, "change this group's members")).audit(Audit::In(SECURITY))
            .doc("Adds a user or group (`type`: User or Group) to a group.")
            .example(r#"add_member("PumpDevices", "device-017", "User");"#),
        row(On::Kinds(&[Kind::Group]), "DeleteMember", Exclusive(|c| services::group_member(c, false)))
            .params(const { &[req("member", T::String), req("type", T::String)] })
            .rule(Rule::On(Permission::Update, "change this group's members")).audit(Audit::In(SECURITY))
            .doc("Removes a member from a group.")
            .example(r#"delete_member("PumpDevices", "device-017", "User");"#),
        row(On::Kinds(&[Kind::Organization]), "AddOrganizationalUnit", Exclusive(|c| services::organizational_unit(c, true)))
            .params(const { &[req("parentName", T::String), NAME] })
            .rule(Rule::On(Permission::Update, "change this organization")).audit(Audit::In(SECURITY))
            .doc("Adds a unit under `parentName` to an organization.")
            .example(r#"add_organizational_unit("PumpFleet", "PumpFleet", "NorthSite");"#),
        row(On::Kinds(&[Kind::Organization]), "DeleteOrganizationalUnit", Exclusive(|c| services::organizational_unit(c, false)))
            .params(const { &[NAME] })
            .rule(Rule::On(Permission::Update, "change this organization")).audit(Audit::In(SECURITY))
            .doc("Deletes a unit of an organization (not its top unit, nor a unit with units below it, nor one a visibility entry still names).")
            .example(r#"delete_organizational_unit("PumpFleet", "NorthSite");"#),
        row(On::Kinds(&[Kind::Organization]), "AddMember", Exclusive(|c| services::unit_member(c, true)))
            .params(const { &[NAME, req("member", T::String), req("type", T::String)] })
            .rule(Rule::On(Permission::Update, "change this organization")).audit(Audit::In(SECURITY))
            .script(Script::BoundAs("add_organization_member"))
            .doc("Adds a user or group to the unit `name` of an organization.")
            .example(r#"add_organization_member("PumpFleet", "NorthSite", "PumpDevices", "Group");"#),
        row(On::Kinds(&[Kind::Organization]), "DeleteMember", Exclusive(|c| services::unit_member(c, false)))
            .params(const { &[NAME, req("member", T::String), req("type", T::String)] })
            .rule(Rule::On(Permission::Update, "change this organization")).audit(Audit::In(SECURITY))
            .script(Script::BoundAs("delete_organization_member"))
            .doc("Removes a member from a unit of an organization.")
            .example(r#"delete_organization_member("PumpFleet", "NorthSite", "PumpDevices", "Group");"#),
        row(On::Kinds(&[Kind::User]), "ChangePassword", Exclusive(services::change_password))
            .params(const { &[opt("oldPassword", T::Password).or("none: an administrator changing another user's"), req("newPassword", T::Password)] })
            .rule(Rule::Own("the user itself (D2; with its old password), or an administrator"))
            .audit(Audit::In(SECURITY)).passwords(Passwords::Change)
            .doc("Changes a password. A user changing its own gives the old one (a wrong one counts like a failed sign-in).")
            .example(r#"change_password("device-017", (), "another long password");"#),
        row(On::Kinds(&[Kind::User]), "EnableUser", Exclusive(|c| services::user_state(c, services::UserState::Enable)))
            .rule(Rule::On(Permission::Update, "enable this user")).audit(Audit::In(SECURITY))
            .doc("Enables a user.").example(r#"enable_user("device-017");"#),
        row(On::Kinds(&[Kind::User]), "DisableUser", Exclusive(|c| services::user_state(c, services::UserState::Disable)))
            .rule(Rule::On(Permission::Update, "disable this user")).audit(Audit::In(SECURITY))
            .doc("Disables a user: it can no longer sign in. Refused for the last enabled administrator.")
            .example(r#"disable_user("device-017");"#),
        row(On::Kinds(&[Kind::User]), "LockUser", Exclusive(|c| services::user_state(c, services::UserState::Lock)))
            .rule(Rule::On(Permission::Update, "lock this user")).audit(Audit::In(SECURITY))
            .doc("Locks a user. Refused for the last enabled administrator.").example(r#"lock_user("device-017");"#),
        row(On::Kinds(&[Kind::User]), "UnlockUser", Exclusive(|c| services::user_state(c, services::UserState::Unlock)))
            .rule(Rule::On(Permission::Update, "unlock this user")).audit(Audit::In(SECURITY))
            .doc("Unlocks a user.").example(r#"unlock_user("device-017");"#),
        row(On::Kinds(&[Kind::ApplicationKey]), "GetKeyID", Shared(services::key_id))
            .returns(Returns::Value(T::String))
            .rule(Rule::Own("the key's own user, or Read on the key"))
            .doc("The key's fingerprint (thinghost keeps only a hash of each key; the key was shown once, at creation)."),
        // ---- permissions ----
        row(On::Kinds(NOT_RESOURCES), "AddPermissions", Exclusive(|c| services::add_permissions(c, AclOf::Own)))
            .params(const { &[req("permissions", T::Json)] })
            .rule(Rule::On(Permission::Update, "change this entity's permissions")).audit(Audit::In(SECURITY))
            .doc("Adds entries of the three families at once, in one change and one audit entry: a list of {family (visibility, designTime, runTime), principal, principalType, type, resource, allow}.")
            .example("add_permissions(\"Things/Pump7\", [\n    #{family: \"visibility\", principal: \"PumpFleet\", principalType: \"Organization\"},\n    #{family: \"runTime\", principal: \"PumpDevices\", principalType: \"Group\", type: \"PropertyWrite\", resource: \"*\", allow: true},\n]);"),
        row(On::Kinds(TEMPLATES_AND_SHAPES), "AddInstancePermissions", Exclusive(|c| services::add_permissions(c, AclOf::Instance)))
            .params(const { &[req("permissions", T::Json)] })
            .rule(Rule::On(Permission::Update, "change this entity's permissions")).audit(Audit::In(SECURITY))
            .doc("`AddPermissions`, as instance permissions of a template or shape (for all its Things)."),
        row(On::Kinds(EVERY_KIND), "GetPermissionsForCurrentUser", Shared(|c| services::permissions_of(c, Whose::Caller)))
            .returns(Returns::Rows)
            .doc("Which permissions the caller holds on the entity (`type`, `allowed`)."),
        row(On::Kinds(EVERY_KIND), "GetPermissionsForUser", Shared(|c| services::permissions_of(c, Whose::User)))
            .params(const { &[RESOURCE_NAME, req("user", T::Username), opt("permissionName", T::String).or("every permission")] })
            .returns(Returns::Rows)
            .rule(Rule::On(Permission::Read, "inspect this entity's permissions"))
            .doc("Which permissions `user` holds on the entity, or on its property, service or event `name` (`type`, `allowed`)."),
        row(On::Kinds(EVERY_KIND), "GetPermissionsForGroup", Shared(|c| services::permissions_of(c, Whose::Group)))
            .params(const { &[RESOURCE_NAME, req("group", T::Groupname), opt("permissionName", T::String).or("every permission")] })
            .returns(Returns::Rows)
            .rule(Rule::On(Permission::Read, "inspect this entity's permissions"))
            .doc("Which permissions the group holds as such (its own entries and those of the groups containing it, where its units see the entity)."),
        row(On::Kinds(EVERY_KIND), "CheckPermission", Shared(|c| services::check_permission(c, Whose::Caller, false)))
            .params(const { &[RESOURCE_NAME, PERMISSION_TYPE] })
            .returns(Returns::Value(T::Boolean))
            .doc("Whether the caller holds the run-time permission `type` on the entity, or on its property, service or event `name`."),
        row(On::Kinds(EVERY_KIND), "CheckPermissionForUser", Shared(|c| services::check_permission(c, Whose::User, false)))
            .params(const { &[RESOURCE_NAME, PERMISSION_TYPE, req("user", T::Username)] })
            .returns(Returns::Value(T::Boolean))
            .rule(Rule::On(Permission::Read, "inspect this entity's permissions"))
            .doc("Whether `user` holds the run-time permission `type` on the entity, or on its property, service or event `name`.")
            .example(r#"print(check_permission_for_user("Things/Pump7", (), "PropertyWrite", "device-017"));"#),
        row(On::Kinds(EVERY_KIND), "CheckPermissionForGroup", Shared(|c| services::check_permission(c, Whose::Group, false)))
            .params(const { &[RESOURCE_NAME, PERMISSION_TYPE, req("group", T::Groupname)] })
            .returns(Returns::Value(T::Boolean))
            .rule(Rule::On(Permission::Read, "inspect this entity's permissions"))
            .doc("Whether the group, as such, holds the run-time permission `type` on the entity or its `name`."),
        row(On::Kinds(EVERY_KIND), "CheckDesignTimePermission", Shared(|c| services::check_permission(c, Whose::Caller, true)))
            .params(const { &[PERMISSION_TYPE] })
            .returns(Returns::Value(T::Boolean))
            .doc("Whether the caller holds the design-time permission `type` (Read, Update, Delete; Create: on the entity's collection)."),
        row(On::Kinds(EVERY_KIND), "CheckDesignTimePermissionForUser", Shared(|c| services::check_permission(c, Whose::User, true)))
            .params(const { &[PERMISSION_TYPE, req("user", T::Username)] })
            .returns(Returns::Value(T::Boolean))
            .rule(Rule::On(Permission::Read, "inspect this entity's permissions"))
            .doc("Whether `user` holds the design-time permission `type` on the entity."),
        row(On::Kinds(EVERY_KIND), "CheckDesignTimePermissionForGroup", Shared(|c| services::check_permission(c, Whose::Group, true)))
            .params(const { &[PERMISSION_TYPE, req("group", T::Groupname)] })
            .returns(Returns::Value(T::Boolean))
            .rule(Rule::On(Permission::Read, "inspect this entity's permissions"))
            .doc("Whether the group, as such, holds the design-time permission `type` on the entity."),
        // ---- Resources/SecurityServices ----
        row(SECURITY_SERVICES, "ExplainAccess", Shared(services::explain_access))
            .params(const { &[req("user", T::Username), req("action", T::String), req("target", T::String)] })
            .returns(Returns::Row)
            .rule(Rule::Invoke)
            .doc("Why a user may or may not do something: the decision and the rule that made it.")
            .example(r#"print(explain_access("device-017", "ServiceInvoke", "Things/Pump7/Services/Reset").explanation);"#),
        row(SECURITY_SERVICES, "EffectivePermissions", Shared(security::effective))
            .params(const { &[req("user", T::String)] }).returns(Returns::Rows)
            .rule(Rule::Own("a user about itself; Administrators and SecurityAdministrators about anyone"))
            .doc("Every entity a user can see, with every permission it holds and why.")
            .example(r#"for p in effective_permissions("device-017") { print(`${p.entity} ${p.permission} ${p.resource}`); }"#),
        row(SECURITY_SERVICES, "Lint", Shared(security::lint))
            .returns(Returns::Rows)
            .rule(Rule::Invoke)
            .doc("The security lint's findings, most severe first (docs/lint.md).")
            .example(r#"for finding in lint() { print(`${finding.severity} ${finding.rule}: ${finding.message}`); }"#),
        // ---- Resources/CurrentSessionInfo ----
        row(SESSION_INFO, "GetCurrentUser", Shared(services::current_user)).returns(Returns::Value(T::Username))
            .doc("The caller's name."),
        row(SESSION_INFO, "GetCurrentUserGroups", Shared(services::current_user_groups)).returns(Returns::Rows)
            .doc("The groups the caller belongs to, directly or through other groups."),
        row(SESSION_INFO, "GetCurrentUserOrganizations", Shared(services::current_user_organizations)).returns(Returns::Rows)
            .doc("The organizations a unit of which holds the caller or one of its groups."),
        // ---- Resources/ScriptServices ----
        row(On::Entity(Kind::Resource, "ScriptServices"), "RunScript", Unlocked(script::run_service))
            .params(const { &[req("script", T::String), opt("dryRun", T::Boolean).or("false")] })
            .returns(Returns::Value(T::Json)).audit(Audit::In(SCRIPTS)).script(Script::Refused).large_body()
            .doc("Runs an admin script (Rhai) as one transaction of the caller (docs/script-api.md); `dryRun` reports what it would change and keeps nothing."),
        // ---- Subsystems/PlatformSubsystem ----
        row(PLATFORM, "GetDefaultDataPersistenceProviderName", Shared(services::default_persistence_provider))
            .returns(Returns::Value(T::String)).rule(Rule::Invoke)
            .doc("The persistence provider of data-storage Things."),
        row(PLATFORM, "GetExtensionPackageList", Shared(|c| services::extension_packages(c, false)))
            .returns(Returns::Rows).rule(Rule::Invoke)
            .doc("Each extension package: name, version, state, why it was refused, why its last reload failed."),
        row(PLATFORM, "GetExtensionPackageDetails", Shared(|c| services::extension_packages(c, true)))
            .params(const { &[req("packageName", T::String)] }).returns(Returns::Value(T::Json)).rule(Rule::Invoke)
            .doc("One package: its contributions, declared capabilities, state."),
        row(PLATFORM, "GetExtensionLog", Shared(services::extension_log))
            .params(const { &[req("packageName", T::String), opt("maxItems", T::Number).or("100, at most 500"), opt("after", T::Long).or("0: the newest maxItems")] })
            .returns(Returns::Rows).rule(Rule::Own("administrators (A2)"))
            .doc("An extension's recent log lines, oldest first: its code's `print`, `debug` and `log`, its refusals and failures (`seq`, `timestamp`, `level`, `message`; the newest 500 are kept). `after` gives only the lines after that `seq` (`thinghost plugin logs NAME --follow`)."),
        row(PLATFORM, "ReloadExtension", Unlocked(services::reload_extension))
            .params(const { &[req("packageName", T::String), opt("force", T::Boolean).or("false")] })
            .returns(Returns::Value(T::Json)).rule(Rule::Invoke)
            .audit(Audit::In(EXTENSIONS)).script(Script::Refused)
            .doc("Brings a package's folder in line with the running server: loads, replaces (a lower version only with `force`) or removes it; a refusal is a 409 and the loaded version keeps serving."),
        row(EVENT_PROCESSING, "GetPerformanceMetrics", Shared(events::performance_metrics))
            .returns(Returns::Value(T::Json)).rule(Rule::Invoke)
            .doc("The event queue's figures: depth, high-water mark, capacity, workers, events fired, subscriptions delivered and failed (B8).")
            .example(r#"print(get_performance_metrics("Subsystems/EventProcessingSubsystem"));"#),
        // ---- Subsystems/AuditSubsystem (U4, U6), and the Thing-level query ----
        row(AUDIT_SUBSYSTEM, "QueryAuditHistory", Unlocked(audit::read))
            .params(AUDIT_QUERY).returns(Returns::Rows)
            .rule(Rule::Own("the seed's table (audit-service-permissions.json); administrators")).audit(Audit::In(AUDIT))
            .doc("Audit entries, newest first; `query` is the vendor's QUERY (filters, sorts)."),
        row(AUDIT_SUBSYSTEM, "QueryAuditHistoryWithQueryCriteria", Unlocked(audit::read))
            .params(const { &[QUERY, MAX_ITEMS, opt("offset", T::Number).or("0"), DATE_FROM, DATE_TO] }).returns(Returns::Rows)
            .rule(Rule::Own("the seed's table (audit-service-permissions.json); administrators")).audit(Audit::In(AUDIT))
            .doc("`QueryAuditHistory` with paging."),
        row(AUDIT_SUBSYSTEM, "GetAuditEntryCount", Unlocked(audit::read))
            .params(const { &[DATE_FROM, DATE_TO, CATEGORY, QUERY] }).returns(Returns::Value(T::Long))
            .rule(Rule::Own("the seed's table (audit-service-permissions.json); administrators")).audit(Audit::In(AUDIT))
            .doc("How many entries match."),
        row(AUDIT_SUBSYSTEM, "VerifyAuditChain", Unlocked(audit::read))
            .returns(Returns::Row)
            .rule(Rule::Own("the seed's table (audit-service-permissions.json); administrators")).audit(Audit::In(AUDIT))
            .doc("Checks the hash chain of the online entries: intact, checked, brokenAtId, reason."),
        row(AUDIT_SUBSYSTEM, "ArchiveAuditHistory", Unlocked(audit::maintenance))
            .params(const { &[OLDER_THAN.or("now")] }).returns(Returns::Value(T::Json))
            .rule(Rule::Own("the seed's table (audit-service-permissions.json); administrators")).audit(Audit::In(AUDIT)).script(Script::Refused)
            .doc("Moves the oldest entries into AuditArchiveFileRepository (gzip JSON lines, one folder per day), then removes them online."),
        row(AUDIT_SUBSYSTEM, "ArchiveAuditHistoryDirectPersistence", Unlocked(audit::maintenance))
            .params(const { &[OLDER_THAN.or("now")] }).returns(Returns::Value(T::Json))
            .rule(Rule::Own("the seed's table (audit-service-permissions.json); administrators")).audit(Audit::In(AUDIT)).script(Script::Refused)
            .doc("`ArchiveAuditHistory`, recorded on its own scheduler."),
        row(AUDIT_SUBSYSTEM, "ExportAuditData", Unlocked(audit::maintenance))
            .params(EXPORT).returns(Returns::Value(T::Json))
            .rule(Rule::Own("the seed's table (audit-service-permissions.json); administrators")).audit(Audit::In(AUDIT)).script(Script::Refused)
            .doc("One gzip JSON-lines file of the entries in the range, archived and online, into a FileRepository."),
        row(AUDIT_SUBSYSTEM, "ExportOnlineAuditData", Unlocked(audit::maintenance))
            .params(EXPORT).returns(Returns::Value(T::Json))
            .rule(Rule::Own("the seed's table (audit-service-permissions.json); administrators")).audit(Audit::In(AUDIT)).script(Script::Refused)
            .doc("`ExportAuditData`, online entries only."),
        row(AUDIT_SUBSYSTEM, "PurgeAuditData", Unlocked(audit::maintenance))
            .returns(Returns::Value(T::Json))
            .rule(Rule::Own("the seed's table (audit-service-permissions.json); administrators")).audit(Audit::In(AUDIT)).script(Script::Refused)
            .doc("Removes the online entries older than the retention (serve --audit-retention-days)."),
        row(AUDIT_SUBSYSTEM, "CleanupOfflineAudit", Unlocked(audit::maintenance))
            .params(const { &[OLDER_THAN.or("AuditArchiveCleanupScheduler.DaysToArchive days ago")] }).returns(Returns::Value(T::Json))
            .rule(Rule::Own("the seed's table (audit-service-permissions.json); administrators")).audit(Audit::In(AUDIT)).script(Script::Refused)
            .doc("Deletes the archive's days before the date."),
        row(On::Kinds(THINGS), "QueryAuditHistory", Unlocked(audit::read))
            .params(AUDIT_QUERY).returns(Returns::Rows).rule(Rule::Invoke).audit(Audit::In(AUDIT))
            .script(Script::BoundAs("query_thing_audit_history"))
            .doc("The entries about this Thing (U4): all of them for Auditors and administrators, the caller's own for anyone else."),
        // ---- Remote Things (connection-services' RemoteThing; DOMAIN C5) ----
        row(REMOTE, "SetRemotePropertyBinding", Exclusive(edge::set_property_binding))
            .params(const { &[req("propertyName", T::String), opt("sourceName", T::String).or("the property's name"),
                opt("pushType", T::String).or("VALUE (also ALWAYS, NEVER, DEADBAND)"), opt("pushThreshold", T::Number).or("0"),
                opt("timeout", T::Integer).or("0: the server's (serve --edge-device-timeout-seconds, 30 s); milliseconds")] })
            .rule(Rule::On(Permission::Update, "change the Thing's bindings")).audit(Audit::Change)
            .doc("Binds a property to the device: while a device has bound the Thing, reads and writes of it go to the device under `sourceName` (503 when none has, 504 past the timeout), and `GetPropertySubscriptions` tells the device to push it."),
        row(REMOTE, "RemoveRemotePropertyBinding", Exclusive(edge::remove_property_binding))
            .params(const { &[req("propertyName", T::String)] })
            .rule(Rule::On(Permission::Update, "change the Thing's bindings")).audit(Audit::Change)
            .doc("Unbinds a property: it is the platform's again."),
        row(REMOTE, "SetRemoteServiceBinding", Exclusive(edge::set_service_binding))
            .params(const { &[req("serviceName", T::String), opt("sourceServiceName", T::String).or("the service's name"),
                opt("timeout", T::Integer).or("0: the server's (30 s); milliseconds")] })
            .rule(Rule::On(Permission::Update, "change the Thing's bindings")).audit(Audit::Change)
            .doc("Binds a service defined on the Thing to the device: a call of it runs on the device under `sourceServiceName`, after the caller's own check."),
        row(REMOTE, "RemoveRemoteServiceBinding", Exclusive(edge::remove_service_binding))
            .params(const { &[req("serviceName", T::String)] })
            .rule(Rule::On(Permission::Update, "change the Thing's bindings")).audit(Audit::Change)
            .doc("Unbinds a service."),
        row(REMOTE, "GetRemoteBindings", Shared(edge::get_bindings))
            .returns(Returns::Value(T::Json)).rule(Rule::On(Permission::Read, "read the Thing's bindings"))
            .doc("The Thing's property and service bindings."),
        row(REMOTE, "GetPropertySubscriptions", Shared(edge::property_subscriptions))
            .returns(Returns::Rows).rule(Rule::Invoke)
            .doc("What the device pushes: one row per bound property (`name`, `edgeName`, `pushType`, `pushThreshold`), as the edge SDKs read it."),
        row(REMOTE, "ProcessRemoteEvents", Unlocked(edge::process_remote_events))
            .params(const { &[req("events", T::Infotable)] }).returns(Returns::Value(T::Integer)).rule(Rule::Invoke).script(Script::Refused)
            .doc("Fires events a device sent: rows of `eventName` and `eventData` (one row of the event's shape). Each needs EventInvoke; all are checked before any fires."),
        row(WS_COMMUNICATIONS, "GetConnections", Shared(edge::connections))
            .returns(Returns::Rows).rule(Rule::Invoke)
            .doc("The AlwaysOn connections of this server: user, address, since, the Things bound (those the caller can see), frames in and out. Administrators only."),
        // ---- FileRepository Things ----
        row(REPOSITORY, "ListFiles", Unlocked(repository::list_files))
            .params(const { &[opt("path", T::String).or("the repository's top folder")] }).returns(Returns::Rows).rule(Rule::Invoke)
            .doc("The files and folders under `path`."),
        row(REPOSITORY, "DeleteFile", Unlocked(repository::delete_file))
            .params(const { &[req("path", T::String)] }).rule(Rule::Invoke).script(Script::Refused)
            .doc("Deletes a file (audited when it is part of the audit archive)."),
        // ---- History (DOMAIN section 11) ----
        row(On::Kinds(THINGS), "SetValueStream", Exclusive(history::set_value_stream))
            .params(const { &[opt("name", T::Thingname).or("left out: none, the Thing's logged properties are not recorded")] })
            .rule(Rule::On(Permission::Update, "change the Thing's value stream")).audit(Audit::Change)
            .doc("Names the ValueStream Thing (one the caller can see) that records every accepted write of the Thing's logged properties, with its time and quality (H2)."),
        row(On::Kinds(THINGS), "QueryPropertyHistory", Unlocked(history::query_property_history))
            .params(HISTORY_QUERY).returns(Returns::Rows)
            .rule(Rule::Own("anyone who sees the Thing; each logged property is answered only to those with PropertyRead on it, and left out for the rest (H2)"))
            .doc("The history of the Thing's logged properties: one row per timestamp (`timestamp` and a column per property; a property with no value at that time shows its last value before, unless `fillOption` is None), newest first unless `oldestFirst`, at most `maxItems` rows; `query` filters the rows on `timestamp` and the properties."),
        row(On::Kinds(THINGS), "PurgePropertyHistory", Unlocked(history::purge_property_history))
            .params(const { &[DATE_FROM.or("the beginning"), DATE_TO.or("now and later"), IMMEDIATE] }).returns(Returns::Value(T::Long))
            .rule(Rule::Invoke).script(Script::Refused).audit(Audit::In(crate::state::audit::category::MODEL))
            .doc("Removes the Thing's history between the dates from its value stream; answers how many values went (H2). Audited."),
        // ---- Streams and data tables (H3, H4) ----
        row(STORAGE, "SetDataShape", Exclusive(streams::set_data_shape))
            .params(const { &[req("name", T::Datashapename)] })
            .rule(Rule::On(Permission::Update, "change the Thing's DataShape")).audit(Audit::Change)
            .doc("The DataShape of the stream's entries or the table's rows (one the caller can see; a DataTable's has a primary key). While entries exist, the new shape must keep every field with its type (409 otherwise)."),
        row(RETAINED, "SetRetention", Exclusive(history::set_retention))
            .params(const { &[opt("retentionDays", T::Number).or("0: kept whatever their age"), opt("maxEntries", T::Number).or("0: no maximum")] })
            .rule(Rule::On(Permission::Update, "change the Thing's retention")).audit(Audit::Change)
            .doc("How much a Stream or ValueStream keeps (H5): entries older than `retentionDays` go, and at most `maxEntries` stay (a ValueStream: per Thing), the oldest first. Applied every `serve --retention-interval-seconds`; each removal is audited."),
        row(STREAM, "AddStreamEntry", Unlocked(streams::add_stream_entry))
            .params(const { &[opt("timestamp", T::Datetime).or("now"), opt("source", T::String).or("the caller's name"), opt("sourceType", T::String).or("User"), TAGS_PARAM, LOCATION, VALUES] })
            .rule(Rule::Invoke).script(Script::Refused)
            .doc("Adds one entry: `values` (an InfoTable or a JSON object of the DataShape's fields, each of its type) with its time, source, tags and location. Durable when answered."),
        row(STREAM, "AddStreamEntries", Unlocked(streams::add_stream_entries))
            .params(const { &[VALUES] }).returns(Returns::Value(T::Integer))
            .rule(Rule::Invoke).script(Script::Refused).large_body()
            .doc("Adds the rows of `values` as entries, all or nothing; a row may carry its own `timestamp`, `source`, `sourceType`, `tags` and `location`. Answers how many."),
        row(STREAM, "QueryStreamEntriesWithData", Unlocked(streams::query_stream_entries))
            .params(const { &[MAX_HISTORY, DATE_FROM, DATE_TO, OLDEST_FIRST, QUERY, opt("source", T::String), TAGS_PARAM] })
            .returns(Returns::Rows).rule(Rule::Invoke)
            .doc("Entries within the dates, of `source` and with every one of `tags`, filtered and sorted by `query` (on `timestamp`, `streamEntryId`, `source`, `sourceType`, `tags` and the DataShape's fields), then newest first unless `oldestFirst`; at most `maxItems`."),
        row(STREAM, "GetStreamEntriesWithData", Unlocked(streams::query_stream_entries))
            .params(const { &[MAX_HISTORY, OLDEST_FIRST] }).returns(Returns::Rows).rule(Rule::Invoke)
            .doc("The newest entries (the oldest with `oldestFirst`), at most `maxItems`."),
        row(STREAM, "DeleteStreamEntry", Unlocked(streams::delete_stream_entry))
            .params(const { &[req("streamEntryId", T::String)] }).rule(Rule::Invoke).script(Script::Refused)
            .doc("Removes one entry by its `streamEntryId` (404 when there is none)."),
        row(STREAM, "PurgeStreamEntries", Unlocked(streams::purge_stream_entries))
            .params(const { &[DATE_FROM.or("the beginning"), DATE_TO.or("now and later"), IMMEDIATE] }).returns(Returns::Value(T::Long))
            .rule(Rule::Invoke).script(Script::Refused).audit(Audit::In(crate::state::audit::category::MODEL))
            .doc("Removes the entries between the dates; answers how many went. Audited."),
        row(STREAM, "GetStreamEntryCount", Unlocked(streams::stream_entry_count))
            .returns(Returns::Value(T::Long)).rule(Rule::Invoke)
            .doc("How many entries the stream holds."),
        row(DATA_TABLE, "AddDataTableEntry", Unlocked(tables::add))
            .params(ROW_PARAMS).rule(Rule::Invoke).script(Script::Refused)
            .doc("Adds a row (`values`: its DataShape's fields, the primary key's with values); 409 when a row has its key."),
        row(DATA_TABLE, "AddOrUpdateDataTableEntry", Unlocked(tables::add_or_update))
            .params(ROW_PARAMS).rule(Rule::Invoke).script(Script::Refused)
            .doc("Adds a row, or replaces the row of its key."),
        row(DATA_TABLE, "UpdateDataTableEntry", Unlocked(tables::update))
            .params(ROW_PARAMS).rule(Rule::Invoke).script(Script::Refused)
            .doc("Replaces the row of its key (404 when there is none)."),
        row(DATA_TABLE, "DeleteDataTableEntry", Unlocked(tables::delete_entry))
            .params(const { &[VALUES] }).rule(Rule::Invoke).script(Script::Refused)
            .doc("Removes the row of the key in `values` (404 when there is none)."),
        row(DATA_TABLE, "DeleteDataTableEntries", Unlocked(tables::delete_entries))
            .params(const { &[req("query", T::Json)] }).returns(Returns::Value(T::Long)).rule(Rule::Invoke).script(Script::Refused)
            .doc("Removes the rows the query's filters select; answers how many went."),
        row(DATA_TABLE, "GetDataTableEntryByKey", Unlocked(tables::by_key))
            .params(const { &[req("key", T::String)] }).returns(Returns::Rows).rule(Rule::Invoke)
            .doc("The row of the key (a key of several fields: the JSON list of their values); no row, no rows."),
        row(DATA_TABLE, "GetDataTableEntries", Unlocked(tables::query_entries))
            .params(const { &[MAX_HISTORY] }).returns(Returns::Rows).rule(Rule::Invoke)
            .doc("The rows, by key, at most `maxItems`."),
        row(DATA_TABLE, "FindDataTableEntries", Unlocked(tables::query_entries))
            .params(const { &[MAX_HISTORY, VALUES] }).returns(Returns::Rows).rule(Rule::Invoke)
            .doc("The rows whose fields equal those given in `values`."),
        row(DATA_TABLE, "QueryDataTableEntries", Unlocked(tables::query_entries))
            .params(const { &[MAX_HISTORY, opt("values", T::Json), QUERY, opt("source", T::String), TAGS_PARAM] })
            .returns(Returns::Rows).rule(Rule::Invoke)
            .doc("The rows equal to `values`, of `source`, with every one of `tags`, filtered and sorted by `query`."),
        row(DATA_TABLE, "GetDataTableEntryCount", Unlocked(tables::count))
            .returns(Returns::Value(T::Long)).rule(Rule::Invoke)
            .doc("How many rows the table holds."),
        row(DATA_TABLE, "SetDataTableIndexes", Unlocked(tables::set_indexes))
            .params(const { &[req("fieldNames", ANY)] })
            .rule(Rule::On(Permission::Update, "change the table's indexes")).script(Script::Refused).audit(Audit::Change)
            .doc("The fields of the DataShape the rows are indexed by, besides the key (a list; it replaces the one before). Queries, finds and deletions on them use the index."),
        row(DATA_TABLE, "PurgeDataTableEntries", Unlocked(tables::purge))
            .returns(Returns::Value(T::Long)).rule(Rule::Invoke).script(Script::Refused).audit(Audit::In(crate::state::audit::category::MODEL))
            .doc("Removes every row; answers how many went. Audited."),
    ]);
    // The typed property history services: one row each, one function.
    for (name, _) in history::TYPED {
        v.push(
            row(On::Kinds(THINGS), name, Unlocked(history::query_typed_history))
                .params(const { &[req("propertyName", T::String), MAX_HISTORY, DATE_FROM, DATE_TO, OLDEST_FIRST, QUERY] })
                .returns(Returns::Rows)
                .rule(Rule::Own("PropertyRead on the property (H2)"))
                .doc("The history of one logged property of the service's base type: rows of `timestamp` and `value`, newest first unless `oldestFirst`, at most `maxItems`; `query` filters on `timestamp` and `value`."),
        );
    }
    // The permission families: on an entity, as instance permissions, on a collection.
    for acl in [AclOf::Own, AclOf::Instance, AclOf::Collection] {
        for family in Family::ALL {
            for action in [
                Action::Add,
                Action::Delete,
                Action::Get,
                Action::GetJson,
                Action::SetJson,
            ] {
                v.push(permission_row(family, action, acl));
            }
        }
    }
    v
}

/// One permission service (`AddRunTimePermission`, `GetInstanceVisibilityPermissions`,
/// `DeleteCollectionDesignTimePermission`, ...).
fn permission_row(family: Family, action: Action, acl: AclOf) -> Service {
    let infix = match acl {
        AclOf::Own => "",
        AclOf::Instance => "Instance",
        AclOf::Collection => "Collection",
    };
    let (verb, plural) = match action {
        Action::Add => ("Add", ""),
        Action::Delete => ("Delete", ""),
        Action::Get => ("Get", "s"),
        Action::GetJson => ("Get", "sAsJSON"),
        Action::SetJson => ("Set", "sAsJSON"),
    };
    let name: &'static str =
        Box::leak(format!("{verb}{infix}{}Permission{plural}", family.word()).into_boxed_str());
    let entries: &'static [Param] = match (family, action) {
        (_, Action::Get | Action::GetJson) => &[],
        (_, Action::SetJson) => std::slice::from_ref(&AS_JSON),
        (Family::RunTime, _) => RUN_TIME,
        (Family::DesignTime, _) => DESIGN_TIME,
        (Family::Visibility, _) => VISIBILITY,
    };
    let params: &'static [Param] = if acl == AclOf::Collection {
        Box::leak(
            std::iter::once(COLLECTION)
                .chain(entries.iter().copied())
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        )
    } else {
        entries
    };
    let on = match acl {
        AclOf::Own => On::Kinds(NOT_RESOURCES),
        AclOf::Instance => On::Kinds(TEMPLATES_AND_SHAPES),
        AclOf::Collection => COLLECTIONS,
    };
    let reads = matches!(action, Action::Get | Action::GetJson);
    let rule = match (acl, reads) {
        // P2: the role of Administrators (`predefined::ROLE_RULES`).
        (AclOf::Collection, _) => Rule::Invoke,
        (_, true) => Rule::On(Permission::Read, "read this entity's permissions"),
        (_, false) => Rule::On(Permission::Update, "change this entity's permissions"),
    };
    let whose = match acl {
        AclOf::Own => "the entity",
        AclOf::Instance => "a template or shape, for all its Things,",
        AclOf::Collection => "a collection (`collectionName`: Things, ThingTemplates, ...)",
    };
    let what = family.words();
    let doc: &'static str = Box::leak(
        match action {
            Action::Add => format!("Adds a {what} to {whose} (one per principal, type and resource: adding replaces)."),
            Action::Delete => format!("Removes the matching {what} from {whose}."),
            Action::Get => format!("The {what}s of {whose}, as rows."),
            Action::GetJson => format!("The {what}s of {whose}, as one JSON value (what `Set...AsJSON` takes)."),
            Action::SetJson => format!("Replaces every {what} of {whose} with `permissions` (as `Get...AsJSON` gives them), in one change and one audit entry; all are checked first."),
        }
        .into_boxed_str(),
    );
    let run = if reads {
        Shared(services::permission_service)
    } else {
        Exclusive(services::permission_service)
    };
    row(on, name, run)
        .params(params)
        .returns(match action {
            Action::Get => Returns::Rows,
            Action::GetJson => Returns::Value(T::Json),
            _ => Returns::Nothing,
        })
        .rule(rule)
        .audit(if reads {
            Audit::None
        } else {
            Audit::In(SECURITY)
        })
        .op(Op::Permissions(family, action, acl))
        .doc(doc)
}

fn delete_name(kind: Kind) -> &'static str {
    Box::leak(format!("Delete{}", kind.label()).into_boxed_str())
}

/// Does the request path (as it arrives, percent-encoded) call a service whose body may be
/// large? (The HTTP layer's body limit, before the body is read.)
pub fn takes_large_body(path: &str) -> bool {
    let decode = |seg: &str| {
        percent_encoding::percent_decode_str(seg)
            .decode_utf8()
            .map(|c| c.into_owned())
            .unwrap_or_default()
    };
    let parts: Vec<String> = path.trim_matches('/').split('/').map(decode).collect();
    match parts
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["Thingworx", collection, entity, "Services", service] => Kind::from_collection(collection)
            .and_then(|kind| find(kind, entity, service))
            .is_some_and(|row| row.large_body),
        _ => false,
    }
}

/// The host service `service` of `entity` of `kind`, if there is one (a [`On::ThingsOf`] row
/// is found for any Thing: the router checks the template).
pub fn find(kind: Kind, entity: &str, service: &str) -> Option<&'static Service> {
    // Fx: a lookup-only map of the table's names (a caller's name is hashed, never inserted).
    static INDEX: LazyLock<rustc_hash::FxHashMap<&'static str, Vec<&'static Service>>> =
        LazyLock::new(|| {
            let mut index: rustc_hash::FxHashMap<&'static str, Vec<&'static Service>> =
                Default::default();
            for s in SERVICES.iter() {
                index.entry(s.name).or_default().push(s);
            }
            index
        });
    INDEX
        .get(service)?
        .iter()
        .copied()
        .find(|s| s.serves(kind, entity))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_large_body_is_a_rows_column_known_by_its_path() {
        use super::takes_large_body as large;
        assert!(large(
            "/Thingworx/Resources/ScriptServices/Services/RunScript"
        ));
        assert!(large(
            "/Thingworx/Resources/Script%53ervices/Services/RunScript/"
        ));
        assert!(!large(
            "/Thingworx/Things/ScriptServices/Services/RunScript"
        ));
        assert!(!large(
            "/Thingworx/Resources/EntityServices/Services/CreateThing"
        ));
        assert!(!large("/Thingworx/Resources/ScriptServices"));
    }
}
