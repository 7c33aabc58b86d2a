//! The model as a Cedar policy set with an entity store, giving thinghost's answers.
//!
//! Cedar has no precedence between policies (a `forbid` always beats a `permit`), so the levels of
//! DOMAIN R1-R4 are encoded as data: every question's target becomes a Cedar entity (`Item`, a
//! child of its Thing) that carries the permission entries that apply to it as ordered *slots*
//! (entity level with the resource's own entries, then with `*`; each template of the chain,
//! nearest first; the shapes; the collection). Slot `i` has the principals it allows (`a{i}`),
//! those it denies (`d{i}`), and those that an earlier slot already matched (`b{i}`). Generic
//! policies then say exactly the rules: slot `i` decides for a principal that it matches unless an
//! earlier slot did; within a slot a deny beats an allow; nothing is allowed without visibility;
//! Administrators are allowed everything. Group nesting, organization units and their tree are
//! Cedar's entity hierarchy, so `principal in ...` does the membership work at check time.

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity as CedarEntity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, RestrictedExpression,
};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use thinghost_core::validate::template_chain;
use thinghost_core::*;

use thinghost_bench_model::model::Question;

/// The most slots an item can have: (entity + 3 templates + shapes + collection) x 2 scopes.
pub const MAX_SLOTS: usize = 12;

fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(ty).expect("a valid type name"),
        EntityId::new(id),
    )
}

fn principal_uid(p: &PrincipalRef) -> EntityUid {
    match p.kind {
        PrincipalType::User => uid("User", &p.principal),
        PrincipalType::Group => uid("Group", &p.principal),
    }
}

fn unit_uid(org: &str, unit: &str) -> EntityUid {
    uid("Unit", &format!("{org}:{unit}"))
}

/// The policy set: the same few policies whatever the model.
pub fn policies() -> PolicySet {
    let mut text = String::from(
        r#"
// Administrators above all (A2).
permit(principal in Group::"Administrators", action, resource);
// Visibility first (V1, V2): nothing else is allowed on what the principal cannot see.
forbid(principal, action, resource)
  when { !(principal in resource.visibleTo) }
  unless { principal in Group::"Administrators" };
"#,
    );
    for i in 0..MAX_SLOTS {
        text.push_str(&format!(
            r#"
// Slot {i} decides for the principals it matches, unless an earlier slot did (R1-R4).
permit(principal, action, resource)
  when {{ resource has a{i} && principal in resource.a{i} && !(resource has b{i} && principal in resource.b{i}) }};
forbid(principal, action, resource)
  when {{ resource has d{i} && principal in resource.d{i} && !(resource has b{i} && principal in resource.b{i}) }}
  unless {{ principal in Group::"Administrators" }};
"#
        ));
    }
    text.parse().expect("the policies parse")
}

/// The Cedar side of one model and sample.
pub struct CedarModel {
    pub policies: PolicySet,
    pub entities: Entities,
    /// One request per question, in order.
    pub requests: Vec<Request>,
    authorizer: Authorizer,
}

impl CedarModel {
    /// Is question `i` allowed?
    pub fn allowed(&self, i: usize) -> bool {
        self.authorizer
            .is_authorized(&self.requests[i], &self.policies, &self.entities)
            .decision()
            == Decision::Allow
    }
}

/// The shapes of a Thing, own first, then its templates', without repeats (as the engine).
fn shapes_of<'m>(m: &'m Model, thing: &ThingBody) -> Vec<&'m Entity> {
    let mut names: Vec<&str> = thing.thing_shapes.iter().map(String::as_str).collect();
    if let Ok(chain) = template_chain(m, &thing.thing_template) {
        for t in chain {
            if let Body::ThingTemplate(b) = &t.body {
                names.extend(b.thing_shapes.iter().map(String::as_str));
            }
        }
    }
    let mut out: Vec<&Entity> = Vec::new();
    for n in names {
        if let Some(s) = m.get(Kind::ThingShape, n)
            && !out.iter().any(|o| o.name == s.name)
        {
            out.push(s);
        }
    }
    out
}

/// Translates the model's principals and the sample's targets.
pub fn translate(m: &Model, questions: &[Question]) -> CedarModel {
    let mut entities: Vec<CedarEntity> = Vec::new();
    // Principals: users in their groups and units and in `Users`; groups in theirs.
    let mut parents: HashMap<EntityUid, HashSet<EntityUid>> = HashMap::new();
    for u in m.entities(Kind::User) {
        parents
            .entry(uid("User", &u.name))
            .or_default()
            .insert(uid("Group", predefined::USERS));
    }
    for g in m.entities(Kind::Group) {
        parents.entry(uid("Group", &g.name)).or_default();
        if let Body::Group(b) = &g.body {
            for member in &b.members {
                parents
                    .entry(principal_uid(member))
                    .or_default()
                    .insert(uid("Group", &g.name));
            }
        }
    }
    // Units: a member of a unit sees what is visible to the unit and to every unit below it, so
    // in Cedar's hierarchy a unit is inside its children; every unit is inside its organization.
    for o in m.entities(Kind::Organization) {
        let Body::Organization(b) = &o.body else {
            continue;
        };
        for unit in &b.units {
            let me = unit_uid(&o.name, &unit.name);
            let up = parents.entry(me.clone()).or_default();
            up.insert(uid("Organization", &o.name));
            for child in b
                .units
                .iter()
                .filter(|c| c.parent.as_deref() == Some(&unit.name))
            {
                up.insert(unit_uid(&o.name, &child.name));
            }
            for member in &unit.members {
                parents
                    .entry(principal_uid(member))
                    .or_default()
                    .insert(me.clone());
            }
        }
        parents.entry(uid("Organization", &o.name)).or_default();
    }
    for (e, ps) in parents {
        entities.push(CedarEntity::new_no_attrs(e, ps));
    }
    // Items: one per distinct (Thing, permission, resource) of the sample.
    let mut items: HashMap<String, EntityUid> = HashMap::new();
    let mut requests = Vec::with_capacity(questions.len());
    for q in questions {
        let key = format!(
            "{}|{:?}|{}",
            q.thing,
            q.permission,
            q.resource.as_deref().unwrap_or("")
        );
        let item = match items.get(&key) {
            Some(u) => u.clone(),
            None => {
                let u = uid("Item", &key);
                entities.push(item(m, q, u.clone()));
                items.insert(key, u.clone());
                u
            }
        };
        requests.push(
            Request::new(
                uid("User", &q.user),
                uid("Action", &format!("{:?}", q.permission)),
                item,
                Context::empty(),
                None,
            )
            .expect("a request without a schema"),
        );
    }
    CedarModel {
        policies: policies(),
        entities: Entities::from_entities(entities, None).expect("the entity store is consistent"),
        requests,
        authorizer: Authorizer::new(),
    }
}

/// The Cedar entity for one question's target, with its visibility and its slots.
fn item(m: &Model, q: &Question, me: EntityUid) -> CedarEntity {
    let thing = m.get(Kind::Thing, &q.thing).expect("the Thing exists");
    let Body::Thing(body) = &thing.body else {
        unreachable!("a Thing")
    };
    assert!(thing.owner.is_none(), "owners are not translated");
    let chain = template_chain(m, &body.thing_template).expect("a valid chain");
    let collection = m.collection(Kind::Thing);
    // Visibility: the Thing's own entries, its templates' instance entries, the collection's.
    let mut visible: Vec<RestrictedExpression> = Vec::new();
    let acls = std::iter::once(Some(&thing.permissions))
        .chain(chain.iter().map(|t| t.instance_permissions()))
        .chain(std::iter::once(collection));
    for acl in acls.flatten() {
        for v in &acl.visibility {
            let (org, unit) = v.split();
            visible.push(RestrictedExpression::new_entity_uid(match unit {
                None => uid("Organization", org),
                Some(u) => unit_uid(org, u),
            }));
        }
    }
    // The levels, most specific first, each with the ACLs that make it up.
    let mut levels: Vec<Vec<&Acl>> = vec![vec![&thing.permissions]];
    for t in &chain {
        levels.push(t.instance_permissions().into_iter().collect());
    }
    levels.push(
        shapes_of(m, body)
            .into_iter()
            .filter_map(|s| s.instance_permissions())
            .collect(),
    );
    levels.push(collection.into_iter().collect());
    let perm = q.permission;
    let mut scopes: Vec<&str> = Vec::new();
    if let Some(r) = q.resource.as_deref().filter(|r| *r != ALL_RESOURCES) {
        scopes.push(r);
    }
    scopes.push(ALL_RESOURCES);
    let mut attrs: HashMap<String, RestrictedExpression> = HashMap::new();
    attrs.insert("visibleTo".into(), RestrictedExpression::new_set(visible));
    let mut earlier: Vec<EntityUid> = Vec::new();
    let mut slot = 0;
    for level in &levels {
        for res in &scopes {
            let (mut allow, mut deny) = (Vec::new(), Vec::new());
            for acl in level {
                let list = if perm.is_design_time() {
                    &acl.design_time
                } else {
                    &acl.run_time
                };
                for e in list
                    .iter()
                    .filter(|e| e.permission == perm && e.resource == *res)
                {
                    let p = principal_uid(&e.principal);
                    if e.allow {
                        allow.push(p);
                    } else {
                        deny.push(p);
                    }
                }
            }
            if allow.is_empty() && deny.is_empty() {
                continue;
            }
            assert!(slot < MAX_SLOTS, "more slots than the policies cover");
            let set = |v: &[EntityUid]| {
                RestrictedExpression::new_set(
                    v.iter().cloned().map(RestrictedExpression::new_entity_uid),
                )
            };
            if !allow.is_empty() {
                attrs.insert(format!("a{slot}"), set(&allow));
            }
            if !deny.is_empty() {
                attrs.insert(format!("d{slot}"), set(&deny));
            }
            if !earlier.is_empty() {
                attrs.insert(format!("b{slot}"), set(&earlier));
            }
            earlier.extend(allow);
            earlier.extend(deny);
            slot += 1;
        }
    }
    let parent = uid("Thing", &q.thing);
    CedarEntity::new(me, attrs, HashSet::from([parent])).expect("valid attributes")
}
