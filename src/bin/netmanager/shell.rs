//! The loop that owns the core: packets from the TUN and the tunnel
//! socket, messages from the service manager, control commands, the
//! core's next expiry deadline and the signals; and the execution of the
//! core's actions.
//!
//! Packets take the core's in-place entry points: each is read into one
//! of two receive buffers allocated once, translated there, and sent from
//! there; the core's other actions for it go to one reused vector. The
//! per-packet path allocates nothing and copies nothing.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context;
use hoplab::shell::clock::{Clock, ExpiryTimer};
use hoplab::shell::control::Request;
use hoplab::shell::log::RateLimited;
use hoplab::shell::signals::Signals;
use hoplab_dataplane::netmanager::control::Message;
use hoplab_dataplane::netmanager::{Action, Forward, NetManagerCore, TUNNEL_PORT};
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{Receiver, UnboundedReceiver, UnboundedSender};
use tracing::{debug, trace, warn};
use tun_rs::SyncDevice;

use crate::control::Command;

/// Receive buffer size: the largest IP packet.
const BUF: usize = 65536;
/// Packets handled from one source before the loop looks at the others.
const BATCH: usize = 64;
/// Socket buffer sizes asked for the tunnel socket.
const SOCKET_BUFFER: usize = 4 << 20;

/// Binds the tunnel socket on the wildcard address of `node_addr`'s
/// family, port [`TUNNEL_PORT`]; IPv6 is dual-stack.
pub fn bind_tunnel(node_addr: IpAddr) -> anyhow::Result<UdpSocket> {
    let addr = match node_addr {
        IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, TUNNEL_PORT)),
        IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, TUNNEL_PORT)),
    };
    let bind = || -> std::io::Result<UdpSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            s.set_only_v6(false)?;
        }
        // Best effort: the kernel caps them at rmem_max / wmem_max.
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        UdpSocket::from_std(s.into())
    };
    bind().with_context(|| format!("binding the tunnel socket {addr}"))
}

/// Errors of the shell's own I/O (the core does not see them).
#[derive(Debug, Default)]
struct IoErrors {
    tun_write: RateLimited,
    tunnel_send: RateLimited,
}

/// The I/O side: the TUN, the tunnel socket, the query channel.
pub struct Shell<'a> {
    tun: &'a AsyncFd<SyncDevice>,
    udp: &'a UdpSocket,
    /// True if the tunnel socket is IPv6 (dual-stack): IPv4 peers are
    /// addressed as IPv4-mapped.
    udp_v6: bool,
    queries: UnboundedSender<IpAddr>,
    clock: Clock,
    errors: IoErrors,
}

impl<'a> Shell<'a> {
    pub fn new(
        tun: &'a AsyncFd<SyncDevice>,
        udp: &'a UdpSocket,
        queries: UnboundedSender<IpAddr>,
        clock: Clock,
    ) -> Shell<'a> {
        let udp_v6 = udp.local_addr().is_ok_and(|a| a.is_ipv6());
        Shell {
            tun,
            udp,
            udp_v6,
            queries,
            clock,
            errors: IoErrors::default(),
        }
    }

    /// The loop. Returns on SIGTERM or SIGINT (`Ok`), or on an error of the
    /// TUN or the tunnel socket that is not transient.
    pub async fn run(
        &mut self,
        core: &mut NetManagerCore,
        mut events: UnboundedReceiver<Message>,
        mut control: Receiver<Request<Command>>,
        signals: &mut Signals,
    ) -> anyhow::Result<()> {
        let mut tun_buf = vec![0u8; BUF];
        let mut udp_buf = vec![0u8; BUF];
        // The actions of one packet besides its forward; cleared by the
        // core on each call, drained here.
        let mut extra: Vec<Action> = Vec::new();
        let (tun, udp) = (self.tun, self.udp);
        let mut expiry = ExpiryTimer::new(self.clock);
        loop {
            expiry.arm(core.next_deadline());
            tokio::select! {
                () = signals.stop() => return Ok(()),
                r = tun.readable() => {
                    let mut guard = r.context("waiting for the TUN")?;
                    let now = self.clock.now();
                    for _ in 0..BATCH {
                        match guard.try_io(|d| d.get_ref().recv(&mut tun_buf)) {
                            Ok(Ok(n)) => {
                                let fwd =
                                    core.tun_packet_in_place(now, &mut tun_buf[..n], &mut extra);
                                self.exec(extra.drain(..)).await;
                                if let Some(fwd) = fwd {
                                    self.forward(fwd, &tun_buf).await;
                                }
                            }
                            Ok(Err(e)) if transient(&e) => {}
                            Ok(Err(e)) => return Err(e).context("reading the TUN"),
                            // WouldBlock: readiness cleared.
                            Err(_would_block) => break,
                        }
                    }
                }
                r = udp.readable() => {
                    r.context("waiting for the tunnel socket")?;
                    let now = self.clock.now();
                    for _ in 0..BATCH {
                        match udp.try_recv_from(&mut udp_buf) {
                            Ok((n, from)) => {
                                let from = from.ip().to_canonical();
                                let fwd = core.tunnel_datagram_in_place(
                                    now,
                                    from,
                                    &mut udp_buf[..n],
                                    &mut extra,
                                );
                                self.exec(extra.drain(..)).await;
                                if let Some(fwd) = fwd {
                                    self.forward(fwd, &udp_buf).await;
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) if transient(&e) => {}
                            Err(e) => return Err(e).context("receiving on the tunnel socket"),
                        }
                    }
                }
                Some(msg) = events.recv() => {
                    let now = self.clock.now();
                    let acts = match msg {
                        Message::Resolved(res) => core.on_resolution(now, res.service_ip, Ok(res)),
                        Message::Failed(ip, e) => {
                            debug!(%ip, "resolution failed: {e}");
                            core.on_resolution(now, ip, Err(e))
                        }
                        Message::Invalidate(ip) => {
                            debug!(%ip, "invalidated");
                            core.invalidate(ip);
                            Vec::new()
                        }
                        Message::Resolve(_) => Vec::new(),
                    };
                    self.exec(acts).await;
                }
                Some(req) = control.recv() => {
                    let _ = req.reply.send(answer(core, req.command));
                }
                () = expiry.wait() => {
                    let acts = core.expire(self.clock.now());
                    self.exec(acts).await;
                }
            }
        }
    }

    /// Carries out the core's actions. Write and send errors drop the
    /// packet (counted here, logged at most once a second).
    async fn exec(&mut self, actions: impl IntoIterator<Item = Action>) {
        for a in actions {
            match a {
                Action::WriteTun(p) => self.write_tun(&p),
                Action::SendTunnel {
                    node,
                    port,
                    datagram,
                } => self.send_tunnel(node, port, &datagram).await,
                Action::Query(ip) => {
                    trace!(%ip, "query");
                    // The manager task lives as long as the runtime; were
                    // it gone, the core's query timeout fails the query.
                    let _ = self.queries.send(ip);
                }
                Action::Drop(reason) => trace!(%reason, "dropped"),
            }
        }
    }

    /// Sends the packet an in-place entry point translated in `buf`.
    async fn forward(&mut self, fwd: Forward, buf: &[u8]) {
        match fwd {
            Forward::Tun { len } => self.write_tun(&buf[..len]),
            Forward::Tunnel { node, port, len } => self.send_tunnel(node, port, &buf[..len]).await,
        }
    }

    fn write_tun(&mut self, packet: &[u8]) {
        if let Err(e) = self.tun.get_ref().send(packet) {
            self.errors.tun_write.warn("writing to the TUN", &e);
        }
    }

    async fn send_tunnel(&mut self, node: IpAddr, port: u16, datagram: &[u8]) {
        let to = match node {
            IpAddr::V4(v4) if self.udp_v6 => IpAddr::V6(v4.to_ipv6_mapped()),
            ip => ip,
        };
        if let Err(e) = self.udp.send_to(datagram, (to, port)).await {
            self.errors
                .tunnel_send
                .warn(&format!("sending to the tunnel peer {node}"), &e);
        }
    }

    /// Logs the shell's own I/O errors, if there were any.
    pub fn log_io_errors(&self) {
        let (tun_write, tunnel_send) = (
            self.errors.tun_write.total(),
            self.errors.tunnel_send.total(),
        );
        if tun_write + tunnel_send > 0 {
            warn!(tun_write, tunnel_send, "packets lost to I/O errors");
        }
    }
}

/// Errors after which the loop goes on.
fn transient(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(
            Errno::EINTR
                | Errno::ECONNREFUSED
                | Errno::EHOSTUNREACH
                | Errno::ENETUNREACH
                | Errno::ENOBUFS
                | Errno::EMSGSIZE
        )
    )
}

/// The reply text of a control command.
fn answer(core: &NetManagerCore, cmd: Command) -> String {
    match cmd {
        Command::Counters => format!("{}\n", core.counters()),
        Command::Flows => format!(
            "flows {}\ncache {}\n",
            core.conntrack().len(),
            core.cache().len()
        ),
    }
}
