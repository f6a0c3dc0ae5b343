//! Target `options`: the runtime options of Create (and of `start` and
//! `-info`): barge's TOML (`Options::from_toml`), and the three protobuf
//! messages `options::decode` reads: `runtimeoptions.v1.Options` (TOML in
//! `config_body`, or a file named by `config_path`), `containerd.runc.v1.Options`
//! and `containerd.linux.runc.CreateOptions`.
//!
//! Checks, beyond not panicking: options that decode are valid, and survive
//! the TOML round trip the shim makes to keep them beside the bundle for
//! `delete`; only a known type URL decodes; a runc `BinaryName` selects the
//! `oci-binary` executor with that runtime.

use arbitrary::Unstructured;
use barge_executor::{ExecutorChoice, Options as BargeOptions};
use barge_shim::fuzzing::{bytes_field, decode_options, is_options_type, varint};
use containerd_shim_protos::protobuf::well_known_types::any::Any;

use super::{in_lane, lane, word};
use crate::driver::Target;

const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
const RUNC_V1: &str = "containerd.runc.v1.Options";
const LINUX_CREATE: &str = "containerd.linux.runc.CreateOptions";

/// Lanes: what the rest of an input is.
const TOML_RAW: u8 = 0;
const TOML_GENERATED: u8 = 1;
const RUNTIME_RAW: u8 = 2;
const RUNTIME_GENERATED: u8 = 3;
const RUNC_RAW: u8 = 4;
const CREATE_RAW: u8 = 5;
const RUNC_GENERATED: u8 = 6;
const ANY_RAW: u8 = 7;
const LANES: u8 = 8;

const TOP_KEYS: &[&str] = &[
    "executor",
    "runtime",
    "runtime_root",
    "systemd_cgroup",
    "no_pivot_root",
    "no_new_keyring",
    "shim_cgroup",
    "io_uid",
    "io_gid",
    "debug",
    "nope",
];
const WASM_KEYS: &[&str] = &[
    "preopens",
    "fuel",
    "timeout_ms",
    "cache_dir",
    "cache_max_mb",
    "other",
];
const WORDS: &[&str] = &[
    "auto",
    "native",
    "oci-binary",
    "wasm",
    "runc",
    "crun",
    "/usr/bin/runc",
    "/run/barge",
    "/barge/shims",
    "relative",
    "/a/../b",
    "/",
    "",
    "/data:ro",
    "/tmp:rw",
    "/x:bad",
    "/var/lib/barge/wasm-cache",
];

/// Tokens for the mutator: TOML syntax and the option names.
const DICT: &[&[u8]] = &[
    b"executor",
    b"runtime",
    b"runtime_root",
    b"shim_cgroup",
    b"io_uid",
    b"[wasm]",
    b"preopens",
    b"fuel",
    b"timeout_ms",
    b"cache_dir",
    b"cache_max_mb",
    b" = ",
    b"\"",
    b"'''",
    b"\"\"\"",
    b"[[",
    b"]]",
    b"{",
    b"}",
    b"\n",
    b"true",
    b"false",
    b"-9223372036854775808",
    b"18446744073709551616",
    b"1979-05-27T07:32:00Z",
    b"inf",
    b"nan",
    b"\\u0000",
    b"wasm.",
    b"runtimeoptions.v1.Options",
    b"containerd.runc.v1.Options",
    b"containerd.linux.runc.CreateOptions",
];

pub struct Options {
    /// Holds the files `config_path` may name.
    _dir: tempfile::TempDir,
    paths: Vec<String>,
}

impl Options {
    pub fn new() -> Options {
        let dir = super::scratch_dir("barge-fuzz-options.");
        let file = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).expect("write a config file");
            p.display().to_string()
        };
        let mut paths = vec![
            file("good.toml", "executor = \"wasm\"\n[wasm]\nfuel = 5\n"),
            file("bad.toml", "nope = 1\n"),
            file("empty.toml", ""),
            file("binary.toml", "\u{0}\u{1}\u{ff}"),
            dir.path().display().to_string(),
            dir.path().join("missing.toml").display().to_string(),
            "relative.toml".to_string(),
            String::new(),
        ];
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("make a fifo");
        paths.push(fifo.display().to_string());
        // What a mistyped ConfigPath may name on any host.
        paths.extend(["/dev/null", "/dev/zero", "/proc/self/status"].map(String::from));
        Options { _dir: dir, paths }
    }

    fn path(&self, u: &mut Unstructured<'_>) -> String {
        u.choose(&self.paths).cloned().unwrap_or_default()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

/// A TOML value of some type (often the wrong one for its key).
fn toml_value(u: &mut Unstructured<'_>, depth: u32) -> String {
    match u.int_in_range(0..=7).unwrap_or(0) {
        0 | 1 => format!("{:?}", word(u, WORDS)),
        2 => u.choose(&["true", "false"]).unwrap_or(&"true").to_string(),
        3 => {
            let n: i64 = *u
                .choose(&[
                    0,
                    1,
                    -1,
                    5,
                    1024,
                    u32::MAX as i64,
                    u32::MAX as i64 + 1,
                    i64::MAX,
                    i64::MIN,
                ])
                .unwrap_or(&0);
            n.to_string()
        }
        4 if depth < 3 => {
            let n = u.int_in_range(0..=3).unwrap_or(0);
            let items: Vec<String> = (0..n).map(|_| toml_value(u, depth + 1)).collect();
            format!("[{}]", items.join(", "))
        }
        5 if depth < 3 => format!("{{ fuel = {} }}", toml_value(u, depth + 1)),
        6 => "1.5".to_string(),
        _ => format!("'{}'", word(u, WORDS).replace(['\'', '\n'], "")),
    }
}

/// A TOML document made of barge's keys (and a few others), with values
/// of any type.
fn toml_document(u: &mut Unstructured<'_>) -> String {
    let mut doc = String::new();
    for _ in 0..u.int_in_range(0..=6).unwrap_or(0) {
        let key = u.choose(TOP_KEYS).unwrap_or(&"executor");
        doc += &format!("{key} = {}\n", toml_value(u, 0));
    }
    match u.int_in_range(0..=2).unwrap_or(0) {
        0 => {}
        1 => {
            doc += "[wasm]\n";
            for _ in 0..u.int_in_range(0..=4).unwrap_or(0) {
                let key = u.choose(WASM_KEYS).unwrap_or(&"fuel");
                doc += &format!("{key} = {}\n", toml_value(u, 0));
            }
        }
        _ => {
            let key = u.choose(WASM_KEYS).unwrap_or(&"fuel");
            doc += &format!("wasm.{key} = {}\n", toml_value(u, 0));
        }
    }
    doc
}

/// A `runtimeoptions.v1.Options` with any of its three fields.
fn runtime_options(u: &mut Unstructured<'_>, path: String) -> Vec<u8> {
    let mut m = Vec::new();
    if u.ratio(1, 4).unwrap_or(false) {
        bytes_field(&mut m, 1, word(u, &["toml", "type"]).as_bytes());
    }
    if u.ratio(1, 2).unwrap_or(false) {
        bytes_field(&mut m, 2, path.as_bytes());
    }
    if u.ratio(2, 3).unwrap_or(true) {
        bytes_field(&mut m, 3, toml_document(u).as_bytes());
    }
    if u.ratio(1, 8).unwrap_or(false) {
        // An unknown field, which the decoder skips.
        varint(&mut m, 9 << 3);
        varint(&mut m, 1);
    }
    m
}

/// A runc options message: field numbers 0 to 15, each a varint or
/// length-delimited, right for its field most of the time.
fn runc_options(u: &mut Unstructured<'_>) -> Vec<u8> {
    let mut m = Vec::new();
    for _ in 0..u.int_in_range(0..=5).unwrap_or(0) {
        let number = u.int_in_range(0u64..=15).unwrap_or(1);
        if u.ratio(1, 2).unwrap_or(true) {
            let n = *u
                .choose(&[
                    0u64,
                    1,
                    2,
                    1000,
                    u32::MAX as u64,
                    u32::MAX as u64 + 1,
                    u64::MAX,
                ])
                .unwrap_or(&1);
            varint(&mut m, number << 3);
            varint(&mut m, n);
        } else {
            bytes_field(&mut m, number, word(u, WORDS).as_bytes());
        }
    }
    m
}

/// The checks on a decode of `any`.
fn check(any: &Any, result: barge_shim::Result<BargeOptions>) -> &'static str {
    match result {
        Ok(options) => {
            assert!(
                (any.type_url.is_empty() && any.value.is_empty()) || is_options_type(&any.type_url),
                "options of type {:?} decoded",
                any.type_url
            );
            round_trip(&options);
            "decoded"
        }
        Err(_) => "refused",
    }
}

/// Options that decode are valid, and come back the same from the TOML
/// the shim keeps for `delete`.
fn round_trip(options: &BargeOptions) {
    options
        .validate()
        .unwrap_or_else(|e| panic!("decoded options are invalid: {e}: {options:?}"));
    let toml = options.to_toml();
    let back = BargeOptions::from_toml(&toml)
        .unwrap_or_else(|e| panic!("the options' own TOML does not decode: {e}: {toml:?}"));
    assert_eq!(
        &back, options,
        "the TOML round trip changes the options: {toml:?}"
    );
}

impl Target for Options {
    fn name(&self) -> &'static str {
        "options"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let tomls = [
            "executor = \"native\"\n",
            "executor = \"oci-binary\"\nruntime = \"crun\"\nruntime_root = \"/run/crun\"\nsystemd_cgroup = true\n",
            "no_pivot_root = true\nno_new_keyring = true\nshim_cgroup = \"/barge/shims\"\nio_uid = 1000\nio_gid = 1000\ndebug = true\n",
            "[wasm]\npreopens = [\"/data:ro\", \"/tmp\"]\nfuel = 1000000\ntimeout_ms = 5000\ncache_dir = \"/var/lib/barge/wasm-cache\"\ncache_max_mb = 0\n",
            "executor = 'wasm'\nwasm.fuel = 10\nwasm.preopens = []\n",
        ];
        let mut seeds: Vec<Vec<u8>> = tomls
            .iter()
            .map(|t| in_lane(TOML_RAW, t.as_bytes()))
            .collect();
        seeds.push(in_lane(
            TOML_RAW,
            BargeOptions::default().to_toml().as_bytes(),
        ));
        for t in tomls {
            let mut m = Vec::new();
            bytes_field(&mut m, 3, t.as_bytes());
            seeds.push(in_lane(RUNTIME_RAW, &m));
        }
        let mut m = Vec::new();
        bytes_field(&mut m, 1, b"io.containerd.barge.v1");
        bytes_field(&mut m, 2, self.paths[0].as_bytes());
        seeds.push(in_lane(RUNTIME_RAW, &m));
        // runc.v1.Options: NoPivotRoot, IoUid 1000, BinaryName crun, Root, SystemdCgroup.
        let mut runc = Vec::new();
        for (n, v) in [(1u64, 1u64), (4, 1000), (5, 1000), (9, 1)] {
            varint(&mut runc, n << 3);
            varint(&mut runc, v);
        }
        bytes_field(&mut runc, 3, b"/barge/shims");
        bytes_field(&mut runc, 6, b"crun");
        bytes_field(&mut runc, 7, b"/run/containerd/crun");
        bytes_field(&mut runc, 12, b"/run/x.sock");
        seeds.push(in_lane(RUNC_RAW, &runc));
        // CreateOptions: NoPivotRoot, NoNewKeyring, IoUid, IoGid, ShimCgroup.
        let mut create = Vec::new();
        for (n, v) in [(1u64, 1u64), (8, 1), (10, 1000), (11, 1000)] {
            varint(&mut create, n << 3);
            varint(&mut create, v);
        }
        bytes_field(&mut create, 9, b"/barge/shims");
        seeds.push(in_lane(CREATE_RAW, &create));
        // An Any as `start` gets it on stdin before containerd 2.3.
        let mut any = Vec::new();
        bytes_field(&mut any, 1, RUNC_V1.as_bytes());
        bytes_field(&mut any, 2, &runc);
        seeds.push(in_lane(ANY_RAW, &any));
        for lane in [TOML_GENERATED, RUNTIME_GENERATED, RUNC_GENERATED] {
            seeds.push(in_lane(lane, &[0x55; 48]));
            seeds.push(in_lane(
                lane,
                &[0x9e, 0x37, 0x79, 0xb9, 0x7f, 0x4a, 0x7c, 0x15].repeat(8),
            ));
        }
        seeds
    }

    fn dict(&self) -> &'static [&'static [u8]] {
        DICT
    }

    fn run(&mut self, data: &[u8]) -> &'static str {
        let (lane, payload) = lane(data, LANES);
        let any = |type_url: &str, value: Vec<u8>| Any {
            type_url: type_url.to_string(),
            value,
            ..Default::default()
        };
        let mut u = Unstructured::new(payload);
        match lane {
            TOML_RAW | TOML_GENERATED => {
                let text = if lane == TOML_RAW {
                    String::from_utf8_lossy(payload).into_owned()
                } else {
                    toml_document(&mut u)
                };
                match BargeOptions::from_toml(&text) {
                    Ok(options) => {
                        round_trip(&options);
                        "toml decoded"
                    }
                    Err(_) => "toml refused",
                }
            }
            RUNTIME_RAW | RUNTIME_GENERATED | RUNC_RAW | CREATE_RAW | RUNC_GENERATED => {
                let (type_url, value) = match lane {
                    RUNTIME_RAW => (RUNTIME_OPTIONS.to_string(), payload.to_vec()),
                    RUNTIME_GENERATED => {
                        let path = self.path(&mut u);
                        (RUNTIME_OPTIONS.to_string(), runtime_options(&mut u, path))
                    }
                    RUNC_RAW => (RUNC_V1.to_string(), payload.to_vec()),
                    CREATE_RAW => (LINUX_CREATE.to_string(), payload.to_vec()),
                    _ => {
                        let name = u.choose(&[RUNC_V1, LINUX_CREATE]).unwrap_or(&RUNC_V1);
                        let prefix = u
                            .choose(&["", "type.googleapis.com/", "x/y/"])
                            .unwrap_or(&"");
                        (format!("{prefix}{name}"), runc_options(&mut u))
                    }
                };
                let any = any(&type_url, value);
                let result = decode_options(Some(&any));
                if let Ok(options) = &result {
                    // runc-v2's BinaryName: the oci-binary executor with that binary.
                    let binary = barge_shim::fuzzing::fields(&any.value, "m")
                        .ok()
                        .and_then(|f| {
                            f.into_iter()
                                .rev()
                                .find(|(n, _)| *n == 6)
                                .and_then(|(_, v)| v.text("m").ok())
                        })
                        .filter(|b| !b.is_empty() && type_url.ends_with(RUNC_V1));
                    if let Some(binary) = binary {
                        assert_eq!(
                            (options.executor, options.runtime.as_str()),
                            (ExecutorChoice::OciBinary, binary.as_str()),
                            "BinaryName {binary:?} does not select the oci-binary executor"
                        );
                    }
                }
                check(&any, result)
            }
            _ => {
                // An Any as it comes on stdin, of any type.
                let parsed = <Any as protobuf::Message>::parse_from_bytes(payload);
                match parsed {
                    Ok(any) => check(&any, decode_options(Some(&any))),
                    Err(_) => "any refused",
                }
            }
        }
    }
}
