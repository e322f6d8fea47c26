//! A lab is whole before anything is built: every host, interface and
//! bridge a link, route, step or capture names exists; every interface
//! is named once on its host, link ends with names the kernel takes, bridge
//! ports without addresses; MACs (given or default) are unique; IPv6
//! addresses only on hosts with IPv6; an address on one interface of its
//! host only; every echo server has a port. Every problem is reported, not
//! only the first.
//!
//! Errors are lab paths (`links[2].b.host`, `hosts.a.routes[0].dev`),
//! which are the file's for what the file wrote (see [`super`]). Knows
//! nothing of the file's text or of Oakestra.

pub mod system;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{default_link_mac, End, Host, Lab};
use crate::values::{
    bad, check_ifname, default_source_port, key, sport_overflow, Cidr, Gather, Invalid,
};

/// Interfaces per host: `lo`, the bridges, TUNs and link ends.
type Ifaces<'a> = BTreeMap<&'a str, BTreeSet<&'a str>>;

/// Every way `lab` refers to what it does not have, in lab order; empty
/// when it is whole.
pub fn check(lab: &Lab) -> Vec<Invalid> {
    let mut found = Vec::new();
    let mut ifaces: Ifaces = BTreeMap::new();
    for (h, host) in &lab.hosts {
        check_host(h, host, ifaces.entry(h.as_str()).or_default(), &mut found);
    }
    check_links(lab, &mut ifaces, &mut found);
    found.gather(check_macs(lab));
    check_addrs(lab, &mut found);
    for (h, host) in &lab.hosts {
        for (i, r) in host.routes.iter().enumerate() {
            if let Some(d) = &r.dev {
                if !ifaces[h.as_str()].contains(d.as_str()) {
                    found.gather(bad(
                        format!("hosts.{}.routes[{i}].dev", key(h)),
                        format!("host `{h}` has no interface `{d}`"),
                    ));
                }
            }
        }
    }
    for (i, s) in lab.traffic.iter().enumerate() {
        if s.sport.is_none() && default_source_port(i).is_none() {
            found.gather(bad(format!("traffic[{i}]"), sport_overflow(i)));
        }
        if !lab.hosts.contains_key(&s.from) {
            found.gather(bad(
                format!("traffic[{i}].from"),
                undefined_host(&s.from, lab.hosts.keys().map(String::as_str)),
            ));
        }
        check_faults(lab, i, s, &mut found);
        for (side, list) in [("down", &s.link_down), ("up", &s.link_up)] {
            for (j, x) in list.iter().enumerate() {
                let known = x.split_once('/').is_some_and(|(h, n)| {
                    n != "lo" && ifaces.get(h).is_some_and(|s| s.contains(n))
                });
                if !known {
                    found.gather(bad(
                        format!("traffic[{i}].link.{side}[{j}]"),
                        format!("no interface `{x}` (HOST/IFNAME: a link end, bridge or TUN)"),
                    ));
                }
            }
        }
    }
    for (i, c) in lab.capture.interfaces.iter().enumerate() {
        found.gather(check_capture(&ifaces, i, c));
    }
    for (i, h) in lab.capture.loopback.iter().enumerate() {
        let f = format!("capture.loopback[{i}]");
        if !ifaces.contains_key(h.as_str()) {
            found.gather(bad(f, undefined_host(h, ifaces.keys().copied())));
        } else if lab.capture.loopback[..i].contains(h) {
            found.gather(bad(f, format!("host `{h}` is listed twice")));
        }
    }
    found
}

/// `undefined host `NAME``, with how to define one and the hosts there are.
/// A step's fault actions name processes of the lab (`HOST/NAME`), each
/// once per step.
fn check_faults(lab: &Lab, i: usize, s: &super::Step, found: &mut Vec<Invalid>) {
    let mut seen = BTreeSet::new();
    for (field, list) in [
        ("kill", &s.kill),
        ("terminate", &s.terminate),
        ("restart", &s.restart),
    ] {
        for (j, p) in list.iter().enumerate() {
            let f = format!("traffic[{i}].{field}[{j}]");
            if lab.process(p).is_none() {
                let known: Vec<String> = lab.process_names().collect();
                found.gather(bad(
                    f,
                    format!(
                        "no process `{p}` (HOST/NAME, one of: {})",
                        if known.is_empty() {
                            "none: the lab has no process".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            } else if !seen.insert((field == "restart", p)) {
                found.gather(bad(f, format!("`{p}` is named twice in this step")));
            }
        }
    }
}

fn undefined_host<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    const SHOWN: usize = 8;
    let known: Vec<&str> = known.collect();
    let mut list = known
        .iter()
        .take(SHOWN)
        .map(|h| format!("`{h}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if known.len() > SHOWN {
        list.push_str(&format!(" and {} more", known.len() - SHOWN));
    }
    if list.is_empty() {
        list = "none".into();
    }
    format!(
        "undefined host `{name}`: define it under `hosts:` (e.g. `hosts: {{{name}: {{}}}}`, \
         with a link giving it an interface); hosts defined: {list}"
    )
}

fn check_capture(ifaces: &Ifaces, i: usize, c: &str) -> Result<(), Invalid> {
    let f = format!("capture.interfaces[{i}]");
    let Some((h, ifn)) = c.split_once('/') else {
        return bad(f, format!("`{c}` is not host/ifname"));
    };
    let Some(set) = ifaces.get(h) else {
        return bad(f, undefined_host(h, ifaces.keys().copied()));
    };
    if !set.contains(ifn) {
        return bad(f, format!("host `{h}` has no interface `{ifn}`"));
    }
    Ok(())
}

fn check_host<'a>(h: &str, host: &'a Host, set: &mut BTreeSet<&'a str>, found: &mut Vec<Invalid>) {
    let hf = format!("hosts.{}", key(h));
    set.insert("lo");
    for t in host.tuns.keys() {
        if !set.insert(t.as_str()) {
            found.gather(bad(
                format!("{hf}.tuns.{}", key(t)),
                format!("interface `{t}` defined twice on host `{h}`"),
            ));
        }
    }
    for (b, br) in &host.bridges {
        let f = format!("{hf}.bridges.{}", key(b));
        if !set.insert(b.as_str()) {
            found.gather(bad(
                f.clone(),
                format!("interface `{b}` defined twice on host `{h}`"),
            ));
        }
        found.gather(check_v6(h, host, &br.addr, &format!("{f}.addr")));
    }
    for (i, p) in host.processes.iter().enumerate() {
        if p.echo
            .as_ref()
            .is_some_and(|e| e.tcp.is_empty() && e.udp.is_empty())
        {
            found.gather(bad(
                format!("{hf}.processes[{i}].echo"),
                "an echo server needs at least one tcp or udp port",
            ));
        }
    }
}

fn check_links<'a>(lab: &'a Lab, ifaces: &mut Ifaces<'a>, found: &mut Vec<Invalid>) {
    for (i, l) in lab.links.iter().enumerate() {
        for (side, e) in [("a", &l.a), ("b", &l.b)] {
            found.gather(check_end(lab, ifaces, &format!("links[{i}].{side}"), e));
        }
    }
}

fn check_end<'a>(
    lab: &'a Lab,
    ifaces: &mut Ifaces<'a>,
    f: &str,
    e: &'a End,
) -> Result<(), Invalid> {
    let Some(host) = lab.hosts.get(&e.host) else {
        return bad(
            format!("{f}.host"),
            undefined_host(&e.host, lab.hosts.keys().map(String::as_str)),
        );
    };
    check_ifname(format!("{f}.ifname"), &e.ifname)?;
    let set = ifaces.entry(e.host.as_str()).or_default();
    if !set.insert(e.ifname.as_str()) {
        return bad(
            format!("{f}.ifname"),
            format!(
                "interface `{}` defined twice on host `{}`",
                e.ifname, e.host
            ),
        );
    }
    if let Some(b) = &e.bridge {
        if !host.bridges.contains_key(b) {
            return bad(
                format!("{f}.bridge"),
                format!("host `{}` has no bridge `{b}`", e.host),
            );
        }
        if !e.addr.is_empty() {
            return bad(
                format!("{f}.addr"),
                "a bridge port takes no address (give it to the bridge)",
            );
        }
    }
    check_v6(&e.host, host, &e.addr, &format!("{f}.addr"))
}

/// An address is on one interface of its host only (the kernel takes it
/// twice, and packets leave by the first), and not on both ends of a link.
fn check_addrs(lab: &Lab, found: &mut Vec<Invalid>) {
    let mut owners: BTreeMap<(&str, IpAddr), String> = BTreeMap::new();
    let mut claim = |h: &'_ str, a: &Cidr, field: String, found: &mut Vec<Invalid>| {
        let k = (
            lab.hosts.get_key_value(h).map_or("", |(k, _)| k.as_str()),
            a.addr,
        );
        if let Some(prev) = owners.get(&k) {
            found.gather(bad(
                field,
                format!("address {} is also given to {prev} on host `{h}`", a.addr),
            ));
        } else {
            owners.insert(k, field);
        }
    };
    for (h, host) in &lab.hosts {
        let hf = format!("hosts.{}", key(h));
        for (b, br) in &host.bridges {
            for (j, a) in br.addr.iter().enumerate() {
                claim(h, a, format!("{hf}.bridges.{}.addr[{j}]", key(b)), found);
            }
        }
        for (t, tun) in &host.tuns {
            for (j, a) in tun.addr.iter().enumerate() {
                claim(h, a, format!("{hf}.tuns.{}.addr[{j}]", key(t)), found);
            }
        }
    }
    for (i, l) in lab.links.iter().enumerate() {
        for (side, e) in [("a", &l.a), ("b", &l.b)] {
            for (j, a) in e.addr.iter().enumerate() {
                claim(&e.host, a, format!("links[{i}].{side}.addr[{j}]"), found);
            }
        }
        for (j, a) in l.b.addr.iter().enumerate() {
            if l.a.addr.iter().any(|x| x.addr == a.addr) {
                found.gather(bad(
                    format!("links[{i}].b.addr[{j}]"),
                    format!(
                        "address {} is also given to the other end, links[{i}].a",
                        a.addr
                    ),
                ));
            }
        }
    }
}

fn check_macs(lab: &Lab) -> Result<(), Invalid> {
    let mut macs = BTreeMap::new();
    for (i, l) in lab.links.iter().enumerate() {
        for (s, (side, e)) in [("a", &l.a), ("b", &l.b)].into_iter().enumerate() {
            let mac = e.mac.unwrap_or(default_link_mac(i, s));
            if let Some(prev) = macs.insert(mac, format!("links[{i}].{side}")) {
                return bad(
                    format!("links[{i}].{side}.mac"),
                    format!("MAC {mac} is also used by {prev}"),
                );
            }
        }
    }
    Ok(())
}

fn check_v6(h: &str, host: &Host, addrs: &[Cidr], field: &str) -> Result<(), Invalid> {
    if !host.ipv6 && addrs.iter().any(|a| a.addr.is_ipv6()) {
        return bad(
            field,
            format!("IPv6 address on host `{h}`: set `ipv6: true` on the host"),
        );
    }
    Ok(())
}
