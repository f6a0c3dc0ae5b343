//! The `start` action: find or make the shim server for a container's group
//! and tell containerd where it listens, in the form that containerd asked.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult, LogLevel};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::TASK_API_VERSION;
use sha2::{Digest, Sha256};

use crate::args::Flags;
use crate::error::{Error, Result};
use crate::{options, shim_cgroup, spec};

const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";
/// sun_path holds 108 bytes; containerd keeps two of them spare.
const MAX_SOCKET_PATH: usize = 106;
/// containerd caps what it writes to a shim's stdin at 10 MiB.
pub const MAX_STDIN: u64 = 10 << 20;

/// The reply format containerd expects from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// containerd 1.6 to 2.2: a bare address, Task API v2.
    BareAddress,
    /// containerd 2.3+: a protobuf `BootstrapResult` for Task API v3.
    Bootstrap,
}

/// What `start` learned from its flags, environment and stdin.
#[derive(Debug, Clone)]
pub struct StartParams {
    pub reply: Reply,
    pub socket_dir: PathBuf,
    pub ttrpc_address: String,
    pub debug: bool,
    /// The runtime options containerd sent: before 2.3 the whole of stdin,
    /// from 2.3 on one of BootstrapParams' extensions.
    pub options: Option<Any>,
}

/// Decides between the bootstrap protocol and the legacy one from what
/// containerd wrote to stdin.
pub fn read_params(flags: &Flags, input: &[u8]) -> Result<StartParams> {
    let legacy = StartParams {
        reply: Reply::BareAddress,
        socket_dir: PathBuf::from(DEFAULT_SOCKET_DIR),
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        debug: flags.debug,
        options: None,
    };
    if input.is_empty() {
        return Ok(legacy);
    }
    // Before 2.3 stdin carries the runtime options, a protobuf Any; it can
    // decode as BootstrapParams too, but then its id and namespace don't match.
    let legacy = StartParams {
        options: Any::parse_from_bytes(input)
            .ok()
            .filter(|a| options::is_options_type(&a.type_url)),
        ..legacy
    };
    let Ok(params) = BootstrapParams::parse_from_bytes(input) else {
        return Ok(legacy);
    };
    if params.instance_id != flags.id || params.namespace != flags.namespace {
        return Ok(legacy);
    }
    let options = params
        .extensions
        .iter()
        .filter_map(|e| e.value.as_ref())
        .find(|a| options::is_options_type(&a.type_url))
        .cloned();
    let ttrpc_address = if params.containerd_ttrpc_address.is_empty() {
        legacy.ttrpc_address
    } else {
        params.containerd_ttrpc_address.clone()
    };
    Ok(StartParams {
        reply: Reply::Bootstrap,
        socket_dir: params
            .socket_dir
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or(legacy.socket_dir),
        ttrpc_address,
        debug: flags.debug || params.log_level.value() <= LogLevel::LOG_LEVEL_DEBUG as i32,
        options,
    })
}

/// Reads what containerd piped to stdin; nothing when run from a terminal.
pub fn read_stdin() -> Result<Vec<u8>> {
    let stdin = std::io::stdin();
    let mut input = Vec::new();
    if !stdin.is_terminal() {
        stdin
            .lock()
            .take(MAX_STDIN)
            .read_to_end(&mut input)
            .map_err(Error::io("read start parameters from stdin"))?;
    }
    Ok(input)
}

/// The socket path for a group: a hash of containerd's address, the namespace
/// and the group id, so that private containerds never share a shim.
pub fn socket_path(
    dir: &Path,
    grpc_address: &str,
    namespace: &str,
    group: &str,
) -> Result<PathBuf> {
    let digest = Sha256::digest(format!("{grpc_address}/{namespace}/{group}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(hex);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(Error::InvalidArgument(format!(
            "shim socket path {} is longer than {MAX_SOCKET_PATH} bytes",
            path.display()
        )));
    }
    Ok(path)
}

/// Encodes the reply for containerd.
pub fn encode_reply(reply: Reply, address: &str) -> Result<Vec<u8>> {
    match reply {
        Reply::BareAddress => Ok(address.as_bytes().to_vec()),
        Reply::Bootstrap => {
            let result = BootstrapResult {
                version: TASK_API_VERSION,
                address: address.to_string(),
                protocol: "ttrpc".to_string(),
                ..Default::default()
            };
            result
                .write_to_bytes()
                .map_err(|e| Error::Other(format!("encode BootstrapResult: {e}")))
        }
    }
}

/// Where the server for this group listens: either one that is already up,
/// or a new listener that the caller must serve.
pub enum Listening {
    Existing(String),
    New(String, OwnedFd),
}

/// Binds the group's socket, or finds the live server that holds it.
pub fn listen(path: &Path) -> Result<Listening> {
    let address = format!("unix://{}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(Error::io(format!(
                "create socket directory {}",
                dir.display()
            )))?;
    }
    for _ in 0..2 {
        match UnixListener::bind(path) {
            Ok(listener) => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(Error::io(format!("chmod {}", path.display())))?;
                return Ok(Listening::New(address, listener.into()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if UnixStream::connect(path).is_ok() {
                    return Ok(Listening::Existing(address));
                }
                // A socket nobody answers on is left by a dead shim.
                let _ = std::fs::remove_file(path);
            }
            Err(e) => return Err(Error::io(format!("bind {}", path.display()))(e)),
        }
    }
    Err(Error::Other(format!("could not bind {}", path.display())))
}

/// The filesystem path a listening unix socket is bound to.
pub fn socket_path_of(listener: &OwnedFd) -> PathBuf {
    use std::os::fd::AsFd;
    nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(listener.as_fd().as_raw_fd())
        .ok()
        .and_then(|a| a.path().map(PathBuf::from))
        .unwrap_or_default()
}

/// Runs the `start` action. `serve` is called in a forked child that owns the
/// listener; the parent prints the address and returns.
pub fn run(flags: &Flags, serve: impl FnOnce(StartParams, OwnedFd) -> i32) -> Result<()> {
    let input = read_stdin()?;
    let params = read_params(flags, &input)?;
    let bundle = std::env::current_dir().map_err(Error::io("current directory"))?;
    let group = spec::group_id(&bundle, &flags.id);
    let path = socket_path(&params.socket_dir, &flags.address, &flags.namespace, &group)?;
    let address = match listen(&path)? {
        Listening::Existing(address) => address,
        Listening::New(address, listener) => {
            if let Err(e) = prepare_server(params.options.as_ref()) {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            spawn_server(flags, params.clone(), &input, listener, serve)?;
            address
        }
    };
    let _ = std::fs::write(bundle.join("address"), &address);
    let reply = encode_reply(params.reply, &address)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&reply)
        .and_then(|_| out.flush())
        .map_err(Error::io("write start reply"))
}

/// Joins the shim cgroup the options name and raises the OOM score, in
/// this process, so that the server forked next inherits both (see
/// [`shim_cgroup`]). Options that do not decode are left for Create to
/// report: it gets the same ones.
fn prepare_server(given: Option<&Any>) -> Result<()> {
    let cgroup = options::decode(given).ok().and_then(|o| o.shim_cgroup);
    if let Some(cgroup) = cgroup {
        shim_cgroup::join(&cgroup)?;
    }
    shim_cgroup::raise_oom_score_adj()
}

/// Forks the long-running server. The `start` process has only one thread,
/// so the child may go on running Rust code; it detaches from containerd's
/// pipes so that containerd's read of our reply ends when the parent exits.
/// The child re-executes itself from a read-only view of the binary (see
/// [`crate::exe`]); where that cannot be made, it serves as it is, and its
/// log says why.
fn spawn_server(
    flags: &Flags,
    params: StartParams,
    input: &[u8],
    listener: OwnedFd,
    serve: impl FnOnce(StartParams, OwnedFd) -> i32,
) -> Result<()> {
    use nix::unistd::{fork, ForkResult};
    barge_executor::ensure_single_threaded("fork the shim server")?;
    // SAFETY: the process has a single thread (checked above), so the child
    // inherits no lock held by another thread.
    match unsafe { fork() }.map_err(|e| Error::Other(format!("fork shim server: {e}")))? {
        ForkResult::Parent { .. } => Ok(()),
        ForkResult::Child => {
            let code = (|| -> Result<i32> {
                nix::unistd::setsid()?;
                let null = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .map_err(Error::io("open /dev/null"))?;
                for fd in 1..3 {
                    nix::unistd::dup2(null.as_raw_fd(), fd)?;
                }
                let unprotected = if crate::exe::runs_read_only() {
                    None
                } else {
                    Some(crate::exe::exec_server(flags, input, &listener))
                };
                nix::unistd::dup2(null.as_raw_fd(), 0)?;
                if let Some(why) = unprotected {
                    crate::exe::note_unprotected(why);
                }
                Ok(serve(params, listener))
            })()
            .unwrap_or(1);
            std::process::exit(code);
        }
    }
}

/// The `serve` action, as [`spawn_server`]'s re-executed child runs it:
/// the listener and the parameters it inherited.
pub fn inherited(flags: &Flags) -> Result<(StartParams, OwnedFd)> {
    let (listener, input) = crate::exe::inherited()?.ok_or_else(|| {
        Error::InvalidArgument("the shim server is started by containerd through `start`".into())
    })?;
    Ok((read_params(flags, &input)?, listener))
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::MessageField;

    fn flags() -> Flags {
        Flags {
            namespace: "ns".into(),
            id: "c1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn empty_stdin_is_legacy() {
        let p = read_params(&flags(), b"").unwrap();
        assert_eq!(p.reply, Reply::BareAddress);
        assert_eq!(p.socket_dir, PathBuf::from(DEFAULT_SOCKET_DIR));
    }

    #[test]
    fn bootstrap_params_are_recognised() {
        let params = BootstrapParams {
            instance_id: "c1".into(),
            namespace: "ns".into(),
            containerd_ttrpc_address: "/run/c.sock.ttrpc".into(),
            socket_dir: Some("/tmp/s".into()),
            log_level: LogLevel::LOG_LEVEL_DEBUG.into(),
            ..Default::default()
        };
        let p = read_params(&flags(), &params.write_to_bytes().unwrap()).unwrap();
        assert_eq!(p.reply, Reply::Bootstrap);
        assert_eq!(p.ttrpc_address, "/run/c.sock.ttrpc");
        assert_eq!(p.socket_dir, PathBuf::from("/tmp/s"));
        assert!(p.debug);
        let bytes = encode_reply(p.reply, "unix:///tmp/s/x").unwrap();
        let r = BootstrapResult::parse_from_bytes(&bytes).unwrap();
        assert_eq!(
            (r.version, r.address.as_str(), r.protocol.as_str()),
            (3, "unix:///tmp/s/x", "ttrpc")
        );
    }

    #[test]
    fn legacy_options_any_is_not_bootstrap() {
        let any = containerd_shim_protos::protobuf::well_known_types::any::Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: b"\x1a\x02x=".to_vec(),
            ..Default::default()
        };
        let p = read_params(&flags(), &any.write_to_bytes().unwrap()).unwrap();
        assert_eq!(p.reply, Reply::BareAddress);
        assert_eq!(encode_reply(p.reply, "unix:///a").unwrap(), b"unix:///a");
    }

    fn runc_options() -> Any {
        Any {
            type_url: "containerd.runc.v1.Options".into(),
            // ShimCgroup "/s"
            value: b"\x1a\x02/s".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn options_are_found_on_stdin_and_in_bootstrap_extensions() {
        let any = runc_options();
        let p = read_params(&flags(), &any.write_to_bytes().unwrap()).unwrap();
        assert_eq!(p.options.as_ref(), Some(&any));
        let params = BootstrapParams {
            instance_id: "c1".into(),
            namespace: "ns".into(),
            extensions: vec![
                containerd_shim_protos::bootstrap_api::Extension {
                    value: MessageField::some(Any {
                        type_url: "containerd.io/cri.v1.PodSandboxConfig".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                containerd_shim_protos::bootstrap_api::Extension {
                    value: MessageField::some(any.clone()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let p = read_params(&flags(), &params.write_to_bytes().unwrap()).unwrap();
        assert_eq!(p.reply, Reply::Bootstrap);
        assert_eq!(p.options.as_ref(), Some(&any));
        assert!(read_params(&flags(), b"").unwrap().options.is_none());
    }

    #[test]
    fn socket_path_depends_on_every_part() {
        let d = Path::new("/run/containerd/s");
        let a = socket_path(d, "/run/c.sock", "ns", "g").unwrap();
        assert_ne!(a, socket_path(d, "/run/c.sock", "ns", "h").unwrap());
        assert_ne!(a, socket_path(d, "/run/d.sock", "ns", "g").unwrap());
        assert_eq!(a.file_name().unwrap().len(), 64);
        let long =
            Path::new("/a/very/long/socket/directory/that/does/not/fit/into/sun_path/at/all");
        assert!(socket_path(long, "x", "y", "z").is_err());
    }
}
