//! The gateway's firewall: one nftables table in the gateway's namespace,
//! written by `nft -f -` at start and removed at exit.
//!
//! - `raw_prerouting`: from the public interface, sources inside the
//!   network are dropped (counter `spoofed_source`) before conntrack;
//! - `nat_prerouting`: the public address and an exposed port (sets
//!   `exposed_tcp`, `exposed_udp`) are DNATed to the internal address,
//!   port unchanged (`exposed_new` counts new connections); so are echo
//!   requests while ICMP is exposed (sets `exposed_icmp`, of ICMP types,
//!   holding `echo-request` then, and `exposed_icmp6`); conntrack
//!   reverses it for the replies the gateway writes back to its TUN;
//! - `input`: a packet from a client whose connection through a port
//!   was ended by `unexpose` (sets `closed_tcp`, `closed_udp` and their
//!   IPv6 twins: client address, client port, exposed port; elements time
//!   out after [`CLOSED_TIMEOUT_S`]) is answered with a TCP reset or an
//!   ICMP port unreachable (`unexposed_reset`); anything else from outside
//!   for the gateway itself is dropped (`not_exposed`), but IPv6
//!   neighbour discovery;
//! - `output`: the host's own link-local and multicast IPv6 chatter
//!   (MLD reports, when the TUN comes up) never goes into the TUN: the
//!   gateway only reads routed traffic;
//! - `forward`: from outside, only DNATed connections to the TUN and
//!   established ones pass (`refused_forward` counts the rest, such as a
//!   service IP dialled directly); SYNs to the TUN get their MSS clamped to
//!   the route's MTU;
//! - `nat_postrouting`: traffic from inside leaving by the public
//!   interface is masqueraded (`masqueraded_new`).
//!
//! Exposure changes add or delete one set element (and `unexpose` one
//! element of a closed set per flow it ended): the rules never change
//! while the gateway runs. They go over the firewall thread's netlink
//! socket ([`hoplab::shell::nfnetlink`]), one batch per change, with each
//! key encoded as its set's type ([`port_key`], [`closed_key`]); `nft`
//! runs only to load the table at start, remove it at exit and read the
//! counters.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use hoplab::shell::nfnetlink::{SetElem, SetOp, Socket, NFPROTO_INET};
use hoplab_dataplane::gateway::{ExposedPort, Proto};

/// The table's name (family `inet`).
pub const TABLE: &str = "hoplab_gateway";

/// The named counters, in the order they are reported.
pub const COUNTERS: &[&str] = &[
    "spoofed_source",
    "not_exposed",
    "refused_forward",
    "exposed_new",
    "masqueraded_new",
    "unexposed_reset",
];

/// How long a client whose connection `unexpose` ended is answered with a
/// reset or an ICMP error rather than silence.
pub const CLOSED_TIMEOUT_S: u32 = 300;

pub struct Firewall {
    pub public_if: String,
    pub tun: String,
    pub public: Ipv4Addr,
    pub internal: Ipv4Addr,
    pub v6: Option<(Ipv6Addr, Ipv6Addr)>,
    pub internal_nets: Vec<(IpAddr, u8)>,
}

fn set_name(proto: Proto, v6: bool) -> String {
    format!("exposed_{proto}{}", if v6 { "6" } else { "" })
}

/// The element of an exposed set standing for `port`: the port, or the
/// echo request type for ICMP.
fn element(port: ExposedPort) -> String {
    if port.proto.has_ports() {
        port.port.to_string()
    } else {
        "echo-request".to_string()
    }
}

/// The key of [`element`] as its set's type stores it: an
/// `inet_service` is the port in network order (2 bytes); an `icmp_type`
/// or `icmpv6_type` one byte (echo request: 8, 128).
fn port_key(port: ExposedPort) -> Vec<u8> {
    if port.proto.has_ports() {
        port.port.to_be_bytes().to_vec()
    } else if port.v6 {
        vec![128]
    } else {
        vec![8]
    }
}

fn closed_set_name(proto: Proto, v6: bool) -> String {
    format!("closed_{proto}{}", if v6 { "6" } else { "" })
}

/// The key of a closed set's element `client address . client port .
/// port`: a concatenation, each part padded to 4 bytes (address 4 or 16
/// bytes, each port 2 bytes in network order and 2 of zeros).
fn closed_key(client: SocketAddr, port: u16) -> Vec<u8> {
    let mut k = match client.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    for p in [client.port(), port] {
        k.extend_from_slice(&p.to_be_bytes());
        k.extend_from_slice(&[0, 0]);
    }
    k
}

impl Firewall {
    /// The whole table, with `ports` in the exposed sets. Replaces a table
    /// of the same name left by an earlier gateway in this namespace.
    pub fn script(&self, ports: &[ExposedPort]) -> String {
        let nets = |v6: bool| {
            self.internal_nets
                .iter()
                .filter(|(a, _)| a.is_ipv6() == v6)
                .map(|(a, l)| format!("{a}/{l}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let elements = |p: Proto, v6: bool| {
            let e: Vec<String> = ports
                .iter()
                .filter(|e| e.proto == p && e.v6 == v6)
                .map(|&e| element(e))
                .collect();
            if e.is_empty() {
                String::new()
            } else {
                format!(" elements = {{ {} }};", e.join(", "))
            }
        };
        let set_nets = |name: &str, ty: &str, v6: bool| {
            let n = nets(v6);
            let el = if n.is_empty() {
                String::new()
            } else {
                format!(" elements = {{ {n} }};")
            };
            format!("\tset {name} {{ type {ty}; flags interval;{el} }}\n")
        };
        let (pif, tun) = (&self.public_if, &self.tun);
        let mut s =
            format!("add table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
        for p in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
            for v6 in [false, true] {
                let ty = match (p, v6) {
                    (Proto::Icmp, false) => "icmp_type",
                    (Proto::Icmp, true) => "icmpv6_type",
                    _ => "inet_service",
                };
                s += &format!(
                    "\tset {} {{ type {ty};{} }}\n",
                    set_name(p, v6),
                    elements(p, v6)
                );
            }
        }
        for p in [Proto::Tcp, Proto::Udp] {
            for (v6, ty) in [(false, "ipv4_addr"), (true, "ipv6_addr")] {
                s += &format!(
                    "\tset {} {{ type {ty} . inet_service . inet_service; flags timeout; timeout {CLOSED_TIMEOUT_S}s; }}\n",
                    closed_set_name(p, v6),
                );
            }
        }
        s += &set_nets("internal4", "ipv4_addr", false);
        s += &set_nets("internal6", "ipv6_addr", true);
        for c in COUNTERS {
            s += &format!("\tcounter {c} {{ }}\n");
        }
        s += &format!(
            "\tchain raw_prerouting {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n\
             \t\tiifname \"{pif}\" ip saddr @internal4 counter name \"spoofed_source\" drop\n\
             \t\tiifname \"{pif}\" ip6 saddr @internal6 counter name \"spoofed_source\" drop\n\t}}\n"
        );
        s += "\tchain nat_prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n";
        for p in ["tcp", "udp"] {
            s += &format!(
                "\t\tiifname \"{pif}\" ip daddr {} {p} dport @exposed_{p} counter name \"exposed_new\" dnat ip to {}\n",
                self.public, self.internal
            );
            if let Some((pub6, int6)) = self.v6 {
                s += &format!(
                    "\t\tiifname \"{pif}\" ip6 daddr {pub6} {p} dport @exposed_{p}6 counter name \"exposed_new\" dnat ip6 to {int6}\n"
                );
            }
        }
        s += &format!(
            "\t\tiifname \"{pif}\" ip daddr {} icmp type @exposed_icmp counter name \"exposed_new\" dnat ip to {}\n",
            self.public, self.internal
        );
        if let Some((pub6, int6)) = self.v6 {
            s += &format!(
                "\t\tiifname \"{pif}\" ip6 daddr {pub6} icmpv6 type @exposed_icmp6 counter name \"exposed_new\" dnat ip6 to {int6}\n"
            );
        }
        s += "\t}\n";
        s += &format!(
            "\tchain input {{\n\t\ttype filter hook input priority filter; policy accept;\n\
             \t\tiifname \"{pif}\" ct state established,related accept\n\
             \t\tiifname \"{pif}\" icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept\n\
             \t\tiifname \"{pif}\" ip saddr . tcp sport . tcp dport @closed_tcp counter name \"unexposed_reset\" reject with tcp reset\n\
             \t\tiifname \"{pif}\" ip saddr . udp sport . udp dport @closed_udp counter name \"unexposed_reset\" reject with icmpx type port-unreachable\n\
             \t\tiifname \"{pif}\" ip6 saddr . tcp sport . tcp dport @closed_tcp6 counter name \"unexposed_reset\" reject with tcp reset\n\
             \t\tiifname \"{pif}\" ip6 saddr . udp sport . udp dport @closed_udp6 counter name \"unexposed_reset\" reject with icmpx type port-unreachable\n\
             \t\tiifname \"{pif}\" counter name \"not_exposed\" drop\n\t}}\n"
        );
        s += &format!(
            "\tchain output {{\n\t\ttype filter hook output priority filter; policy accept;\n\
             \t\toifname \"{tun}\" ip6 saddr fe80::/10 drop\n\
             \t\toifname \"{tun}\" ip6 daddr ff00::/8 drop\n\t}}\n"
        );
        s += &format!(
            "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\
             \t\toifname \"{tun}\" tcp flags syn / syn,rst tcp option maxseg size set rt mtu\n\
             \t\tiifname \"{pif}\" ct state established,related accept\n\
             \t\tiifname \"{pif}\" oifname \"{tun}\" ct status dnat accept\n\
             \t\tiifname \"{pif}\" counter name \"refused_forward\" drop\n\t}}\n"
        );
        s += &format!(
            "\tchain nat_postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\toifname \"{pif}\" ip saddr @internal4 counter name \"masqueraded_new\" masquerade\n\
             \t\toifname \"{pif}\" ip6 saddr @internal6 counter name \"masqueraded_new\" masquerade\n\t}}\n"
        );
        s += "}\n";
        s
    }

    /// Loads the table.
    pub fn install(&self, ports: &[ExposedPort]) -> anyhow::Result<()> {
        nft(&self.script(ports)).context("loading the gateway's nftables table")
    }

    /// Adds or removes `port` from its exposed set (for ICMP, the echo
    /// request type), over `nl`.
    pub fn set_port(nl: &mut Socket, port: ExposedPort, exposed: bool) -> anyhow::Result<()> {
        let op = if exposed { SetOp::Add } else { SetOp::Delete };
        let e = SetElem {
            set: set_name(port.proto, port.v6),
            key: port_key(port),
            shown: element(port),
        };
        nl.change_set(op, NFPROTO_INET, TABLE, &[e])
            .context("changing the firewall's exposed ports")
    }

    /// Adds `clients` (address and port), whose connections through
    /// exposed port `port` were just ended, to the closed set of `proto`
    /// and their family (elements take the set's timeout), over `nl`,
    /// in one batch: their next packets are answered with a reset or an
    /// ICMP error.
    /// ICMP has no closed set: an echo after `unexpose` meets no DNAT
    /// and is dropped as `not_exposed`.
    pub fn close(
        nl: &mut Socket,
        proto: Proto,
        port: u16,
        clients: &[SocketAddr],
    ) -> anyhow::Result<()> {
        if !proto.has_ports() {
            return Ok(());
        }
        let elems: Vec<SetElem> = clients
            .iter()
            .map(|c| SetElem {
                set: closed_set_name(proto, c.is_ipv6()),
                key: closed_key(*c, port),
                shown: format!("{} . {} . {port}", c.ip(), c.port()),
            })
            .collect();
        nl.change_set(SetOp::Add, NFPROTO_INET, TABLE, &elems)
            .with_context(|| format!("closing {} {proto} flows in the firewall", clients.len()))
    }

    /// Removes the table (at exit).
    pub fn remove() -> anyhow::Result<()> {
        nft(&format!("delete table inet {TABLE}\n")).context("removing the gateway's table")
    }
}

/// The packet count of every named counter, in [`COUNTERS`] order.
pub fn counters() -> anyhow::Result<Vec<(&'static str, u64)>> {
    let out = Command::new("nft")
        .args(["list", "counters", "table", "inet", TABLE])
        .stdin(Stdio::null())
        .output()
        .context("running `nft list counters`")?;
    if !out.status.success() {
        bail!(
            "`nft list counters` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_counters(&String::from_utf8_lossy(&out.stdout))
}

/// Reads `counter NAME {` … `packets N bytes M` blocks.
fn parse_counters(text: &str) -> anyhow::Result<Vec<(&'static str, u64)>> {
    let mut found = Vec::new();
    let mut current: Option<&str> = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("counter ") {
            current = rest.split_whitespace().next();
        } else if let (Some(name), Some(rest)) = (current, line.strip_prefix("packets ")) {
            let n = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("counter {name}: `{line}`"))?;
            found.push((name.to_string(), n));
            current = None;
        }
    }
    COUNTERS
        .iter()
        .map(|c| {
            found
                .iter()
                .find(|(n, _)| n == c)
                .map(|(_, v)| (*c, *v))
                .with_context(|| format!("counter {c} missing from the table"))
        })
        .collect()
}

/// Runs `nft -f -` with `script` on its standard input.
fn nft(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting `nft` (is the nftables package installed?)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .context("writing to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft rejected it: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse_from_nft_listing() {
        let text = "table inet hoplab_gateway {\n\tcounter spoofed_source {\n\t\tpackets 2 bytes 120\n\t}\n\
                    \tcounter not_exposed {\n\t\tpackets 1 bytes 60\n\t}\n\tcounter refused_forward {\n\t\tpackets 0 bytes 0\n\t}\n\
                    \tcounter exposed_new {\n\t\tpackets 3 bytes 180\n\t}\n\tcounter masqueraded_new {\n\t\tpackets 0 bytes 0\n\t}\n\
                    \tcounter unexposed_reset {\n\t\tpackets 4 bytes 240\n\t}\n}\n";
        let c = parse_counters(text).unwrap();
        assert_eq!(c[0], ("spoofed_source", 2));
        assert_eq!(c[3], ("exposed_new", 3));
        assert_eq!(c[5], ("unexposed_reset", 4));
        let missing = text.replace("masqueraded_new", "other");
        assert!(parse_counters(&missing).is_err());
    }

    /// The keys as `nft --debug=netlink add element` showed them
    /// (nftables 1.0.6; registers as little-endian words): `exposed_udp
    /// { 7000 }` is `0000581b`, `exposed_icmp { echo-request }`
    /// `00000008`, `exposed_icmp6 { echo-request }` `00000080`,
    /// `closed_tcp { 93.6.1.78 . 40000 . 8080 }` `4e01065d 0000409c
    /// 0000901f`, and `closed_tcp6 { 2001:db8::1 . 40000 . 8080 }`
    /// `b80d0120 00000000 00000000 01000000 0000409c 0000901f`.
    #[test]
    fn keys_are_encoded_as_nft_encodes_the_sets_types() {
        assert_eq!(
            port_key(ExposedPort::new(Proto::Udp, 7000, false)),
            [0x1b, 0x58]
        );
        assert_eq!(
            port_key(ExposedPort::new(Proto::Tcp, 7000, true)),
            [0x1b, 0x58]
        );
        assert_eq!(port_key(ExposedPort::new(Proto::Icmp, 0, false)), [8]);
        assert_eq!(port_key(ExposedPort::new(Proto::Icmp, 0, true)), [128]);
        assert_eq!(
            closed_key("93.6.1.78:40000".parse().unwrap(), 8080),
            [0x5d, 6, 1, 0x4e, 0x9c, 0x40, 0, 0, 0x1f, 0x90, 0, 0]
        );
        let mut v6 = vec![0x20, 1, 0x0d, 0xb8];
        v6.extend_from_slice(&[0; 11]);
        v6.extend_from_slice(&[1, 0x9c, 0x40, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(closed_key("[2001:db8::1]:40000".parse().unwrap(), 8080), v6);
    }

    #[test]
    fn script_names_interfaces_addresses_and_ports() {
        let f = Firewall {
            public_if: "pub".into(),
            tun: "gw0".into(),
            public: Ipv4Addr::new(24, 0, 5, 8),
            internal: Ipv4Addr::new(10, 30, 255, 253),
            v6: None,
            internal_nets: vec![(Ipv4Addr::new(10, 18, 0, 0).into(), 16)],
        };
        let s = f.script(&[ExposedPort::new(Proto::Tcp, 8080, false)]);
        assert!(
            s.contains("set exposed_tcp { type inet_service; elements = { 8080 }; }"),
            "{s}"
        );
        assert!(s.contains("set exposed_udp { type inet_service; }"), "{s}");
        assert!(s.contains("set exposed_icmp { type icmp_type; }"), "{s}");
        assert!(s.contains("ip daddr 24.0.5.8 icmp type @exposed_icmp counter name \"exposed_new\" dnat ip to 10.30.255.253"), "{s}");
        assert!(!s.contains("icmpv6 type @exposed_icmp6"), "{s}");
        assert!(s.contains("ip daddr 24.0.5.8 tcp dport @exposed_tcp counter name \"exposed_new\" dnat ip to 10.30.255.253"), "{s}");
        assert!(s.contains("elements = { 10.18.0.0/16 }"), "{s}");
        assert!(s.contains("set exposed_tcp6 { type inet_service; }"), "{s}");
        assert!(!s.contains("dnat ip6"), "{s}");
        let f6 = Firewall {
            v6: Some((
                "2001:db8::8".parse().unwrap(),
                "fdff:7fff::fffd".parse().unwrap(),
            )),
            ..f
        };
        let s = f6.script(&[
            ExposedPort::new(Proto::Udp, 53, true),
            ExposedPort::new(Proto::Icmp, 0, true),
        ]);
        assert!(
            s.contains("set exposed_icmp6 { type icmpv6_type; elements = { echo-request }; }"),
            "{s}"
        );
        assert!(s.contains("ip6 daddr 2001:db8::8 icmpv6 type @exposed_icmp6 counter name \"exposed_new\" dnat ip6 to fdff:7fff::fffd"), "{s}");
        assert!(
            s.contains("set exposed_udp6 { type inet_service; elements = { 53 }; }"),
            "{s}"
        );
        assert!(s.contains("ip6 daddr 2001:db8::8 udp dport @exposed_udp6 counter name \"exposed_new\" dnat ip6 to fdff:7fff::fffd"), "{s}");
    }
}
