//! User namespaces made only to be referred to: an idmapped mount takes
//! its mapping from a user namespace's descriptor.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::error::{Error, Result};

/// A user namespace with `uid_map` and `gid_map` (in /proc/<pid>/uid_map's
/// format), as a descriptor. A child is forked to unshare it, holds it
/// while the maps are written, and exits; the namespace lives on with the
/// descriptor.
pub fn with_maps(uid_map: &str, gid_map: &str) -> Result<OwnedFd> {
    use nix::unistd::{fork, ForkResult};
    barge_executor::ensure_single_threaded("make a user namespace for idmapped layers")?;
    let (ready_r, ready_w) = nix::unistd::pipe()?;
    let (hold_r, hold_w) = nix::unistd::pipe()?;
    // SAFETY: the process has a single thread (checked above); the child
    // only calls unshare, write, read and _exit.
    match unsafe { fork() }.map_err(|e| Error::Other(format!("fork for a user namespace: {e}")))? {
        ForkResult::Child => {
            drop(ready_r);
            drop(hold_w);
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_w, if ok { b"y" } else { b"n" });
            let mut byte = [0u8; 1];
            // Returns when the parent closes its end.
            let _ = nix::unistd::read(hold_r.as_raw_fd(), &mut byte);
            // SAFETY: _exit ends the child at once, running nothing of the
            // parent's state.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(hold_r);
            let made = (|| -> Result<OwnedFd> {
                let mut byte = [0u8; 1];
                let n = nix::unistd::read(ready_r.as_raw_fd(), &mut byte)?;
                if n != 1 || byte[0] != b'y' {
                    return Err(Error::Other(
                        "could not unshare a user namespace for idmapped layers".into(),
                    ));
                }
                for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
                    let path = format!("/proc/{child}/{file}");
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(map.as_bytes()))
                        .map_err(Error::io(format!("write {path}")))?;
                }
                let ns = format!("/proc/{child}/ns/user");
                let fd = std::fs::File::open(&ns).map_err(Error::io(format!("open {ns}")))?;
                Ok(fd.into())
            })();
            drop(hold_w);
            let _ = nix::sys::wait::waitpid(child, None);
            made
        }
    }
}
