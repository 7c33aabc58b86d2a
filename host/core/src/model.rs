//! The model: every entity and collection permission, changed only through transactions that are
//! validated as a whole before anything becomes visible, with the access index kept current.

use crate::access::{AccessIndex, Decision, Explanation, Policy, Subject, Target};
use crate::entity::*;
use crate::error::ModelError;
use crate::names::{Kind, Permission};
use crate::predefined;
use crate::validate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Read access to a set of entities: the model itself, or a transaction's view of it.
pub trait View {
    fn get(&self, kind: Kind, name: &str) -> Option<&Entity>;
    /// Every entity of `kind`, in name order.
    fn entities(&self, kind: Kind) -> Box<dyn Iterator<Item = &Entity> + '_>;
    /// The permissions set on a collection.
    fn collection(&self, kind: Kind) -> Option<&Acl>;
    fn contains(&self, kind: Kind, name: &str) -> bool {
        self.get(kind, name).is_some()
    }
}

/// The entities and collection permissions, without indexes.
#[derive(Clone, Debug, Default)]
pub struct ModelData {
    entities: [BTreeMap<String, Entity>; Kind::COUNT],
    collections: BTreeMap<Kind, Acl>,
}

impl View for ModelData {
    fn get(&self, kind: Kind, name: &str) -> Option<&Entity> {
        self.entities[kind.index()].get(name)
    }
    fn entities(&self, kind: Kind) -> Box<dyn Iterator<Item = &Entity> + '_> {
        Box::new(self.entities[kind.index()].values())
    }
    fn collection(&self, kind: Kind) -> Option<&Acl> {
        self.collections.get(&kind)
    }
}

impl ModelData {
    fn put(&mut self, e: Entity) {
        self.entities[e.kind().index()].insert(e.name.clone(), e);
    }
    fn remove(&mut self, key: &Key) -> Option<Entity> {
        self.entities[key.kind.index()].remove(&key.name)
    }
    fn set_collection(&mut self, kind: Kind, acl: Option<Acl>) {
        match acl {
            Some(a) if !a.is_empty() => {
                self.collections.insert(kind, a);
            }
            _ => {
                self.collections.remove(&kind);
            }
        }
    }
    pub fn len(&self) -> usize {
        self.entities.iter().map(BTreeMap::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One write of a committed change, for the store.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Create or replace this entity.
    Put(Box<Entity>),
    /// Delete this entity.
    Remove(Key),
    /// Set a collection's permissions (an empty `Acl` clears them).
    Collection(Kind, Acl),
}

/// What a committed change wrote, and what it replaced (so it can be reverted if storing fails).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub writes: Vec<Write>,
    before: Vec<(Key, Option<Entity>)>,
    before_collections: Vec<(Kind, Option<Acl>)>,
    /// Entities deleted and created again within the change: new ones, whatever their name.
    recreated: Vec<Key>,
    /// The ids of users, groups and Things the change deleted (or replaced): given back if it
    /// is undone.
    retired: Vec<(Key, crate::EntityId)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// A change being prepared: reads see the change so far, writes go to an overlay.
pub struct Tx<'m> {
    base: &'m ModelData,
    writes: BTreeMap<Key, Option<Entity>>,
    /// The names in `writes`, per kind, so that reads can ask without allocating a `Key`.
    written: [std::collections::BTreeSet<String>; Kind::COUNT],
    collections: BTreeMap<Kind, Acl>,
    /// Keys deleted and then written again in this change (a new entity under an old name).
    recreated: std::collections::BTreeSet<Key>,
}

impl View for Tx<'_> {
    fn get(&self, kind: Kind, name: &str) -> Option<&Entity> {
        // Allocation-free lookup of the overlay is not possible with a String key; the overlay
        // is small, so a linear scan of the kind's range is cheap.
        match self.overlay(kind, name) {
            Some(slot) => slot.as_ref(),
            None => self.base.get(kind, name),
        }
    }
    fn entities(&self, kind: Kind) -> Box<dyn Iterator<Item = &Entity> + '_> {
        let base = self.base.entities[kind.index()]
            .values()
            .filter(move |e| self.overlay(kind, &e.name).is_none());
        let added = self
            .writes
            .range(Key::new(kind, "")..)
            .take_while(move |(k, _)| k.kind == kind)
            .filter_map(|(_, v)| v.as_ref());
        Box::new(base.chain(added))
    }
    fn collection(&self, kind: Kind) -> Option<&Acl> {
        self.collections
            .get(&kind)
            .or_else(|| self.base.collection(kind))
    }
}

impl<'m> Tx<'m> {
    fn new(base: &'m ModelData) -> Self {
        Tx {
            base,
            writes: BTreeMap::new(),
            written: Default::default(),
            collections: BTreeMap::new(),
            recreated: Default::default(),
        }
    }

    fn overlay(&self, kind: Kind, name: &str) -> Option<&Option<Entity>> {
        if !self.written[kind.index()].contains(name) {
            return None;
        }
        self.writes.get(&Key::new(kind, name))
    }

    /// Records a write in the overlay.
    fn write(&mut self, key: Key, value: Option<Entity>) {
        self.written[key.kind.index()].insert(key.name.clone());
        if value.is_some() && matches!(self.writes.get(&key), Some(None)) {
            self.recreated.insert(key.clone());
        }
        self.writes.insert(key, value);
    }

    /// Creates an entity; fails if one of that kind and name exists.
    pub fn create(&mut self, e: Entity) -> Result<(), ModelError> {
        if self.contains(e.kind(), &e.name) {
            return Err(ModelError::AlreadyExists {
                kind: e.kind(),
                name: e.name,
            });
        }
        self.put(e);
        Ok(())
    }

    /// Creates or replaces an entity.
    pub fn put(&mut self, e: Entity) {
        self.write(e.key(), Some(e));
    }

    /// Replays one write of another change as it is (a removal takes nothing with it: the
    /// change it came from already wrote what went with it). The whole is validated as usual.
    pub fn apply(&mut self, w: Write) {
        match w {
            Write::Put(e) => self.put(*e),
            Write::Remove(key) => self.write(key, None),
            Write::Collection(kind, acl) => {
                self.collections.insert(kind, acl);
            }
        }
    }

    /// The entity, for change; fails if it does not exist.
    pub fn get_mut(&mut self, kind: Kind, name: &str) -> Result<&mut Entity, ModelError> {
        let key = Key::new(kind, name);
        if !self.writes.contains_key(&key) {
            let current = self.base.get(kind, name).cloned();
            self.write(key.clone(), current);
        }
        self.writes
            .get_mut(&key)
            .and_then(Option::as_mut)
            .ok_or_else(|| ModelError::NotFound {
                kind,
                name: name.to_string(),
            })
    }

    /// A collection's permissions, for change.
    pub fn collection_mut(&mut self, kind: Kind) -> &mut Acl {
        if !self.collections.contains_key(&kind) {
            let current = self.base.collection(kind).cloned().unwrap_or_default();
            self.collections.insert(kind, current);
        }
        self.collections.get_mut(&kind).expect("inserted above")
    }

    /// Deletes an entity. Deleting a user or group also removes it from every group, unit and
    /// permission entry (and a user's application keys and ownerships go with it), so that a
    /// later principal of the same name inherits nothing. Deleting an organization removes the
    /// visibility entries that name it. A template, shape or data shape still in use is refused.
    pub fn delete(&mut self, kind: Kind, name: &str) -> Result<(), ModelError> {
        if predefined::is_predefined(kind, name) {
            return Err(ModelError::Protected {
                kind,
                name: name.to_string(),
                reason: "it is predefined and the platform needs it",
            });
        }
        if !self.contains(kind, name) {
            return Err(ModelError::NotFound {
                kind,
                name: name.to_string(),
            });
        }
        match kind {
            Kind::User | Kind::Group => {
                let p = if kind == Kind::User {
                    PrincipalRef::user(name)
                } else {
                    PrincipalRef::group(name)
                };
                self.cascade_principal(&p);
            }
            Kind::Organization => self.cascade_organization(name),
            _ => {}
        }
        self.write(Key::new(kind, name), None);
        Ok(())
    }

    /// The keys of the entities that pass `filter`, in kind and name order.
    fn keys_where(&self, filter: impl Fn(&Entity) -> bool) -> Vec<Key> {
        Kind::ALL
            .iter()
            .flat_map(|k| {
                self.entities(*k)
                    .filter(|e| filter(e))
                    .map(Entity::key)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn cascade_principal(&mut self, p: &PrincipalRef) {
        let is_user = p.kind == PrincipalType::User;
        for key in self.keys_where(|e| validate::mentions(e, p.entity_kind(), &p.principal)) {
            let e = self.get(key.kind, &key.name).expect("listed");
            if is_user
                && let Body::ApplicationKey(k) = &e.body
                && k.user == p.principal
            {
                self.write(key, None);
                continue;
            }
            let e = self.get_mut(key.kind, &key.name).expect("exists");
            e.permissions.remove_principal(p);
            if let Some(acl) = e.instance_permissions_mut() {
                acl.remove_principal(p);
            }
            if is_user && e.owner.as_deref() == Some(p.principal.as_str()) {
                e.owner = None;
            }
            match &mut e.body {
                Body::Group(g) => g.members.retain(|m| m != p),
                Body::Organization(o) => o
                    .units
                    .iter_mut()
                    .for_each(|u| u.members.retain(|m| m != p)),
                _ => {}
            }
        }
        for kind in Kind::ALL {
            if self.collection(kind).is_some_and(|a| {
                a.design_time
                    .iter()
                    .chain(&a.run_time)
                    .any(|e| &e.principal == p)
            }) {
                self.collection_mut(kind).remove_principal(p);
            }
        }
    }

    fn cascade_organization(&mut self, org: &str) {
        let names = |acl: &Acl| acl.visibility.iter().any(|v| v.split().0 == org);
        for key in self
            .keys_where(|e| names(&e.permissions) || e.instance_permissions().is_some_and(names))
        {
            let e = self.get_mut(key.kind, &key.name).expect("exists");
            e.permissions.remove_visibility(org, None);
            if let Some(acl) = e.instance_permissions_mut() {
                acl.remove_visibility(org, None);
            }
        }
        for kind in Kind::ALL {
            if self.collection(kind).is_some_and(names) {
                self.collection_mut(kind).remove_visibility(org, None);
            }
        }
    }
}

/// The model file of `thinghost model export` / `import`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Always `thinghost-model`.
    pub format: String,
    /// The file format version; this build reads and writes 1.
    pub version: u32,
    pub entities: Vec<Entity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub collections: BTreeMap<Kind, Acl>,
}

pub const MODEL_FORMAT: &str = "thinghost-model";
pub const MODEL_VERSION: u32 = 1;

/// The entity model with its access index. A clone is a private copy (a script runs on one).
#[derive(Clone)]
pub struct Model {
    data: ModelData,
    index: AccessIndex,
}

impl View for Model {
    fn get(&self, kind: Kind, name: &str) -> Option<&Entity> {
        self.data.get(kind, name)
    }
    fn entities(&self, kind: Kind) -> Box<dyn Iterator<Item = &Entity> + '_> {
        self.data.entities(kind)
    }
    fn collection(&self, kind: Kind) -> Option<&Acl> {
        self.data.collection(kind)
    }
}

impl Model {
    /// A model holding the predefined entities, as at first start.
    pub fn with_predefined() -> Model {
        Model::from_parts(predefined::entities(), BTreeMap::new(), Policy::default())
            .expect("the predefined entities are valid")
    }

    /// Builds a model from stored records, validating all of it.
    pub fn from_parts(
        entities: Vec<Entity>,
        collections: BTreeMap<Kind, Acl>,
        policy: Policy,
    ) -> Result<Model, ModelError> {
        let mut data = ModelData::default();
        for e in entities {
            if data.contains(e.kind(), &e.name) {
                return Err(ModelError::AlreadyExists {
                    kind: e.kind(),
                    name: e.name,
                });
            }
            data.put(e);
        }
        for (k, acl) in collections {
            data.set_collection(k, Some(acl));
        }
        for kind in Kind::ALL {
            for name in required_predefined(kind) {
                if !data.contains(kind, name) {
                    return Err(ModelError::NotFound {
                        kind,
                        name: name.to_string(),
                    });
                }
            }
        }
        validate::validate_all(&data)?;
        let index = AccessIndex::build(&data, policy);
        Ok(Model { data, index })
    }

    /// Runs `f` as one transaction: either everything it did is validated and committed, and the
    /// writes are returned for the store, or nothing changes.
    pub fn change<F>(&mut self, f: F) -> Result<Batch, ModelError>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<(), ModelError>,
    {
        let (writes, collections, recreated) = {
            let mut tx = Tx::new(&self.data);
            f(&mut tx)?;
            validate::validate_change(&tx, &self.data, &tx.writes, &tx.collections)?;
            (tx.writes, tx.collections, tx.recreated)
        };
        let mut batch = Batch {
            recreated: recreated.into_iter().collect(),
            ..Batch::default()
        };
        for (key, after) in writes {
            let before = self.data.get(key.kind, &key.name).cloned();
            if before == after && !batch.recreated.contains(&key) {
                continue;
            }
            match after {
                Some(e) => {
                    batch.writes.push(Write::Put(Box::new(e.clone())));
                    self.data.put(e);
                }
                None => {
                    batch.writes.push(Write::Remove(key.clone()));
                    self.data.remove(&key);
                }
            }
            batch.before.push((key, before));
        }
        for (kind, acl) in collections {
            let before = self.data.collection(kind).cloned();
            if before.clone().unwrap_or_default() == acl {
                continue;
            }
            batch.writes.push(Write::Collection(kind, acl.clone()));
            self.data.set_collection(kind, Some(acl));
            batch.before_collections.push((kind, before));
        }
        batch.retired = self.index.update(
            &self.data,
            &batch.before,
            &batch.before_collections,
            &batch.recreated,
            &[],
        );
        Ok(batch)
    }

    /// Undoes a committed batch (when the store could not keep it).
    pub fn revert(&mut self, batch: Batch) {
        let mut undo = Batch::default();
        for (key, before) in batch.before.into_iter().rev() {
            let now = match before {
                Some(e) => {
                    let now = self.data.get(key.kind, &key.name).cloned();
                    self.data.put(e);
                    now
                }
                None => self.data.remove(&key),
            };
            undo.before.push((key, now));
        }
        for (kind, before) in batch.before_collections {
            let now = self.data.collection(kind).cloned();
            self.data.set_collection(kind, before);
            undo.before_collections.push((kind, now));
        }
        self.index.update(
            &self.data,
            &undo.before,
            &undo.before_collections,
            &batch.recreated,
            &batch.retired,
        );
    }

    /// Creates one entity.
    pub fn create(&mut self, e: Entity) -> Result<Batch, ModelError> {
        self.change(|tx| tx.create(e))
    }

    /// Deletes one entity (see [`Tx::delete`] for what goes with it).
    pub fn delete(&mut self, kind: Kind, name: &str) -> Result<Batch, ModelError> {
        self.change(|tx| tx.delete(kind, name))
    }

    /// Every entity and collection permission, for export.
    pub fn export(&self) -> ModelFile {
        let mut entities = Vec::with_capacity(self.data.len());
        for kind in Kind::ALL {
            entities.extend(self.data.entities(kind).cloned());
        }
        ModelFile {
            format: MODEL_FORMAT.to_string(),
            version: MODEL_VERSION,
            entities,
            collections: self.data.collections.clone(),
        }
    }

    /// Imports a model file: each entity in it is created or replaced, and each collection's
    /// permissions set, all in one transaction (all or nothing).
    pub fn import(&mut self, file: ModelFile) -> Result<Batch, ModelError> {
        if file.format != MODEL_FORMAT {
            return Err(ModelError::invalid(
                "the model file",
                format!("format is {:?}, expected {MODEL_FORMAT:?}", file.format),
            ));
        }
        if file.version != MODEL_VERSION {
            return Err(ModelError::invalid(
                "the model file",
                format!(
                    "version {} is not supported by this build (it reads version {MODEL_VERSION})",
                    file.version
                ),
            ));
        }
        self.change(|tx| {
            let mut seen = std::collections::BTreeSet::new();
            for e in file.entities {
                if !seen.insert(e.key()) {
                    return Err(ModelError::invalid(
                        "the model file",
                        format!("{} appears twice", e.key()),
                    ));
                }
                tx.put(e);
            }
            for (kind, acl) in file.collections {
                *tx.collection_mut(kind) = acl;
            }
            Ok(())
        })
    }

    /// The number of entities.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The access index (checks, visibility, explanations).
    pub fn access(&self) -> &AccessIndex {
        &self.index
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        self.index.policy()
    }
    /// Changes the policy (DOMAIN R4 strict mode, D2).
    pub fn set_policy(&mut self, policy: Policy) {
        self.index.set_policy(policy);
    }

    /// The ApplicationKey entity whose stored hash is `hash` (see the server's `keys` module).
    pub fn application_key(&self, hash: &str) -> Option<&Entity> {
        let id = self.index.key_by_hash(hash)?;
        let (kind, name) = self.index.name_of(id);
        self.data.get(kind, name)
    }

    /// The security context of a user, by name.
    pub fn subject(&self, user: &str) -> Option<Subject> {
        self.index.subject(user)
    }

    /// Resolves a target path in the REST layout (`Things/Pump1`, `Things/Pump1/Services/Reset`,
    /// or a collection such as `Users`).
    pub fn target(&self, path: &str) -> Result<Target, crate::access::PathError> {
        self.index.target(path)
    }

    /// Decides whether `subject` may do `permission` on `target`.
    pub fn check(&self, subject: Subject, permission: Permission, target: Target) -> Decision {
        self.index.check(subject, permission, target)
    }

    /// A decision in words (DOMAIN X1).
    pub fn explain(&self, decision: &Decision) -> Explanation {
        self.index.explain(decision)
    }
}

fn required_predefined(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::User => vec![predefined::ADMINISTRATOR, predefined::SYSTEM],
        Kind::Group => vec![predefined::ADMINISTRATORS, predefined::USERS],
        Kind::ThingTemplate => vec![predefined::GENERIC_THING],
        _ => vec![],
    }
}
