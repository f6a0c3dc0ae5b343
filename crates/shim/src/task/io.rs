//! A process's IO, the same for the init and for an exec: its streams are
//! opened before the executor makes it, and its terminal (if it asked for
//! one) is taken over once the runtime has sent it. CloseIO and ResizePty.

use std::path::Path;

use barge_executor::Stdio;
use containerd_shim_protos::api::{CloseIORequest, ResizePtyRequest};
use containerd_shim_protos::events::task::TaskIO;

use super::table::Proc;
use super::Service;
use crate::console::{Console, Listener};
use crate::error::Result;
use crate::logbinary::Owner;
use crate::stdio;

/// What a process's launch holds between opening its IO and knowing its pid.
pub struct Launch {
    held: stdio::Held,
    listener: Option<Listener>,
    io: TaskIO,
    owner: Owner,
}

impl Launch {
    /// Opens the streams of `owner`'s process, or with a terminal the
    /// console socket.
    pub fn prepare(io: &TaskIO, owner: Owner) -> Result<(Stdio, Launch)> {
        let (stdio, held) = stdio::open(&io.stdin, &io.stdout, &io.stderr, io.terminal, &owner)?;
        let listener = if io.terminal {
            Some(Listener::bind()?)
        } else {
            None
        };
        Ok((
            stdio,
            Launch {
                held,
                listener,
                io: io.clone(),
                owner,
            },
        ))
    }

    /// Where the runtime must send the terminal, when there is one.
    pub fn console_socket(&self) -> Option<&Path> {
        self.listener.as_ref().map(Listener::path)
    }

    /// The process exists with `pid`: it keeps its streams, and gets its
    /// terminal, sized as the spec asks.
    pub fn finish(
        self,
        proc: &mut Proc,
        pid: u32,
        size: Option<oci_spec::runtime::Box>,
    ) -> Result<()> {
        proc.pid = pid;
        proc.held = self.held;
        if let Some(listener) = self.listener {
            let master = listener.receive()?;
            let console = Console::start(master, &self.io.stdin, &self.io.stdout, &self.owner)?;
            if let Some(size) = size.filter(|s| s.width() > 0 && s.height() > 0) {
                console.resize(size.width() as u32, size.height() as u32)?;
            }
            proc.console = Some(console);
        }
        Ok(())
    }
}

impl Service {
    pub(super) fn close_io(&self, req: &CloseIORequest) -> Result<()> {
        let mut state = self.state();
        let proc = state.process(&req.id, &req.exec_id)?;
        if req.stdin {
            if let Some(stdin) = proc.held.stdin.as_mut() {
                stdin.close();
            }
            if let Some(console) = proc.console.as_mut() {
                console.close_stdin();
            }
        }
        Ok(())
    }

    /// A process without a terminal has no size to set, which is no error
    /// (as with runc-v2).
    pub(super) fn resize_pty(&self, req: &ResizePtyRequest) -> Result<()> {
        let mut state = self.state();
        let proc = state.process(&req.id, &req.exec_id)?;
        match proc.console.as_ref() {
            Some(console) => console.resize(req.width, req.height),
            None => Ok(()),
        }
    }
}
