//! Row 1 of BENCHMARKS.md: access checks, thinghost against Cedar and a precomputed lookup, on
//! one generated model; and row 2's in-memory part: the cost of one permission change and one
//! membership change until checks see it.
//!
//! `cargo bench -p thinghost-benches --bench access` (THINGHOST_BENCH_THINGS=10000 for a smaller
//! model). It first proves that every contender gives thinghost's answer to every question of the
//! sample, and aborts if one does not: the comparison must be fair.

use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;
use thinghost_benches::cedar;
use thinghost_benches::model::{Answers, Question, build, questions, rt};
use thinghost_benches::timing::{Stats, measure};
use thinghost_core::reference::{self, RefTarget};
use thinghost_core::*;

fn things() -> usize {
    std::env::var("THINGHOST_BENCH_THINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn row(name: &str, s: Stats, base: Stats) {
    println!(
        "| {name} | {:.0} | {:.0} | {:.0} | {:.2}x |",
        s.median_ns,
        s.p99_ns,
        s.per_sec,
        s.median_ns / base.median_ns
    );
}

fn key(q: &Question) -> u64 {
    let n = |s: &str| {
        s[1..]
            .parse::<u64>()
            .expect("generated names end in a number")
    };
    let r = match q.resource.as_deref() {
        None => 0,
        Some(r) => {
            1 + thinghost_benches::model::SERVICES
                .iter()
                .position(|s| *s == r)
                .unwrap() as u64
        }
    };
    (n(&q.user) << 40) | (n(&q.thing) << 8) | ((q.permission as u64) << 4) | r
}

/// casbin runs in a build of its own (its Rhai features would change ours): run it, and print
/// its rows. casbin cannot express level precedence or visibility, so it is compared only on
/// the questions where its answer is thinghost's.
fn casbin_budget() -> usize {
    std::env::var("THINGHOST_BENCH_CASBIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

fn casbin_rows(things: usize, budget: usize, print: bool) -> Stats {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("../target"))
        .join("casbin-anchor");
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["run", "--quiet", "--release", "--manifest-path"])
        .arg(root.join("casbin-anchor/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .args(["--", &things.to_string(), &budget.to_string()])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "the casbin anchor failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the anchor prints JSON");
    let stats = |k: &str| Stats {
        median_ns: v[k]["median_ns"].as_f64().unwrap(),
        p99_ns: v[k]["p99_ns"].as_f64().unwrap(),
        per_sec: v[k]["per_sec"].as_f64().unwrap(),
    };
    if !print {
        return stats("casbin");
    }
    println!(
        "\ncasbin ({} policy rows) gives thinghost's answer on {} of the first {} questions ({} of them allowed); the others need level precedence or visibility. On those:\n",
        v["policies"], v["same"], v["considered"], v["same_allowed"]
    );
    println!("| contender | median ns | p99 ns | checks/s (one core) | median / thinghost |");
    println!("|---|---|---|---|---|");
    let engine = stats("thinghost");
    row("thinghost (indexed engine)", engine, engine);
    row(
        "casbin 2.20 `enforce` (RBAC, deny-override)",
        stats("casbin"),
        engine,
    );
    stats("casbin")
}

/// One dependent random read at a time over `bytes` of memory (one cache line per step, in one
/// random cycle): what a cache miss costs on this machine, to compare with a check's time.
fn pointer_chase(bytes: usize) -> Stats {
    let n = (bytes / 64).max(2);
    // A random cycle through all lines (Sattolo's shuffle, with a fixed xorshift seed).
    let mut order: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % i as u64) as usize;
        order.swap(i, j);
    }
    let mut next = vec![[0usize; 8]; n];
    for i in 0..n {
        next[order[i]][0] = order[(i + 1) % n];
    }
    let mut at = 0usize;
    measure(n.min(200_000), 5, |_| {
        at = next[at][0];
        at & 1 == 0
    })
}

/// Medians of one model size: thinghost, the floor, Cedar, casbin.
type Point = (usize, [f64; 4]);

/// thinghost, the floor and Cedar on a model of `things` Things (answers checked as in row 1).
fn medians(things: usize) -> [f64; 3] {
    let users = 10_000;
    let m = build(things, users, 1_000, 100);
    let qs = questions(10_000, things, users - 1);
    let ours = Answers::of(&m, &qs);
    let cm = cedar::translate(&m, &qs);
    for (i, q) in qs.iter().enumerate() {
        assert_eq!(cm.allowed(i), ours.allowed[i], "Cedar disagrees on {q:?}");
    }
    let [engine, lookup, cedar] = timed(&m, &qs, &ours, &cm, 10, 2_000);
    [engine.median_ns, lookup.median_ns, cedar.median_ns]
}

/// Times the engine, the floor and Cedar on the sample (`rounds` passes; Cedar on the first
/// `cedar_n` questions, once).
fn timed(
    m: &Model,
    qs: &[Question],
    ours: &Answers,
    cm: &cedar::CedarModel,
    rounds: usize,
    cedar_n: usize,
) -> [Stats; 3] {
    let floor: HashMap<u64, bool> = qs
        .iter()
        .zip(&ours.allowed)
        .map(|(q, a)| (key(q), *a))
        .collect();
    let keys: Vec<u64> = qs.iter().map(key).collect();
    let engine = measure(qs.len(), rounds, |i| ours.check(m, i));
    let lookup = measure(qs.len(), rounds, |i| floor[&keys[i]]);
    let cedar = measure(cedar_n.min(qs.len()), 1, |i| cm.allowed(i));
    [engine, lookup, cedar]
}

/// The plot of BENCHMARKS.md: median check latency against model size, log-log, as SVG.
fn plot(points: &[Point]) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 440.0, 80.0, 200.0, 30.0, 60.0);
    let (lo, hi) = (1.0f64, 9.0f64); // 10 ns .. 1 s, as log10(ns)
    let xs: Vec<f64> = points.iter().map(|(n, _)| (*n as f64).log10()).collect();
    let (x0, x1) = (xs[0], xs[xs.len() - 1]);
    let x = |v: f64| left + (v - x0) / (x1 - x0) * (w - left - right);
    let y =
        |ns: f64| top + (hi - ns.max(1.0).log10().clamp(lo, hi)) / (hi - lo) * (h - top - bottom);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="14">Median access-check latency against model size (log-log)</text>
"#,
        (w - right + left) / 2.0
    );
    for e in 1..=9 {
        let yy = y(10f64.powi(e));
        let label = [
            "", "10 ns", "100 ns", "1 µs", "10 µs", "100 µs", "1 ms", "10 ms", "100 ms", "1 s",
        ][e as usize];
        svg.push_str(&format!(
            r##"<line x1="{left}" y1="{yy}" x2="{}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{label}</text>
"##,
            w - right,
            left - 6.0,
            yy + 4.0
        ));
    }
    for (i, (n, _)) in points.iter().enumerate() {
        let xx = x(xs[i]);
        svg.push_str(&format!(
            r##"<line x1="{xx}" y1="{top}" x2="{xx}" y2="{}" stroke="#ddd"/><text x="{xx}" y="{}" text-anchor="middle">{n} Things</text>
"##,
            h - bottom,
            h - bottom + 18.0
        ));
    }
    let series = [
        ("thinghost", "#1f77b4"),
        ("precomputed lookup (floor)", "#7f7f7f"),
        ("cedar-policy", "#ff7f0e"),
        ("casbin (questions it can answer)", "#d62728"),
    ];
    for (k, (name, color)) in series.iter().enumerate() {
        let pts: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(i, (_, v))| format!("{:.1},{:.1}", x(xs[i]), y(v[k])))
            .collect();
        svg.push_str(&format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>
"#,
            pts.join(" ")
        ));
        for p in &pts {
            let (px, py) = p.split_once(',').unwrap();
            svg.push_str(&format!(
                r#"<circle cx="{px}" cy="{py}" r="3" fill="{color}"/>"#
            ));
        }
        let ly = top + 20.0 + 20.0 * k as f64;
        svg.push_str(&format!(
            r#"
<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>
"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 35.0,
            ly + 4.0
        ));
    }
    svg.push_str(&format!(
        r#"<text x="{}" y="{}" text-anchor="middle">10,000 users, 1,000 groups, 100 units; 10,000 questions (casbin: up to 200)</text>
</svg>
"#,
        (w - right + left) / 2.0,
        h - 12.0
    ));
    svg
}

fn access(c: &mut Criterion) {
    let (things, users) = (things(), 10_000);
    let t = Instant::now();
    let mut m = build(things, users, 1_000, 100);
    eprintln!(
        "built and indexed {} entities in {:?}",
        m.len(),
        t.elapsed()
    );
    // One-off costs of rare, whole-model changes.
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
                data_change_type: Default::default(),
                logged: false,
            });
        Ok(())
    })
    .unwrap();
    eprintln!(
        "add a property to a base template (re-checks its Things): {:?}",
        t.elapsed()
    );
    let qs = questions(10_000, things, users - 1);
    let ours = Answers::of(&m, &qs);
    let (resolved, answers) = (&ours.resolved, &ours.allowed);
    let (mut allowed, mut denied, mut hidden) = (0, 0, 0);
    for (s, p, t) in resolved {
        match m.check(*s, *p, *t).outcome {
            Outcome::Allowed => allowed += 1,
            Outcome::Denied => denied += 1,
            Outcome::NotVisible => hidden += 1,
        }
    }
    eprintln!("sample: {allowed} allowed, {denied} denied, {hidden} not visible");

    // Fairness first: every contender gives the same answer to every question.
    let naive = |i: usize| {
        let q = &qs[i];
        reference::check(
            &m,
            Policy::default(),
            Some(&q.user),
            q.permission,
            RefTarget::Entity {
                kind: Kind::Thing,
                name: &q.thing,
                resource: q.resource.as_deref(),
            },
        )
        .outcome
            == Outcome::Allowed
    };
    let t = Instant::now();
    let cm = cedar::translate(&m, &qs);
    eprintln!("translated to Cedar in {:?}", t.elapsed());
    for (i, q) in qs.iter().enumerate() {
        assert_eq!(
            naive(i),
            answers[i],
            "the reference evaluator disagrees on {q:?}"
        );
        if cm.allowed(i) != answers[i] {
            panic!(
                "Cedar disagrees with thinghost on {q:?}: thinghost says {}; {}",
                answers[i],
                m.explain(&m.check(resolved[i].0, resolved[i].1, resolved[i].2))
            );
        }
    }
    eprintln!(
        "agreement: thinghost, the reference evaluator and Cedar give the same {} answers",
        qs.len()
    );
    let [engine, lookup, cedar] = timed(&m, &qs, &ours, &cm, 20, qs.len());
    let naive_n = qs.len().min(1_000);
    let naive_stats = measure(naive_n, 1, naive);
    println!(
        "\n## Row 1: access checks ({things} Things, {users} users, 1,000 groups, 100 units; 10,000 questions)\n"
    );
    println!("| contender | median ns | p99 ns | checks/s (one core) | median / thinghost |");
    println!("|---|---|---|---|---|");
    row("thinghost (indexed engine)", engine, engine);
    row("precomputed HashMap lookup (the floor)", lookup, engine);
    row("cedar-policy 4.14 `is_authorized`", cedar, engine);
    row(
        &format!("thinghost naive reference evaluator ({naive_n} questions)"),
        naive_stats,
        engine,
    );
    // What a miss costs here: the floor's table stays in the CPU's caches, the model does not.
    let warm_n = 500.min(qs.len());
    let warm_engine = measure(warm_n, 200, |i| ours.check(&m, i));
    let floor: HashMap<u64, bool> = qs[..warm_n]
        .iter()
        .zip(&ours.allowed)
        .map(|(q, a)| (key(q), *a))
        .collect();
    let warm_keys: Vec<u64> = qs[..warm_n].iter().map(key).collect();
    let warm_floor = measure(warm_n, 200, |i| floor[&warm_keys[i]]);
    let chase = pointer_chase(m.access().slots() * 128);
    println!(
        "\nIn the CPU's caches (the first {warm_n} questions, asked 200 times over), and what one cache miss costs here:\n"
    );
    println!("| contender | median ns | p99 ns | checks/s (one core) | median / thinghost |");
    println!("|---|---|---|---|---|");
    row(
        &format!("thinghost (indexed engine), {warm_n} questions, cache-warm"),
        warm_engine,
        warm_engine,
    );
    row(
        &format!("precomputed HashMap lookup (the floor), the same {warm_n}"),
        warm_floor,
        warm_engine,
    );
    row(
        &format!(
            "one random read over {} MiB (a pointer chase the size of the engine's entity slots)",
            (m.access().slots() * 128) >> 20
        ),
        chase,
        warm_engine,
    );
    let casbin_main = casbin_rows(things, casbin_budget(), true);
    // The plot: the same contenders on smaller models, then this one.
    if std::env::var_os("THINGHOST_BENCH_NO_PLOT").is_none() {
        let mut points: Vec<Point> = Vec::new();
        for n in [1_000, 10_000] {
            if n < things {
                let [e, f, c] = medians(n);
                let cb = casbin_rows(n, 200, false);
                points.push((n, [e, f, c, cb.median_ns]));
            }
        }
        points.push((
            things,
            [
                engine.median_ns,
                lookup.median_ns,
                cedar.median_ns,
                casbin_main.median_ns,
            ],
        ));
        // The committed plot is the full model's; other sizes go beside the build.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = if things == 100_000 {
            root.join("check-latency.svg")
        } else {
            std::env::temp_dir().join(format!("thinghost-check-latency-{things}.svg"))
        };
        std::fs::write(&path, plot(&points)).expect("the plot is written");
        println!(
            "\nMedians by model size (ns): {points:?}; plotted in {}",
            path.display()
        );
    }

    // Row 2, startup: the whole model loaded from the SQLite store, validated and indexed.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let t = Instant::now();
    drop(
        thinghost_store::Db::create(dir.path(), build(things, users, 1_000, 100), &[])
            .expect("the model is stored"),
    );
    let stored = t.elapsed();
    let mut loads: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            let db = thinghost_store::Db::open(dir.path(), Policy::default()).expect("it loads");
            black_box(db.model().len());
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    loads.sort_by(f64::total_cmp);
    println!(
        "\n## Row 2: index maintenance\n\nStartup: the model ({} entities) loaded from SQLite, validated and indexed: {:.0} ms (median of 3; storing it took {:.0} ms).",
        m.len(),
        loads[1],
        stored.as_secs_f64() * 1000.0
    );
    println!(
        "A permission change and a membership change, until checks see them: the criterion figures below."
    );

    // Row 2, in memory: a change until checks see it (the change returns with the index updated).
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
    let mut i = 0;
    c.bench_function("check/criterion-mean", |b| {
        b.iter(|| {
            let (s, p, t) = resolved[i % resolved.len()];
            i += 1;
            black_box(m.check(black_box(s), p, t))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = access
}
criterion_main!(benches);
