//! `bench`: the benchmark suite in one command. Starts the release binaries (authz-server, gateway,
//! demo floor and backend) and nginx, each pinned to CPU 1 with one worker, drives them from CPU 0
//! with `loadgen`, and writes BENCHMARKS.md and docs/bench/latency.svg.
//!
//! ```sh
//! cargo build --release -p authz-server -p gateway -p bench -j 2
//! target/release/bench --rounds 5 --seconds 2          # or scripts/bench
//! target/debug/bench --smoke                           # every scenario once, ~0.5 s, asserts answers
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bench::runner::{self, Options, Results};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Runs the benchmark suite against the real binaries and writes BENCHMARKS.md")]
struct Cli {
    /// Rounds; every scenario is measured once per round, rounds interleaved.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Measured seconds per scenario and round.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Unmeasured seconds before each measurement.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Calls in flight in the closed-loop scenarios.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections for the gRPC scenarios.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls per second of the open-loop scenarios: about a third of the floor's capacity on one
    /// core, so the open loop shows latency under moderate load rather than queueing.
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// Where the binaries are; default: beside this one.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The nginx binary; default: `nginx` on PATH or /usr/sbin/nginx.
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// Only these scenarios: a comma-separated list of name parts, or `=NAME` for one name
    /// exactly (`--only '=gateway,=nginx proxy,https backend,grpc backend'`).
    #[arg(long)]
    only: Option<String>,
    /// Smoke test: every scenario once for ~0.5 s; fail unless every answer was the expected one.
    #[arg(long)]
    smoke: bool,
    /// The report to write (not in smoke mode).
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// The chart to write (not in smoke mode).
    #[arg(long, default_value = "docs/bench/latency.svg")]
    svg: PathBuf,
    /// The command to print in the report as the way to rerun it.
    #[arg(long, default_value = "scripts/bench")]
    rerun: String,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let bin_dir = match cli.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this binary")?
            .to_path_buf(),
    };
    for binary in ["authz-server", "gateway", "floor", "loadgen"] {
        anyhow::ensure!(
            bin_dir.join(binary).is_file(),
            "{} is missing: build it first (cargo build --release -p authz-server -p gateway -p bench)",
            bin_dir.join(binary).display()
        );
    }
    // The same lookup and strictness as the test suites (testkit): PATH, then /usr/sbin.
    let nginx = cli.nginx.or_else(|| testkit::find_tool("nginx"));
    if nginx.is_none() && testkit::strict() {
        anyhow::bail!("nginx is not installed (AUTHZ_TEST_STRICT=1): apt-get install nginx-light");
    }
    let (rounds, seconds, warmup, rate, concurrency) = if cli.smoke {
        (1, 0.5, 0.1, 500.0, cli.concurrency.min(8))
    } else {
        (
            cli.rounds.max(1),
            cli.seconds,
            cli.warmup,
            cli.rate,
            cli.concurrency,
        )
    };
    let options = Options {
        rounds,
        seconds,
        warmup,
        concurrency,
        connections: cli.connections,
        rate,
        bin_dir,
        nginx,
        only: cli.only,
        smoke: cli.smoke,
    };
    let load_before = load_average();
    let started = std::time::Instant::now();
    let results = runner::run(&options)?;
    let elapsed = started.elapsed();
    let load_after = load_average();
    for note in &results.skipped {
        eprintln!("bench: NOTE {note}");
    }
    println!("{}", results.comparisons_table());
    println!("{}", results.scenarios_table());
    println!("{}", results.upstream_table());
    println!("{}", results.rss_table());
    let errors = results.errors();
    // A pool needs at most one connection per call in flight; twice that per round is slack for
    // a connection closed and replaced. A handshake per request is thousands.
    let pool_limit = 2.0 * (options.concurrency.max(options.connections) * options.rounds) as f64;
    let upstream_problems = results.upstream_problems(pool_limit);
    for problem in &upstream_problems {
        eprintln!("bench: WARNING {problem}");
    }
    if cli.smoke {
        anyhow::ensure!(
            errors.is_empty(),
            "smoke: wrong answers or errors:\n{}",
            errors.join("\n")
        );
        anyhow::ensure!(
            upstream_problems.is_empty(),
            "smoke: upstream connections not pooled:\n{}",
            upstream_problems.join("\n")
        );
        eprintln!(
            "bench: smoke OK, {} scenarios, every answer as expected ({:.0?})",
            results.scenarios.len(),
            elapsed
        );
        return Ok(ExitCode::SUCCESS);
    }
    let title = format!("Latency per scenario, commit {}", runner::commit().0);
    if let Some(parent) = cli.svg.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.svg, runner::svg::latency_chart(&results, &title))?;
    let report = markdown(
        &results,
        &options,
        &cli.rerun,
        &cli.svg,
        elapsed,
        &load_before,
        &load_after,
    );
    std::fs::write(&cli.out, report)?;
    eprintln!(
        "bench: wrote {} and {} ({:.0?})",
        cli.out.display(),
        cli.svg.display(),
        elapsed
    );
    if errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "bench: some measurements saw errors:\n{}",
            errors.join("\n")
        );
        Ok(ExitCode::FAILURE)
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_owned()
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn markdown(
    results: &Results,
    options: &Options,
    rerun: &str,
    svg: &std::path::Path,
    elapsed: std::time::Duration,
    load_before: &str,
    load_after: &str,
) -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let nginx_version = options.nginx.as_ref().map_or_else(
        || "not installed".to_owned(),
        |n| command_output(&n.display().to_string(), &["-v"]),
    );
    let (commit, changed) = runner::commit();
    let commit = if changed.is_empty() {
        commit
    } else {
        format!("{commit} (`{}`)", changed.join("`, `"))
    };
    let notes = if results.skipped.is_empty() {
        String::new()
    } else {
        format!("\n**Not run:** {}\n", results.skipped.join("; "))
    };
    format!(
        r#"# Benchmarks

Written by the benchmark suite (`bench/`, issue #9) — do not edit by hand; rerun it:

```sh
{rerun}
```

That builds the release binaries and runs every scenario below ({scenarios} scenarios × {rounds} rounds ×
{seconds} s + {warmup} s warm-up; {minutes:.1} minutes on this machine).

- **Commit measured:** {commit}, {date}; binaries built {built}
- **Machine:** {cores} cores (`nproc`), {cpu}; load average {load_before} before the run, {load_after} after;
  Linux {kernel}; {nginx_version}.

![latency percentiles per scenario]({svg})

## Method

- Every server is a real process on loopback, started by the runner from the release build:
  `authz-server`, `gateway`, the floor (`floor`: a bare tonic `Check`, v3 and v2, answering a constant
  OK), the backend (`floor --http`: a static `200 ok`), and Debian's nginx for the peer scenarios.
  **Every server is pinned to CPU 1 (`taskset -c 1`) with one worker thread** (`TOKIO_WORKER_THREADS=1`,
  nginx `worker_processes 1`); **the load generator (`loadgen`) runs on CPU 0** with one runtime thread.
  In the proxy scenarios the gateway (or nginx), the authz-server and the backend share CPU 1, as
  they would share a node.
- gRPC scenarios: {concurrency} Check calls in flight over {connections} HTTP/2 connections (h2c), an
  Envoy-shaped request (9 headers, source and destination addresses). HTTP scenarios: {concurrency}
  keep-alive HTTP/1.1 connections, one request in flight each; the `c=1` scenarios one connection.
  Open-loop scenarios start {rate:.0} calls per second on a fixed schedule and measure latency from
  the intended start, so queueing is not hidden (coordinated omission).
- Upstream scenarios (issue #18), each beside nginx doing the same: the gateway in front of an
  HTTPS backend (a second `floor` with `--https`: rustls, a certificate for `localhost` from a test
  CA made with rcgen at the start of the run; HTTP/1.1, or h2 when ALPN offers it), configured as
  `url = "https://localhost:PORT"`, `tls = {{ ca = ... }}` with `protocol = "http1"` and
  `"auto"` (h2 by ALPN), against nginx `proxy_pass https://` to an `upstream {{ keepalive 32; }}`
  (`proxy_http_version 1.1`, `proxy_ssl_verify on` against the same CA, `proxy_ssl_session_reuse
  on`, TLS 1.2–1.3); and the gateway in front of the floor's bare tonic Check as a gRPC backend
  (`protocol = "http2"`, h2c; the load is gRPC Check through the proxy) against nginx `grpc_pass
  grpc://` with keep-alive. The client side is plaintext in both (HTTP/1.1, or h2c for gRPC).
- Every answer is checked: the gRPC `status.code` (0 allow, 7 deny) or the HTTP status. A wrong
  answer counts as an error; the error column must be 0 everywhere.
- Rounds are interleaved: each round measures every scenario once, in the order of the table, so
  drift on the machine hits every side of a ratio alike. A ratio is computed per round (A and B
  from the same round) and reported as the median over rounds with the min–max in brackets;
  throughputs likewise. Latency percentiles are medians of the rounds' percentiles (HDR histogram).
- "Server CPU per request" is the CPU time (/proc/PID/stat utime+stime, all processes serving the
  scenario) during the measurement divided by its answers. Each comparison is given twice: from
  throughput (or p50 latency), and from CPU per request — B's CPU per request over A's for a ratio
  (what the throughput ratio is when both sides are CPU-bound on their core), A's minus B's in µs
  for added latency, 1 − B/A in % for a cost. On a machine shared with other work (builds,
  profilers), that work steals the servers' core and throughput swings from round to round, but
  CPU per request barely moves: **read the CPU column first when the throughput spread is wide.**
- The decision log is written where an operator's would be: each authz-server's stderr goes to a
  file (in the run's temporary directory); "log off" is `RUST_LOG=off`.
- Peak RSS is `VmHWM` of each process at the end of the run (after every scenario, the heaviest
  included).

## The issue's figures, and the rest

{comparisons}
## Every scenario

{scenario_table}
## Upstream connections and TLS handshakes

What the gateway counted on its admin `/metrics` around each measurement of the scenarios with a
backend behind TLS or HTTP/2 (`gateway_upstream_connections_total`,
`gateway_upstream_tls_handshakes_total`, and `gateway_requests_total` for the requests), summed
over the rounds. Connections are pooled and kept across rounds, so a handshake per request would
show as about one handshake per request here; a pool shows a few per run.

{upstream}
## Peak memory

{rss}{notes}"#,
        scenarios = results.scenarios.len(),
        rounds = options.rounds,
        seconds = options.seconds,
        warmup = options.warmup,
        minutes = elapsed.as_secs_f64() / 60.0,
        date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        built = command_output(
            "date",
            &[
                "-u",
                "+%Y-%m-%d %H:%M UTC",
                "-r",
                &options.bin_dir.join("authz-server").display().to_string()
            ]
        ),
        cpu = cpu_model(),
        kernel = command_output("uname", &["-r"]),
        svg = svg.display(),
        concurrency = options.concurrency,
        connections = options.connections,
        rate = options.rate,
        comparisons = results.comparisons_table(),
        scenario_table = results.scenarios_table(),
        upstream = results.upstream_table(),
        rss = results.rss_table(),
    )
}
