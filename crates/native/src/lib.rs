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
    ensure_single_threaded, CleanupContext, Container, CreateContext, Error, Executor, Fit, Result,
    Spec,
};
use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container as Lc;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::Executor as Workload;

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

/// libcontainer needs a cgroupsPath; without one it would make a directory
/// named `:youki:<id>`. containerd and Docker always set it; anything else
/// gets one under `/barge/<namespace>`, written into the bundle's config.
fn ensure_cgroups_path(ctx: &CreateContext<'_>) -> Result<()> {
    let has_path = ctx
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .is_some_and(|p| !p.as_os_str().is_empty());
    if has_path {
        return Ok(());
    }
    let mut spec = ctx.spec.clone();
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(PathBuf::from(format!(
        "/barge/{}/{}",
        ctx.namespace, ctx.id
    ))));
    spec.set_linux(Some(linux));
    let path = ctx.bundle.join("config.json");
    let bytes = serde_json::to_vec(&spec).map_err(|e| Error::Runtime(e.to_string()))?;
    std::fs::write(&path, bytes).map_err(Error::io(format!("write {}", path.display())))
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
        create_with(ctx, Exec)
    }

    fn cleanup(&self, ctx: &CleanupContext<'_>) -> Result<()> {
        cleanup(ctx)
    }
}

/// Creates a container whose init runs `workload` once it is started.
pub fn create_with<W>(ctx: CreateContext<'_>, workload: W) -> Result<Box<dyn Container>>
where
    W: Workload + Clone + 'static,
{
    let root = state_root(ctx.namespace)?;
    std::fs::create_dir_all(&root).map_err(Error::io(format!("create {}", root.display())))?;
    ensure_cgroups_path(&ctx)?;
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
        .as_init(ctx.bundle)
        .with_systemd(ctx.options.systemd_cgroup)
        .with_detach(true)
        // Not a sibling: the intermediate process is our child, and the
        // init it clones with CLONE_PARENT becomes our child too (exiting
        // with no signal, which the core's pidfd watch covers). As a
        // sibling, both would belong to our parent instead.
        .as_sibling(false);
    ensure_single_threaded("create a container")?;
    let oom = read_oom_score_adj();
    let built = builder.build();
    // libcontainer writes the container's oom_score_adj into the caller.
    restore_oom_score_adj(oom);
    let lc = built.map_err(|e| {
        // A failed build can leave processes, a cgroup and state behind.
        remove_leftovers(&root.join(ctx.id));
        Error::Runtime(format!("create container {}: {e}", ctx.id))
    })?;
    let pid = lc
        .pid()
        .ok_or_else(|| Error::Runtime(format!("container {} has no init pid", ctx.id)))?;
    log::debug!("native container {} created, init pid {pid}", ctx.id);
    Ok(Box::new(NativeContainer {
        lc,
        pid: pid.as_raw() as u32,
        systemd: ctx.options.systemd_cgroup,
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
struct Exec;

impl Workload for Exec {
    fn exec(&self, spec: &Spec) -> std::result::Result<(), libcontainer::workload::ExecutorError> {
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &Spec,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorValidationError> {
        let has_args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .is_some_and(|a| !a.is_empty());
        if has_args {
            Ok(())
        } else {
            Err(
                libcontainer::workload::ExecutorValidationError::ArgValidationError(
                    "the OCI spec's process has no args".into(),
                ),
            )
        }
    }
}

struct NativeContainer {
    lc: Lc,
    pid: u32,
    systemd: bool,
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
        let config = self
            .lc
            .spec()
            .map_err(runtime_error("load container config"))?;
        let manager = create_cgroup_manager(CgroupConfig {
            cgroup_path: config.cgroup_path,
            systemd_cgroup: self.systemd,
            container_name: self.lc.id().to_string(),
        })
        .map_err(|e| Error::Runtime(format!("cgroup of {}: {e}", self.lc.id())))?;
        let pids = manager
            .get_all_pids()
            .map_err(|e| Error::Runtime(format!("pids of {}: {e}", self.lc.id())))?;
        Ok(pids.into_iter().map(|p| p.as_raw() as u32).collect())
    }

    fn delete(&mut self) -> Result<()> {
        self.lc
            .delete(true)
            .map_err(runtime_error("delete container"))
    }
}
