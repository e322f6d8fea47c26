//! The scenario file's schema v1 as the user writes it (serde, unknown
//! fields denied): hosts (with files and processes), links, traffic steps
//! (TCP/UDP/ICMP, HTTP, WebSocket), capture, the run's certificates
//! (`tls`, types in `crate::l7::spec`), and the Oakestra sections (in
//! [`super::services`]). See `scenarios/README.md`.
//!
//! Only the text's shape: no defaults derived from other sections, no
//! addresses allocated, nothing about how a lab is built.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use super::process::Process;
use super::services::{Cluster, External, Gateway, Service, Site, UnderlayFamily};
use crate::expect::Expect;
use crate::l7::spec::{FileSource, HttpRequest, L7Step, TlsSection, WebSocket};
use crate::load::Load;
use crate::values::{Cidr, Expose, Impair, Impairment, Mac, Proto, RouteDst, Target, Unexpose};

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
    /// Oakestra clusters of worker nodes.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// Services with their service IPs and instances placed on nodes.
    #[serde(default)]
    pub services: Vec<Service>,
    /// The gateway: which worker node runs it, what it exposes.
    #[serde(default)]
    pub gateway: Option<Gateway>,
    /// Hosts outside the Oakestra network, behind the `internet` router.
    #[serde(default)]
    pub externals: Vec<External>,
    /// The worker nodes' underlay: `ipv4` (default), `ipv6` or `dual`.
    #[serde(default)]
    pub underlay: UnderlayFamily,
    /// Separate underlay networks joined by routers (default: one shared
    /// switch for every worker node).
    #[serde(default)]
    pub sites: Vec<Site>,
    /// Certificates the run's CA issues, by name.
    #[serde(default)]
    pub tls: TlsSection,
    /// Seeded impairments of links named by one of their ends: the file's
    /// own links or those the Oakestra sections generate (a node's
    /// underlay link `NODE/eth0`, an instance's `INSTANCE/eth0`).
    #[serde(default)]
    pub impair: Vec<LinkImpair>,
    /// Name of the scenario: the file stem, filled in by [`super::parse`].
    #[serde(skip)]
    pub name: String,
    /// The folder of the scenario file, which `files` paths are relative
    /// to; filled in by [`super::parse`].
    #[serde(skip)]
    pub dir: std::path::PathBuf,
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
    /// Files laid into the host's working directory before its processes
    /// start: name -> a path relative to the scenario file, or `{text: ...}`.
    #[serde(default)]
    pub files: BTreeMap<String, FileSource>,
    #[serde(default)]
    pub processes: Vec<Process>,
    /// The host's DNS resolver (its resolv.conf `nameserver`): a step from
    /// this host whose `to` names a host asks it (UDP port 53) first.
    #[serde(default)]
    pub resolver: Option<IpAddr>,
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
    /// Seeded loss, delay, jitter, duplication, reordering and rate, per
    /// direction.
    #[serde(default)]
    pub impair: Option<Impair>,
}

/// One entry of the top-level `impair` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkImpair {
    /// One end of the link, `HOST/IFNAME`.
    pub link: String,
    /// Seeds every per-packet decision of the link.
    pub seed: u64,
    /// Frames leaving the named end.
    #[serde(default)]
    pub out: Option<Impairment>,
    /// Frames arriving at the named end.
    #[serde(default, rename = "in")]
    pub into: Option<Impairment>,
}

impl LinkImpair {
    /// The link's impairments with the named end as `a`.
    pub fn impair(&self) -> Impair {
        Impair {
            seed: self.seed,
            a_to_b: self.out.clone(),
            b_to_a: self.into.clone(),
            named: Some(self.link.clone()),
        }
    }
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

/// One traffic step: a client in `from` talks to `to` and checks the answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    /// Required but for a step `on` a connection (the opener's).
    #[serde(default)]
    pub from: String,
    /// Required but for HTTP and WebSocket steps (which are TCP).
    #[serde(default)]
    pub proto: Option<Proto>,
    /// An HTTP/1.1 request (over TLS with `tls`) instead of a payload.
    #[serde(default)]
    pub http: Option<HttpRequest>,
    /// A WebSocket session instead of a payload.
    #[serde(default)]
    pub websocket: Option<WebSocket>,
    /// `ip:port` for TCP and UDP (`[v6]:port`), a bare address for ICMP.
    /// Required but for a step `on` a connection (the opener's).
    #[serde(default)]
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
    pub expose: Vec<Expose>,
    /// Before the step: the gateway removes these exposures (and their
    /// flows, and closes its firewall for them).
    #[serde(default)]
    pub unexpose: Vec<Unexpose>,
    /// Before the step: the gateway is asked for these exposures and must
    /// refuse each (a scenario that shows what cannot be exposed).
    #[serde(default)]
    pub expose_refused: Vec<Expose>,
    /// A load step: this many flows at this concurrency, each from its own
    /// source port with its own payload (see `crate::load`).
    #[serde(default)]
    pub load: Option<Load>,
    /// A load step's payload length per flow (default 64); a TCP or UDP
    /// step's payload length: a fixed pattern of this many bytes instead
    /// of `payload`.
    #[serde(default)]
    pub payload_bytes: Option<usize>,
    /// A UDP step's datagram leaves with Don't Fragment and is never
    /// fragmented by the client; when an ICMP "too big" comes back, the
    /// client sends the payload again in datagrams that fit the path MTU
    /// it learned, each echoed in turn (path MTU discovery as a UDP
    /// application does it).
    #[serde(default)]
    pub df: bool,
    /// Before the step: these processes (`HOST/NAME`, e.g.
    /// `n1/netmanager`) get SIGKILL, and are waited for.
    #[serde(default)]
    pub kill: Vec<String>,
    /// Before the step: these processes (`HOST/NAME`) get SIGTERM, and are
    /// waited for (SIGKILL after 2 s).
    #[serde(default)]
    pub terminate: Vec<String>,
    /// Before the step: these processes (`HOST/NAME`) start again, as at
    /// the start of the run (stopped first if running), and are waited
    /// for until ready.
    #[serde(default)]
    pub restart: Vec<String>,
    /// Before the step: this service manager (a cluster's name, or `root`)
    /// answers again after a `fail_manager`, or is back after a
    /// `stop_manager` (and its net managers have synced).
    #[serde(default)]
    pub recover_manager: Option<String>,
    /// Before the step: this service manager (a cluster's name, or `root`)
    /// goes down: its socket is gone and its net managers' connections
    /// are closed, until a `recover_manager`.
    #[serde(default)]
    pub stop_manager: Option<String>,
    /// Before the step: these instances move to another node of their
    /// cluster (Oakestra's rescheduling).
    #[serde(default, rename = "move")]
    pub moves: Vec<Move>,
    /// Before the step: interfaces (`HOST/IFNAME`) set down, or up again.
    #[serde(default)]
    pub link: Option<LinkFault>,
    /// How many times the client tries, from the same source port, until
    /// the answer is as expected (each try with `timeout_ms`); the result
    /// says which try it was: how a service recovers after a fault.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The step's TCP connection (or UDP socket, connected from `sport`
    /// to `to`) gets this name and stays open after the step's exchange,
    /// for later steps `on` it, until one of them closes it.
    #[serde(default)]
    pub open: Option<String>,
    /// The step sends its payload on this connection, opened by an earlier
    /// step (`from`, `proto`, `to` and `sport` are that step's; the file
    /// gives none of them).
    #[serde(default)]
    pub on: Option<String>,
    /// With `on`: after the step's exchange the connection is closed (TCP:
    /// the client's FIN, then the wait for the server's, as a step ends).
    #[serde(default)]
    pub close: bool,
}

fn default_attempts() -> u32 {
    1
}

/// A step's `move`: instance `instance` (a host `SERVICE-N`) moves to
/// worker node `to`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Move {
    pub instance: String,
    pub to: String,
}

/// A step's `link`: interfaces set administratively down or up, each
/// `HOST/IFNAME` (a veth end, a bridge or a TUN).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkFault {
    #[serde(default)]
    pub down: Vec<String>,
    #[serde(default)]
    pub up: Vec<String>,
}

fn default_payload() -> String {
    "hoplab".to_string()
}
fn default_step_timeout() -> u64 {
    1000
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// `host/ifname` to capture; empty means every interface except `lo`.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Hosts whose `lo` is captured too, on top of `interfaces` (or of
    /// every interface when that is empty).
    #[serde(default)]
    pub loopback: Vec<String>,
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

impl Step {
    /// The protocol: as written, TCP for HTTP and WebSocket steps (and
    /// TCP when missing, which `validate` refuses).
    pub fn proto(&self) -> Proto {
        self.proto.unwrap_or(Proto::Tcp)
    }

    /// The step's HTTP or WebSocket exchange, if it has one (both given is
    /// `validate`'s error; then the HTTP one).
    pub fn l7(&self) -> Option<L7Step> {
        match (&self.http, &self.websocket) {
            (Some(h), _) => Some(L7Step::Http(h.clone())),
            (None, Some(w)) => Some(L7Step::WebSocket(w.clone())),
            (None, None) => None,
        }
    }

    /// A destination that names a host (`api.yourapp.com:443`): the name
    /// and the port; `None` for an address (or a bad `to`).
    pub fn name_target(&self) -> Option<(String, u16)> {
        if self.proto() == Proto::Icmp || self.target().is_ok() {
            return None;
        }
        let (name, port) = self.to.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.parse::<IpAddr>().is_err()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        ok.then(|| (name.to_ascii_lowercase(), port))
    }

    /// The destination; validated by [`super::parse`] so this cannot fail afterwards.
    pub fn target(&self) -> Result<Target, String> {
        if self.proto() == Proto::Icmp {
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
        if sa.port() == 0 {
            return Err(format!(
                "`{}`: port 0 is no port a client can reach (give 1 to 65535)",
                self.to
            ));
        }
        Ok(Target {
            addr: sa.ip(),
            port: sa.port(),
        })
    }

    /// The client source port (or ICMP identifier) of step `index`: its
    /// own (a load step: its first flow's), else 40000 + `index`; 0 past
    /// 65535, which `validate` refuses.
    pub fn source_port(&self, index: usize) -> u16 {
        if let Some(l) = &self.load {
            return l.sport_base;
        }
        self.sport
            .or(crate::values::default_source_port(index))
            .unwrap_or(0)
    }
}
