//! The context of the ctr cases: one containerd namespace per executor,
//! helpers around `ctr`, and the leak check that runs after every case.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::cmd::{poll, Cmd, Output};
use crate::containerd::{
    remove_leftovers, runtime_state_parents, shim_socket, Containerd, IMAGE, IMAGE_TAR,
    RUNC_RUNTIME, RUNTIME,
};
use crate::sys;

/// The executor a pass of the suite asks barge for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    Native,
    OciBinary,
    /// The Wasm pass: Wasm guests, chosen automatically.
    Wasm,
}

impl Executor {
    pub fn parse(s: &str) -> Result<Executor> {
        match s {
            "native" => Ok(Executor::Native),
            "oci-binary" => Ok(Executor::OciBinary),
            "wasm" => Ok(Executor::Wasm),
            other => {
                bail!("unknown executor {other:?} in BARGE_IT_EXECUTORS (native, oci-binary, wasm)")
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Executor::Native => "native",
            Executor::OciBinary => "oci-binary",
            Executor::Wasm => "wasm",
        }
    }

    /// The TOML that selects this executor. The Wasm pass leaves the choice
    /// to barge and keeps its compile cache in `work`.
    pub fn toml(self, work: &Path) -> String {
        match self {
            Executor::Wasm => format!(
                "[wasm]\ncache_dir = \"{}\"\n",
                work.join("wasm-cache").display()
            ),
            _ => format!("executor = \"{}\"\n", self.name()),
        }
    }
}

/// How a `ctr run` passes barge's runtime options.
#[derive(Debug, Clone)]
pub enum RuntimeOptions {
    /// `--runtime-config-path` with the executor's TOML.
    Executor,
    /// No options at all.
    Nothing,
    /// `--runtime-config-path` with this file.
    Path(PathBuf),
}

/// One `ctr run`.
pub struct Run<'a> {
    ctx: &'a CtrCtx<'a>,
    id: String,
    mode: Vec<&'static str>,
    flags: Vec<String>,
    runtime: &'static str,
    options: RuntimeOptions,
    source: Source,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

enum Source {
    Image(String),
    RootfsDir(PathBuf),
    Spec(PathBuf),
}

impl<'a> Run<'a> {
    pub fn rm(mut self) -> Self {
        self.mode = vec!["--rm"];
        self
    }

    pub fn detach(mut self) -> Self {
        self.mode = vec!["-d"];
        self
    }

    pub fn flags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, f: I) -> Self {
        self.flags.extend(f.into_iter().map(Into::into));
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// Runs under containerd-shim-runc-v2 instead, for comparison.
    pub fn runc(mut self) -> Self {
        self.runtime = RUNC_RUNTIME;
        self.options = RuntimeOptions::Nothing;
        self
    }

    pub fn options(mut self, o: RuntimeOptions) -> Self {
        self.options = o;
        self
    }

    /// Another image than busybox.
    pub fn image(mut self, name: &str) -> Self {
        self.source = Source::Image(name.to_string());
        self
    }

    /// `--rootfs <dir>` instead of the image.
    pub fn rootfs_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.source = Source::RootfsDir(dir.into());
        self
    }

    /// `--config <spec>` instead of the image; the spec has the command.
    pub fn spec(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Source::Spec(path.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Feeds `data` to ctr's stdin (and so to the container's).
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    pub fn cmd(self) -> Cmd {
        let ctx = self.ctx;
        let mut c = ctx
            .ctr()
            .arg("run")
            .args(&self.mode)
            .args(["--runtime", self.runtime]);
        match &self.options {
            RuntimeOptions::Executor => c = c.arg("--runtime-config-path").arg(&ctx.executor_toml),
            RuntimeOptions::Path(p) => c = c.arg("--runtime-config-path").arg(p),
            RuntimeOptions::Nothing => {}
        }
        c = c.args(&self.flags);
        c = match &self.source {
            Source::Image(image) => c.arg(image).arg(&self.id),
            Source::RootfsDir(d) => c.arg("--rootfs").arg(d).arg(&self.id),
            Source::Spec(p) => c.arg("--config").arg(p).arg(&self.id),
        };
        c = c.args(&self.args).timeout(self.timeout);
        match self.stdin {
            Some(data) => c.stdin(data),
            None => c,
        }
    }

    pub fn run(self) -> Result<Output> {
        self.cmd().run()
    }

    pub fn ok(self) -> Result<Output> {
        self.cmd().ok()
    }
}

/// A row of `ctr task ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub id: String,
    pub pid: u32,
    pub status: String,
}

/// What one case used, for its leak check.
#[derive(Default)]
struct CaseState {
    name: String,
    ids: BTreeSet<String>,
    groups: BTreeSet<String>,
    mounts_before: BTreeSet<PathBuf>,
    fifo_dirs_before: BTreeSet<PathBuf>,
    log_offset: usize,
}

/// Where ctr makes the fifos of a task's stdio (shared by every containerd).
const FIFO_DIR: &str = "/run/containerd/fifo";

fn fifo_dirs() -> BTreeSet<PathBuf> {
    std::fs::read_dir(FIFO_DIR)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Whether a fifo dir holds the stdio fifos of one of `ids`.
fn fifo_dir_of(dir: &Path, ids: &BTreeSet<String>) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                ids.iter().any(|id| {
                    ["-stdin", "-stdout", "-stderr"]
                        .iter()
                        .any(|s| name == format!("{id}{s}"))
                })
            })
        })
        .unwrap_or(false)
}

/// Everything a ctr case gets.
pub struct CtrCtx<'a> {
    pub cd: &'a Containerd,
    pub executor: Executor,
    pub ns: String,
    /// Private files of this pass: TOMLs, specs, host dirs.
    pub work: PathBuf,
    /// The busybox image unpacked, for `--rootfs` and `--config`.
    pub rootfs: PathBuf,
    pub executor_toml: PathBuf,
    case: RefCell<CaseState>,
}

impl<'a> CtrCtx<'a> {
    /// Prepares a namespace (with the image) for one executor's pass.
    pub fn new(cd: &'a Containerd, executor: Executor) -> Result<CtrCtx<'a>> {
        let ns = cd.namespace(executor.name());
        cd.import_image(&ns)?;
        let work = cd.dirs.run.join(format!("work-{}", executor.name()));
        std::fs::create_dir_all(&work)?;
        let rootfs = cd.dirs.run.join("busybox-rootfs");
        if !rootfs.join("bin/busybox").exists() {
            unpack_image(&rootfs, &cd.dirs.run.join("busybox-blobs"))?;
        }
        let executor_toml = work.join("executor.toml");
        std::fs::write(&executor_toml, executor.toml(&work))?;
        Ok(CtrCtx {
            cd,
            executor,
            ns,
            work,
            rootfs,
            executor_toml,
            case: RefCell::default(),
        })
    }

    /// `ctr -a <sock> -n <ns>`.
    pub fn ctr(&self) -> Cmd {
        self.cd.ctr(&self.ns)
    }

    /// Starts the bookkeeping of a case.
    pub fn begin(&self, name: &str) {
        *self.case.borrow_mut() = CaseState {
            name: name.rsplit('/').next().unwrap_or(name).to_string(),
            mounts_before: self.watched_mounts(),
            fifo_dirs_before: fifo_dirs(),
            log_offset: self.cd.log().len(),
            ..Default::default()
        };
    }

    /// A container id for this case (recorded for the leak check).
    pub fn id(&self, tag: &str) -> String {
        let mut case = self.case.borrow_mut();
        let id = if tag.is_empty() {
            case.name.clone()
        } else {
            format!("{}-{tag}", case.name)
        };
        case.ids.insert(id.clone());
        self.cd.note_group(&self.ns, &id);
        id
    }

    /// A shim group name for this case (recorded for the leak check).
    pub fn group(&self, tag: &str) -> String {
        let g = format!("{}-{tag}", self.case.borrow().name);
        self.case.borrow_mut().groups.insert(g.clone());
        self.cd.note_group(&self.ns, &g);
        g
    }

    /// A `ctr run` of busybox under barge with this pass's executor.
    pub fn run(&self, id: &str) -> Run<'_> {
        Run {
            ctx: self,
            id: id.to_string(),
            mode: Vec::new(),
            flags: Vec::new(),
            runtime: RUNTIME,
            options: RuntimeOptions::Executor,
            source: Source::Image(IMAGE.to_string()),
            args: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// Writes a TOML file in the pass's work dir.
    pub fn toml(&self, name: &str, body: &str) -> Result<PathBuf> {
        let p = self.work.join(name);
        std::fs::write(&p, body)?;
        Ok(p)
    }

    /// A spec for `ctr run --config`: ctr's default spec with the unpacked
    /// busybox as root, `args` as the command, and the usual cgroup path;
    /// then `edit` changes it.
    pub fn spec(&self, id: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> Result<PathBuf> {
        let out = self.ctr().args(["oci", "spec"]).ok()?;
        let mut spec: Value = serde_json::from_str(&out.stdout).context("parse `ctr oci spec`")?;
        spec["root"] = serde_json::json!({ "path": self.rootfs, "readonly": true });
        spec["process"]["args"] = serde_json::json!(args);
        spec["process"]["terminal"] = Value::Bool(false);
        spec["process"]["env"] = serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ]);
        spec["linux"]["cgroupsPath"] = Value::String(format!("/{}/{id}", self.ns));
        edit(&mut spec);
        let path = self.work.join(format!("{id}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
        Ok(path)
    }

    /// `ctr task ls`.
    pub fn tasks(&self) -> Result<Vec<TaskRow>> {
        let out = self.ctr().args(["tasks", "ls"]).ok()?;
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some(TaskRow {
                    id: f.next()?.to_string(),
                    pid: f.next()?.parse().ok()?,
                    status: f.next()?.to_string(),
                })
            })
            .collect())
    }

    pub fn task(&self, id: &str) -> Result<Option<TaskRow>> {
        Ok(self.tasks()?.into_iter().find(|t| t.id == id))
    }

    /// Waits until `ctr task ls` shows the task with this status.
    pub fn wait_status(&self, id: &str, status: &str) -> Result<TaskRow> {
        let mut seen = None;
        poll(
            &format!("task {id} to be {status}"),
            Duration::from_secs(20),
            || {
                let row = self.task(id)?;
                seen = row.clone();
                Ok(row.filter(|r| r.status == status))
            },
        )
        .with_context(|| format!("last seen: {seen:?}"))
    }

    /// `ctr task ps`: the pids.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let out = self.ctr().args(["tasks", "ps", id]).ok()?;
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect())
    }

    /// `ctr run -d` of a container that sleeps until killed; returns its
    /// `ctr task ls` row once RUNNING.
    pub fn start_sleeper(&self, run: Run<'_>, id: &str) -> Result<TaskRow> {
        run.detach()
            .args(["sleep", "1000"])
            .ok()
            .context("start sleeping container")?;
        self.wait_status(id, "RUNNING")
    }

    /// Kills (SIGKILL) and removes a container, checking each step; returns
    /// what `ctr task rm` printed.
    pub fn kill_and_remove(&self, id: &str) -> Result<Output> {
        if let Some(t) = self.task(id)? {
            if t.status != "STOPPED" {
                self.ctr()
                    .args(["tasks", "kill", "-s", "SIGKILL", id])
                    .ok()?;
                self.wait_status(id, "STOPPED")?;
            }
        }
        let out = self.ctr().args(["tasks", "rm", id]).ok()?;
        self.ctr().args(["containers", "rm", id]).ok()?;
        Ok(out)
    }

    /// Waits until a file appears inside a running container (seen through
    /// /proc/<pid>/root).
    pub fn wait_file(&self, pid: u32, path: &str) -> Result<()> {
        let p = PathBuf::from(format!("/proc/{pid}/root")).join(path.trim_start_matches('/'));
        poll(
            &format!("{path} in the container of pid {pid}"),
            Duration::from_secs(20),
            || Ok(p.exists().then_some(())),
        )
    }

    /// Barge shim processes of this namespace.
    pub fn shims(&self) -> Vec<sys::Proc> {
        self.cd
            .shims()
            .into_iter()
            .filter(|p| p.has_flag("-namespace", &self.ns))
            .collect()
    }

    /// containerd's log lines since the case began.
    pub fn case_log(&self) -> Vec<String> {
        let log = self.cd.log();
        let from = self.case.borrow().log_offset.min(log.len());
        log.get(from..)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Barge's lines in containerd's log since the case began.
    pub fn case_shim_log(&self) -> Vec<String> {
        self.case_log()
            .into_iter()
            .filter(|l| l.contains("runtime=io.containerd.barge.v1"))
            .collect()
    }

    fn watched_mounts(&self) -> BTreeSet<PathBuf> {
        let mut m: BTreeSet<PathBuf> = sys::mounts_under(&self.cd.dirs.run).into_iter().collect();
        m.extend(sys::mounts_under(&self.cd.dirs.lib));
        m
    }

    /// The leak check: nothing of the case may be left. Whatever is found
    /// is reported and then removed, so the next case starts clean.
    pub fn check_leaks(&self) -> Result<()> {
        let case = std::mem::take(&mut *self.case.borrow_mut());
        self.cd.check_running()?;
        let mut leaks = Vec::new();
        // A shim exits once its last container is deleted: give it a moment.
        let shims = poll("the case's shims to exit", Duration::from_secs(3), || {
            let s = self.shims();
            Ok(s.is_empty().then_some(()))
        });
        if shims.is_err() {
            for s in self.shims() {
                leaks.push(format!("shim pid {} ({})", s.pid, s.argv.join(" ")));
            }
        }
        let (tasks, containers) = self.cd.leftovers(&self.ns)?;
        if !tasks.is_empty() {
            leaks.push(format!("tasks {tasks:?}"));
        }
        if !containers.is_empty() {
            leaks.push(format!("containers {containers:?}"));
        }
        let mounts: Vec<PathBuf> = self
            .watched_mounts()
            .difference(&case.mounts_before)
            .cloned()
            .collect();
        if !mounts.is_empty() {
            leaks.push(format!("mounts {mounts:?}"));
        }
        let mut cgroups = Vec::new();
        let mut state_dirs = Vec::new();
        for id in &case.ids {
            cgroups.extend(sys::cgroup_dirs(&format!("{}/{id}", self.ns)));
            let bundle = self.cd.bundle(&self.ns, id);
            if bundle.exists() {
                leaks.push(format!("bundle {}", bundle.display()));
            }
            for parent in runtime_state_parents() {
                let d = parent.join(&self.ns).join(id);
                if d.exists() {
                    state_dirs.push(d);
                }
            }
        }
        if !cgroups.is_empty() {
            leaks.push(format!("cgroups {cgroups:?}"));
        }
        if !state_dirs.is_empty() {
            leaks.push(format!("runtime state {state_dirs:?}"));
        }
        let fifos: Vec<PathBuf> = fifo_dirs()
            .difference(&case.fifo_dirs_before)
            .filter(|d| fifo_dir_of(d, &case.ids))
            .cloned()
            .collect();
        if !fifos.is_empty() {
            leaks.push(format!("ctr fifo dirs {fifos:?}"));
        }
        let address = self.cd.address();
        let sockets: Vec<PathBuf> = case
            .ids
            .iter()
            .chain(&case.groups)
            .map(|g| shim_socket(&address, &self.ns, g))
            .filter(|s| s.exists())
            .collect();
        if !sockets.is_empty() {
            leaks.push(format!("shim sockets {sockets:?}"));
        }
        let consoles = orphan_console_sockets();
        if !consoles.is_empty() {
            leaks.push(format!("console sockets {consoles:?}"));
            for c in &consoles {
                let _ = std::fs::remove_file(c);
            }
        }
        if leaks.is_empty() {
            return Ok(());
        }
        // Clean up, so that one case's leak does not fail the next.
        remove_leftovers(self.cd, &self.ns, &cgroups, &mounts, &state_dirs, &sockets);
        for d in &fifos {
            let _ = std::fs::remove_dir_all(d);
        }
        bail!("{}", leaks.join(", "))
    }
}

/// Console sockets (`/run/containerd/barge/console/<shim pid>-<n>`) whose
/// shim is gone: a shim removes each one once the runtime has sent the
/// terminal, so any such file is left over.
pub fn orphan_console_sockets() -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir("/run/containerd/barge/console") else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            pid.is_none_or(|p| !sys::alive(p))
        })
        .map(|e| e.path())
        .collect()
}

/// Unpacks the busybox image's layers into `dest` (for `--rootfs` and
/// `--config` containers), using `tmp` for the blobs.
pub fn unpack_image(dest: &Path, tmp: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    std::fs::create_dir_all(tmp)?;
    let manifest = Cmd::new("tar")
        .args(["-xOf", IMAGE_TAR, "manifest.json"])
        .ok()?;
    let manifest: Value = serde_json::from_str(&manifest.stdout)?;
    let layers = manifest[0]["Layers"]
        .as_array()
        .context("no Layers in manifest.json")?;
    for layer in layers {
        let layer = layer.as_str().context("layer is not a string")?;
        Cmd::new("tar")
            .arg("-xf")
            .arg(IMAGE_TAR)
            .arg("-C")
            .arg(tmp)
            .arg(layer)
            .ok()?;
        Cmd::new("tar")
            .arg("-xf")
            .arg(tmp.join(layer))
            .arg("-C")
            .arg(dest)
            .ok()?;
    }
    let _ = std::fs::remove_dir_all(tmp);
    ensure!(
        dest.join("bin/busybox").exists(),
        "no bin/busybox in the unpacked image"
    );
    Ok(())
}
