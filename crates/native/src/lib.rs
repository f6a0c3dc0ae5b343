//! The native executor: containers made in the shim's own process by
//! libcontainer, with no runtime binary to exec.
//!
//! libcontainer forks (clones) the container's processes. The shim calls us
//! from its only thread, and we check that before every fork.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use barge_executor::entrypoint::{self, Kind};
use barge_executor::{
    ensure_single_threaded, CleanupContext, Container, CreateContext, Error, ExecContext, Executor,
    Fit, Result, Spec,
};
use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container as Lc;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::Executor as LcWorkload;

mod cause;
mod propagation;

/// Where libcontainer keeps its per-container state.
const STATE_ROOT: &str = "/run/containerd/barge/native";

/// Makes containers in-process with libcontainer, whose init execs the
/// entrypoint: ELF binaries and `#!` scripts.
///
/// Other executors (Wasm) reuse the same container making through
/// [`create_with`], with a workload that runs in the init instead of exec.
#[derive(Default)]
pub struct Native;

impl Native {
    pub fn new() -> Native {
        Native
    }
}

fn state_root(namespace: &str) -> Result<PathBuf> {
    if namespace.is_empty() || namespace.contains('/') || namespace.starts_with('.') {
        return Err(Error::InvalidArgument(format!(
            "invalid namespace {namespace:?}"
        )));
    }
    Ok(barge_executor::state_dir(Path::new(STATE_ROOT), namespace))
}

/// Makes `dir` (and what is missing above it) private to root, as runc
/// keeps its root: libcontainer writes the state there world-readable.
/// An existing `dir` from an older barge is made private too.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(Error::io(format!("create {}", dir.display())))
}

fn runtime_error(what: &str) -> impl FnOnce(libcontainer::error::LibcontainerError) -> Error + '_ {
    move |e| Error::Runtime(format!("{what}: {e}"))
}

fn dev_null() -> Result<OwnedFd> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(Error::io("open /dev/null"))
}

/// Rewrites the bundle's config where libcontainer would read it wrong:
/// - libcontainer needs a cgroupsPath; without one it would make a
///   directory named `:youki:<id>`. containerd and Docker always set it;
///   anything else gets one under `/barge/<namespace>`.
/// - `rootfsPropagation` in the spelling libcontainer knows (see
///   [`propagation`]).
/// - with a user namespace, the paths of namespaces to join as
///   `/proc/self/fd/N` of files opened here; they are returned, to be held
///   until the container is built.
fn write_libcontainer_config(ctx: &CreateContext<'_>) -> Result<Vec<std::fs::File>> {
    let linux = ctx.spec.linux().as_ref();
    let has_path = linux
        .and_then(|l| l.cgroups_path().as_ref())
        .is_some_and(|p| !p.as_os_str().is_empty());
    let rootfs = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(propagation::libcontainer_rootfs);
    let namespaces = linux.and_then(|l| l.namespaces().as_ref());
    let in_user_ns = namespaces.is_some_and(|n| {
        n.iter()
            .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
    });
    let joined = namespaces.is_some_and(|n| n.iter().any(|n| n.path().is_some()));
    if has_path && rootfs.is_none() && !(in_user_ns && joined) {
        return Ok(Vec::new());
    }
    let mut spec = ctx.spec.clone();
    let mut linux = spec.linux().clone().unwrap_or_default();
    // libcontainer opens the namespaces to join after it has entered the
    // new user namespace, where the mapped root may not reach them (CRI's
    // netns lies in a directory only the host's root may enter). Opened
    // here, they are inherited by the fork and named /proc/self/fd/N
    // (close-on-exec: the container's program never gets them).
    let mut held = Vec::new();
    if in_user_ns {
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        for ns in namespaces.iter_mut() {
            let Some(path) = ns.path().clone() else {
                continue;
            };
            let file = std::fs::File::open(&path).map_err(Error::io(format!(
                "open the {:?} namespace {} to join",
                ns.typ(),
                path.display()
            )))?;
            use std::os::fd::AsRawFd;
            ns.set_path(Some(PathBuf::from(format!(
                "/proc/self/fd/{}",
                file.as_raw_fd()
            ))));
            held.push(file);
        }
        linux.set_namespaces(Some(namespaces));
    }
    if !has_path {
        linux.set_cgroups_path(Some(PathBuf::from(format!(
            "/barge/{}/{}",
            ctx.namespace, ctx.id
        ))));
    }
    if let Some(rootfs) = rootfs {
        linux.set_rootfs_propagation(Some(rootfs.to_string()));
    }
    spec.set_linux(Some(linux));
    let path = ctx.bundle.join("config.json");
    let bytes = serde_json::to_vec(&spec).map_err(|e| Error::Runtime(e.to_string()))?;
    std::fs::write(&path, bytes).map_err(Error::io(format!("write {}", path.display())))?;
    Ok(held)
}

impl Executor for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn runs(&self) -> &'static str {
        "native runs ELF executables and #! scripts"
    }

    fn fits(&self, ctx: &CreateContext<'_>) -> Fit {
        match entrypoint::find(ctx.bundle, ctx.spec) {
            Ok(e) if matches!(e.kind, Kind::Elf | Kind::Script) => Fit::Yes,
            Ok(e) => Fit::No(format!("{} is {}", e.path.display(), e.kind)),
            Err(why) => Fit::No(why),
        }
    }

    fn create(&self, ctx: CreateContext<'_>) -> Result<Box<dyn Container>> {
        create_with(
            ctx,
            Exec,
            Box::new(|_: &ExecContext<'_>, _| Ok(Workload::boxed(Exec))),
        )
    }

    fn cleanup(&self, ctx: &CleanupContext<'_>) -> Result<()> {
        cleanup(ctx)
    }
}

/// Picks what runs in an exec's process, from its `process` and the pid
/// of the container's init (whose `/proc/<pid>/root` shows the container's
/// filesystem with its mounts).
pub type ExecWorkload = Box<dyn Fn(&ExecContext<'_>, u32) -> Result<Workload> + Send>;

/// Creates a container whose init runs `workload` once it is started, and
/// whose execs run what `exec_workload` picks.
pub fn create_with<W>(
    ctx: CreateContext<'_>,
    workload: W,
    exec_workload: ExecWorkload,
) -> Result<Box<dyn Container>>
where
    W: LcWorkload + Clone + 'static,
{
    if ctx.options.systemd_cgroup {
        // libcgroups would quietly fall back to cgroupfs on a v1 host, with
        // the systemd-style path taken as a directory name.
        return Err(Error::InvalidArgument(format!(
            "container {}: systemd_cgroup (SystemdCgroup) cannot be honoured by the native and wasm executors: libcontainer has no systemd cgroup driver for cgroup v1, and barge builds it without the one for v2; the oci-binary executor (`executor = \"oci-binary\"`, or BinaryName) passes it to its runtime",
            ctx.id
        )));
    }
    let root = state_root(ctx.namespace)?;
    create_private_dir(&root)?;
    // Kept open until the container is built.
    let _joined = write_libcontainer_config(&ctx)?;
    let stdio = ctx.stdio;
    let stdin = stdio.stdin.map_or_else(dev_null, Ok)?;
    let stdout = stdio.stdout.map_or_else(dev_null, Ok)?;
    let stderr = stdio.stderr.map_or_else(dev_null, Ok)?;
    let builder = ContainerBuilder::new(ctx.id.to_string(), SyscallType::Linux)
        .with_root_path(&root)
        .map_err(runtime_error("container state root"))?
        .with_executor(workload)
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .with_console_socket(ctx.console_socket)
        .as_init(ctx.bundle)
        .with_systemd(ctx.options.systemd_cgroup)
        // MS_MOVE and chroot instead of pivot_root, as `runc --no-pivot`.
        // (`no_new_keyring` needs nothing: libcontainer never makes a
        // session keyring, so the container always keeps the shim's.)
        .with_no_pivot(ctx.options.no_pivot_root)
        .with_detach(true)
        // Not a sibling: the intermediate process is our child, and the
        // init it clones with CLONE_PARENT becomes our child too (exiting
        // with no signal, which the core's pidfd watch covers). As a
        // sibling, both would belong to our parent instead.
        .as_sibling(false);
    ensure_single_threaded("create a container")?;
    let oom = read_oom_score_adj();
    let watch = cause::Watch::start();
    let fds = barge_executor::open_fds();
    let built = builder.build();
    let causes = watch.map(cause::Watch::causes).unwrap_or_default();
    // libcontainer writes the container's oom_score_adj into the caller.
    restore_oom_score_adj(oom);
    let lc = built.map_err(|e| {
        // A failed build can leave processes, a cgroup, state and the
        // descriptors of its channels behind.
        close_leaked(&fds);
        remove_leftovers(&root.join(ctx.id));
        Error::Runtime(format!(
            "create container {}: {}",
            ctx.id,
            cause::explain(&chain(&e), &causes)
        ))
    })?;
    let pid = lc
        .pid()
        .ok_or_else(|| Error::Runtime(format!("container {} has no init pid", ctx.id)))?;
    // The mounts' own propagation, which libcontainer leaves undone; the
    // init is waiting to be started.
    if let Err(e) = propagation::apply(pid.as_raw() as u32, &propagation::changes(ctx.spec)) {
        drop(lc);
        remove_leftovers(&root.join(ctx.id));
        return Err(Error::Runtime(format!("create container {}: {e}", ctx.id)));
    }
    log::debug!("native container {} created, init pid {pid}", ctx.id);
    Ok(Box::new(NativeContainer {
        lc,
        root,
        pid: pid.as_raw() as u32,
        systemd: ctx.options.systemd_cgroup,
        exec_workload,
        seccomp: ctx.spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
        user_ns: ctx
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| {
                ns.iter()
                    .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
            }),
    }))
}

/// Removes what libcontainer left of a container whose shim died.
pub fn cleanup(ctx: &CleanupContext<'_>) -> Result<()> {
    remove_leftovers(&state_root(ctx.namespace)?.join(ctx.id));
    Ok(())
}

/// Kills and deletes whatever libcontainer has in `dir`; nothing is fine.
fn remove_leftovers(dir: &Path) {
    if !dir.exists() {
        return;
    }
    match Lc::load(dir.to_path_buf()) {
        Ok(mut lc) => {
            if let Err(e) = lc.delete(true) {
                log::warn!("delete container state {}: {e}", dir.display());
            }
        }
        Err(e) => log::warn!("load container state {}: {e}", dir.display()),
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// libcontainer 0.7 leaves the sockets of its channels open when a build
/// fails in the container's process (4 per failed exec, seen here). The
/// build ran alone on the shim's one thread, so every descriptor that is
/// open now and was not before it is one of those.
fn close_leaked(before: &[i32]) {
    for fd in barge_executor::open_fds() {
        if !before.contains(&fd) {
            log::debug!("closing descriptor {fd} left by a failed libcontainer build");
            let _ = nix::unistd::close(fd);
        }
    }
}

fn read_oom_score_adj() -> Option<String> {
    std::fs::read_to_string("/proc/self/oom_score_adj").ok()
}

fn restore_oom_score_adj(value: Option<String>) {
    if let Some(v) = value {
        let _ = std::fs::write("/proc/self/oom_score_adj", v.trim());
    }
}

/// The workload of a Linux container: exec the entrypoint.
///
/// libcontainer's default workload also insists on a PATH in the spec's env,
/// which runc does not: a spec may name `/bin/echo` with no env at all. The
/// shim has already found the entrypoint in the rootfs (`Executor::fits`),
/// so all that is left is the exec itself, which searches PATH or libc's
/// default path as runc does.
#[derive(Clone)]
pub struct Exec;

impl LcWorkload for Exec {
    /// execvp, as libcontainer's default executor does, but a failure
    /// names the program and the errno, as runc does ("exec /x: no such
    /// file or directory"), where libcontainer's says only "failed to
    /// execute workload".
    fn exec(&self, spec: &Spec) -> std::result::Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError as E;
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .filter(|a| !a.is_empty())
            .ok_or(E::InvalidArg)?;
        let argv = args
            .iter()
            .map(|a| std::ffi::CString::new(a.as_bytes()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| E::Other(format!("an argument of {:?} holds a NUL byte", args[0])))?;
        let Err(errno) = nix::unistd::execvp(&argv[0], &argv);
        Err(E::Other(format!("exec {}: {}", args[0], errno.desc())))
    }

    /// Runs in the new process, inside the container, just before `exec`:
    /// an entrypoint that isn't there is named here, as runc names it.
    fn validate(
        &self,
        spec: &Spec,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorValidationError> {
        use libcontainer::workload::ExecutorValidationError as V;
        let process = spec.process().as_ref();
        let arg0 = process
            .and_then(|p| p.args().as_ref())
            .and_then(|a| a.first())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| V::ArgValidationError("the OCI spec's process has no args".into()))?;
        let env = process.and_then(|p| p.env().as_ref());
        resolve_in_container(arg0, env.map(Vec::as_slice).unwrap_or_default())
            .map(|_| ())
            .map_err(V::ArgValidationError)
    }
}

/// Finds `arg0` as execvp would in the process's own filesystem: a path
/// with a `/` as it is, else each directory of PATH (or the default path).
fn resolve_in_container(arg0: &str, env: &[String]) -> std::result::Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        return match std::fs::metadata(&p) {
            Ok(_) if runnable(&p) => Ok(p),
            Ok(_) => Err(format!(
                "exec {arg0:?}: permission denied (not an executable file)"
            )),
            Err(e) => Err(format!("exec {arg0:?}: {e}")),
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(arg0))
        .find(|p| runnable(p))
        .ok_or_else(|| format!("exec {arg0:?}: executable file not found in PATH ({path})"))
}

/// Any libcontainer workload, boxed, so that each exec can pick its own.
#[derive(Clone)]
pub struct Workload {
    boxed: BoxedWorkload,
    /// The container's seccomp filter, for an exec: libcontainer builds a
    /// tenant's spec without it, so the workload loads it before it runs.
    seccomp: Option<TenantSeccomp>,
}

struct BoxedWorkload(Box<dyn LcWorkload>);

impl Clone for BoxedWorkload {
    fn clone(&self) -> Self {
        BoxedWorkload(self.0.clone_box())
    }
}

#[derive(Clone)]
struct TenantSeccomp {
    profile: oci_spec::runtime::LinuxSeccomp,
    /// The capabilities the process asked for. Without no_new_privileges,
    /// loading a filter needs CAP_SYS_ADMIN, so the process is made with it
    /// and drops to these once the filter is in, as runc orders it.
    drop_to: Option<oci_spec::runtime::LinuxCapabilities>,
}

impl Workload {
    pub fn boxed(w: impl LcWorkload + Clone + 'static) -> Workload {
        Workload {
            boxed: BoxedWorkload(Box::new(w)),
            seccomp: None,
        }
    }
}

impl LcWorkload for Workload {
    fn exec(&self, spec: &Spec) -> std::result::Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError as E;
        set_terminal_size(spec);
        if let Some(t) = &self.seccomp {
            let notify = libcontainer::seccomp::initialize_seccomp(&t.profile)
                .map_err(|e| E::Other(format!("load the container's seccomp filter: {e}")))?;
            if let Some(fd) = notify {
                // No seccomp agent listens for an exec; the kernel answers
                // ENOSYS for notified calls once the descriptor is gone.
                let _ = nix::unistd::close(fd);
            }
            if let Some(caps) = &t.drop_to {
                let syscall = libcontainer::syscall::syscall::create_syscall();
                libcontainer::capabilities::drop_privileges(caps, syscall.as_ref())
                    .map_err(|e| E::Other(format!("drop capabilities: {e}")))?;
            }
        }
        self.boxed.0.exec(spec)
    }

    fn validate(
        &self,
        spec: &Spec,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorValidationError> {
        self.boxed.0.validate(spec)
    }

    fn setup_envs(
        &self,
        envs: std::collections::HashMap<String, String>,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorSetEnvsError> {
        self.boxed.0.setup_envs(envs)
    }
}

/// An exec runs as soon as it is made, before the shim holds its
/// terminal: the size the spec asks for (Docker's consoleSize) is set from
/// inside, on the terminal that is now its stdin, as runc does.
fn set_terminal_size(spec: &Spec) {
    let Some(process) = spec.process().as_ref() else {
        return;
    };
    let Some(size) = process
        .console_size()
        .filter(|_| process.terminal() == Some(true))
    else {
        return;
    };
    let size = libc::winsize {
        ws_row: size.height().min(u16::MAX as u64) as u16,
        ws_col: size.width().min(u16::MAX as u64) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a live local; fd 0 is the
    // terminal libcontainer connected, or the call fails harmlessly.
    unsafe { libc::ioctl(0, libc::TIOCSWINSZ, &size as *const libc::winsize) };
}

/// The process an exec is made with, and the filter its workload loads:
/// the container's seccomp profile applies to every process in it.
fn confine(
    process: &barge_executor::Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
) -> (barge_executor::Process, Option<TenantSeccomp>) {
    use oci_spec::runtime::Capability;
    let mut process = process.clone();
    let Some(profile) = seccomp else {
        return (process, None);
    };
    let mut drop_to = None;
    if process.no_new_privileges() != Some(true) {
        if let Some(caps) = process.capabilities().clone() {
            let mut raised = caps.clone();
            let mut effective = caps.effective().clone().unwrap_or_default();
            effective.insert(Capability::SysAdmin);
            let mut permitted = caps.permitted().clone().unwrap_or_default();
            permitted.insert(Capability::SysAdmin);
            raised.set_effective(Some(effective));
            raised.set_permitted(Some(permitted));
            process.set_capabilities(Some(raised));
            drop_to = Some(caps);
        }
    }
    (
        process,
        Some(TenantSeccomp {
            profile: profile.clone(),
            drop_to,
        }),
    )
}

struct NativeContainer {
    lc: Lc,
    /// libcontainer's state root for the namespace.
    root: PathBuf,
    pid: u32,
    systemd: bool,
    exec_workload: ExecWorkload,
    /// The container's seccomp profile, which its execs get too.
    seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// Whether the container has a user namespace of its own.
    user_ns: bool,
}

impl Container for NativeContainer {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn start(&mut self) -> Result<()> {
        self.lc.start().map_err(runtime_error("start container"))
    }

    fn kill(&mut self, signal: u32, all: bool) -> Result<()> {
        let signal = Signal::try_from(signal as i32)
            .map_err(|_| Error::InvalidArgument(format!("invalid signal {signal}")))?;
        self.lc.kill(signal, all).map_err(|e| match e {
            libcontainer::error::LibcontainerError::IncorrectStatus(_) => Error::NotFound(format!(
                "container {}: process already finished",
                self.lc.id()
            )),
            e => Error::Runtime(format!("kill container {}: {e}", self.lc.id())),
        })
    }

    fn pids(&self) -> Result<Vec<u32>> {
        let pids = self
            .cgroup()?
            .get_all_pids()
            .map_err(|e| Error::Runtime(format!("pids of {}: {e}", self.lc.id())))?;
        Ok(pids.into_iter().map(|p| p.as_raw() as u32).collect())
    }

    fn set_paused(&mut self, paused: bool) -> Result<()> {
        let r = if paused {
            self.lc.pause()
        } else {
            self.lc.resume()
        };
        r.map_err(|e| match e {
            libcontainer::error::LibcontainerError::IncorrectStatus(status) => {
                Error::FailedPrecondition(format!(
                    "container {} cannot be {}: it is {status:?}",
                    self.lc.id(),
                    if paused { "paused" } else { "resumed" }
                ))
            }
            e => Error::Runtime(format!(
                "{} container {}: {e}",
                if paused { "pause" } else { "resume" },
                self.lc.id()
            )),
        })
    }

    fn update(&mut self, resources: &barge_executor::LinuxResources) -> Result<()> {
        let opt = libcgroups::common::ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        };
        self.cgroup()?.apply(&opt).map_err(|e| {
            Error::Runtime(format!("update container {}: {}", self.lc.id(), chain(&e)))
        })
    }

    fn exec(&mut self, ctx: ExecContext<'_>) -> Result<u32> {
        let id = self.lc.id().to_string();
        if self.user_ns {
            // libcontainer 0.7's tenant builder joins every namespace of the
            // init but its user namespace: the exec would run as the host's
            // uid 0 in the host's user namespace.
            return Err(Error::FailedPrecondition(format!(
                "container {id}: exec {}: the native executor cannot exec into a container with a user namespace (libcontainer 0.7 would not join it, and the process would run as the host's root); use the oci-binary executor",
                ctx.exec_id
            )));
        }
        let mut workload = (self.exec_workload)(&ctx, self.pid)?;
        let (process, seccomp) = confine(ctx.process, self.seccomp.as_ref());
        workload.seccomp = seccomp;
        // libcontainer reads the process from a file; it lives in the
        // container's state directory only while the exec is being made.
        let process_file = self
            .root
            .join(&id)
            .join(format!("exec-{}.json", barge_executor::next_serial()));
        let json = serde_json::to_vec(&process).map_err(|e| Error::Runtime(e.to_string()))?;
        std::fs::write(&process_file, json)
            .map_err(Error::io(format!("write {}", process_file.display())))?;
        let stdio = ctx.stdio;
        let built = (|| {
            let builder = ContainerBuilder::new(id.clone(), SyscallType::Linux)
                .with_root_path(&self.root)
                .map_err(runtime_error("container state root"))?
                .with_executor(workload)
                .with_stdin(stdio.stdin.map_or_else(dev_null, Ok)?)
                .with_stdout(stdio.stdout.map_or_else(dev_null, Ok)?)
                .with_stderr(stdio.stderr.map_or_else(dev_null, Ok)?)
                .with_console_socket(ctx.console_socket)
                .as_tenant()
                .with_process(Some(&process_file))
                .with_detach(true)
                .as_sibling(false);
            ensure_single_threaded("exec a process")?;
            let oom = read_oom_score_adj();
            let fds = barge_executor::open_fds();
            let built = builder.build();
            restore_oom_score_adj(oom);
            built.map_err(|e| {
                close_leaked(&fds);
                exec_error(&id, ctx.exec_id, ctx.process, e)
            })
        })();
        let _ = std::fs::remove_file(&process_file);
        let pid = built?;
        log::debug!("native container {id}: exec {} has pid {pid}", ctx.exec_id);
        Ok(pid.as_raw() as u32)
    }

    fn delete(&mut self) -> Result<()> {
        self.lc
            .delete(true)
            .map_err(runtime_error("delete container"))
    }
}

/// The error of a failed exec, naming the process.
impl NativeContainer {
    /// The container's cgroup, as libcontainer made it.
    fn cgroup(&self) -> Result<libcgroups::common::AnyCgroupManager> {
        let config = self
            .lc
            .spec()
            .map_err(runtime_error("load container config"))?;
        create_cgroup_manager(CgroupConfig {
            cgroup_path: config.cgroup_path,
            systemd_cgroup: self.systemd,
            container_name: self.lc.id().to_string(),
        })
        .map_err(|e| Error::Runtime(format!("cgroup of {}: {e}", self.lc.id())))
    }
}

/// An error with its causes, down to the kernel's reason.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

fn exec_error(
    id: &str,
    exec_id: &str,
    process: &barge_executor::Process,
    e: libcontainer::error::LibcontainerError,
) -> Error {
    use libcontainer::error::LibcontainerError as E;
    let arg0 = process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .map(String::as_str)
        .unwrap_or("");
    match e {
        E::IncorrectStatus(status) => Error::FailedPrecondition(format!(
            "cannot exec {arg0:?} in container {id}: it is {status:?}"
        )),
        e => {
            // libcontainer wraps the process's own words in its stages:
            // "failed to create container: exec process failed with error
            // error in executing process : <what went wrong>".
            let text = e.to_string();
            let inner = text
                .rsplit_once("error in executing process : ")
                .map_or(text.as_str(), |(_, inner)| inner);
            Error::Runtime(format!(
                "exec {exec_id} ({arg0:?}) in container {id}: {inner}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn state_dirs_are_private_to_root() {
        let base =
            std::env::temp_dir().join(format!("barge-native-private-{}", std::process::id()));
        let dir = base.join("native/ns");
        create_private_dir(&dir).unwrap();
        for d in [&base, &base.join("native"), &dir] {
            assert_eq!(mode(d), 0o700, "{}", d.display());
        }
        // One that an older barge made open to all is closed again.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
