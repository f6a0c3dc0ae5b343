//! Stats: what one Stats costs the shim. Each variant gets one sleeping
//! busybox container, and containerd's gRPC `Tasks.Metrics` for it (what
//! `ctr task metrics` and CRI's stats collector call; containerd asks the
//! task's shim for Stats) is called `stats_calls` times, in [`SLICES`]
//! slices interleaved across the variants (A B C A B C ...).
//!
//! - CPU per call: the shim's utime + stime (/proc/<pid>/stat, in clock
//!   ticks) after each slice minus before it, summed over the slices and
//!   divided by the calls.
//! - Wall time per call: the client's time over all calls divided by the
//!   calls: the round trip through containerd and the shim.
//! - RSS and descriptor growth: the shim's VmRSS and open descriptors after
//!   all calls minus before them, each taken after [`QUIET`] without
//!   requests (a barge shim gives back its code pages 250 ms after its last
//!   request; right after one they are mapped in, which is no growth).
//!
//! Every answer must be the container's cgroup metrics. A variant whose
//! container, shim or Stats fails is not measured: its cells say FAILED
//! and the notes give the error. The containers are removed by the
//! namespace cleanup that follows every section.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use barge_integration::containerd_api::{Client, CGROUPS_V1_METRICS};
use barge_integration::sys::Footprint;
use serde_json::{json, Value};

use super::memory::new_shims;
use super::progress::check_stop;
use super::stats::{median, percentile};
use super::{Bench, Better, Failure, Outcome, Row, Variant};

/// The target for the shim's CPU per call: barge/runc-v2 at most this.
const TARGET_CPU: f64 = 0.2;

/// Each variant's calls are made in this many slices, interleaved with the
/// other variants' slices.
pub(super) const SLICES: usize = 4;

/// Calls per variant before measuring (not counted): the first Stats of a
/// shim may set up what later ones reuse.
pub(super) const WARM_UP: usize = 20;

/// How long the shims are left without requests before their memory and
/// descriptors are counted.
pub(super) const QUIET: Duration = Duration::from_secs(1);

/// The type URL of the metrics of a cgroup v2 host.
const CGROUPS_V2_METRICS: &str = "io.containerd.cgroups.v2.Metrics";

/// One variant's container and the shim that serves it.
struct Subject<'a> {
    v: &'a Variant,
    id: String,
    shim: u32,
}

fn footprint_json(f: &Footprint) -> Value {
    json!({ "fds": f.fds, "rss_kib": f.rss_kib })
}

/// A process's counters from /proc/<pid>/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    /// utime + stime, in clock ticks.
    ticks: u64,
    /// cutime + cstime: children that it waited for.
    child_ticks: u64,
    /// minflt + majflt.
    faults: u64,
    /// utime + stime to the nanosecond, from the process's CPU clock (a
    /// check on the ticks, which count in steps of 10 ms).
    cpu_ns: u64,
}

impl Usage {
    fn of(pid: u32) -> Result<Usage> {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let usage = parse_stat(&text).with_context(|| format!("parse {path}: {text:?}"))?;
        Ok(Usage {
            cpu_ns: cpu_clock_ns(pid).with_context(|| format!("the CPU clock of {pid}"))?,
            ..usage
        })
    }

    fn since(self, earlier: Usage) -> Usage {
        Usage {
            ticks: self.ticks.saturating_sub(earlier.ticks),
            child_ticks: self.child_ticks.saturating_sub(earlier.child_ticks),
            faults: self.faults.saturating_sub(earlier.faults),
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
        }
    }

    fn add(&mut self, other: Usage) {
        self.ticks += other.ticks;
        self.child_ticks += other.child_ticks;
        self.faults += other.faults;
        self.cpu_ns += other.cpu_ns;
    }
}

/// The counters of one /proc/<pid>/stat line.
fn parse_stat(text: &str) -> Option<Usage> {
    // The command name is in parentheses and may hold spaces; the fields
    // after it start with the state (field 3 in proc(5)).
    let rest = text.get(text.rfind(')')? + 1..)?;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .take(14)
        .map(|x| x.parse::<i64>().map(|v| v.max(0) as u64))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    // From field 4: ppid pgrp session tty_nr tpgid flags minflt cminflt
    // majflt cmajflt utime stime cutime cstime.
    if f.len() < 14 {
        return None;
    }
    Some(Usage {
        ticks: f[10] + f[11],
        child_ticks: f[12] + f[13],
        faults: f[6] + f[8],
        cpu_ns: 0,
    })
}

/// The CPU time of every thread of `pid`, living or gone, in ns.
fn cpu_clock_ns(pid: u32) -> Result<u64> {
    let pid = libc::pid_t::try_from(pid)?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: writes one clockid_t through a pointer to a local.
    let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc).into());
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec through a pointer to a local.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(u64::try_from(ts.tv_sec)? * 1_000_000_000 + u64::try_from(ts.tv_nsec)?)
}

/// The clock ticks per second of /proc/<pid>/stat.
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// What the calls through one variant came to.
#[derive(Default)]
struct Tally {
    calls: usize,
    usage: Usage,
    wall: Duration,
    /// The wall time of each call, in µs.
    samples_us: Vec<f64>,
}

/// One Tasks.Metrics for `id`, which must answer its cgroup metrics.
fn metrics_once(client: &Client, id: &str) -> Result<()> {
    let metrics = client
        .metrics(id)
        .map_err(|s| anyhow::anyhow!("Tasks.Metrics {id}: {s}"))?;
    let [metric] = metrics.as_slice() else {
        bail!(
            "Tasks.Metrics {id}: {} metrics, expected 1 (containerd leaves out a task whose Stats failed and logs why)",
            metrics.len()
        );
    };
    let data = metric
        .data
        .as_ref()
        .with_context(|| format!("Tasks.Metrics {id}: a metric without data"))?;
    let cgroups = [CGROUPS_V1_METRICS, CGROUPS_V2_METRICS]
        .iter()
        .any(|t| data.type_url.ends_with(t));
    if metric.id != id || !cgroups || data.value.is_empty() {
        bail!(
            "Tasks.Metrics {id}: a metric of {:?} with type {:?} and {} bytes",
            metric.id,
            data.type_url,
            data.value.len()
        );
    }
    Ok(())
}

/// Starts the variant's sleeping container, finds its shim, and asks for
/// its metrics [`WARM_UP`] times.
fn prepare<'a>(b: &Bench, client: &Client, v: &'a Variant) -> Result<Subject<'a>> {
    let id = format!("stats-{}", v.key);
    let before = b.cd.shims().iter().map(|p| p.pid).collect();
    b.cd.note_group(&b.ns, &id);
    let t = b.ctr_run(v, &["-d"], &id, &["sleep", "1000"])?;
    if !t.success() {
        bail!("ctr run -d {id} sleep 1000: {}", t.failure());
    }
    let shims = new_shims(b, v.shim_name, &before);
    let [shim] = shims.as_slice() else {
        bail!(
            "{} new {} processes after starting {id}, expected 1",
            shims.len(),
            v.shim_name
        );
    };
    for _ in 0..WARM_UP {
        metrics_once(client, &id)?;
    }
    Ok(Subject {
        v,
        id,
        shim: shim.pid,
    })
}

/// `n` calls for one subject, with the shim's counters around them.
fn slice(client: &Client, s: &Subject, n: usize, tally: &mut Tally) -> Result<()> {
    let before = Usage::of(s.shim)?;
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        metrics_once(client, &s.id)?;
        tally.samples_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    tally.wall += start.elapsed();
    let after = Usage::of(s.shim)?;
    tally.usage.add(after.since(before));
    tally.calls += n;
    Ok(())
}

/// The footprint of every subject that is still measured, after
/// [`QUIET`].
fn footprints(
    b: &Bench,
    subjects: &[Subject],
    failed: &mut BTreeMap<&'static str, Failure>,
) -> BTreeMap<&'static str, Footprint> {
    std::thread::sleep(QUIET);
    let mut out = BTreeMap::new();
    for s in subjects {
        if failed.contains_key(s.v.key) {
            continue;
        }
        match Footprint::of(s.shim) {
            Ok(f) => {
                out.insert(s.v.key, f);
            }
            Err(e) => {
                let msg = format!("shim {} of {}: {e:#}", s.shim, s.id);
                b.record_error(s.v, msg.clone());
                failed.insert(s.v.key, Failure::from_error(msg));
            }
        }
    }
    out
}

pub fn run(b: &Bench) -> Result<Outcome> {
    let calls = b.cfg.stats_calls;
    let client = Client::connect(&b.cd.address(), &b.ns)?;
    let mut failed: BTreeMap<&'static str, Failure> = BTreeMap::new();
    let mut subjects = Vec::new();
    for v in &b.variants {
        check_stop()?;
        b.progress.update(
            "stats",
            &format!(
                "sleeping container and {WARM_UP} warm-up calls through {}",
                v.label
            ),
        );
        match prepare(b, &client, v) {
            Ok(s) => subjects.push(s),
            Err(e) if v.is_baseline() => bail!("stats through the baseline {}: {e:#}", v.runtime),
            Err(e) => {
                b.progress
                    .note(&format!("warning: stats: {} not measured: {e:#}", v.label));
                failed.insert(v.key, Failure::from_error(format!("{e:#}")));
            }
        }
    }
    b.progress.update("stats", &format!("{QUIET:?} of quiet"));
    let before = footprints(b, &subjects, &mut failed);
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for i in 0..SLICES {
        // Slices of (nearly) equal size that add up to `calls`.
        let n = calls * (i + 1) / SLICES - calls * i / SLICES;
        for s in &subjects {
            if failed.contains_key(s.v.key) {
                continue;
            }
            check_stop()?;
            b.progress.update(
                "stats",
                &format!(
                    "{} slice {}/{SLICES}: {n} Tasks.Metrics calls",
                    s.v.label,
                    i + 1
                ),
            );
            let tally = tallies.entry(s.v.key).or_default();
            if let Err(e) = slice(&client, s, n, tally) {
                if s.v.is_baseline() {
                    bail!("stats through the baseline {}: {e:#}", s.v.runtime);
                }
                let msg = format!("{e:#}");
                b.record_error(s.v, msg.clone());
                failed.insert(s.v.key, Failure::from_error(msg));
            }
        }
    }
    b.progress.update("stats", &format!("{QUIET:?} of quiet"));
    let after = footprints(b, &subjects, &mut failed);
    if failed.contains_key(super::BASELINE) {
        bail!(
            "stats: the baseline's shim went away: {:?}",
            failed[super::BASELINE]
        );
    }
    tallies.retain(|k, _| !failed.contains_key(k));
    Ok(Outcome::Rows(rows(
        calls, &subjects, &tallies, &before, &after, &failed,
    )))
}

fn rows(
    calls: usize,
    subjects: &[Subject],
    tallies: &BTreeMap<&'static str, Tally>,
    before: &BTreeMap<&'static str, Footprint>,
    after: &BTreeMap<&'static str, Footprint>,
    failed: &BTreeMap<&'static str, Failure>,
) -> Vec<Row> {
    let tck = clock_ticks_per_second();
    let cpu_us = |t: &Tally| t.usage.ticks as f64 * 1e6 / tck as f64 / t.calls as f64;
    let wall_us = |t: &Tally| t.wall.as_secs_f64() * 1e6 / t.calls as f64;
    let per_tally = |f: &dyn Fn(&Tally) -> f64| -> BTreeMap<&'static str, f64> {
        tallies
            .iter()
            .filter(|(_, t)| t.calls > 0)
            .map(|(k, t)| (*k, f(t)))
            .collect()
    };
    let growth = |f: &dyn Fn(&Footprint) -> f64| -> BTreeMap<&'static str, f64> {
        tallies
            .keys()
            .filter_map(|k| Some((*k, f(after.get(k)?) - f(before.get(k)?))))
            .collect()
    };
    let per_variant: BTreeMap<&str, Value> = subjects
        .iter()
        .filter_map(|s| {
            let t = tallies.get(s.v.key)?;
            Some((
                s.v.key,
                json!({
                    "container": s.id,
                    "shim_pid": s.shim,
                    "calls": t.calls,
                    "shim_cpu_ticks": t.usage.ticks,
                    "shim_child_cpu_ticks": t.usage.child_ticks,
                    "shim_page_faults": t.usage.faults,
                    "shim_cpu_clock_us_per_call": t.usage.cpu_ns as f64 / 1e3 / t.calls as f64,
                    "wall_seconds": t.wall.as_secs_f64(),
                    "wall_median_us": median(&t.samples_us),
                    "wall_p90_us": percentile(&t.samples_us, 90.0),
                    "before": before.get(s.v.key).map(footprint_json),
                    "after": after.get(s.v.key).map(footprint_json),
                }),
            ))
        })
        .collect();
    let detail = json!({
        "calls": calls,
        "slices": SLICES,
        "warm_up_calls": WARM_UP,
        "quiet_seconds": QUIET.as_secs_f64(),
        "clock_ticks_per_second": tck,
        "call": "containerd.services.tasks.v1.Tasks/Metrics, filter id==stats-VARIANT",
        "container": "ctr run -d docker.io/library/busybox:latest stats-VARIANT sleep 1000",
        "per_variant": per_variant,
    });
    let row = |figure: String, unit, decimals, values, target, detail| Row {
        figure,
        unit,
        better: Better::Lower,
        decimals,
        values,
        failed: failed.clone(),
        target,
        detail,
    };
    let brief = json!({ "calls": calls });
    vec![
        row(
            "stats: shim CPU per call".into(),
            "µs",
            1,
            per_tally(&cpu_us),
            Some(TARGET_CPU),
            detail,
        ),
        row(
            "stats: wall time per call".into(),
            "µs",
            0,
            per_tally(&wall_us),
            None,
            brief.clone(),
        ),
        row(
            format!("stats: shim RSS growth over {calls} calls"),
            "KiB",
            0,
            growth(&|f| f.rss_kib as f64),
            None,
            brief.clone(),
        ),
        row(
            format!("stats: shim fd growth over {calls} calls"),
            "fds",
            0,
            growth(&|f| f.fds as f64),
            None,
            brief,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat() {
        let text = "4242 (containerd-shim (x)) S 1 4242 4242 0 -1 4194560 1500 0 7 0 123 45 6 7 20 0 1 0 100 1000 200 18446744073709551615\n";
        assert_eq!(
            parse_stat(text),
            Some(Usage {
                ticks: 168,
                child_ticks: 13,
                faults: 1507,
                cpu_ns: 0,
            })
        );
        assert_eq!(parse_stat("4242 (sh) S 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn usage_differences_add_up() {
        let a = Usage {
            ticks: 10,
            child_ticks: 1,
            faults: 100,
            cpu_ns: 1_000,
        };
        let b = Usage {
            ticks: 14,
            child_ticks: 1,
            faults: 130,
            cpu_ns: 1_500,
        };
        let mut sum = Usage::default();
        sum.add(b.since(a));
        sum.add(b.since(a));
        assert_eq!(
            sum,
            Usage {
                ticks: 8,
                child_ticks: 0,
                faults: 60,
                cpu_ns: 1_000,
            }
        );
    }
}
