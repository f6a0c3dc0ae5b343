//! Logging binaries: a process's stdout and stderr given to a program named
//! by `binary:///path/to/logger?key=value` (or `binary-v2://`, which
//! containerd 2.2+ may ask for), as containerd documents them and
//! containerd-shim-runc-v2 runs them.
//!
//! The logger is a child of the shim. It gets /dev/null as 0, 1 and 2 and
//! three more descriptors: 3 reads the process's stdout, 4 its stderr (two
//! pipes), and 5 is the write end of the "wait" pipe. It says it is ready
//! by writing a byte to fd 5 and closing it; for `binary://`, closing it is
//! enough. Its environment is `CONTAINER_ID` (the container's id, or the
//! exec's) and `CONTAINER_NAMESPACE`, nothing else; each `key=value` of the
//! URI's query becomes two arguments, `key value` (a key's first value only),
//! as with runc-v2 up to containerd 2.3 at least. (containerd's main branch
//! turns `env.NAME=value` into an environment variable instead.)
//!
//! The process writes into the pipes; the shim keeps a write end of each
//! until the process's exit is published, then closes it, so that the logger
//! reads end-of-file once the process and whatever it left are gone too. A
//! logger still running [`EOF_GRACE`] later gets SIGTERM, and SIGKILL after
//! [`TERM_GRACE`] more.
//!
//! A logger that can't be run, exits before it is ready, or is not ready
//! within [`READY_TIMEOUT`] fails the creation of the process with an error
//! that names it; it is killed and reaped at once, and none of its pipes
//! stays open in the shim. (runc-v2 waits without a bound, and takes a
//! `binary://` logger that exits at once for ready.)
//!
//! The shim's reaper collects every child, loggers too: [`reaped`] tells it
//! which pids are loggers, so that their exits never reach the process table.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::process::{self, Exit};

/// How long a logger has to say it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a logger may run on once the process's output has ended.
pub const EOF_GRACE: Duration = Duration::from_secs(5);
/// How long a logger may run on after SIGTERM.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// How long a `binary://` logger that closed fd 5 has to show it is still
/// running rather than exiting.
const EXIT_GLANCE: Duration = Duration::from_millis(10);

/// Loggers not yet reaped, by pid (with their binary, for the log).
static LIVE: Mutex<BTreeMap<u32, String>> = Mutex::new(BTreeMap::new());
/// The tasks that end loggers whose process has gone.
static ENDING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whose output a logger takes: its `CONTAINER_ID` and `CONTAINER_NAMESPACE`.
#[derive(Debug, Clone, Default)]
pub struct Owner {
    /// The container's id for its init, the exec id for an exec.
    pub id: String,
    pub namespace: String,
}

impl Owner {
    pub fn new(id: &str, namespace: &str) -> Owner {
        Owner {
            id: id.to_string(),
            namespace: namespace.to_string(),
        }
    }
}

/// The output streams of a process, as the logger sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// fd 3 of the logger.
    Stdout = 0,
    /// fd 4 of the logger.
    Stderr = 1,
}

/// Whether `uri` names a logging binary.
pub fn is_binary(uri: &str) -> bool {
    uri.starts_with("binary://") || uri.starts_with("binary-v2://")
}

/// The reaper collected `pid`: true if it was a logger, whose exit is
/// nobody else's business.
pub fn reaped(pid: u32, exit: &Exit) -> bool {
    let Some(path) = lock(&LIVE).remove(&pid) else {
        return false;
    };
    if exit.status == 0 {
        log::debug!("logging binary {path} (pid {pid}) exited");
    } else {
        log::warn!(
            "logging binary {path} (pid {pid}) exited with status {}",
            exit.status
        );
    }
    true
}

/// Waits until every logger whose process has gone has ended (each within
/// its bound): for the shim's shutdown, so that none outlives it.
pub async fn ended() {
    let ending = std::mem::take(&mut *lock(&ENDING));
    for task in ending {
        let _ = task.await;
    }
}

/// A running logging binary. Dropping it closes the shim's ends of its
/// pipes and ends it (see the module's doc).
#[derive(Debug)]
pub struct Logger {
    uri: String,
    path: String,
    pid: u32,
    pidfd: Option<OwnedFd>,
    /// The shim's write ends of the stdout and stderr pipes.
    pipes: [Option<OwnedFd>; 2],
}

impl Logger {
    /// Runs the logger that `uri` names for `owner`'s output and waits
    /// until it is ready.
    pub fn start(uri: &str, owner: &Owner) -> Result<Logger> {
        Self::launch(uri, owner, READY_TIMEOUT)
    }

    fn launch(uri: &str, owner: &Owner, ready_within: Duration) -> Result<Logger> {
        let command = parse(uri)?;
        let path = command.path.clone();
        let (out_r, out_w) = pipe(&path)?;
        let (err_r, err_w) = pipe(&path)?;
        let (wait_r, wait_w) = pipe(&path)?;
        let child = command
            .build(owner, [&out_r, &err_r, &wait_w])
            .spawn()
            .map_err(Error::io(format!("start logging binary {path}")))?;
        let pid = child.id();
        lock(&LIVE).insert(pid, path.clone());
        // The logger has its own copies now.
        drop((out_r, err_r, wait_w));
        let mut logger = Logger {
            uri: uri.to_string(),
            path,
            pid,
            pidfd: None,
            pipes: [Some(out_w), Some(err_w)],
        };
        let ready = process::pidfd(pid)
            .map_err(Error::io(format!("watch logging binary {}", logger.path)))
            .and_then(|pidfd| {
                logger.pidfd = Some(pidfd);
                logger.wait_ready(&wait_r, command.strict, ready_within)
            });
        match ready {
            Ok(()) => Ok(logger),
            Err(e) => {
                logger.discard(child);
                Err(e)
            }
        }
    }

    /// The URI the logger was started for.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// A descriptor that writes into the logger's pipe for `stream`, for
    /// the process to have as that stream.
    pub fn writer(&self, stream: Stream) -> Result<OwnedFd> {
        self.pipes[stream as usize]
            .as_ref()
            .ok_or_else(|| Error::Other(format!("logging binary {}: pipe closed", self.path)))?
            .try_clone()
            .map_err(Error::io(format!(
                "duplicate the pipe of logging binary {}",
                self.path
            )))
    }

    /// Waits until the logger says it is ready, on `wait`, the read end of
    /// its fd 5. `strict` (binary-v2) wants a byte; otherwise end-of-file
    /// will do, as long as the logger still reads its pipes.
    fn wait_ready(&self, wait: &OwnedFd, strict: bool, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let mut byte = [0u8; 1];
        let read = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !readable(wait, left)? {
                let how = if strict {
                    "write a byte to fd 5"
                } else {
                    "close fd 5, or write a byte to it"
                };
                return Err(self.failed(&format!(
                    "was not ready within {within:?} (a ready logger must {how})"
                )));
            }
            match nix::unistd::read(wait.as_raw_fd(), &mut byte) {
                Err(nix::Error::EINTR | nix::Error::EAGAIN) => continue,
                r => break r,
            }
        };
        let read = read.map_err(|e| {
            Error::io(format!(
                "read the wait pipe of logging binary {}",
                self.path
            ))(e.into())
        })?;
        match read {
            1 => Ok(()),
            _ if strict => Err(self.failed(&format!(
                "closed fd 5 without writing to it, which binary-v2:// asks for{}",
                self.gone()
                    .map(|s| format!(" (it {s})"))
                    .unwrap_or_default()
            ))),
            _ => match self.gone() {
                Some(how) => Err(self.failed(&format!("{how} before it was ready"))),
                None => Ok(()),
            },
        }
    }

    /// How the logger ended, if it has. Its exit closes 3 and 4 before 5,
    /// so no reader left on either pipe means that it is going; otherwise
    /// it gets [`EXIT_GLANCE`] to show that it has exited (another fork
    /// that has not exec'd yet may still hold a copy of a pipe).
    fn gone(&self) -> Option<String> {
        let mut fds: Vec<PollFd> = self
            .pipes
            .iter()
            .flatten()
            .map(|p| PollFd::new(p.as_fd(), PollFlags::empty()))
            .collect();
        let _ = poll(&mut fds, PollTimeout::ZERO);
        let no_reader = fds
            .iter()
            .all(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLERR)));
        let glance = if no_reader {
            Duration::from_secs(1)
        } else {
            EXIT_GLANCE
        };
        let exited = readable(self.pidfd.as_ref()?, glance).unwrap_or(false);
        if !exited {
            return no_reader.then(|| "closed its stdout and stderr pipes".into());
        }
        Some(match peek_exit(self.pid) {
            Some(status) => describe(status),
            None => "exited".into(),
        })
    }

    fn failed(&self, what: &str) -> Error {
        Error::Other(format!("logging binary {} {what}", self.path))
    }

    /// Ends a logger that never became ready: killed and reaped now, its
    /// pipes closed, nothing left for anyone to end.
    fn discard(mut self, mut child: Child) {
        self.pipes = [None, None];
        let _ = child.kill();
        if let Some(pidfd) = self.pidfd.take() {
            let _ = readable(&pidfd, Duration::from_secs(2));
        }
        if let Ok(Some(_)) = child.try_wait() {
            lock(&LIVE).remove(&self.pid);
        }
        // Killed and (unless stuck in the kernel) reaped: Drop has nothing
        // to end.
        self.pid = 0;
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        // The logger reads end-of-file once the process's copies are closed too.
        self.pipes = [None, None];
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        if self.pid == 0 {
            return;
        }
        let (pid, path) = (self.pid, std::mem::take(&mut self.path));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = runtime.spawn(end(pid, path, pidfd, [EOF_GRACE, TERM_GRACE]));
                let mut ending = lock(&ENDING);
                ending.retain(|t| !t.is_finished());
                ending.push(task);
            }
            Err(_) => {
                let _ = send_signal(&pidfd, libc::SIGKILL);
            }
        }
    }
}

/// Lets a logger whose process has gone finish: SIGTERM after `eof_grace`,
/// SIGKILL after `term_grace` more.
async fn end(pid: u32, path: String, pidfd: OwnedFd, [eof_grace, term_grace]: [Duration; 2]) {
    let pidfd = match process::watch(pidfd) {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("logging binary {path} (pid {pid}): {e}");
            return;
        }
    };
    if tokio::time::timeout(eof_grace, pidfd.readable())
        .await
        .is_ok()
    {
        return;
    }
    log::warn!(
        "logging binary {path} (pid {pid}) still runs {eof_grace:?} after its process's output \
         ended: SIGTERM"
    );
    let _ = send_signal(pidfd.get_ref(), libc::SIGTERM);
    if tokio::time::timeout(term_grace, pidfd.readable())
        .await
        .is_ok()
    {
        return;
    }
    log::warn!("logging binary {path} (pid {pid}) ignored SIGTERM: SIGKILL");
    let _ = send_signal(pidfd.get_ref(), libc::SIGKILL);
}

/// What a logging binary URI says to run.
#[derive(Debug, PartialEq, Eq)]
struct LoggerCommand {
    path: String,
    args: Vec<String>,
    /// binary-v2: ready means a byte on fd 5.
    strict: bool,
}

impl LoggerCommand {
    /// The command, with `fds` (stdout's and stderr's read ends, the wait
    /// pipe's write end) as its descriptors 3, 4 and 5.
    fn build(&self, owner: &Owner, fds: [&OwnedFd; 3]) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(&self.args)
            .env_clear()
            .env("CONTAINER_ID", &owner.id)
            .env("CONTAINER_NAMESPACE", &owner.namespace)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let fds = fds.map(|fd| fd.as_raw_fd());
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe calls (fcntl, dup2) on descriptors that
        // the parent keeps open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                // Move every source above 5 first, so that no dup2 onto
                // 3..=5 closes a source still to be moved.
                let mut high = [0; 3];
                for (h, fd) in high.iter_mut().zip(fds) {
                    *h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                    if *h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (target, fd) in (3..).zip(high) {
                    // dup2 clears close-on-exec on the target.
                    if libc::dup2(fd, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            })
        };
        cmd
    }
}

/// Reads a `binary://` or `binary-v2://` URI the way containerd does: the
/// path (an absolute one: the host part must be empty), and the query.
fn parse(uri: &str) -> Result<LoggerCommand> {
    let bad = |why: &str| Error::InvalidArgument(format!("log URI {uri}: {why}"));
    let (strict, rest) = match uri.strip_prefix("binary-v2://") {
        Some(rest) => (true, rest),
        None => (
            false,
            uri.strip_prefix("binary://")
                .ok_or_else(|| bad("not a binary:// or binary-v2:// URI"))?,
        ),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !path.starts_with('/') {
        return Err(bad(
            "a logging binary is named by its absolute path, as in binary:///path/to/logger",
        ));
    }
    let path = decode(path, false).ok_or_else(|| bad("bad %-escape in the path"))?;
    let mut seen = Vec::new();
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(key), Some(value)) = (decode(key, true), decode(value, true)) else {
            return Err(bad(&format!("bad %-escape in `{pair}`")));
        };
        if seen.contains(&key) {
            continue;
        }
        seen.push(key.clone());
        args.extend([key, value]);
    }
    Ok(LoggerCommand { path, args, strict })
}

/// Percent-decoding; in a query, `+` is a space. None for a bad escape or
/// a result that is not UTF-8.
fn decode(s: &str, query: bool) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b'+' if query => b' ',
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

fn pipe(path: &str) -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io(format!("pipes for logging binary {path}"))(e.into()))
}

/// Waits at most `limit` for `fd` to become readable.
fn readable(fd: &OwnedFd, limit: Duration) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::NONE),
        ) {
            Ok(n) => return Ok(n > 0),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The exit status of the exited child `pid`, leaving it to be reaped.
fn peek_exit(pid: u32) -> Option<ExitStatus> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(nix::unistd::Pid::from_raw(pid as i32)), flags) {
        Ok(WaitStatus::Exited(_, code)) => Some(ExitStatus::from_raw((code & 0xff) << 8)),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(ExitStatus::from_raw(sig as i32)),
        _ => None,
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended ({status})"),
    }
}

/// Signals the process of a pidfd, which can't be another process that
/// took its pid.
fn send_signal(pidfd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal takes a descriptor, a signal number, a null
    // siginfo and no flags; it touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::Path;

    use crate::stdio::{self, Sink};

    /// A logger that is `sh -c script`, through the URI's query.
    fn sh(scheme: &str, script: &str) -> String {
        let mut q = String::new();
        for b in script.bytes() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                    q.push(b as char)
                }
                _ => q.push_str(&format!("%{b:02X}")),
            }
        }
        format!("{scheme}:///bin/sh?-c={q}")
    }

    /// A script that copies fd 3 and fd 4 into `dir`, notes its owner,
    /// says it is ready (with a byte when `byte`), and notes when both
    /// streams have ended.
    fn recorder(dir: &Path, byte: bool) -> String {
        let d = dir.display();
        format!(
            "cat <&3 >{d}/stdout 5>&- & cat <&4 >{d}/stderr 5>&- & \
             echo \"$CONTAINER_ID $CONTAINER_NAMESPACE $#\" >{d}/env; {} exec 5>&-; \
             wait; echo done >{d}/done",
            if byte { "printf x >&5;" } else { "" }
        )
    }

    /// The children this test's thread has forked, zombies included.
    fn children() -> Vec<u32> {
        std::fs::read_to_string("/proc/thread-self/children")
            .unwrap()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect()
    }

    /// Reaps the logger `pid` as the shim's reaper would; its exit code.
    fn reap(pid: u32) -> i32 {
        use nix::sys::wait::{waitpid, WaitStatus};
        let status = match waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
            other => panic!("{other:?}"),
        };
        let exit = Exit {
            status: status as u32,
            at: std::time::SystemTime::now(),
        };
        assert!(reaped(pid, &exit), "pid {pid} is not known as a logger");
        status
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap_or_default()
    }

    #[test]
    fn a_uri_names_the_binary_and_its_arguments() {
        let c =
            parse("binary:///usr/bin/my%20logger?tag=a+b&flag&env.TZ=UTC&tag=second#frag").unwrap();
        assert_eq!(
            c,
            LoggerCommand {
                path: "/usr/bin/my logger".into(),
                args: ["tag", "a b", "flag", "", "env.TZ", "UTC"]
                    .map(String::from)
                    .into(),
                strict: false,
            }
        );
        let c = parse("binary-v2:///l?k=%3D%26").unwrap();
        assert!(c.strict);
        assert_eq!(c.args, ["k", "=&"]);
        for bad in [
            "binary://host/bin/logger",
            "binary://logger",
            "binary:///bin/l?x=%zz",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument(_)) && err.to_string().contains(bad),
                "{bad}: {err}"
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_logger_takes_both_streams_until_they_end() {
        let dir = tempfile::tempdir().unwrap();
        let uri = sh("binary", &recorder(dir.path(), false));
        let owner = Owner::new("c1", "ns1");
        let (stdio, held) = stdio::open("", &uri, &uri, false, &owner).unwrap();
        assert_eq!(held.loggers.len(), 1);
        let pid = held.loggers[0].pid;
        let mut out = std::fs::File::from(stdio.stdout.unwrap());
        let mut err = std::fs::File::from(stdio.stderr.unwrap());
        out.write_all(b"out\n").unwrap();
        err.write_all(b"err\n").unwrap();
        drop((out, err));
        // Still running: the shim's own ends are open until it lets go.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(read(dir.path(), "done"), "");
        drop(held);
        assert_eq!(reap(pid), 0);
        assert_eq!(read(dir.path(), "stdout"), "out\n");
        assert_eq!(read(dir.path(), "stderr"), "err\n");
        // `sh -c script` has no positional arguments.
        assert_eq!(read(dir.path(), "env"), "c1 ns1 0\n");
        assert_eq!(read(dir.path(), "done"), "done\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn binary_v2_takes_a_byte_for_ready_and_a_terminal_writes_into_it() {
        let dir = tempfile::tempdir().unwrap();
        let uri = sh("binary-v2", &recorder(dir.path(), true));
        let sink = stdio::open_sink(&uri, &Owner::new("c2", "ns2")).unwrap();
        let Sink::Logger { _logger: held, .. } = &sink else {
            panic!("not a logger's sink");
        };
        let pid = held.loggers[0].pid;
        let mut sink = sink;
        sink.write_all(b"from the terminal\n").await.unwrap();
        sink.flush().await.unwrap();
        drop(sink);
        assert_eq!(reap(pid), 0);
        assert_eq!(read(dir.path(), "stdout"), "from the terminal\n");
        assert_eq!(read(dir.path(), "stderr"), "");
        assert_eq!(read(dir.path(), "env"), "c2 ns2 0\n");
    }

    /// Starting `uri` fails with an error that has `needles`, and leaves
    /// no process behind.
    fn fails(uri: &str, within: Duration, needles: &[&str]) {
        let err = Logger::launch(uri, &Owner::new("c", "ns"), within).unwrap_err();
        for n in needles {
            assert!(err.to_string().contains(n), "{n:?} not in: {err}");
        }
        assert_eq!(children(), Vec::<u32>::new(), "after: {err}");
    }

    #[test]
    fn a_logger_that_is_not_ready_fails_and_leaves_nothing() {
        fails(
            "binary:///nonexistent/logger?a=b",
            READY_TIMEOUT,
            &["logging binary /nonexistent/logger", "No such file"],
        );
        fails(
            &sh("binary", "exit 3"),
            READY_TIMEOUT,
            &["logging binary /bin/sh exited with status 3 before it was ready"],
        );
        fails(
            &sh("binary-v2", "exec 5>&-; exec sleep 1"),
            READY_TIMEOUT,
            &["/bin/sh closed fd 5 without writing to it, which binary-v2:// asks for"],
        );
        fails(
            &sh("binary-v2", "exit 4"),
            READY_TIMEOUT,
            &["binary-v2:// asks for (it exited with status 4)"],
        );
        let began = Instant::now();
        fails(
            &sh("binary", "exec sleep 30"),
            Duration::from_millis(300),
            &["/bin/sh was not ready within 300ms"],
        );
        assert!(began.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_logger_that_ignores_the_end_is_killed() {
        // It ignores SIGTERM and never reads its pipes.
        let uri = sh("binary", "trap '' TERM; exec 5>&-; exec sleep 30");
        let mut logger = Logger::start(&uri, &Owner::default()).unwrap();
        let pid = logger.pid;
        let pidfd = logger.pidfd.take().unwrap();
        drop(logger);
        let short = Duration::from_millis(100);
        let began = Instant::now();
        end(pid, "/bin/sh".into(), pidfd, [short, short]).await;
        assert!(began.elapsed() < Duration::from_secs(5));
        assert_eq!(reap(pid), 128 + libc::SIGKILL);
    }
}
