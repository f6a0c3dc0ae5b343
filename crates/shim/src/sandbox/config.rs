//! What a pod asks of its shim, read from the options of CreateSandbox.
//!
//! containerd's CRI passes the pod's `runtime.v1.PodSandboxConfig` (the
//! Kubernetes CRI message) as the request's options. The shim reads only the
//! fields that decide what it holds for the pod: the hostname, the cgroup
//! parent, the namespaced sysctls and the namespace modes. The message is
//! decoded field by field from the protobuf wire format, so barge carries no
//! copy of the CRI's schema; unknown fields are skipped.

use std::collections::BTreeMap;

use containerd_shim_protos::protobuf::well_known_types::any::Any;

use crate::error::{Error, Result};
use crate::wire::fields;

/// The type CRI marshals its pod config as.
pub const POD_SANDBOX_CONFIG: &str = "runtime.v1.PodSandboxConfig";

/// A namespace's mode, as CRI's `NamespaceMode` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Shared by the pod's containers (the default).
    #[default]
    Pod,
    /// Each container has its own.
    Container,
    /// The host's.
    Node,
    /// Another container's.
    Target,
}

impl Mode {
    fn from_wire(n: u64) -> Result<Mode> {
        Ok(match n {
            0 => Mode::Pod,
            1 => Mode::Container,
            2 => Mode::Node,
            3 => Mode::Target,
            n => {
                return Err(Error::InvalidArgument(format!(
                    "pod config: unknown namespace mode {n}"
                )))
            }
        })
    }
}

/// The pod's namespace modes (`linux.security_context.namespace_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Namespaces {
    pub network: Mode,
    pub pid: Mode,
    pub ipc: Mode,
}

/// What the shim needs of a pod's config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodConfig {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    /// The pod's cgroup, which its containers' cgroups are under.
    pub cgroup_parent: String,
    pub sysctls: BTreeMap<String, String>,
    pub namespaces: Namespaces,
    /// `dns_config`, when the pod has one.
    pub dns: Option<Dns>,
}

/// A pod's DNS settings, for its `resolv.conf`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl PodConfig {
    /// The config in CreateSandbox's options: CRI's pod config, or the
    /// defaults when a client sends none.
    pub fn from_options(options: Option<&Any>) -> Result<PodConfig> {
        let Some(any) = options.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
            return Ok(PodConfig::default());
        };
        let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
        if type_name != POD_SANDBOX_CONFIG {
            return Err(Error::InvalidArgument(format!(
                "sandbox options are a {:?}; barge reads a {POD_SANDBOX_CONFIG}",
                any.type_url
            )));
        }
        PodConfig::decode(&any.value)
    }

    /// Decodes a `runtime.v1.PodSandboxConfig`.
    pub fn decode(bytes: &[u8]) -> Result<PodConfig> {
        let mut config = PodConfig::default();
        for (n, v) in fields(bytes, M)? {
            match n {
                1 => {
                    for (n, v) in fields(v.bytes(M)?, M)? {
                        match n {
                            1 => config.name = v.text(M)?,
                            3 => config.namespace = v.text(M)?,
                            _ => {}
                        }
                    }
                }
                2 => config.hostname = v.text(M)?,
                4 => {
                    let mut dns = Dns::default();
                    for (n, v) in fields(v.bytes(M)?, M)? {
                        match n {
                            1 => dns.servers.push(v.text(M)?),
                            2 => dns.searches.push(v.text(M)?),
                            3 => dns.options.push(v.text(M)?),
                            _ => {}
                        }
                    }
                    config.dns = Some(dns);
                }
                8 => config.read_linux(v.bytes(M)?)?,
                _ => {}
            }
        }
        Ok(config)
    }

    /// `LinuxPodSandboxConfig`.
    fn read_linux(&mut self, bytes: &[u8]) -> Result<()> {
        for (n, v) in fields(bytes, M)? {
            match n {
                1 => self.cgroup_parent = v.text(M)?,
                2 => {
                    for (n, v) in fields(v.bytes(M)?, M)? {
                        if n == 1 {
                            self.namespaces = read_namespaces(v.bytes(M)?)?;
                        }
                    }
                }
                3 => {
                    let (mut key, mut value) = (String::new(), String::new());
                    for (n, v) in fields(v.bytes(M)?, M)? {
                        match n {
                            1 => key = v.text(M)?,
                            2 => value = v.text(M)?,
                            _ => {}
                        }
                    }
                    self.sysctls.insert(key, value);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The message's name, in every error about its bytes.
const M: &str = POD_SANDBOX_CONFIG;

/// `NamespaceOption`.
fn read_namespaces(bytes: &[u8]) -> Result<Namespaces> {
    let mut ns = Namespaces::default();
    for (n, v) in fields(bytes, M)? {
        match n {
            1 => ns.network = Mode::from_wire(v.varint(M)?)?,
            2 => ns.pid = Mode::from_wire(v.varint(M)?)?,
            3 => ns.ipc = Mode::from_wire(v.varint(M)?)?,
            _ => {}
        }
    }
    Ok(ns)
}

/// The namespace a sysctl belongs to, or None when it is not namespaced
/// (and so would change the host).
fn sysctl_namespace(key: &str) -> Option<&'static str> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some("ipc")
    } else if key.starts_with("net.") {
        Some("network")
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some("uts")
    } else {
        None
    }
}

impl PodConfig {
    /// Refuses what the pod cannot have: a sysctl that is not namespaced,
    /// or one of a namespace the pod shares with the host.
    pub fn check(&self) -> Result<()> {
        for key in self.sysctls.keys() {
            let valid = !key.is_empty()
                && key
                    .split('.')
                    .all(|p| !p.is_empty() && p != ".." && !p.contains('/'));
            let ns = valid
                .then(|| sysctl_namespace(key))
                .flatten()
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "pod sysctl {key:?} is not namespaced: a pod cannot set it"
                    ))
                })?;
            let host = match ns {
                "ipc" => self.namespaces.ipc == Mode::Node,
                _ => self.namespaces.network == Mode::Node,
            };
            if host {
                return Err(Error::InvalidArgument(format!(
                    "pod sysctl {key:?} is of the {ns} namespace, which the pod shares with the host"
                )));
            }
        }
        Ok(())
    }

    /// Adds the sysctls that containerd 2.x's CRI gives every pod with a
    /// network namespace of its own (`enable_unprivileged_ports` and
    /// `enable_unprivileged_icmp`, both on by default) to the pause
    /// container, unless the pod sets them: with `sandboxer = "shim"` CRI
    /// leaves them to the sandbox. A non-root server may then bind port 80,
    /// and ping works without CAP_NET_RAW.
    pub fn add_cri_defaults(&mut self) {
        if self.namespaces.network == Mode::Node {
            return;
        }
        for (key, value) in [
            ("net.ipv4.ip_unprivileged_port_start", "0"),
            ("net.ipv4.ping_group_range", "0 2147483647"),
        ] {
            self.sysctls
                .entry(key.to_string())
                .or_insert_with(|| value.to_string());
        }
    }

    /// The sysctls as `/proc/sys` paths and values.
    pub fn sysctl_files(&self) -> Vec<(String, String)> {
        self.sysctls
            .iter()
            .map(|(k, v)| (format!("/proc/sys/{}", k.replace('.', "/")), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::wire::{bytes_field as bytes, varint, varint_field as number};

    /// A pod config as CRI encodes one.
    fn encoded() -> Vec<u8> {
        let mut metadata = Vec::new();
        bytes(&mut metadata, 1, b"web");
        bytes(&mut metadata, 2, b"uid-1");
        bytes(&mut metadata, 3, b"default");
        let mut ns = Vec::new();
        number(&mut ns, 1, 0);
        number(&mut ns, 2, 2);
        number(&mut ns, 3, 1);
        let mut security = Vec::new();
        bytes(&mut security, 1, &ns);
        number(&mut security, 6, 1); // privileged: skipped
        let mut linux = Vec::new();
        bytes(&mut linux, 1, b"/kubepods/pod-1");
        bytes(&mut linux, 2, &security);
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("kernel.shm_rmid_forced", "1"),
        ] {
            let mut entry = Vec::new();
            bytes(&mut entry, 1, k.as_bytes());
            bytes(&mut entry, 2, v.as_bytes());
            bytes(&mut linux, 3, &entry);
        }
        let mut config = Vec::new();
        bytes(&mut config, 1, &metadata);
        bytes(&mut config, 2, b"web-0");
        bytes(&mut config, 3, b"/var/log/pods/x");
        let mut dns = Vec::new();
        bytes(&mut dns, 1, b"10.0.0.10");
        bytes(&mut dns, 1, b"10.0.0.11");
        bytes(&mut dns, 2, b"svc.cluster.local");
        bytes(&mut dns, 3, b"ndots:5");
        bytes(&mut config, 4, &dns);
        // A fixed64 and a fixed32 field that a newer CRI might add.
        varint(&mut config, 40 << 3 | 1);
        config.extend_from_slice(&[0; 8]);
        varint(&mut config, 41 << 3 | 5);
        config.extend_from_slice(&[0; 4]);
        bytes(&mut config, 8, &linux);
        config
    }

    #[test]
    fn reads_what_the_shim_holds() {
        let c = PodConfig::decode(&encoded()).unwrap();
        assert_eq!(c.name, "web");
        assert_eq!(c.namespace, "default");
        assert_eq!(c.hostname, "web-0");
        let dns = c.dns.as_ref().unwrap();
        assert_eq!(dns.servers, ["10.0.0.10", "10.0.0.11"]);
        assert_eq!(dns.searches, ["svc.cluster.local"]);
        assert_eq!(dns.options, ["ndots:5"]);
        assert_eq!(c.cgroup_parent, "/kubepods/pod-1");
        assert_eq!(
            c.namespaces,
            Namespaces {
                network: Mode::Pod,
                pid: Mode::Node,
                ipc: Mode::Container
            }
        );
        assert_eq!(c.sysctls.len(), 2);
        assert_eq!(c.sysctls["net.ipv4.ip_forward"], "1");
        c.check().unwrap();
        assert_eq!(
            c.sysctl_files()[1],
            ("/proc/sys/net/ipv4/ip_forward".into(), "1".into())
        );
    }

    #[test]
    fn options_name_their_type() {
        let any = Any {
            type_url: POD_SANDBOX_CONFIG.into(),
            value: encoded(),
            ..Default::default()
        };
        assert_eq!(
            PodConfig::from_options(Some(&any)).unwrap().hostname,
            "web-0"
        );
        assert_eq!(PodConfig::from_options(None).unwrap(), PodConfig::default());
        let other = Any {
            type_url: "types.containerd.io/x.Y".into(),
            value: vec![1],
            ..Default::default()
        };
        let err = PodConfig::from_options(Some(&other))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.Y") && err.contains(POD_SANDBOX_CONFIG),
            "{err}"
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = encoded();
        for cut in 1..good.len() {
            // Every truncation either decodes (a cut between fields) or
            // fails with a message that names the config.
            if let Err(e) = PodConfig::decode(&good[..cut]) {
                assert!(e.to_string().contains(POD_SANDBOX_CONFIG), "{e}");
            }
        }
        for bad in [&[0x0b][..], &[0x00, 0x01], &[0x12, 0x05, b'a'], &[0xff; 11]] {
            assert!(PodConfig::decode(bad).is_err(), "{bad:?}");
        }
        let mut bad_mode = Vec::new();
        number(&mut bad_mode, 1, 9);
        let mut security = Vec::new();
        bytes(&mut security, 1, &bad_mode);
        let mut linux = Vec::new();
        bytes(&mut linux, 2, &security);
        let mut config = Vec::new();
        bytes(&mut config, 8, &linux);
        let err = PodConfig::decode(&config).unwrap_err().to_string();
        assert!(err.contains("namespace mode 9"), "{err}");
    }

    #[test]
    fn cri_defaults_unless_set_or_on_the_host_network() {
        let mut c = PodConfig::default();
        c.sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "1024".into());
        c.add_cri_defaults();
        assert_eq!(c.sysctls["net.ipv4.ip_unprivileged_port_start"], "1024");
        assert_eq!(c.sysctls["net.ipv4.ping_group_range"], "0 2147483647");
        let mut host = PodConfig::default();
        host.namespaces.network = Mode::Node;
        host.add_cri_defaults();
        assert!(host.sysctls.is_empty());
    }

    #[test]
    fn sysctls_must_be_namespaced_and_not_the_hosts() {
        let mut c = PodConfig::default();
        for ok in [
            "net.core.somaxconn",
            "kernel.shm_rmid_forced",
            "fs.mqueue.msg_max",
        ] {
            c.sysctls = [(ok.to_string(), "1".to_string())].into();
            c.check().unwrap();
        }
        for bad in ["kernel.panic", "vm.swappiness", "net..x", "net.a/b", ""] {
            c.sysctls = [(bad.to_string(), "1".to_string())].into();
            let err = c.check().unwrap_err().to_string();
            assert!(err.contains("not namespaced"), "{bad}: {err}");
        }
        c.namespaces.network = Mode::Node;
        c.sysctls = [("net.core.somaxconn".to_string(), "1".to_string())].into();
        let err = c.check().unwrap_err().to_string();
        assert!(err.contains("shares with the host"), "{err}");
        c.namespaces.network = Mode::Pod;
        c.namespaces.ipc = Mode::Node;
        c.sysctls = [("kernel.sem".to_string(), "1".to_string())].into();
        assert!(c.check().is_err());
    }
}
