//! Pause, Resume, Update and Stats: the verbs that steer and read a
//! container's cgroup. The first three go through its executor; Stats
//! reads the cgroup files itself, the same way for every executor.

use std::sync::Arc;

use barge_executor::LinuxResources;
use containerd_shim_protos::api::{
    PauseRequest, ResumeRequest, StatsRequest, StatsResponse, UpdateTaskRequest,
};
use containerd_shim_protos::events::task::{TaskPaused, TaskResumed};
use containerd_shim_protos::protobuf::MessageField;

use super::table::Entry;
use super::Service;
use crate::error::{Error, Result};
use crate::events::Event;

impl Service {
    pub(super) fn pause(&self, req: &PauseRequest) -> Result<()> {
        self.set_paused(&req.id, true)
    }

    pub(super) fn resume(&self, req: &ResumeRequest) -> Result<()> {
        self.set_paused(&req.id, false)
    }

    fn set_paused(&self, id: &str, paused: bool) -> Result<()> {
        let mut state = self.state();
        let entry = state.container(id)?;
        if !entry.init.is_running() {
            return Err(Error::FailedPrecondition(format!(
                "container {id} cannot be {}: it is {:?}",
                if paused { "paused" } else { "resumed" },
                entry.init.status()
            )));
        }
        if entry.paused == paused {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is {}",
                if paused {
                    "already paused"
                } else {
                    "not paused"
                }
            )));
        }
        entry.container.set_paused(paused)?;
        entry.paused = paused;
        self.publisher.publish(if paused {
            Event::Paused(TaskPaused {
                container_id: id.to_string(),
                ..Default::default()
            })
        } else {
            Event::Resumed(TaskResumed {
                container_id: id.to_string(),
                ..Default::default()
            })
        });
        Ok(())
    }

    /// `resources` is JSON `LinuxResources`; the annotations of the v3
    /// request are accepted and have nothing to say to barge.
    pub(super) fn update(&self, req: &UpdateTaskRequest) -> Result<()> {
        let any = req.resources.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!("update of container {}: no resources", req.id))
        })?;
        let resources: LinuxResources = serde_json::from_slice(&any.value).map_err(|e| {
            Error::InvalidArgument(format!(
                "update of container {}: the resources are not valid OCI LinuxResources: {e}",
                req.id
            ))
        })?;
        let mut state = self.state();
        let entry = state.container(&req.id)?;
        if entry.init.reaped.is_some() || entry.init.exit.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "container {} has exited: there is nothing to update",
                req.id
            )));
        }
        entry.container.update(&resources)?;
        Ok(())
    }

    /// The metrics of the container's cgroup, in the type that matches the
    /// host (cgroups v1 or v2). A container whose cgroup is gone is
    /// NotFound, the one answer containerd's CRI does not log as an error.
    pub(super) fn stats(&self, req: &StatsRequest) -> Result<StatsResponse> {
        let mut state = self.state();
        let entry = state.container(&req.id)?;
        locate_cgroup(entry, &req.id);
        let cgroup = entry
            .cgroup
            .as_ref()
            .filter(|c| c.exists())
            .ok_or_else(|| Error::NotFound(format!("container {} has no cgroup", req.id)))?;
        Ok(StatsResponse {
            stats: MessageField::some(cgroup.metrics()?),
            ..Default::default()
        })
    }

    /// Finds the container's cgroup just after Start has been answered, so
    /// that Stats still answers once a short-lived container has exited:
    /// containerd 2.3's CRI asks for a task's metrics after every exit, to
    /// check for an OOM kill.
    pub(super) fn locate_cgroup_soon(self: &Arc<Self>, id: &str) {
        let (service, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            if let Ok(entry) = service.state().container(&id) {
                locate_cgroup(entry, &id);
            }
        });
    }
}

/// Finds the container's cgroup once, while its init lives to show where it is.
fn locate_cgroup(entry: &mut Entry, id: &str) {
    if entry.cgroup.is_none() && entry.init.pid != 0 && entry.init.reaped.is_none() {
        entry.cgroup = crate::stats::Cgroup::of_pid(entry.init.pid)
            .inspect_err(|e| log::warn!("container {id}: no cgroup for Stats: {e}"))
            .ok();
    }
}
