//! Create, Exec, Start, Kill and Delete: the verbs that make, run and end
//! processes. Start, Kill and Delete take the same path for the init and
//! for an exec, through the process table.

use std::path::PathBuf;
use std::sync::Arc;

use barge_executor::{CreateContext, ExecContext, Process};
use containerd_shim_protos::api::{
    CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, ExecProcessRequest,
    KillRequest, StartRequest, StartResponse,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::types::task::Status;

use super::io::Launch;
use super::table::{publish_exit, Entry, Proc};
use super::Service;
use crate::error::{Error, Result};
use crate::events::{timestamp, Event};
use crate::logbinary::Owner;
use crate::process::Exit;
use crate::{mount, options, spec, state, AbortOnDrop};

fn task_io(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> TaskIO {
    TaskIO {
        stdin: stdin.to_string(),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
        terminal,
        ..Default::default()
    }
}

impl Service {
    pub(super) fn create_task(
        self: &Arc<Self>,
        req: &CreateTaskRequest,
    ) -> Result<CreateTaskResponse> {
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
        let io = task_io(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        let mut init = Proc::new("", io.clone(), None);
        let created = (|| {
            check_rootfs(&bundle, &spec)?;
            let (stdio, launch) = Launch::prepare(&io, Owner::new(&req.id, &self.namespace))?;
            crate::stdio::set_owner(&stdio, &io.stdout, &io.stderr, options.io_owner())?;
            let ctx = CreateContext {
                id: &req.id,
                namespace: &self.namespace,
                containerd_address: &self.address,
                bundle: &bundle,
                spec: &spec,
                options: &options,
                stdio,
                console_socket: launch.console_socket(),
            };
            let executor = self.executors.select(&ctx)?;
            state::save(&bundle, executor.name(), &options, 0)?;
            log::info!(
                "creating container {} with executor {}",
                req.id,
                executor.name()
            );
            let mut container = executor.create(ctx)?;
            let size = spec.process().as_ref().and_then(|p| p.console_size());
            let saved = launch
                .finish(&mut init, container.pid(), size)
                .and_then(|_| state::save(&bundle, executor.name(), &options, container.pid()));
            if let Err(e) = saved {
                let _ = container.delete();
                return Err(e);
            }
            Ok(container)
        })();
        let container = match created {
            Ok(c) => c,
            Err(e) => {
                if let Some(r) = &rootfs {
                    let _ = mount::unmount_all(r);
                }
                state::remove(&bundle);
                return Err(e);
            }
        };
        let pid = init.pid;
        // Watch for OOM kills from now on, while the init is still waiting.
        let kills = crate::oom::Kills::of_pid(pid);
        let oom = {
            let publisher = self.publisher.clone();
            let id = req.id.clone();
            let kills = kills.clone();
            tokio::spawn(async move {
                crate::oom::watch(kills, move || publish_oom(&publisher, &id)).await
            })
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
        let entry = Entry {
            bundle,
            container,
            init,
            execs: Default::default(),
            rootfs,
            own_pid_namespace: spec::has_own_pid_namespace(&spec),
            paused: false,
            io_owner: options.io_owner(),
            kills,
            cgroup: None,
            _oom: AbortOnDrop(oom.abort_handle()),
        };
        let mut state = self.state();
        state.containers.insert(req.id.clone(), entry);
        self.watch_exit(&mut state, &req.id, "", pid);
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    /// Exec: reserves the id and keeps the process spec; nothing runs
    /// until Start.
    pub(super) fn exec_process(&self, req: &ExecProcessRequest) -> Result<()> {
        if req.exec_id.is_empty() {
            return Err(Error::InvalidArgument("an exec needs an exec id".into()));
        }
        let process: Process = match req.spec.as_ref() {
            Some(any) => serde_json::from_slice(&any.value).map_err(|e| {
                Error::InvalidArgument(format!(
                    "exec {}: the process spec is not a valid OCI process: {e}",
                    req.exec_id
                ))
            })?,
            None => {
                return Err(Error::InvalidArgument(format!(
                    "exec {}: no process spec",
                    req.exec_id
                )))
            }
        };
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "exec {}: the process has no args",
                req.exec_id
            )));
        }
        let mut state = self.state();
        let entry = state.container(&req.id)?;
        if entry.execs.contains_key(&req.exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {} already exists in container {}",
                req.exec_id, req.id
            )));
        }
        if !entry.init.is_running() || entry.paused {
            return Err(Error::FailedPrecondition(format!(
                "cannot exec in container {}: it is {:?}, not running",
                req.id,
                entry.status_of(&entry.init)
            )));
        }
        let io = task_io(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        let mut process = process;
        process.set_terminal(Some(req.terminal));
        entry.execs.insert(
            req.exec_id.clone(),
            Proc::new(&req.exec_id, io, Some(process)),
        );
        self.publisher.publish(Event::ExecAdded(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        }));
        Ok(())
    }

    pub(super) fn start_process(self: &Arc<Self>, req: &StartRequest) -> Result<StartResponse> {
        let mut state = self.state();
        let entry = state.container(&req.id)?;
        if req.exec_id.is_empty() {
            if entry.init.status() != Status::CREATED {
                return Err(Error::FailedPrecondition(format!(
                    "container {} cannot be started: it is {:?}",
                    req.id,
                    entry.init.status()
                )));
            }
            entry.container.start()?;
            entry.init.started = true;
            let pid = entry.init.pid;
            self.publisher.publish(Event::Start(TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            }));
            self.locate_cgroup_soon(&req.id);
            return Ok(StartResponse {
                pid,
                ..Default::default()
            });
        }
        if !entry.init.is_running() || entry.paused {
            return Err(Error::FailedPrecondition(format!(
                "cannot start exec {} in container {}: it is {:?}, not running",
                req.exec_id,
                req.id,
                entry.status_of(&entry.init)
            )));
        }
        let Entry {
            container,
            execs,
            io_owner,
            ..
        } = entry;
        let proc = execs.get_mut(&req.exec_id).ok_or_else(|| {
            Error::NotFound(format!(
                "exec {} not found in container {}",
                req.exec_id, req.id
            ))
        })?;
        if proc.started {
            return Err(Error::FailedPrecondition(format!(
                "exec {} in container {} has already been started",
                req.exec_id, req.id
            )));
        }
        let process = proc.spec.take().unwrap_or_default();
        let (stdio, launch) = Launch::prepare(&proc.io, Owner::new(&req.exec_id, &self.namespace))?;
        crate::stdio::set_owner(&stdio, &proc.io.stdout, &proc.io.stderr, *io_owner)?;
        let began = std::time::Instant::now();
        let pid = container
            .exec(ExecContext {
                exec_id: &req.exec_id,
                process: &process,
                stdio,
                console_socket: launch.console_socket(),
            })
            .inspect_err(|_| {
                // Nothing runs; the exec can still be started again or deleted.
                proc.spec = Some(process.clone());
            })?;
        log::debug!(
            "exec {} in container {}: pid {pid} in {:.1} ms",
            req.exec_id,
            req.id,
            began.elapsed().as_secs_f64() * 1000.0
        );
        let finished = launch.finish(proc, pid, process.console_size());
        if finished.is_err() {
            // It runs without the terminal it asked for: end it.
            let _ = signal(pid, libc::SIGKILL as u32);
            proc.pid = pid;
        }
        proc.started = true;
        let pid = proc.pid;
        self.publisher.publish(Event::ExecStarted(TaskExecStarted {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            pid,
            ..Default::default()
        }));
        self.watch_exit(&mut state, &req.id, &req.exec_id, pid);
        finished?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    pub(super) fn kill_process(&self, req: &KillRequest) -> Result<()> {
        let mut state = self.state();
        let entry = state.container(&req.id)?;
        if req.exec_id.is_empty() {
            if entry.init.reaped.is_some() || entry.init.exit.is_some() {
                return Err(Error::NotFound(format!(
                    "container {}: process already finished",
                    req.id
                )));
            }
            entry.container.kill(req.signal, req.all)?;
            entry.thaw_after_kill(&req.id, req.signal);
            return Ok(());
        }
        let proc = entry.process(&req.id, &req.exec_id)?;
        if !proc.started {
            return Err(Error::FailedPrecondition(format!(
                "{} has not been started",
                proc.describe(&req.id)
            )));
        }
        if !proc.is_running() {
            return Err(Error::NotFound(format!(
                "{}: process already finished",
                proc.describe(&req.id)
            )));
        }
        signal(proc.pid, req.signal).map_err(|e| match e {
            nix::Error::ESRCH => Error::NotFound(format!(
                "{}: process already finished",
                proc.describe(&req.id)
            )),
            e => Error::io(format!("signal {} {}", proc.describe(&req.id), req.signal))(e.into()),
        })?;
        entry.thaw_after_kill(&req.id, req.signal);
        Ok(())
    }

    pub(super) fn delete_process(&self, req: &DeleteRequest) -> Result<DeleteResponse> {
        let mut state = self.state();
        let entry = state.container(&req.id)?;
        let proc = entry.process(&req.id, &req.exec_id)?;
        if proc.is_running() {
            return Err(Error::FailedPrecondition(format!(
                "{} is running: kill it before deleting it",
                proc.describe(&req.id)
            )));
        }
        // A process that never ran ends here; one whose exit is still held
        // back gets its TaskExit now, before it goes.
        let exit = proc.reaped.or(proc.exit).unwrap_or(Exit {
            status: if req.exec_id.is_empty() {
                128 + libc::SIGKILL as u32
            } else {
                0
            },
            at: std::time::SystemTime::now(),
        });
        let pid = proc.pid;
        let response = DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        };
        if !req.exec_id.is_empty() {
            publish_exit(&self.publisher, &req.id, proc);
            entry.execs.remove(&req.exec_id);
            super::table::publish_ready(&self.publisher, &req.id, entry);
            return Ok(response);
        }
        let mut entry = state.containers.remove(&req.id).expect("found above");
        for pid in entry.running_exec_pids() {
            let _ = signal(pid, libc::SIGKILL as u32);
        }
        for p in entry.execs.values_mut() {
            publish_exit(&self.publisher, &req.id, p);
        }
        if entry.init.reaped.is_some() {
            publish_exit(&self.publisher, &req.id, &mut entry.init);
        }
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
        if entry.init.exit.is_none() {
            // Created but never started: nobody else reports its end.
            entry.init.exited.send_replace(Some(exit));
        }
        self.publisher.publish(Event::Delete(TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        }));
        Ok(response)
    }
}

pub(super) fn publish_oom(publisher: &crate::events::Publisher, id: &str) {
    publisher.publish(Event::Oom(TaskOOM {
        container_id: id.to_string(),
        ..Default::default()
    }))
}

impl Entry {
    /// A frozen process only takes SIGKILL once it is thawed: a paused
    /// container that is killed is resumed, so that the kill takes effect.
    fn thaw_after_kill(&mut self, id: &str, signal: u32) {
        if self.paused && signal == libc::SIGKILL as u32 {
            match self.container.set_paused(false) {
                Ok(()) => self.paused = false,
                Err(e) => log::warn!("thaw container {id} after SIGKILL: {e}"),
            }
        }
    }
}

fn signal(pid: u32, signal: u32) -> nix::Result<()> {
    let sig = nix::sys::signal::Signal::try_from(signal as i32)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
}

fn check_rootfs(bundle: &std::path::Path, spec: &barge_executor::Spec) -> Result<()> {
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
