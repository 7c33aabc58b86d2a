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
    #[error("{kind} {name:?} is still used by {}{}; change or delete those first", users.join(", "), more_text(*more))]
    InUse {
        kind: Kind,
        name: String,
        users: Vec<String>,
        more: usize,
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

fn more_text(more: usize) -> String {
    if more == 0 {
        String::new()
    } else {
        format!(" and {more} more")
    }
}

impl ModelError {
    pub(crate) fn invalid(entity: impl std::fmt::Display, message: impl Into<String>) -> Self {
        ModelError::Invalid {
            entity: entity.to_string(),
            message: message.into(),
        }
    }
}
