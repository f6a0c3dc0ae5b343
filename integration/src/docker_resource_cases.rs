//! Docker cases for a container's resources: `docker stats`, `docker pause`
//! and `unpause`, `docker update`, an OOM kill, and what a thousand Stats
//! calls cost the shim. They use the shim's Pause, Resume, Update and Stats.
//! Every case runs the same commands under io.containerd.runc.v2 (the
//! reference) and under barge on the same dockerd, and compares; values are
//! read back from the container's cgroup (v1, as on this host), found through
//! `/proc/<init pid>/cgroup`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::cmd::poll;
use crate::containerd_api::{CgroupsV1Metrics, Client, CGROUPS_V1_METRICS};
use crate::ctr_cases::COUNTER;
use crate::docker_cases::{DockerCase, DockerCtx};
use crate::docker_exec_cases::{cleanup, name, runtime, with_container};
use crate::sys::{self, Footprint};
use crate::tty_cases::{both, Side};

const MIB: u64 = 1 << 20;

pub fn cases() -> Vec<DockerCase> {
    type Custom = (&'static str, fn(&DockerCtx) -> Result<()>);
    let custom: [Custom; 8] = [
        ("resources-stats", stats),
        ("resources-pause-unpause", pause_unpause),
        ("resources-pause-kill", pause_kill),
        ("resources-pause-rm-force", pause_rm_force),
        ("resources-update", update),
        ("resources-update-refused", update_refused),
        ("resources-oom-killed", oom_killed),
        ("resources-stats-cost", stats_cost),
    ];
    DockerCase::list(custom)
}

/// A file of the cgroup of `pid` in the v1 hierarchy of `controller`, e.g.
/// `/sys/fs/cgroup/memory/docker/<id>/memory.limit_in_bytes`.
fn cgroup_file(pid: u32, controller: &str, file: &str) -> Result<PathBuf> {
    let cgroup = sys::cgroup_of(pid, controller)?;
    Ok(PathBuf::from(format!(
        "/sys/fs/cgroup/{controller}{cgroup}/{file}"
    )))
}

/// What a cgroup file of `pid` holds, trimmed.
fn read_cgroup(pid: u32, controller: &str, file: &str) -> Result<String> {
    let path = cgroup_file(pid, controller, file)?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    Ok(text.trim().to_string())
}

fn read_number(pid: u32, controller: &str, file: &str) -> Result<u64> {
    let text = read_cgroup(pid, controller, file)?;
    text.parse()
        .with_context(|| format!("{file} of pid {pid} holds {text:?}, not a number"))
}

/// The memory usage Docker shows for a cgroup v1 container: usage without
/// the inactive page cache (`total_inactive_file` of memory.stat).
fn memory_usage(pid: u32) -> Result<u64> {
    let usage = read_number(pid, "memory", "memory.usage_in_bytes")?;
    let stat = read_cgroup(pid, "memory", "memory.stat")?;
    let inactive = stat
        .lines()
        .find_map(|l| l.strip_prefix("total_inactive_file "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(usage.saturating_sub(inactive))
}

/// A size as Docker prints it (`616KiB`, `8.879MiB`, `64MiB`), in bytes.
fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("no number in size {s:?}"))?;
    let scale: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => anyhow::bail!("unknown unit in size {s:?}"),
    };
    Ok((number * scale as f64).round() as u64)
}

/// `docker inspect -f FORMAT ID`, trimmed.
fn inspect(ctx: &DockerCtx, id: &str, format: &str) -> Result<String> {
    let out = ctx.docker().args(["inspect", "-f", format, id]).ok()?;
    Ok(out.stdout.trim().to_string())
}

/// State.Status, State.Paused and State.Running of a container.
fn pause_state(ctx: &DockerCtx, id: &str) -> Result<String> {
    inspect(
        ctx,
        id,
        "{{.State.Status}} paused={{.State.Paused}} running={{.State.Running}}",
    )
}

fn stats(ctx: &DockerCtx) -> Result<()> {
    // 8 MiB in /dev/shm (a tmpfs whose pages are charged to the container
    // and stay), three processes, and a busy loop for the CPU figure.
    let script =
        "head -c 8388608 /dev/zero > /dev/shm/fill; sleep 1000 & sleep 1000 & while :; do :; done";
    both(|side| {
        with_container(
            ctx,
            "resources-stats",
            side,
            &["-m", "64m"],
            &["sh", "-c", script],
            |id, pid| {
                poll(
                    "the container's 3 processes",
                    Duration::from_secs(20),
                    || Ok((read_number(pid, "pids", "pids.current")? == 3).then_some(())),
                )?;
                let out = ctx
                    .docker()
                    .args(["stats", "--no-stream", "--format", "{{json .}}", id])
                    .ok()?;
                let row: Value = serde_json::from_str(out.stdout.trim())
                    .with_context(|| format!("not JSON: {}", out.describe()))?;
                let field = |key: &str| {
                    row[key]
                        .as_str()
                        .with_context(|| format!("no {key} in `docker stats`: {row}"))
                };
                let mem = field("MemUsage")?;
                let (usage, limit) = mem
                    .split_once(" / ")
                    .with_context(|| format!("MemUsage is {mem:?}"))?;
                let cgroup_limit = read_number(pid, "memory", "memory.limit_in_bytes")?;
                ensure!(
                    cgroup_limit == 64 * MIB && parse_size(limit)? == cgroup_limit,
                    "docker stats shows the limit {limit:?}, memory.limit_in_bytes is {cgroup_limit}"
                );
                let cgroup_usage = memory_usage(pid)?;
                let usage = parse_size(usage)?;
                ensure!(
                    usage >= 8 * MIB && usage.abs_diff(cgroup_usage) <= MIB / 2,
                    "docker stats shows {mem:?} ({usage} bytes used), the cgroup {cgroup_usage} \
                     (usage_in_bytes less total_inactive_file), with 8 MiB in /dev/shm"
                );
                let pids = field("PIDs")?;
                let current = read_number(pid, "pids", "pids.current")?;
                ensure!(
                    pids == current.to_string(),
                    "docker stats shows PIDs {pids:?}, pids.current is {current}"
                );
                let cpu = field("CPUPerc")?;
                let percent: f64 = cpu
                    .strip_suffix('%')
                    .and_then(|p| p.parse().ok())
                    .with_context(|| format!("CPUPerc is {cpu:?}, not a percentage"))?;
                ensure!(
                    percent > 5.0,
                    "CPUPerc is {cpu} for a busy loop: {}",
                    out.describe()
                );
                Ok((limit.to_string(), pids.to_string()))
            },
        )
    })
}

fn pause_unpause(ctx: &DockerCtx) -> Result<()> {
    both(|side| {
        with_container(
            ctx,
            "resources-pause-unpause",
            side,
            &[],
            &["sh", "-c", COUNTER],
            |id, pid| {
                let file = PathBuf::from(format!("/proc/{pid}/root/tmp/count"));
                let count = || -> Result<u64> {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("read {}", file.display()))?;
                    Ok(text.trim().parse().unwrap_or(0))
                };
                poll("the counter to start", Duration::from_secs(20), || {
                    Ok((count()? > 0).then_some(()))
                })?;
                ctx.docker().args(["pause", id]).ok()?;
                let paused = pause_state(ctx, id)?;
                let freezer = read_cgroup(pid, "freezer", "freezer.state")?;
                ensure!(freezer == "FROZEN", "paused, freezer.state is {freezer}");
                let frozen = count()?;
                std::thread::sleep(Duration::from_millis(500));
                ensure!(count()? == frozen, "the counter moved while paused");
                // Stats of a paused container: its processes are all there.
                let out = ctx
                    .docker()
                    .args(["stats", "--no-stream", "--format", "{{.PIDs}}", id])
                    .ok()?;
                let current = read_number(pid, "pids", "pids.current")?;
                ensure!(
                    out.stdout.trim() == current.to_string(),
                    "paused, docker stats shows PIDs {:?}, pids.current is {current}",
                    out.stdout.trim()
                );
                let exec = ctx.docker().args(["exec", id, "true"]).run()?;
                ensure!(
                    !exec.success(),
                    "an exec into the paused container ran: {}",
                    exec.describe()
                );
                let refused = (exec.code(), exec.stderr.replace(id, "<id>"));
                ctx.docker().args(["unpause", id]).ok()?;
                let resumed = pause_state(ctx, id)?;
                let freezer = read_cgroup(pid, "freezer", "freezer.state")?;
                ensure!(freezer == "THAWED", "unpaused, freezer.state is {freezer}");
                poll("the counter to go on", Duration::from_secs(5), || {
                    Ok((count()? > frozen).then_some(()))
                })?;
                Ok((paused, refused, resumed))
            },
        )
    })
}

fn pause_kill(ctx: &DockerCtx) -> Result<()> {
    both(|side| {
        with_container(
            ctx,
            "resources-pause-kill",
            side,
            &[],
            &["sleep", "1000"],
            |id, pid| {
                ctx.docker().args(["pause", id]).ok()?;
                ctx.docker().args(["kill", id]).ok()?;
                let s = ctx.wait_stopped(id)?;
                ensure!(
                    s.exit_code == 137,
                    "exit code {}, expected 137",
                    s.exit_code
                );
                ensure!(!sys::alive(pid), "pid {pid} still alive");
                pause_state(ctx, id)
            },
        )
    })
}

fn pause_rm_force(ctx: &DockerCtx) -> Result<()> {
    both(|side| {
        let name = name("resources-pause-rm-force", side);
        let guard = cleanup(ctx, &name);
        let run = ctx
            .run_with(runtime(ctx, side))
            .args(["--name", name.as_str()]);
        let (id, state) = ctx.start(run, &["sleep", "1000"])?;
        ctx.docker().args(["pause", &id]).ok()?;
        ctx.docker().args(["rm", "-f", &id]).ok()?;
        ensure!(
            !ctx.d.all_containers()?.contains(&id),
            "the paused container is still listed after rm -f"
        );
        poll("the process to be gone", Duration::from_secs(5), || {
            Ok((!sys::alive(state.pid)).then_some(()))
        })?;
        guard.done();
        Ok(())
    })
}

/// The limits `docker update` changes, as the cgroup files show them.
#[derive(Debug, Clone, PartialEq)]
struct Limits {
    memory: u64,
    /// memory.memsw.limit_in_bytes; `None` without swap accounting.
    memsw: Option<u64>,
    cfs_quota: String,
    cfs_period: u64,
    shares: u64,
    pids_max: String,
}

impl Limits {
    fn read(pid: u32) -> Result<Limits> {
        let memsw = "memory.memsw.limit_in_bytes";
        Ok(Limits {
            memory: read_number(pid, "memory", "memory.limit_in_bytes")?,
            memsw: match cgroup_file(pid, "memory", memsw)?.exists() {
                true => Some(read_number(pid, "memory", memsw)?),
                false => None,
            },
            cfs_quota: read_cgroup(pid, "cpu", "cpu.cfs_quota_us")?,
            cfs_period: read_number(pid, "cpu", "cpu.cfs_period_us")?,
            shares: read_number(pid, "cpu", "cpu.shares")?,
            pids_max: read_cgroup(pid, "pids", "pids.max")?,
        })
    }
}

fn update(ctx: &DockerCtx) -> Result<()> {
    // Each `docker update` changes one thing; the cgroup must show it and
    // keep the rest, as under runc-v2. The first raises the swap limit
    // above the old one before the memory limit can follow.
    let steps: [&[&str]; 4] = [
        &["-m", "128m", "--memory-swap", "256m"],
        &["--cpus", "0.5"],
        &["--pids-limit", "50"],
        &["--cpu-shares", "512"],
    ];
    both(|side| {
        with_container(
            ctx,
            "resources-update",
            side,
            &["-m", "64m"],
            &["sleep", "1000"],
            |id, pid| {
                let start = Limits::read(pid)?;
                ensure!(
                    start.memory == 64 * MIB && start.memsw.is_none_or(|s| s == 128 * MIB),
                    "after `docker run -m 64m`: {start:?}"
                );
                let mut seen = vec![start];
                for flags in steps {
                    ctx.docker().arg("update").args(flags).arg(id).ok()?;
                    seen.push(Limits::read(pid)?);
                }
                let end = seen.last().expect("read").clone();
                let want = Limits {
                    memory: 128 * MIB,
                    memsw: end.memsw.map(|_| 256 * MIB),
                    cfs_quota: "50000".into(),
                    cfs_period: 100_000,
                    shares: 512,
                    pids_max: "50".into(),
                };
                ensure!(
                    end == want,
                    "after every update: {end:?}, expected {want:?}"
                );
                Ok(seen)
            },
        )
    })
}

/// `docker update FLAGS ID` must fail, naming `needle`; answers docker's
/// message, without the id.
fn refused(ctx: &DockerCtx, id: &str, flags: &[&str], needle: &str) -> Result<String> {
    let out = ctx.docker().arg("update").args(flags).arg(id).run()?;
    ensure!(
        !out.success() && out.stderr.contains(needle),
        "`docker update {}` should fail naming {needle:?}: {}",
        flags.join(" "),
        out.describe()
    );
    Ok(out.stderr.trim().replace(id, "<id>"))
}

fn update_refused(ctx: &DockerCtx) -> Result<()> {
    // 16 MiB in /dev/shm, which the kernel cannot reclaim: there is no swap
    // here, and with swappiness 0 a memory cgroup's reclaim does not swap.
    let script = "head -c 16777216 /dev/zero > /dev/shm/fill; touch /tmp/ready; exec sleep 1000";
    let flags = ["-m", "64m", "--memory-swappiness", "0"];
    both(|side| {
        with_container(
            ctx,
            "resources-update-refused",
            side,
            &flags,
            &["sh", "-c", script],
            |id, pid| {
                let ready = PathBuf::from(format!("/proc/{pid}/root/tmp/ready"));
                poll(
                    "the container to fill /dev/shm",
                    Duration::from_secs(20),
                    || Ok(ready.exists().then_some(())),
                )?;
                let before = Limits::read(pid)?;
                let kept = |what: &str| -> Result<()> {
                    let now = Limits::read(pid)?;
                    ensure!(now == before, "after {what}: {now:?}, before {before:?}");
                    Ok(())
                };
                // Below what the container uses: the kernel answers EBUSY.
                refused(ctx, id, &["-m", "8m"], "8388608")?;
                kept("`docker update -m 8m`")?;
                // A swap limit below the memory limit: EINVAL.
                if before.memsw.is_some() {
                    refused(
                        ctx,
                        id,
                        &["--memory-swap", "32m"],
                        "memory.memsw.limit_in_bytes",
                    )?;
                    kept("`docker update --memory-swap 32m`")?;
                }
                // Both in one command: dockerd refuses it before any runtime.
                let own = refused(
                    ctx,
                    id,
                    &["-m", "100m", "--memory-swap", "50m"],
                    "memoryswap",
                )?;
                kept("`docker update -m 100m --memory-swap 50m`")?;
                let host = inspect(
                    ctx,
                    id,
                    "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.State.Running}}",
                )?;
                Ok((own, host))
            },
        )
    })
}

fn oom_killed(ctx: &DockerCtx) -> Result<()> {
    // PID 1 grows a 64 MiB string under a 16 MiB limit.
    let script = "x=$(head -c 67108864 /dev/zero | tr \"\\0\" x)";
    both(|side| {
        let name = name("resources-oom-killed", side);
        let guard = cleanup(ctx, &name);
        let out = ctx
            .run_with(runtime(ctx, side))
            .args(["--name", name.as_str(), "-m", "16m", "busybox", "sh", "-c"])
            .arg(script)
            .run()?;
        ensure!(out.code() == 137, "expected exit 137: {}", out.describe());
        let state = inspect(
            ctx,
            &name,
            "OOMKilled={{.State.OOMKilled}} {{.State.ExitCode}} {{.State.Status}}",
        )?;
        ensure!(
            state == "OOMKilled=true 137 exited",
            "docker inspect: {state}"
        );
        ctx.docker().args(["rm", &name]).ok()?;
        guard.done();
        Ok(state)
    })
}

/// Calls Tasks.Metrics `n` times; each answer must be the cgroup v1 metrics
/// of the container: one process, the 64 MiB limit. Answers the type URL.
fn metrics_calls(client: &Client, id: &str, n: usize) -> Result<String> {
    let mut type_url = String::new();
    for i in 0..n {
        let metrics = client
            .metrics(id)
            .map_err(|s| anyhow::anyhow!("Tasks.Metrics, call {i}: {s}"))?;
        let [metric] = metrics.as_slice() else {
            anyhow::bail!(
                "call {i}: {} metrics, expected 1 (Stats failed?)",
                metrics.len()
            );
        };
        let data = metric.data.as_ref().context("a metric without data")?;
        ensure!(
            metric.id == id && data.type_url.ends_with(CGROUPS_V1_METRICS),
            "call {i}: a metric of {:?} with type {:?}",
            metric.id,
            data.type_url
        );
        let m: CgroupsV1Metrics = prost::Message::decode(data.value.as_slice())?;
        let pids = m.pids.as_ref().map(|p| p.current);
        let limit = m
            .memory
            .as_ref()
            .and_then(|m| m.usage.as_ref())
            .map(|u| u.limit);
        ensure!(
            pids == Some(1) && limit == Some(64 * MIB),
            "call {i}: pids.current {pids:?} and memory limit {limit:?}, expected 1 and {}",
            64 * MIB
        );
        type_url.clone_from(&data.type_url);
    }
    Ok(type_url)
}

fn stats_cost(ctx: &DockerCtx) -> Result<()> {
    // A thousand Stats through containerd's Tasks.Metrics (what `ctr task
    // metrics` and CRI's stats collector call), each answered and right;
    // the shim may not keep a descriptor or memory from them. A barge shim
    // unmaps its code and trims its heap 250 ms after its last request, so
    // both footprints are taken after a second of quiet.
    const WARM_UP: usize = 50;
    const CALLS: usize = 1000;
    const QUIET: Duration = Duration::from_secs(1);
    const RSS_SLACK_KIB: u64 = 512;
    let client = Client::connect(&ctx.d.containerd.address(), &ctx.d.namespace)?;
    both(|side| {
        with_container(
            ctx,
            "resources-stats-cost",
            side,
            &["-m", "64m"],
            &["sleep", "1000"],
            |id, _| {
                let shims: Vec<u32> = ctx
                    .d
                    .containerd
                    .shims()
                    .iter()
                    .filter(|p| p.has_flag("-id", id))
                    .map(|p| p.pid)
                    .collect();
                let [shim] = shims[..] else {
                    anyhow::bail!("{} shim processes for {id}, expected 1", shims.len());
                };
                metrics_calls(&client, id, WARM_UP)?;
                std::thread::sleep(QUIET);
                let before = Footprint::of(shim)?;
                let start = Instant::now();
                let type_url = metrics_calls(&client, id, CALLS)?;
                let took = start.elapsed();
                std::thread::sleep(QUIET);
                let after = Footprint::of(shim)?;
                let what = format!(
                    "shim {shim} before {CALLS} Stats: {before:?}, after: {after:?} ({took:?})"
                );
                ensure!(after.fds <= before.fds, "descriptors grew: {what}");
                // runc-v2 is a Go program, whose heap grows and shrinks with
                // its collector: only barge's memory is held to the slack.
                if side == Side::Barge {
                    ensure!(
                        after.rss_kib <= before.rss_kib + RSS_SLACK_KIB,
                        "VmRSS grew by more than {RSS_SLACK_KIB} KiB: {what}"
                    );
                }
                Ok(type_url)
            },
        )
    })
}
