//! HTTP/1.1 callers: one keep-alive connection per caller, as wrk and nginx's upstream keepalive
//! use them; a connection the server closed is reopened on the next call.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Caller;

/// Where to send which request and what must come back.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// The server's address.
    pub address: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// Path and query.
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// The status every answer must have.
    pub expected_status: u16,
}

/// One keep-alive connection with one request in flight.
pub struct HttpCaller {
    address: SocketAddr,
    request_headers: HeaderMap,
    path: http::Uri,
    expected: StatusCode,
    connection: Option<SendRequest<Empty<Bytes>>>,
}

async fn connect(address: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect {address}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(send)
}

impl HttpTarget {
    /// Opens `concurrency` connections, one per caller.
    pub async fn callers(&self, concurrency: usize) -> anyhow::Result<Vec<HttpCaller>> {
        let mut request_headers = HeaderMap::new();
        request_headers.insert(http::header::HOST, HeaderValue::from_str(&self.host)?);
        for (name, value) in &self.headers {
            request_headers.append(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        let path: http::Uri = self.path.parse().context("path")?;
        let expected = StatusCode::from_u16(self.expected_status)?;
        let mut callers = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let connection = connect(self.address).await.map_err(anyhow::Error::msg)?;
            callers.push(HttpCaller {
                address: self.address,
                request_headers: request_headers.clone(),
                path: path.clone(),
                expected,
                connection: Some(connection),
            });
        }
        Ok(callers)
    }
}

impl Caller for HttpCaller {
    async fn call(&mut self) -> Result<(), String> {
        let mut send = match self.connection.take() {
            Some(send) if !send.is_closed() => send,
            _ => connect(self.address).await?,
        };
        send.ready().await.map_err(|e| format!("connection: {e}"))?;
        let mut request = Request::new(Empty::new());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = self.path.clone();
        *request.headers_mut() = self.request_headers.clone();
        let response = send
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        // Read the whole body: the exchange is not over until it has arrived.
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        self.connection = Some(send);
        if status == self.expected {
            Ok(())
        } else {
            Err(format!("status {status}, expected {}", self.expected))
        }
    }
}
