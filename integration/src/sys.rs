//! What the kernel shows: processes, mounts and cgroups.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

/// One process, from /proc.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// The state letter from /proc/<pid>/stat (R, S, Z, ...).
    pub state: char,
    pub argv: Vec<String>,
}

impl Proc {
    /// Whether `flag` is followed by `value` in argv (also `flag=value`).
    pub fn has_flag(&self, flag: &str, value: &str) -> bool {
        self.argv.windows(2).any(|w| w[0] == flag && w[1] == value)
            || self.argv.iter().any(|a| *a == format!("{flag}={value}"))
    }

    /// The file name of argv[0].
    pub fn name(&self) -> &str {
        self.argv
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("")
    }
}

/// Reads one process; `None` when it is gone.
pub fn process(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(Proc {
        pid,
        ppid,
        state,
        argv,
    })
}

/// Every process on the machine.
pub fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(process)
        .collect()
}

/// Whether a process is alive (a zombie counts as dead).
pub fn alive(pid: u32) -> bool {
    process(pid).map(|p| p.state != 'Z').unwrap_or(false)
}

/// How many descriptors a process has open.
pub fn fd_count(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("list /proc/{pid}/fd"))?
        .count())
}

/// A process's resident memory (`VmRSS` of /proc/<pid>/status), in KiB.
pub fn vm_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A size in KiB from /proc/<pid>/status: `VmRSS`, `VmHWM` (the peak
/// resident memory), `RssAnon` (what is resident and not a file's).
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// A process's open descriptors and resident memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub fds: usize,
    pub rss_kib: u64,
}

impl Footprint {
    pub fn of(pid: u32) -> Result<Footprint> {
        Ok(Footprint {
            fds: fd_count(pid)?,
            rss_kib: vm_rss_kib(pid)?,
        })
    }
}

/// Sends `signal` to `pid`. A process that is already gone is fine.
pub fn signal(pid: u32, signal: i32) {
    if pid > 1 {
        // SAFETY: kill(2) with a pid we looked up; at worst it fails.
        unsafe {
            libc::kill(pid as i32, signal);
        }
    }
}

/// Kills processes (TERM, then KILL after `grace`) and waits until they
/// are dead. Returns the ones that would not die.
pub fn kill_all(pids: &[u32], grace: Duration) -> Vec<u32> {
    let wait = |limit: Duration| {
        let end = std::time::Instant::now() + limit;
        loop {
            let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
            if left.is_empty() || std::time::Instant::now() >= end {
                return left;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for p in pids {
        signal(*p, libc::SIGTERM);
    }
    let left = wait(grace);
    for p in &left {
        signal(*p, libc::SIGKILL);
    }
    wait(Duration::from_secs(5))
}

/// Decodes the octal escapes of /proc/self/mountinfo (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points in our mount namespace at or under `prefix`, in the order
/// of /proc/self/mountinfo.
pub fn mounts_under(prefix: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(prefix))
        .collect()
}

/// Lazily unmounts everything at or under `prefix`, deepest first, until
/// nothing is left. Returns what could not be unmounted.
pub fn unmount_under(prefix: &Path) -> Vec<PathBuf> {
    for _ in 0..10 {
        let mut mounts: Vec<(usize, PathBuf)> =
            mounts_under(prefix).into_iter().enumerate().collect();
        if mounts.is_empty() {
            break;
        }
        // Deepest first; among equal depths, the latest mount first.
        mounts.sort_by_key(|(i, m)| {
            (
                std::cmp::Reverse(m.components().count()),
                std::cmp::Reverse(*i),
            )
        });
        for (_, m) in mounts {
            let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: umount2(2) with a valid C string.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    mounts_under(prefix)
}

/// The roots of the mounted cgroup hierarchies (v1 controllers and the v2
/// tree), e.g. `/sys/fs/cgroup/memory`.
pub fn cgroup_roots() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut roots: Vec<PathBuf> = text
        .lines()
        .filter(|l| {
            let fstype = l.split(" - ").nth(1).and_then(|r| r.split(' ').next());
            matches!(fstype, Some("cgroup") | Some("cgroup2"))
        })
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect();
    roots.sort();
    roots.dedup();
    roots
}

/// The cgroup directories named `rel` (e.g. `ns/id`) that exist in any
/// hierarchy.
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    cgroup_roots()
        .into_iter()
        .map(|r| r.join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes cgroup directories (deepest first). Empty cgroups only.
pub fn remove_cgroups(dirs: &[PathBuf]) {
    let mut all: Vec<PathBuf> = Vec::new();
    for d in dirs {
        collect_dirs(d, &mut all);
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for d in all {
        let _ = std::fs::remove_dir(&d);
    }
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    if !d.is_dir() {
        return;
    }
    out.push(d.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// The path of `pid`'s cgroup in the hierarchy that has `controller`.
pub fn cgroup_of(pid: u32, controller: &str) -> Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("read /proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _ = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
        .with_context(|| format!("no {controller} cgroup in /proc/{pid}/cgroup: {text}"))
}

/// Takes an exclusive flock(2) on `path` (created if needed), waiting
/// while another process holds it; `on_wait` runs once before waiting. The
/// lock lasts as long as the returned file (and ends with the process,
/// however it dies).
pub fn lock_file(path: &Path, on_wait: impl FnOnce()) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        on_wait();
        // SAFETY: as above.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            anyhow::bail!(
                "flock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(file)
}

/// Removes a directory tree after unmounting whatever is under it.
pub fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let left = unmount_under(dir);
    if !left.is_empty() {
        anyhow::bail!("still mounted under {}: {left:?}", dir.display());
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\"), "/x\\");
    }

    #[test]
    fn reads_self() {
        let me = process(std::process::id()).unwrap();
        assert!(alive(me.pid));
        assert!(!me.argv.is_empty());
    }
}
