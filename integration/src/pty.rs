//! A pseudo-terminal driver: runs a command (ctr, docker) with a real pty as
//! its stdin, stdout, stderr and controlling terminal, types keys into it,
//! reads what it prints, and sets the window size (the kernel then sends
//! SIGWINCH, as a terminal emulator does). The command is always killed and
//! reaped, and the pty closed, also when a case fails or panics.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{bounded, poll, Cmd, Output};

/// A window size, as `stty size` prints it: rows, then columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub rows: u16,
    pub cols: u16,
}

impl Size {
    pub const fn new(rows: u16, cols: u16) -> Size {
        Size { rows, cols }
    }

    /// What `stty size` prints for this size (without the line end).
    pub fn stty(self) -> String {
        format!("{} {}", self.rows, self.cols)
    }

    fn winsize(self) -> libc::winsize {
        libc::winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }
}

/// Sets the window size of a pty (through either side).
fn set_size(fd: &File, size: Size) -> Result<()> {
    let ws = size.winsize();
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid
    // for the call; `fd` is an open pty.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(std::io::Error::last_os_error()).context("TIOCSWINSZ");
    }
    Ok(())
}

/// Opens a new pty pair of `size`: (master, slave), both close-on-exec.
fn open_pty(size: Size) -> Result<(File, File)> {
    // std opens with O_CLOEXEC.
    let master = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/ptmx")
        .context("open /dev/ptmx")?;
    // SAFETY: unlockpt(3) on the pty master we just opened.
    if unsafe { libc::unlockpt(master.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unlockpt");
    }
    // SAFETY: TIOCGPTPEER opens the slave of this master with the given
    // flags and returns a new descriptor (or -1); it takes no pointer.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(std::io::Error::last_os_error()).context("TIOCGPTPEER");
    }
    // SAFETY: `slave` was just returned open by the kernel and nothing else
    // owns it.
    let slave = File::from(unsafe { OwnedFd::from_raw_fd(slave) });
    set_size(&slave, size)?;
    Ok((master, slave))
}

#[derive(Default)]
struct Shared {
    out: Mutex<Vec<u8>>,
    /// Bytes read from the pty so far.
    count: AtomicU64,
    /// Count what is read, and keep none of it.
    count_only: bool,
    /// The reader leaves the pty unread while this is set.
    paused: AtomicBool,
    /// The reader saw the end: every descriptor of the slave is closed.
    eof: AtomicBool,
    stop: AtomicBool,
}

/// Copies what the pty shows into `shared` until every slave descriptor is
/// closed (read gives EIO) or `stop` is set. Polls, so that a stop is seen
/// within 100 ms even while a stray process holds the slave.
fn read_loop(master: Arc<File>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 1 << 16];
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid pollfd that outlives the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if n == 0 {
            continue;
        }
        match (&*master).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                shared.count.fetch_add(n as u64, Ordering::SeqCst);
                if !shared.count_only {
                    shared.out.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EIO: the last slave descriptor was closed.
            Err(_) => break,
        }
    }
    shared.eof.store(true, Ordering::SeqCst);
}

/// The last `max` characters of `s`, for messages.
fn tail(s: &str, max: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    let from = chars.len().saturating_sub(max);
    let t: String = chars[from..].iter().collect();
    if from > 0 {
        format!("…{t}")
    } else {
        t
    }
}

/// A command running on a pty. Dropping it kills the command's session,
/// reaps it and closes the pty.
pub struct Pty {
    master: Arc<File>,
    child: Option<Child>,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    cmdline: String,
    started: Instant,
    timeout: Duration,
}

impl Pty {
    /// Starts `cmd` in a new session whose controlling terminal is a new pty
    /// of `size`; the pty is its stdin, stdout and stderr. The command's own
    /// timeout (and the case deadline) bounds [`Pty::wait`].
    pub fn spawn(cmd: Cmd, size: Size) -> Result<Pty> {
        Self::spawn_with(cmd, size, false)
    }

    /// As [`Pty::spawn`], for a command that prints more than a case keeps:
    /// what the pty shows is counted ([`Pty::bytes`]), not kept.
    pub fn spawn_counting(cmd: Cmd, size: Size) -> Result<Pty> {
        Self::spawn_with(cmd, size, true)
    }

    fn spawn_with(cmd: Cmd, size: Size, count_only: bool) -> Result<Pty> {
        let cmdline = cmd.cmdline();
        let (master, slave) = open_pty(size)?;
        let mut c = cmd.command();
        c.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid(2) and ioctl(2) are async-signal-safe; between fork
        // and exec the child only makes itself a session leader and takes
        // its stdin (the pty slave) as controlling terminal.
        unsafe {
            c.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c
            .spawn()
            .with_context(|| format!("spawn `{cmdline}` on a pty"))?;
        // The parent's copies of the slave go with `c`: the reader sees EIO
        // once the command's session has closed the last one.
        drop(c);
        let master = Arc::new(master);
        let shared = Arc::new(Shared {
            count_only,
            ..Shared::default()
        });
        let reader = {
            let (m, s) = (master.clone(), shared.clone());
            std::thread::spawn(move || read_loop(m, s))
        };
        Ok(Pty {
            master,
            child: Some(child),
            shared,
            reader: Some(reader),
            cmdline,
            started: Instant::now(),
            timeout: cmd.timeout_of(),
        })
    }

    /// Types `keys` (raw bytes: "\r" is Enter, "\x03" is Ctrl-C).
    pub fn send(&self, keys: &str) -> Result<()> {
        (&*self.master)
            .write_all(keys.as_bytes())
            .with_context(|| format!("type {keys:?} into `{}`", self.cmdline))
    }

    /// Changes the window size; the kernel sends SIGWINCH to the command.
    pub fn resize(&self, size: Size) -> Result<()> {
        set_size(&self.master, size)
    }

    /// Stops reading what the command prints (`true`), as a terminal that
    /// is not read, or reads again (`false`).
    pub fn pause_reading(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::SeqCst);
    }

    /// How many bytes the pty has shown so far.
    pub fn bytes(&self) -> u64 {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Everything the pty has shown so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.shared.out.lock().unwrap()).into_owned()
    }

    /// Waits until the pty has shown `needle` (within `timeout` and the case
    /// deadline). Fails at once when the command has closed the pty without
    /// showing it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<()> {
        let shown = || format!("`{}` showed {:?}", self.cmdline, tail(&self.text(), 600));
        let found = poll(&format!("{needle:?} on the pty"), timeout, || {
            // Read the end mark first: what came before it is in the text.
            let eof = self.shared.eof.load(Ordering::SeqCst);
            let found = self.text().contains(needle);
            Ok((found || eof).then_some(found))
        })
        .with_context(shown)?;
        if !found {
            bail!(
                "the pty was closed before it showed {needle:?}: {}",
                shown()
            );
        }
        Ok(())
    }

    /// Waits for the command to end and the pty to drain. The [`Output`]'s
    /// stdout is everything the pty showed (stdout and stderr together).
    pub fn wait(mut self) -> Result<Output> {
        let end = bounded(self.timeout.saturating_sub(self.started.elapsed()));
        let mut child = self.child.take().expect("not yet waited");
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= end {
                kill_session(&mut child);
                bail!(
                    "`{}` timed out after {:?} and was killed; the pty showed {:?}",
                    self.cmdline,
                    self.started.elapsed(),
                    tail(&self.text(), 600)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = self.started.elapsed();
        // What the command wrote before it ended is still in the pty.
        let drained = poll("the pty to drain", Duration::from_secs(5), || {
            Ok(self.shared.eof.load(Ordering::SeqCst).then_some(()))
        });
        self.stop_reader();
        drained.with_context(|| format!("`{}` exited with {status}", self.cmdline))?;
        Ok(Output {
            status,
            stdout: self.text(),
            stderr: String::new(),
            cmdline: self.cmdline.clone(),
            elapsed,
        })
    }

    fn stop_reader(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Kills the session the command leads (its pid is the process group id,
/// after setsid) and reaps the command.
fn kill_session(child: &mut Child) {
    // SAFETY: kill(2) on the process group of our own, not yet reaped
    // child: the id cannot have been reused.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_session(&mut child);
        }
        self.stop_reader();
        // The master closes with the last Arc, which is ours now.
    }
}
