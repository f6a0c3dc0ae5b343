//! Stopping a guest: SIGTERM and SIGINT, or the wall-clock limit.
//!
//! The signal handler only does signal-safe work: it records the signal,
//! bumps wasmtime's epoch (documented as signal-safe), which makes running
//! Wasm code trap at its next check, and writes a byte to a pipe. A watcher
//! thread reads the pipe; if the guest is stuck in a host call, where no
//! epoch check happens, the watcher ends the process after a short grace.
//!
//! The container's init is PID 1 of its PID namespace, where a signal with
//! the default action is dropped, so without the handler `docker stop`
//! would wait for its timeout and then SIGKILL.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use wasmtime::Engine;

/// How long a guest has to unwind after a stop before the process exits.
const GRACE: Duration = Duration::from_millis(250);
/// Recorded when the wall-clock limit, rather than a signal, stopped it.
const TIMEOUT: i32 = -1;
/// The exit code after the wall-clock limit, as timeout(1) uses.
pub const TIMEOUT_EXIT: i32 = 124;

static ENGINE: OnceLock<Engine> = OnceLock::new();
static REASON: AtomicI32 = AtomicI32::new(0);
static PIPE: AtomicI32 = AtomicI32::new(-1);

/// Why the guest was stopped, if it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Signal(i32),
    Timeout,
}

pub fn stopped() -> Option<Stopped> {
    match REASON.load(Ordering::SeqCst) {
        0 => None,
        TIMEOUT => Some(Stopped::Timeout),
        s => Some(Stopped::Signal(s)),
    }
}

impl Stopped {
    pub fn exit_code(self) -> i32 {
        match self {
            Stopped::Signal(s) => 128 + s,
            Stopped::Timeout => TIMEOUT_EXIT,
        }
    }
}

extern "C" fn on_signal(signal: libc::c_int) {
    let _ = REASON.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    if let Some(engine) = ENGINE.get() {
        engine.increment_epoch();
    }
    let fd = PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = [signal as u8];
        // SAFETY: write(2) is async-signal-safe; the buffer outlives the call.
        unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
    }
}

/// Installs the handlers and starts the watcher. Call once, before the
/// guest runs; `timeout` is the optional wall-clock limit.
pub fn arm(engine: &Engine, timeout: Option<Duration>) -> std::io::Result<()> {
    let _ = ENGINE.set(engine.clone());
    let (read, write) = nix::unistd::pipe().map_err(std::io::Error::from)?;
    PIPE.store(write.as_raw_fd(), Ordering::SeqCst);
    // The write end lives as long as the process.
    std::mem::forget(write);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: on_signal only touches atomics, the engine's epoch counter
        // (signal-safe by wasmtime's documentation) and write(2).
        unsafe { sigaction(signal, &action) }.map_err(std::io::Error::from)?;
    }
    // Signals may have been blocked by whoever made this process.
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_unblock().map_err(std::io::Error::from)?;
    std::thread::Builder::new()
        .name("barge-stop".into())
        .spawn(move || watch(read, timeout))?;
    Ok(())
}

fn watch(read: OwnedFd, timeout: Option<Duration>) {
    let mut fds = [libc::pollfd {
        fd: read.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: fds is a valid array of one pollfd for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n == 0 {
            let _ = REASON.compare_exchange(0, TIMEOUT, Ordering::SeqCst, Ordering::SeqCst);
            if let Some(engine) = ENGINE.get() {
                engine.increment_epoch();
            }
        }
        break;
    }
    std::thread::sleep(GRACE);
    let code = stopped().map_or(1, Stopped::exit_code);
    if stopped() == Some(Stopped::Timeout) {
        crate::guest::say("stopped: the wall-clock limit was reached");
    }
    // SAFETY: _exit ends the process at once; the guest may be blocked in a
    // host call that will never return.
    unsafe { libc::_exit(code) };
}
