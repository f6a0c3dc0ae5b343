//! CRI: a private containerd with the CRI plugin on, a loopback registry
//! with the look-alike images critest pulls, CNI on a bridge of its own,
//! crictl helpers, and the leak check after every run.
//!
//! Each containerd ([`CriContainerd`], instance `k17`, `k21`, `k23`) has the
//! handlers `runc` (runc-v2) and `barge`, and from 2.3 on `barge-sandbox`
//! (barge with `sandboxer = "shim"`). Its `config_path` holds a `hosts.toml`
//! for every registry host the images name, each pointing at the
//! [`Registry`] as mirror and as server, so that no pull leaves the machine.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::cmd::{poll, Cmd, Output};
use crate::containerd::{
    config_version, create_dirs, kill_cgroup_members, runtime_state_parents, save_log, shim_socket,
    Containerd, Dirs, RUNC_RUNTIME, RUNTIME,
};
use crate::sys;

/// Where install.sh puts critest, crictl and the static busybox.
pub const CRI_BIN: &str = "/opt/barge-test/cri/bin";
/// Where build-cri-images.sh puts the look-alike images (`images.list`,
/// `hosts.list` and the OCI layouts); `$BARGE_IT_CRI_IMAGES` overrides it.
pub const CRI_IMAGES: &str = "/opt/barge-test/cri/images";
/// Debian's containernetworking-plugins.
pub const CNI_BIN: &str = "/usr/lib/cni";
/// The containerd namespace of everything CRI makes.
pub const K8S_NS: &str = "k8s.io";
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// libcni's and host-local's state, shared by every CNI user.
const CNI_STATE: &str = "/var/lib/cni";
/// The size of the SysV segments critest's HostIpc specs make with `ipcmk`.
const IPCMK_SEGMENT: u64 = 1 << 20;

pub const HANDLER_RUNC: &str = "runc";
pub const HANDLER_BARGE: &str = "barge";
/// barge with containerd's `shim` sandboxer (the Sandbox API), 2.3 on.
pub const HANDLER_SANDBOX: &str = "barge-sandbox";

/// The CRI handlers of containerd `version`: runc-v2 and barge, and from
/// 2.3 on barge through the Sandbox API.
pub fn handlers(version: &str) -> Vec<&'static str> {
    let mut h = vec![HANDLER_RUNC, HANDLER_BARGE];
    if config_version(version) >= 4 {
        h.push(HANDLER_SANDBOX);
    }
    h
}

fn cri_bin(name: &str) -> Result<PathBuf> {
    let p = Path::new(CRI_BIN).join(name);
    ensure!(
        p.is_file(),
        "{} is missing: run integration/scripts/install.sh",
        p.display()
    );
    Ok(p)
}

/// critest, checked to be installed.
pub fn critest_bin() -> Result<PathBuf> {
    cri_bin("critest")
}

/// The look-alike images that build-cri-images.sh made.
#[derive(Debug, Clone)]
pub struct CriImages {
    pub dir: PathBuf,
    /// The names critest pulls (`registry.k8s.io/pause:3.10`, ...).
    pub references: Vec<String>,
    /// The registry hosts of those names.
    pub hosts: Vec<String>,
}

fn list_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "read {}: run integration/scripts/build-cri-images.sh",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

impl CriImages {
    /// Reads `images.list` (`<reference> <oci-dir>:<tag>` a line) and
    /// `hosts.list` from [`CRI_IMAGES`] or `$BARGE_IT_CRI_IMAGES`.
    pub fn load() -> Result<CriImages> {
        let dir = std::env::var_os("BARGE_IT_CRI_IMAGES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CRI_IMAGES));
        let references: Vec<String> = list_lines(&dir.join("images.list"))?
            .iter()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        let mut hosts = list_lines(&dir.join("hosts.list"))?;
        // A pull of a name with no registry host goes to docker.io: it too
        // is sent to the loopback registry, so that nothing reaches out.
        if !hosts.iter().any(|h| h == "docker.io") {
            hosts.push("docker.io".into());
        }
        ensure!(
            !references.is_empty() && !hosts.is_empty(),
            "no images in {}: run integration/scripts/build-cri-images.sh",
            dir.display()
        );
        Ok(CriImages {
            dir,
            references,
            hosts,
        })
    }

    /// The first image whose repository's last component is `name`.
    fn named(&self, name: &str) -> Result<&str> {
        let suffix = format!("/{name}");
        self.references
            .iter()
            .map(String::as_str)
            .find(|r| {
                r.split([':', '@'])
                    .next()
                    .is_some_and(|n| n.ends_with(&suffix))
            })
            .with_context(|| format!("no {name} image in {}/images.list", self.dir.display()))
    }

    /// The pause look-alike for containerd `version`'s sandbox image: the
    /// tag that version pins by default, when there is one.
    pub fn pause(&self, version: &str) -> Result<&str> {
        let default = match config_version(version) {
            2 => "registry.k8s.io/pause:3.8",
            3 => "registry.k8s.io/pause:3.10",
            _ => "registry.k8s.io/pause:3.10.2",
        };
        match self.references.iter().find(|r| *r == default) {
            Some(r) => Ok(r),
            None => self.named("pause"),
        }
    }

    /// A busybox look-alike, for the pods of the crictl cases.
    pub fn busybox(&self) -> Result<&str> {
        self.named("busybox")
    }
}

/// A loopback `docker-registry` that holds the look-alike images; killed
/// and its storage removed on drop.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    dirs: Dirs,
    log: PathBuf,
    child: Option<Child>,
}

/// A port nobody listens on now (bound and released).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The status line of `GET <path>` on `addr`.
fn http_status(addr: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

impl Registry {
    /// Starts the registry (instance `kreg`) and pushes `images` into it
    /// with push-cri-images.sh.
    pub fn start(images: &CriImages) -> Result<Registry> {
        Self::start_named("kreg", images)
    }

    /// [`Registry::start`] as instance `name`: the bench's registry
    /// (`kbreg`) must not be the suite's, which may run at the same time.
    pub fn start_named(name: &str, images: &CriImages) -> Result<Registry> {
        ensure!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} is missing: run integration/scripts/install.sh"
        );
        let dirs = Dirs::new(name);
        dirs.clean_stale()?;
        create_dirs(&[&dirs.run, &dirs.lib])?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let config = dirs.run.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dirs.lib.join("storage").display()
            ),
        )?;
        let log = dirs.run.join("registry.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {REGISTRY_BIN}"))?;
        let mut r = Registry {
            addr,
            dirs,
            log,
            child: Some(child),
        };
        r.wait_ready()?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/push-cri-images.sh");
        let started = Instant::now();
        Cmd::new(&script)
            .arg(&r.addr)
            .arg(&images.dir)
            .timeout(Duration::from_secs(600))
            .ok()
            .context("push the look-alike images")?;
        eprintln!(
            "registry {}: {} images pushed in {:.1}s",
            r.addr,
            images.references.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(r)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let child = self.child.as_mut().expect("started");
        let addr = self.addr.clone();
        poll("the registry to answer", Duration::from_secs(20), || {
            if let Some(status) = child.try_wait()? {
                bail!("docker-registry exited with {status}");
            }
            Ok(http_status(&addr, "/v2/")
                .ok()
                .filter(|l| l.contains(" 200"))
                .map(|_| ()))
        })
        .with_context(|| {
            format!(
                "registry log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }

    /// Fails when the registry is no longer running.
    pub fn check_running(&self) -> Result<()> {
        // Our child: its pid stays ours until we wait for it (a zombie
        // counts as dead).
        if !self.child.as_ref().is_some_and(|c| sys::alive(c.id())) {
            bail!(
                "the registry is not running; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sys::kill_all(&[child.id()], Duration::from_secs(2));
            let _ = child.kill();
            let _ = child.wait();
        }
        save_log(&self.log, &format!("{}-registry.log", self.dirs.name));
        for d in [&self.dirs.run, &self.dirs.lib] {
            if let Err(e) = sys::remove_tree(d) {
                eprintln!("teardown of the registry: {e:#}");
            }
        }
    }
}

/// The `hosts.toml` of a registry host: every pull goes to the loopback
/// `registry`, as mirror and as server (the upstream is never tried).
pub fn hosts_toml(registry: &str) -> String {
    format!(
        "server = \"http://{registry}\"\n\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

/// A CNI bridge network of one instance: its own name, bridge and subnet.
#[derive(Debug, Clone)]
pub struct CniNet {
    /// The network name (host-local's directory, the iptables comments).
    pub name: String,
    pub bridge: String,
    /// `10.231.<n>.0/24`.
    pub subnet: String,
}

impl CniNet {
    fn new(instance: &str, octet: u8) -> CniNet {
        CniNet {
            name: format!("barge-it-{instance}"),
            bridge: format!("bit-{instance}"),
            subnet: format!("10.231.{octet}.0/24"),
        }
    }

    /// The conflist: bridge (with host-local IPAM), portmap, loopback.
    fn conflist(&self) -> String {
        let v = json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": self.subnet }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                    },
                },
                { "type": "portmap", "capabilities": { "portMappings": true } },
                { "type": "loopback" },
            ],
        });
        serde_json::to_string_pretty(&v).expect("json")
    }

    fn ipam_dir(&self) -> PathBuf {
        Path::new(CNI_STATE).join("networks").join(&self.name)
    }

    /// What CNI keeps per pod and should have released: host-local's
    /// address files and libcni's cached results.
    fn pod_state(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.ipam_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n != "lock" && !n.starts_with("last_reserved_ip")
            })
            .map(|e| e.path())
            .collect();
        let prefix = format!("{}-", self.name);
        v.extend(
            std::fs::read_dir(Path::new(CNI_STATE).join("results"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path()),
        );
        v
    }

    /// Whether the bridge exists.
    fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.bridge).exists()
    }

    /// Removes everything of this network: per-pod iptables rules, CNI
    /// state, and the bridge. Returns what was per-pod (a leak, when pods
    /// were all removed before).
    fn clean(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        let (rules, chains) = net_rules(&iptables_save("nat"), &self.name);
        if !rules.is_empty() || !chains.is_empty() {
            leaks.push(format!("iptables nat rules {rules:?} chains {chains:?}"));
            if let Err(e) = iptables_remove("nat", &rules, &chains) {
                leaks.push(format!("{e:#}"));
            }
        }
        let state = self.pod_state();
        if !state.is_empty() {
            leaks.push(format!("CNI state {state:?}"));
        }
        for f in &state {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir_all(self.ipam_dir());
        if self.bridge_exists() {
            let _ = Cmd::new("ip")
                .args(["link", "del", "dev", &self.bridge])
                .run();
        }
        leaks
    }
}

/// `iptables-save -t <table>`, a line each (empty when it fails).
fn iptables_save(table: &str) -> Vec<String> {
    Cmd::new("iptables-save")
        .args(["-t", table])
        .ok()
        .map(|o| o.stdout.lines().map(String::from).collect())
        .unwrap_or_default()
}

/// The chain a `-A <chain> ...` line appends to, and the chain or target
/// it jumps to.
fn rule_chains(rule: &str) -> (Option<&str>, Option<&str>) {
    let mut words = rule.split_whitespace();
    let chain = (words.next() == Some("-A")).then(|| words.next()).flatten();
    let words: Vec<&str> = rule.split_whitespace().collect();
    let target = words.windows(2).find(|w| w[0] == "-j").map(|w| w[1]);
    (chain, target)
}

/// The rules of CNI network `net` (portmap comments them with
/// `name: "<net>"`) and the per-pod chains they jump to.
fn net_rules(lines: &[String], net: &str) -> (Vec<String>, Vec<String>) {
    let tag = format!("name: \\\"{net}\\\"");
    let rules: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("-A ") && l.contains(&tag))
        .cloned()
        .collect();
    let mut chains: Vec<String> = rules
        .iter()
        .filter_map(|r| rule_chains(r).1)
        .filter(|t| t.starts_with("CNI-") && !t.starts_with("CNI-HOSTPORT-"))
        .map(String::from)
        .collect();
    chains.sort();
    chains.dedup();
    (rules, chains)
}

/// Deletes `rules` (lines of iptables-save) and flushes and deletes
/// `chains`, in one `iptables-restore --noflush`.
fn iptables_remove(table: &str, rules: &[String], chains: &[String]) -> Result<()> {
    let mut body = format!("*{table}\n");
    for r in rules {
        let in_removed = rule_chains(r)
            .0
            .is_some_and(|c| chains.iter().any(|x| x == c));
        if !in_removed {
            body.push_str(&format!("-D{}\n", &r[2..]));
        }
    }
    for c in chains {
        body.push_str(&format!("-F {c}\n"));
    }
    for c in chains {
        body.push_str(&format!("-X {c}\n"));
    }
    body.push_str("COMMIT\n");
    Cmd::new("iptables-restore")
        .arg("--noflush")
        .stdin(body.clone())
        .ok()
        .with_context(|| format!("iptables-restore of\n{body}"))?;
    Ok(())
}

/// portmap's shared chains (`CNI-HOSTPORT-*`) and the rules that jump to
/// them, when no network has a mapping left in them.
fn idle_portmap_chains(lines: &[String]) -> (Vec<String>, Vec<String>) {
    let mut chains: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with("CNI-HOSTPORT-"))
        .map(String::from)
        .collect();
    chains.sort();
    let busy = lines
        .iter()
        .any(|l| l.starts_with("-A CNI-HOSTPORT-DNAT ") && l.contains("-j CNI-DN-"));
    if busy || chains.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let rules = lines
        .iter()
        .filter(|l| l.starts_with("-A "))
        .filter(|l| {
            rule_chains(l)
                .1
                .is_some_and(|t| t.starts_with("CNI-HOSTPORT-"))
        })
        .cloned()
        .collect();
    (rules, chains)
}

/// A SysV shared memory segment (a line of /proc/sysvipc/shm).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ShmSegment {
    id: u64,
    size: u64,
    attached: u64,
}

fn shm_segments() -> Vec<ShmSegment> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            // key shmid perms size cpid lpid nattch ...
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(ShmSegment {
                id: f.get(1)?.parse().ok()?,
                size: f.get(3)?.parse().ok()?,
                attached: f.get(6)?.parse().ok()?,
            })
        })
        .collect()
}

/// The 64-hex ids that follow `marker` in containerd's log (`returns
/// sandbox id \"<id>\"`).
fn logged_ids(log: &str, marker: &str) -> BTreeSet<String> {
    log.match_indices(marker)
        .filter_map(|(i, _)| {
            let rest = log[i + marker.len()..].trim_start_matches(['\\', '"']);
            let id: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            (id.len() == 64).then_some(id)
        })
        .collect()
}

/// The ids of the bundles a containerd instance holds in `k8s.io`.
fn bundle_ids(state_dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(state_dir.join("io.containerd.runtime.v2.task").join(K8S_NS))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The cgroup directories of CRI pods and containers with these ids:
/// `k8s.io/<id>` under every hierarchy (containerd's cgroupfs layout
/// without a cgroup parent), or `<parent>/<id>` with one.
fn id_cgroups(ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for root in sys::cgroup_roots() {
        let mut stack = vec![(root, 0)];
        while let Some((dir, depth)) = stack.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                if ids.iter().any(|id| name.contains(id.as_str())) {
                    found.push(e.path());
                } else if depth < 3 {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    found
}

/// Kills what is left of these pods and containers and removes their
/// cgroups and runc/barge state: after a run killed with SIGKILL, and
/// after a leak.
fn remove_id_leftovers(ids: &BTreeSet<String>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    if ids.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let cgroups = id_cgroups(ids);
    kill_cgroup_members(&cgroups);
    sys::remove_cgroups(&cgroups);
    let mut state = Vec::new();
    for parent in runtime_state_parents() {
        for id in ids {
            let d = parent.join(K8S_NS).join(id);
            if d.exists() {
                let _ = sys::remove_tree(&d);
                state.push(d);
            }
        }
    }
    (cgroups, state)
}

/// Removes libcni's cached results of these pods: one per pod and
/// network, containerd's own loopback network (`cni-loopback-<id>-lo`)
/// included. Returns what it removed.
fn remove_cni_results(ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let results: Vec<PathBuf> = std::fs::read_dir(Path::new(CNI_STATE).join("results"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            ids.iter().any(|id| n.contains(id.as_str()))
        })
        .map(|e| e.path())
        .collect();
    for f in &results {
        let _ = std::fs::remove_file(f);
    }
    results
}

/// What the leak check compares against.
#[derive(Default)]
struct RunState {
    log_offset: usize,
    mounts_before: BTreeSet<PathBuf>,
    shm_before: BTreeSet<u64>,
    /// Set by [`CriContainerd::begin_keeping_segments`].
    keep_segments: bool,
}

/// A private containerd with CRI on. Dropping it removes every pod, the
/// CNI state and the bridge, then stops containerd.
pub struct CriContainerd {
    pub version: String,
    /// `unix://<socket>`, for crictl and critest.
    pub endpoint: String,
    pub net: CniNet,
    /// The sandbox (pause) image.
    pub pause: String,
    /// A busybox image, for pods of our own.
    pub busybox: String,
    pub handlers: Vec<&'static str>,
    /// Private files: pod and container configs, logs, critest's TMPDIR.
    pub work: PathBuf,
    crictl_bin: PathBuf,
    /// Whether portmap's shared chains existed when this instance started.
    portmap_chains_before: bool,
    /// Whether the `k8s.io` cgroups existed when this instance started.
    k8s_cgroups_before: bool,
    run: RefCell<RunState>,
    // Declared last: dropped after the CRI cleanup.
    pub cd: Containerd,
}

/// The CRI tables of containerd `version`'s config: handlers, sandbox
/// image, registry hosts, CNI, and the settings this machine needs.
fn cri_toml(version: &str, pause: &str, certs: &Path, cni_conf: &Path) -> String {
    let v = config_version(version);
    let (runtime, images, cni_bin) = if v == 2 {
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        (cri, cri, format!("bin_dir = \"{CNI_BIN}\""))
    } else {
        (
            "plugins.\"io.containerd.cri.v1.runtime\"",
            "plugins.\"io.containerd.cri.v1.images\"",
            format!("bin_dirs = [\"{CNI_BIN}\"]"),
        )
    };
    // Root here lacks CAP_SYS_RESOURCE: containerd must not lower a
    // container's oom_score_adj below its own. The unprivileged port and
    // ICMP sysctls are on, as 2.x has them by default.
    let mut s = format!(
        "[{runtime}]\n  restrict_oom_score_adj = true\n  enable_unprivileged_ports = true\n  enable_unprivileged_icmp = true\n  netns_mounts_under_state_dir = true\n"
    );
    if v == 2 {
        s += &format!("  sandbox_image = \"{pause}\"\n");
    }
    s += &format!(
        "\n[{runtime}.cni]\n  {cni_bin}\n  conf_dir = \"{}\"\n  max_conf_num = 1\n",
        cni_conf.display()
    );
    s += &format!("\n[{runtime}.containerd]\n  default_runtime_name = \"{HANDLER_RUNC}\"\n");
    for h in handlers(version) {
        let (runtime_type, sandboxer) = match h {
            HANDLER_RUNC => (RUNC_RUNTIME, "podsandbox"),
            HANDLER_SANDBOX => (RUNTIME, "shim"),
            _ => (RUNTIME, "podsandbox"),
        };
        s += &format!(
            "\n[{runtime}.containerd.runtimes.{h}]\n  runtime_type = \"{runtime_type}\"\n"
        );
        if v >= 3 {
            s += &format!("  sandboxer = \"{sandboxer}\"\n");
        }
    }
    if v >= 3 {
        s += &format!("\n[{images}.pinned_images]\n  sandbox = \"{pause}\"\n");
    }
    s += &format!(
        "\n[{images}.registry]\n  config_path = \"{}\"\n",
        certs.display()
    );
    if v >= 3 {
        // NRI (on by default from 2.0) listens on one machine-wide socket.
        s += "\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n";
    }
    s
}

impl CriContainerd {
    /// Starts containerd `version` with CRI on (instance `k17`, `k21`,
    /// `k23`), its pulls going to `registry`.
    pub fn start(
        version: &str,
        shim: &Path,
        registry: &Registry,
        images: &CriImages,
    ) -> Result<CriContainerd> {
        let digits = version.replace('.', "");
        let octet: u8 = digits
            .parse()
            .with_context(|| format!("containerd version {version:?}"))?;
        Self::start_named(
            version,
            &format!("k{digits}"),
            octet,
            shim,
            registry,
            images,
        )
    }

    /// [`CriContainerd::start`] as instance `name` on the subnet
    /// `10.231.<octet>.0/24`: the bench's instances (`kb17`, `kb23`) must
    /// not be the suite's, which may run at the same time.
    pub fn start_named(
        version: &str,
        name: &str,
        octet: u8,
        shim: &Path,
        registry: &Registry,
        images: &CriImages,
    ) -> Result<CriContainerd> {
        let crictl_bin = cri_bin("crictl")?;
        ensure!(
            Path::new(CNI_BIN).join("bridge").is_file(),
            "{CNI_BIN}/bridge is missing: run integration/scripts/install.sh"
        );
        let net = CniNet::new(name, octet);
        // What a run killed with SIGKILL left: its containers (by the
        // bundles it still has) and its network.
        // Its processes go first (critest, containerd, shims), so that
        // nothing makes pods or CNI state while the rest is removed.
        let stale = Dirs::new(name);
        let stale_run = stale.run.exists();
        let stale_ids = bundle_ids(&stale.run.join("state"));
        stale.clean_stale()?;
        remove_id_leftovers(&stale_ids);
        remove_cni_results(&stale_ids);
        net.clean();
        // portmap's shared chains that such a run made: nothing maps a
        // port through them any more.
        if stale_run {
            let (rules, chains) = idle_portmap_chains(&iptables_save("nat"));
            if !chains.is_empty() {
                iptables_remove("nat", &rules, &chains)?;
            }
        }
        let pause = images.pause(version)?.to_string();
        let busybox = images.busybox()?.to_string();
        let portmap_chains_before = iptables_save("nat")
            .iter()
            .any(|l| l.starts_with(":CNI-HOSTPORT-"));
        let k8s_cgroups_before = !sys::cgroup_dirs(K8S_NS).is_empty();
        let cd = Containerd::start_cri(version, name, shim, &|dirs| {
            let certs = dirs.run.join("certs.d");
            for host in &images.hosts {
                let d = certs.join(host);
                std::fs::create_dir_all(&d)?;
                std::fs::write(d.join("hosts.toml"), hosts_toml(&registry.addr))?;
            }
            let cni = dirs.run.join("cni");
            std::fs::create_dir_all(&cni)?;
            std::fs::write(cni.join("10-barge-it.conflist"), net.conflist())?;
            create_dirs(&[&dirs.run.join("work/tmp")])?;
            Ok(cri_toml(version, &pause, &certs, &cni))
        })?;
        let work = cd.dirs.run.join("work");
        let cri = CriContainerd {
            version: version.to_string(),
            endpoint: format!("unix://{}", cd.sock.display()),
            net,
            pause,
            busybox,
            handlers: handlers(version),
            work,
            crictl_bin,
            portmap_chains_before,
            k8s_cgroups_before,
            run: RefCell::default(),
            cd,
        };
        poll("CRI to answer", Duration::from_secs(30), || {
            Ok(cri.crictl(&["version"]).run()?.success().then_some(()))
        })
        .with_context(|| format!("containerd log:\n{}", cri.cd.log_tail(30)))?;
        Ok(cri)
    }

    /// `crictl` against this containerd (runtime and image endpoints).
    pub fn crictl(&self, args: &[&str]) -> Cmd {
        Cmd::new(&self.crictl_bin)
            .arg("--runtime-endpoint")
            .arg(&self.endpoint)
            .arg("--image-endpoint")
            .arg(&self.endpoint)
            .args(["--timeout", "30s"])
            .args(args)
    }

    /// Runs crictl and fails unless it exits 0; returns its trimmed stdout.
    fn crictl_out(&self, args: &[&str]) -> Result<String> {
        Ok(self.crictl(args).ok()?.stdout.trim().to_string())
    }

    /// Writes a pod config (`crictl runp`'s JSON) for pod `name`: metadata
    /// from the name, logs under the work dir; `edit` changes it.
    pub fn pod_config(&self, name: &str, edit: impl FnOnce(&mut Value)) -> Result<PathBuf> {
        let logs = self.work.join("logs").join(name);
        std::fs::create_dir_all(&logs)?;
        let mut v = json!({
            "metadata": { "name": name, "namespace": "barge-it", "uid": format!("uid-{name}"), "attempt": 0 },
            "log_directory": logs,
            "linux": {},
        });
        edit(&mut v);
        let path = self.work.join(format!("pod-{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&v)?)?;
        Ok(path)
    }

    /// Writes a container config for container `name` of `image` running
    /// `command`, logging to `<name>.log` in the pod's log directory;
    /// `edit` changes it.
    pub fn container_config(
        &self,
        name: &str,
        image: &str,
        command: &[&str],
        edit: impl FnOnce(&mut Value),
    ) -> Result<PathBuf> {
        let mut v = json!({
            "metadata": { "name": name },
            "image": { "image": image },
            "command": command,
            "log_path": format!("{name}.log"),
            "linux": {},
        });
        edit(&mut v);
        let path = self.work.join(format!("container-{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&v)?)?;
        Ok(path)
    }

    /// `crictl runp --runtime <handler>`: the pod's id.
    pub fn run_pod(&self, handler: &str, pod_config: &Path) -> Result<String> {
        let cfg = pod_config.to_string_lossy();
        self.crictl_out(&["runp", "--runtime", handler, &cfg])
    }

    /// `crictl create` (pulling the image if needed): the container's id.
    pub fn create_container(
        &self,
        pod: &str,
        container_config: &Path,
        pod_config: &Path,
    ) -> Result<String> {
        let (c, p) = (
            container_config.to_string_lossy(),
            pod_config.to_string_lossy(),
        );
        self.crictl_out(&["create", "--with-pull", pod, &c, &p])
    }

    /// `crictl create` then `crictl start`: the container's id.
    pub fn run_container(
        &self,
        pod: &str,
        container_config: &Path,
        pod_config: &Path,
    ) -> Result<String> {
        let id = self.create_container(pod, container_config, pod_config)?;
        self.crictl(&["start", &id]).ok()?;
        Ok(id)
    }

    /// `crictl exec --sync` (ExecSync): what crictl printed, and the
    /// command's exit code (see [`exec_exit_code`]).
    pub fn exec_sync(&self, id: &str, command: &[&str]) -> Result<(Output, i32)> {
        let mut args = vec!["exec", "--sync", id];
        args.extend_from_slice(command);
        let out = self.crictl(&args).run()?;
        let code = exec_exit_code(&out);
        Ok((out, code))
    }

    /// `crictl exec` (streaming Exec through the stream server).
    pub fn exec(&self, id: &str, command: &[&str]) -> Result<Output> {
        let mut args = vec!["exec", id];
        args.extend_from_slice(command);
        self.crictl(&args).run()
    }

    /// `crictl logs`: the container's stdout and stderr.
    pub fn logs(&self, id: &str) -> Result<Output> {
        self.crictl(&["logs", id]).ok()
    }

    /// `crictl inspect -o json` (`inspectp` for a pod).
    pub fn inspect(&self, id: &str, pod: bool) -> Result<Value> {
        let verb = if pod { "inspectp" } else { "inspect" };
        let out = self.crictl_out(&[verb, "-o", "json", id])?;
        serde_json::from_str(&out).with_context(|| format!("parse crictl {verb} {id}"))
    }

    /// Waits until a container's state is `state` (`CONTAINER_EXITED`, ...).
    pub fn wait_container_state(&self, id: &str, state: &str) -> Result<Value> {
        poll(
            &format!("container {id} to be {state}"),
            Duration::from_secs(20),
            || {
                let v = self.inspect(id, false)?;
                Ok((v["status"]["state"] == state).then_some(v))
            },
        )
    }

    /// Stops and removes a pod with its containers.
    pub fn remove_pod(&self, pod: &str) -> Result<()> {
        self.crictl(&["stopp", pod]).ok()?;
        self.crictl(&["rmp", pod]).ok()?;
        Ok(())
    }

    /// The ids of the pods, or of the containers, CRI still has.
    fn listed(&self, args: &[&str]) -> Result<Vec<String>> {
        Ok(crate::cmd::nonempty_lines(&self.crictl_out(args)?))
    }

    fn watched_mounts(&self) -> BTreeSet<PathBuf> {
        let mut m: BTreeSet<PathBuf> = sys::mounts_under(&self.cd.dirs.run).into_iter().collect();
        m.extend(sys::mounts_under(&self.cd.dirs.lib));
        m
    }

    /// The netns files CRI made under the state dir.
    pub fn netns_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.cd.state_dir.join("io.containerd.grpc.v1.cri/netns"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    /// Starts the bookkeeping of a run (a critest run or a case).
    pub fn begin(&self) {
        *self.run.borrow_mut() = RunState {
            log_offset: self.cd.log().len(),
            mounts_before: self.watched_mounts(),
            shm_before: shm_segments().iter().map(|s| s.id).collect(),
            keep_segments: false,
        };
    }

    /// [`Self::begin`] for a run that makes no SysV segment (the bench's
    /// critest runs and pods): its leak check removes none, so that it
    /// cannot take the segment of a HostIpc spec that the suite's critest
    /// runs meanwhile.
    pub fn begin_keeping_segments(&self) {
        self.begin();
        self.run.borrow_mut().keep_segments = true;
    }

    /// Pod and container ids containerd created since [`Self::begin`],
    /// and those it still has.
    fn run_ids(&self) -> BTreeSet<String> {
        let log = self.cd.log();
        let from = self.run.borrow().log_offset.min(log.len());
        let since = log.get(from..).unwrap_or_default();
        let mut ids = logged_ids(since, "returns sandbox id ");
        ids.extend(logged_ids(since, "returns container id "));
        ids.extend(bundle_ids(&self.cd.state_dir));
        if let Ok((tasks, containers)) = self.cd.leftovers(K8S_NS) {
            ids.extend(tasks);
            ids.extend(containers);
        }
        ids
    }

    /// Removes the 1 MiB SysV segments made since [`Self::begin`] that
    /// nothing has attached: the ones critest's HostIpc specs make with
    /// `ipcmk` and never remove. Returns how many.
    fn remove_ipcmk_segments(&self) -> usize {
        if self.run.borrow().keep_segments {
            return 0;
        }
        let before = &self.run.borrow().shm_before;
        let mut n = 0;
        for s in shm_segments() {
            if !before.contains(&s.id) && s.size == IPCMK_SEGMENT && s.attached == 0 {
                let id = s.id.to_string();
                if Cmd::new("ipcrm").args(["-m", &id]).ok().is_ok() {
                    n += 1;
                }
            }
        }
        n
    }

    /// The leak check after a run: no pod, container, task, shim, mount,
    /// netns, cgroup, runtime state, shim socket or per-pod CNI state may
    /// be left. Whatever is found is reported, then removed, with the
    /// bridge, the SysV segments of HostIpc specs and critest's TMPDIR.
    pub fn check_leaks(&self) -> Result<()> {
        self.cd.check_running()?;
        let mut leaks = Vec::new();
        let pods = self.listed(&["pods", "-q"])?;
        let containers = self.listed(&["ps", "-a", "-q"])?;
        if !pods.is_empty() {
            leaks.push(format!("pods {pods:?}"));
        }
        if !containers.is_empty() {
            leaks.push(format!("containers {containers:?}"));
        }
        if !pods.is_empty() || !containers.is_empty() {
            let _ = self.crictl(&["rm", "-fa"]).run();
            let _ = self.crictl(&["rmp", "-fa"]).run();
        }
        let ids = self.run_ids();
        let (tasks, ctrs) = self.cd.leftovers(K8S_NS)?;
        if !tasks.is_empty() || !ctrs.is_empty() {
            leaks.push(format!("k8s.io tasks {tasks:?} containers {ctrs:?}"));
            self.cd.force_clean_namespace(K8S_NS);
        }
        let shims = poll("the shims to exit", Duration::from_secs(3), || {
            Ok(self.cd.shims().is_empty().then_some(()))
        });
        if shims.is_err() {
            let s = self.cd.shims();
            for p in &s {
                leaks.push(format!("shim pid {} ({})", p.pid, p.argv.join(" ")));
            }
            sys::kill_all(
                &s.iter().map(|p| p.pid).collect::<Vec<_>>(),
                Duration::from_secs(1),
            );
        }
        let netns = self.netns_files();
        if !netns.is_empty() {
            leaks.push(format!("netns {netns:?}"));
        }
        // critest's own host mounts (its mount propagation specs) live in
        // its TMPDIR, and a spec that fails leaves them: not a leak of the
        // runtime's; they go with the TMPDIR below.
        let tmp = self.work.join("tmp");
        let mounts: Vec<PathBuf> = self
            .watched_mounts()
            .difference(&self.run.borrow().mounts_before)
            .filter(|m| !m.starts_with(&tmp))
            .cloned()
            .collect();
        if !mounts.is_empty() {
            leaks.push(format!("mounts {mounts:?}"));
        }
        for m in &mounts {
            sys::unmount_under(m);
        }
        for f in &netns {
            sys::unmount_under(f);
            let _ = std::fs::remove_file(f);
        }
        let bundles: Vec<PathBuf> = ids
            .iter()
            .map(|id| self.cd.bundle(K8S_NS, id))
            .filter(|b| b.exists())
            .collect();
        if !bundles.is_empty() {
            leaks.push(format!("bundles {bundles:?}"));
            for b in &bundles {
                let _ = sys::remove_tree(b);
            }
        }
        let address = self.cd.address();
        let sockets: Vec<PathBuf> = ids
            .iter()
            .map(|id| shim_socket(&address, K8S_NS, id))
            .filter(|s| s.exists())
            .collect();
        if !sockets.is_empty() {
            leaks.push(format!("shim sockets {sockets:?}"));
            for s in &sockets {
                let _ = std::fs::remove_file(s);
            }
        }
        let (cgroups, state) = remove_id_leftovers(&ids);
        if !cgroups.is_empty() {
            leaks.push(format!("cgroups {cgroups:?}"));
        }
        if !state.is_empty() {
            leaks.push(format!("runtime state {state:?}"));
        }
        let results = remove_cni_results(&ids);
        if !results.is_empty() {
            leaks.push(format!("CNI results {results:?}"));
        }
        leaks.extend(self.net.clean());
        let segments = self.remove_ipcmk_segments();
        if segments > 0 {
            eprintln!("removed {segments} SysV segments that HostIpc specs made with ipcmk");
        }
        let _ = sys::remove_tree(&tmp);
        let _ = std::fs::create_dir_all(&tmp);
        if leaks.is_empty() {
            Ok(())
        } else {
            bail!("{}", leaks.join(", "))
        }
    }

    fn teardown(&self) {
        if self.cd.check_running().is_ok() {
            let _ = self.crictl(&["rm", "-fa"]).run();
            let _ = self.crictl(&["rmp", "-fa"]).run();
        }
        let mut ids = bundle_ids(&self.cd.state_dir);
        if let Ok((tasks, containers)) = self.cd.leftovers(K8S_NS) {
            ids.extend(tasks);
            ids.extend(containers);
        }
        self.cd.force_clean_namespace(K8S_NS);
        remove_id_leftovers(&ids);
        self.net.clean();
        if !self.portmap_chains_before {
            let (rules, chains) = idle_portmap_chains(&iptables_save("nat"));
            if !chains.is_empty() {
                if let Err(e) = iptables_remove("nat", &rules, &chains) {
                    eprintln!("teardown of {}: {e:#}", self.cd.dirs.name);
                }
            }
        }
        if !self.k8s_cgroups_before {
            for d in sys::cgroup_dirs(K8S_NS) {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

impl Drop for CriContainerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The exit code of the command of a `crictl exec --sync`: crictl exits 1
/// for any failure and prints no output then, only `exited with <code>`;
/// -1 when the command did not run.
pub fn exec_exit_code(out: &Output) -> i32 {
    if out.success() {
        return 0;
    }
    out.stderr
        .split("exited with ")
        .nth(1)
        .and_then(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or(-1)
}

/// What one pod of [`pod_case`] showed.
#[derive(Debug, PartialEq, Eq)]
struct PodRun {
    exec_sync: (String, i32),
    exec_missing: i32,
    exec_stream: String,
    logs: String,
    exit_code: i64,
}

/// A pod under `handler`: a busybox container that writes to stdout and
/// stderr, ExecSync (output and exit codes), a streaming exec, the logs,
/// and its exit code once it is stopped; then the pod is removed.
fn run_pod_once(cri: &CriContainerd, handler: &str) -> Result<PodRun> {
    let name = format!("crictl-pod-{handler}");
    let pod_cfg = cri.pod_config(&name, |_| {})?;
    let ctr_cfg = cri.container_config(
        "main",
        &cri.busybox,
        &[
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; trap 'exit 7' TERM; while :; do sleep 0.1; done",
        ],
        |_| {},
    )?;
    let pod = cri.run_pod(handler, &pod_cfg)?;
    let result = (|| -> Result<PodRun> {
        let id = cri.run_container(&pod, &ctr_cfg, &pod_cfg)?;
        let (sync, _) = cri.exec_sync(&id, &["sh", "-c", "echo $((6 * 7))"])?;
        let (_, code) = cri.exec_sync(&id, &["sh", "-c", "exit 3"])?;
        let (_, missing) = cri.exec_sync(&id, &["/no/such/binary"])?;
        let stream = cri
            .exec(&id, &["sh", "-c", "echo streamed; echo $PPID"])?
            .ok()?;
        let logs = poll("both log lines", Duration::from_secs(10), || {
            let out = cri.logs(&id)?;
            Ok(
                (out.stdout.contains("to-stdout") && out.stderr.contains("to-stderr"))
                    .then(|| format!("stdout {:?} stderr {:?}", out.stdout, out.stderr)),
            )
        })?;
        cri.crictl(&["stop", "--timeout", "10", &id]).ok()?;
        let status = cri.wait_container_state(&id, "CONTAINER_EXITED")?;
        Ok(PodRun {
            exec_sync: (sync.stdout.trim().to_string(), code),
            exec_missing: missing,
            exec_stream: stream.stdout.trim().to_string(),
            logs,
            exit_code: status["status"]["exitCode"].as_i64().unwrap_or(-1),
        })
    })();
    let removed = cri.remove_pod(&pod);
    let run = result?;
    removed?;
    Ok(run)
}

/// The `crictl-pod` case: the same pod under runc-v2 and barge must show
/// the same, and what it shows is checked.
pub fn pod_case(cri: &CriContainerd) -> Result<()> {
    let runc = run_pod_once(cri, HANDLER_RUNC).context("under runc")?;
    ensure!(
        runc.exec_sync == ("42".to_string(), 3)
            && runc.exec_missing == -1
            && runc.exec_stream == "streamed\n0"
            && runc.exit_code == 7,
        "runc-v2 showed {runc:?}"
    );
    let barge = run_pod_once(cri, HANDLER_BARGE).context("under barge")?;
    ensure!(barge == runc, "barge showed {barge:?}, runc-v2 {runc:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_per_version() {
        assert_eq!(handlers("1.7"), ["runc", "barge"]);
        assert_eq!(handlers("2.1"), ["runc", "barge"]);
        assert_eq!(handlers("2.3"), ["runc", "barge", "barge-sandbox"]);
    }

    #[test]
    fn cri_tables_per_config_version() {
        let (certs, cni) = (Path::new("/c"), Path::new("/n"));
        let v2 = cri_toml("1.7", "registry.k8s.io/pause:3.10", certs, cni);
        assert!(
            v2.contains("[plugins.\"io.containerd.grpc.v1.cri\"]\n"),
            "{v2}"
        );
        assert!(
            v2.contains("sandbox_image = \"registry.k8s.io/pause:3.10\""),
            "{v2}"
        );
        assert!(
            v2.contains("[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/c\""),
            "{v2}"
        );
        assert!(
            v2.contains("runtimes.barge]\n  runtime_type = \"io.containerd.barge.v1\"\n"),
            "{v2}"
        );
        assert!(
            !v2.contains("sandboxer") && !v2.contains("barge-sandbox"),
            "{v2}"
        );
        let v4 = cri_toml("2.3", "p", certs, cni);
        assert!(
            v4.contains(
                "[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = \"p\""
            ),
            "{v4}"
        );
        assert!(v4.contains("bin_dirs = [\"/usr/lib/cni\"]"), "{v4}");
        assert!(
            v4.contains("runtimes.barge-sandbox]\n  runtime_type = \"io.containerd.barge.v1\"\n  sandboxer = \"shim\"\n"),
            "{v4}"
        );
        assert!(v4.contains("restrict_oom_score_adj = true"), "{v4}");
    }

    #[test]
    fn finds_logged_ids() {
        let id = "d42f598083afa4108ca9ecc215f50c1bb5813d4c40064ab861d72741cb964a94";
        let log = format!(
            "msg=\"RunPodSandbox for &PodSandboxMetadata{{Name:x,}} returns sandbox id \\\"{id}\\\"\"\nreturns sandbox id \\\"short\\\""
        );
        assert_eq!(
            logged_ids(&log, "returns sandbox id "),
            BTreeSet::from([id.to_string()])
        );
    }

    #[test]
    fn finds_the_rules_of_a_network() {
        let lines: Vec<String> = [
            ":CNI-HOSTPORT-DNAT - [0:0]",
            ":CNI-DN-abc - [0:0]",
            "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
            "-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"barge-it-k17\\\" id: \\\"x\\\"\" -m multiport --dports 12000 -j CNI-DN-abc",
            "-A CNI-DN-abc -p tcp -m comment --comment \"dnat name: \\\"barge-it-k17\\\" id: \\\"x\\\"\" -j DNAT --to-destination 10.231.17.2:80",
            "-A CNI-HOSTPORT-DNAT -m comment --comment \"dnat name: \\\"other\\\" id: \\\"y\\\"\" -j CNI-DN-def",
        ]
        .map(String::from)
        .to_vec();
        let (rules, chains) = net_rules(&lines, "barge-it-k17");
        assert_eq!(rules.len(), 2);
        assert_eq!(chains, ["CNI-DN-abc"]);
        let (_, idle) = idle_portmap_chains(&lines);
        assert!(idle.is_empty(), "another network still maps a port");
    }
}
