//! The benchmark: the same work through barge (both executors) and through
//! containerd's own `io.containerd.runc.v2`, interleaved in one run against
//! one private containerd, so that both see the same machine load.
//!
//! Each figure is one function in [`SECTIONS`]. A variant that cannot be
//! measured in a figure (barge before it supports an operation) gets no
//! number there: the row names it in [`Row::failed`] with the error.

mod cri;
mod exec;
mod lifecycle;
mod machine;
mod memory;
mod metrics;
mod progress;
mod report;
mod runner;
mod stats;
mod throughput;
mod wasm;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use barge_integration::containerd::{self, Containerd, IMAGE, RUNC_RUNTIME, RUNTIME};
use barge_integration::sys;

use machine::Machine;
use progress::{check_stop, Progress};
pub use report::{Better, Failure, Outcome, Row};
use runner::Timed;

/// The variant every ratio is relative to.
pub const BASELINE: &str = "runc-v2";

/// The name of the private containerd instance (under /run/barge-it). The
/// integration suite's instances are `c<version>`, `d<version>`,
/// `d<version>c`, `d<version>w` and `d<version>wc`, so none is this one.
const INSTANCE: &str = "barge-bench";

/// Held for the whole run: a second bench would kill this one's
/// containerd when it cleans up the instance's stale processes. The suite
/// holds a lock of its own (`/run/barge-it.lock`); the two can run at once.
const LOCK: &str = "/run/barge-bench.lock";

/// The binary of `io.containerd.runc.v2`.
const RUNC_SHIM: &str = "containerd-shim-runc-v2";

/// How long one `ctr` command may take before it is killed.
const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// A figure of the report.
type Section = fn(&Bench) -> Result<Outcome>;

/// Every figure, in report order.
const SECTIONS: &[(&str, Section)] = &[
    ("lifecycle", lifecycle::run),
    ("throughput", throughput::run),
    ("memory", memory::run),
    ("exec", exec::run),
    ("stats", metrics::run),
    ("wasm", wasm::run),
    ("cri", cri::run),
];

/// What to run, from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub quick: bool,
    /// The sections to run (`BENCH_ONLY`), in report order; all by default.
    pub sections: Vec<&'static str>,
    /// `1.6`, `1.7`, `2.1` or `2.3`.
    pub containerd: String,
    /// Runs per variant for lifecycle latency.
    pub lifecycle_runs: usize,
    /// Concurrent workers for throughput.
    pub workers: Vec<usize>,
    /// Measuring time per (workers, variant).
    pub throughput_time: Duration,
    /// Numbers of sleeping containers for memory.
    pub memory_counts: Vec<usize>,
    /// Execs per variant for exec latency.
    pub exec_runs: usize,
    /// Concurrent workers for exec throughput.
    pub exec_workers: usize,
    /// Measuring time per variant for exec throughput.
    pub exec_time: Duration,
    /// Tasks.Metrics calls per variant for the Stats cost.
    pub stats_calls: usize,
    /// Waiting Wasm servers (and as many sleeping busybox containers) for
    /// the Wasm memory figures.
    pub wasm_containers: usize,
    /// The CRI containerds (`BENCH_CRI=2.3,1.7`; default 2.3, and 1.7 too
    /// unless quick).
    pub cri_versions: Vec<String>,
    /// `critest --benchmark` runs per CRI handler, the handlers alternating.
    pub cri_rounds: usize,
    /// Pod and container lifecycles per critest run.
    pub cri_samples: usize,
    pub out_dir: PathBuf,
}

impl Config {
    pub fn from_env() -> Result<Config> {
        let quick = std::env::var("BENCH_QUICK")
            .map(|v| !v.is_empty() && v != "0")
            .unwrap_or(false);
        let containerd = std::env::var("BENCH_CONTAINERD").unwrap_or_else(|_| "1.7".into());
        if !["1.6", "1.7", "2.1", "2.3"].contains(&containerd.as_str()) {
            bail!("BENCH_CONTAINERD={containerd}: expected 1.6, 1.7, 2.1 or 2.3");
        }
        let all: Vec<&'static str> = SECTIONS.iter().map(|(name, _)| *name).collect();
        let sections = match std::env::var("BENCH_ONLY") {
            Ok(only) if !only.trim().is_empty() => {
                let asked: Vec<&str> = only.split(',').map(str::trim).collect();
                if let Some(bad) = asked.iter().find(|a| !all.contains(a)) {
                    bail!("BENCH_ONLY={only}: no section {bad:?}; the sections are {all:?}");
                }
                all.into_iter().filter(|s| asked.contains(s)).collect()
            }
            _ => all,
        };
        let cri_versions: Vec<String> = match std::env::var("BENCH_CRI") {
            Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_string()).collect(),
            _ if quick => vec!["2.3".into()],
            _ => vec!["2.3".into(), "1.7".into()],
        };
        if let Some(bad) = cri_versions
            .iter()
            .find(|v| !["1.7", "2.1", "2.3"].contains(&v.as_str()))
        {
            bail!("BENCH_CRI: no CRI containerd {bad:?}; expected 1.7, 2.1 or 2.3");
        }
        let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
        Ok(Config {
            quick,
            sections,
            containerd,
            lifecycle_runs: if quick { 5 } else { 30 },
            workers: vec![1, 2, 8],
            throughput_time: Duration::from_secs(if quick { 2 } else { 10 }),
            memory_counts: if quick { vec![1, 5] } else { vec![1, 10, 50] },
            exec_runs: if quick { 8 } else { 30 },
            exec_workers: 2,
            exec_time: Duration::from_secs(if quick { 3 } else { 10 }),
            stats_calls: if quick { 200 } else { 1000 },
            wasm_containers: if quick { 5 } else { 10 },
            cri_versions,
            cri_rounds: if quick { 3 } else { 6 },
            cri_samples: if quick { 4 } else { 10 },
            out_dir,
        })
    }
}

/// One way of running a container.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Short name used in ids, JSON keys and column heads.
    pub key: &'static str,
    pub label: &'static str,
    pub runtime: &'static str,
    /// barge's `executor` option, passed with `--runtime-config-path`.
    pub executor: Option<&'static str>,
    pub config: Option<PathBuf>,
    /// argv[0]'s file name of the shim processes.
    pub shim_name: &'static str,
}

impl Variant {
    pub fn is_baseline(&self) -> bool {
        self.key == BASELINE
    }
}

/// Everything a figure needs. Shared by worker threads.
pub struct Bench {
    pub cfg: Config,
    pub cd: Containerd,
    pub ns: String,
    pub variants: Vec<Variant>,
    pub progress: Progress,
    /// Failed runs while measuring: `(variant, message)`.
    pub run_errors: Mutex<Vec<(String, String)>>,
    /// Whether this ctr has `run --annotation`.
    pub ctr_has_annotation: bool,
}

impl Bench {
    /// `-a <sock> -n <ns> args...`: ctr's arguments for the bench namespace.
    pub fn ctr_args(&self, args: &[&str]) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "-a".into(),
            self.cd.sock.clone().into(),
            "-n".into(),
            self.ns.clone().into(),
        ];
        a.extend(args.iter().map(OsString::from));
        a
    }

    /// Runs ctr with `args` (from [`Bench::ctr_args`]) and times it.
    pub fn ctr_timed(&self, args: &[OsString], timeout: Duration) -> Result<Timed> {
        runner::timed(&self.cd.ctr_bin(), containerd::CTR_ENV, args, timeout)
    }

    /// `ctr -a <sock> -n <ns> run <flags> --runtime R [--runtime-config-path F] IMAGE id argv...`
    pub fn run_args(
        &self,
        v: &Variant,
        flags: &[&str],
        image: &str,
        id: &str,
        argv: &[&str],
    ) -> Vec<OsString> {
        let mut a = self.ctr_args(&["run"]);
        a.extend(flags.iter().map(OsString::from));
        a.push("--runtime".into());
        a.push(v.runtime.into());
        if let Some(cfg) = &v.config {
            a.push("--runtime-config-path".into());
            a.push(cfg.clone().into());
        }
        a.push(image.into());
        a.push(id.into());
        a.extend(argv.iter().map(OsString::from));
        a
    }

    /// Runs `ctr run` of busybox and times it.
    pub fn ctr_run(&self, v: &Variant, flags: &[&str], id: &str, argv: &[&str]) -> Result<Timed> {
        self.ctr_run_image(v, flags, IMAGE, id, argv)
    }

    /// Runs `ctr run` of `image` and times it.
    pub fn ctr_run_image(
        &self,
        v: &Variant,
        flags: &[&str],
        image: &str,
        id: &str,
        argv: &[&str],
    ) -> Result<Timed> {
        self.ctr_timed(&self.run_args(v, flags, image, id, argv), CTR_TIMEOUT)
    }

    /// `ctr run --rm ... true`, remembering and cleaning up after a failure.
    /// The elapsed time on success.
    pub fn lifecycle_once(&self, v: &Variant, id: &str) -> Result<Option<Duration>> {
        self.run_rm_once(v, IMAGE, id, &["true"])
    }

    /// `ctr run --rm ... IMAGE id argv...`, remembering and cleaning up
    /// after a failure. The elapsed time on success.
    pub fn run_rm_once(
        &self,
        v: &Variant,
        image: &str,
        id: &str,
        argv: &[&str],
    ) -> Result<Option<Duration>> {
        self.cd.note_group(&self.ns, id);
        let t = self.ctr_run_image(v, &["--rm"], image, id, argv)?;
        if t.success() {
            return Ok(Some(t.elapsed));
        }
        self.record_error(v, format!("ctr run --rm {id}: {}", t.failure()));
        self.remove_container(id);
        Ok(None)
    }

    pub fn record_error(&self, v: &Variant, msg: String) {
        self.progress.note(&format!("warning: {}: {msg}", v.key));
        self.run_errors
            .lock()
            .unwrap()
            .push((v.key.to_string(), msg));
    }

    /// Best-effort removal of one container and its task.
    pub fn remove_container(&self, id: &str) {
        let t = Duration::from_secs(20);
        let _ = self
            .cd
            .ctr(&self.ns)
            .args(["tasks", "rm", "-f", id])
            .timeout(t)
            .run();
        let _ = self
            .cd
            .ctr(&self.ns)
            .args(["containers", "rm", id])
            .timeout(t)
            .run();
    }

    /// Removes every task and container of the bench namespace and waits
    /// for their shims to go.
    pub fn clean_namespace(&self) -> Result<()> {
        self.cd.force_clean_namespace(&self.ns);
        let (tasks, containers) = self.cd.leftovers(&self.ns)?;
        if !tasks.is_empty() || !containers.is_empty() {
            bail!("left after cleanup: tasks {tasks:?}, containers {containers:?}");
        }
        self.wait_no_shims(Duration::from_secs(20))
    }

    /// Waits until no shim of our containerd is left.
    pub fn wait_no_shims(&self, limit: Duration) -> Result<()> {
        let end = std::time::Instant::now() + limit;
        loop {
            let left: Vec<u32> = self.cd.shims().iter().map(|p| p.pid).collect();
            if left.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() >= end {
                bail!(
                    "shims still running {limit:?} after their containers were removed: {left:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes a runtime options file for a barge executor.
fn options_file(dir: &Path, executor: &str) -> Result<PathBuf> {
    let path = dir.join(format!("bench-{executor}.toml"));
    std::fs::write(&path, format!("executor = \"{executor}\"\n"))
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

fn variants(dir: &Path) -> Result<Vec<Variant>> {
    Ok(vec![
        Variant {
            key: "barge-native",
            label: "barge native",
            runtime: RUNTIME,
            executor: Some("native"),
            config: Some(options_file(dir, "native")?),
            shim_name: containerd::SHIM_NAME,
        },
        Variant {
            key: "barge-oci",
            label: "barge oci-binary",
            runtime: RUNTIME,
            executor: Some("oci-binary"),
            config: Some(options_file(dir, "oci-binary")?),
            shim_name: containerd::SHIM_NAME,
        },
        Variant {
            key: BASELINE,
            label: "runc-v2",
            runtime: RUNC_RUNTIME,
            executor: None,
            config: None,
            shim_name: RUNC_SHIM,
        },
    ])
}

pub fn main() -> ExitCode {
    progress::install_stop_handler();
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("\nbarge-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let cfg = Config::from_env()?;
    let shim = containerd::shim_binary()?;
    let _lock = sys::lock_file(Path::new(LOCK), || {
        eprintln!("barge-bench: waiting for another bench run to finish (lock {LOCK})")
    })?;
    let progress = Progress::new();
    progress.update(
        "setup",
        &format!("starting a private containerd {}", cfg.containerd),
    );
    // The guard: dropping it (at the end, on error, or while unwinding)
    // removes every container, shim, mount and directory of this instance.
    let cd = Containerd::start(&cfg.containerd, INSTANCE, &shim)?;
    private_shim_copies(&cd)?;
    let ns = cd.namespace("bench");
    progress.update("setup", "importing busybox");
    cd.import_image(&ns)?;
    let ctr_has_annotation = cd
        .ctr(&ns)
        .args(["run", "--help"])
        .run()
        .map(|o| o.stdout.contains("--annotation") || o.stderr.contains("--annotation"))
        .unwrap_or(false);
    let mut machine = Machine::probe(&cd.prefix.join("bin/containerd"), &shim);
    let variants = variants(&cd.dirs.run)?;
    let mut bench = Bench {
        cfg,
        cd,
        ns,
        variants,
        progress,
        run_errors: Mutex::default(),
        ctr_has_annotation,
    };

    let failed_variants = preflight(&mut bench)?;
    let mut results = Vec::new();
    for (name, section) in SECTIONS {
        if !bench.cfg.sections.contains(name) {
            continue;
        }
        check_stop()?;
        bench.progress.update(name, "starting");
        let outcome = section(&bench).map_err(|e| format!("{e:#}"));
        check_stop()?;
        if let Err(e) = &outcome {
            bench.progress.note(&format!("{name} failed: {e}"));
        }
        // Whatever a figure left (on failure too) must not leak into the next.
        bench.clean_namespace()?;
        results.push(report::SectionResult { name, outcome });
    }
    bench.progress.clear();
    machine.loadavg_end = machine::loadavg();

    let run_errors = bench.run_errors.lock().unwrap().clone();
    // The Wasm executor gets a column of its own when it was measured.
    let mut shown = bench.variants.clone();
    let has_wasm = results.iter().any(|r| match &r.outcome {
        Ok(Outcome::Rows(rows)) => rows.iter().any(|row| row.values.contains_key(wasm::KEY)),
        _ => false,
    });
    if has_wasm {
        shown.push(wasm::variant(None));
    }
    // So does barge through the Sandbox API (CRI on containerd 2.3).
    let has_sandbox = results.iter().any(|r| match &r.outcome {
        Ok(Outcome::Rows(rows)) => rows.iter().any(|row| {
            row.values.contains_key(cri::SANDBOX_KEY) || row.failed.contains_key(cri::SANDBOX_KEY)
        }),
        _ => false,
    });
    if has_sandbox {
        shown.push(cri::variant());
    }
    let rep = report::Report {
        cfg: &bench.cfg,
        machine: &machine,
        variants: &shown,
        sections: &results,
        failed_variants: &failed_variants,
        run_errors: &run_errors,
    };
    print!("{}", rep.text());
    let (json, md) = rep.write(&bench.cfg.out_dir)?;
    println!("\nwritten: {}, {}", json.display(), md.display());

    let section_failed = results
        .iter()
        .any(|r| r.outcome.as_ref().map_or(true, Outcome::has_failure));
    // Tear the private containerd down now, so that a leak shows up in this
    // run's output rather than in the next one's.
    let dirs = bench.cd.dirs.clone();
    drop(bench);
    let leaks = leftovers(&dirs);
    if !leaks.is_empty() {
        eprintln!("barge-bench: left after teardown: {}", leaks.join("; "));
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("barge-bench: private containerd, containers, shims and mounts removed");
    if section_failed || !failed_variants.is_empty() || !run_errors.is_empty() {
        eprintln!(
            "barge-bench: some measurements failed (see the report); missed targets alone never fail the run"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Puts private copies of both shim binaries first on the private
/// containerd's PATH (which containerd searches before its own directory).
/// Pages of a binary file are shared by every process that maps it, so with
/// the usual files the PSS figures would depend on how many shims other
/// tests on the machine happen to run; with copies they count only the
/// bench's own shims.
fn private_shim_copies(cd: &Containerd) -> Result<()> {
    let copies = [
        (cd.shim.clone(), containerd::SHIM_NAME),
        (cd.prefix.join("bin").join(RUNC_SHIM), RUNC_SHIM),
    ];
    for (from, name) in copies {
        let to = cd.bin_dir.join(name);
        let _ = std::fs::remove_file(&to);
        std::fs::copy(&from, &to)
            .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// What is left of the private instance after its teardown: processes that
/// name its directories (containerd, shims), mounts, and the directories.
fn leftovers(dirs: &containerd::Dirs) -> Vec<String> {
    let run = dirs.run.to_string_lossy().into_owned();
    let lib = dirs.lib.to_string_lossy().into_owned();
    let mut left = Vec::new();
    let procs: Vec<u32> = sys::processes()
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter(|p| {
            p.argv
                .iter()
                .any(|a| a.starts_with(&run) || a.starts_with(&lib))
        })
        .map(|p| p.pid)
        .collect();
    if !procs.is_empty() {
        left.push(format!("processes {procs:?}"));
    }
    for d in [&dirs.run, &dirs.lib] {
        let mounts = sys::mounts_under(d);
        if !mounts.is_empty() {
            left.push(format!("mounts {mounts:?}"));
        }
        if d.exists() {
            left.push(format!("directory {}", d.display()));
        }
    }
    left
}

/// Runs one container through each variant (which also warms the page
/// cache and containerd). A barge variant that fails is dropped from the
/// run and reported; a failing baseline ends the run.
fn preflight(bench: &mut Bench) -> Result<Vec<(String, String)>> {
    let mut failed = Vec::new();
    let mut keep = Vec::new();
    for v in bench.variants.clone() {
        check_stop()?;
        bench
            .progress
            .update("setup", &format!("warm-up run through {}", v.label));
        let id = format!("warmup-{}", v.key);
        bench.cd.note_group(&bench.ns, &id);
        let t = bench.ctr_run(&v, &["--rm"], &id, &["true"])?;
        if t.success() {
            keep.push(v);
            continue;
        }
        bench.remove_container(&id);
        if v.is_baseline() {
            bail!("the baseline {} does not run: {}", v.runtime, t.failure());
        }
        bench.progress.note(&format!(
            "warning: {} does not run, skipping it: {}",
            v.label,
            t.failure()
        ));
        failed.push((v.key.to_string(), t.failure()));
    }
    if keep.len() < 2 {
        bail!("no barge variant runs");
    }
    bench.variants = keep;
    Ok(failed)
}
