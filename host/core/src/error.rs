//! Typed model errors. Each message says what is wrong and, where it helps, what to do.

use crate::names::Kind;
use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ModelError {
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("{kind} {name:?} already exists; pick another name or change the existing one")]
    AlreadyExists { kind: Kind, name: String },
    #[error("{kind} {name:?} does not exist")]
    NotFound { kind: Kind, name: String },
    #[error("{kind} {name:?} is referenced by {what} but does not exist{hint}")]
    MissingReference {
        kind: Kind,
        name: String,
        what: String,
        hint: &'static str,
    },
    #[error("{kind} cycle: {}; break the cycle", path.join(" -> "))]
    Cycle { kind: Kind, path: Vec<String> },
    #[error(
        "{category} {name:?} is defined twice in the definitions of {entity}: by {first} and by {second}; rename one of them"
    )]
    DuplicateDefinition {
        entity: String,
        category: &'static str,
        name: String,
        first: String,
        second: String,
    },
    #[error("{kind} {name:?} is still used by {}; change or delete those first", in_use(users, *hidden))]
    InUse {
        kind: Kind,
        name: String,
        /// Every user of it (the message names the first five).
        users: Vec<String>,
        /// Users the one who asked cannot see, left out of `users` (V1: counted, never named).
        hidden: usize,
    },
    #[error("Organizations/{org}: unit {unit} is still named by {}; remove those visibility entries first", in_use(users, *hidden))]
    UnitInUse {
        org: String,
        unit: String,
        /// Every entity (or collection) whose entries name it.
        users: Vec<String>,
        /// Those the one who asked cannot see, left out of `users`.
        hidden: usize,
    },
    #[error("{kind} {name:?} cannot be changed this way: {reason}")]
    Protected {
        kind: Kind,
        name: String,
        reason: &'static str,
    },
    #[error("{entity}: {message}")]
    Invalid { entity: String, message: String },
    #[error(
        "this change would leave no enabled user in Administrators, and no one could administer the platform; add or enable another administrator first"
    )]
    LockOut,
}

/// "A, B, C and 4 more and 2 you cannot see".
fn in_use(users: &[String], hidden: usize) -> String {
    let mut text = users.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if users.len() > 5 {
        text.push_str(&format!(" and {} more", users.len() - 5));
    }
    if hidden > 0 {
        if !text.is_empty() {
            text.push_str(" and ");
        }
        text.push_str(&format!(
            "{hidden} {} you cannot see",
            if hidden == 1 { "entity" } else { "entities" }
        ));
    }
    text
}

impl ModelError {
    pub(crate) fn invalid(entity: impl std::fmt::Display, message: impl Into<String>) -> Self {
        ModelError::Invalid {
            entity: entity.to_string(),
            message: message.into(),
        }
    }
}
