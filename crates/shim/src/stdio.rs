//! The container's stdio, as containerd names it in Create: fifo paths,
//! `file://` URIs, logging binaries (`binary://`, `binary-v2://`, see
//! [`crate::logbinary`]), or nothing.
//!
//! stdout and stderr: the container gets the fifos themselves, with no
//! copying through the shim. The shim keeps a reader on each until the
//! process exits, so that the container never takes SIGPIPE when the client
//! goes away. A logging binary's pipes go to the container the same way;
//! one logger takes both streams when both name it.
//!
//! stdin is copied from the fifo into a pipe. A fifo read before containerd's
//! writer has opened it would give end-of-file at once, and a writer kept by
//! the shim would hide the real end-of-file when the client closes stdin.
//! The copy waits for the fifo to become readable, which happens only once a
//! writer has come, and closes the pipe at the writer's end-of-file or at
//! CloseIO.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use barge_executor::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::logbinary::{self, Logger, Owner, Stream};
use crate::AbortOnDrop;

/// The ends of the fifos the shim keeps while the process lives.
#[derive(Debug, Default)]
pub struct Held {
    pub stdin: Option<StdinCopy>,
    pub outputs: Vec<OwnedFd>,
    /// Dropping a logger closes its pipes and ends it.
    pub loggers: Vec<Logger>,
}

/// The running copy of stdin. Dropping it stops the copy.
#[derive(Debug)]
pub struct StdinCopy {
    close: Option<oneshot::Sender<()>>,
    _task: AbortOnDrop,
}

impl StdinCopy {
    /// CloseIO: copy what the fifo holds now, then close the container's stdin.
    pub fn close(&mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
    }
}

/// Opens the three streams of `owner`'s process. With a terminal the
/// process gets none: its runtime connects it to the pty, and
/// [`crate::console`] copies.
pub fn open(
    stdin: &str,
    stdout: &str,
    stderr: &str,
    terminal: bool,
    owner: &Owner,
) -> Result<(Stdio, Held)> {
    if terminal {
        return Ok((Stdio::default(), Held::default()));
    }
    let mut held = Held::default();
    let stdin = match stdin {
        "" => None,
        path => {
            let (container, copy) = open_input(path)?;
            held.stdin = Some(copy);
            Some(container)
        }
    };
    let stdout = open_output(stdout, Stream::Stdout, &mut held, owner)?;
    let stderr = open_output(stderr, Stream::Stderr, &mut held, owner)?;
    Ok((
        Stdio {
            stdin,
            stdout,
            stderr,
        },
        held,
    ))
}

fn open_input(path: &str) -> Result<(OwnedFd, StdinCopy)> {
    use tokio::net::unix::pipe;
    let (container, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let to = pipe::Sender::from_owned_fd(writer).map_err(Error::io("stdin pipe"))?;
    Ok((container, copy_input(path, to, None)?))
}

/// Copies the stdin fifo at `path` into `to` until the client's end-of-file
/// or CloseIO, then writes `trailer` (a terminal's ^D) and drops `to`.
pub fn copy_input<W>(path: &str, mut to: W, trailer: Option<&'static [u8]>) -> Result<StdinCopy>
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::net::unix::pipe;
    let path = strip_fifo_scheme(path)?;
    let fifo = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(Error::io(format!("open stdin fifo {path}")))?;
    let mut from = pipe::Receiver::from_file(fifo).map_err(Error::io("watch stdin fifo"))?;
    let (close, mut closed) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        use std::os::fd::AsRawFd;
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Only the read races CloseIO; what was read is always written,
            // outside the select, so that nothing read is dropped.
            let n = tokio::select! {
                biased;
                r = from.read(&mut buf) => match r {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        log::debug!("stdin copy ended: {e}");
                        break;
                    }
                },
                _ = &mut closed => {
                    // Drain what the client wrote before it asked to close,
                    // reading the fifo itself: the event loop may not have
                    // seen it become readable yet.
                    loop {
                        match nix::unistd::read(from.as_raw_fd(), &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if to.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    break;
                }
            };
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        if let Some(trailer) = trailer {
            let _ = to.write_all(trailer).await;
        }
    });
    Ok(StdinCopy {
        close: Some(close),
        _task: AbortOnDrop(task.abort_handle()),
    })
}

/// Where a terminal's output goes: containerd's stdout fifo, a `file://`
/// log, a logging binary's stdout pipe, or nowhere.
pub enum Sink {
    Fifo(tokio::net::unix::pipe::Sender),
    File(std::fs::File),
    /// The pipe, and the logger, which ends once it is dropped.
    Logger {
        pipe: tokio::net::unix::pipe::Sender,
        _logger: Held,
    },
    Discard,
}

impl Sink {
    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Sink::Fifo(f) | Sink::Logger { pipe: f, .. } => f.write_all(data).await,
            Sink::File(f) => f.write_all(data),
            Sink::Discard => Ok(()),
        }
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Fifo(f) | Sink::Logger { pipe: f, .. } => f.flush().await,
            Sink::File(_) | Sink::Discard => Ok(()),
        }
    }

    /// What was written into containerd's fifo and its client has not read
    /// yet (FIONREAD of the pipe); nothing for the other sinks.
    pub fn unread(&self) -> usize {
        match self {
            Sink::Fifo(f) => unread(f),
            _ => 0,
        }
    }
}

/// The bytes waiting in the pipe or fifo `fd` for its reader (0 when that
/// cannot be told).
pub fn unread(fd: &impl std::os::fd::AsFd) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at
    // a live local; the descriptor is borrowed for the call.
    if unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return 0;
    }
    n.max(0) as usize
}

/// Once a process's output is all written, how long its client may go
/// without reading any of what is left in the fifo before the shim stops
/// waiting.
const READ_STALL: std::time::Duration = std::time::Duration::from_millis(200);

/// Waits until the client has read what `unread` counts, as long as it
/// keeps reading. A client may delete the process as soon as its exit is
/// published and close its fifos then (ctr's exec does: containerd's client
/// cancels its copy after DeleteProcess), losing what was still in them;
/// the exit waits for this (within the caller's drain limit).
pub async fn until_read(unread: impl Fn() -> usize, what: &str) {
    let mut left = unread();
    let mut since = tokio::time::Instant::now();
    while left > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let now = unread();
        if now < left {
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= READ_STALL {
            log::debug!("{what}: {now} bytes left unread in the fifo");
            return;
        }
        left = now;
    }
}

/// Opens the output that `uri` names for the shim to write `owner`'s
/// terminal into.
pub fn open_sink(uri: &str, owner: &Owner) -> Result<Sink> {
    if uri.is_empty() {
        return Ok(Sink::Discard);
    }
    if uri.starts_with("file://") || logbinary::is_binary(uri) {
        let mut held = Held::default();
        let Some(fd) = open_output(uri, Stream::Stdout, &mut held, owner)? else {
            return Ok(Sink::Discard);
        };
        if held.loggers.is_empty() {
            return Ok(Sink::File(fd.into()));
        }
        let pipe = tokio::net::unix::pipe::Sender::from_owned_fd(fd)
            .map_err(Error::io("watch the pipe of the logging binary"))?;
        return Ok(Sink::Logger {
            pipe,
            _logger: held,
        });
    }
    let path = strip_fifo_scheme(uri)?;
    // Read-write: opening never blocks, and a client that goes away does not
    // turn into SIGPIPE or EPIPE while the process still writes.
    let fifo = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .map_err(Error::io(format!("open output fifo {path}")))?;
    Ok(Sink::Fifo(fifo))
}

fn open_output(
    uri: &str,
    stream: Stream,
    held: &mut Held,
    owner: &Owner,
) -> Result<Option<OwnedFd>> {
    if uri.is_empty() {
        return Ok(None);
    }
    if logbinary::is_binary(uri) {
        // One logger for both streams when both name it, as in containerd.
        let logger = match held.loggers.iter().position(|l| l.uri() == uri) {
            Some(i) => &held.loggers[i],
            None => {
                held.loggers.push(Logger::start(uri, owner)?);
                &held.loggers[held.loggers.len() - 1]
            }
        };
        return logger.writer(stream).map(Some);
    }
    if let Some(path) = uri.strip_prefix("file://") {
        if let Some(dir) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(dir)
                .map_err(Error::io(format!("create log directory {}", dir.display())))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(Error::io(format!("open log file {path}")))?;
        return Ok(Some(file.into()));
    }
    let path = strip_fifo_scheme(uri)?;
    // O_RDWR on a fifo never blocks, whether or not a reader is there yet.
    let fifo = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(Error::io(format!("open output fifo {path}")))?;
    let container = fifo
        .try_clone()
        .map_err(Error::io(format!("duplicate fifo {path}")))?;
    held.outputs.push(fifo.into());
    Ok(Some(container.into()))
}

/// Gives the streams a process gets to `owner` (uid, gid), as runc-v2
/// does with its pipes for `IoUid`/`IoGid`: a process in a user namespace
/// can then reopen them by path (`/dev/stdout`, `/proc/self/fd/1`), which
/// the kernel only allows to a user its namespace maps. The stdin pipe is
/// the shim's own, the output fifos are containerd's (reachable only
/// through the descriptors the process already holds), a logging binary's
/// pipes are the shim's. A `file://` log is the user's file and keeps its
/// owner; the process writes it through its descriptor as before.
pub fn set_owner(
    stdio: &Stdio,
    stdout: &str,
    stderr: &str,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    let streams = [
        ("stdin", stdio.stdin.as_ref(), ""),
        ("stdout", stdio.stdout.as_ref(), stdout),
        ("stderr", stdio.stderr.as_ref(), stderr),
    ];
    for (name, fd, uri) in streams {
        let Some(fd) = fd.filter(|_| !uri.starts_with("file://")) else {
            continue;
        };
        nix::unistd::fchown(
            fd.as_raw_fd(),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| Error::Other(format!("give the process's {name} to {uid}:{gid}: {e}")))?;
    }
    Ok(())
}

fn strip_fifo_scheme(uri: &str) -> Result<&str> {
    if let Some(path) = uri.strip_prefix("fifo://") {
        return Ok(path);
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return Err(Error::Unimplemented(format!(
            "stdio scheme `{scheme}://` is not supported by barge (stdin is a fifo; stdout and \
             stderr are fifos, file://, binary:// or binary-v2:// URIs)"
        )));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    fn clear_nonblock(file: &std::fs::File) -> Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = OFlag::from_bits_truncate(fcntl(file.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(
            file.as_raw_fd(),
            FcntlArg::F_SETFL(flags & !OFlag::O_NONBLOCK),
        )?;
        Ok(())
    }

    /// The client's end of a fifo, opened without waiting for a writer.
    fn nonblocking_reader(path: &str) -> std::fs::File {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap()
    }

    fn mkfifo(dir: &std::path::Path, name: &str) -> String {
        let p = dir.join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        p.to_str().unwrap().to_string()
    }

    #[test]
    fn output_reaches_the_reader_and_ends_when_all_close() {
        let dir = tempfile::tempdir().unwrap();
        let out = mkfifo(dir.path(), "out");
        let mut reader = nonblocking_reader(&out);
        let (stdio, held) = open("", &out, "", false, &Owner::default()).unwrap();
        let mut w = std::fs::File::from(stdio.stdout.unwrap());
        w.write_all(b"hello\n").unwrap();
        drop(w);
        drop(held);
        clear_nonblock(&reader).unwrap();
        let mut s = String::new();
        reader.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello\n");
    }

    fn read_all(fd: OwnedFd) -> String {
        let mut s = String::new();
        std::fs::File::from(fd).read_to_string(&mut s).unwrap();
        s
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stdin_waits_for_the_writer_and_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let inp = mkfifo(dir.path(), "in");
        let (stdio, _held) = open(&inp, "", "", false, &Owner::default()).unwrap();
        // No writer yet: the copy must not take that for end-of-file.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut writer = OpenOptions::new().write(true).open(&inp).unwrap();
        writer.write_all(b"data").unwrap();
        drop(writer);
        let reader = tokio::task::spawn_blocking(move || read_all(stdio.stdin.unwrap()));
        assert_eq!(reader.await.unwrap(), "data");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn close_io_delivers_what_was_written_then_end_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let inp = mkfifo(dir.path(), "in");
        let (stdio, mut held) = open(&inp, "", "", false, &Owner::default()).unwrap();
        // The client keeps its writer open and sends CloseIO instead.
        let mut writer = OpenOptions::new().write(true).open(&inp).unwrap();
        writer.write_all(b"abc").unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        held.stdin.as_mut().unwrap().close();
        let reader = tokio::task::spawn_blocking(move || read_all(stdio.stdin.unwrap()));
        assert_eq!(reader.await.unwrap(), "abc");
        drop(writer);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_process_streams_get_the_io_owner_but_a_log_file_does_not() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (inp, out) = (mkfifo(dir.path(), "in"), mkfifo(dir.path(), "out"));
        let log = dir.path().join("err.log");
        let err = format!("file://{}", log.display());
        let (stdio, _held) = open(&inp, &out, &err, false, &Owner::default()).unwrap();
        set_owner(&stdio, &out, &err, Some((100000, 100001))).unwrap();
        let owner = |fd: &Option<OwnedFd>| {
            let m = std::fs::File::from(fd.as_ref().unwrap().try_clone().unwrap())
                .metadata()
                .unwrap();
            (m.uid(), m.gid())
        };
        // The stdin pipe the shim made, and containerd's stdout fifo.
        assert_eq!(owner(&stdio.stdin), (100000, 100001));
        assert_eq!(owner(&stdio.stdout), (100000, 100001));
        let fifo = std::fs::metadata(&out).unwrap();
        assert_eq!((fifo.uid(), fifo.gid()), (100000, 100001));
        // The user's log file keeps its owner.
        let file = std::fs::metadata(&log).unwrap();
        let us = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        assert_eq!((file.uid(), file.gid()), us);
        set_owner(&stdio, &out, &err, None).unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_fifo_sink_counts_what_its_client_has_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let out = mkfifo(dir.path(), "out");
        let mut reader = nonblocking_reader(&out);
        let mut sink = open_sink(&out, &Owner::default()).unwrap();
        assert_eq!(sink.unread(), 0);
        sink.write_all(b"hello").await.unwrap();
        assert_eq!(sink.unread(), 5);
        let mut buf = [0u8; 3];
        reader.read_exact(&mut buf).unwrap();
        assert_eq!(sink.unread(), 2);
        assert_eq!(Sink::Discard.unread(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn file_uri_and_bad_schemes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sub/out.log");
        let (stdio, _) = open(
            "",
            &format!("file://{}", log.display()),
            "",
            false,
            &Owner::default(),
        )
        .unwrap();
        std::fs::File::from(stdio.stdout.unwrap())
            .write_all(b"x")
            .unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"x");
        let err = open("", "syslog://host", "", false, &Owner::default()).unwrap_err();
        assert!(err.to_string().contains("syslog://"), "{err}");
        let err = open("", "/nonexistent/fifo", "", false, &Owner::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/fifo"), "{err}");
    }
}
