//! Config management is the authorised writer (issue 15), end to end with
//! the real agent and real Ansible (`ansible-core` from Debian, installed
//! by `cargo xtask setup`): its deploys become the baseline, an ordinary
//! process's tamper afterwards is put back to Ansible's version with the
//! diff in the alert, a restart does not undo the deploy, and writers that
//! only claim the name are reverted. Every file and process here is the
//! test's own; Ansible's temporary files stay in the scratch directory.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use reflex_tests::{
    Agent, ChildGuard, Scratch, file_alert, holds, reflex_baseline, require_root, run_to_end,
    stop_agent,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);
/// Ansible starts slowly on a busy two-core machine.
const ANSIBLE: Duration = Duration::from_secs(120);
const ANSIBLE_BIN: &str = "/usr/bin/ansible";

/// The policy under test: Ansible (any of its entry points) and dpkg, run
/// as root, may change `path`; anyone else's change is put back.
fn policy(path: &Path) -> String {
    format!(
        "name: managed\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\naccept_from:\n  process:\n    ancestor_exe: [\"/usr/bin/ansible*\", \"/usr/bin/dpkg\", \"/usr/bin/salt-call\"]\n    uid: [0]\ndo:\n  - revert\n  - alert: {{ summary: \"{{file.path}} {{file.change}} by {{process.exe}}\" }}\n",
        path.display()
    )
}

/// Whether Ansible is here, installing `ansible-core` when it is not (as
/// `cargo xtask setup` does); `false` only when it cannot be installed.
fn ansible_available() -> bool {
    if Path::new(ANSIBLE_BIN).exists() {
        return true;
    }
    let installed = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "ansible-core",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    installed && Path::new(ANSIBLE_BIN).exists()
}

/// Runs `ansible localhost -c local -m MODULE -a ARGS` to completion,
/// with its state in the scratch directory.
fn ansible(scratch: &Scratch, module: &str, args: &Value) {
    let home = scratch.path("ansible");
    let mut command = Command::new("ansible");
    command
        .args([
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-m",
            module,
            "-a",
        ])
        .arg(args.to_string())
        .env("ANSIBLE_HOME", &home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("local"))
        .env("ANSIBLE_REMOTE_TEMP", home.join("remote"))
        .env("ANSIBLE_PYTHON_INTERPRETER", "/usr/bin/python3")
        .env("ANSIBLE_LOCALHOST_WARNING", "false")
        .env("ANSIBLE_NOCOLOR", "1")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let mut child = ChildGuard::spawn(&mut command);
    let status = child.wait_for(ANSIBLE).expect("ansible finishes");
    assert!(
        status.success(),
        "ansible -m {module} {args} failed: {status:?}"
    );
}

/// Writes a root-owned file with `mode`.
fn make_file(path: &Path, content: &str, mode: u32) {
    fs::write(path, content).expect("write file");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn run(command: &mut Command) -> u32 {
    run_to_end(command, WAIT)
}

fn alert(agent: &Agent, path: &Path, limit: Duration, matches: impl Fn(&Value) -> bool) -> Value {
    file_alert(agent, path, limit, matches)
}

fn baseline(scratch: &Scratch, args: &[&str]) -> (i32, String) {
    reflex_baseline(&scratch.path("state"), args)
}

fn stop(agent: Agent) {
    stop_agent(agent)
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8").to_string()
}

/// A managed file named `name` under the scratch `etc/`. Each test names
/// its own: the kernel matches a path's changes by its last name until
/// the file is marked, so two agents of parallel tests watching files of
/// one name hear each other's writes (a limit of running several agents
/// on one host, tracked as its own bypass test in `file_bypass.rs`).
fn setup(scratch: &Scratch, name: &str) -> PathBuf {
    let etc = scratch.path("etc");
    fs::create_dir(&etc).unwrap();
    let file = etc.join(name);
    make_file(&file, "port=80\n", 0o644);
    scratch.policy("managed.yaml", &policy(&file));
    file
}

#[test]
fn ansible_deploys_become_the_baseline_and_tampering_goes_back_to_them() {
    require_root();
    if !ansible_available() {
        eprintln!("SKIP: ansible-core is not installed and could not be installed");
        return;
    }
    let scratch = Scratch::new();
    let file = setup(&scratch, "app.conf");
    let agent = scratch.start();

    // A deploy by `ansible -m copy`: it stands, reported as accepted.
    let deployed = "port=8080\nworkers=4\n";
    ansible(
        &scratch,
        "copy",
        &serde_json::json!({"dest": s(&file), "content": deployed}),
    );
    let accepted = alert(&agent, &file, ANSIBLE, |v| {
        v["event"]["file"]["change"] == "accepted"
    });
    assert_eq!(
        accepted["event"]["file"]["accepted"]["policies"],
        serde_json::json!(["managed"])
    );
    let by = accepted["event"]["file"]["accepted"]["by"]["path"]
        .as_str()
        .unwrap_or_default();
    assert!(by.starts_with("/usr/bin/ansible"), "authorised by {by:?}");
    assert_eq!(
        accepted["actions"],
        serde_json::json!(["alert"]),
        "nothing put back"
    );
    assert!(accepted["event"]["file"]["accepted"]["before"].is_string());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        deployed,
        "the deploy stands"
    );

    // `-m lineinfile` edits it in place (a temporary file renamed over it).
    ansible(
        &scratch,
        "lineinfile",
        &serde_json::json!({"path": s(&file), "regexp": "^workers=", "line": "workers=8"}),
    );
    let edited = "port=8080\nworkers=8\n";
    alert(&agent, &file, ANSIBLE, |v| {
        v["event"]["file"]["change"] == "accepted"
    });
    assert!(holds(&file, edited, Duration::from_millis(500)));

    // An ordinary process's tamper goes back to Ansible's version, and the
    // alert shows what it wrote.
    let pid =
        run(Command::new("/bin/sh").args(["-c", &format!("echo 'debug=true' >> {}", s(&file))]));
    assert!(
        holds(&file, edited, WAIT),
        "reverted to the lineinfile version"
    );
    let tamper = alert(&agent, &file, WAIT, |v| v["event"]["process"]["pid"] == pid);
    assert_eq!(tamper["results"][0]["action"], "revert");
    let diff = tamper["evidence"]["diff"]
        .as_str()
        .expect("a diff in the alert");
    assert!(diff.contains("+debug=true"), "{diff}");
    let kept = tamper["evidence"]["kept"]
        .as_str()
        .expect("rejected content kept");
    assert_eq!(
        fs::read_to_string(kept).unwrap(),
        format!("{edited}debug=true\n")
    );

    // The history shows the recorded and both accepted versions.
    let (code, history) = baseline(&scratch, &["history", &s(&file)]);
    assert_eq!(code, 0);
    assert_eq!(history.matches(" accepted ").count(), 2, "{history}");
    assert!(history.contains(" recorded "), "{history}");

    // A restart does not undo the deploy.
    stop(agent);
    let agent = scratch.start();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fs::read_to_string(&file).unwrap(), edited);
    let drift: Vec<String> = agent
        .stdout
        .try_iter()
        .filter(|l| l.contains("drift"))
        .collect();
    assert!(drift.is_empty(), "no drift after a restart: {drift:?}");
    stop(agent);
}

#[test]
fn writers_that_only_claim_the_name_or_run_as_someone_else_are_reverted() {
    require_root();
    if !ansible_available() {
        eprintln!("SKIP: ansible-core is not installed and could not be installed");
        return;
    }
    let scratch = Scratch::new();
    let file = setup(&scratch, "claimed.conf");
    make_file(&scratch.path("other"), "port=1\n", 0o644);
    // A copy of a binary named like the tool, in another directory.
    let fake_dpkg = scratch.tool("dpkg", "/usr/bin/cp");
    // A script named like the tool, in another directory.
    let fake_ansible = scratch.path("bin/ansible");
    fs::write(
        &fake_ansible,
        format!(
            "#!/usr/bin/python3\nopen({:?}, 'a').write('claimed=1\\n')\n",
            s(&file)
        ),
    )
    .unwrap();
    fs::set_permissions(&fake_ansible, fs::Permissions::from_mode(0o755)).unwrap();
    let agent = scratch.start();

    for (name, command) in [
        ("copied binary", {
            let mut c = Command::new(&fake_dpkg);
            c.arg(scratch.path("other")).arg(&file);
            c
        }),
        ("script named ansible", Command::new(&fake_ansible)),
    ] {
        let mut command = command;
        let pid = run(&mut command);
        assert!(holds(&file, "port=80\n", WAIT), "{name}: reverted");
        let a = alert(&agent, &file, WAIT, |v| v["event"]["process"]["pid"] == pid);
        assert_ne!(a["event"]["file"]["change"], "accepted", "{name}");
        assert_eq!(a["results"][0]["action"], "revert", "{name}");
    }

    // Under the real Ansible, but as an ordinary user: not authorised
    // (the file is writable by all, so the write itself succeeds).
    stop(agent);
    for dir in [scratch.path(""), scratch.path("etc")] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    make_file(&file, "port=80\n", 0o666);
    fs::remove_dir_all(scratch.path("state/baselines")).unwrap();
    let agent = scratch.start();
    ansible(
        &scratch,
        "shell",
        &serde_json::json!({"cmd": format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'echo nobody=1 >> {}'",
            s(&file)
        )}),
    );
    assert!(
        holds(&file, "port=80\n", WAIT),
        "a descendant of Ansible running as nobody is reverted"
    );
    let a = alert(&agent, &file, WAIT, |v| {
        v["event"]["process"]["uid"] == 65534
    });
    assert_ne!(a["event"]["file"]["change"], "accepted");
    let ancestors = a["event"]["process"]["ancestors"].to_string();
    assert!(
        ancestors.contains("/usr/bin/ansible"),
        "it does descend from Ansible: {ancestors}"
    );
    stop(agent);
}
