//! The file's own hosts, links, steps and capture, copied into the lab
//! as they are (defaults already applied by serde), in the file's order.
//!
//! Knows the file's plain sections and the lab model; the Oakestra
//! sections are [`super::cluster`]'s and [`super::gateway`]'s.

use std::net::IpAddr;

use crate::lab::{self, Lab, Target};
use crate::scenario::{self, Scenario};

/// The lab of `sc` before the Oakestra sections add to it.
pub(super) fn copy(sc: &Scenario) -> Lab {
    Lab {
        name: sc.name.clone(),
        hosts: sc
            .hosts
            .iter()
            .map(|(name, h)| (name.clone(), host(h)))
            .collect(),
        links: sc
            .links
            .iter()
            .map(|l| lab::Link {
                a: end(&l.a),
                b: end(&l.b),
            })
            .collect(),
        traffic: sc.traffic.iter().map(step).collect(),
        capture: lab::Capture {
            interfaces: sc.capture.interfaces.clone(),
            settle_ms: sc.capture.settle_ms,
        },
    }
}

fn host(h: &scenario::Host) -> lab::Host {
    lab::Host {
        sysctls: h
            .sysctls
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect(),
        ipv6: h.ipv6,
        bridges: h
            .bridges
            .iter()
            .map(|(n, b)| {
                let b = lab::Bridge {
                    addr: b.addr.clone(),
                    mac: b.mac,
                };
                (n.clone(), b)
            })
            .collect(),
        tuns: h
            .tuns
            .iter()
            .map(|(n, t)| {
                let t = lab::Tun {
                    addr: t.addr.clone(),
                    mtu: t.mtu,
                };
                (n.clone(), t)
            })
            .collect(),
        routes: h
            .routes
            .iter()
            .map(|r| lab::Route {
                to: r.to,
                via: r.via,
                dev: r.dev.clone(),
            })
            .collect(),
        firewall: h.firewall.clone(),
        processes: h.processes.iter().map(process).collect(),
    }
}

fn process(p: &scenario::Process) -> lab::Process {
    let ready = p
        .ready
        .as_ref()
        .map(|r| match (r.tcp_listen, r.udp_bound, r.delay_ms) {
            (Some(t), _, _) => lab::Ready::TcpListen(t),
            (_, Some(u), _) => lab::Ready::UdpBound(u),
            (_, _, Some(d)) => lab::Ready::DelayMs(d),
            _ => unreachable!("checked: one readiness check"),
        });
    lab::Process {
        name: p.name.clone(),
        cmd: p.cmd.clone(),
        echo: p.echo.clone(),
        ready,
        ready_timeout_ms: p.ready_timeout_ms,
        netmanager: None,
        gateway: None,
    }
}

fn end(e: &scenario::End) -> lab::End {
    lab::End {
        host: e.host.clone(),
        ifname: e.ifname.clone(),
        addr: e.addr.clone(),
        mac: e.mac,
        bridge: e.bridge.clone(),
        mtu: e.mtu,
    }
}

fn step(s: &scenario::Step) -> lab::Step {
    lab::Step {
        name: s.name.clone(),
        from: s.from.clone(),
        proto: s.proto,
        to: s.to.clone(),
        // A bad target is the file's checks' error; the lab gets a
        // placeholder so that the lab's own checks still run.
        target: s.target().unwrap_or(Target {
            addr: IpAddr::from([0, 0, 0, 0]),
            port: 0,
        }),
        sport: s.sport,
        payload: s.payload.clone(),
        expect: s.expect.clone(),
        timeout_ms: s.timeout_ms,
        fail_manager: s.fail_manager.clone(),
        invalidate: s.invalidate.clone(),
        expose: s.expose.clone(),
        unexpose: s.unexpose.clone(),
        expose_refused: s.expose_refused.clone(),
    }
}
