//! The server runs from a read-only view of the shim binary.
//!
//! Every process the server forks — a container's init before it execs, a
//! Wasm init that never does, an exec before its `execve`, the pod holder —
//! starts as a copy of the server, so its `/proc/<pid>/exe` is the server's
//! binary. A container that can reach that link could open the binary and,
//! once nothing runs it, write the host's shim through it (runc's
//! CVE-2019-5736). So the forked server re-executes itself from a clone of
//! its binary's mount that is read-only and attached nowhere: the link then
//! leads to a file that no path on the host shows and no open can write
//! (EROFS). The clone is not a copy: the binary's pages are shared with
//! every other process that runs it. It goes when the last process that
//! runs from it exits.
//!
//! The re-executed server gets its listener as an inherited descriptor named
//! by [`LISTENER_ENV`], and what containerd wrote to `start`'s stdin on its
//! own stdin (a memfd), so it decodes the same parameters `start` did.

use std::ffi::{CString, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use crate::args::Flags;
use crate::error::{Error, Result};

/// The environment variable that hands the listener's descriptor number to
/// the re-executed server. It is removed as soon as it is read.
pub const LISTENER_ENV: &str = "BARGE_SHIM_LISTENER";

static UNPROTECTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Keeps why the server could not re-execute from a read-only view, for
/// the log that is opened later.
pub fn note_unprotected(why: Error) {
    let _ = UNPROTECTED.set(why.to_string());
}

/// Why this server runs from its writable binary, when [`exec_server`]
/// failed.
pub fn unprotected() -> Option<&'static str> {
    UNPROTECTED.get().map(String::as_str)
}

/// Whether `/proc/self/exe` is on a read-only mount.
pub fn runs_read_only() -> bool {
    nix::sys::statvfs::statvfs("/proc/self/exe")
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// The command line of the server: containerd's flags without an action,
/// as `containerd-shim-runc-v2` shows its servers.
fn server_args(flags: &Flags) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![std::env::args_os().next().unwrap_or_default()];
    for (name, value) in [
        ("-namespace", &flags.namespace),
        ("-id", &flags.id),
        ("-address", &flags.address),
        ("-publish-binary", &flags.publish_binary),
        ("-bundle", &flags.bundle),
        ("-socket", &flags.socket),
    ] {
        if !value.is_empty() {
            args.push(name.into());
            args.push(value.into());
        }
    }
    if flags.debug {
        args.push("-debug".into());
    }
    args
}

fn cstrings(items: impl IntoIterator<Item = OsString>) -> Result<Vec<CString>> {
    items
        .into_iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| {
                Error::InvalidArgument(format!("{} holds a NUL byte", s.to_string_lossy()))
            })
        })
        .collect()
}

/// A clone of the mount of this process's binary, made read-only and
/// attached nowhere; the descriptor refers to the binary in it.
fn read_only_clone() -> Result<OwnedFd> {
    crate::mount::detached_clone(
        c"/proc/self/exe",
        libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        false,
    )
    .map_err(|e| Error::io("make a read-only clone of the shim binary's mount")(e))
}

/// Re-executes this process as the server for `listener`, from a
/// read-only clone of its binary, with `input` (what containerd wrote to
/// `start`) on stdin. Returns only on failure, before anything was changed
/// that the caller cannot carry on with.
pub fn exec_server(flags: &Flags, input: &[u8], listener: &OwnedFd) -> Error {
    match try_exec_server(flags, input, listener) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn try_exec_server(
    flags: &Flags,
    input: &[u8],
    listener: &OwnedFd,
) -> Result<std::convert::Infallible> {
    let tree = read_only_clone()?;
    let argv = cstrings(server_args(flags))?;
    let env = std::env::vars_os()
        .filter(|(k, _)| k != LISTENER_ENV)
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            kv
        })
        .chain([format!("{LISTENER_ENV}={}", listener.as_raw_fd()).into()]);
    let env = cstrings(env)?;
    let mut params = std::fs::File::from(
        nix::sys::memfd::memfd_create(
            c"barge-start-params",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .map_err(|e| Error::Other(format!("memfd for the start parameters: {e}")))?,
    );
    params
        .write_all(input)
        .and_then(|_| params.rewind())
        .map_err(Error::io("write the start parameters to a memfd"))?;
    // The listener is inherited; every other descriptor of ours is
    // close-on-exec.
    nix::fcntl::fcntl(
        listener.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )?;
    nix::unistd::dup2(params.as_raw_fd(), 0)?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    // SAFETY: argv and envp are NULL-terminated arrays of pointers into
    // CStrings that outlive the call; on success it does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            tree.as_raw_fd(),
            c"".as_ptr(),
            argv_ptrs.as_ptr(),
            env_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    let e = std::io::Error::last_os_error();
    let _ = nix::fcntl::fcntl(
        listener.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Err(Error::io(
        "re-execute the shim server from its read-only clone",
    )(e))
}

/// In a server that [`exec_server`] started: the inherited listener and
/// the bytes containerd wrote to `start`. `None` when this process was not
/// started that way.
pub fn inherited() -> Result<Option<(OwnedFd, Vec<u8>)>> {
    let Some(value) = std::env::var_os(LISTENER_ENV) else {
        return Ok(None);
    };
    std::env::remove_var(LISTENER_ENV);
    let fd: RawFd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|fd| *fd > 2)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{LISTENER_ENV}={} is not a descriptor number",
                value.to_string_lossy()
            ))
        })?;
    let listening = nix::sys::socket::getsockopt(
        // SAFETY: only borrowed for the call; a number that is no open
        // descriptor makes getsockopt fail with EBADF.
        &unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::sys::socket::sockopt::AcceptConn,
    )
    .unwrap_or(false);
    if !listening {
        return Err(Error::InvalidArgument(format!(
            "{LISTENER_ENV}={fd} is not a listening socket"
        )));
    }
    // SAFETY: the descriptor was handed to this process for it to own, and
    // nothing else in it refers to it.
    let listener = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        listener.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(crate::start::MAX_STDIN)
        .read_to_end(&mut input)
        .map_err(Error::io("read the start parameters"))?;
    let null = std::fs::File::open("/dev/null").map_err(Error::io("open /dev/null"))?;
    nix::unistd::dup2(null.as_raw_fd(), 0)?;
    name_process();
    Ok(Some((listener, input)))
}

/// An exec through a descriptor names the process after the descriptor's
/// number; give it back the binary's name, as `ps` and `pgrep` show it.
fn name_process() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let base = argv0
        .as_bytes()
        .rsplit(|b| *b == b'/')
        .next()
        .unwrap_or(b"");
    let short: Vec<u8> = base.iter().copied().take(15).collect();
    if let Ok(name) = CString::new(short) {
        let _ = nix::sys::prctl::set_name(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_args_have_no_action() {
        let flags = Flags {
            namespace: "k8s.io".into(),
            id: "start".into(),
            address: "/run/c.sock".into(),
            publish_binary: "/usr/bin/containerd".into(),
            debug: true,
            ..Default::default()
        };
        let args: Vec<String> = server_args(&flags)[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-namespace",
                "k8s.io",
                "-id",
                "start",
                "-address",
                "/run/c.sock",
                "-publish-binary",
                "/usr/bin/containerd",
                "-debug"
            ]
        );
        let (parsed, action) = crate::args::parse(&args).unwrap();
        assert_eq!(action, crate::args::Action::Serve);
        assert_eq!(parsed.id, "start");
    }

    #[test]
    fn no_listener_handed_over() {
        assert!(std::env::var_os(LISTENER_ENV).is_none());
        assert!(inherited().unwrap().is_none());
    }
}
