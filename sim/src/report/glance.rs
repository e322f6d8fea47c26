//! What a reader wants of a flow before its hops: who answered, where the
//! client's packet went, the NAT and tunnel steps taken, the drops
//! ([`summary`]); a load step's counts ([`load_lines`]); and which packets took the same path with the same
//! changes, so that a page draws them once ([`folds`]).
//!
//! It reads a flow's typed packets; it does not know HTML, Markdown or how
//! a trace was built. A packet goes back to the step's client when it
//! starts on another host than the flow's first packet (the one rule
//! [`super::html::is_reply`] states).

use crate::load::LoadSummary;
use crate::trace::{Change, Changes, End, Flow, Packet, Place, Rewrite};

use super::html::{is_icmp_error, is_reply};

/// The facts of one flow, each already in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The host the first answer came from (`api-1`), with the ICMP
    /// error's name if the answer was one (`r1 (icmp port unreachable)`);
    /// `None`: nothing came back.
    pub answered: Option<String>,
    /// Where the client's first packet ended: `delivered to api-1` or
    /// `last seen at r1/eth1 out`.
    pub reached: Option<String>,
    /// `NAME at HOST` for every NAT or tunnel step, once each, in order.
    pub steps: Vec<String>,
    /// `P3 at HOST/IF DIR` for every packet that was not delivered.
    pub drops: Vec<String>,
}

/// A load step's summary in words, one line each: flows, who answered,
/// statuses, failures, drops, retransmissions, and that the packets shown
/// are the sample's.
pub fn load_lines(l: &LoadSummary) -> Vec<String> {
    let counts = |m: &mut dyn Iterator<Item = (String, u64)>| {
        m.map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = vec![l.line()];
    if !l.answered_by.is_empty() {
        let by = counts(&mut l.answered_by.iter().map(|(k, v)| (k.clone(), *v)));
        out.push(format!("answered by: {by}"));
    }
    if !l.status.is_empty() {
        let st = counts(&mut l.status.iter().map(|(k, v)| (format!("HTTP {k}"), *v)));
        out.push(format!("statuses: {st}"));
    }
    if !l.failures.is_empty() {
        let f = counts(&mut l.failures.iter().map(|(k, v)| (k.clone(), *v)));
        out.push(format!("failed: {f}"));
    }
    if !l.drops.is_empty() {
        let d = counts(&mut l.drops.iter().map(|(k, v)| (k.clone(), *v)));
        out.push(format!("packets not delivered: {d}"));
    }
    if l.retransmissions > 0 {
        out.push(format!("retransmissions: {}", l.retransmissions));
    }
    out.push("packets shown: the sample flows' only".into());
    out
}

/// The summary of `f`. A request stitched across proxies was answered by
/// whoever answered its last leg, through the proxies before it
/// (`server1 (through lb)`); the steps and drops are every leg's.
pub fn summary(f: &Flow) -> Summary {
    let last = f.legs.iter().rev().find(|l| !l.packets.is_empty());
    let answered = match last {
        None => answered_in(&f.packets),
        Some(leg) => answered_in(&leg.packets).map(|host| {
            let via: Vec<String> = f
                .legs
                .iter()
                .filter_map(|l| l.via.strip_prefix("ended at "))
                .filter_map(|v| v.split([' ', ',']).next())
                .map(str::to_string)
                .collect();
            format!("{host} (through {})", via.join(", "))
        }),
    };
    let reached = f.packets.first().map(|p| p.end.to_string());
    let mut steps: Vec<String> = Vec::new();
    let mut drops = Vec::new();
    let legs = std::iter::once(&f.packets).chain(f.legs.iter().map(|l| &l.packets));
    for (leg, packets) in legs.enumerate() {
        for (i, p) in packets.iter().enumerate() {
            let reply = is_reply(packets, p);
            for h in &p.hops {
                let Some(name) = h.changed.as_ref().and_then(|c| c.step_name(reply)) else {
                    continue;
                };
                if matches!(name.as_str(), "routed" | "resized" | "changed") {
                    continue;
                }
                let s = format!("{name} at {}", h.at.host);
                if !steps.contains(&s) {
                    steps.push(s);
                }
            }
            let what = match &p.end {
                End::LastSeen(at) => format!("at {at}"),
                // Under `dropped`: where and by what, not the word again.
                End::Dropped { .. } => {
                    let end = p.end.to_string();
                    match end.strip_prefix("dropped ") {
                        Some(rest) => rest.to_string(),
                        None => end,
                    }
                }
                End::Delivered { .. } => continue,
            };
            drops.push(match leg {
                0 => format!("P{} {what}", i + 1),
                _ => format!("leg {} P{} {what}", leg + 1, i + 1),
            });
        }
    }
    Summary {
        answered,
        reached,
        steps,
        drops,
    }
}

/// The host the first answer among `packets` came from, with the ICMP
/// error's name if it was one.
fn answered_in(packets: &[Packet]) -> Option<String> {
    let p = packets.iter().find(|p| is_reply(packets, p))?;
    let host = &p.hops.first()?.at.host;
    Some(match icmp_words(p).filter(|_| is_icmp_error(p)) {
        Some(words) => format!("{host} ({words})"),
        None => host.clone(),
    })
}

/// `icmp port unreachable`: the ICMP words of an ICMP packet's title.
fn icmp_words(p: &Packet) -> Option<String> {
    let h = &p.hops.first()?.hdr;
    match h.transport {
        crate::trace::Transport::Icmp { v6, ty, code, .. } => {
            Some(crate::trace::hop::icmp_kind(v6, ty, code))
        }
        _ => None,
    }
}

/// What makes two packets "the same path": every hop's place and changes
/// (rewrites with their values), and where the packet ended.
fn path_key(p: &Packet) -> (Vec<(&Place, Option<&Changes>)>, &End) {
    (
        p.hops.iter().map(|h| (&h.at, h.changed.as_ref())).collect(),
        &p.end,
    )
}

/// The packets of `packets` grouped by path: each group is the indices of
/// packets with the same places, the same changes and the same end, in
/// order; groups are in the order of their first packet.
pub fn folds(packets: &[Packet]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        let key = path_key(p);
        match groups
            .iter_mut()
            .find(|g| path_key(&packets[g[0]]) == key && !p.hops.is_empty())
        {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

/// The rewrites of a hop with their values, as a reader wants them beside
/// the step's badge: `dst 10.30.1.1:80 → 10.18.0.1:80`, `in udp A > B`
/// (encapsulated), `from udp A > B` (decapsulated); TTLs and lengths left
/// out.
pub fn rewrites(changed: Option<&Changes>) -> Vec<String> {
    let mut v = Vec::new();
    for c in changed.map_or(&[][..], |c| &c.0) {
        match c {
            Change::Encapsulated(t) => v.push(format!("in {t}")),
            Change::Decapsulated(t) => v.push(format!("from {t}")),
            Change::Rewritten { outer, field } => {
                let o = if *outer { "outer " } else { "" };
                match field {
                    Rewrite::Src(a, b) => v.push(format!("{o}src {a} → {b}")),
                    Rewrite::Dst(a, b) => v.push(format!("{o}dst {a} → {b}")),
                    Rewrite::IcmpId(Some(a), Some(b)) => v.push(format!("{o}icmp id {a} → {b}")),
                    _ => {}
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Trace;

    const T: &str = "scenario: s
flows:
- step: get
  sent: udp from c port 40000 to 10.96.0.1:80
  result: ok
  packets:
  - packet: udp 10.0.0.2:40000 > 10.96.0.1:80
    hops:
    - at: c/eth0 out
      hdr: 10.0.0.2:40000 > 10.96.0.1:80 udp len=30 ttl=64
    - at: r/eth1 out
      hdr: 10.0.0.2:40000 > 10.1.0.10:80 udp len=30 ttl=63
      changed: dst 10.96.0.1:80 -> 10.1.0.10:80, ttl 64 -> 63
    - at: api-1/eth0 in
      hdr: 10.0.0.2:40000 > 10.1.0.10:80 udp len=30 ttl=63
    end: delivered to api-1
  - packet: udp 10.1.0.10:80 > 10.0.0.2:40000
    hops:
    - at: api-1/eth0 out
      hdr: 10.1.0.10:80 > 10.0.0.2:40000 udp len=30 ttl=64
    - at: r/eth0 out
      hdr: 10.96.0.1:80 > 10.0.0.2:40000 udp len=30 ttl=63
      changed: src 10.1.0.10:80 -> 10.96.0.1:80, ttl 64 -> 63
    end: last seen at r/eth0 out
  - packet: udp 10.0.0.2:40000 > 10.96.0.1:80
    hops:
    - at: c/eth0 out
      hdr: 10.0.0.2:40000 > 10.96.0.1:80 udp len=31 ttl=64
    - at: r/eth1 out
      hdr: 10.0.0.2:40000 > 10.1.0.10:80 udp len=31 ttl=63
      changed: dst 10.96.0.1:80 -> 10.1.0.10:80, ttl 64 -> 63
    - at: api-1/eth0 in
      hdr: 10.0.0.2:40000 > 10.1.0.10:80 udp len=31 ttl=63
    end: delivered to api-1
";

    #[test]
    fn a_flow_is_summed_up_and_its_same_paths_folded() {
        let t = Trace::from_yaml(T).unwrap();
        let f = &t.flows[0];
        let s = summary(f);
        assert_eq!(s.answered.as_deref(), Some("api-1"));
        assert_eq!(s.reached.as_deref(), Some("delivered to api-1"));
        assert_eq!(s.steps, ["DNAT at r", "un-DNAT at r"]);
        assert_eq!(s.drops, ["P2 at r/eth0 out"]);
        assert_eq!(folds(&f.packets), [vec![0, 2], vec![1]]);
        assert_eq!(
            rewrites(f.packets[0].hops[1].changed.as_ref()),
            ["dst 10.96.0.1:80 → 10.1.0.10:80"]
        );
    }

    /// A drop is listed by where and by what, without the word "dropped"
    /// (the list is the flow's drops already).
    #[test]
    fn a_drop_is_listed_without_the_word_twice() {
        let t = Trace::from_yaml(&T.replacen(
            "end: delivered to api-1",
            "end: dropped at r in input by nftables inet t (not_exposed)",
            1,
        ))
        .unwrap();
        let s = summary(&t.flows[0]);
        assert_eq!(
            s.drops[0],
            "P1 at r in input by nftables inet t (not_exposed)"
        );
    }
}
