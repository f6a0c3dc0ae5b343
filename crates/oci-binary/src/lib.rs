//! An executor that drives an OCI runtime binary (runc, crun, youki)
//! through its command line, as containerd-shim-runc-v2 drives runc.
//!
//! Every call runs the binary synchronously and waits only for that binary;
//! the container's init is reparented to the shim (a child subreaper) when
//! `<runtime> create` exits, and the shim core reaps it.
//!
//! The runtime's state lives under `--root`: the `runtime_root` option, or
//! `/run/containerd/barge/<runtime file name>`, then one directory per
//! containerd namespace. `create` leaves two files in the bundle:
//! `init.pid` (the init's pid) and `oci-runtime.log` (the runtime's JSON
//! log, from which its error message is taken).

mod runtime;

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio as ProcessStdio;

use barge_executor::{
    CleanupContext, Container, CreateContext, Error, ExecContext, Executor, Fit, Result, Stdio,
};

use crate::runtime::{error_message, log_warnings, Failure, RunError, Runtime};

/// The name of the runtime's log in the bundle.
pub const RUNTIME_LOG: &str = "oci-runtime.log";
/// The name of the file in the bundle where the runtime writes the init's pid.
pub const PID_FILE: &str = "init.pid";

/// The `oci-binary` executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct OciBinary;

impl OciBinary {
    pub fn new() -> Self {
        OciBinary
    }
}

impl Executor for OciBinary {
    fn name(&self) -> &'static str {
        "oci-binary"
    }

    fn runs(&self) -> &'static str {
        "oci-binary runs whatever its OCI runtime binary (runc, crun, youki) runs"
    }

    fn fits(&self, ctx: &CreateContext<'_>) -> Fit {
        let path = std::env::var_os("PATH");
        match runtime::resolve_binary(&ctx.options.runtime, path.as_deref()) {
            Ok(_) => Fit::Yes,
            Err(why) => Fit::No(why),
        }
    }

    fn create(&self, ctx: CreateContext<'_>) -> Result<Box<dyn Container>> {
        let runtime = Runtime::from_options(ctx.options, ctx.namespace)?;
        runtime.ensure_root()?;
        let log_path = ctx.bundle.join(RUNTIME_LOG);
        let pid_path = ctx.bundle.join(PID_FILE);
        remove_stale(&log_path)?;
        remove_stale(&pid_path)?;

        let mut cmd = runtime.command(Some(&log_path));
        cmd.arg("create")
            .arg("--bundle")
            .arg(ctx.bundle)
            .arg("--pid-file")
            .arg(&pid_path);
        if ctx.options.no_pivot_root {
            cmd.arg("--no-pivot");
        }
        if ctx.options.no_new_keyring {
            cmd.arg("--no-new-keyring");
        }
        if let Some(socket) = ctx.console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(ctx.id);
        if let Err(e) = run_attached(&runtime, "create", cmd, ctx.stdio, &log_path) {
            // A runtime that fails (or crashes) part way through create can
            // leave its state and the container's cgroups; `delete --force`
            // removes what it made, and answers not-found if it made nothing.
            if let Err(d) = delete_force(&runtime, ctx.id) {
                log::warn!("deleting container {} after a failed create: {d}", ctx.id);
            }
            return Err(e);
        }

        let pid = match read_pid(&pid_path) {
            Ok(pid) => pid,
            Err(e) => {
                // The runtime says it created the container; don't leave it.
                if let Err(d) = delete_force(&runtime, ctx.id) {
                    log::warn!("deleting container {} after a bad pid file: {d}", ctx.id);
                }
                return Err(e);
            }
        };
        log::debug!(
            "{} created container {} with init pid {pid}",
            runtime.name(),
            ctx.id
        );
        Ok(Box::new(OciContainer {
            runtime,
            id: ctx.id.to_string(),
            bundle: ctx.bundle.to_path_buf(),
            pid,
        }))
    }

    fn cleanup(&self, ctx: &CleanupContext<'_>) -> Result<()> {
        let runtime = Runtime::from_options(ctx.options, ctx.namespace)?;
        delete_force(&runtime, ctx.id)
    }
}

/// A container created by an OCI runtime binary.
struct OciContainer {
    runtime: Runtime,
    id: String,
    bundle: PathBuf,
    pid: u32,
}

/// Runs a runtime subcommand whose process takes `stdio` as its own (the
/// runtime hands its stdio to the container's process), so the runtime's
/// messages can only be read back from `log_path`.
fn run_attached(
    runtime: &Runtime,
    subcommand: &str,
    mut cmd: std::process::Command,
    stdio: Stdio,
    log_path: &Path,
) -> Result<()> {
    let Stdio {
        stdin,
        stdout,
        stderr,
    } = stdio;
    cmd.stdin(process_stdio(stdin))
        .stdout(process_stdio(stdout))
        .stderr(process_stdio(stderr));
    log::debug!("running {}", runtime::display_command(&cmd));
    let status = cmd
        .status()
        .map_err(|e| runtime.spawn_error(subcommand, e))?;
    // Close our copies of the process's stdio now.
    drop(cmd);
    let log_text = fs::read_to_string(log_path).unwrap_or_default();
    if !status.success() {
        let failure = Failure {
            what: format!("{} {subcommand}", runtime.name()),
            status,
            message: error_message(&log_text),
        };
        let mut text = failure.to_string();
        if failure.message.is_empty() {
            text.push_str(&format!(
                "; {} is empty, so the runtime may have written its error to the process's stderr",
                log_path.display()
            ));
        }
        return Err(if failure.is_not_found() {
            Error::NotFound(text)
        } else {
            Error::Runtime(text)
        });
    }
    log_warnings(runtime.name(), &log_text);
    Ok(())
}

impl Container for OciContainer {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn start(&mut self) -> Result<()> {
        let mut cmd = self.runtime.command(None);
        cmd.arg("start").arg(&self.id);
        match self.runtime.run("start", cmd) {
            Ok(_) => Ok(()),
            Err(RunError::Failed(f)) if f.is_not_found() => Err(Error::NotFound(f.to_string())),
            Err(RunError::Failed(f)) => {
                let lower = f.message.to_ascii_lowercase();
                if lower.contains("cannot start") || lower.contains("already") {
                    Err(Error::FailedPrecondition(f.to_string()))
                } else {
                    Err(Error::Runtime(f.to_string()))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    fn kill(&mut self, signal: u32, all: bool) -> Result<()> {
        let mut cmd = self.runtime.command(None);
        cmd.arg("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(&self.id).arg(signal.to_string());
        // A finished process comes back as NotFound through Failure.
        self.runtime.run("kill", cmd)?;
        Ok(())
    }

    fn pids(&self) -> Result<Vec<u32>> {
        let mut cmd = self.runtime.command(None);
        cmd.arg("ps").arg("--format").arg("json").arg(&self.id);
        match self.runtime.run("ps", cmd) {
            Ok(output) => parse_pids(&output.stdout).map_err(|e| {
                Error::Runtime(format!(
                    "{} ps {}: unexpected output {:?}: {e}",
                    self.runtime.name(),
                    self.id,
                    String::from_utf8_lossy(&output.stdout)
                ))
            }),
            Err(RunError::Failed(f)) if f.is_not_found() => Err(Error::NotFound(f.to_string())),
            Err(RunError::Failed(f)) => {
                // crun 1.8 crashes in `ps` once the container has stopped;
                // a stopped container has no processes.
                if self.status().as_deref() == Some("stopped") {
                    log::debug!("{} (container is stopped, so no pids)", f);
                    Ok(Vec::new())
                } else {
                    Err(f.into_error())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    fn exec(&mut self, ctx: ExecContext<'_>) -> Result<u32> {
        // The files live in the bundle only while the process is being made.
        let serial = barge_executor::next_serial();
        let process_path = self.bundle.join(format!("exec-{serial}.json"));
        let pid_path = self.bundle.join(format!("exec-{serial}.pid"));
        let log_path = self.bundle.join(format!("exec-{serial}.log"));
        let json = serde_json::to_vec(ctx.process).map_err(|e| Error::Runtime(e.to_string()))?;
        fs::write(&process_path, json)
            .map_err(Error::io(format!("write {}", process_path.display())))?;
        let mut cmd = self.runtime.command(Some(&log_path));
        cmd.arg("exec")
            .arg("--detach")
            .arg("--pid-file")
            .arg(&pid_path)
            .arg("--process")
            .arg(&process_path);
        if let Some(socket) = ctx.console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(&self.id);
        let result = run_attached(&self.runtime, "exec", cmd, ctx.stdio, &log_path)
            .and_then(|()| read_pid(&pid_path));
        for f in [&process_path, &pid_path, &log_path] {
            let _ = fs::remove_file(f);
        }
        result.map_err(|e| match e {
            // runc says "cannot exec in a stopped container".
            Error::Runtime(m) if m.contains("stopped") || m.contains("paused") => {
                Error::FailedPrecondition(m)
            }
            e => e,
        })
    }

    fn set_paused(&mut self, paused: bool) -> Result<()> {
        let verb = if paused { "pause" } else { "resume" };
        let mut cmd = self.runtime.command(None);
        cmd.arg(verb).arg(&self.id);
        match self.runtime.run(verb, cmd) {
            Ok(_) => Ok(()),
            Err(RunError::Failed(f)) if f.is_not_found() => Err(Error::NotFound(f.to_string())),
            Err(RunError::Failed(f)) => Err(Error::FailedPrecondition(f.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    fn update(&mut self, resources: &barge_executor::LinuxResources) -> Result<()> {
        let json = serde_json::to_vec(resources).map_err(|e| Error::Runtime(e.to_string()))?;
        let mut cmd = self.runtime.command(None);
        cmd.arg("update").arg("--resources").arg("-").arg(&self.id);
        self.runtime.run_with_input("update", cmd, Some(&json))?;
        Ok(())
    }

    fn delete(&mut self) -> Result<()> {
        delete_force(&self.runtime, &self.id)
    }
}

impl OciContainer {
    /// The `status` that `<runtime> state` reports, if it can say.
    fn status(&self) -> Option<String> {
        let mut cmd = self.runtime.command(None);
        cmd.arg("state").arg(&self.id);
        let output = self.runtime.run("state", cmd).ok()?;
        let state: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        state.get("status")?.as_str().map(str::to_string)
    }
}

/// `delete --force`; a container that is already gone is not an error.
fn delete_force(runtime: &Runtime, id: &str) -> Result<()> {
    let mut cmd = runtime.command(None);
    cmd.arg("delete").arg("--force").arg(id);
    match runtime.run("delete", cmd) {
        Ok(_) => Ok(()),
        Err(RunError::Failed(f)) if f.is_not_found() => {
            log::debug!("{f} (already gone)");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `ps --format json` prints `null` or a JSON array of pids.
fn parse_pids(stdout: &[u8]) -> serde_json::Result<Vec<u32>> {
    let text = String::from_utf8_lossy(stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let pids: Option<Vec<u32>> = serde_json::from_str(&text)?;
    Ok(pids.unwrap_or_default())
}

fn process_stdio(fd: Option<OwnedFd>) -> ProcessStdio {
    match fd {
        Some(fd) => ProcessStdio::from(fd),
        None => ProcessStdio::null(),
    }
}

fn remove_stale(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(Error::io(format!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

fn read_pid(path: &Path) -> Result<u32> {
    let text = fs::read_to_string(path).map_err(Error::io(format!(
        "reading the init pid from {}",
        path.display()
    )))?;
    match text.trim().parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(Error::Runtime(format!(
            "the OCI runtime wrote no usable pid to {}: {:?}",
            path.display(),
            text
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_output() {
        assert_eq!(parse_pids(b"null\n").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_pids(b"").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_pids(b"[4558]\n").unwrap(), vec![4558]);
        assert_eq!(parse_pids(b"[\n  5528,\n  7\n]\n").unwrap(), vec![5528, 7]);
        assert!(parse_pids(b"garbage").is_err());
    }

    #[test]
    fn name_is_stable() {
        assert_eq!(OciBinary::new().name(), "oci-binary");
    }
}
