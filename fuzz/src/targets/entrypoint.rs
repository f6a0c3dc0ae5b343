//! Target `entrypoint`: a bundle's `config.json` (`spec::load`,
//! `spec::group_id`, the PID namespace check, the Wasm settings from its
//! annotations) and the entrypoint found in its rootfs
//! (`entrypoint::find`: PATH lookup, symlinks, ELF, `#!`, `\0asm`, `.wat`).
//!
//! Each input is a bundle: a rootfs of generated files, directories,
//! symlinks (absolute, relative, escaping, looping, chains around the
//! kernel's 40) and fifos, in one directory under /tmp reused for every
//! input; and a config.json, generated or mutated from a valid one.
//!
//! Checks: a spec that loads has a process; the entrypoint found is the
//! file the kernel opens for the first PATH candidate it can open, when it
//! resolves that candidate inside the rootfs (`openat2` with
//! `RESOLVE_IN_ROOT`, as after pivot_root), and nothing is found when the
//! kernel finds no regular file; what is found is classified by its first
//! bytes; the Wasm settings keep preopens absolute and without `..`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use arbitrary::Unstructured;
use barge_executor::entrypoint::{self, Kind};
use barge_executor::Spec;
use barge_shim::fuzzing::{group_id, has_own_pid_namespace, load_spec};
use serde_json::{json, Value};

use super::{in_lane, lane, word};
use crate::driver::Target;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Lanes: a generated bundle, or the fixed bundle with a mutated config.json.
const GENERATED: u8 = 0;
const RAW_CONFIG: u8 = 1;
const LANES: u8 = 2;

const DIRS: &[&str] = &[
    "",
    "bin",
    "usr/bin",
    "usr/local/bin",
    "sbin",
    "app",
    "a/b",
    "bin/sub",
];
const NAMES: &[&str] = &[
    "sh",
    "busybox",
    "app",
    "app.wasm",
    "hello.wat",
    "run.sh",
    "x",
    "loop",
    "link",
    "data",
    "..",
    ".",
];
const LINK_TARGETS: &[&str] = &[
    "/bin/busybox",
    "busybox",
    "../bin/sh",
    "../../../../../../etc/hostname",
    "/../../etc",
    "/",
    "..",
    ".",
    "/usr/bin",
    "sh",
    "loop",
    "link",
    "/app/app.wasm",
    "../app",
    "/proc/self/exe",
    "/dev/null",
    "x/..",
    "app.wasm/../sh",
    "",
];
const ARGS: &[&str] = &[
    "sh",
    "busybox",
    "app.wasm",
    "hello.wat",
    "/bin/sh",
    "/app/app.wasm",
    "./app",
    "../bin/sh",
    "bin/busybox",
    "/bin/busybox/../sh",
    "/bin/link",
    "loop",
    "/",
    "x",
    "",
];
const PATHS: &[&str] = &[
    DEFAULT_PATH,
    "/usr/bin:/bin",
    "/app",
    "",
    ":",
    "bin",
    "/bin/link:/a/b",
    "/missing:/bin/sub:/sbin",
    "/../../../bin",
];
const ANNOTATIONS: &[&str] = &[
    "io.barge.wasm.preopens",
    "io.barge.wasm.fuel",
    "io.barge.wasm.timeout",
    "io.barge.wasm.http-port",
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];
const ANNOTATION_VALUES: &[&str] = &[
    "/data:ro,/tmp",
    "/a/../b",
    "relative",
    "/x:bad",
    "1000",
    "18446744073709551616",
    "-1",
    "500ms",
    "30s",
    "2m",
    "307445734561825861m",
    "5x",
    "0",
    "65536",
    "8080",
    "pod",
    "",
];

/// The first bytes a file in the rootfs may start with.
const CONTENTS: &[&[u8]] = &[
    b"\x7fELF\x02\x01\x01\0",
    b"#!/bin/sh\necho hi\n",
    b"\0asm\x01\0\0\0",
    b"\0asm\x0d\0\x01\0",
    b"(module)",
    b"",
    b"MZ\x90\0",
    b"\x7fEL",
    b"#",
    b"\0as",
];

const DICT: &[&[u8]] = &[
    b"\"process\"",
    b"\"args\"",
    b"\"env\"",
    b"\"PATH=",
    b"\"cwd\"",
    b"\"root\"",
    b"\"path\"",
    b"\"rootfs\"",
    b"\"annotations\"",
    b"\"linux\"",
    b"\"namespaces\"",
    b"{\"type\":\"pid\"}",
    b"\"io.barge.wasm.preopens\"",
    b"\"io.barge.wasm.timeout\"",
    b"null",
    b"[]",
    b"{}",
    b"\\u0000",
    b"\"/bin/sh\"",
    b"1e999",
    b"-0",
    b"[[[[[[[[[[[[[[[[",
];

pub struct Entrypoint {
    dir: tempfile::TempDir,
    /// The bundle rebuilt for each generated input.
    bundle: PathBuf,
    /// A bundle made once, for the mutated config.json inputs.
    fixed: PathBuf,
}

impl Entrypoint {
    pub fn new() -> Entrypoint {
        let dir = super::scratch_dir("barge-fuzz-entrypoint.");
        let bundle = dir.path().join("bundle");
        let fixed = dir.path().join("fixed");
        std::fs::create_dir_all(&bundle).expect("make the bundle");
        let r = fixed.join("rootfs");
        for d in ["bin", "usr/bin", "app", "sbin"] {
            std::fs::create_dir_all(r.join(d)).expect("make the fixed rootfs");
        }
        let files: [(&str, &[u8]); 5] = [
            ("bin/busybox", b"\x7fELF\x02\x01\x01\0"),
            ("bin/run.sh", b"#!/bin/sh\n"),
            ("app/app.wasm", b"\0asm\x01\0\0\0"),
            ("app/hello.wat", b"(module)"),
            ("bin/data", b"MZ"),
        ];
        for (name, content) in files {
            std::fs::write(r.join(name), content).expect("write the fixed rootfs");
        }
        for (link, to) in [
            ("bin/sh", "busybox"),
            ("usr/bin/env", "/bin/busybox"),
            ("usr/bin/up", "../../../../bin/run.sh"),
            ("sbin/loop", "loop"),
            ("usr/bin/app", "/app/app.wasm"),
        ] {
            symlink(to, r.join(link)).expect("link in the fixed rootfs");
        }
        Entrypoint { dir, bundle, fixed }
    }

    /// Makes the generated rootfs of this input.
    fn build_rootfs(&self, u: &mut Unstructured<'_>, rootfs: &Path) {
        let _ = std::fs::remove_dir_all(rootfs);
        std::fs::create_dir_all(rootfs).expect("make the rootfs");
        for _ in 0..u.int_in_range(0..=10).unwrap_or(0) {
            let dir = u.choose(DIRS).unwrap_or(&"");
            let name = word(u, NAMES);
            if name.contains('\0') {
                continue;
            }
            let rel = Path::new(dir).join(&name);
            // Only ever below the rootfs: no `..`, no absolute name.
            if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                continue;
            }
            let path = rootfs.join(&rel);
            if path.symlink_metadata().is_ok() || !inside_without_links(rootfs, &rel) {
                // Never write through what is there (a fifo would block),
                // nor below a symlink or `..`: a generated link may point
                // anywhere on the host (it once led a write to /bin/busybox).
                continue;
            }
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let _ = match u.int_in_range(0..=9).unwrap_or(0) {
                0..=3 => {
                    let content: Vec<u8> = if u.ratio(1, 5).unwrap_or(false) {
                        let n = u.int_in_range(0..=20).unwrap_or(0);
                        u.bytes(n).unwrap_or_default().to_vec()
                    } else {
                        u.choose(CONTENTS).unwrap_or(&&b""[..]).to_vec()
                    };
                    std::fs::write(&path, content)
                }
                4 => std::fs::create_dir_all(&path),
                5..=7 => symlink(word(u, LINK_TARGETS), &path),
                8 => nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(std::io::Error::from),
                _ => {
                    // A chain of symlinks around the kernel's limit of 40,
                    // ending in an ELF file.
                    let n = u.int_in_range(36..=44).unwrap_or(40);
                    if !inside_without_links(rootfs, Path::new("chain/end"))
                        || rootfs.join("chain").is_symlink()
                        || rootfs.join("chain/end").is_symlink()
                    {
                        continue;
                    }
                    let _ = std::fs::create_dir_all(rootfs.join("chain"));
                    let _ = std::fs::write(rootfs.join("chain/end"), CONTENTS[0]);
                    let mut to = "end".to_string();
                    for i in 0..n {
                        let link = format!("l{i}");
                        let _ = symlink(&to, rootfs.join("chain").join(&link));
                        to = link;
                    }
                    symlink(format!("/chain/{to}"), &path)
                }
            };
        }
    }
}

impl Default for Entrypoint {
    fn default() -> Self {
        Entrypoint::new()
    }
}

/// A string array of 0 to 3 words.
fn strings(u: &mut Unstructured<'_>, dict: &[&str]) -> Value {
    let n = u.int_in_range(0..=3).unwrap_or(1);
    Value::Array((0..n).map(|_| Value::String(word(u, dict))).collect())
}

/// Now and then, a value of the wrong type in place of `v`.
fn perturb(u: &mut Unstructured<'_>, v: Value) -> Value {
    // (`ratio` is true once the input is used up: keep `v` then.)
    if u.ratio(31, 32).unwrap_or(true) {
        return v;
    }
    match u.int_in_range(0..=4).unwrap_or(0) {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!("x"),
        3 => json!([v]),
        _ => json!({}),
    }
}

/// A config.json, mostly well-formed.
fn config(u: &mut Unstructured<'_>) -> Value {
    let mut args = vec![Value::String(word(u, ARGS))];
    if let Value::Array(more) = strings(u, ARGS) {
        args.extend(more);
    }
    let mut env = vec![];
    if u.ratio(3, 4).unwrap_or(true) {
        env.push(Value::String(format!("PATH={}", word(u, PATHS))));
    }
    if u.ratio(1, 4).unwrap_or(false) {
        env.push(Value::String(format!(
            "BARGE_HTTP_PORT={}",
            word(u, ANNOTATION_VALUES)
        )));
    }
    let cwd = json!(word(u, &["/", "/app", "/bin", "app", "/missing", ""]));
    let mut process = json!({
        "args": perturb(u, Value::Array(args)),
        "env": perturb(u, Value::Array(env)),
        "cwd": perturb(u, cwd),
        "user": {"uid": 0, "gid": 0},
    });
    if u.ratio(1, 10).unwrap_or(false) {
        process["terminal"] = json!(true);
    }
    let mut spec = json!({ "ociVersion": "1.0.2" });
    if u.ratio(15, 16).unwrap_or(true) {
        spec["process"] = perturb(u, process);
    }
    if u.ratio(15, 16).unwrap_or(true) {
        let root = word(
            u,
            &[
                "rootfs",
                "./rootfs",
                "rootfs/",
                "missing",
                "",
                "rootfs/bin",
                "../bundle/rootfs",
            ],
        );
        spec["root"] = perturb(u, json!({ "path": root, "readonly": true }));
    }
    if u.ratio(1, 2).unwrap_or(false) {
        let mut annotations = serde_json::Map::new();
        for _ in 0..u.int_in_range(0..=3).unwrap_or(0) {
            annotations.insert(word(u, ANNOTATIONS), json!(word(u, ANNOTATION_VALUES)));
        }
        spec["annotations"] = perturb(u, Value::Object(annotations));
    }
    if u.ratio(1, 2).unwrap_or(false) {
        let mut namespaces = vec![];
        for _ in 0..u.int_in_range(0..=3).unwrap_or(0) {
            let kinds = [
                "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "pid", "mount", "bogus",
            ];
            let mut ns = json!({ "type": word(u, &kinds) });
            if u.ratio(1, 3).unwrap_or(false) {
                ns["path"] = json!("/proc/1/ns/pid");
            }
            namespaces.push(ns);
        }
        let limits = [
            json!(0),
            json!(-1),
            json!(1_048_576),
            json!(i64::MAX),
            json!(1_073_741_824),
            json!(u64::MAX),
        ];
        let limit = u.choose(&limits).cloned().unwrap_or_default();
        spec["linux"] = perturb(
            u,
            json!({ "namespaces": namespaces, "resources": { "memory": { "limit": limit } } }),
        );
    }
    spec
}

/// The file the kernel opens for `path` inside `root`, as after
/// pivot_root: symlinks and `..` resolved in the root. Its device and inode
/// when it is a regular file.
fn kernel_lookup(root: &OwnedFd, path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // `..` in the root fails with EAGAIN when a mount or rename anywhere
    // raced with the lookup: try again.
    let fd = loop {
        // SAFETY: openat2 reads `how` (of the size given) and the
        // NUL-terminated path; both outlive the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            break fd;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
            return None;
        }
    };
    // SAFETY: openat2 just returned this descriptor, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).ok()?;
    (st.st_mode & libc::S_IFMT == libc::S_IFREG).then_some((st.st_dev, st.st_ino))
}

/// What the kernel would run: the first candidate (PATH lookup as runc's
/// init does it) that is a regular file in the rootfs.
fn kernel_entrypoint(rootfs: &Path, spec: &Spec) -> Option<(PathBuf, (u64, u64))> {
    let root = nix::fcntl::open(
        rootfs,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    // SAFETY: open just returned this descriptor, owned by nobody else.
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    let process = spec.process().as_ref()?;
    let arg0 = process.args().as_ref()?.first().filter(|a| !a.is_empty())?;
    // Where to look is the shim's own rule (a plain PATH walk); what is
    // found there is the kernel's answer.
    barge_executor::entrypoint::candidates(process, arg0)
        .into_iter()
        .find_map(|c| kernel_lookup(&root, &c).map(|id| (c, id)))
}

/// What a file's first bytes (and its name) make it.
fn classify(path: &Path) -> Kind {
    let bytes = std::fs::read(path).unwrap_or_default();
    let head = &bytes[..bytes.len().min(16)];
    if head.starts_with(b"\x7fELF") {
        Kind::Elf
    } else if head.starts_with(b"#!") {
        Kind::Script
    } else if head.starts_with(b"\0asm") {
        Kind::WasmModule
    } else if path.extension().is_some_and(|e| e == "wat") {
        Kind::WasmText
    } else {
        Kind::Unknown(head.to_vec())
    }
}

fn check_bundle(bundle: &Path, generated: bool) -> &'static str {
    let group = group_id(bundle, "c1");
    assert!(!group.is_empty(), "empty group id");
    let spec = match load_spec(bundle) {
        Ok(spec) => spec,
        Err(_) if generated => return "generated spec refused",
        Err(_) => return "mutated spec refused",
    };
    assert!(spec.process().is_some(), "a spec without a process loaded");
    let _ = has_own_pid_namespace(&spec);
    if let Ok(settings) =
        barge_wasm::settings::Settings::resolve(&spec, &barge_executor::Options::default())
    {
        for p in &settings.preopens {
            assert!(
                p.path.starts_with('/') && !p.path.split('/').any(|c| c == ".."),
                "preopen {:?} escapes",
                p.path
            );
        }
        assert!(settings.http_port > 0, "HTTP port 0");
    }
    let Some(rootfs) = entrypoint::rootfs(bundle, &spec) else {
        assert!(
            entrypoint::find(bundle, &spec).is_err(),
            "an entrypoint without a root"
        );
        return "no root";
    };
    let kernel = kernel_entrypoint(&rootfs, &spec);
    match (entrypoint::find(bundle, &spec), kernel) {
        (Ok(e), Some((path, id))) => {
            assert_eq!(
                e.path, path,
                "barge and the kernel take different PATH candidates"
            );
            let st = nix::sys::stat::stat(&e.host_path)
                .unwrap_or_else(|err| panic!("{}: {err}", e.host_path.display()));
            assert_eq!(
                (st.st_dev, st.st_ino),
                id,
                "{} resolves to {}, not to the file the kernel opens",
                e.path.display(),
                e.host_path.display()
            );
            assert!(
                e.host_path.starts_with(&rootfs),
                "{} is outside the rootfs",
                e.host_path.display()
            );
            assert_eq!(
                e.kind,
                classify(&e.host_path),
                "{} misclassified",
                e.host_path.display()
            );
            match e.kind {
                Kind::Elf => "elf",
                Kind::Script => "script",
                Kind::WasmModule => "wasm",
                Kind::WasmText => "wat",
                Kind::Unknown(_) => "unknown kind",
            }
        }
        (Err(_), None) => "not found",
        (Ok(e), None) => panic!(
            "barge finds {} ({}) where the kernel opens no regular file",
            e.path.display(),
            e.host_path.display()
        ),
        (Err(why), Some((path, _))) => {
            panic!(
                "barge finds no entrypoint ({why}) where the kernel opens {}",
                path.display()
            )
        }
    }
}

impl Target for Entrypoint {
    fn name(&self) -> &'static str {
        "entrypoint"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds = Vec::new();
        for (args, env) in [
            (json!(["sh", "-c", "true"]), json!(["PATH=/usr/bin:/bin"])),
            (json!(["env"]), json!([])),
            (json!(["up"]), json!(["PATH=/usr/bin"])),
            (json!(["/usr/bin/app", "x"]), json!(["A=b"])),
            (json!(["hello.wat"]), json!(["PATH=/app"])),
            (json!(["loop"]), json!(["PATH=/sbin"])),
            (json!(["/bin/busybox/../run.sh"]), json!([])),
        ] {
            let spec = json!({
                "ociVersion": "1.0.2",
                "process": { "args": args, "env": env, "cwd": "/", "user": {"uid": 0, "gid": 0} },
                "root": { "path": "rootfs" },
                "annotations": { "io.barge.wasm.preopens": "/data:ro", "io.kubernetes.cri.sandbox-id": "pod" },
                "linux": { "namespaces": [{ "type": "pid" }, { "type": "mount" }] },
            });
            let text = serde_json::to_vec_pretty(&spec).expect("encode a seed");
            seeds.push(in_lane(RAW_CONFIG, &text));
        }
        for n in [16, 64, 256] {
            let mut rng = crate::mutate::Rng::new(n as u64);
            let mut bytes = vec![0; n];
            rng.fill(&mut bytes);
            seeds.push(in_lane(GENERATED, &bytes));
        }
        seeds
    }

    fn dict(&self) -> &'static [&'static [u8]] {
        DICT
    }

    fn max_len(&self) -> usize {
        2048
    }

    fn run(&mut self, data: &[u8]) -> &'static str {
        let (lane, payload) = lane(data, LANES);
        let bundle = if lane == RAW_CONFIG {
            std::fs::write(self.fixed.join("config.json"), payload).expect("write config.json");
            self.fixed.clone()
        } else {
            let mut u = Unstructured::new(payload);
            self.build_rootfs(&mut u, &self.bundle.join("rootfs"));
            let spec = config(&mut u);
            std::fs::write(self.bundle.join("config.json"), spec.to_string())
                .expect("write config.json");
            self.bundle.clone()
        };
        let outcome = check_bundle(&bundle, lane == GENERATED);
        debug_assert!(bundle.starts_with(self.dir.path()));
        outcome
    }
}

/// Whether every ancestor of `rel` under `rootfs` is a real directory or
/// not there yet, and `rel` has no `..`, `/` or other non-normal component:
/// then creating it cannot reach outside `rootfs`.
fn inside_without_links(rootfs: &Path, rel: &Path) -> bool {
    use std::path::Component;
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return false;
    }
    let mut at = rootfs.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        at.push(c);
        match at.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return false,
            Err(_) => return true,
        }
    }
    true
}
