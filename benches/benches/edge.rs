//! Row 9 of BENCHMARKS.md: devices over AlwaysOn.
//!
//! The real `thinghost serve` (release build, TLS) on loopback with the shipped
//! `connection-services`; 1,000 device users, one application key each, one Remote Thing each
//! (`Pump1`..`Pump1000`, ten NUMBER properties), provisioned as seed 000 advises. The devices
//! are `thinghost edge simulate` (the same binary, its own process): first 1,000 idle devices
//! (bound, keep-alives only) for the server's memory per connection; then 1, 100 and 1,000
//! devices pushing 1 or 10 values per push, each keeping pushes waiting for their answer, for
//! the values per second that land in the model (each push one durable change).
//!
//! `cargo bench -p thinghost-benches --bench edge` (`THINGHOST_BENCH_SECONDS`: seconds per
//! measurement, 6 by default; `THINGHOST_BENCH_DEVICES`: the largest fleet, 1,000 by default).

use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thinghost_benches::load::{post, start};

/// A figure of the server's `/proc/PID/status` (`VmRSS` in KiB, `Threads`).
fn status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    status(pid, "VmRSS")
}

fn client(data: &Path) -> reqwest::blocking::Client {
    let pem = std::fs::read(data.join("dev-cert.pem")).expect("the dev certificate");
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

/// How many connections the server holds now.
fn connections(c: &reqwest::blocking::Client, base: &str, key: &str) -> usize {
    post(
        c,
        base,
        key,
        "/Thingworx/Subsystems/WSCommunicationsSubsystem/Services/GetConnections",
        json!({}),
    )["rows"]
        .as_array()
        .map_or(0, Vec::len)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds = thinghost_benches::env("THINGHOST_BENCH_SECONDS", 6);
    let fleet = thinghost_benches::env("THINGHOST_BENCH_DEVICES", 1000) as usize;
    let binary = env!("CARGO_BIN_EXE_thinghost-bench-server");
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (plugins, data, keys) = (
        tmp.path().join("plugins"),
        tmp.path().join("data"),
        tmp.path().join("keys"),
    );
    thinghost_benches::shipped_plugin("connection-services", &plugins);
    std::fs::create_dir_all(&keys).unwrap();
    let serve = || {
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--data")
            .arg(&data)
            .arg("--plugins")
            .arg(&plugins)
            .args(["--no-watch", "--dev", "--listen", "127.0.0.1:0"])
            // Every simulated device connects from 127.0.0.1, where a fleet's come from many
            // addresses: the per-address limit (512) would refuse past it.
            .args(["--max-connections-per-address", "100000"]);
        start(cmd, "https")
    };
    let server = serve();
    let c = client(&data);
    let admin = std::fs::read_to_string(data.join("admin.appkey"))
        .unwrap()
        .trim()
        .to_string();
    let base = server.base.clone();

    eprintln!("provisioning {fleet} devices...");
    let props: String = (0..10)
        .map(|i| format!("add_property_definition(\"ThingTemplates/Pump\", \"p{i}\", \"NUMBER\");"))
        .collect();
    let script = format!(
        r#"
        create_organization("plant");
        create_group("pumps");
        add_organization_member("plant", "plant", "pumps", "Group");
        create_thing_template("Pump", "RemoteThing");
        {props}
        add_instance_visibility_permission("ThingTemplates/Pump", "plant", "Organization");
        for n in 1..={fleet} {{
            let user = `device-${{n}}`;
            create_user(user);
            add_member("pumps", user, "User");
            create_thing(`Pump${{n}}`, "Pump");
            for type in ["PropertyRead", "PropertyWrite", "ServiceInvoke"] {{
                add_run_time_permission(`Things/Pump${{n}}`, user, "User", type);
            }}
            print(create_application_key(`${{user}}-key`, user).keyId);
        }}
        "#
    );
    let v = post(
        &c,
        &base,
        &admin,
        "/Thingworx/Resources/ScriptServices/Services/RunScript",
        json!({"script": script}),
    );
    let output = v["rows"][0]["result"]["output"].as_str().expect("the keys");
    for (i, k) in output.lines().enumerate() {
        std::fs::write(keys.join(format!("{}.key", i + 1)), k.trim()).unwrap();
    }
    // The server that provisioned keeps the memory it used for that (the allocator's pages):
    // the measurements are of a new server on the same data.
    drop(server);
    let server = serve();
    let pid = server.child.id();
    let base = server.base.clone();
    let simulate = |devices: usize, values: usize, in_flight: usize, run_for: Option<u64>| {
        let mut cmd = Command::new(binary);
        cmd.args(["edge", "simulate", "--url", &base, "--ca-cert"])
            .arg(data.join("dev-cert.pem"))
            .arg("--app-key-file")
            .arg(keys.join("%n.key"))
            .args([
                "--thing",
                "Pump%n",
                "--quiet",
                "--devices",
                &devices.to_string(),
            ]);
        for i in 0..values {
            cmd.args(["--property", &format!("p{i}={i}.5")]);
        }
        if in_flight > 0 {
            cmd.args(["--in-flight", &in_flight.to_string()]);
        }
        if let Some(s) = run_for {
            cmd.args(["--for", &format!("{s}s")]);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        cmd
    };

    // Memory: the server idle, then holding the fleet idle.
    std::thread::sleep(Duration::from_secs(1));
    let empty = rss_kib(pid);
    let threads_empty = status(pid, "Threads");
    eprintln!("connecting {fleet} idle devices...");
    let started = Instant::now();
    let mut idle = simulate(fleet, 0, 0, None)
        .spawn()
        .expect("the simulator starts");
    while connections(&c, &base, &admin) < fleet {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{fleet} devices did not connect within 300 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Held idle: past the blocking pool's keep-alive (10 s), the threads the burst of sign-ins
    // started have gone, as they do in a fleet that stays connected.
    std::thread::sleep(Duration::from_secs(12));
    let held = rss_kib(pid);
    let threads_held = status(pid, "Threads");
    let _ = idle.kill();
    let _ = idle.wait();
    while connections(&c, &base, &admin) > 0 {
        std::thread::sleep(Duration::from_millis(200));
    }

    // Pushes.
    let mut rows = Vec::new();
    for devices in [1, 100, fleet] {
        for values in [1, 10] {
            let in_flight = match devices {
                1 => 16,
                d if d <= 100 => 2,
                _ => 1,
            };
            eprintln!("{devices} devices pushing {values} values, {seconds} s...");
            let out = simulate(devices, values, in_flight, Some(seconds))
                .output()
                .expect("the simulator runs");
            let text = String::from_utf8_lossy(&out.stdout);
            let rate: f64 = text
                .lines()
                .last()
                .and_then(|l| l.split(" values accepted (").nth(1))
                .and_then(|r| r.split(' ').next())
                .and_then(|r| r.parse().ok())
                .unwrap_or_else(|| panic!("the simulator's figures: {text}"));
            rows.push((devices, values, in_flight, rate));
            // The server lets the Things go once it sees the connections close.
            while connections(&c, &base, &admin) > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let per = (held.saturating_sub(empty)) as f64 / fleet as f64;
    println!("\n## Row 9: devices over AlwaysOn (TLS, loopback, {seconds} s each)\n");
    println!(
        "Server memory: {:.1} MiB empty ({threads_empty} threads), {:.1} MiB holding {fleet} idle devices for 12 s ({threads_held} threads): {:.1} KiB per connection, {:.1} MiB for {fleet} (goal: 1,000 under 50 MiB: {}); all connected in {connect_secs:.1} s.\n",
        empty as f64 / 1024.0,
        held as f64 / 1024.0,
        per,
        (held.saturating_sub(empty)) as f64 / 1024.0,
        if per * 1000.0 < 50.0 * 1024.0 {
            "yes"
        } else {
            "no"
        }
    );
    println!(
        "| devices | values per push | pushes waiting per device | values/s | pushes/s | goal |"
    );
    println!("|---|---|---|---|---|---|");
    for (devices, values, in_flight, rate) in rows {
        let goal = if devices == fleet && values == 10 {
            format!(
                "at least 20,000 values/s: {}",
                if rate >= 20_000.0 { "yes" } else { "no" }
            )
        } else {
            String::new()
        };
        println!(
            "| {devices} | {values} | {in_flight} | {rate:.0} | {:.0} | {goal} |",
            rate / values as f64
        );
    }
}
