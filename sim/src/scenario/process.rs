//! A host's process as the scenario file gives it (serde, unknown fields
//! denied): a command line or one of hoplab's built-in servers, its
//! metrics endpoint, and when it counts as ready. Shared by the hosts of
//! [`super::schema`] and the instances of [`super::services`].

use serde::Deserialize;

use crate::l7::spec::HttpServer;
use crate::values::Echo;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    pub name: String,
    /// A command line, run inside the host.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// hoplab's built-in echo server instead of a command.
    #[serde(default)]
    pub echo: Option<Echo>,
    /// hoplab's built-in HTTP(S)/WebSocket server instead of a command.
    #[serde(default)]
    pub http: Option<HttpServer>,
    /// hoplab's built-in DNS responder instead of a command.
    #[serde(default)]
    pub dns: Option<crate::l7::dns::DnsServer>,
    /// Its Prometheus endpoint, scraped into the trace's counters at the
    /// end of the traffic.
    #[serde(default)]
    pub metrics: Option<crate::lab::metrics::Metrics>,
    /// When the process counts as ready. Built-in echo servers need none.
    #[serde(default)]
    pub ready: Option<Ready>,
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_ms: u64,
}

fn default_ready_timeout() -> u64 {
    5000
}

/// When a process counts as ready: give exactly one of the fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// A TCP socket listens on this port in the host.
    #[serde(default)]
    pub tcp_listen: Option<u16>,
    /// A UDP socket is bound to this port in the host.
    #[serde(default)]
    pub udp_bound: Option<u16>,
    /// Wait this long; for processes with nothing to observe.
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

impl Ready {
    pub(super) fn count(&self) -> usize {
        usize::from(self.tcp_listen.is_some())
            + usize::from(self.udp_bound.is_some())
            + usize::from(self.delay_ms.is_some())
    }
}
