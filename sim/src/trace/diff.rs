//! Two traces compared hop by hop, so that a difference reads as "which
//! flow, which packet, which hop, which field: old -> new" (the reviewed
//! snapshot against a new run), and for L7 which packet's summary or
//! which leg changed. It knows traces; not files or pages.

use super::{Header, Hop, Leg, Packet, Trace};

/// Per-hop differences between a reviewed trace and a new one; empty when
/// they are the same.
pub fn diff(old_yaml: &str, new_yaml: &str) -> Vec<String> {
    if old_yaml.trim_end() == new_yaml.trim_end() {
        return Vec::new();
    }
    let (Ok(old), Ok(new)) = (Trace::from_yaml(old_yaml), Trace::from_yaml(new_yaml)) else {
        return vec![
            "the reviewed snapshot is not a trace of this version: accept the new one".into(),
        ];
    };
    let mut out = Vec::new();
    for of in &old.flows {
        if !new.flows.iter().any(|n| n.step == of.step) {
            out.push(format!("flow {}: gone", of.step));
        }
    }
    for nf in &new.flows {
        let Some(of) = old.flows.iter().find(|o| o.step == nf.step) else {
            out.push(format!(
                "flow {}: new ({} packets)",
                nf.step,
                nf.packets.len()
            ));
            continue;
        };
        let at = format!("flow {}", nf.step);
        if of.sent != nf.sent {
            out.push(format!("{at}: sent: {} -> {}", of.sent, nf.sent));
        }
        if of.result != nf.result {
            out.push(format!("{at}: result: {} -> {}", of.result, nf.result));
        }
        packets(&at, &of.packets, &nf.packets, &mut out);
        legs(&at, &of.legs, &nf.legs, &mut out);
    }
    packets("packets of no flow", &old.other, &new.other, &mut out);
    if old.undecodable != new.undecodable {
        out.push(format!(
            "undecodable frames: {} -> {}",
            old.undecodable, new.undecodable
        ));
    }
    let n = old.control_plane.len().max(new.control_plane.len());
    for i in 0..n {
        let (o, nw) = (old.control_plane.get(i), new.control_plane.get(i));
        if o != nw {
            let show = |x: Option<&String>| x.map_or("(none)".to_string(), |s| s.clone());
            out.push(format!("control plane [{i}]: {} -> {}", show(o), show(nw)));
        }
    }
    let n = old.processes.len().max(new.processes.len());
    for i in 0..n {
        let (o, nw) = (old.processes.get(i), new.processes.get(i));
        if o != nw {
            let show = |x: Option<&String>| x.map_or("(none)".to_string(), |s| s.clone());
            out.push(format!("processes [{i}]: {} -> {}", show(o), show(nw)));
        }
    }
    let names: std::collections::BTreeSet<(&String, &String)> = [&old, &new]
        .iter()
        .flat_map(|t| {
            t.counters
                .iter()
                .flat_map(|(who, m)| m.keys().map(move |k| (who, k)))
        })
        .collect();
    for (who, name) in names {
        let get = |t: &Trace| t.counters.get(who).and_then(|m| m.get(name)).copied();
        let (o, n) = (get(&old), get(&new));
        if o != n {
            let show = |v: Option<u64>| v.map_or("0".to_string(), |v| v.to_string());
            out.push(format!("counter {who} {name}: {} -> {}", show(o), show(n)));
        }
    }
    if out.is_empty() {
        out.push("the traces differ only in form (reformat): accept the new one".into());
    }
    out
}

/// A flow's further legs compared: where each started, what joined it,
/// what the proxy changed, its packets.
fn legs(at: &str, old: &[Leg], new: &[Leg], out: &mut Vec<String>) {
    for i in 0..old.len().max(new.len()) {
        let lat = format!("{at}, leg {}", i + 2);
        match (old.get(i), new.get(i)) {
            (Some(o), None) => out.push(format!("{lat}: gone ({})", o.via)),
            (None, Some(n)) => {
                out.push(format!("{lat}: new ({}, joined by {})", n.via, n.joined_by))
            }
            (Some(o), Some(n)) => {
                if o.via != n.via {
                    out.push(format!("{lat}: {} -> {}", o.via, n.via));
                }
                if o.joined_by != n.joined_by {
                    out.push(format!(
                        "{lat}: joined by {} -> {}",
                        o.joined_by, n.joined_by
                    ));
                }
                if o.changed != n.changed {
                    out.push(format!(
                        "{lat}: changed: {} -> {}",
                        o.changed.join("; "),
                        n.changed.join("; ")
                    ));
                }
                packets(&lat, &o.packets, &n.packets, out);
            }
            (None, None) => {}
        }
    }
}

fn packets(at: &str, old: &[Packet], new: &[Packet], out: &mut Vec<String>) {
    for i in 0..old.len().max(new.len()) {
        match (old.get(i), new.get(i)) {
            (Some(o), None) => out.push(format!("{at}, packet {}: gone ({})", i + 1, o.packet)),
            (None, Some(n)) => out.push(format!(
                "{at}, packet {}: new ({}, {} hops)",
                i + 1,
                n.packet,
                n.hops.len()
            )),
            (Some(o), Some(n)) => {
                let pat = format!("{at}, packet {} ({})", i + 1, n.packet);
                if o.packet != n.packet {
                    out.push(format!("{pat}: was {}", o.packet));
                }
                if o.l7 != n.l7 {
                    let show = |l: &Option<String>| l.clone().unwrap_or_else(|| "(none)".into());
                    out.push(format!("{pat}: l7: {} -> {}", show(&o.l7), show(&n.l7)));
                }
                hops(&pat, &o.hops, &n.hops, out);
                if o.end != n.end {
                    out.push(format!("{pat}: end: {} -> {}", o.end, n.end));
                }
            }
            (None, None) => {}
        }
    }
}

fn hops(at: &str, old: &[Hop], new: &[Hop], out: &mut Vec<String>) {
    for i in 0..old.len().max(new.len()) {
        match (old.get(i), new.get(i)) {
            (Some(o), None) => out.push(format!("{at}, hop {} ({}): gone", i + 1, o.at)),
            (None, Some(n)) => out.push(format!("{at}, hop {} ({}): new: {}", i + 1, n.at, n.hdr)),
            (Some(o), Some(n)) => {
                let hat = format!("{at}, hop {} ({})", i + 1, n.at);
                if o.at != n.at {
                    out.push(format!("{hat}: was at {}", o.at));
                }
                for (field, ov, nv) in fields(&o.hdr, &n.hdr) {
                    out.push(format!("{hat}: {field}: {ov} -> {nv}"));
                }
                if o.changed != n.changed {
                    out.push(format!(
                        "{hat}: changed: {} -> {}",
                        changed_text(o),
                        changed_text(n)
                    ));
                }
            }
            (None, None) => {}
        }
    }
}

fn changed_text(h: &Hop) -> String {
    h.changed
        .as_ref()
        .map_or_else(|| "nothing".to_string(), ToString::to_string)
}

/// Field-level difference of two headers, by the keys of their fields.
fn fields(old: &Header, new: &Header) -> Vec<(String, String, String)> {
    if old == new {
        return Vec::new();
    }
    let parse = |h: &Header| -> Vec<(String, String)> {
        h.fields()
            .iter()
            .filter(|f| !f.key.is_empty() && f.key != ">")
            .map(|f| (f.key.to_string(), f.value().to_string()))
            .collect()
    };
    let (o, n) = (parse(old), parse(new));
    let mut out = Vec::new();
    for (k, nv) in &n {
        match o.iter().find(|(ok, _)| ok == k) {
            Some((_, ov)) if ov != nv => out.push((k.clone(), ov.clone(), nv.clone())),
            None => out.push((k.clone(), "(none)".into(), nv.clone())),
            _ => {}
        }
    }
    for (k, ov) in &o {
        if !n.iter().any(|(nk, _)| nk == k) {
            out.push((k.clone(), ov.clone(), "(none)".into()));
        }
    }
    if out.is_empty() {
        out.push(("headers".into(), old.to_string(), new.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "scenario: s\nflows:\n- step: a\n  sent: tcp\n  result: ok\n  packets:\n  - packet: tcp S 1.1.1.1:1 > 2.2.2.2:2\n    hops:\n    - at: c/eth0 out\n      hdr: 1.1.1.1:1 > 2.2.2.2:2 tcp S seq=0 len=60 ttl=64\n    end: delivered to s\n";

    #[test]
    fn identical_traces_have_no_diff() {
        assert!(diff(T, T).is_empty());
    }

    #[test]
    fn a_rewritten_port_is_named_by_packet_hop_and_field() {
        let new = T.replace("2.2.2.2:2 tcp", "2.2.2.2:3 tcp");
        let d = diff(T, &new);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("flow a, packet 1"), "{}", d[0]);
        assert!(
            d[0].contains("hop 1 (c/eth0 out): dst: 2.2.2.2:2 -> 2.2.2.2:3"),
            "{}",
            d[0]
        );
    }

    #[test]
    fn a_lost_hop_is_reported() {
        let new = T.replace(
            "ttl=64\n    end",
            "ttl=64\n    - at: r/eth0 in\n      hdr: 1.1.1.1:1 > 2.2.2.2:2 tcp S seq=0 len=60 ttl=64\n    end",
        );
        let d = diff(T, &new);
        assert!(
            d.iter().any(|l| l.contains("hop 2 (r/eth0 in): new")),
            "{d:?}"
        );
    }
}
