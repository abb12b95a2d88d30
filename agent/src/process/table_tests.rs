//! The process table's rules, driven without a kernel.
use super::*;
use crate::events::{Exec, Exit, Task};
use crate::process::Login;

fn event(pid: u32, ppid: u32, body: Body) -> Event {
    Event {
        ktime_ns: 5,
        task: Task {
            tid: pid,
            pid,
            ppid,
            uid: 1000,
            gid: 1000,
            comm: "tool".into(),
            cgroup_id: 1,
        },
        body,
    }
}

#[test]
fn exec_then_exit_carries_context_and_frees_the_entry() {
    let mut table = ProcessTable::detached();
    let exec = Body::Exec(Exec {
        filename: "/usr/bin/tool".into(),
        argv: vec!["tool".into(), "-x".into()],
        argv_truncated: false,
        ..Exec::default()
    });
    let ctx = table.apply(&event(10, 1, exec));
    assert_eq!(ctx.exe.as_deref(), Some("/usr/bin/tool"));
    assert_eq!(table.len(), 1);

    let ctx = table.apply(&event(10, 1, Body::Exit(Exit::from_raw(0))));
    assert_eq!(ctx.argv, ["tool", "-x"]);
    assert!(table.is_empty());
}

#[test]
fn the_loaded_executable_beats_the_spelled_name() {
    let mut table = ProcessTable::detached();
    let exec = Body::Exec(Exec {
        filename: "./nc".into(),
        dev: 3,
        ino: 9,
        loaded: Some("/usr/bin/nc.openbsd".into()),
        ..Exec::default()
    });
    let ctx = table.apply(&event(30, 1, exec));
    assert_eq!(ctx.exe.as_deref(), Some("/usr/bin/nc.openbsd"));
    assert_eq!(ctx.exe_id, Some(FileId { dev: 3, ino: 9 }));
    let child = table.apply(&event(31, 30, Body::Exit(Exit::from_raw(0))));
    assert_eq!(
        child.parent.and_then(|p| p.exe).as_deref(),
        Some("/usr/bin/nc.openbsd"),
        "parent_exe sees the same resolved path"
    );
}

#[test]
fn parent_context_comes_from_the_table() {
    let mut table = ProcessTable::detached();
    let exec = |path: &str| {
        Body::Exec(Exec {
            filename: path.into(),
            argv: vec![],
            argv_truncated: false,
            ..Exec::default()
        })
    };
    table.apply(&event(20, 1, exec("/usr/sbin/sshd")));
    let ctx = table.apply(&event(21, 20, exec("/bin/sh")));
    assert_eq!(
        ctx.parent.and_then(|p| p.exe).as_deref(),
        Some("/usr/sbin/sshd")
    );
}

#[test]
fn a_forked_child_carries_its_lineage_into_its_events() {
    use crate::events::{
        Fork,
        file::{File, FileChange},
    };
    let mut table = ProcessTable::detached();
    let exec = |path: &str| {
        Body::Exec(Exec {
            filename: path.into(),
            ..Exec::default()
        })
    };
    table.apply(&event(30, 1, exec("/usr/bin/dpkg")));
    table.apply(&event(
        30,
        1,
        Body::Fork(Fork {
            child_pid: 31,
            sibling: false,
        }),
    ));
    // The child writes before (or without) exec'ing.
    let write = Body::File(File {
        change: Some(FileChange::Write),
        ..File::default()
    });
    let ctx = table.apply(&event(31, 30, write));
    assert_eq!(
        ctx.exe.as_deref(),
        Some("/usr/bin/dpkg"),
        "a copy of its parent"
    );
    let parents: Vec<_> = ctx.ancestors.iter().map(|a| a.pid).collect();
    assert_eq!(parents, [30]);
    assert_eq!(ctx.ancestors[0].filename.as_deref(), Some("/usr/bin/dpkg"));
    table.apply(&event(31, 30, Body::Exit(Exit::from_raw(0))));
    assert!(table.lineage(31).is_none(), "an exit frees the lineage");
}

#[test]
fn processes_whose_exit_was_lost_are_swept_as_the_table_grows() {
    // Even pids run; odd ones exited without the table hearing of it.
    let mut table = ProcessTable::detached().with_liveness(|pid| pid % 2 == 0);
    let exec = |pid| {
        event(
            pid,
            1,
            Body::Exec(Exec {
                filename: "/usr/bin/tool".into(),
                ..Exec::default()
            }),
        )
    };
    for pid in 2..(2 + super::SWEEP_FLOOR as u32) {
        table.apply(&exec(pid));
    }
    assert_eq!(table.len(), super::SWEEP_FLOOR / 2, "the gone half swept");
    assert!(table.get(3).is_none() && table.lineage(3).is_none());
    assert!(table.get(4).is_some() && table.lineage(4).is_some());
    // The next sweep waits for the table to double again.
    table.apply(&exec(100_001));
    assert_eq!(table.len(), super::SWEEP_FLOOR / 2 + 1);
}

/// Logins a fake `/proc` holds: pid 40 was given one by its login daemon
/// between fork and exec; every read is counted.
static LOGIN_READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn fake_login(pid: u32) -> Option<Login> {
    LOGIN_READS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Some(match pid {
        40 | 41 => Login {
            uid: Some(1000),
            session: Some(3),
        },
        _ => Login::default(),
    })
}

#[test]
fn the_login_is_read_at_exec_until_set_then_inherited() {
    use std::sync::atomic::Ordering;
    let mut table = ProcessTable::detached();
    table.login = Some(fake_login);
    let exec = |name: &str| {
        Body::Exec(Exec {
            filename: name.into(),
            ..Exec::default()
        })
    };
    let fork = |child| {
        Body::Fork(crate::events::Fork {
            child_pid: child,
            sibling: false,
        })
    };
    // sshd runs without a login; its child gets one, then runs the shell.
    let sshd = table.apply(&event(39, 1, exec("/usr/sbin/sshd")));
    assert_eq!(sshd.login_uid, None);
    table.apply(&event(39, 1, fork(40)));
    let shell = table.apply(&event(40, 39, exec("/bin/bash")));
    assert_eq!((shell.login_uid, shell.session_id), (Some(1000), Some(3)));
    let reads = LOGIN_READS.load(Ordering::SeqCst);
    // What the shell starts inherits it without a read.
    table.apply(&event(40, 39, fork(41)));
    let tool = table.apply(&event(41, 40, exec("/usr/bin/sudo")));
    assert_eq!(tool.login_uid, Some(1000));
    assert_eq!(
        LOGIN_READS.load(Ordering::SeqCst),
        reads,
        "no read once set"
    );
}
