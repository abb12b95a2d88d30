//! Connect family. Outbound connects pass the `cgroup/connect4` and
//! `cgroup/connect6` hooks at the cgroup v2 root, which report every one
//! and refuse (`EPERM`) those the `BLOCK4`/`BLOCK6` tries match. Accepted
//! connections and listening sockets are read at the exit of `accept`,
//! `accept4` and `listen`, in the owning process, from its socket.

use core::{
    mem::size_of,
    ptr::{addr_of_mut, write_volatile},
};

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{cgroup_sock_addr, map, raw_tracepoint},
    maps::{LpmTrie, lpm_trie::Key},
    programs::{RawTracePointContext, SockAddrContext},
};
use reflex_wire::{
    BlockRule, EventKind, LossFamily, LossReason, NetEvent, maps,
    net::{MAX_RANGES, direction, family, proto, protocol_bit},
    programs,
};

use crate::{
    event::{header, header_without_parent},
    maps::{EVENTS, OFFSETS, count_loss, is_excluded},
    syscall, task,
};

/// IPv4 prefixes to refuse (or, `allow`, to exempt), filled by the agent.
#[map]
static BLOCK4: LpmTrie<u32, BlockRule> = LpmTrie::with_max_entries(4096, 1);
exported_as!(BLOCK4, maps::BLOCK4);

/// IPv6 prefixes, as [`BLOCK4`].
#[map]
static BLOCK6: LpmTrie<[u32; 4], BlockRule> = LpmTrie::with_max_entries(4096, 1);
exported_as!(BLOCK6, maps::BLOCK6);

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// `cgroup/connect4`: reports the connect; refuses it if a rule says so.
#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context is the kernel's `bpf_sock_addr` for this call.
    let (ip, port, protocol) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_ip4, sa.user_port, sa.protocol)
    };
    let port = u16::from_be(port as u16);
    let rule = BLOCK4.get(Key::new(32, ip)).copied();
    on_connect(family::INET, [ip, 0, 0, 0], port, protocol, rule)
}
exported_as!(connect4, programs::CONNECT4);

/// `cgroup/connect6`: as [`connect4`] for IPv6.
#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as in `connect4`.
    let (ip, port, protocol) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_ip6, sa.user_port, sa.protocol)
    };
    let port = u16::from_be(port as u16);
    let rule = BLOCK6.get(Key::new(128, ip)).copied();
    on_connect(family::INET6, ip, port, protocol, rule)
}
exported_as!(connect6, programs::CONNECT6);

#[inline(always)]
fn on_connect(
    family: u32,
    addr: [u32; 4],
    port: u16,
    protocol: u32,
    rule: Option<BlockRule>,
) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_excluded(tgid) {
        return ALLOW;
    }
    let blocked = rule.is_some_and(|r| refuses(&r, port, protocol));
    let Some(mut entry) = EVENTS.reserve::<NetEvent>(0) else {
        count_loss(LossReason::RingbufFull, LossFamily::Connect);
        return if blocked { DENY } else { ALLOW };
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved slot sized for a `NetEvent`; every field
    // is written before submit.
    unsafe {
        addr_of_mut!((*event).header).write(header_without_parent(
            EventKind::Connect,
            size_of::<NetEvent>(),
        ));
        addr_of_mut!((*event).direction).write(direction::OUTBOUND);
        addr_of_mut!((*event).protocol).write(protocol);
        addr_of_mut!((*event).family).write(family);
        addr_of_mut!((*event).blocked).write(blocked as u32);
        addr_of_mut!((*event).local_port).write(0);
        addr_of_mut!((*event).remote_port).write(port);
        write_volatile(addr_of_mut!((*event)._pad), 0);
        write_addr(addr_of_mut!((*event).local_addr), [0; 4]);
        write_addr(addr_of_mut!((*event).remote_addr), addr);
    }
    entry.submit(0);
    if blocked { DENY } else { ALLOW }
}

/// Writes an address word by word (volatile: LLVM would otherwise merge
/// the stores into a `memset`/`memcpy` call the BPF target cannot make).
///
/// # Safety
/// `dst` must be valid for writes and 4-byte aligned.
#[inline(always)]
unsafe fn write_addr(dst: *mut [u8; 16], words: [u32; 4]) {
    let dst = dst.cast::<u32>();
    let mut i = 0;
    while i < 4 {
        // SAFETY: `dst` holds four u32 words (caller's contract).
        unsafe { write_volatile(dst.add(i), words[i]) };
        i += 1;
    }
}

/// Whether `rule` refuses `port`/`protocol`.
#[inline(always)]
fn refuses(rule: &BlockRule, port: u16, protocol: u32) -> bool {
    if rule.allow != 0 {
        return false;
    }
    let bit = match protocol {
        proto::TCP => protocol_bit::TCP,
        proto::UDP => protocol_bit::UDP,
        _ => 0,
    };
    if rule.protocols != 0 && rule.protocols & bit == 0 {
        return false;
    }
    if rule.ranges == 0 {
        return true;
    }
    let mut i = 0;
    while i < MAX_RANGES {
        if (i as u32) < rule.ranges {
            let [first, last] = rule.ports[i];
            if port >= first && port <= last {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// `SYS_EXIT[accept]` and `SYS_EXIT[accept4]` (tail calls from
/// `raw_tp/sys_exit`): emits a [`NetEvent`] for the accepted connection, in
/// the process that accepted it.
#[raw_tracepoint]
pub fn exit_accept(ctx: RawTracePointContext) -> u32 {
    let fd = syscall::ret(&ctx);
    if fd >= 0
        && let Err(reason) = report_socket(fd as u64, direction::INBOUND)
    {
        count_loss(reason, LossFamily::Connect);
    }
    0
}
exported_as!(exit_accept, programs::EXIT_ACCEPT);

/// `SYS_EXIT[listen]` (tail call from `raw_tp/sys_exit`): emits a
/// [`NetEvent`] for the socket that started listening.
#[raw_tracepoint]
pub fn exit_listen(ctx: RawTracePointContext) -> u32 {
    if syscall::ret(&ctx) == 0
        && let Err(reason) = report_socket(syscall::arg(&ctx, 0), direction::LISTEN)
    {
        count_loss(reason, LossFamily::Connect);
    }
    0
}
exported_as!(exit_listen, programs::EXIT_LISTEN);

/// Reads the addresses of the socket behind `fd` and sends them.
#[inline(always)]
fn report_socket(fd: u64, dir: u32) -> Result<(), LossReason> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_excluded(tgid) {
        return Ok(());
    }
    let off = OFFSETS.load();
    let Some(file) = task::fd_file(fd) else {
        return Ok(());
    };
    let Ok(socket) = task::read::<u64>(file, off.file_private) else {
        return Ok(());
    };
    let Ok(sk) = task::read::<u64>(socket, off.socket_sk) else {
        return Ok(());
    };
    let fam = task::read::<u16>(sk, off.sk_family).unwrap_or(0) as u32;
    if fam != family::INET && fam != family::INET6 {
        return Ok(());
    }
    let mut entry = EVENTS
        .reserve::<NetEvent>(0)
        .ok_or(LossReason::RingbufFull)?;
    let event = entry.as_mut_ptr();
    let (local, remote) = if fam == family::INET {
        let l: u32 = task::read(sk, off.sk_saddr).unwrap_or(0);
        let r: u32 = task::read(sk, off.sk_daddr).unwrap_or(0);
        ([l, 0, 0, 0], [r, 0, 0, 0])
    } else {
        (
            task::read::<[u32; 4]>(sk, off.sk_v6_saddr).unwrap_or([0; 4]),
            task::read::<[u32; 4]>(sk, off.sk_v6_daddr).unwrap_or([0; 4]),
        )
    };
    let protocol = task::read::<u16>(sk, off.sk_protocol).unwrap_or(0) as u32;
    let local_port = task::read::<u16>(sk, off.sk_num).unwrap_or(0);
    let remote_port = u16::from_be(task::read::<u16>(sk, off.sk_dport).unwrap_or(0));
    // SAFETY: `event` is a reserved slot sized for a `NetEvent`; every field
    // is written before submit.
    unsafe {
        addr_of_mut!((*event).header).write(header(EventKind::Connect, size_of::<NetEvent>()));
        addr_of_mut!((*event).direction).write(dir);
        addr_of_mut!((*event).protocol).write(protocol);
        addr_of_mut!((*event).family).write(fam);
        write_volatile(addr_of_mut!((*event).blocked), 0);
        addr_of_mut!((*event).local_port).write(local_port);
        addr_of_mut!((*event).remote_port).write(remote_port);
        write_volatile(addr_of_mut!((*event)._pad), 0);
        write_addr(addr_of_mut!((*event).local_addr), local);
        write_addr(addr_of_mut!((*event).remote_addr), remote);
    }
    entry.submit(0);
    Ok(())
}
