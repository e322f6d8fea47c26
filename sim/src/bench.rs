//! Scenarios made for benchmarks: a chain of N hosts.

use std::fmt::Write;
use std::path::Path;

use crate::oakestra::{self, Expanded};

/// `h0 - h1 - ... - h{n-1}`, link i on 10.0.0.0/8 as a /30 per link
/// (h_i is .1, h_{i+1} is .2), with an ICMP echo over the first and the
/// last link.
pub fn chain(n: usize) -> Expanded {
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

#[cfg(test)]
mod tests {
    #[test]
    fn chain_is_valid_at_every_size_benchmarked() {
        for n in [2, 10, 1000] {
            let sc = super::chain(n);
            assert_eq!((sc.hosts.len(), sc.links.len()), (n, n - 1));
        }
    }
}
