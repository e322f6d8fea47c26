//! The lab a scenario runs in, and what builds and runs it.
//!
//! The model ([`Lab`]): hosts with their sysctls, bridges, TUNs, routes,
//! firewall script, files and processes; veth links between hosts; the
//! traffic steps (TCP/UDP/ICMP, or an HTTP or WebSocket exchange); the
//! certificates the run's CA issues; the interfaces to capture. Plain: no file, no field defaults, no
//! Oakestra term (`crate::oakestra` expands those into it). The lab keeps
//! the file's order: the file's own links and steps come first, at their
//! index in the file, so a lab path (`links[2].b`) is the file's.
//!
//! What builds and runs it: [`sandbox`] (the run's namespaces),
//! [`netns`] (a host's namespace), [`topology`] (netlink, nftables),
//! [`process`] (start, readiness, stop), [`traffic`] (built-in clients),
//! [`load`] (a load step's many flows), [`echo`] (built-in echo server), [`dataplane`] (the net manager's and
//! gateway's command lines), [`gateway_ctl`] (the gateway's control socket),
//! [`check`] (a lab is whole: every reference resolves).

use std::collections::BTreeMap;
use std::net::IpAddr;

pub mod check;
pub mod dataplane;
pub mod echo;
pub mod gateway_ctl;
pub mod impair;
pub mod load;
pub mod metrics;
pub mod netns;
pub mod nft_counters;
pub mod process;
pub mod sandbox;
pub mod topology;
pub mod traffic;

pub use crate::expect::Expect;
pub use crate::l7::spec::{CertSpec, FileSource, HttpServer, L7Step};
pub use crate::values::{Cidr, Echo, Expose, Mac, Proto, RouteDst, Target, Unexpose};
use dataplane::{GatewayArgs, NetManagerArgs};

/// A lab: everything a run builds, starts and sends.
#[derive(Debug, Clone, Default)]
pub struct Lab {
    /// The scenario's name.
    pub name: String,
    pub hosts: BTreeMap<String, Host>,
    pub links: Vec<Link>,
    pub traffic: Vec<Step>,
    pub capture: Capture,
    /// Certificates the run's CA issues, by name: every name the lab uses.
    pub certs: BTreeMap<String, CertSpec>,
}

#[derive(Debug, Clone, Default)]
pub struct Host {
    /// Per-namespace sysctls (`net.*`), applied once the links exist.
    pub sysctls: BTreeMap<String, String>,
    /// IPv6 on (off: no DAD, router or multicast noise).
    pub ipv6: bool,
    pub bridges: BTreeMap<String, Bridge>,
    /// TUN devices (persistent, no packet information header).
    pub tuns: BTreeMap<String, Tun>,
    pub routes: Vec<Route>,
    /// An nftables script loaded with `nft -f -` inside the host.
    pub firewall: Option<String>,
    /// Files laid into the host's working directory (`<out>/hosts/HOST/`)
    /// before its processes start; a `Path` is absolute or relative to
    /// the current directory.
    pub files: BTreeMap<String, FileSource>,
    pub processes: Vec<Process>,
    /// Where the file declares this host's files and processes when it is
    /// not `hosts.NAME` (an instance of `services[I]`), for error paths.
    pub origin: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Bridge {
    pub addr: Vec<Cidr>,
    pub mac: Option<Mac>,
}

#[derive(Debug, Clone, Default)]
pub struct Tun {
    pub addr: Vec<Cidr>,
    /// Interface MTU (default: the kernel's, 1500).
    pub mtu: Option<u32>,
    /// Transmit queue length (default [`topology::TUN_TXQUEUELEN`]).
    pub txqueuelen: Option<u32>,
}

/// A veth pair: `a` and `b` are its two ends.
#[derive(Debug, Clone)]
pub struct Link {
    pub a: End,
    pub b: End,
    /// Impairments: the link is built through an element of
    /// [`impair`] instead of one veth pair.
    pub impair: Option<crate::values::Impair>,
}

#[derive(Debug, Clone)]
pub struct End {
    pub host: String,
    pub ifname: String,
    pub addr: Vec<Cidr>,
    /// Default: [`default_link_mac`].
    pub mac: Option<Mac>,
    /// Enslaved to this bridge of its host.
    pub bridge: Option<String>,
    pub mtu: Option<u32>,
}

impl End {
    /// An end with these addresses and nothing else set.
    pub fn new(host: &str, ifname: &str, addr: Vec<Cidr>) -> End {
        End {
            host: host.to_string(),
            ifname: ifname.to_string(),
            addr,
            mac: None,
            bridge: None,
            mtu: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub to: RouteDst,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
}

impl Route {
    /// `to` via the gateway `gw`.
    pub fn via(to: RouteDst, gw: impl Into<IpAddr>) -> Route {
        Route {
            to,
            via: Some(gw.into()),
            dev: None,
        }
    }

    /// `to` out of interface `dev`.
    pub fn dev(to: RouteDst, dev: &str) -> Route {
        Route {
            to,
            via: None,
            dev: Some(dev.to_string()),
        }
    }
}

/// A process of a host: exactly one of `cmd`, `echo`, `http`,
/// `netmanager`, `gateway` is set. It runs in its host's working directory.
#[derive(Debug, Clone, Default)]
pub struct Process {
    pub name: String,
    /// A command line, run inside the host.
    pub cmd: Option<Vec<String>>,
    /// The built-in echo server.
    pub echo: Option<Echo>,
    /// The built-in HTTP(S)/WebSocket server.
    pub http: Option<HttpServer>,
    pub ready: Option<Ready>,
    pub ready_timeout_ms: u64,
    /// A worker node's net manager.
    pub netmanager: Option<NetManagerArgs>,
    /// The gateway.
    pub gateway: Option<GatewayArgs>,
    /// Its metrics endpoint, scraped at the end of the traffic.
    pub metrics: Option<metrics::Metrics>,
}

impl Process {
    /// The built-in echo server on these ports.
    pub fn echo(e: &Echo) -> Process {
        Process {
            name: "echo".into(),
            echo: Some(e.clone()),
            ready_timeout_ms: 5000,
            ..Process::default()
        }
    }
}

/// When a process counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// A TCP socket listens on this port in the host.
    TcpListen(u16),
    /// A UDP socket is bound to this port in the host.
    UdpBound(u16),
    /// After this long.
    DelayMs(u64),
}

/// One traffic step: a client in `from` talks to `target` and checks the
/// answer; before it, the control actions.
#[derive(Debug, Clone)]
pub struct Step {
    /// The name `to` gives, asked of the client host's resolver before the
    /// step dials it (`target` then has the port only).
    pub resolve: Option<Resolve>,
    pub name: String,
    pub from: String,
    pub proto: Proto,
    /// The destination as written (`ip:port`, or an address for ICMP).
    pub to: String,
    pub target: Target,
    /// Client source port (ICMP: echo identifier); see [`Step::source_port`].
    pub sport: Option<u16>,
    pub payload: String,
    pub expect: Expect,
    pub timeout_ms: u64,
    /// This service manager fails every query from now on.
    pub fail_manager: Option<String>,
    /// The service managers push `invalidate` for these service IPs.
    pub invalidate: Vec<IpAddr>,
    /// The gateway adds these exposures.
    pub expose: Vec<Expose>,
    /// The gateway removes these exposures.
    pub unexpose: Vec<Unexpose>,
    /// The gateway is asked for these exposures and must refuse each.
    pub expose_refused: Vec<Expose>,
    /// Processes (`HOST/NAME`) sent SIGKILL before the step.
    pub kill: Vec<String>,
    /// Processes (`HOST/NAME`) sent SIGTERM before the step.
    pub terminate: Vec<String>,
    /// Processes (`HOST/NAME`) started again before the step.
    pub restart: Vec<String>,
    /// This service manager answers again from now on.
    pub recover_manager: Option<String>,
    /// This service manager goes down (until a `recover_manager`).
    pub stop_manager: Option<String>,
    /// Instances moved to another node before the step.
    pub moves: Vec<Move>,
    /// Interfaces (`HOST/IFNAME`) set down before the step.
    pub link_down: Vec<String>,
    /// Interfaces (`HOST/IFNAME`) set up again before the step.
    pub link_up: Vec<String>,
    /// Tries of the client until the answer is as expected (at least 1).
    pub attempts: u32,
    /// An HTTP or WebSocket exchange instead of the payload (`proto` is
    /// then TCP).
    pub l7: Option<L7Step>,
    /// A load step: many flows instead of one (see [`load`]).
    pub load: Option<crate::load::Load>,
    /// A load step's payload length per flow.
    pub payload_bytes: usize,
    /// A UDP step: Don't Fragment, and the payload sent again cut to the
    /// path MTU after a "too big" (see [`traffic`]).
    pub df: bool,
    /// A connection that spans steps: the step opens it, or uses it.
    pub session: Option<Session>,
}

/// A step's part in a connection that spans steps (see [`traffic::Conn`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Session {
    /// The step opens the connection of this name and keeps it open.
    Open(String),
    /// The step sends on the named connection; `close`: and closes it.
    On { name: String, close: bool },
}

/// An instance host moved to another node before a step: its interface
/// to the old node's bridge goes down and loses its addresses; its
/// interface to the new node's bridge (a link of the lab from the start,
/// up, without addresses) gets the new ones and the default routes.
#[derive(Debug, Clone)]
pub struct Move {
    pub host: String,
    /// Its service's name and its instance number there.
    pub service: String,
    pub instance: u32,
    pub from_node: String,
    pub to_node: String,
    /// The interface to the old node, and its addresses.
    pub old_if: String,
    pub old_addr: Vec<Cidr>,
    /// The interface to the new node, its addresses and the routes via it.
    pub new_if: String,
    pub addr: Vec<Cidr>,
    pub routes: Vec<Route>,
    /// The new node's underlay address and coordinates, for the plan.
    pub node_addr: std::net::IpAddr,
    pub coords: hoplab_dataplane::netmanager::Coords,
    /// The instance as the new node's net manager is told of it (its new
    /// namespace addresses, its own instance IPs); the old node's is told
    /// to forget `old_ns`.
    pub local: hoplab_dataplane::netmanager::LocalInstance,
    pub old_ns: std::net::Ipv4Addr,
}

/// A name a step asks its host's resolver for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    pub name: String,
    /// The resolver, port 53.
    pub server: std::net::SocketAddr,
}

impl Step {
    /// The client source port (or ICMP identifier) of step `index`: its
    /// own (a load step: its first flow's), else 40000 + `index`; 0 past
    /// 65535, which [`check`] refuses.
    pub fn source_port(&self, index: usize) -> u16 {
        if let Some(l) = &self.load {
            return l.sport_base;
        }
        self.sport
            .or(crate::values::default_source_port(index))
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// `host/ifname` to capture; empty means every interface except `lo`.
    pub interfaces: Vec<String>,
    /// Hosts whose `lo` is captured on top of `interfaces`.
    pub loopback: Vec<String>,
    /// Time to let the last packets settle before the capture is drained.
    pub settle_ms: u64,
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

impl Lab {
    /// The process `HOST/NAME`, with its host's name.
    pub fn process(&self, id: &str) -> Option<(&str, &Process)> {
        let (h, n) = id.split_once('/')?;
        let (h, host) = self.hosts.get_key_value(h)?;
        host.processes
            .iter()
            .find(|p| p.name == n)
            .map(|p| (h.as_str(), p))
    }

    /// Every process as `HOST/NAME`, in host order.
    pub fn process_names(&self) -> impl Iterator<Item = String> + '_ {
        self.hosts.iter().flat_map(|(h, host)| {
            host.processes
                .iter()
                .map(move |p| format!("{h}/{}", p.name))
        })
    }

    /// Every interface to capture, `host/ifname`, in a stable order: those
    /// listed (every one but `lo` when none is), then the `lo` of each
    /// `loopback` host not listed already.
    pub fn capture_interfaces(&self) -> Vec<(String, String)> {
        let mut out = self.listed_or_every_interface();
        for h in &self.capture.loopback {
            let lo = (h.clone(), "lo".to_string());
            if !out.contains(&lo) {
                out.push(lo);
            }
        }
        out
    }

    fn listed_or_every_interface(&self) -> Vec<(String, String)> {
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
