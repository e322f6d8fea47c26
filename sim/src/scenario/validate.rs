//! Checks of what the user wrote that need nothing but the file: the
//! schema version, host names, sysctl keys, bridge and TUN names, a
//! process's `cmd`/`echo`/`ready`, a route's shape, a step's own fields,
//! the form of a capture interface.
//!
//! What needs the expanded lab (does a host or interface exist, are MACs
//! unique, …) is checked on the lab; the Oakestra sections by
//! `crate::oakestra`. Every error is a field path of the file.

use std::collections::{BTreeMap, BTreeSet};

use super::schema::{Host, Process, Route, Scenario, Step};
use crate::values::{
    bad, check_ifname, check_name, default_source_port, key, sport_overflow, Gather, Invalid,
    Proto, RouteDst,
};

/// Every error of `sc` on its own, in file order.
pub(super) fn validate(sc: &Scenario) -> Vec<Invalid> {
    let mut found = Vec::new();
    if sc.version != 1 {
        found.gather(bad(
            "version",
            format!(
                "unsupported schema version {} (this hoplab reads 1)",
                sc.version
            ),
        ));
    }
    for (h, host) in &sc.hosts {
        check_host(h, host, &mut found);
    }
    for (h, host) in &sc.hosts {
        for (i, r) in host.routes.iter().enumerate() {
            found.gather(check_route(h, host, i, r));
        }
    }
    for (i, l) in sc.links.iter().enumerate() {
        for (side, e) in [("a", &l.a), ("b", &l.b)] {
            found.gather(check_mtu(format!("links[{i}].{side}.mtu"), e.mtu));
        }
    }
    check_steps(&sc.traffic, &mut found);
    for (i, c) in sc.capture.interfaces.iter().enumerate() {
        if c.split_once('/').is_none() {
            found.gather(bad(
                format!("capture.interfaces[{i}]"),
                format!("`{c}` is not host/ifname"),
            ));
        }
    }
    found
}

fn check_host(h: &str, host: &Host, found: &mut Vec<Invalid>) {
    let hf = format!("hosts.{}", key(h));
    found.gather(check_name(hf.clone(), h));
    for k in host.sysctls.keys() {
        let f = format!("{hf}.sysctls.{}", key(k));
        if !k.starts_with("net.") {
            found.gather(bad(f, "only net.* sysctls are per network namespace"));
        } else if k.contains("..") || k.contains('/') || k.ends_with('.') {
            found.gather(bad(f, "not a sysctl name"));
        }
    }
    for (t, tun) in &host.tuns {
        let f = format!("{hf}.tuns.{}", key(t));
        found.gather(check_ifname(f.clone(), t));
        found.gather(check_mtu(format!("{f}.mtu"), tun.mtu));
    }
    for b in host.bridges.keys() {
        found.gather(check_ifname(format!("{hf}.bridges.{}", key(b)), b));
    }
    for (i, p) in host.processes.iter().enumerate() {
        found.gather(check_process(&format!("{hf}.processes[{i}]"), p));
    }
}

fn check_process(f: &str, p: &Process) -> Result<(), Invalid> {
    check_name(format!("{f}.name"), &p.name)?;
    match (&p.cmd, &p.echo) {
        (Some(c), None) if c.is_empty() => return bad(format!("{f}.cmd"), "empty command"),
        (Some(_), None) | (None, Some(_)) => {}
        _ => return bad(f, "give exactly one of `cmd` or `echo`"),
    }
    if p.ready.as_ref().is_some_and(|r| r.count() != 1) {
        return bad(
            format!("{f}.ready"),
            "give exactly one of tcp_listen, udp_bound or delay_ms",
        );
    }
    Ok(())
}

fn check_route(h: &str, host: &Host, i: usize, r: &Route) -> Result<(), Invalid> {
    let f = format!("hosts.{}.routes[{i}]", key(h));
    if r.via.is_none() && r.dev.is_none() {
        return bad(f, "a route needs `via`, `dev` or both");
    }
    if let (RouteDst::Prefix(p), Some(v)) = (&r.to, &r.via) {
        if p.addr.is_ipv4() != v.is_ipv4() {
            return bad(
                format!("{f}.via"),
                "gateway and destination are of different IP versions",
            );
        }
    }
    if r.via.is_some_and(|v| v.is_ipv6()) && !host.ipv6 {
        return bad(
            format!("{f}.via"),
            format!("IPv6 route on host `{h}`, which has `ipv6: false`"),
        );
    }
    Ok(())
}

/// The MTUs Linux takes on a veth or TUN: 68 (IPv4's minimum) to 65535.
fn check_mtu(field: String, mtu: Option<u32>) -> Result<(), Invalid> {
    match mtu {
        Some(m) if !(68..=65535).contains(&m) => {
            bad(field, format!("MTU {m} is out of range: give 68 to 65535"))
        }
        _ => Ok(()),
    }
}

fn check_steps(steps: &[Step], found: &mut Vec<Invalid>) {
    let mut names = BTreeSet::new();
    let mut clients = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        found.gather(check_step(i, s, &mut names, &mut clients));
    }
}

fn check_step<'a>(
    i: usize,
    s: &'a Step,
    names: &mut BTreeSet<&'a str>,
    clients: &mut BTreeMap<(&'a str, Proto, u16), usize>,
) -> Result<(), Invalid> {
    let f = format!("traffic[{i}]");
    if s.sport.is_none() && default_source_port(i).is_none() {
        return bad(f, sport_overflow(i));
    }
    if let Some(prev) = clients.insert((s.from.as_str(), s.proto, s.source_port(i)), i) {
        return bad(
            format!("{f}.sport"),
            format!("traffic[{prev}] uses the same host, protocol and source port: flows must be told apart"),
        );
    }
    check_name(format!("{f}.name"), &s.name)?;
    if !names.insert(s.name.as_str()) {
        return bad(
            format!("{f}.name"),
            format!("step name `{}` used twice", s.name),
        );
    }
    if let Err(m) = s.target() {
        return bad(format!("{f}.to"), m);
    }
    if s.proto == Proto::Tcp && s.source_port(i) == 0 {
        return bad(format!("{f}.sport"), "source port 0 is not a fixed port");
    }
    if s.payload.is_empty() {
        return bad(
            format!("{f}.payload"),
            "the payload identifies the packets: give at least one byte",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::validate;

    const OK: &str = "version: 1\nhosts: {a: {}}\ntraffic:\n  - {name: s0, from: a, proto: icmp, to: 10.0.0.2}\n";

    /// Steps past index 25535 without a `sport` would send from a port
    /// over 65535: refused at the first such step, not a panic. (A file
    /// under the size limit cannot hold that many; the check stands for
    /// any scenario built in code.)
    #[test]
    fn too_many_steps_for_default_ports_are_refused() {
        let mut sc = super::super::parse(Path::new("s.yaml"), "s", OK).unwrap();
        let step = sc.traffic[0].clone();
        for i in 1..25_537 {
            let mut s = step.clone();
            s.name = format!("s{i}");
            sc.traffic.push(s);
        }
        let found = validate(&sc);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "traffic[25536]");
        assert!(found[0].message.contains("give this step a `sport`"));
    }
}
