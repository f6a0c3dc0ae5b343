//! The Task API: each RPC goes from here to the container's executor and
//! back. The service never knows which executor runs a container.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use barge_executor::{Container, CreateContext, Executors};
use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, KillRequest, PidsRequest, PidsResponse, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, WaitRequest, WaitResponse,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::types::task::{ProcessInfo, Status};
use containerd_shim_protos::{api, ttrpc};
use tokio::sync::{mpsc, watch, Notify};
use ttrpc::r#async::TtrpcContext;

use crate::error::{Error, Result};
use crate::events::{timestamp, Event, Publisher};
use crate::process::{Exit, Unclaimed};
use crate::{mount, options, spec, state, stdio, AbortOnDrop};

/// One container of this shim.
struct Entry {
    bundle: PathBuf,
    container: Box<dyn Container>,
    pid: u32,
    started: bool,
    exit: Option<Exit>,
    exited: watch::Sender<Option<Exit>>,
    held: stdio::Held,
    io: TaskIO,
    rootfs: Option<PathBuf>,
    own_pid_namespace: bool,
    /// The OOM watch; dropping the entry stops it.
    _oom: AbortOnDrop,
}

impl Entry {
    fn status(&self) -> Status {
        match (self.exit, self.started) {
            (Some(_), _) => Status::STOPPED,
            (None, true) => Status::RUNNING,
            (None, false) => Status::CREATED,
        }
    }
}

#[derive(Default)]
struct State {
    containers: HashMap<String, Entry>,
    unclaimed: Unclaimed,
}

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
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the exit of a reaped child.
    pub fn on_exit(&self, pid: u32, exit: Exit) {
        let mut state = self.state();
        let Some((id, entry)) = state
            .containers
            .iter_mut()
            .find(|(_, e)| e.pid == pid && e.exit.is_none())
        else {
            state.unclaimed.insert(pid, exit);
            return;
        };
        let id = id.clone();
        log::debug!("container {id} init {pid} exited with {}", exit.status);
        self.mark_exited(&id, entry, exit);
    }

    fn mark_exited(&self, id: &str, entry: &mut Entry, exit: Exit) {
        entry.exit = Some(exit);
        entry.held = stdio::Held::default();
        if !entry.own_pid_namespace {
            // Without a PID namespace nothing else ends the init's children.
            let _ = entry.container.kill(libc::SIGKILL as u32, true);
        }
        self.publisher.publish(Event::Exit(TaskExit {
            container_id: id.to_string(),
            id: id.to_string(),
            pid: entry.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        }));
        entry.exited.send_replace(Some(exit));
    }

    fn create_task(&self, req: &CreateTaskRequest) -> Result<CreateTaskResponse> {
        spec::check_id(&req.id)?;
        if self.state().containers.contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!(
                "container {} already exists",
                req.id
            )));
        }
        let bundle = PathBuf::from(&req.bundle);
        let options = options::decode(req.options.as_ref())?;
        let spec = spec::load(&bundle)?;
        let rootfs_target = bundle.join("rootfs");
        mount::mount_rootfs(&req.rootfs, &rootfs_target)?;
        let rootfs = (!req.rootfs.is_empty()).then(|| rootfs_target.clone());
        let undo_mount = || {
            if let Some(r) = &rootfs {
                let _ = mount::unmount_all(r);
            }
        };
        let created = (|| {
            check_rootfs(&bundle, &spec)?;
            let (stdio, held) = stdio::open(&req.stdin, &req.stdout, &req.stderr, req.terminal)?;
            let ctx = CreateContext {
                id: &req.id,
                namespace: &self.namespace,
                containerd_address: &self.address,
                bundle: &bundle,
                spec: &spec,
                options: &options,
                stdio,
            };
            let executor = self.executors.select(&ctx)?;
            state::save(&bundle, executor.name(), &options)?;
            log::info!(
                "creating container {} with executor {}",
                req.id,
                executor.name()
            );
            let container = executor.create(ctx)?;
            Ok::<_, Error>((container, held))
        })();
        let (container, held) = match created {
            Ok(c) => c,
            Err(e) => {
                undo_mount();
                state::remove(&bundle);
                return Err(e);
            }
        };
        let pid = container.pid();
        let io = TaskIO {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
            ..Default::default()
        };
        // Watch for OOM kills from now on, while the init is still waiting.
        let oom = {
            let publisher = self.publisher.clone();
            let id = req.id.clone();
            tokio::spawn(async move {
                crate::oom::watch(pid, || {
                    publisher.publish(Event::Oom(TaskOOM {
                        container_id: id.clone(),
                        ..Default::default()
                    }))
                })
                .await
            })
        };
        let mut entry = Entry {
            bundle: bundle.clone(),
            container,
            pid,
            started: false,
            exit: None,
            exited: watch::channel(None).0,
            held,
            io: io.clone(),
            rootfs,
            own_pid_namespace: spec::has_own_pid_namespace(&spec),
            _oom: AbortOnDrop(oom.abort_handle()),
        };
        self.publisher.publish(Event::Create(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(io),
            checkpoint: req.checkpoint.clone(),
            pid,
            ..Default::default()
        }));
        let reap_now = self.reap_now.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::process::exited(pid).await {
                log::warn!("watch init {pid}: {e}");
            }
            let _ = reap_now.send(());
        });
        let mut state = self.state();
        if let Some(exit) = state.unclaimed.take(pid) {
            self.mark_exited(&req.id, &mut entry, exit);
        }
        state.containers.insert(req.id.clone(), entry);
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start_task(&self, req: &StartRequest) -> Result<StartResponse> {
        no_exec(&req.exec_id)?;
        let mut state = self.state();
        let entry = find(&mut state, &req.id)?;
        if entry.status() != Status::CREATED {
            return Err(Error::FailedPrecondition(format!(
                "container {} cannot be started: it is {:?}",
                req.id,
                entry.status()
            )));
        }
        entry.container.start()?;
        entry.started = true;
        self.publisher.publish(Event::Start(TaskStart {
            container_id: req.id.clone(),
            pid: entry.pid,
            ..Default::default()
        }));
        Ok(StartResponse {
            pid: entry.pid,
            ..Default::default()
        })
    }

    fn delete_task(&self, req: &DeleteRequest) -> Result<DeleteResponse> {
        no_exec(&req.exec_id)?;
        let mut state = self.state();
        let entry = find(&mut state, &req.id)?;
        if entry.status() == Status::RUNNING {
            return Err(Error::FailedPrecondition(format!(
                "container {} is running: kill it before deleting it",
                req.id
            )));
        }
        let mut entry = state.containers.remove(&req.id).expect("found above");
        let exit = entry.exit.unwrap_or(Exit {
            status: 128 + libc::SIGKILL as u32,
            at: std::time::SystemTime::now(),
        });
        let result = entry.container.delete();
        if let Some(rootfs) = &entry.rootfs {
            if let Err(e) = mount::unmount_all(rootfs) {
                log::warn!("{e}");
            }
        }
        state::remove(&entry.bundle);
        if let Err(e) = result {
            log::warn!("delete container {}: {e}", req.id);
        }
        if entry.exit.is_none() {
            // Created but never started: nobody else reports its end.
            entry.exited.send_replace(Some(exit));
        }
        self.publisher.publish(Event::Delete(TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid: entry.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        }));
        Ok(DeleteResponse {
            pid: entry.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    fn kill_task(&self, req: &KillRequest) -> Result<()> {
        no_exec(&req.exec_id)?;
        let mut state = self.state();
        let entry = find(&mut state, &req.id)?;
        if entry.exit.is_some() {
            return Err(Error::NotFound(format!(
                "container {}: process already finished",
                req.id
            )));
        }
        entry.container.kill(req.signal, req.all)?;
        Ok(())
    }

    fn state_of(&self, req: &StateRequest) -> Result<StateResponse> {
        no_exec(&req.exec_id)?;
        let mut state = self.state();
        let entry = find(&mut state, &req.id)?;
        let mut resp = StateResponse {
            id: req.id.clone(),
            bundle: entry.bundle.display().to_string(),
            pid: entry.pid,
            status: entry.status().into(),
            stdin: entry.io.stdin.clone(),
            stdout: entry.io.stdout.clone(),
            stderr: entry.io.stderr.clone(),
            terminal: entry.io.terminal,
            ..Default::default()
        };
        if let Some(exit) = entry.exit {
            resp.exit_status = exit.status;
            resp.exited_at = MessageField::some(timestamp(exit.at));
        }
        Ok(resp)
    }

    fn pids_of(&self, req: &PidsRequest) -> Result<PidsResponse> {
        let mut state = self.state();
        let entry = find(&mut state, &req.id)?;
        let processes = entry
            .container
            .pids()?
            .into_iter()
            .map(|pid| ProcessInfo {
                pid,
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn close_io(&self, req: &CloseIORequest) -> Result<()> {
        no_exec(&req.exec_id)?;
        let mut state = self.state();
        let entry = find(&mut state, &req.id)?;
        if req.stdin {
            if let Some(stdin) = entry.held.stdin.as_mut() {
                stdin.close();
            }
        }
        Ok(())
    }

    async fn wait_for(&self, req: &WaitRequest) -> Result<WaitResponse> {
        no_exec(&req.exec_id)?;
        let mut rx = {
            let mut state = self.state();
            find(&mut state, &req.id)?.exited.subscribe()
        };
        let exit = loop {
            if let Some(exit) = *rx.borrow_and_update() {
                break exit;
            }
            if rx.changed().await.is_err() {
                return Err(Error::NotFound(format!("container {} was deleted", req.id)));
            }
        };
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    /// Whether any container is left.
    pub fn is_empty(&self) -> bool {
        self.state().containers.is_empty()
    }
}

fn find<'a>(state: &'a mut State, id: &str) -> Result<&'a mut Entry> {
    state
        .containers
        .get_mut(id)
        .ok_or_else(|| Error::NotFound(format!("container {id} not found in this shim")))
}

fn no_exec(exec_id: &str) -> Result<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "exec {exec_id} not found: exec is not supported yet"
        )))
    }
}

fn check_rootfs(bundle: &Path, spec: &barge_executor::Spec) -> Result<()> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("OCI spec has no `root`".into()))?;
    let path = bundle.join(root.path());
    if !path.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "container rootfs {} does not exist or is not a directory",
            path.display()
        )));
    }
    Ok(())
}

fn unimplemented<T>(rpc: &str) -> ttrpc::Result<T> {
    Err(Error::Unimplemented(format!("barge does not implement {rpc} yet")).into())
}

impl Service {
    fn logged<T>(&self, rpc: &str, id: &str, r: Result<T>) -> ttrpc::Result<T> {
        self.activity.notify_one();
        logged(rpc, id, r)
    }
}

fn logged<T>(rpc: &str, id: &str, r: Result<T>) -> ttrpc::Result<T> {
    match r {
        Ok(v) => {
            log::debug!("{rpc} {id}: ok");
            Ok(v)
        }
        Err(e) => {
            log::warn!("{rpc} {id}: {e}");
            Err(e.into())
        }
    }
}

#[async_trait::async_trait]
impl Task for Service {
    async fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        self.logged("create", &req.id, self.create_task(&req))
    }

    async fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        self.logged("start", &req.id, self.start_task(&req))
    }

    async fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        self.logged("delete", &req.id, self.delete_task(&req))
    }

    async fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        self.logged("kill", &req.id, self.kill_task(&req).map(|_| Empty::new()))
    }

    async fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        self.logged("state", &req.id, self.state_of(&req))
    }

    async fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        self.logged("pids", &req.id, self.pids_of(&req))
    }

    async fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        self.logged("wait", &req.id, self.wait_for(&req).await)
    }

    async fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        self.logged(
            "close_io",
            &req.id,
            self.close_io(&req).map(|_| Empty::new()),
        )
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        let task_pid = self
            .state()
            .containers
            .get(&req.id)
            .map(|e| e.pid)
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    async fn shutdown(&self, _: &TtrpcContext, _: ShutdownRequest) -> ttrpc::Result<Empty> {
        if self.is_empty() {
            self.shutdown.notify_one();
        }
        Ok(Empty::new())
    }

    async fn pause(&self, _: &TtrpcContext, _: api::PauseRequest) -> ttrpc::Result<Empty> {
        unimplemented("Pause")
    }

    async fn resume(&self, _: &TtrpcContext, _: api::ResumeRequest) -> ttrpc::Result<Empty> {
        unimplemented("Resume")
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        unimplemented("Checkpoint")
    }

    async fn exec(&self, _: &TtrpcContext, _: api::ExecProcessRequest) -> ttrpc::Result<Empty> {
        unimplemented("Exec")
    }

    async fn resize_pty(&self, _: &TtrpcContext, _: api::ResizePtyRequest) -> ttrpc::Result<Empty> {
        unimplemented("ResizePty")
    }

    async fn update(&self, _: &TtrpcContext, _: api::UpdateTaskRequest) -> ttrpc::Result<Empty> {
        unimplemented("Update")
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        _: api::StatsRequest,
    ) -> ttrpc::Result<api::StatsResponse> {
        unimplemented("Stats")
    }
}
