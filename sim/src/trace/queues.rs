//! A load step that overflows a queue on purpose (`expect.overflow`),
//! settled once the run has read the kernel's interface counters. Every
//! drop the kernel counted on the run's TUNs and veths (`IF.tx_dropped`,
//! `IF.rx_dropped` under `HOST/interfaces`) must be in the trace as a
//! kernel drop of a queue reason ([`crate::load::QUEUE_REASONS`]) at that
//! interface: the packets' ends and the load summaries' `drops`. When the
//! two agree and the step's bounds held, the counts, which differ run to
//! run, leave the trace (the step's summary and those counters; the run's
//! `kernel-drops.txt` keeps every one) and the step's result says what
//! held; when they disagree, the step fails naming both counts. The same
//! holds for each host's UDP sockets: the datagrams its kernel counted
//! as dropped for a full receive buffer (`udp.RcvbufErrors` under
//! `HOST/interfaces`) must be in the trace as its kernel's drops for that
//! reason ([`SOCKET_REASONS`]), wherever in the host.
//!
//! It knows the trace and the counters' names, not how either was made.

use std::collections::BTreeMap;

use super::{End, StepResult, Trace};
use crate::capture::kernel_drops::BY;
use crate::load::{LoadExpect, QUEUE_REASONS};

/// `HOST/IF` (or `HOST udp sockets`) → drops.
type PerIface = BTreeMap<String, u64>;

/// The kernel's reasons for dropping a datagram a UDP socket had no room
/// for, which it counts as `RcvbufErrors`.
pub const SOCKET_REASONS: &[&str] = &["SOCKET_RCVBUFF", "PROTO_MEM"];

/// The key of a host's UDP sockets' drops.
fn sockets(host: &str) -> String {
    format!("{host} udp sockets")
}

/// The kernel's queue drops the trace shows, by `HOST/IF`.
fn shown(tr: &Trace) -> PerIface {
    let mut out = PerIface::new();
    let mut count = |end: &End, n: u64| {
        if let End::Dropped {
            host,
            at,
            by,
            why,
            iface: true,
        } = end
        {
            if by == BY && QUEUE_REASONS.contains(&why.as_str()) {
                *out.entry(format!("{host}/{at}")).or_default() += n;
            }
        }
        if let End::Dropped { host, by, why, .. } = end {
            if by == BY && SOCKET_REASONS.contains(&why.as_str()) {
                *out.entry(sockets(host)).or_default() += n;
            }
        }
    };
    for f in &tr.flows {
        for p in &f.packets {
            count(&p.end, 1);
        }
        for (end, n) in f.load.iter().flat_map(|l| &l.drops) {
            if let Ok(e) = end.parse::<End>() {
                count(&e, *n);
            }
        }
    }
    for p in &tr.other {
        count(&p.end, 1);
    }
    out
}

/// The kernel's drops its interface counters counted, by `HOST/IF`.
fn counted(tr: &Trace) -> PerIface {
    let mut out = PerIface::new();
    for (k, m) in &tr.counters {
        let Some(host) = k.strip_suffix("/interfaces") else {
            continue;
        };
        for (name, n) in m {
            match name.rsplit_once('.') {
                Some((i, "tx_dropped" | "rx_dropped")) => {
                    *out.entry(format!("{host}/{i}")).or_default() += n;
                }
                Some(("udp", "RcvbufErrors")) => *out.entry(sockets(host)).or_default() += n,
                _ => {}
            }
        }
    }
    out
}

fn list(m: &PerIface) -> String {
    if m.is_empty() {
        return "none".into();
    }
    let v: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
    v.join(", ")
}

/// Settle the steps of `overflow` (name, expectation) in `tr`, whose
/// counters are read: see the module's doc.
pub fn settle(tr: &mut Trace, overflow: &[(String, LoadExpect)]) {
    if overflow.is_empty() {
        return;
    }
    let (shown, counted) = (shown(tr), counted(tr));
    let agree = shown == counted;
    for f in &mut tr.flows {
        let Some((_, expect)) = overflow.iter().find(|(n, _)| *n == f.step) else {
            continue;
        };
        if !matches!(f.result, StepResult::Ok(_)) {
            continue;
        }
        let Some(sum) = &f.load else { continue };
        if !agree {
            f.result = StepResult::Failed(Some(format!(
                "expected every drop the kernel counted on the run's TUNs, veths and UDP \
                 sockets shown: counted {}, shown {}",
                list(&counted),
                list(&shown)
            )));
            continue;
        }
        let mut reasons: Vec<&str> = (sum.queue_drops().keys())
            .filter_map(|e| e.rsplit_once(" (")?.1.strip_suffix(')'))
            .collect();
        reasons.sort_unstable();
        reasons.dedup();
        f.result = StepResult::Ok(Some(format!(
            "{} flows; {expect} ({}), every drop the kernel counted on the run's \
             TUNs, veths and UDP sockets shown (counts differ run to run: \
             kernel-drops.txt)",
            sum.flows,
            reasons.join(", ")
        )));
        f.load = None;
    }
    if agree {
        for (k, m) in &mut tr.counters {
            if k.ends_with("/interfaces") {
                m.retain(|name, _| {
                    !matches!(
                        name.rsplit_once('.'),
                        Some((_, "tx_dropped" | "rx_dropped") | ("udp", "RcvbufErrors"))
                    )
                });
            }
        }
        tr.counters.retain(|_, m| !m.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadSummary;

    fn trace(drops: u64, counted: u64) -> Trace {
        let sum = LoadSummary {
            flows: 10,
            ok: 10 - drops,
            failed: drops,
            drops: [(
                "dropped at n2/nm0 by the kernel (FULL_RING)".to_string(),
                drops,
            )]
            .into(),
            ..LoadSummary::default()
        };
        let yaml =
            "scenario: t\nflows:\n- step: burst\n  sent: x\n  result: 'ok: x'\n  packets: []\n";
        let mut tr = Trace::from_yaml(yaml).unwrap();
        tr.flows[0].load = Some(sum);
        let c = [
            ("nm0.tx_dropped".to_string(), counted),
            ("udp.SndbufErrors".to_string(), 1),
        ];
        tr.counters.insert("n2/interfaces".into(), c.into());
        tr
    }

    fn expect() -> Vec<(String, LoadExpect)> {
        let e: LoadExpect = serde_yaml::from_str("{ok: 1, overflow: true}").unwrap();
        vec![("burst".into(), e)]
    }

    /// Counted and shown agree: the counts leave the trace, the result
    /// says what held.
    #[test]
    fn agreeing_counts_leave_the_trace() {
        let mut tr = trace(7, 7);
        settle(&mut tr, &expect());
        let f = &tr.flows[0];
        assert_eq!(f.load, None);
        assert_eq!(
            f.result.to_string(),
            "ok: 10 flows; at least 1 flows ok, packets dropped by the kernel at a queue \
             (FULL_RING), every drop the kernel counted on the run's TUNs, veths and UDP sockets shown \
             (counts differ run to run: kernel-drops.txt)"
        );
        assert_eq!(
            tr.counters["n2/interfaces"],
            [("udp.SndbufErrors".to_string(), 1)].into()
        );
    }

    /// A drop the kernel counted that the trace does not show fails the
    /// step, with both counts; a step without `overflow` is left alone.
    #[test]
    fn a_drop_not_shown_fails_the_step() {
        let mut tr = trace(6, 7);
        settle(&mut tr, &expect());
        assert_eq!(
            tr.flows[0].result.to_string(),
            "FAILED: expected every drop the kernel counted on the run's TUNs, veths and UDP \
             sockets shown: counted n2/nm0 7, shown n2/nm0 6"
        );
        assert!(tr.flows[0].load.is_some());
        assert_eq!(tr.counters["n2/interfaces"]["nm0.tx_dropped"], 7);
        let mut tr = trace(6, 7);
        settle(&mut tr, &[]);
        assert_eq!(tr.flows[0].result.to_string(), "ok: x");
    }

    /// A host's UDP sockets' buffer drops are compared too: shown as its
    /// kernel's drops anywhere in the host, they leave the counters; one
    /// counted and not shown fails the step.
    #[test]
    fn socket_buffer_drops_are_compared_per_host() {
        let mut tr = trace(7, 7);
        let m = tr.counters.get_mut("n2/interfaces").unwrap();
        m.insert("udp.RcvbufErrors".into(), 3);
        let mut shown = tr.clone();
        let drops = &mut shown.flows[0].load.as_mut().unwrap().drops;
        drops.insert("dropped at n2 by the kernel (SOCKET_RCVBUFF)".into(), 2);
        drops.insert("dropped at n2/eth0 by the kernel (PROTO_MEM)".into(), 1);
        settle(&mut shown, &expect());
        assert!(matches!(shown.flows[0].result, StepResult::Ok(_)));
        assert!(!shown.counters["n2/interfaces"].contains_key("udp.RcvbufErrors"));
        settle(&mut tr, &expect());
        assert_eq!(
            tr.flows[0].result.to_string(),
            "FAILED: expected every drop the kernel counted on the run's TUNs, veths and UDP \
             sockets shown: counted n2 udp sockets 3, n2/nm0 7, shown n2/nm0 7"
        );
    }
}
