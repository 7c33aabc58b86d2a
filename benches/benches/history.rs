//! Row 11 of BENCHMARKS.md: data storage Things (DOMAIN section 11).
//!
//! - **Logged values appended per second** with `THINGHOST_BENCH_WRITERS` (1, 8, 64) writers
//!   for `THINGHOST_BENCH_SECONDS` (5) seconds each: every value durable before its writer goes
//!   on, through the server's history writer (`HistoryLog::append`, group commit), one value
//!   per append and ten per append (a device's push); and through the whole property-write path
//!   (`entities::write_property`: the model's lock, its commit, the history) as a figure beside.
//! - **Stream entries per second**: 8 writers, `AddStreamEntry` through the host path.
//! - **QueryPropertyHistory of the newest 1,000** over `THINGHOST_BENCH_HISTORY_VALUES`
//!   (10,000,000) values of 1,000 Things (10,000 each), through the whole host path but the
//!   network, as an administrator: median and p99 over 1,000 calls.
//! - **Data-table lookup by key** over `THINGHOST_BENCH_ROWS` (1,000,000) rows:
//!   `GetDataTableEntryByKey` through the host path, median and p99 over 1,000 calls.
//! - **The ceiling**: SQLite's own bulk insert of the same rows on the same machine (one
//!   transaction of 100,000 prepared inserts, WAL, `synchronous=FULL`).
//!
//! `cargo bench -p thinghost-benches --bench history`.

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thinghost::state::app::App;
use thinghost::state::audit::AuditLog;
use thinghost_benches::dispatch::{call, caller};
use thinghost_benches::env;
use thinghost_core::BaseType;
use thinghost_store::DB_FILE;
use thinghost_store::history::{History, Logged, Put, SqliteHistory, StreamEntry, TableRow};

/// A server's state on a new data directory, without extensions or network.
fn app(data: &std::path::Path) -> Arc<App> {
    thinghost::cli::init::initialize(data, 1).expect("a new data directory");
    let db = thinghost_store::Db::open(data, thinghost_core::Policy::default()).expect("opens");
    let audit_log = AuditLog::open(&data.join(DB_FILE), Default::default()).expect("opens");
    Arc::new(App::standalone(db, audit_log, data))
}

fn post(
    app: &Arc<App>,
    admin: &thinghost::state::auth::Caller,
    path: &str,
    body: serde_json::Value,
) {
    call(app, admin, path, body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{path}: {}", e.message));
}

/// Operations per second with `writers` threads for `secs`, each calling `f(writer, i)`, which
/// says how many it did.
fn rate(writers: u64, secs: u64, f: Arc<dyn Fn(u64, u64) -> u64 + Send + Sync>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (stop, count, f) = (stop.clone(), count.clone(), f.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    count.fetch_add(f(w, i), Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn logged(thing: u64, prop: u64, time: i64, value: f64) -> Logged {
    Logged {
        stream: "VS".into(),
        thing: format!("T{thing}"),
        property: format!("p{prop}"),
        base_type: BaseType::Number,
        time,
        value: json!(value),
        quality: None,
    }
}

/// The ceiling: SQLite's own bulk insert of sample rows (one transaction, prepared).
fn sqlite_ceiling(n: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("ceiling.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE samples (series INTEGER NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,
             prop INTEGER NOT NULL, value, quality TEXT, PRIMARY KEY (series, ts, seq)) WITHOUT ROWID;",
    )
    .unwrap();
    let started = Instant::now();
    let mut conn = conn;
    let tx = conn.transaction().unwrap();
    {
        let mut st = tx
            .prepare(
                "INSERT INTO samples (series, ts, seq, prop, value) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .unwrap();
        for i in 0..n {
            st.execute(rusqlite::params![
                (i % 1000) as i64,
                i as i64,
                i as i64,
                1,
                i as f64
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let secs = env("THINGHOST_BENCH_SECONDS", 5);
    let writer_counts: Vec<u64> = std::env::var("THINGHOST_BENCH_WRITERS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 64]);

    println!(
        "## Row 11a: logged values appended per second (each durable before its writer goes on)\n"
    );
    println!(
        "| writers | 1 value per append | 10 values per append | property writes (whole path) | SQLite's bulk insert (ceiling) |"
    );
    println!("|---|---|---|---|---|");
    for &writers in &writer_counts {
        let dir = tempfile::tempdir().unwrap();
        let state = app(dir.path());
        let h = state.clone();
        let one = rate(
            writers,
            secs,
            Arc::new(move |w, i| {
                h.history
                    .append(vec![logged(w, 0, i as i64, i as f64)])
                    .wait()
                    .expect("written");
                1
            }),
        );
        let h = state.clone();
        let ten = rate(
            writers,
            secs,
            Arc::new(move |w, i| {
                h.history
                    .append((0..10).map(|p| logged(w, p, i as i64, i as f64)).collect())
                    .wait()
                    .expect("written");
                10
            }),
        );
        // The whole path: a Thing per writer with a logged property and a value stream.
        let dir2 = tempfile::tempdir().unwrap();
        let state2 = app(dir2.path());
        let admin = caller(&state2, thinghost_core::predefined::ADMINISTRATOR);
        let es = "/Thingworx/Resources/EntityServices/Services";
        post(
            &state2,
            &admin,
            &format!("{es}/CreateThing"),
            json!({"name": "VS", "thingTemplateName": "ValueStream"}),
        );
        for w in 0..writers {
            post(
                &state2,
                &admin,
                &format!("{es}/CreateThing"),
                json!({"name": format!("T{w}"), "thingTemplateName": "GenericThing"}),
            );
            post(
                &state2,
                &admin,
                &format!("/Thingworx/Things/T{w}/Services/AddPropertyDefinition"),
                json!({"name": "p", "type": "NUMBER", "logged": true}),
            );
            post(
                &state2,
                &admin,
                &format!("/Thingworx/Things/T{w}/Services/SetValueStream"),
                json!({"name": "VS"}),
            );
        }
        let (s2, a2) = (state2.clone(), admin.clone());
        let whole = rate(
            writers,
            secs,
            Arc::new(move |w, i| {
                thinghost::api::entities::write_property(
                    &s2,
                    &a2,
                    thinghost_core::Kind::Thing,
                    &format!("T{w}"),
                    "p",
                    Some(&json!(i as f64)),
                )
                .expect("written");
                1
            }),
        );
        let ceiling = sqlite_ceiling(100_000);
        println!(
            "| {writers} | {one:.0} values/s | {ten:.0} values/s | {whole:.0} writes/s | {ceiling:.0} rows/s |"
        );
    }

    println!(
        "\n## Row 11b: stream entries per second (8 writers, AddStreamEntry through the host path)\n"
    );
    {
        let dir = tempfile::tempdir().unwrap();
        let state = app(dir.path());
        let admin = caller(&state, thinghost_core::predefined::ADMINISTRATOR);
        let es = "/Thingworx/Resources/EntityServices/Services";
        post(
            &state,
            &admin,
            &format!("{es}/CreateDataShape"),
            json!({"name": "Reading", "fields": [{"name": "value", "baseType": "NUMBER"}, {"name": "label", "baseType": "STRING"}]}),
        );
        post(
            &state,
            &admin,
            &format!("{es}/CreateThing"),
            json!({"name": "Log", "thingTemplateName": "Stream"}),
        );
        post(
            &state,
            &admin,
            "/Thingworx/Things/Log/Services/SetDataShape",
            json!({"name": "Reading"}),
        );
        let (s, a) = (state.clone(), admin.clone());
        let entries = rate(
            8,
            secs,
            Arc::new(move |w, i| {
                post(
                    &s,
                    &a,
                    "/Thingworx/Things/Log/Services/AddStreamEntry",
                    json!({"source": format!("w{w}"), "values": {"value": i, "label": "x"}}),
                );
                1
            }),
        );
        println!("| writers | entries/s |\n|---|---|\n| 8 | {entries:.0} |");
    }

    let total = env("THINGHOST_BENCH_HISTORY_VALUES", 10_000_000);
    let things = 1000u64;
    println!(
        "\n## Row 11c: QueryPropertyHistory, the newest 1,000 of {total} values of {things} Things\n"
    );
    {
        let dir = tempfile::tempdir().unwrap();
        let state = app(dir.path());
        let admin = caller(&state, thinghost_core::predefined::ADMINISTRATOR);
        let es = "/Thingworx/Resources/EntityServices/Services";
        post(
            &state,
            &admin,
            &format!("{es}/CreateThing"),
            json!({"name": "VS", "thingTemplateName": "ValueStream"}),
        );
        post(
            &state,
            &admin,
            &format!("{es}/CreateThingTemplate"),
            json!({"name": "Meter", "thingTemplateName": "GenericThing"}),
        );
        post(
            &state,
            &admin,
            "/Thingworx/ThingTemplates/Meter/Services/AddPropertyDefinition",
            json!({"name": "p0", "type": "NUMBER", "logged": true}),
        );
        for t in 0..things {
            post(
                &state,
                &admin,
                &format!("{es}/CreateThing"),
                json!({"name": format!("T{t}"), "thingTemplateName": "Meter"}),
            );
            post(
                &state,
                &admin,
                &format!("/Thingworx/Things/T{t}/Services/SetValueStream"),
                json!({"name": "VS"}),
            );
        }
        let filled = Instant::now();
        {
            let mut h =
                SqliteHistory::open(&dir.path().join(thinghost_store::history::FILE)).unwrap();
            let batch = 100_000u64;
            let mut i = 0;
            while i < total {
                let n = batch.min(total - i);
                let values: Vec<Logged> = (i..i + n)
                    .map(|k| logged(k % things, 0, (k / things) as i64, k as f64))
                    .collect();
                h.append(&values).unwrap();
                i += n;
            }
        }
        let fill = filled.elapsed().as_secs_f64();
        println!(
            "(filled in {fill:.1} s: {:.0} values/s in batches of 100,000)\n",
            total as f64 / fill
        );
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..1000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let t = rng % things;
            let started = Instant::now();
            let reply = call(
                &state,
                &admin,
                &format!("/Thingworx/Things/T{t}/Services/QueryPropertyHistory"),
                br#"{"maxItems": 1000}"#,
            )
            .expect("answered");
            times.push(started.elapsed());
            if let thinghost::api::Reply::Table(table) = reply {
                rows += table.rows.len();
            }
        }
        times.sort();
        println!(
            "| calls | rows per answer | p50 | p99 |\n|---|---|---|---|\n| 1,000 | {} | {:.2} ms | {:.2} ms |",
            rows / 1000,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3
        );
    }

    let total_rows = env("THINGHOST_BENCH_ROWS", 1_000_000);
    println!("\n## Row 11d: data-table lookup by key over {total_rows} rows\n");
    {
        let dir = tempfile::tempdir().unwrap();
        let state = app(dir.path());
        let admin = caller(&state, thinghost_core::predefined::ADMINISTRATOR);
        let es = "/Thingworx/Resources/EntityServices/Services";
        post(
            &state,
            &admin,
            &format!("{es}/CreateDataShape"),
            json!({"name": "Part", "fields": [{"name": "sku", "baseType": "STRING", "isPrimaryKey": true}, {"name": "qty", "baseType": "INTEGER"}]}),
        );
        post(
            &state,
            &admin,
            &format!("{es}/CreateThing"),
            json!({"name": "Parts", "thingTemplateName": "DataTable"}),
        );
        post(
            &state,
            &admin,
            "/Thingworx/Things/Parts/Services/SetDataShape",
            json!({"name": "Part"}),
        );
        let filled = Instant::now();
        {
            let mut h =
                SqliteHistory::open(&dir.path().join(thinghost_store::history::FILE)).unwrap();
            let batch = 100_000u64;
            let mut i = 0;
            while i < total_rows {
                let n = batch.min(total_rows - i);
                let rows: Vec<TableRow> = (i..i + n)
                    .map(|k| {
                        let mut values = serde_json::Map::new();
                        values.insert("sku".into(), json!(format!("S{k}")));
                        values.insert("qty".into(), json!(k % 100));
                        TableRow {
                            key: json!([format!("S{k}")]).to_string(),
                            entry: StreamEntry {
                                source: "bench".into(),
                                source_type: "User".into(),
                                values,
                                ..Default::default()
                            },
                        }
                    })
                    .collect();
                h.put_rows("Parts", &rows, Put::Upsert).unwrap();
                i += n;
            }
        }
        println!("(filled in {:.1} s)\n", filled.elapsed().as_secs_f64());
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut times = Vec::new();
        for _ in 0..1000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let k = rng % total_rows;
            let body = json!({"key": format!("S{k}")}).to_string();
            let started = Instant::now();
            let reply = call(
                &state,
                &admin,
                "/Thingworx/Things/Parts/Services/GetDataTableEntryByKey",
                body.as_bytes(),
            )
            .expect("answered");
            times.push(started.elapsed());
            match reply {
                thinghost::api::Reply::Table(t) => assert_eq!(t.rows.len(), 1),
                _ => panic!("a table"),
            }
        }
        times.sort();
        println!(
            "| calls | p50 | p99 |\n|---|---|---|\n| 1,000 | {:.3} ms | {:.3} ms |",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3
        );
    }
}
