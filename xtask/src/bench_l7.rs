//! `cargo xtask bench l7`: build hoplab, run `hoplab __bench-l7`, keep its
//! JSON results ([`hoplab_sim::bench::l7::Results`]) in
//! `target/bench-l7/results.json` and write reports/bench-l7.md from the
//! template `xtask/templates/bench-l7.md`.
//!
//! It measures nothing itself but the wall time of the benchmark process
//! and the machine's load around it; what a mode or a target is, is the
//! benchmark's.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
#[cfg(test)]
use hoplab_sim::bench::l7::Captured;
use hoplab_sim::bench::l7::{Measured, Mode, ModeResult, Results};

use crate::template::fill;
use crate::{build_hoplab_bins, root, target_dir};

const TEMPLATE: &str = include_str!("../templates/bench-l7.md");

/// What the benchmark is asked for.
pub struct Options {
    pub release: bool,
    pub requests: usize,
    pub rounds: usize,
    pub max_secs: f64,
    pub capture_requests: usize,
}

/// The machine a run was taken on.
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    /// 1-minute load average just before and just after the run.
    pub load: (f64, f64),
    /// Wall time of the benchmark process, seconds.
    pub total_secs: f64,
}

/// Run the L7 benchmark; write target/bench-l7/results.json and
/// reports/bench-l7.md.
pub fn run(o: &Options) -> Result<()> {
    let bin = build_hoplab_bins(o.release)?;
    let out = target_dir().join("bench-l7");
    let before = load();
    let t = Instant::now();
    let run = Command::new(&bin)
        .args(["-q", "__bench-l7", "--out"])
        .arg(&out)
        .args([
            "--requests",
            &o.requests.to_string(),
            "--rounds",
            &o.rounds.to_string(),
            "--max-secs",
            &o.max_secs.to_string(),
            "--capture-requests",
            &o.capture_requests.to_string(),
        ])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let total_secs = t.elapsed().as_secs_f64();
    if !run.status.success() {
        bail!(
            "the L7 benchmark failed ({}): {}(logs: {})",
            run.status,
            String::from_utf8_lossy(&run.stderr),
            out.join("logs").display()
        );
    }
    let results: Results = serde_json::from_slice(&run.stdout).with_context(|| {
        format!(
            "the results of the L7 benchmark: {}",
            String::from_utf8_lossy(&run.stdout)
        )
    })?;
    let json = out.join("results.json");
    std::fs::write(&json, &run.stdout).with_context(|| format!("writing {}", json.display()))?;
    let machine = Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        load: (before, load()),
        total_secs,
    };
    let md = report(&results, &machine)?;
    let path = root().join("reports/bench-l7.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    for m in &results.modes {
        println!("{}", console_line(m));
    }
    println!("wrote {} and {}", path.display(), json.display());
    Ok(())
}

/// The 1-minute load average (NaN when unreadable).
fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|l| l.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// How a mode is named in the report, and where HAProxy sends it.
fn title(m: Mode) -> (&'static str, &'static str) {
    match m {
        Mode::Http => ("HTTP", "plain HTTP → plain backend"),
        Mode::TlsEdge => ("TLS edge", "TLS ends at HAProxy → plain backend"),
        Mode::TlsReencrypt => (
            "TLS re-encrypt",
            "TLS ends at HAProxy → a new TLS session to the backend",
        ),
    }
}

/// How a target is named in the report: `TLS 10.0.1.1:443`.
fn endpoint(m: &Measured) -> String {
    let t = &m.target;
    format!("{} `{}`", if t.tls { "TLS" } else { "plain" }, t.to)
}

/// Through ÷ direct of requests/s, p50, p99.
fn ratios(r: &ModeResult) -> [f64; 3] {
    let (v, d) = (&r.via.median, &r.direct.median);
    [
        v.req_per_s / d.req_per_s,
        v.p50_us / d.p50_us,
        v.p99_us / d.p99_us,
    ]
}

fn console_line(r: &ModeResult) -> String {
    let (v, d) = (&r.via.median, &r.direct.median);
    let [q, p50, p99] = ratios(r);
    format!(
        "{:>14}: through HAProxy {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs; direct {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs; ratios {q:.2}, {p50:.2}, {p99:.2}",
        title(r.mode).0,
        v.req_per_s,
        v.p50_us,
        v.p99_us,
        d.req_per_s,
        d.p50_us,
        d.p99_us,
    )
}

/// reports/bench-l7.md from `results`, run on `machine`.
pub fn report(results: &Results, machine: &Machine) -> Result<String> {
    let cfg = &results.config;
    let mut summary = String::new();
    let mut per_mode = String::new();
    for m in Mode::ALL {
        let r = results
            .get(m)
            .with_context(|| format!("no result for mode {m:?}"))?;
        let (name, what) = title(m);
        let [q, p50, p99] = ratios(r);
        let _ = writeln!(
            summary,
            "| {name} | {what}: {} | {} | **{q:.2}** | **{p50:.2}** | **{p99:.2}** |",
            endpoint(&r.via),
            endpoint(&r.direct),
        );
        per_mode.push_str(&mode_section(r)?);
    }
    per_mode.push_str(&edge_beside_tls(results)?);
    let (before, after) = machine.load;
    let busy = before.max(after) > machine.cores as f64 * 0.5;
    let load_note = if busy {
        format!(
            "The machine was shared with other work (builds) during the run, a load of {:.1} on {} cores: the absolute numbers are lower and noisier than on an idle machine; the ratios, taken side by side in the same run, are what counts.",
            before.max(after),
            machine.cores
        )
    } else {
        "The machine was otherwise idle.".to_string()
    };
    fill(
        TEMPLATE,
        &[
            ("summary", summary),
            ("per_mode", per_mode),
            ("cores", machine.cores.to_string()),
            ("kernel", machine.kernel.clone()),
            ("haproxy", results.haproxy.clone()),
            ("load_before", format!("{before:.2}")),
            ("load_after", format!("{after:.2}")),
            ("load_note", load_note),
            ("total", format!("{:.1}", machine.total_secs)),
            ("rounds", cfg.rounds.to_string()),
            ("requests", cfg.requests.to_string()),
            ("max_secs", cfg.max_secs.to_string()),
            ("timeout_ms", cfg.timeout_ms.to_string()),
            ("capture", capture_section(results)?),
            ("capture_requests", cfg.capture_requests.to_string()),
        ],
    )
}

/// The TLS edge through HAProxy beside the direct requests over TLS
/// (re-encrypt's direct target, the same run): what ending TLS at HAProxy
/// costs against the server ending it itself.
fn edge_beside_tls(results: &Results) -> Result<String> {
    let find = |m| {
        results
            .get(m)
            .with_context(|| format!("no result for mode {m:?}"))
    };
    let (e, t) = (&find(Mode::TlsEdge)?.via, &find(Mode::TlsReencrypt)?.direct);
    let (v, d) = (&e.median, &t.median);
    Ok(format!(
        "\nThe TLS edge through HAProxy beside the direct requests over TLS ({} of re-encrypt, the same run): requests/s ÷ **{:.2}**, p50 ÷ **{:.2}**, p99 ÷ **{:.2}**.\n",
        endpoint(t),
        v.req_per_s / d.req_per_s,
        v.p50_us / d.p50_us,
        v.p99_us / d.p99_us,
    ))
}

/// The captured round beside the uncaptured rounds' medians.
fn capture_section(results: &Results) -> Result<String> {
    let Some(c) = &results.capture else {
        return Ok("No captured round was run (`--capture-requests 0`).\n".into());
    };
    let mut md = format!(
        "{} requests per target with {} interfaces captured: {} frames, {:.1} MiB. Against the median of the uncaptured rounds of the same target:\n\n\
         | mode | target | requests/s captured | ÷ uncaptured | p50 captured (µs) | ÷ uncaptured | p99 captured (µs) | ÷ uncaptured |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
        results.config.capture_requests,
        c.interfaces,
        c.frames,
        c.bytes as f64 / (1024.0 * 1024.0),
    );
    for r in &results.modes {
        for (label, m) in [("through HAProxy", &r.via), ("direct", &r.direct)] {
            let s = m
                .captured
                .as_ref()
                .with_context(|| format!("no captured round of {}", m.target.step))?;
            let u = &m.median;
            let _ = writeln!(
                md,
                "| {} | {label}: {} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} |",
                title(r.mode).0,
                endpoint(m),
                s.req_per_s,
                s.req_per_s / u.req_per_s,
                s.p50_us,
                s.p50_us / u.p50_us,
                s.p99_us,
                s.p99_us / u.p99_us,
            );
        }
    }
    Ok(md)
}

/// A mode's table (through HAProxy, direct, their ratio) and each round's
/// values.
fn mode_section(r: &ModeResult) -> Result<String> {
    let (name, what) = title(r.mode);
    let [q, p50, p99] = ratios(r);
    let mut md = format!(
        "\n## {name}: {what}\n\n\
         | | target | requests/s | p50 (µs) | p99 (µs) | answered | failed |\n\
         |---|---|---:|---:|---:|---:|---:|\n"
    );
    for (label, m) in [("through HAProxy", &r.via), ("direct", &r.direct)] {
        let s = &m.median;
        let _ = writeln!(
            md,
            "| {label} | {} | {:.0} | {:.0} | {:.0} | {} | {} |",
            endpoint(m),
            s.req_per_s,
            s.p50_us,
            s.p99_us,
            s.ok,
            s.failed
        );
    }
    let _ = writeln!(
        md,
        "| through ÷ direct | | **{q:.2}** | **{p50:.2}** | **{p99:.2}** | | |"
    );
    md.push_str("\nEach round's values (requests/s; p50 µs; p99 µs):\n\n");
    for (label, m) in [("through HAProxy", &r.via), ("direct", &r.direct)] {
        let list = |f: fn(&hoplab_sim::bench::l7::Sample) -> f64| {
            let v: Vec<String> = m.rounds.iter().map(|s| format!("{:.0}", f(s))).collect();
            v.join(", ")
        };
        let _ = writeln!(
            md,
            "- {label}: {}; {}; {}",
            list(|s| s.req_per_s),
            list(|s| s.p50_us),
            list(|s| s.p99_us)
        );
    }
    for (label, m) in [("through HAProxy", &r.via), ("direct", &r.direct)] {
        if let Some(e) = &m.first_error {
            let _ = writeln!(md, "- first failure {label}: {e}");
        }
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use hoplab_sim::bench::l7::{Config, Endpoint, Sample};

    use super::*;

    /// Results of three rounds, the proxied requests slower, as a run
    /// would print them.
    fn results() -> Results {
        let sample = |rps: f64| Sample {
            ok: 100,
            failed: 0,
            secs: 100.0 / rps,
            req_per_s: rps,
            p50_us: 1e6 / rps,
            p99_us: 4e6 / rps,
        };
        let measured = |step: &str, to: &str, tls: bool, rps: f64| {
            let rounds = vec![sample(rps), sample(rps * 0.9), sample(rps * 1.1)];
            Measured {
                target: Endpoint {
                    step: step.into(),
                    to: to.parse().unwrap(),
                    tls,
                },
                median: sample(rps),
                rounds,
                first_error: None,
                captured: Some(sample(rps * 0.5)),
            }
        };
        let mode = |mode, via: Measured, direct: Measured| ModeResult { mode, via, direct };
        let mut reenc = measured("reencrypt-via", "10.0.1.1:8443", true, 250.0);
        // One failed request in the last round, and its words.
        reenc.rounds[2].failed = 1;
        reenc.median.failed = 1;
        reenc.first_error = Some("no reply within 5000 ms".into());
        Results {
            config: Config {
                requests: 100,
                rounds: 3,
                capture_requests: 100,
                ..Config::default()
            },
            haproxy: "HAProxy version 2.6.12-1+deb12u4".into(),
            capture: Some(Captured {
                interfaces: 4,
                frames: 123_456,
                bytes: 3 << 20,
            }),
            modes: vec![
                mode(
                    Mode::Http,
                    measured("http-via", "10.0.1.1:80", false, 2000.0),
                    measured("http-direct", "10.0.2.10:8080", false, 4000.0),
                ),
                mode(
                    Mode::TlsEdge,
                    measured("edge-via", "10.0.1.1:443", true, 500.0),
                    measured("edge-direct", "10.0.2.10:8080", false, 4000.0),
                ),
                mode(
                    Mode::TlsReencrypt,
                    reenc,
                    measured("reencrypt-direct", "10.0.2.10:8443", true, 500.0),
                ),
            ],
        }
    }

    fn machine(load: f64) -> Machine {
        Machine {
            cores: 2,
            kernel: "6.1.0".into(),
            load: (load, load),
            total_secs: 12.34,
        }
    }

    #[test]
    fn the_l7_report_fills_every_section() {
        let md = report(&results(), &machine(7.5)).unwrap();
        assert!(!md.contains("{{") && !md.contains("}}"), "{md}");
        for want in [
            "| HTTP | plain HTTP → plain backend: plain `10.0.1.1:80` | plain `10.0.2.10:8080` | **0.50** | **2.00** | **2.00** |",
            "| TLS edge | TLS ends at HAProxy → plain backend: TLS `10.0.1.1:443` | plain `10.0.2.10:8080` | **0.12** | **8.00** | **8.00** |",
            "## TLS re-encrypt: TLS ends at HAProxy → a new TLS session to the backend",
            "| through HAProxy | TLS `10.0.1.1:8443` | 250 | 4000 | 16000 | 100 | 1 |",
            "| direct | TLS `10.0.2.10:8443` | 500 | 2000 | 8000 | 100 | 0 |",
            "| through ÷ direct | | **0.50** | **2.00** | **2.00** | | |",
            "- through HAProxy: 250, 225, 275; 4000, 4444, 3636; 16000, 17778, 14545",
            "- first failure through HAProxy: no reply within 5000 ms",
            "2 cores, kernel 6.1.0; HAProxy version 2.6.12-1+deb12u4. 1-minute load average just before the run: 7.50, just after: 7.50.",
            "a load of 7.5 on 2 cores",
            "the ratios, taken side by side in the same run, are what counts.",
            "(sandbox, lab, processes, 3 rounds of 6 measurements, then the captured round): 12.3 s.",
            "The TLS edge through HAProxy beside the direct requests over TLS (TLS `10.0.2.10:8443` of re-encrypt, the same run): requests/s ÷ **1.00**, p50 ÷ **1.00**, p99 ÷ **1.00**.",
            "for each mode, 100 requests through HAProxy and 100 requests direct",
            "after 30 s or 10 failed requests; each request times out after 5000 ms.",
            "100 requests per target with 4 interfaces captured: 123456 frames, 3.0 MiB.",
            "| TLS edge | through HAProxy: TLS `10.0.1.1:443` | 250 | 0.50 | 4000 | 2.00 | 16000 | 2.00 |",
            "over the six targets, 100 requests each, with every interface",
        ] {
            assert!(md.contains(want), "no {want:?} in:\n{md}");
        }
        assert_eq!(md.matches("\n## ").count(), 7, "{md}");
        let mut r = results();
        r.capture = None;
        let idle = report(&r, &machine(0.2)).unwrap();
        assert!(idle.contains("The machine was otherwise idle."), "{idle}");
        assert!(idle.contains("No captured round was run"), "{idle}");
    }

    #[test]
    fn the_committed_report_has_the_template_s_shape() {
        let md = report(&results(), &machine(7.5)).unwrap();
        let committed = std::fs::read_to_string(root().join("reports/bench-l7.md")).unwrap();
        let (new, old): (Vec<_>, Vec<_>) = (md.lines().collect(), committed.lines().collect());
        // A failure line only where a run had one.
        let lines = |v: &[&str]| -> Vec<String> {
            v.iter()
                .filter(|l| !l.starts_with("- first failure"))
                .map(|l| l.to_string())
                .collect()
        };
        let (new, old) = (lines(&new), lines(&old));
        // The same lines; prose wherever a line has no number.
        assert_eq!(new.len(), old.len(), "{md}");
        for (n, o) in new.iter().zip(&old) {
            if !o.contains(|c: char| c.is_ascii_digit()) {
                assert_eq!(n, o);
            }
        }
    }
}
