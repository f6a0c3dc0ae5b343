//! Target `proto`: the other bytes the shim decodes from containerd:
//! `start`'s stdin (`start::read_params`: a BootstrapParams from
//! containerd 2.3, an Any of runtime options before), CRI's
//! `runtime.v1.PodSandboxConfig` in CreateSandbox's options
//! (`PodConfig`), the command line (`args::parse`), the Task and Sandbox API
//! requests as ttrpc hands them over (and the JSON process spec of Exec and
//! LinuxResources of Update inside them).
//!
//! Checks: read_params answers Bootstrap only for a BootstrapParams with
//! this shim's id and namespace, and takes its socket dir, ttrpc address
//! and runtime options from it; a generated pod config decodes to what was
//! encoded; a pod config that passes `check` writes only below /proc/sys;
//! a request that decodes encodes and decodes again to the same message.

use arbitrary::Unstructured;
use barge_shim::fuzzing::{
    bytes_field, is_options_type, parse_args, read_params, varint, PodConfig, Reply,
};
use barge_shim::Flags;
use containerd_shim_protos::api;
use containerd_shim_protos::bootstrap_api::{BootstrapParams, Extension, LogLevel};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{EnumOrUnknown, Message, MessageField};
use containerd_shim_protos::sandbox_api;

use super::{in_lane, lane, word};
use crate::driver::Target;

const BOOT_RAW: u8 = 0;
const BOOT_GENERATED: u8 = 1;
const POD_RAW: u8 = 2;
const POD_GENERATED: u8 = 3;
const ARGS: u8 = 4;
const REQUEST_RAW: u8 = 5;
const JSON_RAW: u8 = 6;
const LANES: u8 = 7;

const ID: &str = "c1";
const NAMESPACE: &str = "k8s.io";

const WORDS: &[&str] = &[
    ID,
    NAMESPACE,
    "default",
    "",
    "/run/containerd/s",
    "/run/containerd/containerd.sock.ttrpc",
    "runtimeoptions.v1.Options",
    "containerd.runc.v1.Options",
    "type.googleapis.com/containerd.runc.v1.Options",
    "containerd.linux.runc.CreateOptions",
    "runtime.v1.PodSandboxConfig",
    "x",
];
const SYSCTLS: &[&str] = &[
    "net.ipv4.ip_forward",
    "net.ipv4.ping_group_range",
    "kernel.shmmax",
    "kernel.msgmax",
    "fs.mqueue.msg_max",
    "kernel.hostname",
    "kernel.domainname",
    "kernel.pid_max",
    "vm.swappiness",
    "net..x",
    "net.a/b",
    "net.../../x",
    "net.x.",
    "net",
    "",
    "net.ipv4.conf.eth0/../../x",
];
const ARGV_WORDS: &[&str] = &[
    "-namespace",
    "-id",
    "-address",
    "-publish-binary",
    "-bundle",
    "-socket",
    "-debug",
    "-debug=false",
    "--id=x",
    "-v",
    "-info",
    "-bogus",
    "start",
    "delete",
    "serve",
    "-",
    "--",
    "=",
    "k8s.io",
    "/run/containerd/containerd.sock",
];

const DICT: &[&[u8]] = &[
    b"runtimeoptions.v1.Options",
    b"containerd.runc.v1.Options",
    b"runtime.v1.PodSandboxConfig",
    b"k8s.io",
    b"c1",
    b"net.ipv4.ping_group_range",
    b"kernel.shmmax",
    b"\"args\"",
    b"\"env\"",
    b"\"cwd\"",
    b"\"memory\"",
    b"\"limit\"",
    b"\"cpu\"",
    b"\"shares\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b"null",
    b"18446744073709551616",
];

pub struct Proto {
    flags: Flags,
}

impl Proto {
    pub fn new() -> Proto {
        let flags = Flags {
            namespace: NAMESPACE.into(),
            id: ID.into(),
            ..Default::default()
        };
        Proto { flags }
    }
}

impl Default for Proto {
    fn default() -> Self {
        Proto::new()
    }
}

fn any(u: &mut Unstructured<'_>) -> Any {
    let mut value = Vec::new();
    if u.ratio(1, 2).unwrap_or(true) {
        bytes_field(&mut value, 3, b"executor = \"native\"");
    } else {
        let n = u.int_in_range(0..=8).unwrap_or(0);
        value.extend_from_slice(u.bytes(n).unwrap_or_default());
    }
    Any {
        type_url: word(u, WORDS),
        value,
        ..Default::default()
    }
}

fn bootstrap(u: &mut Unstructured<'_>) -> BootstrapParams {
    let mut p = BootstrapParams {
        instance_id: word(u, WORDS),
        namespace: word(u, WORDS),
        containerd_ttrpc_address: word(u, WORDS),
        containerd_grpc_address: word(u, WORDS),
        containerd_version: word(u, &["v2.3.4", ""]),
        log_level: EnumOrUnknown::from_i32(
            *u.choose(&[0, -8, -4, 4, 8, 10, 12, -5, 99]).unwrap_or(&0),
        ),
        ..Default::default()
    };
    if u.ratio(1, 2).unwrap_or(false) {
        p.socket_dir = Some(word(u, WORDS));
    }
    for _ in 0..u.int_in_range(0..=3).unwrap_or(0) {
        p.extensions.push(Extension {
            value: if u.ratio(7, 8).unwrap_or(true) {
                MessageField::some(any(u))
            } else {
                MessageField::none()
            },
            ..Default::default()
        });
    }
    p
}

/// Checks read_params against the BootstrapParams it was given.
fn check_params(flags: &Flags, input: &[u8]) -> &'static str {
    let params = read_params(flags, input).unwrap_or_else(|e| panic!("read_params failed: {e}"));
    let parsed = BootstrapParams::parse_from_bytes(input).ok().filter(|p| {
        !input.is_empty() && p.instance_id == flags.id && p.namespace == flags.namespace
    });
    if let Some(o) = &params.options {
        assert!(
            is_options_type(&o.type_url),
            "options of type {:?} taken",
            o.type_url
        );
    }
    match (params.reply, parsed) {
        (Reply::Bootstrap, Some(p)) => {
            let dir = p.socket_dir.clone().filter(|d| !d.is_empty());
            assert_eq!(
                params.socket_dir.to_str(),
                Some(dir.as_deref().unwrap_or("/run/containerd/s")),
                "socket dir"
            );
            if !p.containerd_ttrpc_address.is_empty() {
                assert_eq!(
                    params.ttrpc_address, p.containerd_ttrpc_address,
                    "ttrpc address"
                );
            }
            let want = p
                .extensions
                .iter()
                .filter_map(|e| e.value.as_ref())
                .find(|a| is_options_type(&a.type_url));
            assert_eq!(
                params.options.as_ref(),
                want,
                "options taken from the extensions"
            );
            if p.log_level.value() <= LogLevel::LOG_LEVEL_DEBUG as i32 {
                assert!(params.debug, "debug log level ignored");
            }
            "bootstrap"
        }
        (Reply::BareAddress, None) => "legacy",
        (reply, p) => panic!("reply {reply:?} for params {p:?}"),
    }
}

/// A pod config as CRI would encode it, and what barge should read of it.
fn pod(u: &mut Unstructured<'_>) -> (Vec<u8>, PodConfig, Option<String>) {
    let mut want = PodConfig::default();
    let mut m = Vec::new();
    let unknown = |m: &mut Vec<u8>, u: &mut Unstructured<'_>| {
        if u.ratio(1, 8).unwrap_or(false) {
            varint(m, 15 << 3);
            varint(m, 7);
        }
    };
    if u.ratio(3, 4).unwrap_or(true) {
        let mut meta = Vec::new();
        want.name = word(u, &["web", "", "a-b"]);
        want.namespace = word(u, &["default", "kube-system"]);
        bytes_field(&mut meta, 1, want.name.as_bytes());
        bytes_field(&mut meta, 2, b"uid-1");
        bytes_field(&mut meta, 3, want.namespace.as_bytes());
        unknown(&mut meta, u);
        bytes_field(&mut m, 1, &meta);
    }
    if u.ratio(1, 2).unwrap_or(false) {
        want.hostname = word(u, &["web-0", ""]);
        bytes_field(&mut m, 2, want.hostname.as_bytes());
    }
    bytes_field(&mut m, 3, b"/var/log/pods/x");
    if u.ratio(1, 3).unwrap_or(false) {
        let mut lists: [Vec<String>; 3] = Default::default();
        let mut d = Vec::new();
        for (i, list) in lists.iter_mut().enumerate() {
            for _ in 0..u.int_in_range(0..=2).unwrap_or(0) {
                let w = word(u, &["10.0.0.10", "svc.cluster.local", "ndots:5", ""]);
                bytes_field(&mut d, i as u64 + 1, w.as_bytes());
                list.push(w);
            }
        }
        bytes_field(&mut m, 4, &d);
        let mut dns = PodConfig::default().dns.unwrap_or_default();
        [dns.servers, dns.searches, dns.options] = lists;
        want.dns = Some(dns);
    }
    let mut linux = Vec::new();
    if u.ratio(1, 2).unwrap_or(false) {
        want.cgroup_parent = word(u, &["/kubepods/burstable/pod1", "kubepods.slice", ""]);
        bytes_field(&mut linux, 1, want.cgroup_parent.as_bytes());
    }
    let mut modes = None;
    if u.ratio(1, 2).unwrap_or(false) {
        let mut ns = Vec::new();
        let mut set = [0u64; 3];
        for (i, slot) in set.iter_mut().enumerate() {
            if u.ratio(2, 3).unwrap_or(false) {
                *slot = *u.choose(&[0, 1, 2, 3, 4]).unwrap_or(&0);
                varint(&mut ns, (i as u64 + 1) << 3);
                varint(&mut ns, *slot);
            }
        }
        let mut security = Vec::new();
        bytes_field(&mut security, 1, &ns);
        bytes_field(&mut linux, 2, &security);
        if set.iter().any(|n| *n > 3) {
            modes = Some("unknown namespace mode".to_string());
        } else {
            modes = Some(format!("{set:?}"));
        }
    }
    for _ in 0..u.int_in_range(0..=3).unwrap_or(0) {
        let key = word(u, SYSCTLS);
        let value = word(u, &["1", "0 2147483647", ""]);
        let mut entry = Vec::new();
        bytes_field(&mut entry, 1, key.as_bytes());
        bytes_field(&mut entry, 2, value.as_bytes());
        bytes_field(&mut linux, 3, &entry);
        want.sysctls.insert(key, value);
    }
    if !linux.is_empty() || u.ratio(1, 2).unwrap_or(false) {
        bytes_field(&mut m, 8, &linux);
    }
    (m, want, modes)
}

/// The checks on a pod config that decoded.
fn check_pod(mut config: PodConfig) -> &'static str {
    if config.check().is_err() {
        return "pod refused";
    }
    config.add_cri_defaults();
    for (path, _) in config.sysctl_files() {
        let rest = path
            .strip_prefix("/proc/sys/")
            .unwrap_or_else(|| panic!("sysctl file {path:?} is not under /proc/sys"));
        assert!(
            rest.split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
            "sysctl file {path:?} leaves /proc/sys/{}",
            rest.split('/').next().unwrap_or_default()
        );
    }
    "pod accepted"
}

/// Decodes `bytes` as `M`; one that decodes must encode and decode again
/// to itself.
fn round_trip<M: Message + PartialEq>(bytes: &[u8]) -> Option<M> {
    let m = M::parse_from_bytes(bytes).ok()?;
    let again = m.write_to_bytes().expect("encode a decoded message");
    let back = M::parse_from_bytes(&again).expect("decode an encoded message");
    assert!(back == m, "{} changes in a round trip", M::NAME);
    Some(m)
}

/// A Task or Sandbox API request (or ttrpc's envelope), with what the
/// shim decodes inside it.
fn request(kind: u8, bytes: &[u8]) -> &'static str {
    match kind % 12 {
        0 => match round_trip::<api::CreateTaskRequest>(bytes) {
            Some(r) => {
                let _ = barge_shim::fuzzing::decode_options(r.options.as_ref());
                for m in &r.rootfs {
                    let _ = barge_shim::fuzzing::parse_mount_options(&m.options);
                }
                "create"
            }
            None => "refused",
        },
        1 => match round_trip::<api::ExecProcessRequest>(bytes) {
            Some(r) => {
                if let Some(spec) = r.spec.as_ref() {
                    let _ = serde_json::from_slice::<barge_executor::Process>(&spec.value);
                }
                "exec"
            }
            None => "refused",
        },
        2 => match round_trip::<api::UpdateTaskRequest>(bytes) {
            Some(r) => {
                if let Some(res) = r.resources.as_ref() {
                    let _ = serde_json::from_slice::<barge_executor::LinuxResources>(&res.value);
                }
                "update"
            }
            None => "refused",
        },
        3 => match round_trip::<sandbox_api::CreateSandboxRequest>(bytes) {
            Some(r) => match PodConfig::from_options(r.options.as_ref()) {
                Ok(config) => check_pod(config),
                Err(_) => "pod refused",
            },
            None => "refused",
        },
        4 => round_trip::<api::KillRequest>(bytes).map_or("refused", |_| "kill"),
        5 => round_trip::<api::ResizePtyRequest>(bytes).map_or("refused", |_| "resize"),
        6 => round_trip::<api::CloseIORequest>(bytes).map_or("refused", |_| "closeio"),
        7 => round_trip::<api::StartRequest>(bytes).map_or("refused", |_| "start"),
        8 => round_trip::<api::DeleteRequest>(bytes).map_or("refused", |_| "delete"),
        9 => round_trip::<api::WaitRequest>(bytes).map_or("refused", |_| "wait"),
        10 => round_trip::<sandbox_api::StopSandboxRequest>(bytes)
            .map_or("refused", |_| "stop sandbox"),
        _ => round_trip::<ttrpc::proto::Request>(bytes).map_or("refused", |_| "ttrpc request"),
    }
}

impl Target for Proto {
    fn name(&self) -> &'static str {
        "proto"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds = Vec::new();
        let options = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: {
                let mut v = Vec::new();
                bytes_field(&mut v, 3, b"executor = \"native\"");
                v
            },
            ..Default::default()
        };
        let params = BootstrapParams {
            instance_id: ID.into(),
            namespace: NAMESPACE.into(),
            log_level: EnumOrUnknown::new(LogLevel::LOG_LEVEL_DEBUG),
            containerd_version: "v2.3.4".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            containerd_grpc_address: "/run/containerd/containerd.sock".into(),
            containerd_binary: "/usr/bin/containerd".into(),
            extensions: vec![Extension {
                value: MessageField::some(options.clone()),
                ..Default::default()
            }],
            socket_dir: Some("/run/containerd/s".into()),
            ..Default::default()
        };
        seeds.push(in_lane(BOOT_RAW, &params.write_to_bytes().expect("encode")));
        seeds.push(in_lane(
            BOOT_RAW,
            &options.write_to_bytes().expect("encode"),
        ));
        for n in [24, 96] {
            seeds.push(in_lane(BOOT_GENERATED, &vec![0x5a; n]));
            seeds.push(in_lane(POD_GENERATED, &vec![0xa7; n]));
            seeds.push(in_lane(ARGS, &vec![0x3c; n]));
        }
        let mut u = Unstructured::new(&[0x11; 64]);
        let (pod, _, _) = pod(&mut u);
        seeds.push(in_lane(POD_RAW, &pod));
        let requests: Vec<(u8, Vec<u8>)> = vec![
            (
                0,
                api::CreateTaskRequest {
                    id: ID.into(),
                    bundle: "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1".into(),
                    rootfs: vec![api::Mount {
                        type_: "overlay".into(),
                        source: "overlay".into(),
                        options: vec!["index=off".into(), "lowerdir=/a:/b".into(), "ro".into()],
                        ..Default::default()
                    }],
                    stdout: "/run/fifo/out".into(),
                    options: MessageField::some(options.clone()),
                    ..Default::default()
                }
                .write_to_bytes()
                .expect("encode"),
            ),
            (
                1,
                api::ExecProcessRequest {
                    id: ID.into(),
                    exec_id: "e1".into(),
                    terminal: true,
                    spec: MessageField::some(Any {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                        value: br#"{"args":["sh"],"env":["PATH=/bin"],"cwd":"/","user":{"uid":0,"gid":0},"terminal":true}"#.to_vec(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
                .write_to_bytes()
                .expect("encode"),
            ),
            (
                2,
                api::UpdateTaskRequest {
                    id: ID.into(),
                    resources: MessageField::some(Any {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                        value: br#"{"memory":{"limit":1048576},"cpu":{"shares":512,"quota":-1}}"#.to_vec(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
                .write_to_bytes()
                .expect("encode"),
            ),
            (
                3,
                sandbox_api::CreateSandboxRequest {
                    sandbox_id: "pod1".into(),
                    options: MessageField::some(Any {
                        type_url: "runtime.v1.PodSandboxConfig".into(),
                        value: pod.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
                .write_to_bytes()
                .expect("encode"),
            ),
            (
                4,
                api::KillRequest {
                    id: ID.into(),
                    signal: 9,
                    all: true,
                    ..Default::default()
                }
                .write_to_bytes()
                .expect("encode"),
            ),
            (
                11,
                ttrpc::proto::Request {
                    service: "containerd.task.v2.Task".into(),
                    method: "Create".into(),
                    payload: vec![0x0a, 0x02, b'c', b'1'],
                    timeout_nano: 1_000_000,
                    ..Default::default()
                }
                .write_to_bytes()
                .expect("encode"),
            ),
        ];
        for (kind, bytes) in requests {
            let mut v = vec![kind];
            v.extend_from_slice(&bytes);
            seeds.push(in_lane(REQUEST_RAW, &v));
        }
        seeds.push(in_lane(
            JSON_RAW,
            br#"{"args":["sh","-c","x"],"env":["A=b"],"cwd":"/","user":{"uid":0,"gid":0,"additionalGids":[1]},"capabilities":{"bounding":["CAP_KILL"]},"rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}]}"#,
        ));
        seeds.push(in_lane(
            JSON_RAW,
            br#"{"memory":{"limit":1048576,"swap":-1},"cpu":{"shares":512,"quota":100000,"period":100000,"cpus":"0-1"},"pids":{"limit":100},"devices":[{"allow":false,"access":"rwm"}]}"#,
        ));
        seeds
    }

    fn dict(&self) -> &'static [&'static [u8]] {
        DICT
    }

    fn run(&mut self, data: &[u8]) -> &'static str {
        let (lane, payload) = lane(data, LANES);
        let mut u = Unstructured::new(payload);
        match lane {
            BOOT_RAW => check_params(&self.flags, payload),
            BOOT_GENERATED => {
                let p = bootstrap(&mut u);
                check_params(
                    &self.flags,
                    &p.write_to_bytes().expect("encode BootstrapParams"),
                )
            }
            POD_RAW => match PodConfig::decode(payload) {
                Ok(config) => check_pod(config),
                Err(_) => "pod malformed",
            },
            POD_GENERATED => {
                let (bytes, want, modes) = pod(&mut u);
                match PodConfig::decode(&bytes) {
                    Ok(got) => {
                        assert!(
                            modes.as_deref() != Some("unknown namespace mode"),
                            "an unknown namespace mode decoded"
                        );
                        let mut got_without_modes = got.clone();
                        got_without_modes.namespaces = Default::default();
                        assert_eq!(got_without_modes, want, "pod config decoded differently");
                        if let Some(modes) = modes {
                            let n = |m: &dyn std::fmt::Debug| match format!("{m:?}").as_str() {
                                "Pod" => 0,
                                "Container" => 1,
                                "Node" => 2,
                                _ => 3,
                            };
                            let ns = &got.namespaces;
                            let got_modes = [n(&ns.network), n(&ns.pid), n(&ns.ipc)];
                            assert_eq!(format!("{got_modes:?}"), modes, "namespace modes");
                        }
                        check_pod(got)
                    }
                    Err(e) => {
                        assert!(
                            modes.as_deref() == Some("unknown namespace mode"),
                            "a valid pod config is refused: {e}"
                        );
                        "pod refused mode"
                    }
                }
            }
            ARGS => {
                let n = u.int_in_range(0..=8).unwrap_or(0);
                let argv: Vec<String> = (0..n).map(|_| word(&mut u, ARGV_WORDS)).collect();
                match parse_args(&argv) {
                    Ok(_) => "args parsed",
                    Err(_) => "args refused",
                }
            }
            REQUEST_RAW => match payload.split_first() {
                Some((kind, bytes)) => request(*kind, bytes),
                None => "empty",
            },
            _ => {
                let a = serde_json::from_slice::<barge_executor::Process>(payload).is_ok();
                let b = serde_json::from_slice::<barge_executor::LinuxResources>(payload).is_ok();
                match (a, b) {
                    (false, false) => "json refused",
                    _ => "json decoded",
                }
            }
        }
    }
}
