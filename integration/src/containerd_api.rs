//! The one containerd call the tests make through the gRPC API rather than
//! ctr: Containers.Create, for images whose config ctr refuses to read (the
//! CNCF Wasm artifact), as a CRI client would create them.

use anyhow::{bail, Result};
use tonic::metadata::AsciiMetadataValue;

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerRequest {
    #[prost(message, optional, tag = "1")]
    container: Option<Container>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerResponse {}

#[derive(Clone, PartialEq, prost::Message)]
struct Container {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "3")]
    image: String,
    #[prost(message, optional, tag = "4")]
    runtime: Option<Runtime>,
    #[prost(message, optional, tag = "5")]
    spec: Option<Any>,
    #[prost(string, tag = "6")]
    snapshotter: String,
    #[prost(string, tag = "7")]
    snapshot_key: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Runtime {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// A container record to create.
pub struct NewContainer<'a> {
    pub id: &'a str,
    pub image: &'a str,
    pub runtime: &'a str,
    /// The OCI spec, as JSON.
    pub spec: &'a [u8],
    /// The snapshot that becomes its rootfs, or `None` for none.
    pub snapshot: Option<(&'a str, &'a str)>,
}

/// Containers.Create in namespace `ns`.
pub fn create_container(address: &str, ns: &str, c: &NewContainer<'_>) -> Result<()> {
    let id = c.id;
    let (snapshotter, snapshot_key) = c.snapshot.unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("unix://{address}"))?
            .connect()
            .await?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await?;
        let mut req = tonic::Request::new(CreateContainerRequest {
            container: Some(Container {
                id: id.into(),
                image: c.image.into(),
                runtime: Some(Runtime {
                    name: c.runtime.into(),
                }),
                spec: Some(Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                    value: c.spec.to_vec(),
                }),
                snapshotter: snapshotter.into(),
                snapshot_key: snapshot_key.into(),
            }),
        });
        req.metadata_mut()
            .insert("containerd-namespace", AsciiMetadataValue::try_from(ns)?);
        let codec =
            tonic_prost::ProstCodec::<CreateContainerRequest, CreateContainerResponse>::default();
        let path = http::uri::PathAndQuery::from_static(
            "/containerd.services.containers.v1.Containers/Create",
        );
        match grpc.unary(req, path, codec).await {
            Ok(_) => Ok(()),
            Err(status) => bail!("Containers.Create {id}: {status}"),
        }
    })
}
