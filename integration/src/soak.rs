//! The soak (issue 11): thousands of containers through one private
//! containerd, then a check that nothing of them is left.
//!
//! Four phases, in one namespace of their own (`<instance>-soak-<runtime>`):
//!
//! 1. `ctr run --rm busybox echo <id>` through `workers` parallel workers,
//!    each checked for its output;
//! 2. `ctr run --rm` of the Wasm hello image (barge's Wasm executor, picked
//!    from the entrypoint), the same way (barge only);
//! 3. `ctr task exec --exec-id <id> <holder> echo <id>` into one long-running
//!    container, through the same workers;
//! 4. create, start, kill and delete cycles, one at a time, inside one
//!    grouped shim (`io.containerd.runc.v2.group`, which barge and runc-v2
//!    both group by): a long-lived holder container keeps the shim up, and
//!    every cycle's init must be that shim's child. Each cycle is
//!    `ctr run -d` (Create, Start), `ctr task kill -s SIGKILL` (Kill),
//!    Tasks.Wait (137), `ctr task rm` (Delete) and `ctr container rm`.
//!
//! The long-lived shims of phases 3 and 4 are sampled when idle (descriptors,
//! their targets, VmRSS and RssAnon) after a warm-up and again at the end:
//! their descriptors must be the same, and the grouped shim's RSS may grow
//! by less than [`Config::rss_limit_kib`]. Afterwards nothing of the soak
//! may be left: shim processes, tasks, containers, active snapshots,
//! leases, mounts under the instance, cgroups under the namespace, shim
//! sockets of every id and the group, runtime state and bundles under the
//! namespace, and ctr's fifo dirs of our ids. (The soak makes no terminal,
//! so barge's console sockets, which any shim on the machine may leave, are
//! not its to count.)
//!
//! `make soak` runs it with the counts of issue 11 (`src/bin/barge-soak.rs`,
//! [`main`]); the suite runs [`short_case`] with small counts on one
//! containerd version.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::cmd::{self, poll, Cmd};
use crate::containerd::{
    self, remove_leftovers, runtime_state_parents, shim_socket, Containerd, IMAGE, RUNC_RUNTIME,
    RUNTIME, SHIM_NAME,
};
use crate::containerd_api::{status, Client};
use crate::runner;
use crate::sys;
use crate::wasm_cases::{image_tar, HELLO};

/// The grouping annotation that barge and runc-v2 both read.
const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";
/// How long one ctr command may take.
const CTR_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a long-lived shim is left idle before it is sampled (barge
/// trims its heap and unmaps its code 250 ms after its last request).
const SETTLE: Duration = Duration::from_millis(1500);
/// How many error messages a phase keeps.
const MAX_ERRORS: usize = 10;
/// Where ctr makes the fifos of a task's stdio (shared by every containerd).
const FIFO_DIR: &str = "/run/containerd/fifo";
/// The instance lock of `make soak` (the suite holds `/run/barge-it.lock`;
/// the two can run at once, with different instances and ids).
const LOCK: &str = "/run/barge-soak.lock";
/// The containerd version whose suite pass runs [`short_case`].
const SUITE_VERSION: &str = "2.3";
/// The deadline of the suite's short soak.
pub const SUITE_TIMEOUT: Duration = Duration::from_secs(240);

/// Which shim a soak drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Barge,
    RuncV2,
}

impl Runtime {
    pub fn parse(s: &str) -> Result<Runtime> {
        match s {
            "barge" => Ok(Runtime::Barge),
            "runc-v2" | "runc" => Ok(Runtime::RuncV2),
            other => bail!("unknown runtime {other:?} in SOAK_RUNTIMES (barge, runc-v2)"),
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Runtime::Barge => "barge",
            Runtime::RuncV2 => "runc-v2",
        }
    }

    fn runtime(self) -> &'static str {
        match self {
            Runtime::Barge => RUNTIME,
            Runtime::RuncV2 => RUNC_RUNTIME,
        }
    }

    fn shim_name(self) -> &'static str {
        match self {
            Runtime::Barge => SHIM_NAME,
            Runtime::RuncV2 => "containerd-shim-runc-v2",
        }
    }
}

/// The counts of one soak.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ctr run --rm` of busybox.
    pub runs: usize,
    /// Parallel workers of the runs, Wasm runs and execs.
    pub workers: usize,
    /// `ctr run --rm` of the Wasm hello image (barge only).
    pub wasm_runs: usize,
    /// `ctr task exec` into one long-running container.
    pub execs: usize,
    /// Create/start/kill/delete cycles in one grouped shim.
    pub cycles: usize,
    /// Cycles (and execs) before the long-lived shims' first sample.
    pub warmup: usize,
    /// The grouped barge shim's RSS must grow by less than this (KiB)
    /// between its samples; `None`: only reported. runc-v2's is always
    /// only reported.
    pub rss_limit_kib: Option<i64>,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl Config {
    /// Issue 11's counts: `make soak`.
    pub fn full() -> Config {
        Config {
            runs: 10_000,
            workers: 4,
            wasm_runs: 1_000,
            execs: 1_000,
            cycles: 1_000,
            warmup: 20,
            rss_limit_kib: Some(1024),
            progress: true,
        }
    }

    /// The suite's short soak: the same checks, small counts; the RSS is
    /// only reported (100 cycles say little about a slow leak, and the
    /// shim's idle unmapping makes a small difference noisy).
    pub fn short() -> Config {
        Config {
            runs: 200,
            workers: 4,
            wasm_runs: 50,
            execs: 50,
            cycles: 100,
            warmup: 20,
            rss_limit_kib: None,
            progress: false,
        }
    }

    /// [`Config::full`] (or [`Config::short`] with `SOAK_SHORT=1`), each
    /// count overridden by `SOAK_RUNS`, `SOAK_WORKERS`, `SOAK_WASM`,
    /// `SOAK_EXECS`, `SOAK_CYCLES`, `SOAK_WARMUP`, `SOAK_RSS_LIMIT_KIB`
    /// (`none`: report only).
    pub fn from_env() -> Result<Config> {
        let short = std::env::var("SOAK_SHORT").is_ok_and(|v| !v.is_empty() && v != "0");
        let mut c = if short {
            Config::short()
        } else {
            Config::full()
        };
        c.progress = true;
        let count = |var: &str, default: usize| -> Result<usize> {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse()
                    .with_context(|| format!("{var}={v}: not a count")),
                _ => Ok(default),
            }
        };
        c.runs = count("SOAK_RUNS", c.runs)?;
        c.workers = count("SOAK_WORKERS", c.workers)?.max(1);
        c.wasm_runs = count("SOAK_WASM", c.wasm_runs)?;
        c.execs = count("SOAK_EXECS", c.execs)?;
        c.cycles = count("SOAK_CYCLES", c.cycles)?;
        c.warmup = count("SOAK_WARMUP", c.warmup)?;
        if let Ok(v) = std::env::var("SOAK_RSS_LIMIT_KIB") {
            c.rss_limit_kib = match v.trim() {
                "" => c.rss_limit_kib,
                "none" => None,
                n => Some(
                    n.parse()
                        .with_context(|| format!("SOAK_RSS_LIMIT_KIB={v}: not a number"))?,
                ),
            };
        }
        Ok(c)
    }
}

/// The counts and times of one phase.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub key: &'static str,
    pub what: String,
    pub planned: usize,
    pub ok: usize,
    pub failed: usize,
    /// Not run: interrupted, or past the deadline.
    pub not_run: usize,
    /// Exited 0 but ctr printed nothing: ctr's own race (its fifo reader
    /// is cancelled at exit before it opened), which runc-v2 shows too
    /// (25 of 2,000 execs here, barge 4). Counted among `ok`; a problem
    /// only above [`Phase::lost_allowed`].
    pub lost_output: usize,
    /// The first [`MAX_ERRORS`] failures.
    pub errors: Vec<String>,
    pub elapsed: Duration,
    /// Why the phase did not run, if it did not.
    pub skipped: Option<String>,
    latencies: Vec<Duration>,
}

impl Phase {
    fn new(key: &'static str, what: String, planned: usize) -> Phase {
        Phase {
            key,
            what,
            planned,
            ..Default::default()
        }
    }

    /// How many runs may lose their output to ctr's race: 2 % and one.
    pub fn lost_allowed(&self) -> usize {
        self.planned / 50 + 1
    }

    fn record(&mut self, result: Result<Duration>) {
        match result {
            Ok(d) => {
                self.ok += 1;
                self.latencies.push(d);
            }
            Err(e) => {
                self.failed += 1;
                if self.errors.len() < MAX_ERRORS {
                    self.errors.push(format!("{e:#}"));
                }
            }
        }
    }

    /// The latency at quantile `q` (0..=1) of the successful runs.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let mut v = self.latencies.clone();
        if v.is_empty() {
            return None;
        }
        v.sort();
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        Some(v[i.min(v.len() - 1)])
    }

    /// Successful runs per second of the phase's wall time.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }

    fn to_json(&self) -> Value {
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0);
        json!({
            "what": self.what,
            "planned": self.planned,
            "ok": self.ok,
            "failed": self.failed,
            "not_run": self.not_run,
            "lost_output": self.lost_output,
            "errors": self.errors,
            "seconds": (self.elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "per_second": (self.rate() * 100.0).round() / 100.0,
            "p50_ms": ms(self.quantile(0.5)),
            "p99_ms": ms(self.quantile(0.99)),
            "skipped": self.skipped,
        })
    }
}

/// A long-lived shim, sampled when idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub fds: usize,
    pub rss_kib: u64,
    pub rss_anon_kib: u64,
    /// What each descriptor points to, sorted.
    pub fd_targets: Vec<String>,
}

impl Sample {
    fn of(pid: u32) -> Result<Sample> {
        let fp = sys::Footprint::of(pid)?;
        let mut fd_targets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .with_context(|| format!("list /proc/{pid}/fd"))?
            .flatten()
            .map(|e| {
                let target = std::fs::read_link(e.path())
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "?".into());
                format!("{}: {target}", e.file_name().to_string_lossy())
            })
            .collect();
        fd_targets.sort();
        Ok(Sample {
            fds: fp.fds,
            rss_kib: fp.rss_kib,
            rss_anon_kib: status_kib(pid, "RssAnon:")?,
            fd_targets,
        })
    }

    fn to_json(&self) -> Value {
        json!({"fds": self.fds, "vm_rss_kib": self.rss_kib, "rss_anon_kib": self.rss_anon_kib})
    }
}

/// A field of /proc/<pid>/status in kB.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// One long-lived shim of the soak: its samples after the warm-up and at
/// the end.
#[derive(Debug, Clone)]
pub struct ShimWatch {
    pub key: &'static str,
    pub what: String,
    pub pid: u32,
    /// When `before` was taken.
    pub before_note: String,
    pub before: Sample,
    pub after: Option<Sample>,
    /// Children of the shim at the end other than the holder's init
    /// (zombies included).
    pub stray_children: Vec<String>,
    /// Whether [`Config::rss_limit_kib`] applies.
    pub rss_checked: bool,
}

impl ShimWatch {
    /// VmRSS after minus before, in KiB.
    pub fn rss_growth_kib(&self) -> Option<i64> {
        self.after
            .as_ref()
            .map(|a| a.rss_kib as i64 - self.before.rss_kib as i64)
    }

    fn fd_diff(&self) -> (Vec<String>, Vec<String>) {
        let Some(after) = &self.after else {
            return (Vec::new(), Vec::new());
        };
        let b: BTreeSet<&String> = self.before.fd_targets.iter().collect();
        let a: BTreeSet<&String> = after.fd_targets.iter().collect();
        (
            a.difference(&b).map(|s| s.to_string()).collect(),
            b.difference(&a).map(|s| s.to_string()).collect(),
        )
    }

    fn to_json(&self) -> Value {
        let (opened, closed) = self.fd_diff();
        json!({
            "what": self.what,
            "pid": self.pid,
            "before_taken": self.before_note,
            "before": self.before.to_json(),
            "after": self.after.as_ref().map(Sample::to_json),
            "rss_growth_kib": self.rss_growth_kib(),
            "fds_opened": opened,
            "fds_closed": closed,
            "stray_children": self.stray_children,
        })
    }
}

/// What the soak left, by kind.
#[derive(Debug, Clone, Default)]
pub struct Leftovers {
    pub shims: Vec<String>,
    pub tasks: Vec<String>,
    pub containers: Vec<String>,
    pub active_snapshots: Vec<String>,
    pub leases: Vec<String>,
    pub mounts: Vec<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    pub sockets: Vec<PathBuf>,
    pub state_dirs: Vec<PathBuf>,
    pub bundles: Vec<PathBuf>,
    pub fifo_dirs: Vec<PathBuf>,
}

impl Leftovers {
    /// Every kind with what was found, in report order.
    pub fn kinds(&self) -> Vec<(&'static str, Vec<String>)> {
        let paths = |v: &[PathBuf]| v.iter().map(|p| p.display().to_string()).collect();
        vec![
            ("shim processes", self.shims.clone()),
            ("tasks", self.tasks.clone()),
            ("containers", self.containers.clone()),
            ("active snapshots", self.active_snapshots.clone()),
            ("leases", self.leases.clone()),
            ("mounts", paths(&self.mounts)),
            ("cgroups", paths(&self.cgroups)),
            ("shim sockets (/run/containerd/s)", paths(&self.sockets)),
            ("runtime state dirs", paths(&self.state_dirs)),
            ("bundles", paths(&self.bundles)),
            ("ctr fifo dirs", paths(&self.fifo_dirs)),
        ]
    }

    pub fn total(&self) -> usize {
        self.kinds().iter().map(|(_, v)| v.len()).sum()
    }
}

/// The result of one soak.
#[derive(Debug, Clone)]
pub struct Report {
    pub runtime: Runtime,
    pub containerd: String,
    pub workers: usize,
    pub phases: Vec<Phase>,
    pub shims: Vec<ShimWatch>,
    pub leftovers: Leftovers,
    /// Setup failures and phases that could not go on.
    pub errors: Vec<String>,
    pub interrupted: bool,
    pub elapsed: Duration,
    pub rss_limit_kib: Option<i64>,
}

impl Report {
    /// Everything that makes the soak fail.
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = self.errors.clone();
        if self.interrupted {
            p.push("interrupted".into());
        }
        for ph in &self.phases {
            if ph.failed > 0 {
                p.push(format!(
                    "{}: {} of {} failed, first: {}",
                    ph.key,
                    ph.failed,
                    ph.planned,
                    ph.errors.first().map(String::as_str).unwrap_or("")
                ));
            }
            if ph.lost_output > ph.lost_allowed() {
                p.push(format!(
                    "{}: {} of {} exited 0 without output (more than {})",
                    ph.key,
                    ph.lost_output,
                    ph.planned,
                    ph.lost_allowed()
                ));
            }
            if ph.not_run > 0 {
                p.push(format!(
                    "{}: {} of {} not run (interrupted or past the deadline)",
                    ph.key, ph.not_run, ph.planned
                ));
            }
        }
        for w in &self.shims {
            let Some(after) = &w.after else {
                p.push(format!("{}: no sample at the end", w.key));
                continue;
            };
            if after.fds != w.before.fds {
                let (opened, closed) = w.fd_diff();
                p.push(format!(
                    "{}: the shim's fds went from {} to {} (opened {opened:?}, closed {closed:?})",
                    w.key, w.before.fds, after.fds
                ));
            }
            if !w.stray_children.is_empty() {
                p.push(format!(
                    "{}: the shim has stray children {:?}",
                    w.key, w.stray_children
                ));
            }
            if let (true, Some(limit), Some(growth)) =
                (w.rss_checked, self.rss_limit_kib, w.rss_growth_kib())
            {
                if growth >= limit {
                    p.push(format!(
                        "{}: the shim's RSS grew by {growth} KiB ({} -> {} KiB), limit {limit} KiB",
                        w.key, w.before.rss_kib, after.rss_kib
                    ));
                }
            }
        }
        for (kind, found) in self.leftovers.kinds() {
            if !found.is_empty() {
                p.push(format!("left behind: {} {kind}: {found:?}", found.len()));
            }
        }
        p
    }

    /// Fails with every problem.
    pub fn check(&self) -> Result<()> {
        let p = self.problems();
        if p.is_empty() {
            Ok(())
        } else {
            bail!("{}", p.join("; "))
        }
    }

    /// One line: counts, leftovers and the grouped shim's figures.
    pub fn summary(&self) -> String {
        let phases: Vec<String> = self
            .phases
            .iter()
            .filter(|p| p.skipped.is_none())
            .map(|p| format!("{} {}/{}", p.key, p.ok, p.planned))
            .collect();
        let shims: Vec<String> = self
            .shims
            .iter()
            .filter_map(|w| {
                let a = w.after.as_ref()?;
                Some(format!(
                    "{} shim fds {}->{} RSS {}->{} KiB",
                    w.key, w.before.fds, a.fds, w.before.rss_kib, a.rss_kib
                ))
            })
            .collect();
        format!(
            "{} on containerd {}: {}; {} left behind; {}; {:.1}s",
            self.runtime.key(),
            self.containerd,
            phases.join(", "),
            self.leftovers.total(),
            shims.join(", "),
            self.elapsed.as_secs_f64()
        )
    }

    pub fn to_json(&self) -> Value {
        let phases: serde_json::Map<String, Value> = self
            .phases
            .iter()
            .map(|p| (p.key.to_string(), p.to_json()))
            .collect();
        let shims: serde_json::Map<String, Value> = self
            .shims
            .iter()
            .map(|w| (w.key.to_string(), w.to_json()))
            .collect();
        let left: serde_json::Map<String, Value> = self
            .leftovers
            .kinds()
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!({"count": v.len(), "found": v})))
            .collect();
        json!({
            "runtime": self.runtime.key(),
            "containerd": self.containerd,
            "workers": self.workers,
            "seconds": (self.elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "phases": phases,
            "long_lived_shims": shims,
            "rss_limit_kib": self.rss_limit_kib,
            "left_behind": left,
            "left_behind_total": self.leftovers.total(),
            "errors": self.errors,
            "interrupted": self.interrupted,
            "problems": self.problems(),
        })
    }

    pub fn markdown(&self) -> String {
        let mut s = format!(
            "## {} on containerd {} ({} workers, {:.1} s)\n\n",
            self.runtime.key(),
            self.containerd,
            self.workers,
            self.elapsed.as_secs_f64()
        );
        s.push_str(
            "| phase | planned | ok | of which no output | failed | not run | time | per second | p50 | p99 |\n",
        );
        s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "-".into())
        };
        for p in &self.phases {
            if let Some(why) = &p.skipped {
                s.push_str(&format!(
                    "| {} | - | - | - | - | - | - | - | - | - ({why}) |\n",
                    p.what
                ));
                continue;
            }
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.1} s | {:.1} | {} | {} |\n",
                p.what,
                p.planned,
                p.ok,
                p.lost_output,
                p.failed,
                p.not_run,
                p.elapsed.as_secs_f64(),
                p.rate(),
                ms(p.quantile(0.5)),
                ms(p.quantile(0.99)),
            ));
        }
        if !self.shims.is_empty() {
            s.push_str("\n| long-lived shim | pid | before taken | fds before | fds after | VmRSS before | VmRSS after | growth | RssAnon before | RssAnon after |\n");
            s.push_str("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
            for w in &self.shims {
                let a = w.after.as_ref();
                let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} KiB | {} KiB | {} KiB | {} KiB | {} KiB |\n",
                    w.what,
                    w.pid,
                    w.before_note,
                    w.before.fds,
                    opt(a.map(|a| a.fds as u64)),
                    w.before.rss_kib,
                    opt(a.map(|a| a.rss_kib)),
                    w.rss_growth_kib()
                        .map(|g| format!("{g:+}"))
                        .unwrap_or_else(|| "-".into()),
                    w.before.rss_anon_kib,
                    opt(a.map(|a| a.rss_anon_kib)),
                ));
            }
        }
        s.push_str("\n| left behind | count |\n| --- | ---: |\n");
        for (kind, found) in self.leftovers.kinds() {
            s.push_str(&format!("| {kind} | {} |\n", found.len()));
        }
        let problems = self.problems();
        if problems.is_empty() {
            s.push_str("\nNo failures, nothing left behind.\n");
        } else {
            s.push_str("\nProblems:\n\n");
            for p in problems {
                s.push_str(&format!("- {}\n", p.replace('\n', " ")));
            }
        }
        s
    }
}

/// A container that must not outlive its phase: removed on drop unless
/// [`Holder::remove`] already did.
struct Holder<'s> {
    soak: &'s Soak<'s>,
    id: String,
    init: u32,
    shim: u32,
    removed: bool,
}

impl Holder<'_> {
    fn remove(mut self) -> Result<()> {
        self.removed = true;
        self.soak.ctr().args(["tasks", "rm", "-f", &self.id]).ok()?;
        self.soak.ctr().args(["containers", "rm", &self.id]).ok()?;
        Ok(())
    }
}

impl Drop for Holder<'_> {
    fn drop(&mut self) {
        if !self.removed {
            self.soak.remove(&self.id);
        }
    }
}

/// One soak's context.
struct Soak<'a> {
    cd: &'a Containerd,
    rt: Runtime,
    cfg: &'a Config,
    ns: String,
    /// Every id starts with this (`<instance>-<runtime>-`), so that ctr's
    /// fifo dirs of this soak can be told from others'.
    prefix: String,
    native_toml: PathBuf,
    wasm_toml: PathBuf,
    deadline: Option<Instant>,
}

impl Soak<'_> {
    fn ctr(&self) -> Cmd {
        self.cd.ctr(&self.ns).timeout(CTR_TIMEOUT)
    }

    fn id(&self, tag: &str, i: usize) -> String {
        format!("{}{tag}{i}", self.prefix)
    }

    fn group(&self) -> String {
        format!("{}grp", self.prefix)
    }

    /// `ctr run <flags> --runtime R [--runtime-config-path F] IMAGE id args`.
    fn run_cmd(
        &self,
        flags: &[&str],
        options: Option<&Path>,
        image: &str,
        id: &str,
        args: &[&str],
    ) -> Cmd {
        let mut c = self
            .ctr()
            .arg("run")
            .args(flags)
            .args(["--runtime", self.rt.runtime()]);
        if let Some(o) = options {
            c = c.arg("--runtime-config-path").arg(o);
        }
        c.arg(image).arg(id).args(args)
    }

    /// barge's options for busybox: the native executor (runc-v2: none).
    fn native(&self) -> Option<&Path> {
        (self.rt == Runtime::Barge).then_some(self.native_toml.as_path())
    }

    /// Runs `c` and checks that it exits 0 printing `want` (or nothing:
    /// answers `true` then, see [`Phase::lost_output`]); on failure the
    /// container `id` is removed as a user would (`ctr task rm -f`,
    /// `ctr container rm`), so that what is left is the shim's doing.
    fn checked(&self, id: &str, c: Cmd, want: &str, remove: bool) -> Result<bool> {
        let r = c.run().and_then(|o| {
            let lost = o.success() && o.stdout.is_empty() && o.stderr.is_empty();
            ensure!(
                lost || (o.success() && o.stdout == want),
                "{}",
                o.describe()
            );
            Ok(lost)
        });
        if r.is_err() && remove {
            self.remove(id);
        }
        r.with_context(|| id.to_string())
    }

    /// Best-effort removal of one container and its task.
    fn remove(&self, id: &str) {
        let _ = self.ctr().args(["tasks", "rm", "-f", id]).run();
        let _ = self.ctr().args(["containers", "rm", id]).run();
    }

    /// Runs `job(i)` for i in 0..n on the workers; each outcome goes into
    /// `phase` with its time.
    fn parallel(&self, phase: &mut Phase, n: usize, job: impl Fn(usize) -> Result<bool> + Sync) {
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let failed = AtomicUsize::new(0);
        let results = Mutex::new(Vec::with_capacity(n));
        let start = Instant::now();
        let step = (n / 10).max(1);
        let key = phase.key;
        std::thread::scope(|s| {
            for _ in 0..self.cfg.workers.max(1) {
                s.spawn(|| {
                    cmd::set_deadline(self.deadline);
                    loop {
                        if runner::interrupted()
                            || self.deadline.is_some_and(|d| Instant::now() >= d)
                        {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= n {
                            break;
                        }
                        let t = Instant::now();
                        let r = job(i).map(|lost| (t.elapsed(), lost));
                        if r.is_err() {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        results.lock().unwrap().push(r);
                        let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                        if self.cfg.progress && (d.is_multiple_of(step) || d == n) {
                            self.progress(key, d, n, failed.load(Ordering::SeqCst), start);
                        }
                    }
                });
            }
        });
        phase.elapsed = start.elapsed();
        for r in results.into_inner().unwrap() {
            if let Ok((_, true)) = r {
                phase.lost_output += 1;
            }
            phase.record(r.map(|(d, _)| d));
        }
        phase.not_run = n.saturating_sub(phase.ok + phase.failed);
    }

    fn progress(&self, key: &str, done: usize, n: usize, failed: usize, start: Instant) {
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "soak {}: {key} {done}/{n} ({:.1}/s, {failed} failed, {secs:.0} s)",
            self.rt.key(),
            done as f64 / secs.max(1e-9),
        );
    }

    /// `ctr run -d` of a busybox that sleeps; answers it with its init's pid
    /// and its shim (the init's parent), checked to be this runtime's.
    fn holder(&self, id: String, flags: &[&str], client: &Client) -> Result<Holder<'_>> {
        let mut h = Holder {
            soak: self,
            id,
            init: 0,
            shim: 0,
            removed: false,
        };
        let mut f = vec!["-d"];
        f.extend_from_slice(flags);
        self.run_cmd(&f, self.native(), IMAGE, &h.id, &["sleep", "1000000"])
            .ok()
            .with_context(|| format!("start the holder {}", h.id))?;
        let p = client
            .get(&h.id, "")
            .map_err(|s| anyhow::anyhow!("Tasks.Get {}: {s}", h.id))?;
        ensure!(
            p.status == status::RUNNING,
            "holder {} is not running: {p:?}",
            h.id
        );
        h.init = p.pid;
        let shim = sys::process(p.pid)
            .with_context(|| format!("holder init {} gone", p.pid))?
            .ppid;
        let proc = sys::process(shim).with_context(|| format!("shim {shim} gone"))?;
        ensure!(
            proc.name() == self.rt.shim_name(),
            "the parent {shim} of holder init {} is {:?}, not a {}",
            p.pid,
            proc.argv,
            self.rt.shim_name()
        );
        h.shim = shim;
        Ok(h)
    }

    /// Samples an idle shim.
    fn sample(&self, pid: u32) -> Result<Sample> {
        std::thread::sleep(SETTLE);
        Sample::of(pid)
    }

    /// Children of `shim` other than `init`, as `pid state argv`.
    fn stray_children(shim: u32, init: u32) -> Vec<String> {
        sys::processes()
            .into_iter()
            .filter(|p| p.ppid == shim && p.pid != init)
            .map(|p| format!("{} {} {}", p.pid, p.state, p.argv.join(" ")))
            .collect()
    }

    fn phase_runs(&self) -> Phase {
        let mut phase = Phase::new(
            "runs",
            "`ctr run --rm` busybox `echo <id>`".into(),
            self.cfg.runs,
        );
        self.parallel(&mut phase, self.cfg.runs, |i| {
            let id = self.id("r", i);
            let c = self.run_cmd(&["--rm"], self.native(), IMAGE, &id, &["echo", &id]);
            self.checked(&id, c, &format!("{id}\n"), true)
        });
        phase
    }

    fn phase_wasm(&self) -> Result<Phase> {
        let mut phase = Phase::new(
            "wasm",
            "`ctr run --rm` of the Wasm hello image".into(),
            self.cfg.wasm_runs,
        );
        if self.rt != Runtime::Barge {
            phase.skipped = Some("Wasm runs under barge only".into());
            return Ok(phase);
        }
        if self.cfg.wasm_runs == 0 {
            return Ok(phase);
        }
        self.ctr()
            .args(["image", "import", "--no-unpack"])
            .arg(image_tar("wasm-hello.tar")?)
            .ok()?;
        self.parallel(&mut phase, self.cfg.wasm_runs, |i| {
            let id = self.id("w", i);
            let c = self.run_cmd(&["--rm"], Some(&self.wasm_toml), HELLO, &id, &[]);
            self.checked(&id, c, "hello from wasm\n", true)
        });
        Ok(phase)
    }

    fn exec(&self, holder: &str, exec_id: &str) -> Result<bool> {
        let c = self.ctr().args([
            "tasks",
            "exec",
            "--exec-id",
            exec_id,
            holder,
            "echo",
            exec_id,
        ]);
        self.checked(exec_id, c, &format!("{exec_id}\n"), false)
    }

    fn phase_execs(&self, client: &Client, shims: &mut Vec<ShimWatch>) -> Result<Phase> {
        let mut phase = Phase::new(
            "execs",
            "`ctr task exec` `echo <id>` into one container".into(),
            self.cfg.execs,
        );
        if self.cfg.execs == 0 {
            return Ok(phase);
        }
        let h = self.holder(self.id("x", 0), &[], client)?;
        for i in 0..self.cfg.warmup {
            self.exec(&h.id, &self.id("xw", i))
                .context("warm-up exec")?;
        }
        let mut watch = ShimWatch {
            key: "execs",
            what: "the exec container's shim".into(),
            pid: h.shim,
            before_note: format!("after {} warm-up execs", self.cfg.warmup),
            before: self.sample(h.shim)?,
            after: None,
            stray_children: Vec::new(),
            rss_checked: false,
        };
        self.parallel(&mut phase, self.cfg.execs, |i| {
            self.exec(&h.id, &self.id("e", i))
        });
        watch.after = Some(self.sample(h.shim)?);
        watch.stray_children = Self::stray_children(h.shim, h.init);
        shims.push(watch);
        h.remove()?;
        Ok(phase)
    }

    /// One create/start/kill/delete cycle in the group of `shim`.
    fn cycle(&self, client: &Client, group_flag: &str, shim: u32, id: &str) -> Result<()> {
        let r = (|| -> Result<()> {
            self.run_cmd(
                &["-d", "--annotation", group_flag],
                self.native(),
                IMAGE,
                id,
                &["sleep", "1000"],
            )
            .ok()?;
            let p = client
                .get(id, "")
                .map_err(|s| anyhow::anyhow!("Tasks.Get: {s}"))?;
            let parent = sys::process(p.pid).map(|p| p.ppid);
            ensure!(
                parent == Some(shim),
                "init {} has parent {parent:?}, not the grouped shim {shim}",
                p.pid
            );
            self.ctr()
                .args(["tasks", "kill", "-s", "SIGKILL", id])
                .ok()?;
            let code = client
                .wait(id, "")
                .map_err(|s| anyhow::anyhow!("Tasks.Wait: {s}"))?;
            ensure!(code == 137, "exit status {code} after SIGKILL, not 137");
            self.ctr().args(["tasks", "rm", id]).ok()?;
            self.ctr().args(["containers", "rm", id]).ok()?;
            Ok(())
        })();
        if r.is_err() {
            self.remove(id);
        }
        r.with_context(|| id.to_string())
    }

    fn phase_group(&self, client: &Client, shims: &mut Vec<ShimWatch>) -> Result<Phase> {
        let mut phase = Phase::new(
            "cycles",
            format!("create, start, kill, delete in one grouped shim ({GROUP_ANNOTATION})"),
            self.cfg.cycles,
        );
        if self.cfg.cycles == 0 {
            return Ok(phase);
        }
        let flag = format!("{GROUP_ANNOTATION}={}", self.group());
        let h = self.holder(self.id("g", 0), &["--annotation", &flag], client)?;
        for i in 0..self.cfg.warmup {
            self.cycle(client, &flag, h.shim, &self.id("gw", i))
                .context("warm-up cycle")?;
        }
        let mut watch = ShimWatch {
            key: "cycles",
            what: "the grouped shim".into(),
            pid: h.shim,
            before_note: format!("after {} warm-up cycles", self.cfg.warmup),
            before: self.sample(h.shim)?,
            after: None,
            stray_children: Vec::new(),
            rss_checked: self.rt == Runtime::Barge,
        };
        let start = Instant::now();
        let step = (self.cfg.cycles / 10).max(1);
        for i in 0..self.cfg.cycles {
            if runner::interrupted() || self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let t = Instant::now();
            let r = self.cycle(client, &flag, h.shim, &self.id("c", i));
            phase.record(r.map(|()| t.elapsed()));
            if self.cfg.progress && ((i + 1).is_multiple_of(step) || i + 1 == self.cfg.cycles) {
                self.progress("cycles", i + 1, self.cfg.cycles, phase.failed, start);
            }
        }
        phase.elapsed = start.elapsed();
        phase.not_run = self.cfg.cycles - phase.ok - phase.failed;
        ensure!(
            sys::alive(h.shim),
            "the grouped shim {} died during the cycles",
            h.shim
        );
        watch.after = Some(self.sample(h.shim)?);
        watch.stray_children = Self::stray_children(h.shim, h.init);
        shims.push(watch);
        h.remove()?;
        Ok(phase)
    }

    /// Every id the soak may have used, and its group: the names of the
    /// shim sockets it may have made.
    fn socket_groups(&self) -> Vec<String> {
        let c = self.cfg;
        let mut v = vec![self.group(), self.id("x", 0), self.id("g", 0)];
        for (tag, n) in [
            ("r", c.runs),
            ("w", c.wasm_runs),
            ("gw", c.warmup),
            ("c", c.cycles),
        ] {
            v.extend((0..n).map(|i| self.id(tag, i)));
        }
        v
    }

    /// The active snapshots of the namespace.
    fn active_snapshots(&self) -> Result<Vec<String>> {
        let out = self.ctr().args(["snapshots", "ls"]).ok()?;
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(2) == Some("Active"))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect())
    }

    fn leases(&self) -> Result<BTreeSet<String>> {
        let out = self.ctr().args(["leases", "ls", "-q"]).ok()?;
        Ok(crate::cmd::nonempty_lines(&out.stdout)
            .into_iter()
            .collect())
    }

    fn watched_mounts(&self) -> BTreeSet<PathBuf> {
        let mut m: BTreeSet<PathBuf> = sys::mounts_under(&self.cd.dirs.run).into_iter().collect();
        m.extend(sys::mounts_under(&self.cd.dirs.lib));
        m
    }

    /// Entries of every directory in `dirs`.
    fn entries(dirs: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
        dirs.into_iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .map(|e| e.path())
            .collect()
    }

    /// Whether a ctr fifo dir holds a fifo of one of our ids.
    fn our_fifo_dir(&self, dir: &Path) -> bool {
        std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&self.prefix))
        })
    }

    fn leftovers(&self, before: &Baseline) -> Result<Leftovers> {
        // A shim exits once its last container is deleted: give it a moment.
        let shims = || -> Vec<sys::Proc> {
            self.cd
                .shims()
                .into_iter()
                .filter(|p| p.has_flag("-namespace", &self.ns))
                .collect()
        };
        let _ = poll("the soak's shims to exit", Duration::from_secs(10), || {
            Ok(shims().is_empty().then_some(()))
        });
        let (tasks, containers) = self.cd.leftovers(&self.ns)?;
        let address = self.cd.address();
        let ns = &self.ns;
        Ok(Leftovers {
            shims: shims()
                .iter()
                .map(|p| format!("{} {}", p.pid, p.argv.join(" ")))
                .collect(),
            tasks,
            containers,
            active_snapshots: self.active_snapshots()?,
            leases: self.leases()?.difference(&before.leases).cloned().collect(),
            mounts: self
                .watched_mounts()
                .difference(&before.mounts)
                .cloned()
                .collect(),
            cgroups: Self::entries(sys::cgroup_roots().into_iter().map(|r| r.join(ns)))
                .into_iter()
                .filter(|p| p.is_dir())
                .collect(),
            sockets: self
                .socket_groups()
                .iter()
                .map(|g| shim_socket(&address, ns, g))
                .filter(|s| s.exists())
                .collect(),
            state_dirs: Self::entries(runtime_state_parents().into_iter().map(|p| p.join(ns))),
            bundles: Self::entries([self
                .cd
                .state_dir
                .join("io.containerd.runtime.v2.task")
                .join(ns)]),
            fifo_dirs: Self::entries([PathBuf::from(FIFO_DIR)])
                .into_iter()
                .filter(|d| !before.fifo_dirs.contains(d) && self.our_fifo_dir(d))
                .collect(),
        })
    }

    /// Removes whatever the soak left, so that a leak does not outlive it.
    fn clean(&self, left: &Leftovers) {
        for l in &left.leases {
            let _ = self.ctr().args(["leases", "rm", l]).run();
        }
        remove_leftovers(
            self.cd,
            &self.ns,
            &left.cgroups,
            &left.mounts,
            &left.state_dirs,
            &left.sockets,
        );
        for d in left.fifo_dirs.iter().chain(&left.bundles) {
            let _ = sys::remove_tree(d);
        }
    }
}

/// What existed before the soak, of what is shared with others.
struct Baseline {
    mounts: BTreeSet<PathBuf>,
    fifo_dirs: BTreeSet<PathBuf>,
    leases: BTreeSet<String>,
}

/// Runs one soak of `rt` against `cd`, in a namespace of its own, and
/// reports it; fails only when it cannot start. Whatever it left is
/// removed before it returns.
pub fn run(cd: &Containerd, rt: Runtime, cfg: &Config) -> Result<Report> {
    let started = Instant::now();
    let ns = cd.namespace(&format!("soak-{}", rt.key()));
    let work = cd.dirs.run.join(format!("soak-{}", rt.key()));
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let native_toml = work.join("native.toml");
    std::fs::write(&native_toml, "executor = \"native\"\n")?;
    let wasm_toml = work.join("wasm.toml");
    std::fs::write(
        &wasm_toml,
        format!(
            "[wasm]\ncache_dir = \"{}\"\n",
            work.join("wasm-cache").display()
        ),
    )?;
    let soak = Soak {
        cd,
        rt,
        cfg,
        prefix: format!("{}-{}-", cd.dirs.name, rt.key()),
        ns,
        native_toml,
        wasm_toml,
        deadline: cmd::deadline(),
    };
    cd.import_image(&soak.ns)?;
    let before = Baseline {
        mounts: soak.watched_mounts(),
        fifo_dirs: Soak::entries([PathBuf::from(FIFO_DIR)])
            .into_iter()
            .collect(),
        leases: soak.leases()?,
    };
    let client = Client::connect(&cd.address(), &soak.ns)?;
    let mut errors = Vec::new();
    let mut shims = Vec::new();
    let mut phases = vec![soak.phase_runs()];
    type PhaseFn<'s> = Box<dyn Fn(&mut Vec<ShimWatch>) -> Result<Phase> + 's>;
    let rest: [(&str, usize, PhaseFn); 3] = [
        ("wasm", cfg.wasm_runs, Box::new(|_| soak.phase_wasm())),
        (
            "execs",
            cfg.execs,
            Box::new(|w| soak.phase_execs(&client, w)),
        ),
        (
            "cycles",
            cfg.cycles,
            Box::new(|w| soak.phase_group(&client, w)),
        ),
    ];
    for (key, planned, phase) in rest {
        if runner::interrupted() || soak.deadline.is_some_and(|d| Instant::now() >= d) {
            errors.push(format!(
                "{key}: {planned} not run (interrupted or past the deadline)"
            ));
            continue;
        }
        match phase(&mut shims) {
            Ok(p) => phases.push(p),
            Err(e) => errors.push(format!("{key}: {e:#}")),
        }
    }
    let leftovers = match soak.leftovers(&before) {
        Ok(l) => l,
        Err(e) => {
            errors.push(format!("leak check: {e:#}"));
            Leftovers::default()
        }
    };
    soak.clean(&leftovers);
    let _ = std::fs::remove_dir_all(&work);
    Ok(Report {
        runtime: rt,
        containerd: cd.version.clone(),
        workers: cfg.workers,
        phases,
        shims,
        leftovers,
        errors,
        interrupted: runner::interrupted(),
        elapsed: started.elapsed(),
        rss_limit_kib: cfg.rss_limit_kib,
    })
}

/// The name of the suite's short soak for containerd `version`, on the one
/// version that runs it.
pub fn suite_case(version: &str) -> Option<String> {
    (version == SUITE_VERSION).then(|| format!("c{version}/soak-short"))
}

/// The suite's short soak of barge on `cd` ([`Config::short`]): every leak
/// check asserts; the report goes to the log dir.
pub fn short_case(cd: &Containerd) -> Result<()> {
    let report = run(cd, Runtime::Barge, &Config::short())?;
    println!("        soak-short: {}", report.summary());
    let dir = containerd::log_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(
            dir.join(format!("{}-soak-short.md", cd.dirs.name)),
            report.markdown(),
        );
    }
    report.check()
}

/// `make soak`: the long soak on a private containerd (instance
/// `soak<version>`), with [`Config::from_env`]'s counts, for each runtime
/// of `SOAK_RUNTIMES` (`barge`, or `barge,runc-v2`) on containerd
/// `SOAK_CONTAINERD` (default 2.3). Results go to the terminal and
/// `target/soak/results.{json,md}`.
pub fn main() -> ExitCode {
    runner::handle_interrupts();
    match soak_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("barge-soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn soak_main() -> Result<bool> {
    let cfg = Config::from_env()?;
    let version = std::env::var("SOAK_CONTAINERD")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "2.3".into());
    let runtimes = runner::env_list("SOAK_RUNTIMES", "barge")
        .iter()
        .map(|r| Runtime::parse(r))
        .collect::<Result<Vec<_>>>()?;
    let shim = containerd::shim_binary()?;
    let _lock = sys::lock_file(Path::new(LOCK), || {
        eprintln!("barge-soak: waiting for another soak to finish (lock {LOCK})")
    })?;
    let started = Instant::now();
    eprintln!(
        "barge-soak: {cfg:?} on containerd {version}, runtimes {:?}, shim {}",
        runtimes.iter().map(|r| r.key()).collect::<Vec<_>>(),
        shim.display()
    );
    let instance = format!("soak{}", version.replace('.', ""));
    let cd = Containerd::start(&version, &instance, &shim)?;
    // A copy of the shim, so that a rebuild during the soak does not change
    // the binary half-way (containerd looks it up for every start).
    let copy = cd.bin_dir.join(SHIM_NAME);
    std::fs::remove_file(&copy)?;
    std::fs::copy(&shim, &copy)
        .with_context(|| format!("copy {} to {}", shim.display(), copy.display()))?;
    let mut reports = Vec::new();
    for rt in runtimes {
        if runner::interrupted() {
            break;
        }
        let report = run(&cd, rt, &cfg)?;
        println!("{}", report.markdown());
        reports.push(report);
    }
    drop(cd);
    let elapsed = started.elapsed();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/soak");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let json = json!({
        "config": {
            "runs": cfg.runs, "workers": cfg.workers, "wasm_runs": cfg.wasm_runs,
            "execs": cfg.execs, "cycles": cfg.cycles, "warmup": cfg.warmup,
            "rss_limit_kib": cfg.rss_limit_kib,
        },
        "containerd": version,
        "shim": shim.display().to_string(),
        "seconds": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "runs": reports.iter().map(Report::to_json).collect::<Vec<_>>(),
    });
    let mut md = format!(
        "# Soak ({:.0} s in all)\n\nShim: `{}`. Counts: {} runs, {} Wasm runs, {} execs, {} grouped cycles ({} warm-up), {} workers.\n\n",
        elapsed.as_secs_f64(),
        shim.display(),
        cfg.runs,
        cfg.wasm_runs,
        cfg.execs,
        cfg.cycles,
        cfg.warmup,
        cfg.workers
    );
    for r in &reports {
        md.push_str(&r.markdown());
        md.push('\n');
    }
    let (jp, mp) = (out.join("results.json"), out.join("results.md"));
    std::fs::write(&jp, serde_json::to_string_pretty(&json)?)?;
    std::fs::write(&mp, md)?;
    println!("written: {}, {}", jp.display(), mp.display());
    let mut ok = true;
    for r in &reports {
        let p = r.problems();
        if !p.is_empty() {
            ok = false;
            eprintln!("barge-soak: {}: {}", r.runtime.key(), p.join("; "));
        }
    }
    eprintln!("barge-soak: took {:.0} s", elapsed.as_secs_f64());
    Ok(ok && !runner::interrupted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_rate() {
        let mut p = Phase::new("x", String::new(), 4);
        for ms in [40, 10, 30, 20] {
            p.record(Ok(Duration::from_millis(ms)));
        }
        p.record(Err(anyhow::anyhow!("boom")));
        p.elapsed = Duration::from_secs(2);
        assert_eq!(p.quantile(0.0), Some(Duration::from_millis(10)));
        assert_eq!(p.quantile(1.0), Some(Duration::from_millis(40)));
        assert_eq!((p.ok, p.failed, p.errors.len()), (4, 1, 1));
        assert!((p.rate() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn problems_name_fds_rss_and_leftovers() {
        let sample = |fds, rss| Sample {
            fds,
            rss_kib: rss,
            rss_anon_kib: 0,
            fd_targets: (0..fds).map(|i| format!("{i}: x")).collect(),
        };
        let mut r = Report {
            runtime: Runtime::Barge,
            containerd: "2.3".into(),
            workers: 4,
            phases: vec![],
            shims: vec![ShimWatch {
                key: "cycles",
                what: String::new(),
                pid: 1,
                before_note: String::new(),
                before: sample(10, 5000),
                after: Some(sample(10, 5500)),
                stray_children: vec![],
                rss_checked: true,
            }],
            leftovers: Leftovers::default(),
            errors: vec![],
            interrupted: false,
            elapsed: Duration::ZERO,
            rss_limit_kib: Some(1024),
        };
        assert!(r.problems().is_empty(), "{:?}", r.problems());
        r.shims[0].after = Some(sample(11, 7000));
        r.leftovers.sockets.push("/run/containerd/s/x".into());
        let p = r.problems().join("\n");
        assert!(p.contains("fds went from 10 to 11"), "{p}");
        assert!(p.contains("grew by 2000 KiB"), "{p}");
        assert!(p.contains("1 shim sockets"), "{p}");
        assert_eq!(r.leftovers.total(), 1);
    }
}
