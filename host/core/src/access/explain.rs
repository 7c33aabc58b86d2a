//! Decisions in words (DOMAIN X1): which level, which entry, which principal decided, or that
//! nothing matched.

use super::{Outcome, Scope};
use crate::entity::PrincipalRef;
use crate::names::{Kind, Permission};
use serde::Serialize;
use std::fmt;

/// The level of R1 that decided, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum LevelName {
    Entity,
    /// A template's instance entries.
    Template(String),
    /// The implemented shapes' instance entries; the shape that held the deciding entry.
    Shapes(String),
    Collection(Kind),
}

/// Why, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ExplainedBasis {
    System,
    Administrator,
    OwnUser,
    /// P1: platform Resources are every signed-in user's.
    PlatformResource,
    /// P2: the role rule of this service; whether the user is a member of the group.
    Role {
        group: String,
        member: bool,
    },
    NotVisible,
    UnknownUser,
    NoRunTimePermissions {
        kind: Kind,
    },
    NoEntry,
    Entry {
        level: LevelName,
        scope: Scope,
        principal: PrincipalRef,
        resource: String,
        allow: bool,
    },
}

/// A decision with its reasons, by name; `Display` writes it as a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub outcome: Outcome,
    pub permission: Permission,
    pub target: String,
    pub basis: ExplainedBasis,
}

impl fmt::Display for LevelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LevelName::Entity => write!(f, "the entity's own permissions"),
            LevelName::Template(t) => write!(f, "the instance permissions of ThingTemplate {t}"),
            LevelName::Shapes(s) => write!(
                f,
                "the instance permissions of the implemented ThingShapes (entry on {s})"
            ),
            LevelName::Collection(k) => {
                write!(f, "the permissions of the {} collection", k.collection())
            }
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.outcome {
            Outcome::Allowed => "ALLOWED",
            Outcome::Denied => "DENIED",
            Outcome::NotVisible => "NOT VISIBLE",
        };
        writeln!(f, "{verdict}: {} on {}", self.permission, self.target)?;
        match &self.basis {
            ExplainedBasis::System => {
                write!(f, "the host's own System context passes every check (A2)")
            }
            ExplainedBasis::Administrator => {
                write!(
                    f,
                    "the user is a member of Administrators, which passes every check (A2)"
                )
            }
            ExplainedBasis::OwnUser => write!(
                f,
                "a user may call the services of its own User entity (D2)"
            ),
            ExplainedBasis::PlatformResource => write!(
                f,
                "a platform Resource: every signed-in user sees it and may call its services, which check what they do themselves (P1)"
            ),
            ExplainedBasis::Role {
                group,
                member: true,
            } => write!(
                f,
                "the platform's role rule for this service: members of {group} may (P2); the user is one"
            ),
            ExplainedBasis::Role {
                group,
                member: false,
            } => write!(
                f,
                "the platform's role rule for this service: only members of {group} (and Administrators) may (P2); the user is not one"
            ),
            ExplainedBasis::NotVisible => write!(
                f,
                "the entity is not visible to the user: it is neither the user's own, nor visible to an \
                 organization or unit the user belongs to (V1, V2); it answers as if it did not exist"
            ),
            ExplainedBasis::UnknownUser => write!(f, "the user no longer exists"),
            ExplainedBasis::NoRunTimePermissions { kind } => {
                write!(f, "{kind}s carry no run-time permissions (R5)")
            }
            ExplainedBasis::NoEntry => write!(
                f,
                "no permission entry for {} matched the user or any of its groups on any level (A1: default deny)",
                self.permission
            ),
            ExplainedBasis::Entry {
                level,
                scope,
                principal,
                resource,
                allow,
            } => {
                let who = match principal.kind {
                    crate::entity::PrincipalType::User => format!("user {}", principal.principal),
                    crate::entity::PrincipalType::Group => format!("group {}", principal.principal),
                };
                let what = match scope {
                    Scope::Resource => format!("an override for {resource}"),
                    Scope::All => "an entry for * (all)".to_string(),
                };
                write!(
                    f,
                    "decided by {level}: {what} that {} {} to {who}",
                    if *allow { "allows" } else { "denies" },
                    self.permission
                )
            }
        }
    }
}
