//! Syscall numbers (x86-64) the file probes handle, shared so the kernel's
//! quick filter and the agent's jump tables cannot disagree.

/// Syscalls through which a watched file can change.
pub const FILE_SYSCALLS: [u32; 24] = [
    2, 3, 76, 77, 82, 85, 86, 87, 88, 90, 91, 92, 93, 94, 257, 260, 263, 264, 265, 266, 268, 316,
    437, 452,
];

/// Syscalls the connect family reads at exit: accept, listen, accept4.
pub const NET_SYSCALLS: [u32; 3] = [43, 50, 288];

/// Slots in the jump tables.
pub const SLOTS: u32 = 512;

/// Bit `n` set for each handled syscall `n`: a filter the probes test
/// without a map lookup or a tail call.
pub const HANDLED: [u64; (SLOTS / 64) as usize] = {
    let mut bits = [0u64; (SLOTS / 64) as usize];
    let mut i = 0;
    while i < FILE_SYSCALLS.len() {
        let n = FILE_SYSCALLS[i];
        bits[(n / 64) as usize] |= 1 << (n % 64);
        i += 1;
    }
    let mut j = 0;
    while j < NET_SYSCALLS.len() {
        let n = NET_SYSCALLS[j];
        bits[(n / 64) as usize] |= 1 << (n % 64);
        j += 1;
    }
    bits
};

/// Whether syscall `id` has a handler.
#[inline(always)]
pub const fn handled(id: u64) -> bool {
    id < SLOTS as u64 && HANDLED[(id / 64) as usize] & (1 << (id % 64)) != 0
}
