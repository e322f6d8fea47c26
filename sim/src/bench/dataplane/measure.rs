//! The benchmark's servers (sink and echo, threads of this process on
//! sockets made in a host's namespace) and its clients (bulk throughput,
//! round-trip latency, connection rate), with the statistics over them.
//! Plain sockets: it knows no scenario, path or namespace beyond the one a
//! server is started in.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{CHUNK, ECHO_PORT, IO_TIMEOUT, MSG, SINK_PORT, WARMUP_ROUND_TRIPS};
use crate::lab::netns::NetNs;
use crate::Error;

/// The sink and the echo of one server host, served by threads of this
/// process. Dropping it closes the listeners and joins the threads.
pub(super) struct Servers {
    listeners: Vec<TcpListener>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub(super) fn start(ns: &NetNs) -> Result<Servers, Error> {
        let bind = |port: u16| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port));
        let (sink, echo) = ns
            .run(|| -> io::Result<_> { Ok((bind(SINK_PORT)?, bind(ECHO_PORT)?)) })
            .and_then(|r| r)
            .map_err(|source| Error::Io {
                what: format!("{}: listen on {SINK_PORT} and {ECHO_PORT}", ns.name()),
                source,
            })?;
        let clone = |l: &TcpListener| {
            l.try_clone().map_err(|source| Error::Io {
                what: "clone listener".into(),
                source,
            })
        };
        let listeners = vec![clone(&sink)?, clone(&echo)?];
        let threads = vec![
            std::thread::spawn(move || accept_loop(sink, sink_conn)),
            std::thread::spawn(move || accept_loop(echo, echo_conn)),
        ];
        Ok(Servers { listeners, threads })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket wakes a blocked accept(2) with
        // EINVAL on Linux: the accept loops end.
        for l in &self.listeners {
            let _ = socket2::SockRef::from(l).shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(l: TcpListener, handle: fn(TcpStream) -> io::Result<()>) {
    let mut conns = Vec::new();
    while let Ok((s, _)) = l.accept() {
        conns.push(std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(IO_TIMEOUT));
            let _ = s.set_write_timeout(Some(IO_TIMEOUT));
            let _ = handle(s);
        }));
        conns.retain(|c| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Read and discard until EOF, then answer with the byte count (u64, big
/// endian).
fn sink_conn(mut s: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    s.write_all(&n.to_be_bytes())
}

/// Echo [`MSG`]-byte messages until EOF.
fn echo_conn(mut s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = [0u8; MSG];
    loop {
        match s.read_exact(&mut buf) {
            Ok(()) => s.write_all(&buf)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn connect(to: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// One connection, [`CHUNK`]-byte writes for `secs`; Gbit/s of what the
/// sink counted, over the time until its count arrived.
pub(super) fn bulk(to: SocketAddr, secs: f64) -> io::Result<f64> {
    let mut s = connect(to)?;
    let buf = vec![0x5au8; CHUNK];
    let dur = Duration::from_secs_f64(secs);
    let t = Instant::now();
    while t.elapsed() < dur {
        s.write_all(&buf)?;
    }
    s.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    let elapsed = t.elapsed().as_secs_f64();
    Ok(u64::from_be_bytes(count) as f64 * 8.0 / elapsed / 1e9)
}

/// One connection, `TCP_NODELAY`, `n` recorded round trips of [`MSG`]
/// bytes each way (after a short warm-up). Returns (p50, p99) in µs.
pub(super) fn latency(to: SocketAddr, n: usize) -> io::Result<(f64, f64)> {
    let mut s = connect(to)?;
    s.set_nodelay(true)?;
    let mut req = [0u8; MSG];
    let mut resp = [0u8; MSG];
    let mut rtts = Vec::with_capacity(n);
    // Never much longer than the round trips would take at 5 ms each.
    let deadline = Instant::now() + Duration::from_secs(5) + Duration::from_millis(5 * n as u64);
    for i in 0..WARMUP_ROUND_TRIPS + n {
        req[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let t = Instant::now();
        s.write_all(&req)?;
        s.read_exact(&mut resp)?;
        let rtt = t.elapsed();
        if resp != req {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the echo answered something else",
            ));
        }
        if i >= WARMUP_ROUND_TRIPS {
            rtts.push(rtt.as_secs_f64() * 1e6);
        }
        if Instant::now() > deadline && !rtts.is_empty() {
            break;
        }
    }
    if rtts.is_empty() {
        return Err(io::Error::other("no round trip recorded"));
    }
    rtts.sort_by(f64::total_cmp);
    Ok((percentile(&rtts, 50.0), percentile(&rtts, 99.0)))
}

/// For `secs`, at most `max` times: connect, one [`MSG`]-byte round trip
/// (`TCP_NODELAY`), close. Returns (connections, connections per second).
pub(super) fn conn_rate(to: SocketAddr, secs: f64, max: usize) -> io::Result<(u64, f64)> {
    let mut req = [0u8; MSG];
    let mut resp = [0u8; MSG];
    let dur = Duration::from_secs_f64(secs);
    let t = Instant::now();
    let mut n = 0u64;
    while (n as usize) < max && t.elapsed() < dur {
        let mut s = connect(to)?;
        s.set_nodelay(true)?;
        req[..8].copy_from_slice(&n.to_be_bytes());
        s.write_all(&req)?;
        s.read_exact(&mut resp)?;
        if resp != req {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the echo answered something else",
            ));
        }
        drop(s);
        n += 1;
    }
    Ok((n, n as f64 / t.elapsed().as_secs_f64()))
}

/// Nearest-rank percentile of sorted, non-empty `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }
}
