//! HTTP/1.1 and WebSocket as a passive observer sees them, over the two
//! byte streams of one connection (plaintext, or decrypted TLS): request
//! and status lines with Host and request id, bodies skipped by their
//! length or chunks, and after a `101 Switching Protocols` upgrade to
//! WebSocket, the frames of both directions (opcode, length, masked). A
//! stream that does not start with a whole HTTP head is not HTTP: no
//! message of it is named. It knows bytes; not TCP, TLS or traces.

/// A message found in a stream: its first byte's offset and its summary.
pub(crate) type Note = (usize, String);

/// A request as the trace compares it across legs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// `GET /path`.
    pub(crate) line: String,
    /// The Host header, if any.
    pub(crate) host: Option<String>,
    /// The X-Request-Id header, if any.
    pub(crate) id: Option<String>,
    /// Every header, in order, names in lower case.
    pub(crate) headers: Vec<(String, String)>,
}

/// What the two streams of a connection say at L7.
#[derive(Debug, Default)]
pub(crate) struct App {
    pub(crate) client: Vec<Note>,
    pub(crate) server: Vec<Note>,
    pub(crate) requests: Vec<Head>,
}

const MAX_HEADERS: usize = 64;

fn header<'a>(hs: &'a [httparse::Header], name: &str) -> Option<&'a str> {
    hs.iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

/// How a message's body is delimited.
enum Body {
    Len(usize),
    Chunked,
    /// Until the connection closes.
    Close,
}

fn body_of(hs: &[httparse::Header], none: bool, request: bool) -> Body {
    if none {
        return Body::Len(0);
    }
    if header(hs, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Body::Chunked;
    }
    match header(hs, "content-length").and_then(|v| v.trim().parse().ok()) {
        Some(n) => Body::Len(n),
        None if request => Body::Len(0),
        None => Body::Close,
    }
}

/// The end of a body starting at `at`, if the stream holds all of it.
fn skip_body(b: &[u8], at: usize, body: Body) -> Option<usize> {
    match body {
        Body::Len(n) => at.checked_add(n).filter(|&end| end <= b.len()),
        Body::Close => Some(b.len()),
        Body::Chunked => {
            let mut at = at;
            loop {
                let line_end = at + b.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
                let size = std::str::from_utf8(&b[at..line_end]).ok()?;
                let size = size.split(';').next()?.trim();
                let n = usize::from_str_radix(size, 16).ok()?;
                at = line_end + 2;
                if n == 0 {
                    // Trailers, then an empty line.
                    let rest = b.get(at..)?;
                    let end = rest.windows(4).position(|w| w == b"\r\n\r\n");
                    return match rest.starts_with(b"\r\n") {
                        true => Some(at + 2),
                        false => end.map(|e| at + e + 4),
                    };
                }
                at = at.checked_add(n)?.checked_add(2)?;
            }
        }
    }
}

fn summary_id(id: Option<&str>) -> String {
    id.map(|i| format!(" id={i}")).unwrap_or_default()
}

/// The requests of a client stream, up to an upgrade to WebSocket (then
/// the offset where its frames start) or the first that is not whole.
fn requests(b: &[u8], app: &mut App) -> Option<usize> {
    let mut at = 0;
    while at < b.len() {
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut hs);
        let Ok(httparse::Status::Complete(n)) = req.parse(&b[at..]) else {
            return None;
        };
        let (method, path) = (req.method.unwrap_or("?"), req.path.unwrap_or("?"));
        let host = header(req.headers, "host").map(str::to_string);
        let id = header(req.headers, "x-request-id").map(str::to_string);
        let mut note = format!("HTTP {method} {path}");
        if let Some(h) = &host {
            note += &format!(" host={h}");
        }
        note += &summary_id(id.as_deref());
        app.client.push((at, note));
        app.requests.push(Head {
            line: format!("{method} {path}"),
            host,
            id,
            headers: (req.headers.iter())
                .map(|h| {
                    let v = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_ascii_lowercase(), v)
                })
                .collect(),
        });
        let upgrade =
            header(req.headers, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let end = skip_body(b, at + n, body_of(req.headers, false, true))?;
        if upgrade {
            return Some(end);
        }
        at = end;
    }
    None
}

/// The responses of a server stream, up to a `101` (then the offset
/// where its frames start) or the first that is not whole.
fn responses(b: &[u8], heads: &[Head], notes: &mut Vec<Note>) -> Option<usize> {
    let mut at = 0;
    let mut k = 0;
    while at < b.len() {
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut hs);
        let Ok(httparse::Status::Complete(n)) = res.parse(&b[at..]) else {
            return None;
        };
        let code = res.code.unwrap_or(0);
        let id = header(res.headers, "x-request-id");
        let reason = res
            .reason
            .filter(|r| !r.is_empty())
            .map(|r| format!(" {r}"));
        notes.push((
            at,
            format!(
                "HTTP {code}{}{}",
                reason.unwrap_or_default(),
                summary_id(id)
            ),
        ));
        if code == 101 {
            return Some(at + n);
        }
        let head = heads.get(k).is_some_and(|h| h.line.starts_with("HEAD "));
        let none = head || code == 204 || code == 304 || (100..200).contains(&code);
        if !(100..200).contains(&code) {
            k += 1;
        }
        at = skip_body(b, at + n, body_of(res.headers, none, false))?;
    }
    None
}

/// The WebSocket frames of a stream from `at`: `WS text 5 B masked`.
fn frames(b: &[u8], mut at: usize, notes: &mut Vec<Note>) {
    while let Some(&[b0, b1]) = b.get(at..at + 2) {
        let masked = b1 & 0x80 != 0;
        let (len, mut end) = match b1 & 0x7f {
            126 => match b.get(at + 2..at + 4) {
                Some(l) => (u64::from(u16::from_be_bytes([l[0], l[1]])), at + 4),
                None => return,
            },
            127 => match b.get(at + 2..at + 10) {
                Some(l) => (u64::from_be_bytes(l.try_into().expect("8 bytes")), at + 10),
                None => return,
            },
            n => (u64::from(n), at + 2),
        };
        if masked {
            end += 4;
        }
        let op = match b0 & 0x0f {
            0 => "continuation".to_string(),
            1 => "text".into(),
            2 => "binary".into(),
            8 => "close".into(),
            9 => "ping".into(),
            10 => "pong".into(),
            o => format!("opcode {o}"),
        };
        let fin = if b0 & 0x80 == 0 { " (not final)" } else { "" };
        let mask = if masked { " masked" } else { "" };
        notes.push((at, format!("WS {op} {len} B{mask}{fin}")));
        let Some(next) = usize::try_from(len).ok().and_then(|l| end.checked_add(l)) else {
            return;
        };
        at = next;
    }
}

/// What the client stream `c` and server stream `s` of one connection
/// say at L7; nothing when `c` does not start with a whole HTTP request.
pub(crate) fn analyse(c: &[u8], s: &[u8]) -> App {
    let mut app = App::default();
    let ws_c = requests(c, &mut app);
    if app.requests.is_empty() {
        return App::default();
    }
    let ws_s = responses(s, &app.requests, &mut app.server);
    if let (Some(c_at), Some(s_at)) = (ws_c, ws_s) {
        frames(c, c_at, &mut app.client);
        frames(s, s_at, &mut app.server);
    }
    app
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_heads_and_other_payloads_are_not_http() {
        for c in [
            &b"GET /users/123"[..],
            b"hoplab",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            let a = analyse(c, b"HTTP/1.1 200 OK\r\n\r\n");
            assert!(a.client.is_empty() && a.server.is_empty(), "{c:?}");
        }
    }

    #[test]
    fn requests_responses_bodies_and_websocket_frames() {
        let c = b"POST /a HTTP/1.1\r\nHost: h\r\nX-Request-Id: r1\r\nContent-Length: 3\r\n\r\nabc\
GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\
\x81\x85\x01\x02\x03\x04hello\x88\x80\x00\x00\x00\x00";
        let s = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Request-Id: r1\r\n\r\n\
3\r\nabc\r\n0\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\
\x81\x05hello\x88\x00";
        let a = analyse(c, s);
        let texts = |n: &[Note]| n.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>();
        assert_eq!(
            texts(&a.client),
            [
                "HTTP POST /a host=h id=r1",
                "HTTP GET /ws host=h",
                "WS text 5 B masked",
                "WS close 0 B masked"
            ]
        );
        assert_eq!(
            texts(&a.server),
            [
                "HTTP 200 OK id=r1",
                "HTTP 101 Switching Protocols",
                "WS text 5 B",
                "WS close 0 B"
            ]
        );
        assert_eq!(
            a.requests[0].headers[1],
            ("x-request-id".into(), "r1".into())
        );
    }
}
