//! The files a pod's containers share: `/etc/hostname`, `/etc/hosts`,
//! `/etc/resolv.conf` and `/dev/shm`.
//!
//! With the pause container, containerd's CRI makes them itself; with
//! `sandboxer = "shim"` it leaves them to the sandbox, but still mounts them
//! into each container from its own directories when they exist:
//! `<root>/io.containerd.grpc.v1.cri/sandboxes/<id>/{hostname,hosts,resolv.conf}`
//! and `<state>/io.containerd.grpc.v1.cri/sandboxes/<id>/shm`. The shim
//! finds containerd's root and state from the sandbox's bundle
//! (`<state>/io.containerd.sandbox.controller.v1.shim/<ns>/<id>`, whose
//! `work` link points into `<root>`), and writes them as CRI would.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

use super::config::{Dns, Mode, PodConfig};

const CRI_PLUGIN: &str = "io.containerd.grpc.v1.cri";
/// CRI's size for a pod's `/dev/shm`.
const SHM_OPTIONS: &str = "mode=1777,size=65536k";

/// A pod's shared files, made at CreateSandbox, removed at ShutdownSandbox.
#[derive(Debug)]
pub struct PodFiles {
    dir: PathBuf,
    volatile: PathBuf,
    shm: Option<PathBuf>,
}

/// containerd's root and state directories, from the sandbox's bundle.
fn containerd_dirs(bundle: &Path) -> Result<(PathBuf, PathBuf)> {
    let layout = || {
        Error::FailedPrecondition(format!(
            "sandbox bundle {} is not where containerd 2.x puts one \
             (<state>/<plugin>/<namespace>/<id> with a `work` link into <root>): \
             cannot find CRI's directories for the pod's files",
            bundle.display()
        ))
    };
    let work = std::fs::read_link(bundle.join("work")).map_err(|_| layout())?;
    let root = work.ancestors().nth(3).ok_or_else(layout)?;
    let state = bundle.ancestors().nth(3).ok_or_else(layout)?;
    if root.as_os_str().is_empty() || state.as_os_str().is_empty() {
        return Err(layout());
    }
    Ok((root.to_path_buf(), state.to_path_buf()))
}

/// The text of `resolv.conf` for `dns`, or None to use the host's.
fn resolv_conf(dns: Option<&Dns>) -> Option<String> {
    let dns = dns?;
    let mut text = String::new();
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    (!text.is_empty()).then_some(text)
}

fn write(path: &Path, text: &[u8]) -> Result<()> {
    std::fs::write(path, text).map_err(Error::io(format!("write {}", path.display())))
}

fn copy(from: &str, to: &Path) -> Result<()> {
    let text = std::fs::read(from).map_err(Error::io(format!("read the host's {from}")))?;
    write(to, &text)
}

impl PodFiles {
    /// Writes pod `id`'s files where CRI mounts them from.
    pub fn make(bundle: &Path, id: &str, config: &PodConfig) -> Result<PodFiles> {
        let (root, state) = containerd_dirs(bundle)?;
        Self::make_in(&root, &state, id, config)
    }

    fn make_in(root: &Path, state: &Path, id: &str, config: &PodConfig) -> Result<PodFiles> {
        let mut files = PodFiles {
            dir: root.join(CRI_PLUGIN).join("sandboxes").join(id),
            volatile: state.join(CRI_PLUGIN).join("sandboxes").join(id),
            shm: None,
        };
        match files.fill(config) {
            Ok(()) => Ok(files),
            Err(e) => {
                files.remove();
                Err(e)
            }
        }
    }

    fn fill(&mut self, config: &PodConfig) -> Result<()> {
        for dir in [&self.dir, &self.volatile] {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        }
        let hostname = match config.hostname.as_str() {
            "" => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
            h => h.to_string(),
        };
        write(
            &self.dir.join("hostname"),
            format!("{hostname}\n").as_bytes(),
        )?;
        copy("/etc/hosts", &self.dir.join("hosts"))?;
        match resolv_conf(config.dns.as_ref()) {
            Some(text) => write(&self.dir.join("resolv.conf"), text.as_bytes())?,
            None => copy("/etc/resolv.conf", &self.dir.join("resolv.conf"))?,
        }
        if config.namespaces.ipc != Mode::Node {
            let shm = self.volatile.join("shm");
            std::fs::create_dir_all(&shm)
                .map_err(Error::io(format!("create {}", shm.display())))?;
            mount(
                Some("shm"),
                &shm,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(SHM_OPTIONS),
            )
            .map_err(|e| {
                Error::io(format!("mount the pod's /dev/shm on {}", shm.display()))(e.into())
            })?;
            self.shm = Some(shm);
        }
        Ok(())
    }

    /// Unmounts `/dev/shm` (the pod has stopped) and removes the files.
    pub fn remove(&self) {
        let shm = self
            .shm
            .clone()
            .unwrap_or_else(|| self.volatile.join("shm"));
        match umount2(&shm, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => log::warn!("unmount {}: {e}", shm.display()),
        }
        for dir in [&self.dir, &self.volatile] {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("remove {}: {e}", dir.display()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_containerd_dirs_from_the_bundle() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let root = tmp.path().join("root");
        let plugin = "io.containerd.sandbox.controller.v1.shim";
        let bundle = state.join(plugin).join("k8s.io").join("pod1");
        let work = root.join(plugin).join("k8s.io").join("pod1");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        std::os::unix::fs::symlink(&work, bundle.join("work")).unwrap();
        assert_eq!(containerd_dirs(&bundle).unwrap(), (root, state));
        let err = containerd_dirs(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("work") && err.contains(&tmp.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn resolv_conf_as_cri_writes_it() {
        assert_eq!(resolv_conf(None), None);
        assert_eq!(resolv_conf(Some(&Dns::default())), None);
        let dns = Dns {
            servers: vec!["8.8.8.8".into(), "1.1.1.1".into()],
            searches: vec!["a.example".into(), "b.example".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)).unwrap(),
            "search a.example b.example\nnameserver 8.8.8.8\nnameserver 1.1.1.1\noptions ndots:5 edns0\n"
        );
    }

    #[test]
    fn files_are_made_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let config = PodConfig {
            hostname: "web-0".into(),
            namespaces: super::super::config::Namespaces {
                ipc: Mode::Node,
                ..Default::default()
            },
            dns: Some(Dns {
                servers: vec!["10.0.0.10".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let (root, state) = (tmp.path().join("r"), tmp.path().join("s"));
        let files = PodFiles::make_in(&root, &state, "p", &config).unwrap();
        let dir = root.join(CRI_PLUGIN).join("sandboxes/p");
        assert_eq!(
            std::fs::read_to_string(dir.join("hostname")).unwrap(),
            "web-0\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
            "nameserver 10.0.0.10\n"
        );
        assert!(dir.join("hosts").is_file());
        assert!(
            files.shm.is_none(),
            "a pod on the host's IPC uses the host's /dev/shm"
        );
        files.remove();
        assert!(!dir.exists() && !state.join(CRI_PLUGIN).join("sandboxes/p").exists());
    }
}
