//! Entity kinds, permission names and name validation.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kinds of entity thinghost keeps, one REST collection each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Thing,
    ThingTemplate,
    ThingShape,
    DataShape,
    User,
    Group,
    Organization,
    ApplicationKey,
    Subsystem,
    Resource,
    PersistenceProvider,
}

impl Kind {
    /// Every kind, in the order used for exports and loading.
    pub const ALL: [Kind; 11] = [
        Kind::User,
        Kind::Group,
        Kind::Organization,
        Kind::DataShape,
        Kind::ThingShape,
        Kind::ThingTemplate,
        Kind::Thing,
        Kind::ApplicationKey,
        Kind::Subsystem,
        Kind::Resource,
        Kind::PersistenceProvider,
    ];
    /// Number of kinds, for arrays indexed by [`Kind::index`].
    pub const COUNT: usize = 11;

    /// A dense index in `0..Kind::COUNT`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The REST collection name (`Things`, `ThingTemplates`, ...).
    pub fn collection(self) -> &'static str {
        match self {
            Kind::Thing => "Things",
            Kind::ThingTemplate => "ThingTemplates",
            Kind::ThingShape => "ThingShapes",
            Kind::DataShape => "DataShapes",
            Kind::User => "Users",
            Kind::Group => "Groups",
            Kind::Organization => "Organizations",
            Kind::ApplicationKey => "ApplicationKeys",
            Kind::Subsystem => "Subsystems",
            Kind::Resource => "Resources",
            Kind::PersistenceProvider => "PersistenceProviders",
        }
    }

    /// The kind whose REST collection is `name`.
    pub fn from_collection(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.collection() == name)
    }

    /// The singular, human name (`Thing`, `ThingTemplate`, ...).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Thing => "Thing",
            Kind::ThingTemplate => "ThingTemplate",
            Kind::ThingShape => "ThingShape",
            Kind::DataShape => "DataShape",
            Kind::User => "User",
            Kind::Group => "Group",
            Kind::Organization => "Organization",
            Kind::ApplicationKey => "ApplicationKey",
            Kind::Subsystem => "Subsystem",
            Kind::Resource => "Resource",
            Kind::PersistenceProvider => "PersistenceProvider",
        }
    }

    /// DOMAIN R5: ThingShapes, DataShapes and Groups carry no run-time permissions of their own.
    pub fn has_run_time_permissions(self) -> bool {
        !matches!(self, Kind::ThingShape | Kind::DataShape | Kind::Group)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A permission type, in the vendor's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    Create,
    Read,
    Update,
    Delete,
    PropertyRead,
    PropertyWrite,
    ServiceInvoke,
    EventInvoke,
    EventSubscribe,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::Create,
        Permission::Read,
        Permission::Update,
        Permission::Delete,
        Permission::PropertyRead,
        Permission::PropertyWrite,
        Permission::ServiceInvoke,
        Permission::EventInvoke,
        Permission::EventSubscribe,
    ];

    /// `Create`, `Read`, `Update`, `Delete`.
    pub fn is_design_time(self) -> bool {
        matches!(
            self,
            Permission::Create | Permission::Read | Permission::Update | Permission::Delete
        )
    }

    /// `PropertyRead`, `PropertyWrite`, `ServiceInvoke`, `EventInvoke`, `EventSubscribe`.
    pub fn is_run_time(self) -> bool {
        !self.is_design_time()
    }

    pub fn name(self) -> &'static str {
        match self {
            Permission::Create => "Create",
            Permission::Read => "Read",
            Permission::Update => "Update",
            Permission::Delete => "Delete",
            Permission::PropertyRead => "PropertyRead",
            Permission::PropertyWrite => "PropertyWrite",
            Permission::ServiceInvoke => "ServiceInvoke",
            Permission::EventInvoke => "EventInvoke",
            Permission::EventSubscribe => "EventSubscribe",
        }
    }

    /// Parses a permission name; the vendor's UI names (`Service Execute`, ...) are accepted too.
    pub fn parse(s: &str) -> Option<Permission> {
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let p = match compact.to_ascii_lowercase().as_str() {
            "create" => Permission::Create,
            "read" => Permission::Read,
            "update" => Permission::Update,
            "delete" => Permission::Delete,
            "propertyread" => Permission::PropertyRead,
            "propertywrite" => Permission::PropertyWrite,
            "serviceinvoke" | "serviceexecute" => Permission::ServiceInvoke,
            "eventinvoke" | "eventexecute" => Permission::EventInvoke,
            "eventsubscribe" => Permission::EventSubscribe,
            _ => return None,
        };
        Some(p)
    }

    /// The resource category a run-time permission applies to.
    pub fn category(self) -> Option<Category> {
        match self {
            Permission::PropertyRead | Permission::PropertyWrite => Some(Category::Properties),
            Permission::ServiceInvoke => Some(Category::Services),
            Permission::EventInvoke | Permission::EventSubscribe => Some(Category::Events),
            _ => None,
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The three kinds of member of an entity, as they appear in REST paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Category {
    Properties,
    Services,
    Events,
}

impl Category {
    pub fn parse(s: &str) -> Option<Category> {
        match s {
            "Properties" => Some(Category::Properties),
            "Services" => Some(Category::Services),
            "Events" => Some(Category::Events),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Category::Properties => "Properties",
            Category::Services => "Services",
            Category::Events => "Events",
        }
    }
}

/// Why a name was refused.
pub type NameProblem = &'static str;

/// Characters no entity name may hold: they separate paths (`/`, `\`), units (`:`),
/// queries and fragments (`? # % &`), or are the vendor's forbidden user-name characters (`+`).
pub const FORBIDDEN_IN_ENTITY_NAMES: &[char] = &[
    '/', '\\', ':', '?', '#', '%', '&', '+', '<', '>', '"', '\'', '*', '|',
];

/// The longest entity name, in characters.
pub const MAX_ENTITY_NAME: usize = 200;

/// Checks an entity (or organizational unit) name: not empty after trimming, at most
/// [`MAX_ENTITY_NAME`] characters, not `.` or `..`, no control characters, none of
/// [`FORBIDDEN_IN_ENTITY_NAMES`] (path separators among them).
pub fn check_entity_name(name: &str) -> Result<(), NameProblem> {
    if name.trim().is_empty() {
        return Err("a name cannot be empty or only white space");
    }
    if name.chars().count() > MAX_ENTITY_NAME {
        return Err("a name is at most 200 characters long");
    }
    if name == "." || name == ".." {
        return Err("a name cannot be . or .. (they name folders)");
    }
    check_stored_entity_name(name)
}

/// Checks the name of an entity already in a model (loaded from a store, or changed): the rules
/// names had before the 200-character, `.` and `..` rules, so that a data directory holding
/// such a name still starts (`check_entity_name` holds for every entity created).
pub fn check_stored_entity_name(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err("a name cannot be empty");
    }
    if name.chars().count() > 256 {
        return Err("a name is at most 256 characters long");
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err("a name cannot start or end with white space");
    }
    if name.chars().any(char::is_control) {
        return Err("a name cannot hold control characters");
    }
    if name.contains(FORBIDDEN_IN_ENTITY_NAMES) {
        return Err("a name cannot hold any of / \\ : ? # % & + < > \" ' * |");
    }
    Ok(())
}

/// Checks the name of a property, service, event, parameter or field: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn check_member_name(name: &str) -> Result<(), NameProblem> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("a name cannot be empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err("a name starts with a letter or _");
        }
        _ => {}
    }
    if name.len() > 128 {
        return Err("a name is at most 128 characters long");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("a name holds only letters, digits and _");
    }
    Ok(())
}

/// Checks a tag (`Vocabulary:Term` in the vendor's convention, free text here).
pub fn check_tag(tag: &str) -> Result<(), NameProblem> {
    if tag.trim().is_empty() {
        return Err("a tag cannot be empty");
    }
    if tag.len() > 256 || tag.chars().any(char::is_control) {
        return Err("a tag is at most 256 characters with no control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_forbidden_user_name_characters_are_refused() {
        let long = "x".repeat(MAX_ENTITY_NAME + 1);
        for bad in [
            "a&b", "a:b", "a/b", "a\\b", "a+b", "", " ", " a", "a\n", "a\u{0}b", ".", "..", &long,
        ] {
            assert!(check_entity_name(bad).is_err(), "{bad:?}");
        }
        let longest = "é".repeat(MAX_ENTITY_NAME);
        for good in [
            "Pump1",
            "Device 7",
            "ÄÖü-Name.x@y",
            "_x",
            "...",
            ".x",
            &longest,
        ] {
            assert!(check_entity_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn member_names_are_identifiers() {
        assert!(check_member_name("Reset").is_ok());
        assert!(check_member_name("_a1").is_ok());
        for bad in ["", "1a", "a-b", "a b", "*"] {
            assert!(check_member_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn collections_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_collection(k.collection()), Some(k));
        }
        assert_eq!(Kind::ALL.len(), Kind::COUNT);
    }

    #[test]
    fn permission_names_parse() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.name()), Some(p));
        }
        assert_eq!(
            Permission::parse("Service Execute"),
            Some(Permission::ServiceInvoke)
        );
        assert_eq!(Permission::parse("Fly"), None);
    }
}
