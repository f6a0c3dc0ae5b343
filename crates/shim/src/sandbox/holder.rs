//! The process that holds a pod's namespaces.
//!
//! containerd's CRI joins every container of a pod to the namespaces of the
//! pid that StartSandbox returns (`/proc/<pid>/ns/{net,ipc,uts}`, and `pid`
//! when the pod shares one), so some process must live in them. With the
//! pause container that is a container of its own: an image, a rootfs
//! mount, a cgroup and a runtime's init. Here it is a clone of the shim
//! that never execs: made with new IPC, UTS and PID namespaces, it enters
//! the netns containerd made, sets the pod's hostname and sysctls, moves
//! into an empty root (removed at once) and turns non-dumpable, so that a
//! process of the pod that can look into `/proc/1` finds nothing of the
//! host, and then only reaps (it is pid 1 of the pod's PID namespace). It
//! dies with the shim (PDEATHSIG), and with it every process of the pod's
//! PID namespace.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, Result};

use super::config::{Mode, PodConfig};

/// What the holder is called in `ps`.
const TITLE: &str = "barge-pod";

/// A step of the holder's setup, to name the one that failed.
#[derive(Clone, Copy)]
#[repr(u32)]
enum Step {
    Parent = 1,
    Netns,
    Hostname,
    Root,
    Sysctl,
}

/// Everything the child uses, made before the clone so that the child does
/// no allocation: it runs in a copy of the shim's memory.
struct Plan {
    flags: libc::c_int,
    netns: Option<OwnedFd>,
    hostname: Option<Vec<u8>>,
    sysctls: Vec<(CString, String)>,
    dev_null: CString,
    /// An empty directory that becomes the holder's root.
    root: CString,
    title: Vec<u8>,
    /// The size of the shim's argument strings, NULs included.
    args_len: usize,
    parent: libc::pid_t,
}

/// Starts the holder of `config`'s namespaces, in the network namespace at
/// `netns` (or the host's, for a pod on the host network). Returns its pid.
pub fn spawn(config: &PodConfig, netns: Option<&Path>, id: &str) -> Result<u32> {
    let ns = &config.namespaces;
    let mut flags = 0;
    if ns.ipc != Mode::Node {
        flags |= libc::CLONE_NEWIPC;
    }
    if ns.pid != Mode::Node {
        flags |= libc::CLONE_NEWPID;
    }
    let netns = match netns {
        Some(path) => Some(
            File::open(path)
                .map(OwnedFd::from)
                .map_err(Error::io(format!(
                    "open the pod's netns {}",
                    path.display()
                )))?,
        ),
        None => None,
    };
    // A pod on the host network has the host's UTS namespace too (as CRI
    // gives the pause container).
    let hostname = if ns.network != Mode::Node {
        flags |= libc::CLONE_NEWUTS;
        Some(config.hostname.as_bytes().to_vec()).filter(|h| !h.is_empty())
    } else {
        None
    };
    let sysctls = config
        .sysctl_files()
        .into_iter()
        .map(|(path, value)| {
            CString::new(path.clone())
                .map(|p| (p, value))
                .map_err(|_| Error::InvalidArgument(format!("sysctl path {path:?} has a NUL")))
        })
        .collect::<Result<Vec<_>>>()?;
    // The holder's root: an empty directory, removed as soon as the holder
    // is in it (or has failed). A process of the pod that can look into
    // /proc/<holder> finds nothing of the host there, and the holder is not
    // dumpable.
    let root = std::path::PathBuf::from(format!(
        "/run/barge-pod-root-{}-{}",
        std::process::id(),
        barge_executor::next_serial()
    ));
    std::fs::create_dir(&root).map_err(Error::io(format!("create {}", root.display())))?;
    let root_c = CString::new(root.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::InvalidArgument(format!("{} has a NUL", root.display())))?;
    let plan = Plan {
        flags,
        netns,
        hostname,
        sysctls,
        dev_null: CString::new("/dev/null").expect("no NUL"),
        root: root_c,
        title: format!("{TITLE} {id}").into_bytes(),
        args_len: std::env::args_os().map(|a| a.len() + 1).sum(),
        parent: std::process::id() as libc::pid_t,
    };

    let result = clone_holder(&plan, config);
    let _ = std::fs::remove_dir(&root);
    result
}

/// Clones the holder and waits for its report.
fn clone_holder(plan: &Plan, config: &PodConfig) -> Result<u32> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: a clone without CLONE_VM is a fork: the child gets a copy of
    // this process's memory. The shim has one thread, so no lock is held by
    // a thread that the child lacks; the child calls only system calls on
    // memory prepared above, and ends in `_exit`.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (plan.flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(Error::io("clone the pod's namespace holder")(
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        child(plan, write.as_raw_fd());
    }
    drop(write);
    let pid = pid as u32;
    // The child writes (step, errno) when a step fails; its end closes
    // (EOF) when all went well.
    let mut report = [0u8; 8];
    let mut got = 0;
    let mut file = File::from(read);
    while got < report.len() {
        match file.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read the pod holder's report")(e)),
        }
    }
    if got == 0 {
        return Ok(pid);
    }
    // SAFETY: waitpid on our own child, which has exited or is exiting.
    unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
    let step = u32::from_ne_bytes(report[..4].try_into().expect("4 bytes"));
    let errno = i32::from_ne_bytes(report[4..].try_into().expect("4 bytes"));
    let cause = std::io::Error::from_raw_os_error(errno);
    let what = match step {
        s if s == Step::Netns as u32 => "enter the pod's network namespace".to_string(),
        s if s == Step::Hostname as u32 => format!("set the pod's hostname {:?}", config.hostname),
        s if s == Step::Root as u32 => "enter the pod holder's empty root".to_string(),
        s if s >= Step::Sysctl as u32 => {
            let i = (s - Step::Sysctl as u32) as usize;
            match config.sysctls.iter().nth(i) {
                Some((k, v)) => format!("set the pod's sysctl {k}={v}"),
                None => "set a sysctl".to_string(),
            }
        }
        _ => "start the pod's namespace holder".to_string(),
    };
    Err(Error::Other(format!("{what}: {cause}")))
}

/// Reports a failed step to the parent and exits.
fn fail(report: libc::c_int, step: u32) -> ! {
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&step.to_ne_bytes());
    msg[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: plain system calls on a buffer on the stack.
    unsafe {
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(1)
    }
}

extern "C" fn on_child(_: libc::c_int) {}

/// The holder: set up, then reap forever.
fn child(plan: &Plan, report: libc::c_int) -> ! {
    // SAFETY: only system calls, on memory made before the clone.
    unsafe {
        // Die with the shim; if it is already gone, do not linger. In a new
        // PID namespace the parent, outside it, shows as pid 0.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let parent = if plan.flags & libc::CLONE_NEWPID != 0 {
            0
        } else {
            plan.parent
        };
        if libc::getppid() != parent {
            fail(report, Step::Parent as u32);
        }
        if let Some(fd) = &plan.netns {
            if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                fail(report, Step::Netns as u32);
            }
        }
        if let Some(name) = &plan.hostname {
            if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
                fail(report, Step::Hostname as u32);
            }
        }
        // /proc/sys shows the namespaces of whoever opens it: ours now.
        for (i, (path, value)) in plan.sysctls.iter().enumerate() {
            let step = Step::Sysctl as u32 + i as u32;
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                fail(report, step);
            }
            if libc::write(fd, value.as_ptr().cast(), value.len()) < 0 {
                fail(report, step);
            }
            libc::close(fd);
        }

        // Nothing of the host's filesystem stays in reach (/dev/null is
        // opened first, for stdio).
        let null = libc::open(plan.dev_null.as_ptr(), libc::O_RDWR);
        if libc::chroot(plan.root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
            fail(report, Step::Root as u32);
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 0);

        // Nothing of the shim's stays open: its sockets, fifos and the
        // report pipe (whose close tells the parent all went well).
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);

        set_title(&plan.title, plan.args_len);

        // Signals: the shim's handlers mean nothing here. SIGCHLD wakes the
        // reaping loop, and waits blocked so that none is missed.
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::signal(
            libc::SIGCHLD,
            on_child as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_SETMASK, &chld, std::ptr::null_mut());
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            libc::sigsuspend(&none);
        }
    }
}

extern "C" {
    /// glibc's pointer to `argv[0]`, the start of the process's arguments.
    static program_invocation_name: *mut libc::c_char;
}

/// Shows the holder as `barge-pod <id>` in `ps` instead of as a second shim:
/// overwrites the shim's arguments in the child's copy of them (the kernel
/// reads `/proc/<pid>/cmdline` from that memory), `len` bytes from argv[0],
/// and sets its name.
///
/// # Safety
/// Runs in the holder only, whose memory is its own copy; `len` is the size
/// of the argument strings the process started with.
unsafe fn set_title(title: &[u8], len: usize) {
    let start = program_invocation_name;
    if start.is_null() || len == 0 {
        return;
    }
    std::ptr::write_bytes(start, 0, len);
    let n = title.len().min(len - 1);
    std::ptr::copy_nonoverlapping(title.as_ptr(), start.cast::<u8>(), n);
    let mut comm = [0u8; 16];
    comm[..TITLE.len()].copy_from_slice(TITLE.as_bytes());
    libc::prctl(libc::PR_SET_NAME, comm.as_ptr());
}
