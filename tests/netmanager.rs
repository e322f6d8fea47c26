//! The `netmanager` binary end to end (needs root). Each test makes its own
//! anonymous network namespaces: a worker node with its TUN `nm0`, a bridge
//! and routes; a client instance and a server instance behind the bridge.
//! A fake service manager answers from a thread of the test. Nothing is
//! done in the test process's own network namespace: every link, address,
//! route and sysctl is set from a thread that has unshared its namespace.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hoplab_dataplane::netmanager::control::Message;
use hoplab_dataplane::netmanager::{
    Coords, Instance, Resolution, ResolveError, ServiceIp, ServiceKind,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const SVC: &str = "10.30.1.1";
const SERVER_NS: &str = "10.18.0.1";
const SERVER_IP: &str = "10.30.1.11";
const CLIENT_IP: &str = "10.30.1.12";
const UNKNOWN_SVC: &str = "10.30.9.9";
/// An address of the server that the node routes in the kernel alone.
const ROUTED: &str = "10.40.0.1";
const TIMEOUT: Duration = Duration::from_secs(5);

mod common;

use common::ns::Ns;

/// Makes `ns` a worker node: TUN nm0 (persistent, no PI) with the service
/// range routed to it, bridge br0 with address `gw`/26, forwarding on.
fn node_setup(ns: &Ns, gw: &str) {
    ns.ip(&[
        "link set lo up",
        "tuntap add dev nm0 mode tun",
        "link set nm0 up",
        "route add 10.30.0.0/16 dev nm0",
        "link add br0 type bridge",
        &format!("addr add {gw}/26 dev br0"),
        "link set br0 up",
    ]);
    ns.sysctl("net.ipv4.ip_forward", "1");
}

/// Plugs instance namespace `inst` into `node`'s bridge through veth `dev`
/// (one segment per GSO packet, as in the harness): address `addr`/26,
/// default route via `gw`.
fn plug(node: &Ns, inst: &Ns, dev: &str, addr: &str, gw: &str) {
    node.ip(&[
        &format!("link add {dev} gso_max_segs 1 type veth peer name {dev}-br gso_max_segs 1"),
        &format!("link set {dev}-br master br0 up"),
        &format!("link set {dev} netns {}", inst.path),
    ]);
    inst.ip(&[
        "link set lo up",
        &format!("addr add {addr}/26 dev {dev}"),
        &format!("link set {dev} up"),
        &format!("route add default via {gw}"),
    ]);
}

/// One node: `node` (10.10.1.1 on lo; nm0; br0 10.18.0.62/26), `client`
/// (10.18.0.2, instance IP 10.30.1.12) and `server` (10.18.0.1, instance
/// IP 10.30.1.11; also [`ROUTED`], which `node` routes to it: the
/// kernel-only path).
struct Topo {
    node: Ns,
    client: Ns,
    server: Ns,
}

fn topology() -> Topo {
    let t = Topo {
        node: Ns::new(),
        client: Ns::new(),
        server: Ns::new(),
    };
    node_setup(&t.node, "10.18.0.62");
    t.node.ip(&["addr add 10.10.1.1/32 dev lo"]);
    plug(&t.node, &t.client, "vc", "10.18.0.2", "10.18.0.62");
    plug(&t.node, &t.server, "vs", SERVER_NS, "10.18.0.62");
    t.server.ip(&[&format!("addr add {ROUTED}/32 dev lo")]);
    t.node
        .ip(&[&format!("route add {ROUTED}/32 via {SERVER_NS}")]);
    t
}

/// What one node's net manager is told.
struct NodeCfg {
    addr: &'static str,
    subnet: &'static str,
    instances: Vec<String>,
    /// The nodes it accepts tunnel datagrams from at start (`--peer`).
    peers: Vec<&'static str>,
}

/// The node of [`topology`]: both instances are local.
fn one_node() -> NodeCfg {
    NodeCfg {
        addr: "10.10.1.1",
        subnet: "10.18.0.0/26",
        instances: vec![
            format!("ns={SERVER_NS},ip={SERVER_IP}"),
            format!("ns=10.18.0.2,ip={CLIENT_IP}"),
        ],
        // The garbage test sends from loopback: as from a known peer, so
        // that the garbage reaches the parser.
        peers: vec!["127.0.0.1"],
    }
}

/// A fresh directory for one test's sockets, logs and counters.
fn work_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "nm-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    for sub in ["ctl", "counters", "logs"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    d
}

/// The server instance as the service manager describes it: namespace
/// address `ns` on the node at `node`.
fn server_instance(ns: &str, node: &str) -> Instance {
    Instance {
        ns_ip: ns.parse().unwrap(),
        ns_ip6: None,
        node: node.parse().unwrap(),
        instance_number: 0,
        coords: Coords::new(0.0, 0.0),
        service_ips: vec![
            ServiceIp {
                kind: ServiceKind::RoundRobin,
                addr: SVC.parse().unwrap(),
            },
            ServiceIp {
                kind: ServiceKind::Instance,
                addr: SERVER_IP.parse().unwrap(),
            },
        ],
    }
}

/// A fake cluster service manager: answers `resolve` for [`SVC`] and
/// [`SERVER_IP`] with `server`, `failed .. not_found` otherwise; records
/// the lines it got.
struct FakeManager {
    path: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
    /// Every connection accepted (a clone of each).
    conns: Arc<Mutex<Vec<UnixStream>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeManager {
    fn start(path: &Path, server: Instance) -> FakeManager {
        let l = UnixListener::bind(path).unwrap();
        l.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, conns2, stop2) = (seen.clone(), conns.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        conns2.lock().unwrap().push(s.try_clone().unwrap());
                        let (seen, server) = (seen2.clone(), server.clone());
                        std::thread::spawn(move || serve_manager(s, seen, server));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("fake manager: {e}"),
                }
            }
        });
        FakeManager {
            path: path.to_path_buf(),
            seen,
            conns,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// How many connections it has accepted.
    fn accepted(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Pushes `m` on every connection.
    fn push(&self, m: &Message) {
        let line = format!("{}\n", m.to_line());
        for mut c in self.conns.lock().unwrap().iter() {
            let _ = c.write_all(line.as_bytes());
        }
    }

    /// Stops accepting, closes every connection, removes the socket file.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for FakeManager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One connection; ends when it is closed.
fn serve_manager(s: UnixStream, seen: Arc<Mutex<Vec<String>>>, server: Instance) {
    let mut w = s.try_clone().unwrap();
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else { return };
        seen.lock().unwrap().push(line.clone());
        let Ok(Message::Resolve(ip)) = Message::parse(&line) else {
            continue;
        };
        let reply = if ip.to_string() == SVC || ip.to_string() == SERVER_IP {
            Message::Resolved(Resolution::new(ip, vec![server.clone()]), 1)
        } else {
            Message::Failed(ip, ResolveError::NotFound)
        };
        if w.write_all(format!("{}\n", reply.to_line()).as_bytes())
            .is_err()
        {
            return;
        }
    }
}

/// A child process, killed (if still running) when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to end, for at most `within`.
    fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if t.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The paths the net manager is given.
struct Paths {
    manager: PathBuf,
    control: PathBuf,
    counters: PathBuf,
    log: PathBuf,
}

impl Paths {
    /// The paths of node `n` (the manager's socket is shared).
    fn new(dir: &Path, n: u32) -> Paths {
        Paths {
            manager: dir.join("ctl/c1.sock"),
            control: dir.join(format!("ctl/nm-n{n}.sock")),
            counters: dir.join(format!("counters/n{n}.netmanager.txt")),
            log: dir.join(format!("logs/n{n}.netmanager.log")),
        }
    }
}

/// Starts the net manager in `node` as the harness does.
fn start_netmanager(node: &Ns, tun: &str, cfg: &NodeCfg, p: &Paths) -> Proc {
    start_netmanager_with(node, tun, cfg, p, &[])
}

/// [`start_netmanager`] with `extra` arguments.
fn start_netmanager_with(node: &Ns, tun: &str, cfg: &NodeCfg, p: &Paths, extra: &[&str]) -> Proc {
    let mut args: Vec<String> = [
        "--tun",
        tun,
        "--node-addr",
        cfg.addr,
        "--subnet",
        cfg.subnet,
        "--coords",
        "0,0",
        "--manager",
        p.manager.to_str().unwrap(),
        "--control",
        p.control.to_str().unwrap(),
        "--counters",
        p.counters.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in &cfg.instances {
        args.extend(["--instance".to_string(), i.clone()]);
    }
    for p in &cfg.peers {
        args.extend(["--peer".to_string(), p.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let log = p.log.clone();
    let child = node.run(move || {
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netmanager"));
        cmd.args(&args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        // SAFETY: the closure runs between fork and exec and only calls
        // prctl(2), which is async-signal-safe. The signal comes when this
        // namespace thread ends.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        cmd.spawn().expect("netmanager starts")
    });
    Proc {
        child,
        log: p.log.clone(),
    }
}

/// True if a UDP socket of the calling thread's namespace is bound to
/// `port`.
fn udp_bound(port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    std::fs::read_to_string("/proc/thread-self/net/udp")
        .unwrap()
        .lines()
        .skip(1)
        .any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&suffix))
        })
}

/// Waits for the harness's readiness condition: UDP port 50103 bound.
fn wait_ready(node: &Ns, nm: &mut Proc) {
    let t = Instant::now();
    while !node.run(|| udp_bound(50103)) {
        if let Some(s) = nm.child.try_wait().unwrap() {
            panic!("netmanager exited with {s}:\n{}", nm.log());
        }
        assert!(t.elapsed() < TIMEOUT, "not ready:\n{}", nm.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one command on a new control connection; returns the reply lines
/// (`lines` of them, or up to an empty line if `None`).
fn control(path: &Path, cmd: &str, lines: Option<usize>) -> Vec<String> {
    let mut s = UnixStream::connect(path).expect("control socket");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    writeln!(s, "{cmd}").unwrap();
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    loop {
        let mut l = String::new();
        assert!(
            r.read_line(&mut l).unwrap() > 0,
            "control: EOF after {out:?}"
        );
        let l = l.trim_end().to_string();
        if lines.is_none() && l.is_empty() {
            return out;
        }
        out.push(l);
        if Some(out.len()) == lines {
            return out;
        }
    }
}

fn parse_counters<S: AsRef<str>>(lines: &[S]) -> HashMap<String, u64> {
    lines
        .iter()
        .filter(|l| !l.as_ref().is_empty())
        .map(|l| {
            let (k, v) = l.as_ref().split_once(' ').expect("name value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

fn counters(path: &Path) -> HashMap<String, u64> {
    parse_counters(&control(path, "counters", None))
}

/// The server instance's echo servers on port 7: UDP answers
/// `<peer>|<payload>`; TCP echoes and reports each connection's peer.
struct Echo {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    tcp_peers: mpsc::Receiver<SocketAddr>,
}

impl Echo {
    fn start(server: &Ns) -> Echo {
        let (u, t) = server.run(|| {
            (
                UdpSocket::bind("0.0.0.0:7").unwrap(),
                TcpListener::bind("0.0.0.0:7").unwrap(),
            )
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (peer_tx, tcp_peers) = mpsc::channel();
        u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        t.set_nonblocking(true).unwrap();
        let s1 = stop.clone();
        let udp = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s1.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = u.recv_from(&mut buf) {
                    let mut reply = format!("{peer}|").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = u.send_to(&reply, peer);
                }
            }
        });
        let s2 = stop.clone();
        let tcp = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match t.accept() {
                    Ok((mut c, peer)) => {
                        let _ = peer_tx.send(peer);
                        c.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 65536];
                            while let Ok(n) = c.read(&mut buf) {
                                if n == 0 || c.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Echo {
            stop,
            threads: vec![udp, tcp],
            tcp_peers,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// From the client: one UDP datagram to `to`; the reply, its source, and
/// the client socket's address.
fn udp_exchange(client: &Ns, to: &str, payload: &'static [u8]) -> (String, SocketAddr, SocketAddr) {
    let to: SocketAddr = to.parse().unwrap();
    client.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.send_to(payload, to).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = s.recv_from(&mut buf).expect("a UDP reply");
        let local = s.local_addr().unwrap();
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from, local)
    })
}

/// A deterministic byte generator (xorshift64).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` on `c` from a second thread, closes the write side, and
/// checks that the echo server sent it all back unchanged.
fn echo_whole(c: &mut TcpStream, data: &[u8]) {
    let mut w = c.try_clone().unwrap();
    let sent = data.to_vec();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).expect("the echo comes back");
    writer.join().unwrap();
    assert!(
        back == data,
        "echoed {} bytes of {}",
        back.len(),
        data.len()
    );
}

/// Garbage on the tunnel port (of the net manager in `node`): dropped and
/// counted, nothing forwarded. `before`: the counters before. Returns the
/// counters after, and how many datagrams were sent.
fn garbage_on_the_tunnel_port_is_dropped_and_counted(
    node: &Ns,
    control: &Path,
    before: &HashMap<String, u64>,
) -> (HashMap<String, u64>, u64) {
    let mut garbage = vec![b"\x00not an IP packet".to_vec(), vec![0x45, 0, 0]];
    for seed in 1..=30u64 {
        let mut g = noise(seed, 1 + (seed as usize * 37) % 1400);
        if seed % 2 == 0 {
            g[0] = 0x40 | (g[0] & 0x0f);
        }
        garbage.push(g);
    }
    let n_garbage = garbage.len() as u64;
    node.run(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        for g in garbage {
            s.send_to(&g, "127.0.0.1:50103").unwrap();
        }
    });
    let t = Instant::now();
    let after = loop {
        let c = counters(control);
        if c["tunnel_in"] >= n_garbage || t.elapsed() > TIMEOUT {
            break c;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let drops = |c: &HashMap<String, u64>| -> u64 {
        c.iter()
            .filter(|(k, _)| k.starts_with("drop_"))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(after["tunnel_in"], n_garbage, "{after:?}");
    assert_eq!(drops(&after) - drops(before), n_garbage, "{after:?}");
    assert!(after["drop_not_ip"] > before["drop_not_ip"], "{after:?}");
    assert!(
        after["drop_malformed"] > before["drop_malformed"],
        "{after:?}"
    );
    assert_eq!(after["tun_out"], before["tun_out"], "{after:?}");
    (after, n_garbage)
}

#[test]
fn translates_service_traffic_end_to_end() {
    let topo = topology();
    let dir = work_dir("e2e");
    let paths = Paths::new(&dir, 1);
    let manager = FakeManager::start(&paths.manager, server_instance(SERVER_NS, "10.10.1.1"));
    let echo = Echo::start(&topo.server);
    let mut nm = start_netmanager(&topo.node, "nm0", &one_node(), &paths);
    wait_ready(&topo.node, &mut nm);

    // UDP to the round-robin service IP: the server sees the client's
    // instance IP, the client sees the answer from the address it dialled.
    let (reply, from, local) = udp_exchange(&topo.client, &format!("{SVC}:7"), b"hello");
    assert_eq!(from.to_string(), format!("{SVC}:7"), "{}", nm.log());
    assert_eq!(reply, format!("{CLIENT_IP}:{}|hello", local.port()));

    // TCP, 1 MiB each way, through the same service IP.
    let mut c = topo
        .client
        .run(|| TcpStream::connect_timeout(&format!("{SVC}:7").parse().unwrap(), TIMEOUT))
        .expect("TCP connect through the net manager");
    assert_eq!(c.peer_addr().unwrap().to_string(), format!("{SVC}:7"));
    let peer = echo.tcp_peers.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(peer.ip().to_string(), CLIENT_IP);
    assert_eq!(peer.port(), c.local_addr().unwrap().port());
    let data = noise(7, 1 << 20);
    echo_whole(&mut c, &data);

    // An unknown service: the query fails and the client gets an ICMP
    // host unreachable.
    assert_eq!(
        udp_error(&topo.client, &format!("{UNKNOWN_SVC}:7")),
        Some(nix::errno::Errno::EHOSTUNREACH as i32),
        "{}",
        nm.log()
    );

    // The control socket, while running.
    let before = counters(&paths.control);
    for (k, min) in [
        ("tun_in", 3),
        ("tun_out", 3),
        ("queries", 2),
        ("resolutions_ok", 1),
        ("resolutions_failed", 1),
        ("flows_created", 2),
        ("icmp_unreachable_sent", 1),
        ("drop_query_failed", 1),
    ] {
        assert!(before[k] >= min, "{k} = {} < {min}: {before:?}", before[k]);
    }
    assert_eq!(before["tunnel_in"], 0);
    let flows = control(&paths.control, "flows", Some(2));
    assert!(flows[0].starts_with("flows "), "{flows:?}");
    assert!(flows[0] != "flows 0", "{flows:?}");
    assert!(flows[1].starts_with("cache "), "{flows:?}");
    assert_eq!(
        control(&paths.control, "bogus", Some(1)),
        ["error unknown command"]
    );
    // One query per service, in the protocol's words.
    let seen = manager.seen();
    assert!(seen.contains(&format!("resolve {SVC}")), "{seen:?}");
    assert!(seen.contains(&format!("resolve {UNKNOWN_SVC}")), "{seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");

    let (after, n_garbage) =
        garbage_on_the_tunnel_port_is_dropped_and_counted(&topo.node, &paths.control, &before);
    assert!(nm.child.try_wait().unwrap().is_none(), "{}", nm.log());
    // And it still forwards.
    let (reply, from, _) = udp_exchange(&topo.client, &format!("{SVC}:7"), b"again");
    assert_eq!(from.to_string(), format!("{SVC}:7"));
    assert!(reply.ends_with("|again"), "{reply}");

    // SIGTERM: clean exit, final counters written, control socket gone.
    kill(Pid::from_raw(nm.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = nm.wait(TIMEOUT).expect("netmanager stops on SIGTERM");
    assert!(status.success(), "{status}:\n{}", nm.log());
    let text = std::fs::read_to_string(&paths.counters).expect("the counters file");
    let fin = parse_counters(&text.lines().collect::<Vec<_>>());
    assert_eq!(fin.len(), before.len(), "{text}");
    assert!(fin["tun_in"] >= after["tun_in"] + 2, "{text}");
    assert_eq!(fin["tunnel_in"], n_garbage, "{text}");
    assert!(!paths.control.exists(), "the control socket is removed");
    let log = nm.log();
    assert!(log.contains("final counters"), "{log}");
    drop(echo);
    drop(manager);
}

#[test]
fn startup_errors_name_what_failed() {
    let node = Ns::new();
    node.ip(&[
        "link set lo up",
        "tuntap add dev nm0 mode tun",
        "link set nm0 up",
    ]);
    let dir = work_dir("startup");
    let cfg = one_node();

    // No such TUN: an error naming it, and no device created.
    let mut nm = start_netmanager(&node, "nm9", &cfg, &Paths::new(&dir, 1));
    let status = nm.wait(TIMEOUT).expect("exits");
    assert!(!status.success());
    let log = nm.log();
    assert!(log.contains("attaching to TUN device nm9"), "{log}");
    let shown = node.run(|| {
        Command::new("ip")
            .args(["link", "show", "nm9"])
            .output()
            .unwrap()
    });
    assert!(!shown.status.success(), "nm9 was created");

    // No service manager: an error after a few attempts, nothing bound.
    let paths = Paths::new(&dir, 2);
    let mut nm = start_netmanager(&node, "nm0", &cfg, &paths);
    let status = nm.wait(TIMEOUT).expect("exits");
    assert!(!status.success());
    let log = nm.log();
    assert!(
        log.contains("connecting to the service manager at"),
        "{log}"
    );
    assert!(!paths.control.exists());
    assert!(!node.run(|| udp_bound(50103)));

    // A second net manager on a TUN already in use.
    let paths = Paths::new(&dir, 3);
    let _manager = FakeManager::start(&paths.manager, server_instance(SERVER_NS, cfg.addr));
    let mut first = start_netmanager(&node, "nm0", &cfg, &paths);
    wait_ready(&node, &mut first);
    let mut second = start_netmanager(&node, "nm0", &cfg, &Paths::new(&dir, 4));
    let status = second.wait(TIMEOUT).expect("exits");
    assert!(!status.success());
    let log = second.log();
    assert!(log.contains("attaching to TUN device nm0"), "{log}");
    assert!(first.child.try_wait().unwrap().is_none());
}

/// From the client, to `to`: the error its connected UDP socket reports
/// (IP_RECVERR: an ICMP host unreachable is not fatal for UDP otherwise),
/// or `None` on a reply.
fn udp_error(client: &Ns, to: &str) -> Option<i32> {
    let to: SocketAddr = to.parse().unwrap();
    client.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Ipv4RecvErr, &true).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.connect(to).unwrap();
        s.send(b"anyone?").unwrap();
        s.recv(&mut [0u8; 256])
            .err()
            .map(|e| e.raw_os_error().unwrap_or(-1))
    })
}

/// Waits until `cond` holds, for at most [`TIMEOUT`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The service manager pushes an invalidation, then goes away and comes
/// back: flows go on, queries fail at once while it is away, the net
/// manager reconnects by itself.
#[test]
fn survives_the_service_manager_going_away() {
    let topo = topology();
    let dir = work_dir("outage");
    let paths = Paths::new(&dir, 1);
    let server = server_instance(SERVER_NS, "10.10.1.1");
    let mut manager = FakeManager::start(&paths.manager, server.clone());
    let _echo = Echo::start(&topo.server);
    let mut nm = start_netmanager(&topo.node, "nm0", &one_node(), &paths);
    wait_ready(&topo.node, &mut nm);

    // A flow the client keeps.
    let kept = topo.client.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.connect(format!("{SVC}:7")).unwrap();
        s
    });
    let ping = |s: &UdpSocket| {
        s.send(b"ping").unwrap();
        let mut buf = [0u8; 256];
        let n = s.recv(&mut buf).expect("a reply on the kept flow");
        assert!(buf[..n].ends_with(b"|ping"));
    };
    ping(&kept);
    assert_eq!(manager.seen(), [format!("resolve {SVC}")]);

    // A pushed invalidation: the next new flow asks again.
    manager.push(&Message::Invalidate(SVC.parse().unwrap()));
    wait_until("the invalidation", || nm.log().contains("invalidated"));
    udp_exchange(&topo.client, &format!("{SVC}:7"), b"new flow");
    // Acknowledged once applied, before the new flow's query.
    assert_eq!(
        manager.seen(),
        [
            format!("resolve {SVC}"),
            format!("invalidated {SVC}"),
            format!("resolve {SVC}")
        ]
    );

    // The manager goes away.
    manager.stop();
    wait_until("the net manager to notice", || {
        nm.log().contains("connection lost")
    });
    ping(&kept);
    assert_eq!(
        udp_error(&topo.client, &format!("{SERVER_IP}:7")),
        Some(nix::errno::Errno::EHOSTUNREACH as i32),
        "a query fails while the manager is away:\n{}",
        nm.log()
    );

    // It comes back on the same path; the net manager reconnects.
    let manager = FakeManager::start(&paths.manager, server);
    wait_until("the reconnection", || manager.accepted() == 1);
    // The sync comes first: what the net manager holds, as it was told.
    wait_until("the sync", || manager.seen().len() >= 2);
    assert_eq!(
        manager.seen()[..2],
        [format!("sync {SVC} 1"), "synced 10.10.1.1".to_string()]
    );
    let (reply, from, _) = udp_exchange(&topo.client, &format!("{SERVER_IP}:7"), b"back");
    assert_eq!(from.to_string(), format!("{SERVER_IP}:7"));
    assert!(reply.ends_with("|back"), "{reply}");
    ping(&kept);

    let c = counters(&paths.control);
    assert_eq!(c["resolutions_failed"], 1, "{c:?}");
    let log = nm.log();
    assert_eq!(log.matches("connection lost").count(), 1, "{log}");
    assert_eq!(log.matches("connection back").count(), 1, "{log}");
    assert!(nm.child.try_wait().unwrap().is_none(), "{log}");
}

/// Two nodes joined by an underlay veth (10.10.1.1, 10.10.1.2); the client
/// on node 1, the server on node 2. Node 1 translates and tunnels; node 2
/// passes the packets through unchanged and sends the replies back.
#[test]
fn tunnels_to_an_instance_on_another_node() {
    let (n1, n2, client, server) = (Ns::new(), Ns::new(), Ns::new(), Ns::new());
    node_setup(&n1, "10.18.0.62");
    node_setup(&n2, "10.18.0.126");
    n1.ip(&[
        "link add ul gso_max_segs 1 type veth peer name ul2 gso_max_segs 1",
        &format!("link set ul2 netns {}", n2.path),
        "addr add 10.10.1.1/24 dev ul",
        "link set ul up",
    ]);
    n2.ip(&["addr add 10.10.1.2/24 dev ul2", "link set ul2 up"]);
    plug(&n1, &client, "vc", "10.18.0.2", "10.18.0.62");
    plug(&n2, &server, "vs", "10.18.0.65", "10.18.0.126");

    let dir = work_dir("tunnel");
    let (p1, p2) = (Paths::new(&dir, 1), Paths::new(&dir, 2));
    let manager = FakeManager::start(&p1.manager, server_instance("10.18.0.65", "10.10.1.2"));
    let echo = Echo::start(&server);
    let cfg1 = NodeCfg {
        addr: "10.10.1.1",
        subnet: "10.18.0.0/26",
        instances: vec![format!("ns=10.18.0.2,ip={CLIENT_IP}")],
        // Node 1 learns node 2 from the resolution.
        peers: vec![],
    };
    let cfg2 = NodeCfg {
        addr: "10.10.1.2",
        subnet: "10.18.0.64/26",
        instances: vec![format!("ns=10.18.0.65,ip={SERVER_IP}")],
        // Node 2 resolves nothing: it knows node 1 from the start.
        peers: vec!["10.10.1.1"],
    };
    let mut nm1 = start_netmanager(&n1, "nm0", &cfg1, &p1);
    let mut nm2 = start_netmanager(&n2, "nm0", &cfg2, &p2);
    wait_ready(&n1, &mut nm1);
    wait_ready(&n2, &mut nm2);

    let (reply, from, local) = udp_exchange(&client, &format!("{SVC}:7"), b"far");
    assert_eq!(from.to_string(), format!("{SVC}:7"), "{}", nm1.log());
    assert_eq!(reply, format!("{CLIENT_IP}:{}|far", local.port()));

    // TCP with full-size segments: the tunnel datagrams exceed the
    // underlay MTU and are fragmented and reassembled by the kernel.
    let mut c = client
        .run(|| TcpStream::connect_timeout(&format!("{SVC}:7").parse().unwrap(), TIMEOUT))
        .expect("TCP connect through the tunnel");
    let peer = echo.tcp_peers.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(peer.ip().to_string(), CLIENT_IP);
    let data = noise(11, 256 << 10);
    echo_whole(&mut c, &data);

    let (c1, c2) = (counters(&p1.control), counters(&p2.control));
    assert!(c1["tunnel_out"] > 0 && c1["tunnel_in"] > 0, "{c1:?}");
    assert!(c2["tunnel_out"] > 0 && c2["tunnel_in"] > 0, "{c2:?}");
    assert_eq!(c1["queries"], 1, "{c1:?}");
    assert_eq!(c2["queries"], 0, "the receiving node never asks: {c2:?}");
    assert_eq!(c1["flows_created"], 2, "{c1:?}");
    assert_eq!(c2["flows_created"], 2, "{c2:?}");
    assert_eq!(c1["drop_no_flow"] + c2["drop_no_flow"], 0, "{c1:?} {c2:?}");
    assert_eq!(manager.seen(), [format!("resolve {SVC}")]);

    for nm in [&mut nm1, &mut nm2] {
        kill(Pid::from_raw(nm.child.id() as i32), Signal::SIGTERM).unwrap();
        let status = nm.wait(TIMEOUT).expect("stops on SIGTERM");
        assert!(status.success(), "{status}:\n{}", nm.log());
    }
    assert!(p1.counters.exists() && p2.counters.exists());
}

/// A UDP packet `src:4000 > dst:7` built with etherparse.
fn udp_packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ipv4(src, dst, 64).udp(4000, 7);
    let mut v = Vec::with_capacity(b.size(5));
    b.write(&mut v, b"crash").unwrap();
    v
}

/// The tunnel as a trust boundary: a crafted packet for the server's
/// namespace address from an address that is no peer, and one from a
/// known peer with a source outside the Oakestra ranges, are both dropped
/// and counted; nothing reaches the TUN.
#[test]
fn crafted_tunnel_datagrams_from_strangers_are_dropped() {
    let topo = topology();
    let dir = work_dir("inject");
    let paths = Paths::new(&dir, 1);
    let _manager = FakeManager::start(&paths.manager, server_instance(SERVER_NS, "10.10.1.1"));
    let _echo = Echo::start(&topo.server);
    let mut nm = start_netmanager(&topo.node, "nm0", &one_node(), &paths);
    wait_ready(&topo.node, &mut nm);

    let server: [u8; 4] = SERVER_NS.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let injected = udp_packet([10, 30, 7, 7], server);
    let external = udp_packet([8, 8, 8, 8], server);
    topo.node.run(move || {
        // The node's own underlay address is no peer of its own.
        let stranger = UdpSocket::bind("10.10.1.1:0").unwrap();
        stranger.send_to(&injected, "10.10.1.1:50103").unwrap();
        // Loopback is a peer of this net manager (`one_node`).
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(&external, "127.0.0.1:50103").unwrap();
    });
    wait_until("both datagrams counted", || {
        counters(&paths.control)["tunnel_in"] >= 2
    });
    let c = counters(&paths.control);
    assert_eq!(c["drop_unknown_peer"], 1, "{c:?}");
    // Its control socket is its owner's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&paths.control)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert_eq!(c["drop_not_service_flow"], 1, "{c:?}");
    assert_eq!((c["tun_out"], c["flows_created"]), (0, 0), "{c:?}");
}

/// The shell's own I/O errors are counted, not only logged: an instance on
/// a node the underlay has no route to makes every tunnel send fail
/// (`ENETUNREACH`); `io_err_tunnel_send` counts them, on the control
/// socket and in the counters file at exit.
#[test]
fn io_errors_are_counted() {
    let topo = topology();
    let dir = work_dir("ioerr");
    let paths = Paths::new(&dir, 1);
    let manager = FakeManager::start(&paths.manager, server_instance(SERVER_NS, "10.99.99.99"));
    let mut nm = start_netmanager(&topo.node, "nm0", &one_node(), &paths);
    wait_ready(&topo.node, &mut nm);
    let before = counters(&paths.control);
    for k in [
        "io_err_tun_read",
        "io_err_tun_write",
        "io_err_tunnel_send",
        "io_err_tunnel_recv",
    ] {
        assert_eq!(before.get(k), Some(&0), "{k}: {before:?}");
    }
    let to: SocketAddr = format!("{SVC}:7").parse().unwrap();
    for _ in 0..3 {
        topo.client.run(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(b"nowhere", to).unwrap();
        });
    }
    wait_until("the failed sends are counted", || {
        counters(&paths.control)["io_err_tunnel_send"] >= 3
    });
    assert!(nm.child.try_wait().unwrap().is_none(), "{}", nm.log());
    kill(Pid::from_raw(nm.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = nm.wait(TIMEOUT).expect("netmanager stops on SIGTERM");
    assert!(status.success(), "{status}:\n{}", nm.log());
    let text = std::fs::read_to_string(&paths.counters).expect("the counters file");
    let fin = parse_counters(&text.lines().collect::<Vec<_>>());
    assert!(fin["io_err_tunnel_send"] >= 3, "{text}");
    assert!(nm.log().contains("I/O errors"), "{}", nm.log());
    drop(manager);
}

/// Packets the net manager held and dropped after the shell let go of
/// them: two of the three fragments of a datagram from a peer, never made
/// whole (dropped at the fragment timeout), and a packet queued behind a
/// query that fails. The drop log names each by its own header (the
/// first fragment with its ports, the next by its protocol's number, both
/// read from the tunnel; the queued packet as read from the TUN), none is
/// unidentified, and the counters agree.
#[test]
fn held_packets_it_drops_are_logged_by_identity() {
    let topo = topology();
    let dir = work_dir("held-drops");
    let paths = Paths::new(&dir, 1);
    let _manager = FakeManager::start(&paths.manager, server_instance(SERVER_NS, "10.10.1.1"));
    let mut nm = start_netmanager_with(
        &topo.node,
        "nm0",
        &one_node(),
        &paths,
        &["--frag-timeout-ms", "300"],
    );
    wait_ready(&topo.node, &mut nm);

    let server: [u8; 4] = SERVER_NS.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let b = etherparse::PacketBuilder::ipv4([10, 30, 7, 7], server, 64).udp(4000, 7);
    let mut whole = Vec::new();
    b.write(&mut whole, &[7u8; 3000]).unwrap();
    // Identification 0x4242, DF cleared: it may be cut.
    whole[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
    whole[6] = 0;
    whole[10..12].copy_from_slice(&[0, 0]);
    let sum = hoplab_dataplane::checksum::checksum(0, &whole[..20]);
    whole[10..12].copy_from_slice(&sum.to_be_bytes());
    let frags = hoplab_dataplane::fragments::fragment(&whole, 1400, 0).unwrap();
    assert_eq!(frags.len(), 3);
    topo.node.run(move || {
        // Loopback is a peer of this net manager (`one_node`); the last
        // piece never comes.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        for f in &frags[..2] {
            peer.send_to(f, "127.0.0.1:50103").unwrap();
        }
    });
    wait_until("the fragments to time out", || {
        counters(&paths.control)["drop_frag_timeout"] >= 2
    });
    // An unknown service: the query fails, the packet queued is dropped.
    assert_eq!(
        udp_error(&topo.client, &format!("{UNKNOWN_SVC}:7")),
        Some(nix::errno::Errno::EHOSTUNREACH as i32),
        "{}",
        nm.log()
    );
    let c = counters(&paths.control);
    assert_eq!(
        (c["drop_frag_timeout"], c["drop_query_failed"]),
        (2, 1),
        "{c:?}"
    );

    kill(Pid::from_raw(nm.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = nm.wait(TIMEOUT).expect("netmanager stops on SIGTERM");
    assert!(status.success(), "{status}:\n{}", nm.log());
    let text = std::fs::read_to_string(paths.counters.with_extension("drops")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let id = 0x4242;
    let frag = |tail: &str| format!("drop tunnel frag_timeout {tail}");
    assert!(
        lines.contains(&frag(&format!("udp 10.30.7.7 {SERVER_NS} {id} 4000:7")).as_str()),
        "{text}"
    );
    assert!(
        lines.contains(&frag(&format!("17 10.30.7.7 {SERVER_NS} {id} -")).as_str()),
        "{text}"
    );
    let queued: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("drop tun:nm0 query_failed udp 10.18.0.2 10.30.9.9 "))
        .collect();
    assert_eq!(queued.len(), 1, "{text}");
    assert!(queued[0].ends_with(":7"), "{text}");
    assert!(!text.contains("unidentified"), "{text}");
    assert_eq!(lines.first(), Some(&"start"), "{text}");
    assert_eq!(lines.last(), Some(&"end overflow 0"), "{text}");
}
