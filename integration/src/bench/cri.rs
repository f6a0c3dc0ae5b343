//! CRI: pods through containerd's CRI plugin, with the handlers of
//! `barge_integration::cri` on private CRI containerds (2.3, and 1.7 too
//! unless quick), each with the loopback registry and CNI of the suite's
//! CRI harness:
//!
//! - `runc` (runc-v2) in the runc-v2 column, the reference of every ratio;
//! - `barge` (a pause container; barge picks its native executor for an
//!   ELF entrypoint) in the barge native column;
//! - `barge-sandbox` (2.3: `sandboxer = "shim"`, barge's Sandbox API, no
//!   pause container: a holder process `barge-pod <id>` forked from the
//!   shim holds the pod's namespaces) in a column of its own.
//!
//! Two figures per containerd:
//!
//! - Lifecycle: `critest --benchmark`, its pod lifecycle spec (CreatePod,
//!   StatusPod, StopPod, RemovePod; RunPodSandbox and so on, timed by
//!   critest around each CRI call) and its container spec (per sample a
//!   fresh pod, then CreateContainer, StartContainer, StatusContainer,
//!   StopContainer, RemoveContainer of busybox `top`). critest runs a few
//!   samples per handler and round, the handlers alternating in a rotating
//!   order round after round, so that the machine's drift hits each of
//!   them alike. The median and p90 of each operation over all rounds.
//! - Memory: 10 pods of one sleeping busybox each per handler, sampled
//!   [`SETTLE`] after the last start: the PSS of every shim process, plus
//!   that of every pod's sandbox process (the pause container's, or barge's
//!   holder), divided by the pods.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use barge_integration::cmd::Cmd;
use barge_integration::containerd::{self, log_dir, RUNTIME, SHIM_NAME};
use barge_integration::cri::{
    critest_bin, CriContainerd, CriImages, Registry, HANDLER_RUNC, HANDLER_SANDBOX,
};
use barge_integration::sys;
use serde_json::{json, Value};

use super::memory::{ShimMem, SETTLE};
use super::progress::check_stop;
use super::stats::{median, percentile};
use super::{Bench, Better, Failure, Outcome, Row, Variant, BASELINE, RUNC_SHIM};

/// The key (and report column) of barge through the Sandbox API.
pub const SANDBOX_KEY: &str = "barge-sandbox";

/// The registry instance of the bench (the suite's is `kreg`).
const REGISTRY: &str = "kbreg";

/// The image of critest's container benchmark (its
/// `DefaultLinuxContainerImage`), pulled before any figure so that no
/// CreateContainer pays for the pull.
const CRITEST_IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

/// The two specs of `critest --benchmark` that time pod and container
/// lifecycles (the image and listing benchmarks stay out).
const FOCUS: &str = "benchmark about (lifecycle of PodSandbox|basic operations on Container)";

/// What critest writes into `--benchmarking-output-dir`.
const POD_DATA: &str = "pod_benchmark_data.json";
const CONTAINER_DATA: &str = "container_benchmark_data.json";

/// The operations in the report, as critest names them.
const OPS: &[&str] = &[
    "CreatePod",
    "StopPod",
    "RemovePod",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
];

/// The target for the median of CreatePod plus that of StartContainer:
/// barge/runc-v2 at most this.
const TARGET_START: f64 = 0.5;

/// The target for the PSS per pod, shims plus sandbox processes.
const TARGET_MEMORY: f64 = 0.2;

/// Pods per handler for the memory figures.
const MEMORY_PODS: usize = 10;

/// After this many failed critest runs a handler is not run again.
const MAX_FAILED_RUNS: usize = 2;

/// How long one critest run may take, on top of [`PER_SAMPLE`] per sample.
const CRITEST_BASE: Duration = Duration::from_secs(60);
const PER_SAMPLE: Duration = Duration::from_secs(30);

/// Barge through the Sandbox API, for the column of its own.
pub fn variant() -> Variant {
    Variant {
        key: SANDBOX_KEY,
        label: "barge sandbox",
        runtime: RUNTIME,
        executor: None,
        config: None,
        shim_name: SHIM_NAME,
    }
}

/// A CRI handler and the report column it fills.
#[derive(Debug, Clone, Copy)]
struct Handler {
    name: &'static str,
    key: &'static str,
    /// argv[0]'s file name of its shims.
    shim_name: &'static str,
}

fn handler(name: &'static str) -> Handler {
    match name {
        HANDLER_RUNC => Handler {
            name,
            key: BASELINE,
            shim_name: RUNC_SHIM,
        },
        HANDLER_SANDBOX => Handler {
            name,
            key: SANDBOX_KEY,
            shim_name: SHIM_NAME,
        },
        _ => Handler {
            name,
            key: "barge-native",
            shim_name: SHIM_NAME,
        },
    }
}

pub fn run(b: &Bench) -> Result<Outcome> {
    let shim = b.cd.shim.clone();
    b.progress.update("cri", "starting the loopback registry");
    let images = CriImages::load()?;
    let registry = Registry::start_named(REGISTRY, &images)?;
    let registry_dirs = containerd::Dirs::new(REGISTRY);
    let mut rows = Vec::new();
    let mut result = Ok(());
    for version in &b.cfg.cri_versions {
        if let Err(e) = check_stop() {
            result = Err(e);
            break;
        }
        match run_version(b, version, &shim, &registry, &images) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                result = Err(e.context(format!("containerd {version}")));
                break;
            }
        }
    }
    drop(registry);
    let left = super::leftovers(&registry_dirs);
    result?;
    ensure!(
        left.is_empty(),
        "left after the registry's teardown: {}",
        left.join("; ")
    );
    Ok(Outcome::Rows(rows))
}

/// The instance name and subnet octet of the bench's containerd `version`
/// (`kb23`, 123): not the suite's (`k23`, 23), which may run meanwhile.
fn instance(version: &str) -> Result<(String, u8)> {
    let digits = version.replace('.', "");
    let n: u8 = digits
        .parse()
        .with_context(|| format!("containerd version {version:?}"))?;
    ensure!(n < 100, "containerd version {version:?}");
    Ok((format!("kb{digits}"), 100 + n))
}

fn run_version(
    b: &Bench,
    version: &str,
    shim: &Path,
    registry: &Registry,
    images: &CriImages,
) -> Result<Vec<Row>> {
    let (name, octet) = instance(version)?;
    b.progress.update(
        "cri",
        &format!("starting a private CRI containerd {version}"),
    );
    let cri = CriContainerd::start_named(version, &name, octet, shim, registry, images)?;
    let dirs = cri.cd.dirs.clone();
    let result = (|| -> Result<Vec<Row>> {
        super::private_shim_copies(&cri.cd)?;
        b.progress
            .update("cri", &format!("{version}: pulling the images"));
        for image in [cri.pause.as_str(), CRITEST_IMAGE, cri.busybox.as_str()] {
            cri.crictl(&["pull", image])
                .timeout(Duration::from_secs(120))
                .ok()
                .with_context(|| format!("crictl pull {image}"))?;
        }
        let handlers: Vec<Handler> = cri.handlers.iter().map(|h| handler(h)).collect();
        // Memory first: its pods also warm every handler up (page cache,
        // containerd's first pod of each) before anything is timed.
        let memory_rows = memory(b, &cri, &handlers)?;
        let mut rows = lifecycle(b, &cri, &handlers)?;
        rows.extend(memory_rows);
        Ok(rows)
    })();
    drop(cri);
    let left = super::leftovers(&dirs);
    let rows = result?;
    ensure!(
        left.is_empty(),
        "left after the teardown of {name}: {}",
        left.join("; ")
    );
    Ok(rows)
}

/// The samples of one handler: operation → durations in ms.
type Samples = BTreeMap<String, Vec<f64>>;

fn lifecycle(b: &Bench, cri: &CriContainerd, handlers: &[Handler]) -> Result<Vec<Row>> {
    let (rounds, samples) = (b.cfg.cri_rounds, b.cfg.cri_samples);
    let v = &cri.version;
    let mut got: BTreeMap<&'static str, Samples> = BTreeMap::new();
    let mut errors: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut seconds: BTreeMap<&'static str, f64> = BTreeMap::new();
    for round in 0..rounds {
        // A rotating order: no handler always runs first (or last).
        for i in 0..handlers.len() {
            let h = handlers[(round + i) % handlers.len()];
            if errors.get(h.key).map_or(0, Vec::len) >= MAX_FAILED_RUNS {
                continue;
            }
            check_stop()?;
            b.progress.update(
                "cri",
                &format!(
                    "{v}: critest --benchmark round {}/{rounds} through {}",
                    round + 1,
                    h.name
                ),
            );
            let started = Instant::now();
            let run = critest_round(cri, h, samples, round);
            *seconds.entry(h.key).or_default() += started.elapsed().as_secs_f64();
            match run {
                Ok(s) => {
                    let all = got.entry(h.key).or_default();
                    for (op, d) in s {
                        all.entry(op).or_default().extend(d);
                    }
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    b.progress
                        .note(&format!("warning: cri {v} {}: {msg}", h.name));
                    errors.entry(h.key).or_default().push(msg);
                }
            }
        }
    }
    // A handler with failed runs keeps the figures of the others, and the
    // row names the failure.
    let failed: BTreeMap<&'static str, Failure> = errors
        .iter()
        .map(|(k, e)| {
            let msg = format!(
                "{} critest run(s) failed, their samples left out{}; first: {}",
                e.len(),
                if e.len() >= MAX_FAILED_RUNS {
                    ", and the handler's later runs skipped"
                } else {
                    ""
                },
                e[0]
            );
            (*k, Failure::from_error(msg))
        })
        .collect();
    let ok = &got;
    let stat = |op: &str, f: &dyn Fn(&[f64]) -> Option<f64>| -> BTreeMap<&'static str, f64> {
        ok.iter()
            .filter_map(|(k, s)| Some((*k, f(s.get(op)?)?)))
            .collect()
    };
    let row = |figure: String, values, target, detail| Row {
        figure,
        unit: "ms",
        better: Better::Lower,
        decimals: 1,
        values,
        failed: failed.clone(),
        target,
        detail,
    };
    let start: BTreeMap<&'static str, f64> = ok
        .keys()
        .filter_map(|k| {
            let pod = median(ok[k].get("CreatePod")?)?;
            let ctr = median(ok[k].get("StartContainer")?)?;
            Some((*k, pod + ctr))
        })
        .collect();
    let detail = json!({
        "containerd": v,
        "handlers": handlers.iter().map(|h| (h.key, h.name)).collect::<BTreeMap<_, _>>(),
        "rounds": rounds,
        "samples_per_round": samples,
        "critest_seconds": seconds,
        "samples_ms": ok,
    });
    let mut rows = vec![row(
        format!("cri {v}: CreatePod+StartContainer median"),
        start,
        Some(TARGET_START),
        detail,
    )];
    for op in OPS {
        rows.push(row(
            format!("cri {v}: {op} median"),
            stat(op, &median),
            None,
            Value::Null,
        ));
        rows.push(row(
            format!("cri {v}: {op} p90"),
            stat(op, &|s| percentile(s, 90.0)),
            None,
            Value::Null,
        ));
    }
    Ok(rows)
}

/// One `critest --benchmark` run of `samples` pod and container
/// lifecycles through `h`, then the leak check: the durations critest
/// wrote, by operation.
fn critest_round(cri: &CriContainerd, h: Handler, samples: usize, round: usize) -> Result<Samples> {
    let out_dir = cri.work.join(format!("bench-{}-{round}", h.name));
    let _ = sys::remove_tree(&out_dir);
    std::fs::create_dir_all(&out_dir)?;
    // The parameters are flat keys; without podsNumber/containersNumber
    // critest skips both specs.
    let params = cri.work.join("bench-params.yaml");
    std::fs::write(
        &params,
        format!(
            "podsNumber: {samples}\npodsNumberParallel: 1\ncontainersNumber: {samples}\ncontainersNumberParallel: 1\n"
        ),
    )?;
    let tmp = cri.work.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    let timeout = CRITEST_BASE + PER_SAMPLE * samples as u32;
    cri.begin_keeping_segments();
    let out = Cmd::new(critest_bin()?)
        .arg("--benchmark")
        .arg("--runtime-endpoint")
        .arg(&cri.endpoint)
        .arg("--image-endpoint")
        .arg(&cri.endpoint)
        .arg("--runtime-handler")
        .arg(h.name)
        .arg("--benchmarking-params-file")
        .arg(&params)
        .arg("--benchmarking-output-dir")
        .arg(&out_dir)
        .arg(format!("--ginkgo.focus={FOCUS}"))
        .arg("--ginkgo.no-color")
        .arg(format!(
            "--ginkgo.timeout={}s",
            timeout.saturating_sub(Duration::from_secs(20)).as_secs()
        ))
        .env("TMPDIR", &tmp)
        .timeout(timeout)
        .run();
    let leaks = cri.check_leaks();
    let out = out?;
    if !out.success() {
        let log = log_dir().join(format!(
            "{}-bench-critest-{}-{round}.log",
            cri.cd.dirs.name, h.name
        ));
        let _ = std::fs::create_dir_all(log_dir());
        let _ = std::fs::write(&log, out.all());
        bail!(
            "critest --benchmark exited {} (output in {}): {}",
            out.code(),
            log.display(),
            failure_lines(&out.all())
        );
    }
    leaks.context("left behind by critest --benchmark")?;
    let mut all = Samples::new();
    for file in [POD_DATA, CONTAINER_DATA] {
        let path = out_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("critest wrote no {}", path.display()))?;
        for (op, d) in parse_results(&text).with_context(|| format!("parse {file}"))? {
            ensure!(
                d.len() == samples,
                "{file}: {} samples of {op}, expected {samples}",
                d.len()
            );
            all.insert(op, d);
        }
    }
    let _ = sys::remove_tree(&out_dir);
    Ok(all)
}

/// The lines of critest's output that say what failed, clipped.
fn failure_lines(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("[FAIL")
                || l.contains("Unexpected error")
                || l.contains("rpc error")
                || l.starts_with("[PANICKED")
        })
        .take(6)
        .collect();
    let text = if lines.is_empty() {
        let all: Vec<&str> = output.lines().collect();
        all[all.len().saturating_sub(5)..].join(" | ")
    } else {
        lines.join(" | ")
    };
    text.chars().take(1200).collect()
}

/// critest's `LifecycleBenchmarksResultsSet`: `operationsNames`, and
/// `datapoints[].operationsDurationsNs` in that order. Durations in ms.
fn parse_results(text: &str) -> Result<Samples> {
    let v: Value = serde_json::from_str(text)?;
    let names: Vec<&str> = v["operationsNames"]
        .as_array()
        .context("no operationsNames")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut out: Samples = names.iter().map(|n| (n.to_string(), Vec::new())).collect();
    for (i, p) in v["datapoints"]
        .as_array()
        .context("no datapoints")?
        .iter()
        .enumerate()
    {
        let d = p["operationsDurationsNs"]
            .as_array()
            .with_context(|| format!("datapoint {i} has no operationsDurationsNs"))?;
        ensure!(
            d.len() == names.len(),
            "datapoint {i} has {} durations for {} operations",
            d.len(),
            names.len()
        );
        for (name, ns) in names.iter().zip(d) {
            let ns = ns.as_f64().context("a duration is no number")?;
            out.get_mut(*name).expect("named").push(ns / 1e6);
        }
    }
    Ok(out)
}

/// The memory of one handler's pods.
struct PodMemory {
    shims: Vec<ShimMem>,
    /// The pause containers' processes, or barge's holders.
    sandboxes: Vec<ShimMem>,
    /// The comm of each sandbox process (`pause`, `barge-pod`).
    sandbox_names: BTreeSet<String>,
    start_seconds: f64,
    /// [`breakdown`] of the shims and of the sandbox processes.
    shims_breakdown: BTreeMap<&'static str, u64>,
    sandboxes_breakdown: BTreeMap<&'static str, u64>,
    /// Why removing the pods failed, or what they left behind: the
    /// figures stand, the row names the failure.
    cleanup: Option<String>,
}

fn pss_mib(procs: &[ShimMem]) -> f64 {
    procs.iter().map(|p| p.pss_kib).sum::<u64>() as f64 / 1024.0
}

/// The fields of smaps_rollup that say what a PSS is made of.
const BREAKDOWN: &[&str] = &["Pss_Anon", "Pss_File", "Pss_Shmem", "Private_Dirty", "Rss"];

/// The [`BREAKDOWN`] fields of `/proc/<pid>/smaps_rollup`, summed over
/// `procs`, in KiB (what is gone counts 0).
fn breakdown(procs: &[ShimMem]) -> BTreeMap<&'static str, u64> {
    let mut sum: BTreeMap<&'static str, u64> = BREAKDOWN.iter().map(|f| (*f, 0)).collect();
    for p in procs {
        let text =
            std::fs::read_to_string(format!("/proc/{}/smaps_rollup", p.pid)).unwrap_or_default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(name), Some(kib)) = (words.next(), words.next()) else {
                continue;
            };
            let name = name.trim_end_matches(':');
            if let (Some(total), Ok(kib)) = (sum.get_mut(name), kib.parse::<u64>()) {
                *total += kib;
            }
        }
    }
    sum
}

fn memory(b: &Bench, cri: &CriContainerd, handlers: &[Handler]) -> Result<Vec<Row>> {
    let v = &cri.version;
    let mut total = BTreeMap::new();
    let mut shim = BTreeMap::new();
    let mut sandbox = BTreeMap::new();
    let mut failed = BTreeMap::new();
    let mut detail = BTreeMap::new();
    for h in handlers {
        check_stop()?;
        match measure_pods(b, cri, *h) {
            Ok(m) => {
                let n = MEMORY_PODS as f64;
                if m.shims.len() != MEMORY_PODS {
                    b.progress.note(&format!(
                        "cri {v}: {} served {MEMORY_PODS} pods with {} shim process(es)",
                        h.name,
                        m.shims.len()
                    ));
                }
                if let Some(e) = &m.cleanup {
                    b.progress
                        .note(&format!("warning: cri {v} memory {}: {e}", h.name));
                    failed.insert(h.key, Failure::from_error(e.clone()));
                }
                shim.insert(h.key, pss_mib(&m.shims) / n);
                sandbox.insert(h.key, pss_mib(&m.sandboxes) / n);
                total.insert(h.key, (pss_mib(&m.shims) + pss_mib(&m.sandboxes)) / n);
                detail.insert(
                    h.key,
                    json!({
                        "handler": h.name,
                        "shim_processes": m.shims.len(),
                        "sandbox_processes": m.sandboxes.len(),
                        "sandbox_names": m.sandbox_names,
                        "start_seconds": m.start_seconds,
                        "shims": m.shims.iter().map(ShimMem::json).collect::<Vec<_>>(),
                        "sandboxes": m.sandboxes.iter().map(ShimMem::json).collect::<Vec<_>>(),
                        "shims_kib": m.shims_breakdown,
                        "sandboxes_kib": m.sandboxes_breakdown,
                    }),
                );
            }
            Err(e) => {
                let msg = format!("{e:#}");
                b.progress
                    .note(&format!("warning: cri {v} memory {}: {msg}", h.name));
                failed.insert(h.key, Failure::from_error(msg));
            }
        }
    }
    let row = |figure: &str, values, target, detail| Row {
        figure: format!("cri {v}: {figure}"),
        unit: "MiB",
        better: Better::Lower,
        decimals: 2,
        values,
        failed: failed.clone(),
        target,
        detail,
    };
    Ok(vec![
        row(
            "PSS per pod, shim + pause/holder",
            total,
            Some(TARGET_MEMORY),
            json!({ "containerd": v, "pods": MEMORY_PODS, "per_handler": detail }),
        ),
        row("PSS per pod, shim", shim, None, Value::Null),
        row("PSS per pod, pause/holder", sandbox, None, Value::Null),
    ])
}

/// Starts [`MEMORY_PODS`] pods of one `sleep 1000` busybox each through
/// `h`, samples their shims and sandbox processes, and removes them again
/// (the leak check after it must pass, or [`PodMemory::cleanup`] says why).
fn measure_pods(b: &Bench, cri: &CriContainerd, h: Handler) -> Result<PodMemory> {
    ensure!(
        cri.cd.shims().is_empty(),
        "shims left from before: {:?}",
        cri.cd.shims().iter().map(|p| p.pid).collect::<Vec<_>>()
    );
    cri.begin_keeping_segments();
    let mut pods = Vec::new();
    let started = Instant::now();
    let result = (|| -> Result<PodMemory> {
        let ctr = cri.container_config("sleep", &cri.busybox, &["sleep", "1000"], |_| {})?;
        for i in 0..MEMORY_PODS {
            check_stop()?;
            b.progress.update(
                "cri",
                &format!(
                    "{}: memory, pod {}/{MEMORY_PODS} through {}",
                    cri.version,
                    i + 1,
                    h.name
                ),
            );
            let pod_cfg = cri.pod_config(&format!("bench-mem-{}-{i}", h.name), |_| {})?;
            let pod = cri.run_pod(h.name, &pod_cfg)?;
            pods.push(pod.clone());
            cri.run_container(&pod, &ctr, &pod_cfg)?;
        }
        let start_seconds = started.elapsed().as_secs_f64();
        std::thread::sleep(SETTLE);
        let shims: Vec<ShimMem> = cri
            .cd
            .shims()
            .into_iter()
            .filter(|p| p.name() == h.shim_name)
            .map(|p| ShimMem::of(p.pid, p.ppid))
            .collect();
        let shim_pids: BTreeSet<u32> = shims.iter().map(|s| s.pid).collect();
        let mut sandboxes = Vec::new();
        let mut sandbox_names = BTreeSet::new();
        for pod in &pods {
            let pid = sandbox_pid(cri, pod, &shim_pids)?;
            let p = sys::process(pid).with_context(|| format!("pod {pod}: no process {pid}"))?;
            sandbox_names.insert(comm(pid));
            sandboxes.push(ShimMem::of(pid, p.ppid));
        }
        Ok(PodMemory {
            shims_breakdown: breakdown(&shims),
            sandboxes_breakdown: breakdown(&sandboxes),
            shims,
            sandboxes,
            sandbox_names,
            start_seconds,
            cleanup: None,
        })
    })();
    b.progress.update(
        "cri",
        &format!("{}: removing the pods of {}", cri.version, h.name),
    );
    let mut problems: Vec<String> = pods
        .iter()
        .filter_map(|pod| cri.remove_pod(pod).err())
        .map(|e| format!("removing a pod: {e:#}"))
        .collect();
    if let Err(e) = cri.check_leaks() {
        problems.push(format!("left behind by the pods: {e:#}"));
    }
    let mut m = result?;
    if !problems.is_empty() {
        m.cleanup = Some(format!(
            "{} cleanup failure(s); first: {}",
            problems.len(),
            problems[0]
        ));
    }
    Ok(m)
}

/// The process that holds pod `pod`'s namespaces: the pid CRI reports
/// for the sandbox (the pause container's init), or else the holder
/// (`barge-pod`) that one of `shims` forked for it.
fn sandbox_pid(cri: &CriContainerd, pod: &str, shims: &BTreeSet<u32>) -> Result<u32> {
    let info = cri.inspect(pod, true)?;
    if let Some(pid) = info["info"]["pid"].as_u64().filter(|p| *p > 0) {
        return Ok(pid as u32);
    }
    sys::processes()
        .into_iter()
        .find(|p| shims.contains(&p.ppid) && p.argv.first().is_some_and(|a| a.contains(pod)))
        .map(|p| p.pid)
        .with_context(|| format!("no sandbox process for pod {pod} (CRI reports no pid)"))
}

/// A process's command name (`/proc/<pid>/comm`).
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use barge_integration::cri::HANDLER_BARGE;

    #[test]
    fn parses_critest_results() {
        let text = r#"{
 "operationsNames": ["CreatePod", "StatusPod", "StopPod", "RemovePod"],
 "numParallel": 1,
 "datapoints": [
  {"sampleIndex": 0, "startTime": 1, "endTime": 2, "operationsDurationsNs": [120000000, 1000000, 30000000, 20000000], "metaInfo": {}},
  {"sampleIndex": 1, "startTime": 3, "endTime": 4, "operationsDurationsNs": [100000000, 2000000, 40000000, 10000000], "metaInfo": {}}
 ]
}"#;
        let s = parse_results(text).unwrap();
        assert_eq!(s["CreatePod"], [120.0, 100.0]);
        assert_eq!(s["RemovePod"], [20.0, 10.0]);
        assert_eq!(s.len(), 4);
        let bad =
            r#"{"operationsNames": ["A", "B"], "datapoints": [{"operationsDurationsNs": [1]}]}"#;
        assert!(parse_results(bad).is_err());
    }

    #[test]
    fn bench_instances_are_not_the_suites() {
        assert_eq!(instance("2.3").unwrap(), ("kb23".to_string(), 123));
        assert_eq!(instance("1.7").unwrap(), ("kb17".to_string(), 117));
    }

    #[test]
    fn handlers_fill_columns() {
        assert_eq!(handler(HANDLER_RUNC).key, BASELINE);
        assert_eq!(handler(HANDLER_BARGE).key, "barge-native");
        assert_eq!(handler(HANDLER_SANDBOX).key, SANDBOX_KEY);
        assert_eq!(handler(HANDLER_RUNC).shim_name, RUNC_SHIM);
    }
}
