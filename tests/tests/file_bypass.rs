//! Changes to a watched file made where the syscall probes of open, write
//! and close do not look: through io_uring, a descriptor held past the
//! settle time and written at the last moment, a shared mapping written
//! after close and left to the kernel at exit, and calls through
//! `/proc/self/fd/N`. Each is reverted and alerted once, naming the
//! process that did it. Every file and process here is the test's own.
use std::{
    fs,
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        process::ExitStatusExt as _,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use reflex_tests::{ChildGuard, Scratch, eventually, programs, require_root};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

const POLICY: &str = "name: managed\nmode: enforce\non:\n  file: { paths: [\"DIR/*.conf\"] }\ndo:\n  - revert\n  - alert: { summary: \"{file.path} {file.change}\" }\n";

/// Waits until `path` holds `content` with mode 0644.
fn wait_restored(path: &Path, content: &str) -> bool {
    eventually(WAIT, || {
        fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o7777 == 0o644)
            && fs::read_to_string(path).is_ok_and(|c| c == content)
    })
}

/// A scratch area with `etc/app.conf` deployed as `content`.
fn managed(content: &str) -> (Scratch, PathBuf, String) {
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    fs::create_dir(&etc).unwrap();
    let path = etc.join("app.conf");
    let content = deployed(&path, content);
    (scratch, path, content)
}

#[test]
fn changes_the_syscall_probes_cannot_see_are_reverted_and_alerted_once() {
    require_root();
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    fs::create_dir(&etc).unwrap();
    let tool = programs::compile(
        &scratch.path("bin"),
        "file_attack",
        programs::FILE_ATTACK_PROGRAM,
    );
    let modes = ["uring", "hold", "mmap", "chmod", "truncate"];
    for mode in modes {
        let path = etc.join(format!("{mode}.conf"));
        fs::write(&path, format!("deployed content for {mode}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    }
    scratch.policy(
        "managed.yaml",
        &POLICY.replace("DIR", etc.to_str().expect("utf-8")),
    );
    let agent = scratch.start();

    for mode in modes {
        let path = etc.join(format!("{mode}.conf"));
        let content = format!("deployed content for {mode}\n");
        let mut child = ChildGuard::spawn(
            Command::new(&tool)
                .args([mode, path.to_str().unwrap(), "EVIL\n"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let pid = child.pid();
        let status = child.wait_for(WAIT).expect("the attack finishes");
        assert!(
            status.success(),
            "{mode}: the attack itself failed: {status:?}"
        );
        assert!(
            wait_restored(&path, &content),
            "{mode}: {} was left changed",
            path.display()
        );
        let line = agent
            .stdout_line(WAIT, |l| {
                serde_json::from_str::<Value>(l)
                    .is_ok_and(|v| v["event"]["file"]["path"] == path.to_str().unwrap())
            })
            .unwrap_or_else(|| panic!("{mode}: no alert"));
        let alert: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(alert["event"]["process"]["pid"], pid, "{mode}: {alert}");
        assert_eq!(
            alert["event"]["process"]["exe"],
            tool.to_str().unwrap(),
            "{mode}: the alert names the writer"
        );
        assert_eq!(alert["results"][0]["action"], "revert", "{mode}");
        assert_eq!(alert["results"][0]["ok"], true, "{mode}: {alert}");
    }
    // One alert per change: fanotify's view and the probes' are one event.
    std::thread::sleep(Duration::from_millis(600));
    let extra: Vec<String> = agent.stdout.try_iter().collect();
    assert!(extra.is_empty(), "unexpected extra alerts: {extra:#?}");
}

/// A process killed in the kernel at its open leaves the descriptor in a
/// table it shares (`clone(CLONE_FILES)`); the process it shares it with
/// writes through it. The kill cannot reach that one in time; the revert
/// does.
#[test]
fn a_descriptor_left_in_a_shared_table_by_a_killed_opener_cannot_keep_a_change() {
    require_root();
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    fs::create_dir(&etc).unwrap();
    let tool = programs::compile(
        &scratch.path("bin"),
        "file_attack",
        programs::FILE_ATTACK_PROGRAM,
    );
    let path = etc.join("guarded.conf");
    let content = "deployed\n";
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    scratch.policy(
        "guard.yaml",
        &format!(
            "name: guard\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo:\n  - kill\n  - revert\n  - alert: {{ summary: \"{{file.path}} {{file.change}}\" }}\n",
            path.display()
        ),
    );
    let agent = scratch.start();

    let mut child = ChildGuard::spawn(
        Command::new(&tool)
            .args(["clonefiles", path.to_str().unwrap(), "EVIL\n"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let status = child.wait_for(WAIT).expect("the attack finishes");
    // 0: it wrote through the shared descriptor; 7: the descriptor never
    // reached the table. Either way the file must end as deployed.
    assert!(
        matches!(status.code(), Some(0 | 7)) || status.signal() == Some(9),
        "the attack failed in an unexpected way: {status:?}"
    );
    assert!(
        wait_restored(&path, content),
        "the shared descriptor's write stayed"
    );
    if status.code() == Some(0) {
        // The change is one event: the killed opener's open and the other
        // process's write may merge into it, so either may be named.
        agent
            .stdout_line(WAIT, |l| {
                serde_json::from_str::<Value>(l).is_ok_and(|v| {
                    v["event"]["file"]["path"] == path.to_str().unwrap()
                        && v["actions"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x == "revert"))
                })
            })
            .expect("the change through the shared table is alerted");
    }
}

/// The directory around a watched file is renamed away, exchanged with
/// another (`RENAME_EXCHANGE`), or taken away with its parent and rebuilt:
/// the file at the watched path is another file then, and is put back.
#[test]
fn swapping_the_directory_around_a_watched_file_does_not_keep_a_rogue_file() {
    require_root();
    let scratch = Scratch::new();
    let conf = scratch.path("srv/app/conf");
    fs::create_dir_all(&conf).unwrap();
    let path = conf.join("app.conf");
    let content = "deployed\n";
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    scratch.policy(
        "app.yaml",
        &format!(
            "name: app\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo:\n  - revert\n  - alert: {{ summary: \"{{file.path}} {{file.change}}\" }}\n",
            path.display()
        ),
    );
    let agent = scratch.start();
    let rogue = |dir: &Path, text: &str| {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("app.conf"), text).unwrap();
        fs::set_permissions(dir.join("app.conf"), fs::Permissions::from_mode(0o644)).unwrap();
    };

    // Renamed away, a new directory with a rogue file in its place.
    fs::rename(&conf, scratch.path("srv/app/conf.old")).unwrap();
    rogue(&conf, "rogue one\n");
    assert!(
        wait_restored(&path, content),
        "a new directory kept its rogue file"
    );

    // A prepared directory exchanged into the path in one call.
    rogue(&scratch.path("prepared"), "rogue two\n");
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        scratch.path("prepared").as_path(),
        rustix::fs::CWD,
        conf.as_path(),
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .expect("renameat2(RENAME_EXCHANGE)");
    assert!(
        wait_restored(&path, content),
        "an exchanged directory kept its rogue file"
    );

    // Two levels taken away: the path cannot be written; that is alerted.
    fs::rename(scratch.path("srv/app"), scratch.path("srv/app.gone")).unwrap();
    let failed = agent
        .stdout_line(WAIT, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["event"]["file"]["path"] == path.to_str().unwrap()
                    && v["results"][0]["ok"] == false
            })
        })
        .expect("a path that cannot be restored is alerted as such");
    assert!(failed.contains("No such file or directory"), "{failed}");
    // Rebuilt with a rogue file: put back as soon as its directory is there.
    rogue(&conf, "rogue three\n");
    assert!(
        wait_restored(&path, content),
        "a rebuilt directory kept its rogue file"
    );
}

/// Writes `content` at `path`, mode 0644, and returns it.
fn deployed(path: &Path, content: &str) -> String {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    content.to_string()
}

/// Starts the agent on one revert policy for `path` (`extra` YAML after
/// `on:`) and waits until it runs.
fn guard(scratch: &Scratch, path: &Path, extra: &str) -> reflex_tests::Agent {
    scratch.policy(
        "guard.yaml",
        &format!(
            "name: guard\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\n{extra}do:\n  - revert\n  - alert: {{ summary: \"{{file.path}} {{file.change}}\" }}\n",
            path.display()
        ),
    );
    scratch.start()
}

/// The same rogue file (one inode, kept by a second link) renamed over the
/// path again right after its first revert is a new change, not a repeat.
#[test]
fn the_same_rogue_file_put_back_twice_is_reverted_twice() {
    require_root();
    let (scratch, path, content) = managed("deployed\n");
    let _agent = guard(&scratch, &path, "");
    let rogue = scratch.path("rogue");
    deployed(&rogue, "rogue\n");
    for round in 0..3 {
        let spare = path.with_file_name(format!(".spare-{round}"));
        fs::hard_link(&rogue, &spare).unwrap();
        fs::rename(&spare, &path).unwrap();
        assert!(
            wait_restored(&path, &content),
            "round {round}: the rogue file stayed"
        );
    }
}

/// A user who may write the directory fills it with names a restore could
/// take for its temporary file: restores still land.
#[test]
fn names_taken_ahead_do_not_stop_a_restore() {
    require_root();
    let (scratch, path, content) = managed("deployed\n");
    let agent = guard(&scratch, &path, "");
    let pid = agent.guard.pid();
    for n in 0..2000 {
        fs::write(
            path.with_file_name(format!(".app.conf.reflex-{pid}-{n}")),
            "taken",
        )
        .unwrap();
    }
    fs::write(&path, "changed\n").unwrap();
    assert!(
        wait_restored(&path, &content),
        "taken temporary names stopped the restore"
    );
}

/// An authorised deploy while another user changes a file of the same
/// name elsewhere, over and over, by its absolute name and by a relative
/// name from the watched directory: the deploy is taken, not reverted.
#[test]
fn a_same_named_file_elsewhere_does_not_spoil_a_deploy() {
    require_root();
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    let other = scratch.path("elsewhere");
    fs::create_dir(&etc).unwrap();
    fs::create_dir(&other).unwrap();
    let path = etc.join("app.conf");
    deployed(&path, "version 1\n");
    deployed(&other.join("app.conf"), "not watched\n");
    let deployer = scratch.path("bin/deployer");
    fs::create_dir_all(scratch.path("bin")).unwrap();
    fs::copy("/bin/sh", &deployer).unwrap();
    let agent = guard(
        &scratch,
        &path,
        &format!(
            "accept_from:\n  process:\n    ancestor_exe: [\"{}\"]\n",
            deployer.display()
        ),
    );
    let noise = ChildGuard::spawn(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "while :; do chmod 600 {f}; chmod 644 {f}; done",
                f = other.join("app.conf").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // The same, by a relative name against a descriptor of the other
    // directory, from the watched directory as working directory.
    let tool = programs::compile(
        &scratch.path("bin"),
        "file_attack",
        programs::FILE_ATTACK_PROGRAM,
    );
    let relative = ChildGuard::spawn(
        Command::new(&tool)
            .args([
                "dirfd-chmod",
                other.join("app.conf").to_str().unwrap(),
                "20",
            ])
            .current_dir(&etc)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(200));
    let mut deploy = ChildGuard::spawn(
        Command::new(&deployer)
            .arg("-c")
            .arg(format!(
                "printf 'version 2\\n' > {p}.new && chmod 644 {p}.new && mv {p}.new {p}",
                p = path.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(deploy.wait_for(WAIT).expect("the deploy ends").success());
    let accepted = agent
        .stdout_line(Duration::from_secs(10), |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["event"]["file"]["path"] == path.to_str().unwrap()
                    && v["event"]["file"]["change"] == "accepted"
            })
        })
        .expect("the deploy is accepted");
    drop(noise);
    drop(relative);
    assert!(accepted.contains("version 2") || accepted.contains("\"accepted\""));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "version 2\n",
        "the deploy was reverted"
    );
}

/// A user blows the kill fuse of a file policy with two programs of their
/// own: the kernel stops killing at open (a third writer lives), and the
/// policy's revert goes on.
#[test]
fn a_blown_file_kill_fuse_stops_kills_in_the_kernel_and_nothing_else() {
    require_root();
    let (scratch, path, content) = managed("deployed\n");
    scratch.policy(
        "guard.yaml",
        &format!(
            "name: guard\nmode: enforce\non:\n  file: {{ paths: [\"{}\"] }}\ndo:\n  - kill\n  - revert\n  - alert: {{ summary: \"{{file.path}} {{file.change}}\" }}\n",
            path.display()
        ),
    );
    let mut command = scratch.run_command(&reflex_tests::reflex_bin());
    command.args(["--kill-fuse", "1"]);
    let agent = reflex_tests::start_agent_with(&mut command, "reflex running");
    let shells: Vec<PathBuf> = (0..8)
        .map(|i| scratch.tool(&format!("sh{i}"), "/bin/sh"))
        .collect();
    let write = |shell: &Path| {
        let mut child = ChildGuard::spawn(
            Command::new(shell)
                .arg("-c")
                .arg(format!("echo changed > {}", path.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        child.wait_for(WAIT).expect("the writer ends")
    };
    assert_eq!(
        write(&shells[0]).signal(),
        Some(9),
        "killed in the kernel at open"
    );
    assert!(wait_restored(&path, &content));
    // Each further program is another executable killed: the fuse (1)
    // blows at the second one the agent judges. Two writers racing one
    // change are judged as one, so the count of programs is not exact.
    let (mut killed, mut blown) = (1, false);
    for shell in &shells[1..6] {
        if write(shell).signal() != Some(9) {
            break;
        }
        killed += 1;
        assert!(wait_restored(&path, &content));
        blown = agent
            .stdout_line(Duration::from_secs(1), |l| l.contains("kill fuse blown"))
            .is_some();
        if blown {
            break;
        }
    }
    assert!(
        killed >= 2,
        "the kernel stopped killing before the fuse could blow"
    );
    if !blown {
        agent
            .stdout_line(WAIT, |l| l.contains("kill fuse blown"))
            .expect("the blown fuse is alerted");
    }
    // The kernel hears of the fuse a moment after the alert.
    let deadline = Instant::now() + WAIT;
    loop {
        let status = write(&shells[7]);
        if status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kernel still kills: {status:?}"
        );
        assert!(wait_restored(&path, &content));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        wait_restored(&path, &content),
        "revert goes on after the fuse blew"
    );
}
