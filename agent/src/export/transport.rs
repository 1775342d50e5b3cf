//! Sending OTLP requests: gRPC (tonic) or HTTP/protobuf (hyper), with headers and a timeout.

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

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("bad endpoint {0:?}")]
    Endpoint(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("gRPC: {0}")]
    Grpc(#[from] tonic::Status),
    #[error("HTTP: {0}")]
    Http(String),
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
        base: String,
        headers: Vec<(String, String)>,
        timeout: Duration,
    },
}

impl Transport {
    /// Builds the transport; connections are made lazily, so a receiver that is down now is
    /// not an error here.
    pub fn new(config: &OtlpConfig, endpoint: &str) -> Result<Self, SendError> {
        let timeout = Duration::from_secs(config.timeout_secs);
        match config.protocol {
            OtlpProtocol::Grpc => {
                let channel = Channel::from_shared(endpoint.to_string())
                    .map_err(|_| SendError::Endpoint(endpoint.into()))?
                    .connect_timeout(timeout)
                    .timeout(timeout)
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
                base: endpoint.trim_end_matches('/').to_string(),
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
            Self::Http { .. } => self.post("/v1/traces", req.encode_to_vec()).await,
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
            Self::Http { .. } => self.post("/v1/metrics", req.encode_to_vec()).await,
        }
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<(), SendError> {
        let Self::Http {
            client,
            base,
            headers,
            timeout,
        } = self
        else {
            unreachable!("post is only called for HTTP");
        };
        let mut builder = hyper::Request::post(format!("{base}{path}"))
            .header("content-type", "application/x-protobuf");
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Http(e.to_string()))?;
        within(*timeout, async {
            let response = client
                .request(request)
                .await
                .map_err(|e| SendError::Http(e.to_string()))?;
            let status = response.status();
            // Read the body so the connection can be reused.
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(SendError::Http(format!("status {status}")))
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
