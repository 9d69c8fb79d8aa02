//! The runner: starts the real binaries, the floors and nginx, measures every scenario in
//! interleaved rounds (all scenarios once per round, so drift on a shared machine hits every
//! side alike), and reports medians with their spread.
//!
//! The load generator is the `loadgen` binary, run once per measurement pinned to CPU 0; every
//! server runs pinned to CPU 1 with one runtime worker (`TOKIO_WORKER_THREADS=1`, nginx
//! `worker_processes 1`). The runner builds nothing: it takes the binaries from `--bin-dir`.

pub mod fixtures;
mod options;
pub mod procs;
pub mod scenarios;
pub mod starter;
pub mod summary;
pub mod svg;
pub mod upstreams;

use std::process::Command;

use anyhow::{Context, bail};

use crate::report::RunReport;
use starter::{Load, Scenario};

pub use options::Options;

/// One measurement of one scenario.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What the load generator saw.
    pub report: RunReport,
    /// CPU seconds the scenario's server processes used during the measurement (warm-up included).
    pub server_cpu: f64,
    /// Wall seconds of the measurement (warm-up included).
    pub wall: f64,
    /// The gateway's new upstream connections, TLS handshakes and requests during the
    /// measurement (warm-up included), when the scenario counts them.
    pub upstream: Option<upstreams::Counts>,
}

impl Sample {
    /// Server CPU per good answer, µs (the warm-up's answers estimated at the measured rate).
    pub fn cpu_us_per_request(&self) -> f64 {
        let answers = self.report.rps * self.wall;
        if answers > 0.0 {
            self.server_cpu * 1e6 / answers
        } else {
            0.0
        }
    }
}

/// Every scenario's samples, one per round.
pub struct Results {
    /// The scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// `samples[i]` are scenario i's rounds.
    pub samples: Vec<Vec<Sample>>,
    /// Peak RSS (KiB) per server process at the end, with its name and binary.
    pub peak_rss: Vec<(String, String, u64)>,
    /// Notes on what was not run.
    pub skipped: Vec<String>,
}

/// Runs everything; returns the samples.
pub fn run(options: &Options) -> anyhow::Result<Results> {
    let dir = std::env::temp_dir().join(format!("authz-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(options, &dir);
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("bench: server logs kept in {}", dir.display());
    }
    result
}

fn run_in(options: &Options, dir: &std::path::Path) -> anyhow::Result<Results> {
    let setup = scenarios::setup(options, dir)?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); setup.scenarios.len()];
    for round in 0..options.rounds {
        eprintln!("bench: round {}/{}", round + 1, options.rounds);
        for (index, scenario) in setup.scenarios.iter().enumerate() {
            let sample = measure(options, scenario, &setup.servers)
                .with_context(|| format!("measuring {}", scenario.name))?;
            let upstream = sample.upstream.map_or_else(String::new, |u| {
                format!(
                    "  upstream: {:.0} connections, {:.0} TLS handshakes, {:.0} requests",
                    u.connections, u.handshakes, u.requests
                )
            });
            eprintln!(
                "  {:<36} {:>9.0} rps  p50 {:>8.1} µs  p99 {:>8.1} µs  cpu {:>6.1} µs/req  errors {}{upstream}",
                scenario.name,
                sample.report.rps,
                sample.report.p50_us,
                sample.report.p99_us,
                sample.cpu_us_per_request(),
                sample.report.errors
            );
            samples[index].push(sample);
        }
    }
    let peak_rss = setup
        .servers
        .iter()
        .filter_map(|s| Some((s.name.clone(), s.binary.clone(), s.peak_rss_kib()?)))
        .collect();
    Ok(Results {
        scenarios: setup.scenarios,
        samples,
        peak_rss,
        skipped: setup.skipped,
    })
}

fn measure(
    options: &Options,
    scenario: &Scenario,
    servers: &[procs::Server],
) -> anyhow::Result<Sample> {
    let loadgen = options.bin_dir.join("loadgen");
    let mut command = procs::pinned(procs::LOAD_CPU, &loadgen, procs::can_pin());
    let headers = match &scenario.load {
        Load::Grpc {
            address,
            api,
            headers,
            expect_code,
        } => {
            command
                .args(["grpc", "--address", &address.to_string(), "--api", api])
                .args(["--connections", &options.connections.to_string()])
                .args(["--expect-code", &expect_code.to_string()]);
            headers
        }
        Load::Http {
            address,
            path,
            headers,
            expect_status,
        } => {
            command
                .args(["http", "--address", &address.to_string(), "--path", path])
                .args(["--expect-status", &expect_status.to_string()]);
            headers
        }
    };
    for (name, value) in headers {
        command.arg("--header").arg(format!("{name}={value}"));
    }
    command
        .args(["--scenario", &scenario.name])
        .args(["--concurrency", &scenario.concurrency.to_string()])
        .args(["--seconds", &options.seconds.to_string()])
        .args(["--warmup", &options.warmup.to_string()]);
    if let Some(rate) = scenario.rate {
        command.args(["--rate", &rate.to_string()]);
    }
    let cpu = |servers: &[procs::Server]| -> f64 {
        scenario
            .servers
            .iter()
            .map(|i| servers[*i].cpu_seconds())
            .sum()
    };
    let admin = scenario.counted.map(|c| c.admin);
    let counts_before = admin.map(upstreams::counts).transpose()?;
    let cpu_before = cpu(servers);
    let started = std::time::Instant::now();
    let output = command
        .output()
        .with_context(|| format!("running {}", loadgen.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let server_cpu = cpu(servers) - cpu_before;
    let upstream = match (admin, counts_before) {
        (Some(admin), Some(before)) => Some(upstreams::counts(admin)?.since(&before)),
        _ => None,
    };
    if !output.status.success() {
        bail!(
            "loadgen failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().context("loadgen printed nothing")?;
    let report: RunReport =
        serde_json::from_str(line).with_context(|| format!("loadgen printed `{line}`"))?;
    // The connect time is in `wall` but not in the warm-up: count only the loaded part.
    let loaded = (options.seconds + options.warmup).min(wall);
    Ok(Sample {
        report,
        server_cpu,
        wall: loaded,
        upstream,
    })
}

/// The checkout's commit and whether the tree has changes, for the report: the short form
/// (`abc1234 + uncommitted changes in N files`) and the changed files.
pub fn commit() -> (String, Vec<String>) {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let changed: Vec<String> = git(&["status", "--porcelain", "--untracked-files=no"])
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.get(3..).map(str::to_owned))
        .collect();
    if changed.is_empty() {
        (head, changed)
    } else {
        (
            format!("{head} + uncommitted changes in {} files", changed.len()),
            changed,
        )
    }
}
