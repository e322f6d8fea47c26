//! The built-in echo server (`hoplab __echo --tcp P --udp P`): a real
//! process in its host that sends back every byte it gets, for TCP until the
//! peer closes, for UDP one datagram for one.
//!
//! Knows sockets only: nothing of the lab or the run.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

fn bind_any<T>(port: u16, f: impl Fn(SocketAddr) -> std::io::Result<T>) -> std::io::Result<Vec<T>> {
    // IPv4 always; IPv6 where the host has it (it is off by default).
    let mut out = vec![f(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?];
    if let Ok(s) = f(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        out.push(s);
    }
    Ok(out)
}

/// A socket of type `ty` bound to `a`; an IPv6 one takes IPv6 only, so it
/// can sit beside the IPv4 one on the same port.
fn bound(a: SocketAddr, ty: socket2::Type) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(a), ty, None)?;
    if a.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&a.into())?;
    Ok(s)
}

/// Serve until killed. Returns only on a bind error.
pub fn serve(tcp: &[u16], udp: &[u16]) -> std::io::Result<()> {
    let mut threads = Vec::new();
    for &port in tcp {
        for l in bind_any(port, |a| {
            let s = bound(a, socket2::Type::STREAM)?;
            s.listen(128)?;
            Ok(TcpListener::from(s))
        })? {
            threads.push(std::thread::spawn(move || {
                for conn in l.incoming().flatten() {
                    std::thread::spawn(move || {
                        let mut c = conn;
                        let mut buf = [0u8; 16384];
                        loop {
                            match c.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if c.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    });
                }
            }));
        }
    }
    for &port in udp {
        for s in bind_any(port, |a| {
            Ok(UdpSocket::from(bound(a, socket2::Type::DGRAM)?))
        })? {
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }));
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
