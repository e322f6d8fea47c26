//! What the benchmark does to the scenario's hosts beside traffic: veth
//! GSO settings, nftables scripts and counters, the gateway's counters.
//! It does not measure nor decide what the counters mean.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use super::{Veths, BASELINE_TABLE, GW_NODE};
use crate::lab::netns::NetNs;
use crate::lab::topology::Topology;
use crate::oakestra::Expanded;
use crate::Error;

/// Set `gso_max_segs` on both ends of every veth of the scenario.
pub(super) fn set_veths(topo: &Topology, sc: &Expanded, v: Veths) -> Result<(), Error> {
    for l in &sc.links {
        for e in [&l.a, &l.b] {
            let what = format!("{}/{}: gso_max_segs {}", e.host, e.ifname, v.gso_max_segs());
            let out = topo.hosts[&e.host]
                .ns
                .command("ip")
                .args(["link", "set", "dev", &e.ifname, "gso_max_segs"])
                .arg(v.gso_max_segs())
                .output()
                .map_err(|source| Error::Io {
                    what: what.clone(),
                    source,
                })?;
            if !out.status.success() {
                return Err(Error::Failed(format!(
                    "{what}: ip: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
    }
    Ok(())
}

/// Run `nft args` inside `ns`, `script` on its standard input if any;
/// returns what it printed.
pub(super) fn nft(ns: &NetNs, args: &[&str], script: Option<&str>) -> Result<String, Error> {
    let what = format!("{}: nft {}", ns.name(), args.join(" "));
    let io = |source| Error::Io {
        what: what.clone(),
        source,
    };
    let mut cmd = ns.command("nft");
    cmd.args(args)
        .stdin(if script.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(io)?;
    if let Some(s) = script {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(s.as_bytes())
            .map_err(io)?;
    }
    let out = child.wait_with_output().map_err(io)?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The packet counts of `nft list counters`' named counters. The gateway
/// binary reads its firewall's counters the same way
/// (`src/bin/gateway/firewall.rs`), strictly and into its own names; a
/// benchmark in the harness and a binary under test share no code.
fn named_counters(text: &str) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    let mut current: Option<&str> = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("counter ") {
            current = rest.split_whitespace().next();
        } else if let (Some(name), Some(rest)) = (current, line.strip_prefix("packets ")) {
            if let Some(n) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
                found.insert(name.to_string(), n);
            }
            current = None;
        }
    }
    found
}

/// (f)'s counters on gw.
pub(super) fn baseline_counters(gw: &NetNs) -> Result<BTreeMap<String, u64>, Error> {
    nft(
        gw,
        &["list", "counters", "table", "ip", BASELINE_TABLE],
        None,
    )
    .map(|t| named_counters(&t))
}

/// The gateway's control socket.
pub(super) fn gateway_socket(sc: &Expanded, out: &Path) -> std::path::PathBuf {
    let g = sc.hosts[GW_NODE]
        .processes
        .iter()
        .find_map(|p| p.gateway.as_ref())
        .expect("the scenario has a gateway on gw");
    g.control(&out.join("ctl"))
}

/// The gateway's counters (its own and its firewall's), through its
/// control socket.
pub(super) fn gateway_counters(sc: &Expanded, out: &Path) -> Result<BTreeMap<String, u64>, Error> {
    let text = crate::lab::gateway_ctl::control(&gateway_socket(sc, out), "counters").map_err(
        |source| Error::Io {
            what: "reading the gateway's counters".into(),
            source,
        },
    )?;
    Ok(crate::lab::gateway_ctl::parse_counters(&text))
}

/// `k` in `after` minus `k` in `before`.
pub(super) fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, k: &str) -> u64 {
    let v = |m: &BTreeMap<String, u64>| m.get(k).copied().unwrap_or(0);
    v(after).saturating_sub(v(before))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_counters_parse() {
        let text = "table ip t {\n\tcounter dnat_new {\n\t\tpackets 3 bytes 180\n\t}\n\tcounter forward_new {\n\t\tpackets 0 bytes 0\n\t}\n}\n";
        let c = named_counters(text);
        assert_eq!(c["dnat_new"], 3);
        assert_eq!(c["forward_new"], 0);
    }
}
