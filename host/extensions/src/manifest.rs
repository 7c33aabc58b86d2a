//! The extension manifest, `plugin.toml`.
//!
//! ```toml
//! [extension]
//! name = "hello"            # unique, [a-z0-9-]+
//! version = "1.0.0"         # semver
//! host = ">=0.1"            # host versions it runs on
//! runtime = "rhai"          # "rhai" | "wasm" | "native"
//! entry = "main.rhai"       # relative to this folder
//!
//! [requires]                # other extensions and version requirements (optional)
//!
//! [[things]]
//! name = "HelloThing"
//! template = "GenericThing"
//!
//! [[things.properties]]
//! name = "greeting"
//! type = "STRING"
//! default = "Hello"
//!
//! [[things.services]]
//! name = "Greet"
//! handler = "greet"
//! result = "STRING"
//! params = [{ name = "who", type = "STRING", required = true }]
//! ```
//!
//! Templates and Things may also override services they inherit from an extension they require
//! (`[[thing_templates.service_overrides]]` with `name` and `handler`, B2), and Things, templates
//! and shapes declare events (`[[things.events]]`) and subscriptions
//! (`[[things.subscriptions]]` with `name`, `event`, `source`, `property`, `handler`, `enabled`;
//! the handler takes the event's data).
//!
//! Unknown keys are errors (a typo must not silently drop a permission or a capability).

use semver::{Version, VersionReq};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thinghost_core::{
    Acl, BaseType, Body, DataShapeBody, Definitions, Entity, EventDef, FieldDef, ParamDef,
    Permission, PermissionEntry, PrincipalRef, PropertyDef, ServiceDef, ServiceOverride, ShapeBody,
    SubscriptionDef, TemplateBody, ThingBody,
};
use thiserror::Error;

/// The manifest's file name inside an extension folder.
pub const MANIFEST: &str = "plugin.toml";

/// Why an extension was refused: which extension, which file, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("extension {extension} ({file}): {cause}")]
pub struct ManifestError {
    pub extension: String,
    pub file: String,
    pub cause: String,
}

/// The code runtime of an extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Rhai,
    Wasm,
    /// A trusted native library; loaded only when the operator opts in (`serve --allow-native`).
    Native,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionSection {
    /// Unique, `[a-z0-9-]+`.
    pub name: String,
    /// Semantic version.
    pub version: Version,
    /// The host versions it runs on (a semver requirement such as `>=0.1`).
    pub host: VersionReq,
    pub runtime: Runtime,
    /// The code file, relative to the extension folder.
    pub entry: String,
    #[serde(default)]
    pub description: String,
    /// Audit categories the extension adds (`REMOTE_ACCESS`): upper case, `[A-Z][A-Z0-9_]*`.
    #[serde(default)]
    pub audit_categories: Vec<String>,
}

/// A property of a contributed Thing, template or shape.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyDecl {
    pub name: String,
    #[serde(rename = "type")]
    pub base_type: BaseType,
    #[serde(default)]
    pub default: Option<toml::Value>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub read_only: bool,
    /// Every accepted value is recorded in the Thing's value stream (H2).
    #[serde(default)]
    pub logged: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDecl {
    pub name: String,
    #[serde(rename = "type")]
    pub base_type: BaseType,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub description: String,
}

/// A service, implemented by the extension's `handler` function.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDecl {
    pub name: String,
    pub handler: String,
    #[serde(default = "nothing")]
    pub result: BaseType,
    #[serde(default)]
    pub params: Vec<ParamDecl>,
    #[serde(default)]
    pub description: String,
    /// `"queued"` or `"durable"`: every call is recorded in the audit (category SERVICE); durable
    /// ones before the call answers. Default: not audited.
    #[serde(default)]
    pub audit: thinghost_core::ServiceAudit,
    /// Whether a template derived from the one that defines it (or a Thing of one) may give it
    /// another implementation (B2).
    #[serde(default)]
    pub allow_override: bool,
}

fn nothing() -> BaseType {
    BaseType::Nothing
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventDecl {
    pub name: String,
    #[serde(default)]
    pub data_shape: Option<String>,
    #[serde(default)]
    pub description: String,
}

/// A new implementation, by the extension's `handler`, of a service the template or Thing
/// inherits (B2): the definition (name, parameters, result) stays its source's, which must allow
/// overrides; the handler takes the definition's parameters.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideDecl {
    pub name: String,
    pub handler: String,
}

/// A subscription, run by the extension's `handler` with one argument: the event's data
/// (`eventData`; for `DataChange` `{property, newValue, oldValue, timestamp}`). The Thing it runs
/// on is the host function `me`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionDecl {
    pub name: String,
    /// The Thing whose events it receives; empty (the default): `me`.
    #[serde(default)]
    pub source: String,
    pub event: String,
    /// For `DataChange`: only this property's changes.
    #[serde(default)]
    pub property: Option<String>,
    pub handler: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub description: String,
}

/// What a Thing, template or shape declares.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Members {
    #[serde(default)]
    pub properties: Vec<PropertyDecl>,
    #[serde(default)]
    pub services: Vec<ServiceDecl>,
    #[serde(default)]
    pub events: Vec<EventDecl>,
    /// Templates and Things only.
    #[serde(default)]
    pub service_overrides: Vec<OverrideDecl>,
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionDecl>,
}

/// What a handler implements: a service of the entity, an override of an inherited one, or a
/// subscription. Services and overrides share a name space (an entity cannot both define and
/// override a name); subscriptions have their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Implements {
    Service,
    Override,
    Subscription,
}

impl Implements {
    /// The name space of its member: services and overrides are both services.
    pub fn member(self) -> Member {
        match self {
            Implements::Service | Implements::Override => Member::Service,
            Implements::Subscription => Member::Subscription,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Implements::Service => "service",
            Implements::Override => "the override of service",
            Implements::Subscription => "subscription",
        }
    }
}

/// The name space a handler is linked in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Member {
    Service,
    Subscription,
}

/// One handler the manifest declares, where it is and what it implements.
#[derive(Clone, Debug, PartialEq)]
pub struct HandlerDecl<'m> {
    pub kind: thinghost_core::Kind,
    pub entity: &'m str,
    pub implements: Implements,
    /// The service's or subscription's name.
    pub name: &'m str,
    pub handler: &'m str,
    /// Its parameters' names, when the manifest knows them: a service's own; a subscription's
    /// one (`eventData`); none for an override (the inherited definition's, in the model).
    pub params: Option<Vec<&'m str>>,
}

impl HandlerDecl<'_> {
    /// In words, for errors: `service Greet on Things/HelloThing`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} on {}/{}",
            self.implements.label(),
            self.name,
            self.kind.collection(),
            self.entity
        )
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThingDecl {
    pub name: String,
    #[serde(default = "generic_thing")]
    pub template: String,
    #[serde(default)]
    pub shapes: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(flatten)]
    pub members: Members,
}

fn generic_thing() -> String {
    thinghost_core::predefined::GENERIC_THING.to_string()
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDecl {
    pub name: String,
    #[serde(default = "generic_thing")]
    pub base: String,
    #[serde(default)]
    pub shapes: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(flatten)]
    pub members: Members,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapeDecl {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(flatten)]
    pub members: Members,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDecl {
    pub name: String,
    #[serde(rename = "type")]
    pub base_type: BaseType,
    #[serde(default)]
    pub primary_key: bool,
    #[serde(default)]
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataShapeDecl {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub fields: Vec<FieldDecl>,
}

/// Where a contributed permission entry goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PermissionScope {
    /// The entity's own entries.
    Entity,
    /// A template's or shape's instance entries.
    Instance,
}

/// A run-time entry (a service override, typically) on one of the extension's own entities.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionDecl {
    /// `Things/Name`, `ThingTemplates/Name` or `ThingShapes/Name`: one of this extension's entities.
    pub entity: String,
    #[serde(default = "entity_scope")]
    pub scope: PermissionScope,
    pub principal: String,
    pub principal_type: thinghost_core::PrincipalType,
    #[serde(rename = "type")]
    pub permission: Permission,
    #[serde(default = "star")]
    pub resource: String,
    #[serde(default = "yes")]
    pub allow: bool,
}

fn entity_scope() -> PermissionScope {
    PermissionScope::Entity
}
fn star() -> String {
    "*".to_string()
}
fn yes() -> bool {
    true
}

/// What the extension's code may touch through the host API, beyond its own entities
/// (least privilege: a host call outside this is refused even when the caller could make it).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Host functions the code may call (`get_property`, `set_property`, `invoke_service`,
    /// `log`, `caller`, ...). Deny by default (E6): a function not listed is refused, and an
    /// empty list allows none.
    #[serde(default)]
    pub functions: Vec<String>,
    /// Entity patterns the code may read (`Things/*`, `Things/Pump*`).
    #[serde(default)]
    pub read: Vec<String>,
    /// Entity patterns the code may write.
    #[serde(default)]
    pub write: Vec<String>,
    /// Service patterns the code may invoke (`Things/Hub/Services/*`).
    #[serde(default)]
    pub invoke: Vec<String>,
}

/// Limits on one call into the extension's code (`[limits]`). Every runtime enforces the deadline;
/// the memory cap applies to WebAssembly (linear memory) and to Rhai (what the call holds, by the
/// `meter`; a string may take a 64th of it); `max_operations` applies to Rhai. Native code is
/// trusted and has none of these.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsDecl {
    /// Wall-clock time for one call, host calls included, in milliseconds (1-60000; 1000).
    pub deadline_ms: u64,
    /// Memory of one call in MiB (1-4096; 64).
    pub memory_mib: u64,
    /// Rhai operations for one call (1000 and up; 1,000,000,000).
    pub max_operations: u64,
}

impl LimitsDecl {
    /// The largest memory cap (all of a 32-bit linear memory).
    pub const MAX_MEMORY_MIB: u64 = 4096;
}

/// The defaults of every runtime's limits: the runtimes' own defaults are these.
impl Default for LimitsDecl {
    fn default() -> Self {
        LimitsDecl {
            deadline_ms: 1000,
            memory_mib: 64,
            max_operations: 1_000_000_000,
        }
    }
}

/// A parsed `plugin.toml`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub extension: ExtensionSection,
    /// Other extensions, by name, with version requirements.
    #[serde(default)]
    pub requires: BTreeMap<String, VersionReq>,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub limits: LimitsDecl,
    #[serde(default)]
    pub things: Vec<ThingDecl>,
    #[serde(default)]
    pub thing_templates: Vec<TemplateDecl>,
    #[serde(default)]
    pub thing_shapes: Vec<ShapeDecl>,
    #[serde(default)]
    pub data_shapes: Vec<DataShapeDecl>,
    #[serde(default)]
    pub permissions: Vec<PermissionDecl>,
}

/// An extension folder: where it is, and its manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Package {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// Checks an extension's name: 1-64 characters of a-z, 0-9 and -.
pub fn check_extension_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "the name {name:?} must be 1-64 characters of a-z, 0-9 and -"
        ));
    }
    Ok(())
}

/// An unknown key, reported at its own line: toml reports it at the line of its table.
fn unknown_key_at_its_line(text: &str, e: &toml::de::Error) -> Option<String> {
    let message = e.message();
    let key = message
        .strip_prefix("unknown field `")?
        .split('`')
        .next()?
        .to_string();
    let from = e.span().map_or(0, |s| s.start);
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += line.len();
        if offset <= from {
            continue;
        }
        let trimmed = line.trim_start();
        let named = trimmed
            .strip_prefix(key.as_str())
            .or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")))
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if named && start + (line.len() - trimmed.len()) >= from {
            return Some(format!(
                "line {}: {} ({})",
                n + 1,
                message.trim().replace('\n', " "),
                line.trim()
            ));
        }
    }
    None
}

impl Manifest {
    /// Parses manifest text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Manifest, ManifestError> {
        let fallback = origin
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let err = |extension: &str, cause: String| ManifestError {
            extension: extension.to_string(),
            file: origin.display().to_string(),
            cause,
        };
        let m: Manifest = toml::from_str(text).map_err(|e| {
            err(
                &fallback,
                unknown_key_at_its_line(text, &e)
                    .unwrap_or_else(|| e.to_string().trim().replace('\n', " ")),
            )
        })?;
        let name = m.extension.name.clone();
        check_extension_name(&name).map_err(|c| err(&name, c))?;
        for c in &m.extension.audit_categories {
            let ok = c.chars().next().is_some_and(|f| f.is_ascii_uppercase())
                && c.len() <= 64
                && c.chars()
                    .all(|x| x.is_ascii_uppercase() || x.is_ascii_digit() || x == '_');
            if !ok {
                return Err(err(
                    &name,
                    format!(
                        "[extension] audit_categories: {c:?} is not an audit category name (upper case letters, digits and _, such as REMOTE_ACCESS)"
                    ),
                ));
            }
        }
        for dep in m.requires.keys() {
            check_extension_name(dep).map_err(|c| err(&name, format!("[requires]: {c}")))?;
            if *dep == name {
                return Err(err(&name, "an extension cannot require itself".into()));
            }
        }
        let entry = Path::new(&m.extension.entry);
        if entry.is_absolute()
            || entry
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            || m.extension.entry.is_empty()
        {
            return Err(err(
                &name,
                format!(
                    "entry {:?} must be a file inside the extension folder",
                    m.extension.entry
                ),
            ));
        }
        let l = &m.limits;
        if !(1..=60_000).contains(&l.deadline_ms) {
            return Err(err(
                &name,
                format!("[limits] deadline_ms = {} must be 1-60000", l.deadline_ms),
            ));
        }
        if !(1..=LimitsDecl::MAX_MEMORY_MIB).contains(&l.memory_mib) {
            return Err(err(
                &name,
                format!(
                    "[limits] memory_mib = {} must be 1-{}",
                    l.memory_mib,
                    LimitsDecl::MAX_MEMORY_MIB
                ),
            ));
        }
        if l.max_operations < 1000 {
            return Err(err(
                &name,
                format!(
                    "[limits] max_operations = {} must be at least 1000",
                    l.max_operations
                ),
            ));
        }
        for f in &m.capabilities.functions {
            if !crate::host_api::HOST_FUNCTIONS.iter().any(|h| h.name == f) {
                return Err(err(
                    &name,
                    format!(
                        "[capabilities] functions names {f:?}, which is not a host function ({})",
                        crate::host_api::HOST_FUNCTIONS
                            .iter()
                            .map(|h| h.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        m.entities().map_err(|c| err(&name, c))?;
        Ok(m)
    }

    /// Reads `DIR/plugin.toml`.
    pub fn read(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError {
            extension: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            file: path.display().to_string(),
            cause: format!("cannot read it: {e}"),
        })?;
        Manifest::parse(&text, &path)
    }

    pub fn name(&self) -> &str {
        &self.extension.name
    }

    /// Every handler this extension declares: its services, overrides and subscriptions.
    pub fn handlers(&self) -> Vec<HandlerDecl<'_>> {
        use thinghost_core::Kind;
        let owners = self
            .things
            .iter()
            .map(|t| (Kind::Thing, t.name.as_str(), &t.members))
            .chain(
                self.thing_templates
                    .iter()
                    .map(|t| (Kind::ThingTemplate, t.name.as_str(), &t.members)),
            )
            .chain(
                self.thing_shapes
                    .iter()
                    .map(|t| (Kind::ThingShape, t.name.as_str(), &t.members)),
            );
        owners
            .flat_map(|(kind, entity, members)| {
                let services = members.services.iter().map(move |s| HandlerDecl {
                    kind,
                    entity,
                    implements: Implements::Service,
                    name: &s.name,
                    handler: &s.handler,
                    params: Some(s.params.iter().map(|p| p.name.as_str()).collect()),
                });
                let overrides = members.service_overrides.iter().map(move |o| HandlerDecl {
                    kind,
                    entity,
                    implements: Implements::Override,
                    name: &o.name,
                    handler: &o.handler,
                    params: None,
                });
                let subscriptions = members.subscriptions.iter().map(move |s| HandlerDecl {
                    kind,
                    entity,
                    implements: Implements::Subscription,
                    name: &s.name,
                    handler: &s.handler,
                    params: Some(vec!["eventData"]),
                });
                services.chain(overrides).chain(subscriptions)
            })
            .collect()
    }

    /// The services this extension implements with its own handlers (not overrides).
    pub fn services(&self) -> usize {
        self.handlers()
            .iter()
            .filter(|h| h.implements == Implements::Service)
            .count()
    }

    /// The entities the extension contributes, with their definitions and permissions. Errors
    /// here are the manifest's own (a default of the wrong type, a permission on a foreign
    /// entity); references to other entities are checked when the entities enter the model.
    pub fn entities(&self) -> Result<Vec<Entity>, String> {
        let mut out = Vec::new();
        for s in &self.data_shapes {
            let fields = s
                .fields
                .iter()
                .map(|f| FieldDef {
                    name: f.name.clone(),
                    base_type: f.base_type,
                    description: f.description.clone(),
                    is_primary_key: f.primary_key,
                    data_shape: None,
                })
                .collect();
            out.push(described(
                Entity::new(&s.name, Body::DataShape(DataShapeBody { fields })),
                &s.description,
            ));
        }
        for s in &self.thing_shapes {
            let body = Body::ThingShape(ShapeBody {
                definitions: definitions(&s.members, &s.name)?,
                instance_permissions: Acl::default(),
            });
            out.push(described(Entity::new(&s.name, body), &s.description));
        }
        for t in &self.thing_templates {
            let body = Body::ThingTemplate(TemplateBody {
                base_thing_template: Some(t.base.clone()),
                thing_shapes: t.shapes.clone(),
                definitions: definitions(&t.members, &t.name)?,
                instance_permissions: Acl::default(),
            });
            out.push(described(Entity::new(&t.name, body), &t.description));
        }
        for t in &self.things {
            let body = Body::Thing(ThingBody {
                thing_template: t.template.clone(),
                thing_shapes: t.shapes.clone(),
                definitions: definitions(&t.members, &t.name)?,
                values: BTreeMap::new(),
                value_times: BTreeMap::new(),
                remote: Default::default(),
                parked: None,
                storage: Default::default(),
            });
            out.push(described(Entity::new(&t.name, body), &t.description));
        }
        for p in &self.permissions {
            let (collection, name) = p.entity.split_once('/').ok_or_else(|| {
                format!("permission entity {:?} must be Collection/Name", p.entity)
            })?;
            let kind = thinghost_core::Kind::from_collection(collection).ok_or_else(|| {
                format!(
                    "permission entity {:?}: {collection:?} is not a collection",
                    p.entity
                )
            })?;
            let e = out
                .iter_mut()
                .find(|e| e.kind() == kind && e.name == name)
                .ok_or_else(|| {
                    format!(
                        "permission entity {} is not one of this extension's entities",
                        p.entity
                    )
                })?;
            if !p.permission.is_run_time() {
                return Err(format!(
                    "permission on {}: {} is not a run-time permission; extensions contribute run-time entries only",
                    p.entity, p.permission
                ));
            }
            let entry = PermissionEntry::new(
                PrincipalRef {
                    principal: p.principal.clone(),
                    kind: p.principal_type,
                },
                p.permission,
                &p.resource,
                p.allow,
            );
            match p.scope {
                PermissionScope::Entity => e.permissions.run_time.push(entry),
                PermissionScope::Instance => e
                    .instance_permissions_mut()
                    .ok_or_else(|| {
                        format!(
                            "permission on {}: only templates and shapes have instance permissions",
                            p.entity
                        )
                    })?
                    .run_time
                    .push(entry),
            }
        }
        Ok(out)
    }
}

fn described(mut e: Entity, description: &str) -> Entity {
    e.description = description.to_string();
    e
}

fn definitions(m: &Members, owner: &str) -> Result<Definitions, String> {
    let mut properties = Vec::new();
    for p in &m.properties {
        let default_value = match &p.default {
            None => None,
            Some(v) => {
                let json = serde_json::to_value(v).map_err(|e| e.to_string())?;
                Some(
                    p.base_type
                        .normalize(&json)
                        .map_err(|e| format!("{owner}: the default of property {}: {e}", p.name))?,
                )
            }
        };
        properties.push(PropertyDef {
            name: p.name.clone(),
            base_type: p.base_type,
            description: p.description.clone(),
            default_value,
            read_only: p.read_only,
            data_shape: None,
            data_change_type: Default::default(),
            logged: p.logged,
        });
    }
    let services = m
        .services
        .iter()
        .map(|s| ServiceDef {
            name: s.name.clone(),
            description: s.description.clone(),
            parameters: s
                .params
                .iter()
                .map(|p| ParamDef {
                    name: p.name.clone(),
                    base_type: p.base_type,
                    description: p.description.clone(),
                    required: p.required,
                    data_shape: None,
                })
                .collect(),
            result: s.result,
            result_data_shape: None,
            audit: s.audit,
            code: None,
            allow_override: s.allow_override,
        })
        .collect();
    let events = m
        .events
        .iter()
        .map(|e| EventDef {
            name: e.name.clone(),
            description: e.description.clone(),
            data_shape: e.data_shape.clone(),
        })
        .collect();
    let overrides = m
        .service_overrides
        .iter()
        .map(|o| ServiceOverride {
            name: o.name.clone(),
            code: None,
        })
        .collect();
    let subscriptions = m
        .subscriptions
        .iter()
        .map(|s| SubscriptionDef {
            name: s.name.clone(),
            source: s.source.clone(),
            event: s.event.clone(),
            property: s.property.clone(),
            code: None,
            enabled: s.enabled,
            description: s.description.clone(),
        })
        .collect();
    Ok(Definitions {
        properties,
        services,
        events,
        overrides,
        subscriptions,
    })
}
