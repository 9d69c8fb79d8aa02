//! Log setup: the background writer every log line goes through (the access log's too), the
//! `RUST_LOG` filter, and OpenTelemetry tracing when an OTLP endpoint is given.

use crate::access_log;
use crate::log_format::LogFormat;

/// Keeps the log-writing thread alive; dropping it writes out every line still queued (hold it
/// until the process is done serving).
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    // Dropped first: the exporter flushes the spans still queued, then the log writer its lines.
    _tracing: Option<telemetry::Tracing>,
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

/// How many log lines may wait for the writer thread; past that, lines are dropped rather than
/// make a request wait (the writer drains thousands of lines per millisecond, so only a stalled
/// stderr fills it).
const QUEUED_LINES: usize = 64 * 1024;

impl Drop for LogGuard {
    fn drop(&mut self) {
        // The access-log lines still batched go to the writer before it stops (the fields,
        // the writer's guard included, are dropped after this).
        access_log::flush();
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); stdout stays for `listening` lines.
pub fn init_tracing() -> LogGuard {
    init_logging(LogFormat::Text)
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`).
///
/// Lines are handed to a background thread that writes them in batches: the request path never
/// makes a `write` to stderr of its own (one syscall per request before; the access log is on
/// every request) and never blocks on a slow reader of stderr.
pub fn init_logging(format: LogFormat) -> LogGuard {
    use std::io::IsTerminal;
    let (writer, guard, filter) = log_writer(format);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    LogGuard {
        _tracing: None,
        _writer: guard,
    }
}

/// [`init_logging`], and OpenTelemetry tracing when `otlp_endpoint` is set (the `telemetry`
/// crate: spans exported over OTLP/gRPC in batches; see docs/tracing.md). With tracing on, the
/// log filter moves from the subscriber to the log layer, so `RUST_LOG` decides log lines only
/// and cannot silence the spans, and the log layer never sees the spans.
pub fn init_logging_and_tracing(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> Result<LogGuard, telemetry::StartError> {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer as _;
    let Some(endpoint) = otlp_endpoint else {
        return Ok(init_logging(format));
    };
    let (writer, guard, filter) = log_writer(format);
    let logs = tracing_subscriber::fmt::layer().with_writer(writer);
    let logs = match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => logs.json().boxed(),
    };
    let tracing = telemetry::install(logs, filter, endpoint, "gateway")?;
    Ok(LogGuard {
        _tracing: Some(tracing),
        _writer: guard,
    })
}

/// The background log writer (shared with the access log) and `RUST_LOG`'s filter.
fn log_writer(
    format: LogFormat,
) -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
    tracing_subscriber::EnvFilter,
) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .thread_name("log-writer")
        // The worker writes every queued line, then flushes: one write per batch.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    // The access log bypasses the formatter (see `access_log`) but shares the writer.
    access_log::install(writer.clone(), format);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    (writer, guard, filter)
}
