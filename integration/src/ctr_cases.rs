//! The ctr cases, run for every containerd version and executor.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::cmd::{poll, Output};
use crate::containerd::shim_socket;
use crate::ctr::{CtrCtx, Executor, RuntimeOptions};
use crate::sys;

/// The body of a ctr case.
pub type CaseFn = Box<dyn Fn(&CtrCtx) -> Result<()>>;

/// One ctr case.
pub struct CtrCase {
    pub name: &'static str,
    pub run: CaseFn,
}

impl CtrCase {
    /// Cases from (name, body) pairs.
    pub fn list(
        cases: impl IntoIterator<Item = (&'static str, fn(&CtrCtx) -> Result<()>)>,
    ) -> Vec<CtrCase> {
        cases
            .into_iter()
            .map(|(name, f)| CtrCase {
                name,
                run: Box::new(f),
            })
            .collect()
    }
}

/// A `ctr run --rm` whose output and exit code are checked, and compared
/// with the same command under io.containerd.runc.v2.
struct Simple {
    name: &'static str,
    flags: &'static [&'static str],
    args: &'static [&'static str],
    stdout: &'static str,
    code: i32,
}

const SIMPLE: &[Simple] = &[
    Simple {
        name: "echo",
        flags: &[],
        args: &["echo", "hello"],
        stdout: "hello\n",
        code: 0,
    },
    Simple {
        name: "exit-3",
        flags: &[],
        args: &["sh", "-c", "exit 3"],
        stdout: "",
        code: 3,
    },
    // A child killed by SIGKILL: the shell reports 137.
    Simple {
        name: "exit-137",
        flags: &[],
        args: &["sh", "-c", "sh -c 'kill -9 $$'; exit $?"],
        stdout: "",
        code: 137,
    },
    // PID 1 of a PID namespace cannot be killed from inside: the kernel
    // drops the signal, as under runc.
    Simple {
        name: "pid1-survives-self-kill",
        flags: &[],
        args: &["sh", "-c", "kill -9 $$; echo survived"],
        stdout: "survived\n",
        code: 0,
    },
    Simple {
        name: "env",
        flags: &["--env", "FOO=bar"],
        args: &["sh", "-c", "echo $FOO"],
        stdout: "bar\n",
        code: 0,
    },
    Simple {
        name: "cwd",
        flags: &["--cwd", "/tmp"],
        args: &["pwd"],
        stdout: "/tmp\n",
        code: 0,
    },
    Simple {
        name: "read-only-rootfs",
        flags: &["--read-only"],
        args: &[
            "sh",
            "-c",
            "if touch /probe 2>/dev/null; then echo writable; else echo read-only; fi",
        ],
        stdout: "read-only\n",
        code: 0,
    },
    Simple {
        name: "writable-rootfs",
        flags: &[],
        args: &[
            "sh",
            "-c",
            "if touch /probe 2>/dev/null; then echo writable; else echo read-only; fi",
        ],
        stdout: "writable\n",
        code: 0,
    },
    // Capabilities, seccomp, no_new_privs, masked and read-only paths, as
    // ctr's default spec sets them.
    Simple {
        name: "security-defaults",
        flags: &["--seccomp"],
        args: &[
            "sh",
            "-c",
            "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
             if touch /proc/sys/kernel/probe 2>/dev/null; then echo rw; else echo ro; fi; \
             ls /sys/firmware | wc -l",
        ],
        stdout: "CapEff:\t00000000a80425fb\nNoNewPrivs:\t1\nSeccomp:\t2\nro\n0\n",
        code: 0,
    },
    Simple {
        name: "cap-add-new-privs",
        flags: &["--cap-add", "CAP_SYS_ADMIN", "--allow-new-privs"],
        args: &[
            "sh",
            "-c",
            "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
        ],
        stdout: "CapEff:\t00000000a82425fb\nNoNewPrivs:\t0\nSeccomp:\t0\n",
        code: 0,
    },
    Simple {
        name: "stdout-and-stderr",
        flags: &[],
        args: &["sh", "-c", "echo out; echo err >&2; echo out2"],
        stdout: "out\nout2\n",
        code: 0,
    },
];

pub fn expect(out: &Output, stdout: &str, code: i32) -> Result<()> {
    ensure!(
        out.code() == code && out.stdout == stdout,
        "expected exit {code} and stdout {stdout:?}, got {}",
        out.describe()
    );
    Ok(())
}

/// Runs `args` with `flags` under barge and under runc-v2: both must give
/// `stdout` and `code`.
fn simple(ctx: &CtrCtx, flags: &[&str], args: &[&str], stdout: &str, code: i32) -> Result<()> {
    let id = ctx.id("");
    let barge = ctx
        .run(&id)
        .rm()
        .flags(flags.iter().copied())
        .args(args.iter().copied())
        .run()?;
    let rid = ctx.id("runc");
    let runc = ctx
        .run(&rid)
        .runc()
        .rm()
        .flags(flags.iter().copied())
        .args(args.iter().copied())
        .run()?;
    expect(&runc, stdout, code).context("runc-v2 (reference)")?;
    expect(&barge, stdout, code).context("barge")?;
    Ok(())
}

/// Every ctr case, in order.
pub fn cases() -> Vec<CtrCase> {
    let mut v: Vec<CtrCase> = SIMPLE
        .iter()
        .map(|s| CtrCase {
            name: s.name,
            run: Box::new(move |ctx: &CtrCtx| simple(ctx, s.flags, s.args, s.stdout, s.code)),
        })
        .collect();
    type Custom = (&'static str, fn(&CtrCtx) -> Result<()>);
    let custom: [Custom; 26] = [
        ("no-runtime-options", no_runtime_options),
        ("stdin", stdin),
        ("large-output", large_output),
        ("oom-killed", oom_killed),
        ("user", user),
        ("hostname", hostname),
        ("bind-mount", bind_mount),
        ("memory-limit", memory_limit),
        ("rootfs-dir", rootfs_dir),
        ("executor-selected", executor_selected),
        ("created-state", created_state),
        ("kill-sigterm", kill_sigterm),
        ("kill-sigkill", kill_sigkill),
        ("kill-all", kill_all),
        ("parallel-16", parallel_16),
        ("group-one-shim", group_one_shim),
        ("unsupported-operations", unsupported_operations),
        ("pause-resume", pause_resume),
        ("bad-spec-json", bad_spec_json),
        ("spec-without-process", spec_without_process),
        ("missing-rootfs", missing_rootfs),
        ("invalid-id", invalid_id),
        ("bad-option-key", bad_option_key),
        ("missing-config-path", missing_config_path),
        ("missing-runtime-binary", missing_runtime_binary),
        ("missing-entrypoint", missing_entrypoint),
    ];
    v.extend(CtrCase::list(custom));
    v.extend(crate::fault_cases::cases());
    v.extend(crate::tty_cases::cases());
    v.extend(crate::exec_cases::cases());
    v.extend(crate::runc_options_cases::cases());
    v.extend(crate::log_cases::cases());
    v.extend(crate::info_cases::cases());
    v.extend(crate::propagation_cases::cases());
    v.extend(crate::exe_cases::cases());
    v.extend(crate::security_cases::ctr_cases());
    v
}

fn no_runtime_options(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let out = ctx
        .run(&id)
        .rm()
        .options(RuntimeOptions::Nothing)
        .args(["echo", "hello"])
        .run()?;
    expect(&out, "hello\n", 0)
}

fn stdin(ctx: &CtrCtx) -> Result<()> {
    // The container reads ctr's stdin to its end (EOF must arrive).
    let data = "line one\nline two\n";
    let id = ctx.id("");
    // `cat` ends at once when EOF comes; 15 s means it never came.
    let barge = ctx
        .run(&id)
        .rm()
        .args(["cat"])
        .stdin(data)
        .timeout(Duration::from_secs(15))
        .run()?;
    // No runc-v2 reference here: when ctr closes stdin before runc-v2's copy
    // has opened the fifo, runc-v2 never sees end-of-file and `cat` hangs
    // (seen in this suite, on every containerd version).
    expect(&barge, data, 0).context("barge")
}

fn large_output(ctx: &CtrCtx) -> Result<()> {
    // 4 MiB through the stdout fifo, nothing lost.
    let args = [
        "sh",
        "-c",
        "head -c 4194304 /dev/zero | tr '\\0' x; echo; echo end",
    ];
    let id = ctx.id("");
    let out = ctx.run(&id).rm().args(args).run()?;
    ensure!(
        out.code() == 0 && out.stdout.len() == 4194304 + 5 && out.stdout.ends_with("x\nend\n"),
        "exit {}, {} bytes of stdout (expected 4194309), stderr {:?}",
        out.code(),
        out.stdout.len(),
        out.stderr
    );
    Ok(())
}

fn oom_killed(ctx: &CtrCtx) -> Result<()> {
    // PID 1 grows a 64 MiB string under a 16 MiB limit: the kernel's OOM
    // killer ends it (no swap here), which is exit 137, as under runc.
    let flags = ["--memory-limit", "16777216"];
    let args = [
        "sh",
        "-c",
        "x=$(head -c 67108864 /dev/zero | tr '\\0' x); echo survived",
    ];
    let events = ctx
        .ctr()
        .arg("events")
        .timeout(Duration::from_secs(50))
        .spawn()?;
    let id = ctx.id("");
    let barge = ctx.run(&id).rm().flags(flags).args(args).run()?;
    let rid = ctx.id("runc");
    let runc = ctx.run(&rid).runc().rm().flags(flags).args(args).run()?;
    expect(&runc, "", 137).context("runc-v2 (reference)")?;
    expect(&barge, "", 137).context("barge")?;
    // Both shims publish a TaskOOM event for their container.
    let pid = events.pid();
    sys::signal(pid, libc::SIGTERM);
    let events = events.wait()?;
    let oom: Vec<&str> = events
        .stdout
        .lines()
        .filter(|l| l.contains("/tasks/oom"))
        .collect();
    ensure!(
        oom.iter().any(|l| l.contains(&rid)),
        "no /tasks/oom event for the runc-v2 container: {oom:?}"
    );
    ensure!(
        oom.iter().any(|l| l.contains(&format!("\"{id}\""))),
        "no /tasks/oom event for {id} (runc-v2 sent one for {rid}): {oom:?}"
    );
    // TaskOOM comes before the init's TaskExit (containerd 2.3's CRI
    // needs that order to report OOMKilled).
    let position = |topic: &str, id: &str| {
        events
            .stdout
            .lines()
            .position(|l| l.contains(topic) && l.contains(&format!("\"container_id\":\"{id}\"")))
    };
    for (who, id) in [("runc-v2", &rid), ("barge", &id)] {
        let (Some(oom), Some(exit)) = (position("/tasks/oom", id), position("/tasks/exit", id))
        else {
            bail!("{who}: no /tasks/oom or /tasks/exit event for {id}");
        };
        ensure!(oom < exit, "{who}: /tasks/exit came before /tasks/oom");
    }
    Ok(())
}

fn user(ctx: &CtrCtx) -> Result<()> {
    let args = ["sh", "-c", "id -u; id -g"];
    if ctx.cd.version == "1.6" {
        // ctr 1.6 has no --user: give a spec with the user.
        let id = ctx.id("");
        let spec = ctx.spec(&id, &args, |s| {
            s["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
        })?;
        let out = ctx.run(&id).rm().spec(&spec).run()?;
        return expect(&out, "1000\n1000\n", 0);
    }
    simple(ctx, &["--user", "1000"], &args, "1000\n1000\n", 0)
}

fn hostname(ctx: &CtrCtx) -> Result<()> {
    if ctx.cd.version == "1.6" {
        // No --hostname in ctr 1.6: whatever runc-v2 prints, barge must too.
        let rid = ctx.id("runc");
        let runc = ctx.run(&rid).runc().rm().args(["hostname"]).ok()?;
        return simple(ctx, &[], &["hostname"], &runc.stdout, 0);
    }
    simple(
        ctx,
        &["--hostname", "barge-it-host"],
        &["hostname"],
        "barge-it-host\n",
        0,
    )
}

fn bind_mount(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let host = ctx.work.join(format!("{id}-data"));
    std::fs::create_dir_all(&host)?;
    std::fs::write(host.join("from-host"), "host data\n")?;
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        host.display()
    );
    let out = ctx
        .run(&id)
        .rm()
        .flags(["--mount", mount.as_str()])
        .args([
            "sh",
            "-c",
            "cat /data/from-host && echo from-container > /data/written",
        ])
        .run()?;
    expect(&out, "host data\n", 0)?;
    let written = std::fs::read_to_string(host.join("written"))
        .context("the file written in the container is not on the host")?;
    ensure!(written == "from-container\n", "host sees {written:?}");
    Ok(())
}

fn memory_limit(ctx: &CtrCtx) -> Result<()> {
    const LIMIT: &str = "67108864";
    let id = ctx.id("");
    let task = ctx.start_sleeper(ctx.run(&id).flags(["--memory-limit", LIMIT]), &id)?;
    let cgroup = sys::cgroup_of(task.pid, "memory")?;
    let expected = format!("/{}/{id}", ctx.ns);
    ensure!(
        cgroup == expected,
        "init's memory cgroup is {cgroup}, expected {expected}"
    );
    let file = format!("/sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes");
    let limit = std::fs::read_to_string(&file).with_context(|| format!("read {file}"))?;
    ensure!(limit.trim() == LIMIT, "{file} is {}", limit.trim());
    ctx.kill_and_remove(&id)?;
    Ok(())
}

fn rootfs_dir(ctx: &CtrCtx) -> Result<()> {
    // No snapshot: containerd hands the shim no rootfs mounts at all. Without
    // an image there is no PATH either, hence the absolute path.
    let args = ["/bin/echo", "hello"];
    let id = ctx.id("");
    let out = ctx.run(&id).rm().rootfs_dir(&ctx.rootfs).args(args).run()?;
    let rid = ctx.id("runc");
    let runc = ctx
        .run(&rid)
        .runc()
        .rm()
        .rootfs_dir(&ctx.rootfs)
        .args(args)
        .run()?;
    expect(&runc, "hello\n", 0).context("runc-v2 (reference)")?;
    expect(&out, "hello\n", 0).context("barge")
}

fn executor_selected(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    ctx.start_sleeper(ctx.run(&id), &id)?;
    // The oci-binary executor keeps runc's state under its runtime root.
    let state = format!("/run/containerd/barge/runc/{}/{id}/state.json", ctx.ns);
    let exists = std::path::Path::new(&state).exists();
    // The native executor keeps libcontainer's state under its own root.
    let native = format!("/run/containerd/barge/native/{}/{id}", ctx.ns);
    let native_exists = std::path::Path::new(&native).exists();
    match ctx.executor {
        Executor::OciBinary => ensure!(
            exists && !native_exists,
            "{state} exists: {exists}, {native} exists: {native_exists}; expected runc's only"
        ),
        Executor::Native | Executor::Wasm => ensure!(
            !exists && native_exists,
            "{state} exists: {exists}, {native} exists: {native_exists}; expected libcontainer's only"
        ),
    }
    let wanted = format!(
        "creating container {id} with executor {}",
        ctx.executor.name()
    );
    crate::cmd::wait_for_shim_line(|| ctx.case_shim_log(), &wanted)?;
    ctx.kill_and_remove(&id)?;
    Ok(())
}

fn created_state(ctx: &CtrCtx) -> Result<()> {
    // ctr has no "create only"; but `ctr run -d` creates the task, then
    // writes the pid file, then starts the task. A pid file in a directory
    // that does not exist makes ctr stop there and leave the task CREATED.
    let id = ctx.id("");
    let pid_file = ctx.work.join("no-such-dir").join("pid");
    let out = ctx
        .run(&id)
        .detach()
        .flags(["--pid-file".to_string(), pid_file.display().to_string()])
        .args(["sleep", "1000"])
        .run()?;
    ensure!(
        !out.success() && out.stderr.contains("no such file"),
        "the pid-file trick did not work: {}",
        out.describe()
    );
    let task = ctx.wait_status(&id, "CREATED")?;
    ensure!(
        sys::alive(task.pid),
        "CREATED task's pid {} is not alive",
        task.pid
    );
    let pids = ctx.pids(&id)?;
    ensure!(
        pids.contains(&task.pid),
        "`ctr task ps` shows {pids:?}, not {}",
        task.pid
    );
    let rm = ctx.kill_and_remove(&id)?;
    ensure!(
        rm.all().contains("137"),
        "`ctr task rm` did not report exit 137: {}",
        rm.describe()
    );
    poll(
        "the created init to be gone",
        Duration::from_secs(5),
        || Ok((!sys::alive(task.pid)).then_some(())),
    )?;
    Ok(())
}

const TRAP_TERM: &str = "trap 'exit 143' TERM; touch /tmp/ready; while :; do sleep 0.1; done";

fn kill_sigterm(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    // Attached: ctr run exits with the task's exit code.
    let attached = ctx
        .run(&id)
        .rm()
        .args(["sh", "-c", TRAP_TERM])
        .timeout(Duration::from_secs(40))
        .cmd()
        .spawn()?;
    let task = ctx.wait_status(&id, "RUNNING")?;
    ctx.wait_file(task.pid, "/tmp/ready")?;
    let pids = ctx.pids(&id)?;
    ensure!(
        pids.contains(&task.pid),
        "`ctr task ps` shows {pids:?}, not {}",
        task.pid
    );
    ctx.ctr().args(["tasks", "kill", &id]).ok()?;
    let out = attached.wait()?;
    ensure!(
        out.code() == 143,
        "expected exit 143 after SIGTERM, got {}",
        out.describe()
    );
    Ok(())
}

fn kill_sigkill(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let task = ctx.start_sleeper(ctx.run(&id), &id)?;
    let pids = ctx.pids(&id)?;
    ensure!(
        pids == vec![task.pid],
        "`ctr task ps` shows {pids:?}, expected [{}]",
        task.pid
    );
    ctx.ctr()
        .args(["tasks", "kill", "-s", "SIGKILL", &id])
        .ok()?;
    ctx.wait_status(&id, "STOPPED")?;
    // A second kill of a finished task is refused.
    let again = ctx
        .ctr()
        .args(["tasks", "kill", "-s", "SIGKILL", &id])
        .run()?;
    ensure!(!again.success(), "killing a stopped task succeeded");
    let rm = ctx.kill_and_remove(&id)?;
    ensure!(
        rm.all().contains("137"),
        "`ctr task rm` did not report exit 137: {}",
        rm.describe()
    );
    ensure!(!sys::alive(task.pid), "init {} still alive", task.pid);
    Ok(())
}

fn kill_all(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    ctx.run(&id)
        .detach()
        .args([
            "sh",
            "-c",
            "sleep 1000 & sleep 1000 & touch /tmp/ready; wait",
        ])
        .ok()?;
    let task = ctx.wait_status(&id, "RUNNING")?;
    ctx.wait_file(task.pid, "/tmp/ready")?;
    let pids = ctx.pids(&id)?;
    ensure!(
        pids.len() == 3 && pids.contains(&task.pid),
        "`ctr task ps` shows {pids:?}; expected the init {} and two sleeps",
        task.pid
    );
    ctx.ctr()
        .args(["tasks", "kill", "--all", "-s", "SIGKILL", &id])
        .ok()?;
    ctx.wait_status(&id, "STOPPED")?;
    poll("every process to be gone", Duration::from_secs(5), || {
        Ok(pids.iter().all(|p| !sys::alive(*p)).then_some(()))
    })?;
    let rm = ctx.kill_and_remove(&id)?;
    ensure!(rm.all().contains("137"), "{}", rm.describe());
    Ok(())
}

fn parallel_16(ctx: &CtrCtx) -> Result<()> {
    let cmds: Vec<(usize, crate::cmd::Cmd)> = (0..16)
        .map(|i| {
            let id = ctx.id(&i.to_string());
            let c = ctx
                .run(&id)
                .rm()
                .args(["echo".to_string(), format!("container {i}")])
                .timeout(Duration::from_secs(50))
                .cmd();
            (i, c)
        })
        .collect();
    let results: Vec<(usize, Result<Output>)> = std::thread::scope(|s| {
        let handles: Vec<_> = cmds
            .into_iter()
            .map(|(i, c)| s.spawn(move || (i, c.run())))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (99, Err(anyhow::anyhow!("thread panicked"))))
            })
            .collect()
    });
    let mut bad = Vec::new();
    for (i, r) in results {
        match r {
            Ok(out) if out.code() == 0 && out.stdout == format!("container {i}\n") => {}
            Ok(out) => bad.push(format!("#{i}: {}", out.describe())),
            Err(e) => bad.push(format!("#{i}: {e:#}")),
        }
    }
    ensure!(
        bad.is_empty(),
        "{} of 16 failed: {}",
        bad.len(),
        bad.join("; ")
    );
    Ok(())
}

fn group_one_shim(ctx: &CtrCtx) -> Result<()> {
    let group = ctx.group("grp");
    let annotation = format!("io.containerd.runc.v2.group={group}");
    let ids = [ctx.id("a"), ctx.id("b")];
    let mut tasks = Vec::new();
    for id in &ids {
        tasks
            .push(ctx.start_sleeper(ctx.run(id).flags(["--annotation", annotation.as_str()]), id)?);
    }
    let shims = ctx.shims();
    ensure!(
        shims.len() == 1,
        "expected one shim for the group, found {}: {:?}",
        shims.len(),
        shims
            .iter()
            .map(|s| (s.pid, s.argv.join(" ")))
            .collect::<Vec<_>>()
    );
    let shim = shims[0].pid;
    let socket = shim_socket(&ctx.cd.address(), &ctx.ns, &group);
    ensure!(
        socket.exists(),
        "the group's socket {} does not exist",
        socket.display()
    );
    for t in &tasks {
        let p = sys::process(t.pid).context("init gone")?;
        ensure!(
            p.ppid == shim,
            "init {} of {} has parent {}, not the shim {shim}",
            t.pid,
            t.id,
            p.ppid
        );
    }
    // Deleting the first leaves the shim serving the second.
    ctx.kill_and_remove(&ids[0])?;
    let still = ctx.task(&ids[1])?.context("second task gone")?;
    ensure!(still.status == "RUNNING", "second task is {}", still.status);
    ensure!(
        sys::alive(shim),
        "the shim exited while it still had a container"
    );
    ctx.kill_and_remove(&ids[1])?;
    Ok(())
}

fn unsupported_operations(ctx: &CtrCtx) -> Result<()> {
    // Not implemented yet: it must say so, and the container lives on.
    // containerd's client pauses the task around Checkpoint, and resumes it.
    let id = ctx.id("");
    let task = ctx.start_sleeper(ctx.run(&id), &id)?;
    let args = ["tasks", "checkpoint", id.as_str()];
    let out = ctx.ctr().args(args).run()?;
    must_fail(out, &["implement"]).with_context(|| args.join(" "))?;
    let now = ctx.task(&id)?.context("task gone")?;
    ensure!(
        now.status == "RUNNING" && sys::alive(task.pid),
        "after the calls: {now:?}"
    );
    ctx.kill_and_remove(&id)?;
    Ok(())
}

/// A counter that the container's init writes ten times a second.
pub const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done";

/// Pause and resume through the freezer, as under runc-v2: the state is
/// PAUSED, the counter stops, an exec is refused, and after Resume it goes
/// on. Then Stats, and a paused container that is killed.
fn pause_resume(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let rid = ctx.id("runc");
    ctx.run(&id).detach().args(["sh", "-c", COUNTER]).ok()?;
    ctx.run(&rid)
        .runc()
        .detach()
        .args(["sh", "-c", COUNTER])
        .ok()?;
    for (who, id) in [("runc-v2", rid.as_str()), ("barge", id.as_str())] {
        let task = ctx.wait_status(id, "RUNNING")?;
        ctx.wait_file(task.pid, "/tmp/count")?;
        let count = || -> Result<u64> {
            let text = std::fs::read_to_string(format!("/proc/{}/root/tmp/count", task.pid))?;
            Ok(text.trim().parse().unwrap_or(0))
        };
        ctx.ctr().args(["tasks", "pause", id]).ok()?;
        ctx.wait_status(id, "PAUSED").context(who)?;
        let frozen = count()?;
        std::thread::sleep(Duration::from_millis(500));
        ensure!(count()? == frozen, "{who}: the counter moved while paused");
        let exec = ctx
            .ctr()
            .args(["tasks", "exec", "--exec-id", "paused", id, "true"])
            .run()?;
        ensure!(
            !exec.success(),
            "{who}: an exec into a paused container ran"
        );
        ctx.ctr().args(["tasks", "resume", id]).ok()?;
        ctx.wait_status(id, "RUNNING").context(who)?;
        poll("the counter to go on", Duration::from_secs(5), || {
            Ok((count()? > frozen).then_some(()))
        })
        .context(who)?;
        // Stats: the metrics name the memory and pids of the cgroup.
        let metrics = ctx.ctr().args(["tasks", "metrics", id]).ok()?;
        for field in ["memory.usage_in_bytes", "pids.current"] {
            ensure!(
                metrics.stdout.contains(field),
                "{who}: `ctr task metrics` lacks {field}: {}",
                metrics.describe()
            );
        }
        // A paused container can still be killed, and then deleted.
        ctx.ctr().args(["tasks", "pause", id]).ok()?;
        ctx.ctr()
            .args(["tasks", "kill", "-s", "SIGKILL", id])
            .ok()?;
        ctx.wait_status(id, "STOPPED").context(who)?;
        let rm = ctx.kill_and_remove(id)?;
        ensure!(rm.all().contains("137"), "{who}: {}", rm.describe());
    }
    Ok(())
}

/// Runs a `ctr run --rm` that must fail, with `needles` in its output.
pub fn must_fail(out: Output, needles: &[&str]) -> Result<()> {
    ensure!(!out.success(), "succeeded: {}", out.describe());
    let all = out.all();
    let missing: Vec<&&str> = needles.iter().filter(|n| !all.contains(**n)).collect();
    if !missing.is_empty() {
        bail!("error text lacks {missing:?}: {}", out.describe());
    }
    Ok(())
}

fn bad_spec_json(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let path = ctx.work.join(format!("{id}.json"));
    std::fs::write(
        &path,
        "{ \"ociVersion\": \"1.0.2\", \"process\": { not json",
    )?;
    let out = ctx.run(&id).rm().spec(&path).run()?;
    must_fail(out, &["invalid character"])
}

fn spec_without_process(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let spec = ctx.spec(&id, &["true"], |s| {
        s.as_object_mut().map(|o| o.remove("process"));
    })?;
    let out = ctx.run(&id).rm().spec(&spec).run()?;
    must_fail(out, &["config.json", "process"])
}

fn missing_rootfs(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let dir = ctx.work.join("no-such-rootfs");
    let out = ctx.run(&id).rm().rootfs_dir(&dir).args(["true"]).run()?;
    must_fail(out, &[&dir.display().to_string(), "does not exist"])
}

fn invalid_id(ctx: &CtrCtx) -> Result<()> {
    let out = ctx.run("bad/id").rm().args(["true"]).run()?;
    must_fail(out, &["bad/id"])
}

fn bad_option_key(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let toml = ctx.toml(
        "bogus.toml",
        &format!("{}bogus = 1\n", ctx.executor.toml(&ctx.work)),
    )?;
    let out = ctx
        .run(&id)
        .rm()
        .options(RuntimeOptions::Path(toml))
        .args(["true"])
        .run()?;
    must_fail(out, &["bogus"])
}

fn missing_config_path(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let path = ctx.work.join("no-such-config.toml");
    let out = ctx
        .run(&id)
        .rm()
        .options(RuntimeOptions::Path(path.clone()))
        .args(["true"])
        .run()?;
    must_fail(out, &[&path.display().to_string()])
}

fn missing_runtime_binary(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let toml = ctx.toml(
        "no-runtime.toml",
        "executor = \"oci-binary\"\nruntime = \"no-such-runtime\"\n",
    )?;
    let out = ctx
        .run(&id)
        .rm()
        .options(RuntimeOptions::Path(toml))
        .args(["true"])
        .run()?;
    must_fail(out, &["no-such-runtime"])
}

fn missing_entrypoint(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let out = ctx.run(&id).rm().args(["nope"]).run()?;
    must_fail(out, &["nope", "not found"])
}
