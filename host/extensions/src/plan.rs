//! Load order (DOMAIN E1, E2): extensions load after the ones they require; a missing
//! dependency, an unsatisfied version, a host version mismatch or a cycle refuses the extension,
//! and every extension that needs a refused one, each with a reason naming the offending piece.

use crate::manifest::Manifest;
use semver::Version;
use std::collections::{BTreeMap, BTreeSet};

/// The outcome of planning: the load order, and why the others were refused.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Names, dependencies first.
    pub order: Vec<String>,
    /// Name -> reason.
    pub refused: BTreeMap<String, String>,
    /// The refused ones that only wait for a dependency that is not installed (directly, or
    /// through others that wait): they load once it is.
    pub waiting: BTreeSet<String>,
}

/// Plans the loading of `manifests` on a host of version `host`.
pub fn plan(manifests: &[&Manifest], host: &Version) -> Plan {
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    let mut waiting: BTreeSet<String> = BTreeSet::new();
    let mut by_name: BTreeMap<&str, &Manifest> = BTreeMap::new();
    for m in manifests {
        if by_name.contains_key(m.name()) {
            refused.insert(
                m.name().to_string(),
                format!("two packages are named {}; remove one", m.name()),
            );
            continue;
        }
        by_name.insert(m.name(), m);
    }
    for name in refused.keys() {
        by_name.remove(name.as_str());
    }
    for (name, m) in &by_name {
        if !m.extension.host.matches(host) {
            refused.insert(
                name.to_string(),
                format!(
                    "needs host {}, but this is thinghost {host}",
                    m.extension.host
                ),
            );
        }
    }
    // Dependencies, to a fixpoint: a refusal refuses everything that needs it.
    loop {
        let mut changed = false;
        for (name, m) in &by_name {
            if refused.contains_key(*name) {
                continue;
            }
            for (dep, req) in &m.requires {
                let reason = match by_name.get(dep.as_str()) {
                    None if refused.contains_key(dep) => {
                        Some(format!("needs {dep} {req}, which was refused"))
                    }
                    None => {
                        waiting.insert(name.to_string());
                        Some(format!(
                            "needs {dep} {req}, which is not installed; install {dep} first"
                        ))
                    }
                    Some(_) if waiting.contains(dep) => {
                        waiting.insert(name.to_string());
                        Some(format!("needs {dep}, which is waiting: {}", refused[dep]))
                    }
                    Some(d) if !req.matches(&d.extension.version) => Some(format!(
                        "needs {dep} {req}, but {dep} {} is installed",
                        d.extension.version
                    )),
                    Some(_) if refused.contains_key(dep) => {
                        Some(format!("needs {dep}, which was refused: {}", refused[dep]))
                    }
                    Some(_) => None,
                };
                if let Some(r) = reason {
                    refused.insert(name.to_string(), r);
                    changed = true;
                    break;
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Kahn's algorithm, in name order for a stable result.
    let live: BTreeSet<&str> = by_name
        .keys()
        .copied()
        .filter(|n| !refused.contains_key(*n))
        .collect();
    let mut order: Vec<String> = Vec::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    loop {
        let next = live.iter().find(|n| {
            !done.contains(**n)
                && by_name[**n]
                    .requires
                    .keys()
                    .all(|d| done.contains(d.as_str()))
        });
        match next {
            Some(n) => {
                done.insert(n);
                order.push(n.to_string());
            }
            None => break,
        }
    }
    // What is left is in a cycle, or needs something in one.
    let left: Vec<&str> = live.iter().copied().filter(|n| !done.contains(n)).collect();
    for n in &left {
        let reason = match cycle_from(n, &by_name, &done) {
            Some(path) if path.first() == Some(&n.to_string()) => {
                format!("dependency cycle: {}; break it", path.join(" -> "))
            }
            Some(path) => format!(
                "needs {}, which is in a dependency cycle: {}",
                path[0],
                path.join(" -> ")
            ),
            None => "a dependency could not be ordered".to_string(),
        };
        refused.insert(n.to_string(), reason);
    }
    Plan {
        order,
        refused,
        waiting,
    }
}

/// Follows unloaded dependencies from `start` until a name repeats; returns the cycle.
fn cycle_from(
    start: &str,
    by_name: &BTreeMap<&str, &Manifest>,
    done: &BTreeSet<&str>,
) -> Option<Vec<String>> {
    let mut path: Vec<String> = vec![start.to_string()];
    let mut cur = start;
    for _ in 0..=by_name.len() {
        let next = by_name
            .get(cur)?
            .requires
            .keys()
            .find(|d| !done.contains(d.as_str()) && by_name.contains_key(d.as_str()))?;
        if let Some(i) = path.iter().position(|p| p == next) {
            let mut cycle = path[i..].to_vec();
            cycle.push(next.clone());
            return Some(cycle);
        }
        path.push(next.clone());
        cur = next;
    }
    None
}
