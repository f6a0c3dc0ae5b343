//! A private dockerd on top of a private containerd.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{poll, Cmd};
use crate::containerd::{create_dirs, installed, save_log, Containerd, Dirs, IMAGE_TAR, SHIM_NAME};
use crate::sys;

/// The daemon.json runtime with an absolute runtimeType outside PATH.
pub const RUNTIME_ABS: &str = "barge-abs";
/// The daemon.json runtime whose options select the oci-binary executor.
pub const RUNTIME_OCI: &str = "barge-oci";

/// A running private dockerd. Dropping it stops dockerd, then its
/// containerd.
pub struct Dockerd {
    pub version: String,
    pub dirs: Dirs,
    pub cli: PathBuf,
    pub sock: PathBuf,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub log_path: PathBuf,
    pub docker_config: PathBuf,
    /// The absolute runtimeType of [`RUNTIME_ABS`].
    pub offpath_shim: PathBuf,
    /// The containerd namespace dockerd uses.
    pub namespace: String,
    child: Option<Child>,
    created_run_docker: bool,
    ids: Mutex<Vec<String>>,
    // Declared last: dropped after dockerd is gone.
    pub containerd: Containerd,
}

impl Dockerd {
    /// Starts dockerd `version` (26 or 28) as instance `name` on `containerd`,
    /// with containerd's image store (`containerd-snapshotter`) when
    /// `image_store` is set.
    pub fn start(
        version: &str,
        name: &str,
        containerd: Containerd,
        image_store: bool,
    ) -> Result<Dockerd> {
        let features = serde_json::json!({ "features": { "containerd-snapshotter": image_store } });
        Self::start_with(version, name, containerd, features)
    }

    /// [`Dockerd::start`] with `extra`'s keys added to daemon.json (the
    /// runtimes are always barge's).
    pub fn start_with(
        version: &str,
        name: &str,
        containerd: Containerd,
        extra: serde_json::Value,
    ) -> Result<Dockerd> {
        let prefix = installed(&format!("docker-{version}"), "dockerd")?;
        let bin = prefix.join("bin/dockerd");
        let dirs = Dirs::new(name);
        dirs.clean_stale()?;
        let data_root = dirs.run.join("data");
        let exec_root = dirs.run.join("exec");
        let docker_config = dirs.run.join("cfg");
        let offpath = dirs.run.join("offpath");
        create_dirs(&[&dirs.run, &data_root, &exec_root, &docker_config, &offpath])?;
        let offpath_shim = offpath.join(SHIM_NAME);
        std::os::unix::fs::symlink(&containerd.shim, &offpath_shim)?;
        let oci_toml = dirs.run.join("barge-oci.toml");
        std::fs::write(&oci_toml, "executor = \"oci-binary\"\n")?;
        let mut daemon_json = serde_json::json!({
            "runtimes": {
                RUNTIME_ABS: { "runtimeType": offpath_shim },
                RUNTIME_OCI: {
                    "runtimeType": crate::containerd::RUNTIME,
                    "options": { "ConfigPath": oci_toml },
                },
            },
        });
        if let (Some(json), Some(extra)) = (daemon_json.as_object_mut(), extra.as_object()) {
            json.extend(extra.clone());
        }
        let config_file = dirs.run.join("daemon.json");
        std::fs::write(&config_file, serde_json::to_vec_pretty(&daemon_json)?)?;
        let sock = dirs.run.join("docker.sock");
        let log_path = dirs.run.join("dockerd.log");
        let log = std::fs::File::create(&log_path)?;
        let namespace = containerd.namespace("moby");
        let plugins_ns = containerd.namespace("plugins");
        let created_run_docker = !Path::new("/run/docker").exists();
        let mut command = Command::new(&bin);
        command
            .arg(format!("--containerd={}", containerd.sock.display()))
            .arg(format!("--containerd-namespace={namespace}"))
            .arg(format!("--containerd-plugins-namespace={plugins_ns}"))
            .arg("--data-root")
            .arg(&data_root)
            .arg("--exec-root")
            .arg(&exec_root)
            .arg("--pidfile")
            .arg(dirs.run.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .arg("--config-file")
            .arg(&config_file)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    prefix.join("bin").display()
                ),
            )
            .env("DOCKER_CONFIG", &docker_config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: setsid(2) is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut d = Dockerd {
            version: version.to_string(),
            dirs,
            cli: prefix.join("bin/docker"),
            sock,
            data_root,
            exec_root,
            log_path,
            docker_config,
            offpath_shim,
            namespace,
            child: Some(child),
            created_run_docker,
            ids: Mutex::default(),
            containerd,
        };
        d.wait_ready()?;
        d.docker()
            .args(["load", "-i", IMAGE_TAR])
            .timeout(Duration::from_secs(180))
            .ok()?;
        Ok(d)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let probe = self.docker().arg("version").timeout(Duration::from_secs(5));
        let cmdline = probe.cmdline();
        let child = self.child.as_mut().expect("started");
        let mut last = String::new();
        let r = poll("dockerd to answer", Duration::from_secs(60), || {
            if let Some(status) = child.try_wait()? {
                bail!("dockerd exited with {status}");
            }
            let out = Cmd::new(&self.cli)
                .arg("-H")
                .arg(format!("unix://{}", self.sock.display()))
                .arg("version")
                .env("DOCKER_CONFIG", &self.docker_config)
                .timeout(Duration::from_secs(5))
                .run()?;
            last = out.all();
            Ok(out.success().then_some(()))
        });
        r.with_context(|| {
            format!(
                "{cmdline}: {last}\ndockerd log:\n{}",
                tail(
                    &std::fs::read_to_string(&self.log_path).unwrap_or_default(),
                    30
                )
            )
        })
    }

    /// Fails when dockerd or its containerd is no longer running.
    pub fn check_running(&self) -> Result<()> {
        self.containerd.check_running()?;
        let pid = self.child.as_ref().map(|c| c.id()).unwrap_or(0);
        if !sys::alive(pid) {
            bail!(
                "dockerd {} is not running; log:\n{}",
                self.dirs.name,
                tail(
                    &std::fs::read_to_string(&self.log_path).unwrap_or_default(),
                    20
                )
            );
        }
        Ok(())
    }

    /// `docker -H unix://<sock>` with a private DOCKER_CONFIG.
    pub fn docker(&self) -> Cmd {
        Cmd::new(&self.cli)
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", &self.docker_config)
    }

    /// Remembers a container id, for the cgroup and socket checks.
    pub fn note_id(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_string());
        self.containerd.note_group(&self.namespace, id);
    }

    /// The ids of all containers dockerd knows, running or not.
    pub fn all_containers(&self) -> Result<Vec<String>> {
        let out = self.docker().args(["ps", "-aq", "--no-trunc"]).ok()?;
        Ok(crate::cmd::nonempty_lines(&out.stdout))
    }

    /// Removes every container, best effort.
    pub fn force_clean(&self) {
        if let Ok(ids) = self.all_containers() {
            for id in ids {
                let _ = self
                    .docker()
                    .args(["rm", "-f", &id])
                    .timeout(Duration::from_secs(30))
                    .run();
            }
        }
    }

    fn teardown(&mut self) -> Result<()> {
        let mut problems = Vec::new();
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                self.force_clean();
            }
            sys::signal(child.id(), libc::SIGTERM);
            let end = Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                problems.push("dockerd ignored SIGTERM for 15 s".to_string());
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        save_log(&self.log_path, &format!("{}-dockerd.log", self.dirs.name));
        let mut cgroups = Vec::new();
        for id in self.ids.lock().unwrap().iter() {
            cgroups.extend(sys::cgroup_dirs(&format!("docker/{id}")));
        }
        crate::containerd::kill_cgroup_members(&cgroups);
        sys::remove_cgroups(&cgroups);
        if let Err(e) = sys::remove_tree(&self.dirs.run) {
            problems.push(format!("{e:#}"));
        }
        let _ = sys::remove_tree(&self.dirs.lib);
        if self.created_run_docker {
            let _ = std::fs::remove_dir("/run/docker/plugins");
            let _ = std::fs::remove_dir("/run/docker");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("; "))
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            let _ = writeln!(
                std::io::stderr(),
                "teardown of dockerd {}: {e:#}",
                self.dirs.name
            );
        }
    }
}
