//! Lifecycle latency: `ctr run --rm busybox true`, end to end (create,
//! start, wait for the exit, delete), wall time per run.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use super::progress::check_stop;
use super::stats::{median, percentile};
use super::{Bench, Better, Outcome, Row};

/// The target for the median: barge/runc-v2 at most this.
const TARGET_MEDIAN: f64 = 0.6;

pub fn run(b: &Bench) -> Result<Outcome> {
    let runs = b.cfg.lifecycle_runs;
    let mut samples: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut failures: BTreeMap<&'static str, usize> = BTreeMap::new();
    // Interleaved: A B C A B C ..., so that load changes hit every variant.
    for i in 0..runs {
        for v in &b.variants {
            check_stop()?;
            b.progress.update(
                "lifecycle",
                &format!("run {}/{runs} through {}", i + 1, v.label),
            );
            let id = format!("lc-{}-{i}", v.key);
            match b.lifecycle_once(v, &id)? {
                Some(d) => samples
                    .entry(v.key)
                    .or_default()
                    .push(d.as_secs_f64() * 1000.0),
                None => *failures.entry(v.key).or_default() += 1,
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
        "command": "ctr run --rm docker.io/library/busybox:latest ID true",
        "samples_ms": samples,
        "failed_runs": failures,
    });
    Ok(Outcome::Rows(vec![
        Row {
            figure: "lifecycle median".into(),
            unit: "ms",
            better: Better::Lower,
            decimals: 1,
            values: stat(&median),
            failed: BTreeMap::new(),
            target: Some(TARGET_MEDIAN),
            detail: detail.clone(),
        },
        Row {
            figure: "lifecycle p90".into(),
            unit: "ms",
            better: Better::Lower,
            decimals: 1,
            values: stat(&|s| percentile(s, 90.0)),
            failed: BTreeMap::new(),
            target: None,
            detail: json!({ "runs": runs }),
        },
    ]))
}
