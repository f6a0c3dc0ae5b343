//! The memory limit that a Wasm container's guests grow against, shared
//! between the shim and the container's processes through a memfd. The
//! shim writes it at Create and at every Update (`docker update -m`, an
//! in-place pod resize); a guest reads it at each `memory.grow`. The init
//! and every exec are forked from the shim and never exec, so they hold
//! the same descriptor under the same number.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;

/// Room for the longest value, `u64::MAX` in decimal, and a newline.
const WIDTH: usize = 21;

/// The shim's end: it writes.
pub struct SharedLimit(File);

impl SharedLimit {
    pub fn new(limit: Option<usize>) -> std::io::Result<SharedLimit> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags, and
        // returns a new descriptor or -1; the name is a static C string.
        let fd = unsafe { libc::memfd_create(c"barge-wasm-memory-limit".as_ptr(), 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a new descriptor that nothing else owns.
        let shared = SharedLimit(unsafe { File::from_raw_fd(fd) });
        shared.set(limit)?;
        Ok(shared)
    }

    /// The descriptor's number, the same in every process forked after.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// `None` is no limit.
    pub fn set(&self, limit: Option<usize>) -> std::io::Result<()> {
        let text = match limit {
            Some(l) => format!("{l:>width$}\n", width = WIDTH - 1),
            None => format!("{:>width$}\n", "max", width = WIDTH - 1),
        };
        // One write of a fixed width at offset 0: a reader never sees half
        // of it mixed with the old value.
        self.0.write_all_at(text.as_bytes(), 0)
    }
}

/// A guest's end: the limit now, or `None` when the descriptor says
/// nothing (not there, or unreadable), so that the caller keeps its own.
pub fn read(fd: RawFd) -> Option<Option<usize>> {
    let mut buf = [0u8; WIDTH];
    // SAFETY: pread writes at most buf.len() bytes into buf; a bad
    // descriptor only makes it fail.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n <= 0 {
        return None;
    }
    let text = std::str::from_utf8(&buf[..n as usize]).ok()?.trim();
    if text == "max" {
        return Some(None);
    }
    text.parse().ok().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_read_back() {
        let shared = SharedLimit::new(Some(64 << 20)).unwrap();
        assert_eq!(read(shared.fd()), Some(Some(64 << 20)));
        shared.set(Some(1)).unwrap();
        assert_eq!(read(shared.fd()), Some(Some(1)));
        shared.set(None).unwrap();
        assert_eq!(read(shared.fd()), Some(None));
        shared.set(Some(usize::MAX)).unwrap();
        assert_eq!(read(shared.fd()), Some(Some(usize::MAX)));
        assert_eq!(read(-1), None);
    }
}
