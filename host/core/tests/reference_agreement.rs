//! The indexed engine against the naive reference evaluator, on thousands of random models and
//! after random changes to them. They must agree on every check, explanation level included.

use proptest::prelude::*;
use std::collections::BTreeMap;
use thinghost_core::access::{ExplainedBasis, LevelName};
use thinghost_core::reference::{self, RefTarget};
use thinghost_core::*;

const RESOURCES: [&str; 3] = ["*", "A", "B"];

/// A template: base (None = GenericThing, Some(j) = template j < i), shapes, instance entries, visibility.
type TemplateSpec = (Option<usize>, Vec<usize>, Vec<EntrySpec>, Vec<VisSpec>);
/// A Thing: template (None = GenericThing), shapes, owner, own entries, visibility.
type ThingSpec = (
    Option<usize>,
    Vec<usize>,
    Option<usize>,
    Vec<EntrySpec>,
    Vec<VisSpec>,
);

#[derive(Clone, Debug)]
struct Spec {
    users: usize,
    /// Group i's members: (is_group, index); groups only contain groups of lower index (no cycles).
    groups: Vec<Vec<(bool, usize)>>,
    admin_group: Option<usize>,
    /// Units: parent index (< own index) for all but the first.
    units: Vec<Option<usize>>,
    unit_members: Vec<(usize, bool, usize)>,
    shapes: Vec<Vec<EntrySpec>>,
    /// Templates: base (None = GenericThing, Some(j) = template j < i), shapes, instance entries, visibility.
    templates: Vec<TemplateSpec>,
    /// Things: template (None = GenericThing), shapes, owner, own entries, visibility.
    things: Vec<ThingSpec>,
    collection: (Vec<EntrySpec>, Vec<VisSpec>),
    strict: bool,
}

#[derive(Clone, Debug)]
struct EntrySpec {
    group: bool,
    who: usize,
    perm: usize,
    resource: usize,
    allow: bool,
}

#[derive(Clone, Debug)]
enum VisSpec {
    Org,
    Unit(usize),
}

fn entry() -> impl Strategy<Value = EntrySpec> {
    (
        any::<bool>(),
        0..6usize,
        0..9usize,
        0..3usize,
        prop::bool::weighted(0.7),
    )
        .prop_map(|(group, who, perm, resource, allow)| EntrySpec {
            group,
            who,
            perm,
            resource,
            allow,
        })
}

fn vis() -> impl Strategy<Value = VisSpec> {
    prop_oneof![Just(VisSpec::Org), (0..5usize).prop_map(VisSpec::Unit)]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        1..5usize,
        prop::collection::vec(
            prop::collection::vec((any::<bool>(), 0..5usize), 0..3),
            0..5,
        ),
        prop::option::weighted(0.15, 0..5usize),
        prop::collection::vec(prop::option::of(0..4usize), 1..5),
        prop::collection::vec((0..5usize, any::<bool>(), 0..5usize), 0..6),
        prop::collection::vec(prop::collection::vec(entry(), 0..3), 0..3),
        prop::collection::vec(
            (
                prop::option::of(0..3usize),
                prop::collection::vec(0..3usize, 0..2),
                prop::collection::vec(entry(), 0..3),
                prop::collection::vec(vis(), 0..2),
            ),
            0..4,
        ),
        prop::collection::vec(
            (
                prop::option::of(0..4usize),
                prop::collection::vec(0..3usize, 0..2),
                prop::option::weighted(0.2, 0..5usize),
                prop::collection::vec(entry(), 0..4),
                prop::collection::vec(vis(), 0..2),
            ),
            1..5,
        ),
        (
            prop::collection::vec(entry(), 0..3),
            prop::collection::vec(vis(), 0..2),
        ),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(
                users,
                groups,
                admin_group,
                units,
                unit_members,
                shapes,
                templates,
                things,
                collection,
                strict,
            )| Spec {
                users,
                groups,
                admin_group,
                units,
                unit_members,
                shapes,
                templates,
                things,
                collection,
                strict,
            },
        )
}

fn uname(i: usize) -> String {
    format!("u{i}")
}
fn gname(i: usize) -> String {
    format!("g{i}")
}
fn unit_name(i: usize) -> String {
    format!("unit{i}")
}

struct Names {
    users: usize,
    groups: usize,
    units: usize,
    shapes: usize,
    templates: usize,
}

impl Names {
    fn principal(&self, group: bool, i: usize) -> PrincipalRef {
        if group && self.groups > 0 {
            PrincipalRef::group(gname(i % self.groups))
        } else {
            PrincipalRef::user(uname(i % self.users))
        }
    }
    fn entries(&self, specs: &[EntrySpec], shape: bool, into: &mut Acl) {
        for e in specs {
            let mut perm = Permission::ALL[e.perm];
            if shape && perm.is_design_time() {
                perm = Permission::ALL[4 + e.perm % 5];
            }
            let p = self.principal(e.group, e.who);
            if perm.is_design_time() {
                into.design_time
                    .push(PermissionEntry::new(p, perm, "*", e.allow));
            } else {
                into.run_time.push(PermissionEntry::new(
                    p,
                    perm,
                    RESOURCES[e.resource],
                    e.allow,
                ));
            }
        }
    }
    fn entity_entries(&self, specs: &[EntrySpec], into: &mut Acl) {
        // Create belongs to collections only.
        let filtered: Vec<EntrySpec> = specs
            .iter()
            .filter(|e| Permission::ALL[e.perm] != Permission::Create)
            .cloned()
            .collect();
        self.entries(&filtered, false, into);
    }
    fn vis(&self, specs: &[VisSpec], into: &mut Acl) {
        for v in specs {
            into.visibility.push(match v {
                VisSpec::Org => VisibilityEntry::organization("Org"),
                VisSpec::Unit(i) => VisibilityEntry::unit("Org", &unit_name(i % self.units)),
            });
        }
    }
    fn template(&self, t: Option<usize>, below: usize) -> String {
        match t {
            Some(j) if below > 0 && self.templates > 0 => {
                format!("t{}", j % below.min(self.templates))
            }
            _ => "GenericThing".to_string(),
        }
    }
}

fn build(s: &Spec) -> Model {
    let n = Names {
        users: s.users,
        groups: s.groups.len(),
        units: s.units.len(),
        shapes: s.shapes.len(),
        templates: s.templates.len(),
    };
    let mut entities = thinghost_core::predefined::entities();
    for i in 0..s.users {
        entities.push(Entity::user(&uname(i)));
    }
    for (i, members) in s.groups.iter().enumerate() {
        let mut g = Entity::group(&gname(i));
        if let Body::Group(b) = &mut g.body {
            for (is_group, j) in members {
                let m = if *is_group && i > 0 {
                    PrincipalRef::group(gname(j % i))
                } else {
                    PrincipalRef::user(uname(j % s.users))
                };
                if !b.members.contains(&m) {
                    b.members.push(m);
                }
            }
        }
        entities.push(g);
    }
    if let (Some(a), true) = (s.admin_group, !s.groups.is_empty()) {
        let admins = entities
            .iter_mut()
            .find(|e| e.kind() == Kind::Group && e.name == "Administrators")
            .unwrap();
        if let Body::Group(b) = &mut admins.body {
            b.members
                .push(PrincipalRef::group(gname(a % s.groups.len())));
        }
    }
    let mut units: Vec<Unit> = s
        .units
        .iter()
        .enumerate()
        .map(|(i, p)| Unit {
            name: unit_name(i),
            parent: if i == 0 {
                None
            } else {
                Some(unit_name(p.unwrap_or(0) % i))
            },
            members: vec![],
        })
        .collect();
    for (u, is_group, who) in &s.unit_members {
        let m = n.principal(*is_group, *who);
        let unit = &mut units[u % n.units];
        if !unit.members.contains(&m) {
            unit.members.push(m);
        }
    }
    entities.push(Entity::new(
        "Org",
        Body::Organization(OrganizationBody { units }),
    ));
    for (i, specs) in s.shapes.iter().enumerate() {
        let mut sh = Entity::shape(&format!("s{i}"));
        n.entries(specs, true, sh.instance_permissions_mut().unwrap());
        entities.push(sh);
    }
    let shape_names = |idx: &[usize]| -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if n.shapes > 0 {
            for i in idx {
                let name = format!("s{}", i % n.shapes);
                if !v.contains(&name) {
                    v.push(name);
                }
            }
        }
        v
    };
    for (i, (base, shapes, specs, vis)) in s.templates.iter().enumerate() {
        let mut t = Entity::template(&format!("t{i}"), &n.template(*base, i));
        if let Body::ThingTemplate(b) = &mut t.body {
            b.thing_shapes = shape_names(shapes);
        }
        let inst = t.instance_permissions_mut().unwrap();
        n.entity_entries(specs, inst);
        n.vis(vis, inst);
        entities.push(t);
    }
    for (i, (tpl, shapes, owner, specs, vis)) in s.things.iter().enumerate() {
        let mut t = Entity::thing(&format!("x{i}"), &n.template(*tpl, n.templates));
        if let Body::Thing(b) = &mut t.body {
            b.thing_shapes = shape_names(shapes);
        }
        t.owner = owner.map(|o| uname(o % s.users));
        n.entity_entries(specs, &mut t.permissions);
        n.vis(vis, &mut t.permissions);
        entities.push(t);
    }
    let mut coll = Acl::default();
    n.entries(&s.collection.0, false, &mut coll);
    n.vis(&s.collection.1, &mut coll);
    let collections = BTreeMap::from([(Kind::Thing, coll)]);
    let policy = Policy {
        strict: s.strict,
        ..Policy::default()
    };
    Model::from_parts(entities, collections, policy).expect("generated models are valid")
}

/// Is there an entry at this level for this principal that decides as the engine said?
fn entry_exists(
    m: &Model,
    level: &LevelName,
    kind: Kind,
    target: &str,
    e: &ExplainedBasis,
    perm: Permission,
) -> bool {
    let ExplainedBasis::Entry {
        principal,
        resource,
        allow,
        ..
    } = e
    else {
        return false;
    };
    let acls: Vec<&Acl> = match level {
        LevelName::Entity => vec![&m.get(kind, target).unwrap().permissions],
        LevelName::Template(t) => vec![
            m.get(Kind::ThingTemplate, t)
                .unwrap()
                .instance_permissions()
                .unwrap(),
        ],
        LevelName::Shapes(s) => vec![
            m.get(Kind::ThingShape, s)
                .unwrap()
                .instance_permissions()
                .unwrap(),
        ],
        LevelName::Collection(k) => vec![m.collection(*k).unwrap()],
    };
    acls.iter().any(|a| {
        a.design_time.iter().chain(&a.run_time).any(|x| {
            &x.principal == principal
                && x.permission == perm
                && &x.resource == resource
                && x.allow == *allow
        })
    })
}

/// Engine and reference agree: the same outcome and basis; for an entry, the same level (any shape
/// of the shapes level), scope and verdict, and the engine's principal is the user's and holds a
/// matching entry at that level (when several principals match, either may be named).
#[allow(clippy::too_many_arguments)]
fn same(
    m: &Model,
    ps: &[PrincipalRef],
    kind: Kind,
    name: &str,
    perm: Permission,
    got: &Explanation,
    want: &Explanation,
    what: &str,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.outcome, want.outcome, "{}: {} vs {}", what, got, want);
    match (&got.basis, &want.basis) {
        (
            ExplainedBasis::Entry {
                level: gl,
                scope: gs,
                principal: gp,
                allow: ga,
                ..
            },
            ExplainedBasis::Entry {
                level: wl,
                scope: ws,
                allow: wa,
                ..
            },
        ) => {
            let same_level = match (gl, wl) {
                (LevelName::Shapes(_), LevelName::Shapes(_)) => true,
                (a, b) => a == b,
            };
            prop_assert!(
                same_level && gs == ws && ga == wa,
                "{}: engine {:?}, reference {:?}",
                what,
                got.basis,
                want.basis
            );
            prop_assert!(
                ps.contains(gp),
                "{}: deciding principal {:?} is not the user's",
                what,
                gp
            );
            prop_assert!(
                entry_exists(m, gl, kind, name, &got.basis, perm),
                "{}: no such entry: {:?}",
                what,
                got.basis
            );
        }
        (g, w) => prop_assert_eq!(g, w, "{}", what),
    }
    Ok(())
}

/// Compares engine and reference on every user x entity x permission x resource.
fn agree(m: &Model) -> Result<usize, TestCaseError> {
    let mut n = 0;
    let users: Vec<String> = m.entities(Kind::User).map(|u| u.name.clone()).collect();
    let targets: Vec<(Kind, String)> = [Kind::Thing, Kind::ThingTemplate, Kind::User]
        .iter()
        .flat_map(|k| m.entities(*k).map(move |e| (*k, e.name.clone())))
        .collect();
    for user in &users {
        if user == "System" {
            continue;
        }
        let subject = m.subject(user).unwrap();
        let ps = reference::principals(m, user);
        for perm in Permission::ALL {
            // Collections.
            let d = m.check(subject, perm, Target::Collection(Kind::Thing));
            let want = reference::check(
                m,
                m.policy(),
                Some(user),
                perm,
                RefTarget::Collection(Kind::Thing),
            );
            same(
                m,
                &ps,
                Kind::Thing,
                "",
                perm,
                &m.explain(&d),
                &want,
                &format!("collection {user} {perm}"),
            )?;
            n += 1;
            for (kind, name) in &targets {
                let resources: &[Option<&str>] = if perm.is_run_time() {
                    &[None, Some("A"), Some("B"), Some("C")]
                } else {
                    &[None]
                };
                for res in resources {
                    let path = match (res, perm.category()) {
                        (Some(r), Some(c)) => {
                            format!("{}/{}/{}/{}", kind.collection(), name, c.name(), r)
                        }
                        _ => format!("{}/{}", kind.collection(), name),
                    };
                    let d = m.check(subject, perm, m.target(&path).unwrap());
                    let got = m.explain(&d);
                    let want = reference::check(
                        m,
                        m.policy(),
                        Some(user),
                        perm,
                        RefTarget::Entity {
                            kind: *kind,
                            name,
                            resource: *res,
                        },
                    );
                    same(
                        m,
                        &ps,
                        *kind,
                        name,
                        perm,
                        &got,
                        &want,
                        &format!("{user} {perm} {path}"),
                    )?;
                    // Visibility agrees with the outcome.
                    if let Target::Entity { id, .. } = d.target {
                        let visible = m.access().visible(subject, id);
                        prop_assert_eq!(
                            visible,
                            got.outcome != Outcome::NotVisible || d.basis == Basis::OwnUser
                        );
                    }
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

#[derive(Clone, Debug)]
enum Mutation {
    AddMember {
        group: usize,
        is_group: bool,
        who: usize,
    },
    ClearGroup(usize),
    DeleteUser(usize),
    DeleteGroup(usize),
    AddUnitMember {
        unit: usize,
        is_group: bool,
        who: usize,
    },
    ThingEntry {
        thing: usize,
        e: EntrySpec,
    },
    ThingVis {
        thing: usize,
        v: VisSpec,
    },
    TemplateEntry {
        template: usize,
        e: EntrySpec,
    },
    ShapeEntry {
        shape: usize,
        e: EntrySpec,
    },
    Retemplate {
        thing: usize,
        template: usize,
    },
    Rebase {
        template: usize,
        base: usize,
    },
    CollectionEntry(EntrySpec),
    AddUser(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0..5usize, any::<bool>(), 0..6usize).prop_map(|(group, is_group, who)| {
            Mutation::AddMember {
                group,
                is_group,
                who,
            }
        }),
        (0..5usize).prop_map(Mutation::ClearGroup),
        (0..5usize).prop_map(Mutation::DeleteUser),
        (0..5usize).prop_map(Mutation::DeleteGroup),
        (0..5usize, any::<bool>(), 0..6usize).prop_map(|(unit, is_group, who)| {
            Mutation::AddUnitMember {
                unit,
                is_group,
                who,
            }
        }),
        (0..5usize, entry()).prop_map(|(thing, e)| Mutation::ThingEntry { thing, e }),
        (0..5usize, vis()).prop_map(|(thing, v)| Mutation::ThingVis { thing, v }),
        (0..4usize, entry()).prop_map(|(template, e)| Mutation::TemplateEntry { template, e }),
        (0..3usize, entry()).prop_map(|(shape, e)| Mutation::ShapeEntry { shape, e }),
        (0..5usize, 0..4usize)
            .prop_map(|(thing, template)| Mutation::Retemplate { thing, template }),
        (0..4usize, 0..4usize).prop_map(|(template, base)| Mutation::Rebase { template, base }),
        entry().prop_map(Mutation::CollectionEntry),
        (10..12usize).prop_map(Mutation::AddUser),
    ]
}

fn pick(m: &dyn View, kind: Kind, prefix: &str, i: usize) -> Option<String> {
    let names: Vec<String> = m
        .entities(kind)
        .filter(|e| e.name.starts_with(prefix))
        .map(|e| e.name.clone())
        .collect();
    (!names.is_empty()).then(|| names[i % names.len()].clone())
}

/// Applies a mutation; refused ones (cycles, ...) must change nothing, which `agree` then proves.
fn apply(m: &mut Model, mu: &Mutation) {
    let users: Vec<String> = m
        .entities(Kind::User)
        .filter(|e| e.name.starts_with('u'))
        .map(|e| e.name.clone())
        .collect();
    let groups: Vec<String> = m
        .entities(Kind::Group)
        .filter(|e| e.name.starts_with('g'))
        .map(|e| e.name.clone())
        .collect();
    let principal = |is_group: bool, who: usize| -> Option<PrincipalRef> {
        if is_group && !groups.is_empty() {
            Some(PrincipalRef::group(groups[who % groups.len()].clone()))
        } else if !users.is_empty() {
            Some(PrincipalRef::user(users[who % users.len()].clone()))
        } else {
            None
        }
    };
    let entry_of = |e: &EntrySpec, shape: bool| -> Option<(PermissionEntry, bool)> {
        let mut perm = Permission::ALL[e.perm];
        if perm == Permission::Create || (shape && perm.is_design_time()) {
            perm = Permission::ALL[4 + e.perm % 5];
        }
        let res = if perm.is_design_time() {
            "*"
        } else {
            RESOURCES[e.resource]
        };
        Some((
            PermissionEntry::new(principal(e.group, e.who)?, perm, res, e.allow),
            perm.is_design_time(),
        ))
    };
    let push = |acl: &mut Acl, (e, design): (PermissionEntry, bool)| {
        if design {
            acl.design_time.push(e)
        } else {
            acl.run_time.push(e)
        }
    };
    let _ = m.change(|tx| {
        match mu {
            Mutation::AddMember {
                group,
                is_group,
                who,
            } => {
                if let (Some(g), Some(p)) = (
                    groups.get(group % groups.len().max(1)),
                    principal(*is_group, *who),
                ) && let Body::Group(b) = &mut tx.get_mut(Kind::Group, g)?.body
                    && !b.members.contains(&p)
                {
                    b.members.push(p);
                }
            }
            Mutation::ClearGroup(i) => {
                if let Some(g) = groups.get(i % groups.len().max(1))
                    && let Body::Group(b) = &mut tx.get_mut(Kind::Group, g)?.body
                {
                    b.members.clear();
                }
            }
            Mutation::DeleteUser(i) => {
                if users.len() > 1 {
                    tx.delete(Kind::User, &users[i % users.len()])?;
                }
            }
            Mutation::DeleteGroup(i) => {
                if let Some(g) = groups.get(i % groups.len().max(1)) {
                    tx.delete(Kind::Group, g)?;
                }
            }
            Mutation::AddUnitMember {
                unit,
                is_group,
                who,
            } => {
                if let Some(p) = principal(*is_group, *who)
                    && let Body::Organization(o) = &mut tx.get_mut(Kind::Organization, "Org")?.body
                {
                    let n = o.units.len();
                    let u = &mut o.units[unit % n];
                    if !u.members.contains(&p) {
                        u.members.push(p);
                    }
                }
            }
            Mutation::ThingEntry { thing, e } => {
                if let (Some(t), Some(e)) = (
                    pick(tx_model(tx), Kind::Thing, "x", *thing),
                    entry_of(e, false),
                ) {
                    push(&mut tx.get_mut(Kind::Thing, &t)?.permissions, e);
                }
            }
            Mutation::ThingVis { thing, v } => {
                if let Some(t) = pick(tx_model(tx), Kind::Thing, "x", *thing) {
                    let units = match &tx.get(Kind::Organization, "Org").unwrap().body {
                        Body::Organization(o) => o.units.len(),
                        _ => 1,
                    };
                    let entry = match v {
                        VisSpec::Org => VisibilityEntry::organization("Org"),
                        VisSpec::Unit(i) => VisibilityEntry::unit("Org", &unit_name(i % units)),
                    };
                    tx.get_mut(Kind::Thing, &t)?
                        .permissions
                        .visibility
                        .push(entry);
                }
            }
            Mutation::TemplateEntry { template: i, e } | Mutation::ShapeEntry { shape: i, e } => {
                let (kind, prefix, shape) = match mu {
                    Mutation::TemplateEntry { .. } => (Kind::ThingTemplate, "t", false),
                    _ => (Kind::ThingShape, "s", true),
                };
                if let (Some(name), Some(e)) =
                    (pick(tx_model(tx), kind, prefix, *i), entry_of(e, shape))
                {
                    push(
                        tx.get_mut(kind, &name)?.instance_permissions_mut().unwrap(),
                        e,
                    );
                }
            }
            Mutation::Retemplate { thing, template } => {
                if let (Some(x), Some(t)) = (
                    pick(tx_model(tx), Kind::Thing, "x", *thing),
                    pick(tx_model(tx), Kind::ThingTemplate, "t", *template),
                ) && let Body::Thing(b) = &mut tx.get_mut(Kind::Thing, &x)?.body
                {
                    b.thing_template = t;
                }
            }
            Mutation::Rebase { template, base } => {
                if let (Some(t), Some(b)) = (
                    pick(tx_model(tx), Kind::ThingTemplate, "t", *template),
                    pick(tx_model(tx), Kind::ThingTemplate, "t", *base),
                ) && let Body::ThingTemplate(body) =
                    &mut tx.get_mut(Kind::ThingTemplate, &t)?.body
                {
                    body.base_thing_template = Some(b);
                }
            }
            Mutation::CollectionEntry(e) => {
                if let Some(e) = entry_of(e, false) {
                    let e = if e.0.permission.is_design_time() {
                        (
                            PermissionEntry::new(e.0.principal, Permission::Create, "*", e.0.allow),
                            true,
                        )
                    } else {
                        e
                    };
                    push(tx.collection_mut(Kind::Thing), e);
                }
            }
            Mutation::AddUser(i) => {
                tx.create(Entity::user(&uname(*i)))?;
            }
        }
        Ok(())
    });
}

/// A `Tx` is a `View`; `pick` wants one.
fn tx_model<'a>(tx: &'a Tx<'_>) -> &'a dyn View {
    tx
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn engine_agrees_with_the_reference_on_random_models(s in spec()) {
        let m = build(&s);
        agree(&m)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn engine_stays_in_agreement_after_random_changes(s in spec(), muts in prop::collection::vec(mutation(), 1..8)) {
        let mut m = build(&s);
        for mu in &muts {
            apply(&mut m, mu);
            agree(&m)?;
        }
        // The incrementally maintained index answers like one built from scratch.
        let fresh = Model::from_parts(m.export().entities, m.export().collections, m.policy()).unwrap();
        agree(&fresh)?;
    }
}
