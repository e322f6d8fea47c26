//! JUnit XML for `cargo xtask scenario --junit FILE`: which test cases a
//! scenario run makes ([`scenario_suite`]: its snapshot, each traffic
//! step, the run itself when nothing else explains its failure), written
//! by quick-junit ([`render`]).
//!
//! The format is the conventional one (Ant/Surefire, as read by the Jenkins
//! JUnit plugin, GitLab and the GitHub test-report actions):
//!
//! ```xml
//! <?xml version="1.0" encoding="UTF-8"?>
//! <testsuites name="hoplab" tests="3" skipped="0" failures="1" errors="0" time="1.234">
//!     <testsuite name="scenario.NAME" tests="3" skipped="0" failures="1" errors="0" time="1.234">
//!         <testcase name="snapshot" classname="scenario.NAME" time="1.234" file="...">
//!             <failure message="first diff line">every diff line</failure>
//!         </testcase>
//!         <testcase name="STEP" classname="scenario.NAME" time="0.000" file="...">
//!             <system-out>sent: ...</system-out>
//!         </testcase>
//!         <system-err>the run's stderr tail, when it failed</system-err>
//!     </testsuite>
//! </testsuites>
//! ```
//!
//! Text is cleaned for XML 1.0 before quick-junit escapes it: ANSI colour
//! sequences (`ESC [ ... m`) in captured stderr are dropped, the control
//! characters XML 1.0 forbids become U+FFFD, tabs spaces and CRs line
//! feeds. It knows nothing of
//! how a scenario runs; only of what the run left (trace, diff, stderr).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use hoplab_sim::trace::Trace;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite, XmlString};

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

/// Negative, NaN and infinite durations are written as 0.
fn seconds(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s)
    } else {
        Duration::ZERO
    }
}

/// The JUnit XML document for `suites`; quick-junit counts the cases.
pub fn render(suites: &[Suite]) -> Result<String> {
    let mut report = Report::new("hoplab");
    let mut total = Duration::ZERO;
    for s in suites {
        let mut suite = TestSuite::new(xml(&s.name));
        let time: Duration = s.cases.iter().map(|c| seconds(c.seconds)).sum();
        suite.set_time(time);
        suite.add_test_cases(s.cases.iter().map(test_case));
        if let Some(e) = &s.errors_text {
            suite.set_system_err(xml(e));
        }
        total += time;
        report.add_test_suite(suite);
    }
    report.set_time(total);
    report.to_string().context("writing the JUnit XML")
}

fn test_case(c: &Case) -> TestCase {
    let non_success = |kind, message: &str, details: &str| {
        let mut s = TestCaseStatus::non_success(kind);
        s.set_message(xml(message));
        if !details.is_empty() {
            s.set_description(xml(details));
        }
        s
    };
    let status = match &c.outcome {
        Outcome::Passed => TestCaseStatus::success(),
        Outcome::Failed { message, details } => {
            non_success(NonSuccessKind::Failure, message, details)
        }
        Outcome::Error { message, details } => non_success(NonSuccessKind::Error, message, details),
        Outcome::Skipped { message } => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(xml(message));
            s
        }
    };
    let mut t = TestCase::new(xml(&c.name), status);
    t.set_classname(xml(&c.classname));
    t.set_time(seconds(c.seconds));
    if let Some(f) = &c.file {
        t.extra.insert("file".into(), xml(f));
    }
    if let Some(o) = &c.output {
        t.set_system_out(xml(o));
    }
    t
}

/// Characters XML 1.0 allows (surrogates cannot occur in a `str`).
fn allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `s` as quick-junit writes it unchanged: without ANSI CSI sequences
/// (`ESC [ params final`), every character XML 1.0 forbids replaced by
/// U+FFFD, a tab as a space and a CR (alone or before LF) as one LF
/// (quick-junit would drop all of these silently, joining words and
/// lines).
fn xml(s: &str) -> XmlString {
    let mut it = s.chars().peekable();
    let clean: String = std::iter::from_fn(move || loop {
        let c = it.next()?;
        match c {
            '\u{1b}' if it.peek() == Some(&'[') => {
                it.next();
                // Parameter and intermediate bytes, then one final byte
                // (@..~); a malformed sequence ends at the first other
                // character.
                while it.next_if(|f| ('\u{20}'..='\u{3f}').contains(f)).is_some() {}
                it.next_if(|f| ('\u{40}'..='\u{7e}').contains(f));
            }
            '\t' => return Some(' '),
            '\r' => {
                it.next_if_eq(&'\n');
                return Some('\n');
            }
            c if allowed(c) => return Some(c),
            _ => return Some('\u{FFFD}'),
        }
    })
    .collect();
    XmlString::new(clean)
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
///   failure when the step failed ([`step_failed`]).
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
    use roxmltree::{Document, Node};

    use super::*;

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

    fn render_ok(suites: &[Suite]) -> String {
        render(suites).unwrap()
    }

    /// The document parsed by a real XML parser (it fails on anything not
    /// well-formed).
    fn parse(doc: &str) -> Document<'_> {
        Document::parse(doc).unwrap_or_else(|e| panic!("{e}:\n{doc}"))
    }

    /// The element names in document order.
    fn names(d: &Document) -> Vec<String> {
        d.descendants()
            .filter(Node::is_element)
            .map(|n| n.tag_name().name().to_string())
            .collect()
    }

    /// Every element named `tag`, in document order.
    fn all<'a, 'i>(d: &'a Document<'i>, tag: &str) -> Vec<Node<'a, 'i>> {
        d.descendants().filter(|n| n.has_tag_name(tag)).collect()
    }

    /// The first element named `tag`.
    fn first<'a, 'i>(d: &'a Document<'i>, tag: &str) -> Node<'a, 'i> {
        all(d, tag)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no <{tag}>"))
    }

    fn attr<'a>(n: Node<'a, '_>, a: &str) -> &'a str {
        n.attribute(a).unwrap_or_else(|| panic!("no {a}= on {n:?}"))
    }

    const TRACE: &str = "scenario: s\nflows:\n- step: tcp-echo\n  sent: tcp from c\n  result: 'ok: reply'\n  packets:\n  - packet: tcp S 1.1.1.1:1 > 2.2.2.2:2\n    hops:\n    - at: c/eth0 out\n      hdr: 1.1.1.1:1 > 2.2.2.2:2 tcp S seq=0 len=60 ttl=64\n    end: delivered to s\n- step: blocked\n  sent: udp from c\n  result: 'FAILED: expected no reply, got reply <x> & \"y\"'\n  packets: []\n";

    fn trace() -> Trace {
        Trace::from_yaml(TRACE).unwrap()
    }

    #[test]
    fn markup_in_names_messages_and_text_survives_a_parser() {
        let awkward = "a<b>&c \"q\" 'p' ]]> --";
        let mut c = case(
            awkward,
            Outcome::Failed {
                message: awkward.into(),
                details: format!("{awkward}\r\n\tz\rx"),
            },
        );
        c.output = Some(format!("out: {awkward}"));
        c.file = Some("scenarios/a&b.yaml".into());
        let doc = render_ok(&[Suite {
            name: awkward.into(),
            cases: vec![c],
            errors_text: Some(format!("err: {awkward}")),
        }]);
        let d = parse(&doc);
        assert_eq!(attr(first(&d, "testsuite"), "name"), awkward);
        let t = first(&d, "testcase");
        assert_eq!(attr(t, "name"), awkward);
        assert_eq!(attr(t, "file"), "scenarios/a&b.yaml");
        let f = first(&d, "failure");
        assert_eq!(attr(f, "message"), awkward);
        assert_eq!(f.text(), Some(format!("{awkward}\n z\nx").as_str()));
        assert_eq!(
            first(&d, "system-out").text(),
            Some(format!("out: {awkward}").as_str())
        );
        assert_eq!(
            first(&d, "system-err").text(),
            Some(format!("err: {awkward}").as_str())
        );
    }

    #[test]
    fn forbidden_characters_are_replaced_and_colours_dropped() {
        let t = xml("\u{1b}[1;31merror\u{1b}[0m: nul\u{0} bell\u{7} \u{FFFE}\u{FFFF} ok é 🦀");
        assert_eq!(
            t.as_str(),
            "error: nul\u{FFFD} bell\u{FFFD} \u{FFFD}\u{FFFD} ok é 🦀"
        );
        assert_eq!(xml("x\u{1b}y\u{8}").as_str(), "x\u{FFFD}y\u{FFFD}");
        // A lone ESC at the end, and an unterminated sequence.
        let t = [xml("a\u{1b}"), xml("b\u{1b}[12"), xml(" c\u{1b}[1\nd")].concat();
        assert_eq!(t, "a\u{FFFD}b c\nd");
        // And so in the document.
        let mut c = case("a", Outcome::Passed);
        c.output = Some("\u{1b}[1;31mred\u{1b}[0m\u{0}".into());
        let doc = render_ok(&[Suite {
            name: "s".into(),
            cases: vec![c],
            errors_text: None,
        }]);
        assert_eq!(
            first(&parse(&doc), "system-out").text(),
            Some("red\u{FFFD}")
        );
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
        let doc = render_ok(&[s1, s2]);
        let d = parse(&doc);
        let counts = |n: Node| {
            ["name", "tests", "failures", "errors", "skipped", "time"]
                .map(|a| n.attribute(a).unwrap_or_default().to_string())
        };
        assert_eq!(
            counts(d.root_element()),
            ["hoplab", "6", "2", "1", "1", "1.000"]
        );
        let suites = all(&d, "testsuite");
        assert_eq!(counts(suites[0]), ["one", "4", "1", "1", "1", "1.000"]);
        assert_eq!(counts(suites[1]), ["two", "2", "1", "0", "0", "0.000"]);
        let cases = all(&d, "testcase");
        assert_eq!(cases.len(), 6);
        let a = cases[0];
        assert_eq!(
            (attr(a, "classname"), attr(a, "name"), attr(a, "time")),
            ("scenario.s", "a", "0.250")
        );
        assert!(!a.has_children(), "a passed case is empty");
        assert_eq!(attr(first(&d, "skipped"), "message"), "why");
        let e = first(&d, "error");
        assert_eq!((attr(e, "message"), e.has_children()), ("m", false));
        assert_eq!(attr(cases[4], "time"), "0.000", "NaN is 0");
        assert_eq!(attr(cases[5], "time"), "0.000", "negative is 0");
    }

    #[test]
    fn times_have_three_decimals() {
        let mut c = case("a", Outcome::Passed);
        c.seconds = 1.23456;
        let doc = render_ok(&[Suite {
            name: "s".into(),
            cases: vec![c],
            errors_text: None,
        }]);
        let d = parse(&doc);
        for tag in ["testcase", "testsuite", "testsuites"] {
            assert_eq!(attr(first(&d, tag), "time"), "1.235", "{tag}");
        }
    }

    #[test]
    fn an_empty_report_is_well_formed() {
        let doc = render_ok(&[]);
        let d = parse(&doc);
        assert_eq!(names(&d), ["testsuites"]);
        assert_eq!(attr(d.root_element(), "tests"), "0");
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
        let doc = render_ok(&[s]);
        let x = parse(&doc);
        assert_eq!(
            names(&x),
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
        let t = first(&x, "testcase");
        assert_eq!(
            (attr(t, "name"), attr(t, "classname"), attr(t, "file")),
            (
                "snapshot",
                "scenario.routed-pair",
                "tests/snapshots/scenarios__routed-pair.snap"
            )
        );
        let f = first(&x, "failure");
        assert_eq!(attr(f, "message"), d[0]);
        assert_eq!(
            f.text(),
            Some(
                format!(
                    "{}\n{}\naccept with: cargo xtask scenario routed-pair --accept, or cargo insta review",
                    d[0], d[1]
                )
                .as_str()
            )
        );
        assert_eq!(attr(first(&x, "testsuite"), "failures"), "2");
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
        let doc = render_ok(&[s]);
        let d = parse(&doc);
        let cases = all(&d, "testcase");
        let blocked = cases[2];
        assert_eq!(
            (attr(blocked, "name"), attr(blocked, "file")),
            ("blocked", "scenarios/s.yaml")
        );
        let f = first(&d, "failure");
        assert_eq!(f.parent(), Some(blocked));
        assert_eq!(
            attr(f, "message"),
            "FAILED: expected no reply, got reply <x> & \"y\""
        );
        assert_eq!(
            f.text(),
            Some("sent: udp from c\nresult: FAILED: expected no reply, got reply <x> & \"y\"\n")
        );
        assert_eq!(
            first(&d, "system-out").text(),
            Some("sent: tcp from c\nresult: ok: reply\npacket 1: tcp S 1.1.1.1:1 > 2.2.2.2:2 (1 hops) -> delivered to s\n")
        );
        assert_eq!(
            first(&d, "system-err").text(),
            Some("step blocked: FAILED\nhoplab run exited with exit status: 1")
        );
        let suite = first(&d, "testsuite");
        assert_eq!(
            ["tests", "failures", "errors"].map(|a| attr(suite, a)),
            ["3", "1", "0"]
        );
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
        let doc = render_ok(&[s]);
        let d = parse(&doc);
        let e = first(&d, "error");
        assert_eq!(
            attr(e, "message"),
            "the run wrote no trace (hoplab run exited with exit status: 1)"
        );
        assert_eq!(
            e.text(),
            Some("error: topology: RTNETLINK answers: Operation not permitted\nhoplab run exited with exit status: 1")
        );
        let root = d.root_element();
        assert_eq!((attr(root, "errors"), attr(root, "failures")), ("1", "0"));
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
        let doc = render_ok(&[s]);
        let d = parse(&doc);
        let run = *all(&d, "testcase").last().unwrap();
        assert_eq!(attr(run, "name"), "run");
        assert_eq!(
            attr(first(&d, "error"), "message"),
            "hoplab run exited with signal: 9 (SIGKILL)"
        );
        // Compared nothing: the snapshot case is skipped.
        let s = scenario_suite("s", 1.0, Some(&t), None, None);
        assert!(matches!(s.cases[0].outcome, Outcome::Skipped { .. }));
        assert_eq!(s.cases.len(), 2);
        let doc = render_ok(&[s]);
        assert_eq!(
            attr(first(&parse(&doc), "skipped"), "message"),
            "not compared with the reviewed snapshot"
        );
    }

    /// A sample with every outcome and awkward text, parsed here;
    /// `HOPLAB_JUNIT_SAMPLE=/tmp/j.xml cargo test -p xtask junit` writes it
    /// for a check with other tools.
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
        let doc = render_ok(&suites);
        let x = parse(&doc);
        assert_eq!(
            attr(first(&x, "failure"), "message"),
            "flow a: result: ok -> FAILED: <gone> & \u{FFFD}'\""
        );
        assert_eq!(
            first(&x, "system-err").text(),
            Some("\u{FFFD}bell\nline tab ]]> --")
        );
        if let Some(p) = std::env::var_os("HOPLAB_JUNIT_SAMPLE") {
            std::fs::write(p, &doc).unwrap();
        }
    }
}
