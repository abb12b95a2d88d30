//! dpkg as the authorised writer, and the baseline's versions (issue 15):
//! a small package built here with `dpkg-deb --build` owns a watched file;
//! installing and upgrading it changes the baseline, a tamper goes back to
//! the package's version, a restart keeps it; then `reflex baseline
//! history`, `diff` and `rollback` against the running agent. The package
//! is purged however the test ends (after the agent is stopped, so the
//! purge is not put back).
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use reflex_tests::{
    Scratch, file_alert, holds, reflex_baseline, require_root, run_to_end, stop_agent,
};

const WAIT: Duration = Duration::from_secs(10);
/// dpkg runs its triggers and syncs; allow for a busy machine.
const DPKG: Duration = Duration::from_secs(120);

/// A package this test installed: purged on drop.
struct Package {
    name: String,
}

impl Drop for Package {
    fn drop(&mut self) {
        let installed = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", &self.name])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"));
        if installed {
            let purged = Command::new("dpkg")
                .args(["--purge", &self.name])
                .stdout(Stdio::null())
                .status();
            eprintln!("purged {}: {purged:?}", self.name);
        }
    }
}

/// Builds `NAME_VERSION_all.deb` owning `file` with `content`.
fn build(scratch: &Scratch, name: &str, version: &str, file: &Path, content: &str) -> PathBuf {
    let root = scratch.path(&format!("pkg-{version}"));
    let debian = root.join("DEBIAN");
    fs::create_dir_all(&debian).unwrap();
    fs::write(
        debian.join("control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: reflex tests <root@localhost>\nDescription: reflex test package owning a watched file\n"
        ),
    )
    .unwrap();
    let owned = root.join(file.strip_prefix("/").unwrap());
    fs::create_dir_all(owned.parent().unwrap()).unwrap();
    fs::write(&owned, content).unwrap();
    fs::set_permissions(&owned, fs::Permissions::from_mode(0o644)).unwrap();
    let deb = scratch.path(&format!("{name}_{version}_all.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(&deb)
        .stdout(Stdio::null())
        .status()
        .expect("dpkg-deb runs");
    assert!(status.success(), "dpkg-deb --build");
    deb
}

fn dpkg_install(deb: &Path) -> u32 {
    run_to_end(Command::new("dpkg").arg("-i").arg(deb), DPKG)
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8").to_string()
}

#[test]
fn a_package_owns_the_file_and_its_versions_can_be_listed_diffed_and_rolled_back() {
    require_root();
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    fs::create_dir(&etc).unwrap();
    let file = etc.join("app.conf");
    fs::write(&file, "local=1\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    scratch.policy(
        "managed.yaml",
        &format!(
            "name: managed\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\naccept_from:\n  process: {{ ancestor_exe: [\"/usr/bin/dpkg\"], uid: [0] }}\ndo: [revert, alert]\n",
            s(&file)
        ),
    );
    let name = format!("reflex-cm-test-{}", std::process::id());
    let v1 = build(&scratch, &name, "1.0", &file, "from=package\nversion=1\n");
    let v2 = build(&scratch, &name, "2.0", &file, "from=package\nversion=2\n");
    // Declared before the agent: dropped (purged) after it is stopped.
    let _package = Package { name: name.clone() };
    let state = scratch.path("state");
    let agent = scratch.start();

    for (deb, content) in [
        (&v1, "from=package\nversion=1\n"),
        (&v2, "from=package\nversion=2\n"),
    ] {
        dpkg_install(deb);
        let a = file_alert(&agent, &file, DPKG, |v| {
            v["event"]["file"]["change"] == "accepted"
        });
        assert_eq!(
            a["event"]["file"]["accepted"]["by"]["path"], "/usr/bin/dpkg",
            "dpkg itself is the writer"
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            content,
            "the package's version stands"
        );
    }
    let packaged = "from=package\nversion=2\n";

    // A tamper goes back to the package's version, the diff in the alert.
    let pid = run_to_end(
        Command::new("/usr/bin/sed").args(["-i", "s/version=2/version=666/", &s(&file)]),
        WAIT,
    );
    assert!(holds(&file, packaged, WAIT), "reverted to the upgrade");
    let tamper = file_alert(&agent, &file, WAIT, |v| v["event"]["process"]["pid"] == pid);
    let diff = tamper["evidence"]["diff"].as_str().expect("a diff");
    assert!(diff.contains("-version=2\n+version=666"), "{diff}");

    // A restart keeps the upgrade.
    stop_agent(agent);
    let agent = scratch.start();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        packaged,
        "no revert at start-up"
    );

    // history: v1 recorded (local=1), v2 and v3 accepted from dpkg.
    let (code, history) = reflex_baseline(&state, &["history", &s(&file)]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{history}");
    assert!(
        lines[0].starts_with("* v3") && lines[0].contains("accepted"),
        "{history}"
    );
    assert!(lines[0].contains("/usr/bin/dpkg"), "{history}");
    assert!(
        lines[2].contains("v1") && lines[2].contains("recorded"),
        "{history}"
    );

    // diff: the file against its baseline (none), then v1 against v3.
    let (code, same) = reflex_baseline(&state, &["diff", &s(&file)]);
    assert_eq!(
        (code, same.as_str()),
        (0, ""),
        "the file is as its baseline"
    );
    let (code, diff) = reflex_baseline(&state, &["diff", &s(&file), "--from", "1", "--to", "v3"]);
    assert_eq!(code, 1, "versions differ");
    assert!(
        diff.contains("-local=1") && diff.contains("+version=2"),
        "{diff}"
    );

    // rollback to v1 while the agent runs: restored by the command, and the
    // agent takes it as the baseline (no revert), then defends it.
    let (code, out) = reflex_baseline(&state, &["rollback", &s(&file), "--to", "1"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "local=1\n");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "local=1\n",
        "the agent left the rollback"
    );
    let pid = run_to_end(
        Command::new("/bin/sh").args(["-c", &format!("echo x=1 >> {}", s(&file))]),
        WAIT,
    );
    assert!(
        holds(&file, "local=1\n", WAIT),
        "a tamper goes back to the rolled-back version"
    );
    file_alert(&agent, &file, WAIT, |v| v["event"]["process"]["pid"] == pid);
    let (_, history) = reflex_baseline(&state, &["history", &s(&file)]);
    assert!(
        history
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("rollback")),
        "{history}"
    );
    stop_agent(agent);
}

#[test]
fn drift_at_start_up_is_answered_as_on_drift_says() {
    require_root();
    for (on_drift, kept) in [("revert", false), ("accept", true), ("report", true)] {
        let scratch = Scratch::new();
        let etc = scratch.path("etc");
        fs::create_dir(&etc).unwrap();
        let file = etc.join("app.conf");
        fs::write(&file, "before\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        scratch.policy(
            "managed.yaml",
            &format!(
                "name: managed\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\non_drift: {on_drift}\ndo: [revert, alert]\n",
                s(&file)
            ),
        );
        stop_agent(scratch.start());
        // A deploy while no agent watched.
        fs::write(&file, "deployed while down\n").unwrap();
        let agent = scratch.start();
        let drift = file_alert(&agent, &file, WAIT, |v| {
            v["event"]["file"]["change"] == "drift"
        });
        let expected = if kept {
            "deployed while down\n"
        } else {
            "before\n"
        };
        assert!(holds(&file, expected, WAIT), "{on_drift}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(fs::read_to_string(&file).unwrap(), expected, "{on_drift}");
        let reverted = drift["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "revert");
        assert_eq!(reverted, !kept, "{on_drift}: {}", drift["actions"]);
        assert_eq!(
            drift["event"]["file"]["accepted"].is_object(),
            on_drift == "accept",
            "{on_drift}"
        );
        stop_agent(agent);
        // A second start: accepted drift is drift no more; reported drift
        // still is.
        let agent = scratch.start();
        let again = agent
            .stdout_line(Duration::from_millis(1500), |l| l.contains("\"drift\""))
            .is_some();
        assert_eq!(
            again,
            on_drift == "report",
            "{on_drift}: drift again after a restart"
        );
        stop_agent(agent);
    }
}
