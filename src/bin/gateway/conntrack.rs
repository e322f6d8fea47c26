//! Deletes the kernel's conntrack entries of connections the gateway no
//! longer serves (after `unexpose`), over ctnetlink (`NETLINK_NETFILTER`,
//! `IPCTNL_MSG_CT_DELETE` by original tuple), so that the client's next
//! packet is a new connection for the firewall instead of one still DNATed
//! to the gateway's TUN.
//!
//! It knows one message: the delete by the tuple the client sent (client
//! address and port to the public address and exposed port; for ICMP, the
//! client's echo request: its identifier, type and code). Nothing of the
//! core, the firewall or exposures. The netlink encoding and the socket
//! (the firewall thread's, shared with the set changes) are
//! [`hoplab::shell::nfnetlink`]'s.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context};
use hoplab::shell::nfnetlink::{self, attr, nested, Socket, NFNL_SUBSYS_CTNETLINK};
use hoplab_dataplane::gateway::Proto;
use nix::errno::Errno;

const IPCTNL_MSG_CT_DELETE: u8 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The delete request for the connection `from` → `to` of `proto` (ICMP:
/// the echo requests of identifier `from`'s port).
fn request(proto: Proto, from: SocketAddr, to: SocketAddr, seq: u32) -> Vec<u8> {
    let (src, dst, family) = if from.is_ipv4() {
        (CTA_IP_V4_SRC, CTA_IP_V4_DST, nix::libc::AF_INET)
    } else {
        (CTA_IP_V6_SRC, CTA_IP_V6_DST, nix::libc::AF_INET6)
    };
    let v6 = from.is_ipv6();
    let mut body = Vec::new();
    nested(&mut body, CTA_TUPLE_ORIG, |tuple| {
        nested(tuple, CTA_TUPLE_IP, |ip| {
            attr(ip, src, &addr_bytes(from.ip()));
            attr(ip, dst, &addr_bytes(to.ip()));
        });
        nested(tuple, CTA_TUPLE_PROTO, |ports| {
            attr(ports, CTA_PROTO_NUM, &[proto.number(v6)]);
            if proto.has_ports() {
                attr(ports, CTA_PROTO_SRC_PORT, &from.port().to_be_bytes());
                attr(ports, CTA_PROTO_DST_PORT, &to.port().to_be_bytes());
            } else {
                let (id, ty, code, echo) = if v6 {
                    (
                        CTA_PROTO_ICMPV6_ID,
                        CTA_PROTO_ICMPV6_TYPE,
                        CTA_PROTO_ICMPV6_CODE,
                        128,
                    )
                } else {
                    (
                        CTA_PROTO_ICMP_ID,
                        CTA_PROTO_ICMP_TYPE,
                        CTA_PROTO_ICMP_CODE,
                        8,
                    )
                };
                attr(ports, id, &from.port().to_be_bytes());
                attr(ports, ty, &[echo]);
                attr(ports, code, &[0]);
            }
        });
    });
    let mut msg = Vec::with_capacity(20 + body.len());
    nfnetlink::message(
        &mut msg,
        nfnetlink::msg_type(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE),
        nfnetlink::NLM_F_REQUEST | nfnetlink::NLM_F_ACK,
        seq,
        family as u8,
        0,
        &body,
    );
    msg
}

/// Deletes the conntrack entries whose original tuple is `proto` `from`
/// → `to` (each a client's connection to the public address and an
/// exposed port), one request at a time on `sock`. Returns how many
/// existed.
pub fn delete(
    sock: &mut Socket,
    proto: Proto,
    flows: &[(SocketAddr, SocketAddr)],
) -> anyhow::Result<usize> {
    let mut deleted = 0;
    for (from, to) in flows {
        let seq = sock.next_seqs(1);
        let codes = sock
            .exchange(&request(proto, *from, *to, seq), seq..seq + 1, &[])
            .context("asking ctnetlink to delete a conntrack entry")?
            .unwrap_or_default();
        match codes.first().copied() {
            Some(0) => deleted += 1,
            Some(e) if -e == Errno::ENOENT as i32 => {}
            Some(e) => bail!(
                "deleting the conntrack entry {proto} {from} -> {to}: {}",
                Errno::from_raw(-e)
            ),
            None => bail!("no answer to a conntrack delete"),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_nests_the_original_tuple() {
        let m = request(
            Proto::Udp,
            "93.6.1.78:40000".parse().unwrap(),
            "24.0.5.8:5353".parse().unwrap(),
            7,
        );
        // nlmsghdr: length, type ctnetlink/delete, request|ack, seq 7.
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 0x102);
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().unwrap()), 5);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(m[16], nix::libc::AF_INET as u8);
        // CTA_TUPLE_ORIG { CTA_TUPLE_IP { src, dst }, CTA_TUPLE_PROTO { 17, 40000, 5353 } }.
        let orig = &m[20..];
        assert_eq!(u16::from_ne_bytes(orig[2..4].try_into().unwrap()), 0x8001);
        let ip = &orig[4..];
        assert_eq!(u16::from_ne_bytes(ip[2..4].try_into().unwrap()), 0x8001);
        assert_eq!(&ip[8..12], &[93, 6, 1, 78]);
        assert_eq!(&ip[16..20], &[24, 0, 5, 8]);
        let ports = &ip[20..];
        assert_eq!(u16::from_ne_bytes(ports[2..4].try_into().unwrap()), 0x8002);
        assert_eq!(ports[8], 17);
        assert_eq!(&ports[16..18], &40000u16.to_be_bytes());
        assert_eq!(&ports[24..26], &5353u16.to_be_bytes());
        assert_eq!(m.len() % 4, 0);
        // ICMP: the identifier, echo request type 8, code 0.
        let m = request(
            Proto::Icmp,
            "93.6.1.78:4242".parse().unwrap(),
            "24.0.5.8:0".parse().unwrap(),
            8,
        );
        let ports = &m[20 + 4 + 20..];
        assert_eq!(ports[8], 1);
        assert_eq!(u16::from_ne_bytes(ports[12..14].try_into().unwrap()), 6);
        assert_eq!(&ports[16..18], &4242u16.to_be_bytes());
        assert_eq!((ports[22], ports[24]), (5, 8));
        assert_eq!((ports[30], ports[32]), (6, 0));
    }
}
