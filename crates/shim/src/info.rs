//! The `-info` flag. containerd 2.2 and later run `<shim> -info` before a
//! task is created (and the CRI plugin for each runtime handler), write the
//! runtime options to its stdin as a protobuf `Any` (nothing when there are
//! none), and read a protobuf `containerd.types.RuntimeInfo` from stdout.
//!
//! As containerd-shim-runc-v2 does, the options come back as they were given
//! and `features` holds the OCI runtime features document (what
//! `runc features` prints), JSON in an `Any` of the type containerd's
//! typeurl registers for the runtime-spec's `features.Features`. containerd's
//! CRI reads `rro` and `mountExtensions.idmap` from it.
//!
//! The document describes the executor that the options select. `native`,
//! `wasm` and `auto` make containers with libcontainer, so it says what
//! libcontainer, as barge builds it, does on this kernel; `oci-binary` runs
//! a runtime binary, so, as runc-v2 does, it is that binary's own
//! `features` (none when the binary has no such command).

use std::collections::HashMap;
use std::ffi::{c_char, c_uint, c_void, CStr};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use barge_executor::ExecutorChoice;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use oci_spec::runtime::{
    ApparmorBuilder, Arch, CgroupBuilder, Features, FeaturesBuilder, IDMapBuilder, IntelRdtBuilder,
    LinuxFeatureBuilder, LinuxNamespaceType, LinuxSeccompAction, MountExtensionsBuilder,
    SeccompBuilder, SelinuxBuilder,
};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::{options, start};

/// The runtime name containerd knows barge by.
pub const RUNTIME_NAME: &str = "io.containerd.barge.v1";

/// The type URL of the features document: containerd-shim-runc-v2 2.3.4
/// answers `-info` with it, the value being the JSON document.
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// Answers `-info`: reads the options from stdin, writes the RuntimeInfo.
pub fn run() -> Result<()> {
    let info = runtime_info(&start::read_stdin()?)?;
    let bytes = info
        .write_to_bytes()
        .map_err(|e| Error::Other(format!("encode RuntimeInfo: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&bytes)
        .and_then(|()| stdout.flush())
        .map_err(Error::io("write RuntimeInfo to stdout"))
}

/// The RuntimeInfo for the options containerd sent (`input`: a protobuf
/// `Any`, or nothing).
pub fn runtime_info(input: &[u8]) -> Result<RuntimeInfo> {
    let given = if input.is_empty() {
        None
    } else {
        Some(Any::parse_from_bytes(input).map_err(|e| {
            Error::InvalidArgument(format!(
                "runtime options on stdin are not a protobuf Any: {e}"
            ))
        })?)
    };
    let opts = options::decode(given.as_ref())?;
    let features = match opts.executor {
        ExecutorChoice::OciBinary => binary_features(&opts.runtime),
        ExecutorChoice::Auto | ExecutorChoice::Native | ExecutorChoice::Wasm => {
            Some(to_json(&libcontainer_features())?)
        }
    };
    Ok(RuntimeInfo {
        name: RUNTIME_NAME.to_string(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }),
        options: given.into(),
        features: features
            .map(|value| Any {
                type_url: FEATURES_TYPE_URL.to_string(),
                value,
                ..Default::default()
            })
            .into(),
        ..Default::default()
    })
}

/// `<runtime> features`, checked to be JSON; none when it fails.
fn binary_features(runtime: &str) -> Option<Vec<u8>> {
    let out = Command::new(runtime)
        .arg("features")
        .stdin(Stdio::null())
        .output();
    let json = match out {
        Ok(out) if out.status.success() => serde_json::from_slice::<Value>(&out.stdout).ok(),
        _ => None,
    };
    if json.is_none() {
        // containerd shows stderr only when -info fails; this one succeeds.
        eprintln!("containerd-shim-barge-v1: `{runtime} features` gave no features document");
    }
    json.and_then(|v| serde_json::to_vec(&v).ok())
}

/// JSON of the document without its `null`s, as Go's `omitempty` writes it.
fn to_json(features: &Features) -> Result<Vec<u8>> {
    fn prune(v: &mut Value) {
        if let Value::Object(map) = v {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(prune);
        }
    }
    let mut value = serde_json::to_value(features)
        .map_err(|e| Error::Other(format!("encode the features document: {e}")))?;
    prune(&mut value);
    serde_json::to_vec(&value)
        .map_err(|e| Error::Other(format!("encode the features document: {e}")))
}

/// What libcontainer 0.7, with the features barge builds it with
/// (cgroup v1 and v2, libseccomp; no systemd), does here.
fn libcontainer_features() -> Features {
    let seccomp = Libseccomp::load();
    let mut mount_options: Vec<String> = MOUNT_OPTIONS.iter().map(|s| s.to_string()).collect();
    if recursive_mount_attrs() {
        mount_options.extend(RECURSIVE_MOUNT_OPTIONS.iter().map(|s| s.to_string()));
    }
    let namespaces: Vec<LinuxNamespaceType> = NAMESPACES
        .iter()
        .filter(|(_, proc_name)| Path::new("/proc/self/ns").join(proc_name).exists())
        .map(|(ns, _)| *ns)
        .collect();
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(CAPABILITIES.len() - 1);
    let capabilities: Vec<String> = CAPABILITIES
        .iter()
        .take(last_cap + 1)
        .map(|s| s.to_string())
        .collect();
    let seccomp_doc = match &seccomp {
        Some(lib) if Path::new("/proc/sys/kernel/seccomp/actions_avail").exists() => {
            SeccompBuilder::default()
                .enabled(true)
                .actions(SECCOMP_ACTIONS.to_vec())
                .operators(
                    SECCOMP_OPERATORS
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>(),
                )
                .archs(
                    SECCOMP_ARCHS
                        .iter()
                        .filter(|(_, name)| lib.knows_arch(name))
                        .map(|(arch, _)| *arch)
                        .collect::<Vec<_>>(),
                )
                .known_flags(
                    SECCOMP_FLAGS
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>(),
                )
                .build()
        }
        _ => SeccompBuilder::default().enabled(false).build(),
    }
    .expect("every field of the seccomp features has a default");
    let linux = LinuxFeatureBuilder::default()
        .namespaces(namespaces)
        .capabilities(capabilities)
        .cgroup(
            CgroupBuilder::default()
                .v1(true)
                .v2(true)
                // libcontainer is built without its `systemd` feature.
                .systemd(false)
                .systemd_user(false)
                .rdma(false)
                .build()
                .expect("every field of the cgroup features has a default"),
        )
        .seccomp(seccomp_doc)
        .apparmor(
            ApparmorBuilder::default()
                .enabled(apparmor_enabled())
                .build()
                .expect("every field of the apparmor features has a default"),
        )
        // libcontainer 0.7 sets no SELinux process label.
        .selinux(
            SelinuxBuilder::default()
                .enabled(false)
                .build()
                .expect("every field of the selinux features has a default"),
        )
        .intel_rdt(
            IntelRdtBuilder::default()
                .enabled(false)
                .build()
                .expect("every field of the intelRdt features has a default"),
        )
        // libcontainer 0.7 skips a mount's `idmap` and `ridmap` options and
        // its uid/gid mappings (it has no MOUNT_ATTR_IDMAP), whatever the
        // kernel can do: claiming idmapped mounts would let CRI run user
        // namespaced pods whose volumes keep the host's owners.
        .mount_extensions(
            MountExtensionsBuilder::default()
                .idmap(
                    IDMapBuilder::default()
                        .enabled(false)
                        .build()
                        .expect("every field of the idmap features has a default"),
                )
                .build()
                .expect("every field of the mount extensions has a default"),
        )
        .build()
        .expect("every field of the linux features has a default");
    let mut annotations = HashMap::new();
    if let Some(version) = seccomp.as_ref().map(Libseccomp::version) {
        annotations.insert("io.github.seccomp.libseccomp.version".to_string(), version);
    }
    FeaturesBuilder::default()
        .oci_version_min("1.0.0")
        .oci_version_max(oci_spec::runtime::VERSION)
        .hooks(HOOKS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .mount_options(mount_options)
        .linux(linux)
        .annotations(annotations)
        .build()
        .expect("every field of the features document has a default")
}

const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// The mount(2) options libcontainer knows (its `MountOption`).
const MOUNT_OPTIONS: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "remount",
    "mand",
    "nomand",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "bind",
    "rbind",
    "unbindable",
    "runbindable",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
];

/// The options libcontainer applies with mount_setattr(2) and AT_RECURSIVE
/// (its `MountRecursive`).
const RECURSIVE_MOUNT_OPTIONS: &[&str] = &[
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnodiratime",
    "rdiratime",
    "rrelatime",
    "rnorelatime",
    "rnoatime",
    "ratime",
    "rstrictatime",
    "rnostrictatime",
    "rnosymfollow",
    "rsymfollow",
];

/// The namespaces libcontainer makes, with their names under /proc/self/ns.
const NAMESPACES: &[(LinuxNamespaceType, &str)] = &[
    (LinuxNamespaceType::Pid, "pid"),
    (LinuxNamespaceType::Network, "net"),
    (LinuxNamespaceType::Uts, "uts"),
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Mount, "mnt"),
    (LinuxNamespaceType::User, "user"),
    (LinuxNamespaceType::Cgroup, "cgroup"),
    (LinuxNamespaceType::Time, "time"),
];

/// Capabilities by number; the kernel knows those up to `cap_last_cap`.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Every action libcontainer translates for libseccomp.
const SECCOMP_ACTIONS: &[LinuxSeccompAction] = &[
    LinuxSeccompAction::ScmpActAllow,
    LinuxSeccompAction::ScmpActErrno,
    LinuxSeccompAction::ScmpActKill,
    LinuxSeccompAction::ScmpActKillProcess,
    LinuxSeccompAction::ScmpActKillThread,
    LinuxSeccompAction::ScmpActLog,
    LinuxSeccompAction::ScmpActNotify,
    LinuxSeccompAction::ScmpActTrace,
    LinuxSeccompAction::ScmpActTrap,
];

const SECCOMP_OPERATORS: &[&str] = &[
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];

/// The filter flags libcontainer sets through libseccomp.
const SECCOMP_FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/// The architectures libcontainer passes on, with libseccomp's names.
const SECCOMP_ARCHS: &[(Arch, &str)] = &[
    (Arch::ScmpArchAarch64, "aarch64"),
    (Arch::ScmpArchArm, "arm"),
    (Arch::ScmpArchLoongarch64, "loongarch64"),
    (Arch::ScmpArchM68k, "m68k"),
    (Arch::ScmpArchMips, "mips"),
    (Arch::ScmpArchMips64, "mips64"),
    (Arch::ScmpArchMips64n32, "mips64n32"),
    (Arch::ScmpArchMipsel, "mipsel"),
    (Arch::ScmpArchMipsel64, "mipsel64"),
    (Arch::ScmpArchMipsel64n32, "mipsel64n32"),
    (Arch::ScmpArchParisc, "parisc"),
    (Arch::ScmpArchParisc64, "parisc64"),
    (Arch::ScmpArchPpc, "ppc"),
    (Arch::ScmpArchPpc64, "ppc64"),
    (Arch::ScmpArchPpc64le, "ppc64le"),
    (Arch::ScmpArchRiscv64, "riscv64"),
    (Arch::ScmpArchS390, "s390"),
    (Arch::ScmpArchS390x, "s390x"),
    (Arch::ScmpArchSh, "sh"),
    (Arch::ScmpArchSheb, "sheb"),
    (Arch::ScmpArchX32, "x32"),
    (Arch::ScmpArchX86, "x86"),
    (Arch::ScmpArchX86_64, "x86_64"),
];

/// Whether the kernel sets mount attributes recursively (mount_setattr(2)
/// with AT_RECURSIVE, Linux 5.12), which is how libcontainer applies `rro`
/// and the other recursive options. Tried on a detached copy of the mount
/// at `/` (open_tree with OPEN_TREE_CLONE, as libcontainer's bind mounts
/// do): it is no mount anyone sees, and it goes with its descriptor.
fn recursive_mount_attrs() -> bool {
    crate::mount::detached_clone(c"/", libc::MOUNT_ATTR_RDONLY, true).is_ok()
}

/// AppArmor as libcontainer checks for it before it applies a profile.
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'))
}

/// The libseccomp that libcontainer is linked with, found in this process
/// (the shim core does not link it; the binary does, through its executors).
struct Libseccomp {
    version: unsafe extern "C" fn() -> *const ScmpVersion,
    arch_resolve_name: unsafe extern "C" fn(*const c_char) -> u32,
}

/// libseccomp's `struct scmp_version`.
#[repr(C)]
struct ScmpVersion {
    major: c_uint,
    minor: c_uint,
    micro: c_uint,
}

impl Libseccomp {
    fn load() -> Option<Libseccomp> {
        let version = symbol(c"seccomp_version")?;
        let arch_resolve_name = symbol(c"seccomp_arch_resolve_name")?;
        // SAFETY: both symbols are libseccomp's functions of these
        // signatures (seccomp.h): `const struct scmp_version
        // *seccomp_version(void)` and `uint32_t
        // seccomp_arch_resolve_name(const char *)`.
        unsafe {
            Some(Libseccomp {
                version: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn() -> *const ScmpVersion,
                >(version),
                arch_resolve_name: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*const c_char) -> u32,
                >(arch_resolve_name),
            })
        }
    }

    fn version(&self) -> String {
        // SAFETY: seccomp_version takes nothing and returns a pointer to a
        // static struct, or null.
        let v = unsafe { (self.version)() };
        // SAFETY: a non-null pointer from seccomp_version points to its
        // static, initialized `struct scmp_version`.
        match unsafe { v.as_ref() } {
            Some(v) => format!("{}.{}.{}", v.major, v.minor, v.micro),
            None => String::new(),
        }
    }

    /// Whether this libseccomp has the architecture (0 means unknown).
    fn knows_arch(&self, name: &str) -> bool {
        let Ok(name) = std::ffi::CString::new(name) else {
            return false;
        };
        // SAFETY: the function only reads the NUL-terminated name.
        unsafe { (self.arch_resolve_name)(name.as_ptr()) != 0 }
    }
}

/// A function already loaded into this process, by name.
fn symbol(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym only reads the NUL-terminated name; a null handle is
    // glibc's RTLD_DEFAULT, the global scope of the process.
    let sym = unsafe { libc::dlsym(std::ptr::null_mut(), name.as_ptr()) };
    (!sym.is_null()).then_some(sym)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `runtimeoptions.v1.Options{config_body}` in an Any, as containerd
    /// writes it.
    fn options_any(body: &str) -> Any {
        let mut value = vec![0x1a, body.len() as u8];
        value.extend_from_slice(body.as_bytes());
        Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        }
    }

    fn features_of(info: &RuntimeInfo) -> Value {
        let any = info.features.as_ref().expect("features");
        assert_eq!(any.type_url, FEATURES_TYPE_URL);
        serde_json::from_slice(&any.value).unwrap()
    }

    #[test]
    fn empty_stdin_encodes_and_decodes_back() {
        let info = runtime_info(b"").unwrap();
        let bytes = info.write_to_bytes().unwrap();
        let back = RuntimeInfo::parse_from_bytes(&bytes).unwrap();
        assert_eq!(back.name, RUNTIME_NAME);
        assert_eq!(back.version.version, env!("CARGO_PKG_VERSION"));
        assert!(back.options.is_none());
        assert!(back.annotations.is_empty());
        // RuntimeInfo's field numbers: name 1, version 2, features 4.
        assert_eq!(&bytes[..2], &[0x0a, RUNTIME_NAME.len() as u8]);
        assert!(bytes.windows(2).any(|w| w[0] == 0x22));
        let doc = features_of(&back);
        assert_eq!(doc["ociVersionMin"], "1.0.0");
        assert_eq!(doc["ociVersionMax"], oci_spec::runtime::VERSION);
        assert_eq!(doc["linux"]["mountExtensions"]["idmap"]["enabled"], false);
        assert_eq!(doc["linux"]["cgroup"]["systemd"], false);
        assert!(doc.to_string().find("null").is_none(), "{doc}");
        // It is a runtime-spec features document.
        let parsed: Features = serde_json::from_value(doc).unwrap();
        assert!(parsed.hooks().as_ref().unwrap().len() == HOOKS.len());
    }

    #[test]
    fn options_are_echoed_back() {
        let given = options_any("executor = \"native\"");
        let info = runtime_info(&given.write_to_bytes().unwrap()).unwrap();
        let back = RuntimeInfo::parse_from_bytes(&info.write_to_bytes().unwrap()).unwrap();
        assert_eq!(back.options.as_ref(), Some(&given));
        assert!(back.features.is_some());
    }

    #[test]
    fn kernel_facts_are_probed() {
        let doc = features_of(&runtime_info(b"").unwrap());
        let caps = doc["linux"]["capabilities"].as_array().unwrap();
        let last: usize = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(caps.len(), (last + 1).min(CAPABILITIES.len()));
        assert_eq!(caps[0], "CAP_CHOWN");
        let ns = doc["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&Value::from("pid")) && ns.contains(&Value::from("mount")));
        let rro = doc["mountOptions"]
            .as_array()
            .unwrap()
            .contains(&Value::from("rro"));
        assert_eq!(rro, recursive_mount_attrs());
        // The unit test binary does not link libseccomp: seccomp is off.
        assert_eq!(
            doc["linux"]["seccomp"]["enabled"],
            Libseccomp::load().is_some()
        );
    }

    #[test]
    fn bad_input_is_refused() {
        let err = runtime_info(b"\xff\xff").unwrap_err().to_string();
        assert!(err.contains("protobuf Any"), "{err}");
        let wrong = Any {
            type_url: "example.com/not.Options".into(),
            value: vec![1],
            ..Default::default()
        };
        let err = runtime_info(&wrong.write_to_bytes().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("example.com/not.Options"), "{err}");
    }

    #[test]
    fn oci_binary_without_features_command_has_none() {
        let given = options_any("executor = \"oci-binary\"\nruntime = \"/bin/false\"");
        let info = runtime_info(&given.write_to_bytes().unwrap()).unwrap();
        assert!(info.features.is_none());
        assert_eq!(info.options.as_ref(), Some(&given));
    }
}
