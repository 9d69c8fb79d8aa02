//! The decision line written by our own code: a fixed layout into a reused per-thread buffer,
//! the seconds of the timestamp formatted once per second, the finished line handed to the
//! log writer thread (`tracing_appender::non_blocking`) in one write. It reproduces, byte for
//! byte, what tracing-subscriber's `fmt` layer (text without ANSI colours, or JSON) writes for
//! the same event, at a fraction of the cost: that formatter was ~14k of the ~17.5k
//! instructions the line cost per check (docs/performance.md). The RUST_LOG filter still
//! decides whether the line is written (the caller asks `tracing::enabled!` first).

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_appender::non_blocking::NonBlocking;

/// The layout of the decision line: the same as the server's `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    /// `2026-01-01T00:00:00.000000Z  INFO authz::decision: decision api="grpc" ...`
    Text,
    /// `{"timestamp":"...","level":"INFO","fields":{"message":"decision",...},"target":"authz::decision"}`
    Json,
}

/// Where installed decision lines go, and in which layout. Unset: they go through tracing.
static SINK: OnceLock<(NonBlocking, LineFormat)> = OnceLock::new();

/// Sends the per-check decision line (allow/deny, INFO) straight to `writer` in `format`
/// instead of through tracing's formatter. `writer` should be the one the `fmt` layer writes
/// to, so both kinds of line share one ordered stream. The first call wins.
pub fn write_decisions_to(writer: NonBlocking, format: LineFormat) {
    let _ = SINK.set((writer, format));
}

/// The fields of one decision line, already escaped by [`super::escape`].
pub(super) struct Fields<'a> {
    pub api: &'static str,
    pub request_id: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub outcome: &'static str,
    pub rule: &'a str,
    pub shadow: &'a str,
    pub latency_us: u64,
}

/// Per-thread state: the line buffer, a clone of the writer (no clone per line) and the
/// formatted seconds.
struct Local {
    line: Vec<u8>,
    writer: Option<NonBlocking>,
    clock: Clock,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local {
        line: Vec::with_capacity(512),
        writer: None,
        clock: Clock::default(),
    });
}

/// Writes the line if a writer is installed; false when it is not (the caller logs through
/// tracing instead).
pub(super) fn write(fields: &Fields<'_>) -> bool {
    let Some((writer, format)) = SINK.get() else {
        return false;
    };
    LOCAL.with(|local| {
        let Ok(mut local) = local.try_borrow_mut() else {
            return false;
        };
        let Local {
            line,
            writer: local_writer,
            clock,
        } = &mut *local;
        line.clear();
        render(line, clock, *format, SystemTime::now(), fields);
        // NonBlocking queues the line as one message (lossy when the writer thread is far
        // behind); an error here is that loss, which a check must not fail on.
        let _ = local_writer
            .get_or_insert_with(|| writer.clone())
            .write(line);
        true
    })
}

/// Appends one line (with its `\n`) in the layout tracing-subscriber's `fmt` layer uses.
fn render(
    out: &mut Vec<u8>,
    clock: &mut Clock,
    format: LineFormat,
    now: SystemTime,
    f: &Fields<'_>,
) {
    match format {
        LineFormat::Text => {
            clock.write(out, now);
            // `%` fields are Display (bare); string fields are Debug (quoted), as tracing does.
            out.extend_from_slice(b"  INFO authz::decision: decision api=");
            debug_str(out, f.api);
            for (name, value) in [
                (&b" request_id="[..], f.request_id),
                (b" method=", f.method),
                (b" host=", f.host),
                (b" path=", f.path),
            ] {
                out.extend_from_slice(name);
                out.extend_from_slice(value.as_bytes());
            }
            out.extend_from_slice(b" outcome=");
            debug_str(out, f.outcome);
            out.extend_from_slice(b" rule=");
            out.extend_from_slice(f.rule.as_bytes());
            out.extend_from_slice(b" shadow=");
            debug_str(out, f.shadow);
            let _ = writeln!(out, " latency_us={}", f.latency_us);
        }
        LineFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            clock.write(out, now);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"decision\"");
            for (name, value) in [
                ("api", f.api),
                ("request_id", f.request_id),
                ("method", f.method),
                ("host", f.host),
                ("path", f.path),
                ("outcome", f.outcome),
                ("rule", f.rule),
                ("shadow", f.shadow),
            ] {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
                json_str(out, value);
            }
            let _ = writeln!(
                out,
                ",\"latency_us\":{}}},\"target\":\"authz::decision\"}}",
                f.latency_us
            );
        }
    }
}

/// Nothing in `value` that `{:?}` or a JSON string would escape: printable ASCII but `"`, `\\`.
fn plain(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

/// `value` as `{:?}` writes it (quoted, escaped); copied as is when nothing needs escaping.
fn debug_str(out: &mut Vec<u8>, value: &str) {
    if plain(value) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// `value` as a JSON string, escaped by serde_json as tracing-subscriber's JSON layer does;
/// copied as is when nothing needs escaping.
fn json_str(out: &mut Vec<u8>, value: &str) {
    if plain(value) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` of the current second, rebuilt only when the second changes.
#[derive(Default)]
struct Clock {
    second: Option<u64>,
    prefix: Vec<u8>,
}

impl Clock {
    /// Appends `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (UTC, microseconds), tracing-subscriber's layout.
    fn write(&mut self, out: &mut Vec<u8>, now: SystemTime) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            self.second = Some(second);
            self.prefix.clear();
            let date_time = telemetry::UtcDateTime::from_unix_seconds(second);
            let _ = write!(self.prefix, "{date_time}.");
        }
        out.extend_from_slice(&self.prefix);
        let _ = write!(out, "{:06}Z", since.subsec_micros());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn at(secs: u64, micros: u64) -> String {
        let mut out = Vec::new();
        Clock::default().write(
            &mut out,
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
        );
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_700_000_000, 123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(at(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z");
        // A cached second is reused, a new one rebuilt.
        let mut clock = Clock::default();
        let mut out = Vec::new();
        for secs in [86_399, 86_399, 86_400] {
            out.clear();
            clock.write(&mut out, UNIX_EPOCH + Duration::from_secs(secs));
        }
        assert_eq!(out, b"1970-01-02T00:00:00.000000Z");
    }

    /// Captures what tracing-subscriber's `fmt` layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn through_tracing(format: LineFormat, fields: &Fields<'_>) -> String {
        let captured = Captured::default();
        let sink = captured.clone();
        let logs = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false);
        let dispatch = match format {
            LineFormat::Text => tracing::Dispatch::new(logs.finish()),
            LineFormat::Json => tracing::Dispatch::new(logs.json().finish()),
        };
        tracing::dispatcher::with_default(&dispatch, || super::super::via_tracing(fields));
        let bytes = captured.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    /// Our line equals tracing-subscriber's for the same event, but for the time it was taken.
    #[test]
    fn lines_match_tracing_subscribers_byte_for_byte() {
        let escaped = super::super::escape("/x\r\n\"q\"\\ \u{1b}[31m héllo");
        for shadow in ["", "probe:deny,x\"y:allow", "héllo:allow", "a\\b:deny"] {
            let fields = Fields {
                api: "grpc",
                request_id: "id-1",
                method: "GET",
                host: "a\"b",
                path: &escaped,
                outcome: "allow",
                rule: "team \"a\"",
                shadow,
                latency_us: 42,
            };
            for format in [LineFormat::Text, LineFormat::Json] {
                let theirs = through_tracing(format, &fields);
                let mut ours = Vec::new();
                let now = SystemTime::now();
                render(&mut ours, &mut Clock::default(), format, now, &fields);
                let ours = String::from_utf8(ours).expect("utf-8");
                // The timestamp is 27 bytes at the same offset in both.
                let at = if format == LineFormat::Text { 0 } else { 14 };
                let strip = |s: &str| format!("{}{}", &s[..at], &s[at + 27..]);
                assert_eq!(strip(&ours), strip(&theirs), "{format:?}");
                assert_eq!(ours.lines().count(), 1, "{ours}");
            }
        }
    }
}
