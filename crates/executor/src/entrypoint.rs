//! Finding what a container's entrypoint is, inside its rootfs, the way the
//! kernel would find it after pivot_root: PATH lookup, symlinks resolved
//! against the rootfs, then a look at the first bytes.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::Spec;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MAX_SYMLINKS: usize = 40;

/// What sits at the entrypoint's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Elf,
    Script,
    WasmModule,
    WasmText,
    /// Something else: the first bytes, for the error message.
    Unknown(Vec<u8>),
}

/// An entrypoint found in the rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entrypoint {
    /// The path as the container sees it.
    pub path: PathBuf,
    /// The same file on the host.
    pub host_path: PathBuf,
    pub kind: Kind,
}

/// The rootfs directory of a bundle on the host.
pub fn rootfs(bundle: &Path, spec: &Spec) -> Option<PathBuf> {
    spec.root().as_ref().map(|r| bundle.join(r.path()))
}

/// Where `arg0` of `process` may be, in the container's view, in the order
/// execvp tries them: itself against the cwd when it has a `/`, else each
/// directory of the process's PATH (or the default one).
pub fn candidates(process: &oci_spec::runtime::Process, arg0: &str) -> Vec<PathBuf> {
    if arg0.contains('/') {
        return vec![process.cwd().join(arg0)];
    }
    let path = process
        .env()
        .as_ref()
        .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(arg0))
        .collect()
}

/// Finds `process.args[0]` in the rootfs. The error says what was looked for
/// and where.
pub fn find(bundle: &Path, spec: &Spec) -> Result<Entrypoint, String> {
    let rootfs = rootfs(bundle, spec).ok_or("the OCI spec has no root")?;
    let process = spec
        .process()
        .as_ref()
        .ok_or("the OCI spec has no process")?;
    let arg0 = process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .filter(|a| !a.is_empty())
        .ok_or("the OCI spec's process has no args")?;
    let candidates = candidates(process, arg0);
    for path in &candidates {
        if let Some(host_path) = resolve(&rootfs, path) {
            if host_path.is_file() {
                let kind = sniff(&host_path);
                return Ok(Entrypoint {
                    path: path.clone(),
                    host_path,
                    kind,
                });
            }
        }
    }
    if arg0.contains('/') {
        Err(format!(
            "entrypoint {arg0} does not exist in the container's rootfs"
        ))
    } else {
        Err(format!(
            "entrypoint `{arg0}` was not found on the container's PATH ({})",
            candidates
                .iter()
                .filter_map(|p| p.parent().map(|d| d.display().to_string()))
                .collect::<Vec<_>>()
                .join(":")
        ))
    }
}

/// Resolves `path` (as the container sees it) to a host path, following
/// symlinks without ever leaving `rootfs`. As in the kernel, only a
/// directory can have something below it: `file/..`, `file/.` and `file/`
/// resolve to nothing (ENOTDIR).
fn resolve(rootfs: &Path, path: &Path) -> Option<PathBuf> {
    let mut pending: Vec<OsString> = Vec::new();
    push_parts(&mut pending, path.as_os_str());
    let mut resolved = PathBuf::new();
    // Whether `resolved` is a directory: the root is.
    let mut is_dir = true;
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if !is_dir {
            return None;
        }
        match part.as_bytes() {
            b"" | b"." => continue,
            b".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&part);
        let host = rootfs.join(&candidate);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return None;
                }
                let target = std::fs::read_link(&host).ok()?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                push_parts(&mut pending, target.as_os_str());
            }
            Ok(m) => {
                resolved = candidate;
                is_dir = m.is_dir();
            }
            Err(_) => return None,
        }
    }
    Some(rootfs.join(resolved))
}

/// Pushes the `/`-separated parts of `path` onto `pending`, last first,
/// keeping the empty and `.` parts (each asks for a directory).
fn push_parts(pending: &mut Vec<OsString>, path: &OsStr) {
    pending.extend(
        path.as_bytes()
            .split(|b| *b == b'/')
            .rev()
            .map(|p| OsStr::from_bytes(p).to_os_string()),
    );
}

fn sniff(path: &Path) -> Kind {
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") {
        Kind::Elf
    } else if head.starts_with(b"#!") {
        Kind::Script
    } else if head.starts_with(b"\0asm") {
        Kind::WasmModule
    } else if path.extension().is_some_and(|e| e == "wat") {
        Kind::WasmText
    } else {
        Kind::Unknown(head.to_vec())
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Elf => write!(f, "an ELF executable"),
            Kind::Script => write!(f, "a #! script"),
            Kind::WasmModule => write!(f, "a WebAssembly binary"),
            Kind::WasmText => write!(f, "a WebAssembly text file"),
            Kind::Unknown(b) if b.is_empty() => write!(f, "an empty file"),
            Kind::Unknown(b)
                if b.iter()
                    .all(|c| c.is_ascii_graphic() || c.is_ascii_whitespace()) =>
            {
                write!(f, "a file starting with {:?}", String::from_utf8_lossy(b))
            }
            Kind::Unknown(b) => {
                let hex: Vec<String> = b.iter().map(|c| format!("{c:02x}")).collect();
                write!(f, "a file starting with the bytes {}", hex.join(" "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn spec(args: &[&str], env: &[&str]) -> Spec {
        let mut s = Spec::default();
        let mut p = s.process().clone().unwrap();
        p.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
        p.set_env(Some(env.iter().map(|a| a.to_string()).collect()));
        s.set_process(Some(p));
        s
    }

    #[test]
    fn follows_absolute_symlinks_inside_the_rootfs() {
        let b = tempfile::tempdir().unwrap();
        let r = b.path().join("rootfs");
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("bin/busybox"), b"\x7fELF\x02\x01").unwrap();
        symlink("/bin/busybox", r.join("usr/bin/echo")).unwrap();
        symlink("../../bin/busybox", r.join("usr/bin/cat")).unwrap();
        std::fs::write(r.join("bin/run.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::write(r.join("bin/app.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::write(r.join("bin/data"), b"MZ").unwrap();
        let s = spec(&["echo"], &["PATH=/usr/bin:/bin"]);
        let e = find(b.path(), &s).unwrap();
        assert_eq!(
            (e.path.as_path(), &e.kind),
            (Path::new("/usr/bin/echo"), &Kind::Elf)
        );
        assert_eq!(e.host_path, r.join("bin/busybox"));
        assert_eq!(
            find(b.path(), &spec(&["cat"], &[])).unwrap().kind,
            Kind::Elf
        );
        assert_eq!(
            find(b.path(), &spec(&["/bin/run.sh"], &[])).unwrap().kind,
            Kind::Script
        );
        assert_eq!(
            find(b.path(), &spec(&["/bin/app.wasm"], &[])).unwrap().kind,
            Kind::WasmModule
        );
        assert_eq!(
            find(b.path(), &spec(&["/bin/data"], &[])).unwrap().kind,
            Kind::Unknown(b"MZ".to_vec())
        );
        let err = find(b.path(), &spec(&["nope"], &["PATH=/usr/bin:/bin"])).unwrap_err();
        assert!(
            err.contains("`nope`") && err.contains("/usr/bin:/bin"),
            "{err}"
        );
        let err = find(b.path(), &spec(&["/no/such"], &[])).unwrap_err();
        assert!(err.contains("/no/such"), "{err}");
    }

    /// Found by the `entrypoint` fuzz target, which compares with the
    /// kernel's own lookup (openat2 with RESOLVE_IN_ROOT): `busybox/..`
    /// resolved as if busybox were a directory, where exec fails with
    /// ENOTDIR.
    #[test]
    fn nothing_is_below_a_file() {
        let b = tempfile::tempdir().unwrap();
        let r = b.path().join("rootfs");
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/busybox"), b"\x7fELF\x02\x01").unwrap();
        symlink("busybox/", r.join("bin/slash")).unwrap();
        symlink("busybox", r.join("bin/sh")).unwrap();
        for gone in [
            "/bin/busybox/../busybox",
            "/bin/busybox/",
            "/bin/busybox/.",
            "/bin/sh/",
            "/bin/slash",
        ] {
            assert!(find(b.path(), &spec(&[gone], &[])).is_err(), "{gone}");
        }
        for found in [
            "/bin//busybox",
            "/bin/./sh",
            "/bin/../bin/sh",
            "bin/busybox",
        ] {
            let e = find(b.path(), &spec(&[found], &[])).unwrap();
            assert_eq!(
                (e.kind, e.host_path),
                (Kind::Elf, r.join("bin/busybox")),
                "{found}"
            );
        }
    }

    #[test]
    fn a_symlink_cannot_escape_the_rootfs() {
        let b = tempfile::tempdir().unwrap();
        let r = b.path().join("rootfs");
        std::fs::create_dir_all(r.join("bin")).unwrap();
        symlink("../../../../../../etc/hostname", r.join("bin/escape")).unwrap();
        assert!(resolve(&r, Path::new("/bin/escape")).is_none_or(|p| p.starts_with(&r)));
    }
}
