//! A client of a running gateway's control socket (`counters`, `flows`,
//! `exposures`, `expose`, `unexpose`), for a run's exposure steps and
//! counters and for `hoplab gateway`.
//!
//! Knows the line protocol, not what the gateway does with it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends one control line to a gateway and returns its answer: one line,
/// or for `counters`, `flows` and `exposures` every line up to the empty
/// one that ends it. An answer starting with `error` is an error.
pub fn control(socket: &Path, line: &str) -> std::io::Result<String> {
    let out = answer(socket, line)?;
    if let Some(rest) = out.strip_prefix("error") {
        return Err(std::io::Error::other(format!(
            "gateway: {}",
            rest.trim_start_matches([' ', ':']).trim_end()
        )));
    }
    Ok(out)
}

/// [`control`]'s answer as it came, an `error …` line included. The net
/// manager's control socket answers `counters` the same way.
pub fn answer(socket: &Path, line: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let multi = matches!(line.trim(), "counters" | "flows" | "exposures");
    let mut r = BufReader::new(s);
    let mut out = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            break;
        }
        if multi && l.trim().is_empty() {
            break;
        }
        out.push_str(&l);
        if !multi {
            break;
        }
    }
    Ok(out)
}

/// Parses `name value` lines (a `counters` answer).
pub fn parse_counters(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}
