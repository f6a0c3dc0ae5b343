//! The barge shim core: containerd's runtime-v2 protocol and Task API.
//!
//! A request travels one path: `server` (ttrpc on one thread) → `task`
//! (the RPC) → the container's executor (`barge_executor::Container`) and
//! back. `start` and `delete` are the two short-lived actions containerd runs
//! around a server's life.

mod args;
mod cleanup;
mod console;
mod error;
mod events;
mod exe;
mod idle;
mod info;
mod logbinary;
mod logger;
mod mount;
mod oom;
mod options;
mod process;
mod runc_options;
mod sandbox;
mod server;
mod shim_cgroup;
mod spec;
mod start;
mod state;
mod stats;
mod stdio;
mod task;
mod userns;
mod wire;

use std::io::Write;

use barge_executor::Executors;

pub use args::{Action, Flags};
pub use error::{Error, Result};

/// Stops a task of the event loop when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The shim's entry point: parses the command line and runs the action.
/// `executors` is called only by the actions that need them.
pub fn main(executors: impl FnOnce() -> Executors) -> i32 {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (flags, action) = match args::parse(&argv) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("containerd-shim-barge-v1: {e}");
            return 2;
        }
    };
    let result = match action {
        Action::Version => {
            let _ = writeln!(
                std::io::stdout(),
                "containerd-shim-barge-v1:\n  Version: {}\n  Task API: v2, v3",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        Action::Start => start::run(&flags, |params, listener| {
            serve(&flags, params, listener, executors)
        }),
        Action::Delete => cleanup::run(&flags, &executors()),
        Action::Info => info::run(),
        Action::Serve => start::inherited(&flags).map(|(params, listener)| {
            std::process::exit(serve(&flags, params, listener, executors))
        }),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-barge-v1: {e}");
            1
        }
    }
}

/// Serves the Task API on `listener` until the server shuts down; the exit
/// code of the server process.
fn serve(
    flags: &Flags,
    params: start::StartParams,
    listener: std::os::fd::OwnedFd,
    executors: impl FnOnce() -> Executors,
) -> i32 {
    logger::init(params.debug);
    if let Some(why) = exe::unprotected() {
        log::warn!("the shim server runs from its writable binary: {why}");
    }
    let socket = start::socket_path_of(&listener);
    match server::serve(flags, &params.ttrpc_address, socket, listener, executors()) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("shim server: {e}");
            1
        }
    }
}

/// The decoders of what the shim receives, for the fuzz targets in `fuzz/`;
/// not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::args::parse as parse_args;
    pub use crate::mount::parse_options as parse_mount_options;
    pub use crate::options::{decode as decode_options, is_options_type};
    pub use crate::sandbox::PodConfig;
    pub use crate::spec::{check_id, group_id, has_own_pid_namespace, load as load_spec};
    pub use crate::start::{read_params, Reply, StartParams};
    pub use crate::wire::{bytes_field, fields, varint, Value};
}
