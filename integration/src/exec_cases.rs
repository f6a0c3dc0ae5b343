//! The exec cases: processes added to a running container, through
//! `ctr task exec` and through containerd's Tasks API as containerd's Go
//! client drives it. Each check runs on a container under runc-v2 (the
//! reference) and then on one under barge, and both must give the same
//! result. Terminals are left to other cases.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use tonic::Code;

use crate::cmd::{self, poll, Cmd, Output};
use crate::containerd_api::{expect_code, status, Client, Stdio};
use crate::ctr::{CtrCtx, Run, TaskRow};
use crate::ctr_cases::{must_fail, CtrCase};
use crate::sys;

/// Every exec case, in order.
pub fn cases() -> Vec<CtrCase> {
    type Case = (&'static str, fn(&CtrCtx) -> Result<()>);
    let cases: [Case; 21] = [
        ("exec-seccomp", seccomp),
        ("exec-stdin", stdin),
        ("exec-output", output),
        ("exec-exit-codes", exit_codes),
        ("exec-env-cwd-user", env_cwd_user),
        ("exec-id-taken", id_taken),
        ("exec-stopped-container", stopped_container),
        ("exec-parallel-20", parallel_20),
        ("exec-kill", kill),
        ("exec-rm-running", rm_running),
        ("exec-events-order", events_order),
        ("exec-ps", ps),
        ("exec-api-spec", api_spec),
        ("exec-api-large-args", api_large_args),
        ("exec-api-missing-binary", api_missing_binary),
        ("exec-api-created-never-started", api_created_never_started),
        ("exec-api-force-delete", api_force_delete),
        ("exec-api-wait-exited", api_wait_exited),
        ("exec-api-reattach", api_reattach),
        ("exec-api-stopped-container", api_stopped_container),
        ("exec-shim-fds", shim_fds),
    ];
    CtrCase::list(cases)
}

/// One side of a comparison: a container under runc-v2 or under barge.
pub(crate) struct Side<'c> {
    pub(crate) ctx: &'c CtrCtx<'c>,
    pub(crate) id: String,
    pub(crate) runc: bool,
}

/// Runs `check` on a container under runc-v2 (the reference), then on one
/// under barge. A side that fails is cleaned up at once, so that the case
/// reports why it failed rather than what it left.
pub(crate) fn on_both(ctx: &CtrCtx, check: impl Fn(&Side) -> Result<()>) -> Result<()> {
    for runc in [true, false] {
        let side = Side {
            ctx,
            id: ctx.id(if runc { "runc" } else { "" }),
            runc,
        };
        let result = check(&side);
        if result.is_err() {
            ctx.cd.force_clean_namespace(&ctx.ns);
        }
        let _ = std::fs::remove_dir_all(side.fifo_dir());
        result.context(side.label())?;
    }
    Ok(())
}

impl<'c> Side<'c> {
    fn label(&self) -> &'static str {
        if self.runc {
            "runc-v2 (reference)"
        } else {
            "barge"
        }
    }

    /// A `ctr run` of this side's container.
    fn run(&self) -> Run<'c> {
        let run = self.ctx.run(&self.id);
        if self.runc {
            run.runc()
        } else {
            run
        }
    }

    /// Starts the container sleeping, with `flags` for `ctr run`; answers
    /// its row once RUNNING.
    pub(crate) fn sleeper(&self, flags: &[&str]) -> Result<TaskRow> {
        self.ctx
            .start_sleeper(self.run().flags(flags.iter().copied()), &self.id)
    }

    /// Kills and removes the container.
    pub(crate) fn remove(&self) -> Result<()> {
        self.ctx.kill_and_remove(&self.id).map(drop)
    }

    /// `ctr task exec --exec-id <exec_id> <flags> <container> <args>`.
    pub(crate) fn exec<S: AsRef<str>>(&self, exec_id: &str, flags: &[&str], args: &[S]) -> Cmd {
        self.ctx
            .ctr()
            .args(["tasks", "exec", "--exec-id", exec_id])
            .args(flags)
            .arg(&self.id)
            .args(args.iter().map(AsRef::as_ref))
            .timeout(Duration::from_secs(30))
    }

    /// Where detached execs keep their fifos: ctr leaves them behind (under
    /// either runtime), so they go in a directory of ours.
    pub(crate) fn fifo_dir(&self) -> PathBuf {
        self.ctx.work.join(format!("{}-fifos", self.id))
    }

    /// Starts an exec that sleeps, with `ctr task exec --detach`, and waits
    /// until it runs.
    fn detached_sleeper(&self, exec_id: &str, init: u32) -> Result<()> {
        let fifo_dir = self.fifo_dir();
        let fifo_dir = fifo_dir.to_string_lossy();
        self.exec(
            exec_id,
            &["--detach", "--fifo-dir", &fifo_dir],
            &ready_then_sleep(exec_id),
        )
        .ok()
        .with_context(|| format!("start exec {exec_id} detached"))?;
        self.ctx.wait_file(init, &ready_file(exec_id))
    }

    /// `ctr task ps`: each pid with its INFO column.
    pub(crate) fn ps(&self) -> Result<Vec<(u32, String)>> {
        let out = self.ctx.ctr().args(["tasks", "ps", &self.id]).ok()?;
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (pid, info) = l.trim().split_once(char::is_whitespace)?;
                Some((pid.parse().ok()?, info.trim().to_string()))
            })
            .collect())
    }

    /// The pids `ctr task ps` shows besides the init's.
    pub(crate) fn exec_pids(&self, init: u32) -> Result<Vec<u32>> {
        Ok(self
            .ps()?
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|p| *p != init)
            .collect())
    }

    /// `ctr task kill --exec-id <exec_id> -s <signal> <container>`.
    pub(crate) fn signal_exec(&self, exec_id: &str, signal: &str) -> Cmd {
        let args = ["tasks", "kill", "--exec-id", exec_id, "-s", signal];
        self.ctx.ctr().args(args).arg(&self.id)
    }

    /// Kills a running exec with SIGKILL and deletes it, through ctr.
    fn kill_exec(&self, exec_id: &str) -> Result<()> {
        self.signal_exec(exec_id, "SIGKILL").ok()?;
        // The exit must be recorded before the process can be deleted; ctr
        // then exits with the process's status.
        let mut last = None;
        poll(
            &format!("exec {exec_id} to be deleted"),
            Duration::from_secs(10),
            || {
                let out = self
                    .ctx
                    .ctr()
                    .args(["tasks", "rm", "--exec-id", exec_id, &self.id])
                    .run()?;
                let done = out.code() == 137;
                let gone = out.stderr.contains("not found");
                last = Some(out);
                ensure!(!gone, "the exec is gone before it was deleted");
                Ok(done.then_some(()))
            },
        )
        .with_context(|| {
            format!(
                "`ctr task rm --exec-id` must exit 137; last: {}",
                last.map(|o| o.describe()).unwrap_or_default()
            )
        })
    }

    /// A connection to containerd's Tasks API.
    pub(crate) fn client(&self) -> Result<Client> {
        Client::connect(&self.ctx.cd.address(), &self.ctx.ns)
    }

    /// The container's process spec (as containerd's client starts an exec
    /// from it), with `args` as the command.
    pub(crate) fn process_spec(&self, args: &[&str]) -> Result<Value> {
        let out = self
            .ctx
            .ctr()
            .args(["containers", "info", "--spec", &self.id])
            .ok()?;
        let spec: Value = serde_json::from_str(&out.stdout).context("parse the spec")?;
        let mut process = spec["process"].clone();
        ensure!(process.is_object(), "the spec has no process: {spec}");
        process["args"] = serde_json::json!(args);
        process["terminal"] = Value::Bool(false);
        Ok(process)
    }

    /// Stdio fifos for exec `exec_id`, and the test's ends of them.
    fn fifos(&self, exec_id: &str, stdin: bool) -> Result<(Fifos, Ends)> {
        Fifos::new(&self.fifo_dir().join(exec_id), stdin)
    }
}

/// The file an exec made by [`ready_then_sleep`] touches once it runs.
fn ready_file(exec_id: &str) -> String {
    format!("/tmp/{exec_id}.ready")
}

/// The command of an exec that marks itself running, then sleeps.
fn ready_then_sleep(exec_id: &str) -> [String; 3] {
    [
        "sh".into(),
        "-c".into(),
        format!("touch {}; exec sleep 1000", ready_file(exec_id)),
    ]
}

/// Fails unless a process that ended with `got` (exit code, stdout,
/// stderr) ended with `code` and this stdout and stderr (when given).
fn expect_end(got: (i64, &str, &str), code: i64, stdout: &str, stderr: Option<&str>) -> Result<()> {
    ensure!(
        got.0 == code && got.1 == stdout && stderr.is_none_or(|e| got.2 == e),
        "expected exit {code}, stdout {stdout:?}{}; got exit {}, stdout {:?}, stderr {:?}",
        stderr
            .map(|e| format!(", stderr {e:?}"))
            .unwrap_or_default(),
        got.0,
        got.1,
        got.2
    );
    Ok(())
}

/// [`expect_end`] for a command's output.
fn expect_out(out: &Output, stdout: &str, stderr: Option<&str>, code: i32) -> Result<()> {
    let got = (out.code().into(), out.stdout.as_str(), out.stderr.as_str());
    expect_end(got, code.into(), stdout, stderr).with_context(|| out.cmdline.clone())
}

/// The container's seccomp filter holds in its execs, with and without
/// no_new_privileges (without it, loading the filter needs CAP_SYS_ADMIN,
/// which the exec must not keep).
fn seccomp(ctx: &CtrCtx) -> Result<()> {
    let probe = "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
                 if unshare -U true 2>/dev/null; then echo unshare-allowed; else echo unshare-refused; fi";
    for (flags, nnp) in [
        (&["--seccomp"][..], 1),
        (&["--seccomp", "--allow-new-privs"][..], 0),
    ] {
        on_both(ctx, |side| {
            side.sleeper(flags)?;
            let out = side
                .exec(&ctx.id("seccomp"), &[], &["sh", "-c", probe])
                .run()?;
            let want = format!(
                "CapEff:\t00000000a80425fb\nNoNewPrivs:\t{nnp}\nSeccomp:\t2\nunshare-refused\n"
            );
            expect_out(&out, &want, None, 0).with_context(|| format!("flags {flags:?}"))?;
            side.remove()
        })?;
    }
    Ok(())
}

/// stdin reaches an exec to its end: ctr writes it, closes the fifo and
/// sends CloseIO, which can come before the shim's copy has seen the data.
/// Ten times, since it is a race.
fn stdin(ctx: &CtrCtx) -> Result<()> {
    let data = "line one\nline two\n";
    on_both(ctx, |side| {
        side.sleeper(&[])?;
        for i in 0..10 {
            let out = side
                .exec(&ctx.id(&format!("cat{i}")), &[], &["cat"])
                .stdin(data)
                .run()?;
            expect_out(&out, data, Some(""), 0).with_context(|| format!("run {i}"))?;
        }
        side.remove()
    })
}

fn output(ctx: &CtrCtx) -> Result<()> {
    on_both(ctx, |side| {
        side.sleeper(&[])?;
        let out = side
            .exec(
                &ctx.id("split"),
                &[],
                &["sh", "-c", "echo out; echo err >&2; echo out2"],
            )
            .run()?;
        expect_out(&out, "out\nout2\n", Some("err\n"), 0).context("stdout and stderr")?;
        // 1 MiB through the exec's stdout, nothing lost.
        let out = side
            .exec(
                &ctx.id("large"),
                &[],
                &[
                    "sh",
                    "-c",
                    "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo end",
                ],
            )
            .run()?;
        ensure!(
            out.code() == 0 && out.stdout.len() == 1048576 + 5 && out.stdout.ends_with("x\nend\n"),
            "large output: exit {}, {} bytes of stdout (expected 1048581), stderr {:?}",
            out.code(),
            out.stdout.len(),
            out.stderr
        );
        side.remove()
    })
}

fn exit_codes(ctx: &CtrCtx) -> Result<()> {
    let execs: [(&str, &[&str], i32); 3] = [
        ("zero", &["true"], 0),
        ("five", &["sh", "-c", "exit 5"], 5),
        ("sigkill", &["sh", "-c", "kill -9 $$"], 137),
    ];
    on_both(ctx, |side| {
        let init = side.sleeper(&[])?;
        for (tag, args, code) in execs {
            let out = side.exec(&ctx.id(tag), &[], args).run()?;
            expect_out(&out, "", Some(""), code).with_context(|| args.join(" "))?;
        }
        // The execs' ends leave the container running.
        let now = ctx.task(&side.id)?.context("task gone")?;
        ensure!(
            now.status == "RUNNING" && now.pid == init.pid,
            "after the execs: {now:?}"
        );
        side.remove()
    })
}

fn env_cwd_user(ctx: &CtrCtx) -> Result<()> {
    let execs: [(&str, &[&str], &[&str], &str); 4] = [
        // ctr's exec takes the container's process, env included.
        ("env", &[], &["sh", "-c", "echo $FOO"], "bar\n"),
        ("cwd-default", &[], &["pwd"], "/\n"),
        ("cwd", &["--cwd", "/tmp"], &["pwd"], "/tmp\n"),
        (
            "user",
            &["--user", "1000"],
            &["sh", "-c", "id -u; id -g"],
            "1000\n1000\n",
        ),
    ];
    on_both(ctx, |side| {
        side.sleeper(&["--env", "FOO=bar"])?;
        for (tag, flags, args, stdout) in execs {
            let out = side.exec(&ctx.id(tag), flags, args).run()?;
            expect_out(&out, stdout, Some(""), 0).context(tag)?;
        }
        side.remove()
    })
}

fn id_taken(ctx: &CtrCtx) -> Result<()> {
    let exec_id = ctx.id("dup");
    on_both(ctx, |side| {
        let init = side.sleeper(&[])?;
        side.detached_sleeper(&exec_id, init.pid)?;
        let running = side.exec_pids(init.pid)?;
        ensure!(running.len() == 1, "`ctr task ps` shows execs {running:?}");
        let again = side.exec(&exec_id, &[], &["true"]).run()?;
        must_fail(again, &[&exec_id, "already exists"]).context("ctr exec with a taken id")?;
        let client = side.client()?;
        let spec = side.process_spec(&["true"])?;
        expect_code(
            "Exec with a taken id",
            client.exec(&side.id, &exec_id, &spec, &Stdio::default()),
            Code::AlreadyExists,
        )?;
        // The first exec is untouched.
        ensure!(
            running.iter().all(|p| sys::alive(*p)),
            "the first exec {running:?} died"
        );
        side.kill_exec(&exec_id)?;
        side.remove()
    })
}

/// A container whose init has exited, left STOPPED.
fn stopped(side: &Side) -> Result<()> {
    side.run().detach().args(["true"]).ok()?;
    side.ctx.wait_status(&side.id, "STOPPED").map(drop)
}

fn stopped_container(ctx: &CtrCtx) -> Result<()> {
    let exec_id = ctx.id("late");
    on_both(ctx, |side| {
        stopped(side)?;
        let out = side.exec(&exec_id, &[], &["echo", "hello"]).run()?;
        ensure!(
            !out.success() && !out.stdout.contains("hello"),
            "an exec into a stopped container ran: {}",
            out.describe()
        );
        ensure!(
            out.stderr.contains("stopped"),
            "the error does not say that the container is stopped: {}",
            out.describe()
        );
        side.remove()
    })
}

fn api_stopped_container(ctx: &CtrCtx) -> Result<()> {
    let exec_id = ctx.id("late");
    on_both(ctx, |side| {
        stopped(side)?;
        let client = side.client()?;
        let spec = side.process_spec(&["echo", "hello"])?;
        let result = client.exec(&side.id, &exec_id, &spec, &Stdio::default());
        // runc-v2 answers a plain error (Unknown); the shim says what is
        // wrong in its code too.
        let code = if side.runc {
            Code::Unknown
        } else {
            Code::FailedPrecondition
        };
        let message = expect_code("Exec into a stopped container", result, code)?;
        ensure!(
            message.contains("stopped"),
            "the error does not say that the container is stopped: {message:?}"
        );
        side.remove()
    })
}

fn parallel_20(ctx: &CtrCtx) -> Result<()> {
    const N: usize = 20;
    let ids: Vec<String> = (0..N).map(|i| ctx.id(&format!("p{i}"))).collect();
    on_both(ctx, |side| {
        side.sleeper(&[])?;
        let cmds: Vec<Cmd> = ids
            .iter()
            .enumerate()
            .map(|(i, exec_id)| {
                let script = format!("echo out {i}; echo err {i} >&2");
                side.exec(exec_id, &[], &among_many(&script, i % 4))
                    .timeout(Duration::from_secs(50))
            })
            .collect();
        let bad: Vec<String> = crate::cmd::at_once(cmds, Cmd::run)
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let checked = r.and_then(|out| {
                    expect_out(
                        &out,
                        &format!("out {i}\n"),
                        Some(&format!("err {i}\n")),
                        (i % 4) as i32,
                    )
                });
                checked.err().map(|e| format!("#{i}: {e:#}"))
            })
            .collect();
        ensure!(
            bad.is_empty(),
            "{} of {N} execs failed: {}",
            bad.len(),
            bad.join("; ")
        );
        side.remove()
    })
}

/// The command of an exec that runs alongside many others: `script`, a
/// pause, then exit `code`. The pause keeps runc-v2 honest: with 20 at once,
/// ctr and runc-v2 lose the output of about one exec in 30 that exits at
/// once (seen on containerd 1.7), and of none that lives on a little.
fn among_many(script: &str, code: usize) -> [String; 3] {
    [
        "sh".into(),
        "-c".into(),
        format!("{script}; sleep 0.5; exit {code}"),
    ]
}

fn kill(ctx: &CtrCtx) -> Result<()> {
    let signals = [("sigkill", "SIGKILL", 137), ("sigterm", "SIGTERM", 143)];
    let ids: Vec<String> = signals.iter().map(|(tag, ..)| ctx.id(tag)).collect();
    on_both(ctx, |side| {
        let init = side.sleeper(&[])?;
        for ((_, signal, code), exec_id) in signals.iter().zip(&ids) {
            let attached = side
                .exec(exec_id, &[], &ready_then_sleep(exec_id))
                .spawn()?;
            ctx.wait_file(init.pid, &ready_file(exec_id))?;
            side.signal_exec(exec_id, signal).ok()?;
            let out = attached.wait()?;
            ensure!(
                out.code() == *code,
                "an exec killed with {signal}: expected exit {code}, got {}",
                out.describe()
            );
            // ctr deleted the exec when it ended: there is nothing to kill.
            let again = side.signal_exec(exec_id, signal).run()?;
            ensure!(
                !again.success(),
                "killing a finished exec succeeded: {}",
                again.describe()
            );
        }
        let now = ctx.task(&side.id)?.context("task gone")?;
        ensure!(
            now.status == "RUNNING" && sys::alive(init.pid),
            "after killing the execs: {now:?}"
        );
        side.remove()
    })
}

fn rm_running(ctx: &CtrCtx) -> Result<()> {
    let ids: Vec<String> = (0..3).map(|i| ctx.id(&format!("r{i}"))).collect();
    on_both(ctx, |side| {
        let init = side.sleeper(&[])?;
        for exec_id in &ids {
            side.detached_sleeper(exec_id, init.pid)?;
        }
        let execs = side.exec_pids(init.pid)?;
        ensure!(
            execs.len() == ids.len(),
            "`ctr task ps` shows execs {execs:?}"
        );
        ctx.ctr()
            .args(["tasks", "rm", "-f", &side.id])
            .timeout(Duration::from_secs(30))
            .ok()?;
        ctx.ctr().args(["containers", "rm", &side.id]).ok()?;
        poll("every process to be gone", Duration::from_secs(5), || {
            Ok(execs
                .iter()
                .chain([&init.pid])
                .all(|p| !sys::alive(*p))
                .then_some(()))
        })
        .with_context(|| {
            let left: Vec<&u32> = execs.iter().filter(|p| sys::alive(**p)).collect();
            format!("alive: {left:?}")
        })
    })
}

/// One line of `ctr events`.
#[derive(Debug)]
struct Event {
    topic: String,
    body: Value,
}

/// Parses `ctr events` output: `<timestamp> <namespace> <topic> <json>`,
/// where the timestamp holds spaces.
fn parse_events(text: &str) -> Vec<Event> {
    text.lines()
        .filter_map(|l| {
            let rest = &l[l.find(" /")? + 1..];
            let (topic, json) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(Event {
                topic: topic.to_string(),
                body: serde_json::from_str(json).unwrap_or(Value::Null),
            })
        })
        .collect()
}

fn events_order(ctx: &CtrCtx) -> Result<()> {
    let ids: Vec<String> = (0..2).map(|i| ctx.id(&format!("ev{i}"))).collect();
    on_both(ctx, |side| {
        let events = ctx
            .ctr()
            .arg("events")
            .timeout(Duration::from_secs(50))
            .spawn()?;
        let init = side.sleeper(&[])?;
        for exec_id in &ids {
            side.detached_sleeper(exec_id, init.pid)?;
        }
        // The init's end takes the execs with it (its pid namespace goes).
        ctx.ctr()
            .args(["tasks", "kill", "-s", "SIGKILL", &side.id])
            .ok()?;
        ctx.wait_status(&side.id, "STOPPED")?;
        side.remove()?;
        // Let the last events reach ctr: runc-v2 publishes each one by
        // running `containerd publish`, which takes a while under load.
        std::thread::sleep(Duration::from_secs(2));
        sys::signal(events.pid(), libc::SIGTERM);
        let text = events.wait()?.stdout;
        let all: Vec<Event> = parse_events(&text)
            .into_iter()
            .filter(|e| e.body["container_id"] == side.id.as_str())
            .collect();
        let summary: Vec<String> = all
            .iter()
            .map(|e| format!("{} {}", e.topic, e.body))
            .collect();
        let find = |topic: &str, key: &str, value: &str| {
            all.iter()
                .position(|e| e.topic == topic && e.body[key] == value)
                .with_context(|| format!("no {topic} with {key} {value}"))
        };
        let check = || -> Result<()> {
            find("/tasks/delete", "container_id", &side.id).context("events incomplete")?;
            let init_exit = find("/tasks/exit", "id", &side.id)?;
            ensure!(
                all[init_exit].body["exit_status"] == 137,
                "the init's exit is not 137"
            );
            for exec_id in &ids {
                let added = find("/tasks/exec-added", "exec_id", exec_id)?;
                let started = find("/tasks/exec-started", "exec_id", exec_id)?;
                let exit = find("/tasks/exit", "id", exec_id)?;
                ensure!(
                    added < started && started < exit,
                    "exec {exec_id}: added at {added}, started at {started}, exit at {exit}"
                );
                ensure!(
                    exit < init_exit,
                    "exec {exec_id}'s exit (at {exit}) comes after the init's (at {init_exit})"
                );
                let (start, end) = (&all[started].body, &all[exit].body);
                ensure!(
                    start["pid"].as_u64().is_some_and(|p| p > 0) && start["pid"] == end["pid"],
                    "exec {exec_id}: started with pid {}, exited with pid {}",
                    start["pid"],
                    end["pid"]
                );
                ensure!(end["exit_status"] == 137, "exec {exec_id} did not exit 137");
            }
            Ok(())
        };
        check().with_context(|| format!("events: {summary:#?}"))
    })
}

fn ps(ctx: &CtrCtx) -> Result<()> {
    let exec_id = ctx.id("shown");
    on_both(ctx, |side| {
        let init = side.sleeper(&[])?;
        side.detached_sleeper(&exec_id, init.pid)?;
        let rows = side.ps()?;
        let check = || -> Result<()> {
            ensure!(rows.len() == 2, "expected the init and one exec");
            let pid = exec_row(&rows, init.pid, &exec_id)?;
            let p = sys::process(pid).context("the exec's pid is not alive")?;
            ensure!(p.argv == ["sleep", "1000"], "pid {pid} runs {:?}", p.argv);
            Ok(())
        };
        check().with_context(|| format!("`ctr task ps` shows {rows:?}"))?;
        side.kill_exec(&exec_id)?;
        side.remove()
    })
}

/// In `ctr task ps` rows (pid, INFO), the pid of exec `exec_id`: the init's
/// row does not name the exec, and the other row names it.
pub(crate) fn exec_row(rows: &[(u32, String)], init_pid: u32, exec_id: &str) -> Result<u32> {
    let (_, init_info) = rows
        .iter()
        .find(|(p, _)| *p == init_pid)
        .context("no row for the init")?;
    ensure!(
        !init_info.contains(exec_id),
        "the init's INFO names the exec"
    );
    let (pid, info) = rows
        .iter()
        .find(|(p, _)| *p != init_pid)
        .context("no row for the exec")?;
    ensure!(info.contains(exec_id), "the exec's INFO lacks its id");
    Ok(*pid)
}

/// Makes a fifo (mode 0600).
fn mkfifo(path: &Path) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        bail!(
            "mkfifo {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The read end of a fifo, opened without blocking (so before any writer
/// exists), and read with a deadline.
pub(crate) struct FifoReader {
    file: File,
    path: PathBuf,
}

impl FifoReader {
    fn open(path: &Path) -> Result<FifoReader> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .with_context(|| format!("open {} for reading", path.display()))?;
        Ok(FifoReader {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Reads until `done` holds for what was read, or until no writer is
    /// left (end of file); fails at the timeout. Answers what was read.
    fn read_until(&mut self, timeout: Duration, done: impl Fn(&[u8]) -> bool) -> Result<String> {
        let end = cmd::bounded(timeout);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        while !done(&buf) {
            match self.file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= end {
                        bail!(
                            "timed out after {timeout:?} reading {}; read so far: {:?}",
                            self.path.display(),
                            String::from_utf8_lossy(&buf)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e).with_context(|| format!("read {}", self.path.display())),
            }
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Reads to the end of file: until every writer has closed.
    pub(crate) fn read_to_end(&mut self, timeout: Duration) -> Result<String> {
        self.read_until(timeout, |_| false)
    }

    fn read_line(&mut self, timeout: Duration) -> Result<String> {
        self.read_until(timeout, |b| b.ends_with(b"\n"))
    }
}

/// The write end of a fifo: read-write, which opens at once even before a
/// reader exists (for the client that makes the fifo); or write-only and
/// without blocking, which fails unless a reader exists (for a client that
/// attaches to a running process).
fn open_writer(path: &Path, read_too: bool) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(read_too)
        .write(true)
        .custom_flags(if read_too { 0 } else { libc::O_NONBLOCK })
        .open(path)
        .with_context(|| format!("open {} for writing", path.display()))
}

/// Stdio fifos for one exec, made as containerd's client makes them. The
/// directory goes when it drops.
pub(crate) struct Fifos {
    dir: PathBuf,
    pub(crate) stdio: Stdio,
}

/// The test's ends of an exec's fifos.
pub(crate) struct Ends {
    /// A writer on stdin, when the exec has one.
    pub(crate) stdin: Option<File>,
    pub(crate) stdout: FifoReader,
    pub(crate) stderr: FifoReader,
}

impl Fifos {
    /// Makes the fifos in `dir` and opens the test's ends.
    pub(crate) fn new(dir: &Path, with_stdin: bool) -> Result<(Fifos, Ends)> {
        std::fs::create_dir_all(dir)?;
        let path = |name: &str| dir.join(name);
        for name in ["stdin", "stdout", "stderr"] {
            mkfifo(&path(name))?;
        }
        let string = |name: &str| path(name).to_string_lossy().into_owned();
        let fifos = Fifos {
            dir: dir.to_path_buf(),
            stdio: Stdio {
                stdin: if with_stdin {
                    string("stdin")
                } else {
                    String::new()
                },
                stdout: string("stdout"),
                stderr: string("stderr"),
            },
        };
        let ends = Ends {
            stdin: with_stdin
                .then(|| open_writer(&path("stdin"), true))
                .transpose()?,
            stdout: FifoReader::open(&path("stdout"))?,
            stderr: FifoReader::open(&path("stderr"))?,
        };
        Ok((fifos, ends))
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A short time for things that must happen at once.
const PROMPT: Duration = Duration::from_secs(10);

/// How an exec run through the API ended.
pub(crate) struct Finished {
    code: u32,
    stdout: String,
    stderr: String,
}

impl Finished {
    /// [`expect_end`] for an exec run through the API.
    pub(crate) fn expect(&self, code: u32, stdout: &str, stderr: Option<&str>) -> Result<()> {
        let got = (self.code.into(), self.stdout.as_str(), self.stderr.as_str());
        expect_end(got, code.into(), stdout, stderr)
    }
}

/// Runs an exec through the API to its end, as the Go client does (Exec,
/// Start, Wait, DeleteProcess), with fifos of its own.
pub(crate) fn api_run(
    side: &Side,
    client: &Client,
    exec_id: &str,
    spec: &Value,
) -> Result<Finished> {
    let (fifos, mut ends) = side.fifos(exec_id, false)?;
    client.exec(&side.id, exec_id, spec, &fifos.stdio)?;
    let pid = client.start(&side.id, exec_id)?;
    ensure!(pid > 0, "Start answered pid 0");
    let code = client.wait(&side.id, exec_id)?;
    let deleted = client.delete_process(&side.id, exec_id)?;
    ensure!(
        deleted.exit_status == code && deleted.pid == pid,
        "DeleteProcess answered {deleted:?}; Start said pid {pid}, Wait said {code}"
    );
    Ok(Finished {
        code,
        stdout: ends.stdout.read_to_end(PROMPT)?,
        stderr: ends.stderr.read_to_end(PROMPT)?,
    })
}

fn api_spec(ctx: &CtrCtx) -> Result<()> {
    // The exec's own env, cwd and user, not the container's.
    let exec_id = ctx.id("spec");
    on_both(ctx, |side| {
        side.sleeper(&["--env", "FOO=container", "--env", "BAR=container"])?;
        let client = side.client()?;
        let mut spec = side.process_spec(&[
            "sh",
            "-c",
            "echo $FOO ${BAR:-unset}; pwd; id -u; id -g; id -G",
        ])?;
        spec["env"] = serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "FOO=exec"
        ]);
        spec["cwd"] = Value::from("/etc");
        spec["user"] = serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [65534]});
        api_run(side, &client, &exec_id, &spec)?.expect(
            0,
            "exec unset\n/etc\n1000\n1000\n1000 65534\n",
            Some(""),
        )?;
        // Its rlimits, capabilities and no_new_privileges, as given.
        let mut spec = side.process_spec(&[
            "sh",
            "-c",
            "awk '/^Max core file size/ {print $5, $6}' /proc/self/limits; \
             grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status",
        ])?;
        // Not RLIMIT_NOFILE: runc 1.1's Go runtime raises its soft limit to
        // the hard one in the exec's own process, racing the limit it set.
        spec["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_CORE", "hard": 2097152, "soft": 1048576}]);
        spec["noNewPrivileges"] = Value::from(true);
        let caps = serde_json::json!(["CAP_CHOWN", "CAP_KILL"]);
        spec["capabilities"] = serde_json::json!({
            "bounding": caps, "effective": caps, "permitted": caps,
        });
        let exec_id2 = format!("{exec_id}-limits");
        api_run(side, &client, &exec_id2, &spec)?.expect(
            0,
            "1048576 2097152\nCapEff:\t0000000000000021\nCapBnd:\t0000000000000021\nNoNewPrivs:\t1\n",
            Some(""),
        )?;
        side.remove()
    })
}

fn api_large_args(ctx: &CtrCtx) -> Result<()> {
    // 13 arguments of 120 KiB each (the kernel takes at most 128 KiB in one
    // string): 1.5 MiB in all, three quarters of ARG_MAX here.
    const COUNT: usize = 13;
    const LEN: usize = 120 * 1024;
    let exec_id = ctx.id("large");
    let big: Vec<String> = (0..COUNT)
        .map(|i| char::from(b'a' + i as u8).to_string().repeat(LEN))
        .collect();
    let mut args = vec![
        "sh",
        "-c",
        "n=0; for a; do n=$((n + ${#a})); done; \
         printf '%s %s %.1s %.1s\\n' $# $n \"$1\" \"${13}\"",
        "sh",
    ];
    args.extend(big.iter().map(String::as_str));
    on_both(ctx, |side| {
        side.sleeper(&[])?;
        let client = side.client()?;
        let spec = side.process_spec(&args)?;
        let want = format!("{COUNT} {} a m\n", COUNT * LEN);
        api_run(side, &client, &exec_id, &spec)?.expect(0, &want, None)?;
        side.remove()
    })
}

fn api_missing_binary(ctx: &CtrCtx) -> Result<()> {
    let exec_id = ctx.id("nobin");
    let binary = "/no/such/binary";
    on_both(ctx, |side| {
        let init = side.sleeper(&[])?;
        let client = side.client()?;
        let spec = side.process_spec(&[binary])?;
        let (fifos, ends) = side.fifos(&exec_id, false)?;
        client.exec(&side.id, &exec_id, &spec, &fifos.stdio)?;
        match client.start(&side.id, &exec_id) {
            Ok(pid) => bail!("Start of {binary} succeeded (pid {pid})"),
            Err(s) => ensure!(
                s.message().contains(binary),
                "Start's error does not name {binary}: {:?}: {}",
                s.code(),
                s.message()
            ),
        }
        client.delete_process(&side.id, &exec_id)?;
        expect_code(
            "Get of the deleted exec",
            client.get(&side.id, &exec_id),
            Code::NotFound,
        )?;
        drop((fifos, ends));
        // Whatever the failed start made is gone (reaped) at once.
        let mut left = Vec::new();
        poll("only the init to be left", Duration::from_secs(2), || {
            left = side.exec_pids(init.pid)?;
            Ok(left.is_empty().then_some(()))
        })
        .with_context(|| {
            let procs: Vec<_> = left
                .iter()
                .map(|p| sys::process(*p).map(|p| (p.pid, p.state, p.argv)))
                .collect();
            format!("processes left besides the init: {procs:?}")
        })?;
        side.remove()
    })
}

fn api_created_never_started(ctx: &CtrCtx) -> Result<()> {
    let deleted_id = ctx.id("deleted");
    let left_id = ctx.id("left");
    on_both(ctx, |side| {
        // The task is deleted through the API, which leaves ctr's fifos: make
        // none.
        let init = side.sleeper(&["--null-io"])?;
        let client = side.client()?;
        let spec = side.process_spec(&["sh", "-c", "exit 6"])?;
        // A created exec is deleted without running: exit status 0.
        client.exec(&side.id, &deleted_id, &spec, &Stdio::default())?;
        let got = client.get(&side.id, &deleted_id)?;
        ensure!(
            got.status == status::CREATED,
            "Get of a created exec: {got:?}"
        );
        let deleted = client.delete_process(&side.id, &deleted_id)?;
        ensure!(
            deleted.exit_status == 0,
            "DeleteProcess of a created exec answered {deleted:?}"
        );
        // Another stays created while the container goes.
        client.exec(&side.id, &left_id, &spec, &Stdio::default())?;
        client.kill(&side.id, "", libc::SIGKILL)?;
        let code = client.wait(&side.id, "")?;
        ensure!(code == 137, "the init exited {code}");
        let deleted = client.delete_task(&side.id)?;
        ensure!(
            deleted.exit_status == 137 && deleted.pid == init.pid,
            "Delete of the task answered {deleted:?} (init pid {})",
            init.pid
        );
        ensure!(
            client.get(&side.id, &left_id).is_err(),
            "the created exec outlived its task"
        );
        ctx.ctr().args(["containers", "rm", &side.id]).ok()?;
        Ok(())
    })
}

fn api_force_delete(ctx: &CtrCtx) -> Result<()> {
    let exec_id = ctx.id("forced");
    on_both(ctx, |side| {
        side.sleeper(&[])?;
        let client = side.client()?;
        let spec = side.process_spec(&["sleep", "1000"])?;
        client.exec(&side.id, &exec_id, &spec, &Stdio::default())?;
        let pid = client.start(&side.id, &exec_id)?;
        ensure!(sys::alive(pid), "the exec's pid {pid} is not alive");
        let got = client.get(&side.id, &exec_id)?;
        ensure!(
            got.status == status::RUNNING && got.pid == pid,
            "Get of the running exec: {got:?}"
        );
        // A running exec cannot be deleted...
        ensure!(
            client.delete_process(&side.id, &exec_id).is_err(),
            "DeleteProcess of a running exec succeeded"
        );
        ensure!(sys::alive(pid), "a refused DeleteProcess killed the exec");
        // ...so the Go client's WithProcessKill kills it, waits, deletes.
        client.kill(&side.id, &exec_id, libc::SIGKILL)?;
        let code = client.wait(&side.id, &exec_id)?;
        ensure!(code == 137, "the killed exec exited {code}");
        let deleted = client.delete_process(&side.id, &exec_id)?;
        ensure!(
            deleted.exit_status == 137 && deleted.pid == pid,
            "DeleteProcess answered {deleted:?} (pid {pid})"
        );
        ensure!(!sys::alive(pid), "the exec {pid} is still alive");
        expect_code(
            "Get of the deleted exec",
            client.get(&side.id, &exec_id),
            Code::NotFound,
        )?;
        side.remove()
    })
}

fn api_wait_exited(ctx: &CtrCtx) -> Result<()> {
    let exec_id = ctx.id("done");
    on_both(ctx, |side| {
        side.sleeper(&[])?;
        let client = side.client()?;
        let spec = side.process_spec(&["sh", "-c", "exit 7"])?;
        client.exec(&side.id, &exec_id, &spec, &Stdio::default())?;
        client.start(&side.id, &exec_id)?;
        let first = client.wait(&side.id, &exec_id)?;
        ensure!(first == 7, "Wait answered {first}");
        let started = Instant::now();
        let again = client.wait(&side.id, &exec_id)?;
        let took = started.elapsed();
        ensure!(
            again == 7 && took < Duration::from_secs(1),
            "a second Wait answered {again} after {took:?}"
        );
        let got = client.get(&side.id, &exec_id)?;
        ensure!(
            got.status == status::STOPPED && got.exit_status == 7,
            "Get of the exited exec: {got:?}"
        );
        let deleted = client.delete_process(&side.id, &exec_id)?;
        ensure!(
            deleted.exit_status == 7,
            "DeleteProcess answered {deleted:?}"
        );
        ensure!(
            client.wait(&side.id, &exec_id).is_err(),
            "Wait on a deleted exec succeeded"
        );
        side.remove()
    })
}

/// An exec, made through the API with fifos, that echoes each line of its
/// stdin half a second after it came.
struct Echo<'s> {
    side: &'s Side<'s>,
    client: Client,
    exec_id: String,
    fifos: Fifos,
    pid: u32,
}

impl<'s> Echo<'s> {
    /// Starts the exec; answers it with the first client's ends.
    fn start(side: &'s Side<'s>, exec_id: &str) -> Result<(Echo<'s>, File, FifoReader)> {
        let client = side.client()?;
        let script = "while read l; do sleep 0.5; echo \"got $l\"; done";
        let spec = side.process_spec(&["sh", "-c", script])?;
        let (fifos, ends) = side.fifos(exec_id, true)?;
        client.exec(&side.id, exec_id, &spec, &fifos.stdio)?;
        let pid = client.start(&side.id, exec_id)?;
        let stdin = ends.stdin.context("no stdin")?;
        let echo = Echo {
            side,
            client,
            exec_id: exec_id.to_string(),
            fifos,
            pid,
        };
        Ok((echo, stdin, ends.stdout))
    }

    /// What the Go client's LoadProcess does: Get the exec's stdio and open
    /// it anew. Answers the new client's stdin and stdout.
    fn reattach(&self) -> Result<(File, FifoReader)> {
        let got = self.client.get(&self.side.id, &self.exec_id)?;
        ensure!(
            got.pid == self.pid && got.status == status::RUNNING,
            "the exec (pid {}) no longer runs: Get answered {got:?}",
            self.pid
        );
        let stdio = &self.fifos.stdio;
        ensure!(
            got.stdin == stdio.stdin && got.stdout == stdio.stdout && got.stderr == stdio.stderr,
            "Get answered {got:?}; the exec's stdio is {stdio:?}"
        );
        let stdout = FifoReader::open(Path::new(&got.stdout))?;
        let stdin = open_writer(Path::new(&got.stdin), false)
            .context("no process reads the exec's stdin fifo")?;
        Ok((stdin, stdout))
    }

    /// Ends the exec as the Go client ends a stdin (close it, then
    /// CloseIO): it must exit 0 with nothing more on stdout.
    fn finish(self, stdin: File, mut stdout: FifoReader) -> Result<()> {
        let (c, e) = (&self.side.id, &self.exec_id);
        drop(stdin);
        self.client.close_stdin(c, e)?;
        let code = self.client.wait(c, e)?;
        ensure!(code == 0, "the exec exited {code}");
        self.client.delete_process(c, e)?;
        let rest = stdout.read_to_end(PROMPT)?;
        ensure!(rest.is_empty(), "more output after the end: {rest:?}");
        Ok(())
    }
}

/// Writes a line to the echoing exec and reads its answer.
fn round_trip(stdin: &mut File, stdout: &mut FifoReader, line: &str) -> Result<()> {
    stdin.write_all(format!("{line}\n").as_bytes())?;
    let echoed = stdout.read_line(PROMPT)?;
    ensure!(
        echoed == format!("got {line}\n"),
        "sent {line:?}, the exec echoed {echoed:?}"
    );
    Ok(())
}

fn api_reattach(ctx: &CtrCtx) -> Result<()> {
    let exec_id = ctx.id("echo");
    on_both(ctx, |side| {
        side.sleeper(&[])?;
        let (echo, mut stdin, mut stdout) = Echo::start(side, &exec_id)?;
        round_trip(&mut stdin, &mut stdout, "one")?;
        // The new client's ends open before the first client's close.
        let (mut new_stdin, mut new_stdout) = echo.reattach()?;
        drop((stdin, stdout));
        round_trip(&mut new_stdin, &mut new_stdout, "two").context("after re-attaching")?;
        echo.finish(new_stdin, new_stdout)?;
        side.remove()
    })
}

/// The descriptors a process has open: number → target.
fn open_fds(pid: u32) -> Result<BTreeMap<u32, String>> {
    let dir = format!("/proc/{pid}/fd");
    let mut fds = BTreeMap::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        let e = e?;
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let target = std::fs::read_link(e.path())
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        fds.insert(fd, target);
    }
    Ok(fds)
}

/// One step of [`WORKLOAD`]: what it does, and the step on a side's
/// container (with its init's pid).
type Step = (&'static str, fn(&Side, u32) -> Result<()>);

/// Every kind of exec the cases above make, in steps, on one container.
const WORKLOAD: &[Step] = &[
    ("3 execs that echo", |side, _| {
        for tag in ["w-echo-a", "w-echo-b", "w-echo-c"] {
            let out = side.exec(&side.ctx.id(tag), &[], &["echo", tag]).run()?;
            expect_out(&out, &format!("{tag}\n"), Some(""), 0)?;
        }
        Ok(())
    }),
    ("an exec that exits 5", |side, _| {
        let args = ["sh", "-c", "echo err >&2; exit 5"];
        let out = side.exec(&side.ctx.id("w-exit"), &[], &args).run()?;
        expect_out(&out, "", Some("err\n"), 5)
    }),
    ("an exec of a missing binary", |side, _| {
        let args = ["/no/such/binary"];
        let out = side.exec(&side.ctx.id("w-nobin"), &[], &args).run()?;
        ensure!(!out.success(), "it succeeded: {}", out.describe());
        Ok(())
    }),
    (
        "a detached exec, its id reused, then killed",
        |side, init| {
            let dup = side.ctx.id("w-dup");
            side.detached_sleeper(&dup, init)?;
            let again = side.exec(&dup, &[], &["true"]).run()?;
            ensure!(!again.success(), "a taken exec id was accepted");
            side.kill_exec(&dup)
        },
    ),
    ("8 execs at once", |side, _| {
        let ids: Vec<String> = (0..8).map(|i| side.ctx.id(&format!("w-par{i}"))).collect();
        let cmds = ids
            .iter()
            .map(|id| side.exec(id, &[], &among_many(&format!("echo {id}"), 0)))
            .collect();
        for (out, id) in crate::cmd::at_once(cmds, Cmd::run).into_iter().zip(&ids) {
            expect_out(&out?, &format!("{id}\n"), Some(""), 0)?;
        }
        Ok(())
    }),
    ("an API exec created, then deleted", |side, _| {
        let client = side.client()?;
        let created = side.ctx.id("w-created");
        let spec = side.process_spec(&["true"])?;
        client.exec(&side.id, &created, &spec, &Stdio::default())?;
        client.delete_process(&side.id, &created).map(drop)?;
        Ok(())
    }),
    ("an API exec with fifos", |side, _| {
        let client = side.client()?;
        let spec = side.process_spec(&["sh", "-c", "echo api; exit 3"])?;
        api_run(side, &client, &side.ctx.id("w-api"), &spec)?.expect(3, "api\n", Some(""))
    }),
    ("an API exec killed", |side, _| {
        let client = side.client()?;
        let killed = side.ctx.id("w-killed");
        let spec = side.process_spec(&["sleep", "1000"])?;
        client.exec(&side.id, &killed, &spec, &Stdio::default())?;
        client.start(&side.id, &killed)?;
        client.kill(&side.id, &killed, libc::SIGKILL)?;
        client.wait(&side.id, &killed)?;
        client.delete_process(&side.id, &killed).map(drop)?;
        Ok(())
    }),
];

fn shim_fds(ctx: &CtrCtx) -> Result<()> {
    on_both(ctx, |side| {
        let init = side.sleeper(&[])?;
        let shims = ctx.shims();
        ensure!(shims.len() == 1, "expected one shim, found {}", shims.len());
        let shim = shims[0].pid;
        // One exec first: whatever a shim opens once, for good, is open by
        // then.
        let out = side.exec(&ctx.id("warm-up"), &[], &["true"]).run()?;
        expect_out(&out, "", Some(""), 0)?;
        // runc-v2 (Go) holds the pidfd of a reaped process until its
        // garbage collector finalizes it, which may be minutes later: those
        // are not counted for runc-v2. Every descriptor of barge's is.
        let counted = || -> Result<BTreeMap<u32, String>> {
            let mut fds = open_fds(shim)?;
            if side.runc {
                fds.retain(|_, target| target != "anon_inode:[pidfd]");
            }
            Ok(fds)
        };
        let before = counted()?;
        let mut counts = Vec::new();
        for (step, run) in WORKLOAD {
            run(side, init.pid).context(step)?;
            counts.push(format!("{} after {step}", counted()?.len()));
        }
        let mut after = BTreeMap::new();
        let settled = poll(
            "the shim's descriptors to be as before",
            Duration::from_secs(10),
            || {
                after = counted()?;
                Ok((after.len() == before.len()).then_some(()))
            },
        );
        settled.with_context(|| {
            let gone: Vec<_> = before
                .iter()
                .filter(|(fd, _)| !after.contains_key(fd))
                .collect();
            let new: Vec<_> = after
                .iter()
                .filter(|(fd, t)| before.get(fd) != Some(t))
                .collect();
            format!(
                "shim {shim} had {} descriptors, now {}; closed {gone:?}, new or changed {new:?}; \
                 {}",
                before.len(),
                after.len(),
                counts.join(", ")
            )
        })?;
        side.remove()
    })
}
