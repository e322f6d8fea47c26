//! The page of a whole run: every scenario with its status and links to
//! its report and diff pages. It knows scenario names and statuses; not
//! traces.

use std::fmt::Write;

use super::{escape, href, page};

/// What became of one scenario in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexStatus {
    /// Same as the reviewed snapshot.
    Ok,
    /// Differs from the reviewed snapshot.
    Diff,
    /// The run failed or an expectation was not met.
    Failed,
    /// The new trace was accepted as the snapshot.
    Accepted,
    /// There is no reviewed snapshot yet.
    NoSnapshot,
    /// Run by `hoplab run`, never compared with a snapshot.
    NotCompared,
}

impl IndexStatus {
    const ALL: [IndexStatus; 6] = [
        IndexStatus::Ok,
        IndexStatus::Diff,
        IndexStatus::Failed,
        IndexStatus::Accepted,
        IndexStatus::NoSnapshot,
        IndexStatus::NotCompared,
    ];

    /// The status as one word, for a file that keeps it (`ok`, `diff`,
    /// `failed`, `accepted`, `no-snapshot`).
    pub fn key(self) -> &'static str {
        match self {
            IndexStatus::Ok => "ok",
            IndexStatus::Diff => "diff",
            IndexStatus::Failed => "failed",
            IndexStatus::Accepted => "accepted",
            IndexStatus::NoSnapshot => "no-snapshot",
            IndexStatus::NotCompared => "not-compared",
        }
    }

    /// The status whose [`IndexStatus::key`] is `key`.
    pub fn from_key(key: &str) -> Option<IndexStatus> {
        Self::ALL.into_iter().find(|s| s.key() == key)
    }

    fn label(self) -> &'static str {
        match self {
            IndexStatus::Ok => "ok",
            IndexStatus::Diff => "differs",
            IndexStatus::Failed => "FAILED",
            IndexStatus::Accepted => "accepted",
            IndexStatus::NoSnapshot => "no snapshot",
            IndexStatus::NotCompared => "not compared",
        }
    }

    fn class(self) -> (&'static str, &'static str) {
        match self {
            IndexStatus::Ok => ("b-ok", "st-ok"),
            IndexStatus::Diff => ("b-warn", "st-diff"),
            IndexStatus::Failed => ("b-bad", "st-failed"),
            IndexStatus::Accepted => ("b-info", "st-accepted"),
            IndexStatus::NoSnapshot | IndexStatus::NotCompared => ("b-none", "st-none"),
        }
    }
}

/// One scenario's line in [`index`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub status: IndexStatus,
    pub detail: String,
    /// `NAME/diff.html` was written.
    pub has_diff: bool,
}

/// The page of a whole run: every scenario with its status and links to
/// `NAME/report.html` (and `NAME/diff.html`).
pub fn index(title: &str, entries: &[IndexEntry]) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<header class=\"card head\">\n<h1>{}</h1>",
        escape(title)
    );
    b.push_str("<div class=\"chips\">");
    let _ = write!(
        b,
        "<span class=\"chip\"><b>{}</b> scenarios</span>",
        entries.len()
    );
    for st in [
        IndexStatus::Ok,
        IndexStatus::Accepted,
        IndexStatus::Diff,
        IndexStatus::NoSnapshot,
        IndexStatus::NotCompared,
        IndexStatus::Failed,
    ] {
        let n = entries.iter().filter(|e| e.status == st).count();
        if n > 0 {
            let _ = write!(
                b,
                "<span class=\"chip\"><b>{n}</b> <span class=\"badge {}\">{}</span></span>",
                st.class().0,
                st.label()
            );
        }
    }
    b.push_str("</div>\n</header>\n<section class=\"card\">\n");
    b.push_str(
        "<table class=\"index\"><thead><tr><th>scenario</th><th>status</th><th>detail</th>\
         <th>pages</th></tr></thead><tbody>\n",
    );
    for e in entries {
        let (badge, row) = e.status.class();
        let report = format!("{}/report.html", href(&e.name));
        let mut links = format!("<a href=\"{}\">report</a>", escape(&report));
        if e.has_diff {
            let _ = write!(
                links,
                " · <a href=\"{}\">diff</a>",
                escape(&format!("{}/diff.html", href(&e.name)))
            );
        }
        let _ = writeln!(
            b,
            "<tr class=\"{row}\"><td class=\"name\"><a href=\"{}\">{}</a></td>\
             <td><span class=\"badge {badge}\">{}</span></td><td>{}</td><td>{links}</td></tr>",
            escape(&report),
            escape(&e.name),
            e.status.label(),
            escape(&e.detail)
        );
    }
    b.push_str("</tbody></table>\n</section>\n");
    b.push_str("<footer>Written by hoplab.</footer>\n");
    page(title, &b)
}
