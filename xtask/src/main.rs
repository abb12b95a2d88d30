//! Developer commands: `cargo xtask setup | build | run | test | bench | fuzz | package`.
//!
//! Every command that needs tools calls `setup` first, so a fresh machine
//! needs nothing but a clone and `cargo xtask run` or `cargo xtask test`.
mod bench;
mod chart;
mod cmd;
mod fuzz;
mod modules;
mod package;
mod peers;
mod rules;
mod setup;
mod vmtest;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "reflex developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: nightly rust-src, LLVM 22 headers, bpf-linker.
    Setup,
    /// Build the agent (and its probes) in release mode.
    Build,
    /// Set up, build, and run `reflex run --policies policies/` in the foreground.
    Run {
        /// Extra arguments passed to `reflex run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure reflex against no agent (needs root; never run by CI).
    Bench {
        /// A shorter run (a few minutes).
        #[arg(long)]
        quick: bool,
        /// Run only this benchmark: `revert` (B2 write -> restored),
        /// `flood` (B8, the UDP connect flood, about a minute) or
        /// `workloads` (B9, whole workloads and per-program BPF cost).
        #[arg(long)]
        only: Option<String>,
        /// Measure this agent binary instead of the release build.
        #[arg(long)]
        reflex: Option<std::path::PathBuf>,
    },
    /// Fuzz the policy compiler and the record decoder with cargo fuzz
    /// (nightly); a crash or hang fails the command and keeps its input.
    Fuzz {
        /// Seconds per target (the targets run side by side).
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Targets to run (default: all).
        targets: Vec<String>,
    },
    /// Print which of the agent's top-level modules import which; fail on
    /// an import cycle.
    Modules,
    /// Build the Debian package: binary, systemd unit, /etc/reflex/reflex.yaml,
    /// the example policies in monitor mode, the alerting rules and the
    /// dashboard (target/debian/).
    Package,
    /// Set up, then fmt check, the alerting rules (promtool), clippy, unit
    /// tests and the root integration tests.
    Test {
        /// Skip the root integration tests.
        #[arg(long)]
        unit_only: bool,
        /// After the host's tests, the smoke set on this kernel under QEMU
        /// (`cargo xtask vmtest`); `none` (the default: under TCG the
        /// agent starts too slowly for the tests' start-up bound, see
        /// README "Kernels") leaves it out.
        #[arg(long, default_value = "none")]
        vm: String,
    },
    /// Run the root integration tests on Debian kernels under QEMU
    /// (target/vmtest/: kernels, guest output, report.json).
    Vmtest {
        /// `5.10`, `6.1`, `6.12` or `all`.
        #[arg(long, default_value = "6.1")]
        kernel: String,
        /// Test binaries, comma-separated; `smoke` or `all`.
        #[arg(long, default_value = "smoke")]
        tests: String,
        /// QEMU accelerator: `tcg` works everywhere, `kvm` where it boots.
        #[arg(long, default_value = "tcg")]
        accel: String,
        /// Longest one guest may run, in minutes.
        #[arg(long, default_value_t = 240)]
        timeout_minutes: u64,
        /// Arguments for every test binary (a test name filter, `--exact`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        test_args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.command {
        Task::Setup => setup::run(),
        Task::Build => {
            setup::run()?;
            cmd::cargo(&["build", "--release", "--package", "reflex"])
        }
        Task::Run { args } => {
            setup::run()?;
            cmd::cargo(&["build", "--release", "--package", "reflex"])?;
            setup::protect_policies(&root.join("policies"))?;
            let mut argv = vec!["run".to_string(), "--policies".into(), "policies".into()];
            argv.extend(args);
            cmd::exec(root.join("target/release/reflex"), &argv)
        }
        Task::Test { unit_only, vm } => test(unit_only, &vm),
        Task::Vmtest {
            kernel,
            tests,
            accel,
            timeout_minutes,
            test_args,
        } => {
            setup::run()?;
            setup::vmtest_tools()?;
            vmtest::run(
                &root,
                &vmtest::Options {
                    kernel,
                    tests,
                    test_args,
                    accel,
                    timeout: std::time::Duration::from_secs(timeout_minutes * 60),
                },
            )
        }
        Task::Modules => modules::run(&root),
        Task::Package => {
            setup::run()?;
            package::run(&root)
        }
        Task::Fuzz { seconds, targets } => {
            setup::run()?;
            let targets = if targets.is_empty() {
                fuzz::TARGETS.iter().map(|t| t.to_string()).collect()
            } else {
                targets
            };
            fuzz::run(&root, &targets, seconds)
        }
        Task::Bench {
            quick,
            only,
            reflex,
        } => {
            setup::run()?;
            setup::bench_tools()?;
            if reflex.is_none() {
                cmd::cargo(&["build", "--release", "--package", "reflex"])?;
            }
            bench::run(&root, quick, only.as_deref(), reflex)
        }
    }
}

/// The whole test gate, in the order that fails fastest.
fn test(unit_only: bool, vm: &str) -> Result<()> {
    setup::run()?;
    cmd::cargo(&["fmt", "--all", "--", "--check"])?;
    modules::run(&workspace_root())?;
    rules::run(&workspace_root())?;
    cmd::cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "reflex-probes",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The probes only build for BPF, so the step above leaves them out:
    // check them as agent/build.rs (aya-build) compiles them, with nightly,
    // `core` from source and the target arch cfg their syscall code needs.
    // Clippy stops before linking, so bpf-linker is not involved.
    cmd::status(
        std::process::Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--package",
                "reflex-probes",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
            ),
    )?;
    cmd::cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "reflex-probes",
        "--exclude",
        "reflex-tests",
    ])?;
    if unit_only {
        return Ok(());
    }
    if !setup::is_root() {
        anyhow::bail!(
            "the integration tests load eBPF programs and need root; run `sudo cargo xtask test` \
             (or `cargo xtask test --unit-only`)"
        );
    }
    // The agent under test is the optimised build operators run.
    cmd::cargo(&["build", "--release", "--package", "reflex"])?;
    let bin = workspace_root().join("target/release/reflex");
    cmd::cargo_with_env(
        &["test", "--package", "reflex-tests", "--", "--nocapture"],
        &[("REFLEX_BIN", bin.to_string_lossy().as_ref())],
    )?;
    if vm == "none" {
        return Ok(());
    }
    // One older kernel with the stronger hooks, on the binaries just built.
    setup::vmtest_tools()?;
    vmtest::run(
        &workspace_root(),
        &vmtest::Options {
            kernel: vm.to_string(),
            tests: "smoke".into(),
            test_args: Vec::new(),
            accel: "tcg".into(),
            timeout: std::time::Duration::from_secs(40 * 60),
        },
    )
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
