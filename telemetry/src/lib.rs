//! OpenTelemetry tracing for `authz-server` and `gateway`.
//!
//! Off unless an OTLP endpoint is configured ([`endpoint`]): then [`start`] installs a batch
//! exporter (OTLP over gRPC, spans queued and sent by a background worker) and a
//! `tracing-opentelemetry` layer that sees only spans of target [`TARGET`], and flips the
//! switch [`enabled`]. Every span on a request path is built behind that switch, so with tracing
//! off a request pays one relaxed atomic load per hook and no span is constructed.
//!
//! Context travels as W3C trace context (`traceparent`, `tracestate`): [`extract`] reads it from
//! any carrier (HTTP headers, gRPC metadata, the header map inside a `CheckRequest`), [`inject`]
//! writes a span's context into outgoing HTTP headers.
//!
//! What a span may carry is decided in each binary's own `telemetry` module, which names every
//! attribute it sets: methods, hosts, paths without their query, route/policy/rule/database
//! names, outcomes and status codes — never a header value, a token or a query string.
//!
//! [`UtcDateTime`] turns a log line's Unix time into the UTC date and time it prints.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, Filtered};

mod utc;

pub use opentelemetry::Context;
pub use tracing_opentelemetry::OpenTelemetrySpanExt;
pub use utc::UtcDateTime;

/// The `tracing` target of every span meant for OpenTelemetry. The OTLP layer sees these spans
/// and nothing else (no log events, no library spans); the log formatter skips them.
pub const TARGET: &str = "otel";

/// The switch the request paths test before building a span or touching a header.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported. A relaxed load: the switch is set once, before serving.
#[inline(always)]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The environment variables that name an OTLP endpoint, most specific first (the
/// OpenTelemetry specification's names).
pub const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The OTLP endpoint to export to, or `None` (tracing off): `flag` (a binary's
/// `--otlp-endpoint`) first, then [`ENDPOINT_VARS`]. `OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none` turn tracing off whatever is set.
pub fn endpoint(flag: Option<&str>) -> Option<String> {
    endpoint_from(flag, |name| std::env::var(name).ok())
}

fn endpoint_from(flag: Option<&str>, var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let is =
        |name: &str, value: &str| var(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value));
    if is("OTEL_SDK_DISABLED", "true") || is("OTEL_TRACES_EXPORTER", "none") {
        return None;
    }
    flag.map(str::to_owned)
        .into_iter()
        .chain(ENDPOINT_VARS.iter().filter_map(|name| var(name)))
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty())
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry exporter for {endpoint}: {reason}")]
pub struct StartError {
    endpoint: String,
    reason: StartFailure,
}

/// What failed when tracing started.
#[derive(Debug, thiserror::Error)]
pub enum StartFailure {
    /// The export runtime could not be built.
    #[error("export runtime: {0}")]
    Runtime(std::io::Error),
    /// The endpoint or the exporter's settings are unusable.
    #[error("{0}")]
    Exporter(opentelemetry_otlp::ExporterBuildError),
}

/// The running exporter: the tracer provider and the small runtime its gRPC channel runs on.
/// Dropping it (or [`Tracing::shutdown`]) exports the spans still queued, then stops.
#[must_use = "dropping it shuts the exporter down"]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The layer that turns [`TARGET`] spans into OpenTelemetry spans, for any registry-based
/// subscriber.
pub type OtelLayer<S> = Filtered<
    tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
    FilterFn,
    S,
>;

/// Starts exporting to `endpoint` as `service` (unless `OTEL_SERVICE_NAME` names it) and
/// returns the layer to add to the subscriber.
///
/// Spans are queued by the SDK's batch processor and sent from its own thread; the OTLP gRPC
/// channel runs on a one-thread runtime of its own ("otlp-export"), so export never takes a
/// request worker and tracing can start before (or without) the binary's runtime. The sampler
/// is the SDK's, from `OTEL_TRACES_SAMPLER` (default: parent-based, always on), so a client's
/// unsampled `traceparent` stays unsampled; `OTEL_BSP_*` tune the batches.
pub fn start<S>(
    endpoint: &str,
    service: &'static str,
) -> Result<(Tracing, OtelLayer<S>), StartError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let failed = |reason: StartFailure| StartError {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(|e| failed(StartFailure::Runtime(e)))?;
    let built = {
        // The channel's connection task is spawned on the export runtime.
        let _inside = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
    };
    let exporter = match built {
        Ok(exporter) => exporter,
        Err(e) => {
            // Dropping a runtime inside another one panics; this may run inside the binary's.
            runtime.shutdown_background();
            return Err(failed(StartFailure::Exporter(e)));
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer(service);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Our spans carry what they need; thread ids and source locations are noise (and
        // cost) on every span.
        .with_threads(false)
        .with_location(false)
        .with_filter(FilterFn::new(
            for_exporter as fn(&tracing::Metadata<'_>) -> bool,
        ));
    ENABLED.store(true, Ordering::Relaxed);
    Ok((
        Tracing {
            provider: Some(provider),
            runtime: Some(runtime),
        },
        layer,
    ))
}

/// A log layer for [`install`], built by the binary (text or JSON, its writer).
pub type LogLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Installs the process's subscriber with tracing on: `logs` filtered by `filter` (so
/// `RUST_LOG` decides log lines only and cannot silence the spans) and never seeing
/// [`TARGET`] spans (log lines keep their shape), plus the exporter's layer ([`start`]).
pub fn install(
    logs: LogLayer,
    filter: tracing_subscriber::EnvFilter,
    endpoint: &str,
    service: &'static str,
) -> Result<Tracing, StartError> {
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let logs = logs.with_filter(filter.and(tracing_subscriber::filter::filter_fn(for_logs)));
    let subscriber = tracing_subscriber::registry().with(logs);
    let (tracing, spans) = start(endpoint, service)?;
    // Fails only when a subscriber is already installed (a test harness): keep that one.
    let _ = subscriber.with(spans).try_init();
    Ok(tracing)
}

/// Whether the exporter's layer sees this span: [`TARGET`] spans only.
fn for_exporter(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == TARGET
}

/// Whether a log layer should see this span or event: everything but [`TARGET`] spans, which
/// are for the exporter only (with them, log lines would change shape when tracing is on).
fn for_logs(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() != TARGET
}

impl Tracing {
    /// Stops building spans, exports those still queued (bounded by the exporter's timeout,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by default) and stops the export runtime. Blocks
    /// the calling thread while it flushes.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
        if let Some(runtime) = self.runtime.take() {
            // Allowed from inside another runtime, unlike dropping it.
            runtime.shutdown_background();
        }
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The trace context in `carrier`, or an empty context (a new trace starts) when it has none
/// or an invalid one.
pub fn extract(carrier: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract(carrier)
}

/// Whether `carrier` holds a `traceparent` at all.
pub fn has_traceparent(carrier: &dyn Extractor) -> bool {
    carrier.get("traceparent").is_some()
}

/// Writes `cx` as `traceparent` (and `tracestate`) into `headers`, replacing what was there.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// HTTP headers as a trace-context source.
pub struct Headers<'a>(pub &'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// gRPC request metadata as a trace-context source.
pub struct Metadata<'a>(pub &'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests;
