//! Entity records: the authoritative, serializable form of every entity.
//!
//! References between entities are by name. The same records are what the store keeps and what
//! `thinghost model export` writes, so the JSON form below is a stable, documented format.

use crate::names::{Kind, Permission};
use crate::types::BaseType;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// The resource of a run-time entry that covers every property, service or event.
pub const ALL_RESOURCES: &str = "*";

/// A user or group named in a permission entry or as a member.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PrincipalRef {
    pub principal: String,
    #[serde(rename = "principalType")]
    pub kind: PrincipalType,
}

impl PrincipalRef {
    pub fn user(name: impl Into<String>) -> Self {
        PrincipalRef {
            principal: name.into(),
            kind: PrincipalType::User,
        }
    }
    pub fn group(name: impl Into<String>) -> Self {
        PrincipalRef {
            principal: name.into(),
            kind: PrincipalType::Group,
        }
    }
    /// The entity kind this principal names.
    pub fn entity_kind(&self) -> Kind {
        match self.kind {
            PrincipalType::User => Kind::User,
            PrincipalType::Group => Kind::Group,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PrincipalType {
    User,
    Group,
}

/// A visibility principal: an organization, or one of its units (named `Org:Unit`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VisibilityEntry {
    pub principal: String,
    #[serde(rename = "principalType")]
    pub kind: VisibilityType,
}

impl VisibilityEntry {
    pub fn organization(name: impl Into<String>) -> Self {
        VisibilityEntry {
            principal: name.into(),
            kind: VisibilityType::Organization,
        }
    }
    pub fn unit(org: &str, unit: &str) -> Self {
        VisibilityEntry {
            principal: format!("{org}:{unit}"),
            kind: VisibilityType::OrganizationalUnit,
        }
    }
    /// The organization and, for a unit, the unit's name.
    pub fn split(&self) -> (&str, Option<&str>) {
        match self.kind {
            VisibilityType::Organization => (&self.principal, None),
            VisibilityType::OrganizationalUnit => match self.principal.split_once(':') {
                Some((o, u)) => (o, Some(u)),
                None => (&self.principal, Some("")),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum VisibilityType {
    Organization,
    OrganizationalUnit,
}

/// One design-time or run-time permission entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PermissionEntry {
    #[serde(flatten)]
    pub principal: PrincipalRef,
    #[serde(rename = "type")]
    pub permission: Permission,
    /// `*` for all, or one property, service or event name (an override). Design-time entries use `*`.
    #[serde(default = "all_resources")]
    pub resource: String,
    pub allow: bool,
}

fn all_resources() -> String {
    ALL_RESOURCES.to_string()
}

impl PermissionEntry {
    pub fn new(
        principal: PrincipalRef,
        permission: Permission,
        resource: &str,
        allow: bool,
    ) -> Self {
        PermissionEntry {
            principal,
            permission,
            resource: resource.to_string(),
            allow,
        }
    }
}

/// The permissions set on one entity, template instance, shape instance or collection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Acl {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub visibility: Vec<VisibilityEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub design_time: Vec<PermissionEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_time: Vec<PermissionEntry>,
}

impl Acl {
    pub fn is_empty(&self) -> bool {
        self.visibility.is_empty() && self.design_time.is_empty() && self.run_time.is_empty()
    }

    /// Removes every entry naming `principal`; true if any was removed.
    pub fn remove_principal(&mut self, principal: &PrincipalRef) -> bool {
        let before = self.design_time.len() + self.run_time.len();
        self.design_time.retain(|e| &e.principal != principal);
        self.run_time.retain(|e| &e.principal != principal);
        before != self.design_time.len() + self.run_time.len()
    }

    /// Removes every visibility entry for `org` or one of its units (`unit` = None),
    /// or for the one unit `org:unit`; true if any was removed.
    pub fn remove_visibility(&mut self, org: &str, unit: Option<&str>) -> bool {
        let before = self.visibility.len();
        self.visibility.retain(|v| {
            let (o, u) = v.split();
            !(o == org && (unit.is_none() || u == unit))
        });
        before != self.visibility.len()
    }
}

/// A property definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyDef {
    pub name: String,
    pub base_type: BaseType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<Json>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// For INFOTABLE properties: the data shape of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_shape: Option<String>,
    /// When a write fires `DataChange` (B5).
    #[serde(default, skip_serializing_if = "DataChangeType::is_default")]
    pub data_change_type: DataChangeType,
    /// Every accepted value is recorded in the Thing's value stream (H2).
    #[serde(default, skip_serializing_if = "is_false")]
    pub logged: bool,
}

/// When a property write fires `DataChange` (B5): when the value changes (the default), at every
/// write, or never.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataChangeType {
    #[default]
    Value,
    Always,
    Never,
}

impl DataChangeType {
    pub fn is_default(&self) -> bool {
        *self == DataChangeType::Value
    }

    /// The vendor's name (`VALUE`, `ALWAYS`, `NEVER`), any case.
    pub fn parse(s: &str) -> Option<DataChangeType> {
        match s.to_ascii_uppercase().as_str() {
            "VALUE" => Some(DataChangeType::Value),
            "ALWAYS" => Some(DataChangeType::Always),
            "NEVER" => Some(DataChangeType::Never),
            _ => None,
        }
    }

    /// Does a write from `old` to `new` fire `DataChange`?
    pub fn fires(self, old: Option<&Json>, new: &Json) -> bool {
        match self {
            DataChangeType::Value => old != Some(new),
            DataChangeType::Always => true,
            DataChangeType::Never => false,
        }
    }
}

/// A subscription (B6): code (or, on an entity an extension contributed and without code, that
/// extension's handler of the subscription's name) run for each firing of `event` by `source`
/// (empty: `me`, each Thing that has the subscription, for its own events).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionDef {
    pub name: String,
    /// The Thing whose events it receives; empty: `me`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    pub event: String,
    /// For `DataChange`: only this property's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// The event every Thing fires when a property changes (B5).
pub const DATA_CHANGE: &str = "DataChange";

/// A service parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParamDef {
    pub name: String,
    pub base_type: BaseType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_shape: Option<String>,
}

/// A service definition. Its implementation is the host's or an extension's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<ParamDef>,
    #[serde(default = "nothing")]
    pub result: BaseType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_data_shape: Option<String>,
    /// Whether its calls are audited (category SERVICE).
    #[serde(default, skip_serializing_if = "ServiceAudit::is_off")]
    pub audit: ServiceAudit,
    /// Rhai code stored with the definition that implements it (B1); without it, the handler of
    /// the extension that contributed the entity implements it, or nothing does (501).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Whether a template derived from its source, or a Thing of one, may give it another
    /// implementation (B2).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_override: bool,
}

/// Another implementation of an inherited service (B2): Rhai code, or, on an entity an extension
/// contributed and without code, that extension's handler. The definition (name, parameters,
/// result) stays its source's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceOverride {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Whether the calls of a service are audited (DOMAIN U1, category SERVICE): not at all (the
/// default), queued (on disk within milliseconds, with the next batch), or durable before the
/// call answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceAudit {
    #[default]
    Off,
    Queued,
    Durable,
}

impl ServiceAudit {
    pub fn is_off(&self) -> bool {
        *self == ServiceAudit::Off
    }
}

fn nothing() -> BaseType {
    BaseType::Nothing
}

/// An event definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_shape: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The property, service and event definitions an entity declares itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<PropertyDef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceDef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventDef>,
    /// Inherited services this entity implements anew (B2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<ServiceOverride>,
    /// Subscriptions to events (B6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<SubscriptionDef>,
}

impl Definitions {
    pub fn is_empty(&self) -> bool {
        self.properties.is_empty()
            && self.services.is_empty()
            && self.events.is_empty()
            && self.overrides.is_empty()
            && self.subscriptions.is_empty()
    }
}

/// A Thing: exactly one template, implemented shapes, own definitions and property values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingBody {
    pub thing_template: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thing_shapes: Vec<String>,
    #[serde(default, skip_serializing_if = "Definitions::is_empty")]
    pub definitions: Definitions,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, Json>,
    /// When each value was measured, for values that came with a time (a device's pushes, C4):
    /// a pushed value older than this does not replace the value. Milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub value_times: BTreeMap<String, i64>,
    /// A Remote Thing's bindings to its device (C5): which properties and services are the
    /// device's, under which names there.
    #[serde(default, skip_serializing_if = "RemoteBindings::is_empty")]
    pub remote: RemoteBindings,
    /// Set while the Thing is disabled because the extension its template came from was removed:
    /// what it had from that extension, kept until the extension comes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<Parked>,
    /// Where its history goes and how much is kept (DOMAIN section 11). Boxed: most Things
    /// have none, and a Thing's body stays the size of the others.
    #[serde(default, skip_serializing_if = "Storage::is_empty")]
    pub storage: Box<Storage>,
}

/// A Thing's data-storage settings (DOMAIN H1-H5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// The ValueStream Thing its logged properties are recorded in (H2; the vendor's
    /// `SetValueStream`). Any Thing may have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_stream: Option<String>,
    /// The DataShape of a Stream's entries or a DataTable's rows (the vendor's
    /// `SetDataShape`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_shape: Option<String>,
    /// Of a Stream or ValueStream: entries older than this many days are purged (H5; 0: kept).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub retention_days: u32,
    /// Of a Stream or ValueStream: at most this many entries are kept, the oldest purged first
    /// (H5; 0: no maximum). A ValueStream counts per Thing.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub max_entries: u64,
    /// Of a DataTable: the fields of its DataShape its rows are indexed by, besides its key
    /// (H4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<String>,
}

impl Storage {
    pub fn is_empty(&self) -> bool {
        *self == Storage::default()
    }
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// A Remote Thing's bindings (the vendor's `SetRemotePropertyBinding` and
/// `SetRemoteServiceBinding`, DOMAIN C5): a bound property is read and written on the device,
/// a bound service runs there, under the device-side name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteBindings {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, RemoteProperty>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, RemoteService>,
}

impl RemoteBindings {
    pub fn is_empty(&self) -> bool {
        self.properties.is_empty() && self.services.is_empty()
    }
}

/// A property bound to the device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteProperty {
    /// Its name on the device (the vendor's `sourceName`, the SDKs' `edgeName`).
    pub source_name: String,
    /// When the device pushes it: `VALUE` (on change), `ALWAYS`, `NEVER`, `DEADBAND`.
    pub push_type: String,
    /// The change a `DEADBAND` push waits for.
    pub push_threshold: f64,
    /// How long a read or write waits for the device, in milliseconds (0: the server's).
    pub timeout_ms: u64,
}

/// A service bound to the device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteService {
    /// Its name on the device.
    pub source_name: String,
    /// How long a call waits for the device, in milliseconds (0: the server's).
    pub timeout_ms: u64,
}

/// What a user's Thing had from an extension that was removed (DOMAIN E5: the Thing stays, with
/// its values and permissions). While parked, the Thing is based on `GenericThing`, no service of
/// it runs and no property of it is written; when the extension is installed again, its template,
/// shapes and values come back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parked {
    /// The removed extension.
    pub extension: String,
    /// The Thing's template, from that extension.
    pub thing_template: String,
    /// The shapes of that extension the Thing implemented.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thing_shapes: Vec<String>,
    /// The values of the properties that left with the extension.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, Json>,
}

/// A ThingTemplate: one base template (none only for the root `GenericThing`), implemented
/// shapes, definitions, and the instance permissions every Thing of it inherits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_thing_template: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thing_shapes: Vec<String>,
    #[serde(default, skip_serializing_if = "Definitions::is_empty")]
    pub definitions: Definitions,
    #[serde(default, skip_serializing_if = "Acl::is_empty")]
    pub instance_permissions: Acl,
}

/// A ThingShape: definitions, and run-time instance permissions for the Things that implement it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShapeBody {
    #[serde(default, skip_serializing_if = "Definitions::is_empty")]
    pub definitions: Definitions,
    #[serde(default, skip_serializing_if = "Acl::is_empty")]
    pub instance_permissions: Acl,
}

/// One field of a DataShape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldDef {
    pub name: String,
    pub base_type: BaseType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_primary_key: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_shape: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataShapeBody {
    #[serde(default)]
    pub fields: Vec<FieldDef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserBody {
    /// An opaque password hash (PHC string); None means the user cannot sign in with a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub locked: bool,
}

fn yes() -> bool {
    true
}

impl Default for UserBody {
    fn default() -> Self {
        UserBody {
            password_hash: None,
            enabled: true,
            locked: false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupBody {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<PrincipalRef>,
}

/// An organizational unit. Exactly one unit of an organization has no parent: its top unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<PrincipalRef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrganizationBody {
    pub units: Vec<Unit>,
}

impl OrganizationBody {
    /// An organization with only its top unit.
    pub fn with_top(top: &str) -> Self {
        OrganizationBody {
            units: vec![Unit {
                name: top.to_string(),
                parent: None,
                members: vec![],
            }],
        }
    }
    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.name == name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationKeyBody {
    /// The user whose security context the key carries.
    pub user: String,
    /// The hash of the key (never the key itself).
    pub key_hash: String,
    /// A short, non-secret fingerprint for display (`GetKeyID` answers with it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    /// Expiration, epoch milliseconds.
    pub expiration_date: i64,
    /// Addresses or CIDR ranges the key may be used from; empty means anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub whitelist: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_name: String,
    /// Creation time, epoch milliseconds.
    #[serde(default)]
    pub created: i64,
}

/// Subsystems and Resources: entities that host system services.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceHostBody {
    #[serde(default, skip_serializing_if = "Definitions::is_empty")]
    pub definitions: Definitions,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderBody {}

/// The kind-specific part of an entity; `kind` is its tag in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Body {
    Thing(ThingBody),
    ThingTemplate(TemplateBody),
    ThingShape(ShapeBody),
    DataShape(DataShapeBody),
    User(UserBody),
    Group(GroupBody),
    Organization(OrganizationBody),
    ApplicationKey(ApplicationKeyBody),
    Subsystem(ServiceHostBody),
    Resource(ServiceHostBody),
    PersistenceProvider(ProviderBody),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Thing(_) => Kind::Thing,
            Body::ThingTemplate(_) => Kind::ThingTemplate,
            Body::ThingShape(_) => Kind::ThingShape,
            Body::DataShape(_) => Kind::DataShape,
            Body::User(_) => Kind::User,
            Body::Group(_) => Kind::Group,
            Body::Organization(_) => Kind::Organization,
            Body::ApplicationKey(_) => Kind::ApplicationKey,
            Body::Subsystem(_) => Kind::Subsystem,
            Body::Resource(_) => Kind::Resource,
            Body::PersistenceProvider(_) => Kind::PersistenceProvider,
        }
    }
}

/// An entity: common fields and the kind-specific body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entity {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The user who created it (DOMAIN V2: an owner always sees its entity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The entity's own visibility, design-time and run-time entries.
    #[serde(default, skip_serializing_if = "Acl::is_empty")]
    pub permissions: Acl,
    /// The extension that contributed it (and owns it), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    #[serde(flatten)]
    pub body: Body,
}

impl Entity {
    pub fn new(name: impl Into<String>, body: Body) -> Self {
        Entity {
            name: name.into(),
            description: String::new(),
            tags: vec![],
            owner: None,
            permissions: Acl::default(),
            extension: None,
            body,
        }
    }
    pub fn kind(&self) -> Kind {
        self.body.kind()
    }
    pub fn key(&self) -> Key {
        Key::new(self.kind(), &self.name)
    }
    /// A Thing made from `template`.
    pub fn thing(name: &str, template: &str) -> Self {
        Entity::new(
            name,
            Body::Thing(ThingBody {
                thing_template: template.to_string(),
                thing_shapes: vec![],
                definitions: Definitions::default(),
                values: BTreeMap::new(),
                value_times: BTreeMap::new(),
                remote: RemoteBindings::default(),
                parked: None,
                storage: Box::default(),
            }),
        )
    }
    /// A ThingTemplate derived from `base`.
    pub fn template(name: &str, base: &str) -> Self {
        Entity::new(
            name,
            Body::ThingTemplate(TemplateBody {
                base_thing_template: Some(base.to_string()),
                thing_shapes: vec![],
                definitions: Definitions::default(),
                instance_permissions: Acl::default(),
            }),
        )
    }
    pub fn shape(name: &str) -> Self {
        Entity::new(name, Body::ThingShape(ShapeBody::default()))
    }
    pub fn user(name: &str) -> Self {
        Entity::new(name, Body::User(UserBody::default()))
    }
    pub fn group(name: &str) -> Self {
        Entity::new(name, Body::Group(GroupBody::default()))
    }
    /// An organization whose top unit has the organization's name.
    pub fn organization(name: &str) -> Self {
        Entity::new(name, Body::Organization(OrganizationBody::with_top(name)))
    }

    /// The entity's own definitions, for the kinds that have them.
    pub fn definitions(&self) -> Option<&Definitions> {
        match &self.body {
            Body::Thing(b) => Some(&b.definitions),
            Body::ThingTemplate(b) => Some(&b.definitions),
            Body::ThingShape(b) => Some(&b.definitions),
            Body::Subsystem(b) | Body::Resource(b) => Some(&b.definitions),
            _ => None,
        }
    }
    pub fn definitions_mut(&mut self) -> Option<&mut Definitions> {
        match &mut self.body {
            Body::Thing(b) => Some(&mut b.definitions),
            Body::ThingTemplate(b) => Some(&mut b.definitions),
            Body::ThingShape(b) => Some(&mut b.definitions),
            Body::Subsystem(b) | Body::Resource(b) => Some(&mut b.definitions),
            _ => None,
        }
    }
    /// Instance permissions (templates and shapes).
    pub fn instance_permissions(&self) -> Option<&Acl> {
        match &self.body {
            Body::ThingTemplate(b) => Some(&b.instance_permissions),
            Body::ThingShape(b) => Some(&b.instance_permissions),
            _ => None,
        }
    }
    pub fn instance_permissions_mut(&mut self) -> Option<&mut Acl> {
        match &mut self.body {
            Body::ThingTemplate(b) => Some(&mut b.instance_permissions),
            Body::ThingShape(b) => Some(&mut b.instance_permissions),
            _ => None,
        }
    }
}

/// Identifies an entity: its kind and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: Kind,
    pub name: String,
}

impl Key {
    pub fn new(kind: Kind, name: &str) -> Self {
        Key {
            kind,
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.collection(), self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entity_json_is_flat_and_tagged() {
        let mut e = Entity::thing("Pump1", "GenericThing");
        e.permissions.run_time.push(PermissionEntry::new(
            PrincipalRef::user("dev1"),
            Permission::ServiceInvoke,
            "Reset",
            true,
        ));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], json!("Thing"));
        assert_eq!(v["thingTemplate"], json!("GenericThing"));
        assert_eq!(
            v["permissions"]["runTime"][0],
            json!({"principal":"dev1","principalType":"User","type":"ServiceInvoke","resource":"Reset","allow":true})
        );
        let back: Entity = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let r: Result<Entity, _> = serde_json::from_value(json!({"name":"x","kind":"Widget"}));
        assert!(r.is_err());
    }
}
