//! The guest's initramfs: static busybox, the two init stages and the
//! modules that mount the host's root over 9p. Everything else the tests
//! run (agent, test binaries, Prometheus, sh) comes from that root, so the
//! guest runs the same files the host's `cargo xtask test` does.
use std::{fs, io::Write as _, path::Path};

use anyhow::{Context as _, Result};

use super::kernel::Kernel;

const INIT: &str = include_str!("init.sh");
const STAGE2: &str = include_str!("stage2.sh");
/// Debian's `busybox-static`: it runs before any library is there.
pub const BUSYBOX: &str = "/bin/busybox";

/// Writes `out` (an uncompressed newc cpio archive) for `kernel`.
pub fn initramfs(kernel: &Kernel, out: &Path) -> Result<()> {
    let busybox = fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (Debian package busybox-static)"))?;
    let mut archive = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "modules"] {
        archive.dir(dir);
    }
    archive.file("bin/busybox", 0o755, &busybox);
    archive.file("init", 0o755, INIT.as_bytes());
    archive.file("stage2.sh", 0o755, STAGE2.as_bytes());
    let mut order = String::new();
    for module in &kernel.modules {
        let name = module.file_name().unwrap().to_string_lossy().into_owned();
        archive.file(&format!("modules/{name}"), 0o644, &fs::read(module)?);
        order.push_str(&name);
        order.push('\n');
    }
    archive.file("modules.order", 0o644, order.as_bytes());
    let mut file = fs::File::create(out)?;
    file.write_all(&archive.finish())?;
    Ok(())
}

/// A newc ("070701") cpio archive, the format the kernel unpacks.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, data);
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}
