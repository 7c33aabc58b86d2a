//! Row 5 of BENCHMARKS.md: hot reload.
//!
//! The real `thinghost serve` (release build) on loopback with a watched plugin directory at the
//! default quiet period (200 ms), holding the `versioned` extension as Rhai and as a WebAssembly
//! component (`tests/fixtures/versioned-rust`, built twice with different answers).
//!
//! - **Reload latency**: from the moment the test starts writing a new version into the folder to
//!   the first response that comes from it (a client polls the service without pause), for each
//!   of `THINGHOST_BENCH_RELOADS` (10) replacements per runtime. The quiet period is included.
//! - **Calls during reloads**: wrk (2 threads, 64 connections) calls the service for
//!   `THINGHOST_BENCH_SECONDS` (8) seconds without any reload, then as long again while the folder
//!   gets a new version every second; the p99 of both, in the same run.
//!
//! `cargo bench -p thinghost-benches --bench reload`. The wrk half needs wrk
//! (`apt-get install wrk`); without it, that half is skipped with that message.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use thinghost_benches::dispatch::{build_cdylib_with_env, root};
use thinghost_benches::load::{Load, script, start, wrk};

#[derive(Clone, Copy, PartialEq)]
enum Runtime {
    Rhai,
    Wasm,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Rhai => "rhai",
            Runtime::Wasm => "wasm",
        }
    }
    fn thing(self) -> &'static str {
        match self {
            Runtime::Rhai => "VersionedRhai",
            Runtime::Wasm => "VersionedWasm",
        }
    }
}

/// The two Wasm builds: `answer A` and `answer B`.
struct Builds {
    a: PathBuf,
    b: PathBuf,
}

/// The answer of round `n`.
fn expected(runtime: Runtime, n: u32) -> String {
    match runtime {
        Runtime::Rhai => format!("answer {n}"),
        Runtime::Wasm if n.is_multiple_of(2) => "answer A".into(),
        Runtime::Wasm => "answer B".into(),
    }
}

/// Writes round `n` of `runtime`'s package into `plugins`: the code, then the manifest.
fn install(plugins: &Path, builds: &Builds, runtime: Runtime, n: u32) {
    let dir = plugins.join(format!("versioned-{}", runtime.name()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let entry = match runtime {
        Runtime::Rhai => {
            std::fs::write(
                dir.join("main.rhai"),
                format!("fn answer() {{ \"{}\" }}\n", expected(runtime, n)),
            )
            .expect("written");
            "main.rhai"
        }
        Runtime::Wasm => {
            let from = if n.is_multiple_of(2) {
                &builds.a
            } else {
                &builds.b
            };
            let part = plugins.join(".versioned.wasm.part");
            std::fs::copy(from, &part).expect("copied");
            std::fs::rename(&part, dir.join("versioned.wasm")).expect("renamed");
            "versioned.wasm"
        }
    };
    std::fs::write(
        dir.join("plugin.toml"),
        format!(
            "[extension]\nname = \"versioned-{name}\"\nversion = \"1.0.{n}\"\nhost = \">=0.1\"\nruntime = \"{name}\"\nentry = \"{entry}\"\n\n\
             [[things]]\nname = \"{thing}\"\ntemplate = \"GenericThing\"\n\n\
             [[things.services]]\nname = \"Answer\"\nhandler = \"answer\"\nresult = \"STRING\"\n",
            name = runtime.name(),
            thing = runtime.thing()
        ),
    )
    .expect("written");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: u32 = std::env::var("THINGHOST_BENCH_RELOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seconds: u64 = std::env::var("THINGHOST_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    eprintln!("building the versioned extension (twice) and thinghost...");
    let crate_dir = root().join("tests/fixtures/versioned-rust");
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let mut built = Vec::new();
    for answer in ["answer A", "answer B"] {
        let file = build_cdylib_with_env(
            &crate_dir,
            Some("wasm32-wasip2"),
            &[("VERSIONED_ANSWER", answer)],
        );
        let keep = tmp
            .path()
            .join(format!("{}.wasm", answer.replace(' ', "-")));
        std::fs::copy(&file, &keep).expect("copied");
        built.push(keep);
    }
    let builds = Builds {
        b: built.pop().expect("built"),
        a: built.pop().expect("built"),
    };
    let (plugins, data) = (tmp.path().join("plugins"), tmp.path().join("data"));
    for runtime in [Runtime::Rhai, Runtime::Wasm] {
        install(&plugins, &builds, runtime, 0);
    }
    thinghost::cli::init::initialize(&data, 1).expect("a new data directory");
    let key = std::fs::read_to_string(data.join(thinghost::cli::init::ADMIN_KEY_FILE))
        .expect("the Administrator's key")
        .trim()
        .to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thinghost-bench-server"));
    cmd.arg("serve")
        .arg("--data")
        .arg(&data)
        .arg("--plugins")
        .arg(&plugins)
        .args(["--listen", "127.0.0.1:0", "--insecure-http"]);
    let server = start(cmd, "http");
    let client = reqwest::blocking::Client::new();
    let answer = |runtime: Runtime| -> String {
        let r = client
            .post(format!(
                "{}/Thingworx/Things/{}/Services/Answer",
                server.base,
                runtime.thing()
            ))
            .header("appKey", &key)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .expect("the server answers");
        assert!(r.status().is_success(), "a call failed: {}", r.status());
        let v: serde_json::Value = r.json().expect("JSON");
        v["rows"][0]["result"]
            .as_str()
            .expect("a string")
            .to_string()
    };

    // Reload latency.
    let mut latency: Vec<(Runtime, Vec<f64>)> = Vec::new();
    for runtime in [Runtime::Rhai, Runtime::Wasm] {
        assert_eq!(answer(runtime), expected(runtime, 0));
        let mut ms = Vec::new();
        for n in 1..=rounds {
            eprintln!("{} reload {n}/{rounds}...", runtime.name());
            let t0 = Instant::now();
            install(&plugins, &builds, runtime, n);
            let want = expected(runtime, n);
            loop {
                if answer(runtime) == want {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "version {n} never answered"
                );
            }
            ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            // The watcher's quiet period starts again with the next write.
            std::thread::sleep(Duration::from_millis(300));
        }
        ms.sort_by(f64::total_cmp);
        latency.push((runtime, ms));
    }
    println!(
        "\n## Row 5: hot reload\n\n### Reload latency (file change to the first answer of the new version; quiet period 200 ms; {rounds} reloads each)\n"
    );
    println!("| runtime | median ms | max ms | under 500 ms? |");
    println!("|---|---|---|---|");
    for (runtime, ms) in &latency {
        let max = *ms.last().expect("rounds");
        println!(
            "| {} | {:.0} | {:.0} | {} |",
            runtime.name(),
            percentile(ms, 0.5),
            max,
            if max < 500.0 { "yes" } else { "**no**" }
        );
    }

    // Calls during reloads.
    if Command::new("wrk").arg("--version").output().is_err() {
        println!(
            "\n### Calls during reloads\n\nskipped: wrk is not installed (`apt-get install wrk`)"
        );
        return;
    }
    let post = script(tmp.path(), "answer", &key, Some("{}"));
    let mut rows: Vec<(Runtime, Load, Load, u32)> = Vec::new();
    let mut n = rounds;
    for runtime in [Runtime::Rhai, Runtime::Wasm] {
        let url = format!(
            "{}/Thingworx/Things/{}/Services/Answer",
            server.base,
            runtime.thing()
        );
        wrk(&url, &post, 1);
        eprintln!(
            "{}: {seconds} s of calls without reloads...",
            runtime.name()
        );
        let steady = wrk(&url, &post, seconds);
        eprintln!(
            "{}: {seconds} s of calls with a new version every second...",
            runtime.name()
        );
        let start_n = n;
        let stop = std::sync::atomic::AtomicBool::new(false);
        let during = std::thread::scope(|scope| {
            let (plugins, builds, stop) = (&plugins, &builds, &stop);
            let reloader = scope.spawn(move || {
                let mut k = start_n;
                std::thread::sleep(Duration::from_millis(500));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    k += 1;
                    install(plugins, builds, runtime, k);
                    std::thread::sleep(Duration::from_secs(1));
                }
                k
            });
            let load = wrk(&url, &post, seconds);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            n = reloader.join().expect("the reloader");
            load
        });
        // The last version written is the one that answers.
        let want = expected(runtime, n);
        let t0 = Instant::now();
        while answer(runtime) != want {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the last version never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        rows.push((runtime, steady, during, n - start_n));
    }
    println!(
        "\n### Calls during reloads (wrk, 2 threads, 64 connections, {seconds} s each; every call 2xx)\n"
    );
    println!(
        "| runtime | reloads | steady req/s | steady p99 ms | during req/s | during p99 ms | p99 ratio | within 2x? |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (runtime, steady, during, reloads) in &rows {
        let ratio = during.p99_ms / steady.p99_ms;
        println!(
            "| {} | {reloads} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2}x | {} |",
            runtime.name(),
            steady.rps,
            steady.p99_ms,
            during.rps,
            during.p99_ms,
            ratio,
            if ratio <= 2.0 { "yes" } else { "**no**" }
        );
    }
}
