//! Memory per container: start n sleeping containers, sum the RSS and PSS
//! of every shim process that serves them, divide by n. Once with a shim
//! per container, once with all of them in one group (the annotation
//! `io.containerd.runc.v2.group`, which runc-v2 and barge both honour).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::progress::check_stop;
use super::{Bench, Better, Outcome, Row, Variant};

/// The target for RSS per container without grouping: barge/runc-v2 at
/// most this.
const TARGET_RSS: f64 = 0.25;

/// The annotation that puts containers into one shim.
const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";

/// How long the shims may settle after the last start before sampling:
/// sleeping containers sit for long, so the figure is the quiet state (Go's
/// runtime and barge's idle trimming both act within this time).
pub const SETTLE: Duration = Duration::from_secs(2);

/// Memory of the shims of one (variant, n, grouping).
struct Sample {
    shims: Vec<ShimMem>,
    start_seconds: f64,
}

/// The memory of one process: a shim, or a container's init.
pub(super) struct ShimMem {
    pub pid: u32,
    /// The binary it runs (for a shim, a private copy, see
    /// `private_shim_copies`).
    pub exe: String,
    pub ppid: u32,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl ShimMem {
    /// Samples one process; zeros when it is gone.
    pub fn of(pid: u32, ppid: u32) -> ShimMem {
        let (rss_kib, pss_kib) = smaps_rollup(pid);
        ShimMem {
            exe: std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|e| e.display().to_string())
                .unwrap_or_default(),
            pid,
            ppid,
            rss_kib,
            pss_kib,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "pid": self.pid, "ppid": self.ppid, "exe": self.exe,
            "rss_kib": self.rss_kib, "pss_kib": self.pss_kib,
        })
    }
}

/// Samples the shims of our containerd named `shim_name` that are not in
/// `before`.
pub(super) fn new_shims(b: &Bench, shim_name: &str, before: &BTreeSet<u32>) -> Vec<ShimMem> {
    b.cd.shims()
        .into_iter()
        .filter(|p| p.name() == shim_name && !before.contains(&p.pid))
        .map(|p| ShimMem::of(p.pid, p.ppid))
        .collect()
}

impl Sample {
    fn rss_kib(&self) -> u64 {
        self.shims.iter().map(|s| s.rss_kib).sum()
    }
    fn pss_kib(&self) -> u64 {
        self.shims.iter().map(|s| s.pss_kib).sum()
    }
}

pub fn run(b: &Bench) -> Result<Outcome> {
    let mut groupings = vec![false];
    if b.ctr_has_annotation {
        groupings.push(true);
    } else {
        b.progress
            .note("memory: this ctr has no `run --annotation`; measuring without grouping only");
    }
    let mut rows = Vec::new();
    for &n in &b.cfg.memory_counts {
        for &grouped in &groupings {
            let mut rss = BTreeMap::new();
            let mut pss = BTreeMap::new();
            let mut detail = BTreeMap::new();
            // Interleaved: every variant for this step before the next step.
            for v in &b.variants {
                check_stop()?;
                let s = measure(b, v, n, grouped)?;
                let expected = if grouped { 1 } else { n };
                if s.shims.len() != expected {
                    b.progress.note(&format!(
                        "memory: {} served {n} container(s) with {} shim process(es), expected {expected}",
                        v.label,
                        s.shims.len()
                    ));
                }
                rss.insert(v.key, s.rss_kib() as f64 / 1024.0 / n as f64);
                pss.insert(v.key, s.pss_kib() as f64 / 1024.0 / n as f64);
                detail.insert(v.key, sample_json(&s));
            }
            let suffix = format!(
                "{n} ctr{}{}",
                if n == 1 { "" } else { "s" },
                if grouped { ", grouped" } else { "" }
            );
            let detail = json!({
                "containers": n,
                "grouped": grouped,
                "per_variant": detail,
            });
            rows.push(Row {
                figure: format!("shim RSS per ctr, {suffix}"),
                unit: "MiB",
                better: Better::Lower,
                decimals: 2,
                values: rss,
                failed: BTreeMap::new(),
                target: (!grouped).then_some(TARGET_RSS),
                detail: detail.clone(),
            });
            rows.push(Row {
                figure: format!("shim PSS per ctr, {suffix}"),
                unit: "MiB",
                better: Better::Lower,
                decimals: 2,
                values: pss,
                failed: BTreeMap::new(),
                target: None,
                detail: json!({ "containers": n, "grouped": grouped }),
            });
        }
    }
    Ok(Outcome::Rows(rows))
}

fn sample_json(s: &Sample) -> Value {
    json!({
        "shim_processes": s.shims.len(),
        "rss_kib_total": s.rss_kib(),
        "pss_kib_total": s.pss_kib(),
        "start_seconds": s.start_seconds,
        "processes": s.shims.iter().map(ShimMem::json).collect::<Vec<_>>(),
    })
}

/// Starts `n` sleeping containers through `v`, samples its shims, and
/// removes everything again.
fn measure(b: &Bench, v: &Variant, n: usize, grouped: bool) -> Result<Sample> {
    let before: BTreeSet<u32> = b.cd.shims().iter().map(|p| p.pid).collect();
    let group = format!("bench-{}-{n}", v.key);
    let annotation = format!("{GROUP_ANNOTATION}={group}");
    let mut flags = vec!["-d"];
    if grouped {
        flags.extend(["--annotation", &annotation]);
        b.cd.note_group(&b.ns, &group);
    }
    let tag = if grouped { "g" } else { "s" };
    let started = Instant::now();
    let result = (|| -> Result<Sample> {
        for i in 0..n {
            check_stop()?;
            b.progress.update(
                "memory",
                &format!(
                    "{} {}: starting {}/{n}",
                    v.label,
                    if grouped { "grouped" } else { "ungrouped" },
                    i + 1
                ),
            );
            let id = format!("mem-{}-{n}{tag}-{i}", v.key);
            b.cd.note_group(&b.ns, &id);
            let t = b.ctr_run(v, &flags, &id, &["sleep", "1000"])?;
            if !t.success() {
                let msg = format!("ctr run -d {id}: {}", t.failure());
                b.record_error(v, msg.clone());
                bail!("{msg}");
            }
        }
        let start_seconds = started.elapsed().as_secs_f64();
        std::thread::sleep(SETTLE);
        let shims = new_shims(b, v.shim_name, &before);
        Ok(Sample {
            shims,
            start_seconds,
        })
    })();
    b.progress
        .update("memory", &format!("{}: removing {n} container(s)", v.label));
    let cleaned = b.clean_namespace();
    let sample = result?;
    cleaned?;
    Ok(sample)
}

/// `(Rss, Pss)` in KiB from `/proc/<pid>/smaps_rollup`; zeros when the
/// process is gone.
fn smaps_rollup(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    parse_rollup(&text)
}

fn parse_rollup(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_smaps_rollup() {
        let text = "55d0c0a6e000-7ffd9b7fe000 ---p 00000000 00:00 0                          [rollup]\nRss:                2904 kB\nPss:                 512 kB\nPss_Anon:            300 kB\n";
        assert_eq!(parse_rollup(text), (2904, 512));
        assert_eq!(parse_rollup(""), (0, 0));
    }
}
