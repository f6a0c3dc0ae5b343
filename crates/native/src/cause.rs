//! The cause of a failed container build.
//!
//! libcontainer's container processes (the intermediate process and the
//! init it clones) tell the shim that they failed with one string: the top
//! of their error's chain (`e.to_string()` of, say, "failed to prepare
//! rootfs"), which containerd then ends with ": unknown". The causes below
//! it are only logged, through `tracing`, in the process that failed. So
//! while a build runs, a subscriber of ours sends the ERROR events of those
//! processes (not the shim's own, whose errors come back whole) over a
//! datagram socket, and the shim reads them once the build is over.

use std::fmt::{self, Write as _};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{span, Event, Level, Metadata};

/// The sending end while a build is watched, else -1. Cloned processes
/// keep the value they were cloned with.
static SINK: AtomicI32 = AtomicI32::new(-1);
/// The shim's pid: its own events are not sent.
static SHIM: AtomicI32 = AtomicI32::new(0);

/// Forwards ERROR events of libcontainer's processes to [`SINK`].
struct Forward;

impl tracing::Subscriber for Forward {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() == Level::ERROR
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::ERROR)
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let fd = SINK.load(Ordering::Relaxed);
        if fd < 0 || std::process::id() as i32 == SHIM.load(Ordering::Relaxed) {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        // Never blocks, never raises SIGPIPE; a lost line is only a lost
        // explanation.
        let _ = socket::send(
            fd,
            line.finish().as_bytes(),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// One event as text: its message, then its fields.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Line {
    fn finish(self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.fields,
            (false, false) => format!("{}: {}", self.message, self.fields),
        }
    }

    fn field(&mut self, name: &str, value: fmt::Arguments<'_>) {
        if name == "message" {
            let _ = self.message.write_fmt(value);
            return;
        }
        if !self.fields.is_empty() {
            self.fields.push_str(", ");
        }
        let _ = write!(self.fields, "{name}={value}");
    }
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field.name(), format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field.name(), format_args!("{value:?}"));
    }
}

/// A build being watched; [`Watch::causes`] ends it.
pub(crate) struct Watch {
    receive: OwnedFd,
    send: Option<OwnedFd>,
}

impl Watch {
    /// Starts watching, or answers `None` (and the build goes unexplained)
    /// if the socket cannot be made or another subscriber is in place.
    pub(crate) fn start() -> Option<Watch> {
        static INSTALL: Once = Once::new();
        static INSTALLED: AtomicI32 = AtomicI32::new(0);
        INSTALL.call_once(|| {
            if tracing::subscriber::set_global_default(Forward).is_ok() {
                INSTALLED.store(1, Ordering::Relaxed);
            }
        });
        if INSTALLED.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let (receive, send) = socket::socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .ok()?;
        SHIM.store(std::process::id() as i32, Ordering::Relaxed);
        SINK.store(send.as_raw_fd(), Ordering::Relaxed);
        Some(Watch {
            receive,
            send: Some(send),
        })
    }

    /// Stops watching; answers what the container's processes logged, in
    /// the order they logged it (the deepest cause first).
    pub(crate) fn causes(mut self) -> Vec<String> {
        self.stop();
        let mut lines: Vec<String> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = socket::recv(self.receive.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !line.is_empty() && !lines.contains(&line) {
                lines.push(line);
            }
        }
        lines
    }

    fn stop(&mut self) {
        SINK.store(-1, Ordering::Relaxed);
        self.send = None;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The message of a failed build: libcontainer's flattened error, with the
/// causes its process logged. `failed` is the text libcontainer answered
/// ("failed to create container: exec process failed with error error in
/// executing process : failed to prepare rootfs"), `causes` what
/// [`Watch::causes`] heard.
pub(crate) fn explain(failed: &str, causes: &[String]) -> String {
    // What the process said, without libcontainer's wrappers around it.
    let said = failed
        .rsplit_once("error in executing process : ")
        .or_else(|| failed.rsplit_once("intermediate process error "))
        .map_or(failed, |(_, inner)| inner);
    // The process's own log of that error, with its chain of causes
    // ("failed to prepare rootfs: err=Mount(Syscall(Nix(EINVAL)))").
    let own = causes
        .iter()
        .find(|l| !said.is_empty() && l.len() > said.len() && l.starts_with(said));
    // The first event, where the failure was logged first, names what
    // failed ("failed to mount Mount { destination: \"/x\", .. }").
    let first = causes.first();
    match (own, first) {
        (Some(own), Some(first)) if own != first => format!("{own} ({first})"),
        (Some(own), _) => own.clone(),
        (None, Some(first)) if first.contains(said) => first.clone(),
        (None, Some(first)) => format!("{said}: {first}"),
        (None, None) => failed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILED: &str = "failed to create container: exec process failed with error error in executing process : failed to prepare rootfs";

    #[test]
    fn the_logged_cause_replaces_the_flattened_error() {
        let causes = vec![
            "failed to prepare rootfs: err=UnknownRootfsPropagation(\"runbindable\")".to_string(),
            "failed to initialize container process: failed to prepare rootfs".to_string(),
        ];
        assert_eq!(
            explain(FAILED, &causes),
            "failed to prepare rootfs: err=UnknownRootfsPropagation(\"runbindable\")"
        );
    }

    #[test]
    fn what_failed_first_follows_the_chain() {
        let causes = vec![
            "failed to mount Mount { destination: \"/x\" }: syscall".to_string(),
            "failed to prepare rootfs: err=Mount(Syscall(Nix(EINVAL)))".to_string(),
        ];
        assert_eq!(
            explain(FAILED, &causes),
            "failed to prepare rootfs: err=Mount(Syscall(Nix(EINVAL))) (failed to mount Mount { destination: \"/x\" }: syscall)"
        );
    }

    #[test]
    fn a_cause_alone_follows_what_the_process_said() {
        let causes = vec!["make / rslave: err=EINVAL".to_string()];
        assert_eq!(
            explain(FAILED, &causes),
            "failed to prepare rootfs: make / rslave: err=EINVAL"
        );
    }

    #[test]
    fn nothing_heard_leaves_the_error_as_it_was() {
        assert_eq!(explain(FAILED, &[]), FAILED);
    }

    #[test]
    fn events_of_cloned_processes_are_heard() {
        let watch = Watch::start().expect("watch");
        // SAFETY: the test's child only logs and exits.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                tracing::error!(err = ?nix::errno::Errno::EINVAL, "make / rslave");
                tracing::warn!("not an error");
                // SAFETY: ends the child without the test harness's exit handlers.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).expect("waitpid");
            }
        }
        // The shim's own errors are not what is asked for.
        tracing::error!("in the shim");
        assert_eq!(
            watch.causes(),
            vec!["make / rslave: err=EINVAL".to_string()]
        );
    }
}
