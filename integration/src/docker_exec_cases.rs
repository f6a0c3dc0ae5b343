//! Docker cases for terminals and `docker exec`: `docker run -it` and
//! `docker exec -it`/`-t` through a real pty ([`crate::pty`]), and plain
//! `docker exec`, `docker exec -i` and `docker top`. Every case runs under
//! io.containerd.runc.v2 (the reference) and under barge, which must agree.

use std::time::Duration;

use anyhow::{ensure, Result};

use crate::cmd::{Cmd, Output};
use crate::containerd::RUNC_RUNTIME;
use crate::ctr_cases::expect;
use crate::docker_cases::{DockerCase, DockerCtx};
use crate::pty::{Pty, Size};
use crate::tty_cases::{
    both, check_large, drive_ctrl_c, drive_resize, resize_script, tty_path, Cleanup, Side,
    LARGE_SCRIPT, START, STEP, TRAP_INT,
};

pub fn cases() -> Vec<DockerCase> {
    type Custom = (&'static str, fn(&DockerCtx) -> Result<()>);
    let custom: [Custom; 9] = [
        ("tty-run", tty_run),
        ("tty-resize", tty_resize),
        ("exec-tty", exec_tty),
        ("exec-tty-resize", exec_tty_resize),
        ("exec-tty-ctrl-c", exec_tty_ctrl_c),
        ("exec-tty-large-output", exec_tty_large_output),
        ("exec-stdin-pipe", exec_stdin_pipe),
        ("exec-plain", exec_plain),
        ("exec-top", exec_top),
    ];
    DockerCase::list(custom)
}

/// The runtime of `side`: the pass's barge runtime, or runc-v2.
pub fn runtime(ctx: &DockerCtx, side: Side) -> &'static str {
    match side {
        Side::Runc => RUNC_RUNTIME,
        Side::Barge => ctx.runtime(),
    }
}

/// A container name for this case and side.
pub fn name(case: &str, side: Side) -> String {
    match side {
        Side::Runc => format!("{case}-runc"),
        Side::Barge => format!("{case}-barge"),
    }
}

/// Line `n` of what the pty showed must be `want` (the client's size).
fn expect_line(out: &Output, n: usize, want: &str, what: &str) -> Result<()> {
    let line = out.stdout.lines().nth(n).unwrap_or("").trim();
    ensure!(
        line == want,
        "{what} printed {line:?}, the client's size is {want:?}: {}",
        out.describe()
    );
    Ok(())
}

/// Removes a container by name unless the case reaches its end.
pub fn cleanup(ctx: &DockerCtx, name: &str) -> Cleanup {
    let mut c = Cleanup::new();
    c.push(ctx.docker().args(["rm", "-f", name]));
    c
}

/// `docker run -it --rm --name NAME busybox sh -c SCRIPT` on a pty of `size`.
fn run_tty(ctx: &DockerCtx, side: Side, name: &str, script: &str, size: Size) -> Result<Pty> {
    let cmd = ctx
        .run_with(runtime(ctx, side))
        .args(["-it", "--rm", "--name", name, "busybox", "sh", "-c", script]);
    Pty::spawn(cmd, size)
}

fn tty_run(ctx: &DockerCtx) -> Result<()> {
    // Docker passes the client's size in the spec (consoleSize): the very
    // first `stty size` shows it. The exit code comes back through the tty.
    let size = Size::new(37, 111);
    both(|side| {
        let name = name("tty-run", side);
        let guard = cleanup(ctx, &name);
        let out = run_tty(ctx, side, &name, "tty; stty size; exit 7", size)?.wait()?;
        ensure!(out.code() == 7, "expected exit 7: {}", out.describe());
        let tty = tty_path(&out, 0)?;
        expect_line(&out, 1, &size.stty(), "`stty size`")?;
        guard.done();
        Ok(tty)
    })
}

fn tty_resize(ctx: &DockerCtx) -> Result<()> {
    both(|side| {
        let name = name("tty-resize", side);
        let guard = cleanup(ctx, &name);
        let pty = run_tty(ctx, side, &name, &resize_script(START, 0), START)?;
        let tty = tty_path(&drive_resize(pty, START, 0)?, 0)?;
        guard.done();
        Ok(tty)
    })
}

/// Runs `body` with a sleeping container on `side`, then removes it.
fn with_sleeper<T>(
    ctx: &DockerCtx,
    case: &str,
    side: Side,
    body: impl FnOnce(&str, u32) -> Result<T>,
) -> Result<T> {
    with_container(ctx, case, side, &[], &["sleep", "1000"], body)
}

/// Runs `body` with a running container on `side` (`docker run -d FLAGS
/// busybox ARGS`; `body` gets its id and the pid of its init), then
/// removes it, also when `body` fails.
pub fn with_container<T>(
    ctx: &DockerCtx,
    case: &str,
    side: Side,
    flags: &[&str],
    args: &[&str],
    body: impl FnOnce(&str, u32) -> Result<T>,
) -> Result<T> {
    let name = name(case, side);
    let guard = cleanup(ctx, &name);
    let run = ctx
        .run_with(runtime(ctx, side))
        .args(["--name", name.as_str()])
        .args(flags);
    let (id, state) = ctx.start(run, args)?;
    let v = body(&id, state.pid)?;
    ctx.docker().args(["rm", "-f", &id]).ok()?;
    guard.done();
    Ok(v)
}

/// `docker exec FLAGS ID ARGS`.
fn exec(ctx: &DockerCtx, flags: &[&str], id: &str, args: &[&str]) -> Cmd {
    ctx.docker()
        .arg("exec")
        .args(flags)
        .arg(id)
        .args(args)
        .timeout(Duration::from_secs(40))
}

fn exec_tty(ctx: &DockerCtx) -> Result<()> {
    // An interactive shell: what is typed is echoed and run.
    both(|side| {
        with_sleeper(ctx, "exec-tty", side, |id, _| {
            let pty = Pty::spawn(exec(ctx, &["-it"], id, &["sh"]), START)?;
            pty.wait_for("# ", STEP)?;
            pty.send("echo hi-$((1+2))\r")?;
            pty.wait_for("hi-3", STEP)?;
            let text = pty.text();
            ensure!(
                text.contains("echo hi-$((1+2))"),
                "the typed line was not echoed: {text:?}"
            );
            pty.send("exit 3\r")?;
            let out = pty.wait()?;
            ensure!(out.code() == 3, "expected exit 3: {}", out.describe());
            Ok(())
        })
    })
}

fn exec_tty_resize(ctx: &DockerCtx) -> Result<()> {
    let start = Size::new(29, 97);
    both(|side| {
        with_sleeper(ctx, "exec-tty-resize", side, |id, _| {
            // Docker passes the client's size (consoleSize) for an exec
            // too: the first `stty size` shows it, before any resize.
            let script = format!("stty size; {}", resize_script(start, 4));
            let pty = Pty::spawn(exec(ctx, &["-it"], id, &["sh", "-c", &script]), start)?;
            let out = drive_resize(pty, start, 4)?;
            expect_line(&out, 0, &start.stty(), "`stty size` before any resize")?;
            tty_path(&out, 1)
        })
    })
}

fn exec_tty_ctrl_c(ctx: &DockerCtx) -> Result<()> {
    both(|side| {
        with_sleeper(ctx, "exec-tty-ctrl-c", side, |id, _| {
            drive_ctrl_c(Pty::spawn(
                exec(ctx, &["-it"], id, &["sh", "-c", TRAP_INT]),
                START,
            )?)
        })
    })
}

fn exec_tty_large_output(ctx: &DockerCtx) -> Result<()> {
    // `-t` without `-i`: the client leaves its terminal cooked, so the line
    // ends are translated twice; runc-v2 shows the same.
    both(|side| {
        with_sleeper(ctx, "exec-tty-large-output", side, |id, _| {
            let cmd = exec(ctx, &["-t"], id, &["sh", "-c", LARGE_SCRIPT]);
            check_large(&Pty::spawn(cmd, START)?.wait()?)
        })
    })
}

fn exec_stdin_pipe(ctx: &DockerCtx) -> Result<()> {
    // stdin from a pipe: `cat` reads it to its end and ends.
    let data = "line one\nline two\n";
    both(|side| {
        with_sleeper(ctx, "exec-stdin-pipe", side, |id, _| {
            let out = exec(ctx, &["-i"], id, &["cat"])
                .stdin(data)
                .timeout(Duration::from_secs(15))
                .run()?;
            expect(&out, data, 0)
        })
    })
}

fn exec_plain(ctx: &DockerCtx) -> Result<()> {
    both(|side| {
        with_sleeper(ctx, "exec-plain", side, |id, _| {
            let out = exec(ctx, &[], id, &["echo", "hello"]).run()?;
            expect(&out, "hello\n", 0)?;
            let out = exec(ctx, &[], id, &["sh", "-c", "echo to-err >&2; exit 5"]).run()?;
            expect(&out, "", 5)?;
            ensure!(out.stderr == "to-err\n", "stderr: {}", out.describe());
            let out = exec(
                ctx,
                &["-e", "FOO=bar", "-u", "1000", "-w", "/tmp"],
                id,
                &["sh", "-c", "echo $FOO; id -u; pwd"],
            )
            .run()?;
            expect(&out, "bar\n1000\n/tmp\n", 0)
        })
    })
}

/// The PID and CMD columns of `docker top`.
fn top(ctx: &DockerCtx, id: &str) -> Result<Vec<(u32, String)>> {
    let out = ctx.docker().args(["top", id]).ok()?;
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(pid), Some(cmd)) = (col("PID"), col("CMD")) else {
        anyhow::bail!("no PID and CMD columns: {}", out.describe());
    };
    Ok(lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(pid)?.parse().ok()?, f.get(cmd..)?.join(" ")))
        })
        .collect())
}

fn exec_top(ctx: &DockerCtx) -> Result<()> {
    // `docker top` lists the shim's Pids: the init and a detached exec.
    both(|side| {
        with_sleeper(ctx, "exec-top", side, |id, init| {
            exec(ctx, &["-d"], id, &["sleep", "777"]).ok()?;
            let rows = top(ctx, id)?;
            ensure!(
                rows.contains(&(init, "sleep 1000".to_string())),
                "the init (pid {init}, sleep 1000) is not in {rows:?}"
            );
            ensure!(
                rows.iter().any(|(_, c)| c == "sleep 777"),
                "the exec (sleep 777) is not in {rows:?}"
            );
            let mut cmds: Vec<String> = rows.into_iter().map(|(_, c)| c).collect();
            cmds.sort();
            Ok(cmds)
        })
    })
}
