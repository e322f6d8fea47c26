//! The typed pieces of a trace: where a hop was seen ([`Place`]), the
//! headers it showed ([`Header`]: L3/L4 fields and the tunnel's outer
//! header), what changed from the hop before ([`Change`]), where a packet
//! ended ([`End`]) and what a step's result was ([`StepResult`]).
//!
//! In the YAML each piece is one string, exactly as the snapshots have
//! always read: every type here is written with `Display` and read with
//! `FromStr`, and reading accepts only the canonical text (what `Display`
//! gives back), so a trace read and written again is the same bytes.
//! Everything that shows, compares or marks fields (reports, pages, the
//! per-hop diff, the pcapng comments) reads these types, never the text.
//!
//! The names an engineer reads are made here, once, for the reports and
//! the frame comments alike: ICMP types and codes ([`icmp_name`]: `port
//! unreachable`, `echo request`), and what a hop did to its packet
//! ([`Changes::step_name`]: `DNAT`, `SNAT`, `tunnel: encapsulate`, ...; on
//! a reply, the reverse translations `un-DNAT` and `un-SNAT`).
//!
//! A segment's L7 summary is its packet's ([`super::Packet::l7`]), not a
//! piece of [`Header`]: the payload, part of a packet's identity, is the
//! same on every hop. A packet dropped with a recorded reason ends as
//! [`End::Dropped`]. This
//! module knows the text forms; it does not know captures or scenarios.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use hoplab_dataplane::wire;

/// A piece of a trace's text that does not read as its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not {what}: {text:?}")]
pub struct ParseError {
    what: &'static str,
    text: String,
}

fn bad(what: &'static str, text: &str) -> ParseError {
    ParseError {
        what,
        text: text.to_string(),
    }
}

/// `T` read from `s`, accepted only if it is written back as `s`.
fn canonical<T: fmt::Display>(what: &'static str, s: &str, v: Option<T>) -> Result<T, ParseError> {
    match v {
        Some(v) if v.to_string() == s => Ok(v),
        _ => Err(bad(what, s)),
    }
}

/// Serde through `Display` and `FromStr`: one YAML string per value.
macro_rules! serde_as_text {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_text!(Place, Header, Changes, End, StepResult);

/// Direction of a frame on its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    In,
    Out,
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dir::In => "in",
            Dir::Out => "out",
        })
    }
}

/// Where a hop was seen: `host/ifname in|out`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Place {
    pub host: String,
    pub ifname: String,
    pub dir: Dir,
}

impl Place {
    /// `ifname in|out`: the place within its host.
    pub fn port(&self) -> String {
        format!("{} {}", self.ifname, self.dir)
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.host, self.ifname, self.dir)
    }
}

impl FromStr for Place {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Place, ParseError> {
        let v = s.rsplit_once(' ').and_then(|(hi, dir)| {
            let dir = match dir {
                "in" => Dir::In,
                "out" => Dir::Out,
                _ => return None,
            };
            let (host, ifname) = hi.split_once('/')?;
            Some(Place {
                host: host.into(),
                ifname: ifname.into(),
                dir,
            })
        });
        canonical("a place (host/ifname in|out)", s, v)
    }
}

/// A TCP or UDP port: its number, or `ephN` for the Nth ephemeral port a
/// proxy chose (numbers that differ on every run), numbered in the
/// order the trace meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    Num(u16),
    Eph(u32),
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Num(p) => write!(f, "{p}"),
            Port::Eph(n) => write!(f, "eph{n}"),
        }
    }
}

impl FromStr for Port {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Port, ParseError> {
        let v = match s.strip_prefix("eph") {
            Some(n) => n.parse().ok().map(Port::Eph),
            None => s.parse().ok().map(Port::Num),
        };
        canonical("a port (N or ephN)", s, v)
    }
}

/// An address and, for TCP and UDP, a port: `10.0.0.1:80`, `[fd00::1]:80`,
/// `10.0.0.1`, `10.0.1.1:eph1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: Option<Port>,
}

impl Endpoint {
    /// The source and destination of `s`, with ports for TCP and UDP.
    pub fn of(s: &wire::Summary) -> (Endpoint, Endpoint) {
        let ports = s.ports();
        (
            Endpoint {
                addr: s.src,
                port: ports.map(|p| Port::Num(p.0)),
            },
            Endpoint {
                addr: s.dst,
                port: ports.map(|p| Port::Num(p.1)),
            },
        )
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (IpAddr::V6(v6), Some(p)) => write!(f, "[{v6}]:{p}"),
            (a, Some(p)) => write!(f, "{a}:{p}"),
            (a, None) => write!(f, "{a}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Endpoint, ParseError> {
        let v = if let Ok(addr) = s.parse() {
            Some(Endpoint { addr, port: None })
        } else {
            s.rsplit_once(':').and_then(|(a, p)| {
                let a = a
                    .strip_prefix('[')
                    .and_then(|a| a.strip_suffix(']'))
                    .unwrap_or(a);
                Some(Endpoint {
                    addr: a.parse().ok()?,
                    port: Some(p.parse().ok()?),
                })
            })
        };
        canonical("an address or address:port", s, v)
    }
}

/// The IP protocol as the trace names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmp6,
    /// Any other protocol, or a fragment after the first.
    Ip,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmp6 => "icmp6",
            Proto::Ip => "ip",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Proto {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Proto, ParseError> {
        [Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Icmp6, Proto::Ip]
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| bad("a protocol", s))
    }
}

/// What a header shows of its transport layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `FLAGS seq=N [ack=N]`; `ack` is shown with the ACK flag (or when
    /// not zero).
    Tcp {
        flags: u8,
        seq: u32,
        ack: Option<u32>,
    },
    Udp,
    /// `type=T code=C [id=I seq=S]` (the identifier and sequence of echoes).
    Icmp {
        v6: bool,
        ty: u8,
        code: u8,
        echo: Option<(u16, u16)>,
    },
    /// `proto=N`.
    Other {
        proto: u8,
    },
}

impl Transport {
    pub fn proto(&self) -> Proto {
        match self {
            Transport::Tcp { .. } => Proto::Tcp,
            Transport::Udp => Proto::Udp,
            Transport::Icmp { v6: false, .. } => Proto::Icmp,
            Transport::Icmp { v6: true, .. } => Proto::Icmp6,
            Transport::Other { .. } => Proto::Ip,
        }
    }
}

/// The name of an ICMP (`v6`: ICMPv6) type and code as engineers say it
/// (`echo request`, `port unreachable`, `ttl exceeded`); `None` for a
/// type this table does not know.
pub fn icmp_name(v6: bool, ty: u8, code: u8) -> Option<&'static str> {
    Some(match (v6, ty, code) {
        (false, 0, _) | (true, 129, _) => "echo reply",
        (false, 8, _) | (true, 128, _) => "echo request",
        (false, 3, 0) => "net unreachable",
        (false, 3, 1) => "host unreachable",
        (false, 3, 2) => "protocol unreachable",
        (false, 3, 3) | (true, 1, 4) => "port unreachable",
        (false, 3, 4) => "fragmentation needed",
        (false, 3, 9 | 10 | 13) | (true, 1, 1) => "administratively prohibited",
        (true, 1, 0) => "no route",
        (true, 1, 3) => "address unreachable",
        (false, 3, _) | (true, 1, _) => "destination unreachable",
        (false, 4, _) => "source quench",
        (false, 5, _) | (true, 137, _) => "redirect",
        (false, 11, 0) | (true, 3, 0) => "ttl exceeded",
        (false, 11, _) | (true, 3, _) => "reassembly time exceeded",
        (false, 12, _) | (true, 4, _) => "parameter problem",
        (true, 2, _) => "packet too big",
        (true, 133, _) => "router solicitation",
        (true, 134, _) => "router advertisement",
        (true, 135, _) => "neighbour solicitation",
        (true, 136, _) => "neighbour advertisement",
        _ => return None,
    })
}

/// Whether an ICMP (`v6`: ICMPv6) type is an error about another packet.
pub fn icmp_is_error(v6: bool, ty: u8) -> bool {
    if v6 {
        (1..=4).contains(&ty)
    } else {
        matches!(ty, 3 | 4 | 5 | 11 | 12)
    }
}

/// `icmp port unreachable`, `icmp6 echo request`, or `icmp type 42` for a
/// type without a name: the kind of an ICMP packet in a packet's title.
pub fn icmp_kind(v6: bool, ty: u8, code: u8) -> String {
    let proto = if v6 { Proto::Icmp6 } else { Proto::Icmp };
    match icmp_name(v6, ty, code) {
        Some(n) => format!("{proto} {n}"),
        None => format!("{proto} type {ty}"),
    }
}

impl Transport {
    /// An ICMP error (destination unreachable, ttl exceeded, ...).
    pub fn is_icmp_error(&self) -> bool {
        matches!(*self, Transport::Icmp { v6, ty, .. } if icmp_is_error(v6, ty))
    }
}

/// One field of a header as shown: `src`, `>`, `dst`, `proto`, `flags`,
/// or the key of a `key=value` token (`seq`, `ttl`, `outer.src`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub key: &'static str,
    /// The whole token, e.g. `ttl=63` or `10.0.0.1:80`.
    pub text: String,
    /// Part of the tunnel's outer header.
    pub outer: bool,
}

impl Field {
    fn new(key: &'static str, text: impl fmt::Display) -> Field {
        Field {
            key,
            text: text.to_string(),
            outer: false,
        }
    }

    fn kv(key: &'static str, v: impl fmt::Display) -> Field {
        Field::new(key, format!("{key}={v}"))
    }

    /// The value: what follows `=`, or the whole token.
    pub fn value(&self) -> &str {
        self.text.split_once('=').map_or(&self.text, |(_, v)| v)
    }
}

/// The header of the UDP datagram that carries a tunnelled packet: only
/// what is the same on every run (no IP ID, no checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outer {
    pub proto: Proto,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub len: u16,
    pub ttl: u8,
}

/// A hop's headers: `SRC > DST PROTO [transport fields] len=N ttl=N`, then
/// ` | outer=udp outer.src=... outer.dst=... outer.len=N outer.ttl=N` when
/// the packet was seen inside the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub transport: Transport,
    pub len: u16,
    pub ttl: u8,
    pub outer: Option<Outer>,
}

impl Header {
    /// The header of `s` as shown (TCP numbers as they are in `s`), with
    /// the outer header of the datagram that carried it, if any.
    pub fn of(s: &wire::Summary, outer: Option<&wire::Summary>) -> Header {
        let transport = match s.l4 {
            wire::L4::Tcp {
                seq, ack, flags, ..
            } => Transport::Tcp {
                flags: flags & SHOWN_FLAGS,
                seq,
                // The `ack` of a segment without the ACK flag means nothing.
                ack: (flags & wire::tcp_flags::ACK != 0 || ack != 0).then_some(ack),
            },
            wire::L4::Udp { .. } => Transport::Udp,
            wire::L4::Icmp { v6, ty, code, rest } => Transport::Icmp {
                v6,
                ty,
                code,
                echo: s
                    .echo_id()
                    .map(|id| (id, u16::from_be_bytes([rest[2], rest[3]]))),
            },
            wire::L4::Other { proto } => Transport::Other { proto },
        };
        let (src, dst) = Endpoint::of(s);
        Header {
            src,
            dst,
            transport,
            len: s.len,
            ttl: s.ttl,
            outer: outer.map(|o| {
                let t = Tunnel::of(o);
                Outer {
                    proto: t.proto,
                    src: t.src,
                    dst: t.dst,
                    len: o.len,
                    ttl: o.ttl,
                }
            }),
        }
    }

    /// The fields in the order shown, the outer header's last.
    pub fn fields(&self) -> Vec<Field> {
        let mut v = vec![
            Field::new("src", self.src),
            Field::new(">", ">"),
            Field::new("dst", self.dst),
            Field::new("proto", self.transport.proto()),
        ];
        match self.transport {
            Transport::Tcp { flags, seq, ack } => {
                v.push(Field::new("flags", wire::flags_text(flags)));
                v.push(Field::kv("seq", seq));
                v.extend(ack.map(|a| Field::kv("ack", a)));
            }
            Transport::Icmp { ty, code, echo, .. } => {
                v.push(Field::kv("type", ty));
                v.push(Field::kv("code", code));
                if let Some((id, seq)) = echo {
                    v.push(Field::kv("id", id));
                    v.push(Field::kv("seq", seq));
                }
            }
            Transport::Other { proto } => v.push(Field::kv("proto", proto)),
            Transport::Udp => {}
        }
        v.push(Field::kv("len", self.len));
        v.push(Field::kv("ttl", self.ttl));
        if let Some(o) = &self.outer {
            for f in [
                Field::kv("outer", o.proto),
                Field::kv("outer.src", o.src),
                Field::kv("outer.dst", o.dst),
                Field::kv("outer.len", o.len),
                Field::kv("outer.ttl", o.ttl),
            ] {
                v.push(Field { outer: true, ..f });
            }
        }
        v
    }
}

/// The TCP flags a header shows (those [`wire::flags_text`] names).
const SHOWN_FLAGS: u8 = {
    use wire::tcp_flags::*;
    SYN | FIN | PSH | RST | URG | ACK
};

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut in_outer = false;
        for (i, t) in self.fields().iter().enumerate() {
            if t.outer && !in_outer {
                in_outer = true;
                f.write_str(" | ")?;
            } else if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(&t.text)?;
        }
        Ok(())
    }
}

/// The TCP flags of `FLAGS` (`S.`, `P.`, `none`, ...).
fn tcp_flags(s: &str) -> Option<u8> {
    use wire::tcp_flags::*;
    if s == "none" {
        return Some(0);
    }
    s.chars().try_fold(0u8, |acc, c| {
        Some(
            acc | match c {
                'S' => SYN,
                'F' => FIN,
                'P' => PSH,
                'R' => RST,
                'U' => URG,
                '.' => ACK,
                _ => return None,
            },
        )
    })
}

/// The `key=value` tokens of a header, read in order.
struct Tokens<'a>(std::iter::Peekable<std::str::Split<'a, char>>);

impl Tokens<'_> {
    /// The value of the next token if it is `key=...`.
    fn take<T: FromStr>(&mut self, key: &str) -> Option<T> {
        let v = self.0.peek()?.strip_prefix(key)?.strip_prefix('=')?;
        let v = v.parse().ok()?;
        self.0.next();
        Some(v)
    }
}

fn parse_header(s: &str) -> Option<Header> {
    let (inner, outer) = match s.split_once(" | ") {
        Some((i, o)) => (i, Some(o)),
        None => (s, None),
    };
    let mut t = Tokens(inner.split(' ').peekable());
    let src = t.0.next()?.parse().ok()?;
    (t.0.next()? == ">").then_some(())?;
    let dst = t.0.next()?.parse().ok()?;
    let transport = match t.0.next()?.parse().ok()? {
        Proto::Tcp => Transport::Tcp {
            flags: tcp_flags(t.0.next()?)?,
            seq: t.take("seq")?,
            ack: t.take("ack"),
        },
        Proto::Udp => Transport::Udp,
        p @ (Proto::Icmp | Proto::Icmp6) => Transport::Icmp {
            v6: p == Proto::Icmp6,
            ty: t.take("type")?,
            code: t.take("code")?,
            echo: t.take("id").and_then(|id| Some((id, t.take("seq")?))),
        },
        Proto::Ip => Transport::Other {
            proto: t.take("proto")?,
        },
    };
    let (len, ttl) = (t.take("len")?, t.take("ttl")?);
    t.0.next().is_none().then_some(())?;
    let outer = match outer {
        None => None,
        Some(o) => {
            let mut t = Tokens(o.split(' ').peekable());
            let o = Outer {
                proto: t.take("outer")?,
                src: t.take("outer.src")?,
                dst: t.take("outer.dst")?,
                len: t.take("outer.len")?,
                ttl: t.take("outer.ttl")?,
            };
            t.0.next().is_none().then_some(o)
        }
    };
    Some(Header {
        src,
        dst,
        transport,
        len,
        ttl,
        outer,
    })
}

impl FromStr for Header {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Header, ParseError> {
        canonical("a header line", s, parse_header(s))
    }
}

/// The datagram a tunnel carries packets in: `udp SRC > DST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tunnel {
    pub proto: Proto,
    pub src: Endpoint,
    pub dst: Endpoint,
}

impl Tunnel {
    pub fn of(o: &wire::Summary) -> Tunnel {
        let (src, dst) = Endpoint::of(o);
        Tunnel {
            proto: o
                .proto_name()
                .parse()
                .expect("the wire's protocol names are the trace's"),
            src,
            dst,
        }
    }
}

impl fmt::Display for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} > {}", self.proto, self.src, self.dst)
    }
}

impl FromStr for Tunnel {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Tunnel, ParseError> {
        let v = (|| {
            let (proto, rest) = s.split_once(' ')?;
            let (src, dst) = rest.split_once(" > ")?;
            Some(Tunnel {
                proto: proto.parse().ok()?,
                src: src.parse().ok()?,
                dst: dst.parse().ok()?,
            })
        })();
        canonical("a tunnel (proto SRC > DST)", s, v)
    }
}

/// A field a hop rewrote, with its old and new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rewrite {
    Src(Endpoint, Endpoint),
    Dst(Endpoint, Endpoint),
    /// The ICMP echo identifier (`None`: not an echo).
    IcmpId(Option<u16>, Option<u16>),
    Ttl(u8, u8),
    Len(u16, u16),
}

impl Rewrite {
    /// The key of the header [`Field`] it rewrote (without `outer.`).
    pub fn key(&self) -> &'static str {
        match self {
            Rewrite::Src(..) => "src",
            Rewrite::Dst(..) => "dst",
            Rewrite::IcmpId(..) => "id",
            Rewrite::Ttl(..) => "ttl",
            Rewrite::Len(..) => "len",
        }
    }
}

impl fmt::Display for Rewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rewrite::Src(a, b) => write!(f, "src {a} -> {b}"),
            Rewrite::Dst(a, b) => write!(f, "dst {a} -> {b}"),
            Rewrite::IcmpId(a, b) => write!(f, "icmp id {a:?} -> {b:?}"),
            Rewrite::Ttl(a, b) => write!(f, "ttl {a} -> {b}"),
            Rewrite::Len(a, b) => write!(f, "len {a} -> {b}"),
        }
    }
}

fn parse_rewrite(s: &str) -> Option<Rewrite> {
    fn pair<T: FromStr>(s: &str) -> Option<(T, T)> {
        let (a, b) = s.split_once(" -> ")?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }
    fn id(s: &str) -> Option<Option<u16>> {
        match s {
            "None" => Some(None),
            _ => Some(Some(
                s.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok()?,
            )),
        }
    }
    let (what, rest) = match s.strip_prefix("icmp id ") {
        Some(r) => ("icmp id", r),
        None => s.split_once(' ')?,
    };
    Some(match what {
        "src" => pair(rest).map(|(a, b)| Rewrite::Src(a, b))?,
        "dst" => pair(rest).map(|(a, b)| Rewrite::Dst(a, b))?,
        "ttl" => pair(rest).map(|(a, b)| Rewrite::Ttl(a, b))?,
        "len" => pair(rest).map(|(a, b)| Rewrite::Len(a, b))?,
        "icmp id" => {
            let (a, b) = rest.split_once(" -> ")?;
            Rewrite::IcmpId(id(a)?, id(b)?)
        }
        _ => return None,
    })
}

/// One thing that changed from the hop before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// The tunnel starts: `encapsulated in udp SRC > DST`.
    Encapsulated(Tunnel),
    /// The tunnel ends: `decapsulated from udp SRC > DST`.
    Decapsulated(Tunnel),
    /// A field of the packet (`outer: false`) or of the tunnel's outer
    /// header (`outer ttl 64 -> 63`) rewritten.
    Rewritten { outer: bool, field: Rewrite },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Encapsulated(t) => write!(f, "encapsulated in {t}"),
            Change::Decapsulated(t) => write!(f, "decapsulated from {t}"),
            Change::Rewritten { outer: true, field } => write!(f, "outer {field}"),
            Change::Rewritten {
                outer: false,
                field,
            } => write!(f, "{field}"),
        }
    }
}

impl FromStr for Change {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Change, ParseError> {
        let v = if let Some(t) = s.strip_prefix("encapsulated in ") {
            t.parse().ok().map(Change::Encapsulated)
        } else if let Some(t) = s.strip_prefix("decapsulated from ") {
            t.parse().ok().map(Change::Decapsulated)
        } else if let Some(r) = s.strip_prefix("outer ") {
            parse_rewrite(r).map(|field| Change::Rewritten { outer: true, field })
        } else {
            parse_rewrite(s).map(|field| Change::Rewritten {
                outer: false,
                field,
            })
        };
        canonical("a change", s, v)
    }
}

/// What changed from the hop before, in order (the tunnel first, then the
/// outer header's fields, then the packet's): `A, B, C`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Changes(pub Vec<Change>);

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl FromStr for Changes {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Changes, ParseError> {
        if s.is_empty() {
            return Ok(Changes::default());
        }
        s.split(", ")
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Changes)
    }
}

impl Changes {
    /// The name of what a hop did to its packet: `DNAT` (destination
    /// rewritten), `SNAT` (source), `DNAT + SNAT`, `NAT` (only the ICMP
    /// echo identifier), each possibly after `tunnel: encapsulate` /
    /// `tunnel: decapsulate`; `tunnel: outer rewritten` (the tunnel's own
    /// addresses); `routed` (only TTLs); `resized` (only lengths); `None`
    /// when nothing changed. On a `reply` (a packet going back to the
    /// step's client) a rewrite is the reverse translation of the
    /// request's: a source rewritten is `un-DNAT`, a destination `un-SNAT`
    /// (`un-NAT`: the echo identifier), so nobody looks for a rule that
    /// is not there.
    pub fn step_name(&self, reply: bool) -> Option<String> {
        let (mut tunnel, mut src, mut dst, mut id) = (None, false, false, false);
        let (mut outer_addr, mut ttl, mut len, mut other) = (false, false, false, false);
        for c in &self.0 {
            match *c {
                Change::Encapsulated(_) => tunnel = Some("tunnel: encapsulate"),
                Change::Decapsulated(_) => tunnel = Some("tunnel: decapsulate"),
                Change::Rewritten { outer: true, field } => match field {
                    Rewrite::Src(..) | Rewrite::Dst(..) => outer_addr = true,
                    Rewrite::Ttl(..) => ttl = true,
                    Rewrite::Len(..) => len = true,
                    Rewrite::IcmpId(..) => other = true,
                },
                Change::Rewritten {
                    outer: false,
                    field,
                } => match field {
                    Rewrite::Src(..) => src = true,
                    Rewrite::Dst(..) => dst = true,
                    Rewrite::IcmpId(..) => id = true,
                    Rewrite::Ttl(..) => ttl = true,
                    Rewrite::Len(..) => len = true,
                },
            }
        }
        let mut parts: Vec<&str> = tunnel.into_iter().collect();
        match (reply, dst, src) {
            (false, d, s) => {
                parts.extend(d.then_some("DNAT"));
                parts.extend(s.then_some("SNAT"));
            }
            (true, d, s) => {
                parts.extend(s.then_some("un-DNAT"));
                parts.extend(d.then_some("un-SNAT"));
            }
        }
        if id && !src && !dst {
            parts.push(if reply { "un-NAT" } else { "NAT" });
        }
        if !parts.is_empty() {
            return Some(parts.join(" + "));
        }
        let name = if outer_addr {
            "tunnel: outer rewritten"
        } else if ttl {
            "routed"
        } else if len {
            "resized"
        } else if other {
            "changed"
        } else {
            return None;
        };
        Some(name.to_string())
    }
}

/// Where a packet ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum End {
    /// Its last hop was into the host that owns its destination address,
    /// and no drop of it was recorded there.
    Delivered { host: String },
    /// A drop recorded by a verdict source (see [`crate::capture::verdicts`]):
    /// `dropped at HOST in CHAIN by BY (WHY)`, e.g. `dropped at gw in input
    /// by nftables inet hoplab_gateway (not_exposed)`; or, where a
    /// dataplane process read it from an interface and dropped it,
    /// `dropped at HOST/IFNAME by BY (WHY)`, e.g. `dropped at gw/gw0 by the
    /// gateway (table_full)`, `dropped at gw/gw0 by the kernel (FULL_RING)`;
    /// or, for the kernel's drop where no device is known (`at` empty),
    /// `dropped at HOST by the kernel (WHY)`.
    Dropped {
        host: String,
        /// Where in the host: the nftables chain (`input`, `forward`, ...),
        /// or the interface (`iface`); empty: the host alone.
        at: String,
        /// What dropped it: `nftables FAMILY TABLE`, `the gateway`.
        by: String,
        /// Why: the rule's named counter or comment, else its text; the
        /// dataplane's reason.
        why: String,
        /// `at` is an interface the packet was read from.
        iface: bool,
    },
    /// It was not seen after this hop.
    LastSeen(Place),
}

impl End {
    /// Whether the packet did not arrive (dropped, or lost after a hop).
    pub fn is_lost(&self) -> bool {
        !matches!(self, End::Delivered { .. })
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Delivered { host } => write!(f, "delivered to {host}"),
            End::Dropped {
                host,
                at,
                by,
                why,
                iface: false,
            } if at.is_empty() => write!(f, "dropped at {host} by {by} ({why})"),
            End::Dropped {
                host,
                at,
                by,
                why,
                iface: false,
            } => write!(f, "dropped at {host} in {at} by {by} ({why})"),
            End::Dropped {
                host,
                at,
                by,
                why,
                iface: true,
            } => write!(f, "dropped at {host}/{at} by {by} ({why})"),
            End::LastSeen(at) => write!(f, "last seen at {at}"),
        }
    }
}

impl FromStr for End {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<End, ParseError> {
        if let Some(h) = s.strip_prefix("delivered to ") {
            Ok(End::Delivered { host: h.into() })
        } else if let Some(at) = s.strip_prefix("last seen at ") {
            at.parse().map(End::LastSeen)
        } else if let Some(rest) = s.strip_prefix("dropped at ") {
            let v = (|| {
                // `HOST/IFNAME by`: a host's name has no `/`.
                let place = rest.split(' ').next()?;
                let (host, at, iface, rest) = match place.split_once('/') {
                    Some((host, ifname)) => (host, ifname, true, &rest[place.len()..]),
                    // `HOST by`: no place inside the host is known.
                    None if rest[place.len()..].starts_with(" by ") => {
                        (place, "", false, &rest[place.len() + 4..])
                    }
                    None => {
                        let (host, rest) = rest.split_once(" in ")?;
                        let (at, rest) = rest.split_once(" by ")?;
                        (host, at, false, rest)
                    }
                };
                let rest = if iface {
                    rest.strip_prefix(" by ")?
                } else {
                    rest
                };
                let (by, why) = rest.split_once(" (")?;
                let why = why.strip_suffix(')')?;
                Some(End::Dropped {
                    host: host.into(),
                    at: at.into(),
                    by: by.into(),
                    why: why.into(),
                    iface,
                })
            })();
            canonical(
                "a drop (dropped at HOST in CHAIN by WHAT (WHY), dropped at HOST/IFNAME by WHAT (WHY), dropped at HOST by WHAT (WHY))",
                s,
                v,
            )
        } else {
            Err(bad(
                "an end (delivered to HOST, dropped at HOST in CHAIN by WHAT (WHY), dropped at HOST/IFNAME by WHAT (WHY), dropped at HOST by WHAT (WHY), last seen at PLACE)",
                s,
            ))
        }
    }
}

/// A step's result: `ok[: WHAT]`, `FAILED[: WHY]`, `interrupted[: WHAT]`
/// (the run was interrupted while or before the step ran), or `unknown` (a
/// capture traced without its run).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StepResult {
    Ok(Option<String>),
    Failed(Option<String>),
    Interrupted(Option<String>),
    Unknown,
}

impl StepResult {
    pub fn is_ok(&self) -> bool {
        matches!(self, StepResult::Ok(_))
    }

    pub fn is_failed(&self) -> bool {
        matches!(self, StepResult::Failed(_))
    }
}

impl fmt::Display for StepResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, text) = match self {
            StepResult::Ok(t) => ("ok", t),
            StepResult::Failed(t) => ("FAILED", t),
            StepResult::Interrupted(t) => ("interrupted", t),
            StepResult::Unknown => return f.write_str("unknown"),
        };
        f.write_str(word)?;
        match text {
            Some(t) => write!(f, ": {t}"),
            None => Ok(()),
        }
    }
}

impl FromStr for StepResult {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<StepResult, ParseError> {
        let (word, text) = match s.split_once(": ") {
            Some((w, t)) => (w, Some(t.to_string())),
            None => (s, None),
        };
        match (word, text) {
            ("ok", t) => Ok(StepResult::Ok(t)),
            ("FAILED", t) => Ok(StepResult::Failed(t)),
            ("interrupted", t) => Ok(StepResult::Interrupted(t)),
            ("unknown", None) => Ok(StepResult::Unknown),
            _ => Err(bad("a step result (ok, FAILED, interrupted, unknown)", s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Trace;

    /// Every committed snapshot, as `(file name, trace text)`.
    fn snapshots() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/snapshots");
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "snap"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                let body = crate::snapshot::read_body(&text).to_string();
                (p.file_name().unwrap().to_string_lossy().into_owned(), body)
            })
            .collect();
        v.sort();
        assert!(v.len() >= 20, "snapshots in {}", dir.display());
        v
    }

    /// A drop reads into its parts and back; a malformed one is refused.
    #[test]
    fn a_drop_reads_its_place_chain_table_and_reason() {
        let text = "dropped at gw in input by nftables inet hoplab_gateway (not_exposed)";
        let e: End = text.parse().unwrap();
        assert_eq!(
            e,
            End::Dropped {
                host: "gw".into(),
                at: "input".into(),
                by: "nftables inet hoplab_gateway".into(),
                why: "not_exposed".into(),
                iface: false,
            }
        );
        assert_eq!(e.to_string(), text);
        assert!(e.is_lost());
        let text = "dropped at gw/gw0 by the gateway (table_full)";
        let e: End = text.parse().unwrap();
        assert_eq!(
            e,
            End::Dropped {
                host: "gw".into(),
                at: "gw0".into(),
                by: "the gateway".into(),
                why: "table_full".into(),
                iface: true,
            }
        );
        assert_eq!(e.to_string(), text);
        // The kernel's drop where no device is known: the host alone.
        let text = "dropped at b by the kernel (TCP_OLD_DATA)";
        let e: End = text.parse().unwrap();
        assert_eq!(
            e,
            End::Dropped {
                host: "b".into(),
                at: String::new(),
                by: "the kernel".into(),
                why: "TCP_OLD_DATA".into(),
                iface: false,
            }
        );
        assert_eq!(e.to_string(), text);
        for bad in [
            "dropped at gw in input by nftables inet t",
            "dropped at gw by x",
            "dropped at gw in  by x (y)",
            "dropped at gw in input (y)",
            "dropped at gw/gw0 in input by x (y)",
            "dropped at gw/gw0 (y)",
        ] {
            assert!(bad.parse::<End>().is_err(), "{bad}");
        }
    }

    /// The proof that the typed trace is the snapshot format: every
    /// committed snapshot reads into the types and is written back to the
    /// same bytes.
    #[test]
    fn every_snapshot_round_trips_through_the_types() {
        for (name, body) in snapshots() {
            let t = Trace::from_yaml(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t.to_yaml(), body, "{name}");
        }
    }

    /// How a header line was split into fields when hops were text: by
    /// spaces, the outer header after ` | `, keys by position or before `=`.
    fn fields_of_text(hdr: &str) -> Vec<(String, String, bool)> {
        let (inner, outer) = match hdr.split_once(" | ") {
            Some((i, o)) => (i, Some(o)),
            None => (hdr, None),
        };
        let mut v = Vec::new();
        for (i, text) in inner.split(' ').enumerate() {
            let key = match (text.split_once('='), i) {
                (Some((k, _)), _) => k,
                (None, 0) => "src",
                (None, 1) => ">",
                (None, 2) => "dst",
                (None, 3) => "proto",
                (None, 4) => "flags",
                (None, _) => "",
            };
            v.push((key.to_string(), text.to_string(), false));
        }
        for text in outer.into_iter().flat_map(|o| o.split(' ')) {
            let key = text.split_once('=').map_or("", |(k, _)| k);
            v.push((key.to_string(), text.to_string(), true));
        }
        v
    }

    #[test]
    fn header_fields_are_the_tokens_of_the_header_line() {
        for (name, body) in snapshots() {
            let t = Trace::from_yaml(&body).unwrap();
            let hops = t
                .flows
                .iter()
                .flat_map(|f| &f.packets)
                .chain(&t.other)
                .flat_map(|p| &p.hops);
            for h in hops {
                let typed: Vec<_> = h
                    .hdr
                    .fields()
                    .into_iter()
                    .map(|f| (f.key.to_string(), f.text, f.outer))
                    .collect();
                assert_eq!(typed, fields_of_text(&h.hdr.to_string()), "{name}");
            }
        }
    }

    #[test]
    fn only_canonical_text_is_read() {
        for bad in [
            "1.1.1.1:01 > 2.2.2.2:2 udp len=1 ttl=1",
            "1.1.1.1:1 > 2.2.2.2:2 tcp .S seq=0 len=1 ttl=1",
            "1.1.1.1:1 > 2.2.2.2:2 udp len=1 ttl=1 extra",
            "1.1.1.1:1 > 2.2.2.2:2 udp ttl=1 len=1",
            "x",
        ] {
            assert!(bad.parse::<Header>().is_err(), "{bad}");
        }
        assert!("a/b sideways".parse::<Place>().is_err());
        assert!("ttl 1 -> 2,  len 1 -> 2".parse::<Changes>().is_err());
        assert!("maybe: x".parse::<StepResult>().is_err());
        assert_eq!("ok".parse(), Ok(StepResult::Ok(None)));
        assert_eq!(
            "FAILED: expected reply, got no reply".parse(),
            Ok(StepResult::Failed(Some(
                "expected reply, got no reply".into()
            )))
        );
        assert_eq!(
            "interrupted: not run".parse(),
            Ok(StepResult::Interrupted(Some("not run".into())))
        );
        let c: Changes = "icmp id Some(1) -> None, outer ttl 64 -> 63"
            .parse()
            .unwrap();
        assert_eq!(
            c.0,
            [
                Change::Rewritten {
                    outer: false,
                    field: Rewrite::IcmpId(Some(1), None)
                },
                Change::Rewritten {
                    outer: true,
                    field: Rewrite::Ttl(64, 63)
                }
            ]
        );
    }
}
