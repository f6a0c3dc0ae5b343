//! The containerd calls the tests make through the gRPC API rather than
//! ctr: Containers.Create, for images whose config ctr refuses to read (the
//! CNCF Wasm artifact), as a CRI client would create them, and with runtime
//! options ctr cannot send (runc's, to barge); and the Tasks calls of a
//! process's life (Create, Exec, Start, Wait, Kill, CloseIO,
//! DeleteProcess, Delete, Get), as containerd's Go client makes them; and
//! Tasks.Metrics, which asks every matching task's shim for its Stats. The
//! messages are declared by hand, with only the fields the tests use.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::cmd;

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerRequest {
    #[prost(message, optional, tag = "1")]
    container: Option<Container>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerResponse {}

#[derive(Clone, PartialEq, prost::Message)]
struct Container {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "3")]
    image: String,
    #[prost(message, optional, tag = "4")]
    runtime: Option<Runtime>,
    #[prost(message, optional, tag = "5")]
    spec: Option<Any>,
    #[prost(string, tag = "6")]
    snapshotter: String,
    #[prost(string, tag = "7")]
    snapshot_key: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Runtime {
    #[prost(string, tag = "1")]
    name: String,
    /// The runtime options containerd hands the shim (on `start`'s stdin
    /// and in Create) when the task brings none of its own.
    #[prost(message, optional, tag = "2")]
    options: Option<Any>,
}

/// `containerd.runc.v1.Options`, the runtime options of runc-v2, with the
/// fields the tests set (`api/types/runc/options/oci.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuncOptions {
    #[prost(bool, tag = "1")]
    pub no_pivot_root: bool,
    #[prost(bool, tag = "2")]
    pub no_new_keyring: bool,
    #[prost(string, tag = "3")]
    pub shim_cgroup: String,
    #[prost(uint32, tag = "4")]
    pub io_uid: u32,
    #[prost(uint32, tag = "5")]
    pub io_gid: u32,
    #[prost(string, tag = "6")]
    pub binary_name: String,
    #[prost(string, tag = "7")]
    pub root: String,
    #[prost(bool, tag = "9")]
    pub systemd_cgroup: bool,
    #[prost(string, tag = "10")]
    pub criu_image_path: String,
}

impl RuncOptions {
    /// The options as containerd's Go client marshals them.
    pub fn to_any(&self) -> Any {
        Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: prost::Message::encode_to_vec(self),
        }
    }
}

/// The type URL of [`RuncOptions`], as `typeurl.MarshalAny` writes it.
pub const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.protobuf.Empty`.
#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateTaskRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(string, tag = "4")]
    stdin: String,
    #[prost(string, tag = "5")]
    stdout: String,
    #[prost(string, tag = "6")]
    stderr: String,
    #[prost(message, optional, tag = "9")]
    options: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateTaskResponse {
    #[prost(uint32, tag = "2")]
    pid: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExecProcessRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(string, tag = "2")]
    stdin: String,
    #[prost(string, tag = "3")]
    stdout: String,
    #[prost(string, tag = "4")]
    stderr: String,
    #[prost(bool, tag = "5")]
    terminal: bool,
    #[prost(message, optional, tag = "6")]
    spec: Option<Any>,
    #[prost(string, tag = "7")]
    exec_id: String,
}

/// Start, Wait, DeleteProcess and Get all name a process this way (an
/// empty `exec_id` is the init).
#[derive(Clone, PartialEq, prost::Message)]
struct ProcessRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(string, tag = "2")]
    exec_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StartResponse {
    #[prost(uint32, tag = "1")]
    pid: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WaitResponse {
    #[prost(uint32, tag = "1")]
    exit_status: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct KillRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(string, tag = "2")]
    exec_id: String,
    #[prost(uint32, tag = "3")]
    signal: u32,
    #[prost(bool, tag = "4")]
    all: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CloseIoRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(string, tag = "2")]
    exec_id: String,
    #[prost(bool, tag = "3")]
    stdin: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct DeleteTaskRequest {
    #[prost(string, tag = "1")]
    container_id: String,
}

/// What Delete and DeleteProcess answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Deleted {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(uint32, tag = "2")]
    pub pid: u32,
    #[prost(uint32, tag = "3")]
    pub exit_status: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetResponse {
    #[prost(message, optional, tag = "1")]
    process: Option<Process>,
}

/// `containerd.v1.types.Process`, as Tasks.Get answers it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Process {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, tag = "2")]
    pub id: String,
    #[prost(uint32, tag = "3")]
    pub pid: u32,
    /// `containerd.v1.types.Status`: see [`status`].
    #[prost(int32, tag = "4")]
    pub status: i32,
    #[prost(string, tag = "5")]
    pub stdin: String,
    #[prost(string, tag = "6")]
    pub stdout: String,
    #[prost(string, tag = "7")]
    pub stderr: String,
    #[prost(bool, tag = "8")]
    pub terminal: bool,
    #[prost(uint32, tag = "9")]
    pub exit_status: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetricsRequest {
    #[prost(string, repeated, tag = "1")]
    filters: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetricsResponse {
    #[prost(message, repeated, tag = "1")]
    metrics: Vec<Metric>,
}

/// `containerd.types.Metric`: one task's Stats, as the shim answered them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(string, tag = "2")]
    pub id: String,
    #[prost(message, optional, tag = "3")]
    pub data: Option<Any>,
}

/// `containerd.services.sandbox.v1.ControllerMetricsRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct ControllerMetricsRequest {
    #[prost(string, tag = "1")]
    sandbox_id: String,
    #[prost(string, tag = "10")]
    sandboxer: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ControllerMetricsResponse {
    #[prost(message, optional, tag = "1")]
    metrics: Option<Metric>,
}

/// The type URL of the metrics of a cgroup v1 host.
pub const CGROUPS_V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";

/// `io.containerd.cgroups.v1.Metrics`, with the fields the tests read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CgroupsV1Metrics {
    #[prost(message, optional, tag = "2")]
    pub pids: Option<PidsStat>,
    #[prost(message, optional, tag = "4")]
    pub memory: Option<MemoryStat>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PidsStat {
    #[prost(uint64, tag = "1")]
    pub current: u64,
    #[prost(uint64, tag = "2")]
    pub limit: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryStat {
    #[prost(message, optional, tag = "33")]
    pub usage: Option<MemoryEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryEntry {
    #[prost(uint64, tag = "1")]
    pub limit: u64,
    #[prost(uint64, tag = "2")]
    pub usage: u64,
}

/// The values of `containerd.v1.types.Status`.
pub mod status {
    pub const CREATED: i32 = 1;
    pub const RUNNING: i32 = 2;
    pub const STOPPED: i32 = 3;
}

/// The type URL containerd's client gives an OCI process spec.
const PROCESS_SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// The stdio paths of a process (empty: none).
#[derive(Debug, Clone, Default)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

/// How long one call may take, within the case deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to containerd's gRPC API, for one namespace. Every call is
/// cut short by the case deadline (and fails with `DeadlineExceeded`).
pub struct Client {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    ns: AsciiMetadataValue,
}

impl Client {
    /// Connects to containerd at `address` (a socket path).
    pub fn connect(address: &str, ns: &str) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("unix://{address}"))?;
        let channel = rt.block_on(endpoint.connect())?;
        Ok(Client {
            rt,
            channel,
            ns: AsciiMetadataValue::try_from(ns)?,
        })
    }

    fn unary<Req, Resp>(&self, path: &'static str, req: Req) -> Result<Resp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let end = cmd::bounded(CALL_TIMEOUT);
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let mut req = tonic::Request::new(req);
        req.metadata_mut()
            .insert("containerd-namespace", self.ns.clone());
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(format!("connection: {e}")))?;
            grpc.unary(req, http::uri::PathAndQuery::from_static(path), codec)
                .await
        };
        let left = end.saturating_duration_since(Instant::now());
        match self
            .rt
            .block_on(async { tokio::time::timeout(left, call).await })
        {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{path} did not answer within {left:?}"
            ))),
        }
    }

    /// Tasks.Create of a container's task with `stdio`; `options` are the
    /// task's runtime options (which replace the container's, as with the Go
    /// client's `NewTask` options). Answers the init's pid; nothing runs
    /// until Start.
    pub fn create_task(
        &self,
        container_id: &str,
        stdio: &Stdio,
        options: Option<Any>,
    ) -> Result<u32, Status> {
        let req = CreateTaskRequest {
            container_id: container_id.into(),
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            options,
        };
        self.unary::<_, CreateTaskResponse>("/containerd.services.tasks.v1.Tasks/Create", req)
            .map(|r| r.pid)
    }

    /// Tasks.Exec: creates process `exec_id` from `spec` (a JSON OCI
    /// process) in the container's task; nothing runs until Start.
    pub fn exec(
        &self,
        container_id: &str,
        exec_id: &str,
        spec: &serde_json::Value,
        stdio: &Stdio,
    ) -> Result<(), Status> {
        let value = serde_json::to_vec(spec).map_err(|e| Status::internal(e.to_string()))?;
        let req = ExecProcessRequest {
            container_id: container_id.into(),
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            terminal: false,
            spec: Some(Any {
                type_url: PROCESS_SPEC_TYPE.into(),
                value,
            }),
            exec_id: exec_id.into(),
        };
        self.unary::<_, Empty>("/containerd.services.tasks.v1.Tasks/Exec", req)
            .map(drop)
    }

    /// Tasks.Start of a process; answers its pid.
    pub fn start(&self, container_id: &str, exec_id: &str) -> Result<u32, Status> {
        self.unary::<_, StartResponse>(
            "/containerd.services.tasks.v1.Tasks/Start",
            process_request(container_id, exec_id),
        )
        .map(|r| r.pid)
    }

    /// Tasks.Wait: blocks until the process has exited; answers its exit
    /// status.
    pub fn wait(&self, container_id: &str, exec_id: &str) -> Result<u32, Status> {
        self.unary::<_, WaitResponse>(
            "/containerd.services.tasks.v1.Tasks/Wait",
            process_request(container_id, exec_id),
        )
        .map(|r| r.exit_status)
    }

    /// Tasks.Kill of one process.
    pub fn kill(&self, container_id: &str, exec_id: &str, signal: i32) -> Result<(), Status> {
        let req = KillRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            signal: signal as u32,
            all: false,
        };
        self.unary::<_, Empty>("/containerd.services.tasks.v1.Tasks/Kill", req)
            .map(drop)
    }

    /// Tasks.CloseIO: closes the process's stdin, as the Go client's
    /// `CloseIO(WithStdinCloser)` does.
    pub fn close_stdin(&self, container_id: &str, exec_id: &str) -> Result<(), Status> {
        let req = CloseIoRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            stdin: true,
        };
        self.unary::<_, Empty>("/containerd.services.tasks.v1.Tasks/CloseIO", req)
            .map(drop)
    }

    /// Tasks.DeleteProcess of an exec.
    pub fn delete_process(&self, container_id: &str, exec_id: &str) -> Result<Deleted, Status> {
        self.unary(
            "/containerd.services.tasks.v1.Tasks/DeleteProcess",
            process_request(container_id, exec_id),
        )
    }

    /// Tasks.Delete of a container's task.
    pub fn delete_task(&self, container_id: &str) -> Result<Deleted, Status> {
        let req = DeleteTaskRequest {
            container_id: container_id.into(),
        };
        self.unary("/containerd.services.tasks.v1.Tasks/Delete", req)
    }

    /// Tasks.Get of a process, as the Go client's LoadProcess asks for it.
    pub fn get(&self, container_id: &str, exec_id: &str) -> Result<Process, Status> {
        let r: GetResponse = self.unary(
            "/containerd.services.tasks.v1.Tasks/Get",
            process_request(container_id, exec_id),
        )?;
        r.process
            .ok_or_else(|| Status::internal("Tasks.Get answered no process"))
    }

    /// Tasks.Metrics of one task (the filter `id==<container_id>`), as
    /// `ctr task metrics` asks: containerd calls the shim's Stats. A task
    /// whose Stats fails is left out of the answer (containerd logs it).
    pub fn metrics(&self, container_id: &str) -> Result<Vec<Metric>, Status> {
        let req = MetricsRequest {
            filters: vec![format!("id=={container_id}")],
        };
        self.unary::<_, MetricsResponse>("/containerd.services.tasks.v1.Tasks/Metrics", req)
            .map(|r| r.metrics)
    }

    /// Controller.Metrics of pod `sandbox_id` through containerd's sandbox
    /// controller `sandboxer` (`shim`: containerd asks the pod's shim for
    /// its SandboxMetrics, which CRI's pod stats do not use).
    pub fn sandbox_metrics(&self, sandbox_id: &str, sandboxer: &str) -> Result<Metric, Status> {
        let req = ControllerMetricsRequest {
            sandbox_id: sandbox_id.to_string(),
            sandboxer: sandboxer.to_string(),
        };
        self.unary::<_, ControllerMetricsResponse>(
            "/containerd.services.sandbox.v1.Controller/Metrics",
            req,
        )?
        .metrics
        .ok_or_else(|| Status::internal("Controller.Metrics answered no metrics"))
    }

    fn create_container(&self, c: &NewContainer<'_>) -> Result<(), Status> {
        let (snapshotter, snapshot_key) = c.snapshot.unwrap_or_default();
        let req = CreateContainerRequest {
            container: Some(Container {
                id: c.id.into(),
                image: c.image.into(),
                runtime: Some(Runtime {
                    name: c.runtime.into(),
                    options: c.runtime_options.clone(),
                }),
                spec: Some(Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                    value: c.spec.to_vec(),
                }),
                snapshotter: snapshotter.into(),
                snapshot_key: snapshot_key.into(),
            }),
        };
        self.unary::<_, CreateContainerResponse>(
            "/containerd.services.containers.v1.Containers/Create",
            req,
        )
        .map(drop)
    }
}

fn process_request(container_id: &str, exec_id: &str) -> ProcessRequest {
    ProcessRequest {
        container_id: container_id.into(),
        exec_id: exec_id.into(),
    }
}

/// Fails unless `result` is an error with `code`; answers its message.
pub fn expect_code<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, Status>,
    code: Code,
) -> Result<String> {
    match result {
        Err(s) if s.code() == code => Ok(s.message().to_string()),
        Err(s) => bail!(
            "{what}: expected {code:?}, got {:?}: {}",
            s.code(),
            s.message()
        ),
        Ok(v) => bail!("{what}: expected {code:?}, but it succeeded: {v:?}"),
    }
}

/// A container record to create.
pub struct NewContainer<'a> {
    pub id: &'a str,
    pub image: &'a str,
    pub runtime: &'a str,
    /// The OCI spec, as JSON.
    pub spec: &'a [u8],
    /// The snapshot that becomes its rootfs, or `None` for none.
    pub snapshot: Option<(&'a str, &'a str)>,
    /// The runtime options of the container, or `None` for none.
    pub runtime_options: Option<Any>,
}

/// Containers.Create in namespace `ns`.
pub fn create_container(address: &str, ns: &str, c: &NewContainer<'_>) -> Result<()> {
    let client = Client::connect(address, ns)?;
    match client.create_container(c) {
        Ok(()) => Ok(()),
        Err(status) => bail!("Containers.Create {}: {status}", c.id),
    }
}
