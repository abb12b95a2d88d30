//! Rebuild the probes when `bpf-linker` changes, since it is their linker.
use which::which;

fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
