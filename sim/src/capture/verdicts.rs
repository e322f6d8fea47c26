//! Drop verdicts recorded beside the capture: which packet a host's
//! nftables dropped, in which chain, by which rule.
//!
//! Mechanism: nftables tracing. In each host that runs nftables (a
//! `firewall` script, or a gateway that loads its own table), the run adds
//! one table of its own, `inet hoplab_nftrace`, whose only rules are `meta
//! nftrace set 1` in a prerouting and an output chain at priority -500
//! (before every other chain), and runs `nft monitor trace` inside the host
//! for the length of the capture. The scenario's own rules are not
//! touched. Every traced packet's events name the chain and the rule that
//! decided it; a packet whose last event is `verdict drop` (a rule) or
//! `policy drop` is recorded as a [`Drop`], keyed by fields no hop rewrites
//! before the drop: addresses, IPv4 identification (IPv6 flow label),
//! protocol and ports (ICMP: echo identifier), as the packet entered the
//! host.
//!
//! Where the mechanism is unavailable (no `nft`, the table refused, the
//! monitor never subscribed), the host is listed in
//! [`Verdicts::unavailable`] with the reason, and the trace says so; no
//! drop is ever inferred.
//!
//! This module knows nftables' trace text and namespaces; it does not know
//! traces, flows or scenarios (the trace looks drops up by [`Key`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lab::netns::NetNs;

/// The table the run adds to each traced host.
pub const TRACE_TABLE: &str = "hoplab_nftrace";

const TRACE_SCRIPT: &str = "table inet hoplab_nftrace {\n\
     \tchain pre {\n\t\ttype filter hook prerouting priority -500; policy accept;\n\t\tmeta nftrace set 1\n\t}\n\
     \tchain out {\n\t\ttype filter hook output priority -500; policy accept;\n\t\tmeta nftrace set 1\n\t}\n}\n";

/// What identifies a packet as it entered a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 identification; IPv6 flow label.
    pub ident: u32,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the protocol's number.
    pub proto: String,
    /// Source and destination port; ICMP echo: the identifier twice.
    pub ports: Option<(u16, u16)>,
}

impl Key {
    /// The key of a decoded packet as it entered (or left) a host.
    pub fn of(s: &hoplab_dataplane::wire::Summary) -> Key {
        use hoplab_dataplane::wire::L4;
        let proto = match &s.l4 {
            L4::Tcp { .. } => "tcp".to_string(),
            L4::Udp { .. } => "udp".to_string(),
            L4::Icmp { v6: false, .. } => "icmp".to_string(),
            L4::Icmp { v6: true, .. } => "icmpv6".to_string(),
            L4::Other { proto } => proto.to_string(),
        };
        Key {
            src: s.src,
            dst: s.dst,
            ident: s.ident,
            proto,
            ports: s.ports().or_else(|| s.echo_id().map(|i| (i, i))),
        }
    }
}

/// Where in its host a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Where {
    /// The nftables chain whose rule or policy dropped it (an impaired
    /// link: the interface it left by); shown `in CHAIN`.
    Chain(String),
    /// The host's dataplane process read it from this interface (its TUN)
    /// and dropped it; shown `HOST/IFNAME`, and found only on that hop.
    Iface(String),
    /// The host's net manager dropped the payload of a tunnel datagram;
    /// found only on an encapsulated hop, shown at its interface.
    Tunnel,
    /// The host's kernel freed it as a drop (`skb:kfree_skb`, see
    /// [`super::kernel_drops`]): the device it was on, when known; a TCP
    /// segment's sequence and acknowledgement numbers, which tell apart
    /// segments whose other fields are the same.
    Kernel {
        iface: Option<String>,
        tcp: Option<(u32, u32)>,
    },
}

/// One packet a host dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drop {
    pub host: String,
    pub at: Where,
    /// `nftables FAMILY TABLE`; `impairment a_to_b of links[N]`; `the
    /// gateway`, `the net manager`.
    pub by: String,
    /// The rule's named counter or comment, else its text; `policy drop`;
    /// the dataplane's reason (`table_full`).
    pub why: String,
}

/// The drops of a run, and the hosts where they could not be recorded.
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    drops: HashMap<(String, Key), Drop>,
    /// The kernel's drops ([`Where::Kernel`]), apart: several segments can
    /// share a key, and they never replace a drop recorded otherwise.
    kernel: HashMap<(String, Key), Vec<Drop>>,
    /// The same kernel drops of packets a NAT of their host had rewritten
    /// before the drop, by the key conntrack says they entered with (its
    /// tuple of their direction): looked up after [`Verdicts::kernel`].
    kernel_ct: HashMap<(String, Key), Vec<Drop>>,
    /// The kernel's frees of a copy for another host's MAC address
    /// (`OTHERHOST`: a bridge's flood): no drop while another copy reaches
    /// the packet's owner, the packet's end when none does.
    kernel_flood: HashMap<(String, Key), Vec<Drop>>,
    /// `HOST: REASON` for each host whose drops are not recorded.
    pub unavailable: Vec<String>,
}

impl Verdicts {
    /// The drop of the packet `key` at `host`, if one was recorded.
    pub fn find(&self, host: &str, key: &Key) -> Option<&Drop> {
        self.drops.get(&(host.to_string(), key.clone()))
    }

    /// The kernel's drop of the packet `key` at `host`; for a TCP segment
    /// (`tcp`: its sequence and acknowledgement numbers) only a drop of
    /// that segment.
    /// A drop whose header matches comes first; then one whose packet a
    /// NAT of the host had rewritten, by the header conntrack says it
    /// entered with.
    pub fn find_kernel(&self, host: &str, key: &Key, tcp: Option<(u32, u32)>) -> Option<&Drop> {
        let hk = (host.to_string(), key.clone());
        find_segment(&self.kernel, &hk, tcp).or_else(|| find_segment(&self.kernel_ct, &hk, tcp))
    }

    /// The kernel's free of a flooded copy of the packet `key` at `host`
    /// (see [`Verdicts::add_flooded`]).
    pub fn find_flooded(&self, host: &str, key: &Key, tcp: Option<(u32, u32)>) -> Option<&Drop> {
        find_segment(&self.kernel_flood, &(host.to_string(), key.clone()), tcp)
    }

    /// Record the kernel's free (a [`Where::Kernel`] one) of a copy of a
    /// packet for another host's MAC address: the trace ends the packet
    /// with it only when no copy reached the packet's owner.
    pub fn add_flooded(&mut self, key: Key, drop: Drop) {
        if let Where::Kernel { .. } = drop.at {
            let v = self
                .kernel_flood
                .entry((drop.host.clone(), key))
                .or_default();
            if !v.contains(&drop) {
                v.push(drop);
            }
        }
    }

    /// Record a kernel drop (a [`Where::Kernel`] one) by the key its packet
    /// entered the host with before a NAT there rewrote it (conntrack's
    /// tuple); [`Verdicts::add`] records it by its header.
    pub fn add_kernel_original(&mut self, key: Key, drop: Drop) {
        if let Where::Kernel { .. } = drop.at {
            let v = self.kernel_ct.entry((drop.host.clone(), key)).or_default();
            if !v.contains(&drop) {
                v.push(drop);
            }
        }
    }

    /// Record a drop found by another mechanism (a link impairment, a
    /// dataplane's log, the kernel).
    pub fn add(&mut self, key: Key, drop: Drop) {
        if let Where::Kernel { .. } = drop.at {
            let v = self.kernel.entry((drop.host.clone(), key)).or_default();
            if !v.contains(&drop) {
                v.push(drop);
            }
            return;
        }
        self.drops.insert((drop.host.clone(), key), drop);
    }

    /// The drops recorded (a kernel drop found also by its key before NAT
    /// is counted once).
    pub fn len(&self) -> usize {
        self.drops.len() + self.kernel.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.drops.is_empty()
            && self.kernel.is_empty()
            && self.kernel_ct.is_empty()
            && self.kernel_flood.is_empty()
    }

    /// The first line of [`Verdicts::to_text`].
    pub const TEXT_HEADER: &'static str = "hoplab verdicts 1";

    /// The verdicts as text, to store in a capture (a section comment of
    /// its pcapng) and read back with [`Verdicts::from_text`]: a header
    /// line, then one line per drop (`drop`, host, the key's protocol,
    /// addresses, ident and ports, the place, by, why) and per unavailable
    /// host, fields separated by tabs; drops sorted, so the text is the
    /// same for the same verdicts.
    pub fn to_text(&self) -> String {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        let kernel = (self.kernel.iter()).flat_map(|(hk, v)| v.iter().map(move |d| (hk, d, "")));
        let kernel_ct =
            (self.kernel_ct.iter()).flat_map(|(hk, v)| v.iter().map(move |d| (hk, d, "-ct")));
        let kernel_flood =
            (self.kernel_flood.iter()).flat_map(|(hk, v)| v.iter().map(move |d| (hk, d, "-flood")));
        let mut drops: Vec<String> = (self.drops.iter())
            .map(|(hk, d)| (hk, d, ""))
            .chain(kernel)
            .chain(kernel_ct)
            .chain(kernel_flood)
            .map(|((host, k), d, ct)| {
                let ports = k.ports.map_or("-".into(), |(a, b)| format!("{a}:{b}"));
                let at = match &d.at {
                    Where::Chain(c) => format!("chain:{}", clean(c)),
                    Where::Iface(i) => format!("iface:{}", clean(i)),
                    Where::Tunnel => "tunnel".into(),
                    Where::Kernel { iface, tcp } => format!(
                        "kernel{ct}:{}/{}",
                        iface.as_deref().map_or("-".into(), clean),
                        tcp.map_or("-".into(), |(s, a)| format!("{s},{a}"))
                    ),
                };
                format!(
                    "drop\t{}\t{}\t{}\t{}\t{}\t{ports}\t{at}\t{}\t{}\n",
                    clean(host),
                    clean(&k.proto),
                    k.src,
                    k.dst,
                    k.ident,
                    clean(&d.by),
                    clean(&d.why)
                )
            })
            .collect();
        drops.sort();
        let mut out = format!("{}\n", Self::TEXT_HEADER);
        out.extend(drops);
        for u in &self.unavailable {
            out.push_str(&format!("unavailable\t{}\n", clean(u)));
        }
        out
    }

    /// The first line of each further part of [`Verdicts::to_comments`].
    pub const CONTINUED: &'static str = "hoplab verdicts 1 continued";

    /// Most bytes of one part of [`Verdicts::to_comments`]: a pcapng
    /// option holds at most 65535.
    const PART: usize = 60_000;

    /// [`Verdicts::to_text`] cut at line ends into parts that each fit in
    /// a pcapng comment: the first is headed [`Verdicts::TEXT_HEADER`], the
    /// others [`Verdicts::CONTINUED`]; [`Verdicts::from_comments`] joins
    /// them.
    pub fn to_comments(&self) -> Vec<String> {
        let text = self.to_text();
        let mut lines = text.lines();
        let mut parts = vec![format!("{}\n", lines.next().unwrap_or_default())];
        for l in lines {
            let last = parts.last_mut().expect("a first part");
            if last.len() + l.len() + 1 > Self::PART {
                parts.push(format!("{}\n", Self::CONTINUED));
            }
            let last = parts.last_mut().expect("a part");
            last.push_str(l);
            last.push('\n');
        }
        parts
    }

    /// Verdicts written by [`Verdicts::to_comments`], among `comments` (a
    /// section's); `None` when none is headed [`Verdicts::TEXT_HEADER`].
    pub fn from_comments<'a>(
        comments: impl IntoIterator<Item = &'a str>,
    ) -> Option<Result<Verdicts, String>> {
        let mut text: Option<String> = None;
        for c in comments {
            if c.lines().next() == Some(Self::TEXT_HEADER) {
                text = Some(c.to_string());
            } else if let (Some(t), Some(rest)) = (text.as_mut(), c.strip_prefix(Self::CONTINUED)) {
                t.push_str(rest.trim_start_matches('\n'));
            }
        }
        Self::from_text(&text?)
    }

    /// Verdicts written by [`Verdicts::to_text`]; `None` for a text that
    /// does not start with its header. A line that does not read is an
    /// error naming it.
    pub fn from_text(text: &str) -> Option<Result<Verdicts, String>> {
        let mut lines = text.lines();
        if lines.next()? != Self::TEXT_HEADER {
            return None;
        }
        Some(Self::read_lines(lines))
    }

    fn read_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Verdicts, String> {
        let mut v = Verdicts::default();
        for (n, l) in lines.enumerate() {
            if l.is_empty() {
                continue;
            }
            let f: Vec<&str> = l.split('\t').collect();
            let bad = || format!("verdicts line {}: {l:?}", n + 2);
            match f.as_slice() {
                ["unavailable", text] => v.unavailable.push(text.to_string()),
                ["drop", host, proto, src, dst, ident, ports, at, by, why] => {
                    let ports = match *ports {
                        "-" => None,
                        p => {
                            let (a, b) = p.split_once(':').ok_or_else(bad)?;
                            Some((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
                        }
                    };
                    let key = Key {
                        src: src.parse().map_err(|_| bad())?,
                        dst: dst.parse().map_err(|_| bad())?,
                        ident: ident.parse().map_err(|_| bad())?,
                        proto: proto.to_string(),
                        ports,
                    };
                    let (at, kind) = match at.split_once(':') {
                        Some(("chain", c)) => (Where::Chain(c.into()), ""),
                        Some(("iface", i)) => (Where::Iface(i.into()), ""),
                        Some(("kernel", k)) => (kernel_at(k).ok_or_else(bad)?, ""),
                        Some(("kernel-ct", k)) => (kernel_at(k).ok_or_else(bad)?, "ct"),
                        Some(("kernel-flood", k)) => (kernel_at(k).ok_or_else(bad)?, "flood"),
                        None if *at == "tunnel" => (Where::Tunnel, ""),
                        _ => return Err(bad()),
                    };
                    let drop = Drop {
                        host: host.to_string(),
                        at,
                        by: by.to_string(),
                        why: why.to_string(),
                    };
                    match kind {
                        "ct" => v.add_kernel_original(key, drop),
                        "flood" => v.add_flooded(key, drop),
                        _ => v.add(key, drop),
                    }
                }
                _ => return Err(bad()),
            }
        }
        Ok(v)
    }
}

/// The kernel drop of `m` recorded for `hk` whose TCP numbers are `tcp`.
fn find_segment<'a>(
    m: &'a HashMap<(String, Key), Vec<Drop>>,
    hk: &(String, Key),
    tcp: Option<(u32, u32)>,
) -> Option<&'a Drop> {
    (m.get(hk)?.iter()).find(|d| matches!(&d.at, Where::Kernel { tcp: t, .. } if *t == tcp))
}

/// The place of a kernel drop as [`Verdicts::to_text`] writes it:
/// `IFNAME/SEQ,ACK`, `-` for what is not known.
fn kernel_at(text: &str) -> Option<Where> {
    let (iface, tcp) = text.split_once('/')?;
    let tcp = match tcp {
        "-" => None,
        t => {
            let (s, a) = t.split_once(',')?;
            Some((s.parse().ok()?, a.parse().ok()?))
        }
    };
    Some(Where::Kernel {
        iface: (iface != "-").then(|| iface.to_string()),
        tcp,
    })
}

/// One host's `nft monitor trace`, read line by line.
struct Monitor {
    host: String,
    child: Child,
    parser: Arc<Mutex<Parser>>,
    reader: Option<JoinHandle<()>>,
}

/// The running collectors of a run.
pub struct NftTrace {
    monitors: Vec<Monitor>,
    unavailable: Vec<String>,
}

/// Does the namespace of `pid` have a netlink socket subscribed to the
/// nftables trace group (NETLINK_NETFILTER, group NFNLGRP_NFTRACE = 9)?
fn subscribed(pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")) else {
        return false;
    };
    text.lines().skip(1).any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.len() > 3
            && w[1] == "12"
            && u32::from_str_radix(w[3], 16).is_ok_and(|g| g & (1 << 8) != 0)
    })
}

fn nft_script(ns: &NetNs, script: &str) -> Result<(), String> {
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(script.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the trace table: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn start_one(host: &str, ns: &NetNs) -> Result<Monitor, String> {
    nft_script(ns, TRACE_SCRIPT)?;
    // Line-buffered, so every event is written as it is read.
    let mut child = ns
        .command("stdbuf")
        .args(["-oL", "nft", "monitor", "trace"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("nft monitor trace: {e}"))?;
    let out = child.stdout.take().expect("stdout is piped");
    let parser = Arc::new(Mutex::new(Parser::new(host)));
    let sink = parser.clone();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            sink.lock().expect("parser lock").feed(&l);
        }
    });
    let mut m = Monitor {
        host: host.to_string(),
        child,
        parser,
        reader: Some(reader),
    };
    let t = Instant::now();
    while !subscribed(m.child.id()) {
        if t.elapsed() > Duration::from_secs(5) || matches!(m.child.try_wait(), Ok(Some(_))) {
            m.stop();
            return Err("nft monitor trace did not subscribe to trace events".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(m)
}

impl Monitor {
    fn stop(&mut self) {
        // This monitor is the run's own child: ended by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl NftTrace {
    /// Start tracing in each of `hosts` (name, namespace). A host where
    /// tracing cannot start is listed as unavailable, with why.
    pub fn start(hosts: &[(&str, &NetNs)]) -> NftTrace {
        let mut t = NftTrace {
            monitors: Vec::new(),
            unavailable: Vec::new(),
        };
        for (h, ns) in hosts {
            match start_one(h, ns) {
                Ok(m) => t.monitors.push(m),
                Err(e) => t.unavailable.push(format!("{h}: {e}")),
            }
        }
        t
    }

    /// Stop tracing (once the monitors have been quiet for a moment),
    /// remove the trace tables from `hosts`, and read the drops.
    pub fn finish(mut self, hosts: &[(&str, &NetNs)]) -> Verdicts {
        let t = Instant::now();
        let count = |ms: &[Monitor]| -> usize {
            ms.iter()
                .map(|m| m.parser.lock().expect("parser lock").lines)
                .sum()
        };
        let mut last = count(&self.monitors);
        while t.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(50));
            let now = count(&self.monitors);
            if now == last {
                break;
            }
            last = now;
        }
        let mut v = Verdicts {
            unavailable: std::mem::take(&mut self.unavailable),
            ..Verdicts::default()
        };
        for mut m in self.monitors.drain(..) {
            if let Ok(Some(status)) = m.child.try_wait() {
                v.unavailable.push(format!(
                    "{}: nft monitor trace ended during the capture ({status}): later drops not recorded",
                    m.host
                ));
            }
            m.stop();
            let drops = std::mem::take(&mut m.parser.lock().expect("parser lock").drops);
            for (key, d) in drops {
                v.drops.insert((m.host.clone(), key), d);
            }
        }
        for (h, ns) in hosts {
            let _ = nft_script(ns, &format!("delete table inet {TRACE_TABLE}\n"));
            tracing::trace!("{h}: trace table removed");
        }
        v
    }
}

impl std::ops::Drop for NftTrace {
    /// A run that fails before [`NftTrace::finish`] ends its monitors.
    fn drop(&mut self) {
        for m in &mut self.monitors {
            m.stop();
        }
    }
}

/// The value after `word` in a trace line's packet fields.
fn field<'a>(w: &[&'a str], a: &str, b: &str) -> Option<&'a str> {
    w.windows(3)
        .find(|x| x[0] == a && x[1] == b)
        .map(|x| x[2].trim_matches('"'))
}

/// The key of a `packet:` line's fields.
fn key_of(fields: &str) -> Option<Key> {
    let w: Vec<&str> = fields.split_whitespace().collect();
    let (src, dst, ident, proto) = if let Some(s) = field(&w, "ip", "saddr") {
        (
            s,
            field(&w, "ip", "daddr")?,
            field(&w, "ip", "id")?.parse().ok()?,
            field(&w, "ip", "protocol")?,
        )
    } else {
        (
            field(&w, "ip6", "saddr")?,
            field(&w, "ip6", "daddr")?,
            field(&w, "ip6", "flowlabel").map_or(Some(0), |f| f.parse().ok())?,
            field(&w, "ip6", "nexthdr")?,
        )
    };
    let ports = match proto {
        "tcp" | "udp" => Some((
            field(&w, proto, "sport")?.parse().ok()?,
            field(&w, proto, "dport")?.parse().ok()?,
        )),
        "icmp" | "icmpv6" | "ipv6-icmp" => {
            let id = field(&w, proto, "id").and_then(|i| i.parse().ok());
            id.map(|i| (i, i))
        }
        _ => None,
    };
    Some(Key {
        src: src.parse().ok()?,
        dst: dst.parse().ok()?,
        ident,
        proto: if proto == "ipv6-icmp" {
            "icmpv6"
        } else {
            proto
        }
        .to_string(),
        ports,
    })
}

/// Why a rule dropped: its named counter, its comment, else its text.
fn why(rule: &str) -> String {
    let quoted = |text: &str, after: &str| {
        let i = text.find(after)? + after.len();
        let rest = &text[i..];
        rest.find('"').map(|e| rest[..e].to_string())
    };
    let counter = rule.find("counter ").map(|i| &rule[i..]);
    (counter.and_then(|c| quoted(c, " name \"")))
        .or_else(|| quoted(rule, "comment \""))
        .unwrap_or_else(|| rule.to_string())
}

/// The drops in one host's `nft monitor trace` output, read as it comes
/// (only the drops and each trace id's current packet are kept). Each
/// packet's events share a trace id; the trace table's own chain starts a
/// packet (ids can be reused by later packets).
struct Parser {
    host: String,
    current: HashMap<String, Option<Key>>,
    drops: Vec<(Key, Drop)>,
    /// Lines read, to tell when the monitor has gone quiet.
    lines: usize,
}

impl Parser {
    fn new(host: &str) -> Parser {
        Parser {
            host: host.to_string(),
            current: HashMap::new(),
            drops: Vec::new(),
            lines: 0,
        }
    }

    fn feed(&mut self, l: &str) {
        self.lines += 1;
        let Some(rest) = l.strip_prefix("trace id ") else {
            return;
        };
        let mut it = rest.splitn(5, ' ');
        let (Some(id), Some(family), Some(table), Some(chain), Some(ev)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return;
        };
        if let Some(fields) = ev.strip_prefix("packet: ") {
            if table == TRACE_TABLE || !self.current.contains_key(id) {
                self.current.insert(id.to_string(), key_of(fields));
            }
            return;
        }
        if table == TRACE_TABLE {
            return;
        }
        let reason = if let Some(r) = ev.strip_prefix("rule ") {
            r.trim_end()
                .strip_suffix("(verdict drop)")
                .map(|r| why(r.trim_end()))
        } else if ev.trim_end() == "policy drop" {
            Some("policy drop".to_string())
        } else {
            None
        };
        let (Some(why), Some(Some(key))) = (reason, self.current.get(id)) else {
            return;
        };
        self.drops.push((
            key.clone(),
            Drop {
                host: self.host.clone(),
                at: Where::Chain(chain.to_string()),
                by: format!("nftables {family} {table}"),
                why,
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(host: &str, lines: &[String]) -> Vec<(Key, Drop)> {
        let mut p = Parser::new(host);
        for l in lines {
            p.feed(l);
        }
        p.drops
    }

    /// Thousands of drops (a queue overflow) do not fit in one pcapng
    /// option: they are cut into parts at line ends and joined back.
    #[test]
    fn many_drops_are_cut_into_comments_and_joined_back() {
        let mut v = Verdicts::default();
        for i in 0..3000u32 {
            let key = Key {
                src: "10.0.0.1".parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                ident: i,
                proto: "udp".into(),
                ports: Some((20000 + (i % 1000) as u16, 53)),
            };
            let drop = Drop {
                host: "gw".into(),
                at: Where::Kernel {
                    iface: Some("gw0".into()),
                    tcp: None,
                },
                by: "the kernel".into(),
                why: "FULL_RING".into(),
            };
            v.add(key, drop);
        }
        v.unavailable.push("h: why".into());
        let parts = v.to_comments();
        assert!(parts.len() > 1, "{}", parts.len());
        assert!(parts.iter().all(|p| p.len() <= 65535 && p.ends_with('\n')));
        assert!(parts[1].starts_with(Verdicts::CONTINUED));
        let other = "a section comment";
        let all = std::iter::once(other).chain(parts.iter().map(String::as_str));
        let back = Verdicts::from_comments(all).unwrap().unwrap();
        assert_eq!(back.to_text(), v.to_text());
        assert_eq!(back.len(), 3000);
        assert!(Verdicts::from_comments([other]).is_none());
    }

    #[test]
    fn reads_a_rule_drop_with_its_named_counter() {
        let lines: Vec<String> = [
            "trace id 326b9c65 inet hoplab_nftrace pre packet: iif \"pub\" ether saddr 02:00:00:00:00:01 ip saddr 93.6.1.78 ip daddr 24.0.5.8 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 4242 ip protocol tcp ip length 60 tcp sport 40000 tcp dport 9090 tcp flags == syn tcp window 64240 ",
            "trace id 326b9c65 inet hoplab_nftrace pre rule meta nftrace set 1 (verdict continue)",
            "trace id 326b9c65 inet hoplab_nftrace pre policy accept ",
            "trace id 326b9c65 inet hoplab_gateway input packet: iif \"pub\" ip saddr 93.6.1.78 ip daddr 24.0.5.8 ip id 4242 ip protocol tcp ip length 60 tcp sport 40000 tcp dport 9090",
            "trace id 326b9c65 inet hoplab_gateway input rule iifname \"pub\" counter packets 0 bytes 0 name \"not_exposed\" drop (verdict drop)",
            "trace id 11111111 inet hoplab_nftrace pre packet: iif \"pub\" ip6 saddr 2001:db8::1 ip6 daddr 2001:db8::8 ip6 dscp cs0 ip6 ecn not-ect ip6 hoplimit 63 ip6 flowlabel 77 ip6 nexthdr udp ip6 length 14 udp sport 5 udp dport 6 udp length 14",
            "trace id 11111111 inet x forward policy drop ",
        ]
        .map(String::from)
        .to_vec();
        let d = parse("gw", &lines);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].0.ports, Some((40000, 9090)));
        assert_eq!(d[0].0.ident, 4242);
        assert_eq!(d[0].1.why, "not_exposed");
        assert_eq!(d[0].1.at, Where::Chain("input".into()));
        assert_eq!(d[0].1.by, "nftables inet hoplab_gateway");
        assert_eq!(d[1].0.ident, 77);
        assert_eq!(d[1].0.proto, "udp");
        assert_eq!(d[1].1.why, "policy drop");
    }

    #[test]
    fn accepted_packets_are_not_drops() {
        let lines: Vec<String> = [
            "trace id 1 inet hoplab_nftrace pre packet: ip saddr 10.0.0.1 ip daddr 10.0.0.2 ip id 1 ip protocol udp udp sport 1 udp dport 2",
            "trace id 1 inet t input rule udp dport 2 accept (verdict accept)",
            "trace id 1 inet t input policy accept ",
        ]
        .map(String::from)
        .to_vec();
        assert!(parse("h", &lines).is_empty());
    }
}
