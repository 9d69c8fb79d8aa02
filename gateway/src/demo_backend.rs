//! A demo OpenAI-compatible backend: answers any path with a chat completion that echoes what it
//! received (method, path, headers, body), or with `"stream": true` in the JSON body, with
//! server-sent events sent one by one with a pause between them, ending `data: [DONE]`.
//!
//! `?delay_ms=N` delays the response headers, to exercise gateway timeouts. The echo's
//! `served_by` names the backend's own address, so tests can tell backends apart.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::body::{self, BoxError, ProxyBody};

/// The words of the canned answer, one per streamed event.
const ANSWER: &str = "Code flows like rivers, carrying intent from mind to machine.";

/// The largest request body the demo backend reads.
const MAX_BODY: usize = 1 << 20;

/// How the demo backend behaves.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    /// The pause between streamed events.
    pub sse_delay: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            sse_delay: Duration::from_millis(100),
        }
    }
}

/// Serves on `listener` forever.
pub async fn serve(listener: TcpListener, options: DemoOptions) {
    let served_by = listener
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let served_by = served_by.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let served_by = served_by.clone();
                async move { Ok::<_, Infallible>(respond(req, options, served_by).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    options: DemoOptions,
    served_by: String,
) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    if let Some(ms) = query_param(parts.uri.query(), "delay_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut resp = Response::new(body::full("request body too large or broken"));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return resp;
        }
    };
    let request_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = request_json
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("demo")
        .to_owned();
    let stream = request_json.get("stream").and_then(Value::as_bool) == Some(true);

    let (headers, raw_headers) = echoed_headers(&parts.headers);
    let echo = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "raw_headers": raw_headers,
        "body": String::from_utf8_lossy(&body),
        "served_by": served_by,
    });
    let created = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    if stream {
        return sse(model, created, echo, options.sse_delay);
    }
    completion(&model, created, &echo)
}

/// The request's headers as the echo shows them: joined per name (`, `), and raw in order.
fn echoed_headers(headers: &http::HeaderMap) -> (serde_json::Map<String, Value>, Vec<Value>) {
    let mut joined = serde_json::Map::new();
    let mut raw_headers = Vec::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        raw_headers.push(json!([name.as_str(), value]));
        match joined.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                joined.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    (joined, raw_headers)
}

/// A whole (non-streamed) chat completion carrying the echo of the request.
fn completion(model: &str, created: u64, echo: &Value) -> Response<ProxyBody> {
    let completion = json!({
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 0, "completion_tokens": ANSWER.split(' ').count(), "total_tokens": ANSWER.split(' ').count()},
        "request": echo,
    });
    let mut resp = Response::new(body::full(completion.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn sse(model: String, created: u64, echo: Value, delay: Duration) -> Response<ProxyBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
    tokio::spawn(async move {
        let words: Vec<&str> = ANSWER.split(' ').collect();
        for (i, word) in words.iter().enumerate() {
            let content = if i == 0 {
                (*word).to_owned()
            } else {
                format!(" {word}")
            };
            let mut chunk = json!({
                "id": "chatcmpl-demo",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}],
            });
            if i == 0 {
                chunk["request"] = echo.clone();
            }
            let event = format!("data: {chunk}\n\n");
            if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                return;
            }
            tokio::time::sleep(delay).await;
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
            .await;
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut resp = Response::new(body::boxed(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}
