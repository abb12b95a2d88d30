//! Debian kernels for the matrix: fetched with apt from a private source
//! list per suite (the host's own apt state is left alone), unpacked with
//! `dpkg-deb -x`, and cached under `target/vmtest/kernel-VERSION/`.
use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// A kernel of the matrix: the name on the command line and the Debian
/// suite whose `linux-image-amd64` is that kernel. The generic flavour,
/// not `cloud`: the cloud kernels leave out 9p, which the guest's root is.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// `5.10`, `6.1`, `6.12`.
    pub name: &'static str,
    suite: &'static str,
}

/// Every kernel `--kernel all` runs, oldest first.
pub const KERNELS: [Spec; 3] = [
    Spec {
        name: "5.10",
        suite: "bullseye",
    },
    Spec {
        name: "6.1",
        suite: "bookworm",
    },
    Spec {
        name: "6.12",
        suite: "trixie",
    },
];

/// Modules the guest loads before it mounts its root and its ext4 `/tmp`
/// (with what they depend on); the ones a kernel builds in are simply not
/// found. `crc32c_generic` is what jbd2 asks the crypto API for.
const MODULES: [&str; 7] = [
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "overlay",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
];

/// An unpacked kernel: its image and the module files to load, in order.
pub struct Kernel {
    /// `uname -r` of the kernel.
    pub release: String,
    /// The bootable image.
    pub vmlinuz: PathBuf,
    /// Uncompressed `.ko` files, dependencies first.
    pub modules: Vec<PathBuf>,
}

/// Fetches (once) and unpacks the kernel `spec` under `cache`.
pub fn prepare(spec: &Spec, cache: &Path) -> Result<Kernel> {
    let dir = cache.join(format!("kernel-{}", spec.name));
    let unpacked = dir.join("root");
    if !unpacked.join("boot").is_dir() {
        let deb = download(spec, cache, &dir)?;
        let partial = dir.join("root.partial");
        let _ = fs::remove_dir_all(&partial);
        cmd::status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        fs::rename(&partial, &unpacked)?;
        // The unpacked tree is the cache; the package is not needed again.
        fs::remove_file(&deb)?;
    }
    let vmlinuz = fs::read_dir(unpacked.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no vmlinuz in the kernel package")?;
    let release = vmlinuz.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_string();
    let tree = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|m| unpacked.join(m).join(&release))
        .find(|p| p.is_dir())
        .context("no modules directory in the kernel package")?;
    let modules = resolve_modules(&tree, &dir.join("ko"))?;
    Ok(Kernel {
        release,
        vmlinuz,
        modules,
    })
}

/// `apt-get download`s the suite's current `linux-image-*-amd64`.
fn download(spec: &Spec, cache: &Path, dir: &Path) -> Result<PathBuf> {
    let apt = cache.join("apt").join(spec.suite);
    for sub in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(apt.join(sub))?;
    }
    fs::create_dir_all(dir)?;
    let list = apt.join("sources.list");
    fs::write(
        &list,
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {} main\n",
            mirror()?,
            spec.suite
        ),
    )?;
    let options = [
        format!("Dir::Etc::SourceList={}", list.display()),
        "Dir::Etc::SourceParts=/dev/null".into(),
        format!("Dir::State::Lists={}", apt.join("lists").display()),
        format!("Dir::Cache={}", apt.join("cache").display()),
        "APT::Architecture=amd64".into(),
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
        "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
        // The download lands in a root-owned directory.
        "APT::Sandbox::User=root".into(),
    ];
    let apt_cmd = |program: &str| {
        let mut c = Command::new(program);
        for o in &options {
            c.arg("-o").arg(o);
        }
        c
    };
    cmd::status(apt_cmd("apt-get").args(["update", "-q"]))?;
    let depends = apt_cmd("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()?;
    let depends = String::from_utf8_lossy(&depends.stdout);
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && !p.contains('<'))
        .with_context(|| format!("no linux-image in {}'s linux-image-amd64", spec.suite))?
        .to_string();
    cmd::status(
        apt_cmd("apt-get")
            .arg("download")
            .arg(&package)
            .current_dir(dir),
    )?;
    fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|x| x == "deb")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download {package} left no .deb"))
}

/// The Debian archive this host's apt uses (`REFLEX_VMTEST_MIRROR` overrides).
fn mirror() -> Result<String> {
    if let Ok(m) = std::env::var("REFLEX_VMTEST_MIRROR") {
        return Ok(m);
    }
    let mut texts = vec![fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            if e.path()
                .extension()
                .is_some_and(|x| x == "sources" || x == "list")
            {
                texts.push(fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    for text in &texts {
        for line in text.lines().map(str::trim) {
            let uri = line
                .strip_prefix("URIs:")
                .map(|u| u.split_whitespace().next().unwrap_or(""))
                .or_else(|| {
                    line.strip_prefix("deb ")
                        .and_then(|rest| rest.split_whitespace().find(|w| w.contains("://")))
                });
            if let Some(uri) = uri
                && uri.trim_end_matches('/').ends_with("/debian")
            {
                return Ok(uri.trim_end_matches('/').to_string());
            }
        }
    }
    bail!("no Debian archive in /etc/apt sources; set REFLEX_VMTEST_MIRROR to one")
}

/// The `.ko` files for [`MODULES`] and their dependencies, dependencies
/// first, decompressed into `out` (busybox `insmod` reads plain files).
fn resolve_modules(tree: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let mut index = BTreeMap::new();
    for entry in walkdir::WalkDir::new(tree.join("kernel")) {
        let path = entry?.into_path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some(stem) = name.split(".ko").next().filter(|_| name.contains(".ko")) {
            index.insert(stem.replace('-', "_"), path.clone());
        }
    }
    fs::create_dir_all(out)?;
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for m in MODULES {
        visit(m, &index, out, &mut seen, &mut order)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    out: &Path,
    seen: &mut HashSet<String>,
    order: &mut Vec<PathBuf>,
) -> Result<()> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let Some(src) = index.get(name) else {
        return Ok(()); // built in
    };
    let plain = out.join(format!("{name}.ko"));
    if !plain.exists() {
        let bytes = decompress(src)?;
        fs::write(&plain, bytes)?;
    }
    let bytes = fs::read(&plain)?;
    for dep in modinfo_depends(&bytes) {
        visit(&dep, index, out, seen, order)?;
    }
    order.push(plain);
    Ok(())
}

fn decompress(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|x| x.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => return Ok(fs::read(path)?),
    };
    let out = Command::new(tool).arg("-dc").arg(path).output()?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", path.display());
    }
    Ok(out.stdout)
}

/// The `depends=` entry of a module's `.modinfo` strings.
fn modinfo_depends(bytes: &[u8]) -> Vec<String> {
    let key = b"depends=";
    bytes
        .windows(key.len())
        .position(|w| w == key)
        .map(|at| {
            let rest = &bytes[at + key.len()..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}
