//! Files that appear under a `revert` policy's glob (issue 13), end to end
//! with the real agent: one created by an ordinary user is removed, kept as
//! evidence and alerted; one created by an authorised writer becomes its
//! baseline and is defended from then on; one planted while the agent is
//! stopped is answered at the next start as `on_drift` says; one deleted
//! while it is stopped is restored at the next start. Every file,
//! directory and process here is the test's own.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use reflex_tests::{
    Agent, Scratch, eventually, file_alert, holds, require_root, run_to_end, stop_agent,
};

const WAIT: Duration = Duration::from_secs(10);

/// Stands for config management: a copy of `install` whose path
/// `accept_from` names, run as root.
const DEPLOY: &str = "bin/deploy";

fn policy(dir: &Path, deploy: &Path, on_drift: &str) -> String {
    format!(
        "name: managed\nmode: enforce\non:\n  file: {{ paths: [\"{}/*.conf\"] }}\naccept_from:\n  process: {{ exe: [\"{}\"], uid: [0] }}\non_drift: {on_drift}\ndo:\n  - revert\n  - alert: {{ summary: \"{{file.path}} {{file.change}} by {{process.exe}}\" }}\n",
        dir.display(),
        deploy.display()
    )
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8").to_string()
}

/// A scratch area with `etc/app.conf` ("port=80") under a policy covering
/// `etc/*.conf`; `etc` is writable by everyone (the test's attacker is
/// `nobody`), and the scratch root is searchable.
fn setup(on_drift: &str) -> (Scratch, PathBuf) {
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    fs::create_dir(&etc).unwrap();
    fs::set_permissions(scratch.path(""), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(etc.join("app.conf"), "port=80\n").unwrap();
    fs::set_permissions(etc.join("app.conf"), fs::Permissions::from_mode(0o644)).unwrap();
    let deploy = scratch.tool("deploy", "/usr/bin/install");
    scratch.policy("managed.yaml", &policy(&etc, &deploy, on_drift));
    (scratch, etc)
}

/// `sh -c SCRIPT` as `nobody`, with no groups; returns its pid.
fn as_nobody(script: &str) -> u32 {
    reflex_tests::users::as_nobody(script, WAIT)
}

fn gone(path: &Path) -> bool {
    eventually(WAIT, || fs::symlink_metadata(path).is_err())
}

fn restart(agent: Agent, scratch: &Scratch) -> Agent {
    stop_agent(agent);
    scratch.start()
}

#[test]
fn a_file_created_by_an_unauthorised_user_is_removed_with_evidence() {
    require_root();
    let (scratch, etc) = setup("revert");
    let agent = scratch.start();
    let evil = etc.join("evil.conf");

    let pid = as_nobody(&format!("echo backdoor=1 > {}", s(&evil)));
    assert!(gone(&evil), "the planted file is removed");
    let alert = file_alert(&agent, &evil, WAIT, |v| v["event"]["process"]["pid"] == pid);
    assert_eq!(alert["event"]["file"]["change"], "create");
    assert_eq!(alert["actions"], serde_json::json!(["revert", "alert"]));
    let result = alert["results"][0]["detail"].as_str().unwrap().to_string();
    assert!(result.starts_with("removed "), "{result}");
    let kept = alert["evidence"]["kept"].as_str().expect("evidence kept");
    assert!(result.contains(kept), "{result}");
    assert!(kept.starts_with(&s(&scratch.path("state/evidence"))));
    assert_eq!(fs::read_to_string(kept).unwrap(), "backdoor=1\n");
    assert!(
        alert["evidence"]["diff"]
            .as_str()
            .unwrap()
            .contains("+backdoor=1")
    );

    // Once more under the same name: removed again.
    let pid = as_nobody(&format!("echo again=1 > {}", s(&evil)));
    assert!(gone(&evil), "made again, removed again");
    file_alert(&agent, &evil, WAIT, |v| v["event"]["process"]["pid"] == pid);

    // Nothing of it comes back at the next start.
    let agent = restart(agent, &scratch);
    assert!(fs::symlink_metadata(&evil).is_err());
    assert_eq!(
        fs::read_to_string(etc.join("app.conf")).unwrap(),
        "port=80\n"
    );
    stop_agent(agent);
}

#[test]
fn a_file_created_by_an_authorised_writer_becomes_its_baseline() {
    require_root();
    let (scratch, etc) = setup("revert");
    let agent = scratch.start();
    let source = scratch.path("new.conf.src");
    fs::write(&source, "workers=8\n").unwrap();
    let new = etc.join("new.conf");

    // Writable by all, as deployed: the tamper below is nobody's own write.
    let pid = run_to_end(
        Command::new(scratch.path(DEPLOY))
            .args(["-m", "0666"])
            .arg(&source)
            .arg(&new),
        WAIT,
    );
    let alert = file_alert(&agent, &new, WAIT, |v| v["event"]["process"]["pid"] == pid);
    assert_eq!(alert["event"]["file"]["change"], "accepted");
    let changes = alert["event"]["file"]["changes"].to_string();
    assert!(changes.contains("create"), "{changes}");
    assert_eq!(fs::read_to_string(&new).unwrap(), "workers=8\n", "kept");

    // The deployed file is defended: a later write by nobody goes back.
    let tamper = as_nobody(&format!("echo tampered=1 >> {}", s(&new)));
    assert!(holds(&new, "workers=8\n", WAIT), "put back to the deploy");
    let alert = file_alert(&agent, &new, WAIT, |v| {
        v["event"]["process"]["pid"] == tamper
    });
    assert_eq!(alert["results"][0]["action"], "revert");
    let agent = restart(agent, &scratch);
    assert_eq!(fs::read_to_string(&new).unwrap(), "workers=8\n");
    stop_agent(agent);
}

#[test]
fn a_file_planted_while_stopped_is_answered_per_on_drift() {
    require_root();
    for on_drift in ["revert", "report", "accept"] {
        let (scratch, etc) = setup(on_drift);
        let agent = scratch.start();
        stop_agent(agent);
        let planted = etc.join("planted.conf");
        as_nobody(&format!("echo planted=1 > {}", s(&planted)));

        let agent = scratch.start();
        let alert = file_alert(&agent, &planted, WAIT, |_| true);
        assert_eq!(alert["event"]["file"]["change"], "drift", "{on_drift}");
        let changes = alert["event"]["file"]["changes"].to_string();
        assert!(changes.contains("create"), "{on_drift}: {changes}");
        match on_drift {
            "revert" => {
                assert!(gone(&planted), "removed at start-up");
                assert!(alert["evidence"]["kept"].is_string());
            }
            "report" => {
                assert_eq!(alert["actions"], serde_json::json!(["alert"]));
                assert!(planted.exists(), "left");
            }
            _ => {
                assert_eq!(alert["event"]["file"]["accepted"]["policies"][0], "managed");
                assert!(planted.exists(), "kept");
                // Its baseline now (nobody's file): a change to it is put back.
                as_nobody(&format!("echo more=1 >> {}", s(&planted)));
                assert!(holds(&planted, "planted=1\n", WAIT), "defended");
            }
        }
        stop_agent(agent);
    }
}

#[test]
fn a_file_deleted_while_stopped_is_restored_at_start() {
    require_root();
    let (scratch, etc) = setup("revert");
    let agent = scratch.start();
    stop_agent(agent);
    let app = etc.join("app.conf");
    fs::remove_file(&app).unwrap();

    let agent = scratch.start();
    assert!(holds(&app, "port=80\n", WAIT), "restored at start-up");
    let alert = file_alert(&agent, &app, WAIT, |_| true);
    assert_eq!(alert["event"]["file"]["change"], "drift");
    assert_eq!(alert["results"][0]["action"], "revert");
    stop_agent(agent);
}

/// Files made without a creating `open` the probes see: `mknod` and then
/// an ordinary open, and a creating open through io_uring. fanotify hears
/// the directory gain an entry; each is removed as any planted file.
#[test]
fn a_file_created_without_a_creating_open_is_removed_too() {
    require_root();
    let (scratch, etc) = setup("revert");
    let tool = reflex_tests::programs::compile(
        &scratch.path("bin"),
        "file_attack",
        reflex_tests::programs::FILE_ATTACK_PROGRAM,
    );
    fs::set_permissions(scratch.path("bin"), fs::Permissions::from_mode(0o755)).unwrap();
    let agent = scratch.start();
    for mode in ["mknod", "uring-create"] {
        let planted = etc.join(format!("{mode}.conf"));
        // The shell may run the tool as its child: any writer will do.
        as_nobody(&format!(
            "{} {mode} {} backdoor=1",
            tool.display(),
            s(&planted)
        ));
        assert!(gone(&planted), "{mode}: the planted file is removed");
        let alert = file_alert(&agent, &planted, WAIT, |v| {
            v["event"]["process"]["exe"] == tool.to_str().unwrap()
        });
        let changes = alert["event"]["file"]["changes"].to_string();
        assert!(changes.contains("create"), "{mode}: {changes}");
    }
}
