//! cgroup v2: `io.containerd.cgroups.v2.Metrics`, filled as containerd's
//! `cgroup2.Manager.Stat` fills it: times in microseconds, a limit of `max`
//! as `u64::MAX`.

use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups_v2::metrics::{
    CPUStat, HugeTlbStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PSIData, PSIStats,
    PidsStat, RdmaEntry, RdmaStat,
};
use containerd_shim_protos::protobuf::MessageField;

use super::{hugetlb_sizes, rdma_entry, Files};
use crate::error::Result;

#[derive(Debug, Clone)]
pub(super) struct Group {
    pub dir: PathBuf,
    /// `2MB`, `1GB`: the sizes the hugetlb controller has files for.
    hugetlb_sizes: Vec<String>,
    /// The rdma controller is enabled (it seldom is: no call looks for it then).
    rdma: bool,
}

impl Group {
    pub fn new(dir: PathBuf) -> Group {
        let hugetlb_sizes = hugetlb_sizes(&dir, ".current");
        let rdma = dir.join("rdma.current").exists();
        Group {
            dir,
            hugetlb_sizes,
            rdma,
        }
    }

    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file of one number; `max` is `u64::MAX`, as containerd has it.
    fn number(&self, files: &mut Files, name: &str) -> Result<Option<u64>> {
        files.number(&self.file(name), u64::MAX)
    }

    pub fn metrics(&self, files: &mut Files) -> Result<Metrics> {
        let mut m = Metrics::new();
        m.cpu = self.cpu(files)?.into();
        m.memory = self.memory(files)?.into();
        let mut events = MemoryEvents::new();
        if files.keyed(&self.file("memory.events"), |key, v| match key {
            "low" => events.low = v,
            "high" => events.high = v,
            "max" => events.max = v,
            "oom" => events.oom = v,
            "oom_kill" => events.oom_kill = v,
            "oom_group_kill" => events.oom_group_kill = v,
            _ => {}
        })? {
            m.memory_events = MessageField::some(events);
        }
        if let Some(current) = self.number(files, "pids.current")? {
            m.pids = MessageField::some(PidsStat {
                current,
                limit: self.number(files, "pids.max")?.unwrap_or(0),
                ..Default::default()
            });
        }
        m.io = self.io(files)?.into();
        m.hugetlb = self.hugetlb(files)?;
        m.rdma = self.rdma(files)?.into();
        Ok(m)
    }

    fn cpu(&self, files: &mut Files) -> Result<Option<CPUStat>> {
        let mut s = CPUStat::new();
        let found = files.keyed(&self.file("cpu.stat"), |key, v| match key {
            "usage_usec" => s.usage_usec = v,
            "user_usec" => s.user_usec = v,
            "system_usec" => s.system_usec = v,
            "nr_periods" => s.nr_periods = v,
            "nr_throttled" => s.nr_throttled = v,
            "throttled_usec" => s.throttled_usec = v,
            "nr_bursts" => s.nr_bursts = v,
            "burst_usec" => s.burst_usec = v,
            _ => {}
        })?;
        s.psi = psi(files, &self.file("cpu.pressure"))?;
        Ok((found || s.psi.is_some()).then_some(s))
    }

    fn memory(&self, files: &mut Files) -> Result<Option<MemoryStat>> {
        let mut s = MemoryStat::new();
        let mut found = files.keyed(&self.file("memory.stat"), |key, v| match key {
            "anon" => s.anon = v,
            "file" => s.file = v,
            "kernel_stack" => s.kernel_stack = v,
            "slab" => s.slab = v,
            "sock" => s.sock = v,
            "shmem" => s.shmem = v,
            "file_mapped" => s.file_mapped = v,
            "file_dirty" => s.file_dirty = v,
            "file_writeback" => s.file_writeback = v,
            "anon_thp" => s.anon_thp = v,
            "inactive_anon" => s.inactive_anon = v,
            "active_anon" => s.active_anon = v,
            "inactive_file" => s.inactive_file = v,
            "active_file" => s.active_file = v,
            "unevictable" => s.unevictable = v,
            "slab_reclaimable" => s.slab_reclaimable = v,
            "slab_unreclaimable" => s.slab_unreclaimable = v,
            "pgfault" => s.pgfault = v,
            "pgmajfault" => s.pgmajfault = v,
            "workingset_refault" => s.workingset_refault = v,
            "workingset_activate" => s.workingset_activate = v,
            "workingset_nodereclaim" => s.workingset_nodereclaim = v,
            "pgrefill" => s.pgrefill = v,
            "pgscan" => s.pgscan = v,
            "pgsteal" => s.pgsteal = v,
            "pgactivate" => s.pgactivate = v,
            "pgdeactivate" => s.pgdeactivate = v,
            "pglazyfree" => s.pglazyfree = v,
            "pglazyfreed" => s.pglazyfreed = v,
            "thp_fault_alloc" => s.thp_fault_alloc = v,
            "thp_collapse_alloc" => s.thp_collapse_alloc = v,
            _ => {}
        })?;
        for (name, field) in [
            ("memory.current", &mut s.usage),
            ("memory.max", &mut s.usage_limit),
            ("memory.peak", &mut s.max_usage),
            ("memory.swap.current", &mut s.swap_usage),
            ("memory.swap.max", &mut s.swap_limit),
            ("memory.swap.peak", &mut s.swap_max_usage),
        ] {
            if let Some(v) = self.number(files, name)? {
                *field = v;
                found = true;
            }
        }
        s.psi = psi(files, &self.file("memory.pressure"))?;
        Ok((found || s.psi.is_some()).then_some(s))
    }

    fn io(&self, files: &mut Files) -> Result<Option<IOStat>> {
        let mut s = IOStat::new();
        let found = match files.read(&self.file("io.stat"))? {
            Some(text) => {
                s.usage = text.lines().filter_map(io_entry).collect();
                true
            }
            None => false,
        };
        s.psi = psi(files, &self.file("io.pressure"))?;
        Ok((found || s.psi.is_some()).then_some(s))
    }

    fn hugetlb(&self, files: &mut Files) -> Result<Vec<HugeTlbStat>> {
        let mut out = Vec::with_capacity(self.hugetlb_sizes.len());
        for size in &self.hugetlb_sizes {
            let Some(current) = self.number(files, &format!("hugetlb.{size}.current"))? else {
                continue;
            };
            let mut failcnt = 0;
            files.keyed(&self.file(&format!("hugetlb.{size}.events")), |key, v| {
                if key == "max" {
                    failcnt = v;
                }
            })?;
            out.push(HugeTlbStat {
                current,
                max: self
                    .number(files, &format!("hugetlb.{size}.max"))?
                    .unwrap_or(0),
                pagesize: size.clone(),
                failcnt,
                ..Default::default()
            });
        }
        Ok(out)
    }

    fn rdma(&self, files: &mut Files) -> Result<Option<RdmaStat>> {
        if !self.rdma {
            return Ok(None);
        }
        let mut stat = RdmaStat::new();
        let mut found = false;
        for (name, out) in [
            ("rdma.current", &mut stat.current),
            ("rdma.max", &mut stat.limit),
        ] {
            if let Some(text) = files.read(&self.file(name))? {
                found = true;
                out.extend(text.lines().filter_map(rdma_entry).map(
                    |(device, handles, objects)| RdmaEntry {
                        device: device.to_string(),
                        hca_handles: handles,
                        hca_objects: objects,
                        ..Default::default()
                    },
                ));
            }
        }
        Ok(found.then_some(stat))
    }
}

/// One line of `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`.
fn io_entry(line: &str) -> Option<IOEntry> {
    let mut fields = line.split_ascii_whitespace();
    let (major, minor) = fields.next()?.split_once(':')?;
    let mut entry = IOEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        ..Default::default()
    };
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let Ok(value) = value.parse() else {
            continue;
        };
        match key {
            "rbytes" => entry.rbytes = value,
            "wbytes" => entry.wbytes = value,
            "rios" => entry.rios = value,
            "wios" => entry.wios = value,
            _ => {}
        }
    }
    Some(entry)
}

/// A pressure file: `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and a
/// `full` line. None when the file does not exist or PSI is off.
fn psi(files: &mut Files, path: &Path) -> Result<MessageField<PSIStats>> {
    let Some(text) = files.read(path)? else {
        return Ok(MessageField::none());
    };
    let mut stats = PSIStats::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut stats.some,
            Some("full") => &mut stats.full,
            _ => continue,
        };
        let mut data = PSIData::new();
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            match key {
                "avg10" => data.avg10 = value.parse().unwrap_or(0.0),
                "avg60" => data.avg60 = value.parse().unwrap_or(0.0),
                "avg300" => data.avg300 = value.parse().unwrap_or(0.0),
                "total" => data.total = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        *slot = MessageField::some(data);
    }
    Ok(MessageField::some(stats))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{write_tree, MOUNTINFO_V2};
    use super::super::{Cgroup, V2_METRICS};
    use super::*;
    use crate::error::Error;
    use containerd_shim_protos::protobuf::Message;

    const DIR: &str = "sys/fs/cgroup/system.slice/docker-abc.scope";
    const PROC_CGROUP: &str = "0::/system.slice/docker-abc.scope\n";

    const MEMORY_STAT: &str = "\
anon 1
file 2
kernel 999
kernel_stack 3
pagetables 999
sec_pagetables 0
percpu 999
sock 5
vmalloc 0
shmem 6
zswap 0
file_mapped 7
file_dirty 8
file_writeback 9
swapcached 0
anon_thp 10
file_thp 0
shmem_thp 0
inactive_anon 11
active_anon 12
inactive_file 13
active_file 14
unevictable 15
slab_reclaimable 16
slab_unreclaimable 17
slab 4
workingset_refault 18
workingset_refault_anon 0
workingset_activate 19
workingset_nodereclaim 20
pgdemote_kswapd 0
pgscan 22
pgsteal 23
pgrefill 21
pgactivate 24
pgdeactivate 25
pglazyfree 26
pglazyfreed 27
pgfault 28
pgmajfault 29
thp_fault_alloc 30
thp_collapse_alloc 31
";

    fn full_tree(root: &Path) {
        let f = |name: &str| format!("{DIR}/{name}");
        write_tree(root, &[
            (&f("cpu.stat"), "usage_usec 2816478964\nuser_usec 2353373358\nsystem_usec 463105606\nnice_usec 52745125\nnr_periods 40\nnr_throttled 4\nthrottled_usec 1234\nnr_bursts 2\nburst_usec 77\n"),
            (&f("cpu.pressure"), "some avg10=84.98 avg60=55.99 avg300=35.11 total=597454456\nfull avg10=0.50 avg60=0.25 avg300=0.01 total=42\n"),
            (&f("memory.stat"), MEMORY_STAT),
            (&f("memory.current"), "2170880\n"),
            (&f("memory.max"), "max\n"),
            (&f("memory.peak"), "4194304\n"),
            (&f("memory.swap.current"), "4096\n"),
            (&f("memory.swap.max"), "1073741824\n"),
            (&f("memory.swap.peak"), "8192\n"),
            (&f("memory.events"), "low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 6\n"),
            (&f("memory.pressure"), "some avg10=0.21 avg60=0.96 avg300=0.75 total=16900303\nfull avg10=0.00 avg60=0.02 avg300=0.04 total=8404867\n"),
            (&f("pids.current"), "3\n"),
            (&f("pids.max"), "max\n"),
            (&f("io.stat"), "254:0 rbytes=1048576 wbytes=4096 rios=12 wios=1 dbytes=0 dios=0\n8:16 rbytes=5 wbytes=6 rios=7 wios=8 dbytes=0 dios=0\nbroken\n"),
            (&f("io.pressure"), "some avg10=1.00 avg60=2.00 avg300=3.00 total=4\nfull avg10=5.00 avg60=6.00 avg300=7.00 total=8\n"),
            (&f("hugetlb.2MB.current"), "2097152\n"),
            (&f("hugetlb.2MB.max"), "max\n"),
            (&f("hugetlb.2MB.events"), "max 3\n"),
            (&f("hugetlb.2MB.rsvd.current"), "0\n"),
            (&f("hugetlb.1GB.current"), "0\n"),
            (&f("hugetlb.1GB.max"), "1073741824\n"),
            (&f("hugetlb.1GB.events"), "max 0\n"),
        ]);
    }

    fn decode(cgroup: &Cgroup) -> Metrics {
        let any = cgroup.metrics().unwrap();
        assert_eq!(any.type_url, V2_METRICS);
        Metrics::parse_from_bytes(&any.value).unwrap()
    }

    fn psi_of(p: &MessageField<PSIStats>) -> [(f64, f64, f64, u64); 2] {
        let d = |d: &MessageField<PSIData>| {
            let d = d.as_ref().unwrap();
            (d.avg10, d.avg60, d.avg300, d.total)
        };
        let p = p.as_ref().unwrap();
        [d(&p.some), d(&p.full)]
    }

    #[test]
    fn every_field_of_a_full_cgroup() {
        let root = tempfile::tempdir().unwrap();
        full_tree(root.path());
        let cgroup = Cgroup::from_files(PROC_CGROUP, MOUNTINFO_V2, root.path()).unwrap();
        assert!(cgroup.exists());
        let m = decode(&cgroup);

        let cpu = m.cpu.as_ref().unwrap();
        let times = [
            cpu.usage_usec,
            cpu.user_usec,
            cpu.system_usec,
            cpu.nr_periods,
            cpu.nr_throttled,
            cpu.throttled_usec,
            cpu.nr_bursts,
            cpu.burst_usec,
        ];
        assert_eq!(
            times,
            [2816478964, 2353373358, 463105606, 40, 4, 1234, 2, 77],
            "in µs, as written"
        );
        assert_eq!(
            psi_of(&cpu.psi),
            [(84.98, 55.99, 35.11, 597454456), (0.5, 0.25, 0.01, 42)]
        );

        let mem = m.memory.as_ref().unwrap();
        let stat = [
            mem.anon,
            mem.file,
            mem.kernel_stack,
            mem.slab,
            mem.sock,
            mem.shmem,
            mem.file_mapped,
            mem.file_dirty,
            mem.file_writeback,
            mem.anon_thp,
            mem.inactive_anon,
            mem.active_anon,
            mem.inactive_file,
            mem.active_file,
            mem.unevictable,
            mem.slab_reclaimable,
            mem.slab_unreclaimable,
            mem.workingset_refault,
            mem.workingset_activate,
            mem.workingset_nodereclaim,
            mem.pgrefill,
            mem.pgscan,
            mem.pgsteal,
            mem.pgactivate,
            mem.pgdeactivate,
            mem.pglazyfree,
            mem.pglazyfreed,
            mem.pgfault,
            mem.pgmajfault,
            mem.thp_fault_alloc,
            mem.thp_collapse_alloc,
        ];
        assert_eq!(stat, std::array::from_fn(|i| i as u64 + 1));
        assert_eq!(
            [
                mem.usage,
                mem.usage_limit,
                mem.max_usage,
                mem.swap_usage,
                mem.swap_limit,
                mem.swap_max_usage
            ],
            [2170880, u64::MAX, 4194304, 4096, 1073741824, 8192],
            "memory.max `max` is u64::MAX"
        );
        assert_eq!(
            psi_of(&mem.psi),
            [(0.21, 0.96, 0.75, 16900303), (0.0, 0.02, 0.04, 8404867)]
        );

        let ev = m.memory_events.as_ref().unwrap();
        assert_eq!(
            [
                ev.low,
                ev.high,
                ev.max,
                ev.oom,
                ev.oom_kill,
                ev.oom_group_kill
            ],
            [1, 2, 3, 4, 5, 6]
        );

        assert_eq!((m.pids.current, m.pids.limit), (3, u64::MAX));

        let io = m.io.as_ref().unwrap();
        let usage: Vec<_> = io
            .usage
            .iter()
            .map(|e| (e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios))
            .collect();
        assert_eq!(usage, [(254, 0, 1048576, 4096, 12, 1), (8, 16, 5, 6, 7, 8)]);
        assert_eq!(psi_of(&io.psi), [(1.0, 2.0, 3.0, 4), (5.0, 6.0, 7.0, 8)]);

        let huge: Vec<_> = m
            .hugetlb
            .iter()
            .map(|h| (h.pagesize.as_str(), h.current, h.max, h.failcnt))
            .collect();
        assert_eq!(
            huge,
            [("2MB", 2097152, u64::MAX, 3), ("1GB", 0, 1073741824, 0)]
        );
        assert!(m.rdma.is_none());
    }

    #[test]
    fn controllers_not_enabled_leave_their_sections_empty() {
        // A cgroup whose parent enables no controller: only the core files.
        let root = tempfile::tempdir().unwrap();
        write_tree(
            root.path(),
            &[
                (
                    &format!("{DIR}/cpu.stat"),
                    "usage_usec 10\nuser_usec 6\nsystem_usec 4\n",
                ),
                (
                    &format!("{DIR}/memory.pressure"),
                    "some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n",
                ),
            ],
        );
        let m = decode(&Cgroup::from_files(PROC_CGROUP, MOUNTINFO_V2, root.path()).unwrap());
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (10, 6, 4)
        );
        assert!(m.cpu.psi.is_none());
        let mem = m.memory.as_ref().unwrap();
        assert_eq!((mem.usage, mem.usage_limit), (0, 0));
        assert_eq!(mem.psi.some.total, 9);
        assert!(mem.psi.full.is_none());
        assert!(
            m.pids.is_none() && m.io.is_none() && m.memory_events.is_none() && m.rdma.is_none()
        );
        assert!(m.hugetlb.is_empty());
    }

    #[test]
    fn garbage_is_skipped_or_named() {
        let root = tempfile::tempdir().unwrap();
        write_tree(
            root.path(),
            &[
                (
                    &format!("{DIR}/cpu.stat"),
                    "usage_usec\nusage_usec x\nuser_usec 6\n",
                ),
                (
                    &format!("{DIR}/cpu.pressure"),
                    "some avg10=x avg60 total=3\nweird 1\n\n",
                ),
                (
                    &format!("{DIR}/io.stat"),
                    "8:x rbytes=1\n8:0 rbytes=x wbytes=2 junk\n",
                ),
                (&format!("{DIR}/pids.current"), "1\n"),
                (&format!("{DIR}/pids.max"), "12 13\n"),
            ],
        );
        let cgroup = Cgroup::from_files(PROC_CGROUP, MOUNTINFO_V2, root.path()).unwrap();
        let e = cgroup.metrics().unwrap_err().to_string();
        assert!(e.contains("pids.max"), "{e}");
        write_tree(root.path(), &[(&format!("{DIR}/pids.max"), "-1\n")]);
        let m = decode(&cgroup);
        assert_eq!((m.cpu.usage_usec, m.cpu.user_usec), (0, 6));
        assert_eq!(m.cpu.psi.some.total, 3);
        assert_eq!(m.cpu.psi.some.avg10, 0.0);
        let usage: Vec<_> =
            m.io.usage
                .iter()
                .map(|e| (e.major, e.minor, e.rbytes, e.wbytes))
                .collect();
        assert_eq!(usage, [(8, 0, 0, 2)]);
        assert_eq!(m.pids.limit, 0);
    }

    #[test]
    fn a_cgroup_that_is_gone() {
        let root = tempfile::tempdir().unwrap();
        full_tree(root.path());
        let cgroup = Cgroup::from_files(PROC_CGROUP, MOUNTINFO_V2, root.path()).unwrap();
        std::fs::remove_dir_all(root.path().join(DIR)).unwrap();
        assert!(!cgroup.exists());
        let gone = cgroup.metrics();
        assert!(matches!(gone, Err(Error::NotFound(_))), "{gone:?}");
    }

    /// The v2 side on the real kernel: the cgroup2 mount of this host (the
    /// whole tree on a v2 host, /sys/fs/cgroup/unified on a hybrid one).
    #[test]
    fn a_real_cgroup() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let Some(point) = mountinfo.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(' ').nth(4).unwrap().to_string())
        }) else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        let real = super::super::tests::RealCgroup::start("v2", &[point.as_str()]).unwrap();
        // Only the unified line and the cgroup2 mount, as a pure v2 host has them.
        let proc_cgroup =
            std::fs::read_to_string(format!("/proc/{}/cgroup", real.child.id())).unwrap();
        let unified: String = proc_cgroup
            .lines()
            .filter(|l| l.starts_with("0::"))
            .collect();
        let mounts: String = mountinfo
            .lines()
            .filter(|l| l.contains(" - cgroup2 "))
            .collect();
        let cgroup = Cgroup::from_files(&unified, &mounts, Path::new("/")).unwrap();
        assert!(cgroup.exists());
        let value = |stat: &str, key: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
                .unwrap()
        };
        // The process may still be starting: what the metrics say lies
        // between what the file said just before and just after.
        let before = real.read(0, "cpu.stat");
        let m = decode(&cgroup);
        let after = real.read(0, "cpu.stat");
        assert!(m.cpu.usage_usec > 0, "{:?}", m.cpu);
        for (key, got) in [
            ("usage_usec ", m.cpu.usage_usec),
            ("user_usec ", m.cpu.user_usec),
            ("system_usec ", m.cpu.system_usec),
        ] {
            let (low, high) = (value(&before, key), value(&after, key));
            assert!(
                low <= got && got <= high,
                "{key}: {got} not in {low}..={high}"
            );
        }
        let has = |name: &str| real.dirs[0].join(name).exists();
        assert_eq!(m.cpu.psi.is_some(), has("cpu.pressure"));
        assert_eq!(m.io.is_some(), has("io.stat") || has("io.pressure"));
        assert_eq!(m.pids.is_some(), has("pids.current"));
        if m.pids.is_some() {
            assert_eq!(m.pids.current, 1);
        }
        if has("memory.current") {
            assert!(m.memory.usage > 0);
        }
        drop(real);
        assert!(!cgroup.exists());
        assert!(matches!(cgroup.metrics(), Err(Error::NotFound(_))));
    }

    #[test]
    fn rdma_entries() {
        let root = tempfile::tempdir().unwrap();
        write_tree(
            root.path(),
            &[
                (
                    &format!("{DIR}/rdma.current"),
                    "mlx5_1 hca_handle=1 hca_object=10\n",
                ),
                (
                    &format!("{DIR}/rdma.max"),
                    "mlx5_1 hca_handle=max hca_object=64\n",
                ),
            ],
        );
        let rdma = decode(&Cgroup::from_files(PROC_CGROUP, MOUNTINFO_V2, root.path()).unwrap())
            .rdma
            .unwrap();
        assert_eq!(
            (
                rdma.current[0].device.as_str(),
                rdma.current[0].hca_handles,
                rdma.current[0].hca_objects
            ),
            ("mlx5_1", 1, 10)
        );
        assert_eq!(
            (rdma.limit[0].hca_handles, rdma.limit[0].hca_objects),
            (u32::MAX, 64)
        );
    }
}
