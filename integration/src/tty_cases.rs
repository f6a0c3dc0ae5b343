//! Terminal cases for ctr: `ctr run -t` and `ctr task exec -t`, driven
//! through a real pty ([`crate::pty`]). Every case runs under runc-v2 (the
//! reference) and under barge, which must agree. The pieces the Docker
//! terminal cases share (the scripts, [`both`], [`Cleanup`]) are here too.

use std::fmt::Debug;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::cmd::{self, Cmd, Output};
use crate::ctr::{CtrCtx, Run};
use crate::ctr_cases::CtrCase;
use crate::pty::{Pty, Size};

/// The size a pty starts with, unless a case says otherwise.
pub const START: Size = Size::new(24, 80);
/// The size a case resizes the pty to.
pub const RESIZED: Size = Size::new(50, 132);
/// How long a step on the pty may take.
pub const STEP: Duration = Duration::from_secs(20);

/// Traps SIGINT (which the container's pty sends for a typed Ctrl-C), says
/// it is ready, and waits.
pub const TRAP_INT: &str =
    "trap 'echo got-int; exit 130' INT; echo ready; while :; do sleep 0.1; done";

/// Bytes of output from a tty exec: more than 1 MiB.
pub const LARGE: usize = 1_200_000;
/// Prints [`LARGE`] x's, then a line the case checks for.
pub const LARGE_SCRIPT: &str = "head -c 1200000 /dev/zero | tr '\\0' x; echo; echo end-$((6*7))";

/// A shell snippet that prints `size=ROWS COLS` each time `stty size`
/// changes, until it is `target` (status 0) or 30 s have passed (status 1).
pub fn watch_size(target: Size) -> String {
    format!(
        "last=; n=0; until [ \"$last\" = \"{t}\" ] || [ $n -ge 300 ]; do \
         s=$(stty size); if [ \"$s\" != \"$last\" ]; then echo \"size=$s\"; last=$s; fi; \
         [ \"$s\" = \"{t}\" ] || sleep 0.1; n=$((n+1)); done; [ \"$last\" = \"{t}\" ]",
        t = target.stty()
    )
}

/// The script of a resize check: `tty`, then the size must become `start`
/// (set by the client when the process starts), then [`RESIZED`] (after the
/// case resizes the pty), then it exits `code`.
pub fn resize_script(start: Size, code: i32) -> String {
    format!(
        "tty; {} || exit 1; {} || exit 1; exit {code}",
        watch_size(start),
        watch_size(RESIZED)
    )
}

/// Drives a [`resize_script`] on `pty`: waits for the start size, resizes,
/// and waits for the end. Returns the output after checking the exit code
/// and the new size.
///
/// The client may not listen for SIGWINCH yet when the process shows its
/// start size (docker installs its handler only after its first resize call
/// returns, and Go drops a SIGWINCH nobody asked for), so a resize that shows
/// nothing within 2 s is sent again, by way of another size: setting the
/// size a pty already has sends no signal.
pub fn drive_resize(pty: Pty, start: Size, code: i32) -> Result<Output> {
    const TRIES: usize = 5;
    pty.wait_for(&format!("size={}", start.stty()), STEP)
        .context("the start size never showed")?;
    let resized = format!("size={}", RESIZED.stty());
    for attempt in 1..=TRIES {
        if attempt > 1 {
            pty.resize(Size::new(RESIZED.rows - 1, RESIZED.cols - 1))?;
        }
        pty.resize(RESIZED)?;
        match pty.wait_for(&resized, Duration::from_secs(2)) {
            Ok(()) => break,
            Err(e) if attempt == TRIES => {
                return Err(e).context(format!("the new size never showed, after {TRIES} resizes"))
            }
            Err(_) => {}
        }
    }
    let out = pty.wait()?;
    ensure!(
        out.code() == code,
        "expected exit {code}: {}",
        out.describe()
    );
    Ok(out)
}

/// The terminal `tty` printed as line `n` (from 0) of the output:
/// `/dev/pts/N`.
pub fn tty_path(out: &Output, n: usize) -> Result<String> {
    let line = out.stdout.lines().nth(n).unwrap_or("").trim();
    ensure!(
        line.starts_with("/dev/pts/") && line["/dev/pts/".len()..].parse::<u32>().is_ok(),
        "`tty` printed {line:?}, not /dev/pts/N: {}",
        out.describe()
    );
    Ok(line.to_string())
}

/// Types Ctrl-C once the pty shows "ready" ([`TRAP_INT`]): the process must
/// say `got-int` and exit 130.
pub fn drive_ctrl_c(pty: Pty) -> Result<()> {
    pty.wait_for("ready", STEP)?;
    pty.send("\x03")?;
    pty.wait_for("got-int", STEP)
        .context("Ctrl-C did not reach the process")?;
    let out = pty.wait()?;
    ensure!(out.code() == 130, "expected exit 130: {}", out.describe());
    Ok(())
}

/// Checks the output of [`LARGE_SCRIPT`]: every x arrived, then the end
/// line. Returns what is not an x (line ends as the ttys made them), which
/// barge and runc-v2 must agree on.
pub fn check_large(out: &Output) -> Result<String> {
    let xs = out.stdout.bytes().filter(|b| *b == b'x').count();
    let rest: String = out.stdout.chars().filter(|c| *c != 'x').collect();
    ensure!(
        out.code() == 0 && xs == LARGE && rest.contains("end-42"),
        "exit {}, {xs} x's of {LARGE}, and besides them {:?}",
        out.code(),
        rest.chars().take(300).collect::<String>()
    );
    let first_x = out.stdout.find('x').unwrap_or(0);
    let last_x = out.stdout.rfind('x').unwrap_or(0);
    ensure!(
        last_x + 1 - first_x == LARGE,
        "the x's are not in one run: {:?} between them",
        out.stdout[first_x..=last_x].replace('x', "")
    );
    Ok(rest)
}

/// Which shim a run goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// io.containerd.runc.v2, the reference.
    Runc,
    Barge,
}

impl Side {
    /// The tag in container names: "runc", or none for barge.
    pub fn tag(self) -> &'static str {
        match self {
            Side::Runc => "runc",
            Side::Barge => "",
        }
    }

    /// A container or exec id for this side (recorded for the leak check).
    pub fn id(self, ctx: &CtrCtx, what: &str) -> String {
        let tag: Vec<&str> = [self.tag(), what]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        ctx.id(&tag.join("-"))
    }

    /// A `ctr run` of busybox on this side.
    pub fn run<'a>(self, ctx: &'a CtrCtx<'a>, id: &str) -> Run<'a> {
        match self {
            Side::Runc => ctx.run(id).runc(),
            Side::Barge => ctx.run(id),
        }
    }
}

/// Runs `f` under runc-v2 and under barge. Both must succeed and give the
/// same value; barge runs even when the reference fails, so that a report
/// shows both.
pub fn both<T: PartialEq + Debug>(f: impl Fn(Side) -> Result<T>) -> Result<()> {
    let runc = f(Side::Runc);
    let barge = f(Side::Barge);
    match (runc, barge) {
        (Ok(r), Ok(b)) => {
            ensure!(r == b, "barge gave {b:?}, runc-v2 {r:?}");
            Ok(())
        }
        (Err(r), Ok(_)) => bail!("runc-v2 (reference): {r:#}"),
        (Ok(_), Err(b)) => bail!("barge: {b:#}"),
        (Err(r), Err(b)) => bail!("runc-v2 (reference): {r:#}; barge: {b:#}"),
    }
}

/// Commands that remove what a case made, run on drop unless the case
/// reached its end ([`Cleanup::done`]): a failing case kills its own
/// containers, and the leak check still sees what a passing case left.
#[derive(Default)]
pub struct Cleanup {
    cmds: Vec<Cmd>,
}

impl Cleanup {
    pub fn new() -> Cleanup {
        Cleanup::default()
    }

    pub fn push(&mut self, cmd: Cmd) {
        self.cmds.push(cmd);
    }

    /// Removes a ctr container and its task, whatever state they are in.
    pub fn ctr(&mut self, ctx: &CtrCtx, id: &str) {
        self.push(ctx.ctr().args(["tasks", "rm", "-f", id]));
        self.push(ctx.ctr().args(["containers", "rm", id]));
    }

    /// The case got to its end: nothing to do.
    pub fn done(mut self) {
        self.cmds.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.cmds.is_empty() {
            return;
        }
        // The case's deadline may be past: these get their own time.
        let deadline = cmd::deadline();
        cmd::set_deadline(None);
        for c in self.cmds.drain(..) {
            let _ = c.timeout(Duration::from_secs(15)).run();
        }
        cmd::set_deadline(deadline);
    }
}

/// The ctr terminal cases.
pub fn cases() -> Vec<CtrCase> {
    type Custom = (&'static str, fn(&CtrCtx) -> Result<()>);
    let custom: [Custom; 5] = [
        ("tty-run", tty_run),
        ("tty-resize", tty_resize),
        ("tty-ctrl-c", tty_ctrl_c),
        ("tty-exec", tty_exec),
        ("tty-exec-large-output", tty_exec_large_output),
    ];
    CtrCase::list(custom)
}

/// `ctr run --rm -t ... sh -c SCRIPT` on a pty of `size`.
fn run_tty(ctx: &CtrCtx, side: Side, id: &str, script: &str, size: Size) -> Result<Pty> {
    let cmd = side
        .run(ctx, id)
        .rm()
        .flags(["-t"])
        .args(["sh", "-c", script])
        .timeout(Duration::from_secs(40))
        .cmd();
    Pty::spawn(cmd, size)
}

fn tty_run(ctx: &CtrCtx) -> Result<()> {
    // The process's stdio is a terminal, and its exit code comes back
    // through ctr.
    both(|side| {
        let id = side.id(ctx, "");
        let mut cleanup = Cleanup::new();
        cleanup.ctr(ctx, &id);
        let out = run_tty(ctx, side, &id, "tty; exit 7", START)?.wait()?;
        ensure!(out.code() == 7, "expected exit 7: {}", out.describe());
        let tty = tty_path(&out, 0)?;
        cleanup.done();
        Ok(tty)
    })
}

fn tty_resize(ctx: &CtrCtx) -> Result<()> {
    // ctr sets the size once the process has started (so the process
    // waits for it), and again on SIGWINCH: each is a ResizePty.
    let start = Size::new(29, 97);
    both(|side| {
        let id = side.id(ctx, "");
        let mut cleanup = Cleanup::new();
        cleanup.ctr(ctx, &id);
        let pty = run_tty(ctx, side, &id, &resize_script(start, 0), start)?;
        let tty = tty_path(&drive_resize(pty, start, 0)?, 0)?;
        cleanup.done();
        Ok(tty)
    })
}

fn tty_ctrl_c(ctx: &CtrCtx) -> Result<()> {
    // ctr puts its terminal in raw mode: the typed Ctrl-C travels as a
    // byte to the container's pty, whose line discipline sends SIGINT.
    both(|side| {
        let id = side.id(ctx, "");
        let mut cleanup = Cleanup::new();
        cleanup.ctr(ctx, &id);
        drive_ctrl_c(run_tty(ctx, side, &id, TRAP_INT, START)?)?;
        cleanup.done();
        Ok(())
    })
}

/// Runs `body` with a sleeping container on `side`, then removes it.
fn with_sleeper<T>(ctx: &CtrCtx, side: Side, body: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    let id = side.id(ctx, "");
    let mut cleanup = Cleanup::new();
    cleanup.ctr(ctx, &id);
    ctx.start_sleeper(side.run(ctx, &id), &id)?;
    let v = body(&id)?;
    ctx.kill_and_remove(&id)?;
    cleanup.done();
    Ok(v)
}

/// `ctr task exec -t --exec-id <new id> ID sh -c SCRIPT` on a pty of `size`.
fn exec_tty(ctx: &CtrCtx, side: Side, id: &str, script: &str, size: Size) -> Result<Pty> {
    let exec_id = side.id(ctx, "exec");
    let cmd = ctx
        .ctr()
        .args(["tasks", "exec", "-t", "--exec-id", &exec_id, id])
        .args(["sh", "-c", script])
        .timeout(Duration::from_secs(40));
    Pty::spawn(cmd, size)
}

fn tty_exec(ctx: &CtrCtx) -> Result<()> {
    // An exec with a terminal in a running container: its own pty, sized
    // when it starts and resized on SIGWINCH, and its exit code.
    let start = Size::new(31, 103);
    both(|side| {
        with_sleeper(ctx, side, |id| {
            let pty = exec_tty(ctx, side, id, &resize_script(start, 4), start)?;
            tty_path(&drive_resize(pty, start, 4)?, 0)
        })
    })
}

fn tty_exec_large_output(ctx: &CtrCtx) -> Result<()> {
    // More than 1 MiB through the exec's pty, the shim and ctr: complete.
    // The exec then waits a second before it exits: when the exit comes,
    // ctr deletes the exec, and containerd's client (cio's Cancel) closes
    // the fifos it has not finished reading, under runc-v2 as under barge
    // (seen here losing up to 53 KiB of the tail with both). The Docker case
    // (`exec-tty-large-output`) checks the output of an exec that ends at
    // once: dockerd reads to the end.
    let script = format!("{LARGE_SCRIPT}; sleep 1");
    both(|side| {
        with_sleeper(ctx, side, |id| {
            check_large(&exec_tty(ctx, side, id, &script, START)?.wait()?)
        })
    })
}
