//! Traces of synthetic L7 captures: TCP connections through a proxy host
//! carrying plaintext HTTP, TLS (sessions run in memory with rustls, their
//! secrets logged) and WebSocket frames, wrapped into frames with
//! etherparse, read at L7 and stitched into legs.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use etherparse::PacketBuilder;
use pcap_file::DataLink;

use super::*;
use crate::capture::Captured;

const SC: &str = "version: 1
hosts:
  client: {}
  lb:
    processes:
      - {name: haproxy, cmd: [sleep, '1']}
  server: {}
links:
  - a: {host: client, ifname: eth0, addr: [10.0.1.2/24]}
    b: {host: lb, ifname: eth0, addr: [10.0.1.1/24]}
  - a: {host: lb, ifname: eth1, addr: [10.0.2.1/24]}
    b: {host: server, ifname: eth0, addr: [10.0.2.10/24]}
traffic:
  - {name: get, from: client, proto: tcp, to: '10.0.1.1:443'}
";

fn lab() -> LabView {
    let sc = crate::oakestra::parse(Path::new("t.yaml"), "t", SC).unwrap();
    LabView::of(&sc)
}

/// One TCP connection's wire: its two ends and where each direction's
/// frames are seen (out at the sender, in at the receiver).
struct Wire {
    client: ([u8; 4], u16),
    server: ([u8; 4], u16),
    /// `host/ifname` of the client's and the server's side.
    at: (&'static str, &'static str),
}

/// The frames of a connection on `w` that carries `msgs` (from the
/// client when `true`), each message in segments of at most 1400 bytes:
/// handshake, data with acknowledgements, FINs. `ts` advances.
fn connection(w: &Wire, msgs: &[(bool, Vec<u8>)], ts: &mut u64) -> Vec<Captured> {
    let mut out = Vec::new();
    // Each connection its own initial sequence numbers, as on a real host
    // (a packet's identity leaves out addresses and ports).
    let mut cseq = 1_000_000 + 7 * u32::from(w.client.1) + 3 * u32::from(w.server.1);
    let mut sseq = 9_000_000 + 13 * u32::from(w.server.1) + u32::from(w.client.0[2]);
    let mut seg = |from_client: bool, flags: &str, seq: u32, ack: u32, data: &[u8]| {
        let ((src, sp), (dst, dp)) = if from_client {
            (w.client, w.server)
        } else {
            (w.server, w.client)
        };
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, seq, 64000);
        let b = if flags.contains('S') { b.syn() } else { b };
        let b = if flags.contains('F') { b.fin() } else { b };
        let b = if flags.contains('.') { b.ack(ack) } else { b };
        let b = if flags.contains('P') { b.psh() } else { b };
        let mut v = Vec::new();
        b.write(&mut v, data).unwrap();
        let (a, z) = if from_client { w.at } else { (w.at.1, w.at.0) };
        for (place, outgoing) in [(a, true), (z, false)] {
            *ts += 1_000;
            let (host, ifname) = place.split_once('/').unwrap();
            out.push(Captured {
                ts_ns: *ts,
                host: host.into(),
                ifname: ifname.into(),
                outgoing,
                data: v.clone(),
                link: DataLink::ETHERNET,
            });
        }
        *ts += 100_000;
    };
    seg(true, "S", cseq, 0, &[]);
    seg(false, "S.", sseq, cseq + 1, &[]);
    cseq += 1;
    sseq += 1;
    seg(true, ".", cseq, sseq, &[]);
    for (from_client, m) in msgs {
        for chunk in m.chunks(1400) {
            let n = chunk.len() as u32;
            if *from_client {
                seg(true, "P.", cseq, sseq, chunk);
                cseq += n;
                seg(false, ".", sseq, cseq, &[]);
            } else {
                seg(false, "P.", sseq, cseq, chunk);
                sseq += n;
                seg(true, ".", cseq, sseq, &[]);
            }
        }
    }
    seg(true, "F.", cseq, sseq, &[]);
    seg(false, "F.", sseq, cseq + 1, &[]);
    seg(true, ".", cseq + 1, sseq + 1, &[]);
    out
}

const LEG1_TLS: Wire = Wire {
    client: ([10, 0, 1, 2], 40000),
    server: ([10, 0, 1, 1], 443),
    at: ("client/eth0", "lb/eth0"),
};

fn leg2(port: u16) -> Wire {
    Wire {
        client: ([10, 0, 2, 1], 51234),
        server: ([10, 0, 2, 10], port),
        at: ("lb/eth1", "server/eth0"),
    }
}

/// A key log that keeps what rustls logs, in NSS format.
#[derive(Debug, Default)]
struct Keys(Mutex<Vec<u8>>);

impl rustls::KeyLog for Keys {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut k = self.0.lock().unwrap();
        writeln!(k, "{label} {} {}", hex(client_random), hex(secret)).unwrap();
    }
}

fn suite(n: usize) -> rustls::SupportedCipherSuite {
    use rustls::crypto::ring::cipher_suite as cs;
    [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ][n]
}

/// A TLS 1.3 session run in memory: `request` sent by the client once it
/// may, `response` by the server once it has the request; each flight
/// of bytes in order with its direction. Secrets go to `keys` when given.
fn tls_session(
    suite_no: usize,
    request: &[u8],
    response: &[u8],
    keys: Option<Arc<Keys>>,
) -> Vec<(bool, Vec<u8>)> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    let ck = rcgen::generate_simple_self_signed(vec!["app.example".to_string()]).unwrap();
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite(suite_no)],
        ..rustls::crypto::ring::default_provider()
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let mut cc = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cc.alpn_protocols = vec![b"http/1.1".to_vec()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key));
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    if let Some(k) = keys {
        cc.key_log = k.clone();
        sc.key_log = k;
    }
    let name = ServerName::try_from("app.example").unwrap();
    let mut c = rustls::ClientConnection::new(Arc::new(cc), name).unwrap();
    let mut s = rustls::ServerConnection::new(Arc::new(sc)).unwrap();
    c.writer().write_all(request).unwrap();
    let mut flights = Vec::new();
    let (mut got, mut answered) = (Vec::new(), false);
    for _ in 0..20 {
        let mut moved = false;
        if c.wants_write() {
            let mut b = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut b).unwrap();
            }
            s.read_tls(&mut &b[..]).unwrap();
            s.process_new_packets().unwrap();
            flights.push((true, b));
            moved = true;
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if !answered && got.len() >= request.len() {
            s.writer().write_all(response).unwrap();
            answered = true;
        }
        if s.wants_write() {
            let mut b = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut b).unwrap();
            }
            c.read_tls(&mut &b[..]).unwrap();
            c.process_new_packets().unwrap();
            flights.push((false, b));
            moved = true;
        }
        if !moved {
            break;
        }
    }
    assert!(answered, "the server never had the request");
    flights
}

const REQ: &[u8] = b"GET / HTTP/1.1\r\nHost: app.example\r\nX-Request-Id: hoplab-0-1\r\n\r\n";
const REQ2: &[u8] = b"GET / HTTP/1.1\r\nHost: app.example\r\nX-Request-Id: hoplab-0-1\r\n\
X-Forwarded-For: 10.0.1.2\r\n\r\n";
const RES: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: hoplab-0-1\r\n\r\nok";

fn plain(req: &[u8]) -> Vec<(bool, Vec<u8>)> {
    vec![(true, req.to_vec()), (false, RES.to_vec())]
}

/// The trace of two legs, `a` then `b`, with `keys`.
fn trace(a: &[(bool, Vec<u8>)], wa: &Wire, b: &[(bool, Vec<u8>)], wb: &Wire, keys: &[u8]) -> Trace {
    // Leg 2 starts while leg 1 is under way, as a proxy's does.
    let (mut t1, mut t2) = (1_000_000_000, 1_000_350_000);
    let mut frames = connection(wa, a, &mut t1);
    frames.extend(connection(wb, b, &mut t2));
    frames.sort_by_key(|f| f.ts_ns);
    let mut lab = lab();
    lab.tls_keys = KeyLog::parse(keys);
    let t = build(&lab, &frames, &[]);
    assert_eq!(
        Trace::from_yaml(&t.to_yaml()).unwrap(),
        t,
        "{}",
        t.to_yaml()
    );
    t
}

fn notes(packets: &[Packet]) -> Vec<String> {
    packets.iter().filter_map(|p| p.l7.clone()).collect()
}

#[test]
fn plaintext_http_through_a_proxy_is_one_flow_of_two_legs() {
    let t = trace(&plain(REQ), &LEG1_TLS, &plain(REQ2), &leg2(8080), b"");
    let f = &t.flows[0];
    assert!(t.other.is_empty(), "{}", t.to_yaml());
    assert_eq!(f.legs.len(), 1, "{}", t.to_yaml());
    let l = &f.legs[0];
    assert_eq!(
        l.via,
        "ended at lb (haproxy), re-opened 10.0.2.1:eph1 > 10.0.2.10:8080"
    );
    assert_eq!(l.joined_by, "the same X-Request-Id hoplab-0-1");
    assert_eq!(l.changed, ["header added: x-forwarded-for: 10.0.1.2"]);
    assert_eq!(
        notes(&f.packets),
        [
            "HTTP GET / host=app.example id=hoplab-0-1",
            "HTTP 200 OK id=hoplab-0-1"
        ]
    );
    assert_eq!(notes(&l.packets), notes(&f.packets));
    // The proxy's port is never shown as a number.
    let y = t.to_yaml();
    assert!(!y.contains("51234"), "{y}");
    assert!(
        y.contains("10.0.2.1:eph1 > 10.0.2.10:8080 tcp S seq=0"),
        "{y}"
    );
}

#[test]
fn tls_passed_through_is_joined_by_its_clienthello_random() {
    let s = tls_session(0, REQ, RES, None);
    let t = trace(&s, &LEG1_TLS, &s, &leg2(443), b"");
    let f = &t.flows[0];
    assert_eq!(f.legs.len(), 1, "{}", t.to_yaml());
    let l = &f.legs[0];
    assert_eq!(l.joined_by, "the same ClientHello random");
    assert_eq!(l.changed, ["TLS passed through (one session on both legs)"]);
    let n = notes(&f.packets);
    assert_eq!(n[0], "TLS ClientHello sni=app.example alpn=http/1.1");
    assert!(
        n[1].starts_with(
            "TLS ServerHello TLS_AES_128_GCM_SHA256; TLS ChangeCipherSpec; TLS AppData "
        ),
        "{n:?}"
    );
    assert_eq!(notes(&l.packets), n);
    // Without keys nothing inside is named.
    assert!(!n.iter().any(|x| x.contains("HTTP")), "{n:?}");
}

#[test]
fn tls_ended_at_the_proxy_is_decrypted_and_joined_by_its_request_id() {
    let keys = Arc::new(Keys::default());
    let s = tls_session(1, REQ, RES, Some(keys.clone()));
    let k = keys.0.lock().unwrap().clone();
    let t = trace(&s, &LEG1_TLS, &plain(REQ2), &leg2(8080), &k);
    let f = &t.flows[0];
    assert_eq!(f.legs.len(), 1, "{}", t.to_yaml());
    let l = &f.legs[0];
    assert_eq!(
        l.joined_by,
        "the same X-Request-Id hoplab-0-1 (read in decrypted TLS)"
    );
    assert_eq!(
        l.changed,
        ["TLS ended", "header added: x-forwarded-for: 10.0.1.2"]
    );
    let n = notes(&f.packets).join("\n");
    assert!(n.contains("TLS ServerHello TLS_AES_256_GCM_SHA384"), "{n}");
    assert!(n.contains("(EncryptedExtensions, Certificate"), "{n}");
    assert!(
        n.contains(" B (HTTP GET / host=app.example id=hoplab-0-1)"),
        "{n}"
    );
    assert!(n.contains(" B (HTTP 200 OK id=hoplab-0-1)"), "{n}");
}

#[test]
fn tls_reencrypted_by_the_proxy_is_decrypted_on_both_legs() {
    let keys = Arc::new(Keys::default());
    let a = tls_session(0, REQ, RES, Some(keys.clone()));
    let b = tls_session(2, REQ2, RES, Some(keys.clone()));
    let k = keys.0.lock().unwrap().clone();
    let t = trace(&a, &LEG1_TLS, &b, &leg2(8443), &k);
    let f = &t.flows[0];
    assert_eq!(f.legs.len(), 1, "{}", t.to_yaml());
    let l = &f.legs[0];
    assert_eq!(
        l.joined_by,
        "the same X-Request-Id hoplab-0-1 (read in decrypted TLS)"
    );
    assert_eq!(
        l.changed,
        [
            "TLS ended; a new TLS session started (another ClientHello random)",
            "header added: x-forwarded-for: 10.0.1.2"
        ]
    );
    let n = notes(&l.packets).join("\n");
    assert!(
        n.contains("TLS ServerHello TLS_CHACHA20_POLY1305_SHA256"),
        "{n}"
    );
    assert!(
        n.contains("(HTTP GET / host=app.example id=hoplab-0-1)"),
        "{n}"
    );
    // Without the keys the legs share nothing: two flows' worth of packets.
    let t = trace(&a, &LEG1_TLS, &b, &leg2(8443), b"");
    assert!(t.flows[0].legs.is_empty());
    assert!(!t.other.is_empty());
}

#[test]
fn websocket_frames_are_named_after_the_upgrade() {
    use tungstenite::protocol::{Role, WebSocket};
    use tungstenite::Message;
    let frames = |role, msgs: &[Message]| {
        let mut ws = WebSocket::from_raw_socket(std::io::Cursor::new(Vec::new()), role, None);
        for m in msgs {
            ws.send(m.clone()).unwrap();
        }
        ws.get_ref().get_ref().clone()
    };
    let msgs = [Message::text("hello"), Message::binary(vec![1u8, 2, 3])];
    let up = b"GET /ws HTTP/1.1\r\nHost: app.example\r\nX-Request-Id: hoplab-0-1\r\n\
Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";
    let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    let session = vec![
        (true, up.to_vec()),
        (false, ok.to_vec()),
        (true, frames(Role::Client, &msgs)),
        (false, frames(Role::Server, &msgs)),
    ];
    let t = trace(&session, &LEG1_TLS, &session, &leg2(8080), b"");
    let f = &t.flows[0];
    assert_eq!(f.legs.len(), 1, "{}", t.to_yaml());
    assert_eq!(
        notes(&f.packets),
        [
            "HTTP GET /ws host=app.example id=hoplab-0-1",
            "HTTP 101 Switching Protocols",
            "WS text 5 B masked; WS binary 3 B masked",
            "WS text 5 B; WS binary 3 B",
        ]
    );
}

/// Payloads that are not a whole HTTP head or a TLS hello name nothing,
/// and a connection that shares nothing with the step's is no leg.
#[test]
fn other_payloads_are_not_l7_and_join_nothing() {
    let a = vec![
        (true, b"GET /users/123".to_vec()),
        (false, b"hoplab".to_vec()),
    ];
    let t = trace(&a, &LEG1_TLS, &a, &leg2(8080), b"");
    assert!(t.flows[0].legs.is_empty());
    let all = t.flows[0].packets.iter().chain(&t.other);
    assert!(all.clone().all(|p| p.l7.is_none()));
    assert!(!t.to_yaml().contains("l7:"));
}

/// The run's key log goes into the pcapng before the packets, is read
/// back, and lets tshark show the HTTP inside TLS with no settings.
#[test]
fn the_pcapng_carries_the_key_log_and_tshark_decrypts_with_it() {
    use crate::capture::{read_bytes, write_pcapng, Frame, Iface};
    let keys = Arc::new(Keys::default());
    let s = tls_session(0, REQ, RES, Some(keys.clone()));
    let k = keys.0.lock().unwrap().clone();
    let mut ts = 1_000_000_000;
    let caps = connection(&LEG1_TLS, &s, &mut ts);
    let ifaces: Vec<Iface> = ["client/eth0", "lb/eth0"]
        .iter()
        .map(|l| {
            let (host, ifname) = l.split_once('/').unwrap();
            Iface {
                host: host.into(),
                ifname: ifname.into(),
                link: DataLink::ETHERNET,
            }
        })
        .collect();
    let frames: Vec<Frame> = (caps.iter())
        .filter(|c| c.host == "client")
        .map(|c| Frame {
            ts_ns: c.ts_ns,
            iface: 0,
            outgoing: c.outgoing,
            data: c.data.clone(),
        })
        .collect();
    let path = std::env::temp_dir().join(format!("hoplab-dsb-{}.pcapng", std::process::id()));
    write_pcapng(&path, "t", &ifaces, &frames, &[], &k).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let back = read_bytes(&bytes).unwrap();
    assert!(back.damage.is_empty(), "{:?}", back.damage);
    assert_eq!(back.tls_keys, k);
    assert_eq!(back.frames.len(), frames.len());
    // The file alone decrypts, as `hoplab trace capture.pcapng` reads it.
    let mut lab = lab();
    lab.tls_keys = KeyLog::parse(&back.tls_keys);
    let t = build(&lab, &back.frames, &[]);
    let n = notes(&t.flows[0].packets).join("\n");
    assert!(
        n.contains("(HTTP GET / host=app.example id=hoplab-0-1)"),
        "{n}"
    );
    let out = std::process::Command::new("tshark")
        .args(["-r", path.to_str().unwrap(), "-Y", "http", "-T", "fields"])
        .args(["-e", "http.request.method", "-e", "http.response.code"])
        .output()
        .expect("tshark runs");
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["GET", "200"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// report.md shows the legs, what joined them and what the proxy changed.
#[test]
fn the_markdown_report_shows_the_legs_and_the_proxys_changes() {
    let t = trace(&plain(REQ), &LEG1_TLS, &plain(REQ2), &leg2(8080), b"");
    let md = crate::report::markdown(&t, Path::new("capture.pcapng"));
    for want in [
        "The request crossed 2 connections:\n\n1. the step's own connection\n\
         2. ended at lb (haproxy), re-opened 10.0.2.1:eph1 > 10.0.2.10:8080 (joined by the same \
         X-Request-Id hoplab-0-1): header added: x-forwarded-for: 10.0.1.2\n",
        "### Leg 1: the step's own connection\n",
        "### Leg 2: ended at lb (haproxy), re-opened 10.0.2.1:eph1 > 10.0.2.10:8080\n\n\
         - joined by the same X-Request-Id hoplab-0-1\n\
         - changed: header added: x-forwarded-for: 10.0.1.2\n",
        "### Leg 2 packet 4: tcp P. 10.0.2.1:eph1 > 10.0.2.10:8080 (90 B payload) (delivered to \
         server)\n\nL7: `HTTP GET / host=app.example id=hoplab-0-1`\n",
    ] {
        assert!(md.contains(want), "{want}\n---\n{md}");
    }
}

/// report.html says where a leg started, what joined it and what the
/// proxy changed once, in the ladder's heading of the leg; its hop tables
/// below are only numbered.
#[test]
fn the_html_report_names_each_leg_once() {
    let t = trace(&plain(REQ), &LEG1_TLS, &plain(REQ2), &leg2(8080), b"");
    let html = crate::report::html::report(&t, "capture.pcapng");
    for text in [
        "joined by the same X-Request-Id hoplab-0-1",
        "changed: header added: x-forwarded-for: 10.0.1.2",
        "ended at lb (haproxy), re-opened 10.0.2.1:eph1 &gt; 10.0.2.10:8080",
    ] {
        assert_eq!(html.matches(text).count(), 1, "{text}\n---\n{html}");
    }
    assert!(html.contains("Leg 2, hop by hop"), "{html}");
}

/// A changed L7 summary or leg is named by the per-hop diff.
#[test]
fn the_diff_names_changed_l7_summaries_and_legs() {
    let a = trace(&plain(REQ), &LEG1_TLS, &plain(REQ2), &leg2(8080), b"");
    let b = trace(&plain(REQ), &LEG1_TLS, &plain(REQ), &leg2(8080), b"");
    let d = diff(&a.to_yaml(), &b.to_yaml());
    assert!(
        d.iter().any(|l| l
            == "flow get, leg 2: changed: header added: x-forwarded-for: \
             10.0.1.2 -> "),
        "{d:?}"
    );
    assert!(
        d.iter()
            .any(|l| l.starts_with("flow get, leg 2, packet 4 (tcp P. 10.0.2.1:eph1 > ")),
        "{d:?}"
    );
}

/// `n` steps (`get0`, ...), each an HTTP request from the client through
/// the proxy, whose second leg goes on the wire `leg2(i)`: the lab and the
/// frames, in time order.
fn proxied(n: u16, leg2: impl Fn(u16) -> Wire) -> (LabView, Vec<Captured>) {
    let mut lab = lab();
    let step = lab.steps[0].clone();
    lab.steps = (0..n)
        .map(|i| Step {
            name: format!("get{i}"),
            port: 40000 + i,
            ..step.clone()
        })
        .collect();
    let mut frames = Vec::new();
    for i in 0..n {
        let id = format!("X-Request-Id: hoplab-0-{i}\r\n\r\n");
        let req = format!("GET /{i} HTTP/1.1\r\nHost: app.example\r\n{id}");
        let res = format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n{id}");
        let msgs = [(true, req.into_bytes()), (false, res.into_bytes())];
        let a = Wire {
            client: ([10, 0, 1, 2], 40000 + i),
            server: ([10, 0, 1, 1], 80),
            at: ("client/eth0", "lb/eth0"),
        };
        let mut t1 = 1_000_000_000 + u64::from(i) * 10_000_000;
        let mut t2 = t1 + 350_000;
        frames.extend(connection(&a, &msgs, &mut t1));
        frames.extend(connection(&leg2(i), &msgs, &mut t2));
    }
    frames.sort_by_key(|f| f.ts_ns);
    (lab, frames)
}

/// Many requests, each through the proxy on its own two connections:
/// every flow gets its own leg and nothing is left over. The count is
/// `HOPLAB_L7_REQUESTS` (default 200); the time to build the trace is
/// printed (`--nocapture`), for measuring with a large count in release.
#[test]
fn many_requests_through_a_proxy_each_get_their_own_leg() {
    let n: u16 = std::env::var("HOPLAB_L7_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (lab, frames) = proxied(n, |i| Wire {
        client: ([10, 0, 2, 1], 20000 + i),
        server: ([10, 0, 2, 10], 8080),
        at: ("lb/eth1", "server/eth0"),
    });
    let start = std::time::Instant::now();
    let t = build(&lab, &frames, &[]);
    eprintln!(
        "trace of {n} HTTP requests through a proxy ({} frames): {:?}",
        frames.len(),
        start.elapsed()
    );
    assert!(t.other.is_empty(), "{} packets of no flow", t.other.len());
    for (i, f) in t.flows.iter().enumerate() {
        assert_eq!(f.legs.len(), 1, "flow {i}");
        let want = format!("re-opened 10.0.2.1:eph{} > 10.0.2.10:8080", i + 1);
        assert!(f.legs[0].via.ends_with(&want), "{}", f.legs[0].via);
        assert_eq!(
            f.legs[0].joined_by,
            format!("the same X-Request-Id hoplab-0-{i}")
        );
    }
}

/// A kernel may open two connections from one source port when their
/// destinations differ: each is its own `ephN`, on its own leg and on
/// every packet of it, whatever order the trace reads them in.
#[test]
fn one_source_port_towards_two_servers_is_two_ephemeral_endpoints() {
    // The same source port, another server port.
    let (lab, frames) = proxied(2, |i| Wire {
        client: ([10, 0, 2, 1], 43754),
        server: ([10, 0, 2, 10], 8080 + i),
        at: ("lb/eth1", "server/eth0"),
    });
    let t = build(&lab, &frames, &[]);
    assert!(t.other.is_empty(), "{} packets of no flow", t.other.len());
    for (i, f) in t.flows.iter().enumerate() {
        assert_eq!(f.legs.len(), 1, "flow {i}");
        let (n, port) = (i + 1, 8080 + i);
        let want = format!("re-opened 10.0.2.1:eph{n} > 10.0.2.10:{port}");
        assert!(f.legs[0].via.ends_with(&want), "{}", f.legs[0].via);
        let (me, other) = (format!("10.0.2.1:eph{n}"), format!("10.0.2.1:eph{}", 3 - n));
        for p in &f.legs[0].packets {
            assert!(p.packet.contains(&me), "flow {i}: {}", p.packet);
            for h in &p.hops {
                let shown = format!("{} > {}", h.hdr.src, h.hdr.dst);
                assert!(shown.contains(&me), "flow {i}: {shown}");
                assert!(!shown.contains(&other), "flow {i}: {shown}");
            }
        }
    }
}

/// A connection the proxy opens on its own (a health check) is no leg:
/// it stays among the packets of no flow, its numbers relative and its
/// port `ephN`. The pcapng's comments name each packet's L7 summary, and
/// the ClientHello's random by a digest the trace leaves out.
#[test]
fn a_proxys_own_connection_is_no_leg_and_comments_carry_the_random_digest() {
    let s = tls_session(0, REQ, RES, None);
    let check = Wire {
        client: ([10, 0, 2, 1], 33333),
        server: ([10, 0, 2, 10], 443),
        at: ("lb/eth1", "server/eth0"),
    };
    let (mut t1, mut t2, mut t3) = (1_000_000_000, 1_000_350_000, 900_000_000);
    let mut frames = connection(&LEG1_TLS, &s, &mut t1);
    frames.extend(connection(&leg2(443), &s, &mut t2));
    let probe = vec![(true, b"OPTIONS / HTTP/1.0\r\n\r\n".to_vec())];
    frames.extend(connection(&check, &probe, &mut t3));
    frames.sort_by_key(|f| f.ts_ns);
    let (t, comments) = build_annotated(&lab(), &frames, &[]);
    assert_eq!(t.flows[0].legs.len(), 1);
    let y = t.to_yaml();
    assert!(!y.contains("33333") && !y.contains("random#"), "{y}");
    // Legs are numbered first, then connections of no flow.
    assert_eq!(t.other[0].packet, "tcp S 10.0.2.1:eph2 > 10.0.2.10:443");
    assert_eq!(t.other[3].l7.as_deref(), Some("HTTP OPTIONS /"));
    assert!(
        y.contains("hdr: 10.0.2.1:eph2 > 10.0.2.10:443 tcp P. seq=1 ack=1 len=62"),
        "{y}"
    );
    assert_eq!(
        t.flows[0].legs[0].via,
        "ended at lb (haproxy), re-opened 10.0.2.1:eph1 > 10.0.2.10:443"
    );
    let hello: Vec<&String> = (comments.iter().flatten())
        .filter(|c| c.contains("L7: TLS ClientHello sni=app.example alpn=http/1.1 (random#"))
        .collect();
    // Two hops on each leg, one digest for the one session.
    assert_eq!(hello.len(), 4, "{comments:#?}");
    let digest = |c: &str| c.rsplit_once("random#").unwrap().1.to_string();
    assert!(hello.iter().all(|c| digest(c) == digest(hello[0])));
}

/// Any bytes, and every cut of real sessions, are read without a panic.
#[test]
fn damaged_or_cut_streams_are_read_without_panic() {
    let keys = Arc::new(Keys::default());
    let s = tls_session(2, REQ, RES, Some(keys.clone()));
    let log = KeyLog::parse(&keys.0.lock().unwrap());
    let c: Vec<u8> = s.iter().filter(|m| m.0).flat_map(|m| m.1.clone()).collect();
    let v: Vec<u8> = s
        .iter()
        .filter(|m| !m.0)
        .flat_map(|m| m.1.clone())
        .collect();
    fn seg(b: &[u8]) -> l7::Seg<'_> {
        l7::Seg {
            key: 0,
            seq: 1,
            syn: false,
            payload: b,
        }
    }
    let read = |c: &[u8], v: &[u8]| {
        let (a, b) = (seg(c), seg(v));
        l7::conversation(&log, &[&a], &[&b])
    };
    assert!(read(&c, &v).tls.unwrap().decrypted);
    for n in (0..c.len()).step_by(7) {
        read(&c[..n], &v);
        read(&c, &v[..n.min(v.len())]);
    }
    // Bytes changed here and there, huge lengths, chunk sizes and frames.
    let mut x: u32 = 12345;
    for _ in 0..2000 {
        let mut c2 = c.clone();
        for _ in 0..4 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let at = (x >> 8) as usize % c2.len();
            c2[at] ^= (x >> 24) as u8 | 1;
        }
        read(&c2, &v);
        read(&v, &c2);
    }
    for odd in [
        &b"GET / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    ] {
        let ws =
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff";
        read(odd, ws);
    }
}

/// A proxy that reuses its connection to the server for a second client
/// connection: the second flow names the leg and where its packets are.
#[test]
fn a_reused_connection_to_the_server_is_shown_once() {
    let mut lab = lab();
    let again = Step {
        name: "again".into(),
        port: 40001,
        ..lab.steps[0].clone()
    };
    lab.steps.push(again);
    let req =
        |n: u32| format!("GET /{n} HTTP/1.1\r\nHost: app.example\r\nX-Request-Id: r{n}\r\n\r\n");
    let res =
        |n: u32| format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Request-Id: r{n}\r\n\r\n");
    let one = |n: u32| vec![(true, req(n).into_bytes()), (false, res(n).into_bytes())];
    let client = |port| Wire {
        client: ([10, 0, 1, 2], port),
        server: ([10, 0, 1, 1], 80),
        at: ("client/eth0", "lb/eth0"),
    };
    let (mut t1, mut t2, mut t3) = (1_000_000_000, 1_000_350_000, 1_900_000_000);
    let mut frames = connection(&client(40000), &one(1), &mut t1);
    frames.extend(connection(&client(40001), &one(2), &mut t3));
    let mut both = one(1);
    both.extend(one(2));
    frames.extend(connection(&leg2(8080), &both, &mut t2));
    frames.sort_by_key(|f| f.ts_ns);
    let t = build(&lab, &frames, &[]);
    assert!(t.other.is_empty(), "{}", t.to_yaml());
    let (a, b) = (&t.flows[0], &t.flows[1]);
    assert_eq!((a.legs.len(), b.legs.len()), (1, 1), "{}", t.to_yaml());
    assert_eq!(a.legs[0].joined_by, "the same X-Request-Id r1");
    assert_eq!(
        b.legs[0].joined_by,
        "the same X-Request-Id r2 (a reused connection: its packets are under flow get, leg 2)"
    );
    assert!(b.legs[0].packets.is_empty());
    assert_eq!(a.legs[0].via, b.legs[0].via);
    assert!(a.legs[0].changed.is_empty() && b.legs[0].changed.is_empty());
}
