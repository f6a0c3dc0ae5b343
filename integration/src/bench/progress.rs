//! The progress line on stderr, and the stop flag that SIGINT/SIGTERM set.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a request to stop: every loop checks
/// [`check_stop`] and returns an error, so the guards (the private
/// containerd's teardown) run instead of the process dying on the spot.
pub fn install_stop_handler() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

/// Fails once a stop was requested.
pub fn check_stop() -> Result<()> {
    if stopped() {
        bail!("interrupted");
    }
    Ok(())
}

pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// One line on stderr that rewrites itself on a terminal. Elsewhere (CI
/// logs) it prints a line at most every few seconds, and always when the
/// phase changes.
pub struct Progress {
    tty: bool,
    start: Instant,
    state: Mutex<State>,
}

struct State {
    phase: String,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            state: Mutex::new(State {
                phase: String::new(),
                last: None,
                shown: false,
            }),
        }
    }

    /// Shows `[phase] detail`.
    pub fn update(&self, phase: &str, detail: &str) {
        let mut st = self.state.lock().unwrap();
        let elapsed = self.start.elapsed().as_secs();
        let line = format!("[{:>3}s] {phase}: {detail}", elapsed);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{line}");
            st.shown = true;
        } else {
            let now = Instant::now();
            let due = st
                .last
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5));
            if st.phase != phase || due {
                let _ = writeln!(err, "{line}");
                st.last = Some(now);
            }
        }
        st.phase = phase.to_string();
        let _ = err.flush();
    }

    /// A message on its own line (the progress line is redrawn by the next
    /// update).
    pub fn note(&self, msg: &str) {
        self.clear();
        eprintln!("{msg}");
    }

    /// Removes the progress line.
    pub fn clear(&self) {
        let mut st = self.state.lock().unwrap();
        if self.tty && st.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            st.shown = false;
        }
    }
}
