//! Medians, spreads and ratios of the samples, and the report they make: `BENCHMARKS.md`'s tables
//! and the console summary.

use std::fmt::Write as _;

use super::upstreams::{self, Counts};
use super::{Results, Sample};

/// A median with the spread of the values it came from.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// The middle value (mean of the two middle ones for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when empty.
    pub fn of(mut values: Vec<f64>) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: values[0],
            max: values[n - 1],
        })
    }

    fn show(&self, digits: usize) -> String {
        if self.min == self.max {
            format!("{:.digits$}", self.median)
        } else {
            format!(
                "{:.digits$} ({:.digits$}–{:.digits$})",
                self.median, self.min, self.max
            )
        }
    }
}

/// What a comparison computes per round, from the two scenarios' samples of that round.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Throughput of A over throughput of B.
    Ratio,
    /// p50 latency of A minus that of B, µs.
    Added,
    /// How much slower A is than B: 1 − rps(A)/rps(B), in percent.
    Cost,
}

/// A figure the report states: A against B, per round, median and spread.
pub struct Comparison {
    /// What it says.
    pub label: &'static str,
    /// How A and B are compared.
    pub kind: Kind,
    /// Scenario A.
    pub a: &'static str,
    /// Scenario B.
    pub b: &'static str,
    /// The target, when it sets one.
    pub target: &'static str,
}

/// The table first (with targets), then the other comparisons.
pub const COMPARISONS: &[Comparison] = &[
    Comparison {
        label: "authz-server, one header rule vs floor",
        kind: Kind::Ratio,
        a: "header rule v3",
        b: "floor v3",
        target: "≥ 0.95",
    },
    Comparison {
        label: "authz-server, Istio default allow (dump rendered) vs floor",
        kind: Kind::Ratio,
        a: "istio default allow",
        b: "floor v3",
        target: "≥ 0.85",
    },
    Comparison {
        label: "authz-server, 200 rules (deciding rule last) vs floor",
        kind: Kind::Ratio,
        a: "200 rules",
        b: "floor v3",
        target: "≥ 0.80",
    },
    Comparison {
        label: "gateway + gRPC ext_authz vs nginx auth_request (HTTP mode)",
        kind: Kind::Ratio,
        a: "gateway + grpc authz",
        b: "nginx auth_request",
        target: "≥ 1.0",
    },
    Comparison {
        label: "latency gRPC ext_authz adds to a gateway request, c=1, p50 (µs)",
        kind: Kind::Added,
        a: "gateway + grpc authz, c=1",
        b: "gateway, c=1",
        target: "< 50",
    },
    Comparison {
        label: "gateway → HTTPS backend (HTTP/1.1, pooled) vs nginx proxy_pass https:// (keepalive)",
        kind: Kind::Ratio,
        a: upstreams::HTTPS_HTTP1,
        b: upstreams::NGINX_HTTPS,
        target: "≥ 1.0",
    },
    Comparison {
        label: "gateway → HTTPS backend (protocol auto: h2 by ALPN) vs nginx proxy_pass https://",
        kind: Kind::Ratio,
        a: upstreams::HTTPS_ALPN,
        b: upstreams::NGINX_HTTPS,
        target: "≥ 1.0",
    },
    Comparison {
        label: "gateway → gRPC backend (h2c) vs nginx grpc_pass (keepalive)",
        kind: Kind::Ratio,
        a: upstreams::GRPC,
        b: upstreams::NGINX_GRPC,
        target: "≥ 1.0",
    },
    Comparison {
        label: "gateway (no policy) vs nginx plain proxy",
        kind: Kind::Ratio,
        a: "gateway",
        b: "nginx proxy",
        target: "≥ 1.0",
    },
    Comparison {
        label: "decision log at the default level vs logging off (cost, %)",
        kind: Kind::Cost,
        a: "header rule v3",
        b: "header rule v3, log off",
        target: "< 3",
    },
    Comparison {
        label: "authz-server, Istio default deny (every rule, dump) vs floor",
        kind: Kind::Ratio,
        a: "istio default deny",
        b: "floor v3",
        target: "",
    },
    Comparison {
        label: "v2 API: header rule vs floor",
        kind: Kind::Ratio,
        a: "header rule v2",
        b: "floor v2",
        target: "",
    },
    Comparison {
        label: "v2 vs v3, header rule",
        kind: Kind::Ratio,
        a: "header rule v2",
        b: "header rule v3",
        target: "",
    },
    Comparison {
        label: "HTTP mode vs gRPC, header rule",
        kind: Kind::Ratio,
        a: "header rule, HTTP mode",
        b: "header rule v3",
        target: "",
    },
    Comparison {
        label: "SQLite API key (cached) vs floor",
        kind: Kind::Ratio,
        a: "sqlite key, cached",
        b: "floor v3",
        target: "",
    },
    Comparison {
        label: "SQLite API key (cached) vs header rule",
        kind: Kind::Ratio,
        a: "sqlite key, cached",
        b: "header rule v3",
        target: "",
    },
    Comparison {
        label: "JWT HS256 vs floor",
        kind: Kind::Ratio,
        a: "jwt HS256",
        b: "floor v3",
        target: "",
    },
    Comparison {
        label: "JWT RS256 vs floor",
        kind: Kind::Ratio,
        a: "jwt RS256",
        b: "floor v3",
        target: "",
    },
    Comparison {
        label: "JWT ES256 vs floor",
        kind: Kind::Ratio,
        a: "jwt ES256",
        b: "floor v3",
        target: "",
    },
    Comparison {
        label: "JWT EdDSA vs floor",
        kind: Kind::Ratio,
        a: "jwt EdDSA",
        b: "floor v3",
        target: "",
    },
    Comparison {
        label: "gateway (no policy) vs backend direct",
        kind: Kind::Ratio,
        a: "gateway",
        b: "backend direct",
        target: "",
    },
    Comparison {
        label: "nginx plain proxy vs backend direct",
        kind: Kind::Ratio,
        a: "nginx proxy",
        b: "backend direct",
        target: "",
    },
    Comparison {
        label: "gateway → gRPC backend vs the gRPC backend direct (floor v3)",
        kind: Kind::Ratio,
        a: upstreams::GRPC,
        b: "floor v3",
        target: "",
    },
    Comparison {
        label: "nginx grpc_pass vs the gRPC backend direct (floor v3)",
        kind: Kind::Ratio,
        a: upstreams::NGINX_GRPC,
        b: "floor v3",
        target: "",
    },
    Comparison {
        label: "gateway + HTTP ext_authz vs nginx auth_request",
        kind: Kind::Ratio,
        a: "gateway + http authz",
        b: "nginx auth_request",
        target: "",
    },
    Comparison {
        label: "latency HTTP ext_authz adds to a gateway request, c=1, p50 (µs)",
        kind: Kind::Added,
        a: "gateway + http authz, c=1",
        b: "gateway, c=1",
        target: "",
    },
    Comparison {
        label: "latency auth_request adds to an nginx request, c=1, p50 (µs)",
        kind: Kind::Added,
        a: "nginx auth_request, c=1",
        b: "nginx proxy, c=1",
        target: "",
    },
];

impl Results {
    fn samples_of(&self, name: &str) -> Option<&[Sample]> {
        let index = self.scenarios.iter().position(|s| s.name == name)?;
        Some(&self.samples[index])
    }

    /// The comparison's value per round: (from throughput or latency, from server CPU per request).
    pub fn compare(&self, comparison: &Comparison) -> Option<(Spread, Spread)> {
        let (a, b) = (
            self.samples_of(comparison.a)?,
            self.samples_of(comparison.b)?,
        );
        let pairs = a.iter().zip(b);
        let values = pairs
            .clone()
            .map(|(a, b)| match comparison.kind {
                Kind::Ratio => a.report.rps / b.report.rps,
                Kind::Added => a.report.p50_us - b.report.p50_us,
                Kind::Cost => 100.0 * (1.0 - a.report.rps / b.report.rps),
            })
            .collect();
        // The same figure from server CPU per request instead of answers per second: what the
        // throughput figure would be if both sides were CPU-bound on their core. Other work on
        // the machine steals time from the servers but does not change their CPU per request,
        // so this one stays steady on a shared machine where throughput swings.
        let cpu = pairs
            .map(|(a, b)| {
                let (a, b) = (a.cpu_us_per_request(), b.cpu_us_per_request());
                match comparison.kind {
                    Kind::Ratio => b / a,
                    Kind::Added => a - b,
                    Kind::Cost => 100.0 * (1.0 - b / a),
                }
            })
            .collect();
        Some((Spread::of(values)?, Spread::of(cpu)?))
    }

    /// Scenario `index`'s median throughput, percentiles and CPU per request.
    pub fn medians(&self, index: usize) -> Option<ScenarioFigures> {
        let samples = &self.samples[index];
        let pick = |f: fn(&Sample) -> f64| Spread::of(samples.iter().map(f).collect());
        Some(ScenarioFigures {
            rps: pick(|s| s.report.rps)?,
            p50: pick(|s| s.report.p50_us)?.median,
            p90: pick(|s| s.report.p90_us)?.median,
            p99: pick(|s| s.report.p99_us)?.median,
            p999: pick(|s| s.report.p999_us)?.median,
            cpu_us: pick(Sample::cpu_us_per_request)?.median,
            errors: samples.iter().map(|s| s.report.errors).sum(),
        })
    }

    /// Every error any measurement saw, as `scenario: first error`.
    pub fn errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (scenario, samples) in self.scenarios.iter().zip(&self.samples) {
            for sample in samples {
                if sample.report.errors > 0 || sample.report.requests == 0 {
                    errors.push(format!(
                        "{}: {} errors, {} good answers; first error: {}",
                        scenario.name,
                        sample.report.errors,
                        sample.report.requests,
                        sample.report.first_error.as_deref().unwrap_or("none")
                    ));
                }
            }
        }
        errors
    }

    /// The comparisons table (markdown).
    pub fn comparisons_table(&self) -> String {
        let mut out = String::from(
            "| comparison | A | B | measured: throughput ratio A/B, or µs, or % — median (min–max) | the same from server CPU per request | target |\n|---|---|---|---|---|---|\n",
        );
        for c in COMPARISONS {
            if let Some((value, cpu)) = self.compare(c) {
                let digits = match c.kind {
                    Kind::Ratio => 2,
                    Kind::Added | Kind::Cost => 1,
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    c.label,
                    c.a,
                    c.b,
                    value.show(digits),
                    cpu.show(2),
                    c.target
                );
            }
        }
        out
    }

    /// The per-scenario table (markdown).
    pub fn scenarios_table(&self) -> String {
        let mut out = String::from(
            "| scenario | load | answers/s, median (min–max) | p50 µs | p90 µs | p99 µs | p99.9 µs | server CPU µs/req | errors |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for (index, scenario) in self.scenarios.iter().enumerate() {
            let Some(f) = self.medians(index) else {
                continue;
            };
            let load = match scenario.rate {
                Some(rate) => format!("open {rate:.0}/s, ≤{} in flight", scenario.concurrency),
                None => format!("closed, {} in flight", scenario.concurrency),
            };
            let _ = writeln!(
                out,
                "| {} | {load} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {} |",
                scenario.name,
                f.rps.show(0),
                f.p50,
                f.p90,
                f.p99,
                f.p999,
                f.cpu_us,
                f.errors
            );
        }
        out
    }

    /// Each counted scenario's upstream counts over all its rounds (warm-up included), and
    /// whether its backend is behind TLS.
    pub fn upstream_counts(&self) -> Vec<(&str, bool, Counts)> {
        self.scenarios
            .iter()
            .zip(&self.samples)
            .filter_map(|(scenario, samples)| {
                let counted = scenario.counted?;
                let sum = samples
                    .iter()
                    .filter_map(|s| s.upstream)
                    .fold(Counts::default(), |sum, c| sum.plus(&c));
                Some((scenario.name.as_str(), counted.tls, sum))
            })
            .collect()
    }

    /// The upstream connections table (markdown): new connections and TLS handshakes per
    /// proxied request, as the gateway counts them.
    pub fn upstream_table(&self) -> String {
        let mut out = String::from(
            "| scenario | requests (all rounds, warm-up included) | new upstream connections | TLS handshakes | handshakes per request |\n|---|---|---|---|---|\n",
        );
        for (name, tls, c) in self.upstream_counts() {
            let per_request = match (tls, c.requests > 0.0) {
                (false, _) => "— (h2c, no TLS)".to_owned(),
                (true, true) => format!("{:.6}", c.handshakes / c.requests),
                (true, false) => "no requests".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {name} | {:.0} | {:.0} | {:.0} | {per_request} |",
                c.requests, c.connections, c.handshakes
            );
        }
        out
    }

    /// What is wrong with the counted scenarios' upstream connections: more connections or TLS
    /// handshakes than a pool needs (`limit`, over all rounds) — a handshake per request shows
    /// here — or none at all (the counter is missing, or its name changed).
    pub fn upstream_problems(&self, limit: f64) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, tls, c) in self.upstream_counts() {
            let mut counted = vec![("connections", c.connections)];
            if tls {
                counted.push(("TLS handshakes", c.handshakes));
            }
            for (what, value) in counted {
                if value > limit {
                    problems.push(format!(
                        "{name}: {value:.0} upstream {what} for {:.0} requests (a pool needs at most {limit:.0})",
                        c.requests
                    ));
                } else if value < 1.0 && c.requests > 0.0 {
                    problems.push(format!(
                        "{name}: no upstream {what} counted for {:.0} requests (is the gateway's counter missing?)",
                        c.requests
                    ));
                }
            }
        }
        problems
    }

    /// The peak-RSS table (markdown), heaviest first.
    pub fn rss_table(&self) -> String {
        let mut rows = self.peak_rss.clone();
        rows.sort_by_key(|row| std::cmp::Reverse(row.2));
        let mut out = String::from("| process | binary | peak RSS (VmHWM) |\n|---|---|---|\n");
        for (name, binary, kib) in rows {
            let _ = writeln!(
                out,
                "| {name} | {binary} | {:.1} MiB |",
                kib as f64 / 1024.0
            );
        }
        out
    }
}

/// One scenario's medians.
pub struct ScenarioFigures {
    /// Good answers per second.
    pub rps: Spread,
    /// Median of each round's p50, µs.
    pub p50: f64,
    /// p90, µs.
    pub p90: f64,
    /// p99, µs.
    pub p99: f64,
    /// p99.9, µs.
    pub p999: f64,
    /// Server CPU per answer, µs.
    pub cpu_us: f64,
    /// Errors over all rounds.
    pub errors: u64,
}
