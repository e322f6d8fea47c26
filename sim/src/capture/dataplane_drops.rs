//! The drops the net manager and the gateway record themselves: each
//! process writes every packet its core drops to a drop log beside its
//! counters (`hoplab::shell::droplog`: `start`, `drop VIA REASON PROTO
//! SRC DST IDENT PORTS`, `unidentified REASON`, `full`, `end overflow N`),
//! which [`read`] turns into drop records of [`Verdicts`], keyed like the
//! nftables drops, placed at the TUN the packet was read from
//! ([`Where::Iface`]) or on the tunnel ([`Where::Tunnel`]).
//!
//! A `drop` line may be of a packet the process no longer held when it
//! dropped it (queued behind a failed query, a fragment of a datagram
//! that timed out): its core handed back the packet's header, so it is
//! keyed like any other; a later fragment, which has no ports, by its
//! protocol's number, as the trace keys it.
//!
//! What the log cannot vouch for is listed as unavailable, never guessed:
//! no log, drops it could not identify (`unidentified`: no IP header to
//! name the packet by: bytes that are not IP, or cut short), drops past
//! its bound, a log that filled and was never
//! closed (the process was killed).
//!
//! It knows the drop log's text; it does not know the processes, the lab
//! or the trace.

use super::verdicts::{Drop, Key, Verdicts, Where};

/// Reads the drop log `text` (`None`: there is none) of the process
/// `who` (`the gateway`, `the net manager`) in `host` into `v`.
pub fn read(host: &str, who: &str, text: Option<&str>, v: &mut Verdicts) {
    let Some(text) = text else {
        v.unavailable.push(format!(
            "{host}: {who} wrote no drop log: its drops are not recorded"
        ));
        return;
    };
    let (mut unidentified, mut overflow, mut open_full) = (0u64, 0u64, false);
    let mut reasons: Vec<String> = Vec::new();
    let mut bad = 0usize;
    for l in text.lines() {
        let w: Vec<&str> = l.split(' ').collect();
        match w.as_slice() {
            ["start"] => open_full = false,
            ["full"] => open_full = true,
            ["end", "overflow", n] => {
                overflow += n.parse::<u64>().unwrap_or(0);
                open_full = false;
            }
            ["unidentified", why] => {
                unidentified += 1;
                if !reasons.iter().any(|r| r == why) {
                    reasons.push(why.to_string());
                }
            }
            ["drop", via, why, proto, src, dst, ident, ports] => {
                match record(host, who, [via, why, proto, src, dst, ident, ports]) {
                    Some((key, drop)) => v.add(key, drop),
                    None => bad += 1,
                }
            }
            _ => bad += 1,
        }
    }
    if unidentified > 0 {
        v.unavailable.push(format!(
            "{host}: {unidentified} drops by {who} are not identified: no IP header to \
             name the packet by ({})",
            reasons.join(", ")
        ));
    }
    if overflow > 0 {
        v.unavailable.push(format!(
            "{host}: {overflow} drops by {who} past its drop log's bound are not recorded"
        ));
    }
    if open_full {
        v.unavailable.push(format!(
            "{host}: {who} ended without closing its full drop log: later drops not counted"
        ));
    }
    if bad > 0 {
        v.unavailable.push(format!(
            "{host}: {bad} lines of {who}'s drop log do not read"
        ));
    }
}

/// One `drop` line's fields as a drop record.
fn record(host: &str, who: &str, f: [&str; 7]) -> Option<(Key, Drop)> {
    let [via, why, proto, src, dst, ident, ports] = f;
    let at = match via.split_once(':') {
        Some(("tun", ifname)) => Where::Iface(ifname.to_string()),
        None if via == "tunnel" => Where::Tunnel,
        _ => return None,
    };
    let ports = match ports {
        "-" => None,
        p => {
            let (a, b) = p.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        }
    };
    let key = Key {
        src: src.parse().ok()?,
        dst: dst.parse().ok()?,
        ident: ident.parse().ok()?,
        proto: proto.to_string(),
        ports,
    };
    let drop = Drop {
        host: host.to_string(),
        at,
        by: who.to_string(),
        why: why.to_string(),
    };
    Some((key, drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_keyed_and_placed_and_what_is_missing_is_said() {
        let text = "start\n\
            drop tun:gw0 table_full tcp 203.0.113.9 10.30.255.253 4242 40001:8080\n\
            drop tunnel unknown_peer udp 10.30.7.7 10.18.0.1 1 8000:80\n\
            unidentified malformed\n\
            full\n\
            end overflow 3\n\
            start\n\
            full\n";
        let mut v = Verdicts::default();
        read("gw", "the gateway", Some(text), &mut v);
        let key = Key {
            src: "203.0.113.9".parse().unwrap(),
            dst: "10.30.255.253".parse().unwrap(),
            ident: 4242,
            proto: "tcp".into(),
            ports: Some((40001, 8080)),
        };
        let d = v.find("gw", &key).unwrap();
        assert_eq!(d.at, Where::Iface("gw0".into()));
        assert_eq!(
            (d.by.as_str(), d.why.as_str()),
            ("the gateway", "table_full")
        );
        assert_eq!(v.len(), 2);
        assert_eq!(
            v.unavailable,
            [
                "gw: 1 drops by the gateway are not identified: no IP header to name the packet by (malformed)",
                "gw: 3 drops by the gateway past its drop log's bound are not recorded",
                "gw: the gateway ended without closing its full drop log: later drops not counted",
            ]
        );
        // The text stored in a capture reads back to the same verdicts.
        let back = Verdicts::from_text(&v.to_text()).unwrap().unwrap();
        assert_eq!(back.to_text(), v.to_text());
        assert_eq!(back.find("gw", &key), Some(d));
        let mut none = Verdicts::default();
        read("n1", "the net manager", None, &mut none);
        assert_eq!(none.unavailable.len(), 1);
    }
}
