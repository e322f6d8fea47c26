//! The built-in HTTP(S)/WebSocket server (`hoplab __http ...`): a real
//! process in its host. Every request gets the configured status (the Nth
//! the `fail` status; the Nth `reset` connection a TCP reset instead),
//! after the configured delay, with `X-Served-By`, the request's
//! `X-Request-Id` and `Content-Length`, and nothing that depends on time.
//! A WebSocket upgrade on any path is accepted and every message echoed.
//! With TLS: 1.3 only, no tickets, secrets appended to the key log.
//!
//! A request with `Connection: close` gets its response, close_notify and
//! FIN in one segment (the server closes first, as HTTP says); else the
//! server waits for the client to close (after a response, or the
//! WebSocket close handshake) and answers with close_notify and FIN in one
//! segment. So every run's packets come in the same order. Knows sockets and its
//! options; nothing of the lab.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::http::{self, Message, ReadError};
use super::tls::{self, AsTcp, Conn, Quick, ServerFiles};

/// What the server does; its command line is [`ServerOpts::argv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOpts {
    pub listen: u16,
    /// `HOST/PROCESS`, for `X-Served-By` and the default body.
    pub served_by: String,
    pub status: u16,
    pub delay_ms: u64,
    pub body: Option<String>,
    /// The Nth request gets this status.
    pub fail: Option<(u32, u16)>,
    /// The Nth request's connection is reset.
    pub reset: Option<u32>,
    pub tls: Option<ServerFiles>,
    pub keylog: Option<PathBuf>,
}

/// The server's own problems (a bad command line, a port it cannot bind,
/// TLS files it cannot read).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("__http: {0}")]
    Args(String),
    #[error("__http: {0}")]
    Tls(#[from] tls::ConfigError),
    #[error("__http: listen on port {port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

impl ServerOpts {
    /// The arguments after `__http`.
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![
            "--listen".to_string(),
            self.listen.to_string(),
            "--served-by".into(),
            self.served_by.clone(),
            "--status".into(),
            self.status.to_string(),
            "--delay-ms".into(),
            self.delay_ms.to_string(),
        ];
        let mut opt = |k: &str, val: Option<String>| {
            if let Some(x) = val {
                v.extend([k.to_string(), x]);
            }
        };
        opt("--body", self.body.clone());
        opt("--fail", self.fail.map(|(n, s)| format!("{n}:{s}")));
        opt("--reset", self.reset.map(|n| n.to_string()));
        if let Some(t) = &self.tls {
            opt("--cert", Some(t.cert.display().to_string()));
            opt("--key", Some(t.key.display().to_string()));
            opt(
                "--client-ca",
                t.client_ca.as_ref().map(|c| c.display().to_string()),
            );
        }
        opt(
            "--keylog",
            self.keylog.as_ref().map(|k| k.display().to_string()),
        );
        v
    }

    /// Read [`ServerOpts::argv`]'s output back.
    pub fn from_args(args: &[String]) -> Result<ServerOpts, ServerError> {
        let bad = |m: String| ServerError::Args(m);
        let mut o = ServerOpts {
            listen: 0,
            served_by: String::new(),
            status: 200,
            delay_ms: 0,
            body: None,
            fail: None,
            reset: None,
            tls: None,
            keylog: None,
        };
        let (mut cert, mut key, mut ca) = (None, None, None);
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let v = it
                .next()
                .ok_or_else(|| bad(format!("{k} needs a value")))?
                .clone();
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("{k} {v}: not a number")))
            };
            match k.as_str() {
                "--listen" => o.listen = num(&v)? as u16,
                "--served-by" => o.served_by = v,
                "--status" => o.status = num(&v)? as u16,
                "--delay-ms" => o.delay_ms = num(&v)?,
                "--body" => o.body = Some(v),
                "--fail" => {
                    let (n, s) = v
                        .split_once(':')
                        .ok_or_else(|| bad(format!("--fail {v}: N:STATUS")))?;
                    o.fail = Some((num(n)? as u32, num(s)? as u16));
                }
                "--reset" => o.reset = Some(num(&v)? as u32),
                "--cert" => cert = Some(PathBuf::from(v)),
                "--key" => key = Some(PathBuf::from(v)),
                "--client-ca" => ca = Some(PathBuf::from(v)),
                "--keylog" => o.keylog = Some(PathBuf::from(v)),
                _ => return Err(bad(format!("unknown option {k}"))),
            }
        }
        o.tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(ServerFiles {
                cert,
                key,
                client_ca: ca,
            }),
            (None, None) => None,
            _ => return Err(bad("give both --cert and --key".into())),
        };
        if o.listen == 0 {
            return Err(bad("--listen PORT is required".into()));
        }
        Ok(o)
    }
}

/// How long a connection may sit idle before the server drops it.
const IDLE: Duration = Duration::from_secs(30);
/// How long the server waits for the client's close after its own.
const LINGER: Duration = Duration::from_secs(5);

struct Shared {
    opts: ServerOpts,
    tls: Option<Arc<rustls::ServerConfig>>,
    count: AtomicU32,
}

/// Serve until killed; returns only on an error at start.
pub fn serve(opts: ServerOpts) -> Result<(), ServerError> {
    let tls = match &opts.tls {
        Some(f) => Some(tls::server_config(f, opts.keylog.as_deref())?),
        None => None,
    };
    let port = opts.listen;
    let bind = |a: SocketAddr| -> std::io::Result<TcpListener> {
        let s = socket2::Socket::new(socket2::Domain::for_address(a), socket2::Type::STREAM, None)?;
        if a.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        s.bind(&a.into())?;
        s.listen(128)?;
        Ok(s.into())
    };
    let mut listeners = vec![bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        .map_err(|source| ServerError::Bind { port, source })?];
    // IPv6 where the host has it (it is off by default).
    if let Ok(l) = bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        listeners.push(l);
    }
    let shared = Arc::new(Shared {
        opts,
        tls,
        count: AtomicU32::new(0),
    });
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for c in l.incoming().flatten() {
                    let shared = shared.clone();
                    std::thread::spawn(move || connection(&shared, c));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// One connection: TLS handshake if any, then requests until one asks to
/// close, a WebSocket session ends, or the client closes.
fn connection(sh: &Shared, tcp: TcpStream) {
    let _ = tcp.set_read_timeout(Some(IDLE));
    let _ = tcp.set_nodelay(true);
    let tcp = Quick(tcp, true);
    let mut c = match &sh.tls {
        Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
            Ok(s) => Conn::Server(Box::new(rustls::StreamOwned::new(s, tcp))),
            Err(_) => return,
        },
        None => Conn::Plain(tcp),
    };
    if let Err(e) = c.handshake() {
        tracing::debug!("TLS handshake: {e}");
        // Our alert and FIN are sent: wait for the client's FIN.
        let _ = c.inner().tcp().set_read_timeout(Some(LINGER));
        c.drain_raw();
        return;
    }
    let mut buf = Vec::new();
    loop {
        let req = match http::read(&mut c, http::Kind::Request, &mut buf) {
            Ok(r) => r,
            Err(ReadError::Closed) => break,
            Err(e) => {
                tracing::debug!("request: {e}");
                let _ = c.write_all(&http::response(400, &[close_header(), len_header(0)], b""));
                let _ = c.inner().tcp().set_read_timeout(Some(LINGER));
                c.close_and_drain();
                return;
            }
        };
        let n = sh.count.fetch_add(1, Ordering::SeqCst) + 1;
        if sh.opts.reset == Some(n) {
            let _ = socket2::SockRef::from(c.inner().tcp()).set_linger(Some(Duration::ZERO));
            return;
        }
        if sh.opts.delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(sh.opts.delay_ms));
        }
        if req.is_upgrade() {
            websocket(sh, c, &req, buf);
            return;
        }
        let closing = req.wants_close();
        tls::cork(c.inner().tcp(), closing);
        if c.write_all(&answer(sh, &req, n, closing)).is_err() {
            return;
        }
        if closing {
            let _ = c.inner().tcp().set_read_timeout(Some(LINGER));
            // Response, close_notify and FIN leave together.
            c.close_and_drain();
            return;
        }
    }
    // The client closed: answer with ours.
    close_after_client(&mut c);
}

/// The client has closed (TLS's close_notify or its FIN): read to its
/// FIN, then close ours (close_notify and FIN in one segment).
fn close_after_client(c: &mut Conn<Quick>) {
    let _ = c.inner().tcp().set_read_timeout(Some(LINGER));
    c.drain_peer();
    c.close_and_drain();
}

fn close_header() -> (String, String) {
    ("Connection".into(), "close".into())
}

fn len_header(n: usize) -> (String, String) {
    ("Content-Length".into(), n.to_string())
}

/// The response to request number `n`.
fn answer(sh: &Shared, req: &Message, n: u32, closing: bool) -> Vec<u8> {
    let o = &sh.opts;
    let status = match o.fail {
        Some((nth, s)) if nth == n => s,
        _ => o.status,
    };
    let body = o
        .body
        .clone()
        .unwrap_or_else(|| format!("served by {}\n", o.served_by));
    let mut h = vec![
        ("Content-Type".to_string(), "text/plain".to_string()),
        ("X-Served-By".into(), o.served_by.clone()),
    ];
    if let Some(id) = req.header("x-request-id") {
        h.push(("X-Request-Id".into(), id.to_string()));
    }
    h.push(len_header(body.len()));
    if closing {
        h.push(close_header());
    }
    let body = if req.method == "HEAD" {
        ""
    } else {
        body.as_str()
    };
    http::response(status, &h, body.as_bytes())
}

/// Accept the upgrade of `req` and echo every message until the client
/// closes the session.
fn websocket(sh: &Shared, mut c: Conn<Quick>, req: &Message, rest: Vec<u8>) {
    let Some(key) = req.header("sec-websocket-key") else {
        let _ = c.write_all(&http::response(400, &[close_header(), len_header(0)], b""));
        close_after_client(&mut c);
        return;
    };
    let mut h = vec![
        ("Upgrade".to_string(), "websocket".to_string()),
        ("Connection".into(), "Upgrade".into()),
        (
            "Sec-WebSocket-Accept".into(),
            tungstenite::handshake::derive_accept_key(key.trim().as_bytes()),
        ),
        ("X-Served-By".into(), sh.opts.served_by.clone()),
    ];
    if let Some(id) = req.header("x-request-id") {
        h.push(("X-Request-Id".into(), id.to_string()));
    }
    if c.write_all(&http::response(101, &h, b"")).is_err() {
        return;
    }
    let mut ws = tungstenite::WebSocket::from_partially_read(
        c,
        rest,
        tungstenite::protocol::Role::Server,
        None,
    );
    loop {
        match ws.read() {
            Ok(m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_))) => {
                if ws.send(m).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            // The close handshake is done (tungstenite answered the
            // client's Close), or the connection failed.
            Err(_) => break,
        }
    }
    close_after_client(ws.get_mut());
}

/// `hoplab __http ARGS`: parse, then serve.
pub fn main(args: &[String]) -> Result<(), ServerError> {
    serve(ServerOpts::from_args(args)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_round_trip() {
        let o = ServerOpts {
            listen: 8443,
            served_by: "s/web".into(),
            status: 201,
            delay_ms: 5,
            body: Some("x y".into()),
            fail: Some((2, 503)),
            reset: Some(3),
            tls: Some(ServerFiles {
                cert: "tls/a.crt".into(),
                key: "tls/a.key".into(),
                client_ca: Some("tls/ca.crt".into()),
            }),
            keylog: Some("/o/tls-keys.log".into()),
        };
        assert_eq!(ServerOpts::from_args(&o.argv()).unwrap(), o);
        assert!(ServerOpts::from_args(&["--listen".into()]).is_err());
        assert!(ServerOpts::from_args(&["--nope".into(), "1".into()]).is_err());
    }
}
