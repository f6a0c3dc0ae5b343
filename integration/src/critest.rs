//! critest, the CRI conformance suite, against a [`CriContainerd`]: one run
//! per handler, parsed from ginkgo's JSON report, and the comparison of a
//! barge handler with runc-v2 on the same containerd.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::cmd::Cmd;
use crate::containerd::log_dir;
use crate::cri::{critest_bin, CriContainerd};

/// How long one critest run may take before it is killed. ginkgo's own
/// timeout is a minute shorter, so that it still writes its report.
pub const CRITEST_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// One spec's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The containers' texts and the leaf's, as ginkgo prints them.
    pub name: String,
    /// ginkgo's state: `passed`, `failed`, `skipped`, `pending`,
    /// `panicked`, `timedout`, `interrupted`, `aborted`.
    pub state: String,
    /// Why it failed, or why it was skipped (empty when it passed).
    pub message: String,
    pub seconds: f64,
}

impl Spec {
    pub fn passed(&self) -> bool {
        self.state == "passed"
    }

    pub fn skipped(&self) -> bool {
        matches!(self.state.as_str(), "skipped" | "pending")
    }

    pub fn failed(&self) -> bool {
        !self.passed() && !self.skipped()
    }

    /// The line of the failure message that says what failed, clipped:
    /// the first, unless it is gomega's bare `Unexpected error:` or a
    /// type line (`<*status.Error | 0x...>:`), which are passed over; then
    /// the error it wraps (`rpc error: ...`, `command '...' exited with`),
    /// when that line does not hold it.
    pub fn short_message(&self) -> String {
        let lines: Vec<&str> = self
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let meaningful = |l: &&str| *l != "Unexpected error:" && !l.starts_with(['<', '{']);
        let Some(i) = lines.iter().position(meaningful) else {
            return clip(lines.first().copied().unwrap_or_default(), 400);
        };
        let head = lines[i];
        let cause = lines[i + 1..].iter().find(|l| {
            (l.starts_with("rpc error") || l.starts_with("command '")) && !head.contains(**l)
        });
        match cause {
            Some(c) => clip(&format!("{head} — {c}"), 500),
            None => clip(head, 400),
        }
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// The specs of ginkgo's JSON report (`--ginkgo.json-report`): every `It`,
/// and any suite node (BeforeSuite, ...) that did not pass.
pub fn parse(json: &str) -> Result<Vec<Spec>> {
    let v: Value = serde_json::from_str(json).context("parse ginkgo's JSON report")?;
    let suites = v.as_array().context("the report is not a list of suites")?;
    let mut specs = Vec::new();
    for suite in suites {
        let reports = suite["SpecReports"].as_array().into_iter().flatten();
        for r in reports {
            let state = r["State"].as_str().unwrap_or("unknown").to_string();
            let kind = r["LeafNodeType"].as_str().unwrap_or_default();
            if kind != "It" && matches!(state.as_str(), "passed" | "skipped") {
                continue;
            }
            let mut parts: Vec<&str> = r["ContainerHierarchyTexts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let leaf = r["LeafNodeText"].as_str().unwrap_or_default();
            let kind_text = format!("[{kind}]");
            parts.push(if leaf.is_empty() { &kind_text } else { leaf });
            specs.push(Spec {
                name: parts.join(" "),
                state,
                message: r["Failure"]["Message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                seconds: r["RunTime"].as_f64().unwrap_or(0.0) / 1e9,
            });
        }
    }
    Ok(specs)
}

/// One critest run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The containerd version.
    pub version: String,
    pub handler: String,
    pub specs: Vec<Spec>,
    pub elapsed: Duration,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.specs.iter().filter(|s| s.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.specs.iter().filter(|s| s.failed()).count()
    }

    pub fn skipped(&self) -> usize {
        self.specs.iter().filter(|s| s.skipped()).count()
    }

    /// `86 passed, 1 failed, 26 skipped in 80.1s`.
    pub fn counts(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped in {:.1}s",
            self.passed(),
            self.failed(),
            self.skipped(),
            self.elapsed.as_secs_f64()
        )
    }

    /// Every spec with its state, and the whole message of each failure.
    pub fn listing(&self) -> String {
        let mut s = format!(
            "critest on containerd {}, handler {}: {}\n\n",
            self.version,
            self.handler,
            self.counts()
        );
        let mut specs: Vec<&Spec> = self.specs.iter().collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        for spec in specs {
            let _ = writeln!(s, "{:<8} {:>6.1}s  {}", spec.state, spec.seconds, spec.name);
            if spec.failed() {
                for l in clip(&spec.message, 3000).lines() {
                    let _ = writeln!(s, "             | {l}");
                }
            }
        }
        s
    }
}

/// The environment's extra ginkgo flags: `BARGE_IT_CRITEST_FOCUS` and
/// `BARGE_IT_CRITEST_SKIP` (regular expressions over spec names).
fn filter_flags() -> Vec<String> {
    let mut v = Vec::new();
    for (var, flag) in [
        ("BARGE_IT_CRITEST_FOCUS", "--ginkgo.focus"),
        ("BARGE_IT_CRITEST_SKIP", "--ginkgo.skip"),
    ] {
        if let Some(re) = std::env::var(var).ok().filter(|s| !s.is_empty()) {
            v.push(format!("{flag}={re}"));
        }
    }
    v
}

/// Runs critest with `handler` against `cri`. Its output, the JSON report
/// and a listing of every spec are kept in the log dir as
/// `<instance>-critest-<handler>.{log,json,txt}`. Fails only when critest
/// did not run or left no report; failing specs are in the report.
pub fn run(cri: &CriContainerd, handler: &str) -> Result<Report> {
    let bin = critest_bin()?;
    let report_path = cri.work.join(format!("critest-{handler}.json"));
    let _ = std::fs::remove_file(&report_path);
    let tmp = cri.work.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    let ginkgo_timeout = CRITEST_TIMEOUT.saturating_sub(Duration::from_secs(60));
    let started = Instant::now();
    let out = Cmd::new(&bin)
        .arg("--runtime-endpoint")
        .arg(&cri.endpoint)
        .arg("--image-endpoint")
        .arg(&cri.endpoint)
        .arg("--runtime-handler")
        .arg(handler)
        .arg("--ginkgo.no-color")
        .arg(format!("--ginkgo.timeout={}s", ginkgo_timeout.as_secs()))
        .arg(format!("--ginkgo.json-report={}", report_path.display()))
        .args(filter_flags())
        .env("TMPDIR", &tmp)
        .timeout(CRITEST_TIMEOUT)
        .run()?;
    let elapsed = started.elapsed();
    let base = format!("{}-critest-{handler}", cri.cd.dirs.name);
    let logs = log_dir();
    let _ = std::fs::create_dir_all(&logs);
    let _ = std::fs::write(logs.join(format!("{base}.log")), out.all());
    let json = std::fs::read_to_string(&report_path).with_context(|| {
        format!(
            "critest left no report (exit {}); output ends:\n{}",
            out.code(),
            tail(&out.all(), 30)
        )
    })?;
    let _ = std::fs::write(logs.join(format!("{base}.json")), &json);
    let report = Report {
        version: cri.version.clone(),
        handler: handler.to_string(),
        specs: parse(&json)?,
        elapsed,
    };
    let _ = std::fs::write(logs.join(format!("{base}.txt")), report.listing());
    ensure!(
        report.passed() + report.failed() > 0,
        "critest ran no spec (exit {}); output ends:\n{}",
        out.code(),
        tail(&out.all(), 30)
    );
    Ok(report)
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A spec whose outcome differs between two runs.
#[derive(Debug, Clone)]
pub struct Difference {
    pub name: String,
    pub reference: String,
    pub candidate: String,
    /// The failure (or skip) message of whichever run did not pass it.
    pub message: String,
    /// Why the candidate cannot pass it, when that lies outside the
    /// runtime (see [`excuse`]).
    pub excused: Option<&'static str>,
}

/// Why the candidate cannot pass a spec that the reference passes, when
/// the cause is in containerd and not in the runtime. The only one:
/// containerd 2.0 and 2.1's CRI introspect the OCI features (recursive
/// read-only mounts among them) of `io.containerd.runc.v2` handlers only
/// ("introspecting OCI runtime features needs the runtime type to be
/// io.containerd.runc.v2"), so critest skips the rro specs for any other
/// runtime there. containerd 2.2 and later ask every shim (`-info`).
fn excuse(version: &str, reference: &str, candidate: &str, message: &str) -> Option<&'static str> {
    let old_introspection = version.starts_with("2.0") || version.starts_with("2.1");
    (old_introspection
        && reference == "passed"
        && candidate == "skipped"
        && message.contains("recursive readonly mounts"))
    .then_some(
        "containerd 2.0/2.1's CRI asks only io.containerd.runc.v2 handlers for their features",
    )
}

/// A candidate run (barge) next to the reference run (runc-v2).
pub struct Comparison<'a> {
    pub reference: &'a Report,
    pub candidate: &'a Report,
    pub differences: Vec<Difference>,
}

/// Lines up two runs spec by spec.
pub fn compare<'a>(reference: &'a Report, candidate: &'a Report) -> Comparison<'a> {
    let by_name = |r: &'a Report| -> BTreeMap<&'a str, &'a Spec> {
        r.specs.iter().map(|s| (s.name.as_str(), s)).collect()
    };
    let (a, b) = (by_name(reference), by_name(candidate));
    let mut names: Vec<&str> = a.keys().chain(b.keys()).copied().collect();
    names.sort();
    names.dedup();
    let state = |m: &BTreeMap<&str, &Spec>, n: &str| {
        m.get(n)
            .map(|s| s.state.clone())
            .unwrap_or_else(|| "absent".into())
    };
    let differences = names
        .into_iter()
        .filter(|n| state(&a, n) != state(&b, n))
        .map(|n| {
            // Why the run that did not pass it failed or skipped it.
            let message = b
                .get(n)
                .filter(|s| !s.passed())
                .or_else(|| a.get(n).filter(|s| !s.passed()))
                .map(|s| s.short_message())
                .unwrap_or_default();
            let (reference_state, candidate_state) = (state(&a, n), state(&b, n));
            Difference {
                name: n.to_string(),
                excused: excuse(
                    &reference.version,
                    &reference_state,
                    &candidate_state,
                    &message,
                ),
                reference: reference_state,
                candidate: candidate_state,
                message,
            }
        })
        .collect();
    Comparison {
        reference,
        candidate,
        differences,
    }
}

impl Comparison<'_> {
    /// Specs the reference passes and the candidate does not, but for
    /// those excused by containerd's own limits.
    pub fn regressions(&self) -> Vec<&Difference> {
        self.differences
            .iter()
            .filter(|d| d.reference == "passed" && d.excused.is_none())
            .collect()
    }

    fn excused(&self) -> usize {
        self.differences
            .iter()
            .filter(|d| d.excused.is_some())
            .count()
    }

    /// The side-by-side counts and every spec whose outcome differs.
    pub fn summary(&self) -> String {
        let (r, c) = (self.reference, self.candidate);
        let mut s = format!(
            "critest on containerd {}: {:>8} {:>14}\n",
            r.version, r.handler, c.handler
        );
        for (what, x, y) in [
            ("passed", r.passed(), c.passed()),
            ("failed", r.failed(), c.failed()),
            ("skipped", r.skipped(), c.skipped()),
        ] {
            let _ = writeln!(s, "  {what:<28} {x:>8} {y:>14}");
        }
        let _ = writeln!(
            s,
            "  {:<28} {:>7.0}s {:>13.0}s",
            "time",
            r.elapsed.as_secs_f64(),
            c.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "  {} specs differ ({} passed by {} only):",
            self.differences.len(),
            self.regressions().len(),
            r.handler
        );
        for d in &self.differences {
            let _ = writeln!(
                s,
                "    {} {} / {} {}: {}",
                r.handler, d.reference, c.handler, d.candidate, d.name
            );
            if !d.message.is_empty() {
                let _ = writeln!(s, "        {}", d.message);
            }
            if let Some(why) = d.excused {
                let _ = writeln!(s, "        excused: {why}");
            }
        }
        s
    }

    /// Fails when the candidate passes fewer specs than the reference, or
    /// does not pass a spec that the reference passes.
    pub fn check(&self) -> Result<()> {
        let (r, c) = (self.reference, self.candidate);
        let regressions = self.regressions();
        if c.passed() + self.excused() < r.passed() || !regressions.is_empty() {
            let names: Vec<&str> = regressions.iter().map(|d| d.name.as_str()).collect();
            bail!(
                "{} passes {} specs, {} passes {}; {} passes {} specs that {} does not: {}",
                c.handler,
                c.passed(),
                r.handler,
                r.passed(),
                r.handler,
                regressions.len(),
                c.handler,
                names.join("; ")
            );
        }
        Ok(())
    }
}

/// Where the comparison of two handlers on one instance is kept.
pub fn summary_path(instance: &str, candidate: &str) -> PathBuf {
    log_dir().join(format!("{instance}-critest-compare-{candidate}.txt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(handler: &str, specs: &[(&str, &str)]) -> Report {
        Report {
            version: "1.7".into(),
            handler: handler.into(),
            specs: specs
                .iter()
                .map(|(n, s)| Spec {
                    name: n.to_string(),
                    state: s.to_string(),
                    message: if *s == "failed" {
                        format!("{n} broke\nmore")
                    } else {
                        String::new()
                    },
                    seconds: 0.1,
                })
                .collect(),
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn parses_ginkgo_json() {
        let json = r#"[{"SpecReports":[
            {"LeafNodeType":"BeforeSuite","LeafNodeText":"","State":"passed","RunTime":1000},
            {"ContainerHierarchyTexts":["[k8s.io] PodSandbox","runtime should support sysctls"],
             "LeafNodeType":"It","LeafNodeText":"should support safe sysctls","State":"failed",
             "RunTime":223389184,"Failure":{"Message":"failed to pull image: not found\nUnexpected error"}},
            {"ContainerHierarchyTexts":["[k8s.io] Image Manager"],"LeafNodeType":"It",
             "LeafNodeText":"public image with tag should be pulled and removed","State":"passed","RunTime":5}
        ]}]"#;
        let specs = parse(json).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            specs[0].name,
            "[k8s.io] PodSandbox runtime should support sysctls should support safe sysctls"
        );
        assert!(specs[0].failed());
        assert_eq!(specs[0].short_message(), "failed to pull image: not found");
        assert!(specs[1].passed());
        let gomega = Spec {
            name: "x".into(),
            state: "failed".into(),
            message: "Unexpected error:\n    <*status.Error | 0xc0>: \n    rpc error: code = Unknown desc = boom\n    {".into(),
            seconds: 0.0,
        };
        assert_eq!(
            gomega.short_message(),
            "rpc error: code = Unknown desc = boom"
        );
        let exec = Spec {
            message: "failed to execSync in container \"x\"\nUnexpected error:\n    <exec.CodeExitError>: \n    command 'cat /etc/resolv.conf' exited with 1: no such file\n".into(),
            ..gomega
        };
        assert_eq!(
            exec.short_message(),
            "failed to execSync in container \"x\" — command 'cat /etc/resolv.conf' exited with 1: no such file"
        );
    }

    #[test]
    fn only_containerd_21_rro_skips_are_excused() {
        let skip = |version: &str, message: &str| {
            let mut runc = report("runc", &[("rro", "passed"), ("a", "passed")]);
            let mut barge = report("barge", &[("rro", "skipped"), ("a", "passed")]);
            barge.specs[0].message = message.into();
            runc.version = version.into();
            barge.version = version.into();
            compare(&runc, &barge).check().map(|_| ())
        };
        let rro = "runtime does not implement recursive readonly mounts";
        assert!(skip("2.1", rro).is_ok());
        assert!(skip("2.3", rro).is_err(), "2.3 asks every runtime");
        assert!(skip("2.1", "some other reason").is_err());
        let mut runc = report("runc", &[("rro", "passed")]);
        let mut barge = report("barge", &[("rro", "skipped")]);
        runc.version = "2.1".into();
        barge.version = "2.1".into();
        barge.specs[0].message = rro.into();
        assert!(compare(&runc, &barge)
            .summary()
            .contains("excused: containerd 2.0/2.1"));
    }

    #[test]
    fn a_spec_passed_only_by_the_reference_fails_the_check() {
        let runc = report(
            "runc",
            &[
                ("a", "passed"),
                ("b", "passed"),
                ("c", "failed"),
                ("d", "skipped"),
            ],
        );
        let same = report(
            "barge",
            &[
                ("a", "passed"),
                ("b", "passed"),
                ("c", "failed"),
                ("d", "skipped"),
            ],
        );
        assert!(compare(&runc, &same).check().is_ok());
        let worse = report(
            "barge",
            &[
                ("a", "passed"),
                ("b", "failed"),
                ("c", "passed"),
                ("d", "skipped"),
            ],
        );
        let cmp = compare(&runc, &worse);
        assert_eq!(cmp.differences.len(), 2);
        assert_eq!(cmp.regressions().len(), 1);
        assert_eq!(cmp.regressions()[0].message, "b broke");
        let err = cmp.check().unwrap_err().to_string();
        assert!(err.contains(": b"), "{err}");
        assert!(cmp.summary().contains("runc passed / barge failed: b"));
    }
}
