//! What a trace needs to know of the lab it was captured in, and the one
//! place that reads it from the lab model ([`LabView::of`]): the veth pairs and
//! bridge ports (to order a packet's hops), which host owns which address
//! (to tell delivered from lost), and each traffic step's client, protocol
//! and source port (to attribute packets to steps), each host's process
//! names (to name a proxy between two legs). Nothing else of the lab
//! reaches the trace. Beside the lab it carries the capture's TLS key log
//! (the pcapng's decryption secrets) and the run's recorded drop verdicts,
//! which the caller sets.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::lab::Lab;
use crate::values::Proto;

/// An interface: `(host, ifname)`.
pub type Iface = (String, String);

/// The lab as the trace sees it.
#[derive(Debug, Clone, Default)]
pub struct LabView {
    /// The scenario's name.
    pub name: String,
    /// Veth pairs, each end mapped to the other.
    pub peer: HashMap<Iface, Iface>,
    /// Bridge ports: interface → its bridge's name (on the same host).
    pub port_of: HashMap<Iface, String>,
    /// Which host owns which address (links and bridges).
    pub owner: HashMap<IpAddr, String>,
    /// The traffic steps, in order.
    pub steps: Vec<Step>,
    /// Each host's processes, by name, in the scenario's order.
    pub processes: HashMap<String, Vec<String>>,
    /// The TLS sessions' secrets, to read the HTTP inside TLS legs;
    /// empty unless the caller sets them.
    pub tls_keys: super::KeyLog,
    /// The drops the run recorded (see [`crate::capture::verdicts`]);
    /// empty unless the caller sets them.
    pub drops: crate::capture::verdicts::Verdicts,
}

/// A traffic step as the trace sees it.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    /// The client's host.
    pub host: String,
    pub proto: Proto,
    /// The client's source port (ICMP: echo identifier).
    pub port: u16,
    /// The step asks its host's resolver for a name first, over UDP from
    /// the same port: those datagrams are the step's too.
    pub resolves: bool,
    /// What the step sends, for a trace without the run's outcome, e.g.
    /// `tcp from client to 10.0.0.2:80`.
    pub sent: String,
    /// How many source ports the step sends from, `port` on: 1, or a load
    /// step's flows.
    pub flows: u32,
    /// A load step: how many flows (the first) keep their packets, and
    /// what it expects; `None` for a single flow.
    pub load: Option<(u32, crate::load::LoadExpect)>,
}

impl Step {
    /// Is `port` one of the step's source ports?
    pub fn has_port(&self, port: u16) -> bool {
        port >= self.port && u32::from(port - self.port) < self.flows
    }
}

impl LabView {
    /// The lab of an expanded scenario.
    pub fn of(sc: &Lab) -> LabView {
        let mut lab = LabView {
            name: sc.name.clone(),
            ..LabView::default()
        };
        for l in &sc.links {
            let a = (l.a.host.clone(), l.a.ifname.clone());
            let b = (l.b.host.clone(), l.b.ifname.clone());
            lab.peer.insert(a.clone(), b.clone());
            lab.peer.insert(b, a);
            for e in [&l.a, &l.b] {
                if let Some(br) = &e.bridge {
                    lab.port_of
                        .insert((e.host.clone(), e.ifname.clone()), br.clone());
                }
                for a in &e.addr {
                    lab.owner.insert(a.addr, e.host.clone());
                }
            }
        }
        for (h, host) in &sc.hosts {
            if !host.processes.is_empty() {
                let names = host.processes.iter().map(|p| p.name.clone()).collect();
                lab.processes.insert(h.clone(), names);
            }
            for b in host.bridges.values() {
                for a in &b.addr {
                    lab.owner.insert(a.addr, h.clone());
                }
            }
        }
        // A moved instance's new addresses (see `lab::Move`).
        for m in sc.traffic.iter().flat_map(|s| &s.moves) {
            for a in &m.addr {
                lab.owner.insert(a.addr, m.host.clone());
            }
        }
        lab.steps = sc
            .traffic
            .iter()
            .enumerate()
            .map(|(i, s)| Step {
                name: s.name.clone(),
                host: s.from.clone(),
                proto: s.proto,
                port: s.source_port(i),
                resolves: s.resolve.is_some(),
                sent: format!("{} from {} to {}", s.proto, s.from, s.to),
                flows: s.load.as_ref().map_or(1, |l| l.flows),
                load: s.load.as_ref().map(|l| {
                    let e = match &s.expect {
                        crate::expect::Expect::Load(e) => e.clone(),
                        _ => crate::load::LoadExpect::default(),
                    };
                    (l.sample, e)
                }),
            })
            .collect();
        lab
    }
}
