//! Row 4 of BENCHMARKS.md: HTTP end to end.
//!
//! The real `thinghost serve` (release build) on loopback, with the `Add` extensions of row 3 and
//! the user `bench`, who authenticates with an application key; wrk with 64 connections reads a
//! property and calls `Add` (Rhai and Wasm), over plain HTTP and over TLS; beside it, in the same
//! run, `ceiling`: the same HTTP stack answering a constant.
//!
//! `cargo bench -p thinghost-benches --bench http` (`THINGHOST_BENCH_SECONDS`: seconds per
//! measurement, 8 by default). Needs wrk (`apt-get install wrk`); without it, the row is skipped
//! with that message.

use std::process::Command;
use thinghost_benches::dispatch::{local_app, plugin_dir};
use thinghost_benches::load::{Load, script, start, wrk};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        println!(
            "\n## Row 4: HTTP end to end\n\nskipped: wrk is not installed (`apt-get install wrk`)"
        );
        return;
    }
    let seconds: u64 = std::env::var("THINGHOST_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    eprintln!("building thinghost and the add extensions...");
    // `thinghost` itself (host/server/src/main.rs), built in this crate (src/bin).
    let binary = env!("CARGO_BIN_EXE_thinghost-bench-server");
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (plugins, data) = (tmp.path().join("plugins"), tmp.path().join("data"));
    plugin_dir(&plugins);
    let key = local_app(&data, &plugins).2;
    let get = script(tmp.path(), "get", &key, None);
    let add = script(tmp.path(), "add", &key, Some(r#"{"a": 1, "b": 2}"#));
    let ceiling = env!("CARGO_BIN_EXE_ceiling");

    let mut rows: Vec<(String, &str, Load)> = Vec::new();
    for tls in [false, true] {
        let scheme = if tls { "https" } else { "http" };
        let mut cmd = Command::new(ceiling);
        cmd.arg("127.0.0.1:0");
        if tls {
            cmd.arg(tmp.path());
        }
        let c = start(cmd, scheme);
        eprintln!("measuring the ceiling over {scheme}...");
        wrk(&format!("{}/warm", c.base), &get, 1);
        rows.push((
            "ceiling: a constant (same stack)".into(),
            scheme,
            wrk(
                &format!("{}/Thingworx/Things/X/Properties/value", c.base),
                &get,
                seconds,
            ),
        ));
        drop(c);
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--data")
            .arg(&data)
            .arg("--plugins")
            .arg(&plugins)
            .args(["--allow-native", "--listen", "127.0.0.1:0"])
            .arg(if tls { "--dev" } else { "--insecure-http" });
        let s = start(cmd, scheme);
        let targets = [
            (
                "property read",
                "/Thingworx/Things/AdderWasm/Properties/value",
                &get,
            ),
            (
                "service call, Rhai",
                "/Thingworx/Things/AdderRhai/Services/Add",
                &add,
            ),
            (
                "service call, Wasm",
                "/Thingworx/Things/AdderWasm/Services/Add",
                &add,
            ),
            (
                "service call, native",
                "/Thingworx/Things/AdderNative/Services/Add",
                &add,
            ),
        ];
        for (what, path, script) in targets {
            eprintln!("measuring {what} over {scheme}...");
            let url = format!("{}{path}", s.base);
            wrk(&url, script, 1);
            rows.push((what.to_string(), scheme, wrk(&url, script, seconds)));
        }
    }
    println!("\n## Row 4: HTTP end to end (wrk, 2 threads, 64 connections, {seconds} s each)\n");
    println!("| request | transport | requests/s | p50 ms | p99 ms | of the ceiling |");
    println!("|---|---|---|---|---|---|");
    let ceiling_of = |scheme: &str| {
        rows.iter()
            .find(|(w, s, _)| w.starts_with("ceiling") && *s == scheme)
            .map(|r| r.2.rps)
            .expect("measured")
    };
    for (what, scheme, l) in &rows {
        println!(
            "| {what} | {scheme} | {:.0} | {:.2} | {:.2} | {:.0}% |",
            l.rps,
            l.p50_ms,
            l.p99_ms,
            100.0 * l.rps / ceiling_of(scheme)
        );
    }
    let worst = rows
        .iter()
        .filter(|(w, _, _)| !w.starts_with("ceiling"))
        .map(|(w, s, l)| (100.0 * l.rps / ceiling_of(s), w, s))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("rows");
    println!(
        "\n| goal | figure | met? |\n|---|---|---|\n| at least 50% of the ceiling | lowest: {:.0}% ({}, {}) | {} |",
        worst.0,
        worst.1,
        worst.2,
        if worst.0 >= 50.0 { "yes" } else { "**no**" }
    );
}
