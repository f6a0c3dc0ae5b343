//! The workload that runs in the container's init: it loads and links the
//! guest when libcontainer validates (so that a bad guest fails `create`
//! with its reason), and runs it when the container starts.
//!
//! Everything here runs after pivot_root, inside the container's
//! namespaces, cgroup, seccomp filter and capability set.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use libcontainer::workload::{
    Executor as Workload, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use wasmtime::component::{Component, Linker as ComponentLinker};
use wasmtime::{Config, Engine, ExternType, InstancePre, Linker, Module};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::cache::{sha256_hex, Cache};
use crate::run::{self, P1Host, P2Host};
use crate::settings::Settings;

/// Where the guest's bytes come from.
#[derive(Clone)]
pub enum Source {
    /// A file in the rootfs, named as the container sees it.
    File(PathBuf),
    /// A layer of the image, read from containerd by the shim.
    Layer { digest: String, bytes: Arc<Vec<u8>> },
}

impl Source {
    pub fn label(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Layer { digest, .. } => format!("layer {digest}"),
        }
    }
}

/// A guest, linked and ready to instantiate.
pub enum Linked {
    Module(InstancePre<P1Host>),
    Command(CommandPre<P2Host>),
    Http(ProxyPre<P2Host>),
}

pub struct Prepared {
    pub engine: Engine,
    pub linked: Linked,
}

#[derive(Clone)]
pub struct Guest {
    pub id: String,
    pub source: Source,
    pub settings: Settings,
    pub cache: Option<Cache>,
    /// Filled by `validate` in the init; empty in the shim.
    prepared: Arc<Mutex<Option<Prepared>>>,
}

/// What barge can run, for error messages.
pub const RUNS: &str = "barge runs WASI preview 1 command modules (exporting `_start`), \
WASI 0.2 `wasi:cli/command` components and `wasi:http/proxy` components";

/// Writes one line to the container's stderr.
pub fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "barge: wasm: {message}");
}

impl Guest {
    pub fn new(id: &str, source: Source, settings: Settings, cache: Option<Cache>) -> Guest {
        Guest {
            id: id.to_string(),
            source,
            settings,
            cache,
            prepared: Arc::new(Mutex::new(None)),
        }
    }

    fn read(&self) -> Result<Vec<u8>, String> {
        let bytes = match &self.source {
            Source::File(path) => {
                std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?
            }
            Source::Layer { bytes, .. } => bytes.as_ref().clone(),
        };
        if bytes.starts_with(b"\0asm") {
            return Ok(bytes);
        }
        let label = self.source.label();
        match wat::parse_bytes(&bytes) {
            Ok(binary) => Ok(binary.into_owned()),
            Err(e) => Err(format!(
                "{label} is neither a WebAssembly binary nor valid WebAssembly text: {e}"
            )),
        }
    }

    fn engine(&self) -> Result<Engine, String> {
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .consume_fuel(self.settings.fuel > 0)
            .wasm_component_model(true);
        Engine::new(&config).map_err(|e| format!("configure wasmtime: {e:#}"))
    }

    /// Loads, compiles (or takes from the cache) and links the guest.
    pub(crate) fn prepare(&self) -> Result<Prepared, String> {
        let label = self.source.label();
        let bytes = self.read()?;
        let is_component = wasmparser::Parser::is_component(&bytes);
        let engine = self.engine()?;
        for preopen in &self.settings.preopens {
            if !std::path::Path::new(&preopen.path).is_dir() {
                return Err(format!(
                    "preopen {} is not a directory in the container",
                    preopen.path
                ));
            }
        }
        let compat = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            h.finish()
        };
        let key = Cache::key(&sha256_hex(&bytes), compat);
        let started = Instant::now();
        let mut loaded = None;
        if let Some(cache) = &self.cache {
            match cache.get(&key) {
                Ok(Some(payload)) => {
                    // SAFETY: the payload is a wasmtime serialization that we
                    // wrote ourselves into a root-owned cache, and its SHA-256
                    // was just checked; wasmtime also checks its own header
                    // and the engine compatibility before using it.
                    let result = if is_component {
                        unsafe { Component::deserialize(&engine, &payload) }
                            .map(Compiled::Component)
                    } else {
                        unsafe { Module::deserialize(&engine, &payload) }.map(Compiled::Module)
                    };
                    match result {
                        Ok(c) => {
                            log::info!(
                                "wasm {}: cache hit {key} for {label}, loaded in {} ms",
                                self.id,
                                started.elapsed().as_millis()
                            );
                            loaded = Some(c);
                        }
                        Err(e) => {
                            log::warn!("wasm {}: cache entry {key} refused by wasmtime ({e:#}); rebuilding", self.id);
                            cache.forget(&key);
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => log::warn!("wasm {}: {e}; rebuilding", self.id),
            }
        }
        let compiled = match loaded {
            Some(c) => c,
            None => {
                let compiled = if is_component {
                    Component::new(&engine, &bytes).map(Compiled::Component)
                } else {
                    Module::new(&engine, &bytes).map(Compiled::Module)
                }
                .map_err(|e| format!("{label} is not valid WebAssembly: {e:#}"))?;
                let ms = started.elapsed().as_millis();
                match (&self.cache, compiled.serialize()) {
                    (Some(cache), Ok(payload)) => match cache.put(&key, &payload) {
                        Ok(()) => log::info!(
                            "wasm {}: cache miss for {label}, compiled in {ms} ms and stored as {key}",
                            self.id
                        ),
                        Err(e) => log::warn!(
                            "wasm {}: compiled {label} in {ms} ms but could not store it: {e}",
                            self.id
                        ),
                    },
                    (Some(_), Err(e)) => {
                        log::warn!("wasm {}: serialize {label}: {e:#}", self.id)
                    }
                    (None, _) => log::info!(
                        "wasm {}: compiled {label} in {ms} ms (cache off)",
                        self.id
                    ),
                }
                compiled
            }
        };
        let linked = match compiled {
            Compiled::Module(module) => link_module(&engine, &module, &label)?,
            Compiled::Component(component) => link_component(&engine, &component, &label)?,
        };
        Ok(Prepared { engine, linked })
    }
}

enum Compiled {
    Module(Module),
    Component(Component),
}

impl Compiled {
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Compiled::Module(m) => m.serialize(),
            Compiled::Component(c) => c.serialize(),
        }
    }
}

/// Shows the guest's args, not the shim's, as this process's command line
/// and name (`ps`, `docker top`): the init was forked from the shim and
/// never exec'd. The command line is rewritten in place, in the memory the
/// kernel reads /proc/self/cmdline from; whatever does not fit is cut.
fn set_title(args: &[String]) {
    let Some(first) = args.first() else { return };
    let name = first.rsplit('/').next().unwrap_or(first);
    let mut comm: Vec<u8> = name.bytes().filter(|b| *b != 0).take(15).collect();
    comm.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr()) };
    let Some((start, end)) = own_area(Area::Args) else {
        return;
    };
    let mut title: Vec<u8> = Vec::new();
    for arg in args {
        title.extend(arg.bytes().filter(|b| *b != 0));
        title.push(0);
    }
    title.resize(end - start, 0);
    if let Some(last) = title.last_mut() {
        *last = 0;
    }
    // SAFETY: [start, end) is this process's own argument area, mapped and
    // writable (it is on the initial stack); nothing in this process reads
    // the shim's arguments from it any more.
    unsafe { std::ptr::copy_nonoverlapping(title.as_ptr(), start as *mut u8, end - start) };
}

/// The initial stack's areas that /proc/<pid>/cmdline and environ show.
#[derive(Clone, Copy)]
enum Area {
    Args,
    Env,
}

/// Where one of this process's areas lies, from /proc/self/stat.
fn own_area(area: Area) -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which ends at the last ')': arg_start
    // and arg_end are fields 48 and 49, env_start and env_end 50 and 51,
    // so 45 to 48 counting from 0 here.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let first = match area {
        Area::Args => 45,
        Area::Env => 47,
    };
    let start = fields.get(first)?.parse::<usize>().ok()?;
    let end = fields.get(first + 1)?.parse::<usize>().ok()?;
    (end > start).then_some((start, end))
}

/// The init is a fork of the shim and keeps the shim's environment, which
/// the guest never sees (it gets the spec's through WASI). It is emptied,
/// so that a process of the container that may read /proc/1/environ (one
/// with CAP_SYS_PTRACE) finds nothing of the host there.
fn wipe_environ() {
    // SAFETY: the init has one thread, and nothing in it holds a pointer
    // returned by getenv across this call.
    unsafe { libc::clearenv() };
    let Some((start, end)) = own_area(Area::Env) else {
        return;
    };
    // SAFETY: [start, end) is this process's own environment area, mapped
    // and writable (on the initial stack); after clearenv nothing points
    // into it.
    unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
}

/// The descriptors open in this process, leaving out the one used to list
/// them (its number is free again afterwards).
fn unsupported_import(label: &str, e: wasmtime::Error) -> String {
    format!(
        "{label} needs an import that barge does not provide: {e:#}. Guests may import \
         WASI preview 1 (`wasi_snapshot_preview1`) or WASI 0.2 (wasi:cli, wasi:io, \
         wasi:clocks, wasi:filesystem, wasi:random, wasi:sockets, wasi:http)"
    )
}

fn link_module(engine: &Engine, module: &Module, label: &str) -> Result<Linked, String> {
    match module.get_export("_start") {
        Some(ExternType::Func(_)) => {}
        _ => {
            let exports: Vec<&str> = module.exports().map(|e| e.name()).collect();
            return Err(format!(
                "{label} is a WebAssembly module without a `_start` function (it exports {}); {RUNS}",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            ));
        }
    }
    let mut linker: Linker<P1Host> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h| &mut h.wasi)
        .map_err(|e| format!("link WASI preview 1: {e:#}"))?;
    let pre = linker
        .instantiate_pre(module)
        .map_err(|e| unsupported_import(label, e))?;
    Ok(Linked::Module(pre))
}

fn link_component(engine: &Engine, component: &Component, label: &str) -> Result<Linked, String> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let mut linker: ComponentLinker<P2Host> = ComponentLinker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| format!("link WASI 0.2: {e:#}"))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(|e| format!("link wasi:http: {e:#}"))?;
    let pre = || {
        linker
            .instantiate_pre(component)
            .map_err(|e| unsupported_import(label, e))
    };
    if exports.iter().any(|e| e.starts_with("wasi:cli/run@0.2")) {
        let pre = CommandPre::new(pre()?).map_err(|e| {
            format!("{label}: its wasi:cli/run export does not match WASI 0.2: {e:#}")
        })?;
        Ok(Linked::Command(pre))
    } else if exports
        .iter()
        .any(|e| e.starts_with("wasi:http/incoming-handler@0.2"))
    {
        let pre = ProxyPre::new(pre()?).map_err(|e| {
            format!("{label}: its wasi:http/incoming-handler export does not match WASI 0.2: {e:#}")
        })?;
        Ok(Linked::Http(pre))
    } else {
        Err(format!(
            "{label} is a component that exports neither wasi:cli/run nor wasi:http/incoming-handler (it exports {}); {RUNS}",
            if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            }
        ))
    }
}

impl Workload for Guest {
    fn validate(&self, _spec: &barge_executor::Spec) -> Result<(), ExecutorValidationError> {
        let prepared = self
            .prepare()
            .map_err(ExecutorValidationError::ArgValidationError)?;
        *self.prepared.lock().unwrap_or_else(|e| e.into_inner()) = Some(prepared);
        Ok(())
    }

    /// The guest gets the spec's environment through WASI; the init's own
    /// environment stays as it is.
    fn setup_envs(
        &self,
        _envs: std::collections::HashMap<String, String>,
    ) -> Result<(), ExecutorSetEnvsError> {
        Ok(())
    }

    fn exec(&self, _spec: &barge_executor::Spec) -> Result<(), ExecutorError> {
        // A native init execs, and the kernel closes every descriptor it
        // inherited from the shim (all close-on-exec). This init does not
        // exec, so it closes them itself: otherwise it would hold, among
        // others, the write end of its own stdin pipe and never see EOF.
        // libcontainer is done with its channels by now. The runtime is
        // built first: tokio dups a descriptor of the shim's signal driver.
        let inherited = barge_executor::open_fds();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let keep = self.settings.limit_fd;
        for fd in inherited
            .into_iter()
            .filter(|fd| *fd > 2 && Some(*fd) != keep)
        {
            // SAFETY: every one of these came from the shim; nothing in this
            // process uses them from here on.
            unsafe { libc::close(fd) };
        }
        set_title(&self.settings.args);
        wipe_environ();
        // The init runs the shim's image, where a native one would have
        // exec'd the container's program. Not dumpable, its /proc entries
        // (exe, mem, maps, environ, fd) stay closed to the container's
        // other processes unless they hold CAP_SYS_PTRACE.
        if let Err(e) = nix::sys::prctl::set_dumpable(false) {
            say(&format!("cannot make the init non-dumpable: {e}"));
        }
        let prepared = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let code = match (prepared, runtime) {
            (Some(p), Ok(runtime)) => run::run(self, p, runtime),
            (None, _) => {
                say("the guest was not prepared");
                1
            }
            (_, Err(e)) => {
                say(&format!("cannot start the async runtime: {e}"));
                1
            }
        };
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        std::process::exit(code);
    }
}
