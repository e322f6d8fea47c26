//! DNS for scenarios: the built-in responder (`hoplab __dns --port 53
//! --record NAME=ADDR ...`, a real process in its host that answers A and
//! AAAA queries from its records and NXDOMAIN for any other name), the
//! query a step sends to its host's resolver before it dials a name, the
//! answer read back, and the one-line summary the trace shows beside a
//! DNS hop.
//!
//! Only the wire format of one question and its answers (RFC 1035, no
//! compression when writing, pointers followed when reading): no recursion,
//! no caching, no EDNS, no TCP. It knows nothing of the lab or the trace.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use serde::Deserialize;

/// A built-in DNS responder as a scenario writes it (a process's `dns`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsServer {
    /// UDP port (default 53).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Name -> address: an A record (IPv4) or an AAAA record (IPv6).
    pub records: BTreeMap<String, IpAddr>,
}

fn default_port() -> u16 {
    53
}

impl DnsServer {
    /// The arguments of `hoplab __dns`.
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec!["--port".to_string(), self.port.to_string()];
        for (n, a) in &self.records {
            v.extend(["--record".to_string(), format!("{}={a}", canonical(n))]);
        }
        v
    }
}

/// Errors of the DNS wire format and of the responder.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("__dns: {0}")]
    Args(String),
    #[error("__dns: bind UDP port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("DNS message too short or malformed")]
    Malformed,
    #[error("`{0}` is not a DNS name (labels of 1-63 bytes, at most 253 in all)")]
    BadName(String),
}

/// Record types hoplab asks and answers.
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
/// Response codes.
const RCODE_NXDOMAIN: u8 = 3;
/// The answers' TTL: fixed, so every run's answer has the same bytes.
const TTL: u32 = 300;

/// A name as compared: lower case, without a trailing dot.
fn canonical(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

fn write_name(out: &mut Vec<u8>, name: &str) -> Result<(), DnsError> {
    let n = canonical(name);
    if n.is_empty() || n.len() > 253 {
        return Err(DnsError::BadName(name.to_string()));
    }
    for label in n.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(DnsError::BadName(name.to_string()));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(())
}

/// Read a name at `pos`; returns it and the position after it (pointers
/// followed, at most 16 of them).
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), DnsError> {
    let mut labels: Vec<String> = Vec::new();
    let mut after = None;
    for _ in 0..128 {
        let len = *msg.get(pos).ok_or(DnsError::Malformed)? as usize;
        match len {
            0 => {
                return Ok((labels.join("."), after.unwrap_or(pos + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let lo = *msg.get(pos + 1).ok_or(DnsError::Malformed)? as usize;
                after.get_or_insert(pos + 2);
                pos = ((l & 0x3f) << 8) | lo;
            }
            l if l <= 63 => {
                let label = msg.get(pos + 1..pos + 1 + l).ok_or(DnsError::Malformed)?;
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                pos += 1 + l;
            }
            _ => return Err(DnsError::Malformed),
        }
    }
    Err(DnsError::Malformed)
}

fn u16_at(msg: &[u8], pos: usize) -> Result<u16, DnsError> {
    let b = msg.get(pos..pos + 2).ok_or(DnsError::Malformed)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

/// A query for `name`, type A (`v6`: AAAA), with this id, recursion desired.
pub fn query(id: u16, name: &str, v6: bool) -> Result<Vec<u8>, DnsError> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    write_name(&mut q, name)?;
    let ty = if v6 { TYPE_AAAA } else { TYPE_A };
    q.extend_from_slice(&ty.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

/// A message's header and its question.
struct Question {
    id: u16,
    response: bool,
    rcode: u8,
    answers: u16,
    name: String,
    qtype: u16,
    /// Where the question ends (the first answer starts).
    end: usize,
}

fn question(msg: &[u8]) -> Result<Question, DnsError> {
    if msg.len() < 12 || u16_at(msg, 4)? != 1 {
        return Err(DnsError::Malformed);
    }
    let (name, pos) = read_name(msg, 12)?;
    Ok(Question {
        id: u16_at(msg, 0)?,
        response: msg[2] & 0x80 != 0,
        rcode: msg[3] & 0x0f,
        answers: u16_at(msg, 6)?,
        name,
        qtype: u16_at(msg, pos)?,
        end: pos + 4,
    })
}

/// What a response says about the name asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The first address of the type asked.
    Addr(IpAddr),
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// The name exists but has no address of the type asked.
    NoAddress,
    /// Another response code (SERVFAIL, REFUSED, ...).
    Rcode(u8),
}

/// The answers of `msg`, the records of type A or AAAA, in order.
fn records(msg: &[u8], q: &Question) -> Result<Vec<IpAddr>, DnsError> {
    let mut pos = q.end;
    let mut out = Vec::new();
    for _ in 0..q.answers {
        let (_, p) = read_name(msg, pos)?;
        let ty = u16_at(msg, p)?;
        let len = u16_at(msg, p + 8)? as usize;
        let data = msg.get(p + 10..p + 10 + len).ok_or(DnsError::Malformed)?;
        match (ty, len) {
            (TYPE_A, 4) => out.push(IpAddr::from(<[u8; 4]>::try_from(data).expect("4"))),
            (TYPE_AAAA, 16) => out.push(IpAddr::from(<[u8; 16]>::try_from(data).expect("16"))),
            _ => {}
        }
        pos = p + 10 + len;
    }
    Ok(out)
}

/// Read the response to query `id`; `None` when `msg` is not that response.
pub fn answer(msg: &[u8], id: u16) -> Option<Answer> {
    let q = question(msg).ok()?;
    if !q.response || q.id != id {
        return None;
    }
    Some(match q.rcode {
        0 => match records(msg, &q).ok()?.first() {
            Some(a) => Answer::Addr(*a),
            None => Answer::NoAddress,
        },
        RCODE_NXDOMAIN => Answer::NxDomain,
        r => Answer::Rcode(r),
    })
}

/// The response of a responder with `records` to `msg`, if it is a query.
pub fn respond(records: &BTreeMap<String, IpAddr>, msg: &[u8]) -> Option<Vec<u8>> {
    let q = question(msg).ok()?;
    if q.response {
        return None;
    }
    let found = records.get(&canonical(&q.name));
    let addr = found.filter(|a| match a {
        IpAddr::V4(_) => q.qtype == TYPE_A,
        IpAddr::V6(_) => q.qtype == TYPE_AAAA,
    });
    let mut r = Vec::with_capacity(q.end + 32);
    r.extend_from_slice(&msg[..2]);
    // QR, opcode 0, AA, RD as asked; RA; rcode.
    let rcode = if found.is_some() { 0 } else { RCODE_NXDOMAIN };
    r.push(0x84 | (msg[2] & 0x01));
    r.push(0x80 | rcode);
    r.extend_from_slice(&[0, 1, 0, u8::from(addr.is_some()), 0, 0, 0, 0]);
    r.extend_from_slice(&msg[12..q.end]);
    if let Some(a) = addr {
        // The question's name, by pointer.
        r.extend_from_slice(&[0xc0, 12]);
        r.extend_from_slice(&q.qtype.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&TTL.to_be_bytes());
        match a {
            IpAddr::V4(v4) => {
                r.extend_from_slice(&4u16.to_be_bytes());
                r.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                r.extend_from_slice(&16u16.to_be_bytes());
                r.extend_from_slice(&v6.octets());
            }
        }
    }
    Some(r)
}

fn type_name(t: u16) -> String {
    match t {
        TYPE_A => "A".into(),
        TYPE_AAAA => "AAAA".into(),
        t => format!("type {t}"),
    }
}

/// The trace's summary of a DNS message: `DNS query A api.yourapp.com`,
/// `DNS answer A api.yourapp.com 35.244.179.100`, `DNS answer NXDOMAIN
/// nope.yourapp.com`. The id is left out (it is the same on every run,
/// but says nothing the hop does not).
pub fn summary(msg: &[u8]) -> Option<String> {
    let q = question(msg).ok()?;
    let ty = type_name(q.qtype);
    if !q.response {
        return Some(format!("DNS query {ty} {}", q.name));
    }
    Some(match q.rcode {
        0 => {
            let addrs = records(msg, &q).ok()?;
            if addrs.is_empty() {
                format!("DNS answer {ty} {} (no address)", q.name)
            } else {
                let a: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                format!("DNS answer {ty} {} {}", q.name, a.join(" "))
            }
        }
        RCODE_NXDOMAIN => format!("DNS answer NXDOMAIN {}", q.name),
        r => format!("DNS answer rcode {r} {}", q.name),
    })
}

/// Parse `__dns`'s arguments: `--port P` and `--record NAME=ADDR`.
pub fn parse_args(args: &[String]) -> Result<(u16, BTreeMap<String, IpAddr>), DnsError> {
    let mut port = 53;
    let mut records = BTreeMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| DnsError::Args(format!("{a} needs a value")))?;
        match a.as_str() {
            "--port" => {
                port = v
                    .parse()
                    .map_err(|_| DnsError::Args(format!("bad port {v}")))?
            }
            "--record" => {
                let (n, addr) = v
                    .split_once('=')
                    .ok_or_else(|| DnsError::Args(format!("record {v} is not NAME=ADDR")))?;
                let addr: IpAddr = addr
                    .parse()
                    .map_err(|_| DnsError::Args(format!("record {v}: bad address")))?;
                records.insert(canonical(n), addr);
            }
            o => return Err(DnsError::Args(format!("unknown argument {o}"))),
        }
    }
    Ok((port, records))
}

/// Serve `records` on UDP `port` (IPv4, and IPv6 where the host has it)
/// until killed. Returns only on a bind error.
pub fn serve(port: u16, records: BTreeMap<String, IpAddr>) -> Result<(), DnsError> {
    let bind = |a: SocketAddr| UdpSocket::bind(a).map_err(|source| DnsError::Bind { port, source });
    let mut socks = vec![bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?];
    if let Ok(s) = bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        socks.push(s);
    }
    let records = std::sync::Arc::new(records);
    let threads: Vec<_> = socks
        .into_iter()
        .map(|s| {
            let records = records.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    if let Some(r) = respond(&records, &buf[..n]) {
                        let _ = s.send_to(&r, from);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs() -> BTreeMap<String, IpAddr> {
        let mut r = BTreeMap::new();
        r.insert("api.yourapp.com".into(), "35.244.179.100".parse().unwrap());
        r.insert("v6.yourapp.com".into(), "2001:db8::1".parse().unwrap());
        r
    }

    #[test]
    fn a_record_answered() {
        let q = query(7, "API.yourapp.com.", false).unwrap();
        assert_eq!(summary(&q).unwrap(), "DNS query A api.yourapp.com");
        let r = respond(&recs(), &q).unwrap();
        assert_eq!(
            answer(&r, 7),
            Some(Answer::Addr("35.244.179.100".parse().unwrap()))
        );
        assert_eq!(answer(&r, 8), None, "another query's id");
        assert_eq!(
            summary(&r).unwrap(),
            "DNS answer A api.yourapp.com 35.244.179.100"
        );
    }

    #[test]
    fn unknown_name_is_nxdomain_and_wrong_type_has_no_address() {
        let r = respond(&recs(), &query(1, "nope.yourapp.com", false).unwrap()).unwrap();
        assert_eq!(answer(&r, 1), Some(Answer::NxDomain));
        assert_eq!(summary(&r).unwrap(), "DNS answer NXDOMAIN nope.yourapp.com");
        let r = respond(&recs(), &query(2, "v6.yourapp.com", false).unwrap()).unwrap();
        assert_eq!(answer(&r, 2), Some(Answer::NoAddress));
        let r = respond(&recs(), &query(3, "v6.yourapp.com", true).unwrap()).unwrap();
        assert_eq!(
            answer(&r, 3),
            Some(Answer::Addr("2001:db8::1".parse().unwrap()))
        );
    }

    #[test]
    fn garbage_is_not_answered_and_bad_names_refused() {
        assert!(respond(&recs(), b"\x00\x01hello").is_none());
        assert!(summary(&[0u8; 3]).is_none());
        assert!(query(1, "a..b", false).is_err());
        assert!(query(1, &"x".repeat(64), false).is_err());
        // A pointer loop ends in an error, not a hang.
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12]);
        assert!(summary(&m).is_none());
    }

    #[test]
    fn args_round_trip() {
        let s = DnsServer {
            port: 5353,
            records: recs(),
        };
        let (p, r) = parse_args(&s.argv()).unwrap();
        assert_eq!((p, r), (5353, recs()));
        assert!(parse_args(&["--record".into(), "x".into()]).is_err());
    }
}
