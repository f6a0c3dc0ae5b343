//! Mount propagation, as critest's "Container Mount Propagation" specs
//! check it: a host directory made a shared mount is bound into a
//! privileged container the way containerd's CRI binds a volume with
//! Bidirectional, HostToContainer or Private propagation (`rbind` plus
//! `rshared`, `rslave` or `rprivate`, and `linux.rootfsPropagation`
//! `rshared` or `rslave` for the first two). Then a mount made on the host
//! inside the directory must show in the container for rshared and rslave,
//! and one made in the container under its mount point must show on the
//! host for rshared only. Unlike critest, the private case keeps the host
//! directory shared too, so that the container's `rprivate` is what stops
//! the propagation. Each runs under runc-v2 (the reference) and under barge.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use crate::cmd::Cmd;
use crate::ctr::CtrCtx;
use crate::ctr_cases::CtrCase;
use crate::exec_cases::{on_both, Side};
use crate::sys;

/// Where the container sees the host directory.
const MOUNT_POINT: &str = "/mnt";

pub fn cases() -> Vec<CtrCase> {
    [
        Propagation::Shared,
        Propagation::Slave,
        Propagation::Private,
    ]
    .into_iter()
    .map(|p| CtrCase {
        name: p.case_name(),
        run: Box::new(move |ctx: &CtrCtx| case(ctx, p)),
    })
    .collect()
}

/// A CRI volume's propagation, as containerd writes it into the OCI spec.
#[derive(Debug, Clone, Copy)]
enum Propagation {
    /// Bidirectional.
    Shared,
    /// HostToContainer.
    Slave,
    /// Private.
    Private,
}

/// Which way mounts went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    host_to_container: bool,
    container_to_host: bool,
}

impl Propagation {
    fn case_name(self) -> &'static str {
        match self {
            Propagation::Shared => "mount-propagation-rshared",
            Propagation::Slave => "mount-propagation-rslave",
            Propagation::Private => "mount-propagation-private",
        }
    }

    /// The bind mount's propagation option.
    fn option(self) -> &'static str {
        match self {
            Propagation::Shared => "rshared",
            Propagation::Slave => "rslave",
            Propagation::Private => "rprivate",
        }
    }

    /// `linux.rootfsPropagation`; CRI leaves it unset for Private.
    fn rootfs(self) -> Option<&'static str> {
        match self {
            Propagation::Shared => Some("rshared"),
            Propagation::Slave => Some("rslave"),
            Propagation::Private => None,
        }
    }

    fn expected(self) -> Seen {
        Seen {
            host_to_container: !matches!(self, Propagation::Private),
            container_to_host: matches!(self, Propagation::Shared),
        }
    }
}

fn case(ctx: &CtrCtx, p: Propagation) -> Result<()> {
    on_both(ctx, |side| {
        let seen = observe(side, p)?;
        ensure!(
            seen == p.expected(),
            "with {} the mounts went {seen:?}, expected {:?}",
            p.option(),
            p.expected()
        );
        Ok(())
    })
}

/// The host side of a case: `<base>/shared` bound on itself and made
/// rshared (the volume), `<base>/source` with a file in it (what the host
/// mounts into the volume). Dropping it unmounts everything under `base`
/// (the host's mounts and what the container propagated) and removes it,
/// pass or fail.
struct HostDir {
    base: PathBuf,
}

impl HostDir {
    fn new(base: PathBuf) -> Result<HostDir> {
        let dir = HostDir { base };
        std::fs::create_dir_all(dir.volume().join("from-host"))?;
        std::fs::create_dir_all(dir.source())?;
        std::fs::write(dir.source().join("flag"), "from the host\n")?;
        let volume = dir.volume();
        mount(&["--bind"], &volume, Some(&volume))?;
        mount(&["--make-rshared"], &volume, None)?;
        Ok(dir)
    }

    fn volume(&self) -> PathBuf {
        self.base.join("shared")
    }

    fn source(&self) -> PathBuf {
        self.base.join("source")
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let left = sys::unmount_under(&self.base);
        if left.is_empty() {
            let _ = std::fs::remove_dir_all(&self.base);
        } else {
            eprintln!("could not unmount {left:?}");
        }
    }
}

/// `mount <flags> <a> [<b>]` on the host.
fn mount(flags: &[&str], a: &Path, b: Option<&Path>) -> Result<()> {
    let mut c = Cmd::new("mount").args(flags).arg(a);
    if let Some(b) = b {
        c = c.arg(b);
    }
    c.ok().map(drop)
}

/// Whether a directory has anything in it.
fn has_entries(dir: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .next()
        .is_some())
}

/// Runs one side's container with the volume, mounts on both sides, and
/// tells which way the mounts went.
fn observe(side: &Side, p: Propagation) -> Result<Seen> {
    let host = HostDir::new(side.ctx.work.join(format!("{}-propagation", side.id)))?;
    let volume = host.volume();
    let mut flags = vec!["--privileged".to_string()];
    // ctr 1.6 has no --privileged-without-host-devices: its containers get
    // the host's devices too, which the check does not mind.
    if !side.ctx.cd.version.starts_with("1.6") {
        flags.push("--privileged-without-host-devices".to_string());
    }
    flags.extend([
        "--mount".to_string(),
        format!(
            "type=bind,src={},dst={MOUNT_POINT},options=rw:rbind:{}",
            volume.display(),
            p.option()
        ),
    ]);
    if let Some(rootfs) = p.rootfs() {
        flags.extend(["--rootfs-propagation".to_string(), rootfs.to_string()]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    side.sleeper(&flags)
        .context("start the container with the volume")?;

    mount(&["--bind"], &host.source(), Some(&volume.join("from-host")))?;
    let inside = side
        .exec(
            "ls",
            &[],
            &["ls", "-A", &format!("{MOUNT_POINT}/from-host")],
        )
        .ok()
        .context("list the host's mount in the container")?;
    let host_to_container = !inside.stdout.trim().is_empty();

    let script = format!(
        "mkdir -p {MOUNT_POINT}/from-container && mount --bind /etc {MOUNT_POINT}/from-container"
    );
    side.exec("mount", &[], &["sh", "-c", &script])
        .ok()
        .context("mount in the container")?;
    let container_to_host = has_entries(&volume.join("from-container"))?;

    side.remove()?;
    Ok(Seen {
        host_to_container,
        container_to_host,
    })
}
