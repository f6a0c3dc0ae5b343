//! Log URIs: a process's stdout and stderr given to a logging binary
//! (`ctr run --log-uri binary:///path/to/logger?key=value`, and
//! `binary-v2://`) or appended to a file (`file://`). Each check runs under
//! runc-v2 (the reference) and under barge where both can, and both must
//! give the same result.
//!
//! The logger is a shell script the cases write into the pass's work dir:
//! it records what it got under `logs/<CONTAINER_ID>/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::cmd::poll;
use crate::ctr::{CtrCtx, Run};
use crate::ctr_cases::{must_fail, CtrCase};
use crate::sys;

/// Every log case, in order.
pub fn cases() -> Vec<CtrCase> {
    type Case = (&'static str, fn(&CtrCtx) -> Result<()>);
    let cases: [Case; 6] = [
        ("log-binary", binary),
        ("log-binary-exec", binary_exec),
        ("log-binary-detached", binary_detached),
        ("log-file", file),
        ("log-binary-missing", binary_missing),
        ("log-binary-failures", binary_failures),
    ];
    CtrCase::list(cases)
}

/// The logger: fd 3 and fd 4 go to files, its arguments and environment
/// (but the shell's PWD) are noted, a byte on fd 5 says it is ready (which
/// `binary://` and `binary-v2://` both take), and `done` is written once
/// both streams have ended. SIGTERM (runc-v2 sends it as it closes the
/// pipes) does not cut that short.
const LOGGER: &str = r#"#!/bin/sh
trap '' TERM
dir=@LOGS@/$CONTAINER_ID
mkdir -p "$dir"
echo $$ > "$dir/pid"
for a in "$@"; do echo "$a"; done > "$dir/args"
env | grep -v '^PWD=' | sort > "$dir/env"
cat <&3 > "$dir/stdout" 5>&- &
cat <&4 > "$dir/stderr" 5>&- &
printf x >&5
exec 5>&-
wait
echo done > "$dir/done"
"#;

/// What the logger recorded for one process.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    /// Its arguments, two by two (runc-v2 passes the query's pairs in a
    /// random order, so they are sorted).
    args: Vec<(String, String)>,
    env: String,
    stdout: String,
    stderr: String,
}

/// The pass's logger script and where it records.
struct Logger {
    script: PathBuf,
    logs: PathBuf,
}

impl Logger {
    fn new(ctx: &CtrCtx) -> Result<Logger> {
        let logs = ctx.work.join("logs");
        let script = ctx.work.join("logger.sh");
        let body = LOGGER.replace("@LOGS@", &logs.display().to_string());
        if std::fs::read_to_string(&script).ok().as_deref() != Some(body.as_str()) {
            std::fs::write(&script, body)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(Logger { script, logs })
    }

    /// `<scheme>://<script>?<query>`.
    fn uri(&self, scheme: &str, query: &str) -> String {
        format!("{scheme}://{}?{query}", self.script.display())
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.logs.join(id)
    }

    /// Waits until the logger of `id` has seen both streams end and
    /// exited, then answers what it recorded (and removes it).
    fn record(&self, id: &str) -> Result<Record> {
        let dir = self.dir(id);
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let pid: u32 = poll(
            &format!("the logger of {id} to start"),
            Duration::from_secs(5),
            || Ok(read("pid").trim().parse().ok()),
        )?;
        poll(
            &format!("the logger of {id} (pid {pid}) to finish"),
            Duration::from_secs(15),
            || Ok((read("done") == "done\n" && !sys::alive(pid)).then_some(())),
        )?;
        let args: Vec<String> = read("args").lines().map(String::from).collect();
        let mut args: Vec<(String, String)> = args
            .chunks(2)
            .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
            .collect();
        args.sort();
        let record = Record {
            args,
            env: read("env"),
            stdout: read("stdout"),
            stderr: read("stderr"),
        };
        let _ = std::fs::remove_dir_all(&dir);
        Ok(record)
    }
}

/// The env a logger of `id` must see: containerd's two variables only.
fn logger_env(ctx: &CtrCtx, id: &str) -> String {
    format!("CONTAINER_ID={id}\nCONTAINER_NAMESPACE={}\n", ctx.ns)
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether this containerd's runc-v2 knows `binary-v2://` (2.2 and later).
fn runc_has_binary_v2(ctx: &CtrCtx) -> bool {
    let mut v = ctx
        .cd
        .version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (2, 2)
}

/// A `ctr run --rm` of `id` under barge, or under runc-v2.
fn side<'c>(ctx: &'c CtrCtx, id: &str, runc: bool) -> Run<'c> {
    let run = ctx.run(id).rm();
    if runc {
        run.runc()
    } else {
        run
    }
}

fn label(runc: bool) -> &'static str {
    if runc {
        "runc-v2 (reference)"
    } else {
        "barge"
    }
}

fn binary(ctx: &CtrCtx) -> Result<()> {
    let logger = Logger::new(ctx)?;
    let args = ["sh", "-c", "echo out; echo err >&2; echo out2; exit 3"];
    for scheme in ["binary", "binary-v2"] {
        for runc in [true, false] {
            if runc && scheme == "binary-v2" && !runc_has_binary_v2(ctx) {
                continue;
            }
            let who = format!("{scheme}://, {}", label(runc));
            let id = ctx.id(&format!("{scheme}{}", if runc { "-runc" } else { "" }));
            // Every pair of the query is two arguments, `env.` ones too
            // (containerd's main branch would make that one a variable).
            let uri = logger.uri(scheme, "tag=hello+world%21&flag&env.MODE=test");
            let out = side(ctx, &id, runc)
                .flags(["--log-uri", uri.as_str()])
                .args(args)
                .run()?;
            ensure!(
                out.code() == 3 && out.stdout.is_empty(),
                "{who}: expected exit 3 and nothing on ctr's stdout, got {}",
                out.describe()
            );
            let record = logger.record(&id).context(who.clone())?;
            let expected = Record {
                args: pairs(&[("env.MODE", "test"), ("flag", ""), ("tag", "hello world!")]),
                env: logger_env(ctx, &id),
                stdout: "out\nout2\n".into(),
                stderr: "err\n".into(),
            };
            ensure!(record == expected, "{who}: the logger got {record:?}");
        }
    }
    Ok(())
}

fn binary_exec(ctx: &CtrCtx) -> Result<()> {
    let logger = Logger::new(ctx)?;
    for runc in [true, false] {
        let who = label(runc);
        let id = ctx.id(if runc { "runc" } else { "" });
        let run = if runc {
            ctx.run(&id).runc()
        } else {
            ctx.run(&id)
        };
        ctx.start_sleeper(run, &id)?;
        let exec_id = ctx.id(if runc { "exec-runc" } else { "exec" });
        let uri = logger.uri("binary", "tag=exec");
        let out = ctx
            .ctr()
            .args([
                "tasks",
                "exec",
                "--exec-id",
                &exec_id,
                "--log-uri",
                &uri,
                &id,
            ])
            .args(["sh", "-c", "echo exec-out; echo exec-err >&2; exit 5"])
            .timeout(Duration::from_secs(30))
            .run()?;
        let record = logger.record(&exec_id).context(who);
        ctx.kill_and_remove(&id)?;
        ensure!(
            out.code() == 5 && out.stdout.is_empty(),
            "{who}: expected exit 5 and nothing on ctr's stdout, got {}",
            out.describe()
        );
        // The logger's CONTAINER_ID is the exec's id, as runc-v2 gives it.
        let expected = Record {
            args: pairs(&[("tag", "exec")]),
            env: logger_env(ctx, &exec_id),
            stdout: "exec-out\n".into(),
            stderr: "exec-err\n".into(),
        };
        let record = record?;
        ensure!(record == expected, "{who}: the logger got {record:?}");
    }
    Ok(())
}

/// A container that exits and is not deleted: barge closes its ends of
/// the logger's pipes as it publishes the exit, so the logger finishes
/// then, not after its SIGTERM (5 s later). runc-v2 holds them until
/// Delete, so there is no reference here.
fn binary_detached(ctx: &CtrCtx) -> Result<()> {
    let logger = Logger::new(ctx)?;
    let id = ctx.id("");
    let uri = logger.uri("binary", "tag=detached");
    ctx.run(&id)
        .detach()
        .flags(["--log-uri", uri.as_str()])
        .args(["sh", "-c", "echo bye"])
        .ok()?;
    let began = std::time::Instant::now();
    let record = logger.record(&id);
    let took = began.elapsed();
    ctx.wait_status(&id, "STOPPED")?;
    ctx.kill_and_remove(&id)?;
    let record = record?;
    ensure!(record.stdout == "bye\n", "the logger got {record:?}");
    ensure!(
        took < Duration::from_secs(4),
        "the logger took {took:?} to finish after its container exited"
    );
    Ok(())
}

fn file(ctx: &CtrCtx) -> Result<()> {
    for runc in [true, false] {
        let who = label(runc);
        let tag = if runc { "runc" } else { "barge" };
        let log = ctx.work.join(format!("{}-{tag}/out.log", ctx.id("")));
        let _ = std::fs::remove_file(&log);
        let uri = format!("file://{}", log.display());
        // Two runs into the same file: the second one appends.
        for (n, script) in [(1, "echo one"), (2, "echo two; echo err >&2")] {
            let id = ctx.id(&format!("{tag}-{n}"));
            let out = side(ctx, &id, runc)
                .flags(["--log-uri", uri.as_str()])
                .args(["sh", "-c", script])
                .run()?;
            ensure!(
                out.success() && out.stdout.is_empty(),
                "{who}, run {n}: {}",
                out.describe()
            );
        }
        // runc-v2 copies into the file on its own goroutines, which may
        // still be writing when `ctr run --rm` returns: give it a moment.
        let complete = |text: &str| text.lines().count() >= 3;
        let _ = crate::cmd::poll(
            "the log file to be complete",
            Duration::from_secs(3),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                Ok(complete(&text).then_some(()))
            },
        );
        let text = std::fs::read_to_string(&log).with_context(|| format!("{who}: read log"))?;
        let _ = std::fs::remove_dir_all(log.parent().unwrap_or(Path::new("/nonexistent")));
        // stdout and stderr of the second run may come in either order
        // (runc-v2 copies each on its own).
        let mut lines: Vec<&str> = text.lines().collect();
        let first = lines.first().copied();
        lines.sort();
        // runc-v2 (containerd 1.7's) now and then drops the stderr line of a
        // container that ends at once, in full-suite runs: the reference is
        // held to stdout only; barge to both.
        let reference_lost_stderr = runc && lines == ["one", "two"];
        if reference_lost_stderr {
            eprintln!("    note: runc-v2's file log lost the stderr line: {text:?}");
        }
        ensure!(
            first == Some("one") && (lines == ["err", "one", "two"] || reference_lost_stderr),
            "{who}: the log file holds {text:?}"
        );
    }
    Ok(())
}

fn binary_missing(ctx: &CtrCtx) -> Result<()> {
    let uri = "binary:///nonexistent/barge-logger?tag=x";
    for runc in [true, false] {
        let id = ctx.id(if runc { "runc" } else { "" });
        let out = side(ctx, &id, runc)
            .flags(["--log-uri", uri])
            .args(["echo", "hello"])
            .run()?;
        let needles: &[&str] = if runc {
            &[]
        } else {
            &["logging binary /nonexistent/barge-logger", "No such file"]
        };
        must_fail(out, needles).context(label(runc))?;
    }
    Ok(())
}

/// Loggers that can't start fail the container's creation and leave
/// nothing in a shim that serves another container: no process, no
/// descriptor. A logger that works leaves nothing either once its
/// container is gone.
fn binary_failures(ctx: &CtrCtx) -> Result<()> {
    let logger = Logger::new(ctx)?;
    let group = ctx.group("grp");
    let annotation = format!("io.containerd.runc.v2.group={group}");
    let grouped = |id: &str| ctx.run(id).flags(["--annotation", annotation.as_str()]);
    let sleeper = ctx.id("sleeper");
    ctx.start_sleeper(grouped(&sleeper), &sleeper)?;
    let result = (|| {
        let shims = ctx.shims();
        ensure!(shims.len() == 1, "expected one shim, found {}", shims.len());
        let shim = shims[0].pid;
        // The shim's descriptors and children (zombies too).
        let seen = || -> Result<(usize, Vec<u32>)> {
            let mut kids: Vec<u32> = sys::processes()
                .into_iter()
                .filter(|p| p.ppid == shim)
                .map(|p| p.pid)
                .collect();
            kids.sort();
            Ok((sys::fd_count(shim)?, kids))
        };
        let as_before = |before: &(usize, Vec<u32>), after: &str| -> Result<()> {
            let mut now = (0, Vec::new());
            poll(
                "the shim's descriptors and children to be as before",
                Duration::from_secs(10),
                || {
                    now = seen()?;
                    Ok((now == *before).then_some(()))
                },
            )
            .with_context(|| format!("after {after}: the shim had {before:?}, now {now:?}"))
        };
        // One run first: whatever a shim opens once, for good, is open by then.
        let warm = ctx.id("warm-up");
        let out = grouped(&warm).rm().args(["true"]).run()?;
        ensure!(out.success(), "warm-up: {}", out.describe());
        let before = seen()?;
        let bad: [(&str, String, &[&str]); 3] = [
            (
                "exits at once",
                "binary:///bin/sh?-c=exit+3".into(),
                &["logging binary /bin/sh exited with status 3 before it was ready"],
            ),
            (
                "never ready",
                "binary:///bin/sh?-c=exec+sleep+60".into(),
                &["logging binary /bin/sh was not ready within 10s"],
            ),
            (
                "no byte for binary-v2",
                "binary-v2:///bin/sh?-c=exit+0".into(),
                &["binary-v2:// asks for (it exited with status 0)"],
            ),
        ];
        for (what, uri, needles) in &bad {
            let id = ctx.id(&what.replace(' ', "-"));
            let out = grouped(&id)
                .rm()
                .flags(["--log-uri", uri.as_str()])
                .args(["echo", "hello"])
                .run()?;
            must_fail(out, needles).context(*what)?;
            as_before(&before, what)?;
        }
        // A logger that works: gone, and its pipes closed, with its container.
        let good = ctx.id("good");
        let out = grouped(&good)
            .rm()
            .flags(["--log-uri", logger.uri("binary", "tag=ok").as_str()])
            .args(["echo", "fine"])
            .run()?;
        ensure!(out.success(), "a working logger: {}", out.describe());
        let record = logger.record(&good)?;
        ensure!(record.stdout == "fine\n", "the logger got {record:?}");
        as_before(&before, "a working logger")
    })();
    ctx.kill_and_remove(&sleeper)?;
    result
}
