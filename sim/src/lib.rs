//! The hoplab harness: everything simulated around the real dataplane.
//!
//! A run: [`scenario::load`] → [`sandbox`] (fresh net + mount + pid
//! namespaces) → [`topology::build`] → [`process::start`] →
//! [`capture::Capture::start`] → [`traffic::run_step`] per step →
//! [`capture::write_pcapng`] → [`trace::build`] → [`report::markdown`];
//! [`snapshot`] compares the trace with the reviewed one.

pub mod bench;
pub mod capture;
pub mod cluster;
pub mod control_plane;
pub mod dataplane_bench;
pub mod echo;
pub mod gateway;
pub mod netns;
pub mod process;
pub mod progress;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod scenario;
pub mod snapshot;
pub mod topology;
pub mod trace;
pub mod traffic;

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
