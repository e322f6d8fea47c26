//! Exposure changes off the packet path. A firewall change waits for the
//! kernel's answer, so the task that owns the core never makes one: a
//! firewall thread does, one job at a time, in the order given, over one
//! `NETLINK_NETFILTER` socket it keeps (set elements in an nf_tables
//! batch, conntrack deletes; no process per change), and reports each
//! job's outcome back through a channel the core's task selects on beside
//! the TUN.
//!
//! The core's Exposed Services table changes only once the firewall's
//! change succeeded, and changes are applied in the order they came:
//! - `expose`: the firewall's set gets the port, then the core the row
//!   (until then, a new connection to the port is DNATed but dropped as not
//!   exposed by the core: nothing reaches a service the core does not map);
//! - `unexpose`: the set loses the port, then the core the row and its
//!   flows, then the firewall closes the flows' clients and their
//!   conntrack entries are deleted (a second job, only when there were
//!   flows), and only then is the command answered.
//!
//! One change is in flight at a time; the others wait in a queue, so each
//! is checked against the table as every change before it left it. It
//! knows the core's exposure API and the firewall's and conntrack's
//! functions; nothing of packets.

use std::collections::VecDeque;
use std::net::SocketAddr;

use anyhow::Context;
use hoplab::shell::control::Request;
use hoplab::shell::nfnetlink::Socket;
use hoplab_dataplane::gateway::{ExposeError, ExposedPort, Exposure, GatewayCore, Proto};
use tokio::sync::mpsc;
use tracing::info;

use crate::control::Command;
use crate::firewall::Firewall;
use crate::{conntrack, Public};

/// What the firewall thread does.
#[derive(Debug)]
pub enum Job {
    /// Add or delete a port of its exposed set.
    SetPort(ExposedPort, bool),
    /// Answer these clients of `proto` port `port` from now on, and delete
    /// their conntrack entries.
    EndFlows {
        proto: Proto,
        port: u16,
        clients: Vec<SocketAddr>,
        public: Public,
    },
}

fn run(nl: &mut Socket, job: Job) -> anyhow::Result<()> {
    match job {
        Job::SetPort(port, on) => Firewall::set_port(nl, port, on),
        Job::EndFlows {
            proto,
            port,
            clients,
            public,
        } => {
            Firewall::close(nl, proto, port, &clients)?;
            let tuples: Vec<_> = clients
                .iter()
                .filter_map(|c| {
                    let p: std::net::IpAddr = match c {
                        SocketAddr::V4(_) => public.0.into(),
                        SocketAddr::V6(_) => public.1?.into(),
                    };
                    Some((*c, SocketAddr::new(p, port)))
                })
                .collect();
            conntrack::delete(nl, proto, &tuples).map(|_| ())
        }
    }
}

/// The firewall thread's ends: jobs in, outcomes out (one per job, in
/// order).
pub struct Worker {
    jobs: std::sync::mpsc::Sender<Job>,
    pub done: mpsc::UnboundedReceiver<anyhow::Result<()>>,
}

impl Worker {
    /// Opens the thread's netlink socket (in the gateway's namespace) and
    /// starts the thread; it ends when the `Worker` is dropped.
    pub fn spawn() -> anyhow::Result<Worker> {
        let mut nl = Socket::open().context("opening a NETLINK_NETFILTER socket")?;
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let (tx, done) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("firewall".into())
            .spawn(move || {
                for job in rx {
                    if tx.send(run(&mut nl, job)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Worker { jobs, done })
    }

    fn send(&self, job: Job) -> Result<(), String> {
        self.jobs
            .send(job)
            .map_err(|_| "error the firewall thread is gone\n".to_string())
    }
}

/// Where the change in flight is.
enum Stage {
    /// The set is getting the port; then the core gets `Exposure`.
    Expose(Exposure),
    /// The set is losing the port; then the core loses the row.
    Unexpose { proto: Proto, port: u16, v6: bool },
    /// The flows of the removed row are being ended.
    EndFlows(Exposure),
}

/// The exposure changes of the control socket: at most one in flight.
#[derive(Default)]
pub struct Changes {
    waiting: VecDeque<Request<Command>>,
    in_flight: Option<(Stage, tokio::sync::oneshot::Sender<String>)>,
}

impl Changes {
    /// Takes an `expose` or `unexpose` command: started at once, or queued
    /// behind the one in flight.
    pub fn submit(&mut self, core: &GatewayCore, w: &Worker, req: Request<Command>) {
        self.waiting.push_back(req);
        self.next(core, w);
    }

    /// Starts waiting commands until one needs the firewall.
    fn next(&mut self, core: &GatewayCore, w: &Worker) {
        while self.in_flight.is_none() {
            let Some(req) = self.waiting.pop_front() else {
                return;
            };
            let started = match req.command {
                Command::Expose(e) => start_expose(core, w, e),
                Command::Unexpose { proto, port, v6 } => start_unexpose(core, w, proto, port, v6),
                _ => Err("error not an exposure change\n".into()),
            };
            match started {
                Ok(stage) => self.in_flight = Some((stage, req.reply)),
                Err(answer) => {
                    let _ = req.reply.send(answer);
                }
            }
        }
    }

    /// The firewall thread finished the job of the change in flight.
    pub fn completed(
        &mut self,
        core: &mut GatewayCore,
        w: &Worker,
        public: Public,
        result: anyhow::Result<()>,
    ) {
        let Some((stage, reply)) = self.in_flight.take() else {
            return;
        };
        let answer = match (stage, result) {
            (_, Err(err)) => Some(format!("error {err:#}\n")),
            (Stage::Expose(e), Ok(())) => Some(match core.expose(e.clone()) {
                Ok(()) => {
                    info!(%e, "exposed");
                    "ok\n".to_string()
                }
                Err(err) => format!("error {err}\n"),
            }),
            (Stage::Unexpose { proto, port, v6 }, Ok(())) => {
                match core.unexpose_flows(proto, port, v6) {
                    Err(err) => Some(format!("error {err}\n")),
                    // No flows to end: answered at once, without a
                    // second job (and two more wake-ups of this thread).
                    Ok((removed, clients)) if clients.is_empty() => {
                        info!(%removed, flows = 0, "unexposed");
                        Some(format!("ok removed {removed}\n"))
                    }
                    Ok((removed, clients)) => {
                        let n = clients.len();
                        let job = Job::EndFlows {
                            proto,
                            port,
                            clients,
                            public,
                        };
                        match w.send(job) {
                            Ok(()) => {
                                info!(%removed, flows = n, "unexposed");
                                self.in_flight = Some((Stage::EndFlows(removed), reply));
                                return;
                            }
                            Err(answer) => Some(answer),
                        }
                    }
                }
            }
            (Stage::EndFlows(removed), Ok(())) => Some(format!("ok removed {removed}\n")),
        };
        if let Some(a) = answer {
            let _ = reply.send(a);
        }
        self.next(core, w);
    }
}

/// An `expose`: its firewall job, or (`Err`) the answer given at once when
/// the core needs no change (the same mapping again) or refuses it, as
/// [`GatewayCore::expose`] would.
fn start_expose(core: &GatewayCore, w: &Worker, e: Exposure) -> Result<Stage, String> {
    core.config()
        .check_exposure(&e)
        .map_err(|err| format!("error {err}\n"))?;
    let port = e.exposed_port();
    if let Some(have) = core
        .exposures()
        .into_iter()
        .find(|x| x.exposed_port() == port)
    {
        if have.service == e.service {
            return Err("ok\n".into());
        }
        let err = ExposeError::AlreadyExposed {
            existing: Exposure {
                service: have.service,
                ..e
            },
        };
        return Err(format!("error {err}\n"));
    }
    w.send(Job::SetPort(port, true))?;
    Ok(Stage::Expose(e))
}

/// An `unexpose`: its firewall job, or (`Err`) the refusal given at once
/// when the port is not exposed.
fn start_unexpose(
    core: &GatewayCore,
    w: &Worker,
    proto: Proto,
    port: u16,
    v6: bool,
) -> Result<Stage, String> {
    let key = ExposedPort::new(proto, port, v6);
    if !core.exposures().iter().any(|e| e.exposed_port() == key) {
        let err = ExposeError::NotExposed { proto, port, v6 };
        return Err(format!("error {err}\n"));
    }
    w.send(Job::SetPort(key, false))?;
    Ok(Stage::Unexpose { proto, port, v6 })
}
