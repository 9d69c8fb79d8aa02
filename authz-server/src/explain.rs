//! `authz-server explain`: one request from the command line through the rules, with the trace.

use std::path::PathBuf;
use std::process::ExitCode;

use authz_server::Renders;
use authz_server::attributes::{from_v3, joined_headers};
use clap::Args;
use extauthz_proto::v3;
use rules::{Decision, Evaluation, Request, RuleSet, Trace, Transport};

/// A request described on the command line.
#[derive(Args)]
pub(crate) struct ExplainArgs {
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
pub(crate) fn run(rules: &RuleSet, args: &ExplainArgs) -> ExitCode {
    let headers = match parse_headers(&args.headers) {
        Ok(headers) => headers,
        Err(header) => {
            eprintln!("explain: header {header:?} is not `name: value`");
            return ExitCode::from(2);
        }
    };
    let mut request = from_v3(check_request(args, &headers), Renders::for_rules(rules));
    if args.transport == "http" {
        request.transport = Transport::Http;
    }
    let base_dir = args.config.as_deref().and_then(std::path::Path::parent);
    match evaluate(rules, &request, base_dir) {
        Ok((evaluation, trace)) => print(&evaluation, &trace),
        Err(error) => {
            eprintln!("explain: cannot start a runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `name: value` pairs, names lower-cased and both trimmed; else the first header that is not.
fn parse_headers(headers: &[String]) -> Result<Vec<(String, String)>, &str> {
    headers
        .iter()
        .map(|header| {
            let (name, value) = header.split_once(':').ok_or(header.as_str())?;
            Ok((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect()
}

/// The request built as the CheckRequest a proxy would send, so it goes through the same
/// conversion (and attribute dump) as one arriving over gRPC.
fn check_request(args: &ExplainArgs, headers: &[(String, String)]) -> v3::CheckRequest {
    let source_address = args.source_ip.map(|ip| v3::Address {
        address: Some(v3::address::Address::SocketAddress(v3::SocketAddress {
            address: ip.to_string(),
            ..Default::default()
        })),
    });
    let http = v3::attribute_context::HttpRequest {
        method: args.method.clone(),
        path: args.path.clone(),
        host: args.host.clone(),
        headers: joined_headers(headers.iter().cloned())
            .into_iter()
            .collect(),
        ..Default::default()
    };
    v3::CheckRequest {
        attributes: Some(v3::AttributeContext {
            source: Some(v3::attribute_context::Peer {
                address: source_address,
                principal: args.principal.clone(),
                ..Default::default()
            }),
            request: Some(v3::attribute_context::Request {
                time: None,
                http: Some(http),
            }),
            ..Default::default()
        }),
    }
}

/// Evaluates with the same hooks the server would use: databases are queried and JWKS URLs
/// fetched, so the answer is the one a real check would get.
fn evaluate(
    rules: &RuleSet,
    request: &Request,
    base_dir: Option<&std::path::Path>,
) -> std::io::Result<(Evaluation, Trace)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut trace = Trace::new();
    let evaluation = runtime.block_on(async {
        let hooks = authz_server::hooks::connect(rules, base_dir).await;
        rules.evaluate_traced(request, &hooks, &mut trace).await
    });
    Ok((evaluation, trace))
}

/// The decision, its rule, the trace and what the proxy would be told; the exit code for it.
fn print(evaluation: &Evaluation, trace: &Trace) -> ExitCode {
    println!(
        "decision: {} (rule: {})",
        evaluation.decision.outcome(),
        evaluation.rule.as_deref().unwrap_or("default")
    );
    for line in trace {
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
