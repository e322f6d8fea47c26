//! The tunnel socket's batched I/O: UDP generic segmentation on send
//! (`UDP_SEGMENT`: datagrams of one size to one peer, the last possibly
//! shorter, handed to the kernel in one `sendmsg`) and UDP generic receive
//! offload on receive (`UDP_GRO`: the kernel hands over datagrams of one
//! flow that arrived together as one buffer and their size).
//!
//! [`GsoBatch`] is the plan (which datagrams go together; plain data, no
//! I/O); [`send`] and [`recv`] do the system calls on a tokio socket.
//! Either family: on an IPv6 underlay the socket is IPv6 (dual-stack, so
//! IPv4 peers still reach it); [`recv`] gives every sender as its own
//! family's address (an IPv4 peer of a dual-stack socket as IPv4, not
//! IPv4-mapped), and [`peer`] addresses an IPv4 peer from such a socket.
//! It knows nothing of what the datagrams carry.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::SockaddrStorage;
use nix::sys::socket::{self, sockopt, ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams in one `UDP_SEGMENT` send at most (the kernel's limit was 64
/// before Linux 6.9).
pub const MAX_SEGMENTS: usize = 64;
/// Bytes of payload in one `UDP_SEGMENT` send at most: what fits in one
/// IPv6 or IPv4 packet of 64 KiB.
pub const MAX_GSO_BYTES: usize = 65_000;

/// Turns on `UDP_GRO` on the socket (received datagrams may come
/// coalesced, see [`recv`]). Returns whether the kernel took it.
pub fn enable_gro(udp: &UdpSocket) -> bool {
    socket::setsockopt(udp, sockopt::UdpGroSegment, &true).is_ok()
}

/// Datagrams queued for one send: all to one peer, all of the first one's
/// size but the last, which may be shorter.
#[derive(Debug)]
pub struct GsoBatch {
    buf: Vec<u8>,
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the batch.
    closed: bool,
    /// Whether more than one datagram may go in one send.
    gso: bool,
}

impl GsoBatch {
    /// An empty batch; with `gso` false each datagram is sent on its own.
    pub fn new(gso: bool) -> GsoBatch {
        GsoBatch {
            buf: Vec::with_capacity(MAX_GSO_BYTES),
            to: None,
            segment: 0,
            count: 0,
            closed: false,
            gso,
        }
    }

    /// Whether a datagram of `len` bytes to `to` can join the batch (if
    /// not, send the batch first).
    pub fn fits(&self, to: SocketAddr, len: usize) -> bool {
        self.count == 0
            || (self.gso
                && self.to == Some(to)
                && !self.closed
                && len > 0
                && len <= self.segment
                && self.count < MAX_SEGMENTS
                && self.buf.len() + len <= MAX_GSO_BYTES)
    }

    /// Adds a datagram; the caller checked [`GsoBatch::fits`].
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) {
        debug_assert!(self.fits(to, datagram.len()));
        if self.count == 0 {
            self.to = Some(to);
            self.segment = datagram.len();
        } else if datagram.len() < self.segment {
            self.closed = true;
        }
        self.buf.extend_from_slice(datagram);
        self.count += 1;
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The peer, the datagrams back to back and their size (the last may
    /// be shorter), if any are queued.
    pub fn pending(&self) -> Option<(SocketAddr, &[u8], usize)> {
        self.to
            .filter(|_| self.count > 0)
            .map(|to| (to, &self.buf[..], self.segment))
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.to = None;
        self.segment = 0;
        self.count = 0;
        self.closed = false;
    }
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Sends the batch (one `sendmsg`, with `UDP_SEGMENT` if it holds more
/// than one datagram) and empties it. If the kernel refuses the segmented
/// send (a device without checksum offload, a segment over the path's
/// MTU), each datagram is sent on its own. Returns the datagrams sent;
/// an error is the first failed send.
pub async fn send(udp: &UdpSocket, batch: &mut GsoBatch) -> io::Result<usize> {
    let Some((to, data, segment)) = batch.pending() else {
        return Ok(0);
    };
    let count = batch.len();
    let r = if count == 1 {
        udp.send_to(data, to).await.map(|_| 1)
    } else {
        match send_segmented(udp, to, data, segment).await {
            Ok(()) => Ok(count),
            Err(e) if refused_gso(&e) => send_each(udp, to, data, segment).await,
            Err(e) => Err(e),
        }
    };
    batch.clear();
    r
}

/// Sends `datagrams` to `to`, in as few system calls as `UDP_SEGMENT`
/// allows (runs of one size, the last of a run possibly shorter, within
/// [`MAX_SEGMENTS`] and [`MAX_GSO_BYTES`]), straight from where they lie;
/// with `gso` false, one by one. Returns the datagrams sent; an error is
/// the first failed send (the others were still tried).
pub async fn send_all(
    udp: &UdpSocket,
    to: SocketAddr,
    datagrams: &[&[u8]],
    gso: bool,
) -> io::Result<usize> {
    let (mut sent, mut first_err) = (0, None);
    let mut i = 0;
    while i < datagrams.len() {
        let n = if gso { run_len(&datagrams[i..]) } else { 1 };
        let run = &datagrams[i..i + n];
        let r = if n == 1 {
            udp.send_to(run[0], to).await.map(|_| 1)
        } else {
            match send_run(udp, to, run).await {
                Ok(()) => Ok(n),
                Err(e) if refused_gso(&e) => {
                    let mut k = 0;
                    for d in run {
                        udp.send_to(d, to).await?;
                        k += 1;
                    }
                    Ok(k)
                }
                Err(e) => Err(e),
            }
        };
        match r {
            Ok(k) => sent += k,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
        i += n;
    }
    first_err.map_or(Ok(sent), Err)
}

/// How many of `datagrams` (at least one) go in the first segmented send.
fn run_len(datagrams: &[&[u8]]) -> usize {
    let seg = datagrams[0].len();
    let mut bytes = seg;
    let mut n = 1;
    for d in &datagrams[1..] {
        if n == MAX_SEGMENTS || d.is_empty() || d.len() > seg || bytes + d.len() > MAX_GSO_BYTES {
            break;
        }
        bytes += d.len();
        n += 1;
        if d.len() < seg {
            break;
        }
    }
    n
}

async fn send_run(udp: &UdpSocket, to: SocketAddr, run: &[&[u8]]) -> io::Result<()> {
    let seg = u16::try_from(run[0].len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment over 64 KiB"))?;
    let addr = SockaddrStorage::from(to);
    let fd = udp.as_raw_fd();
    let mut iov = [IoSlice::new(&[]); MAX_SEGMENTS];
    for (slot, d) in iov.iter_mut().zip(run) {
        *slot = IoSlice::new(d);
    }
    let iov = &iov[..run.len()];
    udp.async_io(Interest::WRITABLE, || {
        let cmsg = [ControlMessage::UdpGsoSegments(&seg)];
        socket::sendmsg(fd, iov, &cmsg, MsgFlags::empty(), Some(&addr)).map_err(nix_io)
    })
    .await
    .map(|_| ())
}

fn refused_gso(e: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EIO | Errno::EINVAL | Errno::EOPNOTSUPP)
    )
}

async fn send_segmented(
    udp: &UdpSocket,
    to: SocketAddr,
    data: &[u8],
    segment: usize,
) -> io::Result<()> {
    let seg = u16::try_from(segment)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment over 64 KiB"))?;
    let addr = SockaddrStorage::from(to);
    let fd = udp.as_raw_fd();
    udp.async_io(Interest::WRITABLE, || {
        let iov = [IoSlice::new(data)];
        let cmsg = [ControlMessage::UdpGsoSegments(&seg)];
        socket::sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&addr)).map_err(nix_io)
    })
    .await
    .map(|_| ())
}

async fn send_each(
    udp: &UdpSocket,
    to: SocketAddr,
    data: &[u8],
    segment: usize,
) -> io::Result<usize> {
    let mut first_err = None;
    let mut sent = 0;
    for d in data.chunks(segment.max(1)) {
        match udp.send_to(d, to).await {
            Ok(_) => sent += 1,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(sent), Err)
}

/// One receive: the bytes, the sender and, if the kernel coalesced
/// datagrams (`UDP_GRO`), their size (the last may be shorter); 0 for a
/// single datagram. `WouldBlock` when nothing is there (the socket's
/// readiness is cleared).
pub fn recv(
    udp: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> io::Result<(usize, SocketAddr, usize)> {
    let fd = udp.as_raw_fd();
    udp.try_io(Interest::READABLE, || {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = socket::recvmsg::<SockaddrStorage>(
            fd,
            &mut iov,
            Some(cmsg.as_mut_slice()),
            MsgFlags::empty(),
        )
        .map_err(nix_io)?;
        let mut segment = 0;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::UdpGroSegments(s) = c {
                    segment = usize::try_from(s).unwrap_or(0);
                }
            }
        }
        let from = msg
            .address
            .and_then(|a| to_socket_addr(&a))
            .ok_or_else(|| io::Error::other("datagram without a source address"))?;
        Ok((msg.bytes, from, segment))
    })
}

/// The sender, an IPv4-mapped IPv6 address (an IPv4 peer of a dual-stack
/// socket) given as IPv4.
fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::new(IpAddr::V6(v6.ip()).to_canonical(), v6.port()))
}

/// The socket address to send to `node`'s `port` from a socket of the
/// family `socket_v6`: an IPv4 node as IPv4-mapped from an IPv6
/// (dual-stack) socket.
pub fn peer(socket_v6: bool, node: IpAddr, port: u16) -> SocketAddr {
    match node {
        IpAddr::V4(v4) if socket_v6 => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), port),
        ip => SocketAddr::new(ip, port),
    }
}

/// Space for the control message [`recv`] reads.
pub fn cmsg_buffer() -> Vec<u8> {
    nix::cmsg_space!(i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(p: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], p))
    }

    #[test]
    fn datagrams_of_one_size_to_one_peer_go_together_and_a_shorter_one_ends_them() {
        let mut b = GsoBatch::new(true);
        assert!(b.fits(peer(1), 100));
        b.push(peer(1), &[1; 100]);
        assert!(b.fits(peer(1), 100));
        assert!(!b.fits(peer(2), 100), "another peer");
        assert!(!b.fits(peer(1), 101), "a longer datagram");
        b.push(peer(1), &[2; 100]);
        b.push(peer(1), &[3; 40]);
        assert!(!b.fits(peer(1), 40), "after a shorter one");
        let (to, data, seg) = b.pending().unwrap();
        assert_eq!((to, data.len(), seg), (peer(1), 240, 100));
        assert_eq!(data[100], 2);
        b.clear();
        assert!(b.pending().is_none());
    }

    #[test]
    fn a_batch_stays_within_the_kernel_limits() {
        let mut b = GsoBatch::new(true);
        let d = [0u8; 1450];
        let mut n = 0;
        while b.fits(peer(1), d.len()) {
            b.push(peer(1), &d);
            n += 1;
        }
        assert!(n <= MAX_SEGMENTS && n * d.len() <= MAX_GSO_BYTES);
        assert_eq!(n, MAX_GSO_BYTES / d.len());
        let mut b = GsoBatch::new(true);
        while b.fits(peer(1), 10) {
            b.push(peer(1), &[0; 10]);
        }
        assert_eq!(b.len(), MAX_SEGMENTS);
    }

    #[test]
    fn without_gso_each_datagram_goes_alone() {
        let mut b = GsoBatch::new(false);
        b.push(peer(1), &[0; 10]);
        assert!(!b.fits(peer(1), 10));
    }

    #[test]
    fn runs_are_cut_at_a_longer_datagram_after_a_shorter_one_and_at_the_limits() {
        let (a, b, c) = ([0u8; 100], [0u8; 40], [0u8; 101]);
        assert_eq!(run_len(&[&a, &a, &b, &a]), 3);
        assert_eq!(run_len(&[&a, &c]), 1);
        assert_eq!(run_len(&[&b]), 1);
        let many = vec![&a[..]; 100];
        assert_eq!(run_len(&many), MAX_SEGMENTS);
        let big = [0u8; 1450];
        let many = vec![&big[..]; 60];
        assert_eq!(run_len(&many), MAX_GSO_BYTES / 1450);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_all_delivers_every_datagram_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let (a, b, c, d) = ([1u8; 300], [2u8; 300], [3u8; 100], [4u8; 300]);
        let all: [&[u8]; 4] = [&a, &b, &c, &d];
        assert_eq!(send_all(&tx, to, &all, true).await.unwrap(), 4);
        let mut buf = vec![0u8; 65536];
        let mut cmsg = cmsg_buffer();
        let mut got = Vec::new();
        while got.len() < 4 {
            rx.readable().await.unwrap();
            match recv(&rx, &mut buf, &mut cmsg) {
                Ok((n, _, seg)) => {
                    let seg = if seg == 0 { n } else { seg };
                    got.extend(buf[..n].chunks(seg).map(|c| (c.len(), c[0])));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, [(300, 1), (300, 2), (100, 3), (300, 4)]);
    }

    /// Receives until `count` datagrams came, each as (sender, length,
    /// first byte).
    async fn recv_n(rx: &UdpSocket, count: usize) -> Vec<(SocketAddr, usize, u8)> {
        let mut buf = vec![0u8; 65536];
        let mut cmsg = cmsg_buffer();
        let mut got = Vec::new();
        while got.len() < count {
            rx.readable().await.unwrap();
            match recv(rx, &mut buf, &mut cmsg) {
                Ok((n, from, seg)) => {
                    let seg = if seg == 0 { n } else { seg };
                    got.extend(buf[..n].chunks(seg).map(|c| (from, c.len(), c[0])));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    /// The tunnel over an IPv6 underlay: segmented sends between IPv6
    /// sockets, full-size datagrams (an overlay packet of 1450 bytes) too.
    #[tokio::test(flavor = "current_thread")]
    async fn segmented_sends_work_over_ipv6() {
        let rx = UdpSocket::bind("[::1]:0").await.unwrap();
        assert!(enable_gro(&rx));
        let tx = UdpSocket::bind("[::1]:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let (a, b, c) = ([1u8; 1450], [2u8; 1450], [3u8; 100]);
        assert_eq!(send_all(&tx, to, &[&a, &b, &c], true).await.unwrap(), 3);
        let from = tx.local_addr().unwrap();
        assert_eq!(
            recv_n(&rx, 3).await,
            [(from, 1450, 1), (from, 1450, 2), (from, 100, 3)]
        );
    }

    /// A dual-stack socket (the net manager's on an IPv6 underlay) reaches
    /// an IPv4 peer through [`peer`], and gives an IPv4 sender as IPv4.
    #[tokio::test(flavor = "current_thread")]
    async fn a_dual_stack_socket_speaks_to_ipv4_peers_by_their_ipv4_address() {
        let dual = {
            let s = socket2::Socket::new(
                socket2::Domain::IPV6,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .unwrap();
            s.set_only_v6(false).unwrap();
            s.set_nonblocking(true).unwrap();
            s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)).into())
                .unwrap();
            UdpSocket::from_std(s.into()).unwrap()
        };
        let v4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let v4_addr = v4.local_addr().unwrap();
        let to = super::peer(true, v4_addr.ip(), v4_addr.port());
        assert!(to.is_ipv6(), "{to}");
        let mut b = GsoBatch::new(true);
        b.push(to, b"over");
        assert_eq!(send(&dual, &mut b).await.unwrap(), 1);
        let got = recv_n(&v4, 1).await;
        assert_eq!((got[0].1, got[0].2), (4, b'o'));
        let dual_port = dual.local_addr().unwrap().port();
        v4.send_to(b"back", ("127.0.0.1", dual_port)).await.unwrap();
        assert_eq!(recv_n(&dual, 1).await, [(v4_addr, 4, b'b')]);
        assert_eq!(
            super::peer(false, v4_addr.ip(), 7),
            SocketAddr::new(v4_addr.ip(), 7)
        );
        let v6: IpAddr = "fd10::2".parse().unwrap();
        assert_eq!(super::peer(true, v6, 50103), SocketAddr::new(v6, 50103));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn segmented_sends_arrive_as_datagrams_on_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let mut b = GsoBatch::new(true);
        for i in 0..3u8 {
            b.push(to, &[i; 500]);
        }
        b.push(to, &[9; 20]);
        assert_eq!(send(&tx, &mut b).await.unwrap(), 4);
        assert!(b.is_empty());
        let mut buf = vec![0u8; 65536];
        let mut cmsg = cmsg_buffer();
        let mut got = Vec::new();
        while got.iter().map(|(n, _): &(usize, u8)| n).sum::<usize>() < 1520 {
            rx.readable().await.unwrap();
            match recv(&rx, &mut buf, &mut cmsg) {
                Ok((n, from, seg)) => {
                    assert_eq!(from, tx.local_addr().unwrap());
                    let seg = if seg == 0 { n } else { seg };
                    for c in buf[..n].chunks(seg) {
                        got.push((c.len(), c[0]));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, [(500, 0), (500, 1), (500, 2), (20, 9)]);
    }
}
