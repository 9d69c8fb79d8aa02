//! gRPC Check callers (v3 and v2) over h2c, many calls multiplexed on a few connections.
//!
//! The request is encoded once and its bytes sent as they are on every call, so the load
//! generator spends its one CPU on the exchange, not on re-encoding the same message; answers are
//! decoded into the generated `CheckResponse` types and their `status.code` checked.

use std::marker::PhantomData;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::{BufMut, Bytes};
use extauthz_proto::{v2, v3};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::Caller;

/// Which Check API to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `envoy.service.auth.v3.Authorization/Check`.
    V3,
    /// `envoy.service.auth.v2.Authorization/Check`.
    V2,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::V3 => "/envoy.service.auth.v3.Authorization/Check",
            Api::V2 => "/envoy.service.auth.v2.Authorization/Check",
        }
    }
}

/// A CheckResponse of either API: all the load generator reads is its gRPC status code.
pub trait Answer: Message + Default + Send + 'static {
    /// `status.code`, or -1 when the answer has no status.
    fn code(&self) -> i32;
}

impl Answer for v3::CheckResponse {
    fn code(&self) -> i32 {
        self.status.as_ref().map_or(-1, |s| s.code)
    }
}

impl Answer for v2::CheckResponse {
    fn code(&self) -> i32 {
        self.status.as_ref().map_or(-1, |s| s.code)
    }
}

/// Sends pre-encoded request bytes; decodes the answer as `A`.
struct PreEncoded<A>(PhantomData<A>);

impl<A> Default for PreEncoded<A> {
    fn default() -> Self {
        PreEncoded(PhantomData)
    }
}

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

struct AnswerDecoder<A>(PhantomData<A>);

impl<A: Answer> Decoder for AnswerDecoder<A> {
    type Item = A;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<A>, Status> {
        A::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable answer: {e}")))
    }
}

impl<A: Answer> Codec for PreEncoded<A> {
    type Encode = Bytes;
    type Decode = A;
    type Encoder = BytesEncoder;
    type Decoder = AnswerDecoder<A>;
    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }
    fn decoder(&mut self) -> AnswerDecoder<A> {
        AnswerDecoder(PhantomData)
    }
}

/// One slot of concurrency on a shared HTTP/2 connection.
pub struct GrpcCaller<A> {
    client: tonic::client::Grpc<Channel>,
    path: http::uri::PathAndQuery,
    request: Bytes,
    expected_code: i32,
    answer: PhantomData<fn() -> A>,
}

/// Where to send which request and what must come back.
#[derive(Debug, Clone)]
pub struct GrpcTarget {
    /// The server's gRPC address (plaintext h2c).
    pub address: SocketAddr,
    /// v3 or v2.
    pub api: Api,
    /// Headers added to the Envoy-shaped request.
    pub headers: Vec<(String, String)>,
    /// The gRPC status code every answer must carry (0 = allow, 7 = PERMISSION_DENIED, ...).
    pub expected_code: i32,
}

impl GrpcTarget {
    /// The encoded request this target sends.
    pub fn encoded_request(&self) -> Bytes {
        match self.api {
            Api::V3 => crate::check_request::v3(&self.headers)
                .encode_to_vec()
                .into(),
            Api::V2 => crate::check_request::v2(&self.headers)
                .encode_to_vec()
                .into(),
        }
    }

    /// Opens `connections` connections and spreads `concurrency` callers over them.
    pub async fn callers<A: Answer>(
        &self,
        connections: usize,
        concurrency: usize,
    ) -> anyhow::Result<Vec<GrpcCaller<A>>> {
        let request = self.encoded_request();
        let path = http::uri::PathAndQuery::from_static(self.api.path());
        let mut channels = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            let channel = Endpoint::from_shared(format!("http://{}", self.address))?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to {}", self.address))?;
            channels.push(channel);
        }
        Ok((0..concurrency)
            .map(|i| GrpcCaller {
                client: tonic::client::Grpc::new(channels[i % channels.len()].clone()),
                path: path.clone(),
                request: request.clone(),
                expected_code: self.expected_code,
                answer: PhantomData,
            })
            .collect())
    }
}

impl<A: Answer> Caller for GrpcCaller<A> {
    async fn call(&mut self) -> Result<(), String> {
        self.client
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let answer = self
            .client
            .unary(
                tonic::Request::new(self.request.clone()),
                self.path.clone(),
                PreEncoded::<A>::default(),
            )
            .await
            .map_err(|status| format!("gRPC error {:?}: {}", status.code(), status.message()))?;
        let code = answer.get_ref().code();
        if code == self.expected_code {
            Ok(())
        } else {
            Err(format!(
                "answer status.code {code}, expected {}",
                self.expected_code
            ))
        }
    }
}
