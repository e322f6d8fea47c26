//! TLS as a passive observer sees it: records, the handshake messages of
//! the plaintext ones (ClientHello's SNI, ALPN and random; ServerHello's
//! cipher suite), and TLS 1.3 records decrypted with a session's traffic
//! secrets (HKDF-Expand-Label and the AEAD of the three TLS 1.3 suites,
//! from `ring`). It knows bytes of one direction of one connection; not
//! TCP, HTTP or traces. TLS 1.2 sessions, KeyUpdate and 0-RTT data are
//! not decrypted (their records are shown, not their content).

use ring::{aead, hkdf};

/// The record types hoplab names.
pub(super) const CHANGE_CIPHER_SPEC: u8 = 20;
pub(super) const ALERT: u8 = 21;
pub(super) const HANDSHAKE: u8 = 22;
pub(super) const APPLICATION_DATA: u8 = 23;

/// Largest record a TLS peer may send (TLSCiphertext: 2^14 + 2048).
const MAX_RECORD: usize = (1 << 14) + 2048;

/// One record: its type, its 5-byte header's offset in the stream and its
/// body.
pub(super) struct Record<'a> {
    pub(super) ty: u8,
    pub(super) offset: usize,
    pub(super) header: &'a [u8],
    pub(super) body: &'a [u8],
}

/// Whether `b` starts with a TLS handshake record holding a handshake
/// message of type `msg` (1: ClientHello, 2: ServerHello).
pub(super) fn starts_handshake(b: &[u8], msg: u8) -> bool {
    b.len() >= 6 && b[0] == HANDSHAKE && b[1] == 3 && b[2] <= 4 && b[5] == msg
}

/// The whole records at the start of `b`, up to the first one cut short
/// or not well-formed.
pub(super) fn records(b: &[u8]) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = b.get(at..at + 5) {
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if !(CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&h[0]) || h[1] != 3 || len > MAX_RECORD
        {
            break;
        }
        let Some(body) = b.get(at + 5..at + 5 + len) else {
            break;
        };
        out.push(Record {
            ty: h[0],
            offset: at,
            header: h,
            body,
        });
        at += 5 + len;
    }
    out
}

/// A handshake message type's name.
pub(super) fn handshake_name(ty: u8) -> String {
    match ty {
        1 => "ClientHello".into(),
        2 => "ServerHello".into(),
        4 => "NewSessionTicket".into(),
        5 => "EndOfEarlyData".into(),
        8 => "EncryptedExtensions".into(),
        11 => "Certificate".into(),
        13 => "CertificateRequest".into(),
        15 => "CertificateVerify".into(),
        20 => "Finished".into(),
        24 => "KeyUpdate".into(),
        t => format!("handshake type {t}"),
    }
}

/// An alert's text: `warning close_notify`, `fatal bad_certificate`, ...
pub(super) fn alert_text(b: &[u8]) -> String {
    let level = match b.first() {
        Some(1) => "warning",
        Some(2) => "fatal",
        _ => "alert",
    };
    let what = match b.get(1) {
        Some(0) => "close_notify".into(),
        Some(10) => "unexpected_message".into(),
        Some(20) => "bad_record_mac".into(),
        Some(40) => "handshake_failure".into(),
        Some(42) => "bad_certificate".into(),
        Some(45) => "certificate_expired".into(),
        Some(46) => "certificate_unknown".into(),
        Some(48) => "unknown_ca".into(),
        Some(50) => "decode_error".into(),
        Some(51) => "decrypt_error".into(),
        Some(70) => "protocol_version".into(),
        Some(80) => "internal_error".into(),
        Some(112) => "unrecognized_name".into(),
        Some(116) => "certificate_required".into(),
        Some(120) => "no_application_protocol".into(),
        Some(d) => format!("description {d}"),
        None => "(empty)".into(),
    };
    format!("{level} {what}")
}

/// The handshake messages in `b` (the bodies of consecutive handshake
/// records): each message's type and body, up to the first cut short.
pub(super) fn messages(b: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = b.get(at..at + 4) {
        let len = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
        let Some(body) = b.get(at + 4..at + 4 + len) else {
            break;
        };
        out.push((h[0], body));
        at += 4 + len;
    }
    out
}

/// A cursor over a handshake message's fields.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    /// The extensions block: `(type, body)` of each.
    fn extensions(&mut self) -> Vec<(u16, &'a [u8])> {
        let mut out = Vec::new();
        let mut c = Cur(self.vec16().unwrap_or_default());
        while let (Some(ty), Some(body)) = (c.u16(), c.vec16()) {
            out.push((ty, body));
        }
        out
    }
}

/// What a ClientHello says that the trace shows or joins legs by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClientHello {
    pub(super) random: [u8; 32],
    pub(super) sni: Option<String>,
    pub(super) alpn: Vec<String>,
}

pub(super) fn client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut c = Cur(body);
    c.u16()?;
    let random: [u8; 32] = c.take(32)?.try_into().ok()?;
    c.vec8()?;
    c.vec16()?;
    c.vec8()?;
    let mut hello = ClientHello {
        random,
        sni: None,
        alpn: Vec::new(),
    };
    for (ty, body) in c.extensions() {
        let mut e = Cur(body);
        match ty {
            0 => {
                let mut list = Cur(e.vec16().unwrap_or_default());
                if list.u8() == Some(0) {
                    hello.sni = list
                        .vec16()
                        .map(|n| String::from_utf8_lossy(n).into_owned());
                }
            }
            16 => {
                let mut list = Cur(e.vec16().unwrap_or_default());
                while let Some(p) = list.vec8() {
                    hello.alpn.push(String::from_utf8_lossy(p).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

/// A TLS 1.3 cipher suite hoplab decrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Suite {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Suite {
    fn of(id: u16) -> Option<Suite> {
        match id {
            0x1301 => Some(Suite::Aes128Gcm),
            0x1302 => Some(Suite::Aes256Gcm),
            0x1303 => Some(Suite::Chacha20Poly1305),
            _ => None,
        }
    }
    pub(super) fn name(self) -> &'static str {
        match self {
            Suite::Aes128Gcm => "TLS_AES_128_GCM_SHA256",
            Suite::Aes256Gcm => "TLS_AES_256_GCM_SHA384",
            Suite::Chacha20Poly1305 => "TLS_CHACHA20_POLY1305_SHA256",
        }
    }
    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Suite::Aes256Gcm => hkdf::HKDF_SHA384,
            _ => hkdf::HKDF_SHA256,
        }
    }
    fn aead(self) -> &'static aead::Algorithm {
        match self {
            Suite::Aes128Gcm => &aead::AES_128_GCM,
            Suite::Aes256Gcm => &aead::AES_256_GCM,
            Suite::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// What a ServerHello says: the suite (TLS 1.3 only: a ServerHello whose
/// supported_versions names 1.3), or the suite number otherwise; and
/// whether it is a HelloRetryRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerHello {
    pub(super) suite: Option<Suite>,
    pub(super) suite_id: u16,
    pub(super) tls13: bool,
    pub(super) retry: bool,
}

/// The random of a HelloRetryRequest (RFC 8446, 4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

pub(super) fn server_hello(body: &[u8]) -> Option<ServerHello> {
    let mut c = Cur(body);
    c.u16()?;
    let random = c.take(32)?;
    c.vec8()?;
    let suite_id = c.u16()?;
    c.u8()?;
    let tls13 = c
        .extensions()
        .iter()
        .any(|(ty, b)| *ty == 43 && *b == [3, 4]);
    Some(ServerHello {
        suite: Suite::of(suite_id).filter(|_| tls13),
        suite_id,
        tls13,
        retry: random == HRR_RANDOM,
    })
}

/// A length for HKDF-Expand's output.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label(secret, label, "", len) (RFC 8446, 7.1).
fn expand_label(suite: Suite, secret: &[u8], label: &[u8], len: usize) -> Option<Vec<u8>> {
    let prk = hkdf::Prk::new_less_safe(suite.hkdf(), secret);
    let out_len = u16::try_from(len).ok()?.to_be_bytes();
    let label_len = [u8::try_from(6 + label.len()).ok()?];
    let info: [&[u8]; 5] = [&out_len, &label_len, b"tls13 ", label, &[0]];
    let okm = prk.expand(&info, Len(len)).ok()?;
    let mut out = vec![0; len];
    okm.fill(&mut out).ok()?;
    Some(out)
}

/// The key and IV of one traffic secret, and the next record's number.
pub(super) struct Keys {
    key: aead::LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    pub(super) fn new(suite: Suite, secret: &[u8]) -> Option<Keys> {
        let alg = suite.aead();
        let key = expand_label(suite, secret, b"key", alg.key_len())?;
        let iv: [u8; 12] = expand_label(suite, secret, b"iv", 12)?.try_into().ok()?;
        Some(Keys {
            key: aead::LessSafeKey::new(aead::UnboundKey::new(alg, &key).ok()?),
            iv,
            seq: 0,
        })
    }

    /// The record's plaintext and inner content type, if these keys open
    /// it as the next record (then the record number advances).
    pub(super) fn open(&mut self, header: &[u8], body: &[u8]) -> Option<(u8, Vec<u8>)> {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(header),
                &mut buf,
            )
            .ok()?;
        self.seq += 1;
        // TLSInnerPlaintext: content, the type, zero padding.
        let end = plain.iter().rposition(|&b| b != 0)?;
        let ty = plain[end];
        Some((ty, plain[..end].to_vec()))
    }
}

/// One direction's decryption: the handshake keys, then the application
/// keys once a record no longer opens with the handshake keys.
pub(super) struct Decrypter {
    keys: Vec<Keys>,
    at: usize,
}

impl Decrypter {
    pub(super) fn new(suite: Suite, secrets: [Option<&[u8]>; 2]) -> Decrypter {
        Decrypter {
            keys: secrets
                .into_iter()
                .flatten()
                .filter_map(|s| Keys::new(suite, s))
                .collect(),
            at: 0,
        }
    }

    /// An encrypted record opened: with the keys in use, else with the
    /// next ones (which it then switches to for good).
    pub(super) fn open(&mut self, header: &[u8], body: &[u8]) -> Option<(u8, Vec<u8>)> {
        for i in self.at..self.keys.len() {
            if let Some(p) = self.keys[i].open(header, body) {
                self.at = i;
                return Some(p);
            }
        }
        None
    }
}
