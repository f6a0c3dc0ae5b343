//! Running one command and timing it precisely.
//!
//! The harness's `Cmd` polls for the child's end with a growing pause (up to
//! 20 ms), which is fine for tests but would add up to 20 ms of noise to a
//! 100 ms figure. Here the caller blocks in wait(2) and a watchdog thread
//! enforces the timeout, so the measured time ends when the child does.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How one timed command ended.
#[derive(Debug)]
pub struct Timed {
    /// From just before the fork to just after wait(2) returned.
    pub elapsed: Duration,
    pub status: ExitStatus,
    pub stderr: String,
    pub timed_out: bool,
}

impl Timed {
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }

    /// A one-line description of a failure.
    pub fn failure(&self) -> String {
        let err = self.stderr.trim().replace('\n', " | ");
        if self.timed_out {
            format!("timed out after {:?}: {err}", self.elapsed)
        } else {
            format!("{}: {err}", self.status)
        }
    }
}

/// Runs `program args` with `envs` added to the environment, stdin and
/// stdout on /dev/null, in its own process group, and kills the group after
/// `timeout`. Fails only when the command cannot be started.
pub fn timed(
    program: &Path,
    envs: &[(&str, &str)],
    args: &[OsString],
    timeout: Duration,
) -> Result<Timed> {
    let mut c = Command::new(program);
    c.args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = c
        .spawn()
        .with_context(|| format!("spawn {}", program.display()))?;
    let pgid = child.id() as i32;
    let (done, rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
            // SAFETY: kill(2) on the process group of a child that the
            // spawning thread has not reaped yet (it is blocked reading its
            // stderr or in wait), so the group id is still ours.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            return true;
        }
        false
    });
    let mut buf = Vec::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_end(&mut buf);
    }
    let status = child.wait();
    let elapsed = start.elapsed();
    drop(done);
    let timed_out = watchdog.join().unwrap_or(false);
    let status = status.with_context(|| format!("wait for {}", program.display()))?;
    Ok(Timed {
        elapsed,
        status,
        stderr: String::from_utf8_lossy(&buf).into_owned(),
        timed_out,
    })
}
