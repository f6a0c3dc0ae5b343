//! State, Wait and Pids: what containerd asks about a process.

use containerd_shim_protos::api::{
    PidsRequest, PidsResponse, StateRequest, StateResponse, WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::types::task::{ProcessInfo, Status};

use super::Service;
use crate::error::{Error, Result};
use crate::events::timestamp;

/// The type containerd's runc shim reports an exec's id with in Pids.
const PROCESS_DETAILS: &str = "containerd.runc.v1.ProcessDetails";

impl Service {
    pub(super) fn state_of(&self, req: &StateRequest) -> Result<StateResponse> {
        let mut state = self.state();
        let entry = state.container(&req.id)?;
        let bundle = entry.bundle.display().to_string();
        let paused = entry.paused;
        let proc = entry.process(&req.id, &req.exec_id)?;
        let status = match proc.status() {
            Status::RUNNING if paused => Status::PAUSED,
            s => s,
        };
        let mut resp = StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            exec_id: req.exec_id.clone(),
            bundle,
            pid: proc.pid,
            status: status.into(),
            stdin: proc.io.stdin.clone(),
            stdout: proc.io.stdout.clone(),
            stderr: proc.io.stderr.clone(),
            terminal: proc.io.terminal,
            ..Default::default()
        };
        if let Some(exit) = proc.reaped.or(proc.exit) {
            resp.exit_status = exit.status;
            resp.exited_at = MessageField::some(timestamp(exit.at));
        }
        Ok(resp)
    }

    pub(super) async fn wait_for(&self, req: &WaitRequest) -> Result<WaitResponse> {
        let mut rx = self
            .state()
            .process(&req.id, &req.exec_id)?
            .exited
            .subscribe();
        let exit = loop {
            if let Some(exit) = *rx.borrow_and_update() {
                break exit;
            }
            if rx.changed().await.is_err() {
                return Err(Error::NotFound(format!(
                    "{} was deleted",
                    if req.exec_id.is_empty() {
                        format!("container {}", req.id)
                    } else {
                        format!("exec {} in container {}", req.exec_id, req.id)
                    }
                )));
            }
        };
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    /// Every process in the container; an exec's pid carries its exec id.
    pub(super) fn pids_of(&self, req: &PidsRequest) -> Result<PidsResponse> {
        let mut state = self.state();
        let entry = state.container(&req.id)?;
        let processes = entry
            .container
            .pids()?
            .into_iter()
            .map(|pid| {
                let exec = entry
                    .execs
                    .values()
                    .find(|p| p.pid == pid && p.is_running());
                ProcessInfo {
                    pid,
                    info: match exec {
                        Some(p) => MessageField::some(process_details(&p.exec_id)),
                        None => MessageField::none(),
                    },
                    ..Default::default()
                }
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }
}

/// `ProcessDetails { string exec_id = 1; }`, encoded by hand: one field.
fn process_details(exec_id: &str) -> Any {
    let mut value = Vec::new();
    crate::wire::bytes_field(&mut value, 1, exec_id.as_bytes());
    Any {
        type_url: PROCESS_DETAILS.to_string(),
        value,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_details_is_field_one() {
        let any = process_details("abc");
        assert_eq!(any.value, b"\x0a\x03abc");
        let long = "x".repeat(300);
        let any = process_details(&long);
        assert_eq!(&any.value[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(any.value.len(), 3 + 300);
    }
}
