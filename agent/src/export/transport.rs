//! Sending OTLP requests: gRPC (tonic) or HTTP/protobuf (hyper), with headers and a timeout,
//! and which failures are worth retrying.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use opentelemetry_proto::tonic::collector::{
    metrics::v1::{metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest},
    trace::v1::{trace_service_client::TraceServiceClient, ExportTraceServiceRequest},
};
use prost::Message;
use tonic::{metadata::MetadataMap, transport::Channel};

use crate::config::{OtlpConfig, OtlpProtocol};

/// Why a request was not accepted. [`SendError::is_retryable`] sorts them by the OTLP
/// specification's rules: a retryable failure is sent again after a backoff, anything else
/// would fail the same way again and its data is dropped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("bad endpoint {0:?}")]
    Endpoint(String),
    /// No answer within `otlp.timeout_secs`.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The gRPC call failed: the receiver's answer, or tonic's own status for a transport
    /// failure (which then has a source error).
    #[error("gRPC: {0}")]
    Grpc(#[from] tonic::Status),
    /// The HTTP request could not be built (it was never sent).
    #[error("HTTP request: {0}")]
    Request(String),
    /// No HTTP answer: connecting failed, or the connection broke before the answer.
    #[error("HTTP connection: {0}")]
    Connection(String),
    /// The receiver answered with a status other than 2xx.
    #[error("HTTP status {status}")]
    Status {
        status: u16,
        /// The answer's `Retry-After`, when given in seconds.
        retry_after: Option<Duration>,
    },
}

impl SendError {
    /// Whether the same request may succeed later (OTLP specification, "Failures"):
    /// timeouts and connection failures; gRPC `UNAVAILABLE`, `CANCELLED`,
    /// `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `DATA_LOSS`, and `RESOURCE_EXHAUSTED`
    /// when the receiver says when to retry (`RetryInfo`); HTTP 429, 502, 503 and 504.
    /// Anything else (HTTP 400, gRPC `INVALID_ARGUMENT`, ...) is permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Connection(_) => true,
            Self::Endpoint(_) | Self::Request(_) => false,
            Self::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            Self::Grpc(status) => grpc_is_retryable(status),
        }
    }

    /// How long the receiver asked the client to wait before retrying: HTTP `Retry-After`
    /// (seconds) or gRPC `google.rpc.RetryInfo`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            Self::Grpc(status) => retry_info(status),
            _ => None,
        }
    }
}

fn grpc_is_retryable(status: &tonic::Status) -> bool {
    use tonic::Code;
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => retry_info(status).is_some(),
        // A status tonic made up from a transport error (it keeps that error as its source)
        // was never the receiver's answer: a connection that broke is worth another try.
        _ => std::error::Error::source(status).is_some(),
    }
}

/// The delay of a `google.rpc.RetryInfo` among the status details, if there is one.
fn retry_info(status: &tonic::Status) -> Option<Duration> {
    use prost::Message;
    let details = rpc::Status::decode(status.details()).ok()?;
    let info = details
        .details
        .iter()
        .find(|any| any.type_url.ends_with(rpc::RETRY_INFO_TYPE))?;
    let delay = rpc::RetryInfo::decode(info.value.as_slice())
        .ok()?
        .retry_delay?;
    let secs = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).ok()?;
    Some(Duration::new(secs, nanos))
}

/// The few `google.rpc` messages needed to read a `RetryInfo` from gRPC status details.
mod rpc {
    /// The type name of [`RetryInfo`] in an `Any`'s URL.
    pub const RETRY_INFO_TYPE: &str = "/google.rpc.RetryInfo";

    /// `google.rpc.Status`, carried in the `grpc-status-details-bin` trailer.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `google.rpc.RetryInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<ProtoDuration>,
    }

    /// `google.protobuf.Duration`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProtoDuration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

#[derive(Clone)]
pub enum Transport {
    Grpc {
        channel: Channel,
        headers: MetadataMap,
        timeout: Duration,
    },
    Http {
        client: Box<Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>>,
        /// The whole URL requests are posted to.
        url: String,
        headers: Vec<(String, String)>,
        timeout: Duration,
    },
}

impl Transport {
    /// Builds the transport; connections are made lazily, so a receiver that is down now is
    /// not an error here.
    pub fn new(
        config: &OtlpConfig,
        protocol: OtlpProtocol,
        endpoint: &str,
    ) -> Result<Self, SendError> {
        let timeout = Duration::from_secs(config.timeout_secs);
        match protocol {
            OtlpProtocol::Grpc => {
                let channel = Channel::from_shared(endpoint.to_string())
                    .map_err(|_| SendError::Endpoint(endpoint.into()))?
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    // A receiver that accepts but never answers wedges the one HTTP/2
                    // connection: pings that go unanswered close it, so the next attempt
                    // connects anew.
                    .http2_keep_alive_interval(timeout)
                    .keep_alive_timeout(timeout)
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                let mut headers = MetadataMap::new();
                for (k, v) in &config.headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(k.to_lowercase().as_bytes())
                        .map_err(|_| SendError::Endpoint(format!("header name {k:?}")))?;
                    let value = v
                        .parse()
                        .map_err(|_| SendError::Endpoint(format!("header value of {k:?}")))?;
                    headers.insert(key, value);
                }
                Ok(Self::Grpc {
                    channel,
                    headers,
                    timeout,
                })
            }
            OtlpProtocol::HttpProtobuf => Ok(Self::Http {
                client: Box::new(Client::builder(TokioExecutor::new()).build_http()),
                url: endpoint.to_string(),
                headers: config.headers.clone().into_iter().collect(),
                timeout,
            }),
        }
    }

    pub async fn send_traces(&self, req: ExportTraceServiceRequest) -> Result<(), SendError> {
        match self {
            Self::Grpc {
                channel,
                headers,
                timeout,
            } => {
                let request = with_headers(req, headers);
                let mut client = TraceServiceClient::new(channel.clone());
                within(*timeout, async {
                    client
                        .export(request)
                        .await
                        .map(|_| ())
                        .map_err(SendError::from)
                })
                .await
            }
            Self::Http { .. } => self.post(req.encode_to_vec()).await,
        }
    }

    pub async fn send_metrics(&self, req: ExportMetricsServiceRequest) -> Result<(), SendError> {
        match self {
            Self::Grpc {
                channel,
                headers,
                timeout,
            } => {
                let request = with_headers(req, headers);
                let mut client = MetricsServiceClient::new(channel.clone());
                within(*timeout, async {
                    client
                        .export(request)
                        .await
                        .map(|_| ())
                        .map_err(SendError::from)
                })
                .await
            }
            Self::Http { .. } => self.post(req.encode_to_vec()).await,
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), SendError> {
        let Self::Http {
            client,
            url,
            headers,
            timeout,
        } = self
        else {
            unreachable!("post is only called for HTTP");
        };
        let mut builder =
            hyper::Request::post(url.as_str()).header("content-type", "application/x-protobuf");
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Request(e.to_string()))?;
        within(*timeout, async {
            let response = client
                .request(request)
                .await
                .map_err(|e| SendError::Connection(e.to_string()))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::backoff::parse_retry_after);
            // Read the body so the connection can be reused.
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(SendError::Status {
                    status: status.as_u16(),
                    retry_after,
                })
            }
        })
        .await
    }
}

fn with_headers<T>(req: T, headers: &MetadataMap) -> tonic::Request<T> {
    let mut request = tonic::Request::new(req);
    *request.metadata_mut() = headers.clone();
    request
}

async fn within<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| SendError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tonic::{Code, Status};

    fn http(status: u16) -> SendError {
        SendError::Status {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn http_statuses_follow_the_otlp_rules() {
        for status in [429, 502, 503, 504] {
            assert!(http(status).is_retryable(), "{status}");
        }
        for status in [400, 401, 403, 404, 405, 413, 415, 500, 501, 301] {
            assert!(!http(status).is_retryable(), "{status}");
        }
    }

    #[test]
    fn grpc_codes_follow_the_otlp_rules() {
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            assert!(
                SendError::from(Status::new(code, "x")).is_retryable(),
                "{code:?}"
            );
        }
        for code in [
            Code::Unknown,
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Internal,
            Code::Unauthenticated,
            // Without RetryInfo the receiver does not say it will recover.
            Code::ResourceExhausted,
        ] {
            assert!(
                !SendError::from(Status::new(code, "x")).is_retryable(),
                "{code:?}"
            );
        }
    }

    #[test]
    fn no_answer_is_retryable_a_request_that_cannot_be_built_is_not() {
        assert!(SendError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(SendError::Connection("connection refused".into()).is_retryable());
        assert!(!SendError::Request("bad header".into()).is_retryable());
        assert!(!SendError::Endpoint("x".into()).is_retryable());
        // tonic's status for a connection that broke mid-call: Unknown, with the cause kept.
        let broken = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(broken.code(), Code::Unknown);
        assert!(SendError::from(broken).is_retryable());
    }

    fn with_retry_info(code: Code, delay: rpc::ProtoDuration) -> Status {
        let info = rpc::RetryInfo {
            retry_delay: Some(delay),
        };
        let details = rpc::Status {
            code: code as i32,
            message: "slow down".into(),
            details: vec![rpc::Any {
                type_url: format!("type.googleapis.com{}", rpc::RETRY_INFO_TYPE),
                value: info.encode_to_vec(),
            }],
        };
        Status::with_details(code, "slow down", details.encode_to_vec().into())
    }

    #[test]
    fn grpc_retry_info_makes_resource_exhausted_retryable_and_gives_the_delay() {
        let e = SendError::from(with_retry_info(
            Code::ResourceExhausted,
            rpc::ProtoDuration {
                seconds: 2,
                nanos: 500_000_000,
            },
        ));
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_millis(2500)));
        let e = SendError::from(with_retry_info(
            Code::Unavailable,
            rpc::ProtoDuration {
                seconds: -1,
                nanos: 0,
            },
        ));
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), None, "a negative delay is ignored");
        assert_eq!(
            SendError::from(Status::unavailable("x")).retry_after(),
            None
        );
    }
}
