//! The hoplab harness: everything simulated around the real dataplane.
//!
//! A scenario file: [`scenario`] (as written) → [`oakestra::expand`]
//! (the Oakestra vocabulary) → [`lab::Lab`] (hosts, links, steps).
//!
//! A run: [`oakestra::load`] → [`lab::sandbox`] (fresh net + mount + pid
//! namespaces) → [`lab::topology::build`] → [`lab::process::start`] →
//! [`capture::Capture::start`] → [`lab::traffic::run_step`] per step →
//! [`capture::write_pcapng`] → [`trace::build`] → [`report::markdown`];
//! [`snapshot`] compares the trace with the reviewed one. [`l7`]: the
//! HTTP, TLS and WebSocket client of a step, the built-in server, the
//! run's CA and key log.

pub mod bench;
pub mod capture;
pub mod expect;
pub mod l7;
pub mod lab;
pub mod load;
pub mod oakestra;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenario;
pub mod snapshot;
pub mod trace;
pub mod values;

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Scenario(#[from] scenario::LoadError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("writing the capture: {0}")]
    Pcap(#[from] pcap_file::PcapError),
    #[error(transparent)]
    Capture(#[from] capture::ReadError),
    #[error("interrupted by signal")]
    Interrupted,
    #[error("{0}")]
    Failed(String),
}
