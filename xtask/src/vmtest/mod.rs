//! `cargo xtask vmtest`: the root integration tests on other kernels.
//! Each Debian kernel boots under QEMU with the host's root mounted
//! read-only over 9p (a tmpfs overlay takes the writes), runs `reflex
//! doctor` and the chosen test binaries, and leaves their output in a
//! second 9p share; the host reads it back into a table and JSON.
mod image;
mod kernel;
mod report;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// Test binaries a quick run takes: one per family of events and the
/// enforcement paths that differ most between kernels.
pub const SMOKE: [&str; 4] = ["process_events", "file_revert", "exec_kill", "network"];

/// What `cargo xtask vmtest` was asked.
pub struct Options {
    /// `5.10`, `6.1`, `6.12` or `all`.
    pub kernel: String,
    /// Test binaries by name; `smoke` for [`SMOKE`], `all` for every one.
    pub tests: String,
    /// Extra arguments for every test binary (a name filter, `--test-threads`).
    pub test_args: Vec<String>,
    /// `tcg` (software, works everywhere) or `kvm`.
    pub accel: String,
    /// Longest a guest may run before it is stopped and counted failed.
    pub timeout: Duration,
}

/// Runs the matrix; fails when a kernel fails a test or does not finish.
pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let specs: Vec<_> = kernel::KERNELS
        .iter()
        .filter(|k| opts.kernel == "all" || opts.kernel == k.name)
        .collect();
    if specs.is_empty() {
        bail!("unknown kernel {}: 5.10, 6.1, 6.12 or all", opts.kernel);
    }
    let binaries = test_binaries(&opts.tests)?;
    // One test at a time: the guest's CPUs are emulated, and two agents
    // starting side by side there take longer than a test waits for one.
    let mut test_args = opts.test_args.clone();
    if !test_args.iter().any(|a| a.starts_with("--test-threads")) {
        test_args.push("--test-threads=1".into());
    }
    let cache = root.join("target/vmtest");
    fs::create_dir_all(&cache)?;
    let mut reports = Vec::new();
    for spec in specs {
        let kernel = kernel::prepare(spec, &cache)?;
        let out = cache.join(format!("out-{}", spec.name));
        let _ = fs::remove_dir_all(&out);
        fs::create_dir_all(&out)?;
        let initrd = cache.join(format!("initramfs-{}.cpio", spec.name));
        image::initramfs(&kernel, &initrd)?;
        fs::write(out.join("plan.sh"), plan(root, &binaries, &test_args))?;
        eprintln!(
            "xtask: vmtest: booting {} ({}) with {} test binaries",
            kernel.release,
            opts.accel,
            binaries.len()
        );
        let started = Instant::now();
        let finished = boot(&kernel, &initrd, &out, opts)?;
        let seconds = started.elapsed().as_secs_f64();
        let report = report::read(
            spec.name,
            &kernel.release,
            &out,
            &binaries,
            finished,
            seconds,
        )?;
        eprintln!("{}", report::table(std::slice::from_ref(&report)));
        reports.push(report);
    }
    let json = serde_json::to_string_pretty(&reports)?;
    fs::write(cache.join("report.json"), &json)?;
    println!("{}", report::table(&reports));
    println!("JSON: {}", cache.join("report.json").display());
    let bad: Vec<_> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.kernel.clone())
        .collect();
    if !bad.is_empty() {
        bail!("vmtest failed on {}", bad.join(", "));
    }
    Ok(())
}

/// Builds the agent and the test binaries as `cargo xtask test` does (the
/// agent optimised, the tests not), so a run after it builds nothing, and
/// returns `(name, path)` of each test binary `which` names.
fn test_binaries(which: &str) -> Result<Vec<(String, PathBuf)>> {
    cmd::cargo(&["build", "--release", "--package", "reflex"])?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["test", "--package", "reflex-tests", "--no-run"])
        .args(["--message-format", "json"])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut all = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        let in_tests = msg["package_id"]
            .as_str()
            .is_some_and(|p| p.contains("reflex-tests"));
        if let (true, true, Some(name), Some(exe)) = (
            is_test,
            in_tests,
            msg["target"]["name"].as_str(),
            msg["executable"].as_str(),
        ) {
            all.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    all.sort();
    let wanted: Vec<String> = match which {
        "all" => return Ok(all),
        "smoke" => SMOKE.iter().map(|s| s.to_string()).collect(),
        list => list.split(',').map(|s| s.trim().to_string()).collect(),
    };
    wanted
        .iter()
        .map(|w| {
            all.iter()
                .find(|(n, _)| n == w)
                .cloned()
                .with_context(|| format!("no test binary {w}"))
        })
        .collect()
}

/// The script the guest sources: environment, doctor, each test binary.
fn plan(root: &Path, binaries: &[(String, PathBuf)], args: &[String]) -> String {
    let bin = root.join("target/release/reflex");
    let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    let mut s = format!(
        "export REFLEX_BIN={bin} REFLEX_TEST_SKIPS=/vmtest-out/results/skips.tsv RUST_BACKTRACE=1\n\
         uname -r > /vmtest-out/results/uname\n\
         cat /sys/kernel/security/lsm > /vmtest-out/results/lsm 2>&1\n\
         cat /proc/mounts > /vmtest-out/results/mounts\n\
         $REFLEX_BIN doctor --policies {policies} > /vmtest-out/results/doctor.txt 2>&1\n\
         echo $? > /vmtest-out/results/doctor.rc\n\
         cd {tests}\n",
        bin = shell_quote(&bin.to_string_lossy()),
        policies = shell_quote(&root.join("policies").to_string_lossy()),
        tests = shell_quote(&root.join("tests").to_string_lossy()),
    );
    for (name, path) in binaries {
        s.push_str(&format!(
            "echo \"vmtest: {name} started\"\n\
             {exe} {args} > /vmtest-out/results/{name}.log 2>&1\n\
             echo $? > /vmtest-out/results/{name}.rc\n\
             echo \"vmtest: {name} exit $(cat /vmtest-out/results/{name}.rc)\"\n",
            exe = shell_quote(&path.to_string_lossy()),
            args = quoted.join(" "),
        ));
    }
    s
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Boots the guest and waits for it to power off; `false` when it ran past
/// the time limit and was stopped.
fn boot(kernel: &kernel::Kernel, initrd: &Path, out: &Path, opts: &Options) -> Result<bool> {
    let console = fs::File::create(out.join("console.log"))?;
    // A fresh, sparse ext4 disk for the guest's /tmp.
    let disk = out.join("tmp.img");
    cmd::status(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "nodiscard"])
            .arg(&disk)
            .arg("8G"),
    )?;
    let append = "console=ttyS0 panic=-1 loglevel=4 \
                  lsm=lockdown,capability,landlock,yama,apparmor,bpf";
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args([
            "-accel",
            &opts.accel,
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "4096",
        ])
        .args([
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe",
            disk.display()
        ))
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=vmout,security_model=none,multidevs=remap",
            out.display()
        ))
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    let mut guest = reflex_harness::ChildGuard::spawn(&mut command)
        .map_err(|e| anyhow::anyhow!("starting qemu-system-x86_64: {e}"))?;
    let waited = guest
        .wait_for(opts.timeout)
        .map_err(|e| anyhow::anyhow!("waiting for the guest: {e}"))?;
    drop(guest);
    let _ = fs::remove_file(&disk);
    match waited {
        Some(_) => Ok(true),
        None => {
            eprintln!(
                "xtask: vmtest: the guest ran past {:?}; stopped",
                opts.timeout
            );
            Ok(false)
        }
    }
}
