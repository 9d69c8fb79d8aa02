use std::collections::HashMap;

use opentelemetry::trace::TraceContextExt;

use super::*;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn no_endpoint_means_off() {
    let env: HashMap<&str, &str> = HashMap::new();
    assert_eq!(
        endpoint_from(None, |k| env.get(k).map(std::string::ToString::to_string)),
        None
    );
}

#[test]
fn the_flag_beats_the_traces_variable_which_beats_the_generic_one() {
    let mut env = HashMap::from([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
    ]);
    let get = |env: &HashMap<&str, &str>, flag| {
        endpoint_from(flag, |k| env.get(k).map(std::string::ToString::to_string))
    };
    assert_eq!(
        get(&env, Some("http://flag:4317")).as_deref(),
        Some("http://flag:4317")
    );
    assert_eq!(get(&env, None).as_deref(), Some("http://traces:4317"));
    env.insert("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", " ");
    assert_eq!(get(&env, None).as_deref(), Some("http://generic:4317"));
    env.insert("OTEL_SDK_DISABLED", "TRUE");
    assert_eq!(get(&env, Some("http://flag:4317")), None);
    env.remove("OTEL_SDK_DISABLED");
    env.insert("OTEL_TRACES_EXPORTER", "none");
    assert_eq!(get(&env, None), None);
}

#[test]
fn traceparent_round_trips_through_http_headers() {
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", PARENT.parse().unwrap());
    headers.insert("tracestate", "vendor=opaque".parse().unwrap());
    let cx = extract(&Headers(&headers));
    let span = cx.span();
    let parent = span.span_context();
    assert!(parent.is_remote());
    assert_eq!(
        parent.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
    assert!(parent.is_sampled());

    let mut out = http::HeaderMap::new();
    out.insert("traceparent", "stale".parse().unwrap());
    inject(&cx, &mut out);
    assert_eq!(out["traceparent"], PARENT);
    assert_eq!(out["tracestate"], "vendor=opaque");
}

#[test]
fn grpc_metadata_is_a_source_too() {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("traceparent", PARENT.parse().unwrap());
    assert!(has_traceparent(&Metadata(&metadata)));
    let cx = extract(&Metadata(&metadata));
    assert_eq!(
        cx.span().span_context().span_id().to_string(),
        "00f067aa0ba902b7"
    );
}

#[test]
fn a_malformed_traceparent_starts_a_new_trace() {
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", "00-zz-00f067aa0ba902b7-01".parse().unwrap());
    let cx = extract(&Headers(&headers));
    assert!(!cx.span().span_context().is_valid());
}

// Inside the binary's runtime, as authz-server starts it: a bad endpoint is an error, not a
// panic (dropping the export runtime there would be one), and tracing stays off.
#[tokio::test]
async fn a_bad_endpoint_is_an_error_inside_a_runtime() {
    let started = start::<tracing_subscriber::Registry>("not a url", "test");
    let Err(error) = started else {
        panic!("a malformed endpoint started an exporter");
    };
    assert!(
        error
            .to_string()
            .starts_with("OpenTelemetry exporter for not a url: ")
    );
    assert!(!enabled());
}
