//! The run's key log: every TLS session of hoplab's own client and
//! built-in server appends its secrets to one file in NSS `SSLKEYLOGFILE`
//! format (`LABEL CLIENT_RANDOM_HEX SECRET_HEX`, a line each), which
//! Wireshark and tshark decrypt with. Each line is one `write` on a file
//! opened for appending, so processes writing at once do not interleave.
//!
//! Knows the format; not which sessions are logged.

use std::io::Write;
use std::path::PathBuf;

/// A [`rustls::KeyLog`] appending to a file.
#[derive(Debug)]
pub struct KeyLogFile {
    path: PathBuf,
}

impl KeyLogFile {
    pub fn new(path: PathBuf) -> KeyLogFile {
        KeyLogFile { path }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One line of the key log.
pub fn line(label: &str, client_random: &[u8], secret: &[u8]) -> String {
    format!("{label} {} {}\n", hex(client_random), hex(secret))
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let l = line(label, client_random, secret);
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(l.as_bytes()));
        if let Err(e) = r {
            tracing::warn!("key log {}: {e}", self.path.display());
        }
    }

    fn will_log(&self, _label: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nss_format() {
        assert_eq!(
            super::line("CLIENT_TRAFFIC_SECRET_0", &[0xab, 1], &[0xff]),
            "CLIENT_TRAFFIC_SECRET_0 ab01 ff\n"
        );
    }
}
