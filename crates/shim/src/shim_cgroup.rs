//! What `start` does to the shim server before it serves, as runc-v2's
//! `start` does to its own: it joins the cgroup that the runtime options
//! name in `ShimCgroup` (`shim_cgroup`), and takes an `oom_score_adj` one
//! above containerd's, so that the kernel's OOM killer picks a shim before
//! the containerd that runs it.
//!
//! Both are done to the `start` process itself, just before it forks the
//! server, which inherits them. A container that joins a running shim (its
//! group's) changes neither, as under runc-v2.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The highest `oom_score_adj` the kernel takes.
const OOM_SCORE_ADJ_MAX: i32 = 1000;

/// Moves this process into the cgroup at `path` in every mounted hierarchy
/// that has it (each v1 hierarchy on a v1 or hybrid host, the unified one
/// on a v2 host). runc-v2 does not make the cgroup, and neither does barge:
/// it must exist in at least one hierarchy.
pub fn join(path: &str) -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(Error::io("read /proc/self/mountinfo"))?;
    let candidates = crate::stats::dirs_in_every_hierarchy(&mountinfo, path);
    let dirs: Vec<&PathBuf> = candidates.iter().filter(|d| d.is_dir()).collect();
    if dirs.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "shim cgroup {path} (ShimCgroup) does not exist in any mounted cgroup hierarchy (looked for {})",
            candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let pid = std::process::id().to_string();
    for dir in dirs {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, &pid).map_err(Error::io(format!(
            "join shim cgroup {path}: write {}",
            procs.display()
        )))?;
    }
    Ok(())
}

/// Sets this process's `oom_score_adj` to containerd's (its parent's) plus
/// one, as runc-v2 does for its shim, but only ever raises it: lowering
/// needs CAP_SYS_RESOURCE, which root does not always have (not on this
/// project's test machines, for one).
pub fn raise_oom_score_adj() -> Result<()> {
    let parent = nix::unistd::getppid();
    let theirs = read_oom_score_adj(&Path::new("/proc").join(parent.to_string()))?;
    let ours = read_oom_score_adj(Path::new("/proc/self"))?;
    let wanted = oom_score_adj_for(theirs, ours);
    if wanted == ours {
        return Ok(());
    }
    std::fs::write("/proc/self/oom_score_adj", wanted.to_string()).map_err(Error::io(format!(
        "set the shim's oom_score_adj to {wanted}"
    )))
}

/// containerd's score plus one, if that is above ours; else ours.
fn oom_score_adj_for(containerd: i32, ours: i32) -> i32 {
    containerd
        .saturating_add(1)
        .min(OOM_SCORE_ADJ_MAX)
        .max(ours)
}

fn read_oom_score_adj(proc_dir: &Path) -> Result<i32> {
    let file = proc_dir.join("oom_score_adj");
    let text =
        std::fs::read_to_string(&file).map_err(Error::io(format!("read {}", file.display())))?;
    text.trim()
        .parse()
        .map_err(|_| Error::Other(format!("{} holds {text:?}, not a number", file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_above_containerd_and_never_lower() {
        assert_eq!(oom_score_adj_for(-999, -999), -998);
        assert_eq!(oom_score_adj_for(0, 0), 1);
        assert_eq!(oom_score_adj_for(1000, 1000), 1000);
        // The shim already scores higher than containerd + 1: keep it.
        assert_eq!(oom_score_adj_for(-500, 300), 300);
    }

    #[test]
    fn a_cgroup_that_is_nowhere_is_named() {
        let err = join("/barge-no-such-cgroup/x").unwrap_err().to_string();
        assert!(
            err.contains("/barge-no-such-cgroup/x") && err.contains("ShimCgroup"),
            "{err}"
        );
    }
}
