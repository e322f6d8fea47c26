//! The pages rendered from small traces.

use super::*;
use crate::trace::Trace;

const T: &str = "scenario: s
flows:
- step: get
  sent: tcp from client port 40000 to 24.0.5.8:8080
  result: 'ok: reply'
  packets:
  - packet: tcp S 93.6.1.78:40000 > 24.0.5.8:8080
    hops:
    - at: client/eth0 out
      hdr: 93.6.1.78:40000 > 24.0.5.8:8080 tcp S seq=0 len=60 ttl=64
    - at: gw/pub in
      hdr: 93.6.1.78:40000 > 24.0.5.8:8080 tcp S seq=0 len=60 ttl=64
    - at: gw/gw0 out
      hdr: 93.6.1.78:40000 > 10.30.255.253:8080 tcp S seq=0 len=60 ttl=63
      changed: dst 24.0.5.8:8080 -> 10.30.255.253:8080, ttl 64 -> 63
    - at: gw/eth0 out
      hdr: 93.6.1.78:40000 > 10.18.0.1:80 tcp S seq=0 len=60 ttl=63 | outer=udp outer.src=10.10.0.2:50103 outer.dst=10.10.0.1:50103 outer.len=88 outer.ttl=64
      changed: encapsulated in udp 10.10.0.2:50103 > 10.10.0.1:50103, dst 10.30.255.253:8080 -> 10.18.0.1:80
    - at: n1/eth0 in
      hdr: 93.6.1.78:40000 > 10.18.0.1:80 tcp S seq=0 len=60 ttl=63 | outer=udp outer.src=10.10.0.2:50103 outer.dst=10.10.0.1:50103 outer.len=88 outer.ttl=64
    end: last seen at n1/eth0 in
- step: fails
  sent: udp
  result: 'FAILED: expected a reply, got none'
  packets: []
";

fn trace() -> Trace {
    Trace::from_yaml(T).unwrap()
}

/// The step name of changes written as in a trace.
fn name(changed: &str) -> Option<String> {
    step_name(Some(&changed.parse().unwrap()), false)
}

/// The step name of changes on a reply.
fn reply_name(changed: &str) -> Option<String> {
    step_name(Some(&changed.parse().unwrap()), true)
}

#[test]
fn step_names() {
    assert_eq!(step_name(None, false), None);
    assert_eq!(name(""), None);
    assert_eq!(name("ttl 64 -> 63"), Some("routed".into()));
    assert_eq!(
        name("dst 10.96.0.1:80 -> 10.1.0.10:3000, ttl 64 -> 63"),
        Some("DNAT".into())
    );
    assert_eq!(name("src 1.1.1.1:1 -> 2.2.2.2:1"), Some("SNAT".into()));
    assert_eq!(
        name("src 1.1.1.1:1 -> 2.2.2.2:1, dst 3.3.3.3:3 -> 4.4.4.4:4"),
        Some("DNAT + SNAT".into())
    );
    assert_eq!(
        name("encapsulated in udp 10.10.1.1:50103 > 10.10.1.2:50103"),
        Some("tunnel: encapsulate".into())
    );
    assert_eq!(
            name("encapsulated in udp 10.10.1.1:50103 > 10.10.1.2:50103, src [fd18::2]:1 -> [fdff::1]:1, dst [fdff::2]:80 -> [fd18::1]:80"),
            Some("tunnel: encapsulate + DNAT + SNAT".into())
        );
    assert_eq!(
        name("decapsulated from udp 10.10.1.1:50103 > 10.10.1.2:50103"),
        Some("tunnel: decapsulate".into())
    );
    assert_eq!(
        name("decapsulated from udp 10.10.1.1:50103 > 10.10.1.2:50103, src 10.18.0.1:80 -> 10.30.30.30:80"),
        Some("tunnel: decapsulate + SNAT".into())
    );
    assert_eq!(name("outer ttl 64 -> 63"), Some("routed".into()));
    assert_eq!(
        name("outer src 10.0.0.1:50103 -> 10.0.0.9:50103"),
        Some("tunnel: outer rewritten".into())
    );
    assert_eq!(name("icmp id Some(1) -> Some(7)"), Some("NAT".into()));
    assert_eq!(
        name("src 1.1.1.1 -> 2.2.2.2, icmp id Some(1) -> Some(7)"),
        Some("SNAT".into())
    );
    assert_eq!(name("len 60 -> 88"), Some("resized".into()));
    // On a reply, rewrites are the request's translations reversed.
    assert_eq!(
        reply_name("src 10.18.0.1:80 -> 10.30.1.1:80, dst 10.30.2.11:40000 -> 10.18.0.2:40000"),
        Some("un-DNAT + un-SNAT".into())
    );
    assert_eq!(
        reply_name("dst 93.6.1.78:40000 -> 10.0.1.2:40000, ttl 64 -> 63"),
        Some("un-SNAT".into())
    );
    assert_eq!(
        reply_name("decapsulated from udp 10.10.1.1:50103 > 10.10.1.2:50103, src 10.18.0.1:80 -> 10.30.30.30:80"),
        Some("tunnel: decapsulate + un-DNAT".into())
    );
    assert_eq!(
        reply_name("icmp id Some(7) -> Some(1)"),
        Some("un-NAT".into())
    );
    assert_eq!(reply_name("ttl 64 -> 63"), Some("routed".into()));
}

#[test]
fn the_rewritten_fields_are_marked() {
    let t = trace();
    let hops = &t.flows[0].packets[0].hops;
    let dnat = hdr_marked(&hops[2]);
    assert!(
        dnat.contains("&gt; <mark>10.30.255.253:8080</mark> tcp"),
        "{dnat}"
    );
    assert!(dnat.contains("<mark>ttl=63</mark>"), "{dnat}");
    assert!(!dnat.contains("<mark>93.6.1.78:40000</mark>"), "{dnat}");
    assert!(!dnat.contains("<mark>len=60</mark>"), "{dnat}");
    let encap = hdr_marked(&hops[3]);
    assert!(encap.contains("<mark>10.18.0.1:80</mark>"), "{encap}");
    assert!(
        encap.contains("<mark>outer.src=10.10.0.2:50103</mark>"),
        "{encap}"
    );
    assert!(encap.contains("<mark>outer=udp</mark>"), "{encap}");
    assert!(!encap.contains("<mark>ttl=63</mark>"), "{encap}");
    // Nothing marked where nothing changed.
    assert!(!hdr_marked(&hops[4]).contains("<mark>"));
    // In the page: the DNAT hop's destination is marked.
    let html = report(&t, "capture.pcapng");
    assert!(
        html.contains("&gt; <mark>10.30.255.253:8080</mark>"),
        "{html}"
    );
    assert!(html.contains("<span class=\"step s-dnat\">DNAT</span>"));
}

#[test]
fn outer_changes_mark_outer_fields() {
    let h = Hop {
            at: "sw/pb out".parse().unwrap(),
            hdr: "1.1.1.1:1 > 2.2.2.2:2 udp len=30 ttl=63 | outer=udp outer.src=9.9.9.9:50103 outer.dst=8.8.8.8:50103 outer.len=58 outer.ttl=63".parse().unwrap(),
            changed: Some("outer ttl 64 -> 63".parse().unwrap()),
        };
    let m = hdr_marked(&h);
    assert!(m.contains("<mark>outer.ttl=63</mark>"), "{m}");
    assert!(!m.contains("<mark>ttl=63</mark>"), "{m}");
}

#[test]
fn a_dropped_packet_gets_the_marker() {
    let html = report(&trace(), "capture.pcapng");
    assert!(
        html.contains("✕ dropped: last seen at n1/eth0 in"),
        "{html}"
    );
    assert!(
        html.contains("<tr class=\"drop\"><td class=\"n\">5</td>"),
        "{html}"
    );
    // The red cross on the ladder, at the last hop.
    assert!(html.contains("<circle class=\"xc\""), "{html}");
    assert!(html.contains("✕ dropped</text>"), "{html}");
    // A delivered packet has none.
    let ok = T.replace("end: last seen at n1/eth0 in", "end: delivered to n1");
    let html = report(&Trace::from_yaml(&ok).unwrap(), "capture.pcapng");
    assert!(!html.contains("<circle class=\"xc\""), "{html}");
    assert!(!html.contains("class=\"drop\""), "{html}");
}

#[test]
fn a_failed_flow_is_shown_failed() {
    let html = report(&trace(), "capture.pcapng");
    assert!(html.contains("<section class=\"card flow failed\" id=\"f2\">"));
    assert!(html.contains("<span class=\"badge b-bad\">FAILED</span>"));
}

#[test]
fn everything_from_the_trace_is_escaped() {
    let evil = "<script>alert(1)</script>";
    let mut t = trace();
    t.scenario = evil.into();
    t.flows[0].step = evil.into();
    t.flows[0].result = crate::trace::StepResult::Failed(Some(evil.into()));
    t.flows[0].packets[0].hops[2].at.ifname = evil.into();
    t.control_plane.push(evil.into());
    t.counters
        .entry(evil.into())
        .or_default()
        .insert(evil.into(), 1);
    let pages = [
        report(&t, "<script>.pcapng"),
        index(
            evil,
            &[IndexEntry {
                name: evil.into(),
                status: IndexStatus::Failed,
                detail: evil.into(),
                has_diff: true,
            }],
        ),
        diff_page(evil, &trace(), &t, &[evil.to_string()]),
    ];
    for p in pages {
        assert!(!p.contains("<script"), "{p}");
        assert!(p.contains("&lt;script&gt;"), "{p}");
    }
    // A step name is derived and changes are typed, never free text; but a
    // place's names are, and show escaped.
    let html = report(&t, "capture.pcapng");
    assert!(html.contains("<td class=\"at\">gw/&lt;script&gt;alert(1)&lt;/script&gt; out</td>"));
    // The step's name, in the table of contents and its heading.
    assert!(
        html.contains("<b>&lt;script&gt;alert(1)&lt;/script&gt;</b>"),
        "{html}"
    );
    assert!(
        html.contains("font-size:16px\">&lt;script&gt;alert(1)&lt;/script&gt;</span>"),
        "{html}"
    );
}

#[test]
fn links_are_relative_and_encoded() {
    assert_eq!(href("a b/report.html"), "a%20b/report.html");
    assert_eq!(href("javascript:x()"), "javascript%3Ax%28%29");
    let html = report(&trace(), "capture.pcapng");
    assert!(html.contains("<a href=\"capture.pcapng\"><code>capture.pcapng</code></a>"));
}

fn all_pages() -> Vec<String> {
    let t = trace();
    let mut n = trace();
    n.flows[0].packets[0].hops[2].hdr = n.flows[0].packets[0].hops[2]
        .hdr
        .to_string()
        .replace("10.30.255.253:8080", "10.30.255.253:8081")
        .parse()
        .unwrap();
    n.control_plane.push("c1: x -> y".into());
    let lines = crate::trace::diff(&t.to_yaml(), &n.to_yaml());
    let entries: Vec<IndexEntry> = [
        IndexStatus::Ok,
        IndexStatus::Diff,
        IndexStatus::Failed,
        IndexStatus::Accepted,
        IndexStatus::NoSnapshot,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, status)| IndexEntry {
        name: format!("scenario-{i}"),
        status,
        detail: "d".into(),
        has_diff: status == IndexStatus::Diff,
    })
    .collect();
    vec![
        report(&t, "capture.pcapng"),
        index("hoplab scenarios", &entries),
        diff_page("s", &t, &n, &lines),
    ]
}

#[test]
fn pages_fetch_nothing() {
    for p in all_pages() {
        for bad in [
            "http://", "https://", "src=\"//", "<script", "url(", "@import",
        ] {
            assert!(!p.contains(bad), "{bad} in {p}");
        }
        assert!(p.starts_with("<!DOCTYPE html>"));
        assert!(p.ends_with("</html>\n"));
    }
}

#[test]
fn pages_are_deterministic() {
    assert_eq!(all_pages(), all_pages());
}

#[test]
fn the_index_links_reports_and_diffs() {
    let p = &all_pages()[1];
    assert!(p.contains("<a href=\"scenario-1/report.html\">"), "{p}");
    assert!(
        p.contains("<a href=\"scenario-1/diff.html\">diff</a>"),
        "{p}"
    );
    assert!(!p.contains("scenario-0/diff.html"), "{p}");
    assert!(
        p.contains("<span class=\"badge b-bad\">FAILED</span>"),
        "{p}"
    );
}

#[test]
fn the_diff_page_marks_the_changed_field() {
    let p = &all_pages()[2];
    assert!(p.contains("<mark>10.30.255.253:8081</mark>"), "{p}");
    assert!(p.contains("<mark>10.30.255.253:8080</mark>"), "{p}");
    assert!(p.contains("cargo xtask scenario s --accept"), "{p}");
    assert!(p.contains("<mark>c1: x -&gt; y</mark>"), "{p}");
    // The unchanged hops are there, not marked.
    assert!(
        p.contains("<tr class=\"same\"><td class=\"n\">1</td>"),
        "{p}"
    );
}
