//! The Docker cases, run for every Docker version and executor.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::cmd::{poll, Cmd};
use crate::containerd::{remove_leftovers, runtime_state_parents, shim_socket, RUNTIME};
use crate::ctr::Executor;
use crate::ctr_cases::expect;
use crate::docker::{Dockerd, RUNTIME_ABS, RUNTIME_OCI};
use crate::sys;

/// One Docker case; `only` limits it to one executor's pass.
pub struct DockerCase {
    pub name: &'static str,
    pub only: Option<Executor>,
    pub run: fn(&DockerCtx) -> Result<()>,
}

impl DockerCase {
    /// Cases for every executor's pass, from (name, body) pairs.
    pub fn list(
        cases: impl IntoIterator<Item = (&'static str, fn(&DockerCtx) -> Result<()>)>,
    ) -> Vec<DockerCase> {
        cases
            .into_iter()
            .map(|(name, run)| DockerCase {
                name,
                only: None,
                run,
            })
            .collect()
    }
}

#[derive(Default)]
struct CaseState {
    cidfiles: Vec<PathBuf>,
    mounts_before: BTreeSet<PathBuf>,
    log_offset: usize,
}

/// Everything a Docker case gets.
pub struct DockerCtx<'a> {
    pub d: &'a Dockerd,
    pub executor: Executor,
    work: PathBuf,
    seq: RefCell<usize>,
    case: RefCell<CaseState>,
}

/// What `docker inspect` says about a container's state.
#[derive(Debug)]
pub struct State {
    pub running: bool,
    pub pid: u32,
    pub exit_code: i32,
}

impl<'a> DockerCtx<'a> {
    pub fn new(d: &'a Dockerd, executor: Executor) -> Result<DockerCtx<'a>> {
        let work = d.dirs.run.join(format!("work-{}", executor.name()));
        std::fs::create_dir_all(&work)?;
        Ok(DockerCtx {
            d,
            executor,
            work,
            seq: RefCell::new(0),
            case: RefCell::default(),
        })
    }

    /// The runtime that selects this pass's executor: the bare shim name
    /// (no options: auto, which is native) or the daemon.json runtime whose
    /// TOML says oci-binary.
    pub fn runtime(&self) -> &'static str {
        match self.executor {
            Executor::Native | Executor::Wasm => RUNTIME,
            Executor::OciBinary => RUNTIME_OCI,
        }
    }

    pub fn begin(&self) {
        *self.case.borrow_mut() = CaseState {
            mounts_before: self.watched_mounts(),
            log_offset: self.d.containerd.log().len(),
            ..Default::default()
        };
    }

    pub fn docker(&self) -> Cmd {
        self.d.docker()
    }

    /// `docker run --pull never --cidfile <new file> --runtime <runtime>`;
    /// the id is recorded for the leak check.
    pub fn run_with(&self, runtime: &str) -> Cmd {
        let n = {
            let mut s = self.seq.borrow_mut();
            *s += 1;
            *s
        };
        let cidfile = self.work.join(format!("{n}.cid"));
        self.case.borrow_mut().cidfiles.push(cidfile.clone());
        self.docker()
            .args(["run", "--pull", "never", "--cidfile"])
            .arg(cidfile)
            .args(["--runtime", runtime])
            .timeout(Duration::from_secs(40))
    }

    pub fn run(&self) -> Cmd {
        self.run_with(self.runtime())
    }

    /// `docker run -d ... busybox <args>`; returns the id once running.
    pub fn start(&self, run: Cmd, args: &[&str]) -> Result<(String, State)> {
        let out = run.arg("-d").arg("busybox").args(args).ok()?;
        let id = out.stdout.trim().to_string();
        ensure!(id.len() == 64, "no container id from {}", out.describe());
        self.d.note_id(&id);
        let state = poll("the container to run", Duration::from_secs(20), || {
            let s = self.state(&id)?;
            Ok((s.running && s.pid > 0).then_some(s))
        })?;
        Ok((id, state))
    }

    pub fn state(&self, id: &str) -> Result<State> {
        let out = self
            .docker()
            .args([
                "inspect",
                "-f",
                "{{.State.Running}} {{.State.Pid}} {{.State.ExitCode}}",
                id,
            ])
            .ok()?;
        let f: Vec<&str> = out.stdout.split_whitespace().collect();
        ensure!(f.len() == 3, "unexpected inspect output {}", out.describe());
        Ok(State {
            running: f[0] == "true",
            pid: f[1].parse()?,
            exit_code: f[2].parse()?,
        })
    }

    /// Waits for a container to stop; returns its state.
    pub fn wait_stopped(&self, id: &str) -> Result<State> {
        poll("the container to stop", Duration::from_secs(30), || {
            let s = self.state(id)?;
            Ok((!s.running).then_some(s))
        })
    }

    /// Container ids the case created (from the cid files).
    fn case_ids(&self) -> Vec<String> {
        self.case
            .borrow()
            .cidfiles
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn watched_mounts(&self) -> BTreeSet<PathBuf> {
        let cd = &self.d.containerd;
        [&self.d.dirs.run, &cd.dirs.run, &cd.dirs.lib]
            .iter()
            .flat_map(|d| sys::mounts_under(d))
            .collect()
    }

    /// Barge's lines in containerd's log since the case began.
    pub fn case_shim_log(&self) -> Vec<String> {
        let log = self.d.containerd.log();
        let from = self.case.borrow().log_offset.min(log.len());
        log[from..]
            .lines()
            .filter(|l| l.contains("runtime=io.containerd.barge.v1"))
            .map(String::from)
            .collect()
    }

    /// Nothing of the case may be left; what is, is reported and removed.
    pub fn check_leaks(&self) -> Result<()> {
        let ids = self.case_ids();
        for id in &ids {
            self.d.note_id(id);
        }
        let case = std::mem::take(&mut *self.case.borrow_mut());
        for f in &case.cidfiles {
            let _ = std::fs::remove_file(f);
        }
        self.d.check_running()?;
        let cd = &self.d.containerd;
        let ns = &self.d.namespace;
        let mut leaks = Vec::new();
        let containers = self.d.all_containers()?;
        if !containers.is_empty() {
            leaks.push(format!("docker containers {containers:?}"));
        }
        if poll("the shims to exit", Duration::from_secs(3), || {
            Ok(cd.shims().is_empty().then_some(()))
        })
        .is_err()
        {
            for s in cd.shims() {
                leaks.push(format!("shim pid {} ({})", s.pid, s.argv.join(" ")));
            }
        }
        let (tasks, ctr_containers) = cd.leftovers(ns)?;
        if !tasks.is_empty() || !ctr_containers.is_empty() {
            leaks.push(format!(
                "containerd tasks {tasks:?} containers {ctr_containers:?}"
            ));
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
        let mut dirs = Vec::new();
        let mut sockets = Vec::new();
        for id in &ids {
            cgroups.extend(sys::cgroup_dirs(&format!("docker/{id}")));
            dirs.extend(
                runtime_state_parents()
                    .into_iter()
                    .map(|p| p.join(ns).join(id))
                    .chain([cd.bundle(ns, id)])
                    .filter(|d| d.exists()),
            );
            let s = shim_socket(&cd.address(), ns, id);
            if s.exists() {
                sockets.push(s);
            }
        }
        if !cgroups.is_empty() {
            leaks.push(format!("cgroups {cgroups:?}"));
        }
        if !dirs.is_empty() {
            leaks.push(format!("state {dirs:?}"));
        }
        if !sockets.is_empty() {
            leaks.push(format!("shim sockets {sockets:?}"));
        }
        if leaks.is_empty() {
            return Ok(());
        }
        self.d.force_clean();
        remove_leftovers(cd, ns, &cgroups, &mounts, &dirs, &sockets);
        bail!("{}", leaks.join(", "))
    }
}

pub fn cases() -> Vec<DockerCase> {
    let all = |name, run| DockerCase {
        name,
        only: None,
        run,
    };
    vec![
        all("echo", echo),
        all("exit-3", exit_3),
        all("user-env-cwd", user_env_cwd),
        all("stdin", stdin),
        all("logs", logs),
        all("stop-ignores-sigterm", stop_ignores_sigterm),
        all("stop-trapped-sigterm", stop_trapped_sigterm),
        all("kill", kill),
        all("rm-force", rm_force),
        all("memory-limit", memory_limit),
        all("executor-selected", executor_selected),
        DockerCase {
            name: "runtime-absolute-path",
            only: Some(Executor::Native),
            run: runtime_absolute_path,
        },
    ]
    .into_iter()
    .chain(crate::wasm_cases::docker_cases())
    .chain(crate::docker_exec_cases::cases())
    .chain(crate::docker_resource_cases::cases())
    .chain(crate::security_cases::docker_cases())
    .chain(crate::output_cases::docker_cases())
    .collect()
}

/// `docker run --rm` under barge and under runc: both must give this.
fn compare(ctx: &DockerCtx, args: &[&str], stdout: &str, code: i32) -> Result<()> {
    let barge = ctx.run().args(["--rm", "busybox"]).args(args).run()?;
    let runc = ctx
        .run_with("runc")
        .args(["--rm", "busybox"])
        .args(args)
        .run()?;
    expect(&runc, stdout, code).context("runc (reference)")?;
    expect(&barge, stdout, code).context("barge")
}

fn echo(ctx: &DockerCtx) -> Result<()> {
    compare(ctx, &["echo", "hello"], "hello\n", 0)
}

fn exit_3(ctx: &DockerCtx) -> Result<()> {
    compare(ctx, &["sh", "-c", "exit 3"], "", 3)
}

fn user_env_cwd(ctx: &DockerCtx) -> Result<()> {
    let args = [
        "--user",
        "1000",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "--read-only",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "id -u; echo $FOO; pwd; touch /probe 2>/dev/null || echo read-only",
    ];
    let want = "1000\nbar\n/tmp\nread-only\n";
    let barge = ctx.run().args(args).run()?;
    let runc = ctx.run_with("runc").args(args).run()?;
    expect(&runc, want, 0).context("runc (reference)")?;
    expect(&barge, want, 0).context("barge")
}

fn stdin(ctx: &DockerCtx) -> Result<()> {
    // `docker run -i`: the container reads stdin to its end.
    let data = "line one\nline two\n";
    let barge = ctx
        .run()
        .args(["-i", "--rm", "busybox", "cat"])
        .stdin(data)
        .run()?;
    let runc = ctx
        .run_with("runc")
        .args(["-i", "--rm", "busybox", "cat"])
        .stdin(data)
        .run()?;
    expect(&runc, data, 0).context("runc (reference)")?;
    expect(&barge, data, 0).context("barge")
}

fn logs(ctx: &DockerCtx) -> Result<()> {
    // dockerd reads the container's output from the fifos after `run -d`.
    let out = ctx
        .run()
        .args([
            "-d",
            "busybox",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2",
        ])
        .ok()?;
    let id = out.stdout.trim().to_string();
    ctx.d.note_id(&id);
    let s = ctx.wait_stopped(&id)?;
    ensure!(s.exit_code == 0, "exit code {}", s.exit_code);
    let logs = ctx.docker().args(["logs", &id]).ok()?;
    ensure!(
        logs.stdout == "to-stdout\n" && logs.stderr == "to-stderr\n",
        "docker logs: {}",
        logs.describe()
    );
    ctx.docker().args(["rm", &id]).ok()?;
    Ok(())
}

fn stop_ignores_sigterm(ctx: &DockerCtx) -> Result<()> {
    // `sleep` as PID 1 has no handler, so SIGTERM does nothing: docker
    // stop must wait out -t and then SIGKILL.
    let (id, _) = ctx.start(ctx.run(), &["sleep", "1000"])?;
    let start = Instant::now();
    ctx.docker().args(["stop", "-t", "2", &id]).ok()?;
    let took = start.elapsed();
    ensure!(
        took >= Duration::from_secs(2),
        "docker stop -t 2 returned after {took:?}"
    );
    let s = ctx.wait_stopped(&id)?;
    ensure!(
        s.exit_code == 137,
        "exit code {}, expected 137",
        s.exit_code
    );
    ctx.docker().args(["rm", &id]).ok()?;
    Ok(())
}

fn stop_trapped_sigterm(ctx: &DockerCtx) -> Result<()> {
    let script = "trap 'exit 143' TERM; touch /tmp/ready; while :; do sleep 0.1; done";
    let (id, state) = ctx.start(ctx.run(), &["sh", "-c", script])?;
    wait_file(state.pid, "tmp/ready")?;
    ctx.docker().args(["stop", "-t", "30", &id]).ok()?;
    let s = ctx.wait_stopped(&id)?;
    ensure!(
        s.exit_code == 143,
        "exit code {}, expected 143 from the TERM trap",
        s.exit_code
    );
    ctx.docker().args(["rm", &id]).ok()?;
    Ok(())
}

fn kill(ctx: &DockerCtx) -> Result<()> {
    let (id, state) = ctx.start(ctx.run(), &["sleep", "1000"])?;
    ctx.docker().args(["kill", &id]).ok()?;
    let s = ctx.wait_stopped(&id)?;
    ensure!(
        s.exit_code == 137,
        "exit code {}, expected 137",
        s.exit_code
    );
    ensure!(!sys::alive(state.pid), "pid {} still alive", state.pid);
    ctx.docker().args(["rm", &id]).ok()?;
    Ok(())
}

fn rm_force(ctx: &DockerCtx) -> Result<()> {
    let (id, state) = ctx.start(ctx.run(), &["sleep", "1000"])?;
    ctx.docker().args(["rm", "-f", &id]).ok()?;
    let left = ctx.d.all_containers()?;
    ensure!(!left.contains(&id), "container still listed after rm -f");
    poll("the process to be gone", Duration::from_secs(5), || {
        Ok((!sys::alive(state.pid)).then_some(()))
    })?;
    Ok(())
}

fn memory_limit(ctx: &DockerCtx) -> Result<()> {
    let (id, state) = ctx.start(ctx.run().args(["-m", "64m"]), &["sleep", "1000"])?;
    let cgroup = sys::cgroup_of(state.pid, "memory")?;
    ensure!(
        cgroup == format!("/docker/{id}"),
        "memory cgroup is {cgroup}, expected /docker/{id}"
    );
    let file = format!("/sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes");
    let limit = std::fs::read_to_string(&file).with_context(|| format!("read {file}"))?;
    ensure!(limit.trim() == "67108864", "{file} is {}", limit.trim());
    ctx.docker().args(["rm", "-f", &id]).ok()?;
    Ok(())
}

fn executor_selected(ctx: &DockerCtx) -> Result<()> {
    let (id, _) = ctx.start(ctx.run(), &["sleep", "1000"])?;
    let state = format!(
        "/run/containerd/barge/runc/{}/{id}/state.json",
        ctx.d.namespace
    );
    let exists = Path::new(&state).exists();
    match ctx.executor {
        Executor::OciBinary => ensure!(exists, "{state} does not exist: runc was not used"),
        Executor::Native | Executor::Wasm => ensure!(!exists, "{state} exists: runc was used"),
    }
    let wanted = format!(
        "creating container {id} with executor {}",
        ctx.executor.name()
    );
    crate::cmd::wait_for_shim_line(|| ctx.case_shim_log(), &wanted)?;
    let out = ctx.run().args(["--rm", "busybox", "echo", "hello"]).run()?;
    expect(&out, "hello\n", 0)?;
    ctx.docker().args(["rm", "-f", &id]).ok()?;
    Ok(())
}

fn runtime_absolute_path(ctx: &DockerCtx) -> Result<()> {
    let out = ctx
        .run_with(RUNTIME_ABS)
        .args(["--rm", "busybox", "echo", "hello"])
        .run()?;
    expect(&out, "hello\n", 0)?;
    // The shim that serves it is the copy outside PATH.
    let (id, _) = ctx.start(ctx.run_with(RUNTIME_ABS), &["sleep", "1000"])?;
    let shims = ctx.d.containerd.shims();
    let offpath = ctx.d.offpath_shim.display().to_string();
    ensure!(
        shims.len() == 1 && shims[0].argv.first() == Some(&offpath),
        "expected one shim run as {offpath}, found {:?}",
        shims.iter().map(|s| s.argv.join(" ")).collect::<Vec<_>>()
    );
    ctx.docker().args(["rm", "-f", &id]).ok()?;
    Ok(())
}

fn wait_file(pid: u32, rel: &str) -> Result<()> {
    let p = PathBuf::from(format!("/proc/{pid}/root/{rel}"));
    poll(&format!("{}", p.display()), Duration::from_secs(20), || {
        Ok(p.exists().then_some(()))
    })
}
