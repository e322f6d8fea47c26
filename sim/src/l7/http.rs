//! HTTP/1.1 messages as bytes: a request or response written out, and
//! one read off a stream (head parsed with httparse; body by
//! `Content-Length`, chunked, or until the peer closes).
//!
//! Knows the message format only; not sockets' deadlines (the stream's
//! own) nor what a client or server does with a message.

use std::io::Read;

/// The most a message head may hold.
const MAX_HEAD: usize = 64 * 1024;
/// The most a body may hold.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A parsed head: the request line's method and path, or the status;
/// the headers in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    /// The first header of this name (without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// Does the sender want the connection closed after this message?
    pub fn wants_close(&self) -> bool {
        self.has_token("connection", "close")
    }

    /// A WebSocket upgrade request?
    pub fn is_upgrade(&self) -> bool {
        self.has_token("connection", "upgrade") && self.has_token("upgrade", "websocket")
    }
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer closed before sending anything.
    #[error("closed before a message")]
    Closed,
    /// Bytes that are no HTTP/1.x message (the first of them, escaped).
    #[error("not HTTP: {0}")]
    NotHttp(String),
    #[error("incomplete message: {0}")]
    Incomplete(String),
}

/// Which message [`read`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
    /// A response to HEAD: no body, whatever its Content-Length.
    ResponseToHead,
}

/// A message's head and body off `r`, `buf` holding what was read past
/// the last message (a response to HEAD, or 1xx/204/304, has no body).
pub fn read<R: Read>(r: &mut R, kind: Kind, buf: &mut Vec<u8>) -> Result<Message, ReadError> {
    let request = kind == Kind::Request;
    let mut chunk = [0u8; 8192];
    let (mut msg, used) = loop {
        if let Some(parsed) = parse_head(buf, request)? {
            break parsed;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::NotHttp("a head over 64 KiB".into()));
        }
        let n = r.read(&mut chunk)?;
        if n == 0 {
            if buf.is_empty() {
                return Err(ReadError::Closed);
            }
            return Err(if looks_http(buf, request) {
                ReadError::Incomplete(format!("closed after {} B of the head", buf.len()))
            } else {
                ReadError::NotHttp(escaped(buf))
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    buf.drain(..used);
    let no_body = kind == Kind::ResponseToHead
        || (!request && (msg.status < 200 || msg.status == 204 || msg.status == 304));
    if no_body {
        return Ok(msg);
    }
    if msg
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        msg.body = chunked(r, buf)?;
    } else if let Some(len) = msg.header("content-length") {
        let len: usize = len
            .trim()
            .parse()
            .map_err(|_| ReadError::NotHttp(format!("Content-Length `{len}`")))?;
        if len > MAX_BODY {
            return Err(ReadError::Incomplete(format!(
                "a body of {len} B is too large"
            )));
        }
        fill(r, buf, len)?;
        msg.body = buf.drain(..len).collect();
    } else if !request {
        // Until the peer closes.
        loop {
            let n = r.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_BODY {
                return Err(ReadError::Incomplete("a body too large".into()));
            }
        }
        msg.body = std::mem::take(buf);
    }
    Ok(msg)
}

/// Read into `buf` until it holds `n` bytes.
fn fill<R: Read>(r: &mut R, buf: &mut Vec<u8>, n: usize) -> Result<(), ReadError> {
    let mut chunk = [0u8; 8192];
    while buf.len() < n {
        let got = r.read(&mut chunk)?;
        if got == 0 {
            return Err(ReadError::Incomplete(format!(
                "closed after {} of {n} B of the body",
                buf.len()
            )));
        }
        buf.extend_from_slice(&chunk[..got]);
    }
    Ok(())
}

fn chunked<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            let n = r.read(&mut chunk)?;
            if n == 0 {
                return Err(ReadError::Incomplete("closed inside a chunked body".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).to_string();
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| ReadError::NotHttp(format!("chunk size `{line}`")))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            fill(r, buf, 2)?;
            buf.drain(..2);
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Incomplete("a body too large".into()));
        }
        fill(r, buf, size + 2)?;
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// Could `b` be the start of an HTTP/1.x message?
fn looks_http(b: &[u8], request: bool) -> bool {
    if request {
        b.iter()
            .take(16)
            .all(|c| c.is_ascii_graphic() || *c == b' ')
    } else {
        b"HTTP/1.".starts_with(&b[..b.len().min(7)]) || b.starts_with(b"HTTP/1.")
    }
}

/// The first bytes of `b`, escaped, for an error.
fn escaped(b: &[u8]) -> String {
    let head: String = b
        .iter()
        .take(32)
        .flat_map(|c| std::ascii::escape_default(*c))
        .map(char::from)
        .collect();
    if b.len() > 32 {
        format!("\"{head}\"... ({} B)", b.len())
    } else {
        format!("\"{head}\" ({} B)", b.len())
    }
}

/// The head in `buf`, if complete, and its length.
fn parse_head(buf: &[u8], request: bool) -> Result<Option<(Message, usize)>, ReadError> {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let not_http = |_| ReadError::NotHttp(escaped(buf));
    let mut m = Message::default();
    let (status, headers) = if request {
        let mut req = httparse::Request::new(&mut hs);
        let s = req.parse(buf).map_err(not_http)?;
        m.method = req.method.unwrap_or_default().to_string();
        m.path = req.path.unwrap_or_default().to_string();
        (s, req.headers.iter())
    } else {
        if !looks_http(buf, false) {
            return Err(ReadError::NotHttp(escaped(buf)));
        }
        let mut resp = httparse::Response::new(&mut hs);
        let s = resp.parse(buf).map_err(not_http)?;
        m.status = resp.code.unwrap_or_default();
        (s, resp.headers.iter())
    };
    let httparse::Status::Complete(used) = status else {
        return Ok(None);
    };
    m.headers = headers
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok(Some((m, used)))
}

/// A request's bytes: the request line, then the headers in order, then
/// the body.
pub fn request(method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The reason phrase of a status (empty for one this does not know).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// A response's bytes: the status line, the headers in order, then the body.
pub fn response(status: u16, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_length_and_chunked() {
        let mut buf = Vec::new();
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabcHTTP/1.1 503 x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1\r\n!\r\n0\r\n\r\n";
        let m = read(&mut r, Kind::Response, &mut buf).unwrap();
        assert_eq!(
            (m.status, m.body.as_slice(), m.header("x-a")),
            (200, &b"abc"[..], Some("b"))
        );
        let m = read(&mut r, Kind::Response, &mut buf).unwrap();
        assert_eq!((m.status, m.body.as_slice()), (503, &b"hi!"[..]));
    }

    #[test]
    fn reads_requests() {
        let bytes = request(
            "POST",
            "/x",
            &[
                ("Host".into(), "a".into()),
                ("Content-Length".into(), "2".into()),
            ],
            b"ok",
        );
        let mut buf = Vec::new();
        let m = read(&mut bytes.as_slice(), Kind::Request, &mut buf).unwrap();
        assert_eq!(
            (m.method.as_str(), m.path.as_str(), m.body.as_slice()),
            ("POST", "/x", &b"ok"[..])
        );
        assert_eq!(m.header("host"), Some("a"));
    }

    #[test]
    fn not_http_is_said() {
        let mut buf = Vec::new();
        let e = read(&mut &b"SSH-2.0-OpenSSH\r\n"[..], Kind::Response, &mut buf).unwrap_err();
        assert!(matches!(e, ReadError::NotHttp(_)), "{e}");
        assert!(e.to_string().starts_with("not HTTP: \"SSH-2.0"), "{e}");
        let mut buf = Vec::new();
        let e = read(
            &mut &b"HTTP/1.1 200 OK\r\nContent-Le"[..],
            Kind::Response,
            &mut buf,
        )
        .unwrap_err();
        assert!(matches!(e, ReadError::Incomplete(_)), "{e}");
    }
}
