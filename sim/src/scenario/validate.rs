//! Checks of what the user wrote that need nothing but the file: the
//! schema version, host names, sysctl keys, bridge and TUN names, a
//! process's `cmd`/`echo`/`ready`, a route's shape, a step's own fields,
//! the form of a capture interface; the L7 fields: file names, the
//! certificates' names and SANs, the built-in HTTP server's numbers, an
//! HTTP or WebSocket step's shape and expectation.
//!
//! What needs the expanded lab (does a host or interface exist, are MACs
//! unique, …) is checked on the lab; the Oakestra sections by
//! `crate::oakestra`. Every error is a field path of the file.

use std::collections::{BTreeMap, BTreeSet};

use super::process::Process;
use super::schema::{Host, Route, Scenario, Step};
use crate::expect::Expect;
use crate::l7::spec::{check_dns, check_file_name, ClientTls, HttpServer, L7Step};
use crate::values::{
    bad, check_ifname, check_name, default_source_port, key, sport_overflow, Gather, Invalid,
    Proto, RouteDst,
};

/// Connections that span steps (`open`, `on`, `close`): fills each step
/// `on` a connection with its opener's `from`, `proto`, `to` and source
/// port, and returns what is wrong: a step `on` a connection no earlier
/// step opened, or one already closed; a connection opened twice or never
/// closed; a step `on` a connection that gives its own `from`, `proto`,
/// `to` or `sport`; a connection that is not a plain TCP or UDP step's.
/// Steps that use no connection must give `from` and `to`.
pub(super) fn sessions(steps: &mut [Step]) -> Vec<Invalid> {
    let mut found = Vec::new();
    // By name: the step that opened it, and the one that closed it.
    let mut conns: BTreeMap<String, (usize, Option<usize>)> = BTreeMap::new();
    for i in 0..steps.len() {
        let f = format!("traffic[{i}]");
        let s = &steps[i];
        if s.on.is_none() {
            for (field, empty) in [("from", s.from.is_empty()), ("to", s.to.is_empty())] {
                if empty {
                    found.gather(bad(f.clone(), format!("missing field `{field}`")));
                }
            }
            if s.close {
                found.gather(bad(
                    format!("{f}.close"),
                    "`close` ends the connection the step is `on`",
                ));
            }
        }
        if let Some(n) = s.open.clone() {
            match check_open(&f, s, &n, &conns) {
                Ok(()) => {
                    conns.insert(n, (i, None));
                }
                Err(e) => found.push(e),
            }
        }
        let Some(n) = s.on.clone() else { continue };
        if let Err(e) = check_on(&f, s) {
            found.push(e);
            continue;
        }
        match conns.get_mut(&n) {
            None => found.gather(bad(
                format!("{f}.on"),
                format!("no earlier step opens a connection `{n}` (`open: {n}`)"),
            )),
            Some((j, Some(k))) => found.gather(bad(
                format!("{f}.on"),
                format!("connection `{n}` (opened by traffic[{j}]) was closed by traffic[{k}]"),
            )),
            Some((j, closed)) => {
                let j = *j;
                if steps[i].close {
                    *closed = Some(i);
                }
                let (from, proto, to) =
                    (steps[j].from.clone(), steps[j].proto, steps[j].to.clone());
                let sport = steps[j].source_port(j);
                let s = &mut steps[i];
                (s.from, s.proto, s.to, s.sport) = (from, proto, to, Some(sport));
            }
        }
    }
    for (n, (j, closed)) in conns {
        if closed.is_none() {
            found.gather(bad(
                format!("traffic[{j}].open"),
                format!("connection `{n}` is never closed: end it with a later step `{{on: {n}, close: true}}`"),
            ));
        }
    }
    found
}

/// A step that opens connection `n`: a plain TCP or UDP step that tries
/// once, and `n` not open already.
fn check_open(
    f: &str,
    s: &Step,
    n: &str,
    conns: &BTreeMap<String, (usize, Option<usize>)>,
) -> Result<(), Invalid> {
    check_name(format!("{f}.open"), n)?;
    if s.on.is_some() {
        return bad(
            format!("{f}.open"),
            "a step opens a connection or is `on` one, not both",
        );
    }
    let plain = s.http.is_none() && s.websocket.is_none() && s.load.is_none() && !s.df;
    if !matches!(s.proto, Some(Proto::Tcp | Proto::Udp)) || !plain {
        return bad(
            format!("{f}.open"),
            "a connection is a plain TCP or UDP step's (no icmp, http, websocket, load or df)",
        );
    }
    if s.attempts != 1 {
        return bad(format!("{f}.attempts"), "a step of a connection tries once");
    }
    if let Some((j, None)) = conns.get(n) {
        return bad(
            format!("{f}.open"),
            format!("connection `{n}` is already open (traffic[{j}]) and not closed"),
        );
    }
    Ok(())
}

/// A step `on` a connection gives none of the opener's fields, and nothing
/// but a payload, an expectation and the step's actions.
fn check_on(f: &str, s: &Step) -> Result<(), Invalid> {
    let given = [
        ("from", !s.from.is_empty()),
        ("proto", s.proto.is_some()),
        ("to", !s.to.is_empty()),
        ("sport", s.sport.is_some()),
    ];
    if let Some((field, _)) = given.iter().find(|(_, g)| *g) {
        return bad(
            format!("{f}.{field}"),
            "a step `on` a connection takes its opener's `from`, `proto`, `to` and `sport`",
        );
    }
    let other = [
        ("http", s.http.is_some()),
        ("websocket", s.websocket.is_some()),
        ("load", s.load.is_some()),
        ("df", s.df),
        ("attempts", s.attempts != 1),
    ];
    if let Some((field, _)) = other.iter().find(|(_, g)| *g) {
        return bad(
            format!("{f}.{field}"),
            "a step `on` a connection sends a payload, once",
        );
    }
    Ok(())
}

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
    for (i, s) in sc.services.iter().enumerate() {
        for name in s.files.keys() {
            found.gather(check_file_name(
                format!("services[{i}].files.{}", key(name)),
                name,
            ));
        }
        for (j, p) in s.processes.iter().enumerate() {
            found.gather(check_process(&format!("services[{i}].processes[{j}]"), p));
        }
    }
    for (i, l) in sc.links.iter().enumerate() {
        for (side, e) in [("a", &l.a), ("b", &l.b)] {
            found.gather(check_mtu(format!("links[{i}].{side}.mtu"), e.mtu));
        }
        for (f, message) in l.impair.iter().flat_map(|im| im.problems()) {
            let field = match f.as_str() {
                "" => format!("links[{i}].impair"),
                f => format!("links[{i}].impair.{f}"),
            };
            found.push(Invalid {
                field,
                message,
                within: None,
            });
        }
    }
    for (n, c) in &sc.tls.certs {
        let f = format!("tls.certs.{}", key(n));
        found.gather(check_name(f.clone(), n));
        for (j, d) in c.dns.iter().enumerate() {
            found.gather(check_dns(format!("{f}.dns[{j}]"), d));
        }
        if c.dns.is_empty() && c.ip.is_empty() {
            found.gather(bad(f, "a certificate needs a `dns` or `ip` name"));
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
    for name in host.files.keys() {
        found.gather(check_file_name(format!("{hf}.files.{}", key(name)), name));
    }
    for (i, p) in host.processes.iter().enumerate() {
        found.gather(check_process(&format!("{hf}.processes[{i}]"), p));
    }
}

fn check_http_server(f: &str, h: &HttpServer) -> Result<(), Invalid> {
    if h.listen == 0 {
        return bad(format!("{f}.listen"), "port 0 is not a fixed port");
    }
    for (field, status) in [
        ("status", Some(h.status)),
        ("fail.status", h.fail.map(|x| x.status)),
    ] {
        if let Some(st) = status.filter(|s| !(100..=999).contains(s)) {
            return bad(
                format!("{f}.{field}"),
                format!("{st} is not an HTTP status (100-999)"),
            );
        }
    }
    for (field, nth) in [
        ("fail.nth", h.fail.map(|x| x.nth)),
        ("reset.nth", h.reset.map(|x| x.nth)),
    ] {
        if nth == Some(0) {
            return bad(format!("{f}.{field}"), "requests are counted from 1");
        }
    }
    if let Some(t) = &h.tls {
        check_name(format!("{f}.tls.cert"), &t.cert)?;
    }
    Ok(())
}

fn check_process(f: &str, p: &Process) -> Result<(), Invalid> {
    check_name(format!("{f}.name"), &p.name)?;
    let kinds = usize::from(p.cmd.is_some())
        + usize::from(p.echo.is_some())
        + usize::from(p.http.is_some())
        + usize::from(p.dns.is_some());
    if kinds != 1 {
        return bad(f, "give exactly one of `cmd`, `echo`, `http` or `dns`");
    }
    if let Some(d) = &p.dns {
        for n in d.records.keys() {
            if let Err(e) = crate::l7::dns::query(0, n, false) {
                return bad(format!("{f}.dns.records.{}", key(n)), e.to_string());
            }
        }
        if d.port == 0 {
            return bad(format!("{f}.dns.port"), "port 0 is not a port");
        }
    }
    if p.cmd.as_ref().is_some_and(|c| c.is_empty()) {
        return bad(format!("{f}.cmd"), "empty command");
    }
    if let Some(h) = &p.http {
        check_http_server(&format!("{f}.http"), h)?;
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
        found.gather(check_load_step(i, s));
    }
    found.gather(check_load_ports(steps));
}

/// The longest payload of a TCP or UDP step (`payload_bytes`): the
/// largest UDP datagram over IPv6.
pub const MAX_STEP_PAYLOAD: usize = 65487;

/// A load step: its own bounds, TCP or UDP (or HTTP), a payload length
/// that fits, load expectations only on load steps.
fn check_load_step(i: usize, s: &Step) -> Result<(), Invalid> {
    let f = format!("traffic[{i}]");
    let Some(l) = &s.load else {
        if matches!(s.expect, Expect::Load(_)) {
            return bad(
                format!("{f}.expect"),
                "`ok`, `spread`, `never` and `one_of` are a load step's (give `load`)",
            );
        }
        if s.df && (s.proto() != Proto::Udp || s.http.is_some()) {
            return bad(format!("{f}.df"), "a UDP step's");
        }
        if let Some(n) = s.payload_bytes {
            if !matches!(s.proto(), Proto::Tcp | Proto::Udp)
                || s.http.is_some()
                || s.websocket.is_some()
            {
                return bad(
                    format!("{f}.payload_bytes"),
                    "a load step's, or a TCP or UDP step's",
                );
            }
            if !(1..=MAX_STEP_PAYLOAD).contains(&n) {
                return bad(
                    format!("{f}.payload_bytes"),
                    format!("give 1 to {MAX_STEP_PAYLOAD} bytes"),
                );
            }
        }
        return Ok(());
    };
    l.check(&format!("{f}.load"))?;
    if s.df {
        return bad(format!("{f}.df"), "a UDP step's, not a load step's");
    }
    if s.sport.is_some() {
        return bad(
            format!("{f}.sport"),
            "a load step sends from `load.sport_base` on",
        );
    }
    if s.proto() == Proto::Icmp || s.websocket.is_some() {
        return bad(f, "a load step sends TCP, UDP or HTTP flows");
    }
    if let Some(n) = s.payload_bytes {
        if !(crate::load::MIN_PAYLOAD..=crate::load::MAX_PAYLOAD).contains(&n) {
            return bad(
                format!("{f}.payload_bytes"),
                format!(
                    "give {} to {} bytes",
                    crate::load::MIN_PAYLOAD,
                    crate::load::MAX_PAYLOAD
                ),
            );
        }
    }
    match &s.expect {
        Expect::Load(e) => {
            if e.status.is_some() && s.http.is_none() {
                return bad(format!("{f}.expect.status"), "an HTTP load step's");
            }
            Ok(())
        }
        Expect::Echo => Ok(()),
        _ => bad(
            format!("{f}.expect"),
            "a load step expects `echo` or bounds: {ok: all, spread: {each_of: [..], at_least: N}, never: [..]}",
        ),
    }
}

/// No two steps of one client host and protocol share a source port,
/// load steps' port ranges included.
fn check_load_ports(steps: &[Step]) -> Result<(), Invalid> {
    for (i, s) in steps.iter().enumerate() {
        let Some(l) = &s.load else { continue };
        let r = l.ports();
        for (j, t) in steps.iter().enumerate() {
            if j == i || t.from != s.from || t.proto() != s.proto() {
                continue;
            }
            let clash = match &t.load {
                Some(_) if j < i => false,
                Some(m) => m.ports().start() <= r.end() && r.start() <= m.ports().end(),
                None => r.contains(&t.source_port(j)),
            };
            if clash {
                return bad(
                    format!("traffic[{i}].load.sport_base"),
                    format!(
                        "ports {}..={} overlap traffic[{j}]'s: flows must be told apart",
                        r.start(),
                        r.end()
                    ),
                );
            }
        }
    }
    Ok(())
}

fn check_step<'a>(
    i: usize,
    s: &'a Step,
    names: &mut BTreeSet<&'a str>,
    clients: &mut BTreeMap<(&'a str, Proto, u16), usize>,
) -> Result<(), Invalid> {
    let f = format!("traffic[{i}]");
    if s.on.is_some() && s.from.is_empty() {
        // On a connection `sessions` found wrong: said there.
        return Ok(());
    }
    if s.sport.is_none() && default_source_port(i).is_none() {
        return bad(f, sport_overflow(i));
    }
    // A step `on` a connection shares its opener's port, as it should.
    let mut prev = None;
    if s.on.is_none() {
        prev = clients.insert((s.from.as_str(), s.proto(), s.source_port(i)), i);
    }
    if let Some(prev) = prev {
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
    if let (Err(m), None) = (s.target(), s.name_target()) {
        return bad(format!("{f}.to"), m);
    }
    if !(1..=100).contains(&s.attempts) {
        return bad(
            format!("{f}.attempts"),
            format!("{} attempts: give 1 to 100", s.attempts),
        );
    }
    if s.attempts > 1 && s.l7().is_some() {
        return bad(
            format!("{f}.attempts"),
            "attempts are for TCP, UDP and ICMP steps (an HTTP or WebSocket step tries once)",
        );
    }
    if s.proto() == Proto::Tcp && s.source_port(i) == 0 {
        return bad(format!("{f}.sport"), "source port 0 is not a fixed port");
    }
    check_l7_step(&f, s)?;
    if s.payload.is_empty() {
        return bad(
            format!("{f}.payload"),
            "the payload identifies the packets: give at least one byte",
        );
    }
    Ok(())
}

/// An HTTP or WebSocket step: TCP, one of the two, its fields' shapes,
/// an expectation that fits it; a plain step needs `proto`.
fn check_l7_step(f: &str, s: &Step) -> Result<(), Invalid> {
    let Some(l7) = s.l7() else {
        if s.proto.is_none() {
            return bad(
                f,
                "missing field `proto`: give `proto` (tcp, udp, icmp), or `http` or `websocket`",
            );
        }
        if matches!(s.expect, Expect::Http(_)) {
            return bad(
                format!("{f}.expect"),
                "status, headers and body are an HTTP step's (give `http`)",
            );
        }
        return Ok(());
    };
    if s.http.is_some() && s.websocket.is_some() {
        return bad(f, "give one of `http` or `websocket`");
    }
    if s.proto.is_some_and(|p| p != Proto::Tcp) {
        return bad(
            format!("{f}.proto"),
            "HTTP and WebSocket steps are TCP (leave `proto` out)",
        );
    }
    let kind = if s.http.is_some() {
        "http"
    } else {
        "websocket"
    };
    match (&l7, &s.expect) {
        (_, Expect::Reply(_)) => {
            return bad(
                format!("{f}.expect"),
                "an HTTP or WebSocket step expects no `reply`",
            )
        }
        (L7Step::WebSocket(_), Expect::Http(_)) => {
            return bad(
                format!("{f}.expect"),
                "a WebSocket step expects `echo` (every message back)",
            )
        }
        _ => {}
    }
    match &l7 {
        L7Step::Http(h) => {
            let method_ok = !h.method.is_empty()
                && h.method
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !method_ok {
                return bad(
                    format!("{f}.http.method"),
                    format!("`{}` is not a method", h.method),
                );
            }
            check_target(&format!("{f}.http"), &h.path, h.host.as_deref(), &h.headers)?;
        }
        L7Step::WebSocket(w) => {
            let wf = format!("{f}.websocket");
            check_target(&wf, &w.path, w.host.as_deref(), &w.headers)?;
            if w.messages.is_empty() {
                return bad(format!("{wf}.messages"), "give at least one message");
            }
            for (j, m) in w.messages.iter().enumerate() {
                if let Err(e) = m.data() {
                    return bad(format!("{wf}.messages[{j}]"), e);
                }
            }
        }
    }
    if let Some(t) = l7.tls() {
        check_client_tls(&format!("{f}.{kind}.tls"), t)?;
    }
    Ok(())
}

/// A request's path, Host and headers fit on their lines.
fn check_target(
    f: &str,
    path: &str,
    host: Option<&str>,
    headers: &BTreeMap<String, String>,
) -> Result<(), Invalid> {
    let line_safe = |t: &str| !t.bytes().any(|b| b == b'\r' || b == b'\n');
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return bad(
            format!("{f}.path"),
            format!("`{path}` is not a path (starts with `/`, no spaces)"),
        );
    }
    if host.is_some_and(|h| h.is_empty() || !line_safe(h) || h.contains(' ')) {
        return bad(format!("{f}.host"), "not a Host header value");
    }
    for (k, v) in headers {
        let name_ok = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok {
            return bad(
                format!("{f}.headers.{}", key(k)),
                format!("`{k}` is not a header name"),
            );
        }
        if !line_safe(v) {
            return bad(
                format!("{f}.headers.{}", key(k)),
                "a header value is one line",
            );
        }
    }
    Ok(())
}

fn check_client_tls(f: &str, t: &ClientTls) -> Result<(), Invalid> {
    if let Some(n) = &t.sni {
        check_dns(format!("{f}.sni"), n)?;
    }
    for (j, a) in t.alpn.iter().enumerate() {
        if a.is_empty() || a.len() > 255 {
            return bad(format!("{f}.alpn[{j}]"), "an ALPN protocol is 1-255 bytes");
        }
    }
    if let Some(c) = &t.cert {
        check_name(format!("{f}.cert"), c)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::validate;
    use crate::expect::Expect;

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

    /// Impairments out of range are refused at their field, located in
    /// the file.
    #[test]
    fn bad_impairments_name_their_field_and_line() {
        let text = "version: 1\nhosts: {a: {}, b: {}}\nlinks:\n  - a: {host: a, ifname: e0}\n    b: {host: b, ifname: e0}\n    impair:\n      seed: 1\n      a_to_b: {loss: 120, delay_ms: 5, jitter_ms: 9}\n      b_to_a: {reorder: 5, rate_kbit: 0}\n";
        let e = super::super::parse(Path::new("s.yaml"), "s", text).unwrap_err();
        let got: Vec<(String, usize)> = (e.errors().iter())
            .map(|e| (e.field.clone(), e.line))
            .collect();
        for f in [
            "links[0].impair.a_to_b.loss",
            "links[0].impair.a_to_b.jitter_ms",
            "links[0].impair.b_to_a.reorder",
            "links[0].impair.b_to_a.rate_kbit",
        ] {
            assert!(got.iter().any(|(g, l)| g == f && *l >= 8), "{f} in {got:?}");
        }
        let none = "version: 1\nhosts: {a: {}, b: {}}\nlinks:\n  - a: {host: a, ifname: e0}\n    b: {host: b, ifname: e0}\n    impair: {seed: 1}\n";
        let e = super::super::parse(Path::new("s.yaml"), "s", none).unwrap_err();
        assert_eq!(e.errors()[0].field, "links[0].impair", "{e}");
    }

    /// The schema of `scenarios/README.md`'s L7 example, as the lab gets
    /// it: certificates used but not listed get `dns: [NAME]`, file paths
    /// are the scenario file's, HTTP and WebSocket steps are TCP.
    #[test]
    fn l7_fields_reach_the_lab() {
        use crate::l7::spec::{CertSpec, FileSource, L7Step};
        let text = r#"version: 1
tls:
  certs:
    lb: {dns: [app.example]}
hosts:
  client: {}
  lb:
    files:
      haproxy.cfg: haproxy/edge.cfg
      notes.txt: {text: "hi\n"}
    processes:
      - {name: web, http: {listen: 8443, tls: {cert: server1, client_ca: true}, fail: {nth: 2, status: 503}}}
traffic:
  - name: get
    from: client
    to: "10.0.1.1:443"
    http: {method: GET, path: /, host: app.example, headers: {X-Extra: "1"}, tls: {sni: app.example, alpn: [http/1.1], cert: client1}}
    expect: {status: 200, headers: {X-Served-By: lb/web}, body: "x"}
  - name: ws
    from: client
    to: "10.0.1.1:80"
    websocket: {path: /chat, messages: [{text: hello}, {binary: "0102"}]}
"#;
        let x = crate::oakestra::parse(Path::new("/s/x.yaml"), "x", text).unwrap();
        let names: Vec<&str> = x.certs.keys().map(String::as_str).collect();
        assert_eq!(names, ["client1", "lb", "server1"]);
        assert_eq!(x.certs["server1"], CertSpec::named("server1"));
        let lb = &x.hosts["lb"];
        assert_eq!(
            lb.files["haproxy.cfg"],
            FileSource::Path("/s/haproxy/edge.cfg".into())
        );
        assert_eq!(lb.files["notes.txt"], FileSource::Text("hi\n".into()));
        let web = lb.processes[0].http.as_ref().unwrap();
        assert_eq!(
            (web.listen, web.status, web.fail.unwrap().status),
            (8443, 200, 503)
        );
        assert_eq!(x.traffic[0].proto, crate::values::Proto::Tcp);
        assert!(
            matches!(x.traffic[0].expect, Expect::Http(ref h) if h.status() == 200 && h.body.as_deref() == Some("x"))
        );
        assert!(matches!(&x.traffic[1].l7, Some(L7Step::WebSocket(w)) if w.messages.len() == 2));
    }

    /// Each wrong L7 field is refused at its own path.
    #[test]
    fn l7_mistakes_name_their_field() {
        let cases = [
            ("tls: {certs: {a: {dns: [\"x y\"]}}}\n", "tls.certs.a.dns[0]"),
            ("tls: {certs: {a: {}}}\n", "tls.certs.a"),
            (
                "hosts: {b: {files: {tls: {text: x}}}}\n",
                "hosts.b.files.tls",
            ),
            (
                "hosts: {b: {processes: [{name: p, http: {listen: 1, status: 42}}]}}\n",
                "hosts.b.processes[0].http.status",
            ),
            (
                "hosts: {b: {processes: [{name: p, cmd: [x], http: {listen: 1}}]}}\n",
                "hosts.b.processes[0]",
            ),
            (
                "hosts: {b: {processes: [{name: p, http: {listen: 1, reset: {nth: 0}}}]}}\n",
                "hosts.b.processes[0].http.reset.nth",
            ),
            (
                "traffic: [{name: t, from: a, to: \"1.2.3.4:80\", http: {path: x}}]\n",
                "traffic[1].http.path",
            ),
            (
                "traffic: [{name: t, from: a, to: \"1.2.3.4:80\", http: {}, websocket: {messages: [{text: a}]}}]\n",
                "traffic[1]",
            ),
            (
                "traffic: [{name: t, from: a, to: \"1.2.3.4:80\", websocket: {messages: [{text: a}]}, expect: {status: 200}}]\n",
                "traffic[1].expect",
            ),
            (
                "traffic: [{name: t, from: a, proto: tcp, to: \"1.2.3.4:80\", expect: {status: 200}}]\n",
                "traffic[1].expect",
            ),
            (
                "traffic: [{name: t, from: a, to: \"1.2.3.4:80\", http: {headers: {\"a b\": c}}}]\n",
                "traffic[1].http.headers.\"a b\"",
            ),
        ];
        for (extra, field) in cases {
            // A second `traffic` or `hosts` would be a duplicate key: merge.
            let text = if let Some(rest) = extra.strip_prefix("traffic: [") {
                OK.replace(
                    "  - {name: s0, from: a, proto: icmp, to: 10.0.0.2}\n",
                    &format!(
                        "  - {{name: s0, from: a, proto: icmp, to: 10.0.0.2}}\n  - {}",
                        rest.trim_end().trim_end_matches(']')
                    ),
                )
            } else if let Some(rest) = extra.strip_prefix("hosts: {") {
                OK.replace(
                    "hosts: {a: {}}",
                    &format!("hosts: {{a: {{}}, {}", rest.trim_end()),
                )
            } else {
                format!("{OK}{extra}")
            };
            let (sc, found) = super::super::parse_unchecked(Path::new("s.yaml"), "s", &text)
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            let _ = sc;
            assert!(
                found.iter().any(|e| e.field == field),
                "{text}: wanted {field}, got {found:?}"
            );
        }
    }

    /// A load step's mistakes each name their field; a good one reaches
    /// the lab with its bounds.
    #[test]
    fn load_steps_are_checked() {
        let step = |extra: &str| {
            format!(
                "version: 1\nhosts: {{a: {{}}}}\ntraffic:\n  - {{name: u, from: a, proto: udp, to: \"1.2.3.4:80\", sport: 20005}}\n  - {{name: t, from: a, proto: tcp, to: \"1.2.3.4:80\", {extra}}}\n"
            )
        };
        let cases = [
            (
                "load: {flows: 0, sport_base: 1000}",
                "traffic[1].load.flows",
            ),
            (
                "load: {flows: 10, concurrency: 0, sport_base: 1000}",
                "traffic[1].load.concurrency",
            ),
            (
                "load: {flows: 10, sport_base: 65530}",
                "traffic[1].load.sport_base",
            ),
            (
                "load: {flows: 10, sport_base: 1000, sample: 11}",
                "traffic[1].load.sample",
            ),
            (
                "load: {flows: 10, sport_base: 1000}, sport: 5",
                "traffic[1].sport",
            ),
            (
                "load: {flows: 10, sport_base: 1000}, payload_bytes: 5",
                "traffic[1].payload_bytes",
            ),
            (
                "load: {flows: 10, sport_base: 1000}, expect: silence",
                "traffic[1].expect",
            ),
            (
                "load: {flows: 10, sport_base: 1000}, expect: {ok: all, status: 200}",
                "traffic[1].expect.status",
            ),
            ("expect: {ok: all}", "traffic[1].expect"),
            // A plain TCP or UDP step's payload length: within bounds.
            ("payload_bytes: 0", "traffic[1].payload_bytes"),
            ("payload_bytes: 65488", "traffic[1].payload_bytes"),
            // `df` is a UDP step's.
            ("df: true", "traffic[1].df"),
            (
                "load: {flows: 10, sport_base: 1000}, df: true",
                "traffic[1].df",
            ),
        ];
        for (extra, field) in cases {
            let text = step(extra);
            let (_, found) = super::super::parse_unchecked(Path::new("s.yaml"), "s", &text)
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(
                found.iter().any(|e| e.field == field),
                "{text}: wanted {field}, got {found:?}"
            );
        }
        // The UDP step's port is another protocol's: no clash. A TCP step
        // inside the range clashes.
        let text = step("load: {flows: 10, sport_base: 20000}");
        let (_, found) = super::super::parse_unchecked(Path::new("s.yaml"), "s", &text).unwrap();
        assert!(found.is_empty(), "{found:?}");
        let clash = text.replace("proto: udp", "proto: tcp");
        let (_, found) = super::super::parse_unchecked(Path::new("s.yaml"), "s", &clash).unwrap();
        assert!(
            found
                .iter()
                .any(|e| e.field == "traffic[1].load.sport_base"),
            "{found:?}"
        );
        let text = step(
            "load: {flows: 10, concurrency: 4, sport_base: 1000}, payload_bytes: 100, expect: {ok: 9, spread: {each_of: [b, c], at_least: 2}, never: [d]}",
        );
        let x = crate::oakestra::parse(Path::new("s.yaml"), "s", &text).unwrap();
        let l = x.traffic[1].load.as_ref().unwrap();
        assert_eq!(
            (l.flows, l.concurrency, l.sport_base, l.sample),
            (10, 4, 1000, 1)
        );
        assert_eq!(x.traffic[1].payload_bytes, 100);
        assert!(matches!(&x.traffic[1].expect, Expect::Load(e) if e.never == ["d"]));
        // A plain step's `payload_bytes` is its payload: a fixed pattern.
        let text = step("payload_bytes: 20").replace("proto: udp", "proto: udp, df: true");
        let x = crate::oakestra::parse(Path::new("s.yaml"), "s", &text).unwrap();
        assert_eq!(x.traffic[1].payload, "0123456789abcdef0123");
        assert!(x.traffic[0].df && !x.traffic[1].df);
        // Not an ICMP step's.
        let text = step("payload_bytes: 20")
            .replace("proto: tcp, to: \"1.2.3.4:80\"", "proto: icmp, to: 1.2.3.4");
        let (_, found) = super::super::parse_unchecked(Path::new("s.yaml"), "s", &text).unwrap();
        assert!(
            found.iter().any(|e| e.field == "traffic[1].payload_bytes"),
            "{found:?}"
        );
    }

    /// Connections that span steps: the steps `on` one get its opener's
    /// host, protocol, destination and port; a send on an unknown or
    /// closed connection, a connection opened twice or never closed, and
    /// an `on` step that gives the opener's fields are refused at their
    /// field, with file and line.
    #[test]
    fn sessions_are_filled_and_their_errors_name_file_line_and_field() {
        let head = "version: 1\nhosts: {a: {}, b: {}}\ntraffic:\n";
        let open =
            "  - {name: o, from: a, proto: tcp, to: \"10.0.0.2:7\", sport: 5000, open: c1}\n";
        let close = "  - {name: x, on: c1, close: true}\n";
        let ok = format!("{head}{open}  - {{name: u, on: c1, payload: more}}\n{close}");
        let sc = super::super::parse(Path::new("s.yaml"), "s", &ok).unwrap();
        let u = &sc.traffic[1];
        assert_eq!(
            (u.from.as_str(), u.proto, u.to.as_str(), u.sport),
            (
                "a",
                Some(crate::values::Proto::Tcp),
                "10.0.0.2:7",
                Some(5000)
            )
        );
        assert!(sc.traffic[2].close);
        let cases = [
            (
                format!("{head}{open}  - {{name: u, on: c2}}\n{close}"),
                "traffic[1].on",
                5,
                "no earlier step opens a connection `c2`",
            ),
            (
                format!("{head}{open}{close}  - {{name: u, on: c1}}\n"),
                "traffic[2].on",
                6,
                "was closed by traffic[1]",
            ),
            (
                format!("{head}{open}"),
                "traffic[0].open",
                4,
                "never closed",
            ),
            (
                format!("{head}{open}  - {{name: u, from: a, proto: tcp, to: \"10.0.0.2:7\", open: c1}}\n{close}"),
                "traffic[1].open",
                5,
                "already open",
            ),
            (
                format!("{head}{open}  - {{name: u, on: c1, to: \"10.0.0.3:7\"}}\n{close}"),
                "traffic[1].to",
                5,
                "takes its opener's",
            ),
            (
                format!("{head}  - {{name: o, from: a, proto: icmp, to: 10.0.0.2, open: c1}}\n{close}"),
                "traffic[0].open",
                4,
                "plain TCP or UDP",
            ),
            (
                format!("{head}  - {{name: o, from: a, proto: tcp, to: \"10.0.0.2:7\", close: true}}\n"),
                "traffic[0].close",
                4,
                "the step is `on`",
            ),
            (
                format!("{head}  - {{name: o, proto: tcp, to: \"10.0.0.2:7\"}}\n"),
                "traffic[0]",
                4,
                "missing field `from`",
            ),
        ];
        for (text, field, line, msg) in cases {
            let e = super::super::parse(Path::new("s.yaml"), "s", &text).unwrap_err();
            assert_eq!((e.field.as_str(), e.line), (field, line), "{e}");
            assert!(e.message.contains(msg), "{e}");
            assert!(e.to_string().starts_with(&format!("s.yaml:{line}:")), "{e}");
        }
    }
}
