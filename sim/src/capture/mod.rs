//! Capture with AF_PACKET on every interface of every host, kernel
//! timestamps (SO_TIMESTAMPNS), both directions, into one pcapng.
//!
//! Sockets are opened inside each host before the first packet of the
//! traffic and bound to one interface; one reader thread polls them all and
//! drains them once more after the last packet.
//!
//! This module is the live capture; `pcapng` writes what it saw and
//! `read` reads any capture back (hoplab's or another tool's). None of
//! them knows traces, flows or scenarios: the frame comments the writer
//! puts in come from the trace.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pcap_file::DataLink;

use nix::poll::{PollFd, PollFlags};

use crate::lab::netns::NetNs;

pub mod dataplane_drops;
pub mod kernel_drops;
mod pcapng;
mod read;
pub mod verdicts;

pub use pcapng::{
    per_interface_name, write_pcapng, write_pcapng_with, write_per_interface, PER_INTERFACE_DIR,
};
pub use read::{
    link_name, parse_frame, read, read_bytes, read_capture, read_whole, CaptureFile, Captured,
    Damage, FrameError, ReadError, DECODED_LINKS, UNNAMED_HOST,
};

/// Bind the packet socket `fd` to every protocol of interface `ifindex`.
pub(crate) fn bind_packet(fd: &OwnedFd, ifindex: u32) -> io::Result<()> {
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: `sll` is a fully initialised sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// One captured interface: `host/ifname` and its link type.
#[derive(Debug, Clone)]
pub struct Iface {
    pub host: String,
    pub ifname: String,
    pub link: DataLink,
}

impl Iface {
    pub fn label(&self) -> String {
        format!("{}/{}", self.host, self.ifname)
    }
}

/// One frame as the kernel handed it over.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Kernel receive timestamp, ns since the epoch.
    pub ts_ns: u64,
    /// Index into the capture's interface list.
    pub iface: u32,
    pub outgoing: bool,
    pub data: Vec<u8>,
}

pub(crate) const SNAPLEN: usize = 65535;

/// A running capture.
pub struct Capture {
    ifaces: Vec<Iface>,
    stop: Arc<AtomicBool>,
    reader: JoinHandle<io::Result<Vec<Frame>>>,
}

/// `e` with what failed in front of it.
fn ctx(what: &str, e: impl Into<io::Error>) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Open a packet socket on `ifname` in the calling thread's namespace.
fn open_socket(ifname: &str) -> io::Result<(OwnedFd, DataLink)> {
    use nix::sys::socket::{self, setsockopt, sockopt, AddressFamily, SockFlag, SockType};
    let cname = std::ffi::CString::new(ifname).map_err(|_| io::Error::other("NUL in ifname"))?;
    let fd = socket::socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None, // protocol 0: receive nothing until bound to one interface below
    )
    .map_err(|e| ctx("AF_PACKET socket", e))?;
    let ifindex = nix::net::if_::if_nametoindex(cname.as_c_str())
        .map_err(|e| ctx(&format!("interface {ifname}"), e))?;
    let sockopt_ctx = |e| ctx("setsockopt on AF_PACKET socket", e);
    setsockopt(&fd, sockopt::ReceiveTimestampns, &true).map_err(sockopt_ctx)?;
    // SO_RCVBUFFORCE needs CAP_NET_ADMIN in the machine's user namespace,
    // which a rootless run lacks: there the buffer is what SO_RCVBUF allows
    // (capped at net.core.rmem_max).
    let rcvbuf: usize = 8 << 20;
    match setsockopt(&fd, sockopt::RcvBufForce, &rcvbuf) {
        Err(nix::errno::Errno::EPERM) => {
            setsockopt(&fd, sockopt::RcvBuf, &rcvbuf).map_err(sockopt_ctx)?
        }
        r => r.map_err(sockopt_ctx)?,
    }
    bind_packet(&fd, ifindex).map_err(|e| ctx(&format!("bind AF_PACKET socket to {ifname}"), e))?;
    // The link type, from the device's hardware type.
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(cname.as_bytes()) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the NUL-terminated name in `ifr` and writes
    // only into it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr) };
    if r != 0 {
        return Err(ctx(
            &format!("SIOCGIFHWADDR {ifname}"),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: the ioctl succeeded, so ifru_hwaddr is the active member.
    let hatype = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_family };
    let link = match hatype {
        libc::ARPHRD_NONE => DataLink::RAW,
        _ => DataLink::ETHERNET,
    };
    Ok((fd, link))
}

/// Read every frame queued on `fd` (non-blocking) into `out`, each with
/// its kernel timestamp (`SCM_TIMESTAMPNS`) and direction (the packet type
/// of its link-layer address).
fn drain(fd: &OwnedFd, iface: u32, buf: &mut [u8], out: &mut Vec<Frame>) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::sys::socket::{recvmsg, ControlMessageOwned, LinkAddr, MsgFlags};
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    loop {
        let (len, ts_ns, outgoing) = {
            let mut iov = [io::IoSliceMut::new(buf)];
            // MSG_TRUNC: the length returned is the frame's, even when
            // longer than the buffer.
            let msg = match recvmsg::<LinkAddr>(
                fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_TRUNC,
            ) {
                Ok(m) => m,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                // The interface went down (a step's `link: {down}`): the
                // socket reports it once, and captures again once it is
                // up.
                Err(Errno::ENETDOWN) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut ts_ns = 0u64;
            for c in msg.cmsgs()? {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    ts_ns = ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64;
                }
            }
            let outgoing = msg
                .address
                .is_some_and(|a| a.pkttype() == libc::PACKET_OUTGOING);
            (msg.bytes, ts_ns, outgoing)
        };
        let len = len.min(buf.len());
        out.push(Frame {
            ts_ns,
            iface,
            outgoing,
            data: buf[..len].to_vec(),
        });
    }
}

/// Whether the kernel stamps packets as they pass: a datagram sent over
/// loopback and read 2 ms later carries a timestamp from before the read
/// only then. Without it (the kernel turns stamping on from a work queue,
/// some time after the first socket asks for it; on a loaded machine,
/// after the first packets of a run) a frame is stamped when it is read,
/// and frames read together sort by the order they were read in, not by
/// when they passed.
fn kernel_stamps() -> io::Result<bool> {
    use nix::sys::socket::{
        recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn,
    };
    let rx = std::net::UdpSocket::bind("127.0.0.1:0")?;
    setsockopt(&rx, sockopt::ReceiveTimestampns, &true).map_err(|e| ctx("SO_TIMESTAMPNS", e))?;
    let tx = std::net::UdpSocket::bind("127.0.0.1:0")?;
    tx.send_to(b"t", rx.local_addr()?)?;
    std::thread::sleep(Duration::from_millis(2));
    let before_read = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
        .map_err(|e| ctx("clock", e))?;
    let mut buf = [0u8; 8];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg = recvmsg::<SockaddrIn>(rx.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(|e| ctx("recvmsg", e))?;
    for c in msg.cmsgs().map_err(|e| ctx("cmsgs", e))? {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            return Ok(ts < before_read);
        }
    }
    Ok(false)
}

/// Wait (at most 2 s) until the kernel stamps packets as they pass
/// ([`kernel_stamps`]), checked in a namespace whose loopback is up.
fn wait_for_kernel_stamps(ns: &NetNs) -> io::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !ns.run(kernel_stamps)?? {
        if std::time::Instant::now() > deadline {
            tracing::warn!("the kernel does not stamp packets yet: frames are ordered as read");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

impl Capture {
    /// Open sockets on `ifaces` (`(host, ifname)`, hosts looked up in
    /// `hosts`) and start reading, once the kernel stamps packets as they
    /// pass (see [`kernel_stamps`]).
    pub fn start(targets: &[(&NetNs, &str)]) -> io::Result<Capture> {
        let mut fds = Vec::new();
        let mut ifaces = Vec::new();
        for (ns, ifname) in targets {
            let (fd, link) = ns.run(|| open_socket(ifname))??;
            fds.push(fd);
            ifaces.push(Iface {
                host: ns.name().to_string(),
                ifname: ifname.to_string(),
                link,
            });
        }
        if let Some((ns, _)) = targets.first() {
            wait_for_kernel_stamps(ns)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let reader = std::thread::Builder::new().name("capture".into()).spawn(
            move || -> io::Result<Vec<Frame>> {
                let mut frames = Vec::new();
                let mut buf = vec![0u8; SNAPLEN];
                let mut pfds: Vec<PollFd> = fds
                    .iter()
                    .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                    .collect();
                loop {
                    let last = flag.load(Ordering::Acquire);
                    let r = match nix::poll::poll(&mut pfds, 20u8) {
                        Ok(r) => r,
                        Err(nix::errno::Errno::EINTR) => -1,
                        Err(e) => return Err(ctx("poll", e)),
                    };
                    let before = frames.len();
                    for (i, p) in pfds.iter().enumerate() {
                        if last || p.revents().is_some_and(|r| !r.is_empty()) {
                            drain(&fds[i], i as u32, &mut buf, &mut frames)?;
                        }
                    }
                    // Once asked to stop, go on until a whole poll interval
                    // passes with nothing new: the last packets of a busy
                    // machine are not lost to a fixed wait.
                    if last && r == 0 && frames.len() == before {
                        return Ok(frames);
                    }
                }
            },
        )?;
        Ok(Capture {
            ifaces,
            stop,
            reader,
        })
    }

    /// Wait `settle`, then drain every socket until 20 ms pass with no new
    /// frame, and return what was seen, ordered by kernel timestamp.
    ///
    /// Once `cancelled`, the wait ends within a slice, but not before one
    /// slice (or `settle`, if shorter) has passed: packets still on their
    /// way (one waiting for its ARP answer) are captured in an interrupted
    /// run as in a complete one with the default settle.
    pub fn finish(
        self,
        settle: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> io::Result<(Vec<Iface>, Vec<Frame>)> {
        use crate::lab::traffic::{sleep, SLICE};
        let first = settle.min(SLICE);
        std::thread::sleep(first);
        sleep(settle - first, cancelled);
        self.stop.store(true, Ordering::Release);
        let mut frames = self
            .reader
            .join()
            .map_err(|_| io::Error::other("capture thread panicked"))??;
        frames.sort_by_key(|f| (f.ts_ns, f.iface));
        Ok((self.ifaces, frames))
    }
}
