use std::sync::Arc;

use crate::{
    events::{Body, Exec, Kind, ProcessContext, Record},
    identity::Identity,
    policy::{PolicySet, compile_valid},
};

const ID: &str = "4f0e2bc7a1d3c9e8b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa0";

fn exec(cgroup: &str, argv: &[&str], login_uid: Option<u32>) -> Record {
    Record {
        time: String::new(),
        ktime_ns: 1,
        kind: Kind::Exec,
        process: ProcessContext {
            pid: 10,
            exe: Some("/usr/bin/curl".into()),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            identity: Some(Arc::new(Identity::from_path(cgroup))),
            login_uid,
            ..ProcessContext::default()
        },
        body: Body::Exec(Exec {
            filename: "/usr/bin/curl".into(),
            ..Exec::default()
        }),
    }
}

fn names(set: &PolicySet, record: &Record) -> Vec<String> {
    set.evaluate(record)
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

const POLICIES: &str = r#"
name: nginx
on: { exec: {} }
when: { process: { unit: ["nginx.service"] } }
do: [alert]
---
name: any-container
on: { exec: {} }
when: { process: { container: true } }
do: [alert]
---
name: host-only
on: { exec: {} }
when: { process: { container: false } }
do: [alert]
---
name: by-id
on: { exec: {} }
when: { process: { container: ["4f0e2bc7a1d3*"] } }
do: [alert]
---
name: cgroup
on: { exec: {} }
when: { process: { cgroup: ["/kubepods.slice/**"] } }
do: [alert]
---
name: joined
on: { exec: {} }
when: { process: { argv: ["*--insecure*"] } }
do: [alert]
---
name: positions
on: { exec: {} }
when: { process: { argv: { 0: "curl", 1: "-k" } } }
do: [alert]
---
name: login
on: { exec: {} }
when: { process: { login_uid: [1000] } }
do: [alert]
"#;

#[test]
fn conditions_on_unit_container_cgroup_argv_login() {
    let set = PolicySet::new(compile_valid(POLICIES));
    let unit = exec("/system.slice/nginx.service", &["nginx"], None);
    assert_eq!(names(&set, &unit), ["nginx", "host-only"]);
    // A user names the units of its own service manager as it likes.
    let forged = exec(
        "/user.slice/user-999.slice/user@999.service/app.slice/nginx.service",
        &["nginx"],
        None,
    );
    assert_eq!(names(&set, &forged), ["host-only"]);
    let docker = exec(&format!("/system.slice/docker-{ID}.scope"), &["sh"], None);
    assert_eq!(names(&set, &docker), ["any-container", "by-id"]);
    let kube = exec(
        "/kubepods.slice/kubepods-pod1.slice/cri-containerd-0000000000000000000000000000000000000000000000000000000000000000.scope",
        &["sh"],
        None,
    );
    assert_eq!(names(&set, &kube), ["any-container", "cgroup"]);
    let joined = exec("/", &["curl", "--insecure", "https://x/a/b"], Some(1000));
    assert_eq!(names(&set, &joined), ["host-only", "joined", "login"]);
    let positions = exec("/", &["curl", "-k", "https://x"], Some(0));
    assert_eq!(names(&set, &positions), ["host-only", "positions"]);
    let short = exec("/", &["curl"], None);
    assert_eq!(names(&set, &short), ["host-only"], "position 1 is absent");
    // Without an identity no identity condition holds, `container: false`
    // included: unknown is not "on the host".
    let mut unknown = exec("/", &["x"], None);
    unknown.process.identity = None;
    assert!(names(&set, &unknown).is_empty());
}
