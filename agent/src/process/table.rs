//! The in-memory process table and how events update it.
use std::collections::HashMap;

use crate::events::{Body, Event, FileId, ParentContext, ProcessContext};

/// What the agent knows of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Command name.
    pub comm: String,
    /// Path of the executable it runs, when known.
    pub exe: Option<String>,
    /// Identity of that executable, when known.
    pub exe_id: Option<FileId>,
    /// Arguments, at most [`crate::limits::ARGV_MAX_BYTES`] of them.
    pub argv: Vec<String>,
    /// Whether `argv` was cut.
    pub argv_truncated: bool,
    /// Boot-time nanoseconds of the start or last exec, when known.
    pub start_ktime_ns: Option<u64>,
}

/// pid → [`ProcessInfo`] for every live process the agent knows.
#[derive(Debug, Default)]
pub struct ProcessTable {
    entries: HashMap<u32, ProcessInfo>,
    /// Reads a process the table does not hold; `/proc` in production.
    lookup: Option<fn(u32) -> Option<ProcessInfo>>,
    /// Counts command lines from `/proc` cut at the cap.
    truncated: Option<prometheus::IntCounter>,
}

impl ProcessTable {
    /// An empty table that falls back to `/proc` for unknown pids.
    pub fn new() -> Self {
        Self {
            entries: HashMap::new(),
            lookup: Some(super::procfs::read),
            truncated: None,
        }
    }

    /// Counts each command line read from `/proc` and cut at the cap in
    /// `counter`.
    pub fn count_truncations(&mut self, counter: prometheus::IntCounter) {
        self.truncated = Some(counter);
    }

    fn counted(&self, info: ProcessInfo) -> ProcessInfo {
        if info.argv_truncated
            && let Some(counter) = &self.truncated
        {
            counter.inc();
        }
        info
    }

    /// An empty table that never reads `/proc` (unit tests, replay).
    pub fn detached() -> Self {
        Self::default()
    }

    /// Adds every process currently in `/proc`.
    pub fn seed_from_proc(&mut self) -> usize {
        for info in super::procfs::read_all() {
            let info = self.counted(info);
            self.entries.entry(info.pid).or_insert(info);
        }
        self.entries.len()
    }

    /// Number of processes held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `pid`, if held.
    pub fn get(&self, pid: u32) -> Option<&ProcessInfo> {
        self.entries.get(&pid)
    }

    /// Updates the table with `event` and returns the process context the
    /// event should carry. Exit events are answered from the entry, which is
    /// then removed.
    pub fn apply(&mut self, event: &Event) -> ProcessContext {
        let task = &event.task;
        let info = match &event.body {
            Body::Exec(exec) => {
                // The path the kernel walked from the loaded executable;
                // without it, the kernel's link to it while the process
                // lives, and the name as spelled as the last resort.
                let exe = exec
                    .loaded
                    .clone()
                    .or_else(|| {
                        std::fs::read_link(format!("/proc/{}/exe", task.pid))
                            .ok()
                            .map(|p| p.to_string_lossy().into_owned())
                    })
                    .or_else(|| Some(exec.filename.clone()));
                let info = ProcessInfo {
                    pid: task.pid,
                    ppid: task.ppid,
                    uid: task.uid,
                    gid: task.gid,
                    comm: task.comm.clone(),
                    exe,
                    exe_id: exec.identity(),
                    argv: exec.argv.clone(),
                    argv_truncated: exec.argv_truncated,
                    start_ktime_ns: Some(event.ktime_ns),
                };
                self.entries.insert(task.pid, info.clone());
                Some(info)
            }
            Body::Exit(_) => self.entries.remove(&task.pid),
            Body::File(_) | Body::Cpu(_) | Body::Connect(_) => self.entries.get(&task.pid).cloned(),
        };
        let info = info.or_else(|| self.load(task.pid));
        // Probes that may not read the task (cgroup hooks) send ppid 0.
        let ppid = if task.ppid == 0 {
            info.as_ref().map_or(0, |i| i.ppid)
        } else {
            task.ppid
        };
        let parent = self.get(ppid).map(|p| ParentContext {
            pid: p.pid,
            exe: p.exe.clone(),
            comm: Some(p.comm.clone()),
        });
        ProcessContext {
            pid: task.pid,
            tid: task.tid,
            ppid,
            uid: task.uid,
            gid: task.gid,
            comm: task.comm.clone(),
            exe: info.as_ref().and_then(|i| i.exe.clone()),
            exe_id: info.as_ref().and_then(|i| i.exe_id),
            argv: info.as_ref().map(|i| i.argv.clone()).unwrap_or_default(),
            argv_truncated: info.as_ref().is_some_and(|i| i.argv_truncated),
            cgroup_id: task.cgroup_id,
            start_ktime_ns: info.as_ref().and_then(|i| i.start_ktime_ns),
            parent: parent.or(Some(ParentContext {
                pid: ppid,
                exe: None,
                comm: None,
            })),
        }
    }

    /// The context of a running process, from the table or `/proc`.
    pub fn context_of(&mut self, pid: u32) -> ProcessContext {
        let info = self.get(pid).cloned().or_else(|| self.load(pid));
        let parent = info
            .as_ref()
            .and_then(|i| self.get(i.ppid).cloned().or_else(|| self.load(i.ppid)));
        match info {
            Some(i) => ProcessContext {
                pid,
                tid: pid,
                ppid: i.ppid,
                uid: i.uid,
                gid: i.gid,
                comm: i.comm,
                exe: i.exe,
                exe_id: i.exe_id,
                argv: i.argv,
                argv_truncated: i.argv_truncated,
                cgroup_id: 0,
                start_ktime_ns: i.start_ktime_ns,
                parent: parent.map(|p| ParentContext {
                    pid: p.pid,
                    exe: p.exe,
                    comm: Some(p.comm),
                }),
            },
            None => ProcessContext {
                pid,
                tid: pid,
                ..ProcessContext::default()
            },
        }
    }

    /// Reads an unknown, still-running process and keeps it.
    fn load(&mut self, pid: u32) -> Option<ProcessInfo> {
        let info = self.counted((self.lookup?)(pid)?);
        self.entries.insert(pid, info.clone());
        Some(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Exec, Exit, Task};

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
}
