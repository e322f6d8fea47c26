//! A lab is whole before anything is built: every host, interface and
//! bridge a link, route, step or capture names exists; every interface
//! is named once on its host, link ends with names the kernel takes, bridge
//! ports without addresses; MACs (given or default) are unique; IPv6
//! addresses only on hosts with IPv6; every echo server has a port.
//!
//! Errors are lab paths (`links[2].b.host`, `hosts.a.routes[0].dev`),
//! which are the file's for what the file wrote (see [`super`]). Knows
//! nothing of the file's text or of Oakestra.

use std::collections::{BTreeMap, BTreeSet};

use super::{default_link_mac, Host, Lab};
use crate::values::{bad, check_ifname, default_source_port, sport_overflow, Cidr, Invalid};

/// Interfaces per host: `lo`, the bridges, TUNs and link ends.
type Ifaces<'a> = BTreeMap<&'a str, BTreeSet<&'a str>>;

/// Checks that `lab` refers only to what it has.
pub fn check(lab: &Lab) -> Result<(), Invalid> {
    let mut ifaces: Ifaces = BTreeMap::new();
    for (h, host) in &lab.hosts {
        check_host(h, host, ifaces.entry(h.as_str()).or_default())?;
    }
    check_links(lab, &mut ifaces)?;
    check_macs(lab)?;
    for (h, host) in &lab.hosts {
        for (i, r) in host.routes.iter().enumerate() {
            if let Some(d) = &r.dev {
                if !ifaces[h.as_str()].contains(d.as_str()) {
                    return bad(
                        format!("hosts.{h}.routes[{i}].dev"),
                        format!("host `{h}` has no interface `{d}`"),
                    );
                }
            }
        }
    }
    for (i, s) in lab.traffic.iter().enumerate() {
        if s.sport.is_none() && default_source_port(i).is_none() {
            return bad(format!("traffic[{i}]"), sport_overflow(i));
        }
        if !lab.hosts.contains_key(&s.from) {
            return bad(
                format!("traffic[{i}].from"),
                format!("undefined host `{}`", s.from),
            );
        }
    }
    for (i, c) in lab.capture.interfaces.iter().enumerate() {
        let f = format!("capture.interfaces[{i}]");
        let Some((h, ifn)) = c.split_once('/') else {
            return bad(f, format!("`{c}` is not host/ifname"));
        };
        let Some(set) = ifaces.get(h) else {
            return bad(f, format!("undefined host `{h}`"));
        };
        if !set.contains(ifn) {
            return bad(f, format!("host `{h}` has no interface `{ifn}`"));
        }
    }
    Ok(())
}

fn check_host<'a>(h: &str, host: &'a Host, set: &mut BTreeSet<&'a str>) -> Result<(), Invalid> {
    set.insert("lo");
    for t in host.tuns.keys() {
        if !set.insert(t.as_str()) {
            return bad(
                format!("hosts.{h}.tuns.{t}"),
                format!("interface `{t}` defined twice on host `{h}`"),
            );
        }
    }
    for (b, br) in &host.bridges {
        if !set.insert(b.as_str()) {
            return bad(
                format!("hosts.{h}.bridges.{b}"),
                format!("interface `{b}` defined twice on host `{h}`"),
            );
        }
        check_v6(h, host, &br.addr, &format!("hosts.{h}.bridges.{b}.addr"))?;
    }
    for (i, p) in host.processes.iter().enumerate() {
        if p.echo
            .as_ref()
            .is_some_and(|e| e.tcp.is_empty() && e.udp.is_empty())
        {
            return bad(
                format!("hosts.{h}.processes[{i}].echo"),
                "an echo server needs at least one tcp or udp port",
            );
        }
    }
    Ok(())
}

fn check_links<'a>(lab: &'a Lab, ifaces: &mut Ifaces<'a>) -> Result<(), Invalid> {
    for (i, l) in lab.links.iter().enumerate() {
        for (side, e) in [("a", &l.a), ("b", &l.b)] {
            let f = format!("links[{i}].{side}");
            let Some(host) = lab.hosts.get(&e.host) else {
                return bad(format!("{f}.host"), format!("undefined host `{}`", e.host));
            };
            check_ifname(format!("{f}.ifname"), &e.ifname)?;
            let set = ifaces
                .get_mut(e.host.as_str())
                .expect("every host has a set");
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
            check_v6(&e.host, host, &e.addr, &format!("{f}.addr"))?;
        }
    }
    Ok(())
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
