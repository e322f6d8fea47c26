//! The HTML pages in a real browser: every reviewed snapshot rendered as a
//! report, an index over all of them and a review page of a modified
//! snapshot, the largest few loaded in headless Chromium (Debian's
//! `chromium`), which must show them with no console message and no
//! resource load. A negative control proves the checker can fail.
//!
//! Set `HOPLAB_HTML_SHOTS=DIR` to keep the screenshots of
//! ext-to-svc-gateway-cluster and svc-two-nodes in `DIR`.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hoplab_sim::report::html::{self, IndexEntry, IndexStatus};
use hoplab_sim::snapshot;
use hoplab_sim::trace::{Port, Trace};

/// Where Chromium is looked for, unless `HOPLAB_CHROMIUM` names it:
/// Debian's package, then the binaries other systems ship (GitHub's Ubuntu
/// runners have Google Chrome).
const CHROMIUMS: [&str; 3] = [
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
];
/// A Chromium run that takes longer is killed (with its process group).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Pages looked at by eye: their screenshots are kept on request.
const SHOWN: [&str; 2] = ["ext-to-svc-gateway-cluster", "svc-two-nodes"];
/// How many of the largest reports are loaded in Chromium (besides
/// `SHOWN`, the index and the review page).
const LARGEST: usize = 3;

fn tmp(sub: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("report-html")
        .join(sub);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("HOPLAB_CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "HOPLAB_CHROMIUM={} does not exist", p.display());
        return p;
    }
    CHROMIUMS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "no Chromium at {CHROMIUMS:?}: install Debian's chromium (apt-get install chromium), or set HOPLAB_CHROMIUM"
            )
        })
}

/// The `file://` URL of an absolute path, as Chromium writes it.
fn file_url(p: &Path) -> String {
    let mut u = String::from("file://");
    for b in p.to_str().expect("a UTF-8 path").bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            u.push(char::from(b));
        } else {
            u.push_str(&format!("%{b:02X}"));
        }
    }
    u
}

/// Every reviewed snapshot, by scenario name, sorted.
fn snapshots() -> Vec<(String, String, Trace)> {
    let dir = common::root().join("tests/snapshots");
    let mut v = Vec::new();
    for e in fs::read_dir(&dir).unwrap().flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        let Some(name) = f
            .strip_prefix("scenarios__")
            .and_then(|s| s.strip_suffix(".snap"))
        else {
            continue;
        };
        let text = fs::read_to_string(e.path()).unwrap();
        let body = snapshot::read_body(&text).to_string();
        let trace = Trace::from_yaml(&body).unwrap_or_else(|e| panic!("{f}: {e}"));
        v.push((name.to_string(), body, trace));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(v.len() >= 2, "no reviewed snapshots in {}", dir.display());
    v
}

/// What a page must never contain: it would fetch something or run code.
fn static_problems(page: &str) -> Vec<String> {
    [
        "http://", "https://", "src=\"//", "<script", "@import", "url(",
    ]
    .iter()
    .filter(|bad| page.contains(*bad))
    .map(|bad| format!("the page contains {bad:?}"))
    .collect()
}

/// A page loaded in Chromium.
struct Loaded {
    problems: Vec<String>,
    png: PathBuf,
}

/// Load `page` (an absolute path) in headless Chromium, take a 1400×1800
/// screenshot, and say what went wrong:
///
/// - Chromium failed or ran over [`TIMEOUT`];
/// - no PNG, or not a 1400 px wide PNG of some size;
/// - a console message: `--enable-logging=stderr --v=0` prints every one
///   as `[pid:tid:time:INFO:CONSOLE:LINE] "TEXT", source: URL (LINE)`
///   (`INFO:CONSOLE(LINE)` before Chromium 1xx), uncaught exceptions as
///   `"Uncaught Error: ..."`. Our pages have no script, so any message is
///   an error; `--virtual-time-budget` lets timers run before the shot;
///   Chromium logs every console message at INFO, whatever its level;
/// - a resource load: a failed one is no console message on stderr (only
///   DevTools sees "Failed to load resource"), so
///   `--vmodule=file_url_loader_factory=1` makes Chromium log
///   `FileURLLoader::Start: URL` for every file it reads; any URL but the
///   page's own is an error (a self-contained page reads nothing else), a
///   missing file a failed load. The page's own line must be there, or
///   the checker would be blind.
fn load(page: &Path, tag: &str) -> Loaded {
    let dir = tmp(&format!("chromium/{tag}"));
    let png = dir.join("shot.png");
    let log = dir.join("stderr.log");
    let url = file_url(page);
    let started = Instant::now();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1800",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--enable-logging=stderr",
            "--v=0",
            "--vmodule=file_url_loader_factory=1",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .process_group(0)
        .spawn()
        .expect("chromium starts");
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut problems = Vec::new();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Whatever it left behind in its process group goes too.
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    match status {
        None => {
            let _ = child.wait();
            problems.push(format!("chromium ran over {TIMEOUT:?} and was killed"));
        }
        Some(s) if !s.success() => problems.push(format!("chromium failed: {s}")),
        Some(_) => {}
    }
    let stderr = fs::read_to_string(&log).unwrap_or_default();
    let mut saw_page = false;
    for l in stderr.lines() {
        if l.contains(":CONSOLE:") || l.contains(":CONSOLE(") {
            let msg = l.split_once("] ").map_or(l, |(_, m)| m);
            problems.push(format!("console: {msg}"));
        } else if l.contains(":FATAL:") {
            problems.push(format!("chromium: {l}"));
        } else if let Some((_, u)) = l.split_once("FileURLLoader::Start: ") {
            let u = u.trim();
            if u == url {
                saw_page = true;
                continue;
            }
            let missing = u
                .strip_prefix("file://")
                .is_some_and(|p| !Path::new(p).exists());
            problems.push(if missing {
                format!("failed resource load: {u} (no such file)")
            } else {
                format!("resource load: {u} (the page is not self-contained)")
            });
        }
    }
    if !saw_page {
        problems.push(format!(
            "no `FileURLLoader::Start: {url}` on stderr: the checker cannot see resource loads"
        ));
    }
    match fs::read(&png) {
        Err(e) => problems.push(format!("no screenshot {}: {e}", png.display())),
        Ok(b) => {
            if !b.starts_with(b"\x89PNG\r\n\x1a\n") || b.len() < 24 || &b[12..16] != b"IHDR" {
                problems.push("the screenshot is not a PNG".into());
            } else {
                let w = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
                let h = u32::from_be_bytes([b[20], b[21], b[22], b[23]]);
                if (w, h) != (1400, 1800) {
                    problems.push(format!("the screenshot is {w}x{h}, not 1400x1800"));
                }
            }
            if b.len() < 8 * 1024 {
                problems.push(format!("the screenshot has only {} bytes", b.len()));
            }
        }
    }
    if !problems.is_empty() {
        problems.push(format!(
            "(page {}, stderr {}, {:.1} s)",
            page.display(),
            log.display(),
            started.elapsed().as_secs_f64()
        ));
    }
    Loaded { problems, png }
}

/// Load `pages` in Chromium, two at a time (one per core of a CI runner).
fn load_all(pages: &[(String, PathBuf)]) -> Vec<(String, Loaded)> {
    let mut out = Vec::new();
    for pair in pages.chunks(2) {
        std::thread::scope(|s| {
            let hs: Vec<_> = pair
                .iter()
                .map(|(tag, p)| s.spawn(move || (tag.clone(), load(p, tag))))
                .collect();
            for h in hs {
                out.push(h.join().unwrap());
            }
        });
    }
    out
}

/// A review page, written to `dir/NAME/diff.html`: the first shown
/// scenario with a rewritten destination, a lost packet and a new control
/// plane answer. Returns the scenario's name, the number of difference
/// lines and the page's path.
fn review_page(
    snaps: &[(String, String, Trace)],
    dir: &std::path::Path,
    problems: &mut Vec<String>,
) -> (String, usize, PathBuf) {
    let (name, old_yaml, old) = snaps
        .iter()
        .find(|s| s.0 == SHOWN[0])
        .expect("the shown scenario has a snapshot");
    let mut new = old.clone();
    let f = &mut new.flows[0];
    let hop = &mut f.packets[0].hops[4];
    let (src, dst) = (&mut hop.hdr.src, &mut hop.hdr.dst);
    let ep = if src.port == Some(Port::Num(8080)) {
        src
    } else {
        dst
    };
    ep.port = Some(Port::Num(8081));
    f.packets.pop();
    new.control_plane
        .push("c1: 10.30.30.30 -> 10.18.0.2 on 10.10.0.2".into());
    let lines = hoplab_sim::trace::diff(old_yaml, &new.to_yaml());
    assert!(lines.len() >= 3, "{lines:?}");
    let diff = html::diff_page(name, old, &new, &lines);
    assert!(diff.contains("<mark>"), "the review page marks nothing");
    problems.extend(
        static_problems(&diff)
            .into_iter()
            .map(|p| format!("diff: {p}")),
    );
    let diff_path = dir.join(name).join("diff.html");
    fs::write(&diff_path, &diff).unwrap();
    (name.clone(), lines.len(), diff_path)
}

#[test]
fn every_reviewed_snapshot_renders_and_chromium_shows_the_pages_without_errors() {
    chromium();
    let dir = tmp("pages");
    let snaps = snapshots();
    let mut problems = Vec::new();
    let mut sizes = Vec::new();
    for (name, _, trace) in &snaps {
        let page = html::report(trace, "capture.pcapng");
        assert_eq!(
            page,
            html::report(trace, "capture.pcapng"),
            "{name}: not deterministic"
        );
        for p in static_problems(&page) {
            problems.push(format!("{name}: {p}"));
        }
        // Every packet that died is marked where it died (packets of one
        // path with the same end share a ladder, and so a mark); every
        // flow with packets has one ladder, the legs of a request a proxy
        // re-opened drawn in it.
        let legs = || (trace.flows.iter()).flat_map(|f| &f.legs);
        let all = (trace.flows.iter())
            .flat_map(|f| &f.packets)
            .chain(legs().flat_map(|l| &l.packets))
            .chain(&trace.other);
        let dropped: usize = (trace.flows.iter().map(|f| &f.packets[..]))
            .chain(legs().map(|l| &l.packets[..]))
            .chain([&trace.other[..]])
            .map(|ps| {
                (hoplab_sim::report::glance::folds(ps).iter())
                    .filter(|g| ps[g[0]].end.is_lost())
                    .count()
            })
            .sum();
        assert_eq!(
            page.matches("<circle class=\"xc\"").count(),
            dropped,
            "{name}: drop markers"
        );
        let ladders = (trace.flows.iter())
            .filter(|f| !f.packets.is_empty() || f.legs.iter().any(|l| !l.packets.is_empty()))
            .count()
            + usize::from(!trace.other.is_empty());
        assert_eq!(page.matches("<svg ").count(), ladders, "{name}: ladders");
        assert_eq!(
            page.matches("<table class=\"hops\">").count(),
            all.count(),
            "{name}: hop tables"
        );
        let d = dir.join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("report.html"), &page).unwrap();
        sizes.push((page.len(), name.clone()));
    }

    let (name, n_lines, diff_path) = review_page(&snaps, &dir, &mut problems);
    let name = &name;

    let entries: Vec<IndexEntry> = snaps
        .iter()
        .map(|(n, _, _)| IndexEntry {
            name: n.clone(),
            status: if n == name {
                IndexStatus::Diff
            } else {
                IndexStatus::Ok
            },
            detail: if n == name {
                format!("{n_lines} differences from the reviewed snapshot")
            } else {
                "ok".into()
            },
            has_diff: n == name,
        })
        .collect();
    let index = html::index("hoplab scenarios", &entries);
    problems.extend(
        static_problems(&index)
            .into_iter()
            .map(|p| format!("index: {p}")),
    );
    let index_path = dir.join("index.html");
    fs::write(&index_path, &index).unwrap();
    for (n, _, _) in &snaps {
        assert!(index.contains(&format!("href=\"{n}/report.html\"")), "{n}");
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // In the browser: the shown pages, the largest reports, index, review.
    sizes.sort_by(|a, b| b.cmp(a));
    let mut pick: Vec<String> = SHOWN.iter().map(|s| s.to_string()).collect();
    for (_, n) in sizes {
        if pick.len() >= SHOWN.len() + LARGEST {
            break;
        }
        if !pick.contains(&n) {
            pick.push(n);
        }
    }
    let mut pages: Vec<(String, PathBuf)> = pick
        .iter()
        .map(|n| (n.clone(), dir.join(n).join("report.html")))
        .collect();
    pages.push(("index".into(), index_path));
    pages.push(("diff".into(), diff_path));
    let started = Instant::now();
    let loaded = load_all(&pages);
    for (tag, l) in &loaded {
        for p in &l.problems {
            problems.push(format!("{tag}: {p}"));
        }
    }
    if let Some(keep) = std::env::var_os("HOPLAB_HTML_SHOTS") {
        let keep = PathBuf::from(keep);
        fs::create_dir_all(&keep).unwrap();
        for (tag, l) in loaded.iter().filter(|(t, _)| SHOWN.contains(&t.as_str())) {
            fs::copy(&l.png, keep.join(format!("{tag}.png"))).unwrap();
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    eprintln!(
        "{} pages in chromium in {:.1} s",
        pages.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The checker must be able to fail: an uncaught exception and a missing
/// image are errors to the very same function.
#[test]
fn the_chromium_checker_sees_a_script_error_and_a_missing_image() {
    chromium();
    let dir = tmp("negative");
    let boom = dir.join("boom.html");
    fs::write(
        &boom,
        "<!DOCTYPE html><html><body><p>boom</p>\
         <script>throw new Error(\"boom\")</script></body></html>",
    )
    .unwrap();
    let img = dir.join("img.html");
    fs::write(
        &img,
        "<!DOCTYPE html><html><body><p>missing image</p>\
         <img src=\"missing.png\" alt=\"\"></body></html>",
    )
    .unwrap();
    let loaded = load_all(&[("boom".into(), boom), ("img".into(), img)]);
    let (_, b) = &loaded[0];
    assert!(
        b.problems
            .iter()
            .any(|p| p.starts_with("console: ") && p.contains("Uncaught Error: boom")),
        "the script error went unseen: {:#?}",
        b.problems
    );
    let (_, i) = &loaded[1];
    assert!(
        i.problems
            .iter()
            .any(|p| p.starts_with("failed resource load: ") && p.contains("missing.png")),
        "the missing image went unseen: {:#?}",
        i.problems
    );
    // Nothing else is wrong with them: the screenshots were taken.
    for (tag, l) in &loaded {
        assert!(
            l.problems.len() == 2,
            "{tag}: one error (and the summary line) expected: {:#?}",
            l.problems
        );
    }
}

/// What Chromium lays out for `page` (HTML text), read by a probe script
/// appended to a test copy of the page (the page itself has none): the
/// document's height in CSS px and the text of every rewrite line of the
/// ladders (`text.rw`) with its rendered width.
fn layout_of(page: &str, tag: &str) -> (u64, Vec<(String, f64)>) {
    let dir = tmp(&format!("layout/{tag}"));
    let probe = "<script>document.title = JSON.stringify({h: \
        document.documentElement.scrollHeight, rw: [...document.querySelectorAll('text.rw')]\
        .map(t => [t.textContent, t.getBBox().width])});</script></body>";
    let file = dir.join("page.html");
    fs::write(&file, page.replacen("</body>", probe, 1)).unwrap();
    let o = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,900",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(file_url(&file))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("chromium starts");
    assert!(o.status.success(), "chromium failed: {}", o.status);
    let dom = String::from_utf8_lossy(&o.stdout);
    let title = dom
        .split_once("<title>")
        .and_then(|(_, t)| t.split_once("</title>"))
        .map(|(t, _)| t.replace("&quot;", "\"").replace("&amp;", "&"))
        .unwrap_or_else(|| panic!("no title in the DOM: {dom:.400}"));
    let v: serde_json::Value =
        serde_json::from_str(&title).unwrap_or_else(|e| panic!("{e}: {title}"));
    let rw = v["rw"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_f64().unwrap()))
        .collect();
    (v["h"].as_u64().unwrap(), rw)
}

/// The four-request round-robin report fits in a few screens (its
/// packets folded by path, the hop tables a click away), opens with who
/// answered each request, and its DNAT step shows the rewritten
/// destination's old and new value on the ladder, rendered.
#[test]
fn the_round_robin_report_is_short_and_its_dnat_shows_its_values() {
    /// Five screens of 900 px at 1400 px wide (it is about 4,200 px); the
    /// page before packets were folded was about 30,800 px.
    const BUDGET_PX: u64 = 4500;
    let (_, _, trace) = snapshots()
        .into_iter()
        .find(|(n, _, _)| n == "svc-round-robin")
        .expect("the svc-round-robin snapshot");
    let page = html::report(&trace, "capture.pcapng");
    let summary = &page[..page.find("</header>").unwrap()];
    for who in ["api-0", "api-1", "api-2"] {
        assert!(
            summary.contains(&format!("<td class=\"who\">{who}</td>")),
            "{who} named in the summary"
        );
    }
    let (height, rw) = layout_of(&page, "round-robin");
    assert!(
        height <= BUDGET_PX,
        "the page is {height} px high, over {BUDGET_PX}"
    );
    let dnat = "dst 10.30.1.1:80 → 10.18.0.1:80";
    let shown = rw.iter().find(|(t, _)| t == dnat);
    assert!(
        shown.is_some_and(|(_, w)| *w > 100.0),
        "the DNAT step's values {dnat:?} on the ladder: {rw:?}"
    );
    assert!(
        rw.iter()
            .any(|(t, _)| t == "src 10.18.0.1:80 → 10.30.1.1:80"),
        "the reply's un-DNAT values: {rw:?}"
    );
}

/// A stitched flow is one ladder: haproxy-http's flows cross two
/// connections, client to lb and lb to server1, and each is drawn as one
/// `<svg>` whose columns are client, lb, server1 in path order, the proxy
/// `lb` one column that both legs' arrows meet at, each leg under its
/// heading; its packets' hop tables are still linked from it.
#[test]
fn a_stitched_flow_is_one_ladder_with_the_proxy_a_shared_column() {
    let (_, _, trace) = snapshots()
        .into_iter()
        .find(|(n, _, _)| n == "haproxy-http")
        .expect("the haproxy-http snapshot");
    assert!(trace.flows.iter().all(|f| f.legs.len() == 1));
    let page = html::report(&trace, "capture.pcapng");
    for i in 1..=trace.flows.len() {
        let start = page
            .find(&format!("id=\"f{i}\">"))
            .unwrap_or_else(|| panic!("flow {i}"));
        let section = &page[start..];
        let section = &section[..section.find("</section>").unwrap()];
        assert_eq!(section.matches("<svg ").count(), 1, "flow {i}: one ladder");
        let svg = &section[section.find("<svg ").unwrap()..section.find("</svg>").unwrap()];
        // The host names over the columns, with their x, in every header row.
        let mut heads: Vec<(String, String)> = Vec::new();
        for part in svg.split("<text class=\"ht\" x=\"").skip(1) {
            let x = part[..part.find('"').unwrap()].to_string();
            let name = &part[part.find('>').unwrap() + 1..part.find("</text>").unwrap()];
            heads.push((name.to_string(), x));
        }
        let rows = heads.iter().filter(|(n, _)| n == "client").count();
        assert!(rows >= 1, "flow {i}: {heads:?}");
        assert_eq!(
            heads.iter().filter(|(n, _)| n == "lb").count(),
            rows,
            "flow {i}: the header `lb` once per header row: {heads:?}"
        );
        let mut row: Vec<(String, String)> = heads[..heads.len() / rows].to_vec();
        assert_eq!(
            row.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["client", "lb", "server1"],
            "flow {i}: the columns in path order"
        );
        row.sort_by(|a, b| a.1.cmp(&b.1));
        row.dedup_by(|a, b| a.1 == b.1);
        assert_eq!(row.len(), 3, "flow {i}: three columns: {heads:?}");
        assert_eq!(
            svg.matches("<line class=\"ll\"").count(),
            3,
            "flow {i}: three lifelines"
        );
        // Each leg under its heading, naming what joined it and what the
        // proxy changed.
        let leg = &trace.flows[i - 1].legs[0];
        assert!(svg.contains("Leg 1: the step"), "flow {i}");
        for text in [
            format!("Leg 2: {}", leg.via),
            format!("joined by {}", leg.joined_by),
        ]
        .into_iter()
        .chain(leg.changed.iter().map(|c| format!("changed: {c}")))
        {
            let text = text
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            assert!(svg.contains(&text), "flow {i}: {text:?} in the ladder");
        }
        // Leg 1's packets and leg 2's are linked to their hop tables.
        assert!(
            svg.contains(&format!("href=\"#f{i}p1\"")),
            "flow {i}: leg 1"
        );
        assert!(
            svg.contains(&format!("href=\"#f{i}l2p1\"")),
            "flow {i}: leg 2"
        );
        assert!(
            section.contains(&format!("id=\"f{i}l2p1\"")),
            "flow {i}: leg 2's table"
        );
    }
}
