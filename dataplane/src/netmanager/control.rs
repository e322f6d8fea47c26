//! The line protocol between a net manager and its service manager (and
//! between a cluster's service manager and the root), as text: one message
//! per line, fields separated by single spaces. Sans-IO: this module only
//! formats and parses lines; the shells own the sockets.
//!
//! ```text
//! resolve <service-ip>                      net manager → manager
//! resolved <service-ip> [<instance> ...]    manager → net manager
//! failed <service-ip> <reason>              manager → net manager
//! invalidate <service-ip>                   manager → net manager (pushed)
//! ```
//!
//! An instance is one token: comma-separated `key=value` fields,
//! `ns=<ipv4>,ns6=<ipv6|->,node=<ip>,num=<n>,x=<f64>,y=<f64>,ips=<kind>=<ip>/...`
//! with kinds `instance`, `rr` and `closest`. `reason` is `not_found`,
//! `timeout` or `unavailable:<text without spaces>`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cache::ResolveError;
use super::services::{Coords, Instance, Resolution, ServiceIp, ServiceKind};

/// One protocol message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Resolve(IpAddr),
    Resolved(Resolution),
    Failed(IpAddr, ResolveError),
    Invalidate(IpAddr),
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
            Message::Failed(ip, e) => format!("failed {ip} {}", reason_text(e)),
            Message::Resolved(r) => {
                let mut s = format!("resolved {}", r.service_ip);
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
                let mut instances = Vec::new();
                for tok in words.by_ref() {
                    instances.push(parse_instance(tok).ok_or_else(|| bad("bad instance"))?);
                }
                return Ok(Message::Resolved(Resolution::new(ip, instances)));
            }
            _ => return Err(bad("unknown verb")),
        };
        if words.next().is_some() {
            return Err(bad("trailing words"));
        }
        Ok(msg)
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
            Message::Resolved(Resolution::new(ip, vec![])),
            Message::Resolved(Resolution::new(ip, vec![inst(0), inst(1)])),
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
            "resolved 10.30.1.1 ns=10.18.0.1",
            "resolved 10.30.1.1 ns=10.18.0.1,ns6=-,node=10.10.1.1,num=0,x=NaN,y=0,ips=",
            "resolved 10.30.1.1 ns=10.18.0.1,ns6=-,node=10.10.1.1,num=0,x=0,y=0,ips=foo=10.30.1.1",
        ] {
            assert!(Message::parse(l).is_err(), "{l:?}");
        }
    }
}
