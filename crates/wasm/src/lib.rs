//! The Wasm executor: WebAssembly modules and components run by wasmtime
//! inside a container made by libcontainer, with the same namespaces,
//! cgroup, seccomp filter and capabilities as a native container. The
//! container's init runs wasmtime where a native init would exec.
//!
//! The guest comes from the rootfs (a file starting with `\0asm`, or a
//! `.wat` file) or from the image's Wasm layers, read from containerd.

mod cache;
mod guest;
mod layers;
mod run;
pub mod settings;
mod stop;

use std::sync::{Arc, Mutex};

use barge_executor::entrypoint::{self, Kind};
use barge_executor::{CleanupContext, Container, CreateContext, Error, Executor, Fit, Result};

pub use cache::Cache;
pub use guest::RUNS;
pub use run::TRAP_EXIT;
pub use stop::TIMEOUT_EXIT;

use guest::{Guest, Source};
use settings::Settings;

/// Runs WebAssembly guests under wasmtime.
#[derive(Default)]
pub struct Wasm {
    /// The Wasm layers read while choosing the executor, kept for `create`
    /// of the same container so the image is read once.
    layers: Mutex<Option<(String, Arc<layers::Found>)>>,
}

impl Wasm {
    pub fn new() -> Wasm {
        Wasm::default()
    }

    fn image_layers(
        &self,
        ctx: &CreateContext<'_>,
    ) -> std::result::Result<Arc<layers::Found>, String> {
        let mut held = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, found)) = held.as_ref() {
            if id == ctx.id {
                return Ok(found.clone());
            }
        }
        let found = Arc::new(layers::read(ctx)?);
        *held = Some((ctx.id.to_string(), found.clone()));
        Ok(found)
    }

    fn source(&self, ctx: &CreateContext<'_>) -> std::result::Result<Source, String> {
        match entrypoint::find(ctx.bundle, ctx.spec) {
            Ok(e) if matches!(e.kind, Kind::WasmModule | Kind::WasmText) => {
                Ok(Source::File(e.path))
            }
            Ok(e) => Err(format!("{} is {}", e.path.display(), e.kind)),
            Err(why) => {
                let found = self.image_layers(ctx).map_err(|e| format!("{why}; {e}"))?;
                match found.layers.first() {
                    Some(layer) => Ok(Source::Layer {
                        digest: layer.digest.clone(),
                        bytes: layer.bytes.clone(),
                    }),
                    // The image has no Wasm layers either (`runs` says so).
                    None => Err(why),
                }
            }
        }
    }
}

impl Executor for Wasm {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn runs(&self) -> &'static str {
        "wasm runs WebAssembly modules and components (files starting with \\0asm, or .wat text) and images with Wasm layers"
    }

    fn fits(&self, ctx: &CreateContext<'_>) -> Fit {
        match self.source(ctx) {
            Ok(_) => Fit::Yes,
            Err(why) => Fit::No(why),
        }
    }

    fn create(&self, ctx: CreateContext<'_>) -> Result<Box<dyn Container>> {
        let source = self.source(&ctx).map_err(Error::InvalidArgument)?;
        // The layers are in the guest now; the shim needn't keep them.
        self.layers.lock().unwrap_or_else(|e| e.into_inner()).take();
        let settings = Settings::resolve(ctx.spec, ctx.options)?;
        let wasm = &ctx.options.wasm;
        let cache = match Cache::open(&wasm.cache_dir, wasm.cache_max_mb) {
            Ok(c) => c,
            Err(e) => {
                log::warn!(
                    "wasm cache {} unusable, compiling without it: {e}",
                    wasm.cache_dir.display()
                );
                None
            }
        };
        log::info!(
            "wasm {}: running {} with preopens {:?}",
            ctx.id,
            source.label(),
            settings.preopens
        );
        let guest = Guest::new(ctx.id, source, settings, cache);
        barge_native::create_with(ctx, guest)
    }

    fn cleanup(&self, ctx: &CleanupContext<'_>) -> Result<()> {
        barge_native::cleanup(ctx)
    }
}
