//! The container's stdio, as containerd names it in Create: fifo paths,
//! `file://` URIs, or nothing.
//!
//! The container gets the fifos themselves, with no copying through the shim.
//! The shim keeps one extra end of each fifo until the process exits: a reader
//! on stdout and stderr, so that the container never takes SIGPIPE when the
//! client goes away, and a writer on stdin, so that the container does not
//! read end-of-file before containerd's writer has opened the fifo.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use barge_executor::Stdio;

use crate::error::{Error, Result};

/// The ends of the fifos the shim keeps while the process lives.
#[derive(Debug, Default)]
pub struct Held {
    pub stdin: Option<OwnedFd>,
    pub outputs: Vec<OwnedFd>,
}

/// Opens the three streams of a process.
pub fn open(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Result<(Stdio, Held)> {
    if terminal {
        return Err(Error::Unimplemented(
            "a terminal (tty) is not supported by barge yet; run without -t".into(),
        ));
    }
    let mut held = Held::default();
    let stdin = match stdin {
        "" => None,
        path => {
            let (container, keeper) = open_input(path)?;
            held.stdin = Some(keeper);
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

fn open_input(path: &str) -> Result<(OwnedFd, OwnedFd)> {
    let path = strip_fifo_scheme(path)?;
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(Error::io(format!("open stdin fifo {path}")))?;
    let keeper = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(Error::io(format!("open stdin fifo {path} for writing")))?;
    clear_nonblock(&reader)?;
    Ok((reader.into(), keeper.into()))
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

fn clear_nonblock(file: &std::fs::File) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(file.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(
        file.as_raw_fd(),
        FcntlArg::F_SETFL(flags & !OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

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

    #[test]
    fn stdin_stays_open_until_the_keeper_closes() {
        let dir = tempfile::tempdir().unwrap();
        let inp = mkfifo(dir.path(), "in");
        let (stdio, held) = open(&inp, "", "", false).unwrap();
        let mut writer = OpenOptions::new().write(true).open(&inp).unwrap();
        writer.write_all(b"data").unwrap();
        drop(writer);
        drop(held.stdin);
        let mut r = std::fs::File::from(stdio.stdin.unwrap());
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "data");
    }

    #[test]
    fn file_uri_and_bad_schemes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sub/out.log");
        let (stdio, _) = open("", &format!("file://{}", log.display()), "", false).unwrap();
        std::fs::File::from(stdio.stdout.unwrap())
            .write_all(b"x")
            .unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"x");
        let err = open("", "binary:///bin/logger", "", false).unwrap_err();
        assert!(err.to_string().contains("binary://"), "{err}");
        assert!(open("", "", "", true)
            .unwrap_err()
            .to_string()
            .contains("terminal"));
        let err = open("", "/nonexistent/fifo", "", false).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/fifo"), "{err}");
    }
}
