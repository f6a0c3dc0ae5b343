//! Wasm layers of the container's image, read from containerd's content
//! store through its API: OCI images with `application/wasm` or
//! component layers, and the CNCF Wasm artifact.

use std::sync::Arc;

use barge_executor::CreateContext;

use crate::guest::Source;

/// The first Wasm layer of the image `ctx.id` was made from, if it has
/// one. The error is text naming what could not be read.
pub fn first(ctx: &CreateContext<'_>) -> Result<Option<Source>, String> {
    if ctx.containerd_address.is_empty() {
        return Ok(None);
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
    Ok(layers.into_iter().next().map(|l| Source::Layer {
        digest: l.digest,
        bytes: Arc::new(l.bytes),
    }))
}
