//! The harness benchmark: a chain of N hosts built, pinged across and torn
//! down, timed phase by phase against N bare namespaces. It knows the
//! topology builder and the built-in traffic, not the processes, captures
//! or traces of a full run, and it does not write any report.

use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

use crate::lab::{netns, topology, traffic};
use crate::oakestra::{self, Expanded};
use crate::{run, Error};

/// `h0 - h1 - ... - h{n-1}`, link i on 10.0.0.0/8 as a /30 per link
/// (h_i is .1, h_{i+1} is .2), with an ICMP echo over the first and the
/// last link.
pub fn scenario(n: usize) -> Expanded {
    assert!(n >= 2, "a chain has at least two hosts");
    let mut y = String::from("version: 1\nhosts:\n");
    for i in 0..n {
        let _ = writeln!(y, "  h{i}: {{}}");
    }
    y.push_str("links:\n");
    let addr = |i: usize, side: usize| {
        let v = (10u32 << 24) + 4 * i as u32 + side as u32 + 1;
        format!(
            "{}.{}.{}.{}/30",
            v >> 24,
            (v >> 16) & 255,
            (v >> 8) & 255,
            v & 255
        )
    };
    for i in 0..n - 1 {
        let _ = writeln!(
            y,
            "  - a: {{host: h{i}, ifname: right, addr: [{}]}}\n    b: {{host: h{}, ifname: left, addr: [{}]}}",
            addr(i, 0),
            i + 1,
            addr(i, 1)
        );
    }
    let ip = |a: String| a.trim_end_matches("/30").to_string();
    let _ = write!(
        y,
        "traffic:\n  - {{name: first, from: h0, proto: icmp, to: {}}}\n  - {{name: last, from: h{}, proto: icmp, to: {}}}\n",
        ip(addr(0, 1)),
        n - 2,
        ip(addr(n - 2, 1))
    );
    oakestra::parse(Path::new("(chain)"), &format!("chain-{n}"), &y)
        .expect("the chain scenario is valid")
}

/// Timings of one chain benchmark run, in milliseconds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    /// Baseline in the same process: create and drop `n` bare namespaces.
    pub bare_ms: f64,
    pub build_ms: f64,
    pub traffic_ms: f64,
    pub teardown_ms: f64,
}

/// Build a chain of `n` hosts, run its two pings, tear it down.
pub fn run(n: usize) -> Result<Timings, Error> {
    let sc = scenario(n);
    let rt = run::runtime()?;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let bare: Vec<_> = (0..n)
        .map(|i| netns::NetNs::create(&format!("bare{i}")))
        .collect::<Result<_, _>>()
        .map_err(|source| Error::Io {
            what: "bare namespace".into(),
            source,
        })?;
    drop(bare);
    let bare_ms = ms(t);
    let t = Instant::now();
    let topo = rt.block_on(topology::build(&sc))?;
    let build_ms = ms(t);
    let t = Instant::now();
    for (i, step) in sc.traffic.iter().enumerate() {
        let seen = topo.hosts[&step.from]
            .ns
            .run(|| traffic::run_step(step, step.source_port(i), &|| false))
            .map_err(|source| Error::Io {
                what: step.name.clone(),
                source,
            })?;
        if !seen.meets(step) {
            return Err(Error::Failed(format!(
                "chain-{n} {}: {}",
                step.name,
                seen.describe()
            )));
        }
    }
    let traffic_ms = ms(t);
    let t = Instant::now();
    drop(topo);
    drop(rt);
    Ok(Timings {
        bare_ms,
        build_ms,
        traffic_ms,
        teardown_ms: ms(t),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_is_valid_at_every_size_benchmarked() {
        for n in [2, 10, 1000] {
            let sc = super::scenario(n);
            assert_eq!((sc.hosts.len(), sc.links.len()), (n, n - 1));
        }
    }
}
