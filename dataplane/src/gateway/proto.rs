//! [`Proto`]: the transport protocols the gateway translates, by name and
//! number (ICMP: echo only, its identifier in the ports' role). The Forward table (`table`) keys its entries by it, the
//! core ([`super::core`]) its exposures, the shell its commands.
//!
//! It knows nothing of flows or exposures: it sits below both.

use std::fmt;
use std::str::FromStr;

/// The transport protocols the gateway translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMP (IPv4) or ICMPv6 echo: the identifier plays both ports' role,
    /// an exposure has no port.
    Icmp,
}

impl Proto {
    /// "tcp", "udp" or "icmp".
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }

    /// The IP protocol number in a family (ICMP: 1 over IPv4, 58 over
    /// IPv6).
    pub fn number(self, v6: bool) -> u8 {
        match self {
            Proto::Tcp => crate::packet::proto::TCP,
            Proto::Udp => crate::packet::proto::UDP,
            Proto::Icmp if v6 => crate::packet::proto::ICMPV6,
            Proto::Icmp => crate::packet::proto::ICMP,
        }
    }

    /// Whether its packets carry ports (an ICMP exposure has none).
    pub fn has_ports(self) -> bool {
        self != Proto::Icmp
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A protocol name other than "tcp", "udp" and "icmp".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?} (expected tcp, udp or icmp)")]
pub struct UnknownProto(pub String);

impl FromStr for Proto {
    type Err = UnknownProto;
    /// Exactly "tcp", "udp" or "icmp".
    fn from_str(s: &str) -> Result<Proto, UnknownProto> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "icmp" => Ok(Proto::Icmp),
            _ => Err(UnknownProto(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_parses_and_displays() {
        assert_eq!("tcp".parse::<Proto>(), Ok(Proto::Tcp));
        assert_eq!("udp".parse::<Proto>(), Ok(Proto::Udp));
        assert_eq!("icmp".parse::<Proto>(), Ok(Proto::Icmp));
        assert_eq!("sctp".parse::<Proto>(), Err(UnknownProto("sctp".into())));
        assert_eq!(
            "TCP".parse::<Proto>().unwrap_err().to_string(),
            "unknown protocol \"TCP\" (expected tcp, udp or icmp)"
        );
        assert_eq!(Proto::Udp.to_string(), "udp");
        assert_eq!(Proto::Icmp.to_string(), "icmp");
        assert_eq!((Proto::Tcp.number(false), Proto::Udp.number(true)), (6, 17));
        assert_eq!(
            (Proto::Icmp.number(false), Proto::Icmp.number(true)),
            (1, 58)
        );
        assert!(Proto::Tcp < Proto::Udp && Proto::Udp < Proto::Icmp);
        assert!(Proto::Udp.has_ports() && !Proto::Icmp.has_ports());
    }
}
