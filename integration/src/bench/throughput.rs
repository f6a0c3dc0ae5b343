//! Throughput: N workers, each looping `ctr run --rm busybox true` with
//! unique ids for a fixed time; containers completed per second.
//!
//! The worker loop ([`interleaved`]) is shared with the exec figures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use super::progress::{check_stop, stopped};
use super::{Bench, Better, Outcome, Row, Variant};

/// The target: barge/runc-v2 at least this.
const TARGET: f64 = 1.7;

/// Each (workers, variant) gets its time in this many slices, interleaved
/// with the other variants' slices (A B C A B C).
pub(super) const ROUNDS: u32 = 2;

/// What the workers of one variant did.
#[derive(Default, Clone, Copy)]
pub(super) struct Tally {
    pub completed: usize,
    pub failed: usize,
    pub elapsed: Duration,
}

/// How one operation of a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Completed,
    /// Failed (and recorded); the worker goes on.
    Failed,
    /// Failed (and recorded); the worker stops for the rest of its slice.
    Stop,
}

/// Where one worker is: which slice, which worker, which iteration.
#[derive(Clone, Copy)]
pub(super) struct Turn {
    pub round: u32,
    pub worker: usize,
    pub iteration: usize,
}

/// Completed operations per second, for the variants that completed any.
pub(super) fn rates(tallies: &BTreeMap<&'static str, Tally>) -> BTreeMap<&'static str, f64> {
    tallies
        .iter()
        .filter(|(_, t)| t.completed > 0)
        .map(|(k, t)| (*k, t.completed as f64 / t.elapsed.as_secs_f64()))
        .collect()
}

/// The raw counts per variant, for the JSON file.
pub(super) fn tallies_json(tallies: &BTreeMap<&'static str, Tally>) -> Value {
    let per: BTreeMap<&str, Value> = tallies
        .iter()
        .map(|(k, t)| {
            (
                *k,
                json!({
                    "completed": t.completed,
                    "failed": t.failed,
                    "seconds": t.elapsed.as_secs_f64(),
                }),
            )
        })
        .collect();
    json!(per)
}

pub fn run(b: &Bench) -> Result<Outcome> {
    let variants: Vec<&Variant> = b.variants.iter().collect();
    let mut rows = Vec::new();
    for &n in &b.cfg.workers {
        let tallies = interleaved(
            b,
            "throughput",
            &variants,
            n,
            b.cfg.throughput_time,
            |v, t| {
                let id = format!(
                    "tp-{}-n{n}-r{}-w{}-{}",
                    v.key, t.round, t.worker, t.iteration
                );
                Ok(match b.lifecycle_once(v, &id)? {
                    Some(_) => Step::Completed,
                    None => Step::Failed,
                })
            },
        )?;
        rows.push(Row {
            figure: format!("throughput, {n} worker{}", if n == 1 { "" } else { "s" }),
            unit: "ctr/s",
            better: Better::Higher,
            decimals: 2,
            values: rates(&tallies),
            failed: BTreeMap::new(),
            target: Some(TARGET),
            detail: json!({
                "workers": n,
                "seconds_per_variant": b.cfg.throughput_time.as_secs_f64(),
                "slices": ROUNDS,
                "per_variant": tallies_json(&tallies),
            }),
        });
    }
    Ok(Outcome::Rows(rows))
}

/// Runs `n` workers per variant for `time` in total, in [`ROUNDS`] slices
/// interleaved across `variants`. `once` does one operation and says how it
/// ended (it records its failures itself); `Err` ends the measurement.
pub(super) fn interleaved(
    b: &Bench,
    phase: &str,
    variants: &[&Variant],
    n: usize,
    time: Duration,
    once: impl Fn(&Variant, Turn) -> Result<Step> + Sync,
) -> Result<BTreeMap<&'static str, Tally>> {
    let slice = time / ROUNDS;
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for round in 0..ROUNDS {
        for v in variants {
            check_stop()?;
            let t = measure(b, phase, v, n, slice, round, &once)?;
            let sum = tallies.entry(v.key).or_default();
            sum.completed += t.completed;
            sum.failed += t.failed;
            sum.elapsed += t.elapsed;
        }
    }
    Ok(tallies)
}

/// `n` workers loop `once` through `v` for `time`. Operations in flight at
/// the end are waited for and counted; the elapsed time runs until the last
/// one ends.
fn measure(
    b: &Bench,
    phase: &str,
    v: &Variant,
    n: usize,
    time: Duration,
    round: u32,
    once: &(impl Fn(&Variant, Turn) -> Result<Step> + Sync),
) -> Result<Tally> {
    let completed = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let start = Instant::now();
    let deadline = start + time;
    let show = |done: usize| {
        b.progress.update(
            phase,
            &format!(
                "{n} worker(s), {} slice {}/{ROUNDS}: {done} done, {:.1}/{:.1} s",
                v.label,
                round + 1,
                start.elapsed().as_secs_f64().min(time.as_secs_f64()),
                time.as_secs_f64()
            ),
        )
    };
    show(0);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|worker| {
                let (completed, failed, show) = (&completed, &failed, &show);
                s.spawn(move || -> Result<()> {
                    let mut iteration = 0usize;
                    while Instant::now() < deadline && !stopped() {
                        let turn = Turn {
                            round,
                            worker,
                            iteration,
                        };
                        iteration += 1;
                        match once(v, turn)? {
                            Step::Completed => {
                                let done = completed.fetch_add(1, Ordering::Relaxed) + 1;
                                show(done);
                            }
                            Step::Failed => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                            Step::Stop => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a {phase} worker panicked")))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    for r in results {
        r?;
    }
    check_stop()?;
    Ok(Tally {
        completed: completed.into_inner(),
        failed: failed.into_inner(),
        elapsed,
    })
}
