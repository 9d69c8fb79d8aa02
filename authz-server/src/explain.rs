//! `authz-server explain`: one request from the command line through the rules, with the trace.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use rules::{Decision, Peer, Request, RuleSet, Transport};

/// A request described on the command line.
#[derive(Args)]
pub struct ExplainArgs {
    /// The rule config; the built-in default when absent.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The transport the check arrives on: grpc or http.
    #[arg(long, default_value = "grpc", value_parser = ["grpc", "http"])]
    transport: String,
    /// The request method.
    #[arg(long, short = 'X', default_value = "GET")]
    method: String,
    /// The request path, with its query.
    #[arg(long, default_value = "/")]
    path: String,
    /// The authority.
    #[arg(long, default_value = "")]
    host: String,
    /// A header as `name: value`; repeat for more.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// The source principal, e.g. `spiffe://cluster.local/ns/default/sa/a`.
    #[arg(long, default_value = "")]
    principal: String,
    /// The source IP address.
    #[arg(long)]
    source_ip: Option<std::net::IpAddr>,
}

/// Prints the decision, the deciding rule and the trace. Exit 0 on allow, 1 on deny.
pub fn run(rules: &RuleSet, args: &ExplainArgs) -> ExitCode {
    let mut request = Request {
        transport: if args.transport == "http" {
            Transport::Http
        } else {
            Transport::Grpc
        },
        method: args.method.clone(),
        path: args.path.clone(),
        host: args.host.clone(),
        source: Peer {
            ip: args.source_ip,
            port: 0,
            principal: args.principal.clone(),
        },
        ..Request::default()
    };
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            eprintln!("explain: header {header:?} is not `name: value`");
            return ExitCode::from(2);
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_owned();
        request
            .headers
            .entry(name)
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    if rules.needs_received() {
        request.received = format!("{request:?}");
    }
    let evaluation = rules.decide(&request);
    println!(
        "decision: {} (rule: {})",
        evaluation.decision.outcome(),
        evaluation.rule.as_deref().unwrap_or("default")
    );
    for line in &evaluation.trace {
        println!("  {line}");
    }
    match &evaluation.decision {
        Decision::Allow(allow) => {
            for header in &allow.request_headers {
                println!("  + request header {}: {}", header.name, header.value);
            }
            ExitCode::SUCCESS
        }
        Decision::Deny(deny) => {
            println!(
                "  status {} (gRPC code {})",
                deny.http_status, deny.grpc_code
            );
            for (name, value) in &deny.headers {
                println!("  + response header {name}: {value}");
            }
            if !deny.body.is_empty() {
                println!("  body: {}", deny.body);
            }
            ExitCode::from(1)
        }
    }
}
