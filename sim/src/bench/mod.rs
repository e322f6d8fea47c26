//! Benchmarks of the harness and of the dataplane under it, run inside the
//! sandbox by the hidden `hoplab __bench-chain` and `hoplab
//! __bench-dataplane`: [`chain`] (build, ping, tear down a chain of N
//! hosts) and [`dataplane`] (throughput, latency, connection rate through
//! six paths of one generated scenario), [`trace`] (the trace of a
//! synthetic capture of N frames). Each returns typed results that
//! the benchmark process prints once as JSON for `cargo xtask bench` and
//! the tests to read.
//!
//! It does not write reports (xtask renders them), and it measures nothing
//! outside the sandbox it is called in.

pub mod chain;
pub mod dataplane;
pub mod l7;
pub mod trace;
