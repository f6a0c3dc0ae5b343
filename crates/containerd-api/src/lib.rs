//! Reads the Wasm layers of a container's image from containerd's content
//! store, through containerd's gRPC API.
//!
//! [`wasm_layers`] is synchronous: it does its work on a tokio current-thread
//! runtime inside a short-lived thread of its own, which it joins, and it
//! returns only once the kernel no longer counts that thread. A process that
//! was single-threaded before the call is single-threaded again after it (as
//! the shim needs before it forks), and the call works from inside a tokio
//! runtime too, where a nested `block_on` would panic.
//!
//! The path: Containers.Get(id) gives the image name; Images.Get(name) its
//! target; Content.Read that target. An index (OCI, or a Docker manifest
//! list) leads to the manifest for a Wasm platform (os `wasi`, `wasip1` or
//! `wasip2`, architecture `wasm` or `wasm32`), or else to the only manifest,
//! the one for the host's platform, or the first. Every layer of the manifest
//! whose media type is in [`WASM_MEDIA_TYPES`] is read and checked against
//! its digest.

mod grpc;
mod oci;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use grpc::{CallError, Client};

/// The media types of the layers that [`wasm_layers`] returns.
pub const WASM_MEDIA_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
];

/// The largest Wasm layer read by default: 256 MiB.
pub const MAX_LAYER_SIZE: u64 = 256 << 20;

/// The largest index or manifest read: 4 MiB, the size that the OCI
/// distribution spec has registries accept at least.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// How long a whole [`wasm_layers`] call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to containerd's socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Indexes may nest; containerd itself follows a few levels.
const MAX_INDEX_DEPTH: usize = 4;

/// How long to wait, after joining the worker thread, until the kernel no
/// longer counts it.
const THREAD_EXIT_WAIT: Duration = Duration::from_secs(1);

/// One Wasm layer of an image.
#[derive(Clone, PartialEq, Eq)]
pub struct Layer {
    pub media_type: String,
    /// `sha256:<hex>` (or `sha512:<hex>`); the bytes have been checked
    /// against it.
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("media_type", &self.media_type)
            .field("digest", &self.digest)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Limits of one call of [`wasm_layers_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The largest Wasm layer that is read; a larger one fails the call.
    pub max_layer_size: u64,
    /// How long the whole call may take.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_layer_size: MAX_LAYER_SIZE,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Why [`wasm_layers`] failed. Every message names what failed: the
/// address, the container, the image, the digest and media type of a blob.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("connect to containerd at {address}: {detail}")]
    Connect { address: String, detail: String },

    #[error("container {id:?} not found in namespace {namespace:?} of containerd at {address}")]
    ContainerNotFound {
        address: String,
        namespace: String,
        id: String,
    },

    #[error(
        "get container {id:?} in namespace {namespace:?} from containerd at {address}: {detail}"
    )]
    Container {
        address: String,
        namespace: String,
        id: String,
        detail: String,
    },

    #[error("image {image:?} of container {id:?} not found in namespace {namespace:?}")]
    ImageNotFound {
        namespace: String,
        id: String,
        image: String,
    },

    #[error("get image {image:?} of container {id:?} in namespace {namespace:?}: {detail}")]
    Image {
        namespace: String,
        id: String,
        image: String,
        detail: String,
    },

    #[error("blob {digest} ({media_type}) of image {image:?} is missing from containerd's content store (namespace {namespace:?})")]
    BlobMissing {
        namespace: String,
        image: String,
        digest: String,
        media_type: String,
    },

    #[error("read blob {digest} ({media_type}) of image {image:?} from containerd's content store: {detail}")]
    Read {
        image: String,
        digest: String,
        media_type: String,
        detail: String,
    },

    #[error("blob {digest} ({media_type}) of image {image:?} is over the size limit of {limit} bytes (it has {size} bytes or more)")]
    TooLarge {
        image: String,
        digest: String,
        media_type: String,
        size: u64,
        limit: u64,
    },

    #[error("blob {digest} ({media_type}) of image {image:?} is {actual} bytes in containerd's content store, but its descriptor says {expected}")]
    SizeMismatch {
        image: String,
        digest: String,
        media_type: String,
        expected: i64,
        actual: u64,
    },

    #[error("blob {digest} ({media_type}) of image {image:?} does not match its digest: its content hashes to {actual}")]
    DigestMismatch {
        image: String,
        digest: String,
        media_type: String,
        actual: String,
    },

    #[error("blob {digest:?} ({media_type}) of image {image:?} has an unsupported digest: only sha256 and sha512 are checked")]
    UnsupportedDigest {
        image: String,
        digest: String,
        media_type: String,
    },

    #[error(
        "{media_type} {digest} of image {image:?} is not a valid image index or manifest: {reason}"
    )]
    BadManifest {
        image: String,
        digest: String,
        media_type: String,
        reason: String,
    },

    #[error("reading the Wasm layers of container {id:?} in namespace {namespace:?} from containerd at {address} took longer than {timeout:?}")]
    Timeout {
        address: String,
        namespace: String,
        id: String,
        timeout: Duration,
    },

    #[error("start the containerd client thread: {0}")]
    Thread(#[source] std::io::Error),

    #[error("the containerd client thread panicked: {0}")]
    Panicked(String),
}

/// The Wasm layers of the image that container `id` in `namespace` was made
/// from, in manifest order. `Ok(vec![])` when the image has none (or the
/// container has no image).
///
/// Docker (checked with 26, with and without containerd's image store)
/// creates its containerd container records without an image, so for its
/// containers this is `Ok(vec![])`.
///
/// `grpc_address` is containerd's gRPC socket, as a path or `unix://path`
/// (what the shim gets as `-address`). Blocks the calling thread; see the
/// crate's documentation for how it stays off the caller's runtime and
/// leaves no thread behind.
pub fn wasm_layers(grpc_address: &str, namespace: &str, id: &str) -> Result<Vec<Layer>, Error> {
    wasm_layers_with(grpc_address, namespace, id, &Options::default())
}

/// [`wasm_layers`] with other limits.
pub fn wasm_layers_with(
    grpc_address: &str,
    namespace: &str,
    id: &str,
    options: &Options,
) -> Result<Vec<Layer>, Error> {
    let started = Instant::now();
    let path = socket_path(grpc_address);
    let ctx = Ctx {
        address: grpc_address,
        namespace,
        id,
        options,
    };
    let result = on_own_thread(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(Error::Thread)?;
        let result = runtime.block_on(async {
            match tokio::time::timeout(options.timeout, read_layers(&ctx, path)).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout {
                    address: grpc_address.into(),
                    namespace: namespace.into(),
                    id: id.into(),
                    timeout: options.timeout,
                }),
            }
        });
        // Ends the connection task before the thread ends.
        drop(runtime);
        result
    })
    .and_then(|r| r);
    match &result {
        Ok(layers) => log::debug!(
            "container {id} in {namespace}: {} Wasm layer(s), {} bytes, read in {:?}",
            layers.len(),
            layers.iter().map(|l| l.bytes.len()).sum::<usize>(),
            started.elapsed()
        ),
        Err(e) => log::debug!("container {id} in {namespace}: {e}"),
    }
    result
}

/// `unix:///x`, `unix:/x` or `/x` → `/x`.
fn socket_path(address: &str) -> &str {
    address
        .strip_prefix("unix://")
        .or_else(|| address.strip_prefix("unix:"))
        .unwrap_or(address)
}

/// Runs `f` on a new thread, joins it, and waits (up to
/// [`THREAD_EXIT_WAIT`]) until the kernel no longer lists it: `join` returns
/// when the thread clears its tid, a little before the kernel drops it from
/// the thread group (and from `Threads:` in `/proc/self/status`).
fn on_own_thread<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, Error> {
    let tid = AtomicU32::new(0);
    let joined = std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("containerd-api".into())
            .spawn_scoped(scope, || {
                tid.store(own_tid().unwrap_or(0), Ordering::Relaxed);
                f()
            })
            .map_err(Error::Thread)?;
        handle
            .join()
            .map_err(|panic| Error::Panicked(panic_message(panic.as_ref())))
    });
    let tid = tid.load(Ordering::Relaxed);
    if tid != 0 {
        wait_thread_gone(tid, THREAD_EXIT_WAIT);
    }
    joined
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// The calling thread's kernel id, from `/proc/thread-self` → `<pid>/task/<tid>`.
fn own_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Polls until `/proc/self/task/<tid>` is gone; the kernel removes it in the
/// same step as it stops counting the thread.
fn wait_thread_gone(tid: u32, timeout: Duration) {
    let path = format!("/proc/self/task/{tid}");
    let start = Instant::now();
    let mut polls = 0u32;
    while std::path::Path::new(&path).exists() {
        if start.elapsed() >= timeout {
            log::warn!("thread {tid} is still listed {timeout:?} after it was joined");
            return;
        }
        polls += 1;
        std::thread::sleep(Duration::from_micros(if polls < 20 { 50 } else { 1000 }));
    }
    if polls > 0 {
        log::debug!(
            "thread {tid} left the thread group {:?} after join ({polls} polls)",
            start.elapsed()
        );
    }
}

/// The number of threads of this process (`Threads:` in `/proc/self/status`).
pub fn thread_count() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `/proc/self/status` until the process has one thread, for at most
/// `timeout`. True when it has. [`wasm_layers`] already waits for its own
/// thread; this is for threads that others joined.
pub fn wait_single_threaded(timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        if thread_count() == Some(1) {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// What every error names.
struct Ctx<'a> {
    address: &'a str,
    namespace: &'a str,
    id: &'a str,
    options: &'a Options,
}

async fn read_layers(ctx: &Ctx<'_>, path: &str) -> Result<Vec<Layer>, Error> {
    let mut client = Client::connect(path, ctx.namespace, CONNECT_TIMEOUT)
        .await
        .map_err(|detail| Error::Connect {
            address: ctx.address.into(),
            detail,
        })?;

    let image = client.container_image(ctx.id).await.map_err(|e| {
        if e.is_not_found() {
            Error::ContainerNotFound {
                address: ctx.address.into(),
                namespace: ctx.namespace.into(),
                id: ctx.id.into(),
            }
        } else {
            Error::Container {
                address: ctx.address.into(),
                namespace: ctx.namespace.into(),
                id: ctx.id.into(),
                detail: e.to_string(),
            }
        }
    })?;
    if image.is_empty() {
        log::debug!("container {} has no image", ctx.id);
        return Ok(Vec::new());
    }

    let image_error = |e: CallError| {
        if e.is_not_found() {
            Error::ImageNotFound {
                namespace: ctx.namespace.into(),
                id: ctx.id.into(),
                image: image.clone(),
            }
        } else {
            Error::Image {
                namespace: ctx.namespace.into(),
                id: ctx.id.into(),
                image: image.clone(),
                detail: e.to_string(),
            }
        }
    };
    let target = client
        .image_target(&image)
        .await
        .map_err(image_error)?
        .ok_or_else(|| image_error(CallError::Status(tonic::Status::not_found("no target"))))?;

    let blobs = Blobs { ctx, image: &image };
    let mut desc = oci::Descriptor {
        media_type: target.media_type,
        digest: target.digest,
        size: target.size,
        platform: None,
        annotations: Default::default(),
    };
    let mut depth = 0;
    let manifest = loop {
        let bytes = blobs
            .read(&mut client, &desc, MAX_MANIFEST_SIZE, "manifest")
            .await?;
        let bad = |reason: String| blobs.error_bad(&desc, reason);
        match oci::kind(&desc.media_type, &bytes).map_err(bad)? {
            oci::Kind::Manifest => {
                break serde_json::from_slice::<oci::Manifest>(&bytes)
                    .map_err(|e| bad(e.to_string()))?;
            }
            oci::Kind::Index => {
                depth += 1;
                if depth > MAX_INDEX_DEPTH {
                    return Err(bad(format!("indexes nest deeper than {MAX_INDEX_DEPTH}")));
                }
                let index: oci::Index =
                    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                let next = oci::pick(&index.manifests)
                    .ok_or_else(|| bad("the index lists no manifest".into()))?
                    .clone();
                log::debug!(
                    "image {image}: index {} → manifest {} ({:?})",
                    desc.digest,
                    next.digest,
                    next.platform
                );
                desc = next;
            }
        }
    };

    let mut layers = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| WASM_MEDIA_TYPES.contains(&l.media_type.as_str()))
    {
        let bytes = blobs
            .read(&mut client, layer, ctx.options.max_layer_size, "layer")
            .await?;
        layers.push(Layer {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            bytes,
        });
    }
    Ok(layers)
}

/// Reads blobs of one image, checked against their descriptors.
struct Blobs<'a> {
    ctx: &'a Ctx<'a>,
    image: &'a str,
}

impl Blobs<'_> {
    /// Reads the blob `desc` names, at most `limit` bytes, and checks its
    /// size and digest.
    async fn read(
        &self,
        client: &mut Client,
        desc: &oci::Descriptor,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, Error> {
        let media_type = if desc.media_type.is_empty() {
            format!("{what} without media type")
        } else {
            desc.media_type.clone()
        };
        let image = self.image.to_string();
        let digest = desc.digest.clone();
        // Checked before reading, so that a bad digest is never sent.
        if matches!(
            oci::verify(&desc.digest, b""),
            Err(oci::VerifyError::Unsupported)
        ) {
            return Err(Error::UnsupportedDigest {
                image,
                digest,
                media_type,
            });
        }
        if desc.size > 0 && desc.size as u64 > limit {
            return Err(Error::TooLarge {
                image,
                digest,
                media_type,
                size: desc.size as u64,
                limit,
            });
        }
        let size_hint = u64::try_from(desc.size).unwrap_or(0);
        let bytes = client
            .read(&desc.digest, size_hint, limit)
            .await
            .map_err(|e| match e {
                e if e.is_not_found() => Error::BlobMissing {
                    namespace: self.ctx.namespace.into(),
                    image: image.clone(),
                    digest: digest.clone(),
                    media_type: media_type.clone(),
                },
                CallError::TooLarge(size) => Error::TooLarge {
                    image: image.clone(),
                    digest: digest.clone(),
                    media_type: media_type.clone(),
                    size,
                    limit,
                },
                e => Error::Read {
                    image: image.clone(),
                    digest: digest.clone(),
                    media_type: media_type.clone(),
                    detail: e.to_string(),
                },
            })?;
        if desc.size > 0 && bytes.len() as u64 != desc.size as u64 {
            return Err(Error::SizeMismatch {
                image,
                digest,
                media_type,
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        match oci::verify(&desc.digest, &bytes) {
            Ok(()) => Ok(bytes),
            Err(oci::VerifyError::Mismatch(actual)) => Err(Error::DigestMismatch {
                image,
                digest,
                media_type,
                actual,
            }),
            Err(oci::VerifyError::Unsupported) => Err(Error::UnsupportedDigest {
                image,
                digest,
                media_type,
            }),
        }
    }

    fn error_bad(&self, desc: &oci::Descriptor, reason: String) -> Error {
        Error::BadManifest {
            image: self.image.into(),
            digest: desc.digest.clone(),
            media_type: if desc.media_type.is_empty() {
                "blob without media type".into()
            } else {
                desc.media_type.clone()
            },
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_takes_bare_paths_and_unix_urls() {
        assert_eq!(socket_path("/run/c.sock"), "/run/c.sock");
        assert_eq!(socket_path("unix:///run/c.sock"), "/run/c.sock");
        assert_eq!(socket_path("unix:/run/c.sock"), "/run/c.sock");
    }

    #[test]
    fn a_missing_socket_is_a_connect_error_naming_the_address() {
        let err = wasm_layers("unix:///nonexistent/barge-test.sock", "default", "c1").unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("unix:///nonexistent/barge-test.sock"), "{msg}");
    }

    #[test]
    fn works_inside_a_tokio_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(async { wasm_layers("/nonexistent/x.sock", "default", "c1") });
        assert!(matches!(err, Err(Error::Connect { .. })), "{err:?}");
    }

    #[test]
    fn a_silent_server_is_a_timeout_naming_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("silent.sock");
        // Accepts connections (into the backlog) and never answers.
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let options = Options {
            timeout: Duration::from_millis(300),
            ..Options::default()
        };
        let start = Instant::now();
        let err = wasm_layers_with(sock.to_str().unwrap(), "ns", "c1", &options).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains(sock.to_str().unwrap()), "{err}");
    }

    #[test]
    fn a_panic_in_the_thread_is_an_error() {
        let r: Result<(), Error> = on_own_thread(|| panic!("boom"));
        assert!(matches!(r, Err(Error::Panicked(m)) if m == "boom"));
    }

    #[test]
    fn own_tid_is_a_task_of_this_process() {
        let tid = own_tid().unwrap();
        assert!(std::path::Path::new(&format!("/proc/self/task/{tid}")).exists());
    }

    #[test]
    fn layer_debug_omits_the_bytes() {
        let l = Layer {
            media_type: "application/wasm".into(),
            digest: "sha256:x".into(),
            bytes: vec![0; 1000],
        };
        assert_eq!(
            format!("{l:?}"),
            r#"Layer { media_type: "application/wasm", digest: "sha256:x", len: 1000 }"#
        );
    }
}
