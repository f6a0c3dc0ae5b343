//! Throughput: N workers, each looping `ctr run --rm busybox true` with
//! unique ids for a fixed time; containers completed per second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::json;

use super::progress::{check_stop, stopped};
use super::{Bench, Better, Outcome, Row, Variant};

/// The target: barge/runc-v2 at least this.
const TARGET: f64 = 1.7;

/// Each (workers, variant) gets its time in this many slices, interleaved
/// with the other variants' slices (A B C A B C).
const ROUNDS: u32 = 2;

#[derive(Default, Clone, Copy)]
struct Tally {
    completed: usize,
    failed: usize,
    elapsed: Duration,
}

pub fn run(b: &Bench) -> Result<Outcome> {
    let slice = b.cfg.throughput_time / ROUNDS;
    let mut rows = Vec::new();
    for &n in &b.cfg.workers {
        let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
        for round in 0..ROUNDS {
            for v in &b.variants {
                check_stop()?;
                let t = measure(b, v, n, slice, round)?;
                let sum = tallies.entry(v.key).or_default();
                sum.completed += t.completed;
                sum.failed += t.failed;
                sum.elapsed += t.elapsed;
            }
        }
        let values = tallies
            .iter()
            .filter(|(_, t)| t.completed > 0)
            .map(|(k, t)| (*k, t.completed as f64 / t.elapsed.as_secs_f64()))
            .collect();
        let detail: BTreeMap<&str, _> = tallies
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
        rows.push(Row {
            figure: format!("throughput, {n} worker{}", if n == 1 { "" } else { "s" }),
            unit: "ctr/s",
            better: Better::Higher,
            decimals: 2,
            values,
            target: Some(TARGET),
            detail: json!({
                "workers": n,
                "seconds_per_variant": b.cfg.throughput_time.as_secs_f64(),
                "slices": ROUNDS,
                "per_variant": detail,
            }),
        });
    }
    Ok(Outcome::Rows(rows))
}

/// `n` workers loop through `v` for `time`. Runs in flight at the end are
/// waited for and counted; the elapsed time runs until the last one ends.
fn measure(b: &Bench, v: &Variant, n: usize, time: Duration, round: u32) -> Result<Tally> {
    let completed = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let start = Instant::now();
    let deadline = start + time;
    let show = |done: usize| {
        b.progress.update(
            "throughput",
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
            .map(|w| {
                let (completed, failed, show) = (&completed, &failed, &show);
                s.spawn(move || -> Result<()> {
                    let mut k = 0usize;
                    while Instant::now() < deadline && !stopped() {
                        let id = format!("tp-{}-n{n}-r{round}-w{w}-{k}", v.key);
                        k += 1;
                        match b.lifecycle_once(v, &id)? {
                            Some(_) => {
                                let done = completed.fetch_add(1, Ordering::Relaxed) + 1;
                                show(done);
                            }
                            None => {
                                failed.fetch_add(1, Ordering::Relaxed);
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
                    .unwrap_or_else(|_| Err(anyhow!("a throughput worker panicked")))
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
