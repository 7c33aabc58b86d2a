//! `casbin-anchor THINGS BUDGET`: builds the benchmark model with THINGS Things and the same
//! 10,000-question sample as the access benchmark, finds among the first BUDGET questions those
//! where casbin's answer is thinghost's, times both on those, and prints one JSON object. The
//! access benchmark (`cargo bench -p thinghost-benches --bench access`) runs it.

mod casbin;

use serde_json::json;
use thinghost_bench_model::model::{Answers, build, questions};
use thinghost_bench_model::timing::{Stats, measure};

fn stats(s: Stats) -> serde_json::Value {
    json!({"median_ns": s.median_ns, "p99_ns": s.p99_ns, "per_sec": s.per_sec})
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: casbin-anchor THINGS BUDGET"))
        .collect();
    let (things, budget) = match args[..] {
        [t, b] => (t, b),
        _ => panic!("usage: casbin-anchor THINGS BUDGET"),
    };
    let users = 10_000;
    let m = build(things, users, 1_000, 100);
    let qs = questions(10_000, things, users - 1);
    let ours = Answers::of(&m, &qs);
    let answers = &ours.allowed;
    let cb = casbin::translate(&m, &qs);
    let considered = qs.len().min(budget);
    let same: Vec<usize> = (0..considered)
        .filter(|&i| cb.allowed(i) == answers[i])
        .collect();
    let same_allowed = same.iter().filter(|&&i| answers[i]).count();
    let engine = measure(same.len(), 20, |j| ours.check(&m, same[j]));
    let casbin = measure(same.len(), 1, |j| cb.allowed(same[j]));
    println!(
        "{}",
        json!({
            "considered": considered, "same": same.len(), "same_allowed": same_allowed,
            "policies": cb.policies, "thinghost": stats(engine), "casbin": stats(casbin),
        })
    );
}
