//! `cargo xtask package`: the Debian package (cargo-deb) with the binary,
//! the systemd unit, `/etc/reflex/reflex.yaml`, the example policies
//! switched to monitor mode (each checked by `reflex check` first), and the
//! Prometheus rules and Grafana dashboard under `/usr/share/reflex/`.
use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// What operators load into their monitoring, checked to be in the package.
const SHIPPED: [&str; 2] = [
    "./usr/share/reflex/reflex-rules.yml",
    "./usr/share/reflex/reflex.json",
];

/// Installs cargo-deb when missing.
fn ensure_cargo_deb() -> Result<()> {
    if cmd::output("cargo", &["deb", "--version"]).is_some() {
        return Ok(());
    }
    cmd::cargo(&["install", "--locked", "cargo-deb"])
}

/// `text` with every top-level `mode: enforce` turned into `mode: monitor`.
pub fn monitor_mode(text: &str) -> String {
    let mut out = String::from(
        "# Installed in monitor mode: it reports what it would do and does\n\
         # nothing. Set `mode: enforce` to let it act.\n",
    );
    for line in text.lines() {
        if line.trim_end() == "mode: enforce" {
            out.push_str("mode: monitor");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Builds `target/debian/reflex_*.deb` and lists what it installs.
pub fn run(root: &Path) -> Result<()> {
    ensure_cargo_deb()?;
    cmd::cargo(&["build", "--release", "--package", "reflex"])?;
    let staged = root.join("target/package/policies");
    if staged.exists() {
        fs::remove_dir_all(&staged).with_context(|| format!("clearing {}", staged.display()))?;
    }
    fs::create_dir_all(&staged)?;
    for entry in fs::read_dir(root.join("policies"))? {
        let path = entry?.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let text = if path.extension().is_some_and(|x| x == "yaml") {
            monitor_mode(&text)
        } else {
            text
        };
        fs::write(staged.join(name), text)?;
    }
    crate::setup::protect_policies(&staged)?;
    cmd::status(
        Command::new(root.join("target/release/reflex"))
            .arg("check")
            .arg(&staged),
    )?;
    let enforcing = fs::read_dir(&staged)?
        .filter_map(Result::ok)
        // Policies only: the README's examples stay as written.
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .filter(|e| {
            fs::read_to_string(e.path()).is_ok_and(|t| t.lines().any(|l| l == "mode: enforce"))
        })
        .count();
    if enforcing > 0 {
        bail!("{enforcing} packaged policies still enforce");
    }
    cmd::cargo(&["deb", "--package", "reflex", "--no-build"])?;
    let deb = fs::read_dir(root.join("target/debian"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .context("cargo deb wrote no package")?;
    let contents = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .context("running dpkg-deb --contents")?;
    let contents = String::from_utf8_lossy(&contents.stdout);
    eprint!("{contents}");
    for shipped in SHIPPED {
        if !contents.lines().any(|l| l.ends_with(shipped)) {
            bail!("{} lacks {shipped}", deb.display());
        }
    }
    eprintln!("xtask: package: {}", deb.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_policy_mode_line_changes() {
        let text = "name: a\nmode: enforce\ndo:\n  - alert: { summary: \"mode: enforce\" }\n";
        let out = monitor_mode(text);
        assert!(out.contains("\nmode: monitor\n"));
        assert!(out.contains("summary: \"mode: enforce\""));
        assert!(!out.lines().any(|l| l == "mode: enforce"));
    }
}
