//! The model as a casbin RBAC model with deny-override.
//!
//! casbin's effect expressions cannot express level precedence (the most specific level that
//! matches decides) nor visibility: its answer is "some allow and no deny" over every entry of
//! every level that applies. Users and groups are roles (`g`, nested); a question's target is an
//! object whose parents (`g2`) are the levels' entries for its resource and for `*`. The benchmark
//! compares casbin only on the questions where that answer is thinghost's, and says how many.

use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};
use thinghost_core::validate::template_chain;
use thinghost_core::*;

use thinghost_bench_model::model::Question;

const MODEL: &str = r#"
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act, eft

[role_definition]
g = _, _
g2 = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = g(r.sub, p.sub) && (p.obj == "*" || g2(r.obj, p.obj)) && (p.act == "*" || r.act == p.act)
"#;

fn principal(p: &PrincipalRef) -> String {
    match p.kind {
        PrincipalType::User => format!("user:{}", p.principal),
        PrincipalType::Group => format!("group:{}", p.principal),
    }
}

/// The casbin side of one model and sample.
pub struct CasbinModel {
    pub enforcer: Enforcer,
    /// How many `p` rows the enforcer holds.
    pub policies: usize,
    /// One request per question, in order.
    pub requests: Vec<(String, String, String)>,
}

impl CasbinModel {
    /// Is question `i` allowed?
    pub fn allowed(&self, i: usize) -> bool {
        let (s, o, a) = &self.requests[i];
        self.enforcer
            .enforce((s.as_str(), o.as_str(), a.as_str()))
            .expect("the model evaluates")
    }
}

fn rows(level: &str, acl: &Acl, out: &mut Vec<Vec<String>>) {
    for e in acl.run_time.iter().chain(&acl.design_time) {
        out.push(vec![
            principal(&e.principal),
            format!("{level}#{}", e.resource),
            format!("{:?}", e.permission),
            if e.allow { "allow" } else { "deny" }.to_string(),
        ]);
    }
}

/// Translates the model and the sample's targets.
pub fn translate(m: &Model, questions: &[Question]) -> CasbinModel {
    let mut policies: Vec<Vec<String>> = vec![vec![
        principal(&PrincipalRef::group(predefined::ADMINISTRATORS)),
        "*".into(),
        "*".into(),
        "allow".into(),
    ]];
    let mut roles: Vec<Vec<String>> = Vec::new();
    for u in m.entities(Kind::User) {
        roles.push(vec![
            format!("user:{}", u.name),
            format!("group:{}", predefined::USERS),
        ]);
    }
    for g in m.entities(Kind::Group) {
        if let Body::Group(b) = &g.body {
            for member in &b.members {
                roles.push(vec![principal(member), format!("group:{}", g.name)]);
            }
        }
    }
    for t in m.entities(Kind::Thing) {
        rows(&format!("thing:{}", t.name), &t.permissions, &mut policies);
    }
    for t in m.entities(Kind::ThingTemplate) {
        if let Some(acl) = t.instance_permissions() {
            rows(&format!("tpl:{}", t.name), acl, &mut policies);
        }
    }
    for s in m.entities(Kind::ThingShape) {
        if let Some(acl) = s.instance_permissions() {
            rows(&format!("shape:{}", s.name), acl, &mut policies);
        }
    }
    if let Some(acl) = m.collection(Kind::Thing) {
        rows("coll:Things", acl, &mut policies);
    }
    let mut objects: Vec<Vec<String>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut requests = Vec::with_capacity(questions.len());
    for q in questions {
        let res = q.resource.clone().unwrap_or_else(|| "*".into());
        let obj = format!("{}|{res}", q.thing);
        if seen.insert(obj.clone()) {
            let thing = m.get(Kind::Thing, &q.thing).expect("the Thing exists");
            let Body::Thing(body) = &thing.body else {
                unreachable!("a Thing")
            };
            let mut levels = vec![format!("thing:{}", q.thing)];
            for t in template_chain(m, &body.thing_template).expect("a valid chain") {
                levels.push(format!("tpl:{}", t.name));
                if let Body::ThingTemplate(b) = &t.body {
                    levels.extend(b.thing_shapes.iter().map(|s| format!("shape:{s}")));
                }
            }
            levels.extend(body.thing_shapes.iter().map(|s| format!("shape:{s}")));
            levels.push("coll:Things".into());
            for l in levels {
                for r in [res.as_str(), "*"] {
                    objects.push(vec![obj.clone(), format!("{l}#{r}")]);
                }
            }
        }
        requests.push((
            format!("user:{}", q.user),
            obj,
            format!("{:?}", q.permission),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime for casbin's async setup");
    let enforcer = rt.block_on(async {
        let model = DefaultModel::from_str(MODEL)
            .await
            .expect("the model parses");
        let mut e = Enforcer::new(model, MemoryAdapter::default())
            .await
            .expect("an enforcer");
        e.add_policies(policies.clone()).await.expect("policies");
        e.add_named_grouping_policies("g", roles)
            .await
            .expect("roles");
        objects.sort();
        objects.dedup();
        e.add_named_grouping_policies("g2", objects)
            .await
            .expect("objects");
        e
    });
    CasbinModel {
        enforcer,
        policies: policies.len(),
        requests,
    }
}
