//! The pages made from the service table: `docs/services.md` (every host service, every column)
//! and the README's table of host services (between two markers). Tests fail when either
//! drifts; `thinghost api services` prints the first, `thinghost api readme-table` the second.

use super::table::{Audit, On, Param, Returns, Rule, SERVICES, Service};
use thinghost_core::BaseType;

fn param(p: &Param) -> String {
    let t = if p.base_type == super::table::ANY {
        "any".to_string()
    } else {
        p.base_type.to_string()
    };
    let mut s = format!("`{}` {t}", p.name);
    if p.required {
        s.push_str(", required");
    }
    if let Some(d) = p.default {
        s.push_str(&format!(", default: {d}"));
    }
    if let Some(a) = p.alias {
        s.push_str(&format!(" (also `{a}`)"));
    }
    s
}

fn returns(r: Returns) -> String {
    match r {
        Returns::Nothing => "nothing".into(),
        Returns::Value(BaseType::Json) => "a JSON value".into(),
        Returns::Value(t) => format!("a {t}"),
        Returns::Row => "a row".into(),
        Returns::Rows => "rows".into(),
    }
}

/// Who may call it, in words.
pub fn rule(r: Rule) -> String {
    match r {
        Rule::Anyone => "any signed-in user who can see the entity".into(),
        Rule::On(p, _) => format!("`{}` on the entity", p.name()),
        Rule::Invoke => "`ServiceInvoke` on the entity, for this service".into(),
        Rule::Create(k) => format!("`Create` on {}", k.collection()),
        Rule::Named(p, k) => format!("`{}` on the {} `name`", p.name(), k.label()),
        Rule::Own(words) => words.into(),
    }
}

fn audit(s: &Service) -> String {
    match s.audit {
        Audit::None => "—".into(),
        Audit::Change => "its change (MODEL; SECURITY for keys)".into(),
        Audit::In(c) => c.into(),
    }
}

/// `docs/services.md`.
pub fn services_page() -> String {
    let mut out = String::from(
        "# Host services\n\n\
         <!-- Generated from host/server/src/api/table.rs by `thinghost api services`; a test keeps it current. -->\n\n\
         Every service the host answers itself, from the service table (`host/server/src/api/table.rs`). Call one with\n\
         `POST /Thingworx/{Collection}/{Entity}/Services/{Service}` and a JSON object of parameters, from an admin script\n\
         (the binding's name; the same parameters in the same order, [script API](script-api.md)), or from an extension\n\
         (`call-service`). An unknown parameter, a missing required one or a value of the wrong type is a 400 naming it; a\n\
         `...NAME` parameter must name an entity the caller can see.\n\n\
         **Lock**: `shared` runs beside other reads; `exclusive` changes the model, stored before the answer; `none` is\n\
         checked under the shared lock, then works without the model's lock (files, the audit log, compiling code).\n\n",
    );
    let mut current = String::new();
    for s in SERVICES.iter() {
        let place = s.where_();
        if place != current {
            out.push_str(&format!("## {place}\n\n"));
            current = place;
        }
        let params: Vec<String> = s.params.iter().map(param).collect();
        out.push_str(&format!("### `{}`\n\n{}\n\n", s.name, s.doc));
        out.push_str(&format!(
            "- parameters: {}\n- gives: {}\n- who may call it: {}\n- lock: {}\n- in a script: {}\n- audit: {}\n\n",
            if params.is_empty() {
                "none".to_string()
            } else {
                params.join("; ")
            },
            returns(s.returns),
            match (s.rule, s.on) {
                (Rule::Invoke, On::Entity(k, n)) => match thinghost_core::predefined::role_rule(k, n, s.name) {
                    Some(group) => format!(
                        "`ServiceInvoke` on the entity, for this service: members of {group} (the platform's role rule P2), Administrators, or an entry that allows it"
                    ),
                    None => rule(s.rule),
                },
                _ => rule(s.rule),
            },
            s.run.lock(),
            match s.script_name() {
                Some(n) => format!("`{n}`"),
                None => "refused (it acts outside the model and could not be undone)".into(),
            },
            audit(s),
        ));
    }
    out
}

/// The README's table of host services: one line per place, its services with their parameters.
pub fn readme_table() -> String {
    let mut out = String::from(
        "<!-- services: generated from the service table by `thinghost api readme-table`; a test keeps it current -->\n\
         | where | services |\n|---|---|\n",
    );
    let mut places: Vec<(String, Vec<String>)> = Vec::new();
    for s in SERVICES.iter() {
        let place = match s.on {
            On::Entity(..) | On::ThingsOf(_) => format!("`{}`", s.where_()),
            _ => s.where_(),
        };
        let params: Vec<&str> = s.params.iter().map(|p| p.name).collect();
        let entry = format!("`{}({})`", s.name, params.join(", "));
        match places.iter_mut().find(|(p, _)| *p == place) {
            Some((_, v)) => v.push(entry),
            None => places.push((place, vec![entry])),
        }
    }
    for (place, entries) in places {
        out.push_str(&format!("| {place} | {} |\n", entries.join(", ")));
    }
    out.push_str("<!-- /services -->\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn docs_services_md_is_current() {
        let on_disk = std::fs::read_to_string(root().join("docs/services.md")).unwrap_or_default();
        assert!(
            on_disk == services_page(),
            "docs/services.md is out of date: regenerate it with `cargo run -p thinghost -- api services > docs/services.md`"
        );
    }

    #[test]
    fn the_readme_service_table_is_current() {
        let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
        let table = readme_table();
        let first = table.lines().next().unwrap();
        let start = readme
            .find(first)
            .expect("the README holds the services table's marker");
        let end = readme[start..]
            .find("<!-- /services -->\n")
            .map(|i| start + i + "<!-- /services -->\n".len())
            .expect("the README closes the services table");
        assert!(
            readme[start..end] == table,
            "the README's service table is out of date: replace it with `cargo run -p thinghost -- api readme-table`"
        );
    }

    #[test]
    fn every_service_is_declared_once_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for s in SERVICES.iter() {
            for k in thinghost_core::Kind::ALL {
                let entity = match s.on {
                    On::Entity(_, n) => n,
                    _ => "x",
                };
                if s.serves(k, entity) {
                    assert!(
                        seen.insert((k, entity, s.name)),
                        "{} is declared twice on {k:?}",
                        s.name
                    );
                }
            }
            assert!(!s.doc.is_empty(), "{} has no description", s.name);
            let mut names = std::collections::HashSet::new();
            for p in s.params {
                assert!(
                    names.insert(p.name),
                    "{}: parameter {} twice",
                    s.name,
                    p.name
                );
            }
        }
    }
}
