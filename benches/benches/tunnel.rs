//! Row 10 of BENCHMARKS.md: remote-access tunnels.
//!
//! The real `thinghost serve` (release build) on loopback with the shipped `connection-services`
//! and `remote-access`, over TLS and with `--insecure-http`; `Device1` (a
//! `RemoteThingWithTunnels`) allowed to reach an echo server on loopback; the device is
//! `thinghost edge simulate --tunnels`, the client `thinghost rac connect` (the same binary,
//! processes of their own). Each measurement sends a pseudo-random stream through the echo and
//! reads it back at once (both directions loaded), and times 1-byte round trips; the anchor is
//! the same measurement on a direct loopback TCP connection to the echo server, in the same run.
//!
//! `cargo bench -p thinghost-benches --bench tunnel` (`THINGHOST_BENCH_MIB`: MiB each way per
//! tunnel, 64 by default).

use serde_json::{Value as Json, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thinghost_benches::load::{post, start};

fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let _ = conn.set_nodelay(true);
            std::thread::spawn(move || {
                let mut r = conn.try_clone().unwrap();
                let mut w = conn;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if w.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// Sends `bytes` through `port` and reads them back at once: MiB/s (of one direction).
fn throughput(port: u16, bytes: usize) -> f64 {
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = conn.set_nodelay(true);
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len());
            w.write_all(&buf[..n]).unwrap();
            left -= n;
        }
    });
    let mut r = conn;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < bytes {
        let n = r.read(&mut buf).expect("the echo comes back");
        assert!(n > 0, "closed after {got} bytes");
        got += n;
    }
    let secs = started.elapsed().as_secs_f64();
    writer.join().unwrap();
    bytes as f64 / (1 << 20) as f64 / secs
}

/// 1-byte round trips through `port`: (median, p99) in microseconds.
fn round_trips(port: u16, n: usize) -> (f64, f64) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = conn.set_nodelay(true);
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut times = Vec::with_capacity(n);
    let mut b = [0u8; 1];
    for i in 0..n + 50 {
        let t = Instant::now();
        conn.write_all(&[i as u8]).unwrap();
        conn.read_exact(&mut b).unwrap();
        if i >= 50 {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    (times[n / 2], times[n * 99 / 100])
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that says `text` on its standard output before it is used.
fn spawn_until(mut cmd: Command, text: &str) -> Child {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("it starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("it ended before saying {text:?}"))
            .unwrap();
        if line.contains(text) {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

struct Figures {
    mib_s: f64,
    rtt_p50: f64,
    rtt_p99: f64,
    ten_mib_s: f64,
}

fn measure(binary: &str, tls: bool, echo: u16, mib: usize) -> Figures {
    let tmp = tempfile::tempdir().unwrap();
    let (plugins, data) = (tmp.path().join("plugins"), tmp.path().join("data"));
    for ext in ["connection-services", "remote-access"] {
        thinghost_benches::shipped_plugin(ext, &plugins);
    }
    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .arg("--data")
        .arg(&data)
        .arg("--plugins")
        .arg(&plugins)
        .args(["--no-watch", "--listen", "127.0.0.1:0"])
        .args(["--max-sessions-per-user", "100"])
        .arg(if tls { "--dev" } else { "--insecure-http" });
    let server = start(cmd, if tls { "https" } else { "http" });
    let base = server.base.clone();
    let mut client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60));
    if tls {
        let pem = std::fs::read(data.join("dev-cert.pem")).unwrap();
        client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    let c = client.build().unwrap();
    let admin = std::fs::read_to_string(data.join("admin.appkey"))
        .unwrap()
        .trim()
        .to_string();
    let endpoint = format!("127.0.0.1:{echo}");
    post(
        &c,
        &base,
        &admin,
        "/Thingworx/Resources/ScriptServices/Services/RunScript",
        json!({"script": format!(
            "create_thing(\"Device1\", \"RemoteThingWithTunnels\"); set_property(\"Things/Device1\", \"allowedEndpoints\", [\"{endpoint}\"]);"
        )}),
    );
    let key_file = data.join("admin.appkey");
    let ca = data.join("dev-cert.pem");
    let mut sim = Command::new(binary);
    sim.args(["edge", "simulate", "--url", &base, "--app-key-file"])
        .arg(&key_file)
        .args(["--thing", "Device1", "--tunnels", "--quiet"]);
    if tls {
        sim.arg("--ca-cert").arg(&ca);
    }
    let mut device = sim.stdout(Stdio::null()).spawn().unwrap();
    // Bound once isConnected says so.
    let started = Instant::now();
    loop {
        let r = c
            .get(format!(
                "{base}/Thingworx/Things/Device1/Properties/isConnected"
            ))
            .header("appKey", &admin)
            .send()
            .unwrap()
            .json::<Json>()
            .unwrap_or(Json::Null);
        if r["rows"][0]["isConnected"] == json!(true) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the device did not bind"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let tunnel = |port: u16| -> Child {
        let v = post(
            &c,
            &base,
            &admin,
            "/Thingworx/Things/Device1/Services/StartSession",
            json!({"remoteEndpoint": endpoint}),
        );
        let uri = v["rows"][0]["result"]["launchUri"]
            .as_str()
            .expect("a launch URI")
            .to_string();
        let mut rac = Command::new(binary);
        rac.args(["rac", "connect", &uri, "--local-port", &port.to_string()]);
        if tls {
            rac.arg("--ca-cert").arg(&ca);
        } else {
            rac.arg("--insecure-http");
        }
        spawn_until(rac, "listening on")
    };
    let bytes = mib << 20;
    // One tunnel: throughput, then round trips (each local connection its own tunnel).
    let port = free_port();
    let mut one = tunnel(port);
    let mib_s = throughput(port, bytes);
    let (rtt_p50, rtt_p99) = round_trips(port, 2000);
    let _ = one.kill();
    let _ = one.wait();
    // Ten at once.
    let ports: Vec<u16> = (0..10).map(|_| free_port()).collect();
    let mut racs: Vec<Child> = ports.iter().map(|p| tunnel(*p)).collect();
    let started = Instant::now();
    let each = bytes / 10;
    let runs: Vec<_> = ports
        .iter()
        .map(|p| {
            let p = *p;
            std::thread::spawn(move || throughput(p, each))
        })
        .collect();
    for r in runs {
        r.join().unwrap();
    }
    let ten_mib_s = (each * 10) as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();
    for r in &mut racs {
        let _ = r.kill();
        let _ = r.wait();
    }
    let _ = device.kill();
    let _ = device.wait();
    drop(server);
    Figures {
        mib_s,
        rtt_p50,
        rtt_p99,
        ten_mib_s,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mib = thinghost_benches::env("THINGHOST_BENCH_MIB", 64) as usize;
    let binary = env!("CARGO_BIN_EXE_thinghost-bench-server");
    let echo = echo_server();
    eprintln!("direct loopback...");
    let direct = throughput(echo, mib << 20);
    let direct_ten = {
        let started = Instant::now();
        let each = (mib << 20) / 10;
        let runs: Vec<_> = (0..10)
            .map(|_| std::thread::spawn(move || throughput(echo, each)))
            .collect();
        for r in runs {
            r.join().unwrap();
        }
        (each * 10) as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64()
    };
    let (d50, d99) = round_trips(echo, 2000);
    let mut rows = Vec::new();
    for tls in [true, false] {
        eprintln!(
            "tunnels {}...",
            if tls { "over TLS" } else { "without TLS" }
        );
        rows.push((tls, measure(binary, tls, echo, mib)));
    }
    println!("\n## Row 10: remote-access tunnels (loopback, {mib} MiB each way per measurement)\n");
    println!(
        "| path | 1 connection MiB/s | share of direct | 10 at once MiB/s | share of direct | round trip p50 µs | added p50 µs | p99 µs | goals |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| direct loopback TCP (anchor) | {direct:.0} | 100% | {direct_ten:.0} | 100% | {d50:.0} | 0 | {d99:.0} | |"
    );
    for (tls, f) in rows {
        let share = f.mib_s / direct * 100.0;
        let added = f.rtt_p50 - d50;
        println!(
            "| tunnel, {} | {:.0} | {share:.1}% | {:.0} | {:.1}% | {:.0} | {added:.0} | {:.0} | at least 25%: {}; under 1 ms added: {} |",
            if tls { "TLS" } else { "--insecure-http" },
            f.mib_s,
            f.ten_mib_s,
            f.ten_mib_s / direct_ten * 100.0,
            f.rtt_p50,
            f.rtt_p99,
            if share >= 25.0 { "yes" } else { "no" },
            if added < 1000.0 { "yes" } else { "no" },
        );
    }
}
