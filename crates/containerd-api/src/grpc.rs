//! The few containerd gRPC calls needed, over its unix socket.
//!
//! The messages are declared by hand with only the fields that are read;
//! protobuf decoding skips the others. Field numbers are those of
//! containerd's `api/services/{containers,images,content}/v1/*.proto` and
//! `api/types/descriptor.proto`, which are the same in containerd 1.6 to 2.x.

use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// `containerd.services.containers.v1.GetContainerRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetContainerRequest {
    #[prost(string, tag = "1")]
    pub id: String,
}

/// `containerd.services.containers.v1.GetContainerResponse`
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetContainerResponse {
    #[prost(message, optional, tag = "1")]
    pub container: Option<Container>,
}

/// `containerd.services.containers.v1.Container` (id and image only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "3")]
    pub image: String,
}

/// `containerd.services.images.v1.GetImageRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetImageRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `containerd.services.images.v1.GetImageResponse`
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetImageResponse {
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
}

/// `containerd.services.images.v1.Image` (name and target only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Image {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "3")]
    pub target: Option<Descriptor>,
}

/// `containerd.types.Descriptor` (without annotations).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Descriptor {
    #[prost(string, tag = "1")]
    pub media_type: String,
    #[prost(string, tag = "2")]
    pub digest: String,
    #[prost(int64, tag = "3")]
    pub size: i64,
}

/// `containerd.services.content.v1.ReadContentRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadContentRequest {
    #[prost(string, tag = "1")]
    pub digest: String,
    #[prost(int64, tag = "2")]
    pub offset: i64,
    /// 0 reads the whole blob.
    #[prost(int64, tag = "3")]
    pub size: i64,
}

/// `containerd.services.content.v1.ReadContentResponse`
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadContentResponse {
    #[prost(int64, tag = "1")]
    pub offset: i64,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

const CONTAINERS_GET: &str = "/containerd.services.containers.v1.Containers/Get";
const IMAGES_GET: &str = "/containerd.services.images.v1.Images/Get";
const CONTENT_READ: &str = "/containerd.services.content.v1.Content/Read";

/// containerd sends blobs in chunks of 1 MiB; this leaves room.
const MAX_MESSAGE: usize = 8 << 20;

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// containerd answered with this status.
    Status(Status),
    /// The blob is larger than the limit (the size read so far, or more).
    TooLarge(u64),
    /// containerd's stream did not continue where the last chunk ended.
    BadOffset { expected: u64, got: i64 },
}

impl CallError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::Status(s) if s.code() == Code::NotFound)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Status(s) if s.message().is_empty() => write!(f, "{:?}", s.code()),
            CallError::Status(s) => write!(f, "{:?}: {}", s.code(), s.message()),
            CallError::TooLarge(n) => write!(f, "larger than the limit ({n} bytes or more)"),
            CallError::BadOffset { expected, got } => write!(
                f,
                "containerd sent a chunk at offset {got}, expected offset {expected}"
            ),
        }
    }
}

impl From<Status> for CallError {
    fn from(s: Status) -> Self {
        CallError::Status(s)
    }
}

/// A connection to containerd, bound to one namespace.
pub struct Client {
    grpc: Grpc<Channel>,
    namespace: AsciiMetadataValue,
}

impl Client {
    /// Connects to the unix socket at `path`.
    pub async fn connect(
        path: &str,
        namespace: &str,
        connect_timeout: Duration,
    ) -> Result<Client, String> {
        let namespace = AsciiMetadataValue::try_from(namespace)
            .map_err(|_| format!("namespace {namespace:?} is not a valid header value"))?;
        let endpoint = Endpoint::from_shared(format!("unix://{path}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(connect_timeout);
        let channel = endpoint.connect().await.map_err(|e| {
            // tonic's transport error says only "transport error"; the cause
            // (e.g. "No such file or directory") is in its source chain.
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            msg
        })?;
        let grpc = Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE);
        Ok(Client { grpc, namespace })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        req
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("containerd connection not ready: {e}")))
    }

    async fn unary<Req, Resp>(&mut self, path: &'static str, message: Req) -> Result<Resp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.ready().await?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let req = self.request(message);
        let resp = self
            .grpc
            .unary(req, PathAndQuery::from_static(path), codec)
            .await?;
        Ok(resp.into_inner())
    }

    /// Containers.Get: the container's image name (empty when it has none).
    pub async fn container_image(&mut self, id: &str) -> Result<String, CallError> {
        let resp: GetContainerResponse = self
            .unary(CONTAINERS_GET, GetContainerRequest { id: id.into() })
            .await?;
        Ok(resp.container.map(|c| c.image).unwrap_or_default())
    }

    /// Images.Get: the image's target descriptor.
    pub async fn image_target(&mut self, name: &str) -> Result<Option<Descriptor>, CallError> {
        let resp: GetImageResponse = self
            .unary(IMAGES_GET, GetImageRequest { name: name.into() })
            .await?;
        Ok(resp.image.and_then(|i| i.target))
    }

    /// Content.Read of a whole blob, failing once it grows past `limit`.
    /// `size_hint` (the descriptor's size, at most `limit`) sizes the buffer.
    pub async fn read(
        &mut self,
        digest: &str,
        size_hint: u64,
        limit: u64,
    ) -> Result<Vec<u8>, CallError> {
        self.ready().await?;
        let codec = tonic_prost::ProstCodec::<ReadContentRequest, ReadContentResponse>::default();
        let req = self.request(ReadContentRequest {
            digest: digest.into(),
            offset: 0,
            size: 0,
        });
        let mut stream = self
            .grpc
            .server_streaming(req, PathAndQuery::from_static(CONTENT_READ), codec)
            .await?
            .into_inner();
        let mut out = Vec::with_capacity(size_hint.min(limit) as usize);
        while let Some(chunk) = stream.message().await? {
            let expected = out.len() as u64;
            if chunk.offset != expected as i64 {
                return Err(CallError::BadOffset {
                    expected,
                    got: chunk.offset,
                });
            }
            let total = expected + chunk.data.len() as u64;
            if total > limit {
                return Err(CallError::TooLarge(total));
            }
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }
}
