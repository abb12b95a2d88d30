//! Installs what building and testing reflex needs, idempotently, saying
//! what it installs. With everything present it only checks (well under 5 s).
//! Recipe: `../shared/KERNEL.md`.
use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd;

/// Toolchain that builds the kernel crate (aya-build's default).
const NIGHTLY: &str = "nightly";
/// bpf-linker release line known to build against LLVM 22 here.
const BPF_LINKER_VERSION: &str = "0.13";
/// Debian packages bpf-linker builds against.
const LLVM_PACKAGES: [&str; 4] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
/// Debian packages the root tests talk to: a real Prometheus (and
/// promtool, which also tests the shipped alerting rules), a real
/// Alertmanager, a real config-management tool (Ansible) whose deploys the
/// agent must accept, tmux, the terminal `reflex status` is drawn in, and
/// nats-server, the fleet bus (JetStream) decisions are published on.
const TEST_PACKAGES: [&str; 5] = [
    "prometheus",
    "prometheus-alertmanager",
    "ansible-core",
    "tmux",
    "nats-server",
];
/// Where Debian puts LLVM 22.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Checks each requirement and installs the missing ones.
pub fn run() -> Result<()> {
    let mut installed = Vec::new();
    if !has_nightly() {
        bail!(
            "no `{NIGHTLY}` Rust toolchain: the kernel crate needs it (see ../shared/KERNEL.md); \
             install it with `rustup toolchain install {NIGHTLY}`"
        );
    }
    // rust-src builds `core` for BPF; clippy checks the probes for BPF in
    // `cargo xtask test`.
    for component in ["rust-src", "clippy"] {
        if !nightly_has(component) {
            cmd::status(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                NIGHTLY,
            ]))?;
            installed.push(format!("{component} (nightly)"));
        }
    }
    if !has_bpf_linker() {
        let missing = missing_debs(&LLVM_PACKAGES);
        if !missing.is_empty() {
            apt_install(&missing)?;
            installed.extend(missing.iter().map(|p| format!("{p} (apt)")));
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        cmd::status(
            Command::new(cargo)
                .args(["install", "bpf-linker", "--version"])
                .arg(format!("~{BPF_LINKER_VERSION}"))
                .env("LLVM_PREFIX", LLVM_PREFIX),
        )?;
        installed.push(format!("bpf-linker {BPF_LINKER_VERSION} (cargo install)"));
    }
    let missing = missing_debs(&TEST_PACKAGES);
    if !missing.is_empty() {
        apt_install(&missing)?;
        installed.extend(missing.iter().map(|p| format!("{p} (apt)")));
    }
    if installed.is_empty() {
        eprintln!("xtask: setup: everything is in place");
    } else {
        eprintln!("xtask: setup: installed {}", installed.join(", "));
    }
    Ok(())
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    cmd::output("id", &["-u"]).is_some_and(|uid| uid.trim() == "0")
}

fn has_nightly() -> bool {
    cmd::output("rustup", &["toolchain", "list"])
        .is_some_and(|list| list.lines().any(|l| l.starts_with(NIGHTLY)))
}

fn nightly_has(component: &str) -> bool {
    cmd::output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", NIGHTLY],
    )
    .is_some_and(|list| list.lines().any(|l| l.trim().starts_with(component)))
}

fn has_bpf_linker() -> bool {
    cmd::output("bpf-linker", &["--version"]).is_some_and(|v| {
        v.split_whitespace()
            .nth(1)
            .is_some_and(|ver| ver.starts_with(&format!("{BPF_LINKER_VERSION}.")))
    })
}

fn missing_debs(packages: &[&str]) -> Vec<String> {
    packages
        .iter()
        .filter(|p| {
            !cmd::output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

/// `apt-get update` then `apt-get install -y PACKAGES` (needs root).
pub fn apt_install(packages: &[String]) -> Result<()> {
    if !is_root() {
        bail!(
            "missing Debian packages {}; rerun as root so setup can install them",
            packages.join(" ")
        );
    }
    cmd::status(Command::new("apt-get").args(["update", "-q"]))?;
    cmd::status(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Clears group/other write bits on the shipped policies: a checkout made
/// under a permissive umask would otherwise be refused by the agent.
pub fn protect_policies(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            let mut perms = std::fs::metadata(&path)?.permissions();
            if perms.mode() & 0o022 != 0 {
                perms.set_mode(perms.mode() & !0o022);
                std::fs::set_permissions(&path, perms)?;
                eprintln!("xtask: made {} writable by its owner only", path.display());
            }
        }
    }
    Ok(())
}

/// The peers `cargo xtask bench` measures against (Debian packages).
const BENCH_PACKAGES: [&str; 3] = ["auditd", "bpftrace", "inotify-tools"];

/// Installs the benchmark peers that are missing.
pub fn bench_tools() -> Result<()> {
    let missing = missing_debs(&BENCH_PACKAGES);
    if !missing.is_empty() {
        apt_install(&missing)?;
        eprintln!("xtask: setup: installed {} (apt)", missing.join(", "));
    }
    Ok(())
}

/// What `cargo xtask vmtest` boots guests with.
const VMTEST_PACKAGES: [&str; 4] = ["qemu-system-x86", "busybox-static", "xz-utils", "e2fsprogs"];

/// Installs what `cargo xtask vmtest` needs that is missing.
pub fn vmtest_tools() -> Result<()> {
    let missing = missing_debs(&VMTEST_PACKAGES);
    if !missing.is_empty() {
        apt_install(&missing)?;
        eprintln!("xtask: setup: installed {} (apt)", missing.join(", "));
    }
    Ok(())
}
