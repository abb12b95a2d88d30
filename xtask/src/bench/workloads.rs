//! B9: whole workloads (an exec storm, an untar to tmpfs, a `make -j2`)
//! timed with no agent, with reflex on the shipped `policies/` and with
//! auditd on a CIS-like rule set, in alternating rounds; then one more
//! reflex pass with the kernel's BPF statistics on, for each program's
//! cost on each workload (`progcost`).
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use nix::sched::{CpuSet, sched_setaffinity};
use serde::Serialize;

use super::{
    Agent, Bench, progcost,
    report::{Spread, spread},
    step,
};
use crate::peers;

/// Execs in the exec storm.
const EXECS: usize = 3_000;
/// Generated C files of the build.
const C_FILES: usize = 120;
/// Files taken from /usr/share when no toolchain has its sources.
const USR_SHARE_FILES: usize = 4_000;

/// One workload's times and ratios.
#[derive(Serialize)]
pub(super) struct WorkloadRow {
    /// `exec`, `untar` or `make`.
    pub(super) name: &'static str,
    pub(super) workload: String,
    pub(super) none_s: Spread,
    pub(super) reflex_s: Spread,
    pub(super) reflex_ratio: Spread,
    pub(super) auditd_s: Option<Spread>,
    pub(super) auditd_ratio: Option<Spread>,
    /// The profiled reflex run (BPF statistics on): its time and what each
    /// program cost in it.
    pub(super) profiled_s: f64,
    pub(super) programs: Vec<progcost::ProgramCost>,
}

/// B9's figures.
#[derive(Serialize)]
pub(super) struct Workloads {
    pub(super) runs: usize,
    pub(super) tar_source: String,
    /// Why auditd was left out, when it was.
    pub(super) auditd_skipped: Option<String>,
    pub(super) rows: Vec<WorkloadRow>,
}

/// The inputs made once per bench run.
struct Inputs {
    tarball: PathBuf,
    tar_files: usize,
    tar_source: String,
    make_dir: PathBuf,
    tmpfs: Tmpfs,
}

/// A tmpfs mounted by the bench under its work directory; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Result<Self> {
        fs::create_dir_all(at)?;
        quiet(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=2g", "reflex-bench"])
                .arg(at),
        )?;
        Ok(Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// What runs beside the workloads.
#[derive(Clone, Copy)]
enum Setup {
    None,
    Reflex,
    Auditd,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Self::None => "no agent",
            Self::Reflex => "reflex",
            Self::Auditd => "auditd",
        }
    }
}

const WORKLOADS: [Workload; 3] = [Workload::Exec, Workload::Untar, Workload::Make];

#[derive(Clone, Copy)]
enum Workload {
    Exec,
    Untar,
    Make,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Untar => "untar",
            Self::Make => "make",
        }
    }

    fn label(self, inputs: &Inputs) -> String {
        match self {
            Self::Exec => format!("{EXECS} /bin/true execs from a shell loop"),
            Self::Untar => format!("untar of {} files to tmpfs", inputs.tar_files),
            Self::Make => format!("make -j2 of {C_FILES} small C files"),
        }
    }

    /// Seconds the workload took; what it needs undone before is undone
    /// outside the timing.
    fn run(self, inputs: &Inputs) -> Result<f64> {
        let mut command = match self {
            Self::Exec => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(format!(
                    "i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done"
                ));
                c
            }
            Self::Untar => {
                let dest = inputs.tmpfs.0.join("untar");
                if dest.exists() {
                    fs::remove_dir_all(&dest)?;
                }
                fs::create_dir_all(&dest)?;
                let mut c = Command::new("tar");
                c.arg("-xf").arg(&inputs.tarball).arg("-C").arg(dest);
                c
            }
            Self::Make => {
                quiet(
                    Command::new("make")
                        .args(["-s", "clean"])
                        .current_dir(&inputs.make_dir),
                )?;
                let mut c = Command::new("make");
                c.args(["-s", "-j2"]).current_dir(&inputs.make_dir);
                c
            }
        };
        let start = Instant::now();
        quiet(&mut command)?;
        Ok(start.elapsed().as_secs_f64())
    }
}

/// Runs B9: `plan.runs` rounds (5; quick: 3) of every workload with no
/// agent, reflex and auditd, then the profiled reflex pass.
pub(super) fn measure(bench: &Bench, root: &Path) -> Result<Workloads> {
    let runs = if bench.quick { 3 } else { 5 };
    let policies = bench.work.join("shipped-policies");
    fs::create_dir_all(&policies)?;
    for entry in fs::read_dir(root.join("policies"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "yaml") {
            fs::copy(&path, policies.join(path.file_name().unwrap_or_default()))?;
        }
    }
    let inputs = prepare(bench.work)?;
    // The workloads use every CPU (make -j2); the agent and auditd stay
    // on their own CPU as in the other benchmarks.
    unpin(bench.cpus)?;
    let auditd_skipped = if !(peers::available("auditd") && peers::available("auditctl")) {
        Some("auditd is not installed".to_string())
    } else if peers::Peer::auditd_already_running() {
        Some("an auditd the bench did not start is running".to_string())
    } else {
        None
    };
    let state = bench.work.join("state-workloads");
    step(format_args!("B9 workloads: warm-up"));
    for w in WORKLOADS {
        w.run(&inputs)?;
    }
    let mut none = vec![Vec::new(); WORKLOADS.len()];
    let mut reflex = vec![Vec::new(); WORKLOADS.len()];
    let mut auditd = vec![Vec::new(); WORKLOADS.len()];
    let all =
        |inputs: &Inputs| -> Result<Vec<f64>> { WORKLOADS.iter().map(|w| w.run(inputs)).collect() };
    let mut setups = vec![Setup::None, Setup::Reflex];
    if auditd_skipped.is_none() {
        setups.push(Setup::Auditd);
    }
    for round in 0..runs {
        // Each round starts with another setup, so that what one leaves
        // behind (caches, a daemon's exit) does not always favour the next.
        for k in 0..setups.len() {
            let setup = setups[(round + k) % setups.len()];
            step(format_args!(
                "B9 workloads: round {}/{runs}, {}",
                round + 1,
                setup.name()
            ));
            let (times, into) = match setup {
                Setup::None => (all(&inputs)?, &mut none),
                Setup::Reflex => {
                    let agent = Agent::start(bench.bin, &policies, &state, bench.peer_cpu)?;
                    let timed = all(&inputs);
                    agent.stop()?;
                    (timed?, &mut reflex)
                }
                Setup::Auditd => {
                    let peer = peers::Peer::auditd_cis(bench.work, bench.peer_cpu)?;
                    let timed = all(&inputs);
                    peer.stop()?;
                    (timed?, &mut auditd)
                }
            };
            for (i, t) in times.into_iter().enumerate() {
                into[i].push(t);
            }
        }
    }

    step(format_args!("B9 workloads: reflex with BPF statistics on"));
    let agent = Agent::start(bench.bin, &policies, &state, bench.peer_cpu)?;
    let profiled = profile(&agent, &inputs);
    agent.stop()?;
    let profiled = profiled?;

    let ratio =
        |with: &[f64], base: &[f64]| spread(with.iter().zip(base).map(|(w, b)| w / b).collect());
    let rows = WORKLOADS
        .iter()
        .zip(profiled)
        .enumerate()
        .map(|(i, (w, (profiled_s, programs)))| {
            let has_auditd = !auditd[i].is_empty();
            WorkloadRow {
                name: w.name(),
                workload: w.label(&inputs),
                reflex_ratio: ratio(&reflex[i], &none[i]),
                auditd_ratio: has_auditd.then(|| ratio(&auditd[i], &none[i])),
                none_s: spread(none[i].clone()),
                reflex_s: spread(reflex[i].clone()),
                auditd_s: has_auditd.then(|| spread(auditd[i].clone())),
                profiled_s,
                programs,
            }
        })
        .collect();
    Ok(Workloads {
        runs,
        tar_source: inputs.tar_source.clone(),
        auditd_skipped,
        rows,
    })
}

/// Each workload once under `agent` with `kernel.bpf_stats_enabled=1`:
/// its time and each program's runs and run time.
fn profile(agent: &Agent, inputs: &Inputs) -> Result<Vec<(f64, Vec<progcost::ProgramCost>)>> {
    let _stats = progcost::StatsOn::enable()?;
    let names = progcost::names(agent.pid());
    let mut out = Vec::new();
    for w in WORKLOADS {
        let before = progcost::snapshot(agent.pid())?;
        let seconds = w.run(inputs)?;
        let after = progcost::snapshot(agent.pid())?;
        if after.is_empty() {
            bail!("the agent (pid {}) holds no BPF program", agent.pid());
        }
        out.push((seconds, progcost::diff(&before, &after, &names)));
    }
    Ok(out)
}

/// The tarball, the C project and the tmpfs the untar writes to.
fn prepare(work: &Path) -> Result<Inputs> {
    step(format_args!("B9 workloads: preparing inputs"));
    let dir = work.join("workloads");
    fs::create_dir_all(&dir)?;
    let tarball = dir.join("source.tar");
    let (tar_files, tar_source) = match rust_sources() {
        Some(src) => {
            let files = count_files(&src);
            let parent = src.parent().context("rust sources have a parent")?;
            quiet(
                Command::new("tar")
                    .arg("-cf")
                    .arg(&tarball)
                    .arg("-C")
                    .arg(parent)
                    .arg("rust"),
            )?;
            (files, "the Rust toolchain's lib/rustlib/src".to_string())
        }
        None => {
            let list = dir.join("files.txt");
            let files: Vec<String> = walkdir::WalkDir::new("/usr/share")
                .sort_by_file_name()
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                .take(USR_SHARE_FILES)
                .map(|e| e.path().display().to_string())
                .collect();
            fs::write(&list, files.join("\n"))?;
            quiet(
                Command::new("tar")
                    .arg("-cf")
                    .arg(&tarball)
                    .arg("-T")
                    .arg(&list),
            )?;
            (
                files.len(),
                "the first files of /usr/share by name".to_string(),
            )
        }
    };
    let make_dir = dir.join("build");
    fs::create_dir_all(&make_dir)?;
    let mut main = String::new();
    for i in 0..C_FILES {
        fs::write(
            make_dir.join(format!("f{i:03}.c")),
            format!(
                "#include <string.h>\nunsigned f{i:03}(const char *s) {{\n  unsigned h = {i};\n  for (size_t k = 0; k < strlen(s); k++) h = h * 31u + (unsigned char)s[k];\n  return h;\n}}\n"
            ),
        )?;
        main.push_str(&format!("unsigned f{i:03}(const char *);\n"));
    }
    main.push_str("int main(int argc, char **argv) {\n  unsigned h = 0;\n");
    for i in 0..C_FILES {
        main.push_str(&format!("  h ^= f{i:03}(argv[0]);\n"));
    }
    main.push_str("  return (int)(h & 1) + argc - argc;\n}\n");
    fs::write(make_dir.join("main.c"), main)?;
    fs::write(
        make_dir.join("Makefile"),
        "SRCS := $(sort $(wildcard f*.c))\nOBJS := $(SRCS:.c=.o) main.o\nprog: $(OBJS)\n\tcc -o $@ $^\n%.o: %.c\n\tcc -O2 -c -o $@ $<\nclean:\n\trm -f *.o prog\n",
    )?;
    let tmpfs = Tmpfs::mount(&dir.join("tmpfs"))?;
    Ok(Inputs {
        tarball,
        tar_files,
        tar_source,
        make_dir,
        tmpfs,
    })
}

/// `lib/rustlib/src/rust` of the first rustup toolchain that has it.
fn rust_sources() -> Option<PathBuf> {
    let home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".rustup")))?;
    let mut toolchains: Vec<PathBuf> = fs::read_dir(home.join("toolchains"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    toolchains.sort();
    toolchains
        .into_iter()
        .map(|t| t.join("lib/rustlib/src/rust"))
        .find(|p| p.join("library").is_dir())
}

fn count_files(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

fn unpin(cpus: usize) -> Result<()> {
    let mut set = CpuSet::new();
    for cpu in 0..cpus {
        set.set(cpu)?;
    }
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).context("unpinning the workloads")?;
    Ok(())
}

/// Runs `command` with its output discarded; fails on a non-zero exit.
fn quiet(command: &mut Command) -> Result<()> {
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}
