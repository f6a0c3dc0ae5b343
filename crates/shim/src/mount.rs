//! Mounting the rootfs that containerd hands over in Create.

use std::path::Path;

use containerd_shim_protos::types::mount::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

/// Splits mount(8)-style options into flags and the data string, with the
/// flags containerd's own mount code knows; anything else is the
/// filesystem's data, in order (`defaults` is dropped).
pub fn parse_options(options: &[String]) -> (MsFlags, bool, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut recursive_bind = false;
    for o in options {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => {
                recursive_bind = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            other => {
                data.push(other.to_string());
                (MsFlags::empty(), MsFlags::empty())
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    (flags, recursive_bind, data.join(","))
}

/// Mounts each of containerd's rootfs mounts onto `target`, in order.
/// On failure, whatever was mounted is undone.
pub fn mount_rootfs(mounts: &[Mount], target: &Path) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(Error::io(format!(
        "create rootfs directory {}",
        target.display()
    )))?;
    for (done, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            for _ in 0..done {
                let _ = umount2(target, MntFlags::MNT_DETACH);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    // containerd 2.x's snapshotters ask for an overlay whose lower layers
    // are idmapped (a `hostUsers: false` pod): uidmap= and gidmap= are
    // options of containerd's own, not the kernel's.
    let failed = |e: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!(
            "mount {} ({}) on {}: {e}",
            m.source,
            m.type_,
            target.display()
        ))
    };
    let idmapped = idmapped_layers(&m.options, &m.type_).map_err(|e| failed(&e))?;
    let options = idmapped.as_ref().map_or(&m.options, |l| &l.options);
    let (flags, _, data) = parse_options(options);
    let fstype = if m.type_.is_empty() || flags.contains(MsFlags::MS_BIND) {
        None
    } else {
        Some(m.type_.as_str())
    };
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(Some(m.source.as_str()), target, fstype, flags, data).map_err(|e| failed(&e))?;
    // A bind mount ignores MS_RDONLY until it is remounted.
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )?;
    }
    Ok(())
}

/// Unmounts everything stacked on `target`. Not mounted is not an error.
pub fn unmount_all(target: &Path) -> Result<()> {
    loop {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(Error::Other(format!("unmount {}: {e}", target.display())));
            }
        }
    }
}

/// A copy of the mount at `path` (a bind of just that file or directory,
/// or with `recursive` the mounts below it too) that is attached nowhere,
/// with `attrs` (`MOUNT_ATTR_*`) set: open_tree with OPEN_TREE_CLONE, then
/// mount_setattr. Nobody sees it, and it goes with its last reference.
pub fn detached_clone(
    path: &std::ffi::CStr,
    attrs: u64,
    recursive: bool,
) -> std::io::Result<std::os::fd::OwnedFd> {
    clone_with(path, attrs, None, recursive)
}

fn clone_with(
    path: &std::ffi::CStr,
    attrs: u64,
    userns: Option<std::os::fd::RawFd>,
    recursive: bool,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let (clone_flags, at_flags) = if recursive {
        (libc::AT_RECURSIVE as libc::c_uint, libc::AT_RECURSIVE)
    } else {
        (0, 0)
    };
    // SAFETY: open_tree takes a NUL-terminated path and flags, and returns
    // a new descriptor or -1; nothing is borrowed past the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | clone_flags,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as std::os::fd::RawFd) };
    let attr = libc::mount_attr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |fd| fd as u64),
    };
    // SAFETY: mount_setattr reads `attr` (of the size given) during the
    // call; the empty path with AT_EMPTY_PATH names the descriptor itself.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | at_flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(tree)
}

/// An overlay's options with its lower layers replaced by idmapped
/// clones, which the descriptors keep until the overlay is mounted.
struct IdmappedLayers {
    options: Vec<String>,
    _layers: Vec<std::os::fd::OwnedFd>,
}

/// One `uidmap=`/`gidmap=` value as /proc/<pid>/uid_map wants it: each
/// `container:host:size` triple (several are separated by `,` or spaces)
/// becomes a line.
fn id_map_lines(value: &str) -> std::result::Result<String, String> {
    let mut lines = String::new();
    for triple in value.split([',', ' ']).filter(|t| !t.is_empty()) {
        let parts: Vec<&str> = triple.split(':').collect();
        let numbers: Vec<u32> = parts.iter().filter_map(|p| p.parse().ok()).collect();
        if parts.len() != 3 || numbers.len() != 3 || numbers[2] == 0 {
            return Err(format!(
                "id mapping {triple:?} is not container-id:host-id:size"
            ));
        }
        lines.push_str(&format!("{} {} {}\n", numbers[0], numbers[1], numbers[2]));
    }
    if lines.is_empty() {
        return Err("an empty id mapping".into());
    }
    Ok(lines)
}

/// For an overlay with `uidmap=` and `gidmap=` among its options: the
/// options to mount it with, its lowerdirs replaced by idmapped clones of
/// them (`/proc/self/fd/N`) and the two left out. `None` when the mount
/// asks for no idmapping.
fn idmapped_layers(
    options: &[String],
    fstype: &str,
) -> std::result::Result<Option<IdmappedLayers>, String> {
    let value = |key: &str| {
        options
            .iter()
            .find_map(|o| o.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    let (uid_map, gid_map) = match (value("uidmap"), value("gidmap")) {
        (None, None) => return Ok(None),
        (Some(u), Some(g)) => (id_map_lines(u)?, id_map_lines(g)?),
        _ => return Err("uidmap and gidmap must be given together".into()),
    };
    if fstype != "overlay" {
        return Err(format!(
            "uidmap and gidmap are for overlay mounts, not {fstype:?}"
        ));
    }
    let lower = value("lowerdir").ok_or("uidmap and gidmap need a lowerdir")?;
    let userns = crate::userns::with_maps(&uid_map, &gid_map).map_err(|e| e.to_string())?;
    let mut layers = Vec::new();
    let mut paths = Vec::new();
    for dir in lower.split(':') {
        use std::os::fd::AsRawFd;
        let path =
            std::ffi::CString::new(dir).map_err(|_| format!("lowerdir {dir:?} holds a NUL"))?;
        let layer = detached_clone_idmapped(&path, &userns)
            .map_err(|e| format!("idmap lower layer {dir}: {e}"))?;
        paths.push(format!("/proc/self/fd/{}", layer.as_raw_fd()));
        layers.push(layer);
    }
    let options = options
        .iter()
        .filter(|o| !o.starts_with("uidmap=") && !o.starts_with("gidmap="))
        .map(|o| {
            if o.starts_with("lowerdir=") {
                format!("lowerdir={}", paths.join(":"))
            } else {
                o.clone()
            }
        })
        .collect();
    Ok(Some(IdmappedLayers {
        options,
        _layers: layers,
    }))
}

/// A detached clone of `path` that shows its files' owners through the
/// user namespace `userns` (MOUNT_ATTR_IDMAP).
fn detached_clone_idmapped(
    path: &std::ffi::CStr,
    userns: &std::os::fd::OwnedFd,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    clone_with(
        path,
        libc::MOUNT_ATTR_IDMAP,
        Some(userns.as_raw_fd()),
        false,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn id_maps_become_uid_map_lines() {
        assert_eq!(
            id_map_lines("0:2621440:65536").unwrap(),
            "0 2621440 65536\n"
        );
        assert_eq!(
            id_map_lines("0:1000:1,1:100000:65535").unwrap(),
            "0 1000 1\n1 100000 65535\n"
        );
        for bad in ["", "0:1", "0:1:0", "a:b:c", "0:1:2:3"] {
            let e = id_map_lines(bad).unwrap_err();
            assert!(e.contains("mapping"), "{bad}: {e}");
        }
    }

    #[test]
    fn idmapping_is_only_for_overlays_with_both_maps() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(idmapped_layers(&o(&["lowerdir=/a", "ro"]), "overlay")
            .unwrap()
            .is_none());
        let e = idmapped_layers(&o(&["lowerdir=/a", "uidmap=0:1:1"]), "overlay").err();
        assert!(e.unwrap().contains("together"));
        let e = idmapped_layers(&o(&["uidmap=0:1:1", "gidmap=0:1:1"]), "ext4").err();
        assert!(e.unwrap().contains("overlay"));
        let e = idmapped_layers(&o(&["uidmap=0:1:1", "gidmap=0:1:1"]), "overlay").err();
        assert!(e.unwrap().contains("lowerdir"));
    }

    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let o: Vec<String> = ["ro", "nosuid", "lowerdir=/a:/b", "upperdir=/u", "index=off"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, _, data) = parse_options(&o);
        assert!(flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID));
        assert_eq!(data, "lowerdir=/a:/b,upperdir=/u,index=off");
        let (flags, rec, _) = parse_options(&["rbind".to_string(), "rw".to_string()]);
        assert!(rec && flags.contains(MsFlags::MS_BIND | MsFlags::MS_REC));
        assert!(!flags.contains(MsFlags::MS_RDONLY));
    }

    /// Found by the `mount` fuzz target, which compares with containerd's
    /// flag table: `atime`, `diratime`, `dirsync`, `mand`, `remount` and the
    /// other flags barge did not know went to the filesystem as data (where
    /// overlay refuses them), and `async` did not undo `sync`.
    #[test]
    fn every_flag_containerd_knows_is_a_flag() {
        let o = |s: &str| -> Vec<String> { s.split(',').map(String::from).collect() };
        let (flags, _, data) = parse_options(&o(
            "noatime,atime,nodiratime,dirsync,mand,nomand,remount,index=off",
        ));
        assert_eq!(
            flags,
            MsFlags::MS_NODIRATIME | MsFlags::MS_DIRSYNC | MsFlags::MS_REMOUNT
        );
        assert_eq!(data, "index=off");
        let (flags, _, data) = parse_options(&o(
            "sync,relatime,strictatime,async,norelatime,nostrictatime,diratime",
        ));
        assert_eq!((flags, data.as_str()), (MsFlags::empty(), ""));
    }

    #[test]
    fn bind_mount_read_only_and_unmount() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), "x").unwrap();
        let dst = tempfile::tempdir().unwrap();
        let target = dst.path().join("rootfs");
        let m = Mount {
            type_: "bind".into(),
            source: src.path().to_str().unwrap().into(),
            options: vec!["rbind".into(), "ro".into()],
            ..Default::default()
        };
        mount_rootfs(&[m], &target).unwrap();
        let guard = scopeguard(&target);
        assert_eq!(std::fs::read_to_string(target.join("f")).unwrap(), "x");
        assert!(
            std::fs::write(target.join("g"), "y").is_err(),
            "mount must be read-only"
        );
        drop(guard);
        assert!(!target.join("f").exists());
        unmount_all(&target).unwrap();
    }

    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            unmount_all(self.0).unwrap();
        }
    }
    fn scopeguard(p: &Path) -> Unmount<'_> {
        Unmount(p)
    }

    #[test]
    fn failed_mount_names_source() {
        let dst = tempfile::tempdir().unwrap();
        let m = Mount {
            type_: "overlay".into(),
            source: "overlay".into(),
            options: vec!["lowerdir=/does/not/exist".into()],
            ..Default::default()
        };
        let err = mount_rootfs(&[m], &dst.path().join("rootfs"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mount overlay (overlay)"), "{err}");
    }
}
