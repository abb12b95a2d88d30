//! Connect family. Outbound connects pass the `cgroup/connect4` and
//! `cgroup/connect6` hooks at the cgroup v2 root, datagrams sent without
//! `connect` (`sendto`/`sendmsg` with an address) the `cgroup/sendmsg4` and
//! `cgroup/sendmsg6` hooks; all four share one decision, report what they
//! see and refuse (`EPERM`) what the `BLOCK4`/`BLOCK6` tries match. An
//! IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged by the IPv4 rules,
//! as the kernel sends it as IPv4, and an unspecified one (`0.0.0.0`, `::`)
//! as the local address the kernel sends it to. Datagram flows are reported at most once
//! a second each (`FLOWS`). Accepted connections and listening sockets are
//! read at the exit of `accept`, `accept4` and `listen`, in the owning
//! process, from its socket. Only what some loaded policy could match is
//! sent (see [`crate::interest`]); refused connects always are.

use core::{
    mem::size_of,
    ptr::{addr_of_mut, read_volatile, write_volatile},
};

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::{cgroup_sock_addr, map, raw_tracepoint},
    maps::{LpmTrie, LruHashMap, lpm_trie::Key},
    programs::{RawTracePointContext, SockAddrContext},
};
use reflex_wire::{
    BlockRule, EventKind, LossFamily, LossReason, NetEvent, maps,
    net::{V4_MAPPED_PREFIX, addr_family, direction},
    programs,
};

use crate::{
    event::{header, header_without_parent},
    interest,
    maps::{CONNECT_EVENTS, OFFSETS, count_filtered, count_loss, is_excluded},
    syscall, task,
};

/// IPv4 prefixes → what to refuse there, filled by the agent (see
/// [`BlockRule`] for how overlapping policies share it).
#[map]
static BLOCK4: LpmTrie<u32, BlockRule> = LpmTrie::with_max_entries(4096, 1);
exported_as!(BLOCK4, maps::BLOCK4);

/// IPv6 prefixes, as [`BLOCK4`].
#[map]
static BLOCK6: LpmTrie<[u32; 4], BlockRule> = LpmTrie::with_max_entries(4096, 1);
exported_as!(BLOCK6, maps::BLOCK6);

/// A datagram flow: who sends where.
#[repr(C)]
#[derive(Clone, Copy)]
struct FlowKey {
    tgid: u32,
    port: u16,
    protocol: u8,
    addr_family: u8,
    addr: [u32; 4],
}

const _: () = assert!(size_of::<FlowKey>() == 24);

/// When a flow was last reported and how much of it was not since.
#[repr(C)]
#[derive(Clone, Copy)]
struct FlowSeen {
    last_ns: u64,
    suppressed: u64,
}

const _: () = assert!(size_of::<FlowSeen>() == 16);

/// Datagram flows recently reported. A loop of `sendto` would otherwise
/// send one event per datagram; least recently used flows make room, and
/// a flow pushed out is simply reported again.
#[map]
static FLOWS: LruHashMap<FlowKey, FlowSeen> = LruHashMap::with_max_entries(16_384, 0);
exported_as!(FLOWS, maps::FLOWS);

/// A datagram flow is reported at most once per this many nanoseconds.
const FLOW_REPORT_NS: u64 = 1_000_000_000;

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// `cgroup/connect4`: reports the connect; refuses it if a rule says so.
#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    try_inet4(&ctx, false)
}
exported_as!(connect4, programs::CONNECT4);

/// `cgroup/connect6`: as [`connect4`] for IPv6 (and IPv4-mapped) addresses.
#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    try_inet6(&ctx, false)
}
exported_as!(connect6, programs::CONNECT6);

/// `cgroup/sendmsg4`: a UDP datagram sent with an address on a socket that
/// is not connected (also an IPv4-mapped one from an IPv6 socket, which the
/// kernel hands to the IPv4 code); refused and reported as [`connect4`],
/// a flow at most once a second.
#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    try_inet4(&ctx, true)
}
exported_as!(sendmsg4, programs::SENDMSG4);

/// `cgroup/sendmsg6`: as [`sendmsg4`] for IPv6 addresses.
#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    try_inet6(&ctx, true)
}
exported_as!(sendmsg6, programs::SENDMSG6);

#[inline(always)]
fn try_inet4(ctx: &SockAddrContext, datagram: bool) -> i32 {
    // SAFETY: the context is the kernel's `bpf_sock_addr` for this call.
    let sa = unsafe { &*ctx.sock_addr };
    let port = u16::from_be(sa.user_port as u16);
    let ip = match sa.user_ip4 {
        0 => this_host4(sa, datagram),
        ip => ip,
    };
    let blocked = BLOCK4
        .get(Key::new(32, ip))
        .is_some_and(|r| r.refuses(port, sa.protocol));
    on_outbound(
        addr_family::INET,
        [ip, 0, 0, 0],
        port,
        sa.protocol,
        blocked,
        datagram,
        || interest::outbound4(ip, port, sa.protocol),
    )
}

#[inline(always)]
fn try_inet6(ctx: &SockAddrContext, datagram: bool) -> i32 {
    // SAFETY: as in `try_inet4`.
    let sa = unsafe { &*ctx.sock_addr };
    let port = u16::from_be(sa.user_port as u16);
    let protocol = sa.protocol;
    // Word by word at fixed offsets: the verifier refuses a copy of the
    // array, which LLVM makes through a moved context pointer.
    // SAFETY: the fields are plain u32s of the kernel's context.
    let mut ip = unsafe {
        [
            read_volatile(&sa.user_ip6[0]),
            read_volatile(&sa.user_ip6[1]),
            read_volatile(&sa.user_ip6[2]),
            read_volatile(&sa.user_ip6[3]),
        ]
    };
    if ip[0] | ip[1] | ip[2] | ip[3] == 0 {
        ip = this_host6(sa);
    }
    let mapped = ip[0] == V4_MAPPED_PREFIX[0]
        && ip[1] == V4_MAPPED_PREFIX[1]
        && ip[2] == V4_MAPPED_PREFIX[2];
    if mapped && ip[3] == 0 {
        ip[3] = this_host4(sa, false);
    }
    let rule = if mapped {
        BLOCK4.get(Key::new(32, ip[3]))
    } else {
        BLOCK6.get(Key::new(128, ip))
    };
    let blocked = rule.is_some_and(|r| r.refuses(port, protocol));
    on_outbound(
        addr_family::INET6,
        ip,
        port,
        protocol,
        blocked,
        datagram,
        move || match mapped {
            true => interest::outbound4(ip[3], port, protocol),
            false => interest::outbound6(ip, port, protocol),
        },
    )
}

/// `127.0.0.1` as the kernel stores it.
const LOOPBACK4: u32 = u32::from_ne_bytes([127, 0, 0, 1]);

/// Where the unspecified destination `0.0.0.0` goes: the kernel routes it
/// to the source address of the call (a datagram's `IP_PKTINFO` source,
/// else the socket's bound address), or to `127.0.0.1` without one. It is
/// judged, and reported, as that address.
#[inline(always)]
fn this_host4(sa: &bpf_sock_addr, pktinfo: bool) -> u32 {
    // `msg_src_ip4` may be read by `sendmsg4` only: `pktinfo` is a constant
    // there, so the other hooks never load it.
    if pktinfo && sa.msg_src_ip4 != 0 {
        return sa.msg_src_ip4;
    }
    // SAFETY: `sk` of a sock_addr context is the caller's full socket,
    // never null.
    match unsafe { (*sa.__bindgen_anon_1.sk).src_ip4 } {
        0 => LOOPBACK4,
        bound => bound,
    }
}

/// Where the unspecified destination `::` goes: `::1`, or `127.0.0.1` (as
/// `::ffff:127.0.0.1`) for a socket bound to an IPv4-mapped address.
#[inline(always)]
fn this_host6(sa: &bpf_sock_addr) -> [u32; 4] {
    // SAFETY: as in `this_host4`.
    let bound = unsafe { (*sa.__bindgen_anon_1.sk).src_ip6 };
    if bound[0] == V4_MAPPED_PREFIX[0]
        && bound[1] == V4_MAPPED_PREFIX[1]
        && bound[2] == V4_MAPPED_PREFIX[2]
    {
        [
            V4_MAPPED_PREFIX[0],
            V4_MAPPED_PREFIX[1],
            V4_MAPPED_PREFIX[2],
            LOOPBACK4,
        ]
    } else {
        [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])]
    }
}

/// The one decision of the four hooks, and its report: sent when refused
/// or `wanted` (some loaded policy could match it), else only counted.
#[inline(always)]
fn on_outbound(
    addr_family: u32,
    addr: [u32; 4],
    port: u16,
    protocol: u32,
    blocked: bool,
    datagram: bool,
    wanted: impl FnOnce() -> bool,
) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_excluded(tgid) {
        return ALLOW;
    }
    let verdict = if blocked { DENY } else { ALLOW };
    if !blocked && !wanted() {
        count_filtered(LossFamily::Connect);
        return verdict;
    }
    let suppressed = if datagram {
        match flow_due(tgid, addr_family, addr, port, protocol) {
            Some(suppressed) => suppressed,
            None => return verdict,
        }
    } else {
        0
    };
    let Some(mut entry) = CONNECT_EVENTS.reserve::<NetEvent>(0) else {
        count_loss(LossReason::RingbufFull, LossFamily::Connect);
        return verdict;
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
        addr_of_mut!((*event).addr_family).write(addr_family);
        addr_of_mut!((*event).blocked).write(blocked as u32);
        addr_of_mut!((*event).local_port).write(0);
        addr_of_mut!((*event).remote_port).write(port);
        addr_of_mut!((*event).datagram).write(datagram as u32);
        addr_of_mut!((*event).suppressed).write(suppressed);
        write_volatile(addr_of_mut!((*event)._pad), 0);
        write_addr(addr_of_mut!((*event).local_addr), [0; 4]);
        write_addr(addr_of_mut!((*event).remote_addr), addr);
    }
    entry.submit(0);
    verdict
}

/// Whether a datagram flow is due a report: `Some(datagrams not reported
/// since the last report)` if so, `None` (counted) if it was reported less
/// than [`FLOW_REPORT_NS`] ago. Two CPUs may both report a flow at once;
/// that costs an event, never a datagram's verdict.
#[inline(always)]
fn flow_due(tgid: u32, addr_family: u32, addr: [u32; 4], port: u16, protocol: u32) -> Option<u32> {
    let key = FlowKey {
        tgid,
        port,
        protocol: protocol as u8,
        addr_family: addr_family as u8,
        addr,
    };
    // SAFETY: the helper takes no pointers and cannot fault.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    match FLOWS.get_ptr_mut(key) {
        Some(seen) => {
            // SAFETY: the pointer comes from a successful lookup and stays
            // valid for this program run. The count is a plain increment (the
            // BPF target offers no atomic read-modify-write in Rust): sends
            // of one flow from several CPUs at once may go uncounted, never
            // unrefused.
            unsafe {
                let suppressed = addr_of_mut!((*seen).suppressed);
                if now.wrapping_sub((*seen).last_ns) < FLOW_REPORT_NS {
                    suppressed.write_volatile(suppressed.read_volatile() + 1);
                    return None;
                }
                (*seen).last_ns = now;
                let count = suppressed.read_volatile();
                suppressed.write_volatile(0);
                Some(count.min(u64::from(u32::MAX)) as u32)
            }
        }
        None => {
            let seen = FlowSeen {
                last_ns: now,
                suppressed: 0,
            };
            // A full LRU evicts; an error here only means the next datagram
            // is reported too.
            let _ = FLOWS.insert(key, seen, 0);
            Some(0)
        }
    }
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
    if fam != addr_family::INET && fam != addr_family::INET6 {
        return Ok(());
    }
    let protocol = task::read::<u16>(sk, off.sk_protocol).unwrap_or(0) as u32;
    let local_port = task::read::<u16>(sk, off.sk_num).unwrap_or(0);
    if !interest::local(dir == direction::INBOUND, local_port, protocol) {
        count_filtered(LossFamily::Connect);
        return Ok(());
    }
    let mut entry = CONNECT_EVENTS
        .reserve::<NetEvent>(0)
        .ok_or(LossReason::RingbufFull)?;
    let event = entry.as_mut_ptr();
    let (local, remote) = if fam == addr_family::INET {
        let l: u32 = task::read(sk, off.sk_saddr).unwrap_or(0);
        let r: u32 = task::read(sk, off.sk_daddr).unwrap_or(0);
        ([l, 0, 0, 0], [r, 0, 0, 0])
    } else {
        (
            task::read::<[u32; 4]>(sk, off.sk_v6_saddr).unwrap_or([0; 4]),
            task::read::<[u32; 4]>(sk, off.sk_v6_daddr).unwrap_or([0; 4]),
        )
    };
    let remote_port = u16::from_be(task::read::<u16>(sk, off.sk_dport).unwrap_or(0));
    // SAFETY: `event` is a reserved slot sized for a `NetEvent`; every field
    // is written before submit.
    unsafe {
        addr_of_mut!((*event).header).write(header(EventKind::Connect, size_of::<NetEvent>()));
        addr_of_mut!((*event).direction).write(dir);
        addr_of_mut!((*event).protocol).write(protocol);
        addr_of_mut!((*event).addr_family).write(fam);
        write_volatile(addr_of_mut!((*event).blocked), 0);
        addr_of_mut!((*event).local_port).write(local_port);
        addr_of_mut!((*event).remote_port).write(remote_port);
        write_volatile(addr_of_mut!((*event).datagram), 0);
        write_volatile(addr_of_mut!((*event).suppressed), 0);
        write_volatile(addr_of_mut!((*event)._pad), 0);
        write_addr(addr_of_mut!((*event).local_addr), local);
        write_addr(addr_of_mut!((*event).remote_addr), remote);
    }
    entry.submit(0);
    Ok(())
}
