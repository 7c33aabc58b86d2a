//! Helpers for the end-to-end tests: they run the real `thinghost` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The project's shared folder (DOMAIN.md, `data/`, `seeds/`): `THINGHOST_SHARED`, or `shared`
/// beside the workspace. None only when `THINGHOST_NO_SHARED=1` says to skip the checks against
/// it knowingly; a missing folder otherwise fails the test that needs it, saying what to do.
pub fn shared_dir() -> Option<PathBuf> {
    if std::env::var_os("THINGHOST_NO_SHARED").is_some_and(|v| v == "1") {
        eprintln!("THINGHOST_NO_SHARED=1: the checks against the shared folder are skipped");
        return None;
    }
    let dir = std::env::var_os("THINGHOST_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared"));
    assert!(
        dir.join("DOMAIN.md").is_file(),
        "the shared folder {} (DOMAIN.md, data/) is missing: set THINGHOST_SHARED to it, or \
         THINGHOST_NO_SHARED=1 to skip the checks against it knowingly",
        dir.display()
    );
    Some(dir)
}

/// The `thinghost` binary, built (or found up to date) once per test process.
pub fn thinghost_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = cargo_command(cargo)
            .args([
                "build",
                "--quiet",
                "--profile",
                "test",
                "-p",
                "thinghost",
                "--bin",
                "thinghost",
                "--message-format=json",
            ])
            .current_dir(workspace())
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "building thinghost failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"]["name"] == "thinghost")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the thinghost executable")
    })
}

/// A cargo command without the variables cargo sets for the running test (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_NAME`, ...): some build scripts (ring's) rerun when they change, so with them the
/// build here and `cargo test` outside would rebuild each other's crates every time.
fn cargo_command(cargo: String) -> Command {
    let mut cmd = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "OUT_DIR"
            || [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .iter()
            .any(|p| name.starts_with(p))
        {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

/// How to build a Rust extension crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Build {
    /// A WebAssembly component (`wasm32-wasip2`, release).
    Wasm,
    /// A native shared library for this machine (release).
    Native,
}

/// Builds the Rust extension crate in `dir` (relative to the workspace; a workspace of its own)
/// and returns the built file. Built once per test process and kind.
pub fn rust_extension(dir: &str, build: Build) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<((String, Build), PathBuf)>> =
        std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, p)) = built.iter().find(|(k, _)| k.0 == dir && k.1 == build) {
        return p.clone();
    }
    let _one_build_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let file = cargo_build(dir, build, &[]);
    built.push(((dir.to_string(), build), file.clone()));
    file
}

/// Cargo builds of the extension crates share one target directory: one at a time.
static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Builds the Rust extension crate in `dir` with these environment variables set (a crate may
/// read them with `env!` at build time) and copies the built file to `to`.
pub fn rust_extension_with_env(dir: &str, build: Build, env: &[(&str, &str)], to: &Path) {
    let _one_build_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let file = cargo_build(dir, build, env);
    std::fs::copy(&file, to).unwrap();
}

fn cargo_build(dir: &str, build: Build, env: &[(&str, &str)]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"))
        .join("extensions");
    let manifest = workspace().join(dir).join("Cargo.toml");
    let mut cmd = cargo_command(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--locked",
        "--release",
        "--message-format=json",
    ])
    .arg("--manifest-path")
    .arg(&manifest)
    .arg("--target-dir")
    .arg(&target_dir)
    .env_remove("RUSTFLAGS")
    .env_remove("CARGO_BUILD_TARGET")
    .envs(env.iter().copied());
    if build == Build::Wasm {
        cmd.args(["--target", "wasm32-wasip2"]);
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building {dir} ({build:?}) failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["kind"][0] == "cdylib")
        .filter_map(|v| v["filenames"].as_array().cloned())
        .flatten()
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| {
            let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
            matches!(ext, "wasm" | "so" | "dylib" | "dll")
        })
        .unwrap_or_else(|| panic!("cargo names the library built from {dir}"))
}

/// Copies the files of `from` (not its subfolders) into `to`, which is created.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Polls `f` until it answers Some, for at most 20 s.
pub fn within_20s<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{what} did not happen within 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `thinghost` with these arguments.
pub fn thinghost(args: &[&str]) -> Output {
    Command::new(thinghost_bin())
        .args(args)
        .env_remove("THINGHOST_DATA")
        .output()
        .expect("thinghost runs")
}

/// A `thinghost` command running as a process (a simulated device, a remote-access client):
/// its output lines (standard output and error) as they come. Killed when dropped.
pub struct Running {
    pub child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Running {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(thinghost_bin())
            .args(args)
            .env_remove("THINGHOST_DATA")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("thinghost starts");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Running { child, lines }
    }

    /// Waits for a line containing `text`.
    pub fn wait_for(&self, text: &str) -> String {
        within_20s(&format!("the process says {text:?}"), || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(text))
                .cloned()
        })
    }

    /// Everything it said so far.
    pub fn said(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits for it to exit (at most 20 s): its exit status.
    pub fn exited(&mut self) -> std::process::ExitStatus {
        within_20s("the process exits", || self.child.try_wait().unwrap())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `thinghost model --data DIR import FILE`, which must succeed.
pub fn import(dir: &Path, file: &Path) {
    let o = thinghost(&[
        "model",
        "--data",
        dir.to_str().unwrap(),
        "import",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
}

/// Standard output and error of a run, as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// How the test client connects.
#[derive(Default)]
pub struct Setup {
    /// The CA certificate to trust (default: the data directory's --dev certificate).
    pub ca: Option<PathBuf>,
    /// A client certificate and key (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Where the server's standard error (its log) goes.
    pub log: Option<PathBuf>,
}

/// A test certificate from tests/fixtures/tls.
pub fn tls_fixture(name: &str) -> PathBuf {
    workspace().join("tests/fixtures/tls").join(name)
}

/// A running `thinghost serve`, stopped when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub url: String,
    pub dir: PathBuf,
    pub client: reqwest::blocking::Client,
}

impl Server {
    /// Starts `thinghost serve --data DIR --listen 127.0.0.1:0` with the extra arguments and waits
    /// until `/health` answers. The client trusts the `--dev` certificate.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Server::start_with(dir, extra, &Setup::default())
    }

    /// Like `start`, with a client set up as `setup` says.
    pub fn start_with(dir: &Path, extra: &[&str], setup: &Setup) -> Server {
        use std::io::{BufRead, BufReader};
        let stderr = match &setup.log {
            Some(path) => std::process::Stdio::from(std::fs::File::create(path).unwrap()),
            None => std::process::Stdio::null(),
        };
        let mut child = Command::new(thinghost_bin())
            .args([
                "serve",
                "--data",
                dir.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("thinghost serve starts");
        let mut url = None;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.split(" listening on ").nth(1) {
                url = Some(rest.trim().to_string());
                break;
            }
        }
        let url = url.expect("the server prints its address");
        let mut builder =
            reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(10));
        if url.starts_with("https") {
            let ca = setup.ca.clone().unwrap_or_else(|| dir.join("dev-cert.pem"));
            let pem = std::fs::read(&ca).expect("a CA certificate to trust");
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        if let Some((cert, key)) = &setup.identity {
            let mut pem = std::fs::read(cert).unwrap();
            pem.extend(std::fs::read(key).unwrap());
            builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        let client = builder.build().unwrap();
        let server = Server {
            child,
            url,
            dir: dir.to_path_buf(),
            client,
        };
        for _ in 0..100 {
            if server
                .client
                .get(server.at("/health"))
                .send()
                .is_ok_and(|r| r.status() == 200)
            {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the server did not become healthy");
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("the server's URL ends with its port")
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url.replace("127.0.0.1", "localhost"))
    }

    /// The Administrator's key written by init.
    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.appkey"))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs JSON with an app key; the status and the body (JSON, or a string if it is not JSON).
pub fn post(
    s: &Server,
    key: &str,
    path: &str,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let r = s
        .client
        .post(s.at(path))
        .header("appKey", key)
        .json(&body)
        .send()
        .unwrap();
    let st = r.status();
    let text = r.text().unwrap();
    (
        st,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Like `post`, asserting 200; the body.
pub fn ok(s: &Server, key: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let (st, v) = post(s, key, path, body.clone());
    assert_eq!(st, 200, "{path} {body}: {v}");
    v
}

/// A TLS connection to the server's port that trusts its `--dev` certificate, for WebSocket
/// clients.
pub fn tls_stream(
    s: &Server,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(s.dir.join("dev-cert.pem")).unwrap()
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = std::net::TcpStream::connect(format!("127.0.0.1:{}", s.port())).unwrap();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        rustls_pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// The audit records with `key` (the server's store read directly), oldest first: each as
/// `{user, category, args, source}`.
pub fn audited(s: &Server, key: &str) -> Vec<serde_json::Value> {
    use thinghost_store::Store;
    let mut store =
        thinghost_store::SqliteStore::open(&s.dir.join(thinghost_store::DB_FILE)).unwrap();
    store
        .audit_records(10_000)
        .unwrap()
        .into_iter()
        .rev()
        .filter(|r| r.message_key == key)
        .map(|r| {
            serde_json::json!({"user": r.user, "category": r.category, "args": r.args, "source": r.source})
        })
        .collect()
}
