//! rustls configurations for hoplab's own client and server: TLS 1.3
//! only, the ring provider's default cipher suites and groups, no session
//! resumption or tickets (nothing that differs from run to run reaches the
//! packets), secrets appended to the run's key log. And [`Conn`]: a TCP
//! stream, plain or inside a TLS session, as one `Read + Write`.
//!
//! Knows TLS settings; not what is sent over them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ServerConfig};

use super::keylog::KeyLogFile;
use super::pki::{Pki, PkiError};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The client's configuration: trusts the run's CA only, offers `alpn`,
/// presents certificate `cert` if given.
pub fn client_config(
    pki: &Pki,
    alpn: &[String],
    cert: Option<&str>,
    keylog: Option<&Path>,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(pki.roots());
    let mut c = match cert {
        Some(n) => {
            let issued = pki.get(n)?;
            b.with_client_auth_cert(issued.chain(), issued.key())?
        }
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    c.resumption = rustls::client::Resumption::disabled();
    if let Some(k) = keylog {
        c.key_log = Arc::new(KeyLogFile::new(k.to_path_buf()));
    }
    Ok(Arc::new(c))
}

/// Files of the built-in server's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require a client certificate issued by this CA.
    pub client_ca: Option<PathBuf>,
}

fn read_err(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> ConfigError + '_ {
    move |e| ConfigError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The server's configuration from PEM files; ALPN `http/1.1`.
pub fn server_config(
    files: &ServerFiles,
    keylog: Option<&Path>,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(read_err(&files.cert))?
        .collect::<Result<_, _>>()
        .map_err(read_err(&files.cert))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(read_err(&files.key))?;
    let b = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let b = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(read_err(ca))? {
                roots.add(c.map_err(read_err(ca))?)?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()?;
            b.with_client_cert_verifier(v)
        }
        None => b.with_no_client_auth(),
    };
    let mut c = b.with_single_cert(chain, key)?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    c.send_tls13_tickets = 0;
    c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    if let Some(k) = keylog {
        c.key_log = Arc::new(KeyLogFile::new(k.to_path_buf()));
    }
    Ok(Arc::new(c))
}

/// The TCP stream under a stream, and whether its reads acknowledge at
/// once ([`quickack`]).
pub trait AsTcp {
    fn tcp(&self) -> &TcpStream;
    /// Acknowledge reads at once (`true`), or let the kernel delay ACKs.
    fn set_quick(&mut self, on: bool);
    /// Whether waiting should stop now: the step's time is up or the run
    /// was interrupted (never, for a stream with no deadline).
    fn give_up(&self) -> bool {
        false
    }
}

impl AsTcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
    fn set_quick(&mut self, _on: bool) {}
}

impl AsTcp for Bounded<'_> {
    fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
    fn set_quick(&mut self, on: bool) {
        self.quick = on;
    }
    fn give_up(&self) -> bool {
        self.next().is_err()
    }
}

/// Hold (`on`) or release what is written to `tcp`, so that what is
/// written in between leaves in as few segments as fit (`TCP_CORK`).
pub fn cork(tcp: &TcpStream, on: bool) {
    let _ = socket2::SockRef::from(tcp).set_tcp_cork(on);
}

/// A connection: plain TCP, or a TLS session over it. `S` is the TCP
/// stream (or a wrapper that bounds its waits).
pub enum Conn<S: Read + Write> {
    Plain(S),
    Client(Box<rustls::StreamOwned<rustls::ClientConnection, S>>),
    Server(Box<rustls::StreamOwned<rustls::ServerConnection, S>>),
}

impl<S: Read + Write + AsTcp> Conn<S> {
    /// The stream under TLS.
    pub fn inner(&self) -> &S {
        match self {
            Conn::Plain(s) => s,
            Conn::Client(t) => &t.sock,
            Conn::Server(t) => &t.sock,
        }
    }

    /// The stream under TLS, to read past TLS's end.
    pub fn inner_mut(&mut self) -> &mut S {
        match self {
            Conn::Plain(s) => s,
            Conn::Client(t) => &mut t.sock,
            Conn::Server(t) => &mut t.sock,
        }
    }

    /// Close our side (close_notify and FIN in one segment), then read
    /// until the peer's FIN (or the stream's timeout).
    pub fn close_and_drain(&mut self) {
        let tcp = self.inner().tcp().try_clone();
        if let Ok(t) = &tcp {
            cork(t, true);
        }
        let _ = self.close_notify();
        let _ = self.inner().tcp().shutdown(std::net::Shutdown::Write);
        if let Ok(t) = &tcp {
            cork(t, false);
        }
        self.drain_after_fin();
    }

    /// After our FIN: the kernel delays its ACKs again, so what the peer
    /// sends before its FIN (a close_notify, an echo) is acknowledged with
    /// the FIN, by one ACK, however the peer splits its close.
    fn drain_after_fin(&mut self) {
        self.inner_mut().set_quick(false);
        let _ = socket2::SockRef::from(self.inner().tcp()).set_tcp_quickack(false);
        drain(self.inner_mut());
    }

    /// Give up on the connection: it is reset (RST) when dropped, so
    /// nothing the peer does late reaches the capture.
    pub fn abort(&self) {
        let _ =
            socket2::SockRef::from(self.inner().tcp()).set_linger(Some(std::time::Duration::ZERO));
    }

    /// Send our FIN (no close_notify: TLS failed, its alert is queued; the
    /// FIN leaves with it), then
    /// read raw bytes to the peer's FIN, so nothing it sends is left
    /// unread (which would make the close a reset).
    pub fn fin_and_drain(&mut self) {
        let _ = self.inner().tcp().shutdown(std::net::Shutdown::Write);
        cork(self.inner().tcp(), false);
        self.drain_after_fin();
    }

    /// Read raw bytes (past TLS) to the peer's FIN.
    pub fn drain_raw(&mut self) {
        drain(self.inner_mut());
    }

    /// The peer closed first: read to its FIN, then send ours (FIN only:
    /// a close_notify now would meet a closed socket, and a reset). Then
    /// wait while the socket is in LAST_ACK — until the peer's ACK of our
    /// FIN, the connection's last packet, has arrived — at most
    /// [`LAST_ACK_WAIT`], and no longer than the step's deadline or an
    /// interrupt: so the step ends, and the capture after the last step
    /// stops, only once it is on the wire. A peer's kernel holds that ACK
    /// while its process holds the socket (a proxy descheduled in a call
    /// on it, tens of milliseconds on a loaded machine: seen in soaks).
    pub fn after_peer_closed(&mut self) {
        self.drain_peer();
        let tcp = self.inner().tcp();
        let _ = tcp.shutdown(std::net::Shutdown::Write);
        let start = std::time::Instant::now();
        while tcp_state(tcp) == Some(TCP_LAST_ACK)
            && start.elapsed() < LAST_ACK_WAIT
            && !self.inner().give_up()
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Read until the peer has closed: its TLS close_notify (or the end
    /// of TLS), then its FIN (or the stream's timeout).
    pub fn drain_peer(&mut self) {
        let mut sink = [0u8; 4096];
        while matches!(self.read(&mut sink), Ok(n) if n > 0) {}
        drain(self.inner_mut());
    }

    /// Send TLS's close_notify (nothing for plain TCP).
    pub fn close_notify(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(_) => Ok(()),
            Conn::Client(t) => {
                t.conn.send_close_notify();
                t.flush()
            }
            Conn::Server(t) => {
                t.conn.send_close_notify();
                t.flush()
            }
        }
    }

    /// Send `first`, the client's first message: with TLS, it is queued
    /// before the handshake, so the client's last handshake flight and the
    /// message leave in one write (one segment when it fits), and the
    /// packets do not depend on when the server acknowledges the flight.
    pub fn send_first(&mut self, first: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Client(t) => {
                t.conn.writer().write_all(first)?;
                // The ClientHello leaves at once; the rest is held until
                // the request is queued behind the Finished.
                while t.conn.wants_write() {
                    t.conn.write_tls(&mut t.sock)?;
                }
                cork(t.sock.tcp(), true);
                let r = (|| {
                    while t.conn.is_handshaking() {
                        t.conn.complete_io(&mut t.sock)?;
                    }
                    while t.conn.wants_write() {
                        t.conn.write_tls(&mut t.sock)?;
                    }
                    t.sock.flush()
                })();
                // On an error rustls has queued its alert: it stays held so
                // that the FIN that follows leaves with it.
                if r.is_ok() {
                    cork(t.sock.tcp(), false);
                    // Sent only now: the kernel's switch to delayed ACKs
                    // for a connection that answers is undone again.
                    quickack(t.sock.tcp());
                }
                r
            }
            c => {
                c.handshake()?;
                c.write_all(first)?;
                c.flush()
            }
        }
    }

    /// Complete the TLS handshake (nothing for plain TCP).
    pub fn handshake(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(_) => Ok(()),
            Conn::Client(t) => {
                while t.conn.is_handshaking() {
                    t.conn.complete_io(&mut t.sock)?;
                }
                Ok(())
            }
            Conn::Server(t) => server_handshake(t),
        }
    }
}

/// The server's side of the handshake. When the client's flight is
/// refused, the alert and the FIN leave in one segment.
fn server_handshake<S: Read + Write + AsTcp>(
    t: &mut rustls::StreamOwned<rustls::ServerConnection, S>,
) -> std::io::Result<()> {
    while t.conn.is_handshaking() {
        while t.conn.wants_write() {
            t.conn.write_tls(&mut t.sock)?;
        }
        if t.conn.read_tls(&mut t.sock)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Err(e) = t.conn.process_new_packets() {
            cork(t.sock.tcp(), true);
            let _ = t.conn.write_tls(&mut t.sock);
            let _ = t.sock.tcp().shutdown(std::net::Shutdown::Write);
            cork(t.sock.tcp(), false);
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        }
    }
    while t.conn.wants_write() {
        t.conn.write_tls(&mut t.sock)?;
    }
    Ok(())
}

/// Acknowledge at once what has arrived (`TCP_QUICKACK` sends an ACK the
/// kernel would delay, and asks for quick ACKs until the kernel drops them
/// again, as it does when we send). Called around every read and after
/// every write: what arrives (data, a FIN) is then acknowledged by its own
/// ACK before anything is sent back, also when it arrives before the
/// reader is back in `read`, and never by an ACK that rides on the answer
/// or not depending on the delayed-ACK timer and the machine's load.
pub fn quickack(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
}

/// How long closing a connection whose peer closed first waits at most
/// for the peer's last ACK (checking the step's deadline and the run's
/// interrupt every millisecond meanwhile).
pub const LAST_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `TCP_LAST_ACK` of the kernel's TCP states (`include/net/tcp_states.h`).
const TCP_LAST_ACK: u8 = 9;

/// The socket's TCP state: `tcpi_state`, the first byte of the kernel's
/// `struct tcp_info` (the kernel copies no more than the length asked).
fn tcp_state(s: &TcpStream) -> Option<u8> {
    use std::os::fd::AsRawFd;
    let mut state: u8 = 0;
    let mut len: libc::socklen_t = 1;
    // SAFETY: `s` owns an open socket for the duration of the call, and
    // the kernel writes at most `len` (1) bytes to `state`, a live `u8`,
    // updating `len`, a live `socklen_t`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut state as *mut u8).cast(),
            &mut len,
        )
    };
    (r == 0 && len == 1).then_some(state)
}

/// A TCP stream that acknowledges at once what it reads ([`quickack`]),
/// while its flag is set.
pub struct Quick(pub TcpStream, pub bool);

impl Read for Quick {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.1 {
            quickack(&self.0);
        }
        let r = self.0.read(buf);
        if self.1 {
            quickack(&self.0);
        }
        r
    }
}

impl Write for Quick {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[std::io::IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let r = self.0.write_vectored(bufs);
        if self.1 {
            quickack(&self.0);
        }
        r
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl AsTcp for Quick {
    fn tcp(&self) -> &TcpStream {
        &self.0
    }
    fn set_quick(&mut self, on: bool) {
        self.1 = on;
    }
}

/// Read raw bytes until the peer's FIN (or an error or timeout).
fn drain<S: Read>(s: &mut S) {
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

impl<S: Read + Write> Read for Conn<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Client(t) => t.read(buf),
            Conn::Server(t) => t.read(buf),
        }
    }
}

impl<S: Read + Write> Write for Conn<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Client(t) => t.write(buf),
            Conn::Server(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Client(t) => t.flush(),
            Conn::Server(t) => t.flush(),
        }
    }
}

/// The TLS error inside an I/O error, in words (`invalid peer certificate:
/// UnknownIssuer`), if there is one.
pub fn tls_error(e: &std::io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .map(|t| t.to_string())
}

/// A TCP stream whose reads and writes wait at most until `deadline`,
/// looking at `cancelled` every `slice`: a timeout error after that.
pub struct Bounded<'a> {
    pub tcp: TcpStream,
    pub deadline: std::time::Instant,
    pub slice: std::time::Duration,
    pub cancelled: &'a dyn Fn() -> bool,
    /// Acknowledge each read at once ([`quickack`]).
    pub quick: bool,
}

impl Bounded<'_> {
    fn next(&self) -> std::io::Result<std::time::Duration> {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || (self.cancelled)() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ));
        }
        Ok(left.min(self.slice))
    }
}

fn waiting(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let t = self.next()?;
            self.tcp.set_read_timeout(Some(t))?;
            if self.quick {
                quickack(&self.tcp);
            }
            match self.tcp.read(buf) {
                Err(e) if waiting(&e) => {}
                r => {
                    if self.quick {
                        quickack(&self.tcp);
                    }
                    return r;
                }
            }
        }
    }
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[std::io::IoSlice::new(buf)])
    }
    // rustls hands over all its records at once: one write.
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        loop {
            let t = self.next()?;
            self.tcp.set_write_timeout(Some(t))?;
            match self.tcp.write_vectored(bufs) {
                Err(e) if waiting(&e) => {}
                r => {
                    if self.quick {
                        quickack(&self.tcp);
                    }
                    return r;
                }
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

#[cfg(test)]
mod last_ack {
    use super::*;

    /// `TCP_CLOSE`: what a socket in LAST_ACK becomes on the peer's ACK.
    const TCP_CLOSE: u8 = 7;

    #[test]
    fn closing_after_the_peer_ends_with_its_last_ack_received() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        // ESTABLISHED is 1: the state is read from the kernel.
        assert_eq!(tcp_state(&client), Some(1));
        server.shutdown(std::net::Shutdown::Write).unwrap();
        let mut c = Conn::Plain(client);
        c.after_peer_closed();
        assert_eq!(tcp_state(c.inner().tcp()), Some(TCP_CLOSE));
        drop(server);
    }
}
