//! cgroup v1: `io.containerd.cgroups.v1.Metrics`, filled as containerd's
//! `cgroup1` package fills it (runc-v2's `Stat(IgnoreNotExist)`).

use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups::metrics::{
    BlkIOEntry, BlkIOStat, CPUStat, CPUUsage, HugetlbStat, MemoryEntry, MemoryOomControl,
    MemoryStat, Metrics, PidsStat, RdmaEntry, RdmaStat, Throttle,
};
use containerd_shim_protos::protobuf::MessageField;

use super::{hugetlb_sizes, rdma_entry, Files};
use crate::error::Result;

/// The directory of the cgroup in each controller's hierarchy, where the
/// controller is mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Dirs {
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
    pub hugetlb: Option<PathBuf>,
    pub rdma: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub(super) struct Controllers {
    pub dirs: Dirs,
    /// `2MB`, `1GB`: the sizes the hugetlb controller has files for.
    hugetlb_sizes: Vec<String>,
    /// The CFQ (or BFQ) statistics exist.
    cfq: bool,
    /// The throttle files with the `_recursive` suffix exist (kernel 4.x+).
    throttle_recursive: bool,
    /// The kinds of memory accounted (swap is not without `swapaccount=1`).
    memory_kinds: Vec<(&'static str, Kind)>,
    partitions: PathBuf,
    /// USER_HZ, the unit of `cpuacct.stat`.
    pub clock_ticks: u64,
}

type Entries = fn(&mut BlkIOStat) -> &mut Vec<BlkIOEntry>;
type Kind = fn(&mut MemoryStat) -> &mut MessageField<MemoryEntry>;

/// The prefixes of the files of each kind of memory, and where it goes.
const MEMORY_KINDS: [(&str, Kind); 4] = [
    ("memory.", |s| &mut s.usage),
    ("memory.memsw.", |s| &mut s.swap),
    ("memory.kmem.", |s| &mut s.kernel),
    ("memory.kmem.tcp.", |s| &mut s.kernel_tcp),
];

/// The CFQ (and BFQ-compatible) statistics, read first, as containerd does.
const CFQ: [(&str, Entries); 8] = [
    ("blkio.sectors_recursive", |s| &mut s.sectors_recursive),
    ("blkio.io_service_bytes_recursive", |s| {
        &mut s.io_service_bytes_recursive
    }),
    ("blkio.io_serviced_recursive", |s| {
        &mut s.io_serviced_recursive
    }),
    ("blkio.io_queued_recursive", |s| &mut s.io_queued_recursive),
    ("blkio.io_service_time_recursive", |s| {
        &mut s.io_service_time_recursive
    }),
    ("blkio.io_wait_time_recursive", |s| {
        &mut s.io_wait_time_recursive
    }),
    ("blkio.io_merged_recursive", |s| &mut s.io_merged_recursive),
    ("blkio.time_recursive", |s| &mut s.io_time_recursive),
];

/// The throttle statistics, which every kernel keeps: read when the CFQ ones
/// have no entry (no device of the cgroup uses CFQ, or the kernel has none).
const THROTTLE: [(&str, Entries); 2] = [
    ("blkio.throttle.io_service_bytes", |s| {
        &mut s.io_service_bytes_recursive
    }),
    ("blkio.throttle.io_serviced", |s| {
        &mut s.io_serviced_recursive
    }),
];

impl Controllers {
    /// None when the process is in none of the controllers read here.
    pub fn new(dirs: Dirs, root: &Path) -> Option<Controllers> {
        if dirs == Dirs::default() {
            return None;
        }
        let hugetlb_sizes = match &dirs.hugetlb {
            Some(dir) => hugetlb_sizes(dir, ".usage_in_bytes"),
            None => Vec::new(),
        };
        // What does not exist now will not later: no call looks for it again.
        let has =
            |dir: &Option<PathBuf>, name: &str| dir.as_ref().is_some_and(|d| d.join(name).exists());
        let cfq = has(&dirs.blkio, "blkio.io_serviced_recursive");
        let throttle_recursive = has(&dirs.blkio, "blkio.throttle.io_serviced_recursive");
        let memory_kinds = MEMORY_KINDS
            .into_iter()
            .filter(|(prefix, _)| has(&dirs.memory, &format!("{prefix}usage_in_bytes")))
            .collect();
        let clock_ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .filter(|&t| t > 0)
            .unwrap_or(100);
        Some(Controllers {
            dirs,
            hugetlb_sizes,
            cfq,
            throttle_recursive,
            memory_kinds,
            partitions: root.join("proc/partitions"),
            clock_ticks,
        })
    }

    pub fn exists(&self) -> bool {
        let d = &self.dirs;
        [
            &d.memory, &d.cpuacct, &d.cpu, &d.pids, &d.blkio, &d.hugetlb, &d.rdma,
        ]
        .into_iter()
        .flatten()
        .all(|dir| dir.is_dir())
    }

    pub fn metrics(&self, files: &mut Files) -> Result<Metrics> {
        let mut m = Metrics::new();
        self.cpu(files, &mut m)?;
        if let Some(dir) = &self.dirs.memory {
            self.memory(files, dir, &mut m)?;
        }
        if let Some(dir) = &self.dirs.pids {
            m.pids = pids(files, dir)?.into();
        }
        if let Some(dir) = &self.dirs.blkio {
            m.blkio = self.blkio(files, dir)?.into();
        }
        if let Some(dir) = &self.dirs.hugetlb {
            m.hugetlb = self.hugetlb(files, dir)?;
        }
        if let Some(dir) = &self.dirs.rdma {
            m.rdma = rdma(files, dir)?.into();
        }
        Ok(m)
    }

    fn cpu(&self, files: &mut Files, m: &mut Metrics) -> Result<()> {
        let mut usage = CPUUsage::new();
        let mut throttling = Throttle::new();
        let mut found = false;
        if let Some(dir) = &self.dirs.cpuacct {
            if let Some(total) = files.number(&dir.join("cpuacct.usage"), 0)? {
                usage.total = total;
                found = true;
            }
            if let Some(text) = files.read(&dir.join("cpuacct.usage_percpu"))? {
                usage.per_cpu = text
                    .split_ascii_whitespace()
                    .filter_map(super::number)
                    .collect();
                found = true;
            }
            // In USER_HZ ticks; containerd reports nanoseconds.
            let ns = |ticks: u64| {
                (u128::from(ticks) * 1_000_000_000 / u128::from(self.clock_ticks)) as u64
            };
            found |= files.keyed(&dir.join("cpuacct.stat"), |key, v| match key {
                "user" => usage.user = ns(v),
                "system" => usage.kernel = ns(v),
                _ => {}
            })?;
        }
        if let Some(dir) = &self.dirs.cpu {
            found |= files.keyed(&dir.join("cpu.stat"), |key, v| match key {
                "nr_periods" => throttling.periods = v,
                "nr_throttled" => throttling.throttled_periods = v,
                "throttled_time" => throttling.throttled_time = v,
                _ => {}
            })?;
        }
        if found {
            m.cpu = MessageField::some(CPUStat {
                usage: MessageField::some(usage),
                throttling: MessageField::some(throttling),
                ..Default::default()
            });
        }
        Ok(())
    }

    fn blkio(&self, files: &mut Files, dir: &Path) -> Result<Option<BlkIOStat>> {
        let mut stat = BlkIOStat::new();
        let mut found = false;
        if self.cfq {
            for (name, entries) in CFQ {
                found |= blkio_entries(files, &dir.join(name), entries(&mut stat))?;
            }
        }
        if stat == BlkIOStat::default() {
            for (name, entries) in THROTTLE {
                let path = if self.throttle_recursive {
                    dir.join(format!("{name}_recursive"))
                } else {
                    dir.join(name)
                };
                found |= blkio_entries(files, &path, entries(&mut stat))?;
            }
        }
        if stat != BlkIOStat::default() {
            self.name_devices(files, &mut stat)?;
        }
        Ok(found.then_some(stat))
    }

    /// Names each entry's device (`/dev/sda`) after /proc/partitions.
    fn name_devices(&self, files: &mut Files, stat: &mut BlkIOStat) -> Result<()> {
        let Some(text) = files.read_to_end(&self.partitions)? else {
            return Ok(());
        };
        let devices: Vec<(u64, u64, &str)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let major = fields.next()?.parse().ok()?;
                let minor = fields.next()?.parse().ok()?;
                Some((major, minor, fields.nth(1)?))
            })
            .collect();
        for (_, entries) in CFQ {
            for entry in entries(stat) {
                if let Some((_, _, name)) = devices
                    .iter()
                    .find(|(ma, mi, _)| (*ma, *mi) == (entry.major, entry.minor))
                {
                    entry.device = format!("/dev/{name}");
                }
            }
        }
        Ok(())
    }

    fn hugetlb(&self, files: &mut Files, dir: &Path) -> Result<Vec<HugetlbStat>> {
        let mut out = Vec::with_capacity(self.hugetlb_sizes.len());
        for size in &self.hugetlb_sizes {
            let file = |name: &str| dir.join(format!("hugetlb.{size}.{name}"));
            let Some(usage) = files.number(&file("usage_in_bytes"), 0)? else {
                continue;
            };
            out.push(HugetlbStat {
                usage,
                max: files.number(&file("max_usage_in_bytes"), 0)?.unwrap_or(0),
                failcnt: files.number(&file("failcnt"), 0)?.unwrap_or(0),
                pagesize: size.clone(),
                ..Default::default()
            });
        }
        Ok(out)
    }

    fn memory(&self, files: &mut Files, dir: &Path, m: &mut Metrics) -> Result<()> {
        let mut s = MemoryStat::new();
        let found = files.keyed(&dir.join("memory.stat"), |key, v| match key {
            "cache" => s.cache = v,
            "rss" => s.rss = v,
            "rss_huge" => s.rss_huge = v,
            "mapped_file" => s.mapped_file = v,
            "dirty" => s.dirty = v,
            "writeback" => s.writeback = v,
            "pgpgin" => s.pg_pg_in = v,
            "pgpgout" => s.pg_pg_out = v,
            "pgfault" => s.pg_fault = v,
            "pgmajfault" => s.pg_maj_fault = v,
            "inactive_anon" => s.inactive_anon = v,
            "active_anon" => s.active_anon = v,
            "inactive_file" => s.inactive_file = v,
            "active_file" => s.active_file = v,
            "unevictable" => s.unevictable = v,
            "hierarchical_memory_limit" => s.hierarchical_memory_limit = v,
            "hierarchical_memsw_limit" => s.hierarchical_swap_limit = v,
            "total_cache" => s.total_cache = v,
            "total_rss" => s.total_rss = v,
            "total_rss_huge" => s.total_rss_huge = v,
            "total_mapped_file" => s.total_mapped_file = v,
            "total_dirty" => s.total_dirty = v,
            "total_writeback" => s.total_writeback = v,
            "total_pgpgin" => s.total_pg_pg_in = v,
            "total_pgpgout" => s.total_pg_pg_out = v,
            "total_pgfault" => s.total_pg_fault = v,
            "total_pgmajfault" => s.total_pg_maj_fault = v,
            "total_inactive_anon" => s.total_inactive_anon = v,
            "total_active_anon" => s.total_active_anon = v,
            "total_inactive_file" => s.total_inactive_file = v,
            "total_active_file" => s.total_active_file = v,
            "total_unevictable" => s.total_unevictable = v,
            _ => {}
        })?;
        if !found {
            // No memory controller here: containerd leaves the section out.
            return Ok(());
        }
        let mut oom = MemoryOomControl::new();
        if files.keyed(&dir.join("memory.oom_control"), |key, v| match key {
            "oom_kill_disable" => oom.oom_kill_disable = v,
            "under_oom" => oom.under_oom = v,
            "oom_kill" => oom.oom_kill = v,
            _ => {}
        })? {
            m.memory_oom_control = MessageField::some(oom);
        }
        // containerd has every entry, with zeros for a kind not accounted.
        for (_, kind) in MEMORY_KINDS {
            *kind(&mut s) = MessageField::some(MemoryEntry::new());
        }
        for (prefix, kind) in &self.memory_kinds {
            *kind(&mut s) = memory_entry(files, dir, prefix)?;
        }
        m.memory = MessageField::some(s);
        Ok(())
    }
}

/// Usage, max usage, failcnt and limit of one kind of memory (`memory.`,
/// `memory.memsw.`...); files that do not exist (no swap accounting) read 0.
fn memory_entry(files: &mut Files, dir: &Path, prefix: &str) -> Result<MessageField<MemoryEntry>> {
    let mut read = |name: &str| -> Result<u64> {
        Ok(files
            .number(&dir.join(format!("{prefix}{name}")), 0)?
            .unwrap_or(0))
    };
    Ok(MessageField::some(MemoryEntry {
        usage: read("usage_in_bytes")?,
        max: read("max_usage_in_bytes")?,
        failcnt: read("failcnt")?,
        limit: read("limit_in_bytes")?,
        ..Default::default()
    }))
}

fn pids(files: &mut Files, dir: &Path) -> Result<Option<PidsStat>> {
    let Some(current) = files.number(&dir.join("pids.current"), 0)? else {
        return Ok(None);
    };
    Ok(Some(PidsStat {
        current,
        // "max", no limit, is 0 for containerd.
        limit: files.number(&dir.join("pids.max"), 0)?.unwrap_or(0),
        ..Default::default()
    }))
}

/// Appends the entries of a blkio file (`8:0 Read 4096`, `8:0 4096`) and
/// tells whether it exists. The `Total` line and malformed lines are skipped.
fn blkio_entries(files: &mut Files, path: &Path, out: &mut Vec<BlkIOEntry>) -> Result<bool> {
    let Some(text) = files.read(path)? else {
        return Ok(false);
    };
    out.extend(text.lines().filter_map(|line| {
        let mut fields = line.split([' ', ':']).filter(|f| !f.is_empty());
        let major = fields.next()?.parse().ok()?;
        let minor = fields.next()?.parse().ok()?;
        let (op, value) = match (fields.next()?, fields.next()) {
            (value, None) => ("", value),
            (op, Some(value)) => (op, value),
        };
        Some(BlkIOEntry {
            op: op.to_string(),
            major,
            minor,
            value: super::number(value)?,
            ..Default::default()
        })
    }));
    Ok(true)
}

fn rdma(files: &mut Files, dir: &Path) -> Result<Option<RdmaStat>> {
    let mut stat = RdmaStat::new();
    let mut found = false;
    for (name, out) in [
        ("rdma.current", &mut stat.current),
        ("rdma.max", &mut stat.limit),
    ] {
        if let Some(text) = files.read(&dir.join(name))? {
            found = true;
            out.extend(
                text.lines()
                    .filter_map(rdma_entry)
                    .map(|(device, handles, objects)| RdmaEntry {
                        device: device.to_string(),
                        hca_handles: handles,
                        hca_objects: objects,
                        ..Default::default()
                    }),
            );
        }
    }
    Ok(found.then_some(stat))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{write_tree, MOUNTINFO_V1};
    use super::super::{Cgroup, Hierarchy, V1_METRICS};
    use super::*;
    use crate::error::Error;
    use containerd_shim_protos::protobuf::Message;

    const PROC_CGROUP: &str = "\
12:hugetlb:/default/ctr
9:pids:/default/ctr
6:cpu,cpuacct:/default/ctr
5:memory:/default/ctr
3:blkio:/default/ctr
1:name=systemd:/default/ctr
";

    const MEMORY_STAT: &str = "\
cache 364544
rss 1806336
rss_huge 2097152
shmem 0
mapped_file 4096
dirty 12288
writeback 8192
workingset_refault_anon 0
swap 0
pgpgin 21189
pgpgout 20659
pgfault 50823
pgmajfault 6
inactive_anon 1609728
active_anon 12288
inactive_file 45056
active_file 319488
unevictable 1
hierarchical_memory_limit 9223372036854771712
hierarchical_memsw_limit 9223372036854771711
total_cache 364545
total_rss 1806337
total_rss_huge 2097153
total_shmem 0
total_mapped_file 4097
total_dirty 12289
total_writeback 8193
total_pgpgin 21190
total_pgpgout 20660
total_pgfault 50824
total_pgmajfault 7
total_inactive_anon 1609729
total_active_anon 12289
total_inactive_file 45057
total_active_file 319489
total_unevictable 2
";

    /// Every file of a v1 container cgroup, with the content the kernel writes.
    fn full_tree(dir: &Path) {
        let c = "sys/fs/cgroup";
        write_tree(dir, &[
            (&format!("{c}/cpu,cpuacct/default/ctr/cpuacct.usage"), "1407780043306\n"),
            (&format!("{c}/cpu,cpuacct/default/ctr/cpuacct.usage_percpu"), "700000000000 707780043306 \n"),
            (&format!("{c}/cpu,cpuacct/default/ctr/cpuacct.stat"), "user 238147\nsystem 46863\n"),
            (&format!("{c}/cpu,cpuacct/default/ctr/cpu.stat"),
             "nr_periods 120\nnr_throttled 7\nthrottled_time 5123456789\nnr_bursts 0\nburst_time 0\n"),
            (&format!("{c}/memory/default/ctr/memory.stat"), MEMORY_STAT),
            (&format!("{c}/memory/default/ctr/memory.oom_control"), "oom_kill_disable 1\nunder_oom 1\noom_kill 3\n"),
            (&format!("{c}/memory/default/ctr/memory.usage_in_bytes"), "2170880\n"),
            (&format!("{c}/memory/default/ctr/memory.max_usage_in_bytes"), "4194304\n"),
            (&format!("{c}/memory/default/ctr/memory.failcnt"), "11\n"),
            (&format!("{c}/memory/default/ctr/memory.limit_in_bytes"), "268435456\n"),
            (&format!("{c}/memory/default/ctr/memory.memsw.usage_in_bytes"), "2174976\n"),
            (&format!("{c}/memory/default/ctr/memory.memsw.max_usage_in_bytes"), "4198400\n"),
            (&format!("{c}/memory/default/ctr/memory.memsw.failcnt"), "12\n"),
            (&format!("{c}/memory/default/ctr/memory.memsw.limit_in_bytes"), "536870912\n"),
            (&format!("{c}/memory/default/ctr/memory.kmem.usage_in_bytes"), "331776\n"),
            (&format!("{c}/memory/default/ctr/memory.kmem.max_usage_in_bytes"), "401408\n"),
            (&format!("{c}/memory/default/ctr/memory.kmem.failcnt"), "13\n"),
            (&format!("{c}/memory/default/ctr/memory.kmem.limit_in_bytes"), "9223372036854771712\n"),
            (&format!("{c}/memory/default/ctr/memory.kmem.tcp.usage_in_bytes"), "4096\n"),
            (&format!("{c}/memory/default/ctr/memory.kmem.tcp.max_usage_in_bytes"), "8192\n"),
            (&format!("{c}/memory/default/ctr/memory.kmem.tcp.failcnt"), "14\n"),
            (&format!("{c}/memory/default/ctr/memory.kmem.tcp.limit_in_bytes"), "-1\n"),
            (&format!("{c}/pids/default/ctr/pids.current"), "3\n"),
            (&format!("{c}/pids/default/ctr/pids.max"), "max\n"),
            (&format!("{c}/blkio/default/ctr/blkio.throttle.io_service_bytes_recursive"),
             "254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 12288\n254:0 Async 0\n254:0 Discard 0\n254:0 Total 12288\nTotal 12288\n"),
            (&format!("{c}/blkio/default/ctr/blkio.throttle.io_serviced_recursive"),
             "254:0 Read 1\n254:0 Write 2\n7:3 Read 5\nTotal 8\n"),
            (&format!("{c}/blkio/default/ctr/blkio.throttle.io_serviced"), "9:9 Read 99\n"),
            (&format!("{c}/hugetlb/default/ctr/hugetlb.2MB.usage_in_bytes"), "4194304\n"),
            (&format!("{c}/hugetlb/default/ctr/hugetlb.2MB.max_usage_in_bytes"), "6291456\n"),
            (&format!("{c}/hugetlb/default/ctr/hugetlb.2MB.failcnt"), "2\n"),
            (&format!("{c}/hugetlb/default/ctr/hugetlb.2MB.limit_in_bytes"), "9223372036854771712\n"),
            (&format!("{c}/hugetlb/default/ctr/hugetlb.2MB.rsvd.usage_in_bytes"), "0\n"),
            (&format!("{c}/hugetlb/default/ctr/hugetlb.1GB.usage_in_bytes"), "0\n"),
            (&format!("{c}/hugetlb/default/ctr/hugetlb.1GB.max_usage_in_bytes"), "0\n"),
            (&format!("{c}/hugetlb/default/ctr/hugetlb.1GB.failcnt"), "0\n"),
            ("proc/partitions", "major minor  #blocks  name\n\n 254        0  268435456 vda\n   7        3      1024 loop3\n"),
        ]);
    }

    fn resolve(root: &Path, proc_cgroup: &str) -> Cgroup {
        let mut cgroup = Cgroup::from_files(proc_cgroup, MOUNTINFO_V1, root).unwrap();
        // A USER_HZ other than the usual 100, to check the conversion.
        if let Hierarchy::V1(c) = &mut cgroup.hierarchy {
            c.clock_ticks = 250;
        }
        cgroup
    }

    fn decode(cgroup: &Cgroup) -> Metrics {
        let any = cgroup.metrics().unwrap();
        assert_eq!(any.type_url, V1_METRICS);
        Metrics::parse_from_bytes(&any.value).unwrap()
    }

    fn entry(op: &str, device: &str, major: u64, minor: u64, value: u64) -> BlkIOEntry {
        BlkIOEntry {
            op: op.into(),
            device: device.into(),
            major,
            minor,
            value,
            ..Default::default()
        }
    }

    #[test]
    fn every_field_of_a_full_cgroup() {
        let root = tempfile::tempdir().unwrap();
        full_tree(root.path());
        let m = decode(&resolve(root.path(), PROC_CGROUP));

        let usage = m.cpu.usage.as_ref().unwrap();
        assert_eq!(usage.total, 1407780043306);
        assert_eq!(usage.per_cpu, [700000000000, 707780043306]);
        // 238147 ticks at 250 Hz, in ns.
        assert_eq!(usage.user, 238147 * 4_000_000);
        assert_eq!(usage.kernel, 46863 * 4_000_000);
        let throttling = m.cpu.throttling.as_ref().unwrap();
        assert_eq!(
            (
                throttling.periods,
                throttling.throttled_periods,
                throttling.throttled_time
            ),
            (120, 7, 5123456789)
        );

        let mem = m.memory.as_ref().unwrap();
        let stat = [
            mem.cache,
            mem.rss,
            mem.rss_huge,
            mem.mapped_file,
            mem.dirty,
            mem.writeback,
            mem.pg_pg_in,
            mem.pg_pg_out,
            mem.pg_fault,
            mem.pg_maj_fault,
            mem.inactive_anon,
            mem.active_anon,
            mem.inactive_file,
            mem.active_file,
            mem.unevictable,
            mem.hierarchical_memory_limit,
            mem.hierarchical_swap_limit,
        ];
        assert_eq!(
            stat,
            [
                364544,
                1806336,
                2097152,
                4096,
                12288,
                8192,
                21189,
                20659,
                50823,
                6,
                1609728,
                12288,
                45056,
                319488,
                1,
                9223372036854771712,
                9223372036854771711,
            ]
        );
        let total = [
            mem.total_cache,
            mem.total_rss,
            mem.total_rss_huge,
            mem.total_mapped_file,
            mem.total_dirty,
            mem.total_writeback,
            mem.total_pg_pg_in,
            mem.total_pg_pg_out,
            mem.total_pg_fault,
            mem.total_pg_maj_fault,
            mem.total_inactive_anon,
            mem.total_active_anon,
            mem.total_inactive_file,
            mem.total_active_file,
            mem.total_unevictable,
        ];
        assert_eq!(
            total,
            [
                364545, 1806337, 2097153, 4097, 12289, 8193, 21190, 20660, 50824, 7, 1609729,
                12289, 45057, 319489, 2,
            ]
        );
        let e = |e: &MessageField<MemoryEntry>| {
            let e = e.as_ref().unwrap();
            (e.usage, e.max, e.failcnt, e.limit)
        };
        assert_eq!(e(&mem.usage), (2170880, 4194304, 11, 268435456));
        assert_eq!(e(&mem.swap), (2174976, 4198400, 12, 536870912));
        assert_eq!(e(&mem.kernel), (331776, 401408, 13, 9223372036854771712));
        assert_eq!(e(&mem.kernel_tcp), (4096, 8192, 14, 0), "-1 reads as 0");
        let oom = m.memory_oom_control.as_ref().unwrap();
        assert_eq!(
            (oom.oom_kill_disable, oom.under_oom, oom.oom_kill),
            (1, 1, 3)
        );

        let pids = m.pids.as_ref().unwrap();
        assert_eq!((pids.current, pids.limit), (3, 0), "pids.max `max` is 0");

        // No CFQ files: the throttle ones, the recursive ones first.
        let blkio = m.blkio.as_ref().unwrap();
        assert_eq!(
            blkio.io_service_bytes_recursive,
            [
                entry("Read", "/dev/vda", 254, 0, 4096),
                entry("Write", "/dev/vda", 254, 0, 8192),
                entry("Sync", "/dev/vda", 254, 0, 12288),
                entry("Async", "/dev/vda", 254, 0, 0),
                entry("Discard", "/dev/vda", 254, 0, 0),
                entry("Total", "/dev/vda", 254, 0, 12288),
            ]
        );
        assert_eq!(
            blkio.io_serviced_recursive,
            [
                entry("Read", "/dev/vda", 254, 0, 1),
                entry("Write", "/dev/vda", 254, 0, 2),
                entry("Read", "/dev/loop3", 7, 3, 5),
            ]
        );
        assert!(blkio.io_queued_recursive.is_empty() && blkio.sectors_recursive.is_empty());

        let sizes: Vec<_> = m
            .hugetlb
            .iter()
            .map(|h| (h.pagesize.as_str(), h.usage, h.max, h.failcnt))
            .collect();
        assert_eq!(sizes, [("2MB", 4194304, 6291456, 2), ("1GB", 0, 0, 0)]);
        assert!(m.rdma.is_none());
    }

    #[test]
    fn cfq_statistics_come_first() {
        let root = tempfile::tempdir().unwrap();
        full_tree(root.path());
        let dir = "sys/fs/cgroup/blkio/default/ctr";
        let mut files = vec![];
        for (name, _) in CFQ {
            files.push((format!("{dir}/{name}"), String::new()));
        }
        files[0].1 = "8:0 2048\n8:16 16\n".into();
        files[1].1 = "8:0 Read 1048576\n8:0 Write 0\n8:0 Sync 1048576\n8:0 Async 0\n8:0 Total 1048576\nTotal 1048576\n".into();
        files[6].1 = "8:0 Read 3\n".into();
        files[7].1 = "8:0 12345\n".into();
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        write_tree(root.path(), &files);
        write_tree(
            root.path(),
            &[(
                "proc/partitions",
                "major minor  #blocks  name\n\n   8        0  1000 sda\n",
            )],
        );

        let blkio = decode(&resolve(root.path(), PROC_CGROUP)).blkio.unwrap();
        assert_eq!(
            blkio.sectors_recursive,
            [entry("", "/dev/sda", 8, 0, 2048), entry("", "", 8, 16, 16)]
        );
        assert_eq!(blkio.io_service_bytes_recursive.len(), 5);
        assert_eq!(
            blkio.io_service_bytes_recursive[0],
            entry("Read", "/dev/sda", 8, 0, 1048576)
        );
        assert_eq!(
            blkio.io_merged_recursive,
            [entry("Read", "/dev/sda", 8, 0, 3)]
        );
        assert_eq!(
            blkio.io_time_recursive,
            [entry("", "/dev/sda", 8, 0, 12345)]
        );
        assert!(
            blkio.io_serviced_recursive.is_empty(),
            "the throttle files are not read"
        );
    }

    #[test]
    fn without_recursive_throttle_files_the_plain_ones() {
        let root = tempfile::tempdir().unwrap();
        let dir = "sys/fs/cgroup/blkio/default/ctr";
        write_tree(
            root.path(),
            &[(
                &format!("{dir}/blkio.throttle.io_serviced"),
                "9:9 Read 99\n",
            )],
        );
        let blkio = decode(&resolve(root.path(), PROC_CGROUP)).blkio.unwrap();
        assert_eq!(
            blkio.io_serviced_recursive,
            [entry("Read", "", 9, 9, 99)],
            "no /proc/partitions: no name"
        );
    }

    #[test]
    fn missing_controllers_leave_their_sections_empty() {
        let root = tempfile::tempdir().unwrap();
        write_tree(
            root.path(),
            &[
                ("sys/fs/cgroup/memory/default/ctr/memory.stat", "rss 4096\n"),
                (
                    "sys/fs/cgroup/memory/default/ctr/memory.usage_in_bytes",
                    "8192\n",
                ),
            ],
        );
        // The pids and cpu directories have none of the files read.
        for dir in ["pids", "cpu,cpuacct"] {
            std::fs::create_dir_all(
                root.path()
                    .join("sys/fs/cgroup")
                    .join(dir)
                    .join("default/ctr"),
            )
            .unwrap();
        }
        let cgroup = resolve(
            root.path(),
            "5:memory:/default/ctr\n9:pids:/default/ctr\n6:cpu,cpuacct:/default/ctr\n",
        );
        let m = decode(&cgroup);
        assert!(
            m.cpu.is_none()
                && m.pids.is_none()
                && m.blkio.is_none()
                && m.memory_oom_control.is_none()
        );
        assert!(m.hugetlb.is_empty());
        let mem = m.memory.as_ref().unwrap();
        assert_eq!(mem.rss, 4096);
        assert_eq!(mem.usage.usage, 8192);
        assert_eq!(
            mem.swap.as_ref().unwrap(),
            &MemoryEntry::default(),
            "no swap accounting reads 0"
        );

        // The memory section needs memory.stat.
        std::fs::remove_file(
            root.path()
                .join("sys/fs/cgroup/memory/default/ctr/memory.stat"),
        )
        .unwrap();
        assert!(decode(&cgroup).memory.is_none());
    }

    #[test]
    fn garbage_is_skipped_or_named() {
        let root = tempfile::tempdir().unwrap();
        let dir = "sys/fs/cgroup/memory/default/ctr";
        write_tree(
            root.path(),
            &[
                (
                    &format!("{dir}/memory.stat"),
                    "rss\ncache 1 2\nrss 12x\n\nmapped_file 5\nnot a line at all\n",
                ),
                (&format!("{dir}/memory.usage_in_bytes"), "lots\n"),
                ("sys/fs/cgroup/pids/default/ctr/pids.current", "2\n"),
                ("sys/fs/cgroup/pids/default/ctr/pids.max", "-5\n"),
            ],
        );
        let cgroup = resolve(root.path(), PROC_CGROUP);
        let e = cgroup.metrics().unwrap_err().to_string();
        assert!(
            e.contains("memory.usage_in_bytes") && e.contains("lots"),
            "{e}"
        );
        write_tree(
            root.path(),
            &[(&format!("{dir}/memory.usage_in_bytes"), "3\n")],
        );
        let m = decode(&cgroup);
        let mem = m.memory.as_ref().unwrap();
        assert_eq!((mem.rss, mem.cache, mem.mapped_file), (0, 0, 5));
        assert_eq!(m.pids.limit, 0);
    }

    #[test]
    fn a_cgroup_that_is_gone() {
        let root = tempfile::tempdir().unwrap();
        full_tree(root.path());
        let cgroup = resolve(root.path(), PROC_CGROUP);
        assert!(cgroup.exists());
        std::fs::remove_dir_all(root.path().join("sys/fs/cgroup/memory/default/ctr")).unwrap();
        assert!(!cgroup.exists());
        for controller in ["cpu,cpuacct", "pids", "blkio", "hugetlb"] {
            std::fs::remove_dir_all(
                root.path()
                    .join("sys/fs/cgroup")
                    .join(controller)
                    .join("default/ctr"),
            )
            .unwrap();
        }
        let gone = cgroup.metrics();
        assert!(matches!(gone, Err(Error::NotFound(_))), "{gone:?}");
    }

    #[test]
    fn a_real_cgroup() {
        // memory, pids, cpuacct, cpu, blkio: the order of `cgroup.dirs`.
        let hierarchies = [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/cpuacct",
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup/blkio",
        ];
        let Some(real) = super::super::tests::RealCgroup::start("v1", &hierarchies) else {
            eprintln!("skipped: this host has no cgroup v1 hierarchies");
            return;
        };
        let cgroup = Cgroup::of_pid(real.child.id()).unwrap();
        let Hierarchy::V1(c) = &cgroup.hierarchy else {
            panic!("not v1: {cgroup:?}")
        };
        assert_eq!(c.dirs.memory.as_ref(), Some(&real.dirs[0]));
        assert_eq!(c.dirs.pids.as_ref(), Some(&real.dirs[1]));
        assert!(cgroup.exists());
        let any = cgroup.metrics().unwrap();
        assert_eq!(any.type_url, V1_METRICS);
        let m = Metrics::parse_from_bytes(&any.value).unwrap();
        let file = |dir, name| real.read(dir, name).trim().parse::<u64>().unwrap();

        // One process: the sleep.
        assert_eq!(m.pids.current, 1);
        assert_eq!(m.pids.current, file(1, "pids.current"));
        assert_eq!(m.pids.limit, 0, "pids.max is `max`");
        // Its memory (charged from its exec on) is idle, so the files still say the same.
        let usage = &m.memory.usage;
        assert!(usage.usage > 0, "{usage:?}");
        assert_eq!(usage.usage, file(0, "memory.usage_in_bytes"));
        assert_eq!(usage.limit, file(0, "memory.limit_in_bytes"));
        assert_eq!(usage.max, file(0, "memory.max_usage_in_bytes"));
        let stat = real.read(0, "memory.stat");
        let limit = stat
            .lines()
            .find_map(|l| l.strip_prefix("hierarchical_memory_limit "));
        assert_eq!(
            Some(m.memory.hierarchical_memory_limit),
            limit.and_then(|v| v.parse().ok())
        );
        assert_eq!(m.memory_oom_control.oom_kill, 0);
        // The CPU the exec of sleep took.
        let cpu = &m.cpu.usage;
        assert!(cpu.total > 0, "{cpu:?}");
        assert_eq!(cpu.total, file(2, "cpuacct.usage"));
        assert_eq!(cpu.per_cpu.iter().sum::<u64>(), cpu.total);
        assert_eq!(
            cpu.per_cpu.len(),
            real.read(2, "cpuacct.usage_percpu")
                .split_whitespace()
                .count()
        );
        assert!(m.blkio.is_some());

        drop(real);
        assert!(!cgroup.exists());
        let gone = cgroup.metrics();
        assert!(matches!(gone, Err(Error::NotFound(_))), "{gone:?}");
    }

    #[test]
    fn rdma_entries() {
        let root = tempfile::tempdir().unwrap();
        let mountinfo =
            format!("{MOUNTINFO_V1}34 25 0:32 / /sys/fs/cgroup/rdma rw - cgroup cgroup rw,rdma\n");
        write_tree(
            root.path(),
            &[
                (
                    "sys/fs/cgroup/rdma/c/rdma.current",
                    "mlx4_0 hca_handle=2 hca_object=2000\nbad\n",
                ),
                (
                    "sys/fs/cgroup/rdma/c/rdma.max",
                    "mlx4_0 hca_handle=max hca_object=max\n",
                ),
            ],
        );
        let cgroup = Cgroup::from_files("7:rdma:/c\n", &mountinfo, root.path()).unwrap();
        let rdma = decode(&cgroup).rdma.unwrap();
        let e = |e: &RdmaEntry| (e.device.clone(), e.hca_handles, e.hca_objects);
        assert_eq!(
            rdma.current.iter().map(e).collect::<Vec<_>>(),
            [("mlx4_0".into(), 2, 2000)]
        );
        assert_eq!(
            rdma.limit.iter().map(e).collect::<Vec<_>>(),
            [("mlx4_0".into(), u32::MAX, u32::MAX)]
        );
    }
}
