//! The shim protocol, run against the real binary: `start` in each form
//! containerd speaks, grouping, Task API v2 and v3 on one socket,
//! UNIMPLEMENTED answers, Shutdown, `delete`, `-v` and `-info`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{
    CheckpointTaskRequest, ConnectRequest, ConnectResponse, DeleteResponse, ShutdownRequest,
};
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::{Client, TaskClient};
use containerd_shim_protos::types::introspection::RuntimeInfo;
use serde_json::Value;
use ttrpc::context;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-barge-v1");

/// A bundle directory whose shim, if any, is shut down when dropped.
struct Bundle {
    dir: tempfile::TempDir,
    addresses: Vec<String>,
}

impl Bundle {
    fn new(annotations: &str) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("bg")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            format!(r#"{{"annotations":{{{annotations}}}}}"#),
        )
        .unwrap();
        Bundle {
            dir,
            addresses: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn socket_dir(&self) -> PathBuf {
        self.path().join("s")
    }

    /// Runs `start` with `stdin`, returns stdout.
    fn start(&mut self, id: &str, grpc: &str, stdin: &[u8]) -> Vec<u8> {
        succeed(
            Command::new(SHIM)
                .args([
                    "-namespace",
                    "barge-test",
                    "-id",
                    id,
                    "-address",
                    grpc,
                    "start",
                ])
                .current_dir(self.path())
                .env("TTRPC_ADDRESS", ""),
            stdin,
            "start",
        )
    }

    fn remember(&mut self, address: &str) {
        if !self.addresses.iter().any(|a| a == address) {
            self.addresses.push(address.to_string());
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        for address in &self.addresses {
            let path = address.trim_start_matches("unix://").to_string();
            let _ = block_on(async move {
                let client = TaskClient::new(Client::connect(&format!("unix://{path}")).await?);
                client
                    .shutdown(
                        context::with_timeout(1_000_000_000),
                        &ShutdownRequest::new(),
                    )
                    .await
            });
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn bootstrap_params(bundle: &Bundle, id: &str) -> Vec<u8> {
    BootstrapParams {
        instance_id: id.into(),
        namespace: "barge-test".into(),
        containerd_ttrpc_address: "/nonexistent/containerd.sock.ttrpc".into(),
        containerd_grpc_address: "/nonexistent/containerd.sock".into(),
        containerd_version: "2.3.0".into(),
        socket_dir: Some(bundle.socket_dir().display().to_string()),
        ..Default::default()
    }
    .write_to_bytes()
    .unwrap()
}

async fn connect_v3(address: &str) -> ConnectResponse {
    let client = TaskClient::new(Client::connect(address).await.unwrap());
    client
        .connect(context::with_timeout(2_000_000_000), &ConnectRequest::new())
        .await
        .unwrap()
}

/// Calls `service/method` with a raw request, as a client of another Task
/// API version would.
async fn raw_call(
    address: &str,
    service: &str,
    method: &str,
    payload: Vec<u8>,
) -> ttrpc::Result<Vec<u8>> {
    let client = Client::connect(address).await?;
    let req = ttrpc::Request {
        service: service.into(),
        method: method.into(),
        timeout_nano: 2_000_000_000,
        payload,
        ..Default::default()
    };
    let res = client.request(req).await?;
    Ok(res.payload)
}

fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn bootstrap_handshake_serves_v3_and_v2_then_shuts_down() {
    let mut b = Bundle::new("");
    let params = bootstrap_params(&b, "c1");
    let out = b.start("c1", "/nonexistent/containerd.sock", &params);
    let result = BootstrapResult::parse_from_bytes(&out).expect("stdout is a BootstrapResult");
    assert_eq!(result.version, 3);
    assert_eq!(result.protocol, "ttrpc");
    let address = result.address.clone();
    b.remember(&address);
    assert!(
        address.starts_with(&format!("unix://{}/", b.socket_dir().display())),
        "socket_dir honoured: {address}"
    );
    let socket = PathBuf::from(address.trim_start_matches("unix://"));

    let (v3, v2, checkpoint) = block_on(async {
        let v3 = connect_v3(&address).await;
        let v2 = raw_call(
            &address,
            "containerd.task.v2.Task",
            "Connect",
            ConnectRequest::new().write_to_bytes().unwrap(),
        )
        .await
        .map(|p| ConnectResponse::parse_from_bytes(&p).unwrap());
        let client = TaskClient::new(Client::connect(&address).await.unwrap());
        let checkpoint = client
            .checkpoint(
                context::with_timeout(2_000_000_000),
                &CheckpointTaskRequest::new(),
            )
            .await;
        (v3, v2, checkpoint)
    });
    assert!(v3.shim_pid > 0);
    assert_eq!(
        v2.unwrap().shim_pid,
        v3.shim_pid,
        "v2 and v3 reach the same server"
    );
    match checkpoint {
        Err(ttrpc::Error::RpcStatus(s)) => {
            assert_eq!(s.code(), ttrpc::Code::UNIMPLEMENTED);
            assert!(s.message().contains("Checkpoint"), "{}", s.message());
        }
        other => panic!("Checkpoint must answer UNIMPLEMENTED, got {other:?}"),
    }

    // The server re-executed itself from a read-only, detached clone of
    // the binary: its exe link shows no path, no open writes it, and its
    // command line is containerd's flags without the action.
    let exe = format!("/proc/{}/exe", v3.shim_pid);
    assert_eq!(std::fs::read_link(&exe).unwrap(), PathBuf::from("/"));
    let vfs = nix::sys::statvfs::statvfs(exe.as_str()).unwrap();
    assert!(vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    let write = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&exe);
    assert_eq!(
        write.map(|_| ()).unwrap_err().raw_os_error(),
        Some(libc::EROFS),
        "a truncating open of the server's binary"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", v3.shim_pid)).unwrap();
    let argv: Vec<&[u8]> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    assert!(
        argv.contains(&&b"-id"[..]) && !argv.contains(&&b"start"[..]),
        "{argv:?}"
    );
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", v3.shim_pid)).unwrap();
    assert_eq!(comm.trim(), "containerd-shim");

    let shim_pid = v3.shim_pid as i32;
    block_on(async {
        let client = TaskClient::new(Client::connect(&address).await.unwrap());
        let _ = client
            .shutdown(
                context::with_timeout(2_000_000_000),
                &ShutdownRequest::new(),
            )
            .await;
    });
    assert!(
        wait_gone(shim_pid),
        "shim exits after Shutdown with no containers"
    );
    assert!(!socket.exists(), "socket removed on exit");
    b.addresses.clear();
}

#[test]
fn legacy_start_prints_a_bare_address_and_groups_share_a_shim() {
    let grpc = format!("/nonexistent/{}.sock", std::process::id());
    let mut a = Bundle::new(r#""io.containerd.runc.v2.group":"pod-1""#);
    // Before containerd 2.3, stdin carries the runtime options as an Any.
    let options = containerd_shim_protos::protobuf::well_known_types::any::Any {
        type_url: "runtimeoptions.v1.Options".into(),
        ..Default::default()
    }
    .write_to_bytes()
    .unwrap();
    let first = String::from_utf8(a.start("a1", &grpc, &options)).unwrap();
    a.remember(&first);
    assert!(first.starts_with("unix:///run/containerd/s/"), "{first}");
    assert!(
        !first.contains('{'),
        "containerd 1.6 needs a bare address: {first}"
    );

    let mut b = Bundle::new(
        r#""io.kubernetes.cri.sandbox-id":"other","io.containerd.runc.v2.group":"pod-1""#,
    );
    let second = String::from_utf8(b.start("b1", &grpc, b"")).unwrap();
    assert_eq!(first, second, "same group, same shim");

    let mut c = Bundle::new(r#""io.kubernetes.cri.sandbox-id":"pod-2""#);
    let third = String::from_utf8(c.start("c1", &grpc, b"")).unwrap();
    c.remember(&third);
    assert_ne!(first, third, "another group gets its own shim");

    let (p1, p3) = block_on(async { (connect_v3(&first).await, connect_v3(&third).await) });
    assert_ne!(p1.shim_pid, p3.shim_pid);
}

/// Runs the `delete` action for `id` in the bundle; returns its stdout.
fn run_delete(bundle: &Bundle, id: &str) -> Vec<u8> {
    let out = Command::new(SHIM)
        .args(["-namespace", "barge-test", "-id", id, "-bundle"])
        .arg(bundle.path())
        .args(["-address", "/nonexistent.sock", "delete"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn delete_action_answers_a_delete_response() {
    let b = Bundle::new("");
    let resp = DeleteResponse::parse_from_bytes(&run_delete(&b, "gone")).unwrap();
    assert_eq!(resp.exit_status, 137);
    assert!(resp.exited_at.seconds > 0);
}

#[test]
fn version_and_bad_flags() {
    let out = Command::new(SHIM).arg("-v").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("containerd-shim-barge-v1") && text.contains(env!("CARGO_PKG_VERSION")),
        "{text}"
    );
    let out = Command::new(SHIM)
        .args(["-frobnicate", "start"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("-frobnicate"));
}

#[test]
fn serve_without_start_is_refused() {
    // No action is the server, which only `start` may run: by hand it is
    // refused, and a listener that is not one is named.
    let out = Command::new(SHIM)
        .args(["-namespace", "ns", "-id", "x"])
        .env_remove("BARGE_SHIM_LISTENER")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("started by containerd through `start`"),
        "{err}"
    );
    for (value, says) in [
        ("x", "not a descriptor number"),
        ("1", "not a descriptor number"),
        ("77", "not a listening socket"),
    ] {
        let out = Command::new(SHIM)
            .args(["-namespace", "ns", "-id", "x"])
            .env("BARGE_SHIM_LISTENER", value)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{value}: {err}");
    }
}

#[test]
fn delete_after_a_crash_removes_the_dead_socket() {
    let mut b = Bundle::new("");
    let params = bootstrap_params(&b, "crash");
    let result = BootstrapResult::parse_from_bytes(&b.start("crash", "/x.sock", &params)).unwrap();
    let socket = PathBuf::from(result.address.trim_start_matches("unix://"));
    let pid = block_on(connect_v3(&result.address)).shim_pid as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_gone(pid));
    assert!(socket.exists(), "a killed shim leaves its socket");
    run_delete(&b, "crash");
    assert!(!socket.exists(), "delete removes the dead shim's socket");
}

/// Runs `cmd` with `stdin` written to it; it must succeed. Returns its stdout.
fn succeed(cmd: &mut Command, stdin: &[u8], what: &str) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `-info` with `stdin`, as containerd does; returns what it printed.
fn run_info(stdin: &[u8]) -> RuntimeInfo {
    let out = succeed(Command::new(SHIM).arg("-info"), stdin, "-info");
    RuntimeInfo::parse_from_bytes(&out).unwrap()
}

/// The OCI features document in `info`, in the Any type containerd's
/// typeurl gives runtime-spec's `features.Features`.
fn features_of(info: &RuntimeInfo) -> Value {
    let any = info.features.as_ref().expect("RuntimeInfo has no features");
    assert_eq!(
        any.type_url,
        "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
    );
    serde_json::from_slice(&any.value).unwrap()
}

/// `runtimeoptions.v1.Options{config_body}` in an Any, as containerd sends
/// the runtime options.
fn runtime_options(body: &str) -> Any {
    let mut value = vec![0x1a, u8::try_from(body.len()).unwrap()];
    value.extend_from_slice(body.as_bytes());
    Any {
        type_url: "runtimeoptions.v1.Options".into(),
        value,
        ..Default::default()
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// Linux `major.minor` of the running kernel.
fn kernel_version() -> (u32, u32) {
    let uname = nix::sys::utsname::uname().unwrap();
    let release = uname.release().to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().unwrap().parse().unwrap();
    let minor = parts.next().unwrap().parse().unwrap();
    (major, minor)
}

/// What the document must say of libcontainer, as barge builds it, here.
fn check_libcontainer_features(doc: &Value) {
    assert_eq!(doc["ociVersionMin"], "1.0.0");
    assert!(doc["ociVersionMax"].as_str().unwrap().starts_with("1."));
    assert_eq!(
        strings(&doc["hooks"]),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
    let mounts = strings(&doc["mountOptions"]);
    for o in ["ro", "nosuid", "bind", "rbind", "rprivate", "relatime"] {
        assert!(mounts.contains(&o), "mountOptions lack {o}: {mounts:?}");
    }
    // mount_setattr(2), which applies the recursive options, is Linux 5.12.
    assert_eq!(
        mounts.contains(&"rro"),
        kernel_version() >= (5, 12),
        "{mounts:?}"
    );
    assert!(!mounts.iter().any(|o| o.contains("idmap")), "{mounts:?}");
    let linux = &doc["linux"];
    let ns = strings(&linux["namespaces"]);
    for n in ["pid", "network", "uts", "ipc", "mount", "user", "cgroup"] {
        assert!(ns.contains(&n), "namespaces lack {n}: {ns:?}");
    }
    assert_eq!(
        ns.contains(&"time"),
        Path::new("/proc/self/ns/time").exists()
    );
    let caps = strings(&linux["capabilities"]);
    let last_cap: usize = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(caps.len(), (last_cap + 1).min(41), "{caps:?}");
    assert_eq!((caps[0], caps[21]), ("CAP_CHOWN", "CAP_SYS_ADMIN"));
    assert_eq!(
        linux["cgroup"],
        serde_json::json!({"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false})
    );
    // The binary links libseccomp; the kernel has seccomp filters.
    let seccomp = &linux["seccomp"];
    assert_eq!(seccomp["enabled"], true, "{seccomp}");
    let actions = strings(&seccomp["actions"]);
    for a in [
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_LOG",
    ] {
        assert!(actions.contains(&a), "{actions:?}");
    }
    assert!(strings(&seccomp["operators"]).contains(&"SCMP_CMP_MASKED_EQ"));
    let archs = strings(&seccomp["archs"]);
    if cfg!(target_arch = "x86_64") {
        for a in ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] {
            assert!(archs.contains(&a), "{archs:?}");
        }
    }
    let libseccomp = doc["annotations"]["io.github.seccomp.libseccomp.version"]
        .as_str()
        .unwrap();
    assert_eq!(libseccomp.split('.').count(), 3, "{libseccomp}");
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'));
    assert_eq!(linux["apparmor"]["enabled"], apparmor);
    assert_eq!(linux["selinux"]["enabled"], false);
    assert_eq!(linux["intelRdt"]["enabled"], false);
    assert_eq!(linux["mountExtensions"]["idmap"]["enabled"], false);
    assert!(!doc.to_string().contains("null"), "{doc}");
}

#[test]
fn info_describes_the_runtime_and_echoes_the_options() {
    // containerd 2.3 sends nothing before a create.
    let info = run_info(b"");
    assert_eq!(info.name, "io.containerd.barge.v1");
    assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
    assert!(info.options.is_none());
    assert!(info.annotations.is_empty());
    let doc = features_of(&info);
    check_libcontainer_features(&doc);

    // The CRI plugin and `ctr plugins inspect-runtime` send the options.
    let given = runtime_options("executor = \"native\"");
    let info = run_info(&given.write_to_bytes().unwrap());
    assert_eq!(info.options.as_ref(), Some(&given));
    assert_eq!(features_of(&info), doc);
}

#[test]
fn info_for_oci_binary_is_the_runtimes_own_features() {
    let runc = Command::new("runc").arg("features").output();
    let expected: Option<Value> = match runc {
        Ok(out) if out.status.success() => Some(serde_json::from_slice(&out.stdout).unwrap()),
        // No runc, or one without `features`: no document, as runc-v2 does.
        _ => None,
    };
    // barge's TOML, and runc-v2's own options with `BinaryName` (field 6).
    let runc_v1 = Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: b"\x32\x04runc".to_vec(),
        ..Default::default()
    };
    for given in [
        runtime_options("executor = \"oci-binary\"\nruntime = \"runc\""),
        runc_v1,
    ] {
        let info = run_info(&given.write_to_bytes().unwrap());
        assert_eq!(info.options.as_ref(), Some(&given));
        match &expected {
            Some(doc) => assert_eq!(&features_of(&info), doc, "{}", given.type_url),
            None => assert!(info.features.is_none()),
        }
    }
}

#[test]
fn info_refuses_options_it_cannot_read() {
    let wrong = Any {
        type_url: "example.com/not.Options".into(),
        value: vec![0x0a, 0x01, b'x'],
        ..Default::default()
    };
    for stdin in [b"\xff\xff".to_vec(), wrong.write_to_bytes().unwrap()] {
        let mut child = Command::new(SHIM)
            .arg("-info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("protobuf Any") || err.contains("example.com/not.Options"),
            "{err}"
        );
    }
}
