//! From captured frames to a [`Trace`]: frames decoded ([`super::decode`]), grouped into
//! packets' paths ([`super::path`]), each path attributed to its step
//! ([`super::attribute`]), read at L7 and followed through proxies
//! ([`super::legs`]), rendered ([`super::render`]), and a comment per
//! frame for the pcapng. It knows the lab only as a [`LabView`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use hoplab_dataplane::wire::L4;

use super::attribute::{attribute, Path};
use super::decode::{decode, Seen};
use super::fold;
use super::legs::{normalise, stitch, At};
use super::render::{render, RelSeq};
use super::view::{LabView, Step};
use super::{End, Flow, Leg, Packet, Skipped, SkippedLink, StepResult, Trace, Undecodable};
use crate::capture::Captured;
use crate::load::{LoadExpect, LoadSummary};

/// The summary of a DNS message (UDP to or from port 53), for its hop.
fn dns_note(hops: &[&Seen]) -> Option<String> {
    let s = &hops.first()?.s;
    match s.l4 {
        L4::Udp { sport, dport } if sport == 53 || dport == 53 => {
            crate::l7::dns::summary(&s.payload)
        }
        _ => None,
    }
}

/// Outcome of one step, filled in by the run (or unknown for `hoplab trace`).
pub struct StepReport {
    pub sent: String,
    pub result: StepResult,
    /// A load step: what its clients saw, counted.
    pub load: Option<LoadSummary>,
}

/// The client port of a load step's path: where its client sends from or
/// receives on (an ICMP error: the port of the packet it quotes).
fn flow_port(k: &Step, hops: &[&Seen]) -> Option<u16> {
    hops.iter()
        .filter(|h| h.at.host == k.host)
        .find_map(|h| match &h.s.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => {
                let p = if h.outgoing() { *sport } else { *dport };
                k.has_port(p).then_some(p)
            }
            L4::Icmp { .. } => (h.s.quoted_ports())
                .map(|(_, sport, _)| sport)
                .filter(|p| k.has_port(*p)),
            L4::Other { .. } => None,
        })
}

/// Build the trace of `frames` captured in `lab`.
pub fn build(lab: &LabView, frames: &[Captured], outcomes: &[StepReport]) -> Trace {
    build_annotated(lab, frames, outcomes).0
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
    let acks = &fold::Acks::of(&seen);
    let (per_step, other) = attribute(lab, &seen);
    let st = stitch(lab, &per_step, &other);
    let finish = |mut p: Packet, at: At| {
        p.l7 = st.notes.get(&at).cloned();
        normalise(&mut p, &st.eph);
        // The pcapng's comment may name what the snapshot must not: the
        // digest of a ClientHello random, which differs on every run.
        let note = match (&p.l7, st.digests.get(&at)) {
            (Some(l7), Some(d)) => Some(format!("{l7} ({d})")),
            (l7, _) => l7.clone(),
        };
        (p, note)
    };
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
            let flow = format!("flow {}", step.name);
            let (packets, load) = match &step.load {
                Some((sample, expect)) => {
                    let mut l = load_packets(
                        (lab, frames, acks),
                        (i, step, *sample),
                        &paths,
                        &mut comments,
                        &finish,
                    );
                    let result = load_result(&mut l.1, outcomes.get(i), expect, &result);
                    (l.0, Some((l.1, result)))
                }
                None => {
                    let mut rel = RelSeq::default();
                    let items = (paths.iter().enumerate())
                        .map(|(n, (hops, fwd))| {
                            let p = render(hops, Some((&mut rel, *fwd)), &lab.owner, &lab.drops);
                            (&hops[..], !*fwd, At::Step(i, n), p)
                        })
                        .collect();
                    let packets =
                        fold_annotate((frames, acks), items, (&flow, true), &mut comments, &finish);
                    (packets, None)
                }
            };
            let (load, result) = match load {
                Some((l, r)) => (Some(l), r),
                None => (None, result),
            };
            let legs = (st.legs[i].iter().enumerate())
                .map(|(l, plan)| {
                    let mut rel = RelSeq::default();
                    let name = format!("{flow}, leg {}", l + 2);
                    let items = (plan.paths.iter())
                        .map(|&(o, fwd)| {
                            let p =
                                render(&other[o], Some((&mut rel, fwd)), &lab.owner, &lab.drops);
                            (&other[o][..], !fwd, At::Other(o), p)
                        })
                        .collect();
                    let packets = fold_annotate(
                        (frames, acks),
                        items,
                        (&name, false),
                        &mut comments,
                        &finish,
                    );
                    Leg {
                        via: plan.via.clone(),
                        joined_by: plan.joined_by.clone(),
                        changed: plan.changed.clone(),
                        packets,
                    }
                })
                .collect();
            Flow {
                step: step.name.clone(),
                sent,
                result,
                load,
                packets,
                legs,
            }
        })
        .collect();
    // A load step's proxy legs outside its sample: counted, not kept;
    // each frame names its flow.
    for (&o, &k) in &st.load_legs {
        for seen in &other[o] {
            comments[seen.frame] = Some(format!(
                "flow {} (a proxy leg of a flow outside the sample)",
                lab.steps[k].name
            ));
        }
    }
    let mut rels: HashMap<usize, RelSeq> = HashMap::new();
    let items = (0..other.len())
        .filter(|o| !st.taken.contains(o))
        .map(|o| {
            // A connection of no step: TCP numbers relative to its own.
            let tcp = (st.other_conn.get(&o)).map(|&(c, fwd)| (rels.entry(c).or_default(), fwd));
            let p = render(&other[o], tcp, &lab.owner, &lab.drops);
            (&other[o][..], false, At::Other(o), p)
        })
        .collect();
    let other = fold_annotate(
        (frames, acks),
        items,
        ("no flow", false),
        &mut comments,
        &finish,
    );
    for s in seen.iter().filter(|s| s.mended) {
        let c = comments[s.frame].get_or_insert_with(String::new);
        c.push_str(MENDED);
    }
    (assemble(lab, flows, other, undecoded), comments)
}

/// Said in the pcapng comment of a fragment the trace shows with its
/// datagram's first header ([`super::decode`]'s `mend_fragments`).
const MENDED: &str = "; header shown as its datagram's first fragment's here: the capture \
     copied this frame after the kernel rewrote it for the next hop";

/// The trace of these flows and packets of no flow, with what the capture
/// left out.
fn assemble(
    lab: &LabView,
    flows: Vec<Flow>,
    other: Vec<Packet>,
    undecoded: super::decode::Undecoded,
) -> Trace {
    Trace {
        scenario: lab.name.clone(),
        flows,
        other,
        undecodable: undecoded.total(),
        control_plane: Vec::new(),
        counters: BTreeMap::new(),
        verdicts_unavailable: lab.drops.unavailable.clone(),
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
    }
}

/// One list of rendered packets (a step's own connection, a leg, the
/// packets of no flow: each with its frames, whether it goes back to the
/// client, and where it is in the stitching), folded ([`fold`]): the
/// packets kept, finished and each frame commented with its hop (`flow`
/// names the list; `dns`: a packet without L7 gets its DNS summary), a
/// folded packet's frames with the frame it was folded into.
fn fold_annotate(
    (frames, acks): (&[Captured], &fold::Acks),
    items: Vec<(&[&Seen], bool, At, Packet)>,
    (flow, dns): (&str, bool),
    comments: &mut [Option<String>],
    finish: &dyn Fn(Packet, At) -> (Packet, Option<String>),
) -> Vec<Packet> {
    let hops: Vec<&[&Seen]> = items.iter().map(|(h, ..)| *h).collect();
    let rendered: Vec<&Packet> = items.iter().map(|(.., p)| p).collect();
    let into = fold::fold((frames, acks), &hops, &rendered);
    let mut kept = Vec::new();
    for (n, (hops_n, reply, at, p)) in items.into_iter().enumerate() {
        if let Some(f) = into[n] {
            fold::comment(comments, (flow, f.rule), hops_n, hops[f.into]);
            continue;
        }
        let (mut p, mut note) = finish(p, at);
        if dns && p.l7.is_none() {
            p.l7 = dns_note(hops_n);
            note.clone_from(&p.l7);
        }
        annotate(comments, (flow, reply), kept.len(), hops_n, &p, note);
        kept.push(p);
    }
    kept
}

/// A load step's paths: the sample flows' packets rendered in full, every
/// flow counted into the summary (who its first packet reached, where
/// packets were last seen short of an owner, packets seen again).
fn load_packets(
    (lab, frames, acks): (&LabView, &[Captured], &fold::Acks),
    (i, step, sample): (usize, &Step, u32),
    paths: &[Path],
    comments: &mut [Option<String>],
    finish: &dyn Fn(Packet, At) -> (Packet, Option<String>),
) -> (Vec<Packet>, LoadSummary) {
    let mut sum = LoadSummary {
        flows: u64::from(step.flows),
        ..LoadSummary::default()
    };
    let mut rels: HashMap<u16, RelSeq> = HashMap::new();
    let mut answered: HashMap<u16, String> = HashMap::new();
    let mut again: HashMap<(u16, bool, u64), bool> = HashMap::new();
    let mut packets = Vec::new();
    let mut kept: Vec<(usize, String, Packet)> = Vec::new();
    for (n, (hops, fwd)) in paths.iter().enumerate() {
        let port = flow_port(step, hops).unwrap_or(step.port);
        let p = render(
            hops,
            Some((rels.entry(port).or_default(), *fwd)),
            &lab.owner,
            &lab.drops,
        );
        match &p.end {
            End::LastSeen(_) | End::Dropped { .. } => {
                *sum.drops.entry(p.end.to_string()).or_default() += 1
            }
            // Who answered: where the first of the client's packets that
            // arrived arrived (a lost SYN's resend counts).
            End::Delivered { host } if *fwd => {
                answered.entry(port).or_insert_with(|| host.clone());
            }
            End::Delivered { .. } => {}
        }
        if resent(&mut again, port, *fwd, &p) {
            sum.retransmissions += 1;
        }
        let flow = format!("flow {} port {port}", step.name);
        if u32::from(port - step.port) < sample {
            kept.push((n, flow, p));
        } else {
            // Counted, not kept: each frame names its flow only, so the
            // comments stay short however many flows there are.
            for seen in hops {
                comments[seen.frame] = Some(flow.clone());
            }
        }
    }
    let hops: Vec<&[&Seen]> = kept.iter().map(|(n, ..)| &paths[*n].0[..]).collect();
    let rendered: Vec<&Packet> = kept.iter().map(|(.., p)| p).collect();
    let into = fold::fold((frames, acks), &hops, &rendered);
    for (k, (n, flow, p)) in kept.into_iter().enumerate() {
        if let Some(f) = into[k] {
            fold::comment(comments, (&flow, f.rule), hops[k], hops[f.into]);
            continue;
        }
        let (p, note) = finish(p, At::Step(i, n));
        annotate(
            comments,
            (&flow, !paths[n].1),
            packets.len(),
            hops[k],
            &p,
            note,
        );
        packets.push(p);
    }
    for host in answered.into_values() {
        *sum.answered_by.entry(host).or_default() += 1;
    }
    (packets, sum)
}

/// Is `p` (of the flow on `port`, from the client when `fwd`) a packet
/// that carries something (data, SYN, FIN; UDP: a datagram) seen again at
/// the place it was first seen, with the same header (TCP numbers
/// relative), after its first copy was lost (not delivered)? A resend of
/// a delivered copy is not counted: it says only that an answer was late
/// (on a loaded machine), which differs run to run. A pure ACK is never
/// one: a delayed one may come twice.
fn resent(seen: &mut HashMap<(u16, bool, u64), bool>, port: u16, fwd: bool, p: &Packet) -> bool {
    let Some(first) = p.hops.first() else {
        return false;
    };
    let hdr = first.hdr.to_string();
    let pure_ack = hdr.contains(" tcp . ") && !p.packet.contains(" B payload");
    if pure_ack {
        return false;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&(first.at.to_string(), hdr), &mut h);
    let delivered = matches!(p.end, End::Delivered { .. });
    match seen.entry((port, fwd, std::hash::Hasher::finish(&h))) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(delivered);
            false
        }
        std::collections::hash_map::Entry::Occupied(mut o) => {
            let lost_before = !*o.get();
            *o.get_mut() |= delivered;
            lost_before
        }
    }
}

/// A load step's summary completed with what its clients saw (`run`), and
/// its result judged against `expect`; without the run's outcome, the
/// capture's counts alone and `result` as it was.
fn load_result(
    sum: &mut LoadSummary,
    run: Option<&StepReport>,
    expect: &LoadExpect,
    result: &StepResult,
) -> StepResult {
    let Some(seen) = run.and_then(|r| r.load.as_ref()) else {
        return result.clone();
    };
    sum.ok = seen.ok;
    sum.failed = seen.failed;
    sum.bytes_verified = seen.bytes_verified;
    sum.status = seen.status.clone();
    sum.failures = seen.failures.clone();
    if !seen.answered_by.is_empty() {
        // HTTP: who served each request, by its X-Served-By.
        sum.answered_by = seen.answered_by.clone();
    }
    if matches!(result, StepResult::Interrupted(_)) {
        return result.clone();
    }
    match sum.judge(expect) {
        // Who answered how often is the target's random choice: the
        // bounds held is what every run has in common.
        Ok(()) if expect.random() => {
            sum.answered_by.clear();
            StepResult::Ok(Some(format!("{}; {expect}", sum.line())))
        }
        Ok(()) => StepResult::Ok(Some(sum.line())),
        Err(why) => StepResult::Failed(Some(format!(
            "expected {expect}, got {}: {why}",
            sum.line()
        ))),
    }
}

/// Comment each frame of packet `n` (0-based) of `flow` with its hop and,
/// where something changed, the step's name (`reply`: the packet goes back
/// to the client, so its rewrites are `un-DNAT` / `un-SNAT`), and the
/// packet's L7 summary `l7` (in its comment form) if any.
fn annotate(
    comments: &mut [Option<String>],
    (flow, reply): (&str, bool),
    n: usize,
    hops: &[&Seen],
    p: &Packet,
    l7: Option<String>,
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
        if let Some(l7) = &l7 {
            let _ = write!(c, "; L7: {l7}");
        }
        comments[seen.frame] = Some(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(answered: &[(&str, u64)], random: bool) -> (LoadSummary, StepResult) {
        let expect: LoadExpect = serde_yaml::from_str(&format!(
            "{{spread: {{each_of: [pod-1, pod-2], at_least: 2, random: {random}}}}}"
        ))
        .unwrap();
        let seen = LoadSummary {
            flows: 5,
            ok: 5,
            answered_by: answered.iter().map(|&(h, n)| (h.into(), n)).collect(),
            ..LoadSummary::default()
        };
        let report = StepReport {
            sent: String::new(),
            result: StepResult::Unknown,
            load: Some(seen),
        };
        let mut sum = LoadSummary {
            flows: 5,
            ..LoadSummary::default()
        };
        let r = load_result(&mut sum, Some(&report), &expect, &StepResult::Unknown);
        (sum, r)
    }

    /// A random choice's counts differ run to run: the trace keeps that
    /// the bounds held; a missed bound still names the counts.
    #[test]
    fn a_random_spread_keeps_that_its_bounds_held_not_the_counts() {
        let (a, ra) = run(&[("pod-1", 3), ("pod-2", 2)], true);
        let (b, rb) = run(&[("pod-1", 2), ("pod-2", 3)], true);
        assert!(a.answered_by.is_empty());
        assert_eq!((a, ra.to_string()), (b, rb.to_string()));
        assert!(matches!(ra, StepResult::Ok(_)), "{ra}");
        let (_, miss) = run(&[("pod-1", 4), ("pod-2", 1)], true);
        assert!(
            matches!(&miss, StepResult::Failed(Some(w)) if w.contains("pod-2 answered 1")),
            "{miss}"
        );
        let (kept, _) = run(&[("pod-1", 3), ("pod-2", 2)], false);
        assert_eq!(kept.answered_by.len(), 2, "not random: the counts stay");
    }
}
