//! Escapes and defaults (issue 11, point 4), each next to runc-v2 on the
//! same daemon:
//!
//! - `shim-state-root-only` (ctr, native and oci-binary): the shim's socket,
//!   the bundle's files and log fifo, and the runtime's state are root's
//!   alone: by their modes (from the runtime's own directory down, as runc
//!   keeps `/run/containerd/runc`), and for real: uid 65534 can neither
//!   open them nor connect to the socket.
//! - `shim-hidden-from-container` (ctr, native and oci-binary; Wasm pass:
//!   `wasm-shim-hidden-from-container`): from inside the container (its
//!   init, and a plain exec), the shim's socket is not in the mount
//!   namespace, no shim shows in /proc, the processes hold only 0, 1 and 2,
//!   and their environment is the spec's: not the shim's, which carries
//!   [`MARKER`] from containerd's.
//! - `seccomp-default`, `seccomp-unconfined`, `seccomp-custom` (Docker):
//!   unshare, add_key, keyctl, mount and ptrace of the container's init
//!   from an exec, under Docker's default profile, with
//!   `--security-opt seccomp=unconfined`, and with a profile of our own
//!   (mkdir and getpgid refused with chosen errnos): the same answers as
//!   runc-v2, in the init and in an exec.
//! - `userns-pod` (CRI, containerd 2.1 and later): a pod with `hostUsers:
//!   false` (a user namespace of mode POD with uid/gid mappings): its
//!   sandbox's maps and host ids.
//! - `userns-remap` (Docker 28 with `userns-remap: default`, a dockerd of
//!   its own, `d28u`): the init's maps, host ids and file owners, and an
//!   exec in the container's user namespace (the native executor refuses
//!   the exec instead: libcontainer 0.7 would not join the namespace).
//! - `info-idmap` (ctr, containerd 2.x): `-info` claims idmapped mounts only
//!   where the kernel makes one (a real `mount_setattr(MOUNT_ATTR_IDMAP)`).
//!
//! The system calls are made by `probe.c`, built static with gcc into the
//! pass's work dir and bind-mounted (Docker) or copied (Wasm) in.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::cmd::{poll, Cmd, Output};
use crate::containerd::{runtime_state_parents, shim_socket, Containerd, MARKER, SOCKET_DIR};
use crate::cri::{CriContainerd, HANDLER_BARGE, HANDLER_RUNC};
use crate::ctr::{CtrCtx, Executor};
use crate::ctr_cases::CtrCase;
use crate::docker::Dockerd;
use crate::docker_cases::{DockerCase, DockerCtx};
use crate::docker_exec_cases::with_container;
use crate::pod_cases::PodCase;
use crate::runner::{self, Runner};
use crate::sys;
use crate::tty_cases::{both, Cleanup, Side};

const PROBE_SRC: &str = include_str!("probe.c");
/// The uid and gid of `nobody`, who must reach none of the shim's files.
const NOBODY: &str = "65534";

/// The ctr cases of the native and oci-binary passes.
pub fn ctr_cases() -> Vec<CtrCase> {
    type Custom = (&'static str, fn(&CtrCtx) -> Result<()>);
    let custom: [Custom; 3] = [
        ("shim-state-root-only", shim_state_root_only),
        ("shim-hidden-from-container", shim_hidden_from_container),
        ("info-idmap", info_idmap),
    ];
    CtrCase::list(custom)
}

/// The ctr cases of the Wasm pass.
pub fn wasm_ctr_cases() -> Vec<CtrCase> {
    type Custom = (&'static str, fn(&CtrCtx) -> Result<()>);
    let custom: [Custom; 1] = [("wasm-shim-hidden-from-container", wasm_shim_hidden)];
    CtrCase::list(custom)
}

/// The Docker cases (native and oci-binary passes).
pub fn docker_cases() -> Vec<DockerCase> {
    type Custom = (&'static str, fn(&DockerCtx) -> Result<()>);
    let custom: [Custom; 4] = [
        ("seccomp-default", seccomp_default),
        ("seccomp-unconfined", seccomp_unconfined),
        ("seccomp-custom", seccomp_custom),
        ("seccomp-runtime-crash", seccomp_runtime_crash),
    ];
    DockerCase::list(custom)
}

/// The CRI cases of containerd `version`: user namespaced pods from 2.1 on.
/// `userns-pod` fails under barge today (libcontainer 0.7 resolves the
/// pod's bind-mount sources from inside its user namespace, where
/// containerd's state directory is closed), so it runs only with
/// `BARGE_IT_USERNS_POD=1`, and CI leaves it out until then.
pub fn pod_cases(version: &str) -> Vec<PodCase> {
    if crate::info_cases::version(version) < (2, 1)
        || std::env::var_os("BARGE_IT_USERNS_POD").is_none()
    {
        return Vec::new();
    }
    vec![PodCase {
        name: "userns-pod",
        timeout: Duration::from_secs(90),
        run: userns_pod,
    }]
}

// ---- the probe ---------------------------------------------------------------

/// Builds `probe.c` (static) into `dir` unless it is there; its path.
pub fn probe(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("barge-probe");
    if path.is_file() {
        return Ok(path);
    }
    let tmp = dir.join("barge-probe.tmp");
    Cmd::new("gcc")
        .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&tmp)
        .args(["-x", "c", "-"])
        .stdin(PROBE_SRC)
        .timeout(Duration::from_secs(60))
        .ok()
        .context("build the probe (gcc and libc6-dev come with integration/scripts/install.sh)")?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// What the probe printed: operation → `ok` or an errno name.
fn answers(out: &Output) -> Result<BTreeMap<String, String>> {
    ensure!(out.success(), "the probe failed: {}", out.describe());
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(op, r)| (op.to_string(), r.to_string()))
        .collect())
}

// ---- shim-state-root-only ----------------------------------------------------

/// A path of the shim's, and the directory from which its modes are checked
/// (what lies above it belongs to containerd or to the machine).
struct Private {
    path: PathBuf,
    from: PathBuf,
}

/// Every path below `dir` (itself included), `from` being where the modes
/// are checked from.
fn tree(dir: &Path, from: &Path, out: &mut Vec<Private>) {
    out.push(Private {
        path: dir.to_path_buf(),
        from: from.to_path_buf(),
    });
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => tree(&p, from, out),
            Ok(m) if m.file_type().is_symlink() => {}
            Ok(_) => out.push(Private {
                path: p,
                from: from.to_path_buf(),
            }),
            Err(_) => {}
        }
    }
}

/// Whether others (not root, not in root's group) can get at `p` by the
/// modes of `p` and of its directories from `from` down: search on each
/// directory, then read or write on `p` (write for a socket).
fn open_to_others(p: &Private) -> Result<Option<String>> {
    let mut dirs = Vec::new();
    let mut d = p.path.parent();
    while let Some(dir) = d {
        if !dir.starts_with(&p.from) {
            break;
        }
        dirs.push(dir.to_path_buf());
        d = dir.parent();
    }
    for dir in &dirs {
        let m = std::fs::metadata(dir)?;
        if m.mode() & 0o001 == 0 {
            return Ok(None);
        }
    }
    let m = std::fs::symlink_metadata(&p.path)?;
    let t = m.file_type();
    let open = if t.is_socket() {
        m.mode() & 0o002 != 0
    } else if t.is_dir() {
        m.mode() & 0o005 != 0
    } else {
        m.mode() & 0o006 != 0
    };
    Ok(open.then(|| {
        format!(
            "{} ({:o}, uid {})",
            p.path.display(),
            m.mode() & 0o7777,
            m.uid()
        )
    }))
}

/// What is left open of one container's shim: paths others can get at by
/// their modes, paths not owned by root, and what uid 65534 could open or
/// connect to. Empty when all is root's alone.
fn exposed(ctx: &CtrCtx, id: &str) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    let socket = shim_socket(&ctx.cd.address(), &ctx.ns, id);
    ensure!(
        socket.exists(),
        "no shim socket {} for {id}",
        socket.display()
    );
    paths.push(Private {
        path: socket.clone(),
        from: PathBuf::from(SOCKET_DIR),
    });
    let bundle = ctx.cd.bundle(&ctx.ns, id);
    let mut bundle_paths = Vec::new();
    tree(&bundle, &bundle, &mut bundle_paths);
    // The rootfs is the container's, for its processes to see.
    bundle_paths.retain(|p| !p.path.starts_with(bundle.join("rootfs")));
    ensure!(
        bundle_paths.iter().any(|p| p.path.ends_with("log")),
        "no log fifo in {}",
        bundle.display()
    );
    paths.extend(bundle_paths);
    let mut state = 0;
    for parent in runtime_state_parents() {
        let dir = parent.join(&ctx.ns).join(id);
        if dir.is_dir() {
            state += 1;
            tree(&dir, &parent, &mut paths);
        }
    }
    ensure!(state == 1, "{state} runtime state dirs for {id}");
    let mut found = Vec::new();
    for p in &paths {
        if let Some(open) = open_to_others(p)? {
            found.push(format!("open to others: {open}"));
        }
        let uid = std::fs::symlink_metadata(&p.path)?.uid();
        if uid != 0 {
            found.push(format!("{} owned by uid {uid}", p.path.display()));
        }
    }
    // For real: as nobody, open every file and connect to every socket.
    let probe = probe(&ctx.work)?;
    let ops: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            let t = std::fs::symlink_metadata(&p.path).ok()?.file_type();
            let verb = if t.is_socket() { "connect" } else { "open" };
            Some(format!("{verb}={}", p.path.display()))
        })
        .collect();
    let out = Cmd::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .arg(&probe)
        .args(&ops)
        .run()?;
    let got = answers(&out)?;
    ensure!(
        got.len() == ops.len(),
        "the probe answered {got:?} to {ops:?}"
    );
    for (op, r) in got {
        if r == "ok" {
            found.push(format!("uid {NOBODY} could {op}"));
        }
    }
    Ok(found)
}

fn shim_state_root_only(ctx: &CtrCtx) -> Result<()> {
    both(|side| {
        let id = side.id(ctx, "");
        let mut cleanup = Cleanup::new();
        cleanup.ctr(ctx, &id);
        ctx.start_sleeper(side.run(ctx, &id), &id)?;
        let found = exposed(ctx, &id)?;
        ctx.kill_and_remove(&id)?;
        cleanup.done();
        ensure!(found.is_empty(), "{}", found.join("; "));
        Ok(())
    })
}

// ---- shim-hidden-from-container ----------------------------------------------

/// What a shell inside the container prints about pid 1 and the rest of
/// its view, each under a heading; `$B` runs busybox. (The exec's own
/// descriptors and environment are read by processes exec'd for that
/// alone: a shell's would show its pipes.)
const INSIDE: &str = r##"
echo "# init fds"; $B ls /proc/1/fd 2>&1 | $B sort -n | $B tr '\n' ' '; echo
echo "# init fd links"; for f in /proc/1/fd/*; do $B readlink $f >/dev/null 2>&1 && echo -n "readable "; done; echo
echo "# init env"; $B cat /proc/1/environ 2>&1 | $B tr '\0' '\n' | $B sort | $B tr '\n' ' '; echo
echo "# marker"; $B grep -l BARGE_IT_MARKER /proc/[0-9]*/environ 2>/dev/null | $B wc -l
echo "# shim processes"; $B cat /proc/[0-9]*/comm 2>/dev/null | $B grep -c '^containerd'
echo "# socket"; $B ls -d "$SOCKET" /run/containerd 2>&1 | $B sed 's/.*: //'
"##;

/// What the container shows: [`INSIDE`]'s sections, and `own fds` and
/// `own env` from an exec of `ls /proc/self/fd` (whose own listing is the
/// last) and of `cat /proc/self/environ`. `exec` runs a command in the
/// container with a new exec id; `busybox` is how busybox is called there.
fn look_inside(
    exec: impl Fn(&[&str]) -> Result<Output>,
    busybox: &str,
    socket: &Path,
) -> Result<BTreeMap<String, String>> {
    let socket = format!("SOCKET={}", socket.display());
    let bb = format!("B={busybox}");
    let mut seen = sections(&exec(&[
        busybox, "env", &socket, &bb, busybox, "sh", "-c", INSIDE,
    ])?)?;
    let fds = exec(&[busybox, "ls", "/proc/self/fd"])?.ok()?;
    seen.insert(
        "own fds".into(),
        fds.stdout.split_whitespace().collect::<Vec<_>>().join(" "),
    );
    let env = exec(&[busybox, "cat", "/proc/self/environ"])?.ok()?;
    let mut env: Vec<&str> = env.stdout.split('\0').filter(|v| !v.is_empty()).collect();
    env.sort();
    seen.insert("own env".into(), env.join(" "));
    Ok(seen)
}

/// The output of [`INSIDE`], by heading.
fn sections(out: &Output) -> Result<BTreeMap<String, String>> {
    ensure!(
        out.success(),
        "the shell in the container failed: {}",
        out.describe()
    );
    let mut map = BTreeMap::new();
    let mut key = None;
    for line in out.stdout.lines() {
        if let Some(k) = line.strip_prefix("# ") {
            key = Some(k.to_string());
            map.insert(k.to_string(), String::new());
        } else if let Some(k) = &key {
            let v = map.get_mut(k).expect("inserted above");
            if !v.is_empty() {
                v.push('\n');
            }
            v.push_str(line.trim_end());
        }
    }
    Ok(map)
}

/// The shim of a container carries the marker (from containerd's env),
/// so that its absence inside means something.
fn shim_has_marker(ctx: &CtrCtx) -> Result<()> {
    let shims = ctx.shims();
    ensure!(!shims.is_empty(), "no shim of {}", ctx.ns);
    for s in shims {
        let env = std::fs::read(format!("/proc/{}/environ", s.pid))?;
        ensure!(
            env.split(|b| *b == 0).any(|v| v == MARKER.as_bytes()),
            "the shim (pid {}) lacks {MARKER} in its environment",
            s.pid
        );
    }
    Ok(())
}

/// Checks the common part of what a container showed of itself.
fn check_inside(seen: &BTreeMap<String, String>, init_fds: Option<&str>) -> Result<()> {
    let get = |k: &str| seen.get(k).map(String::as_str).unwrap_or("<missing>");
    // ls lists its own descriptor of /proc/self/fd last.
    ensure!(
        get("own fds") == "0 1 2 3",
        "an exec holds fds {:?}",
        get("own fds")
    );
    if let Some(want) = init_fds {
        ensure!(
            get("init fds") == want,
            "the init holds fds {:?}",
            get("init fds")
        );
    }
    ensure!(
        !get("own env").contains("BARGE_IT_MARKER") && !get("init env").contains("BARGE_IT_MARKER"),
        "the shim's environment shows inside: {seen:?}"
    );
    ensure!(
        get("marker") == "0",
        "a process inside has the shim's environment: {seen:?}"
    );
    ensure!(
        get("shim processes") == "0",
        "a shim shows in the container's /proc: {seen:?}"
    );
    ensure!(
        get("socket") == "No such file or directory\nNo such file or directory",
        "the shim's socket dir shows inside: {:?}",
        get("socket")
    );
    Ok(())
}

fn shim_hidden_from_container(ctx: &CtrCtx) -> Result<()> {
    both(|side| {
        let id = side.id(ctx, "");
        let mut cleanup = Cleanup::new();
        cleanup.ctr(ctx, &id);
        let socket = shim_socket(&ctx.cd.address(), &ctx.ns, &id);
        let run = side
            .run(ctx, &id)
            .flags(["--env", "SPEC_ENV=from-the-spec"]);
        ctx.start_sleeper(run, &id)?;
        if side == Side::Barge {
            shim_has_marker(ctx)?;
        }
        let n = Cell::new(0);
        let exec = |args: &[&str]| {
            n.set(n.get() + 1);
            let exec_id = side.id(ctx, &format!("exec{}", n.get()));
            ctx.ctr()
                .args(["tasks", "exec", "--exec-id", &exec_id, &id])
                .args(args)
                .run()
        };
        let seen = look_inside(exec, "busybox", &socket);
        ctx.kill_and_remove(&id)?;
        let seen = seen?;
        cleanup.done();
        check_inside(&seen, Some("0 1 2"))?;
        ensure!(
            seen["init env"].contains("SPEC_ENV=from-the-spec"),
            "the init lacks the spec's env: {seen:?}"
        );
        Ok(seen)
    })
}

/// The Wasm init is a fork of the shim that never execs: from inside, an
/// exec'd busybox must see none of the shim's socket, processes,
/// descriptors or environment (the init is not dumpable: its fd links and
/// environ are closed to the container), and on the host the init holds
/// no descriptor of a path, nor the shim's ttrpc socket.
fn wasm_shim_hidden(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let mut cleanup = Cleanup::new();
    cleanup.ctr(ctx, &id);
    crate::wasm_cases::hello(ctx, &id)?
        .detach()
        .flags(["--env", "SPEC_ENV=from-the-spec"])
        .args(["/http.wasm"])
        .ok()?;
    let init = ctx.wait_status(&id, "RUNNING")?;
    shim_has_marker(ctx)?;
    let root = PathBuf::from(format!("/proc/{}/root", init.pid));
    std::fs::create_dir_all(root.join("native"))?;
    std::fs::copy("/bin/busybox", root.join("native/busybox"))?;
    let socket = shim_socket(&ctx.cd.address(), &ctx.ns, &id);
    let n = Cell::new(0);
    let exec = |args: &[&str]| {
        n.set(n.get() + 1);
        let exec_id = ctx.id(&format!("exec{}", n.get()));
        ctx.ctr()
            .args(["tasks", "exec", "--exec-id", &exec_id, &id])
            .args(args)
            .run()
    };
    let seen = look_inside(exec, "/native/busybox", &socket);
    let host = init_fds_on_host(ctx, init.pid);
    ctx.kill_and_remove(&id)?;
    cleanup.done();
    let seen = seen?;
    check_inside(&seen, None)?;
    ensure!(
        seen["init fd links"].is_empty(),
        "the Wasm init's fd links are readable from inside: {seen:?}"
    );
    ensure!(
        seen["init env"].contains("Permission denied"),
        "the Wasm init's environ is readable from inside: {:?}",
        seen["init env"]
    );
    host
}

/// The Wasm init's descriptors beyond 0, 1 and 2, seen from the host:
/// none may name a file (the log fifo, a cgroup file, the state dir), and
/// none may be the shim's listening socket or a connection of containerd's.
fn init_fds_on_host(ctx: &CtrCtx, pid: u32) -> Result<()> {
    let links = fd_links(pid)?;
    let shim = ctx.shims().first().map(|s| s.pid).context("no shim")?;
    let shim_links: BTreeMap<String, String> =
        fd_links(shim)?.into_iter().map(|(fd, l)| (l, fd)).collect();
    let named_sockets = std::fs::read_to_string("/proc/net/unix")?
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8).then(|| format!("socket:[{}]", f[6]))
        })
        .collect::<Vec<_>>();
    let mut bad = Vec::new();
    for (fd, link) in &links {
        if fd.parse::<u32>().is_ok_and(|n| n <= 2) {
            continue;
        }
        let file = link.starts_with('/') && !link.starts_with("/memfd:");
        if file || named_sockets.contains(link) {
            bad.push(format!(
                "fd {fd} -> {link}{}",
                shim_links
                    .get(link)
                    .map(|s| format!(" (the shim's fd {s})"))
                    .unwrap_or_default()
            ));
        }
    }
    ensure!(bad.is_empty(), "the Wasm init (pid {pid}) holds {bad:?}");
    Ok(())
}

fn fd_links(pid: u32) -> Result<Vec<(String, String)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        if let Ok(l) = std::fs::read_link(e.path()) {
            v.push((
                e.file_name().to_string_lossy().into_owned(),
                l.display().to_string(),
            ));
        }
    }
    Ok(v)
}

// ---- seccomp (Docker) ----------------------------------------------------------

/// What the probe tries in the init and in an exec; the exec also attaches
/// to the init.
const SECCOMP_OPS: &[&str] = &[
    "unshare-user",
    "unshare-mnt",
    "add_key",
    "keyctl",
    "mount",
    "mkdir=/tmp/barge-probe-dir",
    "getpgid",
];

/// Runs the probe as the container's init (its answers kept in a file)
/// and in an exec, under `side` with `flags`; both answers, by operation.
fn seccomp_answers(
    ctx: &DockerCtx,
    case: &str,
    side: Side,
    flags: &[&str],
) -> Result<BTreeMap<String, String>> {
    let probe = probe(&ctx.d.dirs.run)?;
    let mount = format!("{}:/probe:ro", probe.display());
    let mut all_flags = vec!["-v", &mount];
    all_flags.extend_from_slice(flags);
    let script = format!(
        "/probe {} > /tmp/init-answers 2>&1; exec sleep 1000",
        SECCOMP_OPS.join(" ")
    );
    with_container(
        ctx,
        case,
        side,
        &all_flags,
        &["sh", "-c", &script],
        |id, _pid| {
            let exec = |args: &[&str]| {
                ctx.docker()
                    .arg("exec")
                    .arg(id)
                    .args(args)
                    .timeout(Duration::from_secs(30))
                    .run()
            };
            // The init's answers are complete once it runs sleep.
            poll("the init's probe", Duration::from_secs(10), || {
                let out = exec(&["cat", "/proc/1/cmdline"])?;
                Ok(out.stdout.starts_with("sleep").then_some(()))
            })?;
            let mut got = BTreeMap::new();
            for (op, r) in answers(&exec(&["cat", "/tmp/init-answers"])?)? {
                got.insert(format!("init {op}"), r);
            }
            let mut ops: Vec<&str> = SECCOMP_OPS.to_vec();
            ops.push("ptrace=1");
            let mut args = vec!["/probe"];
            args.extend(ops);
            for (op, r) in answers(&exec(&args)?)? {
                got.insert(format!("exec {op}"), r);
            }
            Ok(got)
        },
    )
}

/// The same answers under runc-v2 and barge, which must hold `want`
/// (operation → answer, for the init and the exec alike; ptrace only from
/// the exec).
fn seccomp_compare(
    ctx: &DockerCtx,
    case: &str,
    flags: &[&str],
    want: &[(&str, &str)],
) -> Result<()> {
    both(|side| {
        let got = seccomp_answers(ctx, case, side, flags)?;
        for (op, answer) in want {
            for at in ["init", "exec"] {
                if at == "init" && op.starts_with("ptrace") {
                    continue;
                }
                let key = format!("{at} {op}");
                let seen = got.get(&key).map(String::as_str);
                ensure!(
                    seen == Some(answer),
                    "{key}: {seen:?}, expected {answer:?} (all: {got:?})"
                );
            }
        }
        if side == Side::Barge {
            println!("        {case}: {got:?}");
        }
        Ok(got)
    })
}

/// Docker's default profile: namespaces, keyrings and mounts are refused
/// (EPERM), and ptrace of the init from an exec goes through (the default
/// profile allows ptrace on kernels from 4.8).
fn seccomp_default(ctx: &DockerCtx) -> Result<()> {
    seccomp_compare(
        ctx,
        "seccomp-default",
        &[],
        &[
            ("unshare-user", "EPERM"),
            ("unshare-mnt", "EPERM"),
            ("add_key", "EPERM"),
            ("keyctl", "EPERM"),
            ("mount", "EPERM"),
            ("mkdir=/tmp/barge-probe-dir", "ok"),
            ("getpgid", "ok"),
            ("ptrace=1", "ok"),
        ],
    )
}

/// Without a filter the calls reach the kernel: a user namespace and the
/// keyring work; a mount namespace and a mount need CAP_SYS_ADMIN.
fn seccomp_unconfined(ctx: &DockerCtx) -> Result<()> {
    seccomp_compare(
        ctx,
        "seccomp-unconfined",
        &["--security-opt", "seccomp=unconfined"],
        &[
            ("unshare-user", "ok"),
            ("unshare-mnt", "EPERM"),
            ("add_key", "ok"),
            ("keyctl", "ok"),
            ("mount", "EPERM"),
            ("mkdir=/tmp/barge-probe-dir", "ok"),
            ("getpgid", "ok"),
            ("ptrace=1", "ok"),
        ],
    )
}

/// Writes a seccomp profile that allows everything but the syscalls of
/// `refused`, each group refused with its errno, into the dockerd's run
/// dir as `file`; the `--security-opt` value that names it.
fn seccomp_profile(ctx: &DockerCtx, file: &str, refused: &[(&[&str], i32)]) -> Result<String> {
    let syscalls: Vec<serde_json::Value> = refused
        .iter()
        .map(|(names, errno)| json!({ "names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno }))
        .collect();
    let doc = json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": syscalls });
    let profile = ctx.d.dirs.run.join(file);
    std::fs::write(&profile, serde_json::to_vec_pretty(&doc)?)?;
    Ok(format!("seccomp={}", profile.display()))
}

/// A profile of our own: everything allowed but mkdir (and mkdirat),
/// refused with EOPNOTSUPP, and getpgid, refused with ENOMSG.
fn seccomp_custom(ctx: &DockerCtx) -> Result<()> {
    let opt = seccomp_profile(
        ctx,
        "seccomp-custom.json",
        &[
            (&["mkdir", "mkdirat"], libc::EOPNOTSUPP),
            (&["getpgid"], libc::ENOMSG),
        ],
    )?;
    seccomp_compare(
        ctx,
        "seccomp-custom",
        &["--security-opt", &opt],
        &[
            ("unshare-user", "ok"),
            ("mkdir=/tmp/barge-probe-dir", "EOPNOTSUPP"),
            ("getpgid", "ENOMSG"),
            ("ptrace=1", "ok"),
        ],
    )
}

/// A profile that refuses getppid, which runc 1.1.5's own init calls
/// (without no-new-privileges) and then dies of: a create that fails inside
/// the runtime must leave nothing behind, under runc-v2 and barge (the leak
/// check after the case looks at the runtime's state dirs and the
/// container's cgroups). Whether the container runs depends on the runtime
/// (libcontainer does not call getppid); a failure must reach the client.
fn seccomp_runtime_crash(ctx: &DockerCtx) -> Result<()> {
    use crate::docker_exec_cases::{cleanup, name, runtime};
    use crate::tty_cases::Side;
    let opt = seccomp_profile(ctx, "seccomp-getppid.json", &[(&["getppid"], libc::EPERM)])?;
    for side in [Side::Runc, Side::Barge] {
        let name = name("seccomp-runtime-crash", side);
        let guard = cleanup(ctx, &name);
        let out = ctx
            .run_with(runtime(ctx, side))
            .args(["--rm", "--name", name.as_str(), "--security-opt", &opt])
            .args(["busybox", "echo", "ran"])
            .run()?;
        ensure!(
            (out.success() && out.stdout == "ran\n")
                || (!out.success() && !out.stderr.trim().is_empty()),
            "{side:?}: {}",
            out.describe()
        );
        println!(
            "        seccomp-runtime-crash: {side:?} {}",
            if out.success() {
                "ran"
            } else {
                "failed, as the client was told"
            }
        );
        drop(guard);
    }
    Ok(())
}

// ---- user namespaces (CRI) -------------------------------------------------------

/// The host ids of the pod's user namespace, as the kubelet picks them: a
/// multiple of 65536.
const USERNS_HOST_ID: u32 = 65536 * 40;
const USERNS_LENGTH: u32 = 65536;

/// What the sandbox of a user namespaced pod showed on the host.
#[derive(Debug, PartialEq, Eq)]
struct UsernsSeen {
    uid_map: String,
    gid_map: String,
    /// The host uid and gid of the sandbox's process.
    host_ids: (u32, u32),
}

/// The pod's sandbox (the pause container) in a user namespace of mode POD
/// with uid/gid mappings, under runc-v2 and barge: its maps and host ids.
/// (Its containers cannot run here under either: containerd makes their
/// bind mounts idmapped, which runc 1.1.5 does not do, and libcontainer 0.7
/// refuses.)
fn userns_pod(cri: &CriContainerd) -> Result<()> {
    let map = format!("0 {USERNS_HOST_ID} {USERNS_LENGTH}");
    let mapped = USERNS_HOST_ID..USERNS_HOST_ID + USERNS_LENGTH;
    let runc = userns_once(cri, HANDLER_RUNC);
    let barge = userns_once(cri, HANDLER_BARGE);
    let runc = runc.context("runc-v2 (reference)")?;
    // The pause process runs as its image's user, mapped into the range.
    ensure!(
        runc.uid_map == map
            && runc.gid_map == map
            && mapped.contains(&runc.host_ids.0)
            && mapped.contains(&runc.host_ids.1),
        "runc-v2 (reference) showed {runc:?}"
    );
    let barge = barge.context("barge")?;
    ensure!(barge == runc, "barge showed {barge:?}, runc-v2 {runc:?}");
    Ok(())
}

fn userns_once(cri: &CriContainerd, handler: &str) -> Result<UsernsSeen> {
    let name = format!("userns-{handler}");
    let mapping =
        json!([{ "host_id": USERNS_HOST_ID, "container_id": 0, "length": USERNS_LENGTH }]);
    // NamespaceMode POD is 0.
    let userns = json!({ "mode": 0, "uids": mapping, "gids": mapping });
    let pod_config = cri.pod_config(&name, |v| {
        v["linux"]["security_context"]["namespace_options"]["userns_options"] = userns;
    })?;
    let pod = cri.run_pod(handler, &pod_config)?;
    let guard = PodGuard {
        cri,
        id: pod.clone(),
    };
    let info = cri.inspect(&pod, true)?;
    let pid = info["info"]["pid"]
        .as_u64()
        .with_context(|| format!("no pid in crictl inspectp: {info}"))?;
    let read = |f: &str| -> Result<String> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/{f}"))?;
        Ok(s.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let meta = std::fs::metadata(format!("/proc/{pid}"))?;
    let seen = UsernsSeen {
        uid_map: read("uid_map")?,
        gid_map: read("gid_map")?,
        host_ids: (meta.uid(), meta.gid()),
    };
    cri.remove_pod(&pod)?;
    drop(guard);
    Ok(seen)
}

// ---- userns-remap (Docker) -------------------------------------------------------

/// The Docker version whose userns-remap dockerd (`d<version>u`) runs
/// `userns-remap`.
pub const USERNS_REMAP_DOCKER: &str = "28";

/// Docker's `userns-remap: default` on a dockerd of its own (instance
/// `d28u`, on containerd `containerd_version`), for each Linux executor
/// pass: `d28u/<executor>/userns-remap`.
pub fn run_docker_userns_remap(
    r: &mut Runner,
    shim: &Path,
    executors: &[Executor],
    containerd_version: &str,
) {
    let name = format!("d{USERNS_REMAP_DOCKER}u");
    let passes: Vec<Executor> = executors
        .iter()
        .copied()
        .filter(|e| *e != Executor::Wasm)
        .collect();
    let names: Vec<String> = passes
        .iter()
        .map(|e| format!("{name}/{}/userns-remap", e.name()))
        .collect();
    if !r.any_selected(names.iter().map(String::as_str)) || runner::interrupted() {
        return;
    }
    let started = Containerd::start(containerd_version, &format!("{name}c"), shim).and_then(|cd| {
        Dockerd::start_with(
            USERNS_REMAP_DOCKER,
            &name,
            cd,
            json!({ "userns-remap": "default" }),
        )
    });
    let mut d = match started {
        Ok(d) => d,
        Err(e) => {
            r.fail(&format!("{name}/setup"), format!("{e:#}"));
            return;
        }
    };
    // A remapping dockerd keeps its containers in `<namespace>-<uid>.<gid>`:
    // the leak checks look there.
    match (first_id("/etc/subuid"), first_id("/etc/subgid")) {
        (Ok(uid), Ok(gid)) => d.namespace = format!("{}-{uid}.{gid}", d.namespace),
        (Err(e), _) | (_, Err(e)) => {
            r.fail(&format!("{name}/setup"), format!("{e:#}"));
            return;
        }
    }
    for (executor, case) in passes.into_iter().zip(&names) {
        let ctx = match DockerCtx::new(&d, executor) {
            Ok(ctx) => ctx,
            Err(e) => {
                r.fail(case, format!("{e:#}"));
                continue;
            }
        };
        r.run(
            case,
            Duration::from_secs(60),
            || {
                ctx.begin();
                userns_remap(&ctx)
            },
            || ctx.check_leaks(),
        );
    }
}

/// The first id of `dockremap`'s range in `/etc/subuid` or `/etc/subgid`.
fn first_id(file: &str) -> Result<u32> {
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .find_map(|l| l.strip_prefix("dockremap:"))
        .and_then(|r| r.split(':').next()?.parse().ok())
        .with_context(|| format!("no dockremap range in {file}"))
}

/// What a container under userns-remap showed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RemapSeen {
    /// The init's uid_map and gid_map, read on the host.
    maps: String,
    /// The host uid and gid of the init.
    host_ids: (u32, u32),
    /// The host owner of a file the init made in its rootfs.
    file_owner: (u32, u32),
    /// An exec's `/proc/self/uid_map` and `id`, or why it was refused.
    exec: std::result::Result<String, String>,
}

/// dockerd maps the container's root to the first id of `dockremap`'s
/// subordinate ranges: the same maps, host ids and file owners under
/// runc-v2 and barge, and an exec in the same user namespace. The native
/// executor refuses execs into a container with a user namespace
/// (libcontainer 0.7 would not join it): that refusal, naming the user
/// namespace, is the one other answer allowed; an exec outside the
/// container's user namespace never is.
fn userns_remap(ctx: &DockerCtx) -> Result<()> {
    let (uid, gid) = (first_id("/etc/subuid")?, first_id("/etc/subgid")?);
    let look = |side: Side| -> Result<RemapSeen> {
        with_container(
            ctx,
            "userns-remap",
            side,
            &[],
            &["sh", "-c", "touch /tmp/remap-file; exec sleep 1000"],
            |id, pid| {
                let file = PathBuf::from(format!("/proc/{pid}/root/tmp/remap-file"));
                poll("the container's file", Duration::from_secs(10), || {
                    Ok(file.exists().then_some(()))
                })?;
                let f = std::fs::metadata(&file)?;
                let p = std::fs::metadata(format!("/proc/{pid}"))?;
                let mut maps = String::new();
                for m in ["uid_map", "gid_map"] {
                    maps += &std::fs::read_to_string(format!("/proc/{pid}/{m}"))?;
                }
                let out = ctx
                    .docker()
                    .args(["exec", id, "sh", "-c", "cat /proc/self/uid_map; id"])
                    .timeout(Duration::from_secs(30))
                    .run()?;
                let exec = if out.success() {
                    Ok(out.stdout.split_whitespace().collect::<Vec<_>>().join(" "))
                } else {
                    Err(out.all().trim().to_string())
                };
                Ok(RemapSeen {
                    maps: maps.split_whitespace().collect::<Vec<_>>().join(" "),
                    host_ids: (p.uid(), p.gid()),
                    file_owner: (f.uid(), f.gid()),
                    exec,
                })
            },
        )
    };
    let runc = look(Side::Runc).context("runc-v2 (reference)")?;
    ensure!(
        runc.host_ids == (uid, gid)
            && runc.file_owner == (uid, gid)
            && runc.maps.starts_with(&format!("0 {uid} "))
            && runc
                .exec
                .as_ref()
                .is_ok_and(|e| e.starts_with(&format!("0 {uid} "))),
        "runc-v2 (reference): root in the container is not dockremap's {uid}:{gid}: {runc:?}"
    );
    let barge = look(Side::Barge).context("barge")?;
    println!("        userns-remap: {barge:?}");
    let refused = ctx.executor == Executor::Native
        && barge
            .exec
            .as_ref()
            .is_err_and(|e| e.contains("user namespace"));
    let as_runc = RemapSeen {
        exec: runc.exec.clone(),
        ..barge.clone()
    };
    ensure!(
        as_runc == runc && (barge.exec == runc.exec || refused),
        "barge showed {barge:?}, runc-v2 {runc:?}"
    );
    Ok(())
}

/// Removes a pod on drop.
struct PodGuard<'a> {
    cri: &'a CriContainerd,
    id: String,
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        let _ = self.cri.crictl(&["rmp", "-f", &self.id]).run();
    }
}

// ---- info-idmap ------------------------------------------------------------------

/// `-info` claims idmapped mounts (`linux.mountExtensions.idmap.enabled`)
/// only where the kernel makes one: a detached clone of a tmpfs mount
/// given a user namespace's mapping with `mount_setattr(MOUNT_ATTR_IDMAP)`.
fn info_idmap(ctx: &CtrCtx) -> Result<()> {
    let probe = idmap_probe(ctx).context("probe idmapped mounts")?;
    let claim = |f: &Option<Value>| {
        f.as_ref()
            .and_then(|f| f["linux"]["mountExtensions"]["idmap"]["enabled"].as_bool())
            .unwrap_or(false)
    };
    let (barge, runc) = crate::info_cases::features(ctx)?;
    let (barge, runc) = (claim(&barge), runc.as_ref().map(claim));
    println!(
        "        info-idmap: the kernel idmaps a tmpfs mount: {probe}; barge's -info claims idmap: {barge}; runc-v2's: {runc:?}"
    );
    ensure!(
        !barge || probe,
        "-info claims idmapped mounts, but the kernel makes none here"
    );
    ensure!(
        runc != Some(true) || probe,
        "runc-v2 (reference) claims idmapped mounts, but the kernel makes none here"
    );
    if ctx.executor == Executor::Native {
        // libcontainer 0.7 refuses idmapped mounts ("idmapped mounts are not
        // supported"): barge must not claim them, whatever the kernel does.
        ensure!(!barge, "-info claims idmapped mounts for libcontainer");
    }
    Ok(())
}

/// Whether this kernel idmaps a mount: a user namespace with a mapping
/// (`unshare --user`, maps written from here), a tmpfs in the pass's work dir, and
/// `mount_setattr(2)` on a detached clone of it (nothing stays mounted).
fn idmap_probe(ctx: &CtrCtx) -> Result<bool> {
    let dir = ctx.work.join("idmap-probe");
    std::fs::create_dir_all(&dir)?;
    Cmd::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "barge-idmap-probe"])
        .arg(&dir)
        .ok()?;
    let result = (|| {
        let ns = Cmd::new("unshare")
            .args(["--user", "sleep", "30"])
            .spawn()?;
        let pid = ns.pid();
        let r = (|| {
            // unshare makes the namespace, then execs sleep; its maps are
            // written from here (as newuidmap would).
            poll("unshare to exec sleep", Duration::from_secs(5), || {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
                Ok((comm.trim() == "sleep").then_some(()))
            })?;
            for map in ["uid_map", "gid_map"] {
                std::fs::write(format!("/proc/{pid}/{map}"), "0 100000 65536\n")
                    .with_context(|| format!("write {map} of pid {pid}"))?;
            }
            mount_setattr_idmap(&dir, &format!("/proc/{pid}/ns/user"))
        })();
        sys::signal(pid, libc::SIGKILL);
        let _ = ns.wait();
        r
    })();
    let _ = Cmd::new("umount").arg(&dir).run();
    let _ = std::fs::remove_dir(&dir);
    result
}

/// `open_tree(OPEN_TREE_CLONE)` of `dir`, then `mount_setattr` with
/// MOUNT_ATTR_IDMAP and the user namespace at `userns`: whether the kernel
/// took it (EINVAL or EPERM: not for this file system or kernel).
fn mount_setattr_idmap(dir: &Path, userns: &str) -> Result<bool> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let ns = std::fs::File::open(userns).with_context(|| format!("open {userns}"))?;
    let path = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: open_tree takes a valid C string and flags; it returns a new
    // descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    ensure!(
        fd >= 0,
        "open_tree {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    let empty = CString::new("")?;
    // SAFETY: the descriptor is open, the path is an empty C string with
    // AT_EMPTY_PATH, and attr is a mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::EPERM | libc::ENOSYS | libc::EOPNOTSUPP) => Ok(false),
        _ => Err(e).context("mount_setattr"),
    }
}
