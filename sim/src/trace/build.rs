//! From captured frames to a [`Trace`]: frames decoded ([`super::decode`]), grouped into
//! packets' paths ([`super::path`]), each path attributed to the step whose
//! client sent it, rendered ([`super::render`]), and a comment per frame
//! for the pcapng. It knows the lab only as a [`LabView`].

use std::collections::BTreeMap;
use std::fmt::Write;

use hoplab_dataplane::wire::L4;

use super::decode::{decode, Seen};
use super::path::paths;
use super::render::{render, RelSeq};
use super::view::{LabView, Step};
use super::{Flow, Packet, Skipped, SkippedLink, StepResult, Trace, Undecodable};
use crate::capture::Captured;
use crate::values::Proto as StepProto;

/// The step a packet belongs to: it has a hop on the step's host with the
/// step's protocol and source port (ICMP: echo identifier) on the client
/// side. `Some(true)` when the packet comes from the client.
fn belongs(k: &Step, hops: &[&Seen]) -> Option<bool> {
    for h in hops.iter().filter(|h| h.at.host == k.host) {
        let s = &h.s;
        let hit = match (k.proto, &s.l4) {
            (StepProto::Tcp, L4::Tcp { sport, dport, .. })
            | (StepProto::Udp, L4::Udp { sport, dport }) => {
                if *sport == k.port && h.outgoing() {
                    return Some(true);
                }
                *dport == k.port && !h.outgoing()
            }
            (StepProto::Icmp, L4::Icmp { .. }) => s.echo_id() == Some(k.port),
            // An ICMP error about the step's own packet, on its way back.
            (StepProto::Tcp | StepProto::Udp, L4::Icmp { .. }) => {
                let want = if k.proto == StepProto::Tcp { 6 } else { 17 };
                if s.quoted_ports()
                    .is_some_and(|(p, sport, _)| p == want && sport == k.port)
                    && !h.outgoing()
                {
                    return Some(false);
                }
                false
            }
            _ => false,
        };
        if hit {
            // ICMP: a request leaves the client, a reply arrives at it.
            return Some(h.outgoing());
        }
    }
    None
}

/// Outcome of one step, filled in by the run (or unknown for `hoplab trace`).
pub struct StepReport {
    pub sent: String,
    pub result: StepResult,
}

/// Build the trace of `frames` captured in `lab`.
pub fn build(lab: &LabView, frames: &[Captured], outcomes: &[StepReport]) -> Trace {
    build_annotated(lab, frames, outcomes).0
}

/// A packet's frames in path order, and whether it came from the client.
type Path<'a> = (Vec<&'a Seen>, bool);

/// The paths of each step (in step order), and those of no step.
fn attribute<'a>(lab: &LabView, seen: &'a [Seen]) -> (Vec<Vec<Path<'a>>>, Vec<Vec<&'a Seen>>) {
    let mut per_step: Vec<Vec<Path>> = vec![Vec::new(); lab.steps.len()];
    let mut other = Vec::new();
    for c in paths(lab, seen) {
        let hops: Vec<&Seen> = c.iter().map(|&i| &seen[i]).collect();
        match lab
            .steps
            .iter()
            .enumerate()
            .find_map(|(k, step)| belongs(step, &hops).map(|d| (k, d)))
        {
            Some((k, from_client)) => per_step[k].push((hops, from_client)),
            None => other.push(hops),
        }
    }
    (per_step, other)
}

/// Build the trace of `frames` and, for each frame, the comment that names
/// its place in the trace (`flow STEP, packet N (...), hop I/J at ...`), or
/// why it has none (link chatter, undecodable). The comments go into the
/// pcapng, so that Wireshark shows each frame's flow and hop.
pub fn build_annotated(
    lab: &LabView,
    frames: &[Captured],
    outcomes: &[StepReport],
) -> (Trace, Vec<Option<String>>) {
    let mut comments: Vec<Option<String>> = vec![None; frames.len()];
    let (seen, undecoded) = decode(frames, &mut comments);
    let (per_step, other) = attribute(lab, &seen);
    let flows = lab
        .steps
        .iter()
        .zip(per_step)
        .enumerate()
        .map(|(i, (step, paths))| {
            let (sent, result) = match outcomes.get(i) {
                Some(o) => (o.sent.clone(), o.result.clone()),
                None => (step.sent.clone(), StepResult::Unknown),
            };
            let mut rel = RelSeq::default();
            let packets = paths
                .iter()
                .enumerate()
                .map(|(n, (hops, fwd))| {
                    let p = render(hops, Some((&mut rel, *fwd)), &lab.owner);
                    let flow = format!("flow {}", step.name);
                    annotate(&mut comments, (&flow, !*fwd), n, hops, &p);
                    p
                })
                .collect();
            Flow {
                step: step.name.clone(),
                sent,
                result,
                packets,
            }
        })
        .collect();
    let other = other
        .iter()
        .enumerate()
        .map(|(n, hops)| {
            let p = render(hops, None, &lab.owner);
            annotate(&mut comments, ("no flow", false), n, hops, &p);
            p
        })
        .collect();
    let trace = Trace {
        scenario: lab.name.clone(),
        flows,
        other,
        undecodable: undecoded.total(),
        control_plane: Vec::new(),
        counters: BTreeMap::new(),
        processes: Vec::new(),
        skipped: Skipped {
            damage: Vec::new(),
            links: (undecoded.links.into_iter())
                .map(|(link, frames)| SkippedLink { link, frames })
                .collect(),
            undecodable: (undecoded.reasons.into_iter())
                .map(|(reason, frames)| Undecodable { reason, frames })
                .collect(),
        },
        interrupted: None,
    };
    (trace, comments)
}

/// Comment each frame of packet `n` (0-based) of `flow` with its hop and,
/// where something changed, the step's name (`reply`: the packet goes back
/// to the client, so its rewrites are `un-DNAT` / `un-SNAT`).
fn annotate(
    comments: &mut [Option<String>],
    (flow, reply): (&str, bool),
    n: usize,
    hops: &[&Seen],
    p: &Packet,
) {
    let total = p.hops.len();
    for (i, (seen, hop)) in hops.iter().zip(&p.hops).enumerate() {
        let mut c = format!(
            "{flow}, packet {} ({}), hop {}/{total} at {}",
            n + 1,
            p.packet,
            i + 1,
            hop.at
        );
        if let Some(ch) = &hop.changed {
            match ch.step_name(reply) {
                Some(name) => {
                    let _ = write!(c, ": {name}: {ch}");
                }
                None => {
                    let _ = write!(c, ": {ch}");
                }
            }
        }
        if i + 1 == total {
            let _ = write!(c, "; {}", p.end);
        }
        comments[seen.frame] = Some(c);
    }
}
