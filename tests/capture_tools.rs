//! The pcapng a run writes is read by the real tools, with the right
//! interfaces, directions and timestamps.

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn tool(name: &str, args: &[&str]) -> String {
    let o = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name} is needed for this test (apt-get install tshark tcpdump): {e}")
    });
    assert!(
        o.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn tshark_and_tcpdump_read_the_capture_with_correct_timestamps() {
    let out = out_dir("tools");
    let t0 = now_s();
    let o = run(&scenario_path("routed-pair"), &out);
    let t1 = now_s();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pcap = out.join("capture.pcapng");
    let p = pcap.to_str().unwrap();
    let ours = hoplab_sim::trace::read_pcapng(&pcap).unwrap();

    // tshark: every frame, its interface name, its direction, its time.
    let text = tool(
        "tshark",
        &[
            "-r",
            p,
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.packet_flags_direction",
        ],
    );
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(
        rows.len(),
        ours.len(),
        "tshark and hoplab count different frames"
    );
    let mut ifaces: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    ifaces.sort();
    ifaces.dedup();
    assert_eq!(
        ifaces,
        ["client/eth0", "router/eth0", "router/eth1", "server/eth0"]
    );
    for (r, f) in rows.iter().zip(&ours) {
        let ts: f64 = r[1].parse().unwrap();
        assert!(
            ts >= t0 - 0.001 && ts <= t1 + 0.001,
            "timestamp {ts} outside the run [{t0}, {t1}]"
        );
        // Nanosecond resolution: the same instant as hoplab read it.
        let ns = (r[1].split('.').nth(1).unwrap_or("")).len();
        assert_eq!(
            ns, 9,
            "tshark shows {ns} fractional digits, not nanoseconds"
        );
        assert!((ts - f.ts_ns as f64 / 1e9).abs() < 1e-6);
        let dir = if f.outgoing { "2" } else { "1" };
        assert!(
            r[2] == dir || r[2] == format!("0x{dir}") || r[2].ends_with(dir),
            "direction {} for {}",
            r[2],
            r[0]
        );
    }

    // tcpdump: same frames, nanosecond timestamps of the same second.
    let td = tool(
        "tcpdump",
        &["-r", p, "-nn", "--time-stamp-precision=nano", "-tt"],
    );
    let lines: Vec<&str> = td.lines().collect();
    assert_eq!(lines.len(), ours.len());
    let first: f64 = lines[0].split_whitespace().next().unwrap().parse().unwrap();
    assert!((first - ours[0].ts_ns as f64 / 1e9).abs() < 1e-6);
    assert!(
        td.contains("10.0.1.2.40000 > 10.0.2.2.7: Flags [S]"),
        "{td}"
    );
}
