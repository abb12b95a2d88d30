//! Rebuild the probes when `bpf-linker` changes, since it is their linker,
//! and declare the `bpf_target_arch` cfg.
use which::which;

fn main() {
    // aya-build passes `--cfg bpf_target_arch=...`; declare it for the lint.
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"riscv64\", \"powerpc64\", \"s390x\", \"mips\", \"loongarch64\"))"
    );
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
