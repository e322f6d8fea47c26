//! Built-in traffic injectors: a TCP, UDP or ICMP echo client with a fixed
//! source port (ICMP: identifier) and a known payload, run inside its host;
//! for an HTTP or WebSocket step, the TCP connection handed to
//! `crate::l7::client`; a step that dials a name first asks its host's
//! resolver (`crate::l7::dns`). Waits are sliced so an interrupt ends a step
//! within 50 ms. A connection that spans steps ([`Conn`]) is opened by one
//! step ([`open`]), used by later ones ([`send_on`]) and closed by the last
//! ([`close`]); the run keeps it between steps.
//!
//! Knows a step's destination and expectation, not how the lab was built.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hoplab_dataplane::checksum::checksum;
use socket2::{Domain, Protocol, Socket, Type};

use super::{Expect, L7Step, Proto, Resolve, Step};
use crate::l7::client::{self, ClientCtx, Seen};
use crate::l7::dns;

/// What a step saw, in words that are the same on every run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Reply(Vec<u8>),
    Silence,
    Refused,
    Error(String),
    /// An HTTP response: status, headers in order, body.
    Http {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A WebSocket session whose messages (this many) all came back.
    WebSocket(usize),
    /// An L7 exchange that failed, in words (`TLS error: ...`, `not HTTP: ...`).
    Failed(String),
}

impl Observed {
    pub fn describe(&self) -> String {
        match self {
            Observed::Reply(b) if b.len() > 40 => {
                format!(
                    "reply {:?}... ({} B)",
                    String::from_utf8_lossy(&b[..32]),
                    b.len()
                )
            }
            Observed::Reply(b) => format!("reply {:?} ({} B)", String::from_utf8_lossy(b), b.len()),
            Observed::Silence => "no reply".into(),
            Observed::Refused => "refused".into(),
            Observed::Error(e) => format!("error: {e}"),
            Observed::Http { status, body, .. } => {
                format!("HTTP {status} ({} B body)", body.len())
            }
            Observed::WebSocket(1) => "WebSocket: 1 message echoed".into(),
            Observed::WebSocket(n) => format!("WebSocket: {n} messages echoed"),
            Observed::Failed(e) => e.clone(),
        }
    }

    /// Who answered an HTTP response, for a step whose expectation it
    /// did not meet: the response's `X-Served-By` (hoplab's server, or a
    /// proxy's own answer that names itself), else its `Server`; empty
    /// when it names nobody.
    pub fn answered_by(&self) -> String {
        let Observed::Http { headers, .. } = self else {
            return String::new();
        };
        let find = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n));
        match find("X-Served-By").or_else(|| find("Server")) {
            Some((k, v)) => format!(" (answered by {v}, from its {k})"),
            None => " (no X-Served-By or Server header names who answered)".into(),
        }
    }

    pub fn meets(&self, step: &Step) -> bool {
        match (&step.expect, self) {
            (Expect::Echo, Observed::Reply(b)) => b == step.payload.as_bytes(),
            (Expect::Reply(t), Observed::Reply(b)) => b == t.as_bytes(),
            (Expect::Silence, Observed::Silence) => true,
            (Expect::Refused, Observed::Refused) => true,
            (Expect::Echo, Observed::Http { status, .. }) => *status == 200,
            (
                Expect::Http(e),
                Observed::Http {
                    status,
                    headers,
                    body,
                },
            ) => {
                *status == e.status()
                    && e.headers.iter().all(|(k, v)| {
                        headers
                            .iter()
                            .any(|(hk, hv)| hk.eq_ignore_ascii_case(k) && hv == v)
                    })
                    && e.body
                        .as_ref()
                        .is_none_or(|b| b.as_bytes() == body.as_slice())
            }
            (Expect::Echo, Observed::WebSocket(n)) => match &step.l7 {
                Some(L7Step::WebSocket(w)) => *n == w.messages.len(),
                _ => false,
            },
            (Expect::Error(t), Observed::Failed(e) | Observed::Error(e)) => e.contains(t.as_str()),
            _ => false,
        }
    }
}

fn unspecified(v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }
}

pub(super) fn classify(e: std::io::Error) -> Observed {
    match e.kind() {
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset => Observed::Refused,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Observed::Refused,
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Observed::Silence,
        _ => Observed::Error(e.to_string()),
    }
}

/// Run one step in the calling thread's namespace (see `NetNs::run`).
/// Waits are cut into slices so that `cancelled` is checked at least every
/// [`SLICE`]; a cancelled step reports what it saw so far. An HTTP or
/// WebSocket step gets no CA (its TLS fails): see [`run_step_with`].
pub fn run_step(step: &Step, sport: u16, cancelled: &dyn Fn() -> bool) -> Observed {
    run_step_with(step, 0, sport, &ClientCtx::default(), cancelled)
}

/// [`run_step`] for step number `index`, its L7 client given the run's CA
/// and key log by `ctx`.
pub fn run_step_with(
    step: &Step,
    index: usize,
    sport: u16,
    ctx: &ClientCtx,
    cancelled: &dyn Fn() -> bool,
) -> Observed {
    let mut t = step.target;
    let w = Wait {
        deadline: Instant::now() + Duration::from_millis(step.timeout_ms),
        cancelled,
    };
    if let Some(r) = &step.resolve {
        match resolve(r, index, sport, &w) {
            Ok(addr) => t.addr = addr,
            Err(o) => return o,
        }
    }
    if let Some(l7) = &step.l7 {
        let to = SocketAddr::new(t.addr, t.port);
        let id = format!("hoplab-{index}-1");
        return l7_step(to, sport, l7, &id, ctx, &w).unwrap_or_else(classify);
    }
    let (payload, want) = (step.payload.as_bytes(), expected_len(step));
    let r = match step.proto {
        Proto::Tcp => tcp(SocketAddr::new(t.addr, t.port), sport, (payload, want), &w),
        Proto::Udp if step.df => udp_df(SocketAddr::new(t.addr, t.port), sport, payload, &w),
        Proto::Udp => udp(SocketAddr::new(t.addr, t.port), sport, payload, &w),
        Proto::Icmp => icmp(t.addr, sport, step, &w),
    };
    r.unwrap_or_else(classify)
}

/// Ask the step's resolver for `r.name` from UDP port `sport` (the
/// step's own, so the trace puts the query and its answer in the step's
/// flow), with a query id fixed by the step's index; the address, or the
/// step's outcome when there is none (`NXDOMAIN for NAME`, no answer).
fn resolve(r: &Resolve, index: usize, sport: u16, w: &Wait) -> Result<IpAddr, Observed> {
    let id = 0x4000u16.wrapping_add(index as u16);
    let v6 = r.server.is_ipv6();
    let q = dns::query(id, &r.name, v6).map_err(|e| Observed::Failed(e.to_string()))?;
    let failed = |e: std::io::Error| Observed::Failed(format!("DNS query to {}: {e}", r.server));
    let s = std::net::UdpSocket::bind(SocketAddr::new(unspecified(!v6), sport)).map_err(failed)?;
    s.send_to(&q, r.server).map_err(failed)?;
    let mut buf = [0u8; 1500];
    loop {
        let got = w.read(|t| {
            s.set_read_timeout(Some(t))?;
            s.recv_from(&mut buf)
        });
        let (n, from) = match got {
            Ok(Some(x)) => x,
            Ok(None) => {
                return Err(Observed::Failed(format!(
                    "no DNS answer for {} from {}",
                    r.name, r.server
                )))
            }
            Err(e) => return Err(failed(e)),
        };
        let Some(a) = (from == r.server)
            .then(|| dns::answer(&buf[..n], id))
            .flatten()
        else {
            continue;
        };
        return match a {
            dns::Answer::Addr(addr) => Ok(addr),
            dns::Answer::NxDomain => Err(Observed::Failed(format!(
                "NXDOMAIN for {} (DNS answer from {})",
                r.name, r.server
            ))),
            dns::Answer::NoAddress => Err(Observed::Failed(format!(
                "no address for {} (DNS answer from {})",
                r.name, r.server
            ))),
            dns::Answer::Rcode(c) => Err(Observed::Failed(format!(
                "DNS rcode {c} for {} (answer from {})",
                r.name, r.server
            ))),
        };
    }
}

/// How often a waiting step checks whether the run was interrupted: the
/// longest any wait of a run lasts without looking.
pub const SLICE: Duration = Duration::from_millis(50);

/// Sleep `d` in slices, checking `cancelled` before each; false if it was
/// cancelled before `d` passed.
pub fn sleep(d: Duration, cancelled: &dyn Fn() -> bool) -> bool {
    Wait {
        deadline: Instant::now() + d,
        cancelled,
    }
    .sleep()
}

/// A step's deadline and the run's interrupt, for every wait of a client.
pub(super) struct Wait<'a> {
    pub(super) deadline: Instant,
    pub(super) cancelled: &'a dyn Fn() -> bool,
}

impl<'a> Wait<'a> {
    /// The same cancellation, with `d` from now.
    fn again(&self, d: Duration) -> Wait<'a> {
        Wait {
            deadline: Instant::now() + d,
            cancelled: self.cancelled,
        }
    }

    /// Sleep until the deadline in slices; false if cancelled first.
    fn sleep(&self) -> bool {
        while let Some(t) = self.next() {
            std::thread::sleep(t);
        }
        !(self.cancelled)()
    }

    /// The next read timeout, or None when the step's time is up or the run
    /// was interrupted.
    fn next(&self) -> Option<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        (!left.is_zero() && !(self.cancelled)()).then(|| left.min(SLICE))
    }

    /// Call `f` with successive read timeouts until it returns something
    /// other than a timeout.
    fn read<T>(
        &self,
        mut f: impl FnMut(Duration) -> std::io::Result<T>,
    ) -> std::io::Result<Option<T>> {
        while let Some(t) = self.next() {
            match f(t) {
                Ok(v) => return Ok(Some(v)),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

fn expected_len(step: &Step) -> usize {
    match &step.expect {
        Expect::Reply(t) => t.len(),
        _ => step.payload.len(),
    }
}

/// A connection that spans steps: a TCP stream, or a UDP socket
/// connected to the step's destination from its source port. Its socket
/// lives in the namespace of the host that opened it, whichever thread
/// uses it later.
#[derive(Debug)]
pub enum Conn {
    Tcp(std::net::TcpStream),
    Udp(std::net::UdpSocket),
}

/// Opens `step`'s connection from `sport` (in the calling thread's
/// namespace) and runs its first exchange: what the step saw, and the
/// connection unless it could not be made (TCP: refused, or silence).
pub fn open(step: &Step, sport: u16, cancelled: &dyn Fn() -> bool) -> (Observed, Option<Conn>) {
    let w = Wait {
        deadline: Instant::now() + Duration::from_millis(step.timeout_ms),
        cancelled,
    };
    let to = SocketAddr::new(step.target.addr, step.target.port);
    let made = match step.proto {
        Proto::Tcp => tcp_connect(to, sport, &w).map(|c| c.map(Conn::Tcp)),
        _ => udp_socket(to, sport).map(|s| Some(Conn::Udp(s.into()))),
    };
    match made {
        Ok(Some(mut c)) => (send_on(&mut c, step, cancelled), Some(c)),
        Ok(None) => (Observed::Silence, None),
        Err(e) => (classify(e), None),
    }
}

/// Sends `step`'s payload on `c` and reads the expected reply (TCP: as
/// many bytes as expected; UDP: one datagram): a reset or an ICMP error
/// is [`Observed::Refused`], nothing in time [`Observed::Silence`].
pub fn send_on(c: &mut Conn, step: &Step, cancelled: &dyn Fn() -> bool) -> Observed {
    let w = Wait {
        deadline: Instant::now() + Duration::from_millis(step.timeout_ms),
        cancelled,
    };
    let payload = step.payload.as_bytes();
    let r = match c {
        Conn::Tcp(t) => t
            .write_all(payload)
            .and_then(|()| quick_ack(t))
            .and_then(|()| read_reply(t, expected_len(step), &w))
            // Again: an ACK still pending leaves now, within the step.
            .inspect(|_| {
                let _ = quick_ack(t);
            })
            .map(|got| match got {
                Some(b) if !b.is_empty() => Observed::Reply(b),
                _ => Observed::Silence,
            }),
        Conn::Udp(u) => udp_exchange(u, payload, &w),
    };
    r.unwrap_or_else(classify)
}

/// Closes `c` as a TCP step ends (the client's FIN, then the server's
/// awaited at most `timeout_ms`); a UDP socket is just dropped. A
/// connection the peer reset closes without a packet.
pub fn close(c: Conn, timeout_ms: u64, cancelled: &dyn Fn() -> bool) {
    let Conn::Tcp(mut t) = c else { return };
    if t.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let w = Wait {
        deadline: Instant::now() + Duration::from_millis(timeout_ms),
        cancelled,
    };
    let mut buf = [0u8; 4096];
    let _ = w.read(|t_| {
        t.set_read_timeout(Some(t_))?;
        t.read(&mut buf)
    });
}

/// Acknowledge what arrives at once (`TCP_QUICKACK`, set after the send:
/// sending right after receiving turns delayed ACKs on again; and set
/// after the read, which sends an ACK still pending), so that the ACK of
/// a reply on a connection that stays open always leaves within its step
/// as its own packet, not after the delayed-ACK timer or on the next
/// step's data, whichever the timing picks.
fn quick_ack(t: &std::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value: libc::c_int = 1;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the descriptor is the open socket `t` borrows; the option
    // value is a c_int that lives across the call, of `len` bytes.
    let r = unsafe {
        libc::setsockopt(
            t.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&raw const value).cast(),
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A TCP connection from `sport` to `to`, `None` when it neither
/// completed nor failed in time.
fn tcp_connect(
    to: SocketAddr,
    sport: u16,
    w: &Wait,
) -> std::io::Result<Option<std::net::TcpStream>> {
    let s = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::new(unspecified(to.is_ipv4()), sport).into())?;
    if !connect(&s, to, w)? {
        return Ok(None);
    }
    let c = std::net::TcpStream::from(s);
    c.set_nodelay(true)?;
    Ok(Some(c))
}

/// Reads until `want` bytes came, the peer closed, or `w`'s deadline:
/// what came (`None`: nothing in time). An error before any byte is
/// the error; after some, what came.
fn read_reply(
    c: &mut std::net::TcpStream,
    want: usize,
    w: &Wait,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        let read = w.read(|t| {
            c.set_read_timeout(Some(t))?;
            c.read(&mut buf)
        });
        match read {
            Ok(Some(0)) => break,
            Ok(Some(n)) => got.extend_from_slice(&buf[..n]),
            Ok(None) if got.is_empty() => return Ok(None),
            Err(e) if got.is_empty() => return Err(e),
            Ok(None) | Err(_) => break,
        }
    }
    Ok(Some(got))
}

/// Send `payload` over a TCP connection from `sport`, read `want` bytes
/// back, close.
pub(super) fn tcp(
    to: SocketAddr,
    sport: u16,
    (payload, want): (&[u8], usize),
    w: &Wait,
) -> std::io::Result<Observed> {
    let s = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::new(unspecified(to.is_ipv4()), sport).into())?;
    let timeout = w.deadline.saturating_duration_since(Instant::now());
    if !connect(&s, to, w)? {
        return Ok(Observed::Silence);
    }
    let mut c = std::net::TcpStream::from(s);
    c.set_nodelay(true)?;
    c.write_all(payload)?;
    // Read exactly the expected reply, then close: the client's FIN always
    // follows the last data, so the packet sequence is the same every run.
    let mut got = Vec::new();
    let reading = w.again(timeout);
    let mut buf = [0u8; 4096];
    while got.len() < want {
        let read = reading.read(|t| {
            c.set_read_timeout(Some(t))?;
            c.read(&mut buf)
        });
        match read {
            Ok(Some(0)) => break,
            Ok(Some(n)) => got.extend_from_slice(&buf[..n]),
            Ok(None) if got.is_empty() => return Ok(Observed::Silence),
            Err(e) if got.is_empty() => return Err(e),
            Ok(None) | Err(_) => break,
        }
    }
    c.shutdown(std::net::Shutdown::Write)?;
    // Wait for the server's FIN so the whole close is captured.
    let _ = w.again(timeout).read(|t| {
        c.set_read_timeout(Some(t))?;
        c.read(&mut buf)
    });
    Ok(if got.is_empty() {
        Observed::Silence
    } else {
        Observed::Reply(got)
    })
}

/// An HTTP or WebSocket step: connect from `sport` as a TCP step does,
/// then hand the connection to the L7 client.
pub(super) fn l7_step(
    to: SocketAddr,
    sport: u16,
    l7: &L7Step,
    id: &str,
    ctx: &ClientCtx,
    w: &Wait,
) -> std::io::Result<Observed> {
    let s = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::new(unspecified(to.is_ipv4()), sport).into())?;
    if !connect(&s, to, w)? {
        return Ok(Observed::Silence);
    }
    let seen = client::exchange(s.into(), l7, to, id, ctx, (w.deadline, SLICE), w.cancelled);
    Ok(match seen {
        Seen::Http(m) => Observed::Http {
            status: m.status,
            headers: m.headers,
            body: m.body,
        },
        Seen::WebSocket(n) => Observed::WebSocket(n),
        Seen::Silence => Observed::Silence,
        Seen::Failed(e) => Observed::Failed(e),
    })
}

/// Connect `s` to `to` without blocking: the connection's progress is
/// polled in slices until `w`'s deadline. False if it neither completed
/// nor failed by then (or the run was interrupted).
fn connect(s: &Socket, to: SocketAddr, w: &Wait) -> std::io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    s.set_nonblocking(true)?;
    match s.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => loop {
            let Some(t) = w.next() else {
                return Ok(false);
            };
            let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLOUT)];
            let t = PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, t) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => {}
                Ok(_) => break,
                Err(e) => return Err(e.into()),
            }
        },
        Err(e) => return Err(e),
    }
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    s.set_nonblocking(false)?;
    Ok(true)
}

/// Send `payload` in one datagram from `sport`; the first datagram back
/// is the reply.
pub(super) fn udp(
    to: SocketAddr,
    sport: u16,
    payload: &[u8],
    w: &Wait,
) -> std::io::Result<Observed> {
    let u = std::net::UdpSocket::from(udp_socket(to, sport)?);
    udp_exchange(&u, payload, w)
}

/// One datagram out on the connected `u`, the first one back is the reply.
fn udp_exchange(u: &std::net::UdpSocket, payload: &[u8], w: &Wait) -> std::io::Result<Observed> {
    u.send(payload)?;
    let mut buf = [0u8; 65536];
    Ok(
        match w.read(|t| {
            u.set_read_timeout(Some(t))?;
            u.recv(&mut buf)
        })? {
            Some(n) => Observed::Reply(buf[..n].to_vec()),
            None => Observed::Silence,
        },
    )
}

/// A connected UDP socket from `sport` to `to` (connected: ICMP errors
/// surface as errors, and IPv4 IDs are the socket's own counter rather
/// than 0) that reports every ICMP error, not only the "hard" ones (port
/// unreachable): a host unreachable from a net manager is an answer too.
fn udp_socket(to: SocketAddr, sport: u16) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddr::new(unspecified(to.is_ipv4()), sport).into())?;
    s.connect(&to.into())?;
    if to.is_ipv4() {
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Ipv4RecvErr, &true)?;
    } else {
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Ipv6RecvErr, &true)?;
    }
    Ok(s)
}

/// Sets path MTU discovery "do" on `s`: Don't Fragment on every datagram,
/// never fragmented locally, a datagram over the known path MTU refused
/// with `EMSGSIZE`.
fn set_pmtudisc_do(s: &Socket, v4: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, name, value) = if v4 {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    };
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `s` is an open socket for the call's duration, and the
    // option value is a c_int that lives across the call, of `len` bytes.
    let r = unsafe { libc::setsockopt(s.as_raw_fd(), level, name, (&raw const value).cast(), len) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The path MTU the kernel knows for the connected socket `s`
/// (`IP_MTU` / `IPV6_MTU`).
fn path_mtu(s: &impl std::os::fd::AsRawFd, v4: bool) -> std::io::Result<usize> {
    let (level, name) = if v4 {
        (libc::IPPROTO_IP, libc::IP_MTU)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `s` is an open socket for the call's duration; `mtu` and
    // `len` live across the call and `len` is `mtu`'s size.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&raw mut mtu).cast(),
            &raw mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    usize::try_from(mtu).map_err(|_| std::io::Error::other("a negative path MTU"))
}

/// A UDP step with `df`: `payload` in one datagram with Don't Fragment.
/// When an ICMP "too big" comes back instead of the echo (`EMSGSIZE`),
/// the payload is sent again in pieces that fit the path MTU the kernel
/// learned from it, one datagram each, every piece's echo awaited before
/// the next; the reply is the echoes put together.
pub(super) fn udp_df(
    to: SocketAddr,
    sport: u16,
    payload: &[u8],
    w: &Wait,
) -> std::io::Result<Observed> {
    let s = udp_socket(to, sport)?;
    set_pmtudisc_do(&s, to.is_ipv4())?;
    let u = std::net::UdpSocket::from(s);
    let mut buf = [0u8; 65536];
    let mut echo = |u: &std::net::UdpSocket, piece: &[u8]| -> std::io::Result<Option<Vec<u8>>> {
        u.send(piece)?;
        let got = w.read(|t| {
            u.set_read_timeout(Some(t))?;
            u.recv(&mut buf)
        })?;
        Ok(got.map(|n| buf[..n].to_vec()))
    };
    let too_big = |e: &std::io::Error| e.raw_os_error() == Some(libc::EMSGSIZE);
    match echo(&u, payload) {
        Ok(Some(b)) => return Ok(Observed::Reply(b)),
        Ok(None) => return Ok(Observed::Silence),
        Err(e) if !too_big(&e) => return Err(e),
        Err(_) => {}
    }
    let headers = if to.is_ipv4() { 28 } else { 48 };
    let fits = path_mtu(&u, to.is_ipv4())?.saturating_sub(headers);
    if fits == 0 || fits >= payload.len() {
        return Ok(Observed::Error(format!(
            "a too big for a {} B datagram, path MTU leaves {fits} B",
            payload.len()
        )));
    }
    let mut reply = Vec::new();
    for piece in payload.chunks(fits) {
        match echo(&u, piece)? {
            Some(b) => reply.extend_from_slice(&b),
            None if reply.is_empty() => return Ok(Observed::Silence),
            None => break,
        }
    }
    Ok(Observed::Reply(reply))
}

fn icmp(to: IpAddr, ident: u16, step: &Step, w: &Wait) -> std::io::Result<Observed> {
    let v4 = to.is_ipv4();
    let (domain, proto, req_type, rep_type) = if v4 {
        (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8)
    } else {
        (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8)
    };
    let s = Socket::new(domain, Type::RAW, Some(proto))?;
    let seq: u16 = 1;
    let mut pkt = vec![req_type, 0, 0, 0];
    pkt.extend_from_slice(&ident.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(step.payload.as_bytes());
    if v4 {
        let c = checksum(0, &pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    } // ICMPv6: the kernel fills in the checksum on raw ICMPv6 sockets.
    s.send_to(&pkt, &SocketAddr::new(to, 0).into())?;
    let mut buf = vec![0u8; 65536];
    loop {
        let Some(n) = w.read(|t| {
            s.set_read_timeout(Some(t))?;
            (&s).read(&mut buf)
        })?
        else {
            return Ok(Observed::Silence);
        };
        let data = &buf[..n];
        // Raw IPv4 sockets deliver the IP header too.
        let icmp = if v4 {
            let ihl = ((data.first().copied().unwrap_or(0) & 0x0f) as usize) * 4;
            data.get(ihl..).unwrap_or(&[])
        } else {
            data
        };
        if icmp.len() < 8 {
            continue;
        }
        let id = u16::from_be_bytes([icmp[4], icmp[5]]);
        if icmp[0] == rep_type && id == ident {
            return Ok(Observed::Reply(icmp[8..].to_vec()));
        }
        // Destination unreachable carrying our request.
        let unreachable = if v4 { icmp[0] == 3 } else { icmp[0] == 1 };
        if unreachable && icmp.len() >= 8 {
            return Ok(Observed::Refused);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn checksum_of_rfc1071_example() {
        // The checksum of the ICMPv4 echo requests. RFC 1071 section 3:
        // 0001 f203 f4f5 f6f7 sums to ddf2, checksum 220d.
        assert_eq!(
            super::checksum(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }
}
