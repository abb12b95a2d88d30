//! Connect events: outbound connects, accepted connections, listening sockets.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use reflex_wire::net::{direction, family, proto};

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
    /// TCP or UDP (`None` for other protocols).
    pub protocol: Option<Protocol>,
    /// Local address (unspecified for an outbound connect before binding).
    pub local_addr: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote address (unspecified for a listening socket).
    pub remote_addr: IpAddr,
    /// Remote port.
    pub remote_port: u16,
    /// Whether the connect hook refused it (`EPERM` in the caller).
    pub blocked: bool,
}

impl Connect {
    /// From the wire record's fields; `None` for an unknown direction.
    pub fn from_wire(raw: &reflex_wire::NetEvent) -> Option<Self> {
        let addr = |bytes: [u8; 16]| -> IpAddr {
            if raw.family == family::INET6 {
                IpAddr::V6(Ipv6Addr::from(bytes))
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
                proto::TCP => Some(Protocol::Tcp),
                proto::UDP => Some(Protocol::Udp),
                _ => None,
            },
            local_addr: addr(raw.local_addr),
            local_port: raw.local_port,
            remote_addr: addr(raw.remote_addr),
            remote_port: raw.remote_port,
            blocked: raw.blocked != 0,
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
