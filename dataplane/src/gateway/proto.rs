//! [`Proto`]: the transport protocols the gateway translates, by name and
//! number. The Forward table (`table`) keys its entries by it, the
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
}

impl Proto {
    /// "tcp" or "udp".
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => crate::packet::proto::TCP,
            Proto::Udp => crate::packet::proto::UDP,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A protocol name other than "tcp" and "udp".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?} (expected tcp or udp)")]
pub struct UnknownProto(pub String);

impl FromStr for Proto {
    type Err = UnknownProto;
    /// Exactly "tcp" or "udp".
    fn from_str(s: &str) -> Result<Proto, UnknownProto> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
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
        assert_eq!("icmp".parse::<Proto>(), Err(UnknownProto("icmp".into())));
        assert_eq!(
            "TCP".parse::<Proto>().unwrap_err().to_string(),
            "unknown protocol \"TCP\" (expected tcp or udp)"
        );
        assert_eq!(Proto::Udp.to_string(), "udp");
        assert_eq!((Proto::Tcp.number(), Proto::Udp.number()), (6, 17));
        assert!(Proto::Tcp < Proto::Udp);
    }
}
