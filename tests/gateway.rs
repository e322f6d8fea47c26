//! The `gateway` binary end to end (needs root), in an anonymous network
//! namespace of each test's own: a TUN `gw0` with the internal address
//! routed to it and a veth `pub` (its peer left unused) with the public address. Raw
//! bytes are put into the gateway's TUN with an AF_PACKET socket (nix; what is
//! sent on a TUN is what its reader reads), the control socket is spoken
//! to, and nftables is asked what the gateway loaded. Nothing is done in
//! the test process's own network namespace.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod common;

use common::ns::Ns;

/// A gateway in its namespace; killed if the test ends without stopping it.
struct Gateway {
    ns: Ns,
    child: Option<Child>,
    dir: PathBuf,
}

impl Gateway {
    fn control(&self) -> PathBuf {
        self.dir.join("gw.sock")
    }

    /// One control command; the answer up to its end.
    fn ask(&self, line: &str) -> String {
        let mut s = UnixStream::connect(self.control()).expect("control socket");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        writeln!(s, "{line}").unwrap();
        let multi = matches!(line, "counters" | "flows" | "exposures");
        let mut r = BufReader::new(s);
        let mut out = String::new();
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).unwrap() == 0 || (multi && l.trim().is_empty()) {
                break;
            }
            out.push_str(&l);
            if !multi {
                break;
            }
        }
        out
    }

    fn counter(&self, name: &str) -> u64 {
        let text = self.ask("counters");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no counter {name} in:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// SIGTERM, then the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "the gateway did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hoplab-gw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A namespace with `gw0`, `pub`, and the gateway started with `extra`
/// arguments (not waited for).
fn spawn(tag: &str, tun: &str, extra: &[&str]) -> Gateway {
    let ns = Ns::new();
    // No IPv6 link chatter into the TUN: the tests count packets.
    ns.run(|| {
        for k in ["all", "default"] {
            std::fs::write(format!("/proc/sys/net/ipv6/conf/{k}/disable_ipv6"), "1").unwrap();
        }
    });
    ns.ip(&[
        "link set lo up",
        "tuntap add dev gw0 mode tun",
        "link set gw0 up",
        "route add 10.30.255.253/32 dev gw0",
        "link add pub type veth peer name pub-peer",
        "addr add 24.0.5.8/24 dev pub",
        "link set pub up",
    ]);
    let dir = tmpdir(tag);
    let mut argv: Vec<String> = [
        "--tun",
        tun,
        "--public-if",
        "pub",
        "--public",
        "24.0.5.8",
        "--expose",
        "tcp:8080=10.30.30.30:80",
        "--control",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.push(dir.join("gw.sock").display().to_string());
    argv.push("--counters".into());
    argv.push(dir.join("counters.txt").display().to_string());
    argv.extend(extra.iter().map(|s| s.to_string()));
    let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
    let child = ns.run(move || {
        Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the gateway")
    });
    Gateway {
        ns,
        child: Some(child),
        dir,
    }
}

/// [`spawn`], then wait until the control socket answers.
fn start(tag: &str) -> Gateway {
    start_with(tag, &[])
}

/// [`start`] with `extra` arguments.
fn start_with(tag: &str, extra: &[&str]) -> Gateway {
    let mut g = spawn(tag, "gw0", extra);
    let deadline = Instant::now() + Duration::from_secs(5);
    while UnixStream::connect(g.control()).is_err() {
        if let Some(st) = g.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the gateway exited with {st}: {}", log(&g.dir));
        }
        assert!(Instant::now() < deadline, "not ready: {}", log(&g.dir));
        std::thread::sleep(Duration::from_millis(10));
    }
    g
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default()
}

/// Sends each of `packets` on `ifname` of the namespace through an
/// AF_PACKET datagram socket: a TUN's reader receives exactly these bytes.
fn send_on(ns: &Ns, ifname: &'static str, packets: Vec<Vec<u8>>) {
    use nix::sys::socket::{
        sendto, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType,
        SockaddrLike,
    };
    ns.run(move || {
        let fd = socket(
            AddressFamily::Packet,
            SockType::Datagram,
            SockFlag::empty(),
            SockProtocol::EthIp,
        )
        .expect("AF_PACKET socket");
        let ifindex = nix::net::if_::if_nametoindex(ifname).expect("the interface");
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: (libc::ETH_P_IP as u16).to_be(),
            sll_ifindex: ifindex as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `sll` is a live, initialised sockaddr_ll of `len` bytes
        // for the duration of the call, which copies it.
        let to = unsafe { LinkAddr::from_raw(std::ptr::addr_of!(sll).cast(), Some(len)) }
            .expect("a link-layer address");
        for p in packets {
            let n = sendto(fd.as_raw_fd(), &p, &to, MsgFlags::empty()).expect("sendto");
            assert_eq!(n, p.len());
        }
    })
}

/// An IPv4 TCP SYN built with etherparse.
fn tcp_syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240)
        .syn();
    let mut v = Vec::with_capacity(b.size(0));
    b.write(&mut v, &[]).unwrap();
    v
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn garbage_into_its_tun_is_dropped_and_counted_and_it_keeps_going() {
    let mut g = start("garbage");
    let syn = tcp_syn([93, 6, 1, 78], 51671, [10, 30, 255, 253], 8080);
    let mut truncated_tcp = syn.clone();
    truncated_tcp.truncate(24);
    truncated_tcp[2..4].copy_from_slice(&24u16.to_be_bytes());
    let mut bad_header_checksum = syn.clone();
    bad_header_checksum[10] ^= 0xff;
    let mut fragment = syn.clone();
    fragment[6] = 0x20; // more fragments
    fragment[10..12].copy_from_slice(&[0, 0]);
    let sum = fragment[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    fragment[10..12].copy_from_slice(&sum.to_be_bytes());
    let garbage: Vec<Vec<u8>> = vec![
        vec![0x45],
        vec![0x60, 0, 0],
        vec![0xff; 40],
        truncated_tcp,
        bad_header_checksum,
        fragment,
    ];
    let n = garbage.len() as u64;
    send_on(&g.ns, "gw0", garbage);
    wait_for("the garbage to be read", || g.counter("packets_in") >= n);
    let malformed = g.counter("dropped_malformed");
    assert!(malformed >= 4, "{}", g.ask("counters"));
    assert_eq!(g.counter("dropped_fragment"), 1, "{}", g.ask("counters"));
    assert_eq!(g.counter("requests"), 0);

    // It still translates: a SYN to the exposed port makes a flow.
    send_on(&g.ns, "gw0", vec![syn]);
    wait_for("the request", || g.counter("requests") == 1);
    let flows = g.ask("flows");
    assert!(
        flows.contains("tcp 93.6.1.78:51671 -> 10.30.30.30:80 exposed 8080 internal 51671 open"),
        "{flows}"
    );
    assert!(g.stop().success(), "{}", log(&g.dir));
}

#[test]
fn exposure_changes_at_runtime_follow_in_the_firewall() {
    let mut g = start("expose");
    let set = |g: &Gateway| list_set(g, "exposed_udp");
    assert!(!set(&g).contains("5353"));
    assert_eq!(g.ask("expose udp 5353 10.30.1.1:53"), "ok\n");
    assert!(set(&g).contains("5353"), "{}", set(&g));
    // The same mapping again is fine; another service on that port is not.
    assert_eq!(g.ask("expose udp 5353 10.30.1.1:53"), "ok\n");
    assert!(g.ask("expose udp 5353 10.30.1.2:53").starts_with("error"));
    assert!(g.ask("expose tcp 0 10.30.1.2:53").starts_with("error"));
    assert!(g.ask("expose sctp 1 10.30.1.2:53").starts_with("error"));
    // No IPv6 internal address was given: no IPv6 exposure.
    assert!(g.ask("expose tcp 9 [fdff::1]:9").starts_with("error"));
    let ex = g.ask("exposures");
    assert!(ex.contains("tcp 8080 -> 10.30.30.30:80"), "{ex}");
    assert!(ex.contains("udp 5353 -> 10.30.1.1:53"), "{ex}");

    let r = g.ask("unexpose udp 5353");
    assert!(r.starts_with("ok removed udp 5353"), "{r}");
    assert!(!set(&g).contains("5353"), "{}", set(&g));
    assert!(g.ask("unexpose udp 5353").starts_with("error"));

    // ICMP has no ports: echo requests go to one service IP per family,
    // through the set of ICMP types.
    let icmp_set = |g: &Gateway| list_set(g, "exposed_icmp");
    assert!(!icmp_set(&g).contains("echo-request"), "{}", icmp_set(&g));
    assert!(g.ask("expose icmp 8.8.8.8").starts_with("error"));
    assert!(g
        .ask("expose icmp 7 10.30.1.1:0")
        .starts_with("error icmp has no ports"));
    assert_eq!(g.ask("expose icmp 10.30.1.1"), "ok\n");
    assert!(icmp_set(&g).contains("echo-request"), "{}", icmp_set(&g));
    assert!(g.ask("exposures").contains("icmp -> 10.30.1.1"));
    let r = g.ask("unexpose icmp");
    assert!(r.starts_with("ok removed icmp -> 10.30.1.1"), "{r}");
    assert!(!icmp_set(&g).contains("echo-request"), "{}", icmp_set(&g));
    assert!(g
        .ask("unexpose icmp")
        .starts_with("error icmp is not exposed"));
    assert!(g.ask("reboot").starts_with("error unknown command"));
    assert!(g.stop().success(), "{}", log(&g.dir));
}

/// The firewall's set `set`, as `nft list set` shows it.
fn list_set(g: &Gateway, set: &str) -> String {
    let (ok, out) =
        g.ns.cmd(&["nft", "list", "set", "inet", "hoplab_gateway", set]);
    assert!(ok, "{out}");
    out
}

/// The gateway changes its sets over netlink, with keys it encodes
/// itself: after an `expose`, each set lists exactly as after `nft`
/// itself added the element to the emptied set; the `unexpose` deletes
/// the element `nft` added, and the set lists as before the `expose`.
#[test]
fn exposure_changes_over_netlink_leave_the_sets_as_nft_would() {
    let mut g = start_with(
        "netlink-sets",
        &["--public6", "2001:db8::8", "--internal6", "fdff:7fff::fffd"],
    );
    let cases = [
        (
            "expose udp 5353 10.30.1.1:53",
            "unexpose udp 5353",
            "exposed_udp",
            "5353",
        ),
        (
            "expose tcp 8443 [fdff::1]:443",
            "unexpose tcp 8443 v6",
            "exposed_tcp6",
            "8443",
        ),
        (
            "expose icmp 10.30.1.1",
            "unexpose icmp",
            "exposed_icmp",
            "echo-request",
        ),
        (
            "expose icmp fdff::1",
            "unexpose icmp v6",
            "exposed_icmp6",
            "echo-request",
        ),
    ];
    for (expose, unexpose, set, element) in cases {
        let before = list_set(&g, set);
        assert!(!before.contains(element), "{before}");
        assert_eq!(g.ask(expose), "ok\n", "{expose}");
        let by_gateway = list_set(&g, set);
        assert!(by_gateway.contains(element), "{set}: {by_gateway}");
        let script = format!(
            "flush set inet hoplab_gateway {set}\nadd element inet hoplab_gateway {set} {{ {element} }}\n"
        );
        let (ok, out) = g.ns.run(move || {
            let mut child = Command::new("nft")
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("nft");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        });
        assert!(ok, "{out}");
        assert_eq!(by_gateway, list_set(&g, set), "{set}");
        let r = g.ask(unexpose);
        assert!(r.starts_with("ok removed"), "{unexpose}: {r}");
        assert_eq!(list_set(&g, set), before, "{set}");
    }
    // A change the kernel refuses is answered with its errno and element,
    // and the core keeps the row.
    assert_eq!(g.ask("expose udp 5353 10.30.1.1:53"), "ok\n");
    let (ok, out) = g.ns.cmd(&[
        "nft",
        "delete",
        "element",
        "inet",
        "hoplab_gateway",
        "exposed_udp",
        "{ 5353 }",
    ]);
    assert!(ok, "{out}");
    let r = g.ask("unexpose udp 5353");
    assert!(
        r.starts_with("error ")
            && r.contains("deleting 5353 in set exposed_udp of table hoplab_gateway: ENOENT"),
        "{r}"
    );
    assert!(g.ask("exposures").contains("udp 5353 -> 10.30.1.1:53"));
    assert!(g.stop().success(), "{}", log(&g.dir));
}

/// Sends `packets` out of `ifname` (an Ethernet device) to `mac` through
/// an AF_PACKET datagram socket: the peer end receives them as frames for
/// its own address.
fn send_eth(ns: &Ns, ifname: &'static str, mac: [u8; 6], packets: Vec<Vec<u8>>) {
    use nix::sys::socket::{
        sendto, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType,
        SockaddrLike,
    };
    ns.run(move || {
        let fd = socket(
            AddressFamily::Packet,
            SockType::Datagram,
            SockFlag::empty(),
            SockProtocol::EthIp,
        )
        .expect("AF_PACKET socket");
        let ifindex = nix::net::if_::if_nametoindex(ifname).expect("the interface");
        let mut sll_addr = [0u8; 8];
        sll_addr[..6].copy_from_slice(&mac);
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: (libc::ETH_P_IP as u16).to_be(),
            sll_ifindex: ifindex as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr,
        };
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `sll` is a live, initialised sockaddr_ll of `len` bytes
        // for the duration of the call, which copies it.
        let to = unsafe { LinkAddr::from_raw(std::ptr::addr_of!(sll).cast(), Some(len)) }
            .expect("a link-layer address");
        for p in packets {
            let n = sendto(fd.as_raw_fd(), &p, &to, MsgFlags::empty()).expect("sendto");
            assert_eq!(n, p.len());
        }
    })
}

/// After `unexpose`, a client's next datagram of a connection the kernel
/// had DNATed is no longer DNATed (its conntrack entry is gone: it would
/// otherwise reach the TUN, where no flow is left) and the firewall
/// answers it (`unexposed_reset`) instead of dropping it.
#[test]
fn unexpose_deletes_the_conntrack_entries_and_answers_the_clients() {
    let mut g = start("unexpose");
    g.ns.ip(&[
        "link set pub address 02:00:00:00:00:01",
        "link set pub-peer up",
        "route add 93.6.1.0/24 dev pub",
    ]);
    assert_eq!(g.ask("expose udp 5353 10.30.1.1:53"), "ok\n");
    let b = etherparse::PacketBuilder::ipv4([93, 6, 1, 78], [24, 0, 5, 8], 64).udp(40000, 5353);
    let mut datagram = Vec::new();
    b.write(&mut datagram, b"query").unwrap();
    g.ns.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap());
    let mac = [2, 0, 0, 0, 0, 1];
    // Sent again until it passes: the veth drops what it is given until
    // the kernel's link watch has seen its carrier.
    wait_for("the request", || {
        send_eth(&g.ns, "pub-peer", mac, vec![datagram.clone()]);
        std::thread::sleep(Duration::from_millis(50));
        g.counter("requests") >= 1
    });
    let before = g.counter("packets_in");
    let r = g.ask("unexpose udp 5353");
    assert!(r.starts_with("ok removed udp 5353"), "{r}");
    let closed = list_set(&g, "closed_udp");
    assert!(closed.contains("93.6.1.78 . 40000 . 5353"), "{closed}");
    send_eth(&g.ns, "pub-peer", mac, vec![datagram]);
    wait_for("the firewall's answer", || {
        g.counter("firewall.unexposed_reset") == 1
    });
    // Not DNATed to the TUN again.
    assert_eq!(g.counter("packets_in"), before, "{}", g.ask("counters"));
    assert!(g.stop().success(), "{}", log(&g.dir));
}

#[test]
fn after_it_exits_its_table_and_socket_are_gone_and_counters_written() {
    let mut g = start("exit");
    let (ok, out) = g.ns.cmd(&["nft", "list", "tables"]);
    assert!(ok && out.contains("hoplab_gateway"), "{out}");
    assert!(g.stop().success(), "{}", log(&g.dir));
    let (ok, out) = g.ns.cmd(&["nft", "list", "tables"]);
    assert!(ok && !out.contains("hoplab_gateway"), "{out}");
    assert!(!g.control().exists());
    let counters = std::fs::read_to_string(g.dir.join("counters.txt")).unwrap();
    assert!(counters.contains("packets_in 0"), "{counters}");
    assert!(counters.contains("firewall.spoofed_source 0"), "{counters}");
    // The shell's own I/O errors are counters too.
    assert!(counters.contains("io.tun_read_errors 0"), "{counters}");
    assert!(counters.contains("io.tun_write_errors 0"), "{counters}");
}

#[test]
fn a_missing_tun_is_a_clear_error_and_leaves_no_table() {
    let mut g = spawn("notun", "nope0", &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = g.child.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    g.child = None;
    assert!(!status.success());
    let text = log(&g.dir);
    assert!(
        text.contains("no network interface named \"nope0\""),
        "{text}"
    );
    let (ok, out) = g.ns.cmd(&["nft", "list", "tables"]);
    assert!(ok && !out.contains("hoplab_gateway"), "{out}");
}

/// Waits (up to 5 s) for a gateway that is to exit on its own; its status.
fn exit_status(g: &mut Gateway) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = g.child.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    g.child = None;
    status
}

#[test]
fn a_bad_exposure_on_the_command_line_is_refused_before_anything_is_set_up() {
    let mut g = spawn("badexp", "gw0", &["--expose", "tcp:8080=10.30.1.1:80"]);
    assert!(!exit_status(&mut g).success());
    let text = log(&g.dir);
    assert!(text.contains("--expose tcp 8080 -> 10.30.1.1:80"), "{text}");
    let (_, out) = g.ns.cmd(&["nft", "list", "tables"]);
    assert!(!out.contains("hoplab_gateway"), "{out}");
}

#[test]
fn only_service_ips_are_exposed_at_runtime_or_at_start() {
    let mut g = start("relay");
    // An open relay to the internet, and a way into a node's tunnel port.
    for line in [
        "expose tcp 9001 8.8.8.8:53",
        "expose udp 9001 10.10.0.1:50103",
    ] {
        let r = g.ask(line);
        assert!(
            r.starts_with("error ") && r.contains("is not a service IP (10.30.0.0/16"),
            "{line}: {r}"
        );
        assert!(r.ends_with('\n') && r.lines().count() == 1, "{r:?}");
    }
    let ex = g.ask("exposures");
    assert_eq!(ex, "tcp 8080 -> 10.30.30.30:80\n", "{ex}");
    let set = list_set(&g, "exposed_udp");
    assert!(!set.contains("9001"), "{set}");
    assert!(g.stop().success(), "{}", log(&g.dir));

    // The same rule on the command line: refused before anything is set up.
    let mut g = spawn("relay-cli", "gw0", &["--expose", "tcp:9001=8.8.8.8:53"]);
    assert!(!exit_status(&mut g).success());
    let text = log(&g.dir);
    assert!(text.contains("8.8.8.8:53 is not a service IP"), "{text}");
    let (_, out) = g.ns.cmd(&["nft", "list", "tables"]);
    assert!(!out.contains("hoplab_gateway"), "{out}");
}

/// The gateway's resident memory, in KiB.
fn rss_kib(g: &Gateway) -> u64 {
    let pid = g.child.as_ref().expect("running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Reads one line of `s` (up to 5 s).
fn read_reply(s: &UnixStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s);
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

#[test]
fn the_control_socket_is_owner_only_and_bounded() {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    let mut g = start("ctlbound");
    let mode = std::fs::metadata(g.control()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    // Not UTF-8: an error line, and the connection goes on.
    let mut s = UnixStream::connect(g.control()).unwrap();
    s.write_all(b"\xff\xfe expose\n").unwrap();
    assert_eq!(read_reply(&s), "error the line is not UTF-8\n");
    s.write_all(b"exposures\n").unwrap();
    assert_eq!(read_reply(&s), "tcp 8080 -> 10.30.30.30:80\n");
    drop(s);

    // A 200 MB line without a newline: cut at the bound, answered with an
    // error line, the connection closed; the gateway does not keep it.
    let before = rss_kib(&g);
    let s = UnixStream::connect(g.control()).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..200 {
            match w.write_all(&chunk) {
                Ok(()) => sent += chunk.len(),
                Err(_) => break,
            }
        }
        sent
    });
    assert_eq!(
        read_reply(&s),
        "error line longer than 4096 bytes: connection closed\n"
    );
    let sent = writer.join().unwrap();
    assert!(sent < 200 << 20, "the gateway read all {sent} bytes");
    let mut rest = Vec::new();
    let _ = (&s).read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed after the error line");
    let after = rss_kib(&g);
    assert!(
        after < before + 16 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );

    // 16 connections at once are served; the 17th is told so and closed.
    let held: Vec<UnixStream> = (0..16)
        .map(|_| {
            let mut s = UnixStream::connect(g.control()).unwrap();
            s.write_all(b"exposures\n").unwrap();
            assert_eq!(read_reply(&s), "tcp 8080 -> 10.30.30.30:80\n");
            s
        })
        .collect();
    let mut extra = UnixStream::connect(g.control()).unwrap();
    let _ = extra.write_all(b"exposures\n");
    assert_eq!(
        read_reply(&extra),
        "error too many connections (at most 16)\n"
    );
    let mut rest = Vec::new();
    let _ = extra.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    // One closed, a slot is free again.
    drop(held);
    wait_for("a free slot", || {
        let mut s = UnixStream::connect(g.control()).unwrap();
        s.write_all(b"exposures\n").is_ok() && read_reply(&s) == "tcp 8080 -> 10.30.30.30:80\n"
    });
    assert!(g.stop().success(), "{}", log(&g.dir));
}

/// Each packet the core drops is in the drop log beside the counters, by
/// its identity and reason; one that is not IP is counted unidentified;
/// the log is closed at exit.
#[test]
fn its_drops_are_logged_by_identity_and_reason() {
    let mut g = start("droplog");
    let not_exposed = tcp_syn([93, 6, 1, 78], 40000, [10, 30, 255, 253], 9090);
    let id = u16::from_be_bytes([not_exposed[4], not_exposed[5]]);
    send_on(&g.ns, "gw0", vec![vec![0xff; 40], not_exposed]);
    wait_for("the packets to be read", || g.counter("packets_in") >= 2);
    assert!(g.stop().success(), "{}", log(&g.dir));
    let text = std::fs::read_to_string(g.dir.join("counters.drops")).unwrap();
    assert_eq!(
        text,
        format!(
            "start\nunidentified malformed\n\
             drop tun:gw0 not_exposed tcp 93.6.1.78 10.30.255.253 {id} 40000:9090\n\
             end overflow 0\n"
        )
    );
}

/// A fragment held for a datagram that never becomes whole is dropped at
/// the fragment timeout, after the shell let go of it: the drop log names
/// each fragment held by its own header (the first with its ports, the
/// next by its protocol's number), none unidentified, and the counter
/// agrees. A datagram made whole and dropped (no exposure for UDP 8080)
/// takes every fragment it was made of with it: each is logged, the
/// datagram counted once.
#[test]
fn fragments_of_a_datagram_never_whole_are_logged_by_identity() {
    let mut g = start_with("fragtimeout", &["--frag-timeout-ms", "200"]);
    let frags = udp_fragments(0x4242);
    assert_eq!(frags.len(), 3);
    // The last piece never comes.
    send_on(&g.ns, "gw0", frags[..2].to_vec());
    wait_for("the fragments to be held", || g.counter("frag_held") >= 2);
    wait_for("the fragments to time out", || {
        g.counter("dropped_frag_timeout") >= 2
    });
    assert_eq!(g.counter("dropped_frag_timeout"), 2);
    // Whole, and dropped as not exposed.
    send_on(&g.ns, "gw0", udp_fragments(0x4343));
    wait_for("the datagram to be made whole", || {
        g.counter("frag_reassembled") >= 1
    });
    assert_eq!(g.counter("dropped_not_exposed"), 1);
    assert!(g.stop().success(), "{}", log(&g.dir));
    let text = std::fs::read_to_string(g.dir.join("counters.drops")).unwrap();
    let (id, id2) = (0x4242, 0x4343);
    assert_eq!(
        text,
        format!(
            "start\n\
             drop tun:gw0 frag_timeout udp 93.6.1.78 10.30.255.253 {id} 40000:8080\n\
             drop tun:gw0 frag_timeout 17 93.6.1.78 10.30.255.253 {id} -\n\
             drop tun:gw0 not_exposed 17 93.6.1.78 10.30.255.253 {id2} -\n\
             drop tun:gw0 not_exposed udp 93.6.1.78 10.30.255.253 {id2} 40000:8080\n\
             drop tun:gw0 not_exposed 17 93.6.1.78 10.30.255.253 {id2} -\n\
             end overflow 0\n"
        )
    );
}

/// The fragments (1400 data bytes each) of a 3000-byte UDP datagram
/// 93.6.1.78:40000 > 10.30.255.253:8080 with identification `id`.
fn udp_fragments(id: u16) -> Vec<Vec<u8>> {
    let b =
        etherparse::PacketBuilder::ipv4([93, 6, 1, 78], [10, 30, 255, 253], 64).udp(40000, 8080);
    let mut whole = Vec::new();
    b.write(&mut whole, &[7u8; 3000]).unwrap();
    // DF cleared: it may be cut.
    whole[4..6].copy_from_slice(&id.to_be_bytes());
    whole[6] = 0;
    whole[10..12].copy_from_slice(&[0, 0]);
    let sum = hoplab_dataplane::checksum::checksum(0, &whole[..20]);
    whole[10..12].copy_from_slice(&sum.to_be_bytes());
    hoplab_dataplane::fragments::fragment(&whole, 1400, 0).unwrap()
}
