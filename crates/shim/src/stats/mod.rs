//! Stats: a container's cgroup metrics, for the Task API's `Stats` RPC.
//!
//! [`Cgroup::of_pid`] finds, once while the container's init lives, where
//! its cgroup is: by the process's own `/proc/<pid>/cgroup` and the cgroup
//! mounts in `/proc/self/mountinfo`, so it depends on neither the executor
//! nor the syntax of `cgroupsPath` (systemd or cgroupfs driver).
//!
//! [`Cgroup::metrics`] reads the cgroup's files into the message containerd
//! expects: `io.containerd.cgroups.v1.Metrics` on a cgroup v1 host and on a
//! hybrid one (whose cgroup2 mount holds none of the controllers read here),
//! `io.containerd.cgroups.v2.Metrics` on a pure v2 host. Values and units
//! are those of containerd's cgroups library, which runc-v2 fills them with:
//! v1 CPU times in nanoseconds, v2 in microseconds; a v1 limit of `max` is
//! 0, a v2 one `u64::MAX`. A file that does not exist (a controller that is
//! not enabled) leaves its section empty; a negative value reads as 0.
//!
//! Each call reads only the files it fills fields from, once each, with one
//! buffer; what is known once (where the directories are, the huge page
//! sizes) is found when the cgroup is resolved.

mod v1;
mod v2;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

use crate::error::{Error, Result};

pub const V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";
pub const V2_METRICS: &str = "io.containerd.cgroups.v2.Metrics";

/// A container's cgroup, resolved from where its init process is.
#[derive(Debug, Clone)]
pub struct Cgroup {
    hierarchy: Hierarchy,
}

#[derive(Debug, Clone)]
enum Hierarchy {
    V1(v1::Controllers),
    V2(v2::Group),
}

impl Cgroup {
    /// The cgroup that process `pid` is in now.
    pub fn of_pid(pid: u32) -> Result<Cgroup> {
        let file = format!("/proc/{pid}/cgroup");
        let proc_cgroup = std::fs::read_to_string(&file).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
                Error::NotFound(format!("process {pid} is gone"))
            } else {
                Error::io(format!("reading {file}"))(e)
            }
        })?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(Error::io("reading /proc/self/mountinfo"))?;
        Self::from_files(&proc_cgroup, &mountinfo, Path::new("/"))
    }

    /// The cgroup at `path`, from the root of each hierarchy (as a cgroupfs
    /// `cgroupsPath` or a pod's `cgroup_parent` names it), in the
    /// hierarchies this process is in. One that does not exist is NotFound.
    pub fn at_path(path: &str) -> Result<Cgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(Error::io("reading /proc/self/cgroup"))?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(Error::io("reading /proc/self/mountinfo"))?;
        let cgroup = Self::from_files(&with_path(&own, path), &mountinfo, Path::new("/"))?;
        if !cgroup.exists() {
            return Err(Error::NotFound(format!("cgroup {path} does not exist")));
        }
        Ok(cgroup)
    }

    /// The cgroup named by `proc_cgroup` (the text of a `/proc/<pid>/cgroup`)
    /// in the hierarchies that `mountinfo` mounts. Every absolute path read
    /// from then on (mount points, `/proc/partitions`) is taken under `root`.
    pub fn from_files(proc_cgroup: &str, mountinfo: &str, root: &Path) -> Result<Cgroup> {
        let mounts = cgroup_mounts(mountinfo);
        let mut legacy = Vec::new();
        let mut unified = None;
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if controllers.is_empty() {
                if id == "0" {
                    unified = Some(path);
                }
            } else {
                legacy.extend(controllers.split(',').map(|c| (c, path)));
            }
        }
        let v1_dir = |controller: &str| {
            let (_, path) = legacy.iter().find(|(c, _)| *c == controller)?;
            mounts
                .iter()
                .filter(|m| !m.v2 && m.options.split(',').any(|o| o == controller))
                .find_map(|m| m.dir_of(path, root))
        };
        let controllers = v1::Controllers::new(
            v1::Dirs {
                cpu: v1_dir("cpu"),
                cpuacct: v1_dir("cpuacct"),
                memory: v1_dir("memory"),
                pids: v1_dir("pids"),
                blkio: v1_dir("blkio"),
                hugetlb: v1_dir("hugetlb"),
                rdma: v1_dir("rdma"),
            },
            root,
        );
        if let Some(controllers) = controllers {
            return Ok(Cgroup {
                hierarchy: Hierarchy::V1(controllers),
            });
        }
        let dir = unified.and_then(|path| {
            mounts
                .iter()
                .filter(|m| m.v2)
                .find_map(|m| m.dir_of(path, root))
        });
        match dir {
            Some(dir) => Ok(Cgroup {
                hierarchy: Hierarchy::V2(v2::Group::new(dir)),
            }),
            None => Err(Error::NotFound(
                "the process is in no cgroup v1 controller and no mounted cgroup2".into(),
            )),
        }
    }

    /// Whether the cgroup's directory is still there.
    pub fn exists(&self) -> bool {
        match &self.hierarchy {
            Hierarchy::V1(c) => c.exists(),
            Hierarchy::V2(g) => g.exists(),
        }
    }

    /// The cgroup's metrics now, as the Any that `StatsResponse.stats` carries.
    /// A cgroup that is gone answers NotFound.
    pub fn metrics(&self) -> Result<Any> {
        let mut files = Files::new();
        let (type_url, value) = match &self.hierarchy {
            Hierarchy::V1(c) => {
                let m = c.metrics(&mut files)?;
                self.found(m == Default::default())?;
                (V1_METRICS, m.write_to_bytes())
            }
            Hierarchy::V2(g) => {
                let m = g.metrics(&mut files)?;
                self.found(m == Default::default())?;
                (V2_METRICS, m.write_to_bytes())
            }
        };
        Ok(Any {
            type_url: type_url.into(),
            value: value.map_err(|e| Error::Other(format!("encoding the metrics: {e}")))?,
            ..Default::default()
        })
    }

    /// NotFound when nothing was read because the cgroup is gone.
    fn found(&self, empty: bool) -> Result<()> {
        if empty && !self.exists() {
            return Err(Error::NotFound("the container's cgroup is gone".into()));
        }
        Ok(())
    }
}

/// A cgroup or cgroup2 line of mountinfo.
#[derive(Debug)]
struct Mount<'a> {
    /// The directory of the hierarchy that is mounted.
    root: String,
    point: String,
    v2: bool,
    /// Super options: a v1 mount names its controllers there.
    options: &'a str,
}

impl Mount<'_> {
    /// Where cgroup `path` (as `/proc/<pid>/cgroup` names it) is under this
    /// mount, if the mount shows it.
    fn dir_of(&self, path: &str, root: &Path) -> Option<PathBuf> {
        let rel = if self.root == "/" {
            path
        } else {
            let rest = path.strip_prefix(self.root.as_str())?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            rest
        };
        let mut dir = root.join(self.point.trim_start_matches('/'));
        let rel = rel.trim_start_matches('/');
        if !rel.is_empty() {
            dir.push(rel);
        }
        Some(dir)
    }
}

/// `proc_cgroup` (the text of a `/proc/<pid>/cgroup`) with every
/// hierarchy's path replaced by `path`.
fn with_path(proc_cgroup: &str, path: &str) -> String {
    let path = format!("/{}", path.trim_start_matches('/'));
    proc_cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, controllers) = (parts.next()?, parts.next()?);
            Some(format!("{id}:{controllers}:{path}\n"))
        })
        .collect()
}

/// Where cgroup `path` (as `/proc/<pid>/cgroup` names it) is under each
/// cgroup and cgroup2 mount of `mountinfo`, whether it exists there or not.
pub fn dirs_in_every_hierarchy(mountinfo: &str, path: &str) -> Vec<PathBuf> {
    cgroup_mounts(mountinfo)
        .iter()
        .filter_map(|m| m.dir_of(path, Path::new("/")))
        .collect()
}

fn cgroup_mounts(mountinfo: &str) -> Vec<Mount<'_>> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // id parent major:minor root point options [optional...] - type source super
            let (left, right) = line.split_once(" - ")?;
            let mut left = left.split(' ');
            let root = left.nth(3)?;
            let point = left.next()?;
            let mut right = right.split(' ');
            let v2 = match right.next()? {
                "cgroup" => false,
                "cgroup2" => true,
                _ => return None,
            };
            let options = right.nth(1).unwrap_or("");
            Some(Mount {
                root: unescape(root),
                point: unescape(point),
                v2,
                options,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 4) {
            Some([b'\\', digits @ ..]) if digits.iter().all(|d| (b'0'..=b'7').contains(d)) => {
                let code = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
                u8::try_from(code).ok()
            }
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads cgroup files through one buffer, each with one open.
struct Files {
    buf: Vec<u8>,
}

impl Files {
    fn new() -> Files {
        Files { buf: vec![0; 4096] }
    }

    /// The text of cgroup file `path`, or None when it does not exist: the
    /// controller is not enabled, the kernel lacks the file or does not
    /// support reading it (PSI turned off), or the cgroup went away.
    ///
    /// A cgroup file (other than the pid lists, never read here) is one
    /// record that the kernel makes whole before it copies any: a read that
    /// does not fill the buffer has reached the end, and a second read to
    /// see end-of-file would only cost a system call.
    fn read(&mut self, path: &Path) -> Result<Option<&str>> {
        self.read_file(path, true)
    }

    /// The text of any file, `/proc/partitions` (one record a line), read to
    /// end-of-file.
    fn read_to_end(&mut self, path: &Path) -> Result<Option<&str>> {
        self.read_file(path, false)
    }

    fn read_file(&mut self, path: &Path, one_record: bool) -> Result<Option<&str>> {
        let missing = |e: &io::Error| {
            e.kind() == io::ErrorKind::NotFound
                || matches!(e.raw_os_error(), Some(libc::ENODEV | libc::EOPNOTSUPP))
        };
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if missing(&e) => return Ok(None),
            Err(e) => return Err(Error::io(format!("opening {}", path.display()))(e)),
        };
        let mut len = 0;
        loop {
            if len == self.buf.len() {
                self.buf.resize(len * 2, 0);
            }
            match file.read(&mut self.buf[len..]) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if one_record && len < self.buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if missing(&e) => return Ok(None),
                Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
            }
        }
        match std::str::from_utf8(&self.buf[..len]) {
            Ok(text) => Ok(Some(text)),
            Err(_) => Err(Error::Other(format!("{}: not text", path.display()))),
        }
    }

    /// A file of one number, or None when it does not exist. `max` (no
    /// limit) reads as the value given for it.
    fn number(&mut self, path: &Path, max: u64) -> Result<Option<u64>> {
        let Some(text) = self.read(path)? else {
            return Ok(None);
        };
        let text = text.trim();
        if text == "max" {
            return Ok(Some(max));
        }
        match number(text) {
            Some(v) => Ok(Some(v)),
            None => Err(Error::Other(format!(
                "{}: not a number: {text:?}",
                path.display()
            ))),
        }
    }

    /// Calls `each` with every `key value` line of a flat-keyed file and
    /// tells whether the file exists. Malformed lines are skipped.
    fn keyed(&mut self, path: &Path, mut each: impl FnMut(&str, u64)) -> Result<bool> {
        let Some(text) = self.read(path)? else {
            return Ok(false);
        };
        for (key, value) in text.lines().filter_map(key_value) {
            each(key, value);
        }
        Ok(true)
    }
}

/// A cgroup number: negative values (a limit of -1) read as 0, as
/// containerd reads them.
fn number(text: &str) -> Option<u64> {
    if let Ok(v) = text.parse::<u64>() {
        return Some(v);
    }
    let digits = text.strip_prefix('-')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(0)
}

fn key_value(line: &str) -> Option<(&str, u64)> {
    let mut fields = line.split_ascii_whitespace();
    let (key, value) = (fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    Some((key, number(value)?))
}

/// One line of `rdma.current` or `rdma.max`: `mlx4_0 hca_handle=2 hca_object=2000`.
fn rdma_entry(line: &str) -> Option<(&str, u32, u32)> {
    let mut fields = line.split_ascii_whitespace();
    let device = fields.next()?;
    let (mut handles, mut objects, mut any) = (0, 0, false);
    for field in fields {
        let (key, value) = field.split_once('=')?;
        any = true;
        let value = if value == "max" {
            u32::MAX
        } else {
            value.parse().ok()?
        };
        match key {
            "hca_handle" => handles = value,
            "hca_object" => objects = value,
            _ => {}
        }
    }
    any.then_some((device, handles, objects))
}

/// The page sizes (`2MB`, `1GB`) of the `hugetlb.<size>.<suffix>` files in
/// `dir`, smallest first. The directory is read once, when the cgroup is
/// resolved.
fn hugetlb_sizes(dir: &Path, suffix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes: Vec<(u64, String)> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            (!size.contains('.')).then(|| (page_size_bytes(size), size.to_string()))
        })
        .collect();
    sizes.sort();
    sizes.into_iter().map(|(_, size)| size).collect()
}

fn page_size_bytes(size: &str) -> u64 {
    let split = size
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(size.len());
    let (digits, unit) = size.split_at(split);
    let shift = match unit {
        "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        _ => 0,
    };
    digits.parse::<u64>().unwrap_or(0) << shift
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes `files` (path relative to `dir`, content) under `dir`.
    pub(crate) fn write_tree(dir: &Path, files: &[(&str, &str)]) {
        for (path, content) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
    }

    /// mountinfo of a cgroup v1 host where cpu and cpuacct share a hierarchy.
    pub(crate) const MOUNTINFO_V1: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
29 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
31 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids
32 25 0:30 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,blkio
33 25 0:31 / /sys/fs/cgroup/hugetlb rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,hugetlb
";

    /// mountinfo of this machine: separate cpu and cpuacct hierarchies, and a
    /// cgroup2 at /sys/fs/cgroup/unified.
    const MOUNTINFO_HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    pub(crate) const MOUNTINFO_V2: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
26 22 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn v1(cgroup: &Cgroup) -> &v1::Controllers {
        match &cgroup.hierarchy {
            Hierarchy::V1(c) => c,
            Hierarchy::V2(_) => panic!("resolved as v2: {cgroup:?}"),
        }
    }

    fn v2(cgroup: &Cgroup) -> &v2::Group {
        match &cgroup.hierarchy {
            Hierarchy::V2(g) => g,
            Hierarchy::V1(_) => panic!("resolved as v1: {cgroup:?}"),
        }
    }

    /// Cgroups made for a test in real hierarchies, with a `sleep` that
    /// runs inside them from its exec on (so that its memory is charged
    /// there). Dropping it kills the process and removes the cgroups.
    pub(crate) struct RealCgroup {
        pub dirs: Vec<PathBuf>,
        pub child: std::process::Child,
    }

    impl RealCgroup {
        /// None when one of `hierarchies` is not a mounted cgroup hierarchy.
        pub fn start(tag: &str, hierarchies: &[&str]) -> Option<RealCgroup> {
            let name = format!("barge-stats-test-{}-{tag}", std::process::id());
            let mut dirs: Vec<PathBuf> = Vec::new();
            for h in hierarchies {
                let h = std::fs::canonicalize(h).ok()?;
                if !h.join("cgroup.procs").exists() {
                    return None;
                }
                if !dirs.iter().any(|d| d.parent() == Some(h.as_path())) {
                    dirs.push(h.join(&name));
                }
            }
            for dir in &dirs {
                std::fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            }
            let child = std::process::Command::new("sh")
                .arg("-c")
                .arg(r#"for d in "$@"; do echo $$ > "$d/cgroup.procs" || exit 1; done; exec sleep 60"#)
                .arg("sh")
                .args(&dirs)
                .spawn()
                .unwrap();
            let cgroup = RealCgroup { dirs, child };
            let comm = format!("/proc/{}/comm", cgroup.child.id());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            // Until it sleeps for good: after the exec, sleep still runs
            // for a moment (loading, setting up), and uses CPU and memory.
            let wchan = format!("/proc/{}/wchan", cgroup.child.id());
            while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep"
                || !std::fs::read_to_string(&wchan)
                    .unwrap_or_default()
                    .contains("nanosleep")
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the test process never ran sleep"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Some(cgroup)
        }

        pub fn read(&self, hierarchy_dir: usize, file: &str) -> String {
            let path = self.dirs[hierarchy_dir].join(file);
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        }
    }

    impl Drop for RealCgroup {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            for dir in &self.dirs {
                // The kernel may need a moment after the exit to let go.
                for _ in 0..200 {
                    if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                assert!(!dir.exists(), "{} is left", dir.display());
            }
        }
    }

    /// What Stats costs on a real container cgroup of this host: run with
    /// `cargo test --release -p barge-shim stats::tests::cost -- --ignored --nocapture`.
    #[test]
    fn a_path_in_every_hierarchy() {
        let own = "12:memory:/docker/x\n11:cpu,cpuacct:/docker/x\n0::/init.scope\n";
        assert_eq!(
            with_path(own, "kubepods/pod1"),
            "12:memory:/kubepods/pod1\n11:cpu,cpuacct:/kubepods/pod1\n0::/kubepods/pod1\n"
        );
    }

    #[test]
    #[ignore]
    fn cost_per_call() {
        let hierarchies = [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup/cpuacct",
            "/sys/fs/cgroup/blkio",
        ];
        let cgroup = RealCgroup::start("cost", &hierarchies)
            .or_else(|| RealCgroup::start("cost", &["/sys/fs/cgroup"]))
            .expect("no cgroup hierarchy to measure in");
        let pid = cgroup.child.id();
        let started = std::time::Instant::now();
        let resolved = Cgroup::of_pid(pid).unwrap();
        let resolve = started.elapsed();
        // Rounds of 1000 calls: the fastest shows the cost, the others what
        // load on the machine adds.
        const CALLS: u32 = 1000;
        let mut rounds: Vec<std::time::Duration> = (0..5)
            .map(|_| {
                let started = std::time::Instant::now();
                for _ in 0..CALLS {
                    resolved.metrics().unwrap();
                }
                started.elapsed() / CALLS
            })
            .collect();
        rounds.sort();
        let any = resolved.metrics().unwrap();
        eprintln!(
            "{}: of_pid {resolve:?}; metrics() per call, 5 rounds of {CALLS}: {rounds:?} ({} bytes)",
            any.type_url,
            any.value.len()
        );
    }

    #[test]
    fn resolves_a_v1_host_by_the_process_paths() {
        // A systemd-driver path for some controllers, a cgroupfs one for others:
        // the resolution goes by where the process is, whatever the syntax.
        let proc_cgroup = "\
12:hugetlb:/default/ctr
9:pids:/system.slice/docker-abc.scope
6:cpu,cpuacct:/default/ctr
5:memory:/default/ctr
3:blkio:/default/ctr
1:name=systemd:/system.slice/docker-abc.scope
";
        let root = Path::new("/fake");
        let cgroup = Cgroup::from_files(proc_cgroup, MOUNTINFO_V1, root).unwrap();
        let dirs = &v1(&cgroup).dirs;
        let at = |p: &str| Some(PathBuf::from(p));
        assert_eq!(dirs.cpu, at("/fake/sys/fs/cgroup/cpu,cpuacct/default/ctr"));
        assert_eq!(
            dirs.cpuacct,
            at("/fake/sys/fs/cgroup/cpu,cpuacct/default/ctr")
        );
        assert_eq!(dirs.memory, at("/fake/sys/fs/cgroup/memory/default/ctr"));
        assert_eq!(
            dirs.pids,
            at("/fake/sys/fs/cgroup/pids/system.slice/docker-abc.scope")
        );
        assert_eq!(dirs.blkio, at("/fake/sys/fs/cgroup/blkio/default/ctr"));
        assert_eq!(dirs.hugetlb, at("/fake/sys/fs/cgroup/hugetlb/default/ctr"));
        assert_eq!(dirs.rdma, None, "no rdma hierarchy is mounted");
    }

    #[test]
    fn a_hybrid_host_is_v1() {
        let proc_cgroup = "\
9:name=systemd:/
8:pids:/default/ctr
7:blkio:/default/ctr
4:memory:/default/ctr
2:cpuacct:/default/ctr
1:cpu:/default/ctr
0::/
";
        let cgroup = Cgroup::from_files(proc_cgroup, MOUNTINFO_HYBRID, Path::new("/")).unwrap();
        let dirs = &v1(&cgroup).dirs;
        assert_eq!(
            dirs.cpu.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpu/default/ctr"))
        );
        assert_eq!(
            dirs.cpuacct.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpuacct/default/ctr"))
        );
        assert_eq!(
            dirs.memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory/default/ctr"))
        );
        assert_eq!(dirs.hugetlb, None);
    }

    #[test]
    fn resolves_a_v2_host() {
        let proc_cgroup = "0::/system.slice/docker-abc.scope\n";
        let cgroup = Cgroup::from_files(proc_cgroup, MOUNTINFO_V2, Path::new("/r")).unwrap();
        assert_eq!(
            v2(&cgroup).dir,
            Path::new("/r/sys/fs/cgroup/system.slice/docker-abc.scope")
        );
        // A v1 named hierarchy (no controller) next to cgroup2 is still v2.
        let mountinfo = format!(
            "{MOUNTINFO_V2}27 26 0:25 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
        );
        let proc_cgroup = "1:name=systemd:/x\n0::/k8s/pod1/ctr\n";
        let cgroup = Cgroup::from_files(proc_cgroup, &mountinfo, Path::new("/")).unwrap();
        assert_eq!(v2(&cgroup).dir, Path::new("/sys/fs/cgroup/k8s/pod1/ctr"));
    }

    #[test]
    fn a_mount_of_a_subtree_shows_the_paths_under_it() {
        // Inside a container: the hierarchy's /docker/abc is mounted at
        // /sys/fs/cgroup/memory, and a mount point has an escaped space.
        let mountinfo = "\
40 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:33 /other /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
42 31 0:33 / /mnt/pids\\040tree rw - cgroup cgroup rw,pids
";
        let proc_cgroup = "5:memory:/docker/abc/inner\n3:pids:/docker/abc\n";
        let cgroup = Cgroup::from_files(proc_cgroup, mountinfo, Path::new("/")).unwrap();
        let dirs = &v1(&cgroup).dirs;
        assert_eq!(
            dirs.memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory/inner"))
        );
        assert_eq!(unescape(r"a\040b\134c\011\\x\0"), "a b\\c\t\\\\x\\0");
        assert_eq!(unescape(r"\777\08"), r"\777\08", "not an escape");
        // /other does not show /docker/abc; the whole tree at /mnt does.
        assert_eq!(
            dirs.pids.as_deref(),
            Some(Path::new("/mnt/pids tree/docker/abc"))
        );
        // /docker/abcdef is not under /docker/abc.
        let cgroup = Cgroup::from_files("5:memory:/docker/abcdef\n", mountinfo, Path::new("/"));
        assert!(matches!(cgroup, Err(Error::NotFound(_))), "{cgroup:?}");
    }

    #[test]
    fn no_cgroup_is_not_found() {
        let mountinfo = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        let found = Cgroup::from_files("0::/\n", mountinfo, Path::new("/"));
        assert!(matches!(found, Err(Error::NotFound(_))), "{found:?}");
        let found = Cgroup::from_files("garbage\n\n::\n", MOUNTINFO_V2, Path::new("/"));
        assert!(matches!(found, Err(Error::NotFound(_))), "{found:?}");
        let found = Cgroup::from_files("0::/x\n", "garbage\n - cgroup2\n", Path::new("/"));
        assert!(matches!(found, Err(Error::NotFound(_))), "{found:?}");
    }

    #[test]
    fn of_pid_reads_the_process_and_mounts() {
        let own = Cgroup::of_pid(std::process::id()).unwrap();
        assert!(own.exists());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = Cgroup::of_pid(pid);
        assert!(matches!(gone, Err(Error::NotFound(_))), "{gone:?}");
    }

    #[test]
    fn numbers_as_containerd_reads_them() {
        assert_eq!(number("42"), Some(42));
        assert_eq!(number("-1"), Some(0));
        assert_eq!(number("-99999999999999999999999"), Some(0));
        assert_eq!(number("18446744073709551615"), Some(u64::MAX));
        assert_eq!(number("18446744073709551616"), None);
        assert_eq!(number("12a"), None);
        assert_eq!(number("-"), None);
        assert_eq!(number(""), None);
        assert_eq!(key_value("rss 10"), Some(("rss", 10)));
        assert_eq!(key_value("rss 10 11"), None);
        assert_eq!(key_value("rss"), None);
        assert_eq!(
            rdma_entry("mlx4_0 hca_handle=2 hca_object=max"),
            Some(("mlx4_0", 2, u32::MAX))
        );
        assert_eq!(rdma_entry("mlx4_0 hca_handle"), None);
        assert_eq!(page_size_bytes("2MB"), 2 << 20);
        assert_eq!(page_size_bytes("1GB"), 1 << 30);
        assert_eq!(page_size_bytes("64KB"), 64 << 10);
    }

    #[test]
    fn files_read_whole_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(10_000);
        write_tree(
            dir.path(),
            &[("big", &big), ("n", "7\n"), ("bad", "seven\n")],
        );
        let mut files = Files::new();
        assert_eq!(
            files.read(&dir.path().join("big")).unwrap(),
            Some(big.as_str())
        );
        assert_eq!(
            files.read_to_end(&dir.path().join("big")).unwrap(),
            Some(big.as_str())
        );
        assert_eq!(
            files
                .read_to_end(Path::new("/proc/self/mountinfo"))
                .unwrap(),
            Some(
                std::fs::read_to_string("/proc/self/mountinfo")
                    .unwrap()
                    .as_str()
            )
        );
        assert_eq!(files.read(&dir.path().join("nope")).unwrap(), None);
        assert_eq!(files.number(&dir.path().join("n"), 0).unwrap(), Some(7));
        let e = files
            .number(&dir.path().join("bad"), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad") && e.contains("seven"), "{e}");
    }
}
