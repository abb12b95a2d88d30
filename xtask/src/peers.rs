//! The tools reflex is compared with, started and stopped for one
//! measurement each: auditd with watch rules, a bpftrace one-liner on the
//! same tracepoint, and an inotify-based restorer.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

/// A running peer; stopped on [`Peer::stop`].
pub struct Peer {
    child: Option<Child>,
    cleanup: Vec<Vec<String>>,
}

impl Peer {
    /// auditd with a `-w FILE -p wa` rule per file, its daemon on `cpu`.
    pub fn auditd(files: &[std::path::PathBuf], work: &Path, cpu: usize) -> Result<Self> {
        let mut text = String::from("-D\n");
        for f in files {
            text.push_str(&format!("-w {} -p wa -k reflex-bench\n", f.display()));
        }
        Self::auditd_with(&text, work, cpu)
    }

    /// auditd with a CIS-like rule set: every execve and connect, writes
    /// and attribute changes under /etc, /usr/bin, /usr/sbin, /root/.ssh.
    pub fn auditd_cis(work: &Path, cpu: usize) -> Result<Self> {
        let mut text = String::from("-D\n");
        for syscall in ["execve", "connect"] {
            text.push_str(&format!(
                "-a always,exit -F arch=b64 -S {syscall} -k reflex-bench\n"
            ));
        }
        for dir in ["/etc", "/usr/bin", "/usr/sbin", "/root/.ssh"] {
            text.push_str(&format!("-w {dir} -p wa -k reflex-bench\n"));
        }
        Self::auditd_with(&text, work, cpu)
    }

    /// Whether an auditd runs that the bench did not start: then the bench
    /// leaves audit alone (its cleanup would delete that daemon's rules).
    pub fn auditd_already_running() -> bool {
        fs::read_dir("/proc").is_ok_and(|dir| {
            dir.filter_map(Result::ok).any(|e| {
                fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "auditd")
            })
        })
    }

    fn auditd_with(text: &str, work: &Path, cpu: usize) -> Result<Self> {
        let rules = work.join("audit.rules");
        fs::write(&rules, text)?;
        let child = pinned(cpu, "auditd")
            .arg("-n")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting auditd (apt-get install auditd)")?;
        let peer = Self {
            child: Some(child),
            cleanup: vec![
                vec!["auditctl".into(), "-D".into()],
                vec!["auditctl".into(), "-e".into(), "0".into()],
            ],
        };
        std::thread::sleep(Duration::from_millis(500));
        let loaded = run(&["auditctl", "-e", "1"])
            .and_then(|()| run(&["auditctl", "-R", &rules.display().to_string()]));
        if let Err(e) = loaded {
            peer.stop()?;
            return Err(e);
        }
        Ok(peer)
    }

    /// bpftrace with a path filter on `sys_enter_openat`, its reader on `cpu`.
    pub fn bpftrace(cpu: usize) -> Result<Self> {
        let mut child = pinned(cpu, "bpftrace")
            .args([
                "-e",
                "tracepoint:syscalls:sys_enter_openat /str(args->filename) == \"/etc/reflex-bench-none\"/ { @n = count(); }",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace (apt-get install bpftrace)")?;
        let out = child.stdout.take().context("bpftrace stdout")?;
        let mut lines = BufReader::new(out).lines();
        if !lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("Attaching"))
        {
            bail!("bpftrace did not attach");
        }
        std::thread::spawn(move || for _ in lines {});
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self {
            child: Some(child),
            cleanup: Vec::new(),
        })
    }

    /// An inotifywait loop that copies `baseline` back over `target` on any
    /// change: what a beacon plus a reactor does at best. It runs on `cpu`.
    pub fn inotify_restorer(target: &Path, baseline: &Path, cpu: usize) -> Result<Self> {
        let script = format!(
            "inotifywait -q -m -e close_write,attrib,move_self,delete_self {t} | while read -r _; do cmp -s {b} {t} || cp {b} {t}; done",
            t = target.display(),
            b = baseline.display()
        );
        let child = pinned(cpu, "setsid")
            .args(["/bin/sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the inotify restorer (apt-get install inotify-tools)")?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self {
            child: Some(child),
            cleanup: Vec::new(),
        })
    }

    /// Stops the peer and undoes what it set up.
    pub fn stop(mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // The restorer runs in its own session: end the whole group.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
        for argv in std::mem::take(&mut self.cleanup) {
            let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
            let _ = run(&refs);
        }
        Ok(())
    }
}

/// `program` started on one CPU, as the reflex agent is, so that the peers
/// and reflex are measured in the same placement.
fn pinned(cpu: usize, program: &str) -> Command {
    let mut command = Command::new("taskset");
    command.args(["-c", &cpu.to_string(), program]);
    command
}

fn run(argv: &[&str]) -> Result<()> {
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {}", argv[0]))?;
    if !status.success() {
        bail!("{} failed: {status}", argv.join(" "));
    }
    Ok(())
}

/// Whether `program` is on the PATH.
pub fn available(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
