//! Mount propagation that libcontainer 0.7 gets wrong, done its way or
//! ours.
//!
//! - `linux.rootfsPropagation`: libcontainer knows `shared`, `slave` and
//!   `private`, and applies each recursively to `/` before it makes the
//!   container's mounts, as runc does. The recursive spellings that
//!   containerd's CRI and Docker write (`rshared` for a Bidirectional
//!   volume, `rslave` for HostToContainer) fail its rootfs preparation as
//!   "unknown rootfs propagation". They mean the same to it, so the spec it
//!   reads gets the short spelling ([`libcontainer_rootfs`]).
//! - A mount's propagation options (`rprivate`, `rslave`, `rshared`, ...)
//!   are parsed by libcontainer and then dropped: the bind mount keeps the
//!   propagation of its source, so an `rprivate` volume of a shared host
//!   directory still receives the host's mounts. runc applies them to the
//!   destination once the mount is made. Here they are applied once
//!   libcontainer has made the container, while its init waits to be
//!   started, from a child of the shim that joins the container's mount
//!   namespace and root ([`apply`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use barge_executor::{ensure_single_threaded, Error, Result, Spec};
use nix::mount::MsFlags;

/// The spelling of `rootfs_propagation` that libcontainer understands, when
/// it is not the one given.
pub(crate) fn libcontainer_rootfs(propagation: &str) -> Option<&'static str> {
    match propagation {
        "rshared" => Some("shared"),
        "rslave" => Some("slave"),
        "rprivate" => Some("private"),
        _ => None,
    }
}

/// One propagation change to a mount of the container, in its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) destination: PathBuf,
    /// The option as the spec spells it, for messages.
    pub(crate) option: String,
    pub(crate) flags: MsFlags,
}

fn propagation_flags(option: &str) -> Option<MsFlags> {
    let (recursive, kind) = match option.strip_prefix('r') {
        Some(kind @ ("shared" | "slave" | "private" | "unbindable")) => (true, kind),
        _ => (false, option),
    };
    let flag = match kind {
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "private" => MsFlags::MS_PRIVATE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some(if recursive {
        flag | MsFlags::MS_REC
    } else {
        flag
    })
}

/// The propagation options of the spec's mounts, in the order runc applies
/// them: mount by mount, option by option.
pub(crate) fn changes(spec: &Spec) -> Vec<Change> {
    let mut changes = Vec::new();
    for m in spec.mounts().iter().flatten() {
        for option in m.options().iter().flatten() {
            if let Some(flags) = propagation_flags(option) {
                changes.push(Change {
                    destination: m.destination().clone(),
                    option: option.clone(),
                    flags,
                });
            }
        }
    }
    changes
}

/// Makes `changes` in the mount namespace of the container whose init is
/// `pid`. A container without a mount namespace of its own has the shim's
/// mounts, which are left as they are.
pub(crate) fn apply(pid: u32, changes: &[Change]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let open = |path: String| File::open(&path).map_err(Error::io(format!("open {path}")));
    let ns = open(format!("/proc/{pid}/ns/mnt"))?;
    let own = open("/proc/self/ns/mnt".to_string())?;
    let (theirs, ours) = (
        ns.metadata()
            .map_err(Error::io("stat the container's mount namespace"))?,
        own.metadata()
            .map_err(Error::io("stat the shim's mount namespace"))?,
    );
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        log::debug!("container of pid {pid} shares the shim's mount namespace: mount propagation left as it is");
        return Ok(());
    }
    let root = open(format!("/proc/{pid}/root"))?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Runtime(format!("pipe: {e}")))?;
    ensure_single_threaded("set mount propagation")?;
    // SAFETY: the shim has one thread (checked just above), so the child
    // is a whole copy of it; it only makes system calls and `_exit`s.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(Error::Runtime(format!("fork: {e}"))),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(read);
            let code = match change_in(&ns, &root, changes) {
                Ok(()) => 0,
                Err(why) => {
                    let _ = File::from(write).write_all(why.as_bytes());
                    1
                }
            };
            // SAFETY: ends the child without running the shim's exit
            // handlers or flushing buffers that belong to the shim.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(write);
            // Until the child exits and its end closes.
            let mut why = String::new();
            let _ = File::from(read).read_to_string(&mut why);
            let status = nix::sys::wait::waitpid(child, None)
                .map_err(|e| Error::Runtime(format!("wait for pid {child}: {e}")))?;
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                _ if !why.is_empty() => Err(Error::Runtime(format!("mount propagation: {why}"))),
                other => Err(Error::Runtime(format!(
                    "mount propagation: the helper process ended with {other:?}"
                ))),
            }
        }
    }
}

/// In the forked child: joins the container's mount namespace and root,
/// and makes the changes there.
fn change_in(ns: &File, root: &File, changes: &[Change]) -> std::result::Result<(), String> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("join the container's mount namespace: {e}"))?;
    nix::unistd::fchdir(root.as_raw_fd())
        .and_then(|()| nix::unistd::chroot("."))
        .map_err(|e| format!("enter the container's root: {e}"))?;
    for c in changes {
        nix::mount::mount(
            None::<&str>,
            &c.destination,
            None::<&str>,
            c.flags,
            None::<&str>,
        )
        .map_err(|e| format!("make {} {}: {e}", c.destination.display(), c.option))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursive_rootfs_spellings_become_libcontainers() {
        assert_eq!(libcontainer_rootfs("rshared"), Some("shared"));
        assert_eq!(libcontainer_rootfs("rslave"), Some("slave"));
        assert_eq!(libcontainer_rootfs("rprivate"), Some("private"));
        for same in [
            "shared",
            "slave",
            "private",
            "unbindable",
            "runbindable",
            "",
        ] {
            assert_eq!(libcontainer_rootfs(same), None, "{same}");
        }
    }

    #[test]
    fn mount_options_give_the_changes_in_order() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": { "path": "rootfs" },
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc" },
                { "destination": "/a", "type": "bind", "source": "/x",
                  "options": ["rw", "rbind", "rprivate"] },
                { "destination": "/b", "type": "bind", "source": "/y",
                  "options": ["rbind", "shared", "rslave", "nosuid"] },
                { "destination": "/c", "type": "bind", "source": "/z",
                  "options": ["bind", "runbindable", "remount", "ro"] }
            ]
        }))
        .unwrap();
        let got: Vec<(String, String, MsFlags)> = changes(&spec)
            .into_iter()
            .map(|c| (c.destination.display().to_string(), c.option, c.flags))
            .collect();
        let want = [
            ("/a", "rprivate", MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            ("/b", "shared", MsFlags::MS_SHARED),
            ("/b", "rslave", MsFlags::MS_SLAVE | MsFlags::MS_REC),
            (
                "/c",
                "runbindable",
                MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            ),
        ]
        .map(|(d, o, f)| (d.to_string(), o.to_string(), f));
        assert_eq!(got, want);
    }

    #[test]
    fn no_propagation_options_no_changes() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "mounts": [{ "destination": "/d", "type": "bind", "source": "/e",
                         "options": ["rbind", "ro"] }]
        }))
        .unwrap();
        assert!(changes(&spec).is_empty());
    }
}
