//! An acknowledged write survives `kill -9`: a child process writes through the store and prints
//! an acknowledgement after each commit; it is killed mid-stream, and every acknowledged write
//! must be found afterwards, whole.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use thinghost_core::{Body, Kind, Policy, PrincipalRef, View};
use thinghost_store::Db;

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<usize> = Vec::new();
    for kill_after in [40, 120, 7] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_store-writer"))
            .arg(dir.path())
            .arg("100000")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        for line in lines.by_ref() {
            let n: usize = line.unwrap().strip_prefix("ack ").unwrap().parse().unwrap();
            acked.push(n);
            seen += 1;
            if seen == kill_after {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
        // Acknowledgements already in the pipe count too.
        for line in lines {
            acked.push(line.unwrap().strip_prefix("ack ").unwrap().parse().unwrap());
        }
        child.wait().unwrap();

        let db = Db::open(dir.path(), Policy::default()).expect("the store opens after kill -9");
        let m = db.model();
        let Body::Group(writers) = &m.get(Kind::Group, "Writers").unwrap().body else {
            panic!()
        };
        for n in &acked {
            let name = format!("w{n}");
            assert!(
                m.get(Kind::User, &name).is_some(),
                "acknowledged write {n} lost"
            );
            assert!(
                writers.members.contains(&PrincipalRef::user(&name)),
                "acknowledged write {n} half there"
            );
        }
        // Whatever else is there is whole: every writer user is in the group and vice versa.
        let users = m
            .entities(Kind::User)
            .filter(|u| u.name.starts_with('w'))
            .count();
        assert_eq!(users, writers.members.len(), "a write landed half");
    }
    assert!(acked.len() >= 167);
}
