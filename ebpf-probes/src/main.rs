//! reflex's kernel programs. Each module holds one event family; every probe
//! captures, filters by map lookup and submits into its family's ring buffer (`EXEC_EVENTS`, `FILE_EVENTS`,
//! `CONNECT_EVENTS`).
#![no_std]
#![no_main]

/// Fails the build unless `$item`, a map or program (the object exports it
/// under its own identifier), is named `$name`: the `reflex_wire` constant
/// the agent looks it up by. The aya macros take no constant for a name.
macro_rules! exported_as {
    ($item:ident, $name:expr) => {
        const _: () = {
            // Refers to the item, so renaming it alone fails here too.
            let _ = &$item;
            assert!(
                reflex_wire::same_name(stringify!($item), $name),
                concat!(stringify!($item), " is not named as in reflex_wire")
            );
        };
    };
}

mod cpu;
mod event;
mod exe;
mod exe_path;
mod file;
mod interest;
mod maps;
mod net;
mod process;
mod syscall;
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
