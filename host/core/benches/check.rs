//! Access checks on a large generated model: 100,000 Things over 100 templates (3 levels of base
//! templates, shapes), 10,000 users, 1,000 groups nested 3 deep, 100 organizational units, entries
//! at all four levels with overrides and denies. Also the cost of keeping the index current.
//!
//! Run: `cargo bench -p thinghost-core --bench check`

use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;
use thinghost_core::*;

/// A small deterministic generator (xorshift64*), so every run builds the same model.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const SERVICES: [&str; 4] = ["Reset", "Start", "Stop", "Calibrate"];

fn rt(p: PrincipalRef, perm: Permission, r: &str, allow: bool) -> PermissionEntry {
    PermissionEntry::new(p, perm, r, allow)
}

fn build(things: usize, users: usize, groups: usize, units: usize) -> Model {
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

fn questions(
    m: &Model,
    n: usize,
    things: usize,
    users: usize,
) -> Vec<(Subject, Permission, Target)> {
    let mut rng = Rng(42);
    let perms = [
        Permission::ServiceInvoke,
        Permission::PropertyRead,
        Permission::PropertyWrite,
        Permission::Read,
    ];
    (0..n)
        .map(|_| {
            let s = m.subject(&format!("u{}", rng.below(users))).unwrap();
            let p = perms[rng.below(4)];
            let path = match p.category() {
                Some(c) => format!(
                    "Things/x{}/{}/{}",
                    rng.below(things),
                    c.name(),
                    SERVICES[rng.below(4)]
                ),
                None => format!("Things/x{}", rng.below(things)),
            };
            (s, p, m.target(&path).unwrap())
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let (things, users) = (100_000, 10_000);
    let t = Instant::now();
    let mut m = build(things, users, 1_000, 100);
    eprintln!(
        "built and indexed {} entities in {:?}",
        m.len(),
        t.elapsed()
    );
    // One-off costs of rare, whole-model changes.
    let t = Instant::now();
    m.create(Entity::new(
        "Extra",
        Body::DataShape(DataShapeBody::default()),
    ))
    .unwrap();
    eprintln!("create a DataShape: {:?}", t.elapsed());
    let t = Instant::now();
    m.delete(Kind::User, "u9999").unwrap();
    eprintln!(
        "delete a user (cascade over every entity): {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    m.change(|tx| {
        tx.get_mut(Kind::ThingTemplate, "t0")?
            .definitions_mut()
            .unwrap()
            .properties
            .push(PropertyDef {
                name: "added".into(),
                base_type: BaseType::String,
                description: String::new(),
                default_value: None,
                read_only: false,
                data_shape: None,
            });
        Ok(())
    })
    .unwrap();
    eprintln!(
        "add a property to a base template (re-checks its Things): {:?}",
        t.elapsed()
    );
    let qs = questions(&m, 10_000, things, users - 1);
    let (mut allowed, mut denied, mut hidden) = (0, 0, 0);
    for (s, p, t) in &qs {
        match m.check(*s, *p, *t).outcome {
            Outcome::Allowed => allowed += 1,
            Outcome::Denied => denied += 1,
            Outcome::NotVisible => hidden += 1,
        }
    }
    eprintln!("sample: {allowed} allowed, {denied} denied, {hidden} not visible");
    let mut i = 0;
    c.bench_function("check/100k-things", |b| {
        b.iter(|| {
            let (s, p, t) = qs[i % qs.len()];
            i += 1;
            black_box(m.check(black_box(s), p, t))
        })
    });
    let mut flip = false;
    c.bench_function("change/permission-on-a-thing", |b| {
        b.iter(|| {
            flip = !flip;
            m.change(|tx| {
                let acl = &mut tx.get_mut(Kind::Thing, "x77")?.permissions;
                if flip {
                    acl.run_time.push(rt(
                        PrincipalRef::user("u5"),
                        Permission::EventInvoke,
                        "*",
                        true,
                    ));
                } else {
                    acl.run_time
                        .retain(|e| e.permission != Permission::EventInvoke);
                }
                Ok(())
            })
            .unwrap()
        })
    });
    c.bench_function("change/membership-of-a-leaf-group", |b| {
        b.iter(|| {
            flip = !flip;
            m.change(|tx| {
                if let Body::Group(g) = &mut tx.get_mut(Kind::Group, "g999")?.body {
                    if flip {
                        g.members.push(PrincipalRef::user("u7"));
                    } else {
                        g.members.retain(|p| p.principal != "u7");
                    }
                }
                Ok(())
            })
            .unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
