//! Real containers through /usr/sbin/runc and /usr/bin/crun.
//!
//! Needs root. Each test builds a busybox bundle in its own temporary
//! directory, uses its own `--root` and a unique container id, and cleans up
//! (container, cgroups, directory) in `Drop`, so the tests can run in
//! parallel and leave nothing behind when they fail.

use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use barge_executor::{
    CleanupContext, CreateContext, Error, Executor, ExecutorChoice, Fit, Options, Spec, Stdio,
};
use barge_oci_binary::{OciBinary, PID_FILE, RUNTIME_LOG};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use tempfile::TempDir;

const NAMESPACE: &str = "barge-test";
/// Containers go into `/barge-test/<id>` in every cgroup hierarchy.
const CGROUP_PARENT: &str = "barge-test";
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
const BUSYBOX: &str = "/bin/busybox";

/// How many fixtures are alive; the last one to go removes the cgroup parent.
static LIVE_FIXTURES: Mutex<usize> = Mutex::new(0);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rt {
    Runc,
    Crun,
}

impl Rt {
    fn name(self) -> &'static str {
        match self {
            Rt::Runc => "runc",
            Rt::Crun => "crun",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Rt::Runc => "/usr/sbin/runc",
            Rt::Crun => "/usr/bin/crun",
        }
    }
}

/// Logs to stderr, which the test harness captures per test.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("[{}] {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

static STDERR_LOG: StderrLog = StderrLog;

fn setup_process() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = log::set_logger(&STDERR_LOG);
        log::set_max_level(log::LevelFilter::Debug);
        // Like the shim, become the parent of the containers' inits once
        // the runtime that made them exits, so that we can reap them.
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    });
}

/// Whether the cgroup v2 hierarchy of this hybrid host holds controllers,
/// which crun 1.8 refuses ("cgroups in hybrid mode not supported").
fn unified_has_controllers() -> bool {
    fs::read_to_string(Path::new(CGROUP_MOUNT).join("unified/cgroup.controllers"))
        .map(|c| !c.trim().is_empty())
        .unwrap_or(false)
}

/// One container's bundle, state root and cgroup, removed on drop.
struct Fixture {
    id: String,
    /// What the options name as `runtime`.
    runtime: PathBuf,
    options: Options,
    spec: Spec,
    bundle: PathBuf,
    /// The init, while it may still need killing and reaping.
    init: Option<u32>,
    // Dropped last, after Drop::drop has deleted the container.
    dir: TempDir,
}

impl Fixture {
    fn new(rt: Rt, test: &str, args: &[&str]) -> Fixture {
        setup_process();
        *LIVE_FIXTURES.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let dir = tempfile::Builder::new()
            .prefix("barge-oci-")
            .tempdir()
            .expect("tempdir");
        let id = format!("oci-{}-{test}-{}", rt.name(), std::process::id());
        let bundle = dir.path().join("bundle");
        let bin = bundle.join("rootfs/bin");
        fs::create_dir_all(&bin).unwrap();
        fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox (apt install busybox-static)");
        for applet in ["sh", "echo", "sleep", "true"] {
            symlink("busybox", bin.join(applet)).unwrap();
        }

        let out = Command::new(Rt::Runc.binary())
            .arg("spec")
            .arg("--bundle")
            .arg(&bundle)
            .output()
            .expect("runc spec");
        assert!(out.status.success(), "runc spec: {out:?}");
        let config = bundle.join("config.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
        json["process"]["args"] = serde_json::json!(args);
        json["process"]["terminal"] = serde_json::json!(false);
        json["linux"]["cgroupsPath"] = serde_json::json!(format!("/{CGROUP_PARENT}/{id}"));
        fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
        let spec = Spec::load(&config).expect("load config.json");

        let runtime = match rt {
            Rt::Crun if unified_has_controllers() => crun_wrapper(dir.path()),
            _ => PathBuf::from(rt.binary()),
        };
        let options = Options {
            executor: ExecutorChoice::OciBinary,
            runtime: runtime.to_str().unwrap().to_string(),
            runtime_root: Some(dir.path().join("state")),
            systemd_cgroup: false,
            debug: true,
            ..Options::default()
        };
        Fixture {
            id,
            runtime,
            options,
            spec,
            bundle,
            init: None,
            dir,
        }
    }

    fn ctx(&self, stdio: Stdio) -> CreateContext<'_> {
        CreateContext {
            id: &self.id,
            namespace: NAMESPACE,
            containerd_address: "",
            bundle: &self.bundle,
            spec: &self.spec,
            options: &self.options,
            stdio,
            console_socket: None,
        }
    }

    fn cleanup_ctx(&self) -> CleanupContext<'_> {
        CleanupContext {
            id: &self.id,
            namespace: NAMESPACE,
            bundle: &self.bundle,
            options: &self.options,
        }
    }

    fn state_root(&self) -> PathBuf {
        self.dir.path().join("state").join(NAMESPACE)
    }

    /// A file in the test directory, and a write fd for it.
    fn output(&self, name: &str) -> (PathBuf, OwnedFd) {
        let path = self.dir.path().join(name);
        let file = File::create(&path).unwrap();
        (path, OwnedFd::from(file))
    }

    /// The container's cgroup directories that exist, in any hierarchy.
    fn cgroups(&self) -> Vec<PathBuf> {
        cgroup_dirs(&format!("{CGROUP_PARENT}/{}", self.id))
    }

    /// Waits for the init (our child, since we are a subreaper) to end.
    fn reap(&mut self) -> WaitStatus {
        let pid = self.init.take().expect("no init to reap");
        waitpid(Pid::from_raw(pid as i32), None).expect("waitpid on the init")
    }

    /// What the runtime binary itself reports for the container.
    fn runtime_state(&self) -> std::process::Output {
        Command::new(&self.runtime)
            .arg("--root")
            .arg(self.state_root())
            .arg("state")
            .arg(&self.id)
            .output()
            .unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new(&self.runtime)
            .arg("--root")
            .arg(self.state_root())
            .args(["delete", "--force"])
            .arg(&self.id)
            .output();
        if let Some(pid) = self.init.take() {
            let pid = Pid::from_raw(pid as i32);
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        for dir in self.cgroups() {
            if let Err(e) = fs::remove_dir(&dir) {
                eprintln!("leaving cgroup {}: {e}", dir.display());
            }
        }
        let mut live = LIVE_FIXTURES.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        if *live == 0 {
            // Still holding the lock, so no other fixture is starting.
            for dir in cgroup_dirs(CGROUP_PARENT) {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// `relative` under every cgroup hierarchy where it exists.
fn cgroup_dirs(relative: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(CGROUP_MOUNT) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(relative))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// crun 1.8 refuses a hybrid cgroup host whose v2 hierarchy has any
/// controller (here: hugetlb). This wrapper runs the real crun in a private
/// mount namespace without the v2 mount, where crun sees plain cgroup v1.
fn crun_wrapper(dir: &Path) -> PathBuf {
    let bin = dir.join("wrapper");
    fs::create_dir_all(&bin).unwrap();
    let path = bin.join("crun");
    fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec unshare --mount --propagation private /bin/sh -c \
             'umount {CGROUP_MOUNT}/unified || exit 125; exec {} \"$@\"' crun \"$@\"\n",
            Rt::Crun.binary()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lifecycle(rt: Rt) {
    let greeting = format!("hello from {}", rt.name());
    let script = format!("echo {greeting}; echo to-stderr >&2; exec sleep 1000");
    let mut fx = Fixture::new(rt, "life", &["sh", "-c", &script]);
    let (stdout_path, stdout) = fx.output("stdout");
    let (stderr_path, stderr) = fx.output("stderr");
    let ctx = fx.ctx(Stdio {
        stdin: None,
        stdout: Some(stdout),
        stderr: Some(stderr),
    });
    let executor = OciBinary::new();
    assert_eq!(executor.name(), "oci-binary");
    assert_eq!(executor.fits(&ctx), Fit::Yes);

    let mut container = executor.create(ctx).expect("create");
    let pid = container.pid();
    fx.init = Some(pid);
    assert!(pid > 0);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "init {pid} is gone"
    );
    let pid_file = fs::read_to_string(fx.bundle.join(PID_FILE)).unwrap();
    assert_eq!(pid_file.trim(), pid.to_string());
    // The init sits in the cgroup from the spec, and is not running the
    // entrypoint yet.
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroup.contains(&format!("/{CGROUP_PARENT}/{}", fx.id)),
        "init's cgroups:\n{cgroup}"
    );
    assert!(!fx.cgroups().is_empty());
    assert_eq!(fs::read_to_string(&stdout_path).unwrap(), "");
    let state = fx.runtime_state();
    assert!(
        String::from_utf8_lossy(&state.stdout).contains("\"created\""),
        "{state:?}"
    );

    container.start().expect("start");
    wait_for("the container's output", Duration::from_secs(10), || {
        fs::read_to_string(&stdout_path)
            .unwrap()
            .contains(&greeting)
            && fs::read_to_string(&stderr_path)
                .unwrap()
                .contains("to-stderr")
    });
    assert_eq!(
        fs::read_to_string(&stdout_path).unwrap(),
        format!("{greeting}\n")
    );

    let pids = container.pids().expect("pids");
    assert_eq!(pids, vec![pid]);

    container.kill(libc_sigkill(), false).expect("kill");
    match fx.reap() {
        WaitStatus::Signaled(p, Signal::SIGKILL, _) => assert_eq!(p.as_raw() as u32, pid),
        other => panic!("init ended with {other:?}"),
    }
    assert_eq!(
        container.pids().expect("pids after exit"),
        Vec::<u32>::new()
    );
    match container.kill(libc_sigkill(), false) {
        Err(Error::NotFound(m)) => eprintln!("kill after exit: {m}"),
        other => panic!("kill after exit gave {other:?}"),
    }

    container.delete().expect("delete");
    assert!(
        !fx.state_root().join(&fx.id).exists(),
        "runtime state left behind"
    );
    assert!(fx.cgroups().is_empty(), "cgroups left: {:?}", fx.cgroups());
    // Deleting again, or cleaning up after a "crash", finds nothing: fine.
    container.delete().expect("second delete");
    OciBinary::new()
        .cleanup(&fx.cleanup_ctx())
        .expect("cleanup of a deleted container");
}

fn libc_sigkill() -> u32 {
    Signal::SIGKILL as i32 as u32
}

#[test]
fn runc_lifecycle() {
    lifecycle(Rt::Runc);
}

#[test]
fn crun_lifecycle() {
    lifecycle(Rt::Crun);
}

fn kill_all(rt: Rt) {
    let mut fx = Fixture::new(rt, "killall", &["sh", "-c", "sleep 1000 & exec sleep 1001"]);
    let ctx = fx.ctx(Stdio::default());
    let mut container = OciBinary::new().create(ctx).expect("create");
    fx.init = Some(container.pid());
    container.start().expect("start");
    wait_for("two processes", Duration::from_secs(10), || {
        container.pids().expect("pids").len() == 2
    });
    container.kill(libc_sigkill(), true).expect("kill --all");
    assert!(matches!(
        fx.reap(),
        WaitStatus::Signaled(_, Signal::SIGKILL, _)
    ));
    wait_for("no processes", Duration::from_secs(10), || {
        container.pids().expect("pids").is_empty()
    });
    container.delete().expect("delete");
    assert!(fx.cgroups().is_empty(), "cgroups left: {:?}", fx.cgroups());
}

#[test]
fn runc_kill_all() {
    kill_all(Rt::Runc);
}

#[test]
fn crun_kill_all() {
    kill_all(Rt::Crun);
}

/// An exec: one more process in the running container, with its own
/// stdio, a pid that is the caller's child (a subreaper's), and its exit
/// code; a missing binary is named; an exec into a stopped container fails.
fn exec(rt: Rt) {
    let mut fx = Fixture::new(rt, "exec", &["sleep", "1000"]);
    let ctx = fx.ctx(Stdio::default());
    let mut container = OciBinary::new().create(ctx).expect("create");
    fx.init = Some(container.pid());
    container.start().expect("start");
    let (out_path, out) = fx.output("exec-stdout");
    let process: barge_executor::Process = serde_json::from_value(serde_json::json!({
        "args": ["sh", "-c", "echo from-exec $FOO; exit 5"],
        "env": ["PATH=/bin", "FOO=bar"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0},
    }))
    .unwrap();
    let pid = container
        .exec(barge_executor::ExecContext {
            exec_id: "e1",
            process: &process,
            stdio: Stdio {
                stdin: None,
                stdout: Some(out),
                stderr: None,
            },
            console_socket: None,
        })
        .expect("exec");
    assert_ne!(pid, container.pid());
    match waitpid(Pid::from_raw(pid as i32), None).expect("waitpid on the exec") {
        WaitStatus::Exited(_, 5) => {}
        other => panic!("exec ended with {other:?}"),
    }
    assert_eq!(fs::read_to_string(&out_path).unwrap(), "from-exec bar\n");
    // The bundle keeps none of the exec's files.
    let leftovers: Vec<_> = fs::read_dir(&fx.bundle)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("exec-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    fn exec_ctx(process: &barge_executor::Process) -> barge_executor::ExecContext<'_> {
        barge_executor::ExecContext {
            exec_id: "e2",
            process,
            stdio: Stdio::default(),
            console_socket: None,
        }
    }
    // crun 1.8.1 loses track of the container after an exec of a missing
    // binary (its state says "stopped", pid 0, while the init still runs,
    // so `crun kill` fails): the missing binary is checked with runc only.
    if rt == Rt::Runc {
        let missing: barge_executor::Process = serde_json::from_value(serde_json::json!({
            "args": ["no-such-binary"], "env": ["PATH=/bin"], "cwd": "/",
            "user": {"uid": 0, "gid": 0},
        }))
        .unwrap();
        let err = container
            .exec(exec_ctx(&missing))
            .expect_err("exec of a missing binary");
        assert!(err.to_string().contains("no-such-binary"), "{err}");
    }

    container.kill(libc_sigkill(), false).expect("kill");
    fx.reap();
    let err = container
        .exec(exec_ctx(&process))
        .expect_err("exec into a stopped container");
    assert!(
        matches!(err, Error::FailedPrecondition(_) | Error::NotFound(_)),
        "{err:?}"
    );
    container.delete().expect("delete");
}

#[test]
fn runc_exec() {
    exec(Rt::Runc);
}

#[test]
fn crun_exec() {
    exec(Rt::Crun);
}

/// The `delete` action after a shim crash: no handle, only names.
fn cleanup_after_crash(rt: Rt) {
    let mut fx = Fixture::new(rt, "crash", &["sleep", "1000"]);
    let ctx = fx.ctx(Stdio::default());
    let container = OciBinary::new().create(ctx).expect("create");
    fx.init = Some(container.pid());
    drop(container);

    OciBinary::new()
        .cleanup(&fx.cleanup_ctx())
        .expect("cleanup");
    assert!(matches!(
        fx.reap(),
        WaitStatus::Signaled(_, Signal::SIGKILL, _)
    ));
    assert!(
        !fx.runtime_state().status.success(),
        "container still there"
    );
    assert!(fx.cgroups().is_empty(), "cgroups left: {:?}", fx.cgroups());
    OciBinary::new()
        .cleanup(&fx.cleanup_ctx())
        .expect("second cleanup");
}

#[test]
fn runc_cleanup_after_crash() {
    cleanup_after_crash(Rt::Runc);
}

#[test]
fn crun_cleanup_after_crash() {
    cleanup_after_crash(Rt::Crun);
}

fn bad_entrypoint(rt: Rt) {
    let fx = Fixture::new(rt, "nope", &["nope"]);
    let (_, stderr) = fx.output("stderr");
    let ctx = fx.ctx(Stdio {
        stdin: None,
        stdout: None,
        stderr: Some(stderr),
    });
    let err = match OciBinary::new().create(ctx) {
        Err(e) => e,
        Ok(c) => panic!("created container with pid {}", c.pid()),
    };
    let message = err.to_string();
    eprintln!("{} says: {message}", rt.name());
    assert!(matches!(err, Error::Runtime(_)), "{err:?}");
    assert!(message.contains("nope"), "{message}");
    assert!(message.contains("not found in $PATH"), "{message}");
    match rt {
        Rt::Runc => assert!(
            message.contains(r#"exec: "nope": executable file not found in $PATH"#),
            "{message}"
        ),
        Rt::Crun => assert!(
            message.contains("executable file `nope` not found in $PATH"),
            "{message}"
        ),
    }
    assert!(fx.bundle.join(RUNTIME_LOG).exists());
    // The runtime removed what it had made.
    assert!(
        !fx.runtime_state().status.success(),
        "container left behind"
    );
    assert!(fx.cgroups().is_empty(), "cgroups left: {:?}", fx.cgroups());
}

#[test]
fn runc_bad_entrypoint() {
    bad_entrypoint(Rt::Runc);
}

#[test]
fn crun_bad_entrypoint() {
    bad_entrypoint(Rt::Crun);
}

#[test]
fn missing_binary() {
    let dir = TempDir::new().unwrap();
    let spec = Spec::default();
    for runtime in ["barge-no-such-runtime", "/nonexistent/barge/crun"] {
        let options = Options {
            executor: ExecutorChoice::OciBinary,
            runtime: runtime.to_string(),
            runtime_root: Some(dir.path().join("state")),
            ..Options::default()
        };
        let ctx = CreateContext {
            id: "missing",
            namespace: NAMESPACE,
            containerd_address: "",
            bundle: dir.path(),
            spec: &spec,
            options: &options,
            stdio: Stdio::default(),
            console_socket: None,
        };
        let executor = OciBinary::new();
        let Fit::No(why) = executor.fits(&ctx) else {
            panic!("{runtime} fits");
        };
        assert!(
            why.contains(&format!("OCI runtime binary `{runtime}`")),
            "{why}"
        );
        if runtime.starts_with('/') {
            assert!(why.contains("does not exist"), "{why}");
        } else {
            assert!(why.contains("not found on PATH ("), "{why}");
        }
        match executor.create(ctx) {
            Err(Error::InvalidArgument(m)) => assert_eq!(m, why),
            Err(e) => panic!("create gave {e:?}"),
            Ok(_) => panic!("created with {runtime}"),
        }
        let cleanup = CleanupContext {
            id: "missing",
            namespace: NAMESPACE,
            bundle: dir.path(),
            options: &options,
        };
        assert!(matches!(
            executor.cleanup(&cleanup),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(!dir.path().join("state").exists());
}
