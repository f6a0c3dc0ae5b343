//! The `delete` action: containerd runs it when a shim died, and when it
//! finds old bundles after a restart. It cleans up with nothing but the
//! bundle on disk, and answers with a DeleteResponse on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use barge_executor::{CleanupContext, Executors, Options};
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::{Message, MessageField};

use crate::args::Flags;
use crate::error::{Error, Result};
use crate::events::timestamp;
use crate::{mount, state};

pub fn run(flags: &Flags, executors: &Executors) -> Result<()> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(Error::io("current directory"))?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let saved = state::load(&bundle);
    let (name, options) = match &saved {
        Some(s) => (s.executor.as_str(), s.options.clone()),
        None => ("native", Options::default()),
    };
    let ctx = CleanupContext {
        id: &flags.id,
        namespace: &flags.namespace,
        bundle: &bundle,
        options: &options,
    };
    match executors.by_name(name) {
        Some(executor) => {
            if let Err(e) = executor.cleanup(&ctx) {
                eprintln!("containerd-shim-barge-v1: cleanup of {}: {e}", flags.id);
            }
        }
        None => eprintln!(
            "containerd-shim-barge-v1: unknown executor {name} in {}",
            bundle.display()
        ),
    }
    mount::unmount_all(&bundle.join("rootfs"))?;
    state::remove(&bundle);
    remove_dead_socket(&bundle);
    let response = DeleteResponse {
        pid: saved.as_ref().map_or(0, |s| s.pid),
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: MessageField::some(timestamp(SystemTime::now())),
        ..Default::default()
    };
    let bytes = response
        .write_to_bytes()
        .map_err(|e| Error::Other(format!("encode DeleteResponse: {e}")))?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(Error::io("write DeleteResponse"))
}

/// Removes the socket of this bundle's shim if no server answers on it any
/// more; a live one still serves other containers of the group.
fn remove_dead_socket(bundle: &std::path::Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = address.trim().trim_start_matches("unix://");
    if !path.is_empty() && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}
