//! The generated model of the access benchmarks: seeded and deterministic. At full size, 100,000
//! Things over 100 templates (3 levels of base templates, shapes), 10,000 users, 1,000 groups
//! nested 3 deep, 100 organizational units in a tree, run-time entries at all four levels with
//! overrides and denies.

use std::collections::BTreeMap;
use thinghost_core::*;

/// A small deterministic generator (xorshift64*), so every run builds the same model.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

pub const SERVICES: [&str; 4] = ["Reset", "Start", "Stop", "Calibrate"];

pub fn rt(p: PrincipalRef, perm: Permission, r: &str, allow: bool) -> PermissionEntry {
    PermissionEntry::new(p, perm, r, allow)
}

/// Builds the model: `things` Things over 100 templates, `users` users, `groups` groups, `units` units.
pub fn build(things: usize, users: usize, groups: usize, units: usize) -> Model {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut es = predefined::entities();
    for i in 0..users {
        es.push(Entity::user(&format!("u{i}")));
    }
    // Groups in three tiers: top (10%), mid (30%), leaf (60%); leaf in mid, mid in top.
    let (top, mid) = (groups / 10, groups * 4 / 10);
    let mut members: Vec<Vec<PrincipalRef>> = vec![Vec::new(); groups];
    for g in top..mid {
        members[rng.below(10.min(top))].push(PrincipalRef::group(format!("g{g}")));
    }
    for g in mid..groups {
        members[top + rng.below(mid - top)].push(PrincipalRef::group(format!("g{g}")));
    }
    for u in 0..users {
        for _ in 0..2 {
            let g = mid + rng.below(groups - mid);
            let p = PrincipalRef::user(format!("u{u}"));
            if !members[g].contains(&p) {
                members[g].push(p);
            }
        }
    }
    for (g, m) in members.into_iter().enumerate() {
        es.push(Entity::new(
            format!("g{g}"),
            Body::Group(GroupBody { members: m }),
        ));
    }
    let mut org_units: Vec<Unit> = (0..units)
        .map(|i| Unit {
            name: format!("unit{i}"),
            parent: (i > 0).then(|| format!("unit{}", (i - 1) / 3)),
            members: vec![],
        })
        .collect();
    for g in mid..groups {
        org_units[rng.below(units)]
            .members
            .push(PrincipalRef::group(format!("g{g}")));
    }
    es.push(Entity::new(
        "Corp",
        Body::Organization(OrganizationBody { units: org_units }),
    ));
    // Grants go mostly to ten role groups at the top of the nesting, as real models do.
    let group = |rng: &mut Rng| {
        let g = if rng.chance(80) {
            rng.below(10)
        } else {
            rng.below(groups)
        };
        PrincipalRef::group(format!("g{g}"))
    };
    for s in 0..20 {
        let mut sh = Entity::shape(&format!("s{s}"));
        let acl = sh.instance_permissions_mut().unwrap();
        acl.run_time.push(rt(
            group(&mut rng),
            Permission::ServiceInvoke,
            SERVICES[s % 4],
            true,
        ));
        acl.run_time.push(rt(
            group(&mut rng),
            Permission::PropertyRead,
            "*",
            rng.chance(80),
        ));
        es.push(sh);
    }
    // Templates: 10 on GenericThing, 30 on those, 60 on those.
    for t in 0..100 {
        let base = match t {
            0..10 => "GenericThing".to_string(),
            10..40 => format!("t{}", rng.below(10)),
            _ => format!("t{}", 10 + rng.below(30)),
        };
        let mut e = Entity::template(&format!("t{t}"), &base);
        if let Body::ThingTemplate(b) = &mut e.body
            && rng.chance(50)
        {
            b.thing_shapes.push(format!("s{}", rng.below(20)));
        }
        let acl = e.instance_permissions_mut().unwrap();
        if rng.chance(60) {
            acl.visibility.push(VisibilityEntry::organization("Corp"));
        } else {
            acl.visibility.push(VisibilityEntry::unit(
                "Corp",
                &format!("unit{}", rng.below(units)),
            ));
        }
        acl.design_time.push(PermissionEntry::new(
            group(&mut rng),
            Permission::Read,
            "*",
            true,
        ));
        acl.run_time
            .push(rt(group(&mut rng), Permission::ServiceInvoke, "*", true));
        acl.run_time.push(rt(
            group(&mut rng),
            Permission::ServiceInvoke,
            SERVICES[rng.below(4)],
            false,
        ));
        acl.run_time.push(rt(
            group(&mut rng),
            Permission::PropertyWrite,
            "*",
            rng.chance(70),
        ));
        es.push(e);
    }
    for x in 0..things {
        let mut e = Entity::thing(&format!("x{x}"), &format!("t{}", 40 + rng.below(60)));
        if rng.chance(30) {
            let u = PrincipalRef::user(format!("u{}", rng.below(users)));
            e.permissions.run_time.push(rt(
                u.clone(),
                Permission::ServiceInvoke,
                SERVICES[rng.below(4)],
                true,
            ));
            e.permissions
                .run_time
                .push(rt(u, Permission::PropertyRead, "*", true));
        }
        if rng.chance(10) {
            e.permissions
                .run_time
                .push(rt(group(&mut rng), Permission::ServiceInvoke, "*", false));
        }
        if rng.chance(20) {
            e.permissions.visibility.push(VisibilityEntry::unit(
                "Corp",
                &format!("unit{}", rng.below(units)),
            ));
        }
        es.push(e);
    }
    let mut coll = Acl::default();
    coll.run_time.push(rt(
        PrincipalRef::group("g0"),
        Permission::PropertyRead,
        "*",
        true,
    ));
    coll.design_time.push(PermissionEntry::new(
        PrincipalRef::group("g1"),
        Permission::Create,
        "*",
        true,
    ));
    Model::from_parts(es, BTreeMap::from([(Kind::Thing, coll)]), Policy::default()).unwrap()
}

/// One question of the sample: may `user` do `permission` on `thing` (its property or service
/// `resource`, or the whole Thing)?
#[derive(Clone, Debug)]
pub struct Question {
    pub user: String,
    pub permission: Permission,
    pub thing: String,
    pub resource: Option<String>,
}

impl Question {
    /// The path of the target, as the REST API spells it.
    pub fn path(&self) -> String {
        match (&self.resource, self.permission.category()) {
            (Some(r), Some(c)) => format!("Things/{}/{}/{r}", self.thing, c.name()),
            _ => format!("Things/{}", self.thing),
        }
    }

    /// The question in the engine's terms (interned ids).
    pub fn resolve(&self, m: &Model) -> (Subject, Permission, Target) {
        (
            m.subject(&self.user).expect("the user exists"),
            self.permission,
            m.target(&self.path()).expect("the path parses"),
        )
    }
}

/// A fixed sample of `n` questions: users u0..users, the run-time and design-time permissions on
/// Things x0..things, services and properties by name.
pub fn questions(n: usize, things: usize, users: usize) -> Vec<Question> {
    let mut rng = Rng(42);
    let perms = [
        Permission::ServiceInvoke,
        Permission::PropertyRead,
        Permission::PropertyWrite,
        Permission::Read,
    ];
    (0..n)
        .map(|_| {
            let user = format!("u{}", rng.below(users));
            let permission = perms[rng.below(4)];
            let thing = format!("x{}", rng.below(things));
            let resource = permission
                .category()
                .map(|_| SERVICES[rng.below(4)].to_string());
            Question {
                user,
                permission,
                thing,
                resource,
            }
        })
        .collect()
}

/// The engine's answers to a sample: each question resolved to the engine's terms, and whether it
/// is allowed. Every contender is checked against these before it is timed.
pub struct Answers {
    pub resolved: Vec<(Subject, Permission, Target)>,
    pub allowed: Vec<bool>,
}

impl Answers {
    pub fn of(m: &Model, qs: &[Question]) -> Answers {
        let resolved: Vec<_> = qs.iter().map(|q| q.resolve(m)).collect();
        let allowed = resolved
            .iter()
            .map(|(s, p, t)| m.check(*s, *p, *t).outcome == Outcome::Allowed)
            .collect();
        Answers { resolved, allowed }
    }

    /// Asks the engine question `i` again (what the benchmarks time).
    pub fn check(&self, m: &Model, i: usize) -> bool {
        let (s, p, t) = self.resolved[i];
        m.check(s, p, t).outcome == Outcome::Allowed
    }
}
