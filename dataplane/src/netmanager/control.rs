//! The line protocol between a net manager and its service manager (and
//! between a cluster's service manager and the root), as text: one message
//! per line, fields separated by single spaces. Sans-IO: this module only
//! formats and parses lines, and keeps the two sides' bookkeeping of
//! versions ([`Held`], [`Versions`]); the shells own the sockets.
//!
//! ```text
//! resolve <service-ip>                           net manager → manager
//! resolved <service-ip> v=<n> [<instance> ...]   manager → net manager
//! failed <service-ip> <reason>                   manager → net manager
//! invalidate <service-ip>                        manager → net manager (pushed)
//! invalidated <service-ip>                       net manager → manager (acknowledgement)
//! sync <service-ip> <n>                          net manager → manager (after a reconnection)
//! synced <node-ip>                               net manager → manager (end of the sync)
//! ```
//!
//! An instance is one token: comma-separated `key=value` fields,
//! `ns=<ipv4>,ns6=<ipv6|->,node=<ip>,num=<n>,x=<f64>,y=<f64>,ips=<kind>=<ip>/...`
//! with kinds `instance`, `rr` and `closest`. `reason` is `not_found`,
//! `timeout` or `unavailable:<text without spaces>`.
//!
//! **Versions.** The manager keeps a version per service IP (from 1),
//! raised each time the service's resolution may have changed (an
//! invalidation, an instance moved); `resolved` carries it (`v=0`, or no
//! `v=` token, means unknown). A net manager acknowledges each
//! `invalidate` once its resolution is dropped (`invalidated`), so the
//! manager knows when the next packet for the service will ask again.
//! Invalidations pushed while a net manager was disconnected are lost with
//! the connection: after reconnecting, the net manager first sends one
//! `sync` per service IP it was told about (with the version it was told,
//! [`Held`]), then `synced` with its node's address; the manager answers
//! each `sync` whose version is not the current one with `invalidate`
//! ([`Versions::on_sync`]), and takes the others as interests again. The
//! manager reads lines in order, so these invalidations come before the
//! answer to any query sent after the sync.
//!
//! Knows no socket, clock or cache: the shells carry the lines, the core
//! applies what they say.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cache::ResolveError;
use super::services::{Coords, Instance, Resolution, ServiceIp, ServiceKind};

/// A service's version at its manager (see the module documentation); 0
/// is unknown.
pub type Version = u64;

/// One protocol message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Resolve(IpAddr),
    Resolved(Resolution, Version),
    Failed(IpAddr, ResolveError),
    Invalidate(IpAddr),
    /// The acknowledgement of an [`Message::Invalidate`]: the resolution
    /// is dropped.
    Invalidated(IpAddr),
    /// After a reconnection: the net manager was told this version.
    Sync(IpAddr, Version),
    /// The end of a sync; the node's underlay address.
    Synced(IpAddr),
}

/// A line that is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad control line {line:?}: {why}")]
pub struct BadLine {
    pub line: String,
    pub why: &'static str,
}

fn kind_name(k: ServiceKind) -> &'static str {
    match k {
        ServiceKind::Instance => "instance",
        ServiceKind::RoundRobin => "rr",
        ServiceKind::Closest => "closest",
    }
}

fn kind_from_name(s: &str) -> Option<ServiceKind> {
    Some(match s {
        "instance" => ServiceKind::Instance,
        "rr" => ServiceKind::RoundRobin,
        "closest" => ServiceKind::Closest,
        _ => return None,
    })
}

fn reason_text(e: &ResolveError) -> String {
    match e {
        ResolveError::NotFound => "not_found".into(),
        ResolveError::Timeout => "timeout".into(),
        ResolveError::Unavailable(t) => {
            let t: String = t
                .chars()
                .map(|c| if c.is_whitespace() { '_' } else { c })
                .collect();
            format!("unavailable:{t}")
        }
    }
}

fn instance_token(i: &Instance, out: &mut String) {
    let ns6 = i.ns_ip6.map_or_else(|| "-".to_string(), |a| a.to_string());
    let _ = write!(
        out,
        "ns={},ns6={ns6},node={},num={},x={},y={},ips=",
        i.ns_ip, i.node, i.instance_number, i.coords.x, i.coords.y
    );
    for (n, s) in i.service_ips.iter().enumerate() {
        if n > 0 {
            out.push('/');
        }
        let _ = write!(out, "{}={}", kind_name(s.kind), s.addr);
    }
}

impl Message {
    /// The message as one line, without the newline.
    pub fn to_line(&self) -> String {
        match self {
            Message::Resolve(ip) => format!("resolve {ip}"),
            Message::Invalidate(ip) => format!("invalidate {ip}"),
            Message::Invalidated(ip) => format!("invalidated {ip}"),
            Message::Sync(ip, v) => format!("sync {ip} {v}"),
            Message::Synced(node) => format!("synced {node}"),
            Message::Failed(ip, e) => format!("failed {ip} {}", reason_text(e)),
            Message::Resolved(r, v) => {
                let mut s = format!("resolved {} v={v}", r.service_ip);
                for i in &r.instances {
                    s.push(' ');
                    instance_token(i, &mut s);
                }
                s
            }
        }
    }

    /// Parses one line (a trailing `\n` or `\r\n` is ignored).
    pub fn parse(line: &str) -> Result<Message, BadLine> {
        let bad = |why| BadLine {
            line: line.to_string(),
            why,
        };
        let mut words = line.trim_end_matches(['\r', '\n']).split(' ');
        let verb = words.next().unwrap_or_default();
        let ip: IpAddr = words
            .next()
            .ok_or_else(|| bad("missing service IP"))?
            .parse()
            .map_err(|_| bad("bad service IP"))?;
        let msg = match verb {
            "resolve" => Message::Resolve(ip),
            "invalidate" => Message::Invalidate(ip),
            "invalidated" => Message::Invalidated(ip),
            "synced" => Message::Synced(ip),
            "sync" => {
                let v = words.next().ok_or_else(|| bad("missing version"))?;
                Message::Sync(ip, v.parse().map_err(|_| bad("bad version"))?)
            }
            "failed" => {
                let r = words.next().ok_or_else(|| bad("missing reason"))?;
                let e = match r {
                    "not_found" => ResolveError::NotFound,
                    "timeout" => ResolveError::Timeout,
                    _ => match r.strip_prefix("unavailable:") {
                        Some(t) => ResolveError::Unavailable(t.to_string()),
                        None => return Err(bad("unknown reason")),
                    },
                };
                Message::Failed(ip, e)
            }
            "resolved" => {
                let mut words = words.peekable();
                let version = match words.peek().and_then(|w| w.strip_prefix("v=")) {
                    Some(v) => {
                        let v = v.parse().map_err(|_| bad("bad version"))?;
                        words.next();
                        v
                    }
                    None => 0,
                };
                let mut instances = Vec::new();
                for tok in words {
                    instances.push(parse_instance(tok).ok_or_else(|| bad("bad instance"))?);
                }
                return Ok(Message::Resolved(Resolution::new(ip, instances), version));
            }
            _ => return Err(bad("unknown verb")),
        };
        if words.next().is_some() {
            return Err(bad("trailing words"));
        }
        Ok(msg)
    }
}

/// The net manager's side of the versions: what it was told of each
/// service IP, so that it can ask, after a reconnection, whether that is
/// still current. Fed every message read from the manager; an entry goes
/// with the invalidation that drops its resolution. Entries of
/// resolutions the cache dropped by itself (TTL) stay: syncing them is
/// harmless (an `invalidate` of what is not cached is acknowledged all
/// the same), and there is one per service IP at most.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held {
    versions: BTreeMap<IpAddr, Version>,
}

impl Held {
    /// Notes what `m` (read from the manager) tells.
    pub fn on_message(&mut self, m: &Message) {
        match m {
            Message::Resolved(r, v) => {
                self.versions.insert(r.service_ip, *v);
            }
            Message::Invalidate(ip) => {
                self.versions.remove(ip);
            }
            _ => {}
        }
    }

    /// The lines a net manager on node `node` sends first on a new
    /// connection after losing one: a `sync` per service IP, in address
    /// order, then `synced`.
    pub fn sync(&self, node: IpAddr) -> Vec<Message> {
        self.versions
            .iter()
            .map(|(ip, v)| Message::Sync(*ip, *v))
            .chain(std::iter::once(Message::Synced(node)))
            .collect()
    }

    /// Service IPs held.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

/// The manager's side of the versions: the current version of every
/// service IP (1 until the first [`Versions::bump`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Versions {
    current: BTreeMap<IpAddr, Version>,
}

impl Versions {
    /// The version of `ip` now.
    pub fn current(&self, ip: IpAddr) -> Version {
        self.current.get(&ip).copied().unwrap_or(1)
    }

    /// The resolution of `ip` may have changed: its version goes up.
    /// Returns the new version.
    pub fn bump(&mut self, ip: IpAddr) -> Version {
        let v = self.current(ip) + 1;
        self.current.insert(ip, v);
        v
    }

    /// The answer to `sync <ip> <held>`: `invalidate` when what the net
    /// manager holds is not current (it missed a change), else nothing
    /// (the manager takes the service IP as its interest again).
    pub fn on_sync(&self, ip: IpAddr, held: Version) -> Option<Message> {
        (held != self.current(ip)).then_some(Message::Invalidate(ip))
    }
}

fn parse_instance(tok: &str) -> Option<Instance> {
    let (mut ns, mut ns6, mut node, mut num, mut x, mut y, mut ips) =
        (None, None, None, None, None, None, None);
    for field in tok.split(',') {
        let (k, v) = field.split_once('=')?;
        match k {
            "ns" => ns = Some(v.parse::<Ipv4Addr>().ok()?),
            "ns6" => {
                ns6 = Some(match v {
                    "-" => None,
                    _ => Some(v.parse::<Ipv6Addr>().ok()?),
                })
            }
            "node" => node = Some(v.parse::<IpAddr>().ok()?),
            "num" => num = Some(v.parse::<u32>().ok()?),
            "x" => x = Some(v.parse::<f64>().ok().filter(|f| f.is_finite())?),
            "y" => y = Some(v.parse::<f64>().ok().filter(|f| f.is_finite())?),
            "ips" => {
                let mut list = Vec::new();
                for s in v.split('/').filter(|s| !s.is_empty()) {
                    let (kind, addr) = s.split_once('=')?;
                    list.push(ServiceIp {
                        kind: kind_from_name(kind)?,
                        addr: addr.parse().ok()?,
                    });
                }
                ips = Some(list);
            }
            _ => return None,
        }
    }
    Some(Instance {
        ns_ip: ns?,
        ns_ip6: ns6?,
        node: node?,
        instance_number: num?,
        coords: Coords::new(x?, y?),
        service_ips: ips?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(n: u32) -> Instance {
        Instance {
            ns_ip: Ipv4Addr::new(10, 18, 0, 1 + n as u8),
            ns_ip6: (n == 0).then(|| "fd18::1".parse().unwrap()),
            node: "10.10.1.1".parse().unwrap(),
            instance_number: n,
            coords: Coords::new(1.5, -2.0),
            service_ips: vec![
                ServiceIp {
                    kind: ServiceKind::RoundRobin,
                    addr: "10.30.1.1".parse().unwrap(),
                },
                ServiceIp {
                    kind: ServiceKind::Closest,
                    addr: "fdff:1000::1:2".parse().unwrap(),
                },
            ],
        }
    }

    #[test]
    fn every_message_round_trips() {
        let ip: IpAddr = "10.30.1.1".parse().unwrap();
        for m in [
            Message::Resolve(ip),
            Message::Invalidate("fdff:2000::1".parse().unwrap()),
            Message::Failed(ip, ResolveError::NotFound),
            Message::Failed(ip, ResolveError::Timeout),
            Message::Failed(ip, ResolveError::Unavailable("root_down".into())),
            Message::Invalidated(ip),
            Message::Sync(ip, 7),
            Message::Synced("10.10.0.2".parse().unwrap()),
            Message::Resolved(Resolution::new(ip, vec![]), 1),
            Message::Resolved(Resolution::new(ip, vec![inst(0), inst(1)]), 3),
        ] {
            let line = m.to_line();
            assert!(!line.contains('\n'));
            assert_eq!(Message::parse(&format!("{line}\n")).unwrap(), m, "{line}");
        }
    }

    #[test]
    fn bad_lines_are_errors() {
        for l in [
            "",
            "resolve",
            "resolve 10.30.1",
            "hello 10.30.1.1",
            "resolve 10.30.1.1 extra",
            "failed 10.30.1.1",
            "failed 10.30.1.1 why",
            "sync 10.30.1.1",
            "sync 10.30.1.1 x",
            "synced 10.10.0.2 extra",
            "resolved 10.30.1.1 v=x",
            "resolved 10.30.1.1 ns=10.18.0.1",
            "resolved 10.30.1.1 ns=10.18.0.1,ns6=-,node=10.10.1.1,num=0,x=NaN,y=0,ips=",
            "resolved 10.30.1.1 ns=10.18.0.1,ns6=-,node=10.10.1.1,num=0,x=0,y=0,ips=foo=10.30.1.1",
        ] {
            assert!(Message::parse(l).is_err(), "{l:?}");
        }
    }

    /// An invalidation pushed while the net manager was disconnected is
    /// lost with the connection; the sync after the reconnection catches
    /// it: the stale resolution is dropped and the next packet queries.
    #[test]
    fn an_invalidation_missed_in_an_outage_is_caught_by_the_sync() {
        use crate::netmanager::cache::{CacheConfig, Lookup, ResolutionCache};
        use crate::Millis;
        let (svc, other): (IpAddr, IpAddr) =
            ("10.30.1.1".parse().unwrap(), "10.30.2.1".parse().unwrap());
        let node: IpAddr = "10.10.0.2".parse().unwrap();
        let (mut mgr, mut held) = (Versions::default(), Held::default());
        let mut cache = ResolutionCache::new(CacheConfig::default());
        // Both services resolved, as the lines carry them.
        for ip in [svc, other] {
            assert_eq!(cache.lookup(Millis(0), ip), Lookup::Miss);
            let line = Message::Resolved(Resolution::new(ip, vec![inst(0)]), mgr.current(ip));
            let m = Message::parse(&line.to_line()).unwrap();
            held.on_message(&m);
            let Message::Resolved(r, _) = m else {
                unreachable!()
            };
            cache.on_resolution(Millis(1), ip, Ok(r));
        }
        // The outage: `svc` changes; the `invalidate` reaches nobody.
        mgr.bump(svc);
        assert!(matches!(cache.lookup(Millis(2), svc), Lookup::Hit(_)));
        // The reconnection: the sync, answered line by line.
        let sync = held.sync(node);
        assert_eq!(
            sync.iter().map(Message::to_line).collect::<Vec<_>>(),
            ["sync 10.30.1.1 1", "sync 10.30.2.1 1", "synced 10.10.0.2"]
        );
        let mut acks = Vec::new();
        for m in sync {
            let Message::Sync(ip, v) = Message::parse(&m.to_line()).unwrap() else {
                continue;
            };
            if let Some(answer) = mgr.on_sync(ip, v) {
                held.on_message(&answer);
                if let Message::Invalidate(ip) = answer {
                    cache.invalidate(ip);
                    acks.push(Message::Invalidated(ip));
                }
            }
        }
        assert_eq!(acks, [Message::Invalidated(svc)]);
        assert_eq!(
            cache.lookup(Millis(3), svc),
            Lookup::Miss,
            "stale resolution used"
        );
        assert!(matches!(cache.lookup(Millis(3), other), Lookup::Hit(_)));
        // What was dropped is not synced again; an unknown version is stale.
        assert_eq!(
            held.sync(node),
            [Message::Sync(other, 1), Message::Synced(node)]
        );
        assert_eq!(mgr.on_sync(other, 0), Some(Message::Invalidate(other)));
        assert_eq!(mgr.on_sync(other, 1), None);
    }
}
