//! The fuzz targets, one module each.

use arbitrary::Unstructured;

use crate::driver::Target;

pub mod entrypoint;
pub mod mount;
pub mod options;
pub mod proto;
pub mod wasm;

/// Every target, in the order `all` runs them.
pub const NAMES: &[&str] = &["options", "entrypoint", "proto", "mount", "wasm"];

/// Makes the target called `name`.
pub fn make(name: &str) -> Option<Box<dyn Target>> {
    Some(match name {
        "options" => Box::new(options::Options::new()),
        "entrypoint" => Box::new(entrypoint::Entrypoint::new()),
        "proto" => Box::new(proto::Proto::new()),
        "mount" => Box::new(mount::Mount::new()),
        "wasm" => Box::new(wasm::Wasm::new()),
        _ => return None,
    })
}

/// A scratch directory for a target's files, removed when dropped: under
/// /dev/shm when that is a tmpfs (making and removing files there costs a
/// fraction of what it costs on a disk's filesystem), else under /tmp.
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let tmpfs = nix::sys::statfs::statfs(shm)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    let base = if tmpfs {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("make a scratch directory")
}

/// A string for a generated input: a dictionary word most of the time,
/// otherwise a few arbitrary characters (possibly not ASCII, NUL, quotes).
pub fn word(u: &mut Unstructured<'_>, dict: &[&str]) -> String {
    if !dict.is_empty() && u.ratio(7, 8).unwrap_or(true) {
        return u.choose(dict).map(|s| s.to_string()).unwrap_or_default();
    }
    let n = u.int_in_range(0..=12).unwrap_or(0);
    (0..n)
        .map(|_| {
            let c = u.int_in_range(0u32..=0x2fff).unwrap_or(0);
            match c % 5 {
                0 => char::from_u32(c).unwrap_or('x'),
                _ => *u
                    .choose(&[
                        'a', '/', '.', '"', '\\', '\n', '=', ',', ':', '\0', '#', ' ', '[', '{',
                    ])
                    .unwrap_or(&'a'),
            }
        })
        .collect()
}

/// The mode an input is in (its first byte, modulo `n`) and the rest.
pub fn lane(data: &[u8], n: u8) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (first % n, rest),
        None => (0, data),
    }
}

/// An input for lane `lane`: the lane byte, then the payload.
pub fn in_lane(lane: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![lane];
    v.extend_from_slice(payload);
    v
}
