//! The in-memory process table and how events update it.
use std::collections::HashMap;

use super::lineage::{Lineage, Lineages, Resolved};
use crate::events::{Body, Event, FileId, ParentContext, ProcessContext};
use crate::identity::Identities;

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
    /// Whether `exe` names another file in the agent's view than `exe_id`.
    pub exe_foreign: bool,
    /// Arguments, at most [`crate::limits::ARGV_MAX_BYTES`] of them.
    pub argv: Vec<String>,
    /// Whether `argv` was cut.
    pub argv_truncated: bool,
    /// Boot-time nanoseconds of the start or last exec, when known.
    pub start_ktime_ns: Option<u64>,
    /// Login user id and audit session, when set.
    pub login: Login,
}

/// A process's login user id and audit session (`/proc/PID/loginuid`,
/// `sessionid`): set once by `pam_loginuid` and inherited by everything the
/// session starts, so a `sudo` or a setuid program keeps who logged in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Login {
    /// Login user id, `None` when unset.
    pub uid: Option<u32>,
    /// Audit session id, `None` when unset.
    pub session: Option<u32>,
}

/// pid → [`ProcessInfo`] for every live process the agent knows.
#[derive(Debug, Default)]
pub struct ProcessTable {
    entries: HashMap<u32, ProcessInfo>,
    lineages: Lineages,
    /// Reads a process the table does not hold; `/proc` in production.
    lookup: Option<fn(u32) -> Option<ProcessInfo>>,
    /// Counts command lines from `/proc` cut at the cap.
    truncated: Option<prometheus::IntCounter>,
    /// Reads the executable and directory of a process that exec'd.
    resolve: Option<fn(u32, bool) -> Resolved>,
    /// Whether a pid still runs; `None` never sweeps.
    alive: Option<fn(u32) -> bool>,
    /// Entries held after the last sweep.
    swept_len: usize,
    /// cgroup id → path, unit, container.
    identities: Identities,
    /// Reads the login of a process that exec'd.
    login: Option<fn(u32) -> Option<Login>>,
}

/// The table is swept when it holds this many entries or twice as many as
/// after the last sweep, whichever is more: a sweep costs a syscall per
/// entry, so it is amortised over the growth that made it necessary.
const SWEEP_FLOOR: usize = 4096;

/// Whether `pid` names a process (a zombie included).
fn pid_alive(pid: u32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

impl ProcessTable {
    /// An empty table that falls back to `/proc` for unknown pids.
    pub fn new() -> Self {
        Self {
            entries: HashMap::new(),
            lineages: Lineages::default(),
            lookup: Some(super::procfs::read),
            truncated: None,
            resolve: Some(super::lineage::resolve_from_proc),
            alive: Some(pid_alive),
            swept_len: 0,
            identities: Identities::default(),
            login: Some(super::procfs::login),
        }
    }

    /// The login of `pid`, which just exec'd: what it inherited once set
    /// (`loginuid` is written once per session, by `pam_loginuid`);
    /// read while unset, for a login daemon writes it between its fork
    /// and its exec of the shell. A process already gone keeps what it
    /// inherited.
    fn login_at_exec(&self, pid: u32) -> Login {
        let inherited = self.entries.get(&pid).map(|i| i.login);
        match inherited {
            Some(login) if login.uid.is_some() => login,
            _ => self
                .login
                .and_then(|read| read(pid))
                .or(inherited)
                .unwrap_or_default(),
        }
    }

    /// Resolves cgroup ids through `identities`.
    pub fn with_identities(mut self, identities: Identities) -> Self {
        self.identities = identities;
        self
    }

    /// Uses `alive` to tell which pids still run when sweeping (tests).
    pub fn with_liveness(mut self, alive: fn(u32) -> bool) -> Self {
        self.alive = Some(alive);
        self
    }

    /// Drops the entries of processes that are gone, once the table has
    /// grown enough since the last sweep. Their exits were lost (the
    /// kernel's ring buffer was full): without this the table would grow
    /// with every lost exit until pids wrap.
    fn sweep_if_grown(&mut self) {
        let Some(alive) = self.alive else {
            return;
        };
        if self.entries.len() < self.swept_len.saturating_mul(2).max(SWEEP_FLOOR) {
            return;
        }
        let gone: Vec<u32> = self
            .entries
            .keys()
            .copied()
            .filter(|&pid| !alive(pid))
            .collect();
        for pid in &gone {
            self.entries.remove(pid);
        }
        self.lineages.retain(alive);
        self.swept_len = self.entries.len();
        tracing::debug!(
            dropped = gone.len(),
            kept = self.swept_len,
            "process table swept"
        );
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

    /// Keeps `lineages` (their depth and counter) instead of the default.
    pub fn with_lineages(mut self, lineages: Lineages) -> Self {
        self.lineages = lineages;
        self
    }

    /// Adds every process currently in `/proc`.
    pub fn seed_from_proc(&mut self) -> usize {
        let snapshot: HashMap<u32, ProcessInfo> = super::procfs::read_all()
            .into_iter()
            .map(|info| {
                let info = self.counted(info);
                (info.pid, info)
            })
            .collect();
        self.lineages.seed(&snapshot);
        for (pid, info) in snapshot {
            self.entries.entry(pid).or_insert(info);
        }
        self.entries.len()
    }

    /// The lineage of `pid`, if known.
    pub fn lineage(&self, pid: u32) -> Option<&Lineage> {
        self.lineages.get(pid)
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
        let mut lineage = None;
        let info = match &event.body {
            Body::Exec(exec) => {
                let relative = !exec.filename.starts_with('/');
                let resolved = self
                    .resolve
                    .map(|r| r(task.pid, relative))
                    .unwrap_or_default();
                // The path the kernel walked from the loaded executable;
                // without it, the kernel's link to it while the process
                // lives, and the name as spelled as the last resort.
                let exe = exec
                    .loaded
                    .clone()
                    .or_else(|| resolved.exe.clone())
                    .or_else(|| Some(exec.filename.clone()));
                let info = ProcessInfo {
                    pid: task.pid,
                    ppid: task.ppid,
                    uid: task.uid,
                    gid: task.gid,
                    comm: task.comm.clone(),
                    exe_foreign: foreign(exe.as_deref(), exec.identity()),
                    exe,
                    exe_id: exec.identity(),
                    argv: exec.argv.clone(),
                    argv_truncated: exec.argv_truncated,
                    start_ktime_ns: Some(event.ktime_ns),
                    login: self.login_at_exec(task.pid),
                };
                self.entries.insert(task.pid, info.clone());
                self.sweep_if_grown();
                if self.lineages.get(task.pid).is_none() && self.lineages.get(task.ppid).is_none() {
                    self.load_chain(task.ppid);
                }
                lineage = Some(
                    self.lineages
                        .execed(
                            task.pid,
                            task.ppid,
                            event.ktime_ns,
                            &exec.filename,
                            resolved,
                        )
                        .clone(),
                );
                Some(info)
            }
            Body::Fork(fork) => {
                self.forked(task.pid, task.ppid, fork, event.ktime_ns);
                self.entries.get(&task.pid).cloned()
            }
            Body::Exit(_) => {
                lineage = self.lineages.remove(task.pid);
                self.entries.remove(&task.pid)
            }
            Body::File(_) | Body::Cpu(_) | Body::Connect(_) => self.entries.get(&task.pid).cloned(),
        };
        let info = info.or_else(|| self.load(task.pid));
        let lineage = lineage.or_else(|| self.lineages.get(task.pid).cloned());
        // Probes that may not read the task (cgroup hooks) send ppid 0.
        let ppid = if task.ppid == 0 {
            info.as_ref().map_or(0, |i| i.ppid)
        } else {
            task.ppid
        };
        let parent = self.get(ppid).map(|p| ParentContext {
            pid: p.pid,
            exe: p.exe.clone(),
            exe_foreign: p.exe_foreign,
            comm: Some(p.comm.clone()),
        });
        let (image, ancestors) = lineage
            .map(|l| (Some(l.image), l.ancestors))
            .unwrap_or_default();
        ProcessContext {
            pid: task.pid,
            tid: task.tid,
            ppid,
            uid: task.uid,
            gid: task.gid,
            comm: task.comm.clone(),
            exe_foreign: info.as_ref().is_some_and(|i| i.exe_foreign),
            exe: info.as_ref().and_then(|i| i.exe.clone()),
            exe_id: info.as_ref().and_then(|i| i.exe_id),
            argv: info.as_ref().map(|i| i.argv.clone()).unwrap_or_default(),
            argv_truncated: info.as_ref().is_some_and(|i| i.argv_truncated),
            cgroup_id: task.cgroup_id,
            identity: self.identities.of(task.cgroup_id),
            login_uid: info.as_ref().and_then(|i| i.login.uid),
            session_id: info.as_ref().and_then(|i| i.login.session),
            start_ktime_ns: info.as_ref().and_then(|i| i.start_ktime_ns),
            parent: parent.or(Some(ParentContext {
                pid: ppid,
                exe: None,
                exe_foreign: false,
                comm: None,
            })),
            image,
            ancestors,
        }
    }

    /// Process `creator` (child of `creator_ppid`) made `fork.child_pid`:
    /// the child starts as a copy of the creator.
    fn forked(&mut self, creator: u32, creator_ppid: u32, fork: &crate::events::Fork, ktime: u64) {
        if self.lineages.get(creator).is_none() {
            self.load_chain(creator);
        }
        let Some(from) = self.entries.get(&creator) else {
            return;
        };
        let child = ProcessInfo {
            pid: fork.child_pid,
            ppid: if fork.sibling { creator_ppid } else { creator },
            start_ktime_ns: Some(ktime),
            ..from.clone()
        };
        self.entries.insert(fork.child_pid, child);
        self.sweep_if_grown();
        self.lineages
            .forked(creator, fork.child_pid, ktime, fork.sibling);
    }

    /// The context of a running process, from the table or `/proc`.
    pub fn context_of(&mut self, pid: u32) -> ProcessContext {
        let info = self.get(pid).cloned().or_else(|| self.load(pid));
        let parent = info
            .as_ref()
            .and_then(|i| self.get(i.ppid).cloned().or_else(|| self.load(i.ppid)));
        let (image, ancestors) = self
            .lineages
            .get(pid)
            .map(|l| (Some(l.image.clone()), l.ancestors.clone()))
            .unwrap_or_default();
        let (cgroup_id, identity) = self.identities.of_pid(pid);
        match info {
            Some(i) => ProcessContext {
                pid,
                tid: pid,
                ppid: i.ppid,
                uid: i.uid,
                gid: i.gid,
                comm: i.comm,
                exe_foreign: i.exe_foreign,
                exe: i.exe,
                exe_id: i.exe_id,
                argv: i.argv,
                argv_truncated: i.argv_truncated,
                cgroup_id,
                identity,
                login_uid: i.login.uid,
                session_id: i.login.session,
                start_ktime_ns: i.start_ktime_ns,
                parent: parent.map(|p| ParentContext {
                    pid: p.pid,
                    exe: p.exe,
                    exe_foreign: p.exe_foreign,
                    comm: Some(p.comm),
                }),
                image,
                ancestors,
            },
            None => ProcessContext {
                pid,
                tid: pid,
                ..ProcessContext::default()
            },
        }
    }

    /// Reads an unknown, still-running process and keeps it, with its
    /// lineage under whatever of its parents the table knows.
    fn load(&mut self, pid: u32) -> Option<ProcessInfo> {
        let info = self.counted((self.lookup?)(pid)?);
        if self.lineages.get(info.ppid).is_none() && info.ppid != pid {
            self.load_chain(info.ppid);
        }
        self.lineages.loaded(&info);
        self.entries.insert(pid, info.clone());
        Some(info)
    }

    /// Reads `pid` and those of its parents the table does not know from
    /// `/proc` (a fork event was lost, or the process predates the agent and
    /// escaped the seeding), eldest first, so each lands under its parent.
    fn load_chain(&mut self, pid: u32) {
        let Some(lookup) = self.lookup else {
            return;
        };
        let mut missing = Vec::new();
        let mut next = pid;
        // Parents farther up than a chain keeps are not worth reading.
        let limit = self.lineages.depth() + 1;
        while next != 0 && missing.len() < limit && self.lineages.get(next).is_none() {
            let Some(info) = lookup(next) else {
                break;
            };
            next = if info.ppid == info.pid { 0 } else { info.ppid };
            missing.push(info);
        }
        for info in missing.into_iter().rev() {
            self.lineages.loaded(&info);
            self.entries.entry(info.pid).or_insert(info);
        }
    }
}

/// Whether `path`, in the agent's view, is another file than `id`, the one
/// the kernel loaded: the path was walked inside another mount namespace,
/// where its owner decides what sits at it.
fn foreign(path: Option<&str>, id: Option<FileId>) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let (Some(path), Some(id)) = (path, id) else {
        return false;
    };
    std::fs::metadata(path).map_or(true, |m| {
        (crate::fsio::encode_dev(m.dev()), m.ino()) != (id.dev, id.ino)
    })
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
