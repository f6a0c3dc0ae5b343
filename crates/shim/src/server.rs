//! The long-running shim server: one thread, one event loop.
//!
//! Everything runs on a current-thread tokio runtime, so the process never
//! has a second thread and executors may fork safely. The reaper, the ttrpc
//! server and the event publisher are tasks on that loop.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use barge_executor::Executors;
use containerd_shim_protos::protobuf::Message as _;
use containerd_shim_protos::sandbox_async::create_sandbox;
use containerd_shim_protos::shim_async::create_task;
use futures_core::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use ttrpc::r#async::transport::Listener;

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

    let incoming = Incoming::new(listener)?;
    let server = ttrpc::r#async::Server::new().add_listener(Listener::new(incoming));
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

/// How long accept waits at the descriptor limit before it tries again.
const FD_LIMIT_RETRY: Duration = Duration::from_millis(100);

/// The connections to the shim's socket, accepted here rather than in
/// ttrpc: at the descriptor limit (EMFILE, ENFILE) ttrpc's own loop tries
/// accept again at once, for ever, spinning the shim's one thread and
/// flooding the log while the client waits. Here a spare descriptor is
/// kept for that moment: it is given up to take the waiting connection,
/// whose first request is answered RESOURCE_EXHAUSTED with the reason,
/// and the spare is taken back once that connection is closed. Without a
/// spare, accept waits [`FD_LIMIT_RETRY`] and tries again.
struct Incoming {
    listener: UnixListener,
    spare: Option<File>,
    retry: Option<Pin<Box<Sleep>>>,
    /// Whether the wait at the limit has been logged.
    warned: bool,
}

impl Incoming {
    fn new(listener: OwnedFd) -> Result<Incoming> {
        let listener = std::os::unix::net::UnixListener::from(listener);
        listener
            .set_nonblocking(true)
            .map_err(Error::io("set the shim socket non-blocking"))?;
        let listener = UnixListener::from_std(listener).map_err(Error::io("listen"))?;
        Ok(Incoming {
            listener,
            spare: spare_fd(),
            retry: None,
            warned: false,
        })
    }
}

fn spare_fd() -> Option<File> {
    File::open("/dev/null").ok()
}

fn at_fd_limit(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

impl Stream for Incoming {
    type Item = io::Result<UnixStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(retry) = this.retry.as_mut() {
                ready!(retry.as_mut().poll(cx));
                this.retry = None;
            }
            if this.spare.is_none() {
                this.spare = spare_fd();
            }
            let e = match ready!(this.listener.poll_accept(cx)) {
                Ok((stream, _)) => {
                    this.warned = false;
                    return Poll::Ready(Some(Ok(stream)));
                }
                Err(e) => e,
            };
            if !at_fd_limit(&e) {
                log::warn!("accept a connection: {e}");
                this.retry = Some(Box::pin(tokio::time::sleep(FD_LIMIT_RETRY)));
                continue;
            }
            if this.spare.take().is_some() {
                if let Poll::Ready(Ok((stream, _))) = this.listener.poll_accept(cx) {
                    let reason = format!(
                        "the shim is at its limit of open files (RLIMIT_NOFILE {}): {e}",
                        nofile_limit()
                    );
                    log::warn!("refusing a connection: {reason}");
                    tokio::spawn(refuse(stream, reason));
                    continue;
                }
            }
            if !this.warned {
                log::warn!("accept waits for a free descriptor: {e}");
                this.warned = true;
            }
            this.retry = Some(Box::pin(tokio::time::sleep(FD_LIMIT_RETRY)));
        }
    }
}

/// The soft RLIMIT_NOFILE, for messages.
fn nofile_limit() -> String {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.to_string()
    } else {
        "unknown".into()
    }
}

/// Answers the first request on `stream` with RESOURCE_EXHAUSTED and
/// `reason`, then closes it (within 5 s).
async fn refuse(mut stream: UnixStream, reason: String) {
    const HEADER: usize = 10;
    const RESPONSE: u8 = 2;
    let answer = async {
        let mut header = [0u8; HEADER];
        stream.read_exact(&mut header).await?;
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let stream_id = &header[4..8];
        tokio::io::copy(
            &mut (&mut stream).take(length.into()),
            &mut tokio::io::sink(),
        )
        .await?;
        let response = ttrpc::Response {
            status: Some(ttrpc::get_status(ttrpc::Code::RESOURCE_EXHAUSTED, reason)).into(),
            ..Default::default()
        };
        let payload = response.write_to_bytes().map_err(io::Error::other)?;
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(stream_id);
        frame.extend_from_slice(&[RESPONSE, 0]);
        frame.extend_from_slice(&payload);
        stream.write_all(&frame).await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), answer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_answered_resource_exhausted_then_closed() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let refusing = tokio::spawn(refuse(server, "at the limit".into()));
        let payload = b"any request";
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&7u32.to_be_bytes());
        frame.extend_from_slice(&[1, 0]);
        frame.extend_from_slice(payload);
        client.write_all(&frame).await.unwrap();
        let mut header = [0u8; 10];
        client.read_exact(&mut header).await.unwrap();
        assert_eq!(header[4..8], 7u32.to_be_bytes(), "the request's stream id");
        assert_eq!(header[8], 2, "a response");
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let mut body = vec![0; length as usize];
        client.read_exact(&mut body).await.unwrap();
        let response = ttrpc::Response::parse_from_bytes(&body).unwrap();
        assert_eq!(
            response.status.code.enum_value(),
            Ok(ttrpc::Code::RESOURCE_EXHAUSTED)
        );
        assert_eq!(response.status.message, "at the limit");
        refusing.await.unwrap();
        assert_eq!(client.read(&mut header).await.unwrap(), 0, "closed");
    }
}
