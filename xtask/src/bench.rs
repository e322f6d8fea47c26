//! `cargo xtask bench harness` and `cargo xtask bench dataplane`: build
//! hoplab, run its hidden benchmark commands (`hoplab __bench-chain`,
//! `hoplab __bench-dataplane`), read their JSON results
//! ([`hoplab_sim::bench`]'s types) and write the Markdown reports under
//! reports/ from the templates in `xtask/templates/`.
//!
//! It measures nothing itself but the wall time and peak memory of the
//! benchmark processes; what a path or a phase is, is the benchmark's.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use hoplab_sim::bench::chain::Timings;
use hoplab_sim::bench::dataplane::{self, BenchPath, PathResult, Results, Veths};
use nix::sys::resource::{getrusage, UsageWho};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::template::fill;
use crate::{build_hoplab, build_hoplab_bins, root, target_dir};

const HARNESS_TEMPLATE: &str = include_str!("../templates/bench-harness.md");
const DATAPLANE_TEMPLATE: &str = include_str!("../templates/bench-dataplane.md");

/// The argument that makes xtask run one chain benchmark in a process of
/// its own ([`one_chain`]).
pub const ONE_CHAIN: &str = "__bench-one";

/// What [`one_chain`] prints: the benchmark's timings and the peak
/// resident set of its processes.
#[derive(Debug, Serialize, Deserialize)]
struct ChainRun {
    timings: Timings,
    maxrss_kib: i64,
}

/// `what`, from the JSON a benchmark process printed.
fn from_json<T: DeserializeOwned>(stdout: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(stdout)
        .with_context(|| format!("{what}: {}", String::from_utf8_lossy(stdout)))
}

/// Peak resident set of the largest child reaped so far, in KiB.
fn children_maxrss_kib() -> Result<i64> {
    let ru = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN)")?;
    Ok(ru.max_rss())
}

/// Internal `xtask __bench-one N HOPLAB`: one chain benchmark, run as a
/// child of this process, its [`ChainRun`] on stdout as JSON. Children
/// are reaped one at a time, so the running maximum of their resident set
/// grows only when a run is the largest so far: each N is measured in an
/// xtask process of its own.
pub fn one_chain(hosts: &str, hoplab: &str) -> Result<()> {
    let out = Command::new(hoplab)
        .args(["-q", "__bench-chain", hosts])
        .output()
        .with_context(|| format!("running {hoplab}"))?;
    if !out.status.success() {
        bail!(
            "{hoplab} __bench-chain {hosts}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let timings: Timings = from_json(
        &out.stdout,
        &format!("the timings of __bench-chain {hosts}"),
    )?;
    let run = ChainRun {
        timings,
        maxrss_kib: children_maxrss_kib()?,
    };
    println!("{}", serde_json::to_string(&run)?);
    Ok(())
}

/// Build, run and tear down a chain of N hosts for each N; write
/// reports/bench-harness.md.
pub fn harness(sizes: Vec<usize>) -> Result<()> {
    let bin = build_hoplab(true)?;
    let mut rows = String::new();
    for n in sizes {
        let t = Instant::now();
        let out = Command::new(std::env::current_exe()?)
            .args([ONE_CHAIN, &n.to_string(), bin.to_str().expect("utf-8 path")])
            .output()
            .context("running one benchmark")?;
        let total = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "chain of {n} hosts failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let run: ChainRun = from_json(
            &out.stdout,
            &format!("the results of the chain of {n} hosts"),
        )?;
        rows.push_str(&harness_row(n, &run, total));
    }
    let md = fill(
        HARNESS_TEMPLATE,
        &[
            ("rows", rows),
            ("cores", cores().to_string()),
            ("kernel", kernel()),
        ],
    )?;
    let path = root().join("reports/bench-harness.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The table row of a chain of `n` hosts (printed too); `total` is the
/// benchmark process's wall time in seconds.
fn harness_row(n: usize, run: &ChainRun, total: f64) -> String {
    let t = &run.timings;
    let rss_mib = run.maxrss_kib as f64 / 1024.0;
    let (bare, b, tr, td) = (
        t.bare_ms / 1e3,
        t.build_ms / 1e3,
        t.traffic_ms / 1e3,
        t.teardown_ms / 1e3,
    );
    println!(
        "chain of {n}: bare {bare:.3} s, build {b:.3} s, traffic {tr:.3} s, teardown {td:.3} s, total {total:.3} s, peak {rss_mib:.1} MiB"
    );
    format!(
        "| {n} | {bare:.3} | {b:.3} | {:.2} | {tr:.3} | {td:.3} | {total:.3} | {:.2} | {rss_mib:.1} |\n",
        b / bare,
        total * 1e3 / n as f64
    )
}

/// The machine a benchmark ran on, and how long it took.
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    /// 1-minute load average just before the run.
    pub load: String,
    /// Wall time of the whole benchmark process, seconds.
    pub total_secs: f64,
}

/// What a benchmark subcommand of `hoplab` gave: its JSON output
/// (parsed), the load average when it started and its wall time.
struct BenchRun<T> {
    results: T,
    load: String,
    total_secs: f64,
}

/// Runs `hoplab -q SUB --out target/OUT ARGS` (built first), and parses
/// what it printed as `what`.
fn run_bench<T: DeserializeOwned>(
    release: bool,
    sub: &str,
    out: &str,
    args: &[&str],
    what: &str,
) -> Result<BenchRun<T>> {
    run_bench_env(release, sub, out, args, &[], what)
}

/// [`run_bench`] with the environment variables `env` set for the
/// benchmark process (and the dataplane processes it starts).
fn run_bench_env<T: DeserializeOwned>(
    release: bool,
    sub: &str,
    out: &str,
    args: &[&str],
    env: &[(&str, &str)],
    what: &str,
) -> Result<BenchRun<T>> {
    let bin = build_hoplab_bins(release)?;
    let out = target_dir().join(out);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let t = Instant::now();
    let run = Command::new(&bin)
        .envs(env.iter().copied())
        .args(["-q", sub, "--out"])
        .arg(&out)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let total_secs = t.elapsed().as_secs_f64();
    if !run.status.success() {
        bail!(
            "{what} failed ({}): {}(logs: {})",
            run.status,
            String::from_utf8_lossy(&run.stderr),
            out.join("logs").display()
        );
    }
    Ok(BenchRun {
        results: from_json(&run.stdout, &format!("the results of {what}"))?,
        load,
        total_secs,
    })
}

/// The dataplane processes' settings the dataplane benchmark compares,
/// the first the binaries' defaults: a name for the report, and the
/// environment that selects it.
const SETTINGS: [(&str, &[(&str, &str)]); 3] = [
    (
        "one task",
        &[
            ("HOPLAB_READER_PER_DIRECTION", "off"),
            ("HOPLAB_RT_PRIORITY", "off"),
        ],
    ),
    (
        "a reader per direction",
        &[
            ("HOPLAB_READER_PER_DIRECTION", "on"),
            ("HOPLAB_RT_PRIORITY", "off"),
        ],
    ),
    (
        "one task, SCHED_FIFO",
        &[
            ("HOPLAB_READER_PER_DIRECTION", "off"),
            ("HOPLAB_RT_PRIORITY", "10"),
        ],
    ),
];

/// Run the dataplane benchmark with `--veths gso,harness`, `rounds` times
/// with each of [`SETTINGS`] (one round per benchmark process, a fresh
/// sandbox each; the settings take turns, the first of each round's turn
/// rotating, so the machine's load hits them alike); write
/// reports/bench-dataplane.md from the defaults' rounds, with the
/// settings side by side.
pub fn dataplane(release: bool, secs: f64, round_trips: usize, rounds: usize) -> Result<()> {
    let (secs, round_trips) = (secs.to_string(), round_trips.to_string());
    let n = SETTINGS.len();
    let mut runs: Vec<Vec<BenchRun<Results>>> = (0..n).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let (name, env) = SETTINGS[i];
            let run: BenchRun<Results> = run_bench_env(
                release,
                "__bench-dataplane",
                "bench-dataplane",
                &[
                    "--secs",
                    &secs,
                    "--round-trips",
                    &round_trips,
                    "--rounds",
                    "1",
                    "--veths",
                    "gso,harness",
                ],
                env,
                &format!("the dataplane benchmark ({name})"),
            )?;
            println!(
                "round {} with {name}: load average {} at its start, {:.1} s",
                round + 1,
                run.load,
                run.total_secs
            );
            runs[i].push(run);
        }
    }
    let merged = runs
        .iter()
        .map(|r| merge_runs(r))
        .collect::<Result<Vec<_>>>()?;
    let machine = Machine {
        cores: cores(),
        kernel: kernel(),
        load: runs[0]
            .iter()
            .map(|r| r.load.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        total_secs: runs[0].iter().map(|r| r.total_secs).sum(),
    };
    let mut md = dataplane_report(&merged[0], &machine)?;
    md += &settings_section(&merged, &runs)?;
    let path = root().join("reports/bench-dataplane.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    for (i, r) in merged.iter().enumerate() {
        println!("{}:", SETTINGS[i].0);
        for p in &r.paths {
            print_path(r, p)?;
        }
    }
    println!("wrote {}", path.display());
    Ok(())
}

/// The results of several one-round runs as one run of as many rounds:
/// each path's rounds in run order, their medians; counters and
/// connections summed.
fn merge_runs(runs: &[BenchRun<Results>]) -> Result<Results> {
    let first = &runs.first().context("no benchmark run")?.results;
    let mut merged = first.clone();
    merged.config.rounds = runs.len();
    for (j, p) in merged.paths.iter_mut().enumerate() {
        let mut rounds = Vec::new();
        for r in runs {
            let q = r
                .results
                .paths
                .get(j)
                .filter(|q| q.path == p.path && q.veths == p.veths)
                .context("benchmark runs with different paths")?;
            rounds.extend(q.rounds.iter().copied());
        }
        *p = PathResult::new(p.path, p.veths, p.target.clone(), rounds);
    }
    for r in &runs[1..] {
        let r = &r.results;
        for (node, drops) in &r.netmanager_drops {
            let m = merged.netmanager_drops.entry(node.clone()).or_default();
            for (k, v) in drops {
                *m.entry(k.clone()).or_insert(0) += v;
            }
        }
        for (k, v) in &r.gateway_counters {
            *merged.gateway_counters.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &r.baseline_counters {
            *merged.baseline_counters.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &r.connections {
            *merged.connections.entry(*k).or_insert(0) += v;
        }
    }
    Ok(merged)
}

/// The report's section comparing the [`SETTINGS`]: per veth setting,
/// path and setting, the medians and their ratio to the defaults'; every
/// round's values with the load average at its start.
fn settings_section(merged: &[Results], runs: &[Vec<BenchRun<Results>>]) -> Result<String> {
    let base = SETTINGS[0].0;
    let mut md = format!(
        "\n## The dataplane processes' settings, in the same run\n\n\
         Every round above ran {n} times, in benchmark processes of their own (a fresh sandbox \
         each), the settings taking turns (which goes first rotates round by round): {base} (the \
         defaults: one task reads the TUN and the tunnel socket); a reader per direction \
         (`HOPLAB_READER_PER_DIRECTION=on`: in each net manager a second thread reads the tunnel \
         socket, the core behind a lock held for one core call; the gateway, with one TUN queue, \
         keeps one task); and one task under `SCHED_FIFO` (`HOPLAB_RT_PRIORITY=10`: the net \
         managers' and the gateway's reading threads run before ordinary processes when a packet \
         wakes them, as the kernel's forwarding in softirq does). Medians of the rounds; ratio: \
         the setting's ÷ {base}'s (throughput and connections/s: above 1 is better; latency and \
         CPU: below 1 is better). Since each setting's rounds ran in other moments of a shared \
         machine, the columns \"÷ baseline\" give each setting's path against its own baseline \
         ((a) or (f)) measured in the same benchmark processes, as the tables above do.\n\n\
         | veths | path | setting | Gbit/s | ratio | ÷ baseline | p50 µs | ratio | p99 µs | ratio | new connections/s | ratio | ÷ baseline | dataplane CPU s/Gbit | ratio |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        n = SETTINGS.len()
    );
    let ratio = |x: f64, y: f64| {
        if x > 0.0 {
            format!("{:.2}", y / x)
        } else {
            "—".into()
        }
    };
    for (j, x) in merged[0].paths.iter().enumerate() {
        for (i, r) in merged.iter().enumerate() {
            let y = r.paths.get(j).context("settings with different paths")?;
            let (m, n) = (&x.median, &y.median);
            let b = &find(r, y.veths, baseline(y.path))?.median;
            let conns = match (m.conn_per_s, n.conn_per_s, b.conn_per_s) {
                (Some(c), Some(d), Some(e)) => {
                    format!("{d:.0} | {} | {}", ratio(c, d), ratio(e, d))
                }
                _ => "— | — | —".into(),
            };
            md += &format!(
                "| {} | ({}) | {} | {:.3} | {} | {} | {:.1} | {} | {:.1} | {} | {conns} | {:.3} | {} |\n",
                x.veths.key(),
                x.path.key(),
                SETTINGS[i].0,
                n.gbps,
                ratio(m.gbps, n.gbps),
                ratio(b.gbps, n.gbps),
                n.p50_us,
                ratio(m.p50_us, n.p50_us),
                n.p99_us,
                ratio(m.p99_us, n.p99_us),
                n.cpu_dataplane_s_per_gbit,
                ratio(m.cpu_dataplane_s_per_gbit, n.cpu_dataplane_s_per_gbit),
            );
        }
    }
    md += "\nEvery round's values, with the 1-minute load average at the start of its benchmark process:\n\n\
           | round | setting | load | veths | path | Gbit/s | p50 µs | p99 µs | new connections/s | dataplane CPU s/Gbit |\n\
           |---|---|---:|---|---|---:|---:|---:|---:|---:|\n";
    let rounds = runs.iter().map(Vec::len).min().unwrap_or(0);
    for round in 0..rounds {
        for ((name, _), run) in SETTINGS.iter().zip(runs) {
            let run = run.get(round).context("a setting without this round")?;
            for p in &run.results.paths {
                let s = p.rounds.first().context("a run without a round")?;
                md += &format!(
                    "| {} | {name} | {} | {} | ({}) | {:.3} | {:.1} | {:.1} | {} | {:.3} |\n",
                    round + 1,
                    run.load,
                    p.veths.key(),
                    p.path.key(),
                    s.gbps,
                    s.p50_us,
                    s.p99_us,
                    s.conn_per_s.map_or("—".into(), |c| format!("{c:.0}")),
                    s.cpu_dataplane_s_per_gbit,
                );
            }
        }
    }
    Ok(md)
}

/// Run the exposure-change benchmark; write reports/bench-exposure.md.
pub fn exposure(release: bool, round_trips: usize, rounds: usize, churn_ms: u64) -> Result<()> {
    use hoplab_sim::bench::dataplane::ExposureResults;
    let (round_trips, rounds, churn_ms) = (
        round_trips.to_string(),
        rounds.to_string(),
        churn_ms.to_string(),
    );
    let run: BenchRun<ExposureResults> = run_bench(
        release,
        "__bench-exposure",
        "bench-exposure",
        &[
            "--round-trips",
            &round_trips,
            "--rounds",
            &rounds,
            "--churn-ms",
            &churn_ms,
        ],
        "the exposure benchmark",
    )?;
    let r = &run.results;
    let load_end = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let load = format!("{} at the start, {load_end} at the end", run.load);
    let md = exposure_report(r, release, cores(), &kernel(), &load, run.total_secs);
    let path = root().join("reports/bench-exposure.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "p99 through the gateway: {:.1} µs quiet, {:.1} µs with exposure changes every {} ms (ratio {:.2}); {:.1} µs with the same netlink work elsewhere (ratio {:.2}), {:.1} µs with nft processes elsewhere (ratio {:.2}); one change {:.0} µs (netlink alone {:.0} µs, nft {:.0} µs)",
        r.median_quiet_p99_us,
        r.median_churn_p99_us,
        r.config.churn_ms,
        r.p99_ratio,
        r.median_netlink_p99_us,
        r.p99_ratio_vs_netlink,
        r.median_nft_p99_us,
        r.p99_ratio_vs_nft,
        r.median_churn_change_us,
        r.median_netlink_change_us,
        r.median_nft_change_us,
    );
    println!("wrote {}", path.display());
    Ok(())
}

/// reports/bench-exposure.md from `r`.
fn exposure_report(
    r: &hoplab_sim::bench::dataplane::ExposureResults,
    release: bool,
    cores: usize,
    kernel: &str,
    load: &str,
    total_secs: f64,
) -> String {
    let c = &r.config;
    let mut md = format!(
        "# Exposure changes off the packet path\n\n\
         Generated by `cargo xtask bench exposure` ({build} build; {cores} cores, kernel {kernel}, \
         1-minute load average {load}; {total_secs:.0} s in all). The cores are shared with \
         whatever else runs (other builds, when the load average is above 1): measurements of \
         one run are compared with each other, never with another run's.\n\n\
         Path (e) of the dataplane benchmark (client → the gateway's public address → the gateway \
         → gw's net manager → tunnel → n2's net manager → `remote-0`'s echo; {rt} recorded \
         {msg}-byte round trips per measurement, one TCP connection), measured four times a \
         round:\n\n\
         - **quiet**: no exposure changes;\n\
         - **with changes**: another port (udp {port}) exposed and unexposed every {ms} ms over \
         the gateway's control socket; each change is one nf_tables batch (one set element added \
         or deleted) sent over the `NETLINK_NETFILTER` socket of the gateway's firewall thread, \
         not on the task that owns its core, and no process;\n\
         - **netlink control**: the bench itself sends the same batch every {ms} ms, over its own \
         netlink socket in the gateway node's namespace, to a set of its own table, the gateway \
         not involved;\n\
         - **nft control**: the same change made by one `nft` process every {ms} ms (what each \
         change cost before it went over netlink), the gateway not involved;\n\
         - **control socket only**: a read-only command (`exposures`) to the gateway's control \
         socket every {ms} ms, no firewall work: what handling a command on the gateway's thread \
         (the one that owns the core and reads the TUN) costs the packets.\n\n\
         {rounds} rounds, the order of the five reversed every other round. Each change is timed \
         where it is made (with changes: from the command on the control socket to its answer, \
         so it includes the gateway's queueing and the core's part).\n\n\
         **p99 with changes ÷ p99 quiet: {ratio:.2}** (medians: {c99:.1} µs ÷ {q99:.1} µs; p50 \
         {c50:.1} µs ÷ {q50:.1} µs). 1 means the packets do not feel the changes at all.\n\n\
         p99 with changes ÷ p99 under the same netlink work without the gateway: {vs_nl:.2} \
         (medians: {c99:.1} µs ÷ {l99:.1} µs; the netlink control ÷ quiet: {l_q:.2}): what \
         going through the gateway adds to the changes' own cost.\n\n\
         p99 with changes ÷ p99 under `nft` processes without the gateway: {vs_nft:.2} \
         ({c99:.1} µs ÷ {n99:.1} µs; nft control ÷ quiet: {n_q:.2}).\n\n\
         p99 under read-only control commands ÷ p99 quiet: {k_q:.2} ({k99:.1} µs ÷ {q99:.1} µs).\n\n\
         One change (median): {cc:.0} µs through the gateway's control socket, {lc:.0} µs as a \
         netlink batch alone, {nc:.0} µs as an `nft` process; one read-only command {kc:.0} µs.\n\n\
         | round | quiet p50 (µs) | quiet p99 (µs) | with changes p50 (µs) | with changes p99 (µs) | changes | µs each | netlink p50 (µs) | netlink p99 (µs) | netlink changes | µs each | nft p50 (µs) | nft p99 (µs) | nft changes | µs each | commands p50 (µs) | commands p99 (µs) | commands | µs each |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        build = if release { "release" } else { "debug" },
        rt = c.round_trips,
        msg = hoplab_sim::bench::dataplane::MSG,
        port = hoplab_sim::bench::dataplane::CHURN_PORT,
        ms = c.churn_ms,
        rounds = c.rounds,
        ratio = r.p99_ratio,
        c99 = r.median_churn_p99_us,
        q99 = r.median_quiet_p99_us,
        c50 = r.median_churn_p50_us,
        q50 = r.median_quiet_p50_us,
        vs_nl = r.p99_ratio_vs_netlink,
        l99 = r.median_netlink_p99_us,
        l_q = r.median_netlink_p99_us / r.median_quiet_p99_us,
        vs_nft = r.p99_ratio_vs_nft,
        n99 = r.median_nft_p99_us,
        n_q = r.median_nft_p99_us / r.median_quiet_p99_us,
        cc = r.median_churn_change_us,
        lc = r.median_netlink_change_us,
        nc = r.median_nft_change_us,
        k_q = r.median_ctl_p99_us / r.median_quiet_p99_us,
        k99 = r.median_ctl_p99_us,
        kc = r.median_ctl_command_us,
    );
    for (i, x) in r.rounds.iter().enumerate() {
        md += &format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.1} | {:.1} | {} | {:.0} | {:.1} | {:.1} | {} | {:.0} | {:.1} | {:.1} | {} | {:.0} |\n",
            i + 1,
            x.quiet_p50_us,
            x.quiet_p99_us,
            x.churn_p50_us,
            x.churn_p99_us,
            x.changes,
            x.churn_change_us,
            x.netlink_p50_us,
            x.netlink_p99_us,
            x.netlink_changes,
            x.netlink_change_us,
            x.nft_p50_us,
            x.nft_p99_us,
            x.nft_changes,
            x.nft_change_us,
            x.ctl_p50_us,
            x.ctl_p99_us,
            x.ctl_commands,
            x.ctl_command_us,
        );
    }
    md
}

/// One line per path on the console.
fn print_path(results: &Results, r: &PathResult) -> Result<()> {
    let base = baseline(r.path);
    let b = find(results, r.veths, base)?;
    println!(
        "{:>7} veths ({}) {:.3} Gbit/s ({:.2} of {}), p50 {:.1} µs, p99 {:.1} µs{}",
        r.veths.key(),
        r.path.key(),
        r.median.gbps,
        r.median.gbps / b.median.gbps,
        base.key(),
        r.median.p50_us,
        r.median.p99_us,
        r.median
            .conn_per_s
            .map(|c| format!(", {c:.0} connections/s"))
            .unwrap_or_default()
    );
    Ok(())
}

/// The paths from `web-0`, compared with (a), as the report names them.
const PATHS_INSIDE: [(BenchPath, &str); 4] = [
    (BenchPath::Kernel, "kernel: n1's bridge, namespace IP"),
    (
        BenchPath::KernelDnat,
        "kernel nftables DNAT on n1 (virtual IP)",
    ),
    (
        BenchPath::NetManager,
        "net manager, instance on the same node (service IP)",
    ),
    (
        BenchPath::Tunnel,
        "net manager, instance on n2 via the UDP tunnel (service IP)",
    ),
];

/// The paths from the external client, compared with (f).
const PATHS_OUTSIDE: [(BenchPath, &str); 2] = [
    (
        BenchPath::Gateway,
        "gateway: public address, exposed ports → gateway → net manager → tunnel → remote-0 on n2",
    ),
    (
        BenchPath::GatewayKernelDnat,
        "kernel DNAT on gw: public address, other ports → remote-0's namespace IP over the underlay",
    ),
];

/// The veth settings, with their section titles and summary labels: the
/// kernel's default first, the one a deployment sees.
const VETHS: [(Veths, &str, &str); 2] = [
    (
        Veths::Gso,
        "Veths with the kernel's default GSO (64 KiB packets)",
        "kernel default (GSO)",
    ),
    (
        Veths::Harness,
        "Veths as the harness makes them (one segment per GSO packet), switched in the same run",
        "harness (one segment per GSO packet)",
    ),
];

/// The path `p` is compared with: (f) for the external client's, (a) for
/// the others.
fn baseline(p: BenchPath) -> BenchPath {
    if PATHS_OUTSIDE.iter().any(|(q, _)| *q == p) {
        BenchPath::GatewayKernelDnat
    } else {
        BenchPath::Kernel
    }
}

fn find(r: &Results, v: Veths, p: BenchPath) -> Result<&PathResult> {
    r.get(v, p)
        .with_context(|| format!("no result for path ({}) with {} veths", p.key(), v.key()))
}

fn conn(r: &PathResult) -> Result<f64> {
    r.median
        .conn_per_s
        .with_context(|| format!("no connection rate for path ({})", r.path.key()))
}

/// reports/bench-dataplane.md from `results`, run on `machine`.
pub fn dataplane_report(results: &Results, machine: &Machine) -> Result<String> {
    let cfg = &results.config;
    let mut vars = vec![
        ("targets", targets_rows(results)?),
        ("summary", summary_rows(results)?),
        ("per_veths", per_veths(results)?),
        ("cores", machine.cores.to_string()),
        ("kernel", machine.kernel.clone()),
        ("load", machine.load.clone()),
        ("total", format!("{:.1}", machine.total_secs)),
        ("secs", cfg.secs.to_string()),
        ("round_trips", cfg.round_trips.to_string()),
        ("conn_secs", dataplane::conn_secs(cfg).to_string()),
        ("rounds", cfg.rounds.to_string()),
    ];
    vars.extend(counter_vars(results));
    fill(DATAPLANE_TEMPLATE, &vars)
}

/// p99 latency a userspace program adds per crossing on path `p`:
/// (p99 of `p` − p99 of its baseline) ÷ the crossings of a round trip.
fn p99_per_hop(r: &Results, v: Veths, p: BenchPath) -> Result<f64> {
    let (x, b) = (find(r, v, p)?, find(r, v, baseline(p))?);
    Ok((x.median.p99_us - b.median.p99_us) / f64::from(p.userspace_hops().max(1)))
}

/// The targets table's rows, on the kernel's default veths.
fn targets_rows(r: &Results) -> Result<String> {
    let v = Veths::Gso;
    let gbps = |p| find(r, v, p).map(|x| x.median.gbps);
    let (a, f) = (
        gbps(BenchPath::Kernel)?,
        gbps(BenchPath::GatewayKernelDnat)?,
    );
    let mut rows: Vec<(String, &str, f64, bool)> = vec![
        (
            "(c) ÷ (a) throughput".into(),
            "≥ 0.5",
            gbps(BenchPath::NetManager)? / a,
            true,
        ),
        (
            "(d) ÷ (a) throughput".into(),
            "≥ 0.4",
            gbps(BenchPath::Tunnel)? / a,
            true,
        ),
        (
            "(e) ÷ (f) throughput".into(),
            "≥ 0.4",
            gbps(BenchPath::Gateway)? / f,
            true,
        ),
        (
            "(e) ÷ (f) new connections/s".into(),
            "≥ 0.7",
            conn(find(r, v, BenchPath::Gateway)?)?
                / conn(find(r, v, BenchPath::GatewayKernelDnat)?)?,
            true,
        ),
    ];
    let limits = [0.5, 0.4, 0.4, 0.7];
    for p in [BenchPath::NetManager, BenchPath::Tunnel, BenchPath::Gateway] {
        rows.push((
            format!(
                "p99 latency added per userspace hop on ({}), µs: (p99 ({}) − p99 ({})) ÷ {}",
                p.key(),
                p.key(),
                baseline(p).key(),
                p.userspace_hops()
            ),
            "< 50",
            p99_per_hop(r, v, p)?,
            false,
        ));
    }
    let mut md = String::new();
    for (i, (what, target, value, ratio)) in rows.into_iter().enumerate() {
        let ok = if ratio {
            value >= limits[i]
        } else {
            value < 50.0
        };
        let value = if ratio {
            format!("{value:.2}")
        } else {
            format!("{value:.1}")
        };
        let _ = writeln!(
            md,
            "| {what} | {target} | **{value}** | {} |",
            if ok { "met" } else { "**not met**" }
        );
    }
    Ok(md)
}

/// The ratios table's rows: per veth setting, (c) and (d) ÷ (a)
/// throughput, (e) ÷ (f) throughput, connection rate, p50 and p99.
fn summary_rows(r: &Results) -> Result<String> {
    let mut md = String::new();
    for (v, _, label) in VETHS {
        let (a, c, d) = (
            find(r, v, BenchPath::Kernel)?,
            find(r, v, BenchPath::NetManager)?,
            find(r, v, BenchPath::Tunnel)?,
        );
        let (e, f) = (
            find(r, v, BenchPath::Gateway)?,
            find(r, v, BenchPath::GatewayKernelDnat)?,
        );
        let _ = writeln!(
            md,
            "| {label} | **{:.2}** | **{:.2}** | **{:.2}** | **{:.2}** | **{:.2}** | **{:.2}** |",
            c.median.gbps / a.median.gbps,
            d.median.gbps / a.median.gbps,
            e.median.gbps / f.median.gbps,
            conn(e)? / conn(f)?,
            e.median.p50_us / f.median.p50_us,
            e.median.p99_us / f.median.p99_us,
        );
    }
    Ok(md)
}

/// Per veth setting: a section with the two path tables (ratios against
/// their baseline) and the table of each round's values.
fn per_veths(r: &Results) -> Result<String> {
    let mut md = String::new();
    for (v, title, _) in VETHS {
        let _ = writeln!(md, "\n## {title}");
        for (paths, heading) in [
            (&PATHS_INSIDE[..], "From `web-0` on n1, ratios against (a)"),
            (
                &PATHS_OUTSIDE[..],
                "From the external `client`, ratios against (f)",
            ),
        ] {
            md.push_str(&path_table(r, v, paths, heading)?);
        }
        md.push_str(&rounds_table(r, v)?);
    }
    Ok(md)
}

/// One table of `paths` with veths `v`, ratios against their baseline.
fn path_table(r: &Results, v: Veths, paths: &[(BenchPath, &str)], heading: &str) -> Result<String> {
    let base = baseline(paths[0].0);
    let b = &find(r, v, base)?.median;
    let base = base.key();
    let mut md = format!(
        "\n### {heading}\n\n\
         | path | what | dialled (sink/echo) | throughput (Gbit/s) | ÷ ({base}) | p50 (µs) | ÷ ({base}) | p99 (µs) | ÷ ({base}) | new connections/s | ÷ ({base}) | CPU s/Gbit: endpoints and kernel | CPU s/Gbit: dataplane processes |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for (p, what) in paths {
        let res = find(r, v, *p)?;
        let (m, t) = (&res.median, &res.target);
        let (conn, conn_ratio) = match (m.conn_per_s, b.conn_per_s) {
            (Some(x), Some(y)) => (format!("{x:.0}"), format!("{:.2}", x / y)),
            (Some(x), None) => (format!("{x:.0}"), "—".into()),
            _ => ("—".into(), "—".into()),
        };
        let _ = writeln!(
            md,
            "| ({}) | {what} | `{}:{}/{}` | {:.3} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {conn} | {conn_ratio} | {:.3} | {:.3} |",
            p.key(),
            t.ip,
            t.sink_port,
            t.echo_port,
            m.gbps,
            m.gbps / b.gbps,
            m.p50_us,
            m.p50_us / b.p50_us,
            m.p99_us,
            m.p99_us / b.p99_us,
            m.cpu_own_s_per_gbit,
            m.cpu_dataplane_s_per_gbit,
        );
    }
    Ok(md)
}

/// Each round's values of every path with veths `v`.
fn rounds_table(r: &Results, v: Veths) -> Result<String> {
    let mut md = String::from(
        "\nEach round's values (the tables show their medians):\n\n\
         | path | client | throughput (Gbit/s) | p50 (µs) | p99 (µs) | new connections/s |\n\
         |---|---|---|---|---|---|\n",
    );
    let list = |res: &PathResult, f: fn(&dataplane::Sample) -> f64| {
        let v: Vec<String> = res.rounds.iter().map(|s| format!("{:.3}", f(s))).collect();
        v.join(", ")
    };
    for (p, _) in PATHS_INSIDE.iter().chain(&PATHS_OUTSIDE) {
        let res = find(r, v, *p)?;
        let conns = if res.median.conn_per_s.is_some() {
            let v: Vec<String> = res
                .rounds
                .iter()
                .map(|s| format!("{:.0}", s.conn_per_s.unwrap_or(0.0)))
                .collect();
            v.join(", ")
        } else {
            "—".into()
        };
        let _ = writeln!(
            md,
            "| ({}) | `{}` | {} | {} | {} | {conns} |",
            p.key(),
            res.target.client,
            list(res, |s| s.gbps),
            list(res, |s| s.p50_us),
            list(res, |s| s.p99_us),
        );
    }
    Ok(md)
}

/// `k:v` pairs joined by `sep`, or `none`.
fn pairs<'a>(it: impl IntoIterator<Item = (&'a str, u64)>, sep: &str) -> String {
    let v: Vec<String> = it.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(sep)
    }
}

/// The Machine section's counters: net manager drops, the gateway's
/// counters, where (e)'s and (f)'s connections went.
fn counter_vars(r: &Results) -> Vec<(&'static str, String)> {
    let drops: Vec<String> = r
        .netmanager_drops
        .iter()
        .map(|(node, d)| {
            let d = pairs(d.iter().map(|(k, v)| (k.as_str(), *v)), ",");
            format!("{node} {d}")
        })
        .collect();
    let gateway = format!(
        "{}: drops {}; other counters not zero: {}",
        dataplane::GW_NODE,
        pairs(r.gateway_nonzero(true), ","),
        pairs(r.gateway_nonzero(false), ", "),
    );
    let c = r.paths_check();
    // Whether every counter saw as many connections as were opened.
    let agree = |opened: u64, seen: [u64; 2]| {
        if seen.iter().all(|x| *x == opened) {
            "as many"
        } else {
            "**not** as many"
        }
    };
    let e_agree = agree(
        c.e_connections,
        [c.gateway_exposed_new, c.gateway_flows_created],
    );
    let f_agree = agree(
        c.f_connections,
        [c.baseline_dnat_new, c.baseline_forward_new],
    );
    vec![
        ("netmanager_drops", drops.join("; ")),
        ("gateway", gateway),
        ("e_conns", c.e_connections.to_string()),
        ("exposed", c.gateway_exposed_new.to_string()),
        ("flows", c.gateway_flows_created.to_string()),
        ("e_agree", e_agree.into()),
        ("f_conns", c.f_connections.to_string()),
        ("dnat", c.baseline_dnat_new.to_string()),
        ("fwd", c.baseline_forward_new.to_string()),
        ("f_agree", f_agree.into()),
    ]
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

pub(crate) fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hoplab_sim::bench::dataplane::{Config, Sample};

    use super::*;

    /// Results of two rounds over both veth settings, with counters that
    /// agree, as a run would write them.
    fn results() -> Results {
        let sc = dataplane::scenario();
        let cfg = Config::default();
        let mut paths = Vec::new();
        for v in [Veths::Harness, Veths::Gso] {
            for (i, p) in BenchPath::ALL.into_iter().enumerate() {
                let x = i as f64 + 1.0;
                let rounds = (0..2)
                    .map(|r| Sample {
                        gbps: x + f64::from(r),
                        p50_us: 10.0 * x,
                        p99_us: 20.0 * x,
                        conn_per_s: p.measures_connections().then_some(1000.0 * x),
                        cpu_own_s_per_gbit: 0.5 * x,
                        cpu_dataplane_s_per_gbit: 0.25 * f64::from(p.userspace_hops()),
                    })
                    .collect();
                paths.push(PathResult::new(p, v, p.target(&sc), rounds));
            }
        }
        let counters = |kv: &[(&str, u64)]| -> BTreeMap<String, u64> {
            kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        Results {
            config: cfg,
            paths,
            netmanager_drops: ["gw", "n1", "n2"]
                .iter()
                .map(|n| (n.to_string(), BTreeMap::new()))
                .collect(),
            gateway_counters: counters(&[
                ("firewall.exposed_new", 7),
                ("flows_created", 7),
                ("packets_in", 70),
                ("dropped_no_flow", 0),
            ]),
            baseline_counters: counters(&[("dnat_new", 9), ("forward_new", 9)]),
            connections: [(BenchPath::Gateway, 7), (BenchPath::GatewayKernelDnat, 9)]
                .into_iter()
                .chain(BenchPath::ALL[..4].iter().map(|&p| (p, 3)))
                .collect(),
        }
    }

    #[test]
    fn the_dataplane_report_fills_every_section() {
        let machine = Machine {
            cores: 2,
            kernel: "6.1.0".into(),
            load: "0.50".into(),
            total_secs: 45.62,
        };
        let mut md = dataplane_report(&results(), &machine).unwrap();
        // The settings' section, from three one-round runs per setting.
        let runs: Vec<Vec<BenchRun<Results>>> = SETTINGS
            .iter()
            .map(|_| {
                (0..3)
                    .map(|_| BenchRun {
                        results: results(),
                        load: "0.50".into(),
                        total_secs: 15.0,
                    })
                    .collect()
            })
            .collect();
        let merged: Vec<Results> = runs.iter().map(|r| merge_runs(r).unwrap()).collect();
        md += &settings_section(&merged, &runs).unwrap();
        assert!(!md.contains("{{") && !md.contains("}}"), "{md}");
        // The shape of the committed report: the same lines, the same
        // headings, table heads and prose wherever a line has no number.
        let committed = std::fs::read_to_string(root().join("reports/bench-dataplane.md")).unwrap();
        let (new, old): (Vec<_>, Vec<_>) = (md.lines().collect(), committed.lines().collect());
        assert_eq!(new.len(), old.len(), "{md}");
        for (n, o) in new.iter().zip(&old) {
            if !o.contains(|c: char| c.is_ascii_digit()) {
                assert_eq!(n, o);
            }
        }
        for want in [
            "| harness (one segment per GSO packet) | **2.33** | **3.00** | **0.85** | **0.83** | **0.83** | **0.83** |",
            "| (c) ÷ (a) throughput | ≥ 0.5 | **2.33** | met |",
            "| (e) ÷ (f) new connections/s | ≥ 0.7 | **0.83** | met |",
            "| p99 latency added per userspace hop on (c), µs: (p99 (c) − p99 (a)) ÷ 2 | < 50 | **20.0** | met |",
            "| (c) | net manager, instance on the same node (service IP) | `10.30.1.1:5001/5002` | 3.500 | 2.33 | 30.0 | 3.00 | 60.0 | 3.00 | — | — | 1.500 | 0.500 |",
            "| (f) | `client` | 6.000, 7.000 | 60.000, 60.000 | 120.000, 120.000 | 6000, 6000 |",
            "2 cores, kernel 6.1.0; 1-minute load average just before each round's benchmark process (with the net managers' default): 0.50. Those processes (each: sandbox, topology, net managers, gateway, one round of 12 measurements",
            "Net manager drop counters at the end of those runs, summed: gw none; n1 none; n2 none.",
            "on gw: drops none; other counters not zero: firewall.exposed_new:7, flows_created:7, packets_in:70.",
            "(e) opened 7 connections, the gateway's firewall DNATed 7 new ones to it and it created 7 flows (as many); (f) opened 9",
            "for 0.8 s, then the client shuts",
            "then 2000 round trips",
            "for 0.5 s (at most 5000",
            "Then 3 rounds, each in a benchmark process of its own",
            "| gso | (c) | a reader per direction | 3.500 | 1.00 | 2.33 | 30.0 | 1.00 | 60.0 | 1.00 | — | — | — | 0.500 | 1.00 |",
            "| 3 | one task, SCHED_FIFO | 0.50 | harness | (f) |",
        ] {
            assert!(md.contains(want), "no {want:?} in:\n{md}");
        }
    }

    #[test]
    fn the_harness_report_has_a_row_per_size() {
        let run = ChainRun {
            timings: Timings {
                bare_ms: 400.0,
                build_ms: 1200.0,
                traffic_ms: 1.0,
                teardown_ms: 10.0,
            },
            maxrss_kib: 20 * 1024,
        };
        let rows = harness_row(1000, &run, 1.8);
        assert_eq!(
            rows,
            "| 1000 | 0.400 | 1.200 | 3.00 | 0.001 | 0.010 | 1.800 | 1.80 | 20.0 |\n"
        );
        let md = fill(
            HARNESS_TEMPLATE,
            &[
                ("rows", rows),
                ("cores", "2".into()),
                ("kernel", "6.1.0".into()),
            ],
        )
        .unwrap();
        let committed = std::fs::read_to_string(root().join("reports/bench-harness.md")).unwrap();
        let (new, old): (Vec<_>, Vec<_>) = (md.lines().collect(), committed.lines().collect());
        // The committed report has three sizes, this one.
        assert_eq!(new.len() + 2, old.len(), "{md}");
        assert_eq!(new[..new.len() - 3], old[..new.len() - 3]);
        assert_eq!(new.last(), Some(&"Measured on 2 cores, kernel 6.1.0."));
    }
}
