//! Load from outside: a server process on loopback and wrk against it (rows 4 and 5 of
//! BENCHMARKS.md).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A server process, stopped when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd`, which prints a line with its address ("... listening on [scheme://]ADDR").
pub fn start(mut cmd: Command, scheme: &str) -> Server {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("the server starts");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server says where it listens")
            .expect("text");
        if let Some((_, a)) = line.split_once("listening on ") {
            break a
                .rsplit("://")
                .next()
                .expect("an address")
                .trim()
                .to_string();
        }
    };
    // Keep draining its output so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    // Over TLS, the name the development certificate carries (an IP address is no SNI name).
    let addr = match scheme {
        "https" => addr.replace("127.0.0.1", "localhost"),
        _ => addr,
    };
    Server {
        child,
        base: format!("{scheme}://{addr}"),
    }
}

/// One wrk measurement.
#[derive(Clone, Copy)]
pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub fn millis(text: &str) -> f64 {
    let (num, unit) = text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len()));
    let v: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        _ => f64::NAN,
    }
}

pub fn wrk(url: &str, script: &Path, seconds: u64) -> Load {
    let out = Command::new("wrk")
        .args(["-t2", "-c64", "--latency"])
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "{url}: some requests failed:\n{text}"
    );
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("wrk printed no {prefix:?}:\n{text}"))
    };
    Load {
        rps: field("Requests/sec:").parse().expect("a rate"),
        p50_ms: millis(&field("50%")),
        p99_ms: millis(&field("99%")),
    }
}

/// A wrk script: the method, the headers, the body.
pub fn script(dir: &Path, name: &str, key: &str, post: Option<&str>) -> PathBuf {
    let mut lua = format!(
        "wrk.headers[\"appKey\"] = \"{key}\"\nwrk.headers[\"Accept\"] = \"application/json\"\n"
    );
    if let Some(body) = post {
        lua += &format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{body}'\n"
        );
    }
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, lua).expect("written");
    path
}

/// POSTs `body` to `path` of the server at `base` with the key: the JSON answer, which must be
/// a success.
pub fn post(
    c: &reqwest::blocking::Client,
    base: &str,
    key: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let r = c
        .post(format!("{base}{path}"))
        .header("appKey", key)
        .json(&body)
        .send()
        .expect("the server answers");
    let status = r.status();
    let v: serde_json::Value = r.json().unwrap_or(serde_json::Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}
