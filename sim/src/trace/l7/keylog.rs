//! An NSS key log (the `SSLKEYLOGFILE` format): the TLS 1.3 traffic
//! secrets of each session, by the session's ClientHello random. It knows
//! the text format; not records, ciphers or captures.

use std::collections::HashMap;

/// The secrets of TLS 1.3 sessions, by their client random.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLog {
    sessions: HashMap<[u8; 32], Secrets>,
}

/// One session's traffic secrets, as logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Secrets {
    pub(crate) client_handshake: Option<Vec<u8>>,
    pub(crate) server_handshake: Option<Vec<u8>>,
    pub(crate) client_app: Option<Vec<u8>>,
    pub(crate) server_app: Option<Vec<u8>>,
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl KeyLog {
    /// The sessions of a key log's text. Lines that are comments, of
    /// labels other than the four TLS 1.3 traffic secrets (TLS 1.2's
    /// `CLIENT_RANDOM`, exporter secrets) or not well-formed are left out:
    /// a key log is appended to by every TLS library of a run.
    pub fn parse(text: &[u8]) -> KeyLog {
        let mut log = KeyLog::default();
        for line in String::from_utf8_lossy(text).lines() {
            let mut w = line.split_whitespace();
            let (Some(label), Some(random), Some(secret), None) =
                (w.next(), w.next(), w.next(), w.next())
            else {
                continue;
            };
            let (Some(random), Some(secret)) = (unhex(random), unhex(secret)) else {
                continue;
            };
            let Ok(random) = <[u8; 32]>::try_from(random) else {
                continue;
            };
            let s = log.sessions.entry(random).or_default();
            let slot = match label {
                "CLIENT_HANDSHAKE_TRAFFIC_SECRET" => &mut s.client_handshake,
                "SERVER_HANDSHAKE_TRAFFIC_SECRET" => &mut s.server_handshake,
                "CLIENT_TRAFFIC_SECRET_0" => &mut s.client_app,
                "SERVER_TRAFFIC_SECRET_0" => &mut s.server_app,
                _ => continue,
            };
            *slot = Some(secret);
        }
        log.sessions.retain(|_, s| *s != Secrets::default());
        log
    }

    /// How many sessions have secrets.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub(crate) fn get(&self, client_random: &[u8; 32]) -> Option<&Secrets> {
        self.sessions.get(client_random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tls13_secrets_are_kept() {
        let r = "ab".repeat(32);
        let text = format!(
            "# comment\nCLIENT_RANDOM {r} 00\nCLIENT_TRAFFIC_SECRET_0 {r} 0102\n\
             SERVER_HANDSHAKE_TRAFFIC_SECRET {r} 0x\nSERVER_TRAFFIC_SECRET_0 abcd 0102\n\
             SERVER_TRAFFIC_SECRET_0 {r} 0a0b extra\n"
        );
        let log = KeyLog::parse(text.as_bytes());
        assert_eq!(log.len(), 1);
        let s = log.get(&[0xab; 32]).unwrap();
        assert_eq!(s.client_app.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(
            (s.server_handshake.as_ref(), s.server_app.as_ref()),
            (None, None)
        );
    }
}
