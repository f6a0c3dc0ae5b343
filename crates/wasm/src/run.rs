//! Running a prepared guest in the container's init, and turning how it
//! ended into the container's exit code:
//! - it returns, or calls `proc_exit(0)`: 0;
//! - `proc_exit(n)` / `wasi:cli/exit`: n;
//! - a trap (including running out of fuel): 134, with the trap on stderr;
//! - SIGTERM or SIGINT: 128 + the signal; the wall-clock limit: 124.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::guest::{say, Guest, Linked, Prepared};
use crate::settings::Settings;
use crate::stop;

/// The exit code of a guest that trapped, as the wasmtime CLI uses (SIGABRT).
pub const TRAP_EXIT: i32 = 134;

/// Store data for a WASI preview 1 module.
pub struct P1Host {
    pub wasi: WasiP1Ctx,
    limits: Limits,
}

/// Store data for a WASI 0.2 component.
pub struct P2Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoOutgoing,
    table: ResourceTable,
    limits: Limits,
}

/// Incoming requests only: a guest's outgoing requests are refused, as
/// barge builds wasmtime without an HTTP client or TLS.
struct NoOutgoing;

type SendResult = wasmtime_wasi_http::Result<(
    hyper::http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for NoOutgoing {
    fn send_request(
        &mut self,
        _request: hyper::http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl WasiView for P2Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for P2Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

fn wasi_builder(settings: &Settings) -> wasmtime::Result<WasiCtxBuilder> {
    let mut b = WasiCtxBuilder::new();
    b.inherit_stdio().args(&settings.args).envs(&settings.env);
    for p in &settings.preopens {
        let perms = if p.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(&p.path, &p.path, perms)?;
    }
    Ok(b)
}

fn limits(settings: &Settings) -> Limits {
    Limits {
        others: StoreLimitsBuilder::new().build(),
        at_create: settings.memory_limit,
        shared: settings.limit_fd,
    }
}

/// The limit on each linear memory: the container's memory limit as the
/// shim last wrote it (see `limit`), so that an Update reaches running
/// guests at their next `memory.grow`, and every instance made afterwards.
/// Memory a guest already has is kept: a lower limit does not shrink it
/// (the cgroup may then OOM-kill the container).
pub struct Limits {
    others: StoreLimits,
    at_create: Option<usize>,
    shared: Option<std::os::fd::RawFd>,
}

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self
            .shared
            .and_then(crate::limit::read)
            .unwrap_or(self.at_create);
        if limit.is_some_and(|limit| desired > limit) {
            return Ok(false);
        }
        self.others.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.others.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.others.instances()
    }

    fn tables(&self) -> usize {
        self.others.tables()
    }

    fn memories(&self) -> usize {
        self.others.memories()
    }
}

fn arm_store<T>(store: &mut Store<T>, settings: &Settings) -> wasmtime::Result<()> {
    if settings.fuel > 0 {
        store.set_fuel(settings.fuel)?;
    }
    // Any bump of the epoch (a stop) traps the guest at its next check.
    store.set_epoch_deadline(1);
    store.epoch_deadline_trap();
    Ok(())
}

fn p2_store(engine: &Engine, settings: &Settings) -> wasmtime::Result<Store<P2Host>> {
    let host = P2Host {
        wasi: wasi_builder(settings)?.build(),
        http: WasiHttpCtx::new(),
        hooks: NoOutgoing,
        table: ResourceTable::new(),
        limits: limits(settings),
    };
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limits);
    arm_store(&mut store, settings)?;
    Ok(store)
}

/// Runs the guest to its end and returns the container's exit code.
///
/// The init was forked from the shim's thread while it drove the shim's
/// tokio runtime, and a forked thread keeps that thread-local state; a new
/// runtime can only be entered from a fresh thread.
pub fn run(guest: &Guest, prepared: Prepared, runtime: tokio::runtime::Runtime) -> i32 {
    if let Err(e) = stop::arm(&prepared.engine, guest.settings.timeout) {
        say(&format!("cannot watch for stop signals: {e}"));
        return 1;
    }
    std::thread::scope(|s| {
        let guest_thread = std::thread::Builder::new()
            .name("barge-guest".into())
            .spawn_scoped(s, || run_on_this_thread(guest, &prepared, runtime));
        match guest_thread.map(|t| t.join()) {
            Ok(Ok(code)) => code,
            Ok(Err(_)) => {
                say("the guest's thread panicked");
                1
            }
            Err(e) => {
                say(&format!("cannot start the guest's thread: {e}"));
                1
            }
        }
    })
}

fn run_on_this_thread(guest: &Guest, prepared: &Prepared, runtime: tokio::runtime::Runtime) -> i32 {
    let label = guest.source.label();
    let settings = &guest.settings;
    let result = runtime.block_on(async {
        match &prepared.linked {
            Linked::Module(pre) => {
                let host = P1Host {
                    wasi: wasi_builder(settings)?.build_p1(),
                    limits: limits(settings),
                };
                let mut store = Store::new(&prepared.engine, host);
                store.limiter(|h| &mut h.limits);
                arm_store(&mut store, settings)?;
                let instance = pre.instantiate_async(&mut store).await?;
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call_async(&mut store, ()).await
            }
            Linked::Command(pre) => {
                let mut store = p2_store(&prepared.engine, settings)?;
                let command = pre.instantiate_async(&mut store).await?;
                match command.wasi_cli_run().call_run(&mut store).await? {
                    Ok(()) => Ok(()),
                    Err(()) => Err(I32Exit(1).into()),
                }
            }
            Linked::Http(pre) => serve(prepared, pre, settings).await,
        }
    });
    exit_code(result, &label, settings)
}

fn exit_code(result: wasmtime::Result<()>, label: &str, settings: &Settings) -> i32 {
    let err = match result {
        Ok(()) => return 0,
        Err(e) => e,
    };
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return exit.0;
    }
    if let Some(stopped) = stop::stopped() {
        if stopped == stop::Stopped::Timeout {
            say(&format!(
                "{label} stopped: the wall-clock limit of {} ms was reached",
                settings.timeout.map_or(0, |t| t.as_millis())
            ));
        }
        return stopped.exit_code();
    }
    if let Some(Trap::OutOfFuel) = err.downcast_ref::<Trap>() {
        say(&format!(
            "{label} ran out of fuel (limit {}): {err:#}",
            settings.fuel
        ));
        return TRAP_EXIT;
    }
    say(&format!("{label} failed: {err:#}"));
    TRAP_EXIT
}

/// Serves a `wasi:http/proxy` component: one instance per request.
async fn serve(
    prepared: &Prepared,
    pre: &ProxyPre<P2Host>,
    settings: &Settings,
) -> wasmtime::Result<()> {
    let addr = SocketAddr::from(([0, 0, 0, 0], settings.http_port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| wasmtime::format_err!("listen on {addr}: {e}"))?;
    say(&format!("serving wasi:http on {addr}"));
    loop {
        let (stream, _) = listener.accept().await?;
        let engine = prepared.engine.clone();
        let pre = pre.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let engine = engine.clone();
                let pre = pre.clone();
                let settings = settings.clone();
                async move { Ok::<_, Infallible>(handle(engine, pre, settings, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                log::debug!("wasi:http connection: {e}");
            }
        });
    }
}

async fn handle(
    engine: Engine,
    pre: ProxyPre<P2Host>,
    settings: Settings,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    let result = async {
        let mut store = p2_store(&engine, &settings)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = store.data_mut().http().new_incoming_request(
            wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http,
            req,
        )?;
        let out = store.data_mut().http().new_response_outparam(tx)?;
        let proxy = pre.instantiate_async(&mut store).await?;
        let task = tokio::spawn(async move {
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match rx.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(wasmtime::format_err!(
                "the guest answered with an error: {code:?}"
            )),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(wasmtime::format_err!("the guest set no response")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(wasmtime::format_err!("the handler task failed: {e}")),
            },
        }
    }
    .await;
    result.unwrap_or_else(|e: wasmtime::Error| {
        say(&format!("wasi:http request failed: {e:#}"));
        let body = Full::new(Bytes::from(format!("barge: the wasm guest failed: {e}\n")))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync();
        let mut response = hyper::Response::new(body);
        *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        response
    })
}
