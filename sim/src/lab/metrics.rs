//! A process's metrics endpoint (Prometheus text format, e.g. HAProxy's
//! `prometheus-exporter` service), scraped once at the end of the
//! traffic from inside the process's host over loopback (so the capture,
//! which leaves `lo` out, never sees it) into the trace's counters.
//!
//! Only the samples a reader can check are kept: those of the metric
//! names in `keep` (by default HAProxy's counters of requests, responses,
//! denials, retries, redispatches and errors, its servers' state and its
//! stick tables' use), whose value is a whole number and not zero. Rates,
//! maxima, byte counts, times and gauges of the moment are left out: they
//! depend on when the run looked. It knows sockets and the text format,
//! not the trace or which process serves the endpoint.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use serde::Deserialize;

/// A process's metrics endpoint as a scenario writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// The TCP port the process serves its metrics on, in its host.
    pub port: u16,
    /// The HTTP path (default `/metrics`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Metric names to keep; default [`HAPROXY`].
    #[serde(default)]
    pub keep: Vec<String>,
}

fn default_path() -> String {
    "/metrics".into()
}

/// HAProxy's metrics that count what the traffic did, whatever the timing.
pub const HAPROXY: &[&str] = &[
    "haproxy_frontend_http_requests_total",
    "haproxy_frontend_http_responses_total",
    "haproxy_frontend_requests_denied_total",
    "haproxy_frontend_request_errors_total",
    "haproxy_backend_http_responses_total",
    "haproxy_backend_retry_warnings_total",
    "haproxy_backend_redispatch_warnings_total",
    "haproxy_backend_connection_errors_total",
    "haproxy_backend_response_errors_total",
    "haproxy_server_http_responses_total",
    "haproxy_server_retry_warnings_total",
    "haproxy_server_redispatch_warnings_total",
    "haproxy_server_connection_errors_total",
    "haproxy_server_response_errors_total",
    "haproxy_server_status",
    "haproxy_sticktable_used",
];

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("GET 127.0.0.1:{port}{path}: {source}")]
    Io {
        port: u16,
        path: String,
        source: std::io::Error,
    },
    #[error("GET 127.0.0.1:{port}{path}: {status}")]
    Status {
        port: u16,
        path: String,
        status: String,
    },
}

impl Metrics {
    /// GET the endpoint over loopback (call it inside the host) and keep
    /// the samples described above, by `name{labels}`.
    pub fn scrape(&self) -> Result<BTreeMap<String, u64>, MetricsError> {
        let io = |source| MetricsError::Io {
            port: self.port,
            path: self.path.clone(),
            source,
        };
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(io)?;
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(io)?;
        let req = format!(
            "GET {} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            self.path
        );
        c.write_all(req.as_bytes()).map_err(io)?;
        let mut text = Vec::new();
        c.read_to_end(&mut text).map_err(io)?;
        let text = String::from_utf8_lossy(&text);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(MetricsError::Status {
                port: self.port,
                path: self.path.clone(),
                status: status.to_string(),
            });
        }
        Ok(self.keep(body))
    }

    /// The samples of `body` (Prometheus text format) to keep.
    pub fn keep(&self, body: &str) -> BTreeMap<String, u64> {
        let wanted = |name: &str| {
            if self.keep.is_empty() {
                HAPROXY.contains(&name)
            } else {
                self.keep.iter().any(|k| k == name)
            }
        };
        let mut out = BTreeMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((sample, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let name = sample.split('{').next().unwrap_or_default();
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            if wanted(name) && v.is_finite() && v >= 1.0 && v.fract() == 0.0 {
                out.insert(sample.to_string(), v as u64);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# HELP x\n\
haproxy_frontend_http_requests_total{proxy=\"kong\"} 3\n\
haproxy_frontend_http_responses_total{proxy=\"kong\",code=\"4xx\"} 2\n\
haproxy_frontend_http_responses_total{proxy=\"kong\",code=\"5xx\"} 0\n\
haproxy_frontend_bytes_in_total{proxy=\"kong\"} 269\n\
haproxy_server_status{proxy=\"pods\",server=\"pod-1\",state=\"DOWN\"} 1\n\
haproxy_server_status{proxy=\"pods\",server=\"pod-1\",state=\"UP\"} 0\n\
haproxy_server_check_failures_total{proxy=\"pods\",server=\"pod-1\"} NaN\n";

    #[test]
    fn only_counters_of_the_traffic_that_are_not_zero() {
        let m = Metrics {
            port: 1,
            path: default_path(),
            keep: Vec::new(),
        };
        let k = m.keep(BODY);
        let names: Vec<&str> = k.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "haproxy_frontend_http_requests_total{proxy=\"kong\"}",
                "haproxy_frontend_http_responses_total{proxy=\"kong\",code=\"4xx\"}",
                "haproxy_server_status{proxy=\"pods\",server=\"pod-1\",state=\"DOWN\"}",
            ]
        );
        assert_eq!(k["haproxy_frontend_http_requests_total{proxy=\"kong\"}"], 3);
        let only = Metrics {
            keep: vec!["haproxy_frontend_bytes_in_total".into()],
            ..m
        };
        assert_eq!(only.keep(BODY).len(), 1);
    }
}
