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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// The `oom_kill` count in `memory.events` (v2) or `memory.oom_control`
/// (v1): both are "key value" lines.
fn oom_kills(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

impl Cgroup {
    fn counter_file(&self) -> PathBuf {
        match self {
            Cgroup::V1(dir) => dir.join("memory.oom_control"),
            Cgroup::V2(dir) => dir.join("memory.events"),
        }
    }
}

/// The OOM kills of one container's memory cgroup, and how many of them
/// have been published. Both the watch and the init's exit publish from
/// it, so that every kill is published once, and before the init's
/// TaskExit (containerd 2.3's CRI needs TaskOOM first to say OOMKilled).
#[derive(Debug)]
pub struct Kills {
    cgroup: Option<Cgroup>,
    published: AtomicU64,
}

impl Kills {
    /// The kills of `pid`'s memory cgroup from now on.
    pub fn of_pid(pid: u32) -> Arc<Kills> {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| {
                let v2_root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                    Path::new("/sys/fs/cgroup")
                } else {
                    Path::new("/sys/fs/cgroup/unified")
                };
                locate(&text, Path::new("/sys/fs/cgroup"), v2_root)
            });
        Kills::of(cgroup)
    }

    fn of(cgroup: Option<Cgroup>) -> Arc<Kills> {
        let seen = cgroup
            .as_ref()
            .and_then(|c| oom_kills(&c.counter_file()))
            .unwrap_or(0);
        Arc::new(Kills {
            cgroup,
            published: AtomicU64::new(seen),
        })
    }

    /// Calls `on_oom` once for every kill the kernel has counted that was
    /// not published yet; says how many.
    pub fn catch_up(&self, on_oom: &impl Fn()) -> u64 {
        let Some(counted) = self
            .cgroup
            .as_ref()
            .and_then(|c| oom_kills(&c.counter_file()))
        else {
            return 0;
        };
        let before = self.published.fetch_max(counted, Ordering::SeqCst);
        for _ in before..counted {
            on_oom();
        }
        counted.saturating_sub(before)
    }
}

/// Watches the memory cgroup and publishes each OOM kill through
/// `on_oom`, until the cgroup goes away. Returns at once when there is
/// nothing to watch.
pub async fn watch(kills: Arc<Kills>, on_oom: impl Fn()) {
    let result = match &kills.cgroup {
        Some(Cgroup::V1(dir)) => watch_v1(dir, &kills, &on_oom).await,
        Some(Cgroup::V2(dir)) => watch_v2(dir, &kills, &on_oom).await,
        None => Ok(()),
    };
    if let Err(e) = result {
        log::debug!("no OOM events: {e}");
    }
}

fn async_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor, which stays open and
    // unchanged until the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

async fn watch_v1(dir: &Path, kills: &Kills, on_oom: &impl Fn()) -> std::io::Result<()> {
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
        // It also signals when the cgroup is removed.
        if !control.exists() {
            return Ok(());
        }
        log::debug!("OOM in memory cgroup {}", dir.display());
        // v1 signals when the OOM killer is invoked, a moment before
        // `oom_kill` counts the kill: look again shortly.
        for wait_ms in [0, 10, 50, 250] {
            tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
            if kills.catch_up(on_oom) > 0 {
                break;
            }
        }
    }
}

async fn watch_v2(dir: &Path, kills: &Kills, on_oom: &impl Fn()) -> std::io::Result<()> {
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
    loop {
        let mut guard = fd.readable().await?;
        let mut buf = [0u8; 4096];
        // SAFETY: reads at most the buffer's length into the buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            guard.clear_ready();
            continue;
        }
        if !events.exists() {
            return Ok(());
        }
        kills.catch_up(on_oom);
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

    /// Each kill is published once, whoever looks first; a v1 counter
    /// (memory.oom_control) and a v2 one (memory.events) read alike.
    #[test]
    fn kills_are_published_once() {
        let dir = tempfile::tempdir().unwrap();
        for (cgroup, file, text) in [
            (
                Cgroup::V1(dir.path().join("v1")),
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill {}\n",
            ),
            (
                Cgroup::V2(dir.path().join("v2")),
                "memory.events",
                "low 0\nhigh 0\nmax 3\noom 2\noom_kill {}\noom_group_kill 0\n",
            ),
        ] {
            let path = cgroup.counter_file();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            assert!(path.ends_with(file));
            let write = |n: u64| std::fs::write(&path, text.replace("{}", &n.to_string())).unwrap();
            write(1);
            let kills = Kills::of(Some(cgroup));
            let count = std::cell::Cell::new(0);
            let on_oom = || count.set(count.get() + 1);
            // Kills from before the container was watched are not its.
            assert_eq!(kills.catch_up(&on_oom), 0);
            write(3);
            assert_eq!(kills.catch_up(&on_oom), 2);
            assert_eq!(kills.catch_up(&on_oom), 0, "published twice");
            assert_eq!(count.get(), 2);
        }
        // No memory cgroup: nothing to publish, ever.
        assert_eq!(Kills::of(None).catch_up(&|| panic!("no cgroup")), 0);
    }
}
