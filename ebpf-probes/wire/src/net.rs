//! The connect family: outbound connects (seen and possibly refused by the
//! cgroup connect hooks), accepted connections and listening sockets.

use crate::EventHeader;

/// `NetEvent.direction` values.
pub mod direction {
    /// This host connects out.
    pub const OUTBOUND: u32 = 1;
    /// A peer's connection was accepted.
    pub const INBOUND: u32 = 2;
    /// A socket started listening.
    pub const LISTEN: u32 = 3;
}

/// Protocol numbers (IANA).
pub mod proto {
    /// TCP.
    pub const TCP: u32 = 6;
    /// UDP.
    pub const UDP: u32 = 17;
}

/// [`BlockRule::protocols`] bits.
pub mod protocol_bit {
    /// The rule refuses TCP.
    pub const TCP: u32 = 1;
    /// The rule refuses UDP.
    pub const UDP: u32 = 2;
}

/// Address families.
pub mod family {
    /// IPv4.
    pub const INET: u32 = 2;
    /// IPv6.
    pub const INET6: u32 = 10;
}

/// Most port ranges one block rule holds.
pub const MAX_RANGES: usize = 8;

/// Value of the `BLOCK4` / `BLOCK6` LPM tries: what to refuse for a prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockRule {
    /// 1: the prefix is an exception (`except:`), let it through.
    pub allow: u32,
    /// [`protocol_bit`] bits; 0 means both.
    pub protocols: u32,
    /// Port ranges in use; 0 means every port.
    pub ranges: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Inclusive (first, last) remote port ranges, host byte order.
    pub ports: [[u16; 2]; MAX_RANGES],
}

const _: () = assert!(core::mem::size_of::<BlockRule>() == 48);

/// A connection seen by the probes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetEvent {
    /// Common header; `kind` is `EventKind::Connect`.
    pub header: EventHeader,
    /// A [`direction`] value.
    pub direction: u32,
    /// A [`proto`] value.
    pub protocol: u32,
    /// A [`family`] value.
    pub family: u32,
    /// 1 when the connect hook refused it.
    pub blocked: u32,
    /// Local port, host byte order (0 when not yet bound).
    pub local_port: u16,
    /// Remote port, host byte order.
    pub remote_port: u16,
    /// Explicit padding.
    pub _pad: u32,
    /// Local address (IPv4 in the first four bytes).
    pub local_addr: [u8; 16],
    /// Remote address (IPv4 in the first four bytes).
    pub remote_addr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<NetEvent>() == 64 + 16 + 8 + 32);
