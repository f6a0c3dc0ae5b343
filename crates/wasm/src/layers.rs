//! Wasm layers of the container's image, read from containerd's content
//! store through its API: OCI images with `application/wasm` or
//! component layers, and the CNCF Wasm artifact.

use std::sync::Arc;

use barge_executor::CreateContext;

pub struct Layer {
    pub digest: String,
    pub bytes: Arc<Vec<u8>>,
}

/// The Wasm layers found, first one first.
pub struct Found {
    pub layers: Vec<Layer>,
}

/// Reads the Wasm layers of the image `ctx.id` was made from. Returns the
/// error as text naming what could not be read.
pub fn read(ctx: &CreateContext<'_>) -> Result<Found, String> {
    if ctx.containerd_address.is_empty() {
        return Ok(Found { layers: Vec::new() });
    }
    let layers = barge_containerd_api::wasm_layers(ctx.containerd_address, ctx.namespace, ctx.id)
        .map_err(|e| format!("reading the image's Wasm layers from containerd: {e}"))?;
    for l in &layers {
        log::info!(
            "wasm {}: image layer {} ({}, {} bytes)",
            ctx.id,
            l.digest,
            l.media_type,
            l.bytes.len()
        );
    }
    Ok(Found {
        layers: layers
            .into_iter()
            .map(|l| Layer {
                digest: l.digest,
                bytes: Arc::new(l.bytes),
            })
            .collect(),
    })
}
