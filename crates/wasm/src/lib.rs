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
mod limit;
mod run;
pub mod settings;
mod stop;

use std::sync::Mutex;

use barge_executor::entrypoint::{self, Kind};
use barge_executor::{
    CleanupContext, Container, CreateContext, Error, ExecContext, Executor, Fit, Result,
};

pub use cache::Cache;
pub use guest::RUNS;
pub use run::TRAP_EXIT;
pub use stop::TIMEOUT_EXIT;

use guest::{Guest, Source};
use settings::Settings;

/// Runs WebAssembly guests under wasmtime.
#[derive(Default)]
pub struct Wasm {
    /// The guest found while choosing the executor, kept for `create` of
    /// the same container: the rootfs is looked at, and the image read,
    /// once.
    resolved: Mutex<Option<(String, Source)>>,
}

impl Wasm {
    pub fn new() -> Wasm {
        Wasm::default()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<(String, Source)>> {
        self.resolved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where this container's guest comes from: the entrypoint in the
    /// rootfs, or else the image's first Wasm layer.
    fn source(ctx: &CreateContext<'_>) -> std::result::Result<Source, String> {
        match entrypoint::find(ctx.bundle, ctx.spec) {
            Ok(e) if matches!(e.kind, Kind::WasmModule | Kind::WasmText) => {
                Ok(Source::File(e.path))
            }
            Ok(e) => Err(format!("{} is {}", e.path.display(), e.kind)),
            // No entrypoint in the rootfs; without Wasm layers either,
            // `runs` says what would have worked.
            Err(why) => layers::first(ctx)
                .map_err(|e| format!("{why}; {e}"))?
                .ok_or(why),
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
        match Wasm::source(ctx) {
            Ok(source) => {
                *self.held() = Some((ctx.id.to_string(), source));
                Fit::Yes
            }
            Err(why) => Fit::No(why),
        }
    }

    fn create(&self, ctx: CreateContext<'_>) -> Result<Box<dyn Container>> {
        // The guest takes the source (and any layer's bytes) with it; the
        // shim keeps nothing.
        let source = match self.held().take() {
            Some((id, source)) if id == ctx.id => source,
            _ => Wasm::source(&ctx).map_err(Error::InvalidArgument)?,
        };
        let mut settings = Settings::resolve(ctx.spec, ctx.options)?;
        let limit = limit::SharedLimit::new(settings.memory_limit)
            .map_err(Error::io("make the shared memory limit"))?;
        settings.limit_fd = Some(limit.fd());
        let cache = open_cache(ctx.options);
        log::info!(
            "wasm {}: running {} with preopens {:?}",
            ctx.id,
            source.label(),
            settings.preopens
        );
        let guest = Guest::new(ctx.id, source, settings, cache);
        let execs = exec_workload(&ctx, limit.fd());
        let inner = barge_native::create_with(ctx, guest, execs)?;
        Ok(Box::new(WasmContainer { inner, limit }))
    }

    fn cleanup(&self, ctx: &CleanupContext<'_>) -> Result<()> {
        barge_native::cleanup(ctx)
    }
}

fn open_cache(options: &barge_executor::Options) -> Option<Cache> {
    let wasm = &options.wasm;
    match Cache::open(&wasm.cache_dir, wasm.cache_max_mb) {
        Ok(c) => c,
        Err(e) => {
            log::warn!(
                "wasm cache {} unusable, compiling without it: {e}",
                wasm.cache_dir.display()
            );
            None
        }
    }
}

/// What an exec into a Wasm container runs, by the rule that chose the
/// container's executor: a Wasm module or component under wasmtime, with
/// the exec's own args and env and the container's sandbox settings; an
/// ELF binary or script as a native process.
fn exec_workload(
    ctx: &CreateContext<'_>,
    limit_fd: std::os::fd::RawFd,
) -> barge_native::ExecWorkload {
    let id = ctx.id.to_string();
    let bundle = ctx.bundle.to_path_buf();
    let spec = ctx.spec.clone();
    let options = ctx.options.clone();
    Box::new(move |exec: &ExecContext<'_>, init_pid: u32| {
        let mut spec = spec.clone();
        spec.set_process(Some(exec.process.clone()));
        // Looked up as the container sees its filesystem now, with its
        // mounts (volumes, bind mounts), not in the bundle's rootfs alone.
        let mut root = spec.root().clone().unwrap_or_default();
        root.set_path(std::path::PathBuf::from(format!("/proc/{init_pid}/root")));
        spec.set_root(Some(root));
        let found = entrypoint::find(&bundle, &spec).map_err(Error::InvalidArgument)?;
        match found.kind {
            Kind::Elf | Kind::Script => Ok(barge_native::Workload::boxed(barge_native::Exec)),
            Kind::WasmModule | Kind::WasmText => {
                let mut settings = Settings::resolve(&spec, &options)?;
                settings.limit_fd = Some(limit_fd);
                log::info!(
                    "wasm {id}: exec {} runs {} under wasmtime",
                    exec.exec_id,
                    found.path.display()
                );
                let guest = Guest::new(&id, Source::File(found.path), settings, open_cache(&options));
                Ok(barge_native::Workload::boxed(guest))
            }
            Kind::Unknown(_) => Err(Error::InvalidArgument(format!(
                "cannot exec {}: it is {}; an exec runs ELF executables, #! scripts and WebAssembly",
                found.path.display(),
                found.kind
            ))),
        }
    })
}

/// A Wasm container: made and run as a native one, and its guests' memory
/// limit follows Update.
struct WasmContainer {
    inner: Box<dyn Container>,
    limit: limit::SharedLimit,
}

impl Container for WasmContainer {
    fn pid(&self) -> u32 {
        self.inner.pid()
    }

    fn start(&mut self) -> Result<()> {
        self.inner.start()
    }

    fn kill(&mut self, signal: u32, all: bool) -> Result<()> {
        self.inner.kill(signal, all)
    }

    fn pids(&self) -> Result<Vec<u32>> {
        self.inner.pids()
    }

    fn exec(&mut self, ctx: ExecContext<'_>) -> Result<u32> {
        self.inner.exec(ctx)
    }

    fn set_paused(&mut self, paused: bool) -> Result<()> {
        self.inner.set_paused(paused)
    }

    fn update(&mut self, resources: &barge_executor::LinuxResources) -> Result<()> {
        self.inner.update(resources)?;
        if let Some(limit) = resources.memory().as_ref().and_then(|m| m.limit()) {
            let limit = (limit > 0).then_some(limit as usize);
            self.limit
                .set(limit)
                .map_err(Error::io("write the guests' memory limit"))?;
        }
        Ok(())
    }

    fn delete(&mut self) -> Result<()> {
        self.inner.delete()
    }
}

/// For the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    use crate::guest::{Guest, Linked, Source};
    use crate::settings::Settings;

    /// Loads, compiles and links `bytes` (a module, a component or WAT) as
    /// a container's init does, with no cache and no preopens, without
    /// instantiating or running it. Says what it linked.
    pub fn prepare(bytes: Vec<u8>) -> std::result::Result<&'static str, String> {
        let settings = Settings {
            args: vec!["guest.wasm".into()],
            env: Vec::new(),
            preopens: Vec::new(),
            fuel: 0,
            timeout: None,
            http_port: crate::settings::DEFAULT_HTTP_PORT,
            memory_limit: None,
            limit_fd: None,
        };
        let source = Source::Layer {
            digest: "sha256:fuzz".into(),
            bytes: Arc::new(bytes),
        };
        let prepared = Guest::new("fuzz", source, settings, None).prepare()?;
        Ok(match prepared.linked {
            Linked::Module(_) => "module",
            Linked::Command(_) => "command",
            Linked::Http(_) => "http",
        })
    }
}
