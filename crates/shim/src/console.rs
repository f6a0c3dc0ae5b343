//! Terminals. When a process asks for one, its runtime makes the pty inside
//! the container and sends the master over a console socket, as runc's
//! `--console-socket` does. The shim keeps the master and copies between it
//! and containerd's fifos, on the event loop: stdin fifo → master, and
//! master → stdout fifo. A terminal has one output stream, so there is no
//! stderr.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr};
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncWrite;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::logbinary::Owner;
use crate::stdio::{self, StdinCopy};
use crate::AbortOnDrop;

/// Where console sockets are made: short paths, since a unix socket's path
/// must fit in 108 bytes.
const SOCKET_DIR: &str = "/run/containerd/barge/console";
/// How long a runtime that said it made the terminal has to send it.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The terminal's end-of-file character (VEOF, ^D), written when stdin ends.
const EOT: u8 = 0x04;

/// A listening console socket; its file goes when it is dropped.
pub struct Listener {
    path: PathBuf,
    socket: OwnedFd,
}

impl Listener {
    pub fn bind() -> Result<Listener> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(SOCKET_DIR)
            .map_err(Error::io(format!("create {SOCKET_DIR}")))?;
        let path = Path::new(SOCKET_DIR).join(format!(
            "{}-{}",
            std::process::id(),
            barge_executor::next_serial()
        ));
        let _ = std::fs::remove_file(&path);
        let socket = socket::socket(
            socket::AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        socket::bind(socket.as_raw_fd(), &UnixAddr::new(&path)?)?;
        socket::listen(&socket, socket::Backlog::new(1)?)?;
        Ok(Listener { path, socket })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the pty master that the runtime sent.
    pub fn receive(self) -> Result<OwnedFd> {
        let conn = self.accept()?;
        let mut name = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                let mut fds = fds.into_iter();
                if let Some(fd) = fds.next() {
                    for extra in fds {
                        // SAFETY: the kernel just gave us these descriptors.
                        drop(unsafe { OwnedFd::from_raw_fd(extra) });
                    }
                    // SAFETY: as above; nothing else owns it.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Err(Error::Other(
            "the runtime connected to the console socket but sent no terminal".into(),
        ))
    }

    fn accept(&self) -> Result<OwnedFd> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        let timeout =
            PollTimeout::try_from(RECEIVE_TIMEOUT.as_millis() as i32).unwrap_or(PollTimeout::NONE);
        if poll(&mut fds, timeout)? == 0 {
            return Err(Error::Other(format!(
                "the runtime sent no terminal to {} within {:?}",
                self.path.display(),
                RECEIVE_TIMEOUT
            )));
        }
        let fd = socket::accept4(self.socket.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The master of a process's terminal and the copies through it.
pub struct Console {
    master: Arc<AsyncFd<OwnedFd>>,
    stdin: Option<StdinCopy>,
    /// Turns true once all output has been copied (the terminal hung up).
    drained: watch::Receiver<bool>,
    _output: AbortOnDrop,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Console({})", self.master.get_ref().as_raw_fd())
    }
}

impl Console {
    /// Starts copying: `stdin` (a fifo, or empty) into the terminal, and the
    /// terminal's output into `stdout` (a fifo, a `file://` URI, a logging
    /// binary run for `owner`, or empty).
    pub fn start(master: OwnedFd, stdin: &str, stdout: &str, owner: &Owner) -> Result<Console> {
        set_nonblocking(&master)?;
        // SAFETY: the AsyncFd owns the descriptor, which stays open and is
        // used only through it until the AsyncFd is dropped.
        let master = unsafe {
            AsyncFd::register_with_interest(
                master,
                tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE,
            )
        }
        .map_err(|e| Error::io("watch terminal")(e.into_parts().1))?;
        let master = Arc::new(master);
        let sink = stdio::open_sink(stdout, owner)?;
        let (done, drained) = watch::channel(false);
        let output = tokio::spawn(copy_output(master.clone(), sink, done));
        let stdin = match stdin {
            "" => None,
            path => Some(stdio::copy_input(
                path,
                PtyWriter(master.clone()),
                Some(&[EOT]),
            )?),
        };
        Ok(Console {
            master,
            stdin,
            drained,
            _output: AbortOnDrop(output.abort_handle()),
        })
    }

    /// ResizePty: sets the terminal's window size.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let size = libc::winsize {
            ws_row: height.min(u16::MAX as u32) as u16,
            ws_col: width.min(u16::MAX as u32) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which
        // points at a live local; the descriptor is ours and open.
        let r = unsafe {
            libc::ioctl(
                self.master.get_ref().as_raw_fd(),
                libc::TIOCSWINSZ,
                &size as *const libc::winsize,
            )
        };
        if r < 0 {
            return Err(Error::io("set the terminal size")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// CloseIO: what the client wrote goes in, then end-of-file.
    pub fn close_stdin(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            stdin.close();
        }
    }

    /// Waits until every byte the process wrote has been copied out, or
    /// `limit` has passed (a process that left a child holding the
    /// terminal never hangs it up).
    pub fn drained(&self, limit: Duration) -> impl std::future::Future<Output = ()> + 'static {
        let mut rx = self.drained.clone();
        async move {
            let _ = tokio::time::timeout(limit, rx.wait_for(|done| *done)).await;
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Copies the terminal's output until it hangs up (EIO once every holder
/// of the other end has closed it), then says so.
async fn copy_output(
    master: Arc<AsyncFd<OwnedFd>>,
    mut sink: stdio::Sink,
    done: watch::Sender<bool>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let read = match master.readable().await {
            Ok(mut guard) => {
                match guard.try_io(|fd| {
                    nix::unistd::read(fd.get_ref().as_raw_fd(), &mut buf).map_err(Into::into)
                }) {
                    Ok(r) => r,
                    Err(_would_block) => continue,
                }
            }
            Err(e) => Err(e),
        };
        match read {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = sink.write_all(&buf[..n]).await {
                    log::debug!("terminal output: {e}");
                    // Nobody reads any more: keep draining the terminal so
                    // that the process is not blocked on a full pty.
                    sink = stdio::Sink::Discard;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!("terminal output ended: {e}");
                break;
            }
        }
    }
    let _ = sink.flush().await;
    stdio::until_read(|| sink.unread(), "terminal output").await;
    done.send_replace(true);
}

/// Writes into the terminal through the event loop.
struct PtyWriter(Arc<AsyncFd<OwnedFd>>);

impl AsyncWrite for PtyWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(Into::into)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
