//! The access engine: every check of DOMAIN.md section 2 behind one function,
//! [`AccessIndex::check`], over precomputed indexes (interned ids, group closures, unit
//! ancestry, compiled per-entity entries) so that a check is a handful of lookups and never
//! allocates.
//!
//! The order of a check:
//! 1. the `System` context passes (it is the host's own and never reachable from outside, A2);
//! 2. members of `Administrators`, directly or through nested groups, pass (A2);
//! 3. a user's own User entity: its services may be called (D2, a policy, on by default);
//! 4. visibility (V1, V2): an entity that is not visible answers exactly like one that does not
//!    exist, so both give [`Outcome::NotVisible`];
//! 5. kinds without run-time permissions (R5) deny every run-time permission;
//! 6. the levels, most specific first (R1): the entity's own entries; the templates' instance
//!    entries, nearest first; the implemented shapes' instance entries (all shapes together
//!    form one level); the collection's entries. Within a level an entry for the named resource
//!    beats one for `*` (R2), and within one level and scope a deny among the user's principals
//!    beats any allow (R3). The first level with a matching entry decides (R4); with
//!    [`Policy::strict`], a deny on any level wins over an allow on an earlier one;
//! 7. nothing matched: denied (A1).

mod explain;
mod index;
mod path;

pub use explain::{ExplainedBasis, Explanation, LevelName};
pub use index::AccessIndex;
pub use path::{PathError, RequestPath};

use crate::names::Kind;
use serde::{Deserialize, Serialize};

/// A dense id for an entity, stable for its name while the model lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId(pub u32);

/// An interned property, service or event name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(pub u32);

/// The security context a check runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The host's own context. Never reachable from a request, a plugin or a script.
    System,
    /// A user.
    User(EntityId),
}

/// What a check is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A whole collection (for `Create`, and collection-level questions).
    Collection(Kind),
    /// One entity, and for run-time permissions the property, service or event (`None`: all,
    /// or a name no permission entry mentions, so only `*` entries can match).
    Entity { id: EntityId, resource: Option<Sym> },
}

/// Configurable parts of the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// R4: when true, a deny on any level wins; when false (the vendor's behaviour, the default),
    /// the first level with a matching entry decides.
    pub strict: bool,
    /// D2: a user may call the services of its own User entity whatever the permissions.
    pub own_user_services: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            strict: false,
            own_user_services: true,
        }
    }
}

/// The answer of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Allowed,
    Denied,
    /// Not visible, or does not exist: the two are indistinguishable (V1).
    NotVisible,
}

/// Which level of R1 decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// The entity's own entries.
    Entity,
    /// A template's instance entries; `depth` 0 is the Thing's own template.
    Template { id: EntityId, depth: u8 },
    /// The instance entries of the implemented shapes (one level); `shape` holds the entry.
    Shapes { shape: EntityId },
    /// The collection's entries.
    Collection,
}

/// Whether the deciding entry named the resource or `*` (R2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    Resource,
    All,
}

/// Why a decision came out as it did (X1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Basis {
    System,
    Administrator,
    OwnUser,
    /// P1: a platform Resource, which every signed-in user sees and whose services it may call.
    PlatformResource,
    /// P2: a role rule; allowed when the user is a member of `group`, denied otherwise.
    Role {
        group: EntityId,
    },
    NotVisible,
    NoRunTimePermissions,
    UnknownUser,
    NoEntry,
    Entry {
        level: Level,
        scope: Scope,
        principal: EntityId,
    },
}

/// A decision: the outcome, why, and what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub basis: Basis,
    pub subject: Subject,
    pub permission: crate::Permission,
    pub target: Target,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allowed
    }
}
