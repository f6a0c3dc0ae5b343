//! Escapes through `/proc/<pid>/exe` (runc's CVE-2019-5736): no process of
//! a container, and no process a container can see, leads to a writable
//! shim binary.
//!
//! Every process the shim server forks starts as a copy of the server, so
//! its exe link is the shim's binary until it execs, and a Wasm init never
//! does. The server runs from a read-only clone of its binary's mount that
//! is attached nowhere: the link shows `/`, and an open for writing fails
//! with EROFS. The classic attack is run against the exec path: the
//! container's `/evil` starts with `#!/proc/self/exe`, so an exec of it runs
//! the pre-exec image (the shim's binary) inside the container, and another
//! process of the container opens that binary through `/proc/<pid>/exe`, and
//! then through the descriptor it holds, for writing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::containerd::shim_binary;
use crate::ctr::CtrCtx;
use crate::ctr_cases::CtrCase;
use crate::sys;

/// The ctr cases of the busybox passes.
pub fn cases() -> Vec<CtrCase> {
    CtrCase::list([
        (
            "exe-cve-2019-5736",
            cve_2019_5736 as fn(&CtrCtx) -> Result<()>,
        ),
        ("exe-shim-read-only", shim_read_only),
    ])
}

/// The shim binary's identity and contents, to compare after an attack.
pub struct Binary {
    dev: u64,
    ino: u64,
    sha256: String,
    path: std::path::PathBuf,
}

impl Binary {
    pub fn of(path: &Path) -> Result<Binary> {
        use sha2::{Digest, Sha256};
        let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        Ok(Binary {
            dev: meta.dev(),
            ino: meta.ino(),
            sha256: format!("{:x}", Sha256::digest(&bytes)),
            path: path.to_path_buf(),
        })
    }

    pub fn shim() -> Result<Binary> {
        Binary::of(&shim_binary()?)
    }

    /// Whether `/proc/<pid>/exe` is this binary.
    pub fn runs_in(&self, pid: u32) -> bool {
        std::fs::metadata(format!("/proc/{pid}/exe"))
            .map(|m| m.dev() == self.dev && m.ino() == self.ino)
            .unwrap_or(false)
    }

    /// The binary is as it was.
    pub fn unchanged(&self) -> Result<()> {
        let now = Binary::of(&self.path)?;
        ensure!(
            now.sha256 == self.sha256 && now.ino == self.ino,
            "{} changed: sha256 {} -> {}",
            self.path.display(),
            self.sha256,
            now.sha256
        );
        Ok(())
    }
}

/// A process that runs the shim's binary does so from a read-only mount
/// that no path shows.
pub fn runs_read_only(pid: u32) -> Result<()> {
    let link = format!("/proc/{pid}/exe");
    let shown = std::fs::read_link(&link).with_context(|| format!("readlink {link}"))?;
    let mut st: libc::statvfs = unsafe_zeroed_statvfs();
    let c = std::ffi::CString::new(link.clone())?;
    // SAFETY: `c` is a NUL-terminated path and `st` a statvfs to fill.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    ensure!(
        rc == 0,
        "statvfs {link}: {}",
        std::io::Error::last_os_error()
    );
    ensure!(
        st.f_flag & libc::ST_RDONLY != 0,
        "pid {pid} runs the shim binary from a writable mount ({})",
        shown.display()
    );
    ensure!(
        shown == Path::new("/"),
        "pid {pid}'s exe link shows a path: {}",
        shown.display()
    );
    Ok(())
}

fn unsafe_zeroed_statvfs() -> libc::statvfs {
    // SAFETY: statvfs is plain old data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Every process of `pids` that runs the shim's binary runs it read-only;
/// how many did.
pub fn shim_images_read_only(shim: &Binary, pids: &[u32]) -> Result<usize> {
    let mut n = 0;
    for &pid in pids {
        if shim.runs_in(pid) {
            runs_read_only(pid)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The attacker, run in the container by `sh -c` with the victim's pid as
/// `$1`: it holds the victim's exe open, then tries to open it for writing
/// directly and through the descriptor it holds, truncating (`>`) and
/// appending (`>>`). Each attempt prints `<name>: ok` or the shell's error.
pub const ATTACKER: &str = r#"p=$1
try() { if r=$( (eval "$2") 2>&1 ); then echo "$1: ok"; else echo "$1: $r"; fi; }
echo "link: $(readlink /proc/$p/exe 2>&1)"
if command exec 3</proc/$p/exe; then echo "held: ok"; else echo "held: failed"; fi
try direct-trunc ": > /proc/$p/exe"
try direct-append ": >> /proc/$p/exe"
try fd-trunc ": > /proc/self/fd/3"
try fd-append ": >> /proc/self/fd/3"
"#;

/// Parses the attacker's lines into (attempt, result).
pub fn attempts(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(a, r)| (a.to_string(), r.to_string()))
        .collect()
}

/// No write attempt succeeded. With the victim's exe `held` open, the
/// truncating opens fail with EROFS, which holds even when nothing executes
/// the binary (ETXTBSY does not); the appending ones may meet ETXTBSY
/// first. Without it (a non-dumpable victim), every open is refused.
pub fn writes_refused(out: &str, held: bool) -> Result<()> {
    let tries = attempts(out);
    let got = |name: &str| {
        tries
            .iter()
            .find(|(a, _)| a == name)
            .map(|(_, r)| r.as_str())
            .with_context(|| format!("the attacker did not try {name}: {out}"))
    };
    ensure!(
        (got("held")? == "ok") == held,
        "the attacker was {}able to open the victim's exe: {out}",
        if held { "not " } else { "" }
    );
    for name in ["direct-trunc", "direct-append", "fd-trunc", "fd-append"] {
        let result = got(name)?;
        ensure!(
            result != "ok",
            "{name} opened the shim's binary for writing: {out}"
        );
        let want = match (held, name.ends_with("trunc"), name.starts_with("direct")) {
            (true, true, _) => Some("Read-only file system"),
            (false, _, true) => Some("Permission denied"),
            _ => None,
        };
        if let Some(want) = want {
            ensure!(result.contains(want), "{name}: expected `{want}`: {out}");
        }
    }
    Ok(())
}

/// `ctr task exec` of `args` in `id` whose stdin stays open (a pipe we
/// hold) until the child is killed.
fn exec_held(ctx: &CtrCtx, id: &str, exec_id: &str, args: &[&str]) -> Result<Held> {
    let mut cmd = ctx
        .ctr()
        .args(["tasks", "exec", "--exec-id", exec_id, id])
        .args(args.iter().copied())
        .command();
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Ok(Held(Some(cmd.spawn().context("spawn ctr task exec")?)))
}

/// A held exec's ctr; killed and waited for on drop, whatever state it is
/// in.
struct Held(Option<Child>);

impl Held {
    /// Its stderr once it has ended by itself within `within`, or `None`
    /// while it still runs.
    fn ended(&mut self, within: Duration) -> Result<Option<String>> {
        let end = std::time::Instant::now() + within;
        while std::time::Instant::now() < end {
            let child = self.0.as_mut().context("already collected")?;
            if child.try_wait()?.is_some() {
                let out = self
                    .0
                    .take()
                    .context("already collected")?
                    .wait_with_output()?;
                return Ok(Some(String::from_utf8_lossy(&out.stderr).into_owned()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(None)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn evil_process(id_marker: &str) -> Option<u32> {
    sys::processes()
        .into_iter()
        .find(|p| {
            p.argv.first().is_some_and(|a| a == "/proc/self/exe")
                && p.argv.iter().any(|a| a == id_marker)
        })
        .map(|p| p.pid)
}

/// What an exec of `#!/proc/self/exe` came to.
#[derive(Debug, PartialEq)]
enum Evil {
    /// The exec failed, for the reason given (see [`reason`]).
    Refused(String),
    /// It ran the runtime's pre-exec image, and the attack on it failed.
    RanAndHeld,
}

/// The errno in what ctr printed for a failed exec (runc-v2 and barge
/// word the rest differently), or all of it.
fn reason(stderr: &str) -> String {
    let said = stderr.to_lowercase();
    [
        "no such file or directory",
        "permission denied",
        "exec format error",
    ]
    .into_iter()
    .find(|e| said.contains(e))
    .map_or_else(|| said.trim().to_string(), str::to_string)
}

/// CVE-2019-5736 against the exec path, under barge and then under
/// runc-v2 on the same containerd: `ctr task exec` of a script whose
/// interpreter is `/proc/self/exe`. Where the kernel runs the pre-exec
/// image (the runtime's binary) as the exec, another process of the
/// container holds its exe and tries to write it. Where the kernel
/// refuses (6.x does not follow the link to a binary outside the
/// container's mount namespace: ENOENT), both runtimes must say so alike.
fn cve_2019_5736(ctx: &CtrCtx) -> Result<()> {
    let shim = Binary::shim()?;
    let runc = Binary::of(&which("runc")?)?;
    let mut seen = Vec::new();
    for under_runc in [false, true] {
        let id = ctx.id(if under_runc { "runc" } else { "" });
        let run = ctx.run(&id);
        let run = if under_runc { run.runc() } else { run };
        let init = ctx.start_sleeper(run, &id)?;
        let outcome = (|| -> Result<Evil> {
            // The marker names the script so that the victim can be found.
            let evil = format!("/evil-{}", std::process::id());
            let evil_host = format!("/proc/{}/root{evil}", init.pid);
            std::fs::write(&evil_host, "#!/proc/self/exe -namespace\n")?;
            std::fs::set_permissions(&evil_host, std::fs::Permissions::from_mode(0o755))?;
            let mut held = exec_held(ctx, &id, "evil", &[&evil, "start"])?;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let victim = loop {
                if let Some(victim) = evil_process(&evil) {
                    break victim;
                }
                if let Some(stderr) = held.ended(Duration::from_millis(100))? {
                    return Ok(Evil::Refused(reason(&stderr)));
                }
                ensure!(
                    std::time::Instant::now() < deadline,
                    "the exec of {evil} neither ran nor failed"
                );
            };
            ensure!(
                under_runc || shim.runs_in(victim),
                "the exec of /evil (pid {victim}) does not run the shim's binary"
            );
            if !under_runc {
                runs_read_only(victim)?;
            }
            let out = ctx
                .ctr()
                .args(["tasks", "exec", "--exec-id", "attacker", &id])
                .args(["sh", "-c", ATTACKER, "sh"])
                .arg(ns_pid(victim)?.to_string())
                .ok()?;
            writes_refused(&out.stdout, true)?;
            sys::signal(victim, libc::SIGKILL);
            Ok(Evil::RanAndHeld)
        })();
        let removed = ctx.kill_and_remove(&id);
        seen.push(outcome?);
        removed?;
    }
    ensure!(
        seen[0] == seen[1],
        "barge: {:?}, runc-v2: {:?}",
        seen[0],
        seen[1]
    );
    shim.unchanged()?;
    runc.unchanged()
}

/// The server and every process of a native container, of an exec and of
/// a pre-exec fork: whatever runs the shim's binary runs it read-only.
fn shim_read_only(ctx: &CtrCtx) -> Result<()> {
    let shim = Binary::shim()?;
    let id = ctx.id("");
    let init = ctx.start_sleeper(ctx.run(&id), &id)?;
    let outcome = (|| -> Result<()> {
        let servers = ctx.shims();
        ensure!(servers.len() == 1, "expected one shim: {servers:?}");
        let server = servers[0].pid;
        ensure!(
            shim.runs_in(server),
            "the shim server does not run the shim's binary"
        );
        runs_read_only(server)?;
        // Its command line is containerd's flags, without an action.
        let argv = &servers[0].argv;
        ensure!(
            argv.iter().all(|a| a != "start") && servers[0].has_flag("-id", &id),
            "the server's command line: {argv:?}"
        );
        // Its name in ps is the binary's, not a descriptor number.
        let comm = std::fs::read_to_string(format!("/proc/{server}/comm"))?;
        ensure!(
            comm.trim() == "containerd-shim",
            "the server's comm is {comm:?}"
        );
        // A native init has exec'd the container's program.
        ensure!(
            !shim.runs_in(init.pid),
            "the container's init runs the shim's binary"
        );
        // From inside: the init's exe is the container's busybox, and the
        // exec's own is too; neither is the shim's.
        let out = ctx
            .ctr()
            .args(["tasks", "exec", "--exec-id", "look", &id])
            .args(["sh", "-c", "readlink /proc/1/exe; readlink /proc/self/exe"])
            .ok()?;
        ensure!(
            out.stdout
                .lines()
                .all(|l| l.starts_with("/bin/") || l.starts_with("/usr/")),
            "exe links inside the container: {}",
            out.describe()
        );
        Ok(())
    })();
    let removed = ctx.kill_and_remove(&id);
    outcome?;
    removed?;
    shim.unchanged()
}

/// The pid of a host process as its own pid namespace numbers it.
pub fn ns_pid(pid: u32) -> Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .context("no NSpid line")
}

/// A program on PATH, resolved to its file.
pub fn which(name: &str) -> Result<std::path::PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p.canonicalize()?);
        }
    }
    bail!("{name} not on PATH")
}
