//! Pods through containerd's CRI, with crictl: every container of a pod
//! in one shim, a pod that mixes native and Wasm containers, and pods
//! without a pause container through barge's Sandbox API. Each case runs
//! the same pods under runc-v2 on the same containerd wherever runc-v2 can
//! run them, and removes its pods (and its cgroup tree) pass or fail; the
//! suite's [`CriContainerd::check_leaks`] runs after each.
//!
//! - `pods-one-shim` (1.7, 2.1, 2.3): 10 pods of 3 containers under runc-v2
//!   and under barge: 10 shims each, and every process of a pod (the pause
//!   container's too) is a child of its pod's shim.
//! - `mixed-pod` (1.7, 2.1, 2.3): two Wasm containers and a busybox sidecar
//!   in one pod, under barge (and barge-sandbox on 2.3): logs, exit codes,
//!   exec, one shim, and the executor barge chose for each; under runc-v2
//!   the Wasm containers fail with `exec format error`.
//! - `sandbox-api` (2.3): a pod with a hostname, namespaced sysctls, a cgroup
//!   parent and a pod PID namespace under runc-v2 (pause container) and
//!   under barge-sandbox (holder process): shared namespaces, hostname,
//!   sysctls, the pod's files (`/etc/hostname`, `/etc/hosts`,
//!   `/etc/resolv.conf`, `/dev/shm`), pid 1, exec, pod stats, the pod's IP
//!   from the host, and that the holder, the shim, the netns, the files and
//!   the cgroups go with the pod; SandboxMetrics of a pod.
//! - `sandbox-api-10-pods` (2.3): 10 pods of 2 containers under barge-sandbox:
//!   10 shims, 10 holders, no pause container.
//! - `sandbox-api-cri-sysctls` (2.3): a pod that sets no sysctl gets CRI's
//!   unprivileged-port and ping sysctls under barge-sandbox as under runc-v2.
//! - `sandbox-api-bad-sysctl` (2.3): pods with a sysctl a pod may not set, or
//!   a value the kernel refuses, fail RunPodSandbox under every handler with
//!   an error that names the sysctl, and leave nothing behind.
//!
//! Wasm images in CRI: containerd 2.x's CRI pulls a `wasi/wasm32` image but
//! does not unpack it ("unpacker does not support platform, only fetching
//! layers"), and CreateContainer then fails with `parent snapshot ... does
//! not exist`. So the image is imported into `k8s.io` with
//! `ctr images import --local`, which unpacks whatever the platform, as
//! runwasi's users load theirs (`ctr -n k8s.io image import`); CRI sees it at
//! once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::cmd::poll;
use crate::containerd::shim_socket;
use crate::containerd_api::{CgroupsV1Metrics, Client, CGROUPS_V1_METRICS};
use crate::cri::{CriContainerd, HANDLER_BARGE, HANDLER_RUNC, HANDLER_SANDBOX, K8S_NS};
use crate::sys::{self, Proc};
use crate::wasm_cases;

/// One pod case.
pub struct PodCase {
    pub name: &'static str,
    pub timeout: Duration,
    pub run: fn(&CriContainerd) -> Result<()>,
}

/// The pod cases for a containerd with these CRI handlers, in the order
/// they run: the Sandbox API ones only where `barge-sandbox` exists.
pub fn cases(handlers: &[&str]) -> Vec<PodCase> {
    let mut v = vec![
        PodCase {
            name: "pods-one-shim",
            timeout: Duration::from_secs(240),
            run: pods_one_shim,
        },
        PodCase {
            name: "mixed-pod",
            timeout: Duration::from_secs(120),
            run: mixed_pod,
        },
    ];
    if handlers.contains(&HANDLER_SANDBOX) {
        v.extend([
            PodCase {
                name: "sandbox-api",
                timeout: Duration::from_secs(120),
                run: sandbox_api,
            },
            PodCase {
                name: "sandbox-api-10-pods",
                timeout: Duration::from_secs(180),
                run: sandbox_api_10_pods,
            },
            PodCase {
                name: "sandbox-api-cri-sysctls",
                timeout: Duration::from_secs(60),
                run: sandbox_api_cri_sysctls,
            },
            PodCase {
                name: "sandbox-api-bad-sysctl",
                timeout: Duration::from_secs(90),
                run: sandbox_api_bad_sysctl,
            },
        ]);
    }
    v
}

/// The sandboxer of [`HANDLER_SANDBOX`] in containerd's config.
const SHIM_SANDBOXER: &str = "shim";
/// What barge's namespace holder is called in `ps`: `barge-pod <pod id>`,
/// one string in its command line.
const HOLDER: &str = "barge-pod";
/// The pause image's program.
const PAUSE: &str = "/pause";

/// Whether `p` is barge's holder of pod `pod`.
fn is_holder_of(p: &Proc, pod: &str) -> bool {
    p.argv.join(" ") == format!("{HOLDER} {pod}")
}

/// The pods of a case: stopped and removed when dropped, pass or fail.
struct Pods<'a> {
    cri: &'a CriContainerd,
    ids: Vec<String>,
}

impl<'a> Pods<'a> {
    fn new(cri: &'a CriContainerd) -> Pods<'a> {
        Pods {
            cri,
            ids: Vec::new(),
        }
    }

    /// `crictl runp` under `handler`: the pod's id.
    fn run(&mut self, handler: &str, config: &Path) -> Result<String> {
        let id = self
            .cri
            .run_pod(handler, config)
            .with_context(|| format!("run a pod under {handler}"))?;
        self.ids.push(id.clone());
        Ok(id)
    }

    /// Stops and removes every pod, in the order they were made; stops at
    /// the first that fails (the rest go on drop).
    fn remove_all(&mut self) -> Result<()> {
        while let Some(id) = self.ids.first().cloned() {
            self.cri
                .remove_pod(&id)
                .with_context(|| format!("remove pod {id}"))?;
            self.ids.remove(0);
        }
        Ok(())
    }
}

impl Drop for Pods<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.cri.crictl(&["rmp", "-f", id]).run();
        }
    }
}

/// A cgroup tree the case owns, as the kubelet owns a pod's cgroup parent:
/// CRI and the runtimes make what is below it, and never remove it.
struct CgroupTree {
    /// Relative to the hierarchies' roots, without a leading `/`.
    rel: String,
}

impl CgroupTree {
    /// `barge-it-<instance>-pods`, emptied of what a killed run left.
    fn new(cri: &CriContainerd) -> CgroupTree {
        let tree = CgroupTree {
            rel: format!("barge-it-{}-pods", cri.cd.dirs.name),
        };
        tree.clear();
        tree
    }

    /// The cgroup parent of a pod (as CRI's `linux.cgroup_parent` takes it).
    fn parent(&self, name: &str) -> String {
        format!("/{}/{name}", self.rel)
    }

    fn clear(&self) {
        sys::remove_cgroups(&sys::cgroup_dirs(&self.rel));
    }

    /// Removes the tree; fails when something of it stays (a cgroup that
    /// still has processes).
    fn remove(&self) -> Result<()> {
        self.clear();
        let left = sys::cgroup_dirs(&self.rel);
        ensure!(left.is_empty(), "cgroups left under {left:?}");
        Ok(())
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The pid CRI reports for a pod (`inspectp`'s `info.pid`): its pause
/// container's init, or barge's holder.
fn pod_pid(cri: &CriContainerd, pod: &str) -> Result<u32> {
    let v = cri.inspect(pod, true)?;
    json_pid(&v).with_context(|| format!("no info.pid for pod {pod}: {v}"))
}

/// A running container's init pid (`inspect`'s `info.pid`).
fn container_pid(cri: &CriContainerd, id: &str) -> Result<u32> {
    let v = cri.inspect(id, false)?;
    json_pid(&v).with_context(|| format!("no info.pid for container {id}: {v}"))
}

fn json_pid(v: &Value) -> Option<u32> {
    v["info"]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
}

fn proc_of(pid: u32) -> Result<Proc> {
    sys::process(pid).with_context(|| format!("process {pid} is gone"))
}

/// The shim among this containerd's shims that is the parent of `pid`.
fn shim_of(shims: &[Proc], pid: u32) -> Result<u32> {
    let p = proc_of(pid)?;
    ensure!(
        shims.iter().any(|s| s.pid == p.ppid),
        "the parent of {pid} ({}) is {}, which is none of the shims {:?}",
        p.argv.join(" "),
        p.ppid,
        shims.iter().map(|s| s.pid).collect::<Vec<_>>()
    );
    Ok(p.ppid)
}

/// The children of `parents` that run `program` (argv[0] or its name).
fn children_running(parents: &BTreeSet<u32>, program: &str) -> Vec<Proc> {
    sys::processes()
        .into_iter()
        .filter(|p| p.state != 'Z' && parents.contains(&p.ppid))
        .filter(|p| p.argv.first().is_some_and(|a| a == program) || p.name() == program)
        .collect()
}

/// The namespaces a pod's containers share with its pause or holder.
const SHARED_NS: [&str; 4] = ["net", "ipc", "uts", "pid"];

/// `/proc/<pid>/ns/<kind>`'s link (`net:[4026532182]`).
fn ns_link(pid: u32, kind: &str) -> Result<String> {
    let p = format!("/proc/{pid}/ns/{kind}");
    Ok(std::fs::read_link(&p)
        .with_context(|| format!("readlink {p}"))?
        .to_string_lossy()
        .into_owned())
}

/// The pid of `pid` in its own PID namespace (the last of `NSpid`).
fn pid_in_namespace(pid: u32) -> Result<u32> {
    let p = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last()?.parse().ok())
        .with_context(|| format!("no NSpid in {p}"))
}

/// The containers (and tasks) containerd has in `k8s.io`.
fn containerd_containers(cri: &CriContainerd) -> Result<BTreeSet<String>> {
    Ok(cri.cd.leftovers(K8S_NS)?.1.into_iter().collect())
}

/// A root of a cgroup v1 hierarchy that has `controller`.
fn v1_root(controller: &str) -> Option<PathBuf> {
    sys::cgroup_roots().into_iter().find(|r| {
        r.file_name()
            .is_some_and(|n| n.to_string_lossy().split(',').any(|c| c == controller))
    })
}

/// A cgroup's CPU time in ns: `cpuacct.usage` (v1), or `usage_usec` of
/// `cpu.stat` (v2).
fn cgroup_cpu_ns(rel: &str) -> Result<u64> {
    let rel = rel.trim_start_matches('/');
    if let Some(root) = v1_root("cpuacct") {
        let p = root.join(rel).join("cpuacct.usage");
        let text = std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
        return text
            .trim()
            .parse()
            .with_context(|| format!("{}: {text:?}", p.display()));
    }
    let p = Path::new("/sys/fs/cgroup").join(rel).join("cpu.stat");
    let text = std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|us| us * 1000)
        .with_context(|| format!("no usage_usec in {}", p.display()))
}

/// `pids.current` of a cgroup in the v1 `pids` hierarchy.
fn cgroup_pids(rel: &str) -> Result<u64> {
    let root = v1_root("pids").context("no cgroup v1 pids hierarchy")?;
    let p = root.join(rel.trim_start_matches('/')).join("pids.current");
    let text = std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: {text:?}", p.display()))
}

/// A container's `cgroupsPath`, as CRI put it in its spec.
fn container_cgroup(cri: &CriContainerd, id: &str) -> Result<String> {
    let v = cri.inspect(id, false)?;
    v["info"]["runtimeSpec"]["linux"]["cgroupsPath"]
        .as_str()
        .map(String::from)
        .with_context(|| format!("no cgroupsPath in the spec of {id}"))
}

/// The stdout of an ExecSync that must exit 0, trimmed.
fn exec_out(cri: &CriContainerd, id: &str, command: &[&str]) -> Result<String> {
    let (out, code) = cri.exec_sync(id, command)?;
    ensure!(code == 0, "exec {command:?} in {id}: {}", out.describe());
    Ok(out.stdout.trim().to_string())
}

// ---------------------------------------------------------------------
// pods-one-shim, sandbox-api-10-pods

/// What [`many_pods`] saw.
struct Many {
    handler: String,
    pods: usize,
    shims: usize,
    /// The pause (or holder) process of each pod, by pod id.
    anchors: BTreeMap<String, Proc>,
    /// The containers containerd has while the pods run.
    containerd_containers: BTreeSet<String>,
    /// The containers CRI made.
    containers: BTreeSet<String>,
    /// The shims' resident memory, summed.
    shim_rss_kib: u64,
    create: Duration,
    remove: Duration,
}

impl Many {
    fn summary(&self) -> String {
        format!(
            "{}: {} shims for {} pods of {} containers, {} MiB RSS in the shims; made in {:.1}s, removed in {:.1}s",
            self.handler,
            self.shims,
            self.pods,
            self.containers.len() / self.pods.max(1),
            self.shim_rss_kib / 1024,
            self.create.as_secs_f64(),
            self.remove.as_secs_f64()
        )
    }
}

/// Makes `pods` pods of `containers` sleeping busybox containers under
/// `handler`, checks that each pod is served by a shim of its own that is
/// the parent of all its processes (the pause container's or the holder's
/// too), then removes them.
fn many_pods(cri: &CriContainerd, handler: &str, pods: usize, containers: usize) -> Result<Many> {
    poll(
        "the shims of earlier pods to exit",
        Duration::from_secs(5),
        || Ok(cri.cd.shims().is_empty().then_some(())),
    )?;
    let mut made = Pods::new(cri);
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..pods {
        let cfg = cri.pod_config(&format!("many-{handler}-{i}"), |_| {})?;
        let pod = made.run(handler, &cfg)?;
        let mut ids = Vec::new();
        for j in 0..containers {
            let c =
                cri.container_config(&format!("c{j}"), &cri.busybox, &["sleep", "3600"], |_| {})?;
            ids.push(cri.run_container(&pod, &c, &cfg)?);
        }
        members.insert(pod, ids);
    }
    let create = started.elapsed();

    let shims = cri.cd.shims();
    let mut anchors = BTreeMap::new();
    let mut shim_of_pod: BTreeMap<u32, String> = BTreeMap::new();
    for (pod, ids) in &members {
        let anchor = pod_pid(cri, pod)?;
        let shim = shim_of(&shims, anchor).with_context(|| format!("pod {pod}"))?;
        for id in ids {
            let pid = container_pid(cri, id)?;
            let parent = shim_of(&shims, pid).with_context(|| format!("container {id}"))?;
            ensure!(
                parent == shim,
                "pod {pod}: container {id} (pid {pid}) is a child of shim {parent}, its pod's pid {anchor} of shim {shim}"
            );
        }
        if let Some(other) = shim_of_pod.insert(shim, pod.clone()) {
            bail!("pods {other} and {pod} share shim {shim}");
        }
        if handler == HANDLER_SANDBOX {
            holder_sees_nothing(anchor).with_context(|| format!("pod {pod}'s holder"))?;
        }
        anchors.insert(pod.clone(), proc_of(anchor)?);
    }
    let shim_rss_kib = shims
        .iter()
        .map(|s| sys::vm_rss_kib(s.pid).unwrap_or(0))
        .sum();
    let containerd_containers = containerd_containers(cri)?;

    let started = Instant::now();
    made.remove_all()?;
    let remove = started.elapsed();
    Ok(Many {
        handler: handler.to_string(),
        pods,
        shims: shims.len(),
        anchors,
        containerd_containers,
        containers: members.into_values().flatten().collect(),
        shim_rss_kib,
        create,
        remove,
    })
}

/// How many pods the many-pod cases make.
const PODS: usize = 10;

/// Checks that every pod of `m` has a pause container of its own, in its
/// shim, and that containerd has it as a container.
fn check_pause_per_pod(m: &Many) -> Result<()> {
    ensure!(
        m.shims == m.pods,
        "{}: {} shims for {} pods",
        m.handler,
        m.shims,
        m.pods
    );
    for (pod, p) in &m.anchors {
        ensure!(
            p.argv.first().map(String::as_str) == Some(PAUSE),
            "{}: pod {pod}'s pid runs {:?}, not {PAUSE}",
            m.handler,
            p.argv
        );
        ensure!(
            m.containerd_containers.contains(pod),
            "{}: containerd has no pause container {pod}",
            m.handler
        );
    }
    Ok(())
}

/// `pods-one-shim`: 10 pods of 3 containers under runc-v2, then under
/// barge: one shim per pod, parent of the pod's containers and its pause.
fn pods_one_shim(cri: &CriContainerd) -> Result<()> {
    let runc = many_pods(cri, HANDLER_RUNC, PODS, 3)?;
    check_pause_per_pod(&runc).context("the runc-v2 reference")?;
    let barge = many_pods(cri, HANDLER_BARGE, PODS, 3)?;
    check_pause_per_pod(&barge)?;
    println!("        {}", runc.summary());
    println!("        {}", barge.summary());
    Ok(())
}

/// barge's holder (pid 1 of a pod, which its containers may see) is in
/// an empty root that no longer exists, so `/proc/1/root` leads nowhere.
fn holder_sees_nothing(pid: u32) -> Result<()> {
    let root = format!("/proc/{pid}/root");
    let target = std::fs::read_link(&root).with_context(|| format!("readlink {root}"))?;
    let entries = std::fs::read_dir(&root)
        .with_context(|| format!("list {root}"))?
        .count();
    ensure!(
        entries == 0 && target.to_string_lossy().ends_with("(deleted)"),
        "{root} is {} with {entries} entries; expected an empty, deleted directory",
        target.display()
    );
    Ok(())
}

/// `sandbox-api-10-pods`: 10 pods of 2 containers under barge-sandbox: 10
/// shims, each holding one pod with a holder and no pause container.
fn sandbox_api_10_pods(cri: &CriContainerd) -> Result<()> {
    let m = many_pods(cri, HANDLER_SANDBOX, PODS, 2)?;
    ensure!(m.shims == PODS, "{} shims for {PODS} pods", m.shims);
    for (pod, p) in &m.anchors {
        ensure!(
            is_holder_of(p, pod),
            "pod {pod}'s pid runs {:?}, not `{HOLDER} {pod}`",
            p.argv
        );
    }
    let sandboxes: Vec<&String> = m
        .anchors
        .keys()
        .filter(|p| m.containerd_containers.contains(*p))
        .collect();
    ensure!(
        sandboxes.is_empty() && m.containerd_containers == m.containers,
        "containerd has containers {:?}; CRI made {:?} (pause containers: {sandboxes:?})",
        m.containerd_containers,
        m.containers
    );
    println!(
        "        {}; {} holders, 0 pause containers",
        m.summary(),
        m.anchors.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------
// mixed-pod

/// The Wasm image, with the test programs at `/` and `/hello.wasm` as its
/// entrypoint (platform `wasi/wasm32`).
const WASM_TAR: &str = "wasm-hello.tar";
/// What `/hello.wasm` prints with no arguments.
const WASM_HELLO: &str = "hello from wasm\n";
/// The exit code the second Wasm container asks for (`exit 7`).
const WASM_EXIT: i64 = 7;

/// Imports the Wasm image into CRI's namespace, unpacked (see the module
/// doc), unless it is there.
fn import_wasm(cri: &CriContainerd) -> Result<()> {
    let have = cri.cd.ctr(K8S_NS).args(["images", "ls", "-q"]).ok()?;
    if have.stdout.lines().any(|l| l == wasm_cases::HELLO) {
        return Ok(());
    }
    cri.cd
        .ctr(K8S_NS)
        .args(["images", "import", "--local"])
        .arg(wasm_cases::image_tar(WASM_TAR)?)
        .timeout(Duration::from_secs(60))
        .ok()
        .context("import the Wasm image into k8s.io")?;
    Ok(())
}

/// `crictl create` (no pull: the image was imported, and its registry
/// host has no mirror here) and `crictl start`: the container's id.
fn run_imported(
    cri: &CriContainerd,
    pod: &str,
    container: &Path,
    pod_config: &Path,
) -> Result<String> {
    let (c, p) = (container.to_string_lossy(), pod_config.to_string_lossy());
    let id = cri
        .crictl(&["create", pod, &c, &p])
        .ok()?
        .stdout
        .trim()
        .to_string();
    cri.crictl(&["start", &id]).ok()?;
    Ok(id)
}

/// An exited container: exit code, CRI's reason, and its logs.
#[derive(Debug)]
struct Exited {
    code: i64,
    reason: String,
    stdout: String,
    stderr: String,
}

fn exited(cri: &CriContainerd, id: &str) -> Result<Exited> {
    let v = cri.wait_container_state(id, "CONTAINER_EXITED")?;
    let logs = cri.logs(id)?;
    Ok(Exited {
        code: v["status"]["exitCode"].as_i64().unwrap_or(-1),
        reason: v["status"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        stdout: logs.stdout,
        stderr: logs.stderr,
    })
}

/// What a mixed pod showed.
#[derive(Debug)]
struct Mixed {
    pod: String,
    hello: (String, Exited),
    exit: (String, Exited),
    sidecar: String,
    /// The sidecar's ExecSync: the output of one, the exit code of another.
    exec: (String, i32),
    streamed: String,
    /// The shims while the pod ran.
    shims: Vec<u32>,
    /// The parent of the sidecar's init.
    sidecar_shim: u32,
}

/// A pod under `handler` with two Wasm containers (`/hello.wasm` with no
/// arguments, and with `exit 7`) and a busybox sidecar that is exec'd into.
fn mixed_run(cri: &CriContainerd, handler: &str) -> Result<Mixed> {
    let cfg = cri.pod_config(&format!("mixed-{handler}"), |_| {})?;
    let hello_cfg = cri.container_config("wasm-hello", wasm_cases::HELLO, &[], |_| {})?;
    let exit_cfg = cri.container_config("wasm-exit", wasm_cases::HELLO, &[], |v| {
        v["args"] = json!(["exit", WASM_EXIT.to_string()]);
    })?;
    let sidecar_cfg = cri.container_config(
        "sidecar",
        &cri.busybox,
        &["sh", "-c", "echo sidecar up; exec sleep 3600"],
        |_| {},
    )?;
    let mut pods = Pods::new(cri);
    let pod = pods.run(handler, &cfg)?;
    let sidecar = cri.run_container(&pod, &sidecar_cfg, &cfg)?;
    let hello = run_imported(cri, &pod, &hello_cfg, &cfg)?;
    let exit = run_imported(cri, &pod, &exit_cfg, &cfg)?;
    let hello_exited = exited(cri, &hello)?;
    let exit_exited = exited(cri, &exit)?;
    // crictl prints no output for a command that fails: two execs.
    let (out, _) = cri.exec_sync(&sidecar, &["sh", "-c", "echo $((6 * 7))"])?;
    let (_, code) = cri.exec_sync(&sidecar, &["sh", "-c", "exit 3"])?;
    let streamed = cri
        .exec(&sidecar, &["sh", "-c", "echo streamed"])?
        .ok()?
        .stdout
        .trim()
        .to_string();
    let shims: Vec<Proc> = cri.cd.shims();
    let sidecar_shim = shim_of(&shims, container_pid(cri, &sidecar)?)?;
    pods.remove_all()?;
    Ok(Mixed {
        pod,
        hello: (hello, hello_exited),
        exit: (exit, exit_exited),
        sidecar,
        exec: (out.stdout.trim().to_string(), code),
        streamed,
        shims: shims.iter().map(|s| s.pid).collect(),
        sidecar_shim,
    })
}

/// The executor barge logged for container `id` and the pid of the shim
/// that logged it: `creating container <id> with executor <e>` ... `pid=N`.
fn chosen_executor(lines: &[String], id: &str) -> Option<(String, u32)> {
    let marker = format!("creating container {id} with executor ");
    lines.iter().find_map(|l| {
        let rest = &l[l.find(&marker)? + marker.len()..];
        let executor: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let pid = l.rsplit_once(" pid=")?.1.trim().parse().ok()?;
        Some((executor, pid))
    })
}

/// `mixed-pod`: the Wasm containers print and exit as the program says,
/// the sidecar answers exec, one shim serves the pod, and it chose wasm for
/// the Wasm containers and native for the others; under runc-v2 the Wasm
/// containers cannot run.
fn mixed_pod(cri: &CriContainerd) -> Result<()> {
    import_wasm(cri)?;
    let runc = mixed_run(cri, HANDLER_RUNC).context("under runc-v2")?;
    for (id, e) in [&runc.hello, &runc.exit] {
        ensure!(
            e.code != 0 && !e.stdout.contains(WASM_HELLO) && e.stderr.contains("exec format error"),
            "runc-v2 ran Wasm container {id}: {e:?}"
        );
    }
    ensure!(
        runc.exec == ("42".to_string(), 3) && runc.streamed == "streamed",
        "runc-v2's sidecar: exec {:?}, streamed {:?}",
        runc.exec,
        runc.streamed
    );
    let mut handlers = vec![HANDLER_BARGE];
    if cri.handlers.contains(&HANDLER_SANDBOX) {
        handlers.push(HANDLER_SANDBOX);
    }
    for h in handlers {
        let m = mixed_run(cri, h).with_context(|| format!("under {h}"))?;
        check_mixed(cri, h, &m, &runc).with_context(|| format!("under {h}: {m:?}"))?;
    }
    Ok(())
}

fn check_mixed(cri: &CriContainerd, handler: &str, m: &Mixed, runc: &Mixed) -> Result<()> {
    let (hello, e) = &m.hello;
    ensure!(
        e.code == 0 && e.reason == "Completed" && e.stdout == WASM_HELLO && e.stderr.is_empty(),
        "Wasm container {hello}: {e:?}"
    );
    let (exit, e) = &m.exit;
    ensure!(
        e.code == WASM_EXIT && e.reason == "Error",
        "Wasm container {exit} asked for exit {WASM_EXIT}: {e:?}"
    );
    ensure!(
        m.exec == runc.exec && m.streamed == runc.streamed,
        "the sidecar's exec gave {:?} and {:?}, under runc-v2 {:?} and {:?}",
        m.exec,
        m.streamed,
        runc.exec,
        runc.streamed
    );
    ensure!(
        m.shims == [m.sidecar_shim],
        "shims {:?} while the pod ran; the sidecar's parent is {}",
        m.shims,
        m.sidecar_shim
    );
    let lines = cri.cd.shim_log_lines();
    let mut expected = vec![
        (hello.as_str(), "wasm"),
        (exit.as_str(), "wasm"),
        (m.sidecar.as_str(), "native"),
    ];
    if handler == HANDLER_BARGE {
        // The pause container, in the same shim.
        expected.push((m.pod.as_str(), "native"));
    }
    for (id, executor) in expected {
        let (chosen, shim) = chosen_executor(&lines, id)
            .with_context(|| format!("no \"creating container {id} with executor\" line"))?;
        ensure!(
            chosen == executor && shim == m.sidecar_shim,
            "container {id}: executor {chosen} in shim {shim}; expected {executor} in shim {}",
            m.sidecar_shim
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------
// sandbox-api

/// The pod of `sandbox-api`: its hostname and namespaced sysctls (one of
/// the network namespace, one of IPC), which differ from the host's.
const POD_HOSTNAME: &str = "barge-sb";
const SYSCTLS: [(&str, &str); 2] = [
    ("net.ipv4.ip_unprivileged_port_start", "1000"),
    ("kernel.shm_rmid_forced", "1"),
];
const HTTP_PORT: u16 = 8080;
/// The pod's DNS config: written into its `/etc/resolv.conf`, never asked.
const DNS_SERVER: &str = "127.0.0.53";
const DNS_SEARCH: &str = "barge.test";
/// A file one container writes into the pod's `/dev/shm` and the other reads.
const SHM_FILE: &str = "/dev/shm/barge-it";

fn sysctl_file(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// The status line and body of `GET /` on `addr`.
fn http_get(addr: SocketAddr) -> Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET / HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {text:?}"))?;
    Ok((
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    ))
}

/// What [`shared_pod`] saw.
#[derive(Debug)]
struct SharedPod {
    pod: String,
    /// `ps` in a container: what runs as pid 1 of the pod.
    pid1: String,
    /// What containerd has as containers while the pod runs.
    containerd_containers: BTreeSet<String>,
    containers: Vec<String>,
    /// Processes running the pause image in the pod's shim.
    pause_processes: usize,
    /// The pod's pid, as CRI reports it, and the process.
    anchor: Proc,
    /// hostname and the sysctls, read in each container.
    seen: Vec<String>,
    body: String,
    run: Duration,
    remove: Duration,
}

/// A pod with a hostname, namespaced sysctls, a cgroup parent of the
/// case's own and a pod PID namespace, with two busybox containers (one
/// serves HTTP), under `handler`. Checks what must hold under any
/// handler, then that the pod goes whole when removed.
fn shared_pod(cri: &CriContainerd, tree: &CgroupTree, handler: &str) -> Result<SharedPod> {
    let parent = tree.parent(handler);
    let name = format!("shared-{handler}");
    let cfg = cri.pod_config(&name, |v| {
        v["hostname"] = json!(POD_HOSTNAME);
        v["linux"] = json!({
            "cgroup_parent": parent,
            "sysctls": SYSCTLS.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            // POD (0) for each: the containers share the pod's.
            "security_context": { "namespace_options": { "network": 0, "pid": 0, "ipc": 0 } },
        });
        v["dns_config"] = json!({ "servers": [DNS_SERVER], "searches": [DNS_SEARCH] });
    })?;
    let shell_cfg = cri.container_config("shell", &cri.busybox, &["sleep", "3600"], |_| {})?;
    let web_cfg = cri.container_config(
        "web",
        &cri.busybox,
        &[
            "sh",
            "-c",
            &format!(
                "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p {HTTP_PORT} -h /www"
            ),
        ],
        |_| {},
    )?;
    let mut pods = Pods::new(cri);
    let started = Instant::now();
    let pod = pods.run(handler, &cfg)?;
    let run = started.elapsed();
    let shell = cri.run_container(&pod, &shell_cfg, &cfg)?;
    let web = cri.run_container(&pod, &web_cfg, &cfg)?;
    let containers = vec![shell.clone(), web.clone()];
    let listed: BTreeSet<String> = cri
        .crictl(&["ps", "-a", "-q"])
        .ok()?
        .stdout
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    ensure!(
        listed == containers.iter().cloned().collect(),
        "crictl ps -a lists {listed:?}; the pod has {containers:?}"
    );

    // The pod's pid and shim.
    let shims = cri.cd.shims();
    ensure!(
        shims.len() == 1,
        "{} shims for one pod: {:?}",
        shims.len(),
        shims.iter().map(|s| s.pid).collect::<Vec<_>>()
    );
    let anchor_pid = pod_pid(cri, &pod)?;
    let anchor = proc_of(anchor_pid)?;
    let shim = shim_of(&shims, anchor_pid)?;
    ensure!(
        pid_in_namespace(anchor_pid)? == 1,
        "the pod's pid {anchor_pid} ({:?}) is not pid 1 of its PID namespace",
        anchor.argv
    );

    // Namespaces: the containers' are the pod's, which are not the host's.
    let pod_v = cri.inspect(&pod, true)?;
    let netns = pod_v["info"]["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .map(PathBuf::from)
        .with_context(|| format!("no network namespace path in the pod's spec: {pod_v}"))?;
    let netns_ino = std::fs::metadata(&netns)
        .with_context(|| format!("stat the pod's netns {}", netns.display()))?
        .ino();
    ensure!(
        ns_link(anchor_pid, "net")? == format!("net:[{netns_ino}]"),
        "the pod's pid is not in the netns {} that CRI made",
        netns.display()
    );
    let me = std::process::id();
    for kind in SHARED_NS {
        let pod_ns = ns_link(anchor_pid, kind)?;
        ensure!(
            pod_ns != ns_link(me, kind)?,
            "the pod has the host's {kind} namespace"
        );
        for id in &containers {
            let pid = container_pid(cri, id)?;
            ensure!(
                shim_of(&shims, pid)? == shim,
                "container {id} is not a child of the pod's shim {shim}"
            );
            let ns = ns_link(pid, kind)?;
            ensure!(
                ns == pod_ns,
                "container {id} has {kind} namespace {ns}, the pod {pod_ns}"
            );
        }
    }

    // Hostname and sysctls, in each container (ExecSync).
    let mut seen = Vec::new();
    for id in &containers {
        let hostname = exec_out(cri, id, &["hostname"])?;
        ensure!(
            hostname == POD_HOSTNAME,
            "hostname {hostname:?} in {id}, the pod asks for {POD_HOSTNAME:?}"
        );
        seen.push(hostname);
        for (key, value) in SYSCTLS {
            let file = sysctl_file(key);
            let got = exec_out(cri, id, &["cat", &file])?;
            ensure!(
                got == value,
                "{key} is {got:?} in {id}, the pod asks for {value:?}"
            );
            let host = std::fs::read_to_string(&file).unwrap_or_default();
            ensure!(host.trim() != value, "the host's {key} is {value} too");
            seen.push(got);
        }
    }

    // The pod's files: /etc/hostname, /etc/hosts (the host's), the DNS
    // config, and one /dev/shm for the pod.
    exec_out(
        cri,
        &shell,
        &["sh", "-c", &format!("echo shared > {SHM_FILE}")],
    )?;
    let host_hosts = std::fs::read_to_string("/etc/hosts")?;
    for id in &containers {
        let hostname = exec_out(cri, id, &["cat", "/etc/hostname"])?;
        ensure!(
            hostname == POD_HOSTNAME,
            "/etc/hostname in {id} is {hostname:?}"
        );
        let resolv = exec_out(cri, id, &["cat", "/etc/resolv.conf"])?;
        ensure!(
            resolv
                .lines()
                .any(|l| l == format!("nameserver {DNS_SERVER}"))
                && resolv.lines().any(|l| l == format!("search {DNS_SEARCH}")),
            "/etc/resolv.conf in {id} lacks the pod's DNS config: {resolv:?}"
        );
        let hosts = exec_out(cri, id, &["cat", "/etc/hosts"])?;
        ensure!(
            hosts == host_hosts.trim(),
            "/etc/hosts in {id} is {hosts:?}, the host's {host_hosts:?}"
        );
        let shm = exec_out(cri, id, &["cat", SHM_FILE])?;
        ensure!(shm == "shared", "{SHM_FILE} in {id}: {shm:?}");
        seen.extend([hostname, resolv, hosts, shm]);
    }

    // pid 1 of the pod, as a container sees it; a streaming exec.
    let ps = exec_out(cri, &shell, &["ps", "-o", "pid,args"])?;
    let pid1 = ps
        .lines()
        .find_map(|l| l.trim().strip_prefix("1 "))
        .map(|a| a.trim().to_string())
        .with_context(|| format!("no pid 1 in ps: {ps}"))?;
    let streamed = cri.exec(&shell, &["sh", "-c", "echo streamed"])?.ok()?;
    ensure!(
        streamed.stdout.trim() == "streamed",
        "crictl exec: {}",
        streamed.describe()
    );

    // Pod stats: the pod cgroup's CPU time, read live: no less than what
    // the containers had used before, no more than the pod's after.
    let cgroups = containers
        .iter()
        .map(|id| container_cgroup(cri, id))
        .collect::<Result<Vec<_>>>()?;
    for c in &cgroups {
        ensure!(
            c.starts_with(&format!("{parent}/")),
            "a container's cgroup {c} is not under the pod's {parent}"
        );
    }
    let before: u64 = cgroups
        .iter()
        .map(|c| cgroup_cpu_ns(c))
        .sum::<Result<u64>>()?;
    let stats: Value =
        serde_json::from_str(&cri.crictl(&["statsp", "-o", "json", &pod]).ok()?.stdout)
            .context("parse crictl statsp")?;
    let after = cgroup_cpu_ns(&parent)?;
    let s = &stats["stats"][0];
    let number = |v: &Value| {
        v["value"]
            .as_str()
            .and_then(|n| n.parse::<u64>().ok())
            .or_else(|| v["value"].as_u64())
    };
    let cpu = number(&s["linux"]["cpu"]["usageCoreNanoSeconds"]);
    let memory = number(&s["linux"]["memory"]["workingSetBytes"]);
    ensure!(
        s["attributes"]["id"] == pod.as_str()
            && cpu.is_some_and(|c| before <= c && c <= after)
            && memory.is_some_and(|m| m > 0),
        "crictl statsp: cpu {cpu:?} ns (the containers' cgroups had {before}, the pod's then {after}), working set {memory:?}: {s}"
    );

    // The pod's IP, from the host.
    let ip = pod_v["status"]["network"]["ip"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .with_context(|| format!("no pod IP: {}", pod_v["status"]))?;
    let addr: SocketAddr = format!("{ip}:{HTTP_PORT}").parse()?;
    let (status, body) = poll("the pod's web server", Duration::from_secs(10), || {
        Ok(http_get(addr).ok())
    })?;
    ensure!(
        status.contains(" 200") && body == format!("{POD_HOSTNAME}\n"),
        "GET http://{addr}/: {status:?} {body:?}"
    );

    let shim_set = BTreeSet::from([shim]);
    let pause_processes = children_running(&shim_set, PAUSE).len();
    let containerd_containers = containerd_containers(cri)?;

    // Remove it: the pod's pid, its shim, the netns and the cgroups go.
    let started = Instant::now();
    pods.remove_all()?;
    let remove = started.elapsed();
    poll(
        "the pod's processes to exit",
        Duration::from_secs(5),
        || {
            Ok(
                (!sys::alive(anchor_pid) && !sys::alive(shim) && cri.cd.shims().is_empty())
                    .then_some(()),
            )
        },
    )
    .with_context(|| {
        format!(
            "pid {anchor_pid} alive: {}, shim {shim} alive: {}",
            sys::alive(anchor_pid),
            sys::alive(shim)
        )
    })?;
    ensure!(
        !netns.exists(),
        "the pod's netns {} is still there",
        netns.display()
    );
    for dir in [&cri.cd.root_dir, &cri.cd.state_dir] {
        let files = dir.join("io.containerd.grpc.v1.cri/sandboxes").join(&pod);
        ensure!(
            !files.exists(),
            "the pod's files are left: {}",
            files.display()
        );
    }
    let mut left: Vec<PathBuf> = cgroups.iter().flat_map(|c| sys::cgroup_dirs(c)).collect();
    left.extend(sys::cgroup_dirs(&format!("{parent}/{pod}")));
    ensure!(
        left.is_empty(),
        "cgroups of the pod's containers are left: {left:?}"
    );
    tree.remove()?;
    Ok(SharedPod {
        pod,
        pid1,
        containerd_containers,
        containers,
        pause_processes,
        anchor,
        seen,
        body,
        run,
        remove,
    })
}

/// SandboxMetrics through containerd's `shim` sandboxer: the pod cgroup's
/// numbers (pids exactly, as its `pids.current`).
fn check_sandbox_metrics(cri: &CriContainerd, pod: &str, parent: &str) -> Result<()> {
    let client = Client::connect(&cri.cd.address(), K8S_NS)?;
    let metric = client
        .sandbox_metrics(pod, SHIM_SANDBOXER)
        .map_err(|s| anyhow::anyhow!("Controller.Metrics of {pod}: {s}"))?;
    let data = metric.data.context("SandboxMetrics without data")?;
    if data.type_url.ends_with(CGROUPS_V1_METRICS) {
        let m: CgroupsV1Metrics = prost::Message::decode(data.value.as_slice())?;
        let pids = m.pids.map(|p| p.current);
        let want = Some(cgroup_pids(parent)?);
        ensure!(
            metric.id == pod && pids == want && m.memory.as_ref().and_then(|m| m.usage.as_ref()).is_some_and(|u| u.usage > 0),
            "SandboxMetrics of {pod}: id {:?}, pids {pids:?} (the pod cgroup has {want:?}), memory {:?}",
            metric.id,
            m.memory
        );
    } else {
        ensure!(
            metric.id == pod && !data.value.is_empty(),
            "SandboxMetrics of {pod}: id {:?}, {} ({} bytes)",
            metric.id,
            data.type_url,
            data.value.len()
        );
    }
    Ok(())
}

/// `sandbox-api`: the same pod under runc-v2 (a pause container holds its
/// namespaces) and under barge-sandbox (barge's holder does, and there is
/// no pause container); SandboxMetrics of a running pod.
fn sandbox_api(cri: &CriContainerd) -> Result<()> {
    let tree = CgroupTree::new(cri);
    let reference = shared_pod(cri, &tree, HANDLER_RUNC).context("under runc-v2")?;
    ensure!(
        reference.pid1.starts_with(PAUSE)
            && reference.pause_processes == 1
            && reference.containerd_containers.contains(&reference.pod),
        "runc-v2: pid 1 {:?}, {} pause processes, containerd's containers {:?}",
        reference.pid1,
        reference.pause_processes,
        reference.containerd_containers
    );
    let sb = shared_pod(cri, &tree, HANDLER_SANDBOX).context("under barge-sandbox")?;
    let holder = format!("{HOLDER} {}", sb.pod);
    ensure!(
        sb.pid1 == holder && is_holder_of(&sb.anchor, &sb.pod),
        "pid 1 of the pod is {:?} (CRI's pid runs {:?}), not {holder:?}",
        sb.pid1,
        sb.anchor.argv
    );
    let ours: BTreeSet<String> = sb.containers.iter().cloned().collect();
    ensure!(
        sb.pause_processes == 0 && sb.containerd_containers == ours,
        "{} pause processes; containerd has containers {:?}, CRI made {ours:?}",
        sb.pause_processes,
        sb.containerd_containers
    );
    ensure!(
        sb.seen == reference.seen && sb.body == reference.body,
        "barge-sandbox saw {:?} and served {:?}; runc-v2 {:?} and {:?}",
        sb.seen,
        sb.body,
        reference.seen,
        reference.body
    );

    // SandboxMetrics, which CRI's pod stats do not call (they read the
    // cgroup that SandboxStatus names), through containerd's controller.
    let parent = tree.parent("metrics");
    let cfg = cri.pod_config("sandbox-metrics", |v| {
        v["linux"] = json!({ "cgroup_parent": parent });
    })?;
    let c = cri.container_config("sleeper", &cri.busybox, &["sleep", "3600"], |_| {})?;
    let mut pods = Pods::new(cri);
    let pod = pods.run(HANDLER_SANDBOX, &cfg)?;
    cri.run_container(&pod, &c, &cfg)?;
    check_sandbox_metrics(cri, &pod, &parent)?;
    pods.remove_all()?;
    tree.remove()?;
    println!(
        "        runc-v2: runp {:.2}s, stopp+rmp {:.2}s; barge-sandbox: runp {:.2}s, stopp+rmp {:.2}s",
        reference.run.as_secs_f64(),
        reference.remove.as_secs_f64(),
        sb.run.as_secs_f64(),
        sb.remove.as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------
// sandbox-api-cri-sysctls

/// The sysctls CRI sets in a pod that sets none itself, from its config's
/// `enable_unprivileged_ports` and `enable_unprivileged_icmp` (on in this
/// config, and by default from containerd 2.0).
const CRI_SYSCTLS: [&str; 2] = [
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
];

/// The [`CRI_SYSCTLS`] in a container of a pod, under `handler`, that
/// asks for no sysctl.
fn default_sysctls(cri: &CriContainerd, handler: &str) -> Result<Vec<String>> {
    let cfg = cri.pod_config(&format!("defaults-{handler}"), |_| {})?;
    let c = cri.container_config("sleeper", &cri.busybox, &["sleep", "3600"], |_| {})?;
    let mut pods = Pods::new(cri);
    let pod = pods.run(handler, &cfg)?;
    let id = cri.run_container(&pod, &c, &cfg)?;
    let values = CRI_SYSCTLS
        .iter()
        .map(|k| exec_out(cri, &id, &["cat", &sysctl_file(k)]))
        .collect::<Result<Vec<_>>>()?;
    pods.remove_all()?;
    Ok(values)
}

/// `sandbox-api-cri-sysctls`: a pod that sets no sysctl has the same
/// unprivileged-port and ping sysctls under barge-sandbox as under runc-v2.
fn sandbox_api_cri_sysctls(cri: &CriContainerd) -> Result<()> {
    let runc = default_sysctls(cri, HANDLER_RUNC)?;
    let sb = default_sysctls(cri, HANDLER_SANDBOX)?;
    ensure!(
        runc == sb,
        "{CRI_SYSCTLS:?} are {sb:?} under barge-sandbox, {runc:?} under runc-v2 (CRI's enable_unprivileged_ports and enable_unprivileged_icmp)"
    );
    Ok(())
}

// ---------------------------------------------------------------------
// sandbox-api-bad-sysctl

/// Sysctls a pod cannot have: one no namespace holds (a pod would set the
/// host's), and a namespaced one with a value the kernel refuses.
const BAD_SYSCTLS: [(&str, &str); 2] = [
    ("kernel.panic", "10"),
    ("net.ipv4.ip_unprivileged_port_start", "not-a-number"),
];

/// The 64-hex id that follows `sandbox \"` in an error.
fn sandbox_id_in(text: &str) -> Option<String> {
    text.match_indices("sandbox ").find_map(|(i, m)| {
        let rest = text[i + m.len()..].trim_start_matches(['\\', '"']);
        let id: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        (id.len() == 64).then_some(id)
    })
}

/// After a RunPodSandbox that failed: no pod, netns, shim, holder, bundle
/// or shim socket of it is left.
fn nothing_left(cri: &CriContainerd, id: Option<&str>) -> Result<()> {
    let pods = cri.crictl(&["pods", "-q"]).ok()?.stdout;
    ensure!(pods.trim().is_empty(), "pods left: {pods}");
    let netns = cri.netns_files();
    ensure!(netns.is_empty(), "netns left: {netns:?}");
    poll("the shims to exit", Duration::from_secs(5), || {
        Ok(cri.cd.shims().is_empty().then_some(()))
    })
    .with_context(|| {
        format!(
            "shims left: {:?}",
            cri.cd
                .shims()
                .iter()
                .map(|s| s.argv.join(" "))
                .collect::<Vec<_>>()
        )
    })?;
    let holders: Vec<Proc> = sys::processes()
        .into_iter()
        .filter(|p| id.is_some_and(|id| is_holder_of(p, id)))
        .collect();
    ensure!(holders.is_empty(), "holders left: {holders:?}");
    if let Some(id) = id {
        let bundle = cri.cd.bundle(K8S_NS, id);
        ensure!(!bundle.exists(), "bundle left: {}", bundle.display());
        let socket = shim_socket(&cri.cd.address(), K8S_NS, id);
        ensure!(!socket.exists(), "shim socket left: {}", socket.display());
    }
    Ok(())
}

/// `sandbox-api-bad-sysctl`: every handler refuses the pod, names the
/// sysctl, changes nothing on the host and leaves nothing behind.
fn sandbox_api_bad_sysctl(cri: &CriContainerd) -> Result<()> {
    let before = cri.crictl(&["pods", "-q"]).ok()?.stdout;
    ensure!(
        before.trim().is_empty(),
        "pods from before the case are left: {before}"
    );
    let mut report = Vec::new();
    for (n, (key, value)) in BAD_SYSCTLS.iter().enumerate() {
        let file = sysctl_file(key);
        let host_before = std::fs::read_to_string(&file)?;
        for handler in [HANDLER_RUNC, HANDLER_BARGE, HANDLER_SANDBOX] {
            let mut sysctls = serde_json::Map::new();
            sysctls.insert(key.to_string(), json!(value));
            let cfg = cri.pod_config(&format!("bad-sysctl-{n}-{handler}"), |v| {
                v["linux"] = json!({ "sysctls": sysctls });
            })?;
            let out = cri
                .crictl(&["runp", "--runtime", handler, &cfg.to_string_lossy()])
                .run()?;
            let what = format!("{handler}, {key}={value}");
            let id = sandbox_id_in(&out.stderr);
            if out.success() {
                let _ = cri.crictl(&["rmp", "-f", out.stdout.trim()]).run();
                bail!("{what}: RunPodSandbox succeeded");
            }
            let message = out
                .stderr
                .lines()
                .find(|l| l.contains("level=fatal"))
                .unwrap_or(out.stderr.trim())
                .to_string();
            ensure!(
                message.contains(key) || message.contains(&key.replace('.', "/")),
                "{what}: the error does not name the sysctl: {message}"
            );
            nothing_left(cri, id.as_deref()).with_context(|| format!("{what}: {message}"))?;
            let host_after = std::fs::read_to_string(&file)?;
            ensure!(
                host_after == host_before,
                "{what}: the host's {key} changed from {host_before:?} to {host_after:?}"
            );
            let cause = message
                .rsplit_once("desc = ")
                .map_or(message.as_str(), |(_, c)| c);
            report.push(format!("{what}: {}", cause.trim_end_matches('"')));
        }
    }
    for r in report {
        println!("        {r}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_executor_and_the_shim() {
        let lines = vec![
            "time=\"t\" level=info msg=\"creating container abc with executor wasm\" runtime=io.containerd.barge.v1 pid=2929".to_string(),
            "time=\"t\" level=info msg=\"creating container abd with executor native\" runtime=io.containerd.barge.v1 pid=31".to_string(),
        ];
        assert_eq!(
            chosen_executor(&lines, "abc"),
            Some(("wasm".to_string(), 2929))
        );
        assert_eq!(
            chosen_executor(&lines, "abd"),
            Some(("native".to_string(), 31))
        );
        assert_eq!(chosen_executor(&lines, "ab"), None);
    }

    #[test]
    fn finds_the_sandbox_id_of_an_error() {
        let id = "a1bf0ffe5e6d548ffc7f8323bf8bfad42790a50a046b31424051a6dc128431ca";
        let err = format!(
            "rpc error: code = Unknown desc = failed to start sandbox \\\"{id}\\\": failed to start sandbox {id}: set the pod's sysctl"
        );
        assert_eq!(sandbox_id_in(&err).as_deref(), Some(id));
        assert_eq!(sandbox_id_in("failed to create sandbox: no"), None);
    }

    #[test]
    fn sandbox_cases_need_the_sandbox_handler() {
        let names = |h: &[&str]| cases(h).iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(names(&["runc", "barge"]), ["pods-one-shim", "mixed-pod"]);
        assert!(names(&["runc", "barge", "barge-sandbox"]).contains(&"sandbox-api-bad-sysctl"));
    }
}
