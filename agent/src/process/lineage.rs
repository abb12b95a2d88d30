//! Lineage: each process's own image and the chain of images above it,
//! kept from fork and exec (and read from `/proc` for processes that were
//! there first), so a policy can ask where a process comes from
//! (`ancestor_exe`), not only what it is.
//!
//! A chain is copied when a process is made and never follows later
//! reparenting: a process whose parent exits keeps its origin, and no
//! process can adopt another's. Each chain is cut at the configured depth.
use std::{collections::HashMap, io::Read as _, path::Path, sync::Arc};

use prometheus::IntCounter;

use super::ProcessInfo;
use crate::events::Ancestor;

/// Ancestors kept per process unless the settings say otherwise.
pub const DEFAULT_ANCESTRY_DEPTH: usize = 16;

/// `process:` in the agent's configuration.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Ancestors kept per process (default 16).
    pub ancestry_depth: Option<usize>,
    /// cgroups whose identity (path, unit, container) is kept (default
    /// 4 096).
    pub cgroup_cache: Option<usize>,
}

impl ProcessConfig {
    /// The depth in force.
    pub fn depth(&self) -> usize {
        self.ancestry_depth.unwrap_or(DEFAULT_ANCESTRY_DEPTH)
    }

    /// The identity cache's bound in force.
    pub fn cgroup_cache(&self) -> usize {
        self.cgroup_cache
            .unwrap_or(crate::identity::DEFAULT_CGROUP_CACHE)
            .max(1)
    }
}

/// One process's place in the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Its current image (shared with every event that carries it).
    pub image: Arc<Ancestor>,
    /// Whether `image` came from its own exec (or `/proc`), rather than
    /// being its parent's, copied at fork.
    pub own_image: bool,
    /// Ancestors, nearest first.
    pub ancestors: Arc<[Ancestor]>,
}

/// What `/proc` says of a process that just exec'd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// `/proc/PID/exe`.
    pub exe: Option<String>,
    /// `/proc/PID/cwd`, to make a relative exec'd name absolute.
    pub cwd: Option<String>,
}

/// Reads `/proc/PID/exe`, and `/proc/PID/cwd` when `relative` (the exec'd
/// name needs it).
pub fn resolve_from_proc(pid: u32, relative: bool) -> Resolved {
    let link = |what: &str| {
        std::fs::read_link(format!("/proc/{pid}/{what}"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    };
    Resolved {
        exe: link("exe"),
        cwd: relative.then(|| link("cwd")).flatten(),
    }
}

/// Lineage of every process the table knows.
#[derive(Debug)]
pub struct Lineages {
    by_pid: HashMap<u32, Lineage>,
    depth: usize,
    truncated: Option<IntCounter>,
}

impl Default for Lineages {
    fn default() -> Self {
        Self::new(DEFAULT_ANCESTRY_DEPTH)
    }
}

impl Lineages {
    /// Chains of at most `depth` ancestors.
    pub fn new(depth: usize) -> Self {
        Self {
            by_pid: HashMap::new(),
            depth,
            truncated: None,
        }
    }

    /// Ancestors a chain keeps at most.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Counts every chain cut at the depth in `counter`.
    pub fn count_truncations(&mut self, counter: IntCounter) {
        self.truncated = Some(counter);
    }

    /// The lineage of `pid`, if known.
    pub fn get(&self, pid: u32) -> Option<&Lineage> {
        self.by_pid.get(&pid)
    }

    /// Keeps only the lineages of pids for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.by_pid.retain(|&pid, _| keep(pid));
    }

    /// Forgets `pid` (it exited); returns what was known.
    pub fn remove(&mut self, pid: u32) -> Option<Lineage> {
        self.by_pid.remove(&pid)
    }

    /// `front` followed by `rest`, cut at the depth.
    fn chain(&self, front: Option<&Ancestor>, rest: &Arc<[Ancestor]>) -> Arc<[Ancestor]> {
        let Some(front) = front else {
            return rest.clone();
        };
        let total = rest.len() + 1;
        if total > self.depth
            && let Some(counter) = &self.truncated
        {
            counter.inc();
        }
        std::iter::once(front)
            .chain(rest.iter())
            .take(self.depth)
            .cloned()
            .collect()
    }

    /// `creator` made process `child` at `ktime_ns`; a `sibling` (made with
    /// `CLONE_PARENT`) descends from the creator's parent instead. The child
    /// runs the creator's image until it execs.
    pub fn forked(&mut self, creator: u32, child: u32, ktime_ns: u64, sibling: bool) {
        let Some(from) = self.by_pid.get(&creator) else {
            return;
        };
        let ancestors = if sibling {
            from.ancestors.clone()
        } else {
            self.chain(Some(&from.image), &from.ancestors)
        };
        let image = Ancestor {
            pid: child,
            start_ktime_ns: Some(ktime_ns),
            ..(*from.image).clone()
        };
        self.by_pid.insert(
            child,
            Lineage {
                image: Arc::new(image),
                own_image: false,
                ancestors,
            },
        );
    }

    /// Process `pid` (child of `ppid`) exec'd `filename` at `ktime_ns`. Its
    /// previous image becomes its nearest ancestor when that image was its
    /// own, so a script re-exec'd through `#!/usr/bin/env` keeps the script.
    pub fn execed(
        &mut self,
        pid: u32,
        ppid: u32,
        ktime_ns: u64,
        filename: &str,
        resolved: Resolved,
    ) -> &Lineage {
        let ancestors = match self.by_pid.get(&pid) {
            Some(prev) if prev.own_image => self.chain(Some(&prev.image), &prev.ancestors),
            Some(prev) => prev.ancestors.clone(),
            None => match self.by_pid.get(&ppid) {
                Some(parent) => self.chain(Some(&parent.image), &parent.ancestors),
                None => Arc::from([]),
            },
        };
        let image = Ancestor {
            pid,
            start_ktime_ns: Some(ktime_ns),
            exe: resolved.exe,
            filename: Some(absolute(filename, resolved.cwd.as_deref())),
        };
        self.by_pid.insert(
            pid,
            Lineage {
                image: Arc::new(image),
                own_image: true,
                ancestors,
            },
        );
        &self.by_pid[&pid]
    }

    /// Records a process read from `/proc`, under its parent's lineage when
    /// that is known.
    pub fn loaded(&mut self, info: &ProcessInfo) -> &Lineage {
        let ancestors = match self.by_pid.get(&info.ppid) {
            Some(parent) if info.ppid != info.pid => {
                self.chain(Some(&parent.image), &parent.ancestors)
            }
            _ => Arc::from([]),
        };
        self.by_pid.insert(
            info.pid,
            Lineage {
                image: Arc::new(image_of(info)),
                own_image: true,
                ancestors,
            },
        );
        &self.by_pid[&info.pid]
    }

    /// Records every process of a `/proc` snapshot, each under the chain of
    /// its parents in the snapshot.
    pub fn seed(&mut self, infos: &HashMap<u32, ProcessInfo>) {
        for info in infos.values() {
            if self.by_pid.contains_key(&info.pid) {
                continue;
            }
            let mut ancestors = Vec::new();
            let mut ppid = info.ppid;
            while ppid != 0 && ancestors.len() <= self.depth {
                let Some(parent) = infos.get(&ppid) else {
                    break;
                };
                ancestors.push(image_of(parent));
                if parent.ppid == ppid {
                    break;
                }
                ppid = parent.ppid;
            }
            if ancestors.len() > self.depth {
                ancestors.truncate(self.depth);
                if let Some(counter) = &self.truncated {
                    counter.inc();
                }
            }
            self.by_pid.insert(
                info.pid,
                Lineage {
                    image: Arc::new(image_of(info)),
                    own_image: true,
                    ancestors: ancestors.into(),
                },
            );
        }
    }
}

/// `name` made absolute against `cwd`, with `.` steps dropped (`..` is
/// kept: it cannot be resolved lexically, and no policy path matches it).
fn absolute(name: &str, cwd: Option<&str>) -> String {
    let joined = match cwd {
        Some(cwd) if !name.starts_with('/') => format!("{}/{name}", cwd.trim_end_matches('/')),
        _ => name.to_string(),
    };
    if !joined.starts_with('/') {
        return joined;
    }
    let parts: Vec<&str> = joined
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// The image of a process read from `/proc`: its executable, and for a
/// script run by its interpreter the script, as binfmt_script lays out the
/// arguments (`INTERPRETER [ONE-OPTION] SCRIPT ...`) and only when that
/// file starts with `#!`. The command line is the process's own memory, so
/// for processes older than the agent this is what they say, not what the
/// kernel saw (README: "Ancestry").
fn image_of(info: &ProcessInfo) -> Ancestor {
    let script = match info.argv.as_slice() {
        [_, option, script, ..] if option.starts_with('-') && script.starts_with('/') => {
            Some(script)
        }
        [_, script, ..] if script.starts_with('/') => Some(script),
        _ => None,
    }
    .filter(|s| Some(s.as_str()) != info.exe.as_deref() && starts_with_shebang(Path::new(s)));
    Ancestor {
        pid: info.pid,
        start_ktime_ns: info.start_ktime_ns,
        exe: info.exe.clone(),
        filename: script.cloned().or_else(|| info.exe.clone()),
    }
}

fn starts_with_shebang(path: &Path) -> bool {
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"#!")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(exe: &str) -> Resolved {
        Resolved {
            exe: Some(exe.into()),
            cwd: Some("/home/u".into()),
        }
    }

    fn exes(lineage: &Lineage) -> Vec<&str> {
        lineage
            .ancestors
            .iter()
            .map(|a| a.filename.as_deref().unwrap_or("?"))
            .collect()
    }

    #[test]
    fn fork_and_exec_build_the_chain_a_script_keeps_its_name() {
        let mut l = Lineages::new(8);
        l.execed(10, 1, 1, "/usr/sbin/sshd", resolved("/usr/sbin/sshd"));
        l.forked(10, 11, 2, false);
        l.execed(
            11,
            10,
            3,
            "/usr/bin/ansible",
            resolved("/usr/bin/python3.11"),
        );
        let ansible = l.get(11).unwrap();
        assert_eq!(ansible.image.exe.as_deref(), Some("/usr/bin/python3.11"));
        assert_eq!(ansible.image.filename.as_deref(), Some("/usr/bin/ansible"));
        assert_eq!(
            exes(ansible),
            ["/usr/sbin/sshd"],
            "the fork copy is not kept"
        );
        // A worker forked from ansible, then a shell it runs.
        l.forked(11, 12, 4, false);
        l.execed(12, 11, 5, "sh", resolved("/usr/bin/dash"));
        let sh = l.get(12).unwrap();
        assert_eq!(sh.image.filename.as_deref(), Some("/home/u/sh"));
        assert_eq!(exes(sh), ["/usr/bin/ansible", "/usr/sbin/sshd"]);
        // The shell execs again: its own first image stays in the chain.
        l.execed(12, 11, 6, "/usr/bin/cp", resolved("/usr/bin/cp"));
        assert_eq!(
            exes(l.get(12).unwrap()),
            ["/home/u/sh", "/usr/bin/ansible", "/usr/sbin/sshd"]
        );
    }

    #[test]
    fn chains_are_cut_at_the_depth_and_counted() {
        let counter = IntCounter::new("t", "t").unwrap();
        let mut l = Lineages::new(2);
        l.count_truncations(counter.clone());
        l.execed(1, 0, 1, "/sbin/init", Resolved::default());
        for pid in 2..6 {
            l.forked(pid - 1, pid, pid as u64, false);
            l.execed(
                pid,
                pid - 1,
                pid as u64,
                &format!("/bin/p{pid}"),
                Resolved::default(),
            );
        }
        assert_eq!(exes(l.get(5).unwrap()), ["/bin/p4", "/bin/p3"]);
        assert!(counter.get() >= 1);
    }

    #[test]
    fn a_sibling_descends_from_the_creators_parent() {
        let mut l = Lineages::new(8);
        l.execed(1, 0, 1, "/sbin/init", Resolved::default());
        l.forked(1, 2, 2, false);
        l.execed(2, 1, 3, "/bin/a", Resolved::default());
        l.forked(2, 3, 4, true);
        assert_eq!(exes(l.get(3).unwrap()), ["/sbin/init"]);
    }

    #[test]
    fn relative_names_are_made_absolute() {
        assert_eq!(absolute("./x", Some("/tmp/d/")), "/tmp/d/x");
        assert_eq!(absolute("/usr/./bin//x", None), "/usr/bin/x");
        assert_eq!(absolute("../x", Some("/tmp")), "/tmp/../x");
    }

    #[test]
    fn seeded_scripts_are_named_only_when_the_file_is_a_script() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("salt-call");
        std::fs::write(&script, "#!/usr/bin/python3\n").unwrap();
        let data = dir.path().join("data.yaml");
        std::fs::write(&data, "a: 1\n").unwrap();
        let info = |argv: Vec<String>| ProcessInfo {
            pid: 5,
            ppid: 1,
            uid: 0,
            gid: 0,
            comm: "x".into(),
            exe: Some("/usr/bin/python3.11".into()),
            exe_id: None,
            exe_foreign: false,
            argv,
            argv_truncated: false,
            start_ktime_ns: None,
            login: Default::default(),
        };
        let s = script.display().to_string();
        let d = data.display().to_string();
        let image = image_of(&info(vec![
            "/usr/bin/python3".into(),
            "-E".into(),
            s.clone(),
        ]));
        assert_eq!(image.filename.as_deref(), Some(s.as_str()));
        let image = image_of(&info(vec!["/usr/bin/python3".into(), d]));
        assert_eq!(image.filename.as_deref(), Some("/usr/bin/python3.11"));
    }
}
