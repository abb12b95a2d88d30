//! Files flooding a directory an exec `kill` glob covers (issue #14): an
//! unprivileged user creates 20 000 files there. The agent must keep
//! killing programs started from it, keep reverting watched files, and its
//! memory must stay bounded: the kill table is told of the burst a few
//! times, not once per file with the whole set each time.
use std::{
    fs,
    os::unix::{
        fs::{PermissionsExt as _, chown},
        process::ExitStatusExt as _,
    },
    process::Stdio,
    time::Duration,
};

use reflex_tests::{
    ChildGuard, Scratch, file_alert, holds, metric, metrics_addr, programs, require_root,
};

const FILES: &str = "20000";
const BASELINE: &str = "port=80\n";
const WAIT: Duration = Duration::from_secs(60);
/// Peak resident set the agent may reach (debug or release build): its
/// queues' bounds plus the 20 000 identities, far below the gigabytes an
/// uncoalesced notice per file reached.
const PEAK_KIB: u64 = 256 << 10;

#[test]
fn a_flood_of_files_under_an_exec_kill_glob_stops_no_kill_and_no_revert() {
    require_root();
    let scratch = Scratch::new();
    fs::set_permissions(scratch.path(""), fs::Permissions::from_mode(0o755)).unwrap();
    let user = reflex_tests::users::TestUser::create("xkflood");
    let abuse = programs::compile(&scratch.path("bin"), "abuse", programs::ABUSE_PROGRAM);
    fs::set_permissions(scratch.path("bin"), fs::Permissions::from_mode(0o755)).unwrap();
    let quarantine = scratch.path("q");
    fs::create_dir(&quarantine).unwrap();
    chown(&quarantine, Some(user.uid), Some(user.gid)).unwrap();
    let watched = scratch.path("etc/app.conf");
    fs::create_dir(scratch.path("etc")).unwrap();
    fs::write(&watched, BASELINE).unwrap();
    fs::set_permissions(&watched, fs::Permissions::from_mode(0o666)).unwrap();
    scratch.policy(
        "flood.yaml",
        &format!(
            "name: quarantine\nmode: enforce\non:\n  exec: {{ paths: [\"{q}/**\"] }}\ndo: [kill]\n---\n\
             name: guard\nmode: enforce\non:\n  file: {{ paths: [\"{w}\"] }}\ndo: [revert, alert]\n",
            q = quarantine.display(),
            w = watched.display(),
        ),
    );
    let agent = scratch.start();
    let addr = metrics_addr(&agent);

    let mut flood = ChildGuard::spawn(
        user.command(&abuse)
            .args(["files", quarantine.to_str().unwrap(), FILES])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        flood
            .wait_for(Duration::from_secs(600))
            .expect("the flood ends")
            .success(),
        "the flood ran"
    );

    // A program the user puts there and runs is killed.
    let program = quarantine.join("zz-true");
    fs::copy("/bin/true", &program).unwrap();
    chown(&program, Some(user.uid), Some(user.gid)).unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    let mut run = ChildGuard::spawn(
        user.command(&program)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let status = run.wait_for(WAIT).expect("the program ends");
    assert_eq!(status.signal(), Some(9), "killed: {status:?}");

    // A watched file the user changes is put back.
    let mut write = ChildGuard::spawn(
        user.command("/bin/sh")
            .arg("-c")
            .arg(format!("echo port=1 > {}", watched.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    write.wait_for(WAIT).expect("the write ends");
    let alert = file_alert(&agent, &watched, WAIT, |_| true);
    assert_eq!(alert["results"][0]["action"], "revert");
    assert!(holds(&watched, BASELINE, WAIT), "reverted after the flood");

    let peak = reflex_tests::peak_rss_kib(agent.guard.pid());
    eprintln!(
        "agent peak RSS {peak} KiB; exec kill entries {}; watch overflows {}",
        metric(addr, "reflex_exec_kill_entries"),
        metric(addr, "reflex_exec_watch_overflows_total"),
    );
    assert!(peak < PEAK_KIB, "agent peak RSS {peak} KiB");
}
