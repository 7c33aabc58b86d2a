//! The precomputed access index and the check itself.

use super::*;
use crate::entity::{ALL_RESOURCES, Acl, Body, Entity, Key, PrincipalType};
use crate::model::View;
use crate::names::Permission;
use crate::predefined;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

/// Visibility keys: an organization is `ORG_BIT | id`; a unit is its interned unit id.
const ORG_BIT: u64 = 1 << 40;
/// The interned symbol of `*`.
const STAR: Sym = Sym(0);

type Entries = SmallVec<[(u32, bool); 2]>;

/// Up to this many (permission, resource) rules are kept in a list scanned in place; more go
/// to a hash map. Most entities have a handful: the list keeps a check on them to the cache
/// lines of their `CompiledAcl` (a map would add its control bytes and a bucket, each likely a
/// cache miss on a large model: BENCHMARKS.md row 1, issue 19).
const FEW_RULES: usize = 8;

/// (permission, resource) -> entries sorted by principal, deny before allow.
#[derive(Clone, Debug)]
enum Rules {
    Few(SmallVec<[(u64, Entries); 2]>),
    Many(FxHashMap<u64, Entries>),
}

impl Default for Rules {
    fn default() -> Self {
        Rules::Few(SmallVec::new())
    }
}

impl Rules {
    #[inline]
    fn get(&self, key: u64) -> Option<&Entries> {
        match self {
            Rules::Few(list) => list.iter().find(|(k, _)| *k == key).map(|(_, e)| e),
            Rules::Many(map) => map.get(&key),
        }
    }

    #[inline]
    fn is_empty(&self) -> bool {
        match self {
            Rules::Few(list) => list.is_empty(),
            Rules::Many(map) => map.is_empty(),
        }
    }

    fn from_map(map: FxHashMap<u64, Entries>) -> Rules {
        if map.len() <= FEW_RULES {
            Rules::Few(map.into_iter().collect())
        } else {
            Rules::Many(map)
        }
    }
}

/// One entity's (or instance's, or collection's) entries, compiled.
#[derive(Clone, Debug, Default)]
struct CompiledAcl {
    /// Visibility keys.
    vis: SmallVec<[u64; 2]>,
    rules: Rules,
}

fn rule_key(p: Permission, r: Sym) -> u64 {
    ((p as u64) << 32) | r.0 as u64
}

/// What a check needs to know of a user, precomputed.
#[derive(Clone, Debug, Default)]
struct UserSec {
    /// The user and every group that contains it, directly or through nested groups (A3), sorted.
    principals: SmallVec<[u32; 8]>,
    /// Visibility keys the user satisfies (V2), sorted (in place for most users: one cache miss
    /// fewer per check).
    vis: SmallVec<[u64; 4]>,
    /// Member of Administrators (A2).
    admin: bool,
}

impl UserSec {
    #[inline]
    fn has(&self, p: u32) -> bool {
        if self.principals.len() <= 16 {
            self.principals.contains(&p)
        } else {
            self.principals.binary_search(&p).is_ok()
        }
    }
    #[inline]
    fn sees(&self, acl: &Option<Box<CompiledAcl>>) -> bool {
        match acl {
            Some(a) => a.vis.iter().any(|k| self.vis.binary_search(k).is_ok()),
            None => false,
        }
    }
}

/// One entity's slot. `repr(C)` keeps the fields a check reads on every question in the first
/// 64 bytes, which `align(64)` makes one cache line (BENCHMARKS.md row 1, issue 19): on a large
/// model a check's time is its cache misses.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
struct Slot {
    kind: Kind,
    alive: bool,
    owner: Option<EntityId>,
    /// A Thing's template; a template's base.
    parent: Option<EntityId>,
    acl: Option<Box<CompiledAcl>>,
    user: Option<Box<UserSec>>,
    /// Own implemented shapes (Things and templates).
    shapes: SmallVec<[EntityId; 2]>,
    // Second line: what templates, shapes and names need.
    /// Template and shape instance entries.
    instance: Option<Box<CompiledAcl>>,
    /// Templates: itself, then its bases up to the root.
    chain: Box<[EntityId]>,
    /// Templates: the shapes implemented anywhere along the chain.
    chain_shapes: Box<[EntityId]>,
    name: Box<str>,
}

#[derive(Debug, Default, Clone)]
struct UnitInfo {
    org: u32,
    alive: bool,
    children: SmallVec<[u32; 4]>,
}

/// The precomputed access index. Built from a model and kept current by the model on every
/// committed change; answers checks without allocating.
#[derive(Clone, Debug)]
pub struct AccessIndex {
    policy: Policy,
    names: Vec<FxHashMap<Box<str>, EntityId>>,
    slots: Vec<Slot>,
    syms: FxHashMap<Box<str>, Sym>,
    sym_names: Vec<Box<str>>,
    unit_ids: FxHashMap<Box<str>, u32>,
    unit_names: Vec<Box<str>>,
    units: Vec<UnitInfo>,
    /// principal -> groups that list it as a direct member.
    member_of: FxHashMap<u32, SmallVec<[u32; 4]>>,
    /// principal -> units that list it as a direct member.
    in_units: FxHashMap<u32, SmallVec<[u32; 2]>>,
    collections: Vec<Option<Box<CompiledAcl>>>,
    /// Application keys by the hash of their secret.
    keys: FxHashMap<Box<str>, EntityId>,
    administrators: u32,
    users_group: u32,
}

/// The kinds whose entities keep their identity across names: an id of a deleted one is never
/// reused (security contexts are users; groups are principals; sessions are bound to Things).
fn identity_kind(kind: Kind) -> bool {
    matches!(kind, Kind::User | Kind::Group | Kind::Thing)
}

impl AccessIndex {
    /// Builds the index of a complete, valid model.
    pub(crate) fn build(data: &dyn View, policy: Policy) -> AccessIndex {
        let mut ix = AccessIndex {
            policy,
            names: (0..Kind::COUNT).map(|_| FxHashMap::default()).collect(),
            slots: Vec::new(),
            syms: FxHashMap::default(),
            sym_names: Vec::new(),
            unit_ids: FxHashMap::default(),
            unit_names: Vec::new(),
            units: Vec::new(),
            member_of: FxHashMap::default(),
            in_units: FxHashMap::default(),
            collections: (0..Kind::COUNT).map(|_| None).collect(),
            keys: FxHashMap::default(),
            administrators: 0,
            users_group: 0,
        };
        ix.intern(ALL_RESOURCES);
        // The role rules' services always have symbols: a request that names one is decided by
        // its rule even before any entry named it.
        for (_, _, service, _) in crate::predefined::ROLE_RULES {
            ix.intern(service);
        }
        let mut keys = Vec::new();
        for kind in Kind::ALL {
            for e in data.entities(kind) {
                ix.ensure_id(kind, &e.name);
                keys.push((e.key(), None));
            }
        }
        ix.administrators = ix.ensure_id(Kind::Group, predefined::ADMINISTRATORS).0;
        ix.users_group = ix.ensure_id(Kind::Group, predefined::USERS).0;
        let colls: Vec<(Kind, Option<Acl>)> = Kind::ALL.iter().map(|k| (*k, None)).collect();
        ix.update(data, &keys, &colls, &[], &[]);
        ix
    }

    pub(crate) fn policy(&self) -> Policy {
        self.policy
    }
    pub(crate) fn set_policy(&mut self, p: Policy) {
        self.policy = p;
    }

    fn intern(&mut self, s: &str) -> Sym {
        if let Some(s) = self.syms.get(s) {
            return *s;
        }
        let sym = Sym(self.sym_names.len() as u32);
        self.syms.insert(s.into(), sym);
        self.sym_names.push(s.into());
        sym
    }

    fn unit_id(&mut self, org: &str, unit: &str) -> u32 {
        let full = format!("{org}:{unit}");
        if let Some(id) = self.unit_ids.get(full.as_str()) {
            return *id;
        }
        let id = self.unit_names.len() as u32;
        self.unit_ids.insert(full.clone().into(), id);
        self.unit_names.push(full.into());
        self.units.push(UnitInfo::default());
        id
    }

    fn ensure_id(&mut self, kind: Kind, name: &str) -> EntityId {
        if let Some(id) = self.names[kind.index()].get(name) {
            return *id;
        }
        let id = EntityId(self.slots.len() as u32);
        self.names[kind.index()].insert(name.into(), id);
        self.slots.push(Slot {
            kind,
            alive: false,
            name: name.into(),
            owner: None,
            acl: None,
            instance: None,
            parent: None,
            shapes: SmallVec::new(),
            chain: Box::new([]),
            chain_shapes: Box::new([]),
            user: None,
        });
        id
    }

    /// The id of a live entity.
    pub fn id(&self, kind: Kind, name: &str) -> Option<EntityId> {
        let id = *self.names[kind.index()].get(name)?;
        self.slots[id.0 as usize].alive.then_some(id)
    }

    /// The application key whose stored hash is `hash`.
    pub fn key_by_hash(&self, hash: &str) -> Option<EntityId> {
        self.keys.get(hash).copied()
    }

    /// The kind and name of an id.
    pub fn name_of(&self, id: EntityId) -> (Kind, &str) {
        let s = &self.slots[id.0 as usize];
        (s.kind, &s.name)
    }

    /// The interned symbol of a property, service or event name, if any entry mentions it.
    pub fn sym(&self, name: &str) -> Option<Sym> {
        self.syms.get(name).copied()
    }

    pub fn sym_name(&self, s: Sym) -> &str {
        &self.sym_names[s.0 as usize]
    }

    /// The security context of a user, by name.
    pub fn subject(&self, user: &str) -> Option<Subject> {
        self.id(Kind::User, user).map(Subject::User)
    }

    /// A target for a path in the REST layout.
    pub fn target(&self, path: &str) -> Result<Target, PathError> {
        let p = RequestPath::parse(path)?;
        self.target_of(&p)
    }

    /// A target for a parsed path.
    pub fn target_of(&self, p: &RequestPath) -> Result<Target, PathError> {
        let Some(name) = &p.entity else {
            return Ok(Target::Collection(p.kind));
        };
        let id = self.id(p.kind, name).ok_or_else(|| PathError::NotFound {
            kind: p.kind,
            name: name.clone(),
        })?;
        let resource = p.member.as_ref().and_then(|(_, m)| self.sym(m));
        Ok(Target::Entity { id, resource })
    }

    fn compile(&mut self, acl: &Acl) -> Option<Box<CompiledAcl>> {
        if acl.is_empty() {
            return None;
        }
        let mut c = CompiledAcl::default();
        let mut rules: FxHashMap<u64, Entries> = FxHashMap::default();
        for v in &acl.visibility {
            let key = match v.split() {
                (org, None) => ORG_BIT | self.ensure_id(Kind::Organization, org).0 as u64,
                (org, Some(unit)) => self.unit_id(org, unit) as u64,
            };
            if !c.vis.contains(&key) {
                c.vis.push(key);
            }
        }
        for e in acl.design_time.iter().chain(&acl.run_time) {
            let p = self
                .ensure_id(e.principal.entity_kind(), &e.principal.principal)
                .0;
            let r = self.intern(&e.resource);
            let entries = rules.entry(rule_key(e.permission, r)).or_default();
            entries.push((p, e.allow));
        }
        for entries in rules.values_mut() {
            entries.sort_unstable();
            entries.dedup();
        }
        c.rules = Rules::from_map(rules);
        Some(Box::new(c))
    }

    /// Brings the index up to date after `changed` entities (with their images before the
    /// change) and collections were written to `data`. `recreated`: keys deleted and created
    /// again in the change; `restore`: the ids a change being undone retired (its `revert`).
    /// Returns the ids this update retired.
    pub(crate) fn update(
        &mut self,
        data: &dyn View,
        changed: &[(Key, Option<Entity>)],
        collections: &[(Kind, Option<Acl>)],
        recreated: &[Key],
        restore: &[(Key, EntityId)],
    ) -> Vec<(Key, EntityId)> {
        let mut affected: Vec<u32> = Vec::new();
        let mut templates_changed = false;
        // 1. What every entity contributed before, while every name still maps to its id.
        for (key, before) in changed {
            if before.is_some() {
                let id = self.ensure_id(key.kind, &key.name);
                self.unlink(id, before.as_ref(), &mut affected);
            }
        }
        // 2. A user, group or Thing is known by its identity, not its name: once deleted, its id
        // is never given to another of the same name (a security context or a session that held
        // the old one acts for nobody), also when deleted and created again in one change.
        let mut retired = Vec::new();
        for (key, _) in changed {
            let after = data.get(key.kind, &key.name);
            if identity_kind(key.kind)
                && (after.is_none() || recreated.contains(key))
                && let Some(&id) = self.names[key.kind.index()].get(key.name.as_str())
            {
                self.link(id, None, &mut affected);
                self.names[key.kind.index()].remove(key.name.as_str());
                retired.push((key.clone(), id));
            }
        }
        // A change undone gets its entities' ids back, before anything links to them.
        for (key, id) in restore {
            self.names[key.kind.index()].insert(key.name.as_str().into(), *id);
        }
        // 3. What every entity contributes now (references resolve to the ids of now).
        for (key, _) in changed {
            let after = data.get(key.kind, &key.name);
            if after.is_none() && retired.iter().any(|(k, _)| k == key) {
                continue;
            }
            let id = self.ensure_id(key.kind, &key.name);
            self.link(id, after, &mut affected);
            templates_changed |= key.kind == Kind::ThingTemplate;
        }
        if templates_changed {
            self.rebuild_chains();
        }
        for (kind, _) in collections {
            let c = data.collection(*kind).and_then(|a| self.compile(a));
            self.collections[kind.index()] = c;
        }
        self.refresh_users(data, affected);
        retired
    }

    /// Removes what `before` contributed to the membership edges.
    fn unlink(&mut self, id: EntityId, before: Option<&Entity>, affected: &mut Vec<u32>) {
        let Some(e) = before else { return };
        match &e.body {
            Body::Group(g) => {
                affected.push(id.0);
                for m in &g.members {
                    if let Some(mid) = self.names[m.entity_kind().index()]
                        .get(m.principal.as_str())
                        .copied()
                    {
                        affected.push(mid.0);
                        if let Some(v) = self.member_of.get_mut(&mid.0) {
                            v.retain(|g| *g != id.0);
                        }
                    }
                }
            }
            Body::Organization(o) => {
                for u in &o.units {
                    let uid = self.unit_id(&e.name, &u.name);
                    self.units[uid as usize] = UnitInfo::default();
                    for m in &u.members {
                        if let Some(mid) = self.names[m.entity_kind().index()]
                            .get(m.principal.as_str())
                            .copied()
                        {
                            affected.push(mid.0);
                            if let Some(v) = self.in_units.get_mut(&mid.0) {
                                v.retain(|x| *x != uid);
                            }
                        }
                    }
                }
            }
            Body::User(_) => affected.push(id.0),
            Body::ApplicationKey(k) => {
                self.keys.remove(k.key_hash.as_str());
            }
            _ => {}
        }
    }

    /// Records `after` (None: deleted) in the entity's slot and the membership edges.
    fn link(&mut self, id: EntityId, after: Option<&Entity>, affected: &mut Vec<u32>) {
        let Some(e) = after else {
            let s = &mut self.slots[id.0 as usize];
            s.alive = false;
            s.acl = None;
            s.instance = None;
            s.user = None;
            s.parent = None;
            s.shapes.clear();
            s.owner = None;
            return;
        };
        let acl = self.compile(&e.permissions);
        let instance = e.instance_permissions().and_then(|a| self.compile(a));
        let owner = e.owner.as_deref().map(|o| self.ensure_id(Kind::User, o));
        let (parent, shapes): (Option<&str>, &[String]) = match &e.body {
            Body::Thing(t) => (Some(&t.thing_template), &t.thing_shapes),
            Body::ThingTemplate(t) => (t.base_thing_template.as_deref(), &t.thing_shapes),
            _ => (None, &[]),
        };
        let parent = parent.map(|p| self.ensure_id(Kind::ThingTemplate, p));
        let shapes: SmallVec<[EntityId; 2]> = shapes
            .iter()
            .map(|s| self.ensure_id(Kind::ThingShape, s))
            .collect();
        match &e.body {
            Body::Group(g) => {
                affected.push(id.0);
                for m in &g.members {
                    let mid = self.ensure_id(m.entity_kind(), &m.principal).0;
                    affected.push(mid);
                    let v = self.member_of.entry(mid).or_default();
                    if !v.contains(&id.0) {
                        v.push(id.0);
                    }
                }
            }
            Body::Organization(o) => {
                let uids: Vec<u32> = o
                    .units
                    .iter()
                    .map(|u| self.unit_id(&e.name, &u.name))
                    .collect();
                for (u, uid) in o.units.iter().zip(&uids) {
                    let info = &mut self.units[*uid as usize];
                    info.org = id.0;
                    info.alive = true;
                    if let Some(p) = &u.parent {
                        let pid = self.unit_id(&e.name, p);
                        self.units[pid as usize].children.push(*uid);
                    }
                    for m in &u.members {
                        let mid = self.ensure_id(m.entity_kind(), &m.principal).0;
                        affected.push(mid);
                        let v = self.in_units.entry(mid).or_default();
                        if !v.contains(uid) {
                            v.push(*uid);
                        }
                    }
                }
            }
            Body::User(_) => affected.push(id.0),
            Body::ApplicationKey(k) => {
                self.keys.insert(k.key_hash.as_str().into(), id);
            }
            _ => {}
        }
        let s = &mut self.slots[id.0 as usize];
        s.alive = true;
        s.acl = acl;
        s.instance = instance;
        s.owner = owner;
        s.parent = parent;
        s.shapes = shapes;
    }

    fn rebuild_chains(&mut self) {
        let n = self.slots.len();
        for i in 0..n {
            if self.slots[i].kind != Kind::ThingTemplate || !self.slots[i].alive {
                continue;
            }
            let mut chain = Vec::new();
            let mut shapes: Vec<EntityId> = Vec::new();
            let mut cur = Some(EntityId(i as u32));
            while let Some(t) = cur {
                if chain.contains(&t) || chain.len() > n {
                    break;
                }
                chain.push(t);
                let s = &self.slots[t.0 as usize];
                for sh in &s.shapes {
                    if !shapes.contains(sh) {
                        shapes.push(*sh);
                    }
                }
                cur = s.parent;
            }
            self.slots[i].chain = chain.into_boxed_slice();
            self.slots[i].chain_shapes = shapes.into_boxed_slice();
        }
    }

    /// Recomputes the users below the given principals (through group membership).
    fn refresh_users(&mut self, data: &dyn View, start: Vec<u32>) {
        if start.is_empty() {
            return;
        }
        let mut seen: FxHashSet<u32> = FxHashSet::default();
        let mut queue = start;
        let mut users = Vec::new();
        while let Some(p) = queue.pop() {
            if !seen.insert(p) {
                continue;
            }
            let slot = &self.slots[p as usize];
            match slot.kind {
                Kind::User => users.push(p),
                Kind::Group => {
                    if let Some(Entity {
                        body: Body::Group(g),
                        ..
                    }) = data.get(Kind::Group, &slot.name)
                    {
                        for m in &g.members {
                            if let Some(mid) =
                                self.names[m.entity_kind().index()].get(m.principal.as_str())
                            {
                                queue.push(mid.0);
                            }
                        }
                    }
                    if p == self.users_group {
                        // Every user is a member of Users.
                        queue.extend(self.names[Kind::User.index()].values().map(|i| i.0));
                    }
                }
                _ => {}
            }
        }
        for u in users {
            let sec = if self.slots[u as usize].alive {
                Some(Box::new(self.compute_user(u)))
            } else {
                None
            };
            self.slots[u as usize].user = sec;
        }
    }

    fn compute_user(&self, u: u32) -> UserSec {
        self.compute_sec(&[u, self.users_group])
    }

    /// The security context of principals `start` (a user and `Users`, or one group): they and
    /// every group that contains them, and the visibility keys they satisfy.
    fn compute_sec(&self, start: &[u32]) -> UserSec {
        let mut principals: SmallVec<[u32; 8]> = SmallVec::from_slice(start);
        let mut i = 0;
        while i < principals.len() {
            if let Some(gs) = self.member_of.get(&principals[i]) {
                for g in gs {
                    if self.slots[*g as usize].alive && !principals.contains(g) {
                        principals.push(*g);
                    }
                }
            }
            i += 1;
        }
        principals.sort_unstable();
        let mut vis: SmallVec<[u64; 4]> = SmallVec::new();
        for p in &principals {
            let Some(units) = self.in_units.get(p) else {
                continue;
            };
            for &unit in units {
                let info = &self.units[unit as usize];
                if !info.alive {
                    continue;
                }
                vis.push(ORG_BIT | info.org as u64);
                // A member of a unit sees what the units below it see (V2).
                let mut stack = vec![unit];
                while let Some(x) = stack.pop() {
                    if vis.contains(&(x as u64)) {
                        continue;
                    }
                    vis.push(x as u64);
                    stack.extend(self.units[x as usize].children.iter().copied());
                }
            }
        }
        vis.sort_unstable();
        vis.dedup();
        let admin = principals.contains(&self.administrators);
        UserSec {
            principals,
            vis,
            admin,
        }
    }

    /// Is the subject a member of Administrators (directly or nested), or the System context (A2)?
    pub fn is_administrator(&self, subject: Subject) -> bool {
        match subject {
            Subject::System => true,
            Subject::User(u) => self.user(u).is_some_and(|s| s.admin),
        }
    }

    /// The user's principals (A3): the user, `Users`, and every group that contains it directly or
    /// through nested groups. Empty for System and for unknown users.
    pub fn principals(&self, subject: Subject) -> impl Iterator<Item = EntityId> + '_ {
        let list: &[u32] = match subject {
            Subject::User(u) => self.user(u).map(|s| s.principals.as_slice()).unwrap_or(&[]),
            Subject::System => &[],
        };
        list.iter().map(|p| EntityId(*p))
    }

    /// Is the entity visible to the subject (V1, V2)? Absent entities are not.
    pub fn visible(&self, subject: Subject, id: EntityId) -> bool {
        let Some(slot) = self.slots.get(id.0 as usize).filter(|s| s.alive) else {
            return false;
        };
        match subject {
            Subject::System => true,
            Subject::User(uid) => match self.user(uid) {
                Some(u) => u.admin || self.visible_to(u, uid, id, slot),
                None => false,
            },
        }
    }

    #[inline]
    fn user(&self, uid: EntityId) -> Option<&UserSec> {
        self.slots
            .get(uid.0 as usize)
            .and_then(|s| s.user.as_deref())
    }

    #[inline]
    fn visible_to(&self, user: &UserSec, uid: EntityId, id: EntityId, slot: &Slot) -> bool {
        self.visible_for(user, uid, true, id, slot)
    }

    /// Visibility for a security context (`is_user`: a user, who sees its own User entity).
    #[inline]
    fn visible_for(
        &self,
        user: &UserSec,
        uid: EntityId,
        is_user: bool,
        id: EntityId,
        slot: &Slot,
    ) -> bool {
        // P1: platform Resources are every signed-in user's.
        if slot.kind == Kind::Resource || slot.owner == Some(uid) || user.sees(&slot.acl) {
            return true;
        }
        if is_user && self.policy.own_user_services && id == uid {
            return true;
        }
        if slot.kind == Kind::Thing
            && let Some(t) = slot.parent
        {
            for tid in self.slots[t.0 as usize].chain.iter() {
                if user.sees(&self.slots[tid.0 as usize].instance) {
                    return true;
                }
            }
        }
        user.sees(&self.collections[slot.kind.index()])
    }

    /// Decides whether `subject` may do `permission` on `target`. This is the one function every
    /// request, plugin call and script call goes through.
    pub fn check(&self, subject: Subject, permission: Permission, target: Target) -> Decision {
        let (outcome, basis) = self.decide(subject, permission, target);
        Decision {
            outcome,
            basis,
            subject,
            permission,
            target,
        }
    }

    /// Decides whether the members of `group`, as such, may do `permission` on `target`: the
    /// same rules, with the group and every group that contains it as the principals (what
    /// `CheckPermissionForGroup` asks). Unknown or dead ids are denied.
    pub fn check_group(&self, group: EntityId, permission: Permission, target: Target) -> Outcome {
        let alive = self
            .slots
            .get(group.0 as usize)
            .is_some_and(|s| s.alive && s.kind == Kind::Group);
        if !alive {
            return Outcome::Denied;
        }
        let sec = self.compute_sec(&[group.0]);
        self.decide_for(group, &sec, false, permission, target).0
    }

    fn decide(&self, subject: Subject, perm: Permission, target: Target) -> (Outcome, Basis) {
        let uid = match subject {
            Subject::System => return (Outcome::Allowed, Basis::System),
            Subject::User(u) => u,
        };
        let Some(user) = self.user(uid) else {
            return (Outcome::Denied, Basis::UnknownUser);
        };
        self.decide_for(uid, user, true, perm, target)
    }

    /// The rules for one security context (`is_user`: a user, who owns what it created and may
    /// call its own User's services; else a group).
    #[inline(always)]
    fn decide_for(
        &self,
        uid: EntityId,
        user: &UserSec,
        is_user: bool,
        perm: Permission,
        target: Target,
    ) -> (Outcome, Basis) {
        if user.admin {
            return (Outcome::Allowed, Basis::Administrator);
        }
        let (id, resource) = match target {
            Target::Collection(kind) => {
                if perm.is_run_time() && !kind.has_run_time_permissions() {
                    return (Outcome::Denied, Basis::NoRunTimePermissions);
                }
                let acl = self.collections[kind.index()].as_deref();
                return match eval_level(acl, perm, None, user) {
                    Some((allow, scope, p)) => (
                        if allow {
                            Outcome::Allowed
                        } else {
                            Outcome::Denied
                        },
                        Basis::Entry {
                            level: Level::Collection,
                            scope,
                            principal: EntityId(p),
                        },
                    ),
                    None => (Outcome::Denied, Basis::NoEntry),
                };
            }
            Target::Entity { id, resource } => (id, resource),
        };
        let Some(slot) = self.slots.get(id.0 as usize).filter(|s| s.alive) else {
            return (Outcome::NotVisible, Basis::NotVisible);
        };
        // P2: a role rule of a platform entity's service allows its group's members before
        // anything else; anyone else needs an entry that allows it (and is told the role
        // otherwise).
        // A service no entry has named has no symbol: only a rule for every service (`*`) of
        // the entity can be its role.
        let mut role: Option<(EntityId, Option<Sym>)> = None;
        if perm == Permission::ServiceInvoke
            && matches!(slot.kind, Kind::Resource | Kind::Subsystem)
            && let Some(group) = crate::predefined::role_rule(
                slot.kind,
                &slot.name,
                resource.map_or("*", |r| self.sym_name(r)),
            )
        {
            // A role whose group is gone has no members: it fails closed.
            let Some(g) = self.id(Kind::Group, group) else {
                return (Outcome::Denied, Basis::NoEntry);
            };
            if user.has(g.0) {
                return (Outcome::Allowed, Basis::Role { group: g });
            }
            role = Some((g, resource));
        }
        if is_user
            && self.policy.own_user_services
            && id == uid
            && perm == Permission::ServiceInvoke
        {
            return (Outcome::Allowed, Basis::OwnUser);
        }
        if !self.visible_for(user, uid, is_user, id, slot) {
            return (Outcome::NotVisible, Basis::NotVisible);
        }
        // P1: every signed-in user may call a platform Resource's services (they check what they
        // do themselves).
        // P2 for anyone else: only an entry naming the service itself (on the entity, or on its
        // collection) allows it; an entry for `*` never does.
        if let Some((group, r)) = role {
            for (acl, level) in [
                (slot.acl.as_deref(), Level::Entity),
                (
                    self.collections[slot.kind.index()].as_deref(),
                    Level::Collection,
                ),
            ] {
                if let Some(r) = r
                    && let Some(entries) = acl.and_then(|a| a.rules.get(rule_key(perm, r)))
                    && let Some((allow, p)) = eval_entries(entries, user)
                {
                    let basis = Basis::Entry {
                        level,
                        scope: Scope::Resource,
                        principal: EntityId(p),
                    };
                    return if allow {
                        (Outcome::Allowed, basis)
                    } else {
                        (Outcome::Denied, basis)
                    };
                }
            }
            return (Outcome::Denied, Basis::Role { group });
        }
        if slot.kind == Kind::Resource && perm == Permission::ServiceInvoke {
            return (Outcome::Allowed, Basis::PlatformResource);
        }
        if perm.is_run_time() && !slot.kind.has_run_time_permissions() {
            return (Outcome::Denied, Basis::NoRunTimePermissions);
        }
        let mut first_allow: Option<Basis> = None;
        let mut decide =
            |found: Option<(bool, Scope, u32)>, level: Level| -> Option<(Outcome, Basis)> {
                let (allow, scope, p) = found?;
                let basis = Basis::Entry {
                    level,
                    scope,
                    principal: EntityId(p),
                };
                if !allow {
                    return Some((Outcome::Denied, basis));
                }
                if !self.policy.strict {
                    return Some((Outcome::Allowed, basis));
                }
                first_allow.get_or_insert(basis);
                None
            };
        if let Some(d) = decide(
            eval_level(slot.acl.as_deref(), perm, resource, user),
            Level::Entity,
        ) {
            return d;
        }
        if slot.kind == Kind::Thing
            && let Some(t) = slot.parent
        {
            let tslot = &self.slots[t.0 as usize];
            for (depth, tid) in tslot.chain.iter().enumerate() {
                let acl = self.slots[tid.0 as usize].instance.as_deref();
                let level = Level::Template {
                    id: *tid,
                    depth: depth.min(255) as u8,
                };
                if let Some(d) = decide(eval_level(acl, perm, resource, user), level) {
                    return d;
                }
            }
            if perm.is_run_time() && (!slot.shapes.is_empty() || !tslot.chain_shapes.is_empty()) {
                let shapes = slot.shapes.iter().chain(tslot.chain_shapes.iter());
                if let Some((found, shape)) = self.eval_shapes(shapes, perm, resource, user)
                    && let Some(d) = decide(Some(found), Level::Shapes { shape })
                {
                    return d;
                }
            }
        }
        let acl = self.collections[slot.kind.index()].as_deref();
        if let Some(d) = decide(eval_level(acl, perm, resource, user), Level::Collection) {
            return d;
        }
        match first_allow {
            Some(b) => (Outcome::Allowed, b),
            None => (Outcome::Denied, Basis::NoEntry),
        }
    }

    /// All implemented shapes form one level: the resource scope across all of them first, then `*`.
    fn eval_shapes<'a>(
        &self,
        shapes: impl Iterator<Item = &'a EntityId> + Clone,
        perm: Permission,
        resource: Option<Sym>,
        user: &UserSec,
    ) -> Option<((bool, Scope, u32), EntityId)> {
        let scopes: [(Option<Sym>, Scope); 2] =
            [(resource, Scope::Resource), (Some(STAR), Scope::All)];
        for (sym, scope) in scopes {
            let Some(sym) = sym else { continue };
            let mut allow: Option<(u32, EntityId)> = None;
            for sid in shapes.clone() {
                let Some(acl) = self.slots[sid.0 as usize].instance.as_deref() else {
                    continue;
                };
                if let Some(entries) = acl.rules.get(rule_key(perm, sym))
                    && let Some((a, p)) = eval_entries(entries, user)
                {
                    if !a {
                        return Some(((false, scope, p), *sid));
                    }
                    allow.get_or_insert((p, *sid));
                }
            }
            if let Some((p, sid)) = allow {
                return Some(((true, scope, p), sid));
            }
        }
        None
    }

    /// A decision in words.
    pub fn explain(&self, d: &Decision) -> Explanation {
        let target = match d.target {
            Target::Collection(k) => k.collection().to_string(),
            Target::Entity { id, resource } => {
                let (k, n) = self.name_of(id);
                match (resource, d.permission.category()) {
                    (Some(r), Some(c)) => {
                        format!("{}/{}/{}/{}", k.collection(), n, c.name(), self.sym_name(r))
                    }
                    _ => format!("{}/{}", k.collection(), n),
                }
            }
        };
        let basis = match d.basis {
            Basis::System => ExplainedBasis::System,
            Basis::Administrator => ExplainedBasis::Administrator,
            Basis::OwnUser => ExplainedBasis::OwnUser,
            Basis::PlatformResource => ExplainedBasis::PlatformResource,
            Basis::Role { group } => ExplainedBasis::Role {
                group: self.name_of(group).1.to_string(),
                member: d.outcome == Outcome::Allowed,
            },
            Basis::NotVisible => ExplainedBasis::NotVisible,
            Basis::UnknownUser => ExplainedBasis::UnknownUser,
            Basis::NoRunTimePermissions => ExplainedBasis::NoRunTimePermissions {
                kind: match d.target {
                    Target::Collection(k) => k,
                    Target::Entity { id, .. } => self.name_of(id).0,
                },
            },
            Basis::NoEntry => ExplainedBasis::NoEntry,
            Basis::Entry {
                level,
                scope,
                principal,
            } => {
                let (pk, pn) = self.name_of(principal);
                let level = match level {
                    Level::Entity => LevelName::Entity,
                    Level::Template { id, .. } => {
                        LevelName::Template(self.name_of(id).1.to_string())
                    }
                    Level::Shapes { shape } => LevelName::Shapes(self.name_of(shape).1.to_string()),
                    Level::Collection => LevelName::Collection(match d.target {
                        Target::Collection(k) => k,
                        Target::Entity { id, .. } => self.name_of(id).0,
                    }),
                };
                let resource = match (scope, d.target) {
                    (
                        Scope::Resource,
                        Target::Entity {
                            resource: Some(r), ..
                        },
                    ) => self.sym_name(r).to_string(),
                    _ => ALL_RESOURCES.to_string(),
                };
                ExplainedBasis::Entry {
                    level,
                    scope,
                    principal: crate::entity::PrincipalRef {
                        principal: pn.to_string(),
                        kind: if pk == Kind::User {
                            PrincipalType::User
                        } else {
                            PrincipalType::Group
                        },
                    },
                    resource,
                    allow: d.outcome == Outcome::Allowed,
                }
            }
        };
        Explanation {
            outcome: d.outcome,
            permission: d.permission,
            target,
            basis,
        }
    }

    /// Number of entity slots (live and deleted), for diagnostics.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }
}

/// One level: the resource's entries, then `*`'s (R2); within each, deny beats allow (R3).
#[inline]
fn eval_level(
    acl: Option<&CompiledAcl>,
    perm: Permission,
    resource: Option<Sym>,
    user: &UserSec,
) -> Option<(bool, Scope, u32)> {
    let acl = acl?;
    if acl.rules.is_empty() {
        return None;
    }
    if let Some(r) = resource
        && r != STAR
        && let Some(entries) = acl.rules.get(rule_key(perm, r))
        && let Some((allow, p)) = eval_entries(entries, user)
    {
        return Some((allow, Scope::Resource, p));
    }
    let entries = acl.rules.get(rule_key(perm, STAR))?;
    eval_entries(entries, user).map(|(allow, p)| (allow, Scope::All, p))
}

/// The entries (sorted by principal, deny first) that match one of the user's principals: a deny
/// if there is one, else an allow.
#[inline]
fn eval_entries(entries: &[(u32, bool)], user: &UserSec) -> Option<(bool, u32)> {
    let mut allow = None;
    if entries.len() <= 16 {
        for &(p, a) in entries {
            if user.has(p) {
                if !a {
                    return Some((false, p));
                }
                allow.get_or_insert(p);
            }
        }
    } else {
        for &p in &user.principals {
            let i = entries.partition_point(|e| e.0 < p);
            let mut j = i;
            while j < entries.len() && entries[j].0 == p {
                if !entries[j].1 {
                    return Some((false, p));
                }
                allow.get_or_insert(p);
                j += 1;
            }
        }
    }
    allow.map(|p| (true, p))
}
