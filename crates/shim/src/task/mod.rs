//! The Task API: each RPC goes from here to the process table and the
//! container's executor, and back. The service never knows which executor
//! runs a container.
//!
//! - `table`: containers and their processes (init and execs alike), and
//!   the order in which exits are published;
//! - `lifecycle`: Create, Exec, Start, Kill, Delete;
//! - `inspect`: State, Wait, Pids;
//! - `io`: a process's streams and terminal, CloseIO, ResizePty;
//! - `resources`: Pause, Resume, Update, Stats.

mod inspect;
mod io;
mod lifecycle;
mod resources;
mod table;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use barge_executor::Executors;
use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::{api, ttrpc};
use tokio::sync::{mpsc, Notify};
use ttrpc::r#async::TtrpcContext;

use crate::error::{Error, Result};
use crate::events::Publisher;
use crate::process::Exit;
use crate::sandbox::Pods;
use table::{publish_ready, State};

/// How long an exit waits for the process's terminal output to be copied
/// out before it is published anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// How long a reply is given to reach containerd before the shim ends.
const REPLY_GRACE: Duration = Duration::from_millis(50);

/// The shim's Task service.
pub struct Service {
    state: Mutex<State>,
    executors: Executors,
    publisher: Publisher,
    namespace: String,
    /// containerd's gRPC address, which executors may read images from.
    address: String,
    pub shutdown: Arc<Notify>,
    /// Asks the reaper to collect exits now.
    reap_now: mpsc::UnboundedSender<()>,
    /// Told of every request, so that an idle shim can trim its memory.
    pub activity: Notify,
    /// The pods this shim holds through the Sandbox API.
    pub pods: Pods,
}

impl Service {
    pub fn new(
        executors: Executors,
        publisher: Publisher,
        namespace: String,
        address: String,
        reap_now: mpsc::UnboundedSender<()>,
    ) -> Service {
        Service {
            reap_now,
            activity: Notify::new(),
            state: Mutex::default(),
            executors,
            publisher,
            namespace,
            address,
            shutdown: Arc::new(Notify::new()),
            pods: Pods::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the exit of a reaped child.
    pub fn on_exit(self: &Arc<Self>, pid: u32, exit: Exit) {
        if crate::logbinary::reaped(pid, &exit) || self.pods.reaped(pid, &exit) {
            return;
        }
        let mut state = self.state();
        match state.owner_of(pid) {
            Some((id, exec_id)) => self.reaped(&mut state, &id, &exec_id, exit),
            None => state.unclaimed.insert(pid, exit),
        }
    }

    /// Watches a process that now has a pid: a container's init made with
    /// CLONE_PARENT sends no SIGCHLD, so a pidfd tells when it ends. An exit
    /// the reaper collected before the pid was known is taken now.
    fn watch_exit(self: &Arc<Self>, state: &mut State, id: &str, exec_id: &str, pid: u32) {
        let reap_now = self.reap_now.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::process::exited(pid).await {
                log::debug!("watch pid {pid}: {e}");
            }
            let _ = reap_now.send(());
        });
        if let Some(exit) = state.unclaimed.take(pid) {
            self.reaped(state, id, exec_id, exit);
        }
    }

    /// A process of ours has been reaped: its exit is published once its
    /// terminal output has been copied out, in the table's order.
    fn reaped(self: &Arc<Self>, state: &mut State, id: &str, exec_id: &str, exit: Exit) {
        let Ok(entry) = state.container(id) else {
            return;
        };
        if exec_id.is_empty() {
            // An OOM kill is published before the init's TaskExit, even
            // when the kernel's OOM event has not reached the watch yet.
            entry
                .kills
                .catch_up(&|| lifecycle::publish_oom(&self.publisher, id));
            if !entry.own_pid_namespace {
                // Without a PID namespace nothing else ends the init's children.
                let _ = entry.container.kill(libc::SIGKILL as u32, true);
            }
        }
        let Ok(proc) = entry.process(id, exec_id) else {
            return;
        };
        log::debug!(
            "{} (pid {}) exited with {}",
            proc.describe(id),
            proc.pid,
            exit.status
        );
        proc.reaped = Some(exit);
        let drained: Option<Drained> = match proc.console.as_ref() {
            Some(console) => Some(Box::pin(console.drained(DRAIN_LIMIT))),
            None => fifos_read(&proc.held),
        };
        match drained {
            None => {
                proc.ready = true;
                publish_ready(&self.publisher, id, entry);
            }
            Some(drained) => {
                let service = self.clone();
                let (id, exec_id) = (id.to_string(), exec_id.to_string());
                tokio::spawn(async move {
                    drained.await;
                    let mut state = service.state();
                    if let Ok(entry) = state.container(&id) {
                        if let Ok(proc) = entry.process(&id, &exec_id) {
                            proc.ready = true;
                        }
                        publish_ready(&service.publisher, &id, entry);
                    }
                });
            }
        }
    }

    /// Whether any container is left.
    pub fn is_empty(&self) -> bool {
        self.state().containers.is_empty()
    }

    /// Ends the shim if it serves nothing any more: no container and no pod.
    pub fn shutdown_if_unused(&self) {
        if self.is_empty() && self.pods.is_empty() {
            self.shutdown.notify_one();
        }
    }

    /// As `shutdown_if_unused`, once the reply to the request in hand has
    /// gone out: the server drops its connections when the shim ends.
    pub fn shutdown_after_reply(self: &Arc<Self>) {
        let service = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REPLY_GRACE).await;
            service.shutdown_if_unused();
        });
    }

    pub(crate) fn logged<T>(&self, rpc: &str, id: &str, r: Result<T>) -> ttrpc::Result<T> {
        self.activity.notify_one();
        match r {
            Ok(v) => {
                log::debug!("{rpc} {id}: ok");
                Ok(v)
            }
            // NotFound is an answer, not a fault: CRI kills every exec
            // after it ends and asks after containers that are gone.
            Err(e @ Error::NotFound(_)) => {
                log::debug!("{rpc} {id}: {e}");
                Err(e.into())
            }
            Err(e) => {
                log::warn!("{rpc} {id}: {e}");
                Err(e.into())
            }
        }
    }
}

/// What a reaped process's exit waits for before it is published.
type Drained = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Without a terminal the process wrote straight into its output fifos;
/// when its client has not read all of it yet, the exit waits until it has
/// (see [`crate::stdio::until_read`]), within the drain limit. `None` when
/// nothing is left unread.
fn fifos_read(held: &crate::stdio::Held) -> Option<Drained> {
    let unread = |fds: &[std::os::fd::OwnedFd]| fds.iter().map(crate::stdio::unread).sum::<usize>();
    if unread(&held.outputs) == 0 {
        return None;
    }
    let fds: Vec<std::os::fd::OwnedFd> = held
        .outputs
        .iter()
        .filter_map(|f| f.try_clone().ok())
        .collect();
    Some(Box::pin(async move {
        let _ = tokio::time::timeout(
            DRAIN_LIMIT,
            crate::stdio::until_read(|| unread(&fds), "output"),
        )
        .await;
    }))
}

fn unimplemented<T>(rpc: &str) -> ttrpc::Result<T> {
    Err(Error::Unimplemented(format!("barge does not implement {rpc} yet")).into())
}

/// `id` or `id/exec`, for the log.
fn name(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        id.to_string()
    } else {
        format!("{id}/{exec_id}")
    }
}

/// The ttrpc server holds the service in an Arc; the verbs that spawn
/// tasks need it.
pub struct Handle(pub Arc<Service>);

#[async_trait::async_trait]
impl Task for Handle {
    async fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        self.0.logged("create", &req.id, self.0.create_task(&req))
    }

    async fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let r = self.0.start_process(&req);
        self.0.logged("start", &name(&req.id, &req.exec_id), r)
    }

    async fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let r = self.0.exec_process(&req).map(|_| Empty::new());
        self.0.logged("exec", &name(&req.id, &req.exec_id), r)
    }

    async fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let r = self.0.delete_process(&req);
        self.0.logged("delete", &name(&req.id, &req.exec_id), r)
    }

    async fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        let r = self.0.kill_process(&req).map(|_| Empty::new());
        self.0.logged("kill", &name(&req.id, &req.exec_id), r)
    }

    async fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let r = self.0.state_of(&req);
        self.0.logged("state", &name(&req.id, &req.exec_id), r)
    }

    async fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        self.0.logged("pids", &req.id, self.0.pids_of(&req))
    }

    async fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let r = self.0.wait_for(&req).await;
        self.0.logged("wait", &name(&req.id, &req.exec_id), r)
    }

    async fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        let r = self.0.close_io(&req).map(|_| Empty::new());
        self.0.logged("close_io", &name(&req.id, &req.exec_id), r)
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        let r = self.0.resize_pty(&req).map(|_| Empty::new());
        self.0.logged("resize_pty", &name(&req.id, &req.exec_id), r)
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        let task_pid = self
            .0
            .state()
            .containers
            .get(&req.id)
            .map(|e| e.init.pid)
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    async fn shutdown(&self, _: &TtrpcContext, _: ShutdownRequest) -> ttrpc::Result<Empty> {
        // containerd 2.4 sends Shutdown after every task's delete: a shim
        // that still serves a container or a pod stays.
        self.0.shutdown_if_unused();
        Ok(Empty::new())
    }

    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<Empty> {
        let r = self.0.pause(&req).map(|_| Empty::new());
        self.0.logged("pause", &req.id, r)
    }

    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<Empty> {
        let r = self.0.resume(&req).map(|_| Empty::new());
        self.0.logged("resume", &req.id, r)
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        unimplemented("Checkpoint")
    }

    async fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let r = self.0.update(&req).map(|_| Empty::new());
        self.0.logged("update", &req.id, r)
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> ttrpc::Result<api::StatsResponse> {
        // CRI polls every second: a gone container (NotFound) is no news.
        self.0.logged("stats", &req.id, self.0.stats(&req))
    }
}
