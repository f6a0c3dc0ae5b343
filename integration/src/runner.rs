//! Running cases: a deadline each, panics caught, one line per case and a
//! closing `N passed, N failed`.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cmd;

thread_local! {
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// On SIGINT or SIGTERM, the runner skips the cases left and the suite
/// tears down as usual. (Commands run in their own process groups, so a
/// Ctrl-C in a terminal reaches only the runner.)
pub fn handle_interrupts() {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Installs a panic hook that keeps the message for the case's line
/// instead of printing it.
pub fn capture_panics() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        PANIC.with(|p| *p.borrow_mut() = Some(format!("panicked: {msg}{at}")));
    }));
}

/// The message of the last panic on this thread.
pub fn take_panic() -> String {
    PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_else(|| "panicked".into())
}

/// A comma-separated filter from the environment, or the default.
pub fn env_list(var: &str, default: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

pub struct Runner {
    filter: Option<String>,
    pub passed: usize,
    pub failed: usize,
    started: Instant,
}

impl Default for Runner {
    fn default() -> Self {
        Self::from_env()
    }
}

impl Runner {
    /// Reads `BARGE_IT_FILTER` (a substring of case names).
    pub fn from_env() -> Runner {
        Runner {
            filter: std::env::var("BARGE_IT_FILTER")
                .ok()
                .filter(|f| !f.is_empty()),
            passed: 0,
            failed: 0,
            started: Instant::now(),
        }
    }

    pub fn selected(&self, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| name.contains(f.as_str()))
    }

    /// Whether any of these names is selected.
    pub fn any_selected<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> bool {
        names.into_iter().any(|n| self.selected(n))
    }

    /// Runs one case under a deadline, then `check` (the leak check), which
    /// runs even when the case failed. Either failing fails the case.
    pub fn run(
        &mut self,
        name: &str,
        timeout: Duration,
        case: impl FnOnce() -> Result<()>,
        check: impl FnOnce() -> Result<()>,
    ) {
        if !self.selected(name) || interrupted() {
            return;
        }
        let start = Instant::now();
        cmd::set_deadline(Some(start + timeout));
        let result = catch_unwind(AssertUnwindSafe(case))
            .unwrap_or_else(|_| Err(anyhow::anyhow!(take_panic())));
        let timed_out = Instant::now() >= start + timeout;
        // The leak check gets its own time.
        cmd::set_deadline(Some(Instant::now() + Duration::from_secs(60)));
        let checked = catch_unwind(AssertUnwindSafe(check))
            .unwrap_or_else(|_| Err(anyhow::anyhow!(take_panic())));
        cmd::set_deadline(None);
        let mut reasons = Vec::new();
        if let Err(e) = result {
            if timed_out {
                reasons.push(format!("timed out after {timeout:?}: {e:#}"));
            } else {
                reasons.push(format!("{e:#}"));
            }
        }
        if let Err(e) = checked {
            reasons.push(format!("left behind: {e:#}"));
        }
        self.report(name, start.elapsed(), reasons);
    }

    /// Records a failure that is not a case of its own (a daemon that would
    /// not start, say).
    pub fn fail(&mut self, name: &str, reason: impl std::fmt::Display) {
        self.report(name, Duration::ZERO, vec![reason.to_string()]);
    }

    fn report(&mut self, name: &str, elapsed: Duration, reasons: Vec<String>) {
        if reasons.is_empty() {
            self.passed += 1;
            println!("ok      {name} ({:.2}s)", elapsed.as_secs_f64());
        } else {
            self.failed += 1;
            let reason = reasons
                .join("; ")
                .lines()
                .map(str::trim_end)
                .collect::<Vec<_>>()
                .join(" ⏎ ");
            println!("FAILED  {name} ({:.2}s): {reason}", elapsed.as_secs_f64());
        }
    }

    /// Prints the closing line; returns the process exit code.
    pub fn finish(&self) -> i32 {
        if interrupted() {
            eprintln!("interrupted: the cases left were not run");
        }
        eprintln!("suite took {:.1}s", self.started.elapsed().as_secs_f64());
        println!("{} passed, {} failed", self.passed, self.failed);
        if self.failed == 0 && !interrupted() {
            0
        } else {
            1
        }
    }
}
