//! The process table: every container of this shim, and in each one its
//! processes. The init and an exec are the same kind of thing, a [`Proc`]:
//! stdio, a pid, a state and an exit. Every RPC finds one by
//! (container id, exec id), the empty exec id naming the init.
//!
//! A process ends in two steps. The reaper collects it (`reaped`: signals
//! now answer NotFound), and once its terminal output is all copied out
//! it is `ready`. Ready exits are published in order: every exec's, then
//! the init's, which is held back while any started exec has not exited.

use std::collections::HashMap;
use std::path::PathBuf;

use barge_executor::{Container, Process};
use containerd_shim_protos::events::task::{TaskExit, TaskIO};
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::types::task::Status;
use tokio::sync::watch;

use crate::console::Console;
use crate::error::{Error, Result};
use crate::events::{timestamp, Event, Publisher};
use crate::process::{Exit, Unclaimed};
use crate::{stdio, AbortOnDrop};

/// One process: a container's init, or an exec.
pub struct Proc {
    /// Empty for the init.
    pub exec_id: String,
    /// 0 until the process is started (an exec before Start).
    pub pid: u32,
    pub io: TaskIO,
    /// An exec's process spec, kept from Exec until Start.
    pub spec: Option<Process>,
    pub started: bool,
    /// How the process ended, once reaped.
    pub reaped: Option<Exit>,
    /// Reaped and its output delivered: its exit may be published.
    pub ready: bool,
    /// Published (TaskExit went out); Wait answers from here on.
    pub exit: Option<Exit>,
    pub exited: watch::Sender<Option<Exit>>,
    pub held: stdio::Held,
    pub console: Option<Console>,
}

impl Proc {
    pub fn new(exec_id: &str, io: TaskIO, spec: Option<Process>) -> Proc {
        Proc {
            exec_id: exec_id.to_string(),
            pid: 0,
            io,
            spec,
            started: false,
            reaped: None,
            ready: false,
            exit: None,
            exited: watch::channel(None).0,
            held: stdio::Held::default(),
            console: None,
        }
    }

    pub fn status(&self) -> Status {
        match (self.reaped.or(self.exit), self.started) {
            (Some(_), _) => Status::STOPPED,
            (None, true) => Status::RUNNING,
            (None, false) => Status::CREATED,
        }
    }

    /// Started and not yet reaped: it may still be signalled.
    pub fn is_running(&self) -> bool {
        self.started && self.reaped.is_none() && self.exit.is_none()
    }

    /// Started, and its exit not yet published.
    fn exit_pending(&self) -> bool {
        self.started && self.exit.is_none()
    }

    /// The name of the process in messages.
    pub fn describe(&self, container: &str) -> String {
        if self.exec_id.is_empty() {
            format!("container {container}")
        } else {
            format!("exec {} in container {container}", self.exec_id)
        }
    }
}

/// One container of this shim.
pub struct Entry {
    pub bundle: PathBuf,
    pub container: Box<dyn Container>,
    pub init: Proc,
    pub execs: HashMap<String, Proc>,
    pub rootfs: Option<PathBuf>,
    pub own_pid_namespace: bool,
    /// Frozen by Pause, until Resume.
    pub paused: bool,
    /// The owner (uid, gid) of its processes' stdio (`io_uid`, `io_gid`).
    pub io_owner: Option<(u32, u32)>,
    /// The OOM kills of the container's memory cgroup.
    pub kills: std::sync::Arc<crate::oom::Kills>,
    /// The init's cgroup, for Stats: found at the first Stats call, off
    /// the path of a container's start.
    pub cgroup: Option<crate::stats::Cgroup>,
    /// The OOM watch; dropping the entry stops it.
    pub _oom: AbortOnDrop,
}

impl Entry {
    /// The init for an empty `exec_id`, else that exec.
    pub fn process(&mut self, id: &str, exec_id: &str) -> Result<&mut Proc> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id} not found in container {id}")))
    }

    /// A process's status as containerd sees it: a running process of a
    /// paused container is PAUSED.
    pub fn status_of(&self, proc: &Proc) -> Status {
        match proc.status() {
            Status::RUNNING if self.paused => Status::PAUSED,
            s => s,
        }
    }

    /// The pids of started execs that are still running.
    pub fn running_exec_pids(&self) -> Vec<u32> {
        self.execs
            .values()
            .filter(|p| p.is_running())
            .map(|p| p.pid)
            .collect()
    }
}

#[derive(Default)]
pub struct State {
    pub containers: HashMap<String, Entry>,
    pub unclaimed: Unclaimed,
}

impl State {
    pub fn container(&mut self, id: &str) -> Result<&mut Entry> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found in this shim")))
    }

    pub fn process(&mut self, id: &str, exec_id: &str) -> Result<&mut Proc> {
        self.container(id)?.process(id, exec_id)
    }

    /// The (container id, exec id) of the live process with this pid.
    pub fn owner_of(&self, pid: u32) -> Option<(String, String)> {
        self.containers.iter().find_map(|(id, e)| {
            std::iter::once(&e.init)
                .chain(e.execs.values())
                // An init has its pid from Create on (it may end before
                // Start); an exec has one once started.
                .find(|p| p.pid == pid && p.pid != 0 && p.reaped.is_none())
                .map(|p| (id.clone(), p.exec_id.clone()))
        })
    }
}

/// Publishes every exit of the container that may go out now, in order:
/// ready execs first, then the init once no started exec is left.
pub fn publish_ready(publisher: &Publisher, id: &str, entry: &mut Entry) {
    for p in entry.execs.values_mut() {
        if p.ready && p.exit.is_none() {
            publish_exit(publisher, id, p);
        }
    }
    let execs_left = entry.execs.values().any(Proc::exit_pending);
    if entry.init.ready && entry.init.exit.is_none() && !execs_left {
        publish_exit(publisher, id, &mut entry.init);
    }
}

/// Publishes a process's exit now, whatever else is pending: for Delete,
/// which must not leave a process without its TaskExit.
pub fn publish_exit(publisher: &Publisher, id: &str, p: &mut Proc) {
    let Some(exit) = p.reaped.or(p.exit) else {
        return;
    };
    if p.exit.is_some() {
        return;
    }
    p.exit = Some(exit);
    p.held = stdio::Held::default();
    p.console = None;
    publisher.publish(Event::Exit(TaskExit {
        container_id: id.to_string(),
        id: if p.exec_id.is_empty() {
            id.to_string()
        } else {
            p.exec_id.clone()
        },
        pid: p.pid,
        exit_status: exit.status,
        exited_at: MessageField::some(timestamp(exit.at)),
        ..Default::default()
    }));
    p.exited.send_replace(Some(exit));
}
