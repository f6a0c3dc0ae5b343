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
pub use oci_spec::runtime::{LinuxResources, Process, Spec};
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
    /// Where the init's pty master must be sent, when the spec asks for a
    /// terminal: a listening unix socket, as runc's `--console-socket`.
    pub console_socket: Option<&'a Path>,
}

/// Everything an executor needs to run one more process in a container.
pub struct ExecContext<'a> {
    /// containerd's id for the process, unique within the container.
    pub exec_id: &'a str,
    /// The process to run, as containerd sent it (OCI `process`).
    pub process: &'a Process,
    pub stdio: Stdio,
    /// Where the pty master goes when `process.terminal` is set.
    pub console_socket: Option<&'a Path>,
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

    /// Starts one more process in the running container and returns its
    /// pid. Like the init, it must end up a child of the calling process
    /// (or be reparented to it); the core signals, reaps and deletes it.
    fn exec(&mut self, ctx: ExecContext<'_>) -> Result<u32>;

    /// Freezes (`true`) or thaws (`false`) every process in the container.
    fn set_paused(&mut self, paused: bool) -> Result<()>;

    /// Applies new resource limits to the running container's cgroup. A
    /// value the kernel refuses is an error with the kernel's reason.
    fn update(&mut self, resources: &LinuxResources) -> Result<()>;

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

/// A number never handed out before in this process, for names of the
/// short-lived files an executor makes (an exec's process.json).
pub fn next_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

/// The descriptors this process has open.
pub fn open_fds() -> Vec<i32> {
    use std::os::fd::AsRawFd;
    let Ok(mut dir) = nix::dir::Dir::open(
        "/proc/self/fd",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return Vec::new();
    };
    let own = dir.as_raw_fd();
    dir.iter()
        .filter_map(|e| e.ok()?.file_name().to_str().ok()?.parse().ok())
        .filter(|fd| *fd != own)
        .collect()
}
