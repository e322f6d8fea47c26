//! From a pcapng to the per-hop trace of every packet of every flow.
//!
//! The model is [`Trace`] → [`Flow`] → [`Packet`] → [`Hop`], whose pieces
//! (place, header, changes, end, result) are the types of [`hop`], written
//! to and read from the snapshot YAML as the same text. `lab` is what a
//! trace needs of the lab (wiring, address owners, steps) and the one place
//! that reads a scenario; `build` decodes frames and attributes
//! packets to steps, `path` groups frames into packets' paths and orders
//! them, `order` puts each TCP connection's packets in a causal order that
//! timing does not decide, `render` turns a path into hops, `diff` compares two
//! traces hop by hop. Reading capture files is [`crate::capture`]'s job;
//! showing a trace is [`crate::report`]'s.
//!
//! L7: [`l7`] reassembles each TCP connection's two byte streams and
//! reads them as HTTP/1.1, WebSocket or TLS (TLS 1.3 decrypted with the
//! capture's key log, [`KeyLog`], set on the [`LabView`]), giving each
//! packet a short summary ([`Packet::l7`]); `legs` groups packets into
//! TCP connections and follows a step's request through every proxy that
//! ended its connection and opened another ([`Flow::legs`]), joined by
//! evidence only (ClientHello random, request id, request line). A
//! summary never holds randoms, tickets or dates; a proxy's ephemeral
//! port is shown as `ephN`.
//!
//! A packet keeps its identity across hops through fields no hop in these
//! scenarios rewrites: the IPv4 identification (IPv6 flow label), TCP raw
//! sequence and acknowledgement numbers and flags, the ICMP echo sequence,
//! and the payload bytes. Frames with the same identity, in kernel-timestamp
//! order, form one packet's path; a new path starts when the TTL goes up
//! (a fresh packet, such as an echo with the same bytes) or the same
//! interface and direction come again (a retransmission).
//!
//! Tunnels: the net manager carries whole IP packets between nodes as the
//! payload of UDP datagrams to or from port 50103 ([`TUNNEL_PORT`](hoplab_dataplane::netmanager::core::TUNNEL_PORT)). A
//! frame that is such a datagram, and whose payload parses as an IPv4/IPv6
//! packet, stands for that *inner* packet: its identity, TTL (for splitting
//! and ordering paths), addresses (for where a packet ended) and ports (for
//! the step it belongs to) are the inner packet's, and link chatter is
//! recognised on it. So a packet read from node A's TUN, tunnelled over
//! A's underlay, the switch and B's underlay, then written bare to B's TUN
//! and delivered to an instance is one packet with one path; the outer
//! TTL, which starts afresh at the tunnel, never splits it. Within one
//! inner TTL, a tunnel endpoint's bare frame comes before its encapsulated
//! one on the way out (TUN, then underlay) and after it on the way in. A
//! datagram on port 50103 whose payload is not IP is a plain UDP packet.
//!
//! An encapsulated hop's `hdr` is the inner header, then the outer one as
//! distinct keys, e.g. `10.30.1.11:40000 > 10.18.0.66:80 tcp S seq=0 len=60
//! ttl=63 | outer=udp outer.src=10.10.1.1:50103 outer.dst=10.10.1.2:50103
//! outer.len=88 outer.ttl=64` (so the inner packet reads the same on bare
//! and tunnelled hops, and a per-field snapshot diff names outer fields
//! apart from inner ones). `changed` says `encapsulated in udp SRC > DST`
//! or `decapsulated from udp SRC > DST` where the tunnel starts or ends,
//! `outer src/dst/ttl/len A -> B` between tunnelled hops, then the inner
//! packet's changes as on any hop.
//!
//! Normalisation, so that a trace is the same on every run: TCP sequence
//! and acknowledgement numbers are relative to each direction's first
//! sequence number; checksums, IP IDs, flow labels, MAC addresses and
//! timestamps are left out (of a tunnel's outer header too; its ports,
//! addresses, length and TTL are shown); ARP and IPv6
//! neighbour/multicast-listener chatter is left out.
//!
//! What a trace leaves out of its capture is in [`Skipped`]: where the
//! file is damaged (byte offset and reason, from [`crate::capture::read`]),
//! frames of link types hoplab does not decode (per link type) and frames
//! that could not be decoded (per reason). A whole capture of decodable
//! frames, such as every run's, has none, and its YAML no `skipped` key.

mod attribute;
mod build;
mod decode;
mod diff;
mod fold;
pub mod hop;
pub mod l7;
mod legs;
mod order;
mod path;
pub mod queues;
mod render;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fold;
#[cfg(test)]
mod tests_l7;
#[cfg(test)]
mod tests_order;
mod view;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::capture::{Damage, DECODED_LINKS};

pub use build::{build, build_annotated, StepReport};
pub use diff::diff;
pub use hop::{
    Change, Changes, Dir, End, Endpoint, Field, Header, Outer, Place, Port, Proto, Rewrite,
    StepResult, Transport, Tunnel,
};
pub use l7::KeyLog;
pub use view::{LabView, Step};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    pub scenario: String,
    pub flows: Vec<Flow>,
    /// IP packets that belong to no traffic step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other: Vec<Packet>,
    /// Frames that could not be decoded (counted, not shown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub undecodable: usize,
    /// The simulated service managers' answers, in order (scenarios with
    /// clusters): which manager was asked for which service IP, what it
    /// answered, and whether it asked the root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control_plane: Vec<String>,
    /// Counters read from the dataplane at the end of the traffic (the
    /// gateway's, with its firewall's; a net manager's drops at the
    /// tunnel's trust boundary), per `host/process`: only those that are
    /// not zero, and none that depend on timing (expiry).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, BTreeMap<String, u64>>,
    /// Hosts whose drops could not be recorded, with why (see
    /// [`crate::capture::verdicts`]): a packet that ends there without a
    /// verdict may have been dropped all the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts_unavailable: Vec<String>,
    /// What happened to the lab's processes, in order: what each fault
    /// step did (`traffic[2] crash: kill n1/netmanager: exited by signal
    /// SIGKILL`), a process that died on its own (with the step it died
    /// in and its status), counters a dead process could not give.
    /// Deterministic words only: no times.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
    /// What of the capture is not in the trace, and why (traces of
    /// damaged captures, or of frames hoplab does not decode).
    #[serde(default, skip_serializing_if = "Skipped::is_empty")]
    pub skipped: Skipped,
    /// Set when the run was interrupted: the trace holds what was captured
    /// until then. Absent from every complete run's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<Interrupted>,
}

/// What of a capture a trace leaves out: where the file is damaged, and
/// the frames that were read but not decoded (all counted in
/// [`Trace::undecodable`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Blocks of the file that could not be read, in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damage: Vec<Damage>,
    /// Frames of link types hoplab does not decode, per link type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<SkippedLink>,
    /// Frames that could not be decoded, per reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undecodable: Vec<Undecodable>,
}

/// Frames of one link type hoplab does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedLink {
    /// The link type's name (e.g. `IEEE802_11`), or its number.
    pub link: String,
    pub frames: usize,
}

/// Frames that could not be decoded for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undecodable {
    pub reason: String,
    pub frames: usize,
}

impl Skipped {
    pub fn is_empty(&self) -> bool {
        self.damage.is_empty() && self.links.is_empty() && self.undecodable.is_empty()
    }

    /// One line for each thing left out, for a warning.
    pub fn warnings(&self) -> Vec<String> {
        let frames = |n: usize| format!("{n} frame{}", if n == 1 { "" } else { "s" });
        let damage = self.damage.iter().map(|d| d.to_string());
        let links = self.links.iter().map(|l| {
            format!(
                "{} of link type {} skipped: hoplab decodes {DECODED_LINKS}",
                frames(l.frames),
                l.link
            )
        });
        let undecodable = (self.undecodable.iter())
            .map(|u| format!("{} could not be decoded: {}", frames(u.frames), u.reason));
        damage.chain(links).chain(undecodable).collect()
    }
}

/// How a run was interrupted: by which signal, in which phase, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interrupted {
    /// The signal's name, e.g. `SIGTERM`.
    pub signal: String,
    /// The phase the run was in: `build`, `start`, `traffic` (before the
    /// first step), `traffic[I] STEP` (the step that was cut short),
    /// `capture` or `trace`.
    pub during: String,
    /// Milliseconds from the start of the run to when it saw the signal.
    pub after_ms: u64,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted by {} during {}, {} ms into the run",
            self.signal, self.during, self.after_ms
        )
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub step: String,
    /// What the step did, e.g. `client: tcp 40001 -> 10.0.2.2:7, payload 5 B`.
    pub sent: String,
    /// What came back and whether that was expected.
    pub result: StepResult,
    /// A load step's summary: its flows counted; `packets` then holds the
    /// sample flows' only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<crate::load::LoadSummary>,
    /// The packets of the step's own connection (its first leg).
    pub packets: Vec<Packet>,
    /// The connections a proxy opened to carry the step's request on,
    /// in order: each joined to the one before by evidence read from the
    /// packets (see [`Leg`]). Empty when no proxy re-opened it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<Leg>,
}

/// A connection that carries a flow's request on from where the leg
/// before it ended (legs 2, 3, ...; leg 1 is the flow's own packets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    /// Where the leg before ended and this one started, e.g. `ended at
    /// lb (haproxy), re-opened 10.0.1.1:eph1 > 10.0.2.10:8443`; a port a
    /// proxy chose is `ephN` (see [`Port::Eph`]).
    pub via: String,
    /// The evidence that joins it to the leg before, e.g. `same
    /// X-Request-Id hoplab-0-1`; never timing alone.
    pub joined_by: String,
    /// What the proxy changed between the two legs: TLS ended, started or
    /// passed through; request headers added, removed or rewritten.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    pub packets: Vec<Packet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    /// Headers as first seen, e.g. `tcp S 10.0.1.2:40001 > 10.0.2.2:7`.
    pub packet: String,
    /// What the segment carries at L7, e.g. `HTTP GET / host=app.example
    /// id=hoplab-0-1` or `TLS AppData 517 B (HTTP 200 OK)`; absent when
    /// nothing (see [`l7`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7: Option<String>,
    pub hops: Vec<Hop>,
    /// Where the packet ended: delivered to a host, dropped (where, by
    /// what, why), or last seen on a hop.
    pub end: End,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// `host/ifname in|out`.
    pub at: Place,
    pub hdr: Header,
    /// What differs from the hop before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<Changes>,
}

impl Trace {
    /// The trace as YAML: the snapshot text.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a trace always serialises")
    }

    pub fn from_yaml(text: &str) -> Result<Trace, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }
}
