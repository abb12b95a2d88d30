//! Connect events: outbound connects, accepted connections, listening sockets.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use reflex_wire::net::{addr_family, direction, proto};

/// Connection direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// This host connects out.
    Outbound,
    /// A peer connected in and was accepted.
    Inbound,
    /// A socket started listening.
    Listen,
}

/// Transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A connection the probes saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Connect {
    /// Outbound, inbound or listen.
    pub direction: Direction,
    /// TCP or UDP (`None` for other protocols; MPTCP is TCP, UDP-Lite is UDP).
    pub protocol: Option<Protocol>,
    /// Local address (unspecified for an outbound connect before binding).
    pub local_addr: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote address (unspecified for a listening socket).
    pub remote_addr: IpAddr,
    /// Remote port.
    pub remote_port: u16,
    /// Whether the connect or sendmsg hook refused it (`EPERM` in the caller).
    pub blocked: bool,
    /// Seen by a `sendmsg` hook: a datagram sent without `connect`. Each
    /// such flow (process, remote address, port, protocol) is reported at
    /// most once a second.
    #[serde(default)]
    pub datagram: bool,
    /// Datagrams of this flow seen but not reported since its previous
    /// report (each refused too, when `blocked`); a lower bound when
    /// threads on several CPUs send the flow at once.
    #[serde(default)]
    pub suppressed: u32,
}

impl Connect {
    /// From the wire record's fields; `None` for an unknown direction. An
    /// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) becomes the IPv4 address
    /// it stands for, here and nowhere else: the kernel sends such traffic
    /// as IPv4, and policies match it by its IPv4 form.
    pub fn from_wire(raw: &reflex_wire::NetEvent) -> Option<Self> {
        let addr = |bytes: [u8; 16]| -> IpAddr {
            if raw.addr_family == addr_family::INET6 {
                IpAddr::V6(Ipv6Addr::from(bytes)).to_canonical()
            } else {
                IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
            }
        };
        Some(Self {
            direction: match raw.direction {
                direction::OUTBOUND => Direction::Outbound,
                direction::INBOUND => Direction::Inbound,
                direction::LISTEN => Direction::Listen,
                _ => return None,
            },
            protocol: match raw.protocol {
                proto::TCP | proto::MPTCP => Some(Protocol::Tcp),
                proto::UDP | proto::UDPLITE => Some(Protocol::Udp),
                _ => None,
            },
            local_addr: addr(raw.local_addr),
            local_port: raw.local_port,
            remote_addr: addr(raw.remote_addr),
            remote_port: raw.remote_port,
            blocked: raw.blocked != 0,
            datagram: raw.datagram != 0,
            suppressed: raw.suppressed,
        })
    }

    /// The port a policy's `ports` refers to: the remote one for outbound
    /// connects, the local (service) one for accepted and listening sockets.
    pub fn service_port(&self) -> u16 {
        match self.direction {
            Direction::Outbound => self.remote_port,
            Direction::Inbound | Direction::Listen => self.local_port,
        }
    }
}

#[cfg(test)]
mod tests {
    use reflex_wire::{EventHeader, NetEvent};

    use super::*;

    fn raw(addr_family: u32, protocol: u32, remote: [u8; 16]) -> NetEvent {
        NetEvent {
            header: EventHeader {
                kind: reflex_wire::EventKind::Connect as u32,
                size: size_of::<NetEvent>() as u32,
                ktime_ns: 1,
                pid: 7,
                tgid: 7,
                ppid: 0,
                uid: 0,
                gid: 0,
                _pad: 0,
                cgroup_id: 1,
                comm: [0; reflex_wire::COMM_LEN],
            },
            direction: direction::OUTBOUND,
            protocol,
            addr_family,
            blocked: 1,
            local_port: 0,
            remote_port: 53,
            datagram: 1,
            suppressed: 999,
            _pad: 0,
            local_addr: [0; 16],
            remote_addr: remote,
        }
    }

    #[test]
    fn an_ipv4_mapped_address_is_reported_as_ipv4() {
        let mapped = "::ffff:127.0.0.2".parse::<Ipv6Addr>().unwrap().octets();
        let c = Connect::from_wire(&raw(addr_family::INET6, proto::UDP, mapped)).unwrap();
        assert_eq!(c.remote_addr, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert!(c.datagram && c.blocked);
        assert_eq!(c.suppressed, 999);
        // IPv4-compatible (::a.b.c.d) is a real IPv6 destination: left alone.
        let compat = "::127.0.0.2".parse::<Ipv6Addr>().unwrap().octets();
        let c = Connect::from_wire(&raw(addr_family::INET6, proto::UDP, compat)).unwrap();
        assert_eq!(c.remote_addr, "::127.0.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mptcp_is_tcp_and_udplite_is_udp() {
        let v4 = [127, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let c = Connect::from_wire(&raw(addr_family::INET, proto::MPTCP, v4)).unwrap();
        assert_eq!(c.protocol, Some(Protocol::Tcp));
        let c = Connect::from_wire(&raw(addr_family::INET, proto::UDPLITE, v4)).unwrap();
        assert_eq!(c.protocol, Some(Protocol::Udp));
    }
}
