//! The executor trait that sits between the shim core and whatever makes a
//! container: in-process libcontainer, an OCI runtime binary, or wasmtime.
//!
//! The shim core owns the protocol, the stdio, the rootfs mounts and the
//! reaping of processes. An executor only turns a bundle into a created
//! container, starts it, signals it and deletes it. Every call is synchronous
//! and is made from the shim's single thread, so an executor may fork.

pub mod entrypoint;
mod error;
mod options;
mod select;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use oci_spec::runtime::Spec;
pub use options::{ExecutorChoice, Options, WasmOptions, DEFAULT_WASM_CACHE_DIR};
pub use select::Executors;

/// The container's standard streams, already opened by the shim core.
/// A stream that is `None` is connected to `/dev/null`.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Everything an executor needs to create one container.
pub struct CreateContext<'a> {
    /// The container id, already checked to be a safe file name.
    pub id: &'a str,
    /// containerd's namespace; executors keep their state apart per namespace.
    pub namespace: &'a str,
    /// containerd's gRPC address, for executors that read the image.
    pub containerd_address: &'a str,
    /// The OCI bundle; `config.json` is in it and `rootfs` is mounted.
    pub bundle: &'a Path,
    /// The parsed `config.json`.
    pub spec: &'a Spec,
    /// The runtime options for this container.
    pub options: &'a Options,
    pub stdio: Stdio,
}

/// What `delete` after a crash knows: no live handle, only names on disk.
pub struct CleanupContext<'a> {
    pub id: &'a str,
    pub namespace: &'a str,
    pub bundle: &'a Path,
    pub options: &'a Options,
}

/// How well an executor fits a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// The executor can run this container.
    Yes,
    /// It can't; the reason says what it found (what it runs is
    /// [`Executor::runs`]).
    No(String),
}

/// Something that makes containers from OCI bundles.
pub trait Executor: Send + Sync {
    /// A short stable name, used in options, state files and logs.
    fn name(&self) -> &'static str;

    /// What this executor runs, for the error when nothing fits:
    /// "native runs ELF executables and #! scripts".
    fn runs(&self) -> &'static str;

    /// Whether this executor can run the bundle's entrypoint.
    fn fits(&self, ctx: &CreateContext<'_>) -> Fit;

    /// Creates the container with its init process waiting to be started.
    /// The init must end up a child of the calling process (or be reparented
    /// to it, the shim being a child subreaper), so that the core reaps it.
    fn create(&self, ctx: CreateContext<'_>) -> Result<Box<dyn Container>>;

    /// Removes whatever is left of a container whose shim died: processes,
    /// cgroup and the executor's own state. Finding nothing is not an error.
    fn cleanup(&self, ctx: &CleanupContext<'_>) -> Result<()>;
}

/// One created container.
pub trait Container: Send {
    /// The pid of the container's init process, as seen from the host.
    fn pid(&self) -> u32;

    /// Lets the init process run the user's entrypoint.
    fn start(&mut self) -> Result<()>;

    /// Sends `signal` to the init process, or to every process in the
    /// container when `all` is set.
    fn kill(&mut self, signal: u32, all: bool) -> Result<()>;

    /// The pids of every process in the container.
    fn pids(&self) -> Result<Vec<u32>>;

    /// Removes the container: kills what is left, removes its cgroup and
    /// the executor's state. The rootfs mount belongs to the core.
    fn delete(&mut self) -> Result<()>;
}

/// Fails unless the calling process has exactly one thread. A child forked
/// from a process with other threads may inherit locks that are never freed.
pub fn ensure_single_threaded(what: &str) -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(Error::io("read /proc/self/status"))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if threads == 1 {
        Ok(())
    } else {
        Err(Error::FailedPrecondition(format!(
            "refusing to {what}: the shim has {threads} threads, and forking is only safe with one"
        )))
    }
}

/// Where executors keep per-namespace state under `root`.
pub fn state_dir(root: &Path, namespace: &str) -> PathBuf {
    root.join(namespace)
}
