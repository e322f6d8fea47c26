//! The L7 vocabulary the scenario file and the lab share (like
//! `crate::values`): certificates the run's CA issues, files laid into a
//! host's working directory, the built-in HTTP(S)/WebSocket server's
//! behaviour, and an HTTP or WebSocket step's request and messages.
//!
//! Plain values with their serde shapes (unknown fields denied) and their
//! own checks; no I/O, nothing of how they are served or sent.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::values::{bad, Invalid};

/// The top-level `tls` section: certificates the run's CA issues, by name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    #[serde(default)]
    pub certs: BTreeMap<String, CertSpec>,
}

/// One certificate: its subject alternative names. A name used (by a
/// server's or a step's `tls.cert`) but not listed gets `dns: [NAME]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSpec {
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub ip: Vec<IpAddr>,
    /// Signed by its own key instead of the run's CA (a peer that cannot be
    /// verified).
    #[serde(default)]
    pub self_signed: bool,
}

impl CertSpec {
    /// The spec of a certificate used but not listed.
    pub fn named(name: &str) -> CertSpec {
        CertSpec {
            dns: vec![name.to_string()],
            ..CertSpec::default()
        }
    }
}

/// Is `s` a DNS name a certificate can carry (`*.` wildcard allowed)?
pub fn check_dns(field: String, s: &str) -> Result<(), Invalid> {
    let name = s.strip_prefix("*.").unwrap_or(s);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && name.parse::<IpAddr>().is_err();
    if ok {
        Ok(())
    } else {
        bad(
            field,
            format!("`{s}` is not a DNS name (labels of [A-Za-z0-9-]; an address goes in `ip`)"),
        )
    }
}

/// A file laid into a host's working directory: a path relative to the
/// scenario file (`haproxy.cfg: haproxy/edge.cfg`), or `{text: ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    Path(String),
    Text(String),
}

impl<'de> Deserialize<'de> for FileSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FileSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path relative to the scenario file, or {text: CONTENT}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileSource, E> {
                Ok(FileSource::Path(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<FileSource, A::Error> {
                let Some(k) = m.next_key::<String>()? else {
                    return Err(de::Error::custom("empty map: write {text: CONTENT}"));
                };
                if k != "text" {
                    return Err(de::Error::unknown_field(&k, &["text"]));
                }
                let t: String = m.next_value()?;
                if let Some(k) = m.next_key::<String>()? {
                    return Err(de::Error::unknown_field(&k, &["text"]));
                }
                Ok(FileSource::Text(t))
            }
        }
        d.deserialize_any(V)
    }
}

/// A file name in a host's working directory: one plain component, not
/// `tls` (the run's certificates live there).
pub fn check_file_name(field: String, name: &str) -> Result<(), Invalid> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name == "tls"
    {
        return bad(
            field,
            format!("`{name}` is not a file name (one path component, not `tls`)"),
        );
    }
    Ok(())
}

/// The built-in HTTP(S)/WebSocket server (`hoplab __http`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServer {
    /// TCP port it listens on (IPv4, and IPv6 where the host has it).
    pub listen: u16,
    /// Serve TLS 1.3 with this certificate; plain HTTP without.
    #[serde(default)]
    pub tls: Option<ServerTls>,
    /// Status of every answer (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Wait this long before answering.
    #[serde(default)]
    pub delay_ms: u64,
    /// The body of every answer; default `served by HOST/PROCESS\n`.
    #[serde(default)]
    pub body: Option<String>,
    /// The Nth request (1-based, counted per server) gets this status.
    #[serde(default)]
    pub fail: Option<Fail>,
    /// The Nth request's connection is reset instead of answered.
    #[serde(default)]
    pub reset: Option<Nth>,
}

fn default_status() -> u16 {
    200
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// A certificate of the run's CA, by name.
    pub cert: String,
    /// Require a client certificate issued by the run's CA (mTLS).
    #[serde(default)]
    pub client_ca: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    pub nth: u32,
    pub status: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nth {
    pub nth: u32,
}

/// The client side of a TLS step: it always trusts the run's CA only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// Server name sent (SNI) and verified; default: the request's `host`,
    /// else the target address (verified against the certificate's `ip`,
    /// no SNI sent).
    #[serde(default)]
    pub sni: Option<String>,
    /// ALPN protocols offered, in order (none by default).
    #[serde(default)]
    pub alpn: Vec<String>,
    /// Present this certificate of the run's CA (mTLS).
    #[serde(default)]
    pub cert: Option<String>,
}

/// An HTTP/1.1 request step.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    /// The Host header; default: the target `ip:port`.
    #[serde(default)]
    pub host: Option<String>,
    /// Extra headers, sent in name order after Host.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body (sent with Content-Length when not empty).
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

fn default_method() -> String {
    "GET".into()
}
fn default_path() -> String {
    "/".into()
}

/// A WebSocket step: upgrade, each message in turn (each echo awaited),
/// close.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocket {
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default)]
    pub host: Option<String>,
    /// Extra headers of the upgrade request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub messages: Vec<WsMessage>,
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

/// One WebSocket message: give exactly one of `text` or `binary` (hex).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsMessage {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub binary: Option<String>,
}

/// A message as sent: text or bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsData {
    Text(String),
    Binary(Vec<u8>),
}

impl WsMessage {
    /// The message, or why it is not one.
    pub fn data(&self) -> Result<WsData, String> {
        match (&self.text, &self.binary) {
            (Some(t), None) => Ok(WsData::Text(t.clone())),
            (None, Some(h)) => hex(h).map(WsData::Binary),
            _ => Err("give exactly one of `text` or `binary` (hex)".into()),
        }
    }
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if s.len() & 1 == 1 {
        return Err(format!("`{s}` is not hex: an odd number of digits"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("`{s}` is not hex bytes"))
        })
        .collect()
}

/// What an HTTP step expects: each field optional; the status defaults
/// to 200.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpExpect {
    pub status: Option<u16>,
    /// Headers that must be in the response with these values (names
    /// compared without case).
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
}

impl HttpExpect {
    pub fn status(&self) -> u16 {
        self.status.unwrap_or(200)
    }
}

impl fmt::Display for HttpExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status())?;
        for (k, v) in &self.headers {
            write!(f, ", {k}: {v}")?;
        }
        if let Some(b) = &self.body {
            write!(f, ", body {b:?}")?;
        }
        Ok(())
    }
}

/// An HTTP or WebSocket step's exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L7Step {
    Http(HttpRequest),
    WebSocket(WebSocket),
}

impl L7Step {
    pub fn tls(&self) -> Option<&ClientTls> {
        match self {
            L7Step::Http(h) => h.tls.as_ref(),
            L7Step::WebSocket(w) => w.tls.as_ref(),
        }
    }

    pub fn host(&self) -> Option<&str> {
        match self {
            L7Step::Http(h) => h.host.as_deref(),
            L7Step::WebSocket(w) => w.host.as_deref(),
        }
    }

    /// What the step sends, in words (`HTTP GET /`, `WebSocket /chat, 2
    /// messages`), with its TLS (`over TLS, SNI app.example`).
    pub fn describe(&self) -> String {
        let what = match self {
            L7Step::Http(h) => format!("HTTP {} {}", h.method, h.path),
            L7Step::WebSocket(w) => {
                let n = w.messages.len();
                let s = if n == 1 { "" } else { "s" };
                format!("WebSocket {}, {n} message{s}", w.path)
            }
        };
        match self.tls() {
            None => what,
            Some(t) => {
                let mut s = format!("{what} over TLS");
                if let Some(n) = t.sni.as_deref().or(self.host()) {
                    s.push_str(&format!(", SNI {n}"));
                }
                if !t.alpn.is_empty() {
                    s.push_str(&format!(", ALPN {}", t.alpn.join(",")));
                }
                if let Some(c) = &t.cert {
                    s.push_str(&format!(", client cert {c}"));
                }
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(check_dns("f".into(), "app.example").is_ok());
        assert!(check_dns("f".into(), "*.example").is_ok());
        assert!(check_dns("f".into(), "10.0.0.1").is_err());
        assert!(check_dns("f".into(), "a..b").is_err());
        assert!(check_dns("f".into(), "bad name").is_err());
    }

    #[test]
    fn ws_messages() {
        let m = WsMessage {
            binary: Some("01 02ff".into()),
            ..WsMessage::default()
        };
        assert_eq!(m.data(), Ok(WsData::Binary(vec![1, 2, 0xff])));
        let m = WsMessage {
            binary: Some("0g".into()),
            ..WsMessage::default()
        };
        assert!(m.data().is_err());
        assert!(WsMessage::default().data().is_err());
    }

    #[test]
    fn file_sources() {
        let f: BTreeMap<String, FileSource> =
            serde_yaml::from_str("a: x/y.cfg\nb: {text: hi}\n").unwrap();
        assert_eq!(f["a"], FileSource::Path("x/y.cfg".into()));
        assert_eq!(f["b"], FileSource::Text("hi".into()));
        assert!(serde_yaml::from_str::<FileSource>("{txt: hi}").is_err());
    }
}
