//! L7 traffic of a run: HTTP/1.1, TLS 1.3 and WebSocket.
//!
//! [`spec`] (the vocabulary the scenario and the lab share), [`pki`] (the
//! run's CA and the certificates it issues, derived from the scenario's
//! name so every run has the same bytes), [`keylog`] (the run's
//! SSLKEYLOGFILE), [`client`] (an HTTP or WebSocket step, over TCP or
//! TLS), [`server`] (the built-in HTTP(S)/WebSocket server, `hoplab
//! __http`), [`http`] (request and response bytes), [`dns`] (the built-in
//! DNS responder, `hoplab __dns`, and the query a step sends before it
//! dials a name).
//!
//! Knows protocols and certificates; nothing of namespaces, captures or
//! the trace.

pub mod client;
pub mod dns;
pub mod http;
pub mod keylog;
pub mod pki;
pub mod server;
pub mod spec;
pub mod tls;
