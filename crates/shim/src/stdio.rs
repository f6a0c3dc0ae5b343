//! The container's stdio, as containerd names it in Create: fifo paths,
//! `file://` URIs, or nothing.
//!
//! stdout and stderr: the container gets the fifos themselves, with no
//! copying through the shim. The shim keeps a reader on each until the
//! process exits, so that the container never takes SIGPIPE when the client
//! goes away.
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
use crate::AbortOnDrop;

/// The ends of the fifos the shim keeps while the process lives.
#[derive(Debug, Default)]
pub struct Held {
    pub stdin: Option<StdinCopy>,
    pub outputs: Vec<OwnedFd>,
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

/// Opens the three streams of a process. With a terminal the process gets
/// none: its runtime connects it to the pty, and [`crate::console`] copies.
pub fn open(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Result<(Stdio, Held)> {
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
    let stdout = open_output(stdout, &mut held)?;
    let stderr = open_output(stderr, &mut held)?;
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
        tokio::select! {
            r = tokio::io::copy(&mut from, &mut to) => {
                if let Err(e) = r {
                    log::debug!("stdin copy ended: {e}");
                }
            }
            _ = &mut closed => {
                // Drain what the client wrote before it asked to close.
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = from.try_read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
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
/// log, or nowhere.
pub enum Sink {
    Fifo(tokio::net::unix::pipe::Sender),
    File(std::fs::File),
    Discard,
}

impl Sink {
    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Sink::Fifo(f) => f.write_all(data).await,
            Sink::File(f) => f.write_all(data),
            Sink::Discard => Ok(()),
        }
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Fifo(f) => f.flush().await,
            Sink::File(_) | Sink::Discard => Ok(()),
        }
    }
}

/// Opens the output that `uri` names for the shim to write into.
pub fn open_sink(uri: &str) -> Result<Sink> {
    if uri.is_empty() {
        return Ok(Sink::Discard);
    }
    if uri.starts_with("file://") {
        let mut held = Held::default();
        return Ok(match open_output(uri, &mut held)? {
            Some(fd) => Sink::File(fd.into()),
            None => Sink::Discard,
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

fn open_output(uri: &str, held: &mut Held) -> Result<Option<OwnedFd>> {
    if uri.is_empty() {
        return Ok(None);
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

fn strip_fifo_scheme(uri: &str) -> Result<&str> {
    if let Some(path) = uri.strip_prefix("fifo://") {
        return Ok(path);
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return Err(Error::Unimplemented(format!(
            "stdio scheme `{scheme}://` is not supported by barge yet (fifos and file:// are)"
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

    fn mkfifo(dir: &std::path::Path, name: &str) -> String {
        let p = dir.join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        p.to_str().unwrap().to_string()
    }

    #[test]
    fn output_reaches_the_reader_and_ends_when_all_close() {
        let dir = tempfile::tempdir().unwrap();
        let out = mkfifo(dir.path(), "out");
        let mut reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&out)
            .unwrap();
        let (stdio, held) = open("", &out, "", false).unwrap();
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
        let (stdio, _held) = open(&inp, "", "", false).unwrap();
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
        let (stdio, mut held) = open(&inp, "", "", false).unwrap();
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
    async fn file_uri_and_bad_schemes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sub/out.log");
        let (stdio, _) = open("", &format!("file://{}", log.display()), "", false).unwrap();
        std::fs::File::from(stdio.stdout.unwrap())
            .write_all(b"x")
            .unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"x");
        let err = open("", "binary:///bin/logger", "", false).unwrap_err();
        assert!(err.to_string().contains("binary://"), "{err}");
        let err = open("", "/nonexistent/fifo", "", false).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/fifo"), "{err}");
    }
}
