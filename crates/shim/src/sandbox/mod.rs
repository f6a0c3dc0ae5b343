//! The Sandbox API (`containerd.runtime.sandbox.v1.Sandbox`): a pod without
//! a pause container.
//!
//! containerd 2.x's CRI, with `sandboxer = "shim"` for a runtime handler,
//! makes the pod's netns and runs CNI, then asks the shim to CreateSandbox
//! and StartSandbox. The shim answers with the pid of a process that holds
//! the pod's namespaces (`holder`), which the pod's containers then join;
//! those containers arrive as ordinary tasks on the same shim. The pod's
//! config comes from CRI's options (`config`).
//!
//! - `config`: what the shim reads of CRI's pod config;
//! - `files`: the pod's hostname, hosts, resolv.conf and /dev/shm, which
//!   CRI mounts into its containers;
//! - `holder`: the process that holds the namespaces.

mod config;
mod files;
mod holder;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::sandbox_api::{
    CreateSandboxRequest, CreateSandboxResponse, PingRequest, PingResponse, PlatformRequest,
    PlatformResponse, SandboxMetricsRequest, SandboxMetricsResponse, SandboxStatusRequest,
    SandboxStatusResponse, ShutdownSandboxRequest, ShutdownSandboxResponse, StartSandboxRequest,
    StartSandboxResponse, StopSandboxRequest, StopSandboxResponse, WaitSandboxRequest,
    WaitSandboxResponse,
};
use containerd_shim_protos::sandbox_async::Sandbox;
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::types::platform::Platform;
use tokio::sync::watch;
use ttrpc::r#async::TtrpcContext;

use crate::error::{Error, Result};
use crate::events::timestamp;
use crate::process::Exit;
use crate::stats::Cgroup;
use crate::task::Service;

pub use config::PodConfig;

/// CRI's names for a pod's states.
const READY: &str = "SANDBOX_READY";
const NOT_READY: &str = "SANDBOX_NOTREADY";

/// How long StopSandbox waits for the holder when containerd gives no
/// timeout. It is killed with SIGKILL, so this is only a bound.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// One pod.
struct Pod {
    config: PodConfig,
    netns: String,
    created_at: SystemTime,
    /// The holder's pid, once started.
    pid: u32,
    exit: watch::Sender<Option<Exit>>,
    /// The files made for CRI's containers (none for a client that sends
    /// no pod config).
    files: Option<files::PodFiles>,
}

impl Pod {
    fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    fn running(&self) -> bool {
        self.pid != 0 && self.exited().is_none()
    }
}

/// The shim's pods, by sandbox id.
#[derive(Default)]
pub struct Pods(Mutex<BTreeMap<String, Pod>>);

impl Pods {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Pod>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Takes the exit of `pid` if it is a pod's holder.
    pub fn reaped(&self, pid: u32, exit: &Exit) -> bool {
        let pods = self.lock();
        let Some((id, pod)) = pods.iter().find(|(_, p)| p.pid == pid) else {
            return false;
        };
        if pod.exited().is_none() {
            log::info!("pod {id}: holder (pid {pid}) exited with {}", exit.status);
            pod.exit.send_replace(Some(*exit));
        }
        true
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Pod) -> Result<T>) -> Result<T> {
        let mut pods = self.lock();
        let pod = pods
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("sandbox {id} not found")))?;
        f(pod)
    }

    fn create(&self, req: &CreateSandboxRequest) -> Result<()> {
        let mut config = PodConfig::from_options(req.options.as_ref())?;
        config.check()?;
        let from_cri = req.options.as_ref().is_some_and(|o| !o.type_url.is_empty());
        if from_cri {
            config.add_cri_defaults();
        }
        let mut pods = self.lock();
        if pods.contains_key(&req.sandbox_id) {
            return Err(Error::AlreadyExists(format!(
                "sandbox {} already exists",
                req.sandbox_id
            )));
        }
        let files = if from_cri {
            Some(files::PodFiles::make(
                std::path::Path::new(&req.bundle_path),
                &req.sandbox_id,
                &config,
            )?)
        } else {
            None
        };
        log::info!(
            "pod {} ({}/{}): netns {:?}, namespaces {:?}, cgroup parent {:?}",
            req.sandbox_id,
            config.namespace,
            config.name,
            req.netns_path,
            config.namespaces,
            config.cgroup_parent
        );
        pods.insert(
            req.sandbox_id.clone(),
            Pod {
                config,
                netns: req.netns_path.clone(),
                created_at: SystemTime::now(),
                pid: 0,
                exit: watch::channel(None).0,
                files,
            },
        );
        Ok(())
    }

    fn start(&self, id: &str) -> Result<StartSandboxResponse> {
        self.with(id, |pod| {
            if pod.pid == 0 {
                let netns = (!pod.netns.is_empty()).then(|| std::path::Path::new(&pod.netns));
                pod.pid = holder::spawn(&pod.config, netns, id)?;
                pod.created_at = SystemTime::now();
                log::info!("pod {id}: namespaces held by pid {}", pod.pid);
            } else if pod.exited().is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "sandbox {id} has stopped: it cannot be started again"
                )));
            }
            Ok(StartSandboxResponse {
                pid: pod.pid,
                created_at: MessageField::some(timestamp(pod.created_at)),
                spec: MessageField::some(Any {
                    type_url: OCI_SPEC.into(),
                    value: pod_spec(pod).to_string().into_bytes(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
    }

    /// Ends the holder, and with it the pod's PID namespace.
    fn kill(&self, id: &str) -> Result<watch::Receiver<Option<Exit>>> {
        self.with(id, |pod| {
            if pod.running() {
                // SIGKILL: pid 1 of a PID namespace ignores every signal it
                // has no handler for, and the holder has nothing to flush.
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pod.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .or_else(|e| {
                    if e == nix::errno::Errno::ESRCH {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
            } else if pod.pid == 0 {
                // Never started: stopped as it is.
                pod.exit.send_replace(Some(Exit {
                    status: 0,
                    at: SystemTime::now(),
                }));
            }
            Ok(pod.exit.subscribe())
        })
    }

    fn status(&self, req: &SandboxStatusRequest) -> Result<SandboxStatusResponse> {
        self.with(&req.sandbox_id, |pod| {
            let exit = pod.exited();
            let mut resp = SandboxStatusResponse {
                sandbox_id: req.sandbox_id.clone(),
                pid: pod.pid,
                state: if pod.running() { READY } else { NOT_READY }.to_string(),
                created_at: MessageField::some(timestamp(pod.created_at)),
                exited_at: exit.map(|e| timestamp(e.at)).into(),
                ..Default::default()
            };
            if req.verbose {
                resp.info.insert("info".into(), info_json(pod).to_string());
            }
            Ok(resp)
        })
    }

    fn metrics(&self, id: &str) -> Result<SandboxMetricsResponse> {
        let parent = self.with(id, |pod| Ok(pod.config.cgroup_parent.clone()))?;
        if parent.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "sandbox {id} has no pod cgroup: its config names no cgroup_parent"
            )));
        }
        let data: Any = Cgroup::at_path(&parent)?.metrics()?;
        let mut resp = SandboxMetricsResponse::default();
        let metric = resp.metrics.mut_or_insert_default();
        metric.timestamp = MessageField::some(timestamp(SystemTime::now()));
        metric.id = id.to_string();
        metric.data = MessageField::some(data);
        Ok(resp)
    }

    /// Forgets the pod and removes its files.
    fn remove(&self, id: &str) {
        if let Some(files) = self.lock().remove(id).and_then(|p| p.files) {
            files.remove();
        }
    }
}

/// How containerd's typeurl names an OCI runtime spec (JSON).
const OCI_SPEC: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// The pod as an OCI runtime spec, which CRI keeps as the sandbox's spec
/// (and hands to NRI): its hostname, cgroup, sysctls and the namespaces
/// that its holder has, by path.
fn pod_spec(pod: &Pod) -> serde_json::Value {
    let ns = |kind: &str| format!("/proc/{}/ns/{kind}", pod.pid);
    let modes = pod.config.namespaces;
    let mut namespaces = vec![serde_json::json!({"type": "mount"})];
    if !pod.netns.is_empty() {
        namespaces.push(serde_json::json!({"type": "network", "path": pod.netns}));
        namespaces.push(serde_json::json!({"type": "uts", "path": ns("uts")}));
    }
    if modes.ipc != config::Mode::Node {
        namespaces.push(serde_json::json!({"type": "ipc", "path": ns("ipc")}));
    }
    if modes.pid != config::Mode::Node {
        namespaces.push(serde_json::json!({"type": "pid", "path": ns("pid")}));
    }
    serde_json::json!({
        "ociVersion": "1.2.0",
        "hostname": pod.config.hostname,
        "linux": {
            "cgroupsPath": pod.config.cgroup_parent,
            "namespaces": namespaces,
            "sysctl": pod.config.sysctls,
        },
    })
}

/// The verbose status, in the shape of CRI's own sandbox info, whose
/// `runtimeSpec.linux.cgroupsPath` CRI reads the pod's stats from.
fn info_json(pod: &Pod) -> serde_json::Value {
    let status = match (pod.pid, pod.exited()) {
        (0, None) => "created",
        (_, None) => "running",
        _ => "stopped",
    };
    serde_json::json!({
        "pid": pod.pid,
        "processStatus": status,
        "netNamespaceClosed": pod.netns.is_empty() || !std::path::Path::new(&pod.netns).exists(),
        "runtimeSpec": pod_spec(pod),
    })
}

/// Waits for the pod's exit, up to `limit` when one is given.
async fn wait(mut rx: watch::Receiver<Option<Exit>>, id: &str) -> Result<Exit> {
    loop {
        if let Some(exit) = *rx.borrow_and_update() {
            return Ok(exit);
        }
        if rx.changed().await.is_err() {
            return Err(Error::NotFound(format!("sandbox {id} was removed")));
        }
    }
}

fn platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        os: "linux".into(),
        architecture: arch.into(),
        ..Default::default()
    }
}

/// The ttrpc Sandbox service, on the shim's one service.
pub struct SandboxHandle(pub Arc<Service>);

impl SandboxHandle {
    fn pods(&self) -> &Pods {
        &self.0.pods
    }
}

#[async_trait::async_trait]
impl Sandbox for SandboxHandle {
    async fn create_sandbox(
        &self,
        _: &TtrpcContext,
        req: CreateSandboxRequest,
    ) -> ttrpc::Result<CreateSandboxResponse> {
        let r = self
            .pods()
            .create(&req)
            .map(|_| CreateSandboxResponse::default());
        self.0.logged("create_sandbox", &req.sandbox_id, r)
    }

    async fn start_sandbox(
        &self,
        _: &TtrpcContext,
        req: StartSandboxRequest,
    ) -> ttrpc::Result<StartSandboxResponse> {
        let r = self.pods().start(&req.sandbox_id);
        self.0.logged("start_sandbox", &req.sandbox_id, r)
    }

    async fn platform(
        &self,
        _: &TtrpcContext,
        req: PlatformRequest,
    ) -> ttrpc::Result<PlatformResponse> {
        let r = self.pods().with(&req.sandbox_id, |_| {
            Ok(PlatformResponse {
                platform: MessageField::some(platform()),
                ..Default::default()
            })
        });
        self.0.logged("platform", &req.sandbox_id, r)
    }

    async fn stop_sandbox(
        &self,
        _: &TtrpcContext,
        req: StopSandboxRequest,
    ) -> ttrpc::Result<StopSandboxResponse> {
        let id = &req.sandbox_id;
        let limit = match req.timeout_secs {
            0 => STOP_WAIT,
            s => Duration::from_secs(s.into()),
        };
        let r = match self.pods().kill(id) {
            Ok(rx) => match tokio::time::timeout(limit, wait(rx, id)).await {
                Ok(r) => r.map(|_| StopSandboxResponse::default()),
                Err(_) => Err(Error::Other(format!(
                    "sandbox {id}: its holder did not exit within {limit:?} of SIGKILL"
                ))),
            },
            Err(e) => Err(e),
        };
        self.0.logged("stop_sandbox", id, r)
    }

    async fn wait_sandbox(
        &self,
        _: &TtrpcContext,
        req: WaitSandboxRequest,
    ) -> ttrpc::Result<WaitSandboxResponse> {
        let id = &req.sandbox_id;
        let r = match self.pods().with(id, |pod| Ok(pod.exit.subscribe())) {
            Ok(rx) => wait(rx, id).await.map(|exit| WaitSandboxResponse {
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            }),
            Err(e) => Err(e),
        };
        self.0.logged("wait_sandbox", id, r)
    }

    async fn sandbox_status(
        &self,
        _: &TtrpcContext,
        req: SandboxStatusRequest,
    ) -> ttrpc::Result<SandboxStatusResponse> {
        let r = self.pods().status(&req);
        self.0.logged("sandbox_status", &req.sandbox_id, r)
    }

    async fn ping_sandbox(
        &self,
        _: &TtrpcContext,
        req: PingRequest,
    ) -> ttrpc::Result<PingResponse> {
        let r = self
            .pods()
            .with(&req.sandbox_id, |_| Ok(PingResponse::default()));
        self.0.logged("ping_sandbox", &req.sandbox_id, r)
    }

    async fn shutdown_sandbox(
        &self,
        _: &TtrpcContext,
        req: ShutdownSandboxRequest,
    ) -> ttrpc::Result<ShutdownSandboxResponse> {
        let id = &req.sandbox_id;
        let r = match self.pods().kill(id) {
            Ok(rx) => {
                let _ = tokio::time::timeout(STOP_WAIT, wait(rx, id)).await;
                self.pods().remove(id);
                // The shim goes once nothing of it is left; containers of
                // the pod that remain keep it (containerd's Shutdown after
                // their delete ends it then). containerd reads this reply,
                // so the shim ends only after sending it.
                self.0.shutdown_after_reply();
                Ok(ShutdownSandboxResponse::default())
            }
            Err(e @ Error::NotFound(_)) => {
                self.0.shutdown_after_reply();
                log::debug!("shutdown_sandbox {id}: {e}");
                Ok(ShutdownSandboxResponse::default())
            }
            Err(e) => Err(e),
        };
        self.0.logged("shutdown_sandbox", id, r)
    }

    async fn sandbox_metrics(
        &self,
        _: &TtrpcContext,
        req: SandboxMetricsRequest,
    ) -> ttrpc::Result<SandboxMetricsResponse> {
        let r = self.pods().metrics(&req.sandbox_id);
        self.0.logged("sandbox_metrics", &req.sandbox_id, r)
    }
}
