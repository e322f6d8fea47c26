//! JUnit XML for `cargo xtask scenario --junit FILE`, without dependencies.
//!
//! The format is the conventional one (Ant/Surefire, as read by the Jenkins
//! JUnit plugin, GitLab and the GitHub test-report actions):
//!
//! ```xml
//! <?xml version="1.0" encoding="UTF-8"?>
//! <testsuites name="hoplab" tests="3" failures="1" errors="0" time="1.234">
//!   <testsuite name="scenario.NAME" tests="3" failures="1" errors="0" skipped="0" time="1.234">
//!     <testcase classname="scenario.NAME" name="snapshot" time="1.234" file="...">
//!       <failure message="first diff line">every diff line</failure>
//!     </testcase>
//!     <testcase classname="scenario.NAME" name="STEP" time="0.000" file="...">
//!       <system-out>sent: ...</system-out>
//!     </testcase>
//!     <system-err>the run's stderr tail, when it failed</system-err>
//!   </testsuite>
//! </testsuites>
//! ```
//!
//! `<testsuites>` carries no `skipped` attribute: Jenkins' schema
//! (junit-10.xsd) does not have one there; each `<testsuite>` does.
//! Text is escaped for XML 1.0: markup characters become entities, the
//! control characters XML 1.0 forbids become U+FFFD, and ANSI colour
//! sequences (`ESC [ ... m`) in captured stderr are dropped.

use std::fmt::Write as _;

use hoplab_sim::trace::Trace;

/// One `<testcase>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// `scenario.NAME` for hoplab's cases.
    pub classname: String,
    pub name: String,
    pub seconds: f64,
    pub outcome: Outcome,
    /// The file the case is about, relative to the workspace root (the
    /// `file` attribute: GitHub reporters annotate it).
    pub file: Option<String>,
    /// `<system-out>` of the case.
    pub output: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    /// The check ran and did not hold (`<failure>`).
    Failed {
        message: String,
        details: String,
    },
    /// The check could not be made (`<error>`).
    Error {
        message: String,
        details: String,
    },
    Skipped {
        message: String,
    },
}

/// One `<testsuite>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    pub name: String,
    pub cases: Vec<Case>,
    /// `<system-err>` of the suite.
    pub errors_text: Option<String>,
}

/// What a suite (or all of them) adds up to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub tests: usize,
    pub failures: usize,
    pub errors: usize,
    pub skipped: usize,
    pub seconds: f64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.tests += o.tests;
        self.failures += o.failures;
        self.errors += o.errors;
        self.skipped += o.skipped;
        self.seconds += o.seconds;
    }
}

impl Suite {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for case in &self.cases {
            c.tests += 1;
            c.seconds += seconds(case.seconds);
            match case.outcome {
                Outcome::Passed => {}
                Outcome::Failed { .. } => c.failures += 1,
                Outcome::Error { .. } => c.errors += 1,
                Outcome::Skipped { .. } => c.skipped += 1,
            }
        }
        c
    }
}

/// Totals over all suites.
pub fn totals(suites: &[Suite]) -> Counts {
    let mut c = Counts::default();
    for s in suites {
        c.add(s.counts());
    }
    c
}

/// Negative, NaN and infinite durations are written as 0.
fn seconds(s: f64) -> f64 {
    if s.is_finite() && s > 0.0 {
        s
    } else {
        0.0
    }
}

/// The JUnit XML document for `suites`.
pub fn render(suites: &[Suite]) -> String {
    let t = totals(suites);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"hoplab\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3}\">",
        t.tests, t.failures, t.errors, t.seconds
    );
    for s in suites {
        let c = s.counts();
        x.push_str("  <testsuite name=\"");
        attr(&mut x, &s.name);
        let _ = writeln!(
            x,
            "\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            c.tests, c.failures, c.errors, c.skipped, c.seconds
        );
        for case in &s.cases {
            render_case(&mut x, case);
        }
        if let Some(e) = &s.errors_text {
            x.push_str("    <system-err>");
            text(&mut x, e);
            x.push_str("</system-err>\n");
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

fn render_case(x: &mut String, case: &Case) {
    x.push_str("    <testcase classname=\"");
    attr(x, &case.classname);
    x.push_str("\" name=\"");
    attr(x, &case.name);
    let _ = write!(x, "\" time=\"{:.3}\"", seconds(case.seconds));
    if let Some(f) = &case.file {
        x.push_str(" file=\"");
        attr(x, f);
        x.push('"');
    }
    if case.outcome == Outcome::Passed && case.output.is_none() {
        x.push_str("/>\n");
        return;
    }
    x.push_str(">\n");
    match &case.outcome {
        Outcome::Passed => {}
        Outcome::Failed { message, details } => element(x, "failure", message, details),
        Outcome::Error { message, details } => element(x, "error", message, details),
        Outcome::Skipped { message } => element(x, "skipped", message, ""),
    }
    if let Some(o) = &case.output {
        x.push_str("      <system-out>");
        text(x, o);
        x.push_str("</system-out>\n");
    }
    x.push_str("    </testcase>\n");
}

fn element(x: &mut String, tag: &str, message: &str, details: &str) {
    let _ = write!(x, "      <{tag} message=\"");
    attr(x, message);
    if details.is_empty() {
        x.push_str("\"/>\n");
    } else {
        x.push_str("\">");
        text(x, details);
        let _ = writeln!(x, "</{tag}>");
    }
}

/// Characters XML 1.0 allows (surrogates cannot occur in a `str`).
fn allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `s` without ANSI CSI sequences (`ESC [ params final`) and with every
/// character XML 1.0 forbids replaced by U+FFFD.
fn sanitize(s: &str) -> impl Iterator<Item = char> + '_ {
    let mut it = s.chars().peekable();
    std::iter::from_fn(move || loop {
        let c = it.next()?;
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            it.next();
            // Parameter and intermediate bytes, then one final byte (@..~);
            // a malformed sequence ends at the first other character.
            while it.next_if(|f| ('\u{20}'..='\u{3f}').contains(f)).is_some() {}
            it.next_if(|f| ('\u{40}'..='\u{7e}').contains(f));
            continue;
        }
        return Some(if allowed(c) { c } else { '\u{FFFD}' });
    })
}

/// Escaped character data. `\r` is written as a reference so that parsers
/// keep it (they turn a literal CR LF into LF).
fn text(x: &mut String, s: &str) {
    for c in sanitize(s) {
        match c {
            '&' => x.push_str("&amp;"),
            '<' => x.push_str("&lt;"),
            '>' => x.push_str("&gt;"),
            '\r' => x.push_str("&#13;"),
            c => x.push(c),
        }
    }
}

/// Escaped attribute value (in double quotes). Tabs and line breaks are
/// written as references: attribute value normalisation would turn literal
/// ones into spaces.
fn attr(x: &mut String, s: &str) {
    for c in sanitize(s) {
        match c {
            '&' => x.push_str("&amp;"),
            '<' => x.push_str("&lt;"),
            '>' => x.push_str("&gt;"),
            '"' => x.push_str("&quot;"),
            '\'' => x.push_str("&apos;"),
            '\t' => x.push_str("&#9;"),
            '\n' => x.push_str("&#10;"),
            '\r' => x.push_str("&#13;"),
            c => x.push(c),
        }
    }
}

/// The JUnit suite of one scenario, from what `cargo xtask scenario` knows:
///
/// * `trace`: the run's trace, `None` when the run wrote none;
/// * `diff`: the per-hop differences from the reviewed snapshot (empty: the
///   same, or accepted), `None` when the trace was not compared;
/// * `run_failed`: the last lines of the run's stderr when `hoplab run`
///   exited unsuccessfully, `None` when it succeeded.
///
/// Cases, all with classname `scenario.NAME`:
///
/// * `snapshot`: the trace equals the reviewed snapshot. Failure message:
///   the first diff line; details: all of them. An error (with the stderr
///   tail) when the run wrote no trace; skipped when there is a trace that
///   was not compared. It carries the run's whole time.
/// * one per traffic step (the step's name): the expectation held; a
///   failure when the step's result starts with `FAILED`.
/// * `run`: only when the run failed with a trace and no step explains it
///   (an error, with the stderr tail).
///
/// When the run failed, its stderr tail is the suite's `<system-err>`.
pub fn scenario_suite(
    name: &str,
    seconds: f64,
    trace: Option<&Trace>,
    diff: Option<&[String]>,
    run_failed: Option<&[String]>,
) -> Suite {
    let classname = format!("scenario.{name}");
    let snap_file = format!("tests/snapshots/scenarios__{name}.snap");
    let scenario_file = format!("scenarios/{name}.yaml");
    let tail = run_failed.map(|t| t.join("\n"));
    let case =
        |name: &str, seconds: f64, file: &str, outcome: Outcome, output: Option<String>| Case {
            classname: classname.clone(),
            name: name.to_string(),
            seconds,
            outcome,
            file: Some(file.to_string()),
            output,
        };
    let mut cases = Vec::new();
    let Some(trace) = trace else {
        let message = match run_failed.and_then(|t| t.last()) {
            Some(last) => format!("the run wrote no trace ({last})"),
            None => "the run wrote no trace".to_string(),
        };
        cases.push(case(
            "snapshot",
            seconds,
            &snap_file,
            Outcome::Error {
                message,
                details: tail.clone().unwrap_or_default(),
            },
            None,
        ));
        return Suite {
            name: classname.clone(),
            cases,
            errors_text: tail,
        };
    };
    let snapshot = match diff {
        None => Outcome::Skipped {
            message: "not compared with the reviewed snapshot".into(),
        },
        Some([]) => Outcome::Passed,
        Some(d) => Outcome::Failed {
            message: d[0].clone(),
            details: format!(
                "{}\naccept with: cargo xtask scenario {name} --accept, or cargo insta review",
                d.join("\n")
            ),
        },
    };
    cases.push(case("snapshot", seconds, &snap_file, snapshot, None));
    let mut step_failed = false;
    for f in &trace.flows {
        let mut out = format!("sent: {}\nresult: {}\n", f.sent, f.result);
        for (i, p) in f.packets.iter().enumerate() {
            let _ = writeln!(
                out,
                "packet {}: {} ({} hops) -> {}",
                i + 1,
                p.packet,
                p.hops.len(),
                p.end
            );
        }
        let outcome = if f.result.is_failed() {
            step_failed = true;
            Outcome::Failed {
                message: f
                    .result
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                details: std::mem::take(&mut out),
            }
        } else {
            Outcome::Passed
        };
        let output = (!out.is_empty()).then_some(out);
        cases.push(case(&f.step, 0.0, &scenario_file, outcome, output));
    }
    if let (Some(t), false) = (&tail, step_failed) {
        cases.push(case(
            "run",
            0.0,
            &scenario_file,
            Outcome::Error {
                message: run_failed
                    .and_then(|t| t.last())
                    .cloned()
                    .unwrap_or_else(|| "hoplab run failed".into()),
                details: t.clone(),
            },
            None,
        ));
    }
    Suite {
        name: classname,
        cases,
        errors_text: tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small well-formedness checker for what `render` writes: one
    /// root element, balanced tags, quoted attributes without duplicates,
    /// known entities only, no raw markup characters or forbidden
    /// characters in text. Returns the element names in document order.
    fn well_formed(doc: &str) -> Result<Vec<String>, String> {
        fn name_ok(n: &str) -> bool {
            let mut cs = n.chars();
            matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && cs.all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
        }
        fn chars_ok(s: &str, what: &str) -> Result<(), String> {
            if let Some(c) = s.chars().find(|&c| !allowed(c)) {
                return Err(format!("{what}: forbidden character {c:?}"));
            }
            let mut rest = s;
            while let Some(i) = rest.find('&') {
                let after = &rest[i + 1..];
                let end = after.find(';').ok_or(format!("{what}: bare &"))?;
                let ent = &after[..end];
                let ok = matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos")
                    || ent
                        .strip_prefix('#')
                        .and_then(|n| n.parse::<u32>().ok())
                        .and_then(char::from_u32)
                        .is_some_and(allowed);
                if !ok {
                    return Err(format!("{what}: bad entity &{ent};"));
                }
                rest = &after[end + 1..];
            }
            Ok(())
        }
        let body = doc
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
            .ok_or("no XML declaration")?;
        let mut stack: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut roots = 0;
        let mut rest = body;
        while !rest.is_empty() {
            let lt = rest.find('<').unwrap_or(rest.len());
            let txt = &rest[..lt];
            if txt.contains('>') {
                return Err(format!("raw > in text {txt:?}"));
            }
            chars_ok(txt, "text")?;
            if stack.is_empty() && !txt.trim().is_empty() {
                return Err(format!("text outside the root: {txt:?}"));
            }
            rest = &rest[lt..];
            if rest.is_empty() {
                break;
            }
            let gt = rest.find('>').ok_or("unclosed tag")?;
            let tag = &rest[1..gt];
            rest = &rest[gt + 1..];
            if let Some(n) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open) if open == n => continue,
                    other => return Err(format!("</{n}> closes {other:?}")),
                }
            }
            let (tag, empty) = match tag.strip_suffix('/') {
                Some(t) => (t, true),
                None => (tag, false),
            };
            let (name, mut attrs) = tag.split_once(' ').unwrap_or((tag, ""));
            if !name_ok(name) {
                return Err(format!("bad element name {name:?}"));
            }
            if stack.is_empty() {
                roots += 1;
            }
            let mut names = Vec::new();
            loop {
                attrs = attrs.trim_start_matches(' ');
                if attrs.is_empty() {
                    break;
                }
                let (an, after) = attrs.split_once("=\"").ok_or("attribute without =\"")?;
                if !name_ok(an) || names.contains(&an) {
                    return Err(format!("bad or repeated attribute {an:?}"));
                }
                names.push(an);
                let (value, after) = after.split_once('"').ok_or("unterminated attribute")?;
                if value.contains('<') {
                    return Err(format!("< in attribute {an}"));
                }
                chars_ok(value, an)?;
                attrs = after;
                if !(attrs.is_empty() || attrs.starts_with(' ')) {
                    return Err(format!("no space after attribute {an}"));
                }
            }
            seen.push(name.to_string());
            if !empty {
                stack.push(name.to_string());
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed: {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(seen)
    }

    fn case(name: &str, outcome: Outcome) -> Case {
        Case {
            classname: "scenario.s".into(),
            name: name.into(),
            seconds: 0.25,
            outcome,
            file: None,
            output: None,
        }
    }

    fn attr_of(doc: &str, element: &str, a: &str) -> String {
        let i = doc.find(&format!("<{element} ")).expect("element");
        let key = format!(" {a}=\"");
        let j = i + doc[i..].find(&key).expect("attribute") + key.len();
        doc[j..j + doc[j..].find('"').unwrap()].to_string()
    }

    const TRACE: &str = "scenario: s\nflows:\n- step: tcp-echo\n  sent: tcp from c\n  result: 'ok: reply'\n  packets:\n  - packet: tcp S 1.1.1.1:1 > 2.2.2.2:2\n    hops:\n    - at: c/eth0 out\n      hdr: 1.1.1.1:1 > 2.2.2.2:2 tcp S seq=0 len=60 ttl=64\n    end: delivered to s\n- step: blocked\n  sent: udp from c\n  result: 'FAILED: expected no reply, got reply <x> & \"y\"'\n  packets: []\n";

    fn trace() -> Trace {
        Trace::from_yaml(TRACE).unwrap()
    }

    #[test]
    fn text_and_attributes_are_escaped() {
        let mut t = String::new();
        text(&mut t, "a<b>&c \"q\" 'p'\r\n\tz");
        assert_eq!(t, "a&lt;b&gt;&amp;c \"q\" 'p'&#13;\n\tz");
        let mut a = String::new();
        attr(&mut a, "a<b>&c \"q\" 'p'\r\n\tz");
        assert_eq!(
            a,
            "a&lt;b&gt;&amp;c &quot;q&quot; &apos;p&apos;&#13;&#10;&#9;z"
        );
    }

    #[test]
    fn forbidden_characters_are_replaced_and_colours_dropped() {
        let mut t = String::new();
        text(
            &mut t,
            "\u{1b}[1;31merror\u{1b}[0m: nul\u{0} bell\u{7} \u{FFFE}\u{FFFF} ok é 🦀",
        );
        assert_eq!(
            t,
            "error: nul\u{FFFD} bell\u{FFFD} \u{FFFD}\u{FFFD} ok é 🦀"
        );
        let mut a = String::new();
        attr(&mut a, "x\u{1b}y\u{8}");
        assert_eq!(a, "x\u{FFFD}y\u{FFFD}");
        // A lone ESC at the end, and an unterminated sequence.
        let mut t = String::new();
        text(&mut t, "a\u{1b}");
        text(&mut t, "b\u{1b}[12");
        text(&mut t, " c\u{1b}[1\nd");
        assert_eq!(t, "a\u{FFFD}b c\nd");
    }

    #[test]
    fn counts_add_up_per_suite_and_overall() {
        let s1 = Suite {
            name: "one".into(),
            cases: vec![
                case("a", Outcome::Passed),
                case(
                    "b",
                    Outcome::Failed {
                        message: "m".into(),
                        details: "d".into(),
                    },
                ),
                case(
                    "c",
                    Outcome::Error {
                        message: "m".into(),
                        details: String::new(),
                    },
                ),
                case(
                    "d",
                    Outcome::Skipped {
                        message: "why".into(),
                    },
                ),
            ],
            errors_text: None,
        };
        let mut s2 = s1.clone();
        s2.name = "two".into();
        s2.cases.truncate(2);
        s2.cases[0].seconds = f64::NAN;
        s2.cases[1].seconds = -1.0;
        let doc = render(&[s1, s2]);
        well_formed(&doc).unwrap();
        assert!(doc.contains("<testsuites name=\"hoplab\" tests=\"6\" failures=\"2\" errors=\"1\" time=\"1.000\">"), "{doc}");
        assert!(doc.contains("<testsuite name=\"one\" tests=\"4\" failures=\"1\" errors=\"1\" skipped=\"1\" time=\"1.000\">"), "{doc}");
        assert!(doc.contains("<testsuite name=\"two\" tests=\"2\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"0.000\">"), "{doc}");
        assert!(doc.contains("<testcase classname=\"scenario.s\" name=\"a\" time=\"0.250\"/>"));
        assert!(doc.contains("<skipped message=\"why\"/>"));
        assert!(doc.contains("<error message=\"m\"/>"));
        assert!(doc.contains("name=\"a\" time=\"0.000\"/>"), "NaN is 0");
    }

    #[test]
    fn times_have_three_decimals() {
        let mut c = case("a", Outcome::Passed);
        c.seconds = 1.23456;
        let doc = render(&[Suite {
            name: "s".into(),
            cases: vec![c],
            errors_text: None,
        }]);
        assert_eq!(attr_of(&doc, "testcase", "time"), "1.235");
        assert_eq!(attr_of(&doc, "testsuite", "time"), "1.235");
        assert_eq!(attr_of(&doc, "testsuites", "time"), "1.235");
    }

    #[test]
    fn an_empty_report_is_well_formed() {
        let doc = render(&[]);
        assert_eq!(well_formed(&doc).unwrap(), ["testsuites"]);
        assert_eq!(attr_of(&doc, "testsuites", "tests"), "0");
    }

    #[test]
    fn a_snapshot_difference_is_a_failure_with_every_diff_line() {
        let d = vec![
            "flow tcp-echo, packet 1 (tcp S 1.1.1.1:1 > 2.2.2.2:2), hop 1 (c/eth0 out): ttl: 64 -> 63"
                .to_string(),
            "counter gw/gateway drops: 0 -> 1".to_string(),
        ];
        let s = scenario_suite("routed-pair", 2.5, Some(&trace()), Some(&d), None);
        assert_eq!(s.name, "scenario.routed-pair");
        let snap = &s.cases[0];
        assert_eq!(
            (snap.classname.as_str(), snap.name.as_str(), snap.seconds),
            ("scenario.routed-pair", "snapshot", 2.5)
        );
        assert_eq!(
            snap.file.as_deref(),
            Some("tests/snapshots/scenarios__routed-pair.snap")
        );
        let Outcome::Failed { message, details } = &snap.outcome else {
            panic!("{:?}", snap.outcome)
        };
        assert_eq!(message, &d[0]);
        assert!(
            details.starts_with(&format!("{}\n{}\n", d[0], d[1])),
            "{details}"
        );
        let doc = render(&[s]);
        let names = well_formed(&doc).unwrap();
        assert_eq!(
            names,
            [
                "testsuites",
                "testsuite",
                "testcase",
                "failure",
                "testcase",
                "system-out",
                "testcase",
                "failure",
            ]
        );
        assert!(doc.contains(
            "<failure message=\"flow tcp-echo, packet 1 (tcp S 1.1.1.1:1 &gt; 2.2.2.2:2), hop 1 (c/eth0 out): ttl: 64 -&gt; 63\">flow tcp-echo"
        ), "{doc}");
        assert!(doc.contains("counter gw/gateway drops: 0 -&gt; 1\naccept with: cargo xtask scenario routed-pair --accept, or cargo insta review</failure>"), "{doc}");
        assert_eq!(attr_of(&doc, "testsuite", "failures"), "2");
    }

    #[test]
    fn each_step_is_a_case_failing_when_its_result_is_failed() {
        let tail = vec![
            "step blocked: FAILED".to_string(),
            "hoplab run exited with exit status: 1".to_string(),
        ];
        let s = scenario_suite("s", 1.0, Some(&trace()), Some(&[]), Some(&tail));
        let names: Vec<&str> = s.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["snapshot", "tcp-echo", "blocked"], "no `run` case");
        assert_eq!(s.cases[0].outcome, Outcome::Passed);
        assert_eq!(s.cases[1].outcome, Outcome::Passed);
        assert!(s.cases[1]
            .output
            .as_deref()
            .unwrap()
            .contains("packet 1: tcp S 1.1.1.1:1 > 2.2.2.2:2 (1 hops) -> delivered to s"));
        assert_eq!(s.cases[2].classname, "scenario.s");
        assert_eq!(s.cases[2].file.as_deref(), Some("scenarios/s.yaml"));
        let Outcome::Failed { message, details } = &s.cases[2].outcome else {
            panic!("{:?}", s.cases[2].outcome)
        };
        assert_eq!(message, "FAILED: expected no reply, got reply <x> & \"y\"");
        assert!(details.contains("sent: udp from c\n"), "{details}");
        assert_eq!(s.errors_text.as_deref(), Some(tail.join("\n").as_str()));
        let doc = render(&[s]);
        well_formed(&doc).unwrap();
        assert!(doc.contains(
            "<failure message=\"FAILED: expected no reply, got reply &lt;x&gt; &amp; &quot;y&quot;\">sent: udp from c\nresult: FAILED: expected no reply, got reply &lt;x&gt; &amp; \"y\"\n</failure>"
        ), "{doc}");
        assert!(doc.contains(
            "<system-err>step blocked: FAILED\nhoplab run exited with exit status: 1</system-err>"
        ));
        assert_eq!(attr_of(&doc, "testsuite", "tests"), "3");
        assert_eq!(attr_of(&doc, "testsuite", "failures"), "1");
        assert_eq!(attr_of(&doc, "testsuite", "errors"), "0");
    }

    #[test]
    fn a_run_without_a_trace_is_an_error_with_the_stderr_tail() {
        let tail = vec![
            "\u{1b}[31merror\u{1b}[0m: topology: RTNETLINK answers: Operation not permitted"
                .to_string(),
            "hoplab run exited with exit status: 1".to_string(),
        ];
        let s = scenario_suite("s", 0.5, None, None, Some(&tail));
        assert_eq!(s.cases.len(), 1);
        let Outcome::Error { message, details } = &s.cases[0].outcome else {
            panic!("{:?}", s.cases[0].outcome)
        };
        assert_eq!(
            message,
            "the run wrote no trace (hoplab run exited with exit status: 1)"
        );
        assert_eq!(details, &tail.join("\n"));
        let doc = render(&[s]);
        well_formed(&doc).unwrap();
        assert!(doc.contains("<error message=\"the run wrote no trace (hoplab run exited with exit status: 1)\">error: topology: RTNETLINK"), "{doc}");
        assert_eq!(attr_of(&doc, "testsuites", "errors"), "1");
        assert_eq!(attr_of(&doc, "testsuites", "failures"), "0");
    }

    #[test]
    fn a_failed_run_that_no_step_explains_gets_a_run_case() {
        let mut t = trace();
        t.flows.pop();
        let tail = vec!["hoplab run exited with signal: 9 (SIGKILL)".to_string()];
        let s = scenario_suite("s", 1.0, Some(&t), Some(&[]), Some(&tail));
        let last = s.cases.last().unwrap();
        assert_eq!(last.name, "run");
        assert!(matches!(&last.outcome, Outcome::Error { message, .. } if message == &tail[0]));
        // Compared nothing: the snapshot case is skipped.
        let s = scenario_suite("s", 1.0, Some(&t), None, None);
        assert!(matches!(s.cases[0].outcome, Outcome::Skipped { .. }));
        assert_eq!(s.cases.len(), 2);
        well_formed(&render(&[s])).unwrap();
    }

    #[test]
    fn the_checker_rejects_what_is_not_well_formed() {
        for bad in [
            "<a/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a><b></a></b>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a x=\"1\" x=\"2\"/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>&nbsp;</a>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>&#0;</a>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>\u{1}</a>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a/><b/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a x=\"<\"/>",
        ] {
            assert!(well_formed(bad).is_err(), "{bad}");
        }
    }

    /// For a check by hand with a real XML parser:
    /// `HOPLAB_JUNIT_SAMPLE=/tmp/j.xml cargo test -p xtask junit` writes a
    /// sample with every outcome and awkward text.
    #[test]
    fn sample_for_external_checks() {
        let d =
            vec!["flow a: result: ok -> FAILED: <\u{1b}[1mgone\u{1b}[0m> & \u{0}'\"".to_string()];
        let tail = vec!["\u{7}bell\r\nline\ttab ]]> --".to_string()];
        let suites = [
            scenario_suite("one", 1.5, Some(&trace()), Some(&d), Some(&tail)),
            scenario_suite("two", 0.25, None, None, Some(&tail)),
            scenario_suite("three", 0.125, Some(&trace()), None, None),
        ];
        let doc = render(&suites);
        well_formed(&doc).unwrap();
        if let Some(p) = std::env::var_os("HOPLAB_JUNIT_SAMPLE") {
            std::fs::write(p, &doc).unwrap();
        }
    }
}
