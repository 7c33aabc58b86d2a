//! Row 7 of BENCHMARKS.md: permission insight and the lint on the benchmark model: one user's
//! effective permissions, the access impact of a script's change (what a dry run computes), the
//! copy of the model a script runs on, and a whole lint.
//!
//! `cargo bench -p thinghost-benches --bench insight` (`THINGHOST_BENCH_THINGS`, 100,000 by
//! default; 10,000 users, 1,000 groups, 100 units).

use std::time::Instant;
use thinghost_benches::model::{build, rt};
use thinghost_core::insight::{Touched, access_impact, access_impact_of, effective_permissions};
use thinghost_core::*;

fn things() -> usize {
    std::env::var("THINGHOST_BENCH_THINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Median and max milliseconds of `runs` calls.
fn time<T>(runs: usize, mut f: impl FnMut(usize) -> T) -> (f64, f64) {
    let mut v: Vec<f64> = (0..runs)
        .map(|i| {
            let t = Instant::now();
            std::hint::black_box(f(i));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let things = things();
    let users = 10_000;
    let started = Instant::now();
    let m = build(things, users, 1_000, 100);
    eprintln!(
        "model: {things} Things, {users} users, {} entities, built in {:.1} s",
        m.len(),
        started.elapsed().as_secs_f64()
    );
    println!("| what | median ms | max ms | size |");
    println!("|---|---|---|---|");
    let rows = effective_permissions(&m, "u1", true).unwrap().len();
    let (med, max) = time(20, |i| {
        effective_permissions(&m, &format!("u{}", i * 97), true)
    });
    println!(
        "| EffectivePermissions of one user (with the rule of each row) | {med:.1} | {max:.1} | {rows} rows for u1 |"
    );
    let (med, max) = time(10, |_| m.clone());
    println!(
        "| the copy a script runs on (`Db::fork`: model and index) | {med:.1} | {max:.1} | {} entities |",
        m.len()
    );
    // A provisioning-like change: a new Thing, visible to one organization, writable by one user.
    let mut after = m.clone();
    let batch = after
        .change(|tx| {
            tx.create(Entity::thing("NewPump", "GenericThing"))?;
            let t = tx.get_mut(Kind::Thing, "NewPump")?;
            t.permissions
                .visibility
                .push(VisibilityEntry::unit("Corp", "unit50"));
            t.permissions.run_time.push(rt(
                PrincipalRef::user("u1"),
                Permission::PropertyWrite,
                "*",
                true,
            ));
            Ok(())
        })
        .unwrap();
    let touched = Touched::from_writes(&batch.writes);
    let n = access_impact_of(&m, &after, &touched).len();
    let (med, max) = time(5, |_| access_impact_of(&m, &after, &touched));
    println!(
        "| access impact of a new Thing with a grant (a dry run), every user | {med:.1} | {max:.1} | {n} rows |"
    );
    // A membership change: a user joins a leaf group.
    let mut after = m.clone();
    let batch = after
        .change(|tx| {
            if let Body::Group(g) = &mut tx.get_mut(Kind::Group, "g999")?.body {
                g.members.push(PrincipalRef::user("u2"));
            }
            Ok(())
        })
        .unwrap();
    let touched = Touched::from_writes(&batch.writes);
    let n = access_impact_of(&m, &after, &touched).len();
    let (med, max) = time(5, |_| access_impact_of(&m, &after, &touched));
    println!(
        "| access impact of one user joining a group, every user | {med:.1} | {max:.1} | {n} rows |"
    );
    // Without narrowing, a dry run would compare every user on every entity, before and after:
    // measured on 20 users and scaled (the whole would take minutes).
    let (one, _) = time(20, |i| {
        effective_permissions(&m, &format!("u{}", i * 97), false)
    });
    println!(
        "| the same without narrowing (every user on every entity, twice): estimated from one user's {one:.1} ms | {:.0} | | |",
        one * 2.0 * users as f64
    );
    // And the unnarrowed function itself, on a few hundred Things, agrees with the narrow one.
    if things <= 1_000 {
        assert_eq!(
            access_impact(&m, &after),
            access_impact_of(&m, &after, &touched)
        );
    }
    let deployment = thinghost_core::lint::Deployment::default();
    let n = thinghost_core::lint::lint(&m, &deployment, 0).len();
    let (med, max) = time(5, |_| thinghost_core::lint::lint(&m, &deployment, 0));
    println!("| the whole security lint | {med:.1} | {max:.1} | {n} findings |");
}
