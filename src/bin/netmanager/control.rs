//! The control socket: a unix stream socket the net manager listens on.
//! One command per line; replies:
//!
//! ```text
//! counters             → one `name value` line per counter, then an empty line
//! flows                → `flows N` (conversion table entries) and `cache N`
//! instance add SPEC    → `ok`: SPEC (`ns=IPV4[,ip=IPV4][,ns6=IPV6][,ip6=IPV6]`,
//!                        as `--instance`) runs on this node from now on
//! instance remove IPV4 → `ok`, or `error no local instance IPV4`: the
//!                        instance with that namespace address left it
//! (other)              → `error unknown command`
//! ```
//!
//! The harness's `move` step tells the old and the new node this way that
//! an instance was rescheduled.
//!
//! Blank lines are ignored. Connections run on their own tasks
//! ([`hoplab::shell::control`]); the answers come from the task that owns
//! the core, through a channel.

use std::net::Ipv4Addr;

use hoplab::shell::control::{self, ask, Request};
use hoplab_dataplane::netmanager::LocalInstance;
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// A command the core's task answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Counters,
    Flows,
    AddInstance(LocalInstance),
    RemoveInstance(Ipv4Addr),
}

/// The command of a control line, or the error line to answer.
fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[..] {
        ["counters"] => Ok(Command::Counters),
        ["flows"] => Ok(Command::Flows),
        ["instance", "add", spec] => spec
            .parse()
            .map(Command::AddInstance)
            .map_err(|e| format!("error {e}\n")),
        ["instance", "remove", ip] => ip
            .parse()
            .map(Command::RemoveInstance)
            .map_err(|_| format!("error bad IPv4 address {ip:?}\n")),
        _ => Err("error unknown command\n".to_string()),
    }
}

/// Answers the control socket's connections until the runtime ends.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Request<Command>>) {
    control::serve(listener, move |line: String| {
        let requests = requests.clone();
        async move {
            match parse(&line) {
                Ok(c) => ask(&requests, c).await,
                Err(e) => Some(e),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines_parse_or_name_what_is_wrong() {
        assert_eq!(parse(" counters "), Ok(Command::Counters));
        assert_eq!(parse("flows"), Ok(Command::Flows));
        let Ok(Command::AddInstance(li)) = parse("instance add ns=10.18.0.66,ip=10.30.1.11") else {
            panic!("instance add");
        };
        assert_eq!(li.to_string(), "ns=10.18.0.66,ip=10.30.1.11");
        assert_eq!(
            parse("instance remove 10.18.0.1"),
            Ok(Command::RemoveInstance(Ipv4Addr::new(10, 18, 0, 1)))
        );
        assert!(parse("instance add ip=10.30.1.11")
            .unwrap_err()
            .contains("ns=IPV4 is required"));
        assert!(parse("instance remove fd18::1")
            .unwrap_err()
            .starts_with("error bad IPv4"));
        assert_eq!(parse("instance"), Err("error unknown command\n".into()));
        assert_eq!(parse("flows now"), Err("error unknown command\n".into()));
    }
}
