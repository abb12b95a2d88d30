//! Compiles the kernel crate for the BPF target with the nightly toolchain
//! (the aya template's pattern), so one `cargo build` builds both sides.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("reading the workspace metadata")?;
    let probes = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "reflex-probes")
        .ok_or_else(|| anyhow!("package reflex-probes not found in the workspace"))?;
    let root = probes
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", probes.manifest_path))?;
    aya_build::build_ebpf(
        [Package {
            name: probes.name.as_str(),
            root_dir: root.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
