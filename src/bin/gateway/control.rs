//! The control socket: a unix stream socket the gateway listens on. One
//! command per line; replies:
//!
//! ```text
//! counters                  → `name value` lines (the core's, then
//!                             `firewall.NAME packets`), then an empty line
//! flows                     → one line per Forward table entry, then an empty line
//! exposures                 → one line per exposure, then an empty line
//! expose PROTO PORT SVC:PORT → `ok` or `error …`
//! unexpose PROTO PORT [v6]  → `ok removed …` or `error …`
//! (other)                   → `error unknown command …`
//! ```
//!
//! The core's task answers through a channel; the firewall's counters are
//! read here (by running `nft` off the packet task).

use hoplab::shell::control::{self, ask, Request};
use hoplab_dataplane::gateway::{Exposure, Proto};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use crate::firewall;

/// A command the core's task answers.
#[derive(Debug, Clone)]
pub enum Command {
    Counters,
    Flows,
    Exposures,
    Expose(Exposure),
    Unexpose { proto: Proto, port: u16, v6: bool },
}

/// Answers the control socket's connections until the runtime ends.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Request<Command>>) {
    control::serve(listener, move |line: String| {
        let requests = requests.clone();
        async move { reply(&requests, &line).await }
    })
    .await;
}

/// Parses one command line.
pub fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let proto = |w: &str| w.parse::<Proto>().map_err(|e| format!("`{w}`: {e}"));
    let port = |w: &str| w.parse::<u16>().map_err(|e| format!("port `{w}`: {e}"));
    match words.as_slice() {
        ["counters"] => Ok(Command::Counters),
        ["flows"] => Ok(Command::Flows),
        ["exposures"] => Ok(Command::Exposures),
        // ICMP has no ports: `expose icmp SERVICE_IP`, `unexpose icmp [v6]`.
        ["expose", "icmp", svc] => Ok(Command::Expose(Exposure::icmp(
            svc.parse()
                .map_err(|e| format!("service `{svc}`: {e}"))?,
        ))),
        ["unexpose", "icmp"] => Ok(Command::Unexpose {
            proto: Proto::Icmp,
            port: 0,
            v6: false,
        }),
        ["unexpose", "icmp", "v6"] => Ok(Command::Unexpose {
            proto: Proto::Icmp,
            port: 0,
            v6: true,
        }),
        ["expose", p, n, svc] => Ok(Command::Expose(Exposure {
            proto: proto(p)?,
            port: port(n)?,
            service: svc
                .parse()
                .map_err(|e| format!("service `{svc}`: {e}"))?,
        })),
        ["unexpose", p, n] => Ok(Command::Unexpose {
            proto: proto(p)?,
            port: port(n)?,
            v6: false,
        }),
        ["unexpose", p, n, "v6"] => Ok(Command::Unexpose {
            proto: proto(p)?,
            port: port(n)?,
            v6: true,
        }),
        _ => Err(format!(
            "unknown command `{}`: counters, flows, exposures, expose PROTO PORT SERVICE_IP:PORT, expose icmp SERVICE_IP, unexpose PROTO PORT [v6], unexpose icmp [v6]",
            line.trim()
        )),
    }
}

/// The reply to one line; `None` when the core's task is gone.
async fn reply(requests: &mpsc::Sender<Request<Command>>, line: &str) -> Option<String> {
    match parse(line) {
        Err(e) => Some(format!("error {e}\n")),
        Ok(Command::Counters) => {
            let mut text = ask(requests, Command::Counters).await?;
            Some(
                match tokio::task::spawn_blocking(firewall::counters).await {
                    Ok(Ok(cs)) => {
                        for (name, n) in cs {
                            text.push_str(&format!("firewall.{name} {n}\n"));
                        }
                        text.push('\n');
                        text
                    }
                    Ok(Err(e)) => format!("error reading the firewall counters: {e:#}\n"),
                    Err(e) => format!("error reading the firewall counters: {e}\n"),
                },
            )
        }
        Ok(cmd) => ask(requests, cmd).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_say_why() {
        assert!(matches!(parse("counters"), Ok(Command::Counters)));
        match parse("expose udp 53 10.30.1.1:53").unwrap() {
            Command::Expose(e) => assert_eq!((e.proto, e.port), (Proto::Udp, 53)),
            c => panic!("{c:?}"),
        }
        match parse("expose icmp 10.30.1.1").unwrap() {
            Command::Expose(e) => assert_eq!(e, Exposure::icmp("10.30.1.1".parse().unwrap())),
            c => panic!("{c:?}"),
        }
        assert!(matches!(
            parse("unexpose icmp v6"),
            Ok(Command::Unexpose {
                proto: Proto::Icmp,
                port: 0,
                v6: true
            })
        ));
        assert!(matches!(
            parse("unexpose tcp 8080 v6"),
            Ok(Command::Unexpose { v6: true, .. })
        ));
        assert!(parse("expose tcp 99999 10.30.1.1:53")
            .unwrap_err()
            .contains("port `99999`"));
        assert!(parse("expose tcp 1 nowhere")
            .unwrap_err()
            .contains("service"));
        assert!(parse("reboot")
            .unwrap_err()
            .contains("unknown command `reboot`"));
    }
}
