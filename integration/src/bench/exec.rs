//! Exec: `ctr task exec` of `true` into a running busybox `sleep 1000`, end
//! to end (Exec, Start, the exit, Delete of the process), through every
//! variant, interleaved as the other figures are.
//!
//! - Latency: `exec_runs` execs per variant, A B C A B C; median and p90.
//! - Throughput: `exec_workers` workers per variant, each looping execs
//!   into the same container for `exec_time` (in interleaved slices, see
//!   [`throughput::interleaved`]); execs completed per second.
//!
//! Each variant gets one sleeping container and one exec that is not
//! measured (the warm-up). A variant whose warm-up fails is not measured:
//! its cells say FAILED and the notes give ctr's error. Until barge
//! supports Exec, that is barge's answer (UNIMPLEMENTED), which does not
//! fail the run; any other failure does. The containers are removed by the
//! namespace cleanup that follows every section.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;

use super::progress::check_stop;
use super::runner::Timed;
use super::stats::{median, percentile};
use super::throughput::{self, Step};
use super::{Bench, Better, Failure, Outcome, Row, Variant};

/// The target for the median: barge/runc-v2 at most this.
const TARGET_MEDIAN: f64 = 0.5;

/// How long one `ctr task exec true` may take before it is killed.
const EXEC_TIMEOUT: Duration = Duration::from_secs(20);

/// A variant whose execs fail this many times in a row in the latency
/// figure is not measured further there.
const GIVE_UP: usize = 3;

/// What each exec runs.
const COMMAND: &str = "true";

/// The sleeping container a variant's execs go into.
fn container(v: &Variant) -> String {
    format!("exec-{}", v.key)
}

/// `ctr task exec --exec-id EXEC_ID CONTAINER true`, timed.
fn exec_once(b: &Bench, container: &str, exec_id: &str) -> Result<Timed> {
    b.ctr_timed(
        &b.ctr_args(&["task", "exec", "--exec-id", exec_id, container, COMMAND]),
        EXEC_TIMEOUT,
    )
}

/// Starts the variant's sleeping container and execs into it once (not
/// measured: it warms up the page cache, containerd and the shim).
fn prepare(b: &Bench, v: &Variant) -> Result<()> {
    let id = container(v);
    b.cd.note_group(&b.ns, &id);
    let t = b.ctr_run(v, &["-d"], &id, &["sleep", "1000"])?;
    if !t.success() {
        bail!("ctr run -d {id} sleep 1000: {}", t.failure());
    }
    let t = exec_once(b, &id, "warmup")?;
    if !t.success() {
        bail!("ctr task exec {id} {COMMAND}: {}", t.failure());
    }
    Ok(())
}

pub fn run(b: &Bench) -> Result<Outcome> {
    // Variant key → why it has no figures.
    let mut failed: BTreeMap<&'static str, Failure> = BTreeMap::new();
    for v in &b.variants {
        check_stop()?;
        b.progress.update(
            "exec",
            &format!("sleeping container and a warm-up exec through {}", v.label),
        );
        if let Err(e) = prepare(b, v) {
            if v.is_baseline() {
                bail!("exec through the baseline {}: {e:#}", v.runtime);
            }
            b.progress
                .note(&format!("warning: exec: {} not measured: {e:#}", v.label));
            failed.insert(v.key, Failure::from_error(format!("{e:#}")));
        }
    }
    let mut rows = latency(b, &mut failed)?;
    rows.push(workers(b, &failed)?);
    Ok(Outcome::Rows(rows))
}

/// The median and p90 rows. A variant that fails [`GIVE_UP`] execs in a
/// row joins `failed`.
fn latency(b: &Bench, failed: &mut BTreeMap<&'static str, Failure>) -> Result<Vec<Row>> {
    let runs = b.cfg.exec_runs;
    let mut samples: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut failures: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut streak: BTreeMap<&'static str, usize> = BTreeMap::new();
    for i in 0..runs {
        for v in &b.variants {
            if failed.contains_key(v.key) {
                continue;
            }
            check_stop()?;
            b.progress.update(
                "exec",
                &format!("latency {}/{runs} through {}", i + 1, v.label),
            );
            let id = container(v);
            let t = exec_once(b, &id, &format!("lat-{i}"))?;
            if t.success() {
                samples
                    .entry(v.key)
                    .or_default()
                    .push(t.elapsed.as_secs_f64() * 1000.0);
                streak.insert(v.key, 0);
                continue;
            }
            let msg = format!("ctr task exec {id} {COMMAND}: {}", t.failure());
            b.record_error(v, msg.clone());
            *failures.entry(v.key).or_default() += 1;
            let s = streak.entry(v.key).or_default();
            *s += 1;
            if *s >= GIVE_UP {
                samples.remove(v.key);
                failed.insert(
                    v.key,
                    Failure::from_error(format!("{msg} ({GIVE_UP} failures in a row)")),
                );
            }
        }
    }
    let stat = |f: &dyn Fn(&[f64]) -> Option<f64>| -> BTreeMap<&'static str, f64> {
        samples
            .iter()
            .filter_map(|(k, s)| Some((*k, f(s)?)))
            .collect()
    };
    let detail = json!({
        "runs": runs,
        "command": format!("ctr task exec --exec-id ID exec-VARIANT {COMMAND}"),
        "container": "ctr run -d docker.io/library/busybox:latest exec-VARIANT sleep 1000",
        "samples_ms": samples,
        "failed_runs": failures,
    });
    Ok(vec![
        Row {
            figure: "exec median".into(),
            unit: "ms",
            better: Better::Lower,
            decimals: 1,
            values: stat(&median),
            failed: failed.clone(),
            target: Some(TARGET_MEDIAN),
            detail,
        },
        Row {
            figure: "exec p90".into(),
            unit: "ms",
            better: Better::Lower,
            decimals: 1,
            values: stat(&|s| percentile(s, 90.0)),
            failed: failed.clone(),
            target: None,
            detail: json!({ "runs": runs }),
        },
    ])
}

/// The throughput row: workers that exec in a loop. A worker whose exec
/// fails stops for the rest of its slice, and the variant gets no figure
/// (a rate with failures in it is no rate of execs).
fn workers(b: &Bench, failed: &BTreeMap<&'static str, Failure>) -> Result<Row> {
    let n = b.cfg.exec_workers;
    let measured: Vec<&Variant> = b
        .variants
        .iter()
        .filter(|v| !failed.contains_key(v.key))
        .collect();
    let first_error: Mutex<BTreeMap<&'static str, String>> = Mutex::default();
    let tallies = throughput::interleaved(b, "exec", &measured, n, b.cfg.exec_time, |v, t| {
        let id = container(v);
        let exec_id = format!("tp-r{}-w{}-{}", t.round, t.worker, t.iteration);
        let out = exec_once(b, &id, &exec_id)?;
        if out.success() {
            return Ok(Step::Completed);
        }
        let msg = format!("ctr task exec {id} {COMMAND}: {}", out.failure());
        b.record_error(v, msg.clone());
        first_error.lock().unwrap().entry(v.key).or_insert(msg);
        Ok(Step::Stop)
    })?;
    let mut failed = failed.clone();
    for (k, e) in first_error.into_inner().unwrap() {
        failed.insert(k, Failure::from_error(e));
    }
    let mut values = throughput::rates(&tallies);
    values.retain(|k, _| !failed.contains_key(k));
    Ok(Row {
        figure: format!(
            "exec throughput, {n} worker{}",
            if n == 1 { "" } else { "s" }
        ),
        unit: "exec/s",
        better: Better::Higher,
        decimals: 1,
        values,
        failed,
        target: None,
        detail: json!({
            "workers": n,
            "seconds_per_variant": b.cfg.exec_time.as_secs_f64(),
            "slices": throughput::ROUNDS,
            "command": format!("ctr task exec --exec-id ID exec-VARIANT {COMMAND}"),
            "per_variant": throughput::tallies_json(&tallies),
        }),
    })
}
