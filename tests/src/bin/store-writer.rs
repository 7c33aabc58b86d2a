//! Test helper: writes to a thinghost store through `Db` and prints `ack N` after each write is
//! acknowledged (durable). The durability test kills it with SIGKILL mid-stream.
//!
//! Usage: store-writer DIR COUNT. Each write creates user wN and adds it to group Writers, in one
//! transaction: after a crash both or neither must be there.

use std::io::Write as _;
use thinghost_core::{Body, Entity, Kind, Model, Policy, PrincipalRef, View};
use thinghost_store::{DB_FILE, Db};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let count: usize = args[2].parse().expect("COUNT is a number");
    let mut db = if dir.join(DB_FILE).exists() {
        Db::open(&dir, Policy::default()).expect("open")
    } else {
        let mut model = Model::with_predefined();
        model.create(Entity::group("Writers")).expect("group");
        Db::create(&dir, model, &[]).expect("create")
    };
    let start = db
        .model()
        .entities(Kind::User)
        .filter(|u| u.name.starts_with('w'))
        .count();
    let out = std::io::stdout();
    for i in start..start + count {
        let name = format!("w{i}");
        db.change(|tx| {
            tx.create(Entity::user(&name))?;
            if let Body::Group(g) = &mut tx.get_mut(Kind::Group, "Writers")?.body {
                g.members.push(PrincipalRef::user(&name));
            }
            Ok(())
        })
        .expect("write");
        let mut o = out.lock();
        writeln!(o, "ack {i}")
            .and_then(|_| o.flush())
            .expect("stdout");
    }
}
