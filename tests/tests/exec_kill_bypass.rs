//! Ways past an enforcing exec `kill` policy that an unprivileged local
//! user can take, each tried against the running agent: two with an
//! unprivileged user namespace (`unshare -Urm`), one with none. Inside its own mount namespace the
//! user decides which file sits at a path, and the probe reports
//! `process.exe` as the path inside that namespace: policies match that
//! path in user space, so the user can make any file of their own look like
//! the covered one (and any process look like `parent_exe`).
//!
//! Each test asserts what the policy promises. The attacking commands run as `nobody` through
//! `setpriv`; every file, process and directory here is the test's own.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use reflex_tests::{
    ChildGuard, Scratch,
    programs::{MARKER_PROGRAM, compile},
    require_root,
};

const WAIT: Duration = Duration::from_secs(5);

/// A scratch area any user can traverse: the covered marker program at
/// `bin/victim`, harmless executables of "the user" in `fakes/`, and a
/// world-writable `markers/` directory.
struct Fixture {
    scratch: Scratch,
    victim: PathBuf,
    markers: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let scratch = Scratch::new();
        let root = fs::canonicalize(scratch.path("")).expect("scratch");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod scratch");
        for dir in ["tools", "fakes", "markers", "trusted"] {
            fs::create_dir(scratch.path(dir)).expect("dir");
        }
        let markers = root.join("markers");
        fs::set_permissions(&markers, fs::Permissions::from_mode(0o1777)).expect("chmod markers");
        let marker = compile(&scratch.path("tools"), "marker", MARKER_PROGRAM);
        let victim = root.join("bin/victim");
        fs::copy(&marker, &victim).expect("victim");
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o755)).expect("chmod victim");
        Self {
            scratch,
            victim,
            markers,
        }
    }

    /// `sh -c SCRIPT` as nobody, waited for.
    fn as_nobody(&self, script: &str, marker: Option<&Path>) -> std::process::ExitStatus {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
            ])
            .arg(script)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(marker) = marker {
            command.env("MARKER", marker);
        }
        let mut child = ChildGuard::spawn(&mut command);
        child.wait_for(Duration::from_secs(20)).expect("finished")
    }
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// The kill fuse counts executables by identity, and user space matches the
/// path inside the process's mount namespace: six files of the user's own,
/// each bind-mounted over the covered path in a fresh user namespace and
/// run there, are "six different executables killed within a minute". The
/// fuse blows, the kernel map is emptied, and the real covered binary then
/// runs in the host namespace until someone reloads.
#[test]
fn a_user_namespace_cannot_blow_the_kill_fuse_of_an_exact_path() {
    require_root();
    let f = Fixture::new();
    f.scratch.policy(
        "exec.yaml",
        &format!(
            "name: no-victim\nmode: enforce\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [kill, alert]\n",
            f.victim.display()
        ),
    );
    let agent = f.scratch.start();
    let before = f.markers.join("before");
    f.as_nobody(&f.victim.display().to_string(), Some(&before));
    assert!(!before.exists(), "the policy holds before the attack");

    for i in 0..7 {
        let fake = f.scratch.path(&format!("fakes/f{i}"));
        fs::copy("/bin/true", &fake).expect("fake");
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod fake");
        f.as_nobody(
            &format!(
                "unshare -Urm sh -c 'mount --bind {} {v} && exec {v}'",
                fake.display(),
                v = f.victim.display()
            ),
            None,
        );
    }
    let blown = agent.log_line(WAIT, "kill fuse blown").is_some();

    let after = f.markers.join("after");
    f.as_nobody(&f.victim.display().to_string(), Some(&after));
    let ran = wait_until(Duration::from_secs(1), || after.exists());
    assert!(
        !ran,
        "the covered binary ran in the host namespace (fuse blown: {blown})"
    );
}

/// `unless: process: parent_exe` is tested against the parent's path inside
/// its mount namespace: a shell copied to the trusted path on a tmpfs of
/// the user's own namespace makes the covered binary's parent "trusted", so
/// the policy never applies and the binary runs unkilled.
#[test]
fn parent_exe_cannot_be_forged_in_a_user_namespace() {
    require_root();
    let f = Fixture::new();
    let trusted = fs::canonicalize(f.scratch.path("trusted")).expect("trusted dir");
    f.scratch.policy(
        "exec.yaml",
        &format!(
            "name: no-victim-unless-trusted\nmode: enforce\non:\n  exec: {{ paths: [\"{}\"] }}\n\
             unless:\n  process: {{ parent_exe: [\"{}/sshd\"] }}\ndo: [kill, alert]\n",
            f.victim.display(),
            trusted.display()
        ),
    );
    let agent = f.scratch.start();

    // Run from an ordinary shell, the binary is killed (from user space).
    let plain = f.markers.join("plain");
    f.as_nobody(&format!("{}; sleep 1", f.victim.display()), Some(&plain));
    assert!(
        agent.log_line(WAIT, "no-victim-unless-trusted").is_some(),
        "the policy matches an ordinary run"
    );

    let forged = f.markers.join("forged");
    f.as_nobody(
        &format!(
            "unshare -Urm sh -c 'mount -t tmpfs none {t} && cp /bin/sh {t}/sshd && \
             {t}/sshd -c \"{v}; true\"'",
            t = trusted.display(),
            v = f.victim.display()
        ),
        Some(&forged),
    );
    assert!(
        !forged.exists(),
        "the covered binary ran under a forged parent_exe"
    );
}

/// Without any namespace: the agent resolves a script's name
/// (`exec.filename`) through `/proc/PID/cwd` after the event. The user's
/// own interpreter, in many distinct copies, changes directory to the
/// covered binary's directory as its first act, so `./victim` resolves to
/// the covered path later: the policy matches as `exec.script`, kills the
/// interpreter from user space and counts its identity toward the fuse.
/// Racy per attempt (the agent must resolve after the `chdir`), so it is
/// tried up to 60 times; a few wins blow the fuse.
#[test]
fn a_script_name_resolved_late_cannot_blow_the_kill_fuse() {
    require_root();
    let f = Fixture::new();
    f.scratch.policy(
        "exec.yaml",
        &format!(
            "name: no-victim\nmode: enforce\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [kill, alert]\n",
            f.victim.display()
        ),
    );
    let agent = f.scratch.start();
    let dir = f.victim.parent().expect("bin dir");
    let src = f.scratch.path("tools/interp.c");
    fs::write(
        &src,
        format!(
            "#include <unistd.h>\nint main(void) {{ chdir(\"{}\"); usleep(200000); return 0; }}\n",
            dir.display()
        ),
    )
    .expect("interp source");
    let interp = f.scratch.path("tools/interp");
    let built = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(&interp)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success())
        || Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&interp)
            .arg(&src)
            .status()
            .is_ok_and(|s| s.success());
    assert!(built, "cc");
    for i in 0..60 {
        if agent.log_line(Duration::ZERO, "kill fuse blown").is_some() {
            break;
        }
        let d = f.scratch.path(&format!("fakes/d{i}"));
        fs::create_dir(&d).expect("fake dir");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
        let copy = d.join("interp");
        fs::copy(&interp, &copy).expect("interp copy");
        let script = d.join("victim");
        fs::write(&script, format!("#!{}\n", copy.display())).expect("script");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        f.as_nobody(&format!("cd {} && exec ./victim", d.display()), None);
    }
    let blown = agent.log_line(WAIT, "kill fuse blown").is_some();
    let after = f.markers.join("after");
    f.as_nobody(&f.victim.display().to_string(), Some(&after));
    let ran = wait_until(Duration::from_secs(1), || after.exists());
    assert!(!ran, "the covered binary ran (fuse blown: {blown})");
}
