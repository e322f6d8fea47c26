//! Scenario schema v1: the YAML a user writes, parsed and validated before
//! anything is built. See `scenarios/README.md` for the documented schema.
//!
//! Every error names the file, the line and column, and the field path
//! (`links[2].b.host`). Serde errors carry their own location; semantic
//! errors are located by [`locate`], which replays the document up to the
//! field and lets the YAML parser report where it stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Error in a scenario file: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}:{}:{}: {field}: {message}", file.display(), line, column)]
pub struct ScenarioError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Field path, e.g. `links[2].b.host`; `(document)` for the whole file.
    pub field: String,
    pub message: String,
}

/// Reading the file failed before any YAML was seen.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read scenario: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ScenarioError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Schema version; must be 1.
    pub version: u32,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub hosts: BTreeMap<String, Host>,
    #[serde(default)]
    pub links: Vec<Link>,
    #[serde(default)]
    pub traffic: Vec<Step>,
    #[serde(default)]
    pub capture: Capture,
    /// Oakestra clusters of worker nodes (see [`crate::oakestra::cluster`]).
    #[serde(default)]
    pub clusters: Vec<crate::oakestra::cluster::Cluster>,
    /// Services with their service IPs and instances placed on nodes.
    #[serde(default)]
    pub services: Vec<crate::oakestra::cluster::Service>,
    /// The gateway: which worker node runs it, what it exposes (see
    /// [`crate::oakestra::gateway`]).
    #[serde(default)]
    pub gateway: Option<crate::oakestra::gateway::Gateway>,
    /// Hosts outside the Oakestra network, behind the `internet` router.
    #[serde(default)]
    pub externals: Vec<crate::oakestra::gateway::External>,
    /// Name of the scenario: the file stem, filled in by [`load`].
    #[serde(skip)]
    pub name: String,
    /// What the simulated service managers serve; filled in by [`parse`].
    #[serde(skip)]
    pub plan: crate::oakestra::cluster::Plan,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Per-namespace sysctls (`net.*` only), applied before links are made.
    #[serde(default)]
    pub sysctls: BTreeMap<String, Scalar>,
    /// Keep IPv6 on. Off by default: no DAD, router or multicast noise.
    #[serde(default)]
    pub ipv6: bool,
    #[serde(default)]
    pub bridges: BTreeMap<String, Bridge>,
    /// TUN devices (persistent, no packet information header), for the
    /// processes that attach to them.
    #[serde(default)]
    pub tuns: BTreeMap<String, Tun>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// An nftables script loaded with `nft -f -` inside the host.
    #[serde(default)]
    pub firewall: Option<String>,
    #[serde(default)]
    pub processes: Vec<Process>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    #[serde(default)]
    pub addr: Vec<Cidr>,
    #[serde(default)]
    pub mac: Option<Mac>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tun {
    #[serde(default)]
    pub addr: Vec<Cidr>,
    /// Interface MTU (default: the kernel's, 1500).
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// A veth pair: `a` and `b` are its two ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub a: End,
    pub b: End,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct End {
    pub host: String,
    pub ifname: String,
    #[serde(default)]
    pub addr: Vec<Cidr>,
    #[serde(default)]
    pub mac: Option<Mac>,
    /// Enslave this end to a bridge of its host.
    #[serde(default)]
    pub bridge: Option<String>,
    /// Interface MTU (default: the kernel's, 1500).
    #[serde(default)]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `default` or a prefix such as `10.96.0.0/16`.
    pub to: RouteDst,
    #[serde(default)]
    pub via: Option<IpAddr>,
    #[serde(default)]
    pub dev: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    pub name: String,
    /// A command line, run inside the host.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// hoplab's built-in echo server instead of a command.
    #[serde(default)]
    pub echo: Option<Echo>,
    /// When the process counts as ready. Built-in echo servers need none.
    #[serde(default)]
    pub ready: Option<Ready>,
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_ms: u64,
    /// A worker node's net manager, added by [`crate::oakestra::cluster::expand`].
    #[serde(skip)]
    pub netmanager: Option<crate::oakestra::cluster::NetManagerArgs>,
    /// The gateway, added by [`crate::oakestra::gateway::expand`].
    #[serde(skip)]
    pub gateway: Option<crate::oakestra::gateway::GatewayArgs>,
}

fn default_ready_timeout() -> u64 {
    5000
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Echo {
    #[serde(default)]
    pub tcp: Vec<u16>,
    #[serde(default)]
    pub udp: Vec<u16>,
}

/// When a process counts as ready: give exactly one of the fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// A TCP socket listens on this port in the host.
    #[serde(default)]
    pub tcp_listen: Option<u16>,
    /// A UDP socket is bound to this port in the host.
    #[serde(default)]
    pub udp_bound: Option<u16>,
    /// Wait this long; for processes with nothing to observe.
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

impl Ready {
    fn count(&self) -> usize {
        usize::from(self.tcp_listen.is_some())
            + usize::from(self.udp_bound.is_some())
            + usize::from(self.delay_ms.is_some())
    }
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

/// One traffic step: a client in `from` talks to `to` and checks the answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    pub from: String,
    pub proto: Proto,
    /// `ip:port` for TCP and UDP (`[v6]:port`), a bare address for ICMP.
    pub to: String,
    /// Client source port (ICMP: echo identifier). Default 40000 + step index.
    #[serde(default)]
    pub sport: Option<u16>,
    #[serde(default = "default_payload")]
    pub payload: String,
    #[serde(default)]
    pub expect: Expect,
    #[serde(default = "default_step_timeout")]
    pub timeout_ms: u64,
    /// Before the step: this service manager (a cluster's name, or `root`)
    /// fails every query from now on.
    #[serde(default)]
    pub fail_manager: Option<String>,
    /// Before the step: the service managers push `invalidate` for these
    /// service IPs to every net manager that asked for them (as when an
    /// instance is rescheduled).
    #[serde(default)]
    pub invalidate: Vec<IpAddr>,
    /// Before the step: the gateway adds these exposures (and opens its
    /// firewall for them).
    #[serde(default)]
    pub expose: Vec<crate::oakestra::gateway::Expose>,
    /// Before the step: the gateway removes these exposures (and their
    /// flows, and closes its firewall for them).
    #[serde(default)]
    pub unexpose: Vec<crate::oakestra::gateway::Unexpose>,
}

fn default_payload() -> String {
    "hoplab".to_string()
}
fn default_step_timeout() -> u64 {
    1000
}

/// What a step expects back: `echo`, `silence`, `refused`, or `{reply: TEXT}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Expect {
    /// The reply equals the payload.
    #[default]
    Echo,
    /// The reply equals this text.
    Reply(String),
    /// No reply within the timeout (the packet is dropped on its way).
    Silence,
    /// TCP: the connection is refused (RST); UDP/ICMP: an ICMP error comes back.
    Refused,
}

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Expect;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("echo, silence, refused or {reply: TEXT}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Expect, E> {
                match v {
                    "echo" => Ok(Expect::Echo),
                    "silence" => Ok(Expect::Silence),
                    "refused" => Ok(Expect::Refused),
                    _ => Err(E::unknown_variant(
                        v,
                        &["echo", "silence", "refused", "reply"],
                    )),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Expect, A::Error> {
                let Some(k) = m.next_key::<String>()? else {
                    return Err(de::Error::custom("empty map: write {reply: TEXT}"));
                };
                if k != "reply" {
                    return Err(de::Error::unknown_field(&k, &["reply"]));
                }
                let t: String = m.next_value()?;
                if m.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom("write only {reply: TEXT}"));
                }
                Ok(Expect::Reply(t))
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Echo => f.write_str("echo"),
            Expect::Reply(t) => write!(f, "reply {t:?}"),
            Expect::Silence => f.write_str("silence"),
            Expect::Refused => f.write_str("refused"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// `host/ifname` to capture; empty means every interface except `lo`.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Time to let the last packets settle before the capture is drained.
    #[serde(default = "default_settle")]
    pub settle_ms: u64,
}

fn default_settle() -> u64 {
    50
}

/// A YAML scalar taken as text (sysctl values may be written `1` or `"1"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(if v { "1" } else { "0" }.to_string()))
            }
        }
        d.deserialize_any(V)
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

/// The MAC of end `side` (0 = a, 1 = b) of link `index` when none is given:
/// locally administered, `02:68:6c:II:II:0S`.
pub fn default_link_mac(index: usize, side: usize) -> Mac {
    Mac([
        0x02,
        0x68,
        0x6c,
        (index >> 8) as u8,
        index as u8,
        side as u8 + 1,
    ])
}

/// The MAC of the `index`th bridge (in host, then name order) when none is given.
pub fn default_bridge_mac(index: usize) -> Mac {
    Mac([0x02, 0x68, 0x62, (index >> 8) as u8, index as u8, 0])
}

/// Where a traffic step sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: IpAddr,
    pub port: u16,
}

impl Step {
    /// The destination; validated by [`load`] so this cannot fail afterwards.
    pub fn target(&self) -> Result<Target, String> {
        if self.proto == Proto::Icmp {
            let addr: IpAddr = self
                .to
                .parse()
                .map_err(|_| format!("`{}` is not an IP address (ICMP takes no port)", self.to))?;
            return Ok(Target { addr, port: 0 });
        }
        let sa: std::net::SocketAddr = self
            .to
            .parse()
            .map_err(|_| format!("`{}` is not ip:port (IPv6: [addr]:port)", self.to))?;
        Ok(Target {
            addr: sa.ip(),
            port: sa.port(),
        })
    }

    /// The client source port (or ICMP identifier) of step `index`.
    pub fn source_port(&self, index: usize) -> u16 {
        self.sport.unwrap_or(40000 + index as u16)
    }
}

/// Linux limits interface names to 15 bytes.
const IFNAMSIZ_MAX: usize = 15;

/// Parse and validate a scenario file.
pub fn load(path: &Path) -> Result<Scenario, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(parse(path, &name, &text)?)
}

/// Parse and validate scenario text; `file` is only used in errors.
pub fn parse(file: &Path, name: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let mut sc: Scenario = serde_yaml::from_str(text).map_err(|e| from_yaml_error(file, &e))?;
    sc.name = name.to_string();
    let located = |(field, message): Invalid| {
        let (line, column) = locate(text, &field).unwrap_or((1, 1));
        ScenarioError {
            file: file.to_path_buf(),
            line,
            column,
            field,
            message,
        }
    };
    sc.plan = crate::oakestra::cluster::expand(&mut sc).map_err(located)?;
    let plan = sc.plan.clone();
    crate::oakestra::gateway::expand(&mut sc, &plan).map_err(located)?;
    validate(&sc).map_err(|(field, message)| {
        let (line, column) = locate(text, &field).unwrap_or((1, 1));
        ScenarioError {
            file: file.to_path_buf(),
            line,
            column,
            field,
            message,
        }
    })?;
    Ok(sc)
}

fn from_yaml_error(file: &Path, e: &serde_yaml::Error) -> ScenarioError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    // serde_yaml prefixes the message with the field path ("hosts.a: ...")
    // and appends " at line L column C"; split those into our own fields.
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    let (field, message) = match msg.split_once(": ") {
        Some((f, m)) if !f.contains(' ') => (f.to_string(), m.to_string()),
        _ => ("(document)".to_string(), msg),
    };
    ScenarioError {
        file: file.to_path_buf(),
        line,
        column,
        field,
        message,
    }
}

pub(crate) type Invalid = (String, String);

fn bad(field: impl Into<String>, msg: impl Into<String>) -> Result<(), Invalid> {
    Err((field.into(), msg.into()))
}

fn check_ifname(field: String, name: &str) -> Result<(), Invalid> {
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

fn check_name(field: String, name: &str) -> Result<(), Invalid> {
    check_name_len(field, name, 32)
}

/// A name of 1 to `max` characters of `[A-Za-z0-9_-]`.
pub(crate) fn check_name_len(field: String, name: &str, max: usize) -> Result<(), Invalid> {
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

fn validate(sc: &Scenario) -> Result<(), Invalid> {
    if sc.version != 1 {
        return bad(
            "version",
            format!(
                "unsupported schema version {} (this hoplab reads 1)",
                sc.version
            ),
        );
    }
    // Interfaces per host: the bridges and link ends, each named once.
    let mut ifaces: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (h, host) in &sc.hosts {
        check_name(format!("hosts.{h}"), h)?;
        let set = ifaces.entry(h.as_str()).or_default();
        set.insert("lo");
        for k in host.sysctls.keys() {
            if !k.starts_with("net.") {
                return bad(
                    format!("hosts.{h}.sysctls.{k}"),
                    "only net.* sysctls are per network namespace",
                );
            }
            if k.contains("..") || k.contains('/') {
                return bad(format!("hosts.{h}.sysctls.{k}"), "not a sysctl name");
            }
        }
        for t in host.tuns.keys() {
            check_ifname(format!("hosts.{h}.tuns.{t}"), t)?;
            if !set.insert(t.as_str()) {
                return bad(
                    format!("hosts.{h}.tuns.{t}"),
                    format!("interface `{t}` defined twice on host `{h}`"),
                );
            }
        }
        for (b, br) in &host.bridges {
            check_ifname(format!("hosts.{h}.bridges.{b}"), b)?;
            if !set.insert(b.as_str()) {
                return bad(
                    format!("hosts.{h}.bridges.{b}"),
                    format!("interface `{b}` defined twice on host `{h}`"),
                );
            }
            check_v6(
                sc,
                h,
                host,
                &br.addr,
                &format!("hosts.{h}.bridges.{b}.addr"),
            )?;
        }
        for (i, p) in host.processes.iter().enumerate() {
            let f = format!("hosts.{h}.processes[{i}]");
            check_name(format!("{f}.name"), &p.name)?;
            match (&p.cmd, &p.echo) {
                (Some(c), None) if c.is_empty() => return bad(format!("{f}.cmd"), "empty command"),
                (Some(_), None) => {}
                (None, Some(e)) if e.tcp.is_empty() && e.udp.is_empty() => {
                    return bad(
                        format!("{f}.echo"),
                        "an echo server needs at least one tcp or udp port",
                    )
                }
                (None, Some(_)) => {}
                (None, None) if p.netmanager.is_some() || p.gateway.is_some() => {}
                _ => return bad(f, "give exactly one of `cmd` or `echo`"),
            }
            if p.ready.as_ref().is_some_and(|r| r.count() != 1) {
                return bad(
                    format!("{f}.ready"),
                    "give exactly one of tcp_listen, udp_bound or delay_ms",
                );
            }
        }
    }
    for (i, l) in sc.links.iter().enumerate() {
        for (side, e) in [("a", &l.a), ("b", &l.b)] {
            let f = format!("links[{i}].{side}");
            let Some(host) = sc.hosts.get(&e.host) else {
                return bad(format!("{f}.host"), format!("undefined host `{}`", e.host));
            };
            check_ifname(format!("{f}.ifname"), &e.ifname)?;
            let set = ifaces
                .get_mut(e.host.as_str())
                .expect("every host has a set");
            if !set.insert(e.ifname.as_str()) {
                return bad(
                    format!("{f}.ifname"),
                    format!(
                        "interface `{}` defined twice on host `{}`",
                        e.ifname, e.host
                    ),
                );
            }
            if let Some(b) = &e.bridge {
                if !host.bridges.contains_key(b) {
                    return bad(
                        format!("{f}.bridge"),
                        format!("host `{}` has no bridge `{b}`", e.host),
                    );
                }
                if !e.addr.is_empty() {
                    return bad(
                        format!("{f}.addr"),
                        "a bridge port takes no address (give it to the bridge)",
                    );
                }
            }
            check_v6(sc, &e.host, host, &e.addr, &format!("{f}.addr"))?;
        }
    }
    let mut macs = BTreeMap::new();
    for (i, l) in sc.links.iter().enumerate() {
        for (s, (side, e)) in [("a", &l.a), ("b", &l.b)].into_iter().enumerate() {
            let mac = e.mac.unwrap_or(default_link_mac(i, s));
            if let Some(prev) = macs.insert(mac, format!("links[{i}].{side}")) {
                return bad(
                    format!("links[{i}].{side}.mac"),
                    format!("MAC {mac} is also used by {prev}"),
                );
            }
        }
    }
    for (h, host) in &sc.hosts {
        for (i, r) in host.routes.iter().enumerate() {
            let f = format!("hosts.{h}.routes[{i}]");
            if r.via.is_none() && r.dev.is_none() {
                return bad(f, "a route needs `via`, `dev` or both");
            }
            if let Some(d) = &r.dev {
                if !ifaces[h.as_str()].contains(d.as_str()) {
                    return bad(
                        format!("{f}.dev"),
                        format!("host `{h}` has no interface `{d}`"),
                    );
                }
            }
            if let (RouteDst::Prefix(p), Some(v)) = (&r.to, &r.via) {
                if p.addr.is_ipv4() != v.is_ipv4() {
                    return bad(
                        format!("{f}.via"),
                        "gateway and destination are of different IP versions",
                    );
                }
            }
            if r.via.is_some_and(|v| v.is_ipv6()) && !host.ipv6 {
                return bad(
                    format!("{f}.via"),
                    format!("IPv6 route on host `{h}`, which has `ipv6: false`"),
                );
            }
        }
    }
    let mut names = BTreeSet::new();
    let mut clients = BTreeMap::new();
    for (i, s) in sc.traffic.iter().enumerate() {
        if let Some(prev) = clients.insert((s.from.as_str(), s.proto, s.source_port(i)), i) {
            return bad(
                format!("traffic[{i}].sport"),
                format!("traffic[{prev}] uses the same host, protocol and source port: flows must be told apart"),
            );
        }
        let f = format!("traffic[{i}]");
        check_name(format!("{f}.name"), &s.name)?;
        if let Some(m) = &s.fail_manager {
            if m != "root" && !sc.clusters.iter().any(|c| &c.name == m) {
                return bad(
                    format!("{f}.fail_manager"),
                    format!("no cluster `{m}` (name a cluster, or `root`)"),
                );
            }
        }
        if !s.invalidate.is_empty() && sc.clusters.is_empty() {
            return bad(
                format!("{f}.invalidate"),
                "invalidation needs `clusters` (service managers)",
            );
        }
        if (!s.expose.is_empty() || !s.unexpose.is_empty()) && sc.gateway.is_none() {
            let what = if s.expose.is_empty() {
                "unexpose"
            } else {
                "expose"
            };
            return bad(format!("{f}.{what}"), "exposures need a `gateway`");
        }
        for (j, e) in s.expose.iter().enumerate() {
            let v6 = sc.gateway.as_ref().is_some_and(|g| g.public6.is_some());
            crate::oakestra::gateway::check_expose(&format!("{f}.expose[{j}]"), e, v6)?;
        }
        for (j, u) in s.unexpose.iter().enumerate() {
            if u.proto == Proto::Icmp {
                return bad(
                    format!("{f}.unexpose[{j}].proto"),
                    "exposures are tcp or udp",
                );
            }
        }
        if !names.insert(s.name.as_str()) {
            return bad(
                format!("{f}.name"),
                format!("step name `{}` used twice", s.name),
            );
        }
        if !sc.hosts.contains_key(&s.from) {
            return bad(format!("{f}.from"), format!("undefined host `{}`", s.from));
        }
        if let Err(m) = s.target() {
            return bad(format!("{f}.to"), m);
        }
        if s.proto == Proto::Tcp && s.source_port(i) == 0 {
            return bad(format!("{f}.sport"), "source port 0 is not a fixed port");
        }
        if s.payload.is_empty() {
            return bad(
                format!("{f}.payload"),
                "the payload identifies the packets: give at least one byte",
            );
        }
    }
    for (i, c) in sc.capture.interfaces.iter().enumerate() {
        let f = format!("capture.interfaces[{i}]");
        let Some((h, ifn)) = c.split_once('/') else {
            return bad(f, format!("`{c}` is not host/ifname"));
        };
        let Some(set) = ifaces.get(h) else {
            return bad(f, format!("undefined host `{h}`"));
        };
        if !set.contains(ifn) {
            return bad(f, format!("host `{h}` has no interface `{ifn}`"));
        }
    }
    Ok(())
}

fn check_v6(
    _sc: &Scenario,
    h: &str,
    host: &Host,
    addrs: &[Cidr],
    field: &str,
) -> Result<(), Invalid> {
    if !host.ipv6 && addrs.iter().any(|a| a.addr.is_ipv6()) {
        return bad(
            field,
            format!("IPv6 address on host `{h}`: set `ipv6: true` on the host"),
        );
    }
    Ok(())
}

impl Scenario {
    /// Every capturable interface, `host/ifname`, in a stable order.
    pub fn capture_interfaces(&self) -> Vec<(String, String)> {
        if !self.capture.interfaces.is_empty() {
            return self
                .capture
                .interfaces
                .iter()
                .map(|c| {
                    let (h, i) = c.split_once('/').expect("validated");
                    (h.to_string(), i.to_string())
                })
                .collect();
        }
        let mut out = Vec::new();
        for (h, host) in &self.hosts {
            let mut names: Vec<&str> = host
                .bridges
                .keys()
                .chain(host.tuns.keys())
                .map(|s| s.as_str())
                .collect();
            for l in &self.links {
                for e in [&l.a, &l.b] {
                    if &e.host == h {
                        names.push(&e.ifname);
                    }
                }
            }
            names.sort();
            out.extend(names.into_iter().map(|n| (h.clone(), n.to_string())));
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Locating a field path in the YAML text.

#[derive(Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(n) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(n));
            }
        }
    }
    out
}

const FOUND: &str = "\u{0}hoplab-locate-found";

/// Line and column (1-based) where the value at `path` starts, found by
/// walking the document with a seed that stops there; the YAML parser
/// reports the position of the failure. None when the path is absent.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let segs = split_path(path);
    let de = serde_yaml::Deserializer::from_str(text);
    match (Probe { path: &segs }).deserialize(de) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

struct Probe<'a> {
    path: &'a [Seg],
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        if self.path.is_empty() {
            return Err(de::Error::custom(FOUND));
        }
        while let Some(k) = m.next_key::<serde_yaml::Value>()? {
            let hit = matches!((&self.path[0], &k), (Seg::Key(s), serde_yaml::Value::String(ks)) if s == ks);
            if hit {
                m.next_value_seed(Probe {
                    path: &self.path[1..],
                })?;
            } else {
                m.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        if self.path.is_empty() {
            return Err(de::Error::custom(FOUND));
        }
        let mut i = 0;
        loop {
            let hit = matches!(self.path[0], Seg::Index(n) if n == i);
            let more = if hit {
                s.next_element_seed(Probe {
                    path: &self.path[1..],
                })?
                .is_some()
            } else {
                s.next_element::<de::IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
}

impl Probe<'_> {
    fn leaf<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "version: 1\nhosts:\n  a: {}\n  b: {}\nlinks:\n  - a: {host: a, ifname: eth0, addr: [10.0.0.1/24]}\n    b: {host: b, ifname: eth0, addr: [10.0.0.2/24]}\ntraffic:\n  - {name: ping, from: a, proto: icmp, to: 10.0.0.2}\n";

    fn err(text: &str) -> ScenarioError {
        parse(Path::new("s.yaml"), "s", text).unwrap_err()
    }

    #[test]
    fn valid_scenario_parses() {
        let sc = parse(Path::new("s.yaml"), "s", OK).unwrap();
        assert_eq!(sc.links.len(), 1);
        assert_eq!(sc.capture_interfaces().len(), 2);
    }

    #[test]
    fn unknown_field_names_file_line_column_and_field() {
        let e = err(&OK.replace("  a: {}", "  a: {colour: red}"));
        assert_eq!((e.line, e.field.as_str()), (3, "hosts.a"), "{e}");
        assert!(e.message.contains("unknown field `colour`"), "{e}");
        assert!(e.to_string().starts_with("s.yaml:3:"), "{e}");
    }

    #[test]
    fn undefined_host_is_located() {
        let e = err(&OK.replace("b: {host: b,", "b: {host: c,"));
        assert_eq!(e.field, "links[0].b.host");
        assert_eq!(e.line, 7, "{e}");
        assert!(e.message.contains("undefined host `c`"));
    }

    #[test]
    fn undefined_traffic_host_and_bad_target() {
        let e = err(&OK.replace("from: a", "from: z"));
        assert_eq!((e.field.as_str(), e.line), ("traffic[0].from", 9));
        let e = err(&OK.replace("to: 10.0.0.2}", "to: nowhere}"));
        assert_eq!(e.field, "traffic[0].to");
    }

    #[test]
    fn duplicate_interface_and_long_names_rejected() {
        let e = err(&OK.replace("host: b, ifname: eth0", "host: a, ifname: eth0"));
        assert_eq!(e.field, "links[0].b.ifname");
        let e = err(&OK.replace("host: b, ifname: eth0", "host: b, ifname: abcdefghijklmnop"));
        assert!(e.message.contains("15 bytes"));
    }

    #[test]
    fn expectations_and_readiness_parse() {
        let t = OK.replace("to: 10.0.0.2}", "to: 10.0.0.2, expect: {reply: pong}}");
        let sc = parse(Path::new("s.yaml"), "s", &t).unwrap();
        assert_eq!(sc.traffic[0].expect, Expect::Reply("pong".into()));
        let e = err(&OK.replace("to: 10.0.0.2}", "to: 10.0.0.2, expect: maybe}"));
        assert_eq!((e.field.as_str(), e.line), ("traffic[0].expect", 9), "{e}");
        let p = "  a:\n    processes: [{name: p, cmd: [x], ready: {tcp_listen: 1, delay_ms: 2}}]";
        let e = err(&OK.replace("  a: {}", p));
        assert_eq!(
            (e.field.as_str(), e.line),
            ("hosts.a.processes[0].ready", 4),
            "{e}"
        );
    }

    #[test]
    fn bad_address_and_version() {
        let e = err(&OK.replace("10.0.0.2/24", "10.0.0.2"));
        assert!(e.message.contains("no prefix length"), "{e}");
        assert_eq!(e.line, 7);
        let e = err(&OK.replace("version: 1", "version: 2"));
        assert_eq!((e.field.as_str(), e.line), ("version", 1));
    }

    #[test]
    fn capture_reference_checked() {
        let e = err(&format!("{OK}capture:\n  interfaces: [a/eth9]\n"));
        assert_eq!(e.field, "capture.interfaces[0]");
        assert_eq!(e.line, 11);
    }
}
