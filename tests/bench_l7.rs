//! The L7 benchmark runs end to end (needs root; HAProxy installed): a tiny
//! run of five requests per target and a captured round of three, every
//! mode measured through HAProxy and direct, every request answered, sane
//! latencies, the capture holding the requests' frames, the lab's host
//! files where the run machinery puts them. Nothing here asserts a speed.

mod common;

use common::*;
use hoplab_sim::bench::l7::{Mode, Results};

#[test]
fn l7_bench_measures_every_mode_through_haproxy_and_direct() {
    let out = out_dir("bench-l7");
    let o = hoplab()
        .args(["--quiet", "__bench-l7", "--out"])
        .arg(&out)
        .args([
            "--requests",
            "5",
            "--rounds",
            "1",
            "--capture-requests",
            "3",
        ])
        .output()
        .expect("hoplab runs");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "exit {}\nstdout:\n{stdout}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let r: Results = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not the benchmark's JSON ({e}):\n{stdout}"));
    assert!(r.haproxy.starts_with("HAProxy version"), "{r:#?}");
    for mode in Mode::ALL {
        let m = r
            .get(mode)
            .unwrap_or_else(|| panic!("no result for {mode:?} in {r:#?}"));
        for (x, via) in [(&m.via, true), (&m.direct, false)] {
            assert_eq!(x.rounds.len(), 1, "{x:?}");
            let s = &x.median;
            assert_eq!((s.ok, s.failed), (5, 0), "{x:?}");
            assert_eq!(x.first_error, None, "{x:?}");
            assert!(s.req_per_s > 0.0, "{x:?}");
            assert!(s.p50_us > 0.0 && s.p50_us <= s.p99_us, "{x:?}");
            let lb = x.target.to.ip().to_string() == "10.0.1.1";
            assert_eq!(lb, via, "{x:?}");
        }
        for x in [&m.via, &m.direct] {
            let c = x.captured.as_ref().expect("a captured round");
            assert_eq!((c.ok, c.failed), (3, 0), "{x:?}");
        }
        assert_eq!(m.via.target.tls, mode != Mode::Http, "{m:?}");
        assert_eq!(m.direct.target.tls, mode == Mode::TlsReencrypt, "{m:?}");
    }
    // Every interface but lo captured (both ends of the two links), and
    // each of the 18 requests took a handful of frames on each.
    let c = r.capture.as_ref().expect("a capture");
    assert_eq!(c.interfaces, 4, "{c:?}");
    assert!(c.frames > 18 * 10 && c.bytes > c.frames * 54, "{c:?}");
    // HAProxy read its configuration and the run's certificate from lb's
    // working directory.
    for f in [
        "hosts/lb/haproxy.cfg",
        "hosts/lb/tls/lb.pem",
        "hosts/lb/tls/ca.crt",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
}
