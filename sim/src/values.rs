//! Plain values the scenario file, the Oakestra expansion and the lab
//! share: addresses with prefix lengths, route destinations, MACs,
//! protocols, echo ports, exposures, and the
//! naming rules of hosts and interfaces. Each reads itself from YAML
//! (serde) and prints itself back.
//!
//! A leaf: it knows no scenario section, no Oakestra term and no lab.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::de;
use serde::{Deserialize, Deserializer};

/// Something wrong at a field path of the scenario file (`links[2].b.host`),
/// before it is located in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
    /// Where in the field's text value the problem is (line, column,
    /// 1-based), as a tool that read the value reports it (nft's line in a
    /// firewall script).
    pub within: Option<(usize, usize)>,
}

/// `Err(Invalid)` for `field`.
pub fn bad<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        field: field.into(),
        message: message.into(),
        within: None,
    })
}

/// The first default client source port: step `index` without a `sport`
/// sends from `DEFAULT_SPORT_BASE + index`.
pub const DEFAULT_SPORT_BASE: u16 = 40000;

/// The default source port of step `index`; None past 65535 (a scenario
/// with that many steps must give them a `sport`).
pub fn default_source_port(index: usize) -> Option<u16> {
    u16::try_from(index)
        .ok()
        .and_then(|i| DEFAULT_SPORT_BASE.checked_add(i))
}

/// Why step `index` without a `sport` is refused.
pub fn sport_overflow(index: usize) -> String {
    format!(
        "no `sport`, and the default {DEFAULT_SPORT_BASE} + {index} is over 65535: give this step a `sport`"
    )
}

/// Errors gathered one check at a time, so that every error is reported.
pub trait Gather {
    /// Keeps the error of `r`, if any.
    fn gather(&mut self, r: Result<(), Invalid>);
}

impl Gather for Vec<Invalid> {
    fn gather(&mut self, r: Result<(), Invalid>) {
        if let Err(e) = r {
            self.push(e);
        }
    }
}

/// A map key as a step of a field path: as written, or quoted when it
/// holds `.`, `[`, `]`, `"`, spaces or nothing (`sysctls."net.ipv4.ip_forward"`).
pub fn key(k: &str) -> std::borrow::Cow<'_, str> {
    if !k.is_empty() && !k.contains(['.', '[', ']', '"', '\\', ' ']) {
        return k.into();
    }
    let mut q = String::from('"');
    for c in k.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q.into()
}

/// Linux limits interface names to 15 bytes.
const IFNAMSIZ_MAX: usize = 15;

/// An interface name the kernel takes.
pub fn check_ifname(field: String, name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > IFNAMSIZ_MAX {
        return bad(
            field,
            format!("interface name `{name}` must be 1 to 15 bytes"),
        );
    }
    if name.contains(['/', ' ', ':']) || name == "." || name == ".." {
        return bad(
            field,
            format!("interface name `{name}` may not contain '/', ':' or spaces"),
        );
    }
    Ok(())
}

/// A name of 1 to `max` characters of `[A-Za-z0-9_-]`.
pub fn check_name_len(field: String, name: &str, max: usize) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return bad(
            field,
            format!("name `{name}` must be 1-{max} of [A-Za-z0-9_-]"),
        );
    }
    Ok(())
}

/// A host, process or step name: 1 to 32 of `[A-Za-z0-9_-]`.
pub fn check_name(field: String, name: &str) -> Result<(), Invalid> {
    check_name_len(field, name, 32)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Echo {
    #[serde(default)]
    pub tcp: Vec<u16>,
    #[serde(default)]
    pub udp: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        })
    }
}

macro_rules! from_str_deserialize {
    ($t:ty, $what:expr) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse()
                    .map_err(|e: String| de::Error::custom(format!("{}: {e}", $what)))
            }
        }
    };
}

/// An interface address with its prefix length, `10.0.0.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` has no prefix length (write it as addr/len)"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("`{p}` is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix length {prefix} is over {max}"));
        }
        Ok(Cidr { addr, prefix })
    }
}
from_str_deserialize!(Cidr, "bad address");

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteDst {
    Default,
    Prefix(Cidr),
}
impl FromStr for RouteDst {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "default" {
            Ok(RouteDst::Default)
        } else {
            s.parse().map(RouteDst::Prefix)
        }
    }
}
from_str_deserialize!(RouteDst, "bad route destination");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);
impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut m = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("`{s}` is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        }
        for (i, p) in parts.iter().enumerate() {
            m[i] = u8::from_str_radix(p, 16).map_err(|_| format!("`{s}` is not a MAC address"))?;
        }
        if m[0] & 1 == 1 {
            return Err(format!("`{s}` is a multicast MAC address"));
        }
        if m == [0; 6] {
            return Err(format!(
                "`{s}` is the all-zero MAC address, which no interface may have"
            ));
        }
        Ok(Mac(m))
    }
}
from_str_deserialize!(Mac, "bad MAC");
impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Where a traffic step sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: IpAddr,
    pub port: u16,
}

/// One Exposed Services entry: `proto` `port` on the public address leads
/// to `service` (a service IP and port). ICMP has no ports: `{proto:
/// icmp, service: 10.30.30.30}` (echo requests to the public address),
/// read as port 0 and service port 0.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expose {
    pub proto: Proto,
    /// Absent for ICMP (0).
    #[serde(default)]
    pub port: u16,
    #[serde(deserialize_with = "service_addr")]
    pub service: SocketAddr,
}

/// `IP:PORT`, or an IP alone (port 0, for ICMP).
fn service_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|_| de::Error::custom(format!("`{s}` is not IP:PORT (or an IP alone for icmp)")))
}

/// Removing an exposure: `proto` `port` (no port for ICMP).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unexpose {
    pub proto: Proto,
    #[serde(default)]
    pub port: u16,
    /// The IPv6 exposure of the port, not the IPv4 one.
    #[serde(default)]
    pub v6: bool,
}

/// Impairments of one link, per direction, all decided from `seed` (see
/// `scenarios/README.md`, "Impairments"): the same seed drops, duplicates
/// and delays the same packets on every run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impair {
    /// Seeds every per-packet decision of the link.
    pub seed: u64,
    /// Frames from end `a` to end `b`.
    #[serde(default)]
    pub a_to_b: Option<Impairment>,
    /// Frames from end `b` to end `a`.
    #[serde(default)]
    pub b_to_a: Option<Impairment>,
    /// The end `HOST/IFNAME` the scenario's top-level `impair` section
    /// named the link by (then `a` is that end: `a_to_b` is what leaves
    /// it); `None` for a link's own `impair`.
    #[serde(skip)]
    pub named: Option<String>,
}

/// What happens to the frames of one direction of a link.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impairment {
    /// Percent of IP packets dropped (0..=100).
    #[serde(default)]
    pub loss: f64,
    /// Milliseconds every frame is held.
    #[serde(default)]
    pub delay_ms: u32,
    /// Up to this many milliseconds more or less than `delay_ms`, per IP
    /// packet (at most `delay_ms`).
    #[serde(default)]
    pub jitter_ms: u32,
    /// Percent of IP packets sent twice (0..=100).
    #[serde(default)]
    pub duplicate: f64,
    /// Percent of IP packets sent at once, ahead of the delayed ones
    /// (0..=100; needs `delay_ms`).
    #[serde(default)]
    pub reorder: f64,
    /// Link rate in kbit/s: a frame leaves once the frames before it have.
    #[serde(default)]
    pub rate_kbit: Option<u32>,
}

impl Impair {
    /// What is wrong with these impairments, each as (field below the
    /// link, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (dir, im) in [("a_to_b", &self.a_to_b), ("b_to_a", &self.b_to_a)] {
            let Some(im) = im else { continue };
            for (f, v) in [
                ("loss", im.loss),
                ("duplicate", im.duplicate),
                ("reorder", im.reorder),
            ] {
                if !(0.0..=100.0).contains(&v) {
                    out.push((
                        format!("{dir}.{f}"),
                        format!("{v} is not a percentage (0 to 100)"),
                    ));
                }
            }
            if im.jitter_ms > im.delay_ms {
                out.push((
                    format!("{dir}.jitter_ms"),
                    format!("{} exceeds delay_ms ({})", im.jitter_ms, im.delay_ms),
                ));
            }
            if im.reorder > 0.0 && im.delay_ms == 0 {
                out.push((
                    format!("{dir}.reorder"),
                    "reordering needs delay_ms (the packets it lets pass go ahead of the delayed ones)".into(),
                ));
            }
            if im.rate_kbit == Some(0) {
                out.push((format!("{dir}.rate_kbit"), "must be at least 1".into()));
            }
            if im.delay_ms > 60_000 {
                out.push((format!("{dir}.delay_ms"), "at most 60000".into()));
            }
        }
        if self.a_to_b.is_none() && self.b_to_a.is_none() {
            out.push((
                String::new(),
                "impairs neither direction: give a_to_b or b_to_a".into(),
            ));
        }
        out
    }
}
