//! Processes: the single-thread check before a fork, exit statuses, and the
//! reaper that collects every child of the shim.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::SystemTime;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or 128+N for a process killed by signal N.
    pub status: u32,
    pub at: SystemTime,
}

/// Waits until process `pid` has exited (it is not reaped).
///
/// A container's init made with CLONE_PARENT sends its parent no SIGCHLD,
/// so the reaper can't rely on the signal alone: a pidfd tells when it ends.
pub async fn exited(pid: u32) -> std::io::Result<()> {
    let fd = watch(pidfd(pid)?)?;
    let _ready = fd.readable().await?;
    Ok(())
}

/// A pidfd for `pid`: it names that process for as long as it is open, even
/// once the process has been reaped and its pid reused.
pub fn pidfd(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Puts a pidfd on the event loop: it turns readable when its process exits.
pub fn watch(pidfd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and unchanged
    // until the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Reaps every child that has exited, without blocking. `__WALL` also
/// collects children that exit with no signal, as CLONE_PARENT inits do.
pub fn reap() -> Vec<(u32, Exit)> {
    let mut exits = Vec::new();
    loop {
        match waitpid(
            Pid::from_raw(-1),
            Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
        ) {
            Ok(WaitStatus::Exited(pid, code)) => {
                exits.push((pid.as_raw() as u32, exit(code as u32)))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                exits.push((pid.as_raw() as u32, exit(128 + sig as u32)))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return exits,
            Ok(_) => continue,
        }
    }
}

fn exit(status: u32) -> Exit {
    Exit {
        status,
        at: SystemTime::now(),
    }
}

/// Exits of pids that nobody had claimed yet: a process can exit between the
/// executor forking it and the core recording its pid.
#[derive(Default)]
pub struct Unclaimed {
    exits: HashMap<u32, Exit>,
}

impl Unclaimed {
    /// Keeps at most this many; orphans reparented to the shim land here too.
    const LIMIT: usize = 4096;

    pub fn insert(&mut self, pid: u32, exit: Exit) {
        if self.exits.len() >= Self::LIMIT {
            if let Some(oldest) = self.exits.iter().min_by_key(|(_, e)| e.at).map(|(p, _)| *p) {
                self.exits.remove(&oldest);
            }
        }
        self.exits.insert(pid, exit);
    }

    pub fn take(&mut self, pid: u32) -> Option<Exit> {
        self.exits.remove(&pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unclaimed_exits_are_bounded() {
        let mut u = Unclaimed::default();
        for pid in 0..(Unclaimed::LIMIT as u32 + 10) {
            u.insert(pid, exit(0));
        }
        assert!(u.exits.len() <= Unclaimed::LIMIT);
        assert!(u.take(Unclaimed::LIMIT as u32 + 9).is_some());
        assert!(u.take(Unclaimed::LIMIT as u32 + 9).is_none());
    }
}
