//! The shim protocol, run against the real binary: `start` in each form
//! containerd speaks, grouping, Task API v2 and v3 on one socket,
//! UNIMPLEMENTED answers, Shutdown, `delete` and `-v`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{
    ConnectRequest, ConnectResponse, DeleteResponse, PauseRequest, ShutdownRequest,
};
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::{Client, TaskClient};
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
        let mut child = Command::new(SHIM)
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
            .env("TTRPC_ADDRESS", "")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
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

    let (v3, v2, pause) = block_on(async {
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
        let pause = client
            .pause(context::with_timeout(2_000_000_000), &PauseRequest::new())
            .await;
        (v3, v2, pause)
    });
    assert!(v3.shim_pid > 0);
    assert_eq!(
        v2.unwrap().shim_pid,
        v3.shim_pid,
        "v2 and v3 reach the same server"
    );
    match pause {
        Err(ttrpc::Error::RpcStatus(s)) => {
            assert_eq!(s.code(), ttrpc::Code::UNIMPLEMENTED);
            assert!(s.message().contains("Pause"), "{}", s.message());
        }
        other => panic!("Pause must answer UNIMPLEMENTED, got {other:?}"),
    }

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
