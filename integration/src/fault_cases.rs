//! Faults: what the shim does when something around it breaks. A shim
//! killed with SIGKILL, containerd stopped (SIGTERM or SIGKILL) and
//! started again while containers run, the shim's state directory on a
//! full filesystem, the shim at its descriptor limit, a container that
//! fork-bombs up to its pids limit next to another in the same shim, and
//! bad ttrpc frames sent straight to the shim's socket. Where the same
//! fault can be put on containerd-shim-runc-v2, it is, and the two must
//! agree.
//!
//! [`cases`] run for every containerd version and executor; [`native_cases`]
//! for the native executor on containerd 1.7 and later.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use prost::Message as _;

use crate::cmd::{poll, Cmd, Output};
use crate::containerd::shim_socket;
use crate::ctr::{CtrCtx, Run, TaskRow};
use crate::ctr_cases::{must_fail, CtrCase};
use crate::sys;

/// The faults that run everywhere.
pub fn cases() -> Vec<CtrCase> {
    type Case = (&'static str, fn(&CtrCtx) -> Result<()>);
    let cases: [Case; 2] = [
        ("shim-kill-9", shim_kill_9),
        ("containerd-restart", |ctx| {
            containerd_down(ctx, libc::SIGTERM)
        }),
    ];
    CtrCase::list(cases)
}

/// The faults that run for the native executor on containerd 1.7+.
pub fn native_cases() -> Vec<CtrCase> {
    type Case = (&'static str, fn(&CtrCtx) -> Result<()>);
    let cases: [Case; 5] = [
        ("containerd-kill-9", |ctx| {
            containerd_down(ctx, libc::SIGKILL)
        }),
        ("state-dir-full", state_dir_full),
        ("shim-fd-limit", shim_fd_limit),
        ("pids-limit-bomb", pids_limit_bomb),
        ("ttrpc-bad-frames", ttrpc_bad_frames),
    ];
    CtrCase::list(cases)
}

/// Who runs a container: barge, or runc-v2 for the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shim {
    RuncV2,
    Barge,
}

impl Shim {
    const BOTH: [Shim; 2] = [Shim::RuncV2, Shim::Barge];

    fn tag(self) -> &'static str {
        match self {
            Shim::RuncV2 => "runc",
            Shim::Barge => "barge",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Shim::RuncV2 => "runc-v2 (reference)",
            Shim::Barge => "barge",
        }
    }

    /// A `ctr run` under this shim, without stdio (ctr cannot remove the
    /// fifos of a task it did not see end, under either runtime).
    fn run<'c>(self, ctx: &'c CtrCtx<'c>, id: &str) -> Run<'c> {
        let run = ctx.run(id).flags(["--null-io"]);
        match self {
            Shim::RuncV2 => run.runc(),
            Shim::Barge => run,
        }
    }
}

/// `--annotation` that puts a container into `group`'s shim.
fn group_flags(group: &str) -> [String; 2] {
    [
        "--annotation".into(),
        format!("io.containerd.runc.v2.group={group}"),
    ]
}

/// The shim that serves a container: its init's parent.
fn shim_of(task: &TaskRow) -> Result<u32> {
    let init = sys::process(task.pid).with_context(|| format!("init {} is gone", task.pid))?;
    let shim = sys::process(init.ppid).context("the init's parent is gone")?;
    ensure!(
        shim.name().starts_with("containerd-shim-"),
        "the parent of {}'s init is {:?}, not a shim",
        task.id,
        shim.argv
    );
    Ok(shim.pid)
}

/// `ctr task exec` of `echo <word>` into a container: it must print it.
fn exec_echo(ctx: &CtrCtx, id: &str, exec_id: &str) -> Result<()> {
    let out = ctx
        .ctr()
        .args(["tasks", "exec", "--exec-id", exec_id, id, "echo", exec_id])
        .timeout(Duration::from_secs(15))
        .run()?;
    ensure!(
        out.success() && out.stdout == format!("{exec_id}\n"),
        "exec into {id}: {}",
        out.describe()
    );
    Ok(())
}

/// `ctr events` until [`Events::lines`] stops it.
struct Events(crate::cmd::Running);

impl Events {
    fn start(ctx: &CtrCtx) -> Result<Events> {
        let events = ctx
            .ctr()
            .arg("events")
            .timeout(Duration::from_secs(55))
            .spawn()?;
        // ctr subscribes before it prints anything; give it that moment.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Events(events))
    }

    fn lines(self) -> Result<Vec<String>> {
        sys::signal(self.0.pid(), libc::SIGTERM);
        Ok(self.0.wait()?.stdout.lines().map(String::from).collect())
    }
}

/// The `/tasks/exit` event of a container's init, if any.
fn exit_event<'a>(lines: &'a [String], id: &str) -> Option<&'a String> {
    let container = format!("\"container_id\":\"{id}\"");
    let init = format!("\"id\":\"{id}\"");
    lines
        .iter()
        .find(|l| l.contains("/tasks/exit") && l.contains(&container) && l.contains(&init))
}

/// `kill -9` of the shim while two containers run in it (a group): containerd
/// runs the shim's `delete` action for each, which kills what is left,
/// unmounts and removes the state (the leak check after the case sees
/// to it), and reports exit status 137, as under runc-v2.
fn shim_kill_9(ctx: &CtrCtx) -> Result<()> {
    let events = Events::start(ctx)?;
    let mut all = Vec::new();
    let mut shims = Vec::new();
    let mut sockets = Vec::new();
    for shim in Shim::BOTH {
        let group = ctx.group(shim.tag());
        sockets.push((shim, shim_socket(&ctx.cd.address(), &ctx.ns, &group)));
        let mut tasks = Vec::new();
        for n in ["a", "b"] {
            let id = ctx.id(&format!("{}-{n}", shim.tag()));
            let run = shim.run(ctx, &id).flags(group_flags(&group));
            tasks.push(ctx.start_sleeper(run, &id).context(shim.label())?);
        }
        let pid = shim_of(&tasks[0])?;
        ensure!(
            shim_of(&tasks[1])? == pid,
            "{}: the group's containers have different shims",
            shim.label()
        );
        shims.push(pid);
        all.extend(tasks.into_iter().map(|t| (shim, t)));
    }
    for pid in &shims {
        sys::signal(*pid, libc::SIGKILL);
    }
    // containerd sees the shim go, runs `<shim> delete` for each container
    // and forgets the task (or marks it stopped).
    for (shim, task) in &all {
        poll(
            &format!("{} task {} to be stopped or gone", shim.label(), task.id),
            Duration::from_secs(20),
            || {
                Ok(ctx
                    .task(&task.id)?
                    .is_none_or(|t| t.status == "STOPPED")
                    .then_some(()))
            },
        )?;
    }
    for (shim, task) in &all {
        let rm = ctx.ctr().args(["tasks", "rm", &task.id]).run()?;
        ensure!(
            rm.success() || rm.stderr.contains("not found"),
            "{}: {}",
            shim.label(),
            rm.describe()
        );
        ctx.ctr().args(["containers", "rm", &task.id]).ok()?;
        poll("the init to be gone", Duration::from_secs(10), || {
            Ok((!sys::alive(task.pid)).then_some(()))
        })
        .context(shim.label())?;
    }
    let lines = events.lines()?;
    for (shim, task) in &all {
        let exit = exit_event(&lines, &task.id)
            .with_context(|| format!("{}: no /tasks/exit for {}", shim.label(), task.id))?;
        ensure!(
            exit.contains("\"exit_status\":137"),
            "{}: the exit of {} is not 137: {exit}",
            shim.label(),
            task.id
        );
        // The exit names the init, as under runc-v2 (from init.pid).
        ensure!(
            exit.contains(&format!("\"pid\":{}", task.pid)),
            "{}: the exit of {} does not name its init (pid {}): {exit}",
            shim.label(),
            task.id,
            task.pid
        );
    }
    // containerd ran `<shim> delete` to clean up; it must not have failed.
    let errors: Vec<String> = ctx
        .case_log()
        .into_iter()
        .filter(|l| l.contains("level=error"))
        .filter(|l| all.iter().any(|(_, t)| l.contains(&t.id)))
        .collect();
    ensure!(errors.is_empty(), "containerd logged errors: {errors:?}");
    // barge's `delete` removes the dead shim's socket. runc-v2's removes a
    // socket named after the container only, and so leaves a group's:
    // that one is removed here.
    for (shim, socket) in &sockets {
        if socket.exists() {
            ensure!(
                *shim == Shim::RuncV2,
                "{}: the dead shim's socket {} is left",
                shim.label(),
                socket.display()
            );
            std::fs::remove_file(socket)?;
        }
    }
    Ok(())
}

/// A script that exits 7 once `/tmp/go` exists.
const EXIT_ON_GO: &str = "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 7";

/// containerd stopped with `signal` (SIGTERM or SIGKILL) and started again
/// while containers run, under runc-v2 and under barge at once. The
/// running ones are still RUNNING with the same pids and shims; exec, kill
/// and delete work; one that exited while containerd was down is not shown
/// running afterwards, and what containerd shows of it is what it shows
/// under runc-v2.
fn containerd_down(ctx: &CtrCtx, signal: i32) -> Result<()> {
    struct Side {
        shim: Shim,
        running: TaskRow,
        exiting: TaskRow,
        shim_pid: u32,
    }
    let mut sides = Vec::new();
    for shim in Shim::BOTH {
        let running_id = ctx.id(&format!("{}-run", shim.tag()));
        let running = ctx
            .start_sleeper(shim.run(ctx, &running_id), &running_id)
            .context(shim.label())?;
        let exiting_id = ctx.id(&format!("{}-exit", shim.tag()));
        shim.run(ctx, &exiting_id)
            .detach()
            .args(["sh", "-c", EXIT_ON_GO])
            .ok()
            .context(shim.label())?;
        let exiting = ctx.wait_status(&exiting_id, "RUNNING")?;
        let shim_pid = shim_of(&running)?;
        sides.push(Side {
            shim,
            running,
            exiting,
            shim_pid,
        });
    }
    ctx.cd.restart_with(signal, || {
        for s in &sides {
            let go = format!("/proc/{}/root/tmp/go", s.exiting.pid);
            std::fs::write(&go, "").with_context(|| format!("write {go}"))?;
        }
        for s in &sides {
            poll(
                &format!("{} container to exit", s.shim.label()),
                Duration::from_secs(10),
                || Ok((!sys::alive(s.exiting.pid)).then_some(())),
            )?;
        }
        Ok(())
    })?;
    let mut shown = Vec::new();
    for s in &sides {
        let who = s.shim.label();
        let now = ctx
            .task(&s.running.id)?
            .with_context(|| format!("{who}: the task is gone after the restart"))?;
        ensure!(
            now.status == "RUNNING" && now.pid == s.running.pid,
            "{who}: after the restart {now:?}, before {:?}",
            s.running
        );
        ensure!(
            sys::alive(s.shim_pid),
            "{who}: the shim died with containerd"
        );
        let pids = ctx.pids(&s.running.id)?;
        ensure!(
            pids == vec![s.running.pid],
            "{who}: `ctr task ps` shows {pids:?}"
        );
        exec_echo(ctx, &s.running.id, "after").context(who)?;
        let rm = ctx.kill_and_remove(&s.running.id).context(who)?;
        ensure!(rm.all().contains("137"), "{who}: {}", rm.describe());
        // The exit while containerd was down.
        let exited = ctx.task(&s.exiting.id)?;
        let status = match &exited {
            None => "gone".to_string(),
            Some(t) if t.status == "STOPPED" => {
                let rm = ctx.ctr().args(["tasks", "rm", &s.exiting.id]).ok()?;
                ensure!(
                    rm.all().contains("exit code 7"),
                    "{who}: `ctr task rm` does not report exit 7: {}",
                    rm.describe()
                );
                "stopped, exit 7".to_string()
            }
            Some(t) => bail!("{who}: the exited task is shown as {t:?}"),
        };
        ctx.ctr().args(["containers", "rm", &s.exiting.id]).ok()?;
        shown.push(status);
    }
    ensure!(
        shown[0] == shown[1],
        "the task that exited while containerd was down: runc-v2 {}, barge {}",
        shown[0],
        shown[1]
    );
    println!(
        "        the task that exited while containerd was down: {}, under both",
        shown[1]
    );
    Ok(())
}

/// A small tmpfs mounted on `dir` for the case, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        ensure!(
            sys::mounts_under(dir).is_empty(),
            "{} is already a mount point",
            dir.display()
        );
        Cmd::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("barge-it-full")
            .arg(dir)
            .ok()?;
        Ok(Tmpfs(dir.to_path_buf()))
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> Result<()> {
        let path = self.0.join("fill");
        let mut f = std::fs::File::create(&path)?;
        let chunk = [0u8; 16384];
        loop {
            match f.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Ok(()),
                Err(e) => return Err(e).with_context(|| format!("fill {}", path.display())),
            }
        }
    }

    /// Entries other than the fill file.
    fn others(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "fill")
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        sys::unmount_under(&self.0);
    }
}

/// The runtime's state directory for the namespace on a full tmpfs
/// (barge's native root, runc's root): Create fails with ENOSPC and the
/// path, and nothing is left half made (no state, cgroup, mount, process,
/// task; the leak check looks again after the case).
fn state_dir_full(ctx: &CtrCtx) -> Result<()> {
    for (shim, root) in [
        (Shim::RuncV2, "/run/containerd/runc"),
        (Shim::Barge, "/run/containerd/barge/native"),
    ] {
        let who = shim.label();
        let dir = Path::new(root).join(&ctx.ns);
        let tmpfs = Tmpfs::mount(&dir, "256k")?;
        tmpfs.fill()?;
        let id = ctx.id(shim.tag());
        let out = shim.run(ctx, &id).rm().args(["true"]).run()?;
        match shim {
            // runc 1.1.5 loses the cause: "unable to store init state: %!w(<nil>)".
            Shim::RuncV2 => ensure!(!out.success(), "{who}: {}", out.describe()),
            Shim::Barge => {
                let state = dir.join(&id).display().to_string();
                must_fail(out, &["No space left on device", &state]).context(who)?;
            }
        }
        let left = tmpfs.others();
        ensure!(
            left.is_empty(),
            "{who}: left in {}: {left:?}",
            dir.display()
        );
        let cgroups = sys::cgroup_dirs(&format!("{}/{id}", ctx.ns));
        ensure!(cgroups.is_empty(), "{who}: cgroups left: {cgroups:?}");
        ensure!(ctx.task(&id)?.is_none(), "{who}: a task is left");
        drop(tmpfs);
        ensure!(
            sys::mounts_under(&dir).is_empty(),
            "the tmpfs on {} is still mounted",
            dir.display()
        );
    }
    Ok(())
}

/// The soft RLIMIT_NOFILE of a process, as /proc/<pid>/limits shows it.
fn nofile_soft(pid: u32) -> Result<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next())
        .map(String::from)
        .context("no open files limit in /proc/<pid>/limits")
}

/// Sets the soft RLIMIT_NOFILE of a running process (`prlimit --pid`).
fn set_nofile_soft(pid: u32, soft: &str) -> Result<Output> {
    Cmd::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={soft}:"))
        .ok()
}

/// The lowest descriptor number a process does not use: with its soft
/// limit there, it can open nothing more.
fn lowest_free_fd(pid: u32) -> Result<u32> {
    let used: BTreeSet<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    Ok((0..).find(|n| !used.contains(n)).unwrap_or(0))
}

/// A process's CPU time (user + system) in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Ok(f.get(11).context("short stat")?.parse::<u64>()?
        + f.get(12).context("short stat")?.parse::<u64>()?)
}

/// The shim of a group at its descriptor limit (its soft RLIMIT_NOFILE
/// lowered, with `prlimit --pid`, to its lowest free descriptor): a new
/// container in the group is refused at once with "Too many open files",
/// and so is an exec; the shim does not spin, and the containers it serves
/// keep running. With the limit raised again, exec, a new container, kill
/// and delete all work.
fn shim_fd_limit(ctx: &CtrCtx) -> Result<()> {
    let group = ctx.group("g");
    let ids: Vec<String> = ["a", "b", "c"].iter().map(|n| ctx.id(n)).collect();
    let run = |id: &str| Shim::Barge.run(ctx, id).flags(group_flags(&group));
    let mut tasks = Vec::new();
    for id in &ids[..2] {
        tasks.push(ctx.start_sleeper(run(id), id)?);
    }
    let shim = shim_of(&tasks[0])?;
    let before = nofile_soft(shim)?;
    let limit = lowest_free_fd(shim)?;
    set_nofile_soft(shim, &limit.to_string())?;
    let at_limit = (|| -> Result<()> {
        let ticks = cpu_ticks(shim)?;
        let started = Instant::now();
        let out = run(&ids[2])
            .detach()
            .args(["sleep", "1000"])
            .timeout(Duration::from_secs(20))
            .run()?;
        ensure!(
            out.elapsed < Duration::from_secs(10),
            "the refusal took {:?}",
            out.elapsed
        );
        must_fail(out, &["Too many open files"]).context("a new container at the limit")?;
        let exec = ctx
            .ctr()
            .args(["tasks", "exec", "--exec-id", "at-limit", &ids[0], "true"])
            .timeout(Duration::from_secs(15))
            .run()?;
        must_fail(exec, &["Too many open files"]).context("an exec at the limit")?;
        std::thread::sleep(Duration::from_millis(500));
        for t in &tasks {
            let now = ctx.task(&t.id)?.context("task gone")?;
            ensure!(
                now.status == "RUNNING" && now.pid == t.pid && sys::alive(t.pid),
                "at the limit: {now:?}, before {t:?}"
            );
        }
        // 100 ticks a second: the shim must have slept, not spun on accept.
        let spent = cpu_ticks(shim)? - ticks;
        let elapsed = started.elapsed().as_secs_f64();
        ensure!(
            (spent as f64) < 30.0 * elapsed,
            "the shim used {spent} ticks of CPU in {elapsed:.1} s at its limit"
        );
        ensure!(sys::alive(shim), "the shim died at its limit");
        Ok(())
    })();
    set_nofile_soft(shim, &before)?;
    at_limit?;
    exec_echo(ctx, &ids[0], "raised")?;
    // The refused container's record is left by `ctr run -d`, as it is
    // after any failed Create.
    ctx.ctr().args(["containers", "rm", &ids[2]]).ok()?;
    let c = ctx.start_sleeper(run(&ids[2]), &ids[2])?;
    ensure!(
        shim_of(&c)? == shim,
        "the new container is not in the group's shim"
    );
    for id in &ids {
        let rm = ctx.kill_and_remove(id)?;
        ensure!(rm.all().contains("137"), "{}", rm.describe());
    }
    Ok(())
}

/// How many processes the bombing container may have.
const PIDS_LIMIT: u64 = 32;

/// A container that forks until its pids limit, in the same shim as a
/// quiet one: the quiet one keeps answering execs, the limit holds (the
/// cgroup counted failed forks), and the shim's memory stays bounded.
fn pids_limit_bomb(ctx: &CtrCtx) -> Result<()> {
    let group = ctx.group("g");
    let quiet = ctx.id("quiet");
    let bomb = ctx.id("bomb");
    let task = ctx.start_sleeper(
        Shim::Barge.run(ctx, &quiet).flags(group_flags(&group)),
        &quiet,
    )?;
    let shim = shim_of(&task)?;
    exec_echo(ctx, &quiet, "warm-up")?;
    let before = sys::Footprint::of(shim)?;
    let spec = ctx.spec(
        &bomb,
        // The inner shell forks until a fork fails, which ends it; the
        // outer one starts it again at once, for ever.
        &[
            "sh",
            "-c",
            "while :; do sh -c 'while :; do sleep 1000 & done' 2>/dev/null; done",
        ],
        |s| {
            s["linux"]["resources"]["pids"] = serde_json::json!({ "limit": PIDS_LIMIT });
            s["annotations"]["io.containerd.runc.v2.group"] = serde_json::json!(group);
        },
    )?;
    Shim::Barge
        .run(ctx, &bomb)
        .detach()
        .spec(&spec)
        .ok()
        .context("start the bomb")?;
    let bombing = ctx.wait_status(&bomb, "RUNNING")?;
    ensure!(
        shim_of(&bombing)? == shim,
        "the bomb is not in the group's shim"
    );
    let pids = format!("/sys/fs/cgroup/pids/{}/{bomb}", ctx.ns);
    let read = |f: &str| std::fs::read_to_string(format!("{pids}/{f}")).unwrap_or_default();
    poll(
        "the bomb to reach its pids limit",
        Duration::from_secs(15),
        || Ok((read("pids.current").trim() == PIDS_LIMIT.to_string()).then_some(())),
    )?;
    // Forks fail at the limit: the cgroup counts them.
    poll("failed forks", Duration::from_secs(5), || {
        let failed = read("pids.events")
            .lines()
            .find_map(|l| l.strip_prefix("max "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok((failed > 0).then_some(()))
    })?;
    for n in 0..3 {
        exec_echo(ctx, &quiet, &format!("during-{n}")).context("the quiet container")?;
    }
    let during = sys::Footprint::of(shim)?;
    ctx.ctr()
        .args(["tasks", "kill", "--all", "-s", "SIGKILL", &bomb])
        .ok()?;
    ctx.wait_status(&bomb, "STOPPED")?;
    let rm = ctx.kill_and_remove(&bomb)?;
    ensure!(rm.all().contains("137"), "{}", rm.describe());
    exec_echo(ctx, &quiet, "after")?;
    let after = sys::Footprint::of(shim)?;
    println!(
        "        shim {shim}: before the bomb {before:?}, at its limit {during:?}, after {after:?}"
    );
    // A container of its own and three execs cost the shim little; 4 MiB
    // is far above that and far below a shim that buffers without bound.
    ensure!(
        during.rss_kib < before.rss_kib + 4096 && after.rss_kib < before.rss_kib + 4096,
        "the shim's RSS grew from {} KiB to {} (during) and {} KiB (after)",
        before.rss_kib,
        during.rss_kib,
        after.rss_kib
    );
    ctx.kill_and_remove(&quiet)?;
    Ok(())
}

// ttrpc's own messages (github.com/containerd/ttrpc, request.proto).

#[derive(Clone, PartialEq, prost::Message)]
struct TtrpcRequest {
    #[prost(string, tag = "1")]
    service: String,
    #[prost(string, tag = "2")]
    method: String,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TtrpcResponse {
    #[prost(message, optional, tag = "1")]
    status: Option<TtrpcStatus>,
    #[prost(bytes = "vec", tag = "2")]
    payload: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TtrpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The Task API's `ConnectRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct ConnectRequest {
    #[prost(string, tag = "1")]
    id: String,
}

const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;
const UNIMPLEMENTED: i32 = 12;
/// ttrpc's largest message.
const MAX_MESSAGE: u32 = 4 << 20;

/// A ttrpc frame: 4-byte big-endian length, 4-byte stream id, type, flags.
fn frame(stream: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(10 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(&[kind, 0]);
    f.extend_from_slice(payload);
    f
}

fn request(service: &str, method: &str, payload: Vec<u8>) -> Vec<u8> {
    TtrpcRequest {
        service: service.into(),
        method: method.into(),
        payload,
    }
    .encode_to_vec()
}

/// What a shim did with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A response with this status code (0 is OK).
    Answered(i32, String),
    /// The connection was closed.
    Dropped,
    /// Neither, within the wait.
    Silent,
}

const FRAME_WAIT: Duration = Duration::from_secs(5);

/// Reads one response frame, or sees the connection closed.
fn read_outcome(conn: &mut UnixStream) -> Result<Outcome> {
    let mut header = [0u8; 10];
    match conn.read_exact(&mut header) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            return Ok(Outcome::Dropped)
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return Ok(Outcome::Silent)
        }
        Err(e) => return Err(e).context("read a response"),
    }
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    ensure!(
        header[8] == RESPONSE,
        "a frame of type {} came back",
        header[8]
    );
    ensure!(length <= MAX_MESSAGE, "a response of {length} bytes");
    let mut payload = vec![0u8; length as usize];
    conn.read_exact(&mut payload)?;
    let response = TtrpcResponse::decode(payload.as_slice()).context("decode the response")?;
    let status = response.status.unwrap_or_default();
    Ok(Outcome::Answered(status.code, status.message))
}

fn connect(socket: &Path) -> Result<UnixStream> {
    let conn =
        UnixStream::connect(socket).with_context(|| format!("connect {}", socket.display()))?;
    conn.set_read_timeout(Some(FRAME_WAIT))?;
    conn.set_write_timeout(Some(FRAME_WAIT))?;
    Ok(conn)
}

/// Sends `bytes` on a new connection (then closes the writing half when
/// `close` is set) and reports what came back. A write the shim cut short
/// by closing the connection counts as dropped.
fn send(socket: &Path, bytes: &[u8], close: bool) -> Result<Outcome> {
    let mut conn = connect(socket)?;
    match conn.write_all(bytes) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
            return Ok(Outcome::Dropped)
        }
        Err(e) => return Err(e).context("write the frame"),
    }
    if close {
        conn.shutdown(std::net::Shutdown::Write)?;
    }
    read_outcome(&mut conn)
}

/// The Task service a shim answers Connect on (v3 for runc-v2 of 2.x, v2
/// for 1.x; barge serves both).
fn task_service(socket: &Path, id: &str) -> Result<&'static str> {
    for service in ["containerd.task.v3.Task", "containerd.task.v2.Task"] {
        if let Outcome::Answered(0, _) = send(socket, &connect_frame(service, id, 1), false)? {
            return Ok(service);
        }
    }
    bail!("{} answers Connect on no Task service", socket.display())
}

fn connect_frame(service: &str, id: &str, stream: u32) -> Vec<u8> {
    let payload = ConnectRequest { id: id.into() }.encode_to_vec();
    frame(stream, REQUEST, &request(service, "Connect", payload))
}

/// One bad frame: its name, and what it sends (service, container id).
struct BadFrame {
    name: &'static str,
    send: fn(&Path, &str, &str) -> Result<Outcome>,
}

const BAD_FRAMES: &[BadFrame] = &[
    BadFrame {
        name: "unknown method",
        send: |sock, service, _| {
            send(
                sock,
                &frame(1, REQUEST, &request(service, "NoSuchMethod", vec![])),
                false,
            )
        },
    },
    BadFrame {
        name: "unknown service",
        send: |sock, _, _| {
            send(
                sock,
                &frame(1, REQUEST, &request("barge.NoSuchService", "State", vec![])),
                false,
            )
        },
    },
    BadFrame {
        name: "request that is not protobuf",
        send: |sock, _, _| send(sock, &frame(1, REQUEST, &[0xff; 64]), false),
    },
    BadFrame {
        name: "State with a malformed message",
        send: |sock, service, _| {
            send(
                sock,
                &frame(
                    1,
                    REQUEST,
                    &request(service, "State", vec![0x0a, 0x7f, 0x01]),
                ),
                false,
            )
        },
    },
    BadFrame {
        name: "even stream id",
        send: |sock, service, id| send(sock, &connect_frame(service, id, 2), false),
    },
    BadFrame {
        name: "unknown frame type, then Connect",
        send: |sock, service, id| {
            let mut bytes = frame(1, 0x7f, b"junk");
            bytes.extend(connect_frame(service, id, 3));
            send(sock, &bytes, false)
        },
    },
    BadFrame {
        name: "truncated header",
        send: |sock, _, _| send(sock, &[0, 0, 0, 20, 0], true),
    },
    BadFrame {
        name: "truncated payload",
        send: |sock, service, id| {
            let whole = connect_frame(service, id, 1);
            send(sock, &whole[..whole.len() - 3], true)
        },
    },
    BadFrame {
        name: "oversized (4 MiB + 1)",
        send: |sock, service, _| {
            let mut payload = request(service, "State", vec![]);
            payload.resize(MAX_MESSAGE as usize + 1, 0);
            send(sock, &frame(1, REQUEST, &payload), false)
        },
    },
    BadFrame {
        name: "length 4 GiB, then end of stream",
        send: |sock, _, _| {
            let mut bytes = u32::MAX.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0, 0, 0, 1, REQUEST, 0, 1, 2, 3]);
            send(sock, &bytes, true)
        },
    },
];

/// Bad frames straight to the shim's socket, each on its own connection,
/// to runc-v2's shim and to barge's: barge answers with an error status
/// or drops the connection, never leaves one hanging, answers an unknown
/// method UNIMPLEMENTED, and keeps serving its container (Connect, ps,
/// exec, kill, delete).
fn ttrpc_bad_frames(ctx: &CtrCtx) -> Result<()> {
    let mut report = Vec::new();
    let mut barge = Vec::new();
    for shim in Shim::BOTH {
        let id = ctx.id(shim.tag());
        let task = ctx.start_sleeper(shim.run(ctx, &id), &id)?;
        let pid = shim_of(&task)?;
        let socket = shim_socket(&ctx.cd.address(), &ctx.ns, &id);
        let service = task_service(&socket, &id).context(shim.label())?;
        for bad in BAD_FRAMES {
            let outcome = (bad.send)(&socket, service, &id)
                .with_context(|| format!("{}: {}", shim.label(), bad.name))?;
            let alive = send(&socket, &connect_frame(service, &id, 1), false)?;
            ensure!(
                sys::alive(pid) && matches!(alive, Outcome::Answered(0, _)),
                "{}: after {}: the shim answers Connect with {alive:?} (alive: {})",
                shim.label(),
                bad.name,
                sys::alive(pid)
            );
            report.push(format!("{:>8} {:<36} {outcome:?}", shim.tag(), bad.name));
            if shim == Shim::Barge {
                barge.push((bad.name, outcome));
            }
        }
        let pids = ctx.pids(&id)?;
        ensure!(
            pids == vec![task.pid],
            "{}: `ctr task ps` shows {pids:?}",
            shim.label()
        );
        exec_echo(ctx, &id, "still").context(shim.label())?;
        ctx.kill_and_remove(&id).context(shim.label())?;
    }
    println!("        {}", report.join("\n        "));
    for (name, outcome) in &barge {
        ensure!(
            !matches!(outcome, Outcome::Silent | Outcome::Answered(0, _))
                || *name == "unknown frame type, then Connect",
            "barge: {name}: {outcome:?} (an error status or a closed connection was expected)"
        );
    }
    let unknown = &barge[0].1;
    ensure!(
        matches!(unknown, Outcome::Answered(UNIMPLEMENTED, _)),
        "barge: an unknown method is answered {unknown:?}, not UNIMPLEMENTED"
    );
    let after_junk = &barge[5].1;
    ensure!(
        matches!(after_junk, Outcome::Answered(0, _) | Outcome::Dropped),
        "barge: Connect after a frame of unknown type: {after_junk:?}"
    );
    Ok(())
}
