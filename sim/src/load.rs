//! The load vocabulary the scenario file, the lab and the trace share
//! (like `crate::values`): how many flows a load step sends, at what
//! concurrency and from which source ports ([`Load`]); what it expects of
//! them, by bounds ([`LoadExpect`]); each flow's payload ([`payload`]); and
//! the summary a load step ends in ([`LoadSummary`]), judged against its
//! expectation ([`LoadSummary::judge`]).
//!
//! Plain values with their serde shapes and their own checks; no socket,
//! no capture. It knows nothing of how flows are sent or traced.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::values::{bad, Invalid};

/// The most flows one load step may send.
pub const MAX_FLOWS: u32 = 60_000;
/// The most flows of one load step in flight at once.
pub const MAX_CONCURRENCY: u32 = 1024;
/// The longest payload a load flow sends.
pub const MAX_PAYLOAD: usize = 1400;

/// A load step's `load`: `flows` flows, at most `concurrency` at once,
/// flow `i` from source port `sport_base + i`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    pub flows: u32,
    #[serde(default = "one")]
    pub concurrency: u32,
    /// Flow `i` sends from `sport_base + i`: fixed, distinct ports.
    pub sport_base: u16,
    /// How many flows (the first ones) keep their per-packet hops in the
    /// trace; the others are counted in the summary.
    #[serde(default = "one")]
    pub sample: u32,
}

fn one() -> u32 {
    1
}

impl Load {
    /// The source port of flow `i` (`i < flows`, checked by [`Load::check`]).
    pub fn sport(&self, i: u32) -> u16 {
        (u32::from(self.sport_base) + i) as u16
    }

    /// The ports this load sends from.
    pub fn ports(&self) -> std::ops::RangeInclusive<u16> {
        self.sport_base..=self.sport(self.flows.saturating_sub(1))
    }

    /// The load's own bounds, errors at `f` (`traffic[3].load`).
    pub fn check(&self, f: &str) -> Result<(), Invalid> {
        if self.flows == 0 || self.flows > MAX_FLOWS {
            return bad(format!("{f}.flows"), format!("give 1 to {MAX_FLOWS} flows"));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return bad(
                format!("{f}.concurrency"),
                format!("give a concurrency of 1 to {MAX_CONCURRENCY}"),
            );
        }
        if self.sport_base == 0 || u32::from(self.sport_base) + self.flows - 1 > 65535 {
            return bad(
                format!("{f}.sport_base"),
                format!(
                    "flows use ports sport_base..sport_base+{}: they must lie in 1..=65535",
                    self.flows - 1
                ),
            );
        }
        if self.sample > self.flows {
            return bad(
                format!("{f}.sample"),
                "at most as many sample flows as flows",
            );
        }
        Ok(())
    }
}

/// The payload of flow `i` of a load step: `len` bytes that differ from
/// every other flow's, `hoplab load FLOW` then a pattern seeded by the
/// flow's number, ending in the Internet checksum (RFC 1071) of what
/// comes before it, so a payload can be verified on its own.
pub fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut p = format!("hoplab load {i:05} ").into_bytes();
    let mut x = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while p.len() < len.saturating_sub(2) {
        // xorshift64: a fixed, flow-seeded pattern.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(b'a' + (x % 26) as u8);
    }
    p.truncate(len.saturating_sub(2));
    let c = hoplab_dataplane::checksum::checksum(0, &p);
    p.extend_from_slice(&c.to_be_bytes());
    p.truncate(len);
    p
}

/// The shortest payload [`payload`] can make (its prefix and checksum).
pub const MIN_PAYLOAD: usize = 20;

/// Does `p` carry a valid trailing checksum (see [`payload`])?
pub fn verify(p: &[u8]) -> bool {
    p.len() >= 2 && {
        let (body, sum) = p.split_at(p.len() - 2);
        hoplab_dataplane::checksum::checksum(0, body).to_be_bytes() == sum
    }
}

/// How many flows must succeed: `all`, or at least a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OkBound {
    #[default]
    All,
    AtLeast(u64),
}

impl<'de> Deserialize<'de> for OkBound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = OkBound;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`all` or a number of flows")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OkBound, E> {
                match v {
                    "all" => Ok(OkBound::All),
                    _ => Err(E::unknown_variant(v, &["all"])),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OkBound, E> {
                Ok(OkBound::AtLeast(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Each of these hosts (HTTP: `X-Served-By` values) answered at least
/// `at_least` flows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    pub each_of: Vec<String>,
    #[serde(default = "one_u64")]
    pub at_least: u64,
    /// The target chooses at random (HAProxy's `balance random`, nftables'
    /// `numgen random`): the trace keeps that the bounds held, not the
    /// counts, which differ run to run.
    #[serde(default)]
    pub random: bool,
}

fn one_u64() -> u64 {
    1
}

/// What a load step expects, by bounds, never by order:
/// `{ok: all, spread: {each_of: [api-0, api-1], at_least: 10}, never: [api-3]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadExpect {
    #[serde(default)]
    pub ok: OkBound,
    #[serde(default)]
    pub spread: Option<Spread>,
    /// No flow answered by any of these.
    #[serde(default)]
    pub never: Vec<String>,
    /// Every flow answered by one and the same of these, chosen by the
    /// target (a session affinity's first pick, random in kube-proxy's
    /// nftables mode): the trace keeps that the bound held, not which one.
    #[serde(default)]
    pub one_of: Vec<String>,
    /// HTTP: the status a flow must get to be ok (default 200).
    #[serde(default)]
    pub status: Option<u16>,
    /// The step overflows a queue on purpose: packets of it dropped by the
    /// kernel at a queue (a TUN's or veth's), and every such drop the
    /// kernel counted on the run's TUNs and veths, and every datagram its
    /// UDP sockets had no room for, shown in the trace. How
    /// many, and which flows fail, differ run to run: when the bounds
    /// hold, the trace keeps that they held, not the counts.
    #[serde(default)]
    pub overflow: bool,
}

/// The kernel's drop reasons at a device's queue, which its `tx_dropped`
/// or `rx_dropped` counts: a TUN's full ring or one no process reads, a
/// TUN's filters, a qdisc's full queue, a CPU's full receive backlog.
pub const QUEUE_REASONS: &[&str] = &[
    "FULL_RING",
    "DEV_READY",
    "TAP_FILTER",
    "TAP_TXFILTER",
    "QDISC_DROP",
    "CPU_BACKLOG",
];

impl fmt::Display for LoadExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ok {
            OkBound::All => f.write_str("every flow ok")?,
            OkBound::AtLeast(n) => write!(f, "at least {n} flows ok")?,
        }
        if let Some(s) = &self.spread {
            write!(
                f,
                ", each of {} at least {}{}",
                s.each_of.join(", "),
                s.at_least,
                if s.random { " (chosen at random)" } else { "" }
            )?;
        }
        if !self.never.is_empty() {
            write!(f, ", never {}", self.never.join(", "))?;
        }
        if !self.one_of.is_empty() {
            write!(
                f,
                ", all by one of {} (chosen at random)",
                self.one_of.join(", ")
            )?;
        }
        if self.overflow {
            f.write_str(", packets dropped by the kernel at a queue")?;
        }
        Ok(())
    }
}

impl LoadExpect {
    /// Whether who answered is the target's random choice (`spread.random`,
    /// `one_of`): then a summary that meets the bounds keeps that they
    /// held, not the counts per host.
    pub fn random(&self) -> bool {
        self.spread.as_ref().is_some_and(|s| s.random) || !self.one_of.is_empty()
    }
}

/// What a load step's flows did: what its clients saw (flows ok and
/// failed, bytes verified, HTTP statuses, failures by reason) and what the
/// capture shows (who answered, where packets died, retransmissions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSummary {
    pub flows: u64,
    pub ok: u64,
    pub failed: u64,
    /// Payload bytes that came back equal to what was sent (HTTP: body
    /// bytes of ok responses).
    pub bytes_verified: u64,
    /// Flows by who answered: the host their first packet was delivered
    /// to (HTTP: the `X-Served-By` header).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answered_by: BTreeMap<String, u64>,
    /// HTTP: responses by status.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub status: BTreeMap<u16, u64>,
    /// Failed flows by what the client saw.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, u64>,
    /// Packets of the step's flows that ended short of an owner, by where
    /// they were last seen.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drops: BTreeMap<String, u64>,
    /// Packets that carry something (data, SYN, FIN, a datagram) captured
    /// again where they were first seen after their first copy was lost
    /// (TCP retransmissions that recovered a loss); a resend of a copy that
    /// was delivered (an answer late on a loaded machine) or a pure ACK
    /// sent twice is not counted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retransmissions: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl LoadSummary {
    /// The summary's one line, e.g. `10000 flows: 10000 ok, 0 failed,
    /// 640000 B verified`.
    pub fn line(&self) -> String {
        format!(
            "{} flows: {} ok, {} failed, {} B verified",
            self.flows, self.ok, self.failed, self.bytes_verified
        )
    }

    /// The kernel's drops at a queue among [`LoadSummary::drops`] (ends
    /// `dropped at HOST/IF by the kernel (REASON)` of a
    /// [`QUEUE_REASONS`] reason), by their end.
    pub fn queue_drops(&self) -> BTreeMap<&str, u64> {
        (self.drops.iter())
            .filter(|(end, _)| {
                QUEUE_REASONS
                    .iter()
                    .any(|r| end.ends_with(&format!(" by the kernel ({r})")))
            })
            .map(|(end, n)| (end.as_str(), *n))
            .collect()
    }

    /// Whether the summary meets `e`: `Err` says the first bound missed.
    pub fn judge(&self, e: &LoadExpect) -> Result<(), String> {
        let need = match e.ok {
            OkBound::All => self.flows,
            OkBound::AtLeast(n) => n,
        };
        if self.ok < need {
            return Err(format!(
                "{} of {} flows ok, expected {need}",
                self.ok, self.flows
            ));
        }
        if let Some(s) = &e.spread {
            for h in &s.each_of {
                let n = self.answered_by.get(h).copied().unwrap_or(0);
                if n < s.at_least {
                    return Err(format!(
                        "{h} answered {n} flows, expected at least {}",
                        s.at_least
                    ));
                }
            }
        }
        for h in &e.never {
            if let Some(n) = self.answered_by.get(h).filter(|n| **n > 0) {
                return Err(format!("{h} answered {n} flows, expected none"));
            }
        }
        if e.overflow && self.queue_drops().is_empty() {
            return Err("no packet dropped by the kernel at a queue".into());
        }
        if !e.one_of.is_empty() {
            let who: Vec<_> = self.answered_by.iter().filter(|(_, n)| **n > 0).collect();
            match who[..] {
                [(h, _)] if e.one_of.contains(h) => {}
                [] => return Err("no flow answered by any host".into()),
                _ => {
                    let list: Vec<_> = who.iter().map(|(h, n)| format!("{h} {n}")).collect();
                    return Err(format!(
                        "answered by {}, expected all by one of {}",
                        list.join(", "),
                        e.one_of.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_differ_and_verify() {
        let a = payload(0, 64);
        let b = payload(1, 64);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(verify(&a) && verify(&b));
        let mut c = a.clone();
        c[20] ^= 1;
        assert!(!verify(&c));
        assert_eq!(payload(7, MIN_PAYLOAD).len(), MIN_PAYLOAD);
        assert!(verify(&payload(7, MIN_PAYLOAD)));
    }

    #[test]
    fn bounds_are_judged() {
        let e: LoadExpect =
            serde_yaml::from_str("{ok: all, spread: {each_of: [a, b], at_least: 2}, never: [c]}")
                .unwrap();
        let mut s = LoadSummary {
            flows: 4,
            ok: 4,
            answered_by: [("a".into(), 2), ("b".into(), 2)].into(),
            ..LoadSummary::default()
        };
        assert_eq!(s.judge(&e), Ok(()));
        s.answered_by.insert("c".into(), 1);
        assert!(s.judge(&e).unwrap_err().contains("c answered 1"));
        s.answered_by.remove("c");
        s.ok = 3;
        assert!(s.judge(&e).unwrap_err().contains("3 of 4"));
        let e: LoadExpect = serde_yaml::from_str("{ok: 3}").unwrap();
        assert_eq!(s.judge(&e), Ok(()));
    }

    #[test]
    fn one_of_holds_only_for_a_single_listed_host() {
        let e: LoadExpect = serde_yaml::from_str("{one_of: [a, b]}").unwrap();
        assert!(e.random());
        let mut s = LoadSummary {
            flows: 3,
            ok: 3,
            answered_by: [("b".into(), 3)].into(),
            ..LoadSummary::default()
        };
        assert_eq!(s.judge(&e), Ok(()));
        s.answered_by = [("a".into(), 1), ("b".into(), 2)].into();
        let why = s.judge(&e).unwrap_err();
        assert!(why.contains("answered by a 1, b 2"), "{why}");
        s.answered_by = [("c".into(), 3)].into();
        assert!(s.judge(&e).unwrap_err().contains("answered by c 3"));
        s.answered_by.clear();
        assert!(s.judge(&e).unwrap_err().contains("no flow answered"));
        assert!(e
            .to_string()
            .contains("all by one of a, b (chosen at random)"));
    }

    #[test]
    fn loads_are_checked() {
        let l = |flows, sport_base| Load {
            flows,
            concurrency: 1,
            sport_base,
            sample: 1,
        };
        assert!(l(10, 20000).check("l").is_ok());
        assert_eq!(l(10, 20000).ports(), 20000..=20009);
        assert_eq!(l(0, 20000).check("l").unwrap_err().field, "l.flows");
        assert_eq!(l(100, 65500).check("l").unwrap_err().field, "l.sport_base");
    }
}
