//! Out-of-memory events: the kernel tells when the OOM killer acted in a
//! container's memory cgroup, and the shim publishes TaskOOM (Docker shows it
//! as `OOMKilled`).
//!
//! cgroup v1: an eventfd registered through `cgroup.event_control` on
//! `memory.oom_control`, which fires each time the OOM killer is invoked.
//! cgroup v2: inotify on `memory.events`, where the `oom_kill` counter
//! decides, so that a change of another field publishes nothing.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Where a process's memory cgroup is, and which interface it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cgroup {
    V1(PathBuf),
    V2(PathBuf),
}

fn locate(proc_cgroup: &str, v1_root: &Path, v2_root: &Path) -> Option<Cgroup> {
    let mut unified = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Some(Cgroup::V1(v1_root.join("memory").join(rel)));
        }
        if id == "0" && controllers.is_empty() {
            unified = Some(v2_root.join(rel));
        }
    }
    unified
        .filter(|p| p.join("memory.events").exists())
        .map(Cgroup::V2)
}

/// The `oom_kill` count in `memory.events` (v2).
fn oom_kills(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// Watches the memory cgroup of `pid` and calls `on_oom` for each OOM kill,
/// until the cgroup goes away. Returns at once when there is nothing to watch.
pub async fn watch(pid: u32, on_oom: impl Fn()) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return;
    };
    let v2_root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup")
    } else {
        Path::new("/sys/fs/cgroup/unified")
    };
    let result = match locate(&text, Path::new("/sys/fs/cgroup"), v2_root) {
        Some(Cgroup::V1(dir)) => watch_v1(&dir, &on_oom).await,
        Some(Cgroup::V2(dir)) => watch_v2(&dir, &on_oom).await,
        None => Ok(()),
    };
    if let Err(e) = result {
        log::debug!("no OOM events for pid {pid}: {e}");
    }
}

fn async_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor, which stays open and
    // unchanged until the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

async fn watch_v1(dir: &Path, on_oom: &impl Fn()) -> std::io::Result<()> {
    let control = dir.join("memory.oom_control");
    let oom_control = File::open(&control)?;
    // SAFETY: eventfd takes two integers and returns a new descriptor or -1.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: eventfd returned a new descriptor that nothing else owns.
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    std::fs::write(
        dir.join("cgroup.event_control"),
        format!("{} {}", efd.as_raw_fd(), oom_control.as_raw_fd()),
    )?;
    let fd = async_fd(efd)?;
    loop {
        let mut guard = fd.readable().await?;
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a buffer of 8 bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        if n < 0 {
            guard.clear_ready();
            continue;
        }
        // v1 signals when the OOM killer is invoked, before `oom_kill` counts
        // the kill; it also signals when the cgroup is removed.
        if !control.exists() {
            return Ok(());
        }
        log::debug!("OOM in memory cgroup {}", dir.display());
        on_oom();
    }
}

async fn watch_v2(dir: &Path, on_oom: &impl Fn()) -> std::io::Result<()> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let events = dir.join("memory.events");
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
    inotify.add_watch(
        &events,
        AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DELETE_SELF,
    )?;
    use std::os::fd::AsFd;
    let fd = async_fd(inotify.as_fd().try_clone_to_owned()?)?;
    drop(inotify);
    let mut seen = oom_kills(&events).unwrap_or(0);
    loop {
        let mut guard = fd.readable().await?;
        let mut buf = [0u8; 4096];
        // SAFETY: reads at most the buffer's length into the buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            guard.clear_ready();
            continue;
        }
        let Some(kills) = oom_kills(&events) else {
            return Ok(());
        };
        for _ in seen..kills {
            on_oom();
        }
        seen = seen.max(kills);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_memory_cgroup() {
        let v1 = "12:pids:/default/c\n4:memory:/default/c\n0::/default/c\n";
        assert_eq!(
            locate(v1, Path::new("/cg"), Path::new("/cg/unified")),
            Some(Cgroup::V1(PathBuf::from("/cg/memory/default/c")))
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("k8s/c")).unwrap();
        std::fs::write(
            dir.path().join("k8s/c/memory.events"),
            "oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(
            locate("0::/k8s/c\n", Path::new("/none"), dir.path()),
            Some(Cgroup::V2(dir.path().join("k8s/c")))
        );
        assert_eq!(oom_kills(&dir.path().join("k8s/c/memory.events")), Some(2));
        assert_eq!(
            locate("0::/missing\n", Path::new("/none"), dir.path()),
            None
        );
    }
}
