//! Prefix membership: whether an address lies in `network/length`, for
//! both cores (a node's instance subnet, the gateway's internal networks)
//! and for the service ranges the net manager and the harness classify
//! addresses by.
//!
//! It knows addresses and prefix lengths only: which prefixes mean what
//! (service ranges, subnets) is up to the callers.

use std::net::IpAddr;

/// True if `ip` lies in `net`/`len`. Both must be of the same family (an
/// address is never in a prefix of the other family); `len` is clamped to
/// the address width, and 0 contains every address of the family.
pub fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn membership() {
        assert!(in_net(ip("10.30.1.2"), ip("10.30.0.0"), 16));
        assert!(!in_net(ip("10.31.0.1"), ip("10.30.0.0"), 16));
        assert!(in_net(ip("1.2.3.4"), ip("0.0.0.0"), 0));
        assert!(!in_net(ip("1.2.3.4"), ip("::"), 0));
        assert!(in_net(ip("10.0.0.1"), ip("10.0.0.1"), 99), "clamped to /32");
        assert!(in_net(ip("fdff:2000::1"), ip("fdff:2000::"), 21));
        assert!(!in_net(ip("fdff:2800::1"), ip("fdff:2000::"), 21));
        assert!(in_net(ip("fc00::1"), ip("::"), 0));
    }
}
