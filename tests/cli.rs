//! The `hoplab` command line: progress lines and their switches, `report`,
//! shell completions.

mod common;

use common::*;

const PHASES: [&str; 5] = ["build", "start", "traffic", "capture", "trace"];

/// Without `--quiet`, a run prints one line per phase with its time;
/// `--quiet` prints nothing at all on success; `-v` adds the steps'
/// outcomes; RUST_LOG chooses the log level when set.
#[test]
fn a_run_prints_one_progress_line_per_phase_unless_quiet() {
    let sc = scenario_path("routed-pair");
    let out = out_dir("progress");
    let o = hoplab()
        .arg("run")
        .arg(&sc)
        .arg("--out")
        .arg(&out)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), PHASES.len(), "{err}");
    for (l, phase) in lines.iter().zip(PHASES) {
        let w: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(w[0], "routed-pair", "{l}");
        assert_eq!(w[1], phase, "{l}");
        assert!(w[2].parse::<f64>().is_ok() && w[3] == "ms", "{l}");
    }

    let o = run(&sc, &out_dir("progress-quiet"));
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "",
        "--quiet prints nothing"
    );

    let o = hoplab()
        .args(["-v", "run"])
        .arg(&sc)
        .arg("--out")
        .arg(out_dir("progress-v"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("traffic[0] tcp-echo") && err.contains("as expected"),
        "-v shows each step's outcome:\n{err}"
    );
    assert!(!err.contains("DEBUG"), "{err}");

    let o = hoplab()
        .args(["run"])
        .arg(&sc)
        .arg("--out")
        .arg(out_dir("progress-rustlog"))
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("DEBUG") && err.contains("topology built"),
        "{err}"
    );
}

/// `hoplab report` rebuilds a run's reports from its directory: the same
/// bytes as the run wrote; and reports a capture directly.
#[test]
fn report_rebuilds_a_runs_reports_and_reports_a_capture() {
    let out = out_dir("report");
    let o = run(&scenario_path("routed-pair"), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again = out_dir("report-again");
    let o = hoplab()
        .args(["--quiet", "report"])
        .arg(&out)
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["report.md", "report.html"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f}"
        );
    }
    let o = hoplab()
        .args(["--quiet", "report"])
        .arg(out.join("capture.pcapng"))
        .arg("--scenario")
        .arg(scenario_path("routed-pair"))
        .arg("--out")
        .arg(out_dir("report-capture"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = hoplab()
        .arg("report")
        .arg(out.join("nothing-here.yaml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing-here.yaml"),
        "the error names the file"
    );
}

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = hoplab().args(["completions", shell]).output().unwrap();
        assert!(o.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&o.stdout);
        for sub in [
            "run",
            "validate",
            "trace",
            "report",
            "gateway",
            "completions",
        ] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let o = hoplab().args(["completions", "tcsh"]).output().unwrap();
    assert!(!o.status.success(), "an unknown shell is refused");
}

/// One way to name a scenario: `run` and `validate` take a name (looked
/// up in scenarios/ below the current directory) or a path; `validate`
/// alone checks every scenario; a name that is not there is one clear
/// line, the cause not repeated.
#[test]
fn a_scenario_is_named_by_name_or_path_everywhere() {
    let out = out_dir("by-name");
    let o = hoplab()
        .current_dir(root())
        .args(["-q", "run", "routed-pair", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("report.html").exists());

    let o = hoplab()
        .current_dir(root())
        .arg("validate")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().count(), scenario_names().len(), "{stdout}");
    assert!(
        stdout.contains("scenarios/routed-pair.yaml: ok"),
        "{stdout}"
    );

    let o = hoplab()
        .current_dir(root())
        .args(["validate", "routed-pair"])
        .arg(scenario_path("svc-closest"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = hoplab()
        .current_dir(root())
        .args(["run", "routed-pairs"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "error: no scenario named `routed-pairs`: scenarios/routed-pairs.yaml does not exist"
        ),
        "{err}"
    );

    let missing = out_dir("by-name-missing").join("gone.yaml");
    let o = hoplab().arg("validate").arg(&missing).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("No such file").count(), 1, "said once: {err}");
    assert!(err.contains("gone.yaml: cannot read scenario"), "{err}");
}

/// Every argument and option of every subcommand has a help text.
#[test]
fn every_argument_has_help() {
    for sub in [
        vec!["run"],
        vec!["validate"],
        vec!["trace"],
        vec!["report"],
        vec!["completions"],
        vec!["gateway"],
        vec!["gateway", "expose"],
        vec!["gateway", "unexpose"],
    ] {
        let o = hoplab().args(&sub).arg("-h").output().unwrap();
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{sub:?}: {help}");
        let mut section = false;
        for l in help.lines() {
            if l == "Arguments:" || l == "Options:" {
                section = true;
                continue;
            }
            if l.is_empty() {
                section = false;
            }
            if section && l.starts_with("  ") && !l.starts_with("   ") {
                let words: Vec<&str> = l.split("  ").filter(|w| !w.trim().is_empty()).collect();
                assert!(words.len() >= 2, "{sub:?}: no help for `{}`", l.trim());
            }
        }
        assert!(
            !help.contains("(default:"),
            "{sub:?}: defaults are written [default: ...]"
        );
    }
}

/// The capture reads right in Wireshark the documented way: in the
/// per-interface captures beside the merged one, tshark's expert info
/// finds no retransmission and no duplicate ACK (the merged file has
/// them: every copy of a packet on the next interface); with the shipped
/// profile, the tunnel's datagrams decode as the packets they carry.
#[test]
fn the_capture_reads_right_in_wireshark() {
    let out = out_dir("wireshark");
    let o = run(&scenario_path("ext-to-svc-gateway-cluster"), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expert = |f: &std::path::Path| {
        let o = std::process::Command::new("tshark")
            .args(["-q", "-z", "expert", "-r"])
            .arg(f)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let false_alarms = |text: &str| {
        text.lines()
            .filter(|l| l.contains("retransmission") || l.contains("Duplicate ACK"))
            .count()
    };
    assert!(false_alarms(&expert(&out.join("capture.pcapng"))) > 0);
    let mut files = 0;
    for e in std::fs::read_dir(out.join("interfaces")).unwrap() {
        let p = e.unwrap().path();
        let text = expert(&p);
        assert_eq!(false_alarms(&text), 0, "{}:\n{text}", p.display());
        files += 1;
    }
    assert!(files >= 10, "{files} per-interface captures");

    // The profile as `cargo xtask wireshark-profile` installs it (a copy
    // of wireshark/profile/; xtask's own test covers the copy), read by
    // tshark from a config directory of this test's own.
    let config = out_dir("wireshark-config");
    let profile = config.join("profiles/hoplab");
    std::fs::create_dir_all(&profile).unwrap();
    for e in std::fs::read_dir(root().join("wireshark/profile")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, profile.join(p.file_name().unwrap())).unwrap();
    }
    let count = |filter: &str| {
        let o = std::process::Command::new("tshark")
            .env("WIRESHARK_CONFIG_DIR", &config)
            .args(["-C", "hoplab", "-Y", filter, "-r"])
            .arg(out.join("capture.pcapng"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    assert_eq!(count("udp.port == 50103 && data"), 0);
    assert!(count("udp.port == 50103 && tcp") > 0);
}

/// The counters of a scenario's own nftables rules (a rule with a
/// `counter`) are in the trace's counters, as `HOST/nftables`.
#[test]
fn a_scenarios_own_nftables_counters_are_in_the_trace() {
    let text = std::fs::read_to_string(scenario_path("kube-proxy-dnat"))
        .unwrap()
        .replace(
            "ip daddr 10.96.0.100 tcp dport 80 dnat",
            "ip daddr 10.96.0.100 tcp dport 80 counter dnat",
        );
    assert!(text.contains("counter dnat"), "the rule to count is there");
    let sc = write_scenario("nft-counters", &text);
    let out = out_dir("nft-counters");
    let o = run(&sc, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = hoplab_sim::trace::Trace::from_yaml(
        &std::fs::read_to_string(out.join("trace.yaml")).unwrap(),
    )
    .unwrap();
    // Connections to the service address, a load step's each (the other
    // steps go to another service and a pod's own address, past the rule).
    let to_service: u64 = t
        .flows
        .iter()
        .filter(|f| f.sent.contains("to 10.96.0.100:80"))
        .map(|f| f.load.as_ref().map_or(1, |l| l.flows))
        .sum();
    assert_eq!(to_service, 40);
    let c = &t.counters["node/nftables"];
    assert_eq!(c.len(), 1, "{c:?}");
    // The nat chain sees the first packet of each connection.
    assert_eq!(c["kube-proxy/prerouting rule 1"], to_service, "{c:?}");
}
