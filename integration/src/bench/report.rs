//! The figures, and how they are shown: a table on the terminal, JSON and
//! Markdown files.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::machine::Machine;
use super::{Config, Variant, BASELINE};

/// Whether lower or higher values (and ratios) are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

impl Better {
    pub fn word(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }
    }

    fn op(self) -> &'static str {
        match self {
            Better::Lower => "<=",
            Better::Higher => ">=",
        }
    }

    fn met(self, ratio: f64, target: f64) -> bool {
        match self {
            Better::Lower => ratio <= target,
            Better::Higher => ratio >= target,
        }
    }
}

/// One figure, measured for some variants.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    pub unit: &'static str,
    pub better: Better,
    /// Decimals to print.
    pub decimals: usize,
    /// Variant key → value. A variant without a value was not measured
    /// (every run of it failed).
    pub values: BTreeMap<&'static str, f64>,
    /// Variant key → why it could not be measured at all: its cells say
    /// FAILED and the notes give the error.
    pub failed: BTreeMap<&'static str, Failure>,
    /// The goal for barge/runc-v2, in the direction of `better`.
    pub target: Option<f64>,
    /// Raw data for the JSON file.
    pub detail: Value,
}

/// Why a variant has no value in a row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Failure {
    pub error: String,
    /// The shim answered UNIMPLEMENTED: barge does not support the
    /// operation yet. Shown as failing, but it does not fail the run.
    pub unsupported: bool,
}

impl Failure {
    /// A failure, recognising the shim's UNIMPLEMENTED answer in `error`
    /// (containerd turns it into "not implemented", ctr prints that).
    pub fn from_error(error: String) -> Failure {
        let lower = error.to_lowercase();
        let unsupported = lower.contains("not implemented") || lower.contains("unimplemented");
        Failure { error, unsupported }
    }
}

impl Row {
    /// `value(key) / value(runc-v2)`.
    pub fn ratio(&self, key: &str) -> Option<f64> {
        let base = *self.values.get(BASELINE)?;
        let v = *self.values.get(key)?;
        (base > 0.0).then(|| v / base)
    }

    pub fn target_met(&self, key: &str) -> Option<bool> {
        Some(self.better.met(self.ratio(key)?, self.target?))
    }

    fn value_text(&self, key: &str) -> String {
        match self.values.get(key) {
            Some(v) => format!("{v:.*}", self.decimals),
            None if self.failed.contains_key(key) => "FAILED".into(),
            None => "-".into(),
        }
    }

    /// Empty without a target, and for a variant the row has no value for
    /// (the value cell already says "-"; the Wasm column has none in the
    /// busybox rows).
    fn target_text(&self, key: &str) -> String {
        let Some(t) = self.target.filter(|_| self.values.contains_key(key)) else {
            return String::new();
        };
        let verdict = match self.target_met(key) {
            Some(true) => "met",
            Some(false) => "missed",
            None => "n/a",
        };
        format!("{}{t:.2}x {verdict}", self.better.op())
    }
}

/// What a figure function produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    Rows(Vec<Row>),
}

impl Outcome {
    /// Whether a variant failed in a row for another reason than an
    /// operation barge does not support yet.
    pub fn has_failure(&self) -> bool {
        let Outcome::Rows(rows) = self;
        rows.iter()
            .any(|r| r.failed.values().any(|f| !f.unsupported))
    }
}

pub struct SectionResult {
    pub name: &'static str,
    /// `Err` holds why the measurement failed.
    pub outcome: std::result::Result<Outcome, String>,
}

pub struct Report<'a> {
    pub cfg: &'a Config,
    pub machine: &'a Machine,
    pub variants: &'a [Variant],
    pub sections: &'a [SectionResult],
    /// Barge variants that did not run at all: `(key, error)`.
    pub failed_variants: &'a [(String, String)],
    /// Single runs that failed while measuring: `(key, error)`.
    pub run_errors: &'a [(String, String)],
}

fn ratio_text(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into())
}

impl Report<'_> {
    fn barge_variants(&self) -> impl Iterator<Item = &Variant> {
        self.variants.iter().filter(|v| !v.is_baseline())
    }

    fn head(&self) -> Vec<String> {
        let mut h: Vec<String> = ["figure", "unit", "better", "runc-v2"]
            .map(String::from)
            .to_vec();
        for v in self.barge_variants() {
            h.push(v.label.to_string());
            h.push("ratio".into());
            h.push("target".into());
        }
        h
    }

    /// The table body, one row of cells per figure.
    fn body(&self) -> Vec<Vec<String>> {
        let width = self.head().len();
        let mut out = Vec::new();
        let other = |first: String| {
            let mut cells = vec![first];
            cells.resize(width, "-".to_string());
            cells
        };
        for s in self.sections {
            match &s.outcome {
                Ok(Outcome::Rows(rows)) => {
                    for r in rows {
                        let mut cells = vec![
                            r.figure.clone(),
                            r.unit.to_string(),
                            r.better.word().to_string(),
                            r.value_text(BASELINE),
                        ];
                        for v in self.barge_variants() {
                            cells.push(r.value_text(v.key));
                            cells.push(ratio_text(r.ratio(v.key)));
                            cells.push(r.target_text(v.key));
                        }
                        out.push(cells);
                    }
                }
                Err(_) => out.push(other(format!("{}: FAILED", s.name))),
            }
        }
        out
    }

    /// Explanations below the table.
    fn notes(&self) -> Vec<String> {
        let mut n = vec![
            "ratio = barge / runc-v2 for the same figure; \"better\" says whether lower or higher values (and ratios) are better".to_string(),
            "targets are goals for barge, shown but not enforced".to_string(),
            "RSS counts every page a shim maps, its binary's code included; PSS splits shared pages among the processes that map them, so it falls as more shims share one binary (both shims run from private copies, so only the bench's own shims share)".to_string(),
        ];
        if self.variants.iter().any(|v| v.key == super::wasm::KEY) {
            n.push("rows starting with \"wasm:\": the runc-v2, barge native and barge oci-binary columns run busybox (`echo hello`, `sleep 1000`), the barge wasm column the Wasm guest (cold: empty compile cache, warm: populated), so a ratio there is Wasm under barge / busybox under runc-v2".to_string());
            n.push("a Wasm container's init is forked from its shim and never execs, so the two share pages: shim PSS alone understates a Wasm container, shim+init PSS is its whole cost".to_string());
        }
        let has_cri = self.sections.iter().any(|s| {
            s.name == "cri" && matches!(&s.outcome, Ok(Outcome::Rows(rows)) if !rows.is_empty())
        });
        if has_cri {
            n.push("rows starting with \"cri\": CRI handlers on a private CRI containerd: runc (runc-v2) in the runc-v2 column, barge with a pause container (barge picks its native executor) in the barge native column, barge-sandbox (containerd 2.3, sandboxer = \"shim\": barge's Sandbox API, no pause container, a holder process forked from the shim) in the barge sandbox column; CreatePod+StartContainer is the sum of the two medians".to_string());
        }
        for s in self.sections {
            match &s.outcome {
                Err(e) => n.push(format!("{}: FAILED: {e}", s.name)),
                Ok(Outcome::Rows(rows)) => n.extend(row_failures(rows)),
            }
        }
        for (k, e) in self.failed_variants {
            n.push(format!("{k} did not run and was left out: {e}"));
        }
        if !self.run_errors.is_empty() {
            let mut per: BTreeMap<&str, usize> = BTreeMap::new();
            for (k, _) in self.run_errors {
                *per.entry(k).or_default() += 1;
            }
            n.push(format!(
                "failed runs (left out of the figures): {per:?}; first: {} {}",
                self.run_errors[0].0, self.run_errors[0].1
            ));
        }
        n
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        let c = self.cfg;
        vec![
            (
                "mode",
                if c.quick {
                    "quick (BENCH_QUICK=1)".into()
                } else {
                    "full".into()
                },
            ),
            ("sections", c.sections.join(", ")),
            ("image", "docker.io/library/busybox:latest".into()),
            (
                "lifecycle",
                format!(
                    "`ctr run --rm IMAGE ID true`, {} runs per variant, interleaved",
                    c.lifecycle_runs
                ),
            ),
            (
                "throughput",
                format!(
                    "{:?} workers looping `ctr run --rm`, {:?} per variant in 2 interleaved slices",
                    c.workers, c.throughput_time
                ),
            ),
            (
                "memory",
                format!(
                    "{:?} containers `ctr run -d IMAGE ID sleep 1000`, sampled {:?} after the last start; RSS and PSS of their shims from smaps_rollup, divided by the containers",
                    c.memory_counts,
                    super::memory::SETTLE,
                ),
            ),
            (
                "exec",
                format!(
                    "`ctr task exec --exec-id ID CONTAINER true` into a running `ctr run -d IMAGE CONTAINER sleep 1000` per variant, after one warm-up exec: {} runs per variant, interleaved; throughput: {} workers looping execs into the same container, {:?} per variant in {} interleaved slices",
                    c.exec_runs, c.exec_workers, c.exec_time, super::throughput::ROUNDS
                ),
            ),
            (
                "stats",
                format!(
                    "containerd's gRPC Tasks.Metrics for one `ctr run -d IMAGE ID sleep 1000` per variant (containerd asks its shim for Stats), after {warm} warm-up calls: {n} calls per variant in {slices} interleaved slices; the shim's utime+stime from /proc/PID/stat around each slice, and the client's wall time, divided by the calls; the shim's VmRSS and open descriptors after all calls minus before them, each taken after {quiet:?} without requests",
                    warm = super::metrics::WARM_UP,
                    n = c.stats_calls,
                    slices = super::metrics::SLICES,
                    quiet = super::metrics::QUIET,
                ),
            ),
            (
                "wasm",
                format!(
                    "`ctr run --rm {hello} ID` (/hello.wasm prints a line), {runs} runs with an empty compile cache (a fresh cache_dir each) and {runs} with a populated one, interleaved with `ctr run --rm IMAGE ID echo hello` through the other variants; memory: {n} `ctr run -d --net-host` of /http.wasm (a wasi:http server waiting in accept) against {n} `sleep 1000` containers, sampled {settle:?} after the last start, shims and inits from smaps_rollup",
                    hello = barge_integration::wasm_cases::HELLO,
                    runs = c.lifecycle_runs,
                    n = c.wasm_containers,
                    settle = super::memory::SETTLE,
                ),
            ),
            (
                "cri",
                format!(
                    "containerd {versions}: `critest --benchmark` (cri-tools v1.31.1), its pod lifecycle spec (CreatePod, StatusPod, StopPod, RemovePod) and container spec (a fresh pod per sample, then CreateContainer, StartContainer, StatusContainer, StopContainer, RemoveContainer of busybox `top`), {samples} samples per critest run, {rounds} runs per handler, the handlers alternating in a rotating order; medians and p90s over all samples; memory: 10 pods of one `sleep 1000` busybox per handler, sampled {settle:?} after the last start, the PSS of every shim and of every pod's sandbox process (pause, or barge's holder) from smaps_rollup, divided by the pods",
                    versions = c.cri_versions.join(", "),
                    samples = c.cri_samples,
                    rounds = c.cri_rounds,
                    settle = super::memory::SETTLE,
                ),
            ),
            (
                "variants",
                self.variants
                    .iter()
                    .map(|v| match v.executor {
                        Some(e) => format!("{} = {} executor={e}", v.key, v.runtime),
                        None => format!("{} = {}", v.key, v.runtime),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        ]
    }

    pub fn text(&self) -> String {
        let m = self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nbarge bench{}: {}, {} CPUs, {:.1} GiB, kernel {}, cgroups {}, {}",
            if self.cfg.quick { " (quick)" } else { "" },
            m.containerd,
            m.nproc,
            m.mem_total_mib as f64 / 1024.0,
            m.kernel,
            m.cgroups,
            m.date
        );
        let _ = writeln!(
            s,
            "load average {} at start, {} at end\n",
            m.loadavg_start, m.loadavg_end
        );
        s.push_str(&text_table(&self.head(), &self.body()));
        s.push('\n');
        for n in self.notes() {
            let _ = writeln!(s, "- {n}");
        }
        s
    }

    pub fn markdown(&self) -> String {
        let mut s = String::from("# barge bench\n\n## Machine\n\n| | |\n| --- | --- |\n");
        for (k, v) in self.machine.pairs() {
            let _ = writeln!(s, "| {k} | {} |", md_escape(&v));
        }
        s.push_str("\n## Settings\n\n");
        for (k, v) in self.settings() {
            let _ = writeln!(s, "- {k}: {v}");
        }
        s.push_str("\n## Results\n\n");
        let head = self.head();
        let _ = writeln!(s, "| {} |", head.join(" | "));
        let align: Vec<&str> = (0..head.len())
            .map(|i| if i < 3 { "---" } else { "---:" })
            .collect();
        let _ = writeln!(s, "| {} |", align.join(" | "));
        for row in self.body() {
            let cells: Vec<String> = row.iter().map(|c| md_escape(c)).collect();
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        s.push('\n');
        for n in self.notes() {
            let _ = writeln!(s, "- {}", md_escape(&n));
        }
        s
    }

    pub fn json(&self) -> Value {
        let sections: Vec<Value> = self
            .sections
            .iter()
            .map(|s| match &s.outcome {
                Ok(Outcome::Rows(rows)) => json!({
                    "name": s.name,
                    "status": "measured",
                    "figures": rows.iter().map(|r| self.row_json(r)).collect::<Vec<_>>(),
                }),
                Err(e) => json!({ "name": s.name, "status": "failed", "error": e }),
            })
            .collect();
        json!({
            "schema": 1,
            "quick": self.cfg.quick,
            "machine": self.machine.json(),
            "settings": self.settings().into_iter().collect::<BTreeMap<_, _>>(),
            "baseline": BASELINE,
            "variants": self.variants.iter().map(|v| json!({
                "key": v.key,
                "label": v.label,
                "runtime": v.runtime,
                "executor": v.executor,
            })).collect::<Vec<_>>(),
            "sections": sections,
            "failed_variants": self.failed_variants.iter()
                .map(|(k, e)| json!({"variant": k, "error": e})).collect::<Vec<_>>(),
            "run_errors": self.run_errors.iter()
                .map(|(k, e)| json!({"variant": k, "error": e})).collect::<Vec<_>>(),
        })
    }

    fn row_json(&self, r: &Row) -> Value {
        let ratios: BTreeMap<&str, f64> = self
            .barge_variants()
            .filter_map(|v| Some((v.key, r.ratio(v.key)?)))
            .collect();
        let target = r.target.map(|t| {
            let met: BTreeMap<&str, bool> = self
                .barge_variants()
                .filter_map(|v| Some((v.key, r.target_met(v.key)?)))
                .collect();
            json!({ "op": r.better.op(), "ratio": t, "met": met })
        });
        json!({
            "figure": r.figure,
            "unit": r.unit,
            "better": r.better.word(),
            "values": r.values,
            "ratios": ratios,
            "failed": r.failed.iter().map(|(k, f)| (*k, json!({
                "error": f.error,
                "unsupported": f.unsupported,
            }))).collect::<BTreeMap<_, _>>(),
            "target": target,
            "detail": r.detail,
        })
    }

    /// Writes `results.json` and `results.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let json_path = dir.join("results.json");
        let md_path = dir.join("results.md");
        let text = serde_json::to_string_pretty(&self.json())? + "\n";
        std::fs::write(&json_path, text)
            .with_context(|| format!("write {}", json_path.display()))?;
        std::fs::write(&md_path, self.markdown())
            .with_context(|| format!("write {}", md_path.display()))?;
        let canon = |p: PathBuf| p.canonicalize().unwrap_or(p);
        Ok((canon(json_path), canon(md_path)))
    }
}

/// One note per (variant, error) that left FAILED cells, naming the rows.
fn row_failures(rows: &[Row]) -> Vec<String> {
    let mut per: BTreeMap<(&str, &Failure), Vec<&str>> = BTreeMap::new();
    for r in rows {
        for (k, f) in &r.failed {
            per.entry((k, f)).or_default().push(&r.figure);
        }
    }
    per.into_iter()
        .map(|((k, f), figures)| {
            let why = if f.unsupported {
                " (barge answers UNIMPLEMENTED; this alone does not fail the run)"
            } else {
                ""
            };
            format!(
                "{}: {k} FAILED{why}: {}",
                figures.join(", "),
                f.error.trim().replace('\n', " | ")
            )
        })
        .collect()
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// A padded table: the first three columns left-aligned, the rest right.
fn text_table(head: &[String], body: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in body {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths[i];
            if i > 0 {
                s.push_str("  ");
            }
            if i < 3 {
                let _ = write!(s, "{c:<w$}");
            } else {
                let _ = write!(s, "{c:>w$}");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut s = line(head);
    let total = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    s.push_str(&"-".repeat(total));
    s.push('\n');
    for row in body {
        s.push_str(&line(row));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(better: Better, base: f64, barge: f64, target: f64) -> Row {
        Row {
            figure: "x".into(),
            unit: "ms",
            better,
            decimals: 1,
            values: [(BASELINE, base), ("barge-native", barge)].into(),
            failed: BTreeMap::new(),
            target: Some(target),
            detail: Value::Null,
        }
    }

    #[test]
    fn ratios_and_targets() {
        let r = row(Better::Lower, 100.0, 55.0, 0.6);
        assert!((r.ratio("barge-native").unwrap() - 0.55).abs() < 1e-9);
        assert_eq!(r.target_met("barge-native"), Some(true));
        assert_eq!(r.target_text("barge-native"), "<=0.60x met");
        assert_eq!(r.ratio("barge-oci"), None);
        assert_eq!(r.target_text("barge-oci"), "");
        let r = row(Better::Higher, 10.0, 15.0, 1.7);
        assert_eq!(r.target_met("barge-native"), Some(false));
        assert_eq!(r.target_text("barge-native"), ">=1.70x missed");
    }

    #[test]
    fn failed_cells_and_notes() {
        let mut r = row(Better::Lower, 100.0, 55.0, 0.5);
        r.values.remove("barge-native");
        r.failed.insert(
            "barge-native",
            Failure::from_error("exit status: 1: ctr: Exec: not implemented\n".into()),
        );
        assert_eq!(r.value_text("barge-native"), "FAILED");
        assert_eq!(r.value_text("barge-oci"), "-");
        assert_eq!(r.target_text("barge-native"), "");
        assert_eq!(ratio_text(r.ratio("barge-native")), "-");
        let mut r2 = r.clone();
        r2.figure = "y".into();
        let notes = row_failures(&[r.clone(), r2]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("x, y: barge-native FAILED (barge answers UNIMPLEMENTED"));
        assert!(!Outcome::Rows(vec![r.clone()]).has_failure());
        r.failed.insert(
            "barge-oci",
            Failure::from_error("timed out after 20s".into()),
        );
        assert!(Outcome::Rows(vec![r]).has_failure());
    }

    #[test]
    fn table_aligns() {
        let t = text_table(
            &["figure".into(), "u".into(), "b".into(), "v".into()],
            &[vec!["a".into(), "ms".into(), "lower".into(), "1.0".into()]],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "figure  u   b        v");
        assert_eq!(lines[2], "a       ms  lower  1.0");
    }
}
