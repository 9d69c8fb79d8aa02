//! Steady load for the fault and soak suites: a few workers, each sending one request at a
//! time on a fixed pace, recording for every request when it started, how long it took and what
//! came back — so a test can say exactly which answers fell inside a fault window.
//!
//! The bench crate's load generator counts a fixed expected answer per scenario; a fault test
//! needs every answer, in order, with its time, so this keeps its own small loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A request that has not ended after this is recorded as hung (and frees its worker).
pub const HANG: Duration = Duration::from_secs(10);

/// One request of the load.
#[derive(Debug, Clone)]
pub struct Sample<T> {
    /// Which worker sent it.
    pub worker: usize,
    /// When it started.
    pub start: Instant,
    /// How long until the answer was complete (or failed).
    pub elapsed: Duration,
    /// What came back.
    pub value: T,
}

impl<T> Sample<T> {
    /// When it ended.
    pub fn end(&self) -> Instant {
        self.start + self.elapsed
    }
}

/// Workers sending requests until stopped.
pub struct Load<T> {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample<T>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<T: Clone + Send + 'static> Load<T> {
    /// Starts `workers` tasks; worker `w` calls `step(w)` every `pace` (or as soon as the last
    /// call ended when it took longer), recording each answer.
    pub fn start<F, Fut>(workers: usize, pace: Duration, step: F) -> Load<T>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let step = Arc::new(step);
        let tasks = (0..workers)
            .map(|worker| {
                let (stop, samples, step) = (stop.clone(), samples.clone(), step.clone());
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(pace);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(Ordering::SeqCst) {
                        ticks.tick().await;
                        let start = Instant::now();
                        let value = step(worker).await;
                        let sample = Sample {
                            worker,
                            start,
                            elapsed: start.elapsed(),
                            value,
                        };
                        samples.lock().expect("samples lock").push(sample);
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            tasks,
        }
    }

    /// The samples recorded so far (the load keeps running).
    pub fn so_far(&self) -> Vec<Sample<T>> {
        self.samples.lock().expect("samples lock").clone()
    }

    /// Stops the workers, waits for their last requests, and returns every sample in start order.
    pub async fn stop(self) -> Vec<Sample<T>> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a load worker panicked");
        }
        let mut samples = std::mem::take(&mut *self.samples.lock().expect("samples lock"));
        samples.sort_by_key(|s| s.start);
        samples
    }
}

/// What one HTTP request got.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A complete response.
    Complete {
        /// Status code.
        status: u16,
        /// Response headers.
        headers: http::HeaderMap,
        /// The whole body.
        body: Bytes,
    },
    /// The head arrived, the body broke off.
    Truncated {
        /// Status code.
        status: u16,
        /// Why the body ended.
        error: String,
    },
    /// No response (connection refused, reset before the head, ...).
    Failed(String),
    /// Nothing within [`HANG`].
    Hung,
}

impl Answer {
    /// The status, when a head arrived.
    pub fn status(&self) -> Option<u16> {
        match self {
            Answer::Complete { status, .. } | Answer::Truncated { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The body as text (empty unless complete).
    pub fn text(&self) -> String {
        match self {
            Answer::Complete { body, .. } => String::from_utf8_lossy(body).into_owned(),
            _ => String::new(),
        }
    }

    /// A response header, when complete and present.
    pub fn header(&self, name: &str) -> Option<&str> {
        match self {
            Answer::Complete { headers, .. } => headers.get(name)?.to_str().ok(),
            _ => None,
        }
    }

    /// A request header the demo backend says it received (its JSON echo).
    pub fn backend_saw(&self, name: &str) -> Option<String> {
        let Answer::Complete { body, .. } = self else {
            return None;
        };
        let json: serde_json::Value = serde_json::from_slice(body).ok()?;
        json["request"]["headers"][name].as_str().map(str::to_owned)
    }

    /// A field of the demo backend's echo of the request (`path`, `served_by`).
    pub fn backend_request(&self, field: &str) -> Option<String> {
        let Answer::Complete { body, .. } = self else {
            return None;
        };
        let json: serde_json::Value = serde_json::from_slice(body).ok()?;
        json["request"][field].as_str().map(str::to_owned)
    }
}

/// An HTTP/1.1 keep-alive client (one per worker keeps connections per worker).
pub fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An h2c (prior knowledge) client.
pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// Sends a GET to `address` + `path` with `headers` and reads the whole answer.
pub async fn get(
    client: &Client<HttpConnector, Full<Bytes>>,
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = http::Request::get(format!("http://{address}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = match request.body(Full::new(Bytes::new())) {
        Ok(request) => request,
        Err(e) => return Answer::Failed(format!("bad request: {e}")),
    };
    let exchange = async {
        let response = match client.request(request).await {
            Ok(response) => response,
            Err(e) => return Answer::Failed(format!("{e:?}")),
        };
        let (parts, body) = response.into_parts();
        match body.collect().await {
            Ok(body) => Answer::Complete {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: body.to_bytes(),
            },
            Err(e) => Answer::Truncated {
                status: parts.status.as_u16(),
                error: format!("{e:?}"),
            },
        }
    };
    tokio::time::timeout(HANG, exchange)
        .await
        .unwrap_or(Answer::Hung)
}

/// The `q`-quantile (0..=1) of `values` (sorted here), or zero when empty.
pub fn quantile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    // q is in 0..=1, so the rounded rank is in 0..len (and the min below holds it there).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = ((values.len() - 1) as f64 * q).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// The median of `values` (sorted here), or zero when empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
