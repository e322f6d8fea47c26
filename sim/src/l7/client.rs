//! hoplab's own L7 client, run in the step's host on a connected TCP
//! stream: an HTTP/1.1 request and its response, or a WebSocket session
//! (upgrade, each message and its echo, close), over TLS 1.3 when the
//! step says so (trusting the run's CA only; SNI, ALPN, a client
//! certificate). Every wait ends by the step's deadline, looking at the
//! run's interrupt every slice; every outcome is said in words that are
//! the same on every run (`TLS error: invalid peer certificate:
//! UnknownIssuer`, `not HTTP: ...`).
//!
//! A response with `Connection: close` means the server closes first: the
//! client reads to the server's FIN, then sends its own (FIN only). Else,
//! like the TCP steps, the client closes first once it has the whole
//! response (or the WebSocket close handshake is done): close_notify and
//! FIN in one segment, and the server answers with its own. So every
//! run's packets come in the same order. A step whose time is up resets
//! its connection, so what the server sends late is not in the capture. The client's last handshake flight
//! and its request leave in one segment too.
//! Knows the exchange; not the lab, the host or the capture.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::http::{self, Message, ReadError};
use super::pki::Pki;
use super::spec::{HttpRequest, L7Step, WebSocket, WsData};
use super::tls::{self, Bounded, Conn};

/// What an L7 client needs from the run: its CA and key log.
#[derive(Clone, Default)]
pub struct ClientCtx {
    pub pki: Option<Arc<Pki>>,
    pub keylog: Option<PathBuf>,
}

/// What came of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Http(Message),
    /// Every message of a WebSocket session came back; how many.
    WebSocket(usize),
    /// Nothing (or not all) in time.
    Silence,
    /// The connection failed, or the answer was not what the protocol
    /// says, in words.
    Failed(String),
}

/// The WebSocket key every upgrade sends (16 bytes, base64): a fixed key
/// keeps the upgrade's bytes the same on every run.
pub const WS_KEY: &str = "aG9wbGFiIHdlYnNvY2tldA==";

/// Run `step` on `tcp` (connected to `target`), with request id `id`.
pub fn exchange(
    tcp: TcpStream,
    step: &L7Step,
    target: SocketAddr,
    id: &str,
    ctx: &ClientCtx,
    (deadline, slice): (Instant, Duration),
    cancelled: &dyn Fn() -> bool,
) -> Seen {
    let _ = tcp.set_nodelay(true);
    let bounded = Bounded {
        tcp,
        deadline,
        slice,
        cancelled,
        quick: true,
    };
    let conn = match step.tls() {
        None => Conn::Plain(bounded),
        Some(t) => {
            let Some(pki) = &ctx.pki else {
                return Seen::Failed("TLS error: the run has no CA".into());
            };
            let cfg =
                match tls::client_config(pki, &t.alpn, t.cert.as_deref(), ctx.keylog.as_deref()) {
                    Ok(c) => c,
                    Err(e) => return Seen::Failed(format!("TLS error: {e}")),
                };
            let name = server_name(t.sni.as_deref().or(step.host()), target);
            match rustls::ClientConnection::new(cfg, name) {
                Ok(c) => Conn::Client(Box::new(rustls::StreamOwned::new(c, bounded))),
                Err(e) => return Seen::Failed(format!("TLS error: {e}")),
            }
        }
    };
    let host = step
        .host()
        .map(str::to_string)
        .unwrap_or_else(|| target.to_string());
    match step {
        L7Step::Http(h) => http_exchange(conn, h, &host, id),
        L7Step::WebSocket(w) => ws_exchange(conn, w, &host, id),
    }
}

/// The name verified (and sent as SNI): the given name without a port,
/// else the target's address (no SNI).
fn server_name(name: Option<&str>, target: SocketAddr) -> ServerName<'static> {
    let bare = name.map(|n| match n.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => n,
    });
    bare.and_then(|n| ServerName::try_from(n.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(target.ip().into()))
}

/// An I/O error as an outcome.
fn io_seen(e: &std::io::Error, handshake: bool) -> Seen {
    if let Some(t) = tls::tls_error(e) {
        return Seen::Failed(format!("{TLS_ERROR}: {t}"));
    }
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Seen::Silence,
        ErrorKind::ConnectionReset => Seen::Failed("connection reset".into()),
        ErrorKind::UnexpectedEof if handshake => {
            Seen::Failed("TLS error: connection closed during the handshake".into())
        }
        ErrorKind::UnexpectedEof => Seen::Failed("connection closed".into()),
        _ => Seen::Failed(e.to_string()),
    }
}

/// The first message could not be sent (the TLS handshake failed, or the
/// connection): say why, and end the connection.
fn failed_to_send(c: &mut Conn<Bounded>, e: &std::io::Error) -> Seen {
    let handshake = matches!(c, Conn::Client(t) if t.conn.is_handshaking());
    let seen = io_seen(e, handshake);
    end(c, &seen);
    seen
}

/// End the connection after `seen`: a response with `Connection: close`
/// means the server closes first; a timeout resets; after a TLS error
/// (alert sent or received) only a FIN; else close_notify and FIN.
fn end(c: &mut Conn<Bounded>, seen: &Seen) {
    match seen {
        Seen::Http(m) if m.wants_close() => c.after_peer_closed(),
        Seen::Silence => c.abort(),
        Seen::Failed(e) if e.starts_with(TLS_ERROR) => c.fin_and_drain(),
        _ => c.close_and_drain(),
    }
}

/// How a TLS failure's words start.
const TLS_ERROR: &str = "TLS error";

fn read_seen(e: ReadError) -> Seen {
    match e {
        ReadError::Io(e) => io_seen(&e, false),
        ReadError::Closed => Seen::Failed("connection closed without a response".into()),
        e @ ReadError::NotHttp(_) => Seen::Failed(e.to_string()),
        ReadError::Incomplete(m) => Seen::Failed(format!("incomplete response: {m}")),
    }
}

/// The request's headers: Host, the step's own, then `X-Request-Id` and
/// `Connection: close` unless the step gave them.
fn headers(
    host: &str,
    own: &std::collections::BTreeMap<String, String>,
    id: &str,
    close: bool,
) -> Vec<(String, String)> {
    let mut h = vec![("Host".to_string(), host.to_string())];
    h.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    let has = |n: &str| own.keys().any(|k| k.eq_ignore_ascii_case(n));
    if !has("x-request-id") {
        h.push(("X-Request-Id".into(), id.to_string()));
    }
    if close && !has("connection") {
        h.push(("Connection".into(), "close".into()));
    }
    h
}

fn http_exchange(mut c: Conn<Bounded>, h: &HttpRequest, host: &str, id: &str) -> Seen {
    let mut hs = headers(host, &h.headers, id, true);
    if !h.body.is_empty() {
        hs.push(("Content-Length".into(), h.body.len().to_string()));
    }
    let req = http::request(&h.method, &h.path, &hs, h.body.as_bytes());
    if let Err(e) = c.send_first(&req) {
        return failed_to_send(&mut c, &e);
    }
    let mut buf = Vec::new();
    let kind = if h.method.eq_ignore_ascii_case("HEAD") {
        http::Kind::ResponseToHead
    } else {
        http::Kind::Response
    };
    let got = http::read(&mut c, kind, &mut buf);
    let seen = match got {
        Ok(m) => Seen::Http(m),
        Err(e) => read_seen(e),
    };
    end(&mut c, &seen);
    seen
}

fn ws_exchange(mut c: Conn<Bounded>, w: &WebSocket, host: &str, id: &str) -> Seen {
    let mut hs = headers(host, &w.headers, id, false);
    hs.extend([
        ("Upgrade".to_string(), "websocket".to_string()),
        ("Connection".into(), "Upgrade".into()),
        ("Sec-WebSocket-Key".into(), WS_KEY.into()),
        ("Sec-WebSocket-Version".into(), "13".into()),
    ]);
    let req = http::request("GET", &w.path, &hs, b"");
    if let Err(e) = c.send_first(&req) {
        return failed_to_send(&mut c, &e);
    }
    let mut buf = Vec::new();
    let resp = match http::read(&mut c, http::Kind::Response, &mut buf) {
        Ok(m) => m,
        Err(e) => {
            let seen = read_seen(e);
            end(&mut c, &seen);
            return seen;
        }
    };
    let accept = tungstenite::handshake::derive_accept_key(WS_KEY.as_bytes());
    if resp.status != 101 || resp.header("sec-websocket-accept") != Some(accept.as_str()) {
        c.close_and_drain();
        return Seen::Failed(format!(
            "WebSocket upgrade refused: HTTP {} {} B body",
            resp.status,
            resp.body.len()
        ));
    }
    let mut ws = tungstenite::WebSocket::from_partially_read(
        c,
        buf,
        tungstenite::protocol::Role::Client,
        None,
    );
    let seen = ws_messages(&mut ws, w);
    if seen == Seen::WebSocket(w.messages.len()) {
        // Close handshake: our Close, then the server's.
        let _ = ws.close(None);
        while let Ok(m) = ws.read() {
            if m.is_close() {
                break;
            }
        }
    }
    end(ws.get_mut(), &seen);
    seen
}

fn ws_error(e: tungstenite::Error) -> Seen {
    match e {
        tungstenite::Error::Io(e) => io_seen(&e, false),
        e => Seen::Failed(format!("WebSocket: {e}")),
    }
}

/// Send each message and read its echo.
fn ws_messages(ws: &mut tungstenite::WebSocket<Conn<Bounded>>, w: &WebSocket) -> Seen {
    use tungstenite::Message as M;
    for (i, m) in w.messages.iter().enumerate() {
        let data = m.data().expect("validated");
        let sent = match &data {
            WsData::Text(t) => M::text(t.clone()),
            WsData::Binary(b) => M::binary(b.clone()),
        };
        if let Err(e) = ws.send(sent) {
            return ws_error(e);
        }
        let back = loop {
            match ws.read() {
                Ok(m @ (M::Text(_) | M::Binary(_))) => break m,
                Ok(M::Close(_)) => {
                    return Seen::Failed(format!(
                        "WebSocket: closed by the server after {i} of them"
                    ))
                }
                Ok(_) => {}
                Err(e) => return ws_error(e),
            }
        };
        let same = match (&data, &back) {
            (WsData::Text(t), M::Text(b)) => t.as_str() == b.as_str(),
            (WsData::Binary(t), M::Binary(b)) => t.as_slice() == b.as_ref(),
            _ => false,
        };
        if !same {
            return Seen::Failed(format!(
                "WebSocket: message {i} came back different ({} B)",
                back.len()
            ));
        }
    }
    Seen::WebSocket(w.messages.len())
}
