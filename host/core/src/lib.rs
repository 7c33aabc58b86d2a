//! # thinghost-core
//!
//! The entity model and the access engine of thinghost. Pure Rust: no I/O, no async, no clock,
//! no randomness. Everything else in thinghost depends on this crate; it depends on nothing of
//! thinghost's.
//!
//! - [`Model`] holds every entity ([`Entity`]) and collection permission, changes only through
//!   validated transactions ([`Model::change`]), and keeps the [`AccessIndex`] current.
//! - [`AccessIndex::check`] is the one access decision of the platform (DOMAIN.md section 2).
//! - [`reference`] is a naive evaluator written straight from the rules, used to test the index.
//!
//! ```
//! use thinghost_core::{Entity, Model, Permission, PermissionEntry, PrincipalRef, Kind};
//!
//! let mut model = Model::with_predefined();
//! model.create(Entity::user("dev1")).unwrap();
//! let mut pump = Entity::thing("Pump1", "GenericThing");
//! pump.owner = Some("dev1".into());
//! pump.permissions.run_time.push(PermissionEntry::new(
//!     PrincipalRef::user("dev1"), Permission::ServiceInvoke, "Reset", true));
//! model.create(pump).unwrap();
//!
//! let dev1 = model.subject("dev1").unwrap();
//! let target = model.target("Things/Pump1/Services/Reset").unwrap();
//! let decision = model.check(dev1, Permission::ServiceInvoke, target);
//! assert!(decision.allowed());
//! println!("{}", model.explain(&decision));
//! ```

pub mod access;
pub mod entity;
mod error;
pub mod infotable;
pub mod insight;
pub mod lint;
pub mod model;
pub mod names;
pub mod predefined;
pub mod reference;
pub mod types;
pub mod validate;

pub use access::{
    AccessIndex, Basis, Decision, EntityId, Explanation, Level, Outcome, Policy, Scope, Subject,
    Target,
};
pub use entity::*;
pub use error::ModelError;
pub use model::{Batch, Model, ModelData, ModelFile, Tx, View, Write};
pub use names::{Category, Kind, Permission};
pub use types::BaseType;

/// The lower-case hexadecimal digits of `bytes` (hashes, random ids), in one allocation.
///
/// ```
/// assert_eq!(thinghost_core::hex(&[0x00, 0x9f, 0xff]), "009fff");
/// ```
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}
