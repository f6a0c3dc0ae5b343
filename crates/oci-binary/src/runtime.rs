//! Finding an OCI runtime binary and running its subcommands.

use std::env;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use barge_executor::{state_dir, Error, Options, Result};

/// The PATH searched when the environment has none, as Go's `exec.LookPath`
/// callers in containerd effectively get from a service manager.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where state goes when the options name no `runtime_root`.
const DEFAULT_ROOT: &str = "/run/containerd/barge";

/// Finds the runtime binary that `runtime` names: an absolute path is taken
/// as it is, a bare name is looked up on `path` (or [`DEFAULT_PATH`]).
/// The error is a sentence naming the binary and where it looked.
pub(crate) fn resolve_binary(runtime: &str, path: Option<&OsStr>) -> Result<PathBuf, String> {
    if runtime.is_empty() {
        return Err("no OCI runtime binary is configured (`runtime` is empty)".to_string());
    }
    if runtime.contains('/') {
        let candidate = Path::new(runtime);
        if !candidate.is_absolute() {
            return Err(format!(
                "OCI runtime binary `{runtime}` must be a name looked up on PATH or an absolute path"
            ));
        }
        return match executable(candidate) {
            Ok(()) => Ok(candidate.to_path_buf()),
            Err(why) => Err(format!("OCI runtime binary `{runtime}` {why}")),
        };
    }
    let search = match path {
        Some(p) if !p.is_empty() => p.to_os_string(),
        _ => OsString::from(DEFAULT_PATH),
    };
    let mut rejected = Vec::new();
    for dir in env::split_paths(&search) {
        // An empty PATH entry means the current directory; a shim must not
        // run whatever happens to lie in the bundle, so skip it.
        if dir.as_os_str().is_empty() || !dir.is_absolute() {
            continue;
        }
        let candidate = dir.join(runtime);
        match executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(Missing::Absent) => {}
            Err(why) => rejected.push(format!("{} {why}", candidate.display())),
        }
    }
    let mut message = format!(
        "OCI runtime binary `{runtime}` not found on PATH ({})",
        search.to_string_lossy()
    );
    if !rejected.is_empty() {
        message.push_str("; ");
        message.push_str(&rejected.join("; "));
    }
    Err(message)
}

/// Why a path is not a runnable binary.
#[derive(Debug)]
enum Missing {
    Absent,
    NotAFile,
    NotExecutable,
    Unreadable(std::io::Error),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Absent => f.write_str("does not exist"),
            Missing::NotAFile => f.write_str("is not a regular file"),
            Missing::NotExecutable => f.write_str("is not executable"),
            Missing::Unreadable(e) => write!(f, "can't be inspected: {e}"),
        }
    }
}

fn executable(path: &Path) -> Result<(), Missing> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Missing::Absent),
        Err(e) => return Err(Missing::Unreadable(e)),
    };
    if !meta.is_file() {
        return Err(Missing::NotAFile);
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(Missing::NotExecutable);
    }
    Ok(())
}

/// The `--root` for a runtime: the configured root (or
/// `/run/containerd/barge/<runtime file name>`), then the namespace.
pub(crate) fn runtime_root(options: &Options, namespace: &str) -> Result<PathBuf> {
    if namespace.is_empty() || namespace == "." || namespace == ".." || namespace.contains('/') {
        return Err(Error::InvalidArgument(format!(
            "namespace `{namespace}` can't be used as a directory name"
        )));
    }
    let base = match &options.runtime_root {
        Some(root) => root.clone(),
        None => {
            let name = Path::new(&options.runtime)
                .file_name()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "OCI runtime binary `{}` has no file name",
                        options.runtime
                    ))
                })?;
            Path::new(DEFAULT_ROOT).join(name)
        }
    };
    Ok(state_dir(&base, namespace))
}

/// One OCI runtime binary with the global flags for one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Runtime {
    binary: PathBuf,
    /// The binary's file name, for messages: `runc`, `crun`.
    name: String,
    root: PathBuf,
    systemd_cgroup: bool,
}

/// A runtime subcommand that failed, with what the runtime said.
#[derive(Debug)]
pub(crate) struct Failure {
    /// `runc kill` and the like, for messages.
    pub(crate) what: String,
    pub(crate) status: ExitStatus,
    /// The runtime's own error message; may be empty.
    pub(crate) message: String,
}

impl Failure {
    /// Whether the runtime said the container (or its process) is gone.
    pub(crate) fn is_not_found(&self) -> bool {
        is_not_found_message(&self.message)
    }

    /// The failure as an error for the user, keeping the runtime's words.
    pub(crate) fn into_error(self) -> Error {
        let text = self.to_string();
        if self.is_not_found() {
            Error::NotFound(text)
        } else {
            Error::Runtime(text)
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() {
            write!(
                f,
                "{} failed ({}) without a message",
                self.what, self.status
            )
        } else if self.message.starts_with(&self.what) {
            // runc already says "runc create failed: ...".
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.what, self.message)
        }
    }
}

/// Messages with which runc, crun and youki say that a container or its
/// process does not exist (any more).
pub(crate) fn is_not_found_message(message: &str) -> bool {
    const NEEDLES: &[&str] = &[
        "does not exist",
        "not running",
        "already finished",
        "no such process",
        // crun, when the container's state directory is gone:
        // "error opening file `<root>/<id>/status`: No such file or directory"
        "/status`: no such file or directory",
        "cannot open directory",
    ];
    let lower = message.to_ascii_lowercase();
    NEEDLES.iter().any(|n| lower.contains(n))
}

impl Runtime {
    /// The runtime the options name, with its state root for `namespace`.
    /// A binary that can't be found is an `InvalidArgument` naming it.
    pub(crate) fn from_options(options: &Options, namespace: &str) -> Result<Runtime> {
        let binary = resolve_binary(&options.runtime, env::var_os("PATH").as_deref())
            .map_err(Error::InvalidArgument)?;
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| options.runtime.clone());
        Ok(Runtime {
            binary,
            name,
            root: runtime_root(options, namespace)?,
            systemd_cgroup: options.systemd_cgroup,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Makes the state root, private to root, if it is not there yet.
    pub(crate) fn ensure_root(&self) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(Error::io(format!(
                "creating the {} state directory {}",
                self.name,
                self.root.display()
            )))
    }

    /// The command with the global flags, ready for a subcommand.
    /// `--log-format json` makes runc and crun write their errors to stderr
    /// (or to `--log`) as JSON lines, which [`error_message`] understands.
    pub(crate) fn command(&self, log: Option<&Path>) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        if let Some(log) = log {
            cmd.arg("--log").arg(log);
        }
        cmd.arg("--log-format").arg("json");
        cmd
    }

    /// Runs a command made by [`Runtime::command`] and waits for it; stdin is
    /// `/dev/null`, stdout and stderr are captured.
    pub(crate) fn run(&self, subcommand: &str, cmd: Command) -> Result<Output, RunError> {
        self.run_with_input(subcommand, cmd, None)
    }

    /// [`Runtime::run`], with `input` (if any) as the command's stdin.
    pub(crate) fn run_with_input(
        &self,
        subcommand: &str,
        mut cmd: Command,
        input: Option<&[u8]>,
    ) -> Result<Output, RunError> {
        use std::io::Write;
        log::debug!("running {}", display_command(&cmd));
        let spawned = cmd
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let output = spawned
            .and_then(|mut child| {
                if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
                    stdin.write_all(data)?;
                }
                child.wait_with_output()
            })
            .map_err(|e| RunError::Spawn(self.spawn_error(subcommand, e)))?;
        if output.status.success() {
            log_warnings(&self.name, &String::from_utf8_lossy(&output.stderr));
            return Ok(output);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(RunError::Failed(Failure {
            what: format!("{} {subcommand}", self.name),
            status: output.status,
            message: error_message(&stderr),
        }))
    }

    pub(crate) fn spawn_error(&self, subcommand: &str, source: std::io::Error) -> Error {
        Error::Io {
            context: format!(
                "running OCI runtime `{}` ({subcommand})",
                self.binary.display()
            ),
            source,
        }
    }
}

/// What running a runtime subcommand can end in.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The binary could not be run or waited for.
    Spawn(Error),
    /// It ran and exited unsuccessfully.
    Failed(Failure),
}

impl From<RunError> for Error {
    fn from(e: RunError) -> Error {
        match e {
            RunError::Spawn(e) => e,
            RunError::Failed(f) => f.into_error(),
        }
    }
}

/// The command line, for the debug log.
pub(crate) fn display_command(cmd: &Command) -> String {
    let mut line = quote(cmd.get_program());
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// One line of a runtime's log, parsed.
struct LogLine {
    level: String,
    msg: String,
}

fn parse_line(line: &str) -> Option<LogLine> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line) {
        let field = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_string);
        if let Some(msg) = field("msg") {
            return Some(LogLine {
                level: field("level").unwrap_or_default().to_ascii_lowercase(),
                msg,
            });
        }
    }
    // Not JSON: a runtime that ignores --log-format, or a message written
    // before the logger was set up. Keep the text as an error.
    Some(LogLine {
        level: "error".to_string(),
        msg: line.to_string(),
    })
}

/// The runtime's error message from its log (JSON lines, or plain text):
/// the `msg` of the last error (or fatal) line; failing that, of the last
/// line of any level.
pub(crate) fn error_message(log: &str) -> String {
    let lines: Vec<LogLine> = log.lines().filter_map(parse_line).collect();
    lines
        .iter()
        .rev()
        .find(|l| matches!(l.level.as_str(), "error" | "fatal" | "panic"))
        .or_else(|| lines.last())
        .map(|l| l.msg.trim().to_string())
        .unwrap_or_default()
}

/// Passes the runtime's warnings on to our own log.
pub(crate) fn log_warnings(runtime: &str, log: &str) {
    for line in log.lines().filter_map(parse_line) {
        if matches!(line.level.as_str(), "warning" | "warn") {
            log::warn!("{runtime}: {}", line.msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_json_error_is_found() {
        let log = concat!(
            r#"{"level":"warning","msg":"something odd","time":"2026-11-28T12:37:48Z"}"#,
            "\n",
            r#"{"level":"error","msg":"runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH","time":"2026-11-28T12:37:48Z"}"#,
            "\n"
        );
        assert_eq!(
            error_message(log),
            "runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH"
        );
    }

    #[test]
    fn crun_json_error_is_found() {
        let log = r#"{"msg":"executable file `nope` not found in $PATH: No such file or directory","level":"error","time":"2026-11-28T12:37:48.885278Z"}"#;
        assert_eq!(
            error_message(log),
            "executable file `nope` not found in $PATH: No such file or directory"
        );
    }

    #[test]
    fn last_error_wins_and_plain_text_is_kept() {
        let log = "{\"level\":\"error\",\"msg\":\"first\"}\n{\"level\":\"info\",\"msg\":\"later info\"}\n{\"level\":\"error\",\"msg\":\"second\"}\n{\"level\":\"debug\",\"msg\":\"tail\"}\n";
        assert_eq!(error_message(log), "second");
        assert_eq!(error_message("oops: bad thing\n"), "oops: bad thing");
        assert_eq!(
            error_message("{\"level\":\"info\",\"msg\":\"only\"}"),
            "only"
        );
        assert_eq!(error_message(""), "");
    }

    #[test]
    fn not_found_messages() {
        for m in [
            "container not running",
            "container does not exist",
            "process already finished",
            "kill container: No such process",
            "error opening file `/run/x/abc/status`: No such file or directory",
        ] {
            assert!(is_not_found_message(m), "{m}");
        }
        assert!(!is_not_found_message("permission denied"));
    }

    #[test]
    fn binary_lookup() {
        let path = OsStr::new("/nonexistent-dir:/usr/bin:/bin");
        let found = resolve_binary("sh", Some(path)).unwrap();
        assert!(found.ends_with("sh"), "{}", found.display());

        let err = resolve_binary("barge-no-such-runtime", Some(path)).unwrap_err();
        assert_eq!(
            err,
            "OCI runtime binary `barge-no-such-runtime` not found on PATH (/nonexistent-dir:/usr/bin:/bin)"
        );
        let err = resolve_binary("/nonexistent/crun", None).unwrap_err();
        assert_eq!(err, "OCI runtime binary `/nonexistent/crun` does not exist");
        let err = resolve_binary("bin/crun", None).unwrap_err();
        assert!(err.contains("absolute path"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("crun");
        fs::write(&plain, "").unwrap();
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
        let err = resolve_binary(plain.to_str().unwrap(), None).unwrap_err();
        assert!(err.ends_with("/crun` is not executable"), "{err}");
        // On PATH, a non-executable file is named, and the search goes on.
        let search = format!("{}:/nonexistent", dir.path().display());
        let err = resolve_binary("crun", Some(OsStr::new(&search))).unwrap_err();
        assert!(err.contains("/crun is not executable"), "{err}");
        let err = resolve_binary(dir.path().to_str().unwrap(), None).unwrap_err();
        assert!(err.contains("is not a regular file"), "{err}");
    }

    #[test]
    fn roots() {
        let mut options = Options {
            runtime: "/usr/bin/crun".into(),
            ..Options::default()
        };
        assert_eq!(
            runtime_root(&options, "k8s.io").unwrap(),
            Path::new("/run/containerd/barge/crun/k8s.io")
        );
        options.runtime = "runc".into();
        assert_eq!(
            runtime_root(&options, "default").unwrap(),
            Path::new("/run/containerd/barge/runc/default")
        );
        options.runtime_root = Some("/run/other".into());
        assert_eq!(
            runtime_root(&options, "default").unwrap(),
            Path::new("/run/other/default")
        );
        assert!(runtime_root(&options, "../x").is_err());
        assert!(runtime_root(&options, "").is_err());
    }

    #[test]
    fn command_line_display() {
        let rt = Runtime {
            binary: "/usr/sbin/runc".into(),
            name: "runc".into(),
            root: "/run/r/default".into(),
            systemd_cgroup: true,
        };
        let mut cmd = rt.command(None);
        cmd.args(["kill", "my id", "9"]);
        assert_eq!(
            display_command(&cmd),
            "/usr/sbin/runc --root /run/r/default --systemd-cgroup --log-format json kill 'my id' 9"
        );
    }
}
