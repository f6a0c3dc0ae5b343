//! The long-running shim server: one thread, one event loop.
//!
//! Everything runs on a current-thread tokio runtime, so the process never
//! has a second thread and executors may fork safely. The reaper, the ttrpc
//! server and the event publisher are tasks on that loop.

use std::os::fd::{IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use barge_executor::Executors;
use containerd_shim_protos::sandbox_async::create_sandbox;
use containerd_shim_protos::shim_async::create_task;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::args::Flags;
use crate::error::{Error, Result};
use crate::events::Publisher;
use crate::process::reap;
use crate::sandbox::SandboxHandle;
use crate::task::{Handle, Service};

const TASK_V2: &str = "containerd.task.v2.Task";
const TASK_V3: &str = "containerd.task.v3.Task";

/// Runs the server until containerd shuts it down. Returns the exit code.
pub fn serve(
    flags: &Flags,
    ttrpc_address: &str,
    socket: PathBuf,
    listener: OwnedFd,
    executors: Executors,
) -> Result<()> {
    // Orphans of containers (and the inits an OCI binary leaves) come to us.
    nix::sys::prctl::set_child_subreaper(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("start event loop"))?;
    let result = runtime.block_on(run(flags, ttrpc_address, listener, executors));
    let _ = std::fs::remove_file(&socket);
    result
}

async fn run(
    flags: &Flags,
    ttrpc_address: &str,
    listener: OwnedFd,
    executors: Executors,
) -> Result<()> {
    let publisher = Publisher::start(ttrpc_address, &flags.namespace);
    let (reap_now, mut reap_requests) = mpsc::unbounded_channel();
    let service = Arc::new(Service::new(
        executors,
        publisher.clone(),
        flags.namespace.clone(),
        flags.address.clone(),
        reap_now,
    ));

    let mut children = signal(SignalKind::child()).map_err(Error::io("watch SIGCHLD"))?;
    let reaper = {
        let service = service.clone();
        tokio::spawn(async move {
            loop {
                for (pid, exit) in reap() {
                    service.on_exit(pid, exit);
                }
                tokio::select! {
                    _ = children.recv() => {}
                    _ = reap_requests.recv() => {}
                }
            }
        })
    };

    // Task API v2 and v3 differ only in the service name: serve both, so
    // that every containerd finds the one it speaks.
    let handle = Arc::new(Handle(service.clone()));
    let mut services = create_task(handle.clone());
    let v3 = services
        .remove(TASK_V3)
        .ok_or_else(|| Error::Other("generated Task service is missing".into()))?;
    services.insert(TASK_V2.to_string(), v3);
    services.extend(create_task(handle));
    services.extend(create_sandbox(Arc::new(SandboxHandle(service.clone()))));

    // SAFETY: `listener` is an open, bound unix socket that we own; the
    // server takes it over and nothing else uses the descriptor.
    let server = unsafe { ttrpc::r#async::Server::new().add_unix_listener(listener.into_raw_fd()) }
        .map_err(|e| Error::Other(format!("listen: {e}")))?;
    let mut server = server.register_service(services);
    server
        .start()
        .await
        .map_err(|e| Error::Other(format!("start ttrpc server: {e}")))?;
    log::info!(
        "serving namespace {} (first container {})",
        flags.namespace,
        flags.id
    );

    let trimmer = {
        let service = service.clone();
        tokio::spawn(async move { crate::idle::trim_when_quiet(&service.activity).await })
    };

    service.shutdown.notified().await;
    // Loggers whose containers are gone end (within bounds) before the shim.
    crate::logbinary::ended().await;
    trimmer.abort();
    log::info!("shutting down");
    publisher.flush().await;
    reaper.abort();
    let _ = server.shutdown().await;
    Ok(())
}
