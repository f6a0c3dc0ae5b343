//! A private containerd: own root, state, sockets and PATH, torn down on
//! drop (and on panic, since drop runs while unwinding).

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::cmd::{poll, Cmd};
use crate::sys;

/// The shim under test: `$BARGE_SHIM`, or the workspace's release build.
pub fn shim_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("BARGE_SHIM") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/release")
            .join(SHIM_NAME),
    };
    if !path.is_file() {
        bail!(
            "shim binary {} not found: build it with `cargo build --release -p containerd-shim-barge-v1` or set BARGE_SHIM",
            path.display()
        );
    }
    path.canonicalize()
        .with_context(|| format!("resolve {}", path.display()))
}

pub const SHIM_NAME: &str = "containerd-shim-barge-v1";
pub const RUNTIME: &str = "io.containerd.barge.v1";
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
pub const IMAGE_TAR: &str = "/opt/barge-test/images/busybox.tar";
pub const IMAGE: &str = "docker.io/library/busybox:latest";
/// Where every containerd on the machine puts shim sockets.
pub const SOCKET_DIR: &str = "/run/containerd/s";

/// The environment of every `ctr`. On cgroup v1, ctr 2.2 and later prints
/// a cgroup v1 deprecation warning on its stderr for every command that
/// talks to containerd, which would mix into the container's stderr that
/// the cases read; this turns it off (ctr parses the value as a bool).
pub const CTR_ENV: &[(&str, &str)] = &[("CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS", "1")];

/// A variable in every containerd's environment, which its shims inherit:
/// the security cases check that no container sees it.
pub const MARKER: &str = "BARGE_IT_MARKER=the-shim-environment";

/// A private containerd's config: its own root, state, gRPC socket (and
/// ttrpc next to it) and log level; CRI off, or on with `cri` (the CRI
/// plugins' tables) appended. Version 4 moved the server addresses into
/// the server plugins' tables; containerd 2.3 ignores the old `[grpc]`
/// table of a version 4 file and listens on the machine's default socket.
fn config_toml(
    version: u32,
    root: &Path,
    state: &Path,
    sock: &Path,
    level: &str,
    cri: Option<&str>,
) -> String {
    let (grpc, ttrpc) = if version >= 4 {
        (
            "[plugins.\"io.containerd.server.v1.grpc\"]",
            "[plugins.\"io.containerd.server.v1.ttrpc\"]",
        )
    } else {
        ("[grpc]", "[ttrpc]")
    };
    let disabled = if cri.is_some() {
        ""
    } else {
        "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
    };
    format!(
        "version = {version}\nroot = \"{}\"\nstate = \"{}\"\n{disabled}\n{grpc}\n  address = \"{}\"\n\n{ttrpc}\n  address = \"{}.ttrpc\"\n\n[debug]\n  level = \"{level}\"\n{}",
        root.display(),
        state.display(),
        sock.display(),
        sock.display(),
        cri.map(|c| format!("\n{c}")).unwrap_or_default(),
    )
}

/// The config file version that containerd `version` (`1.6`, `2.3`, ...)
/// reads without migrating it: 2 for 1.x, 3 for 2.0 to 2.2, 4 from 2.3 on
/// (2.3 still reads 3, but logs a warning that it migrated it).
pub fn config_version(version: &str) -> u32 {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    match (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) {
        (0 | 1, _) => 2,
        (2, 0..=2) => 3,
        _ => 4,
    }
}

/// The socket a shim binds for a group, as both runc-v2 and barge name it.
pub fn shim_socket(grpc_address: &str, namespace: &str, group: &str) -> PathBuf {
    let digest = Sha256::digest(format!("{grpc_address}/{namespace}/{group}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Path::new(SOCKET_DIR).join(hex)
}

/// Where logs of torn-down daemons are kept: `$BARGE_IT_LOG_DIR`, or
/// `<workspace>/target/barge-it-logs`.
pub fn log_dir() -> PathBuf {
    std::env::var_os("BARGE_IT_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/barge-it-logs"))
}

/// Copies a daemon's log to [`log_dir`] before its directory goes away.
pub fn save_log(path: &Path, name: &str) {
    let dir = log_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::copy(path, dir.join(name));
    }
}

/// The directories of one private instance.
/// The install prefix `/opt/barge-test/<package>`, checked to hold `bin/<binary>`.
pub fn installed(package: &str, binary: &str) -> Result<PathBuf> {
    let prefix = Path::new("/opt/barge-test").join(package);
    let bin = prefix.join("bin").join(binary);
    if !bin.exists() {
        bail!(
            "{} is missing: run integration/scripts/install.sh",
            bin.display()
        );
    }
    Ok(prefix)
}

/// Creates each directory with its parents.
pub fn create_dirs(dirs: &[&Path]) -> Result<()> {
    for d in dirs {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    Ok(())
}

/// Removes what a case left behind in `ns`: tasks and containers, shims,
/// cgroups with their processes, mounts, directories and shim sockets.
pub fn remove_leftovers(
    cd: &Containerd,
    ns: &str,
    cgroups: &[PathBuf],
    mounts: &[PathBuf],
    dirs: &[PathBuf],
    sockets: &[PathBuf],
) {
    cd.force_clean_namespace(ns);
    let pids: Vec<u32> = cd
        .shims()
        .iter()
        .filter(|p| p.has_flag("-namespace", ns))
        .map(|p| p.pid)
        .collect();
    crate::sys::kill_all(&pids, std::time::Duration::from_secs(1));
    kill_cgroup_members(cgroups);
    crate::sys::remove_cgroups(cgroups);
    // A wedged shim makes `tasks rm -f`, and so `containers rm`, fail until
    // containerd has cleaned up after the shim it just lost: try again.
    if !pids.is_empty() {
        let _ = poll("the namespace to be empty", Duration::from_secs(5), || {
            cd.force_clean_namespace(ns);
            let (tasks, containers) = cd.leftovers(ns)?;
            Ok((tasks.is_empty() && containers.is_empty()).then_some(()))
        });
    }
    for m in mounts {
        crate::sys::unmount_under(m);
    }
    for d in dirs {
        let _ = crate::sys::remove_tree(d);
    }
    for s in sockets {
        let _ = std::fs::remove_file(s);
    }
}

#[derive(Debug, Clone)]
pub struct Dirs {
    pub name: String,
    /// `/run/barge-it/<name>`: config, sockets, state, log, bin.
    pub run: PathBuf,
    /// `/var/lib/barge-it/<name>`: containerd's root (content, snapshots).
    pub lib: PathBuf,
}

impl Dirs {
    pub fn new(name: &str) -> Dirs {
        Dirs {
            name: name.to_string(),
            run: Path::new("/run/barge-it").join(name),
            lib: Path::new("/var/lib/barge-it").join(name),
        }
    }

    /// The containerd namespaces of this instance all start with this.
    pub fn ns_prefix(&self) -> String {
        format!("bit-{}-", self.name)
    }

    /// Removes what a previous, killed run of the same instance left: its
    /// processes, mounts, runtime state, cgroups and directories.
    pub fn clean_stale(&self) -> Result<()> {
        let run = self.run.to_string_lossy().into_owned();
        let lib = self.lib.to_string_lossy().into_owned();
        let ours: Vec<u32> = sys::processes()
            .into_iter()
            .filter(|p| p.pid != std::process::id())
            .filter(|p| {
                p.argv
                    .iter()
                    .any(|a| mentions(a, &run) || mentions(a, &lib))
            })
            .map(|p| p.pid)
            .collect();
        if !ours.is_empty() {
            let left = sys::kill_all(&ours, Duration::from_secs(5));
            if !left.is_empty() {
                bail!("stale processes of {} will not die: {left:?}", self.name);
            }
        }
        self.remove_stale_sockets();
        self.remove_runtime_leftovers(None);
        sys::remove_tree(&self.run)?;
        sys::remove_tree(&self.lib)?;
        Ok(())
    }

    /// Removes the shim sockets of the bundles a previous run left (their
    /// shims are dead by now): one per container id and grouping annotation.
    fn remove_stale_sockets(&self) {
        let address = self
            .run
            .join("containerd.sock")
            .to_string_lossy()
            .into_owned();
        let tasks = self.run.join("state/io.containerd.runtime.v2.task");
        for ns in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            let ns_name = ns.file_name().to_string_lossy().into_owned();
            for bundle in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let id = bundle.file_name().to_string_lossy().into_owned();
                let mut groups = vec![id];
                let spec = std::fs::read(bundle.path().join("config.json")).unwrap_or_default();
                if let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&spec) {
                    for key in [
                        "io.containerd.runc.v2.group",
                        "io.kubernetes.cri.sandbox-id",
                    ] {
                        if let Some(g) = spec["annotations"][key].as_str() {
                            groups.push(g.to_string());
                        }
                    }
                }
                for g in groups {
                    let _ = std::fs::remove_file(shim_socket(&address, &ns_name, &g));
                }
            }
        }
    }

    /// Kills container processes left in this instance's cgroups and
    /// removes the cgroups and the runc/barge state of its namespaces.
    /// `namespaces` restricts it to those; `None` means every namespace with
    /// our prefix.
    pub fn remove_runtime_leftovers(&self, namespaces: Option<&BTreeSet<String>>) {
        let prefix = self.ns_prefix();
        let wanted = |n: &str| match namespaces {
            Some(set) => set.contains(n),
            None => n.starts_with(&prefix),
        };
        let mut dirs = Vec::new();
        for root in sys::cgroup_roots() {
            if let Ok(rd) = std::fs::read_dir(&root) {
                for e in rd.flatten() {
                    if e.file_name().to_str().is_some_and(wanted) && e.path().is_dir() {
                        dirs.push(e.path());
                    }
                }
            }
        }
        kill_cgroup_members(&dirs);
        sys::remove_cgroups(&dirs);
        for parent in runtime_state_parents() {
            if let Ok(rd) = std::fs::read_dir(&parent) {
                for e in rd.flatten() {
                    if e.file_name().to_str().is_some_and(wanted) {
                        let _ = sys::remove_tree(&e.path());
                    }
                }
            }
        }
    }
}

/// Whether `arg` names `dir` or a path under it (`/run/x` is not under
/// `/run/x`'s sibling `/run/xy`).
fn mentions(arg: &str, dir: &str) -> bool {
    arg.match_indices(dir)
        .any(|(i, _)| matches!(arg[i + dir.len()..].chars().next(), None | Some('/')))
}

/// Directories that hold per-namespace state of OCI runtimes: runc-v2's
/// `/run/containerd/runc` and barge's `/run/containerd/barge/<runtime>`.
pub fn runtime_state_parents() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/run/containerd/runc")];
    if let Ok(rd) = std::fs::read_dir("/run/containerd/barge") {
        v.extend(rd.flatten().map(|e| e.path()));
    }
    v
}

/// Kills every process in these cgroup trees.
pub fn kill_cgroup_members(dirs: &[PathBuf]) {
    let mut pids = Vec::new();
    for d in dirs {
        collect_procs(d, &mut pids);
    }
    pids.sort();
    pids.dedup();
    if !pids.is_empty() {
        sys::kill_all(&pids, Duration::from_millis(200));
    }
}

fn collect_procs(d: &Path, out: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_procs(&e.path(), out);
            }
        }
    }
}

/// A running private containerd.
pub struct Containerd {
    /// `1.6`, `1.7`, `2.1` or `2.3`.
    pub version: String,
    pub dirs: Dirs,
    pub prefix: PathBuf,
    pub state_dir: PathBuf,
    pub root_dir: PathBuf,
    pub sock: PathBuf,
    pub log_path: PathBuf,
    /// The private bin dir at the front of containerd's PATH.
    pub bin_dir: PathBuf,
    pub shim: PathBuf,
    child: Mutex<Option<Child>>,
    namespaces: Mutex<BTreeSet<String>>,
    groups: Mutex<BTreeSet<(String, String)>>,
}

/// Writes what the CRI tables need into a fresh instance's directories and
/// returns those tables.
pub type CriConfig<'a> = &'a dyn Fn(&Dirs) -> Result<String>;

impl Containerd {
    /// Starts containerd `version` as instance `name`, CRI off.
    pub fn start(version: &str, name: &str, shim: &Path) -> Result<Containerd> {
        Self::start_with(version, name, shim, None)
    }

    /// Starts containerd `version` as instance `name` with the CRI plugin
    /// on: `cri` writes what the CRI tables need into the instance's fresh
    /// directories and returns those tables.
    pub fn start_cri(
        version: &str,
        name: &str,
        shim: &Path,
        cri: CriConfig<'_>,
    ) -> Result<Containerd> {
        Self::start_with(version, name, shim, Some(cri))
    }

    fn start_with(
        version: &str,
        name: &str,
        shim: &Path,
        cri: Option<CriConfig<'_>>,
    ) -> Result<Containerd> {
        let prefix = installed(&format!("containerd-{version}"), "containerd")?;
        let dirs = Dirs::new(name);
        dirs.clean_stale()?;
        let state_dir = dirs.run.join("state");
        let root_dir = dirs.lib.join("root");
        let bin_dir = dirs.run.join("bin");
        create_dirs(&[&dirs.run, &state_dir, &root_dir, &bin_dir])?;
        std::os::unix::fs::symlink(shim, bin_dir.join(SHIM_NAME))?;
        let sock = dirs.run.join("containerd.sock");
        let level = if std::env::var_os("BARGE_IT_DEBUG").is_some() {
            "debug"
        } else {
            "info"
        };
        let cri = cri.map(|f| f(&dirs)).transpose()?;
        let config = config_toml(
            config_version(version),
            &root_dir,
            &state_dir,
            &sock,
            level,
            cri.as_deref(),
        );
        let config_path = dirs.run.join("config.toml");
        std::fs::write(&config_path, config)?;
        let log_path = dirs.run.join("containerd.log");
        let cd = Containerd {
            version: version.to_string(),
            dirs,
            prefix,
            state_dir,
            root_dir,
            sock,
            log_path,
            bin_dir,
            shim: shim.to_path_buf(),
            child: Mutex::new(None),
            namespaces: Mutex::default(),
            groups: Mutex::default(),
        };
        cd.spawn()?;
        Ok(cd)
    }

    /// Starts the containerd process and waits until it answers.
    fn spawn(&self) -> Result<()> {
        let bin = self.prefix.join("bin/containerd");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let path = format!(
            "{}:{}:/usr/sbin:/usr/bin:/sbin:/bin",
            self.bin_dir.display(),
            self.prefix.join("bin").display()
        );
        let mut command = Command::new(&bin);
        command
            .arg("--config")
            .arg(self.dirs.run.join("config.toml"))
            .env("PATH", path)
            .env(
                MARKER.split_once('=').expect("NAME=value").0,
                MARKER.split_once('=').expect("NAME=value").1,
            )
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
        let mut child = command
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let ready = poll("containerd to answer", Duration::from_secs(30), || {
            if let Some(status) = child.try_wait()? {
                bail!("containerd exited with {status}");
            }
            let out = self
                .ctr_cmd()
                .arg("version")
                .timeout(Duration::from_secs(5))
                .run()?;
            Ok(out.success().then_some(()))
        });
        *self.child.lock().unwrap() = Some(child);
        ready.with_context(|| format!("containerd log:\n{}", self.log_tail(30)))
    }

    /// Stops containerd (SIGTERM; its shims and containers live on).
    fn stop(&self) -> Result<()> {
        self.stop_with(libc::SIGTERM)
    }

    /// Stops containerd with `signal` and waits until it has exited.
    fn stop_with(&self, signal: i32) -> Result<()> {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return Ok(());
        };
        sys::signal(child.id(), signal);
        let end = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        let clean = !matches!(child.try_wait(), Ok(None));
        let _ = child.kill();
        let _ = child.wait();
        if !clean {
            bail!("containerd ignored signal {signal} for 10 s");
        }
        Ok(())
    }

    /// Restarts containerd with the same configuration: it must find its
    /// running shims again.
    pub fn restart(&self) -> Result<()> {
        self.restart_with(libc::SIGTERM, || Ok(()))
    }

    /// Stops containerd with `signal` (SIGTERM or SIGKILL), runs
    /// `while_down`, and starts it again with the same configuration; it
    /// is started again even when `while_down` fails.
    pub fn restart_with(&self, signal: i32, while_down: impl FnOnce() -> Result<()>) -> Result<()> {
        self.stop_with(signal)?;
        let down = while_down();
        self.spawn()?;
        down.context("while containerd was down")
    }

    pub fn ctr_bin(&self) -> PathBuf {
        self.prefix.join("bin/ctr")
    }

    /// Fails when containerd is no longer running, with its log's tail.
    pub fn check_running(&self) -> Result<()> {
        let pid = self
            .child
            .lock()
            .unwrap()
            .as_ref()
            .map(|c| c.id())
            .unwrap_or(0);
        if !sys::alive(pid) {
            bail!(
                "containerd {} is not running; log:\n{}",
                self.dirs.name,
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// containerd's gRPC address, as it hands it to shims in `-address`.
    pub fn address(&self) -> String {
        self.sock.to_string_lossy().into_owned()
    }

    /// A namespace name of this instance (registered for teardown).
    pub fn namespace(&self, suffix: &str) -> String {
        let ns = format!("{}{suffix}", self.dirs.ns_prefix());
        self.namespaces.lock().unwrap().insert(ns.clone());
        ns
    }

    /// Remembers a shim group, so that its socket is removed at teardown.
    pub fn note_group(&self, ns: &str, group: &str) {
        self.groups
            .lock()
            .unwrap()
            .insert((ns.to_string(), group.to_string()));
    }

    /// `ctr -a <sock>`, with [`CTR_ENV`].
    fn ctr_cmd(&self) -> Cmd {
        let mut c = Cmd::new(self.ctr_bin());
        for (k, v) in CTR_ENV {
            c = c.env(k, v);
        }
        c.arg("-a").arg(&self.sock)
    }

    /// `ctr -a <sock> -n <ns>`.
    pub fn ctr(&self, ns: &str) -> Cmd {
        self.ctr_cmd().arg("-n").arg(ns)
    }

    pub fn import_image(&self, ns: &str) -> Result<()> {
        self.ctr(ns)
            .args(["image", "import", IMAGE_TAR])
            .timeout(Duration::from_secs(180))
            .ok()
            .map(|_| ())
    }

    /// Live shim processes (any runtime) that serve this containerd.
    pub fn shims(&self) -> Vec<sys::Proc> {
        let address = self.address();
        sys::processes()
            .into_iter()
            .filter(|p| p.state != 'Z')
            .filter(|p| p.name().starts_with("containerd-shim-"))
            .filter(|p| p.has_flag("-address", &address))
            .collect()
    }

    /// The task and container ids left in a namespace.
    pub fn leftovers(&self, ns: &str) -> Result<(Vec<String>, Vec<String>)> {
        let ids = |what: &str| -> Result<Vec<String>> {
            let out = self.ctr(ns).args([what, "ls", "-q"]).ok()?;
            Ok(crate::cmd::nonempty_lines(&out.stdout))
        };
        Ok((ids("tasks")?, ids("containers")?))
    }

    /// Best-effort removal of every task and container in a namespace.
    pub fn force_clean_namespace(&self, ns: &str) {
        let short = Duration::from_secs(15);
        let Ok((tasks, containers)) = self.leftovers(ns) else {
            return;
        };
        for t in &tasks {
            let _ = self
                .ctr(ns)
                .args(["tasks", "kill", "-a", "-s", "SIGKILL", t])
                .timeout(short)
                .run();
        }
        for t in &tasks {
            let _ = self
                .ctr(ns)
                .args(["tasks", "rm", "-f", t])
                .timeout(short)
                .run();
        }
        for c in &containers {
            let _ = self
                .ctr(ns)
                .args(["containers", "rm", c])
                .timeout(short)
                .run();
        }
    }

    /// The bundle directory containerd makes for a task.
    pub fn bundle(&self, ns: &str, id: &str) -> PathBuf {
        self.state_dir
            .join("io.containerd.runtime.v2.task")
            .join(ns)
            .join(id)
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Lines of containerd's log that came from a barge shim.
    pub fn shim_log_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("runtime=io.containerd.barge.v1"))
            .map(String::from)
            .collect()
    }

    fn teardown(&mut self) -> Result<()> {
        let namespaces: BTreeSet<String> = self.namespaces.lock().unwrap().clone();
        let mut problems = Vec::new();
        let running = self
            .child
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if running {
            for ns in &namespaces {
                self.force_clean_namespace(ns);
            }
        }
        if let Err(e) = self.stop() {
            problems.push(format!("{e:#}"));
        }
        let shims: Vec<u32> = self.shims().iter().map(|p| p.pid).collect();
        if !shims.is_empty() {
            problems.push(format!("shims still running at teardown: {shims:?}"));
            sys::kill_all(&shims, Duration::from_secs(2));
        }
        self.dirs.remove_runtime_leftovers(Some(&namespaces));
        save_log(
            &self.log_path,
            &format!("{}-containerd.log", self.dirs.name),
        );
        let address = self.address();
        for (ns, group) in self.groups.lock().unwrap().iter() {
            let _ = std::fs::remove_file(shim_socket(&address, ns, group));
        }
        for d in [&self.dirs.run, &self.dirs.lib] {
            if let Err(e) = sys::remove_tree(d) {
                problems.push(format!("{e:#}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("; "))
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            let _ = writeln!(
                std::io::stderr(),
                "teardown of containerd {}: {e:#}",
                self.dirs.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_is_per_component() {
        assert!(mentions(
            "--config=/run/barge-it/d26/x",
            "/run/barge-it/d26"
        ));
        assert!(mentions("/run/barge-it/d26", "/run/barge-it/d26"));
        assert!(!mentions(
            "/run/barge-it/d26c/config.toml",
            "/run/barge-it/d26"
        ));
        assert!(mentions(
            "unix:///run/barge-it/d26/docker.sock",
            "/run/barge-it/d26"
        ));
    }

    #[test]
    fn config_versions() {
        assert_eq!(config_version("1.6"), 2);
        assert_eq!(config_version("1.7"), 2);
        assert_eq!(config_version("2.1"), 3);
        assert_eq!(config_version("2.3"), 4);
        assert_eq!(config_version("2.4"), 4);
    }

    #[test]
    fn config_puts_the_socket_where_each_version_reads_it() {
        let (root, state, sock) = (Path::new("/r"), Path::new("/s"), Path::new("/x.sock"));
        let v3 = config_toml(3, root, state, sock, "info", None);
        assert!(v3.starts_with("version = 3\n"), "{v3}");
        assert!(v3.contains("[grpc]\n  address = \"/x.sock\"\n"), "{v3}");
        assert!(
            v3.contains("[ttrpc]\n  address = \"/x.sock.ttrpc\"\n"),
            "{v3}"
        );
        assert!(
            v3.contains("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]"),
            "{v3}"
        );
        let cri = config_toml(3, root, state, sock, "info", Some("[plugins.x]\n"));
        assert!(!cri.contains("disabled_plugins"), "{cri}");
        assert!(cri.ends_with("\n[plugins.x]\n"), "{cri}");
        let v4 = config_toml(4, root, state, sock, "debug", None);
        assert!(
            v4.contains("[plugins.\"io.containerd.server.v1.grpc\"]\n  address = \"/x.sock\"\n"),
            "{v4}"
        );
        assert!(
            v4.contains(
                "[plugins.\"io.containerd.server.v1.ttrpc\"]\n  address = \"/x.sock.ttrpc\"\n"
            ),
            "{v4}"
        );
        assert!(
            !v4.contains("[grpc]") && v4.contains("level = \"debug\""),
            "{v4}"
        );
    }

    #[test]
    fn shim_socket_is_sha256_of_address_namespace_group() {
        let s = shim_socket("/run/c.sock", "ns", "g");
        assert_eq!(s.parent(), Some(Path::new(SOCKET_DIR)));
        assert_eq!(s.file_name().unwrap().len(), 64);
        assert_ne!(s, shim_socket("/run/c.sock", "ns", "h"));
    }
}
