//! The cache of compiled guests.
//!
//! An entry is named `<sha256 of the Wasm source>-<wasmtime compatibility
//! hash>.cwasm`, so a module is compiled once per engine configuration and
//! wasmtime build. Entries are written to a temporary name and renamed into
//! place, so a start never sees half an entry and concurrent starts of one
//! module both end with a whole one. Each entry carries a SHA-256 of its
//! payload; one that doesn't match is removed and rebuilt, never loaded.
//!
//! The directory is opened by the shim and inherited by the container's
//! init as a file descriptor, since after pivot_root no host path is
//! reachable from there.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstatat, futimens, Mode};
use nix::sys::time::TimeSpec;
use nix::unistd::{unlinkat, UnlinkatFlags};
use sha2::{Digest, Sha256};

const MAGIC: &[u8] = b"barge-cwasm-v1\n";
const SUFFIX: &str = ".cwasm";
const TMP_PREFIX: &str = ".tmp-";
/// A temporary file this old belongs to a start that died.
const STALE_TMP: Duration = Duration::from_secs(600);

/// Why an entry was not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache entry {0} is corrupt ({1}); removed")]
    Corrupt(String, &'static str),
    #[error("cache {what} {name}: {err}")]
    Io {
        what: &'static str,
        name: String,
        err: std::io::Error,
    },
}

/// A handle on the cache directory, cheap to clone into the container init.
#[derive(Clone)]
pub struct Cache {
    dir: Arc<OwnedFd>,
    max_bytes: u64,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cache {
    /// Opens (making it if needed) the cache directory. `max_mb` 0 turns
    /// the cache off.
    pub fn open(dir: &Path, max_mb: u64) -> std::io::Result<Option<Cache>> {
        if max_mb == 0 {
            return Ok(None);
        }
        std::fs::create_dir_all(dir)?;
        let file = File::open(dir)?;
        if !file.metadata()?.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(Some(Cache {
            dir: Arc::new(OwnedFd::from(file)),
            max_bytes: max_mb.saturating_mul(1024 * 1024),
        }))
    }

    /// The entry name for a source with this digest under an engine with
    /// this compatibility hash.
    pub fn key(source_sha256: &str, compat: u64) -> String {
        format!("{source_sha256}-{compat:016x}")
    }

    fn open_at(&self, name: &str, flags: OFlag, mode: u32) -> nix::Result<File> {
        let fd = openat(
            Some(self.dir.as_raw_fd()),
            name,
            flags | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )?;
        // SAFETY: openat just returned this descriptor, and nothing else owns it.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn io<'a>(what: &'static str, name: &'a str) -> impl FnOnce(std::io::Error) -> CacheError + 'a {
        move |err| CacheError::Io {
            what,
            name: name.to_string(),
            err,
        }
    }

    /// The payload stored under `key`, checked against its checksum.
    /// `Ok(None)` is a miss; a corrupt entry is removed and reported.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let name = format!("{key}{SUFFIX}");
        let mut file = match self.open_at(&name, OFlag::O_RDONLY, 0) {
            Ok(f) => f,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(Self::io("open", &name)(e.into())),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(Self::io("read", &name))?;
        let problem = if bytes.len() < MAGIC.len() + 32 || !bytes.starts_with(MAGIC) {
            Some("bad header")
        } else {
            let (sum, payload) = bytes[MAGIC.len()..].split_at(32);
            (Sha256::digest(payload).as_slice() != sum).then_some("checksum mismatch")
        };
        if let Some(why) = problem {
            self.remove(&name);
            return Err(CacheError::Corrupt(name, why));
        }
        // Mark it used, for the least-recently-used eviction.
        let now = TimeSpec::from(
            std::time::SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let _ = futimens(file.as_raw_fd(), &now, &now);
        bytes.drain(..MAGIC.len() + 32);
        Ok(Some(bytes))
    }

    /// Stores `payload` under `key`, then trims the cache to its bound.
    pub fn put(&self, key: &str, payload: &[u8]) -> Result<(), CacheError> {
        let name = format!("{key}{SUFFIX}");
        let tmp = format!(
            "{TMP_PREFIX}{}-{}-{key}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let written = (|| {
            let mut file = self
                .open_at(
                    &tmp,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                    0o600,
                )
                .map_err(std::io::Error::from)?;
            file.write_all(MAGIC)?;
            file.write_all(&Sha256::digest(payload))?;
            file.write_all(payload)?;
            file.sync_data()?;
            renameat(
                Some(self.dir.as_raw_fd()),
                tmp.as_str(),
                Some(self.dir.as_raw_fd()),
                name.as_str(),
            )
            .map_err(std::io::Error::from)
        })();
        if let Err(e) = written {
            self.remove(&tmp);
            return Err(Self::io("write", &name)(e));
        }
        self.evict();
        Ok(())
    }

    /// Removes the entry under `key`, one that wasmtime refused to load.
    pub fn forget(&self, key: &str) {
        self.remove(&format!("{key}{SUFFIX}"));
    }

    fn remove(&self, name: &str) {
        let _ = unlinkat(Some(self.dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir);
    }

    /// The entries, oldest use first, with their sizes.
    fn entries(&self) -> Vec<(String, u64, i64)> {
        let dir = match nix::dir::Dir::openat(
            Some(self.dir.as_raw_fd()),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(d) => d,
            Err(_) => return Vec::new(),
        };
        let mut entries = Vec::new();
        let mut dir = dir;
        for entry in dir.iter().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(st) = fstatat(
                Some(self.dir.as_raw_fd()),
                name.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                continue;
            };
            if name.starts_with(TMP_PREFIX) {
                let age = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs() as i64
                    - st.st_mtime;
                if age > STALE_TMP.as_secs() as i64 {
                    self.remove(&name);
                }
            } else if name.ends_with(SUFFIX) {
                entries.push((name, st.st_size as u64, st.st_mtime));
            }
        }
        entries.sort_by_key(|e| e.2);
        entries
    }

    /// Removes the least recently used entries until the cache fits.
    fn evict(&self) {
        let entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        for (name, size, _) in entries {
            if total <= self.max_bytes {
                break;
            }
            log::info!(
                "wasm cache: evicting {name} ({size} bytes) to stay under {} bytes",
                self.max_bytes
            );
            self.remove(&name);
            total -= size;
        }
    }

    /// The total size of the cache's entries, in bytes.
    pub fn size(&self) -> u64 {
        self.entries().iter().map(|e| e.1).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c"), 1).unwrap().unwrap();
        let key = Cache::key(&sha256_hex(b"src"), 42);
        assert!(cache.get(&key).unwrap().is_none());
        cache.put(&key, b"compiled").unwrap();
        assert_eq!(cache.get(&key).unwrap().unwrap(), b"compiled");
        // Flip a payload byte: the entry is refused and removed.
        let path = dir.path().join("c").join(format!("{key}{SUFFIX}"));
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = cache.get(&key).unwrap_err().to_string();
        assert!(
            err.contains("checksum mismatch") && err.contains(&key),
            "{err}"
        );
        assert!(!path.exists());
        assert!(cache.get(&key).unwrap().is_none());
        // A truncated entry is refused too.
        std::fs::write(&path, b"barge").unwrap();
        assert!(cache
            .get(&key)
            .unwrap_err()
            .to_string()
            .contains("bad header"));
        assert!(std::fs::read_dir(dir.path().join("c"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn bounded_by_size_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1).unwrap().unwrap();
        let big = vec![7u8; 400 * 1024];
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            cache.put(name, &big).unwrap();
            // Distinct mtimes, oldest first.
            let t = TimeSpec::new(1_000_000 + i as i64, 0);
            let f = File::open(dir.path().join(format!("{name}{SUFFIX}"))).unwrap();
            futimens(f.as_raw_fd(), &t, &t).unwrap();
        }
        cache.put("d", &big).unwrap();
        assert!(cache.size() <= 1024 * 1024);
        assert!(cache.get("a").unwrap().is_none(), "the oldest goes first");
        assert!(cache.get("d").unwrap().is_some());
    }

    #[test]
    fn zero_bound_turns_it_off() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Cache::open(dir.path(), 0).unwrap().is_none());
    }
}
