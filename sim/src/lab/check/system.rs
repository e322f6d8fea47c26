//! What a lab asks of this machine, checked before a run so that a mistake
//! fails `validate` instead of the run: every sysctl names a file under
//! `/proc/sys` (an interface's own key checked on `default`), every `cmd`
//! names a program on `PATH` or an existing file, every file a host is
//! given from a path can be read, and every firewall script
//! passes `nft --check` — run in a network namespace of its own (as root:
//! `unshare --net`; otherwise in a user namespace first) holding an
//! interface named as each of the host's, so the machine's own ruleset is never
//! read or touched.
//!
//! Reads the machine; builds nothing. Knows the lab, not the file's text:
//! nft's line in a script is handed on as [`Invalid::within`].

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::lab::{Host, Lab};
use crate::values::{key, Gather, Invalid};

/// Every way `lab` does not fit this machine.
pub fn check(lab: &Lab) -> Vec<Invalid> {
    let mut found = Vec::new();
    let nft = program("nft");
    for (h, host) in &lab.hosts {
        let hf = format!("hosts.{}", key(h));
        for k in host.sysctls.keys() {
            found.gather(sysctl(lab, h, k, &format!("{hf}.sysctls.{}", key(k))));
        }
        // An instance's processes and files are its service's, declared
        // once for all its instances: the first of them says so.
        let of = host.origin.clone().unwrap_or_else(|| hf.clone());
        // The processes a service declares come after its echo server.
        let skip = match host.origin {
            Some(_) => host.processes.iter().filter(|p| p.echo.is_some()).count(),
            None => 0,
        };
        for (i, p) in host.processes.iter().enumerate() {
            if let Some(argv0) = p.cmd.as_ref().and_then(|c| c.first()) {
                let i = i.saturating_sub(skip);
                found.gather(command(argv0, &format!("{of}.processes[{i}].cmd[0]")));
            }
        }
        for (name, f) in &host.files {
            if let crate::l7::spec::FileSource::Path(p) = f {
                if let Err(e) = std::fs::File::open(p) {
                    found.gather(invalid(
                        &format!("{of}.files.{}", key(name)),
                        format!("cannot read {p}: {e}"),
                    ));
                }
            }
        }
        if let Some(script) = &host.firewall {
            let ifaces: Vec<&str> = interfaces(lab, h).filter(|&i| i != "lo").collect();
            found.gather(firewall(
                nft.as_deref(),
                script,
                &ifaces,
                &format!("{hf}.firewall"),
            ));
        }
    }
    // A service's instances share its declaration: one error each.
    let mut seen = Vec::new();
    found.retain(|i| {
        let new = !seen.contains(i);
        if new {
            seen.push(i.clone());
        }
        new
    });
    found
}

fn invalid(field: &str, message: String) -> Result<(), Invalid> {
    crate::values::bad(field, message)
}

/// Keys of one interface, `net.ipv4.conf.IF.x`: the interface does not
/// exist yet, so its key is checked on `default`.
fn sysctl(lab: &Lab, h: &str, k: &str, field: &str) -> Result<(), Invalid> {
    let mut parts: Vec<&str> = k.split('.').collect();
    if parts.len() > 4
        && matches!(parts[1], "ipv4" | "ipv6")
        && matches!(parts[2], "conf" | "neigh")
        && interfaces(lab, h).any(|i| i == parts[3])
    {
        parts[3] = "default";
    }
    let path = Path::new("/proc/sys").join(parts.join("/"));
    if path.is_file() {
        return Ok(());
    }
    invalid(
        field,
        format!("unknown sysctl `{k}`: there is no {}", path.display()),
    )
}

fn interfaces<'a>(lab: &'a Lab, h: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let host: Option<&'a Host> = lab.hosts.get(h);
    let own = host.into_iter().flat_map(|host| {
        host.bridges
            .keys()
            .chain(host.tuns.keys())
            .map(String::as_str)
    });
    let ends = lab
        .links
        .iter()
        .flat_map(|l| [&l.a, &l.b])
        .filter(move |e| e.host == h)
        .map(|e| e.ifname.as_str());
    own.chain(ends).chain(["lo"])
}

/// A program on `PATH`, the way the run will find it.
fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn command(argv0: &str, field: &str) -> Result<(), Invalid> {
    if argv0.contains('/') {
        if Path::new(argv0).is_file() {
            return Ok(());
        }
        return invalid(field, format!("no program `{argv0}`: no such file"));
    }
    if program(argv0).is_some() {
        return Ok(());
    }
    invalid(field, format!("no program `{argv0}` on PATH"))
}

/// `nft --check -f -` in a network namespace of its own, with an
/// interface (a veth) named as each of the host's (a rule may name one: `iif eth0`).
fn firewall(nft: Option<&Path>, script: &str, ifaces: &[&str], field: &str) -> Result<(), Invalid> {
    let Some(nft) = nft else {
        return invalid(
            field,
            "nft is not installed, so this firewall can be neither checked nor loaded".into(),
        );
    };
    let mut cmd = Command::new("unshare");
    if !nix::unistd::geteuid().is_root() {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(["--net", "sh", "-c"])
        .arg(r#"n=0; for i do ip link add "$i" type veth peer name "hlck$n" 2>/dev/null; n=$((n+1)); done; exec "$0" --check -f -"#)
        .arg(nft)
        .args(ifaces)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = cmd.spawn().and_then(|mut child| {
        if let Some(mut stdin) = child.stdin.take() {
            // nft may stop reading at its first error: a broken pipe is
            // its answer, not ours.
            let _ = stdin.write_all(script.as_bytes());
        }
        child.wait_with_output()
    });
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return invalid(
                field,
                format!("cannot check the script (unshare --net nft --check): {e}"),
            )
        }
    };
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    Err(nft_error(field, &text))
}

/// nft's first error, `/dev/stdin:LINE:COL-COL: Error: …`, with its place.
fn nft_error(field: &str, stderr: &str) -> Invalid {
    let first = stderr.lines().find(|l| l.contains("Error:"));
    let within = first.and_then(|l| {
        let rest = l.strip_prefix("/dev/stdin:")?;
        let mut it = rest.splitn(3, ':');
        let line = it.next()?.parse().ok()?;
        let col = it.next()?.split('-').next()?.parse().ok()?;
        Some((line, col))
    });
    let message = match first {
        Some(l) => format!(
            "nft rejects the script: {}",
            l.split_once("Error:").map_or(l, |(_, m)| m).trim()
        ),
        // No word from nft: the namespace could not be made.
        None => format!(
            "cannot check the script (unshare --net nft --check): {}",
            stderr.trim()
        ),
    };
    Invalid {
        field: field.to_string(),
        message,
        within,
    }
}

#[cfg(test)]
mod tests {
    use super::{firewall, nft_error};

    #[test]
    fn without_nft_a_firewall_is_an_error_naming_the_field() {
        let e = firewall(None, "table ip t {}", &[], "hosts.a.firewall").unwrap_err();
        assert_eq!(e.field, "hosts.a.firewall");
        assert!(e.message.contains("nft is not installed"), "{e:?}");
    }

    #[test]
    fn nft_errors_keep_their_place_in_the_script() {
        let e = nft_error(
            "hosts.a.firewall",
            "/dev/stdin:4:34-34: Error: syntax error, unexpected newline\n    x\n    ^\n",
        );
        assert_eq!(e.within, Some((4, 34)));
        assert_eq!(
            e.message,
            "nft rejects the script: syntax error, unexpected newline"
        );
        let e = nft_error(
            "hosts.a.firewall",
            "unshare: unshare failed: Operation not permitted\n",
        );
        assert_eq!(e.within, None);
        assert!(e.message.starts_with("cannot check the script"), "{e:?}");
    }
}
