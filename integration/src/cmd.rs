//! Running external commands with a timeout, and the per-case deadline.
//!
//! Every command the suite runs goes through [`Cmd`]. A command is killed
//! (with its process group) when its own timeout or the current case's
//! deadline passes, so a hang fails the case instead of blocking the run.

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The default timeout of one command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Sets (or clears) the deadline of the case that runs on this thread.
pub fn set_deadline(deadline: Option<Instant>) {
    DEADLINE.with(|d| d.set(deadline));
}

/// The deadline of the case that runs on this thread.
pub fn deadline() -> Option<Instant> {
    DEADLINE.with(|d| d.get())
}

/// `timeout` from now, cut short by the case deadline.
pub fn bounded(timeout: Duration) -> Instant {
    let own = Instant::now() + timeout;
    match deadline() {
        Some(d) if d < own => d,
        _ => own,
    }
}

/// Polls `f` until it gives `Some`, for at most `timeout` (and never past the
/// case deadline). The wait between polls grows from 5 to 100 ms.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let end = bounded(timeout);
    let mut pause = Duration::from_millis(5);
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= end {
            match last_err {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}: {e:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Waits up to 5 s for a line of the shim's log (what `lines` reads, from
/// containerd's log) that contains `wanted`.
pub fn wait_for_shim_line(lines: impl Fn() -> Vec<String>, wanted: &str) -> Result<()> {
    poll(
        "the shim's log line in containerd's log",
        Duration::from_secs(5),
        || Ok(lines().iter().any(|l| l.contains(wanted)).then_some(())),
    )
    .with_context(|| format!("barge lines: {:?}", lines()))
}

/// What a finished command left.
/// Runs each command on a thread of its own, all at once; `run` is
/// [`Cmd::run`], or a run on a pty. The results are in the commands' order.
pub fn at_once(cmds: Vec<Cmd>, run: impl Fn(Cmd) -> Result<Output> + Sync) -> Vec<Result<Output>> {
    std::thread::scope(|s| {
        let run = &run;
        let handles: Vec<_> = cmds.into_iter().map(|c| s.spawn(move || run(c))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect()
    })
}

/// The lines of `text` that hold something, trimmed: a listing's ids.
pub fn nonempty_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for messages.
    pub cmdline: String,
    pub elapsed: Duration,
}

impl Output {
    /// The exit code; 128+N for a death by signal N, as a shell reports it.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .or_else(|| self.status.signal().map(|s| 128 + s))
            .unwrap_or(-1)
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout then stderr.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// A one-line summary for error messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited {} (stdout {:?}, stderr {:?})",
            self.cmdline,
            self.code(),
            clip(&self.stdout),
            clip(&self.stderr)
        )
    }

    /// Fails unless the command exited 0.
    pub fn ok(self) -> Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            bail!("{}", self.describe())
        }
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 600;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &s[..cut])
    }
}

/// A command to run.
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.envs
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Feeds `data` to the command's stdin, then closes it. (Without this,
    /// stdin is /dev/null.)
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(data.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }

    pub fn cmdline(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| {
                let s = a.to_string_lossy();
                if s.is_empty() || s.contains([' ', '\'', '"', '$']) {
                    format!("'{}'", s.replace('\'', "'\\''"))
                } else {
                    s.into_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The timeout of this command.
    pub fn timeout_of(&self) -> Duration {
        self.timeout
    }

    /// The program, args and env as a `std::process::Command`, with nothing
    /// else set (for a caller that sets up stdio itself, like the pty driver).
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Starts the command in its own process group, with piped output.
    pub fn spawn(self) -> Result<Running> {
        let cmdline = self.cmdline();
        let mut c = self.command();
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        c.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c.spawn().with_context(|| format!("spawn `{cmdline}`"))?;
        if let (Some(data), Some(mut pipe)) = (self.stdin, child.stdin.take()) {
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&data);
            });
        }
        let out = reader(child.stdout.take());
        let err = reader(child.stderr.take());
        Ok(Running {
            child: Some(child),
            out: Some(out),
            err: Some(err),
            cmdline,
            started: Instant::now(),
            timeout: self.timeout,
        })
    }

    /// Runs the command to its end. Fails only when it cannot be started or
    /// runs past its timeout; a non-zero exit is in the [`Output`].
    pub fn run(self) -> Result<Output> {
        self.spawn()?.wait()
    }

    /// Runs the command and fails unless it exits 0.
    pub fn ok(self) -> Result<Output> {
        self.run()?.ok()
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A command that runs in the background. Dropping it kills it.
pub struct Running {
    child: Option<Child>,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
    cmdline: String,
    started: Instant,
    timeout: Duration,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Whether the command has ended (without collecting it).
    pub fn finished(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Waits for the command's end, within its timeout and the case deadline.
    pub fn wait(mut self) -> Result<Output> {
        let end = bounded(self.timeout.saturating_sub(self.started.elapsed()));
        let mut child = self.child.take().expect("not yet waited");
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= end {
                kill_group(&mut child);
                let out = self.out.take().map(join).unwrap_or_default();
                let err = self.err.take().map(join).unwrap_or_default();
                bail!(
                    "`{}` timed out after {:?} and was killed (stdout {:?}, stderr {:?})",
                    self.cmdline,
                    self.started.elapsed(),
                    clip(&out),
                    clip(&err)
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        // A grandchild may hold the pipes; don't wait on it forever.
        let stdout = self.out.take().map(join).unwrap_or_default();
        let stderr = self.err.take().map(join).unwrap_or_default();
        Ok(Output {
            status,
            stdout,
            stderr,
            cmdline: self.cmdline.clone(),
            elapsed,
        })
    }
}

fn join(h: JoinHandle<String>) -> String {
    h.join().unwrap_or_default()
}

fn kill_group(child: &mut Child) {
    // SAFETY: plain kill(2) on our own child's process group; the child has
    // not been reaped, so its pid (and group id) cannot have been reused.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                kill_group(&mut child);
            }
        }
    }
}
