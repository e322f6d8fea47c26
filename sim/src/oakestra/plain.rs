//! The file's own hosts, links, steps and capture, copied into the lab
//! as they are (defaults already applied by serde), in the file's order.
//!
//! Knows the file's plain sections and the lab model; the Oakestra
//! sections are [`super::cluster`]'s and [`super::gateway`]'s.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use crate::l7::spec::{CertSpec, FileSource};
use crate::lab::{self, Lab, Target};
use crate::scenario::{self, Scenario};

/// The lab of `sc` before the Oakestra sections add to it.
pub(super) fn copy(sc: &Scenario) -> Lab {
    Lab {
        name: sc.name.clone(),
        hosts: sc
            .hosts
            .iter()
            .map(|(name, h)| (name.clone(), host(h, &sc.dir)))
            .collect(),
        links: sc
            .links
            .iter()
            .map(|l| lab::Link {
                a: end(&l.a),
                b: end(&l.b),
                impair: l.impair.clone(),
            })
            .collect(),
        traffic: sc.traffic.iter().map(|s| step(sc, s)).collect(),
        capture: lab::Capture {
            interfaces: sc.capture.interfaces.clone(),
            loopback: sc.capture.loopback.clone(),
            settle_ms: sc.capture.settle_ms,
        },
        certs: certs(sc),
    }
}

/// The file's certificates, and `dns: [NAME]` for each name used but not
/// listed.
fn certs(sc: &Scenario) -> BTreeMap<String, CertSpec> {
    let mut all = sc.tls.certs.clone();
    let served = sc
        .hosts
        .values()
        .flat_map(|h| &h.processes)
        .chain(sc.services.iter().flat_map(|s| &s.processes))
        .filter_map(|p| p.http.as_ref()?.tls.as_ref().map(|t| t.cert.clone()));
    let presented = sc
        .traffic
        .iter()
        .filter_map(|s| s.l7()?.tls()?.cert.clone());
    for n in served.chain(presented) {
        all.entry(n.clone()).or_insert_with(|| CertSpec::named(&n));
    }
    all
}

fn host(h: &scenario::Host, dir: &Path) -> lab::Host {
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
                    txqueuelen: None,
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
        files: files(&h.files, dir),
        processes: h.processes.iter().map(process).collect(),
        origin: None,
    }
}

/// `files` with each path made relative to the scenario's folder `dir`.
pub(super) fn files(
    files: &BTreeMap<String, FileSource>,
    dir: &Path,
) -> BTreeMap<String, FileSource> {
    files
        .iter()
        .map(|(n, f)| {
            let f = match f {
                FileSource::Path(p) => FileSource::Path(dir.join(p).display().to_string()),
                FileSource::Text(t) => FileSource::Text(t.clone()),
            };
            (n.clone(), f)
        })
        .collect()
}

pub(super) fn process(p: &scenario::Process) -> lab::Process {
    let ready = p
        .ready
        .as_ref()
        .map(|r| match (r.tcp_listen, r.udp_bound, r.delay_ms) {
            (Some(t), _, _) => lab::Ready::TcpListen(t),
            (_, Some(u), _) => lab::Ready::UdpBound(u),
            (_, _, Some(d)) => lab::Ready::DelayMs(d),
            _ => unreachable!("checked: one readiness check"),
        });
    // The built-in DNS responder is this program (`__dns`), ready when its
    // UDP port is bound.
    let dns = p.dns.as_ref().map(|d| {
        let mut v = vec!["/proc/self/exe".to_string(), "__dns".to_string()];
        v.extend(d.argv());
        (v, lab::Ready::UdpBound(d.port))
    });
    let ready = ready.or(dns.as_ref().map(|d| d.1));
    lab::Process {
        name: p.name.clone(),
        cmd: p.cmd.clone().or(dns.map(|d| d.0)),
        echo: p.echo.clone(),
        http: p.http.clone(),
        ready,
        ready_timeout_ms: p.ready_timeout_ms,
        netmanager: None,
        gateway: None,
        metrics: p.metrics.clone(),
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

/// A load step's payload length per flow when the file gives none.
const DEFAULT_PAYLOAD_BYTES: usize = 64;

fn step(sc: &Scenario, s: &scenario::Step) -> lab::Step {
    // A name is asked of the client host's resolver (checked to exist).
    let resolver = sc.hosts.get(&s.from).and_then(|h| h.resolver);
    let resolve = s
        .name_target()
        .zip(resolver)
        .map(|((name, _), r)| lab::Resolve {
            name,
            server: std::net::SocketAddr::new(r, 53),
        });
    let port = s.name_target().map(|(_, p)| p).unwrap_or(0);
    lab::Step {
        resolve,
        name: s.name.clone(),
        from: s.from.clone(),
        proto: s.proto(),
        to: s.to.clone(),
        // A bad target is the file's checks' error; the lab gets a
        // placeholder so that the lab's own checks still run.
        target: s.target().unwrap_or(Target {
            addr: IpAddr::from([0, 0, 0, 0]),
            port,
        }),
        sport: s.sport,
        payload: match (s.payload_bytes, &s.load) {
            (Some(n), None) => pattern(n),
            _ => s.payload.clone(),
        },
        expect: s.expect.clone(),
        timeout_ms: s.timeout_ms,
        fail_manager: s.fail_manager.clone(),
        invalidate: s.invalidate.clone(),
        expose: s.expose.clone(),
        unexpose: s.unexpose.clone(),
        expose_refused: s.expose_refused.clone(),
        kill: s.kill.clone(),
        terminate: s.terminate.clone(),
        restart: s.restart.clone(),
        recover_manager: s.recover_manager.clone(),
        stop_manager: s.stop_manager.clone(),
        // Filled in by `super::moves` once the instances are placed.
        moves: Vec::new(),
        link_down: s.link.as_ref().map(|l| l.down.clone()).unwrap_or_default(),
        link_up: s.link.as_ref().map(|l| l.up.clone()).unwrap_or_default(),
        attempts: s.attempts,
        l7: s.l7(),
        load: s.load.clone(),
        payload_bytes: s.payload_bytes.unwrap_or(DEFAULT_PAYLOAD_BYTES),
        df: s.df,
        session: match (&s.open, &s.on) {
            (Some(n), _) => Some(lab::Session::Open(n.clone())),
            (None, Some(n)) => Some(lab::Session::On {
                name: n.clone(),
                close: s.close,
            }),
            (None, None) => None,
        },
    }
}

/// A step's payload of `n` bytes: `0123456789abcdef` over and over.
fn pattern(n: usize) -> String {
    (0..n)
        .map(|i| char::from(b"0123456789abcdef"[i % 16]))
        .collect()
}
