//! reflex's kernel programs. Each module holds one event family; every probe
//! captures, filters by map lookup and submits into the `EVENTS` ring buffer.
#![no_std]
#![no_main]

mod cpu;
mod event;
mod exe;
mod exe_path;
mod file;
mod maps;
mod net;
mod process;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL: `bpf_probe_read_*`, `bpf_send_signal` and the ring buffer helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
