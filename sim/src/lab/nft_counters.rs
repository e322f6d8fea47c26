//! The counters of a host's own nftables rules, read after the traffic:
//! every named counter (`counter NAME`) and every rule with a `counter`
//! statement (`TABLE/CHAIN rule N`, N counting the chain's rules from 1, or
//! the rule's comment when it has one), of the tables the host's
//! `firewall` script declares. Packets only (bytes would add nothing a
//! reader checks). It reads `nft -j list ruleset` inside the host; it
//! does not know the trace or which process loaded which table.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::netns::NetNs;

/// The tables `script` declares: `(family, name)` of each `table FAMILY
/// NAME` (family `ip` when left out).
fn tables(script: &str) -> BTreeSet<(String, String)> {
    let mut set = BTreeSet::new();
    for line in script.lines() {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '{')
            .filter(|w| !w.is_empty())
            .collect();
        let Some(i) = words.iter().position(|w| *w == "table") else {
            continue;
        };
        match (words.get(i + 1), words.get(i + 2)) {
            (Some(f), Some(n)) if is_family(f) => {
                set.insert((f.to_string(), n.to_string()));
            }
            (Some(n), _) if !is_family(n) => {
                set.insert(("ip".to_string(), n.to_string()));
            }
            _ => {}
        }
    }
    set
}

fn is_family(w: &str) -> bool {
    matches!(w, "ip" | "ip6" | "inet" | "arp" | "bridge" | "netdev")
}

/// The counters of `ruleset` (the JSON of `nft -j list ruleset`) in the
/// tables `wanted`.
fn counters(ruleset: &Value, wanted: &BTreeSet<(String, String)>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut rule_no: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    let items = ruleset["nftables"].as_array().cloned().unwrap_or_default();
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    for item in &items {
        if let Some(c) = item.get("counter") {
            if wanted.contains(&(text(c, "family"), text(c, "table"))) {
                let packets = c["packets"].as_u64().unwrap_or_default();
                out.insert(format!("counter {}", text(c, "name")), packets);
            }
        }
        let Some(r) = item.get("rule") else { continue };
        let (family, table, chain) = (text(r, "family"), text(r, "table"), text(r, "chain"));
        if !wanted.contains(&(family.clone(), table.clone())) {
            continue;
        }
        let n = rule_no
            .entry((family, table.clone(), chain.clone()))
            .or_default();
        *n += 1;
        let exprs = r["expr"].as_array().cloned().unwrap_or_default();
        let Some(packets) = exprs
            .iter()
            .find_map(|e| e.get("counter").and_then(|c| c["packets"].as_u64()))
        else {
            continue;
        };
        let key = match r["comment"].as_str() {
            Some(c) => format!("{table}/{chain} \"{c}\""),
            None => format!("{table}/{chain} rule {n}"),
        };
        out.insert(key, packets);
    }
    out
}

/// The counters of the tables `script` declares, as loaded in `ns`.
pub fn read(ns: &NetNs, script: &str) -> Result<BTreeMap<String, u64>, String> {
    let wanted = tables(script);
    if wanted.is_empty() {
        return Ok(BTreeMap::new());
    }
    let o = ns
        .command("nft")
        .args(["-j", "list", "ruleset"])
        .output()
        .map_err(|e| format!("running nft: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "nft -j list ruleset: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    let v: Value = serde_json::from_slice(&o.stdout)
        .map_err(|e| format!("nft -j list ruleset: not JSON: {e}"))?;
    Ok(counters(&v, &wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_counters_and_counted_rules_of_the_scripts_tables() {
        let script = "table ip nat {\n  counter hits {}\n  chain pre { type nat hook prerouting \
                      priority dstnat; }\n}\ntable inet filter {\n}\n";
        let wanted = tables(script);
        assert_eq!(
            wanted
                .iter()
                .map(|(f, n)| format!("{f} {n}"))
                .collect::<Vec<_>>(),
            ["inet filter", "ip nat"]
        );
        let ruleset: Value = serde_json::from_str(
            r#"{"nftables": [
              {"metainfo": {"version": "1.0.6"}},
              {"counter": {"family": "ip", "name": "hits", "table": "nat", "handle": 2, "packets": 3, "bytes": 180}},
              {"counter": {"family": "ip", "name": "theirs", "table": "gw", "handle": 2, "packets": 9, "bytes": 1}},
              {"rule": {"family": "ip", "table": "nat", "chain": "pre", "handle": 4, "expr": [{"accept": null}]}},
              {"rule": {"family": "ip", "table": "nat", "chain": "pre", "handle": 5, "expr": [{"counter": {"packets": 2, "bytes": 120}}, {"accept": null}]}},
              {"rule": {"family": "inet", "table": "filter", "chain": "fwd", "handle": 6, "comment": "drop ssh", "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}},
              {"rule": {"family": "ip", "table": "gw", "chain": "x", "handle": 7, "expr": [{"counter": {"packets": 5, "bytes": 1}}]}}
            ]}"#,
        )
        .unwrap();
        let c = counters(&ruleset, &wanted);
        assert_eq!(
            c.into_iter().collect::<Vec<_>>(),
            [
                ("counter hits".to_string(), 3),
                ("filter/fwd \"drop ssh\"".to_string(), 0),
                ("nat/pre rule 2".to_string(), 2),
            ]
        );
    }
}
