//! Checks of what the user wrote that need nothing but the file: the
//! schema version, host names, sysctl keys, bridge and TUN names, a
//! process's `cmd`/`echo`/`ready`, a route's shape, a step's own fields,
//! the form of a capture interface.
//!
//! What needs the expanded lab (does a host or interface exist, are MACs
//! unique, …) is checked on the lab; the Oakestra sections by
//! `crate::oakestra`. Every error is a field path of the file.

use std::collections::{BTreeMap, BTreeSet};

use super::schema::{Host, Route, Scenario, Step};
use crate::values::{
    bad, check_ifname, check_name, default_source_port, sport_overflow, Invalid, Proto, RouteDst,
};

/// Checks of `sc` on its own.
pub(super) fn validate(sc: &Scenario) -> Result<(), Invalid> {
    if sc.version != 1 {
        return bad(
            "version",
            format!(
                "unsupported schema version {} (this hoplab reads 1)",
                sc.version
            ),
        );
    }
    for (h, host) in &sc.hosts {
        check_host(h, host)?;
    }
    for (h, host) in &sc.hosts {
        for (i, r) in host.routes.iter().enumerate() {
            check_route(h, host, i, r)?;
        }
    }
    check_steps(&sc.traffic)?;
    for (i, c) in sc.capture.interfaces.iter().enumerate() {
        if c.split_once('/').is_none() {
            return bad(
                format!("capture.interfaces[{i}]"),
                format!("`{c}` is not host/ifname"),
            );
        }
    }
    Ok(())
}

fn check_host(h: &str, host: &Host) -> Result<(), Invalid> {
    check_name(format!("hosts.{h}"), h)?;
    for k in host.sysctls.keys() {
        if !k.starts_with("net.") {
            return bad(
                format!("hosts.{h}.sysctls.{k}"),
                "only net.* sysctls are per network namespace",
            );
        }
        if k.contains("..") || k.contains('/') {
            return bad(format!("hosts.{h}.sysctls.{k}"), "not a sysctl name");
        }
    }
    for t in host.tuns.keys() {
        check_ifname(format!("hosts.{h}.tuns.{t}"), t)?;
    }
    for b in host.bridges.keys() {
        check_ifname(format!("hosts.{h}.bridges.{b}"), b)?;
    }
    for (i, p) in host.processes.iter().enumerate() {
        let f = format!("hosts.{h}.processes[{i}]");
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
    }
    Ok(())
}

fn check_route(h: &str, host: &Host, i: usize, r: &Route) -> Result<(), Invalid> {
    let f = format!("hosts.{h}.routes[{i}]");
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

fn check_steps(steps: &[Step]) -> Result<(), Invalid> {
    let mut names = BTreeSet::new();
    let mut clients = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        if s.sport.is_none() && default_source_port(i).is_none() {
            return bad(format!("traffic[{i}]"), sport_overflow(i));
        }
        if let Some(prev) = clients.insert((s.from.as_str(), s.proto, s.source_port(i)), i) {
            return bad(
                format!("traffic[{i}].sport"),
                format!("traffic[{prev}] uses the same host, protocol and source port: flows must be told apart"),
            );
        }
        let f = format!("traffic[{i}]");
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
    }
    Ok(())
}
