//! L7 in the trace: the two byte streams of a TCP connection reassembled
//! from its segments (each direction by sequence number, retransmitted
//! bytes taken once, nothing past a gap), then read passively as HTTP/1.1
//! or WebSocket ([`http`]), or as TLS ([`tls`]) whose TLS 1.3 records are
//! decrypted with the capture's key log ([`KeyLog`]) so that the HTTP
//! inside is read too. The result is a short summary per segment (each
//! message named at the segment that carries its first byte) and what
//! joins one connection to another across a proxy: request ids, request
//! lines, the ClientHello random.
//!
//! A connection is L7 only when its client's stream starts with a whole
//! HTTP request head or a TLS ClientHello record: payloads such as
//! `hoplab` or a request line without its head name nothing. Randoms,
//! tickets and dates are never in a summary. It knows segments and bytes;
//! not paths, hops, steps or the lab.

mod http;
mod keylog;
mod tls;

pub use keylog::KeyLog;

pub(crate) use http::Head;

/// One TCP segment of a connection, as the L7 reader needs it.
pub(super) struct Seg<'a> {
    /// The caller's name for the segment (its packet).
    pub(super) key: usize,
    pub(super) seq: u32,
    pub(super) syn: bool,
    pub(super) payload: &'a [u8],
}

/// What a TLS connection showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsSeen {
    pub(super) random: [u8; 32],
    pub(super) sni: Option<String>,
    /// Its records were decrypted with the key log.
    pub(super) decrypted: bool,
}

/// What one connection says at L7.
#[derive(Debug, Default)]
pub(super) struct Conv {
    /// Each segment's summary, by key.
    pub(super) notes: Vec<(usize, String)>,
    /// The requests read (in plaintext or decrypted), in order.
    pub(super) requests: Vec<Head>,
    pub(super) tls: Option<TlsSeen>,
}

/// One direction's bytes, and which segment brought each run of them.
#[derive(Default)]
struct Stream {
    bytes: Vec<u8>,
    /// `(offset, key)`: from `offset` on, the bytes came with `key`.
    starts: Vec<(usize, usize)>,
}

impl Stream {
    /// Segments (in capture order) put in sequence order from the SYN's
    /// sequence number (else the first segment's): bytes already had are
    /// taken once; a gap ends the stream.
    fn of(segs: &[&Seg]) -> Stream {
        let base = match segs.iter().find(|s| s.syn) {
            Some(s) => s.seq.wrapping_add(1),
            None => match segs.iter().find(|s| !s.payload.is_empty()) {
                Some(s) => s.seq,
                None => return Stream::default(),
            },
        };
        let mut items: Vec<(usize, &Seg)> = (segs.iter())
            .filter(|s| !s.payload.is_empty())
            .filter_map(|s| {
                let off = s.seq.wrapping_sub(base);
                (off < 1 << 31).then_some((off as usize, *s))
            })
            .collect();
        items.sort_by_key(|(off, _)| *off);
        let mut st = Stream::default();
        for (off, s) in items {
            let have = st.bytes.len();
            if off > have {
                break;
            }
            if off + s.payload.len() > have {
                st.starts.push((have, s.key));
                st.bytes.extend_from_slice(&s.payload[have - off..]);
            }
        }
        st
    }

    /// The segment that brought byte `at`.
    fn key_at(&self, at: usize) -> Option<usize> {
        let i = self.starts.partition_point(|(o, _)| *o <= at);
        i.checked_sub(1).map(|i| self.starts[i].1)
    }
}

/// What the connection of segments `client` (client to server) and
/// `server` says at L7, with `keys` to decrypt its TLS.
pub(super) fn conversation(keys: &KeyLog, client: &[&Seg], server: &[&Seg]) -> Conv {
    let (c, s) = (Stream::of(client), Stream::of(server));
    let mut conv = Conv::default();
    let mut notes: Vec<(usize, usize, String)> = Vec::new(); // (key, offset, text)
    let mut put = |st: &Stream, dir: usize, list: Vec<(usize, String)>| {
        for (at, text) in list {
            if let Some(k) = st.key_at(at) {
                notes.push((k, dir * (1 << 40) + at, text));
            }
        }
    };
    if tls::starts_handshake(&c.bytes, 1) {
        let t = tls_layer(keys, &c.bytes, &s.bytes);
        put(&c, 0, t.client);
        put(&s, 1, t.server);
        conv.requests = t.requests;
        conv.tls = t.seen;
    } else {
        let a = http::analyse(&c.bytes, &s.bytes);
        put(&c, 0, a.client);
        put(&s, 1, a.server);
        conv.requests = a.requests;
    }
    notes.sort_by_key(|(k, at, _)| (*k, *at));
    for (k, _, text) in notes {
        match conv.notes.last_mut() {
            Some((last, t)) if *last == k => {
                t.push_str("; ");
                t.push_str(&text);
            }
            _ => conv.notes.push((k, text)),
        }
    }
    conv
}

/// What the TLS layer of a connection gives: record summaries per
/// direction, the requests inside, and the session's ClientHello.
struct TlsLayer {
    client: Vec<(usize, String)>,
    server: Vec<(usize, String)>,
    requests: Vec<Head>,
    seen: Option<TlsSeen>,
}

/// One direction's records as summaries, and the application data inside
/// them (with, for each run of it, the record it came from).
struct Side {
    notes: Vec<(usize, String)>,
    /// Parts named inside each record (by index into `notes`).
    inner: Vec<Vec<String>>,
    plain: Vec<u8>,
    plain_starts: Vec<(usize, usize)>,
}

fn side(
    b: &[u8],
    mut dec: Option<tls::Decrypter>,
) -> (Side, Option<tls::ClientHello>, Option<tls::ServerHello>) {
    let mut sd = Side {
        notes: Vec::new(),
        inner: Vec::new(),
        plain: Vec::new(),
        plain_starts: Vec::new(),
    };
    let (mut ch, mut sh) = (None, None);
    for r in tls::records(b) {
        let mut inner = Vec::new();
        let text = match r.ty {
            tls::CHANGE_CIPHER_SPEC => "TLS ChangeCipherSpec".to_string(),
            tls::ALERT => format!("TLS Alert {}", tls::alert_text(r.body)),
            tls::HANDSHAKE => {
                let names: Vec<String> = (tls::messages(r.body).into_iter())
                    .map(|(ty, body)| match ty {
                        1 => match tls::client_hello(body) {
                            Some(h) => {
                                let mut t = "ClientHello".to_string();
                                if let Some(s) = &h.sni {
                                    t += &format!(" sni={s}");
                                }
                                if !h.alpn.is_empty() {
                                    t += &format!(" alpn={}", h.alpn.join(","));
                                }
                                ch.get_or_insert(h);
                                t
                            }
                            None => "ClientHello (malformed)".into(),
                        },
                        2 => match tls::server_hello(body) {
                            Some(h) => {
                                let t = match (h.retry, h.suite) {
                                    (true, _) => "HelloRetryRequest".to_string(),
                                    (false, Some(s)) => format!("ServerHello {}", s.name()),
                                    (false, None) => {
                                        format!("ServerHello suite={:#06x}", h.suite_id)
                                    }
                                };
                                if !h.retry {
                                    sh.get_or_insert(h);
                                }
                                t
                            }
                            None => "ServerHello (malformed)".into(),
                        },
                        t => tls::handshake_name(t),
                    })
                    .collect();
                format!("TLS {}", names.join(", "))
            }
            _ => {
                if let Some((ty, plain)) = dec.as_mut().and_then(|d| d.open(r.header, r.body)) {
                    match ty {
                        tls::APPLICATION_DATA => {
                            sd.plain_starts.push((sd.plain.len(), sd.notes.len()));
                            sd.plain.extend_from_slice(&plain);
                        }
                        tls::HANDSHAKE => inner.extend(
                            tls::messages(&plain)
                                .into_iter()
                                .map(|(t, _)| tls::handshake_name(t)),
                        ),
                        tls::ALERT => inner.push(format!("Alert {}", tls::alert_text(&plain))),
                        t => inner.push(format!("content type {t}")),
                    }
                }
                format!("TLS AppData {} B", r.body.len())
            }
        };
        sd.notes.push((r.offset, text));
        sd.inner.push(inner);
    }
    (sd, ch, sh)
}

impl Side {
    /// Name the messages found in the plaintext inside their records.
    fn name_inside(&mut self, found: Vec<(usize, String)>) {
        for (at, text) in found {
            let i = self.plain_starts.partition_point(|(o, _)| *o <= at);
            if let Some(&(_, rec)) = i.checked_sub(1).and_then(|i| self.plain_starts.get(i)) {
                self.inner[rec].push(text);
            }
        }
    }

    fn into_notes(self) -> Vec<(usize, String)> {
        (self.notes.into_iter().zip(self.inner))
            .map(|((at, text), inner)| match inner.is_empty() {
                true => (at, text),
                false => (at, format!("{text} ({})", inner.join(", "))),
            })
            .collect()
    }
}

fn tls_layer(keys: &KeyLog, c: &[u8], s: &[u8]) -> TlsLayer {
    // The hellos first (plaintext), to find the keys; then both sides
    // again with decryption.
    let (_, ch, _) = side(c, None);
    let (_, _, sh) = side(s, None);
    let secrets = ch.as_ref().and_then(|h| keys.get(&h.random));
    let suite = sh.as_ref().and_then(|h| h.suite);
    let dec = |hs: &Option<Vec<u8>>, app: &Option<Vec<u8>>| {
        suite.map(|suite| tls::Decrypter::new(suite, [hs.as_deref(), app.as_deref()]))
    };
    let (cd, sd) = match secrets {
        Some(k) => (
            dec(&k.client_handshake, &k.client_app),
            dec(&k.server_handshake, &k.server_app),
        ),
        None => (None, None),
    };
    let decrypted = cd.is_some();
    let (mut cs, _, _) = side(c, cd);
    let (mut ss, _, _) = side(s, sd);
    let app = http::analyse(&cs.plain, &ss.plain);
    cs.name_inside(app.client);
    ss.name_inside(app.server);
    TlsLayer {
        client: cs.into_notes(),
        server: ss.into_notes(),
        requests: app.requests,
        seen: ch.map(|h| TlsSeen {
            random: h.random,
            sni: h.sni,
            decrypted,
        }),
    }
}
