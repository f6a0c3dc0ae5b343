//! The Wasm cases: guests built from our WAT sources (examples/wasm) run
//! through barge under ctr and Docker. The executor is never named: barge
//! picks wasm from the entrypoint or the image's layers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tonic::Code;

use crate::cmd::{poll, Cmd, Output};
use crate::containerd_api::{expect_code, Stdio};
use crate::ctr::{CtrCtx, Executor, RuntimeOptions, TaskRow};
use crate::ctr_cases::{expect, must_fail, CtrCase};
use crate::docker_cases::{DockerCase, DockerCtx};
use crate::exec_cases::{api_run, exec_row, Side};
use crate::pty::Pty;
use crate::sys;
use crate::tty_cases::{Cleanup, START, STEP};

pub const HELLO: &str = "docker.io/barge/wasm-hello:latest";
pub const LAYER: &str = "docker.io/barge/wasm-layer:latest";
pub const COMPONENT_LAYER: &str = "docker.io/barge/wasm-component-layer:latest";
pub const ARTIFACT: &str = "docker.io/barge/wasm-artifact:latest";
pub const ARTIFACT_COMPONENT: &str = "docker.io/barge/wasm-artifact-component:latest";
/// Images with Wasm layers: name, tar, what the guest prints.
const LAYER_IMAGES: [(&str, &str, &str); 2] = [
    (LAYER, "wasm-layer.tar", "hello from wasm\n"),
    (
        COMPONENT_LAYER,
        "wasm-component-layer.tar",
        "hello from a component\n",
    ),
];
/// CNCF Wasm artifacts, likewise.
const ARTIFACT_IMAGES: [(&str, &str, &str); 2] = [
    (ARTIFACT, "wasm-artifact.tar", "hello from wasm\n"),
    (
        ARTIFACT_COMPONENT,
        "wasm-artifact-component.tar",
        "hello from a component\n",
    ),
];
/// The platform Docker users name: `docker run --platform wasi/wasm32`.
const PLATFORM: &str = "wasi/wasm32";
/// The exit code of a trap (see crates/wasm/src/run.rs).
const TRAP_EXIT: i32 = 134;
const STOP_TIMEOUT_EXIT: i32 = 124;

/// Where `make wasm-fixtures` put the fixtures and images:
/// `$BARGE_IT_WASM`, or `<workspace>/target/wasm`.
pub fn wasm_dir() -> PathBuf {
    std::env::var_os("BARGE_IT_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm"))
}

/// An image tar that `make wasm-fixtures` built, checked to exist.
pub fn image_tar(name: &str) -> Result<PathBuf> {
    let p = wasm_dir().join("images").join(name);
    ensure!(
        p.is_file(),
        "{} is missing: run `make wasm-fixtures` (or set BARGE_IT_WASM)",
        p.display()
    );
    Ok(p)
}

fn fixture(name: &str) -> Result<Vec<u8>> {
    let p = wasm_dir().join("fixtures").join(name);
    std::fs::read(&p).with_context(|| format!("read {} (run `make wasm-fixtures`)", p.display()))
}

/// Imports the Wasm images into the pass's namespace once.
fn import(ctx: &CtrCtx, image: &str, tar: &str) -> Result<()> {
    let have = ctx.ctr().args(["image", "ls", "-q"]).ok()?;
    if have.stdout.lines().any(|l| l == image) {
        return Ok(());
    }
    // Not unpacked here: containerd 1.6.20 can't unpack Wasm layers, and
    // `ctr run` unpacks what it needs.
    ctx.ctr()
        .args(["image", "import", "--no-unpack"])
        .arg(image_tar(tar)?)
        .timeout(Duration::from_secs(60))
        .ok()?;
    Ok(())
}

/// A `ctr run --rm` of the hello image under barge, with no options but
/// the pass's private cache.
pub(crate) fn hello<'a>(ctx: &'a CtrCtx<'a>, id: &str) -> Result<crate::ctr::Run<'a>> {
    import(ctx, HELLO, "wasm-hello.tar")?;
    Ok(ctx.run(id).image(HELLO))
}

/// Runs `args` in the hello image and checks stdout and the exit code.
fn guest(ctx: &CtrCtx, flags: &[&str], args: &[&str], stdout: &str, code: i32) -> Result<Output> {
    let id = ctx.id("");
    let out = hello(ctx, &id)?
        .rm()
        .flags(flags.iter().copied())
        .args(args.iter().copied())
        .run()?;
    expect(&out, stdout, code)?;
    Ok(out)
}

fn stderr_has(out: &Output, needle: &str) -> Result<()> {
    ensure!(
        out.stderr.contains(needle),
        "stderr lacks {needle:?}: {}",
        out.describe()
    );
    Ok(())
}

/// One run of the hello image: ctr flags, args, stdout, exit code.
type GuestRun = (
    &'static [&'static str],
    &'static [&'static str],
    &'static str,
    i32,
);

/// The cases that are only runs of the hello image, each checked for its
/// stdout and exit code.
const SIMPLE: &[(&str, &[GuestRun])] = &[
    (
        "wat-entrypoint",
        &[(&[], &["/hello.wat"], "hello from wasm\n", 0)],
    ),
    (
        "args",
        &[(
            &[],
            &["/hello.wasm", "args", "two words", "x"],
            "/hello.wasm\nargs\ntwo words\nx\n",
            0,
        )],
    ),
    (
        "exit-code",
        &[
            (&[], &["/hello.wasm", "exit", "7"], "", 7),
            (&[], &["/hello.wasm", "exit", "0"], "", 0),
        ],
    ),
    (
        "component",
        &[
            (&[], &["/component.wasm"], "hello from a component\n", 0),
            (
                &["--env", "GREETING=hi"],
                &["/component.wasm", "args", "a b"],
                "/component.wasm\nargs\na b\n",
                0,
            ),
        ],
    ),
    // WASI 0.2's `wasi:cli/exit` has only success and failure (the code is
    // unstable there), so a component's `exit(5)` reaches the host as 1.
    (
        "component-exit-code",
        &[
            (&[], &["/component.wasm", "exit", "5"], "", 1),
            (&[], &["/component.wasm", "exit", "0"], "", 0),
        ],
    ),
    (
        "preopen-default-rootfs",
        &[
            (
                &[],
                &["/hello.wasm", "read", "/data/greeting.txt"],
                "hi from a file\n",
                0,
            ),
            (&[], &["/hello.wasm", "preopens"], "/\n", 0),
            (
                &[],
                &["/hello.wasm", "write", "/data/out.txt", "written"],
                "wrote /data/out.txt\n",
                0,
            ),
        ],
    ),
    // 64 MiB: 100 more pages (6.4 MiB) fit, 2000 (125 MiB) do not; without
    // a limit the same growth succeeds.
    (
        "memory-limit",
        &[
            (
                &["--memory-limit", "67108864"],
                &["/hello.wasm", "grow", "100"],
                "grew\n",
                0,
            ),
            (
                &["--memory-limit", "67108864"],
                &["/hello.wasm", "grow", "2000"],
                "grow failed\n",
                1,
            ),
            (&[], &["/hello.wasm", "grow", "2000"], "grew\n", 0),
        ],
    ),
];

/// A ctr case of its own: name and body.
type Case = (&'static str, fn(&CtrCtx) -> Result<()>);

pub fn ctr_cases() -> Vec<CtrCase> {
    let mut v: Vec<CtrCase> = SIMPLE
        .iter()
        .map(|(name, runs)| CtrCase {
            name,
            run: Box::new(move |ctx: &CtrCtx| {
                for (flags, args, stdout, code) in *runs {
                    guest(ctx, flags, args, stdout, *code)?;
                }
                Ok(())
            }),
        })
        .collect();
    let cases: [Case; 23] = [
        ("module-hello", module_hello),
        ("pause-resume-stats", pause_resume_stats),
        ("env-to-guest-only", env_to_guest_only),
        ("trap", trap),
        ("stdio", stdio),
        ("preopen-narrowed-read-only", preopen_narrowed),
        ("preopen-none", preopen_none),
        ("preopen-runtime-option", preopen_option),
        ("fuel-limit", fuel_limit),
        ("wall-clock-limit", wall_clock_limit),
        ("sigterm-stops-loop", sigterm_stops_loop),
        ("sigkill", sigkill),
        ("http-component", http_component),
        ("pod-native-and-wasm", pod_native_and_wasm),
        ("cache-hit-and-corrupt-entry", cache),
        ("cache-concurrent-starts", cache_concurrent),
        ("wasm-layer-images", layer_images),
        ("wasm-artifact-images", artifact_images),
        ("unreadable-layer", unreadable_layer),
        ("invalid-wasm", invalid_wasm),
        ("missing-start", missing_start),
        ("unsupported-import", unsupported_import),
        ("nothing-can-run-it", nothing_can_run_it),
    ];
    v.extend(
        cases
            .into_iter()
            .chain(exec_cases())
            .map(|(name, f)| CtrCase {
                name,
                run: Box::new(f),
            }),
    );
    v.extend(crate::security_cases::wasm_ctr_cases());
    v
}

fn module_hello(ctx: &CtrCtx) -> Result<()> {
    // The image's entrypoint is /hello.wasm: no args on the command line.
    guest(ctx, &[], &[], "hello from wasm\n", 0)?;
    let chosen = format!("creating container {} with executor wasm", ctx.id(""));
    ensure!(
        ctx.case_shim_log().iter().any(|l| l.contains(&chosen)),
        "no {chosen:?} in the shim's log"
    );
    Ok(())
}

/// The spec's env reaches the guest, and neither the shim nor the init's
/// own process environment holds it.
fn env_to_guest_only(ctx: &CtrCtx) -> Result<()> {
    const SECRET: &str = "BARGE_SECRET=only-for-the-guest";
    guest(
        ctx,
        &["--env", SECRET],
        &["/hello.wasm", "env", "BARGE_SECRET"],
        "only-for-the-guest\n",
        0,
    )?;
    let id = ctx.id("loop");
    hello(ctx, &id)?
        .detach()
        .flags(["--env", SECRET])
        .args(["/hello.wasm", "loop"])
        .ok()?;
    let task = ctx.wait_status(&id, "RUNNING")?;
    let shim = sys::process(task.pid).context("init gone")?.ppid;
    for (who, pid) in [("the shim", shim), ("the container's init", task.pid)] {
        let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
        ensure!(
            !String::from_utf8_lossy(&environ).contains("only-for-the-guest"),
            "{who} (pid {pid}) has the guest's env in its own environment"
        );
    }
    ctx.kill_and_remove(&id)?;
    Ok(())
}

fn trap(ctx: &CtrCtx) -> Result<()> {
    let out = guest(ctx, &[], &["/hello.wasm", "trap"], "", TRAP_EXIT)?;
    stderr_has(&out, "unreachable")
}

fn stdio(ctx: &CtrCtx) -> Result<()> {
    let out = guest(ctx, &[], &["/hello.wasm", "stderr"], "", 0)?;
    stderr_has(&out, "to stderr")?;
    let id = ctx.id("cat");
    let data = "line one\nline two\n";
    let out = hello(ctx, &id)?
        .rm()
        .args(["/hello.wasm", "cat"])
        .stdin(data)
        .timeout(Duration::from_secs(15))
        .run()?;
    expect(&out, data, 0)
}

fn preopens_annotation(value: &str) -> String {
    format!("io.barge.wasm.preopens={value}")
}

fn preopen_narrowed(ctx: &CtrCtx) -> Result<()> {
    let a = preopens_annotation("/data:ro");
    let flags = ["--annotation", a.as_str()];
    guest(ctx, &flags, &["/hello.wasm", "preopens"], "/data\n", 0)?;
    guest(
        ctx,
        &flags,
        &["/hello.wasm", "read", "greeting.txt"],
        "hi from a file\n",
        0,
    )?;
    // Read-only: writing is refused.
    let out = guest(
        ctx,
        &flags,
        &["/hello.wasm", "write", "new.txt", "x"],
        "",
        1,
    )?;
    stderr_has(&out, "write new.txt: errno")?;
    // Narrowed: nothing outside /data can be reached.
    let out = guest(ctx, &flags, &["/hello.wasm", "read", "../hello.wat"], "", 1)?;
    stderr_has(&out, "read ../hello.wat: errno")
}

fn preopen_none(ctx: &CtrCtx) -> Result<()> {
    let a = preopens_annotation("");
    let out = guest(
        ctx,
        &["--annotation", a.as_str()],
        &["/hello.wasm", "read", "/data/greeting.txt"],
        "",
        1,
    )?;
    stderr_has(&out, "errno")
}

fn preopen_option(ctx: &CtrCtx) -> Result<()> {
    let toml = ctx.toml(
        "preopens.toml",
        &format!(
            "{}preopens = [\"/data:ro\"]\n",
            ctx.executor.toml(&ctx.work)
        ),
    )?;
    let id = ctx.id("");
    let out = hello(ctx, &id)?
        .rm()
        .options(RuntimeOptions::Path(toml.clone()))
        .args(["/hello.wasm", "write", "x.txt", "x"])
        .run()?;
    expect(&out, "", 1)?;
    stderr_has(&out, "write x.txt: errno")?;
    // A bad preopen is refused at create, naming it.
    let bad = ctx.toml(
        "bad-preopens.toml",
        &format!("{}preopens = [\"data\"]\n", ctx.executor.toml(&ctx.work)),
    )?;
    let id = ctx.id("bad");
    let out = hello(ctx, &id)?
        .rm()
        .options(RuntimeOptions::Path(bad))
        .run()?;
    must_fail(out, &["preopen", "\"data\"", "absolute"])
}

fn fuel_limit(ctx: &CtrCtx) -> Result<()> {
    let out = guest(
        ctx,
        &["--annotation", "io.barge.wasm.fuel=1000000"],
        &["/hello.wasm", "loop"],
        "",
        TRAP_EXIT,
    )?;
    stderr_has(&out, "ran out of fuel")?;
    // Enough fuel for a short program.
    guest(
        ctx,
        &["--annotation", "io.barge.wasm.fuel=1000000"],
        &[],
        "hello from wasm\n",
        0,
    )
    .map(drop)
}

fn wall_clock_limit(ctx: &CtrCtx) -> Result<()> {
    let started = Instant::now();
    let out = guest(
        ctx,
        &["--annotation", "io.barge.wasm.timeout=500ms"],
        &["/hello.wasm", "loop"],
        "",
        STOP_TIMEOUT_EXIT,
    )?;
    stderr_has(&out, "wall-clock limit")?;
    ensure!(
        started.elapsed() < Duration::from_secs(20),
        "the 500 ms limit took {:?}",
        started.elapsed()
    );
    Ok(())
}

fn sigterm_stops_loop(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let attached = hello(ctx, &id)?
        .rm()
        .args(["/hello.wasm", "loop"])
        .timeout(Duration::from_secs(40))
        .cmd()
        .spawn()?;
    ctx.wait_status(&id, "RUNNING")?;
    let sent = Instant::now();
    ctx.ctr().args(["tasks", "kill", &id]).ok()?;
    let out = attached.wait()?;
    ensure!(
        out.code() == 143,
        "expected exit 143 after SIGTERM, got {}",
        out.describe()
    );
    // Well before any stop timeout; the guest never calls the host.
    ensure!(
        sent.elapsed() < Duration::from_secs(5),
        "the looping guest took {:?} to stop",
        sent.elapsed()
    );
    Ok(())
}

fn sigkill(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    hello(ctx, &id)?
        .detach()
        .args(["/hello.wasm", "loop"])
        .ok()?;
    ctx.wait_status(&id, "RUNNING")?;
    ctx.ctr()
        .args(["tasks", "kill", "-s", "SIGKILL", &id])
        .ok()?;
    ctx.wait_status(&id, "STOPPED")?;
    let out = ctx.ctr().args(["tasks", "rm", &id]).ok()?;
    ctx.ctr().args(["containers", "rm", &id]).ok()?;
    ensure!(
        out.stdout.contains("137") || out.stderr.contains("137"),
        "`ctr task rm` after SIGKILL: {}",
        out.describe()
    );
    Ok(())
}

/// A looping guest under Pause uses no CPU (its cgroup's cpuacct.usage
/// stands still), goes on after Resume, and Stats reports its cgroup.
fn pause_resume_stats(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    hello(ctx, &id)?
        .detach()
        .args(["/hello.wasm", "loop"])
        .ok()?;
    let task = ctx.wait_status(&id, "RUNNING")?;
    let cgroup = sys::cgroup_of(task.pid, "cpuacct")?;
    let usage = || -> Result<u64> {
        let file = format!("/sys/fs/cgroup/cpuacct{cgroup}/cpuacct.usage");
        let text = std::fs::read_to_string(&file).with_context(|| format!("read {file}"))?;
        Ok(text.trim().parse()?)
    };
    ctx.ctr().args(["tasks", "pause", &id]).ok()?;
    ctx.wait_status(&id, "PAUSED")?;
    let frozen = usage()?;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(usage()? == frozen, "the paused guest used CPU");
    let metrics = ctx.ctr().args(["tasks", "metrics", &id]).ok()?;
    ensure!(
        metrics.stdout.contains("cpuacct.usage") && metrics.stdout.contains("pids.current"),
        "`ctr task metrics`: {}",
        metrics.describe()
    );
    ctx.ctr().args(["tasks", "resume", &id]).ok()?;
    ctx.wait_status(&id, "RUNNING")?;
    poll("the guest to run again", Duration::from_secs(5), || {
        Ok((usage()? > frozen).then_some(()))
    })?;
    ctx.kill_and_remove(&id)?;
    Ok(())
}

/// A free TCP port on loopback (there is a small race; the guest binds it
/// soon after).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// One HTTP/1.1 GET; returns the status line and the body.
pub fn http_get(port: u16, path: &str) -> Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no header end in {response:?}"))?;
    let status = head.lines().next().unwrap_or_default().to_string();
    // The body may come chunked.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn http_component(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let port = free_port()?;
    let annotation = format!("io.barge.wasm.http-port={port}");
    hello(ctx, &id)?
        .detach()
        .flags(["--net-host", "--annotation", annotation.as_str()])
        .args(["/http.wasm"])
        .ok()?;
    ctx.wait_status(&id, "RUNNING")?;
    let (status, body) = poll(
        "the HTTP component to answer",
        Duration::from_secs(15),
        || Ok(http_get(port, "/hi").ok()),
    )?;
    ensure!(status.contains("200"), "status {status:?}, body {body:?}");
    ensure!(
        body.contains("hello from wasi:http"),
        "unexpected body {body:?}"
    );
    // Every request gets a fresh instance; a second one works too.
    let (status, _) = http_get(port, "/again")?;
    ensure!(status.contains("200"), "second request: {status:?}");
    ctx.kill_and_remove(&id)?;
    Ok(())
}

/// One shim (the same group) runs a native busybox container and a Wasm
/// guest side by side.
fn pod_native_and_wasm(ctx: &CtrCtx) -> Result<()> {
    let group = ctx.group("pod");
    let annotation = format!("io.containerd.runc.v2.group={group}");
    let native = ctx.id("native");
    let wasm = ctx.id("wasm");
    let n = ctx.start_sleeper(
        ctx.run(&native)
            .flags(["--annotation", annotation.as_str()]),
        &native,
    )?;
    hello(ctx, &wasm)?
        .detach()
        .flags(["--annotation", annotation.as_str()])
        .args(["/hello.wasm", "loop"])
        .ok()?;
    let w = ctx.wait_status(&wasm, "RUNNING")?;
    let shims = ctx.shims();
    ensure!(
        shims.len() == 1,
        "expected one shim for the pod, found {}",
        shims.len()
    );
    for (id, t) in [(&native, &n), (&wasm, &w)] {
        let p = sys::process(t.pid).context("init gone")?;
        ensure!(
            p.ppid == shims[0].pid,
            "init of {id} has parent {}, not the shim {}",
            p.ppid,
            shims[0].pid
        );
    }
    let log = ctx.case_shim_log();
    for (id, executor) in [(&native, "native"), (&wasm, "wasm")] {
        let line = format!("creating container {id} with executor {executor}");
        ensure!(
            log.iter().any(|l| l.contains(&line)),
            "no {line:?} in the log"
        );
    }
    ctx.kill_and_remove(&wasm)?;
    ctx.kill_and_remove(&native)?;
    Ok(())
}

/// An empty compile cache of the case's own, and the runtime options that
/// point at it.
fn private_cache(ctx: &CtrCtx, name: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = ctx.work.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let toml = ctx.toml(
        &format!("{name}.toml"),
        &format!("[wasm]\ncache_dir = \"{}\"\n", dir.display()),
    )?;
    Ok((dir, toml))
}

/// The second start of a module hits the cache; a corrupted entry is
/// detected, removed and rebuilt.
fn cache(ctx: &CtrCtx) -> Result<()> {
    let (dir, toml) = private_cache(ctx, "case-cache")?;
    let run = |tag: &str| -> Result<()> {
        let id = ctx.id(tag);
        let out = hello(ctx, &id)?
            .rm()
            .options(RuntimeOptions::Path(toml.clone()))
            .run()?;
        expect(&out, "hello from wasm\n", 0).with_context(|| format!("run {tag}"))
    };
    let result = (|| {
        run("first")?;
        run("second")?;
        let entries: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect();
        ensure!(entries.len() == 1, "cache holds {entries:?}");
        // Flip one byte in the middle of the compiled code.
        let mut bytes = std::fs::read(&entries[0])?;
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&entries[0], &bytes)?;
        run("third")?;
        ensure!(entries[0].exists(), "the corrupt entry was not rebuilt");
        Ok(())
    })();
    let log = ctx.case_shim_log();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    let find = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    ensure!(
        find(": cache miss for") == 2
            && find(": cache hit ") == 1
            && find(") is corrupt (") == 0
            && find(".cwasm is corrupt (checksum mismatch)") == 1,
        "expected miss, hit, corrupt + miss in the shim's log, got:\n{}",
        log.iter()
            .filter(|l| l.contains("cache"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// Starts of one module racing on an empty cache all succeed, and leave one
/// whole entry that the next start loads.
fn cache_concurrent(ctx: &CtrCtx) -> Result<()> {
    let (dir, toml) = private_cache(ctx, "case-cache-race")?;
    let result = (|| {
        let mut running = Vec::new();
        for n in 0..4 {
            let id = ctx.id(&format!("racer{n}"));
            running.push(
                hello(ctx, &id)?
                    .rm()
                    .options(RuntimeOptions::Path(toml.clone()))
                    .args(["/component.wasm"])
                    .cmd()
                    .spawn()?,
            );
        }
        for r in running {
            expect(&r.wait()?, "hello from a component\n", 0)?;
        }
        let names: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        ensure!(
            names.len() == 1 && names[0].ends_with(".cwasm"),
            "the cache holds {names:?}, expected one entry"
        );
        let id = ctx.id("after");
        let out = hello(ctx, &id)?
            .rm()
            .options(RuntimeOptions::Path(toml.clone()))
            .args(["/component.wasm"])
            .run()?;
        expect(&out, "hello from a component\n", 0)
    })();
    let hit = format!("wasm {}: cache hit ", ctx.id("after"));
    let log = ctx.case_shim_log();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    ensure!(
        log.iter().any(|l| l.contains(&hit)),
        "no {hit:?} in the shim's log"
    );
    Ok(())
}

/// Images whose Wasm is in layers, read from containerd's content store.
/// containerd before 1.6.25 and 1.7.7 refuses to unpack them (the config
/// lists no diff_ids for non-tar layers), before barge is involved.
fn layer_images(ctx: &CtrCtx) -> Result<()> {
    let _cache = DefaultCache::snapshot();
    for (image, tar, stdout) in LAYER_IMAGES {
        import(ctx, image, tar)?;
        let id = ctx.id(tar.trim_end_matches(".tar"));
        let out = ctx.run(&id).image(image).rm().run()?;
        if ctx.cd.version == "1.6" {
            must_fail(out, &["mismatched image rootfs and manifest layers"])?;
        } else {
            expect(&out, stdout, 0).with_context(|| image.to_string())?;
        }
    }
    Ok(())
}

/// The CNCF Wasm artifact: `ctr run` refuses its config media type on
/// every version, so the container is made through containerd's API with
/// the image's name, as a CRI client does, then started with ctr.
fn artifact_images(ctx: &CtrCtx) -> Result<()> {
    let _cache = DefaultCache::snapshot();
    for (image, tar, stdout) in ARTIFACT_IMAGES {
        import(ctx, image, tar)?;
        let id = ctx.id(tar.trim_end_matches(".tar"));
        let spec = ctx.spec(&id, &["app.wasm"], |s| {
            s["root"] = serde_json::json!({ "path": "rootfs" });
        })?;
        // The image has no filesystem layers: an empty snapshot, as CRI
        // would prepare, is the rootfs. It is made after the record, which
        // keeps it from containerd's garbage collector.
        let created = crate::containerd_api::create_container(
            &ctx.cd.address(),
            &ctx.ns,
            &crate::containerd_api::NewContainer {
                id: &id,
                image,
                runtime: crate::containerd::RUNTIME,
                spec: &std::fs::read(&spec)?,
                snapshot: Some(("overlayfs", &id)),
                runtime_options: None,
            },
        );
        let out = created.and_then(|()| {
            ctx.ctr().args(["snapshots", "prepare", &id]).ok()?;
            ctx.ctr()
                .args(["task", "start", &id])
                .timeout(Duration::from_secs(30))
                .run()
        });
        // Removes the snapshot too.
        let _ = ctx.ctr().args(["containers", "rm", &id]).run();
        expect(&out?, stdout, 0).with_context(|| image.to_string())?;
    }
    Ok(())
}

fn unreadable_layer(ctx: &CtrCtx) -> Result<()> {
    import(ctx, LAYER, "wasm-layer.tar")?;
    let wasm = fixture("hello.wasm")?;
    let digest = format!("sha256:{}", sha256_hex(&wasm));
    let result = (|| {
        ctx.ctr().args(["content", "rm", &digest]).ok()?;
        let id = ctx.id("");
        let out = ctx.run(&id).image(LAYER).rm().run()?;
        if ctx.cd.version == "1.6" {
            // containerd 1.6.20 refuses the image before the shim runs.
            must_fail(out, &["mismatched image rootfs and manifest layers"])
        } else {
            must_fail(out, &[&digest])
        }
    })();
    // Put the image back whole for later cases.
    ctx.ctr().args(["image", "rm", LAYER]).ok()?;
    import(ctx, LAYER, "wasm-layer.tar")?;
    result
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn invalid_wasm(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let out = hello(ctx, &id)?.rm().args(["/invalid.wasm"]).run()?;
    must_fail(out, &["/invalid.wasm", "not valid WebAssembly"])
}

fn missing_start(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let out = hello(ctx, &id)?.rm().args(["/no-start.wasm"]).run()?;
    must_fail(out, &["/no-start.wasm", "_start"])
}

fn unsupported_import(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let out = hello(ctx, &id)?.rm().args(["/bad-import.wasm"]).run()?;
    must_fail(
        out,
        &[
            "/bad-import.wasm",
            "does_not_exist",
            "wasi_snapshot_preview1",
        ],
    )
}

/// A file that is neither a Linux program nor Wasm: the error names the
/// path, what is there, and what each executor runs.
fn nothing_can_run_it(ctx: &CtrCtx) -> Result<()> {
    let id = ctx.id("");
    let out = hello(ctx, &id)?.rm().args(["/data/greeting.txt"]).run()?;
    must_fail(
        out,
        &[
            "/data/greeting.txt",
            "a file starting with",
            "ELF",
            "WebAssembly",
        ],
    )
}

// ---- Docker ------------------------------------------------------------

pub fn docker_cases() -> Vec<DockerCase> {
    vec![
        DockerCase {
            name: "wasm-hello",
            only: Some(Executor::Wasm),
            run: docker_hello,
        },
        DockerCase {
            name: "wasm-stop-looping-guest",
            only: Some(Executor::Wasm),
            run: docker_stop,
        },
        DockerCase {
            name: "wasm-exec",
            only: Some(Executor::Wasm),
            run: docker_exec,
        },
        DockerCase {
            name: "wasm-update-memory",
            only: Some(Executor::Wasm),
            run: docker_update_memory,
        },
    ]
}

/// `docker run -d` of the idle HTTP component with `flags`: its id, its
/// init's pid, and the cleanup that removes it.
fn start_http_guest(ctx: &DockerCtx, flags: &[&str]) -> Result<(String, u32, Cleanup)> {
    let out = ctx
        .run()
        .args(["-d", "--platform", PLATFORM])
        .args(flags)
        .args(["--entrypoint", "/http.wasm", "barge/wasm-hello:latest"])
        .ok()?;
    let id = out.stdout.trim().to_string();
    ensure!(id.len() == 64, "no container id: {}", out.describe());
    ctx.d.note_id(&id);
    let mut cleanup = Cleanup::new();
    cleanup.push(ctx.docker().args(["rm", "-f", &id]));
    let init = poll("the guest to run", Duration::from_secs(20), || {
        let s = ctx.state(&id)?;
        Ok((s.running && s.pid > 0).then_some(s.pid))
    })?;
    Ok((id, init, cleanup))
}

/// `docker update -m` of a running Wasm container: the cgroup takes the
/// new limit, and so does every linear memory grown after it, in an exec
/// as in the running init's next instances.
fn docker_update_memory(ctx: &DockerCtx) -> Result<()> {
    docker_image(ctx)?;
    let _cache = DefaultCache::snapshot();
    let (id, init, cleanup) = start_http_guest(ctx, &["-m", "64m", "--memory-swap", "64m"])?;
    let grow = |pages: &str| {
        ctx.docker()
            .args(["exec", &id, "/hello.wasm", "grow", pages])
            .timeout(Duration::from_secs(30))
            .run()
    };
    // 2000 pages are 125 MiB: too much under 64 MiB.
    expect(&grow("2000")?, "grow failed\n", 1).context("under -m 64m")?;
    ctx.docker()
        .args(["update", "-m", "256m", "--memory-swap", "256m", &id])
        .ok()?;
    let cgroup = sys::cgroup_of(init, "memory")?;
    let file = format!("/sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes");
    let limit = std::fs::read_to_string(&file).with_context(|| format!("read {file}"))?;
    ensure!(limit.trim() == "268435456", "{file} is {}", limit.trim());
    expect(&grow("2000")?, "grew\n", 0).context("after docker update -m 256m")?;
    ctx.docker()
        .args(["update", "-m", "64m", "--memory-swap", "64m", &id])
        .ok()?;
    expect(&grow("2000")?, "grow failed\n", 1).context("after docker update -m 64m")?;
    ctx.docker().args(["rm", "-f", &id]).ok()?;
    cleanup.done();
    Ok(())
}

/// `docker load`s the hello image into a dockerd with the image store.
fn docker_image(ctx: &DockerCtx) -> Result<()> {
    let have = ctx
        .docker()
        .args(["image", "inspect", "barge/wasm-hello:latest"])
        .run()?;
    if !have.success() {
        ctx.docker()
            .args(["load", "-i"])
            .arg(image_tar("wasm-hello.tar")?)
            .timeout(Duration::from_secs(60))
            .ok()?;
    }
    Ok(())
}

/// The compile cache entries that a case adds under the default cache dir
/// are removed again; entries that were there before stay.
struct DefaultCache(Vec<PathBuf>);

impl DefaultCache {
    const DIR: &'static str = "/var/lib/barge/wasm-cache";

    fn snapshot() -> DefaultCache {
        DefaultCache(Self::entries())
    }

    fn entries() -> Vec<PathBuf> {
        std::fs::read_dir(Self::DIR)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }
}

impl Drop for DefaultCache {
    fn drop(&mut self) {
        for p in Self::entries() {
            if !self.0.contains(&p) {
                let _ = std::fs::remove_file(p);
            }
        }
        if self.0.is_empty() {
            let _ = std::fs::remove_dir(Self::DIR);
            let _ = std::fs::remove_dir("/var/lib/barge");
        }
    }
}

fn docker_hello(ctx: &DockerCtx) -> Result<()> {
    docker_image(ctx)?;
    let _cache = DefaultCache::snapshot();
    let out = ctx
        .run()
        .args(["--rm", "--platform", PLATFORM, "barge/wasm-hello:latest"])
        .run()?;
    expect(&out, "hello from wasm\n", 0)?;
    let out = ctx
        .run()
        .args([
            "--rm",
            "--platform",
            PLATFORM,
            "-e",
            "GREETING=from docker",
            "--entrypoint",
            "/component.wasm",
            "barge/wasm-hello:latest",
            "args",
            "x",
        ])
        .run()?;
    expect(&out, "/component.wasm\nargs\nx\n", 0)?;
    let out = ctx
        .run()
        .args([
            "--rm",
            "--platform",
            PLATFORM,
            "barge/wasm-hello:latest",
            "exit",
            "3",
        ])
        .run()?;
    expect(&out, "", 3)
}

fn docker_stop(ctx: &DockerCtx) -> Result<()> {
    docker_image(ctx)?;
    let _cache = DefaultCache::snapshot();
    let out = ctx
        .run()
        .args([
            "-d",
            "--platform",
            PLATFORM,
            "barge/wasm-hello:latest",
            "loop",
        ])
        .ok()?;
    let id = out.stdout.trim().to_string();
    ensure!(id.len() == 64, "no container id: {}", out.describe());
    ctx.d.note_id(&id);
    poll("the guest to run", Duration::from_secs(20), || {
        let s = ctx.state(&id)?;
        Ok((s.running && s.pid > 0).then_some(()))
    })?;
    let started = Instant::now();
    ctx.docker()
        .args(["stop", "-t", "10", &id])
        .timeout(Duration::from_secs(30))
        .ok()?;
    let took = started.elapsed();
    let state = ctx.state(&id)?;
    ctx.docker().args(["rm", &id]).ok()?;
    ensure!(
        took < Duration::from_secs(5),
        "docker stop took {took:?}; the stop timeout was 10 s"
    );
    ensure!(
        state.exit_code == 143,
        "exit code {} after docker stop, expected 143",
        state.exit_code
    );
    Ok(())
}

// ---- Exec into Wasm containers -------------------------------------------
//
// An exec runs what its args[0] names, by the rule that chose the
// container's executor: Wasm under wasmtime with the container's sandbox
// settings and the exec's own args and env, an ELF binary or script as a
// native process. runc-v2 runs no Wasm, so exact values are checked; the
// terminal case takes its line ends and echo from runc-v2.

/// The exec cases, for the wasm pass's `ctr_cases`.
fn exec_cases() -> [Case; 11] {
    [
        ("wasm-exec-module", exec_module),
        ("wasm-exec-api-env", exec_api_env),
        ("wasm-exec-preopens", exec_preopens),
        ("wasm-exec-memory-limit", exec_memory_limit),
        ("wasm-exec-fuel-http-init", exec_fuel_http_init),
        ("wasm-exec-tty", exec_tty),
        ("wasm-exec-not-runnable", exec_not_runnable),
        ("wasm-exec-ps-kill", exec_ps_kill),
        ("wasm-exec-native", exec_native),
        ("wasm-exec-native-bind-mount", exec_native_bind_mount),
        ("wasm-exe-read-only", exe_read_only),
    ]
}

/// The init of an exec case's container, unless it needs another: the
/// HTTP component, which idles in its own network namespace until a
/// request comes (a looping guest would keep a core busy).
const IDLE_INIT: &[&str] = &["/http.wasm"];

/// A running Wasm container of the hello image, to exec into. It is
/// removed on drop unless [`Target::remove`] got to remove it.
struct Target<'c> {
    side: Side<'c>,
    init: TaskRow,
    cleanup: Cleanup,
}

impl<'c> Target<'c> {
    /// `ctr run -d` of the hello image with `flags` and `args`; answers
    /// once the task runs.
    fn start(ctx: &'c CtrCtx<'c>, tag: &str, flags: &[&str], args: &[&str]) -> Result<Self> {
        Self::start_with(ctx, tag, RuntimeOptions::Executor, flags, args)
    }

    fn start_with(
        ctx: &'c CtrCtx<'c>,
        tag: &str,
        options: RuntimeOptions,
        flags: &[&str],
        args: &[&str],
    ) -> Result<Self> {
        let id = ctx.id(tag);
        let mut cleanup = Cleanup::new();
        cleanup.ctr(ctx, &id);
        hello(ctx, &id)?
            .detach()
            .options(options)
            .flags(flags.iter().copied())
            .args(args.iter().copied())
            .ok()?;
        let init = ctx.wait_status(&id, "RUNNING")?;
        let side = Side {
            ctx,
            id,
            runc: false,
        };
        Ok(Target {
            side,
            init,
            cleanup,
        })
    }

    fn ctx(&self) -> &'c CtrCtx<'c> {
        self.side.ctx
    }

    /// `ctr task exec` of `args`, with a new exec id made from `tag`.
    fn exec(&self, tag: &str, flags: &[&str], args: &[&str]) -> Cmd {
        self.side.exec(&self.ctx().id(tag), flags, args)
    }

    /// Runs an exec to its end and checks its stdout and exit code.
    fn expect(&self, tag: &str, args: &[&str], stdout: &str, code: i32) -> Result<Output> {
        let out = self.exec(tag, &[], args).run()?;
        expect(&out, stdout, code).with_context(|| args.join(" "))?;
        Ok(out)
    }

    /// The init still runs, as the same process.
    fn still_running(&self) -> Result<()> {
        let now = self
            .ctx()
            .task(&self.side.id)?
            .context("the task is gone")?;
        ensure!(
            now.status == "RUNNING" && now.pid == self.init.pid && sys::alive(now.pid),
            "the container's init (pid {}) no longer runs: {now:?}",
            self.init.pid
        );
        Ok(())
    }

    /// Kills and removes the container, checking each step.
    fn remove(self) -> Result<()> {
        self.ctx().kill_and_remove(&self.side.id)?;
        let _ = std::fs::remove_dir_all(self.side.fifo_dir());
        self.cleanup.done();
        Ok(())
    }
}

/// Fails unless the command's stderr is exactly `want`.
fn stderr_is(out: &Output, want: &str) -> Result<()> {
    ensure!(
        out.stderr == want,
        "expected stderr {want:?}: {}",
        out.describe()
    );
    Ok(())
}

/// Execs of Wasm modules, a component and WAT text into a running Wasm
/// container: stdout, stderr, stdin, exit codes, a trap, and the
/// container's env (ctr's exec takes the container's process).
fn exec_module(ctx: &CtrCtx) -> Result<()> {
    let t = Target::start(ctx, "", &["--env", "NAME=from-container"], IDLE_INIT)?;
    let plain: [(&str, &[&str], &str, i32); 8] = [
        (
            "args",
            &["/hello.wasm", "args", "a", "b c"],
            "/hello.wasm\nargs\na\nb c\n",
            0,
        ),
        ("hello", &["/hello.wasm"], "hello from wasm\n", 0),
        ("exit", &["/hello.wasm", "exit", "7"], "", 7),
        ("exit-0", &["/hello.wasm", "exit", "0"], "", 0),
        (
            "env",
            &["/hello.wasm", "env", "NAME"],
            "from-container\n",
            0,
        ),
        (
            "wat",
            &["/hello.wat", "args", "w"],
            "/hello.wat\nargs\nw\n",
            0,
        ),
        (
            "component",
            &["/component.wasm", "args", "x"],
            "/component.wasm\nargs\nx\n",
            0,
        ),
        // No memory limit: the growth that a 64 MiB limit refuses works.
        ("grow", &["/hello.wasm", "grow", "2000"], "grew\n", 0),
    ];
    for (tag, args, stdout, code) in plain {
        let out = t.expect(tag, args, stdout, code)?;
        stderr_is(&out, "").with_context(|| args.join(" "))?;
    }
    let out = t.expect("stderr", &["/hello.wasm", "stderr"], "", 0)?;
    stderr_has(&out, "to stderr")?;
    let out = t.expect("trap", &["/hello.wasm", "trap"], "", TRAP_EXIT)?;
    stderr_has(&out, "unreachable")?;
    let data = "line one\nline two\n";
    let out = t
        .exec("cat", &[], &["/hello.wasm", "cat"])
        .stdin(data)
        .run()?;
    expect(&out, data, 0).context("cat")?;
    t.still_running()?;
    t.remove()
}

/// An exec made through containerd's API gets its own env, not the
/// container's, and only the guest sees it.
fn exec_api_env(ctx: &CtrCtx) -> Result<()> {
    const SECRET: &str = "exec-secret-value";
    let t = Target::start(
        ctx,
        "",
        &["--env", "NAME=container", "--env", "OTHER=container"],
        IDLE_INIT,
    )?;
    let client = t.side.client()?;
    let with_env = |args: &[&str], env: &[&str]| -> Result<serde_json::Value> {
        let mut spec = t.side.process_spec(args)?;
        spec["env"] = serde_json::json!(env);
        Ok(spec)
    };
    let runs: [(&str, &[&str], &str, u32); 3] = [
        ("name", &["/hello.wasm", "env", "NAME"], "exec\n", 0),
        // The exec's env replaces the container's.
        ("other", &["/hello.wasm", "env", "OTHER"], "unset\n", 0),
        ("exit", &["/hello.wasm", "exit", "9"], "", 9),
    ];
    for (tag, args, stdout, code) in runs {
        let spec = with_env(args, &["NAME=exec"])?;
        api_run(&t.side, &client, &ctx.id(tag), &spec)?
            .expect(code, stdout, Some(""))
            .with_context(|| args.join(" "))?;
    }
    // A guest that runs on: its env is not in its process's environment.
    let exec_id = ctx.id("secret");
    let spec = with_env(&["/hello.wasm", "loop"], &[&format!("SECRET={SECRET}")])?;
    client.exec(&t.side.id, &exec_id, &spec, &Stdio::default())?;
    let pid = client.start(&t.side.id, &exec_id)?;
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .with_context(|| format!("the exec's process {pid}"))?;
    client.kill(&t.side.id, &exec_id, libc::SIGKILL)?;
    let code = client.wait(&t.side.id, &exec_id)?;
    client.delete_process(&t.side.id, &exec_id)?;
    ensure!(
        !String::from_utf8_lossy(&environ).contains(SECRET),
        "the exec's process (pid {pid}) has the guest's env in its own environment"
    );
    ensure!(code == 137, "the killed exec exited {code}");
    t.still_running()?;
    t.remove()
}

/// An exec's preopens are the container's: the annotation, else the
/// runtime option, else the whole rootfs.
fn exec_preopens(ctx: &CtrCtx) -> Result<()> {
    const READ: &[&str] = &["/hello.wasm", "read", "/data/greeting.txt"];
    const PREOPENS: &[&str] = &["/hello.wasm", "preopens"];
    let greeting = "hi from a file\n";
    // The default: the whole rootfs, read-write.
    let t = Target::start(ctx, "default", &[], IDLE_INIT)?;
    t.expect("default-read", READ, greeting, 0)?;
    t.expect("default-preopens", PREOPENS, "/\n", 0)?;
    t.expect(
        "default-write",
        &["/hello.wasm", "write", "/data/out.txt", "x"],
        "wrote /data/out.txt\n",
        0,
    )?;
    t.remove()?;
    // None: nothing can be opened.
    let none = preopens_annotation("");
    let t = Target::start(ctx, "none", &["--annotation", &none], IDLE_INIT)?;
    t.expect("none-preopens", PREOPENS, "", 0)?;
    let out = t.expect("none-read", READ, "", 1)?;
    stderr_has(&out, "read /data/greeting.txt: errno")?;
    t.remove()?;
    // Narrowed to /data, read-only.
    let narrowed = preopens_annotation("/data:ro");
    let t = Target::start(ctx, "narrowed", &["--annotation", &narrowed], IDLE_INIT)?;
    t.expect("narrowed-preopens", PREOPENS, "/data\n", 0)?;
    t.expect(
        "narrowed-read",
        &["/hello.wasm", "read", "greeting.txt"],
        greeting,
        0,
    )?;
    let out = t.expect(
        "narrowed-escape",
        &["/hello.wasm", "read", "../hello.wat"],
        "",
        1,
    )?;
    stderr_has(&out, "read ../hello.wat: errno")?;
    let out = t.expect(
        "narrowed-write",
        &["/hello.wasm", "write", "new.txt", "x"],
        "",
        1,
    )?;
    stderr_has(&out, "write new.txt: errno")?;
    t.remove()?;
    // The runtime option, when no annotation says otherwise.
    let toml = ctx.toml(
        "exec-preopens.toml",
        &format!(
            "{}preopens = [\"/data:ro\"]\n",
            ctx.executor.toml(&ctx.work)
        ),
    )?;
    let t = Target::start_with(ctx, "option", RuntimeOptions::Path(toml), &[], IDLE_INIT)?;
    t.expect("option-preopens", PREOPENS, "/data\n", 0)?;
    t.remove()
}

/// The spec's memory limit bounds an exec's linear memory too.
fn exec_memory_limit(ctx: &CtrCtx) -> Result<()> {
    let t = Target::start(ctx, "", &["--memory-limit", "67108864"], IDLE_INIT)?;
    t.expect("small", &["/hello.wasm", "grow", "100"], "grew\n", 0)?;
    t.expect(
        "large",
        &["/hello.wasm", "grow", "2000"],
        "grow failed\n",
        1,
    )?;
    t.still_running()?;
    t.remove()
}

/// The fuel annotation holds for execs: a looping exec runs out and traps,
/// a short one has enough. The init, the HTTP component, burns fuel only
/// per request and serves on.
fn exec_fuel_http_init(ctx: &CtrCtx) -> Result<()> {
    let port = free_port()?;
    let http = format!("io.barge.wasm.http-port={port}");
    let flags = [
        "--net-host",
        "--annotation",
        "io.barge.wasm.fuel=1000000",
        "--annotation",
        &http,
    ];
    let t = Target::start(ctx, "", &flags, &["/http.wasm"])?;
    let get = || -> Result<()> {
        let (status, body) = poll(
            "the HTTP component to answer",
            Duration::from_secs(15),
            || Ok(http_get(port, "/hi").ok()),
        )?;
        ensure!(
            status.contains("200") && body.contains("hello from wasi:http"),
            "status {status:?}, body {body:?}"
        );
        Ok(())
    };
    get().context("before the execs")?;
    t.expect(
        "short",
        &["/hello.wasm", "args", "f"],
        "/hello.wasm\nargs\nf\n",
        0,
    )?;
    let started = Instant::now();
    let out = t.expect("loop", &["/hello.wasm", "loop"], "", TRAP_EXIT)?;
    stderr_has(&out, "ran out of fuel")?;
    ensure!(
        started.elapsed() < Duration::from_secs(20),
        "the looping exec took {:?} to run out of fuel",
        started.elapsed()
    );
    get().context("after the execs")?;
    t.still_running()?;
    t.remove()
}

/// What typing a line shows on a tty exec of `cat`.
const TYPED: &str = "typed line";

/// Types [`TYPED`] and Enter into a tty exec of `cat` once it runs (`ctr
/// task ps` shows it), waits until the pty shows the line twice (the
/// container's tty echoes it, `cat` copies it), then types ^D, the end of
/// file at the start of a line. Answers what the pty showed before the ^D.
fn drive_cat(pty: Pty, side: &Side, init: u32) -> Result<String> {
    poll("the tty exec to run", STEP, || {
        Ok((side.exec_pids(init)?.len() == 1).then_some(()))
    })?;
    pty.send(&format!("{TYPED}\r"))?;
    poll("the typed line to be echoed and copied", STEP, || {
        Ok((pty.text().matches(TYPED).count() >= 2).then_some(()))
    })
    .with_context(|| format!("the pty showed {:?}", pty.text()))?;
    let shown = pty.text();
    pty.send("\x04")?;
    let out = pty.wait()?;
    ensure!(out.code() == 0, "cat after ^D: {}", out.describe());
    Ok(shown)
}

/// How long a tty exec may take.
const TTY_TIMEOUT: Duration = Duration::from_secs(40);

/// Runs a `ctr task exec -t` on a pty to its end. ctr sets the exec's
/// window size once it has started, and when the process has already
/// ended it logs the failure on the same pty ("resize pty ... cannot resize
/// a stopped container", seen under runc-v2): such lines of ctr's own are
/// left out of the output.
fn tty_run(cmd: Cmd) -> Result<Output> {
    let mut out = Pty::spawn(cmd.timeout(TTY_TIMEOUT), START)?.wait()?;
    out.stdout = out
        .stdout
        .split_inclusive('\n')
        .filter(|l| !l.contains("resize pty"))
        .collect();
    Ok(out)
}

/// What a tty exec shows under runc-v2 (the reference), in a busybox
/// container: the line end that the container's tty and ctr make of what
/// `echo` prints, and what [`drive_cat`] shows.
fn tty_reference(ctx: &CtrCtx) -> Result<(String, String)> {
    let id = ctx.id("runc");
    let mut cleanup = Cleanup::new();
    cleanup.ctr(ctx, &id);
    let init = ctx.start_sleeper(ctx.run(&id).runc(), &id)?;
    let side = Side {
        ctx,
        id,
        runc: true,
    };
    let out = tty_run(side.exec(&ctx.id("runc-echo"), &["-t"], &["echo", "line"]))?;
    let end = out
        .stdout
        .strip_prefix("line")
        .and_then(|e| e.find('\n').map(|n| e[..=n].to_string()))
        .filter(|_| out.code() == 0)
        .with_context(|| format!("`echo line` on a tty: {}", out.describe()))?;
    let cat = side.exec(&ctx.id("runc-cat"), &["-t"], &["cat"]);
    let typed = drive_cat(
        Pty::spawn(cat.timeout(TTY_TIMEOUT), START)?,
        &side,
        init.pid,
    )?;
    ctx.kill_and_remove(&side.id)?;
    cleanup.done();
    Ok((end, typed))
}

/// Execs with a terminal (`ctr task exec -t`, on a real pty): the guest's
/// stdio is the tty, so its line ends arrive as a tty makes them (as under
/// runc-v2), what is typed reaches it (and is echoed), and the exit code
/// comes back.
fn exec_tty(ctx: &CtrCtx) -> Result<()> {
    let (end, typed) = tty_reference(ctx).context("runc-v2 (reference)")?;
    ensure!(
        end.ends_with("\r\n"),
        "runc-v2 ends a tty's line with {end:?}"
    );
    let t = Target::start(ctx, "", &[], IDLE_INIT)?;
    let lines = |lines: &[&str]| {
        lines
            .iter()
            .map(|l| format!("{l}{end}"))
            .collect::<String>()
    };
    let runs: [(&str, &[&str], String, i32); 3] = [
        (
            "args",
            &["/hello.wasm", "args", "a", "b"],
            lines(&["/hello.wasm", "args", "a", "b"]),
            0,
        ),
        (
            "component",
            &["/component.wasm"],
            lines(&["hello from a component"]),
            0,
        ),
        ("exit", &["/hello.wasm", "exit", "7"], String::new(), 7),
    ];
    for (tag, args, shown, code) in runs {
        let out = tty_run(t.exec(tag, &["-t"], args))?;
        expect(&out, &shown, code).with_context(|| format!("-t {}", args.join(" ")))?;
    }
    // One stream: stderr is on the tty too.
    let out = tty_run(t.exec("trap", &["-t"], &["/hello.wasm", "trap"]))?;
    ensure!(
        out.code() == TRAP_EXIT && out.stdout.contains("unreachable") && out.stdout.ends_with(&end),
        "a trap on a tty: {}",
        out.describe()
    );
    let cat = t.exec("cat", &["-t"], &["/hello.wasm", "cat"]);
    let shown = drive_cat(
        Pty::spawn(cat.timeout(TTY_TIMEOUT), START)?,
        &t.side,
        t.init.pid,
    )?;
    ensure!(
        shown == typed,
        "typing into cat on a tty showed {shown:?}, under runc-v2 {typed:?}"
    );
    t.still_running()?;
    t.remove()
}

/// An exec of a file that is neither a Linux program nor Wasm, or of none,
/// fails at Start naming it; the container runs on, and the exec can be
/// deleted.
fn exec_not_runnable(ctx: &CtrCtx) -> Result<()> {
    let t = Target::start(ctx, "", &[], IDLE_INIT)?;
    let out = t.exec("text", &[], &["/data/greeting.txt"]).run()?;
    must_fail(out, &["/data/greeting.txt", "a file starting with"])?;
    let out = t.exec("missing", &[], &["/no/such.wasm"]).run()?;
    must_fail(out, &["/no/such.wasm"])?;
    // Through the API: Start fails, DeleteProcess succeeds.
    let client = t.side.client()?;
    let exec_id = ctx.id("api");
    let spec = t.side.process_spec(&["/data/greeting.txt"])?;
    client.exec(&t.side.id, &exec_id, &spec, &Stdio::default())?;
    match client.start(&t.side.id, &exec_id) {
        Ok(pid) => bail!("Start of /data/greeting.txt succeeded (pid {pid})"),
        Err(s) => ensure!(
            s.message().contains("/data/greeting.txt"),
            "Start's error does not name /data/greeting.txt: {:?}: {}",
            s.code(),
            s.message()
        ),
    }
    client.delete_process(&t.side.id, &exec_id)?;
    expect_code(
        "Get of the deleted exec",
        client.get(&t.side.id, &exec_id),
        Code::NotFound,
    )?;
    let mut left = Vec::new();
    poll("only the init to be left", Duration::from_secs(2), || {
        left = t.side.exec_pids(t.init.pid)?;
        Ok(left.is_empty().then_some(()))
    })
    .with_context(|| format!("processes besides the init: {left:?}"))?;
    t.still_running()?;
    t.expect(
        "after",
        &["/hello.wasm", "args", "ok"],
        "/hello.wasm\nargs\nok\n",
        0,
    )?;
    t.remove()
}

/// The namespaces a process is in, and its cgroups.
fn placement(pid: u32) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for ns in ["pid", "mnt", "net", "ipc", "uts", "cgroup"] {
        let link = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
            .with_context(|| format!("pid {pid}'s {ns} namespace"))?;
        v.push(link.display().to_string());
    }
    v.push(std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?);
    Ok(v)
}

/// `ctr task ps` lists the init and a running Wasm exec, which shows its
/// guest's args as its command line and is in the container's namespaces
/// and cgroup; SIGKILL ends it with 137, SIGTERM
/// (epoch interruption of a guest that never calls the host) with 143.
fn exec_ps_kill(ctx: &CtrCtx) -> Result<()> {
    let t = Target::start(ctx, "", &[], IDLE_INIT)?;
    for (signal, code) in [("SIGKILL", 137), ("SIGTERM", 143)] {
        let exec_id = ctx.id(&signal.to_lowercase());
        let attached = t
            .side
            .exec(&exec_id, &[], &["/hello.wasm", "loop"])
            .spawn()?;
        let rows = poll("the exec to show", STEP, || {
            let rows = t.side.ps()?;
            Ok((rows.len() == 2).then_some(rows))
        })
        .with_context(|| format!("`ctr task ps`: {:?}", t.side.ps()))?;
        let check = || -> Result<()> {
            let pid = exec_row(&rows, t.init.pid, &exec_id)?;
            let p = sys::process(pid).context("the exec's pid is not alive")?;
            ensure!(
                p.argv == ["/hello.wasm", "loop"],
                "the exec (pid {pid}) shows the command line {:?}",
                p.argv
            );
            let (init, exec) = (placement(t.init.pid)?, placement(pid)?);
            ensure!(
                init == exec,
                "the exec (pid {pid}) is in {exec:?}, the init in {init:?}"
            );
            Ok(())
        };
        check().with_context(|| format!("`ctr task ps` shows {rows:?}"))?;
        let sent = Instant::now();
        t.side.signal_exec(&exec_id, signal).ok()?;
        let out = attached.wait()?;
        ensure!(
            out.code() == code,
            "an exec killed with {signal}: expected exit {code}, got {}",
            out.describe()
        );
        ensure!(
            sent.elapsed() < Duration::from_secs(5),
            "the looping exec took {:?} to end after {signal}",
            sent.elapsed()
        );
        let left = t.side.exec_pids(t.init.pid)?;
        ensure!(
            left.is_empty(),
            "after {signal}, `ctr task ps` shows {left:?}"
        );
    }
    t.still_running()?;
    t.remove()
}

/// The script of the native exec cases: `#!<busybox> sh`.
fn native_script(busybox: &str) -> String {
    format!("#!{busybox} sh\necho script-in-wasm \"$@\"\nexit 3\n")
}

/// Runs ELF and script execs in `t`, whose busybox is at `busybox` and a
/// [`native_script`] at `script`: each runs as a native process in the
/// container's namespaces, with the container's env, and the container's
/// pid 1 is the Wasm init (named by its guest).
fn native_execs(t: &Target, busybox: &str, script: &str) -> Result<()> {
    let runs: [(&str, Vec<&str>, &str, &str, i32); 3] = [
        (
            "echo",
            vec![busybox, "echo", "native-in-wasm"],
            "native-in-wasm\n",
            "",
            0,
        ),
        (
            "sh",
            vec![busybox, "sh", "-c", "echo $FOO; echo err >&2; exit 9"],
            "bar\n",
            "err\n",
            9,
        ),
        (
            "script",
            vec![script, "a", "b"],
            "script-in-wasm a b\n",
            "",
            3,
        ),
    ];
    for (tag, args, stdout, stderr, code) in runs {
        let out = t.expect(tag, &args, stdout, code)?;
        stderr_is(&out, stderr).with_context(|| args.join(" "))?;
    }
    // The init shows its guest's args in the space of the shim's command
    // line, padded with NULs.
    let out = t
        .exec("pid1", &[], &[busybox, "cat", "/proc/1/cmdline"])
        .ok()?;
    ensure!(
        out.stdout.trim_end_matches('\0') == "/http.wasm",
        "pid 1 of the container is not the Wasm init: {}",
        out.describe()
    );
    t.still_running()
}

/// ELF binaries and #! scripts in a Wasm container's rootfs, exec'd into
/// it, run as native processes. They are copied into the running
/// container's rootfs (as `docker cp` would), so the image stays Wasm only.
fn exec_native(ctx: &CtrCtx) -> Result<()> {
    let t = Target::start(ctx, "", &["--env", "FOO=bar"], IDLE_INIT)?;
    let root = PathBuf::from(format!("/proc/{}/root", t.init.pid));
    std::fs::create_dir(root.join("native"))?;
    std::fs::copy("/bin/busybox", root.join("native/busybox"))?;
    let script = root.join("native/script.sh");
    std::fs::write(&script, native_script("/native/busybox"))?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    native_execs(&t, "/native/busybox", "/native/script.sh")?;
    t.remove()
}

/// Copies busybox into the container and runs the exe attacker of
/// [`crate::exe_cases`] against its pid 1, the Wasm init.
fn attack_init(t: &Target) -> Result<Output> {
    let root = PathBuf::from(format!("/proc/{}/root", t.init.pid));
    std::fs::create_dir(root.join("native"))?;
    std::fs::copy("/bin/busybox", root.join("native/busybox"))?;
    let attacker = crate::exe_cases::ATTACKER;
    t.exec(
        "attacker",
        &[],
        &["/native/busybox", "sh", "-c", attacker, "sh", "1"],
    )
    .ok()
}

/// The Wasm init runs the shim's image and never execs: it runs it from
/// the server's read-only clone, and is not dumpable, so a native exec in
/// its container can neither read its exe link nor open it; the exec's own
/// exe is its program. Nothing writes the shim's binary.
fn exe_read_only(ctx: &CtrCtx) -> Result<()> {
    use crate::exe_cases::{self, Binary};
    let shim = Binary::shim()?;
    let t = Target::start(ctx, "", &[], IDLE_INIT)?;
    ensure!(
        shim.runs_in(t.init.pid),
        "the Wasm init does not run the shim's image"
    );
    exe_cases::runs_read_only(t.init.pid)?;
    let out = attack_init(&t)?;
    exe_cases::writes_refused(&out.stdout, false)?;
    ensure!(
        out.stdout.contains("link: \n"),
        "the init's exe link is readable: {}",
        out.describe()
    );
    t.expect(
        "self",
        &["/native/busybox", "readlink", "/proc/self/exe"],
        "/native/busybox\n",
        0,
    )?;
    let pids = ctx.pids(&t.side.id)?;
    ensure!(
        exe_cases::shim_images_read_only(&shim, &pids)? >= 1,
        "no process of the container runs the shim's image: {pids:?}"
    );
    t.still_running()?;
    t.remove()?;
    // With CAP_SYS_PTRACE the exec may open the init's exe: it is the
    // read-only clone, and no open writes it, also through the descriptor.
    let t = Target::start(ctx, "ptrace", &["--cap-add", "CAP_SYS_PTRACE"], IDLE_INIT)?;
    let out = attack_init(&t)?;
    exe_cases::writes_refused(&out.stdout, true)?;
    // What it may also read, the init's environ, holds nothing of the
    // shim's (which has containerd's TTRPC_ADDRESS, and the host's).
    t.expect(
        "environ",
        &[
            "/native/busybox",
            "sh",
            "-c",
            "/native/busybox tr -d '\\0' </proc/1/environ | /native/busybox wc -c",
        ],
        "0\n",
        0,
    )?;
    ensure!(
        out.stdout.contains("link: /\n"),
        "the init's exe link shows a path: {}",
        out.describe()
    );
    t.remove()?;
    shim.unchanged()
}

/// The same, with busybox and the script bind-mounted in from the host
/// (`ctr run --mount`): the exec must be looked up where the container
/// sees it, behind the mounts.
fn exec_native_bind_mount(ctx: &CtrCtx) -> Result<()> {
    let script = ctx.work.join("wasm-exec-script.sh");
    std::fs::write(&script, native_script("/busybox"))?;
    let result = (|| {
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        let script_mount = format!(
            "type=bind,src={},dst=/script.sh,options=rbind:ro",
            script.display()
        );
        let flags = [
            "--mount",
            "type=bind,src=/bin/busybox,dst=/busybox,options=rbind:ro",
            "--mount",
            &script_mount,
            "--env",
            "FOO=bar",
        ];
        let t = Target::start(ctx, "", &flags, IDLE_INIT)?;
        native_execs(&t, "/busybox", "/script.sh")?;
        t.remove()
    })();
    let _ = std::fs::remove_file(&script);
    result
}

/// `docker exec` into a running Wasm container: a module's output, its exit
/// code, a trap, the container's env and `-e`, `-i` stdin; the container
/// runs on.
fn docker_exec(ctx: &DockerCtx) -> Result<()> {
    docker_image(ctx)?;
    let _cache = DefaultCache::snapshot();
    let (id, init, cleanup) = start_http_guest(ctx, &["-e", "NAME=from-container"])?;
    let exec = |flags: &[&str], args: &[&str]| {
        ctx.docker()
            .arg("exec")
            .args(flags)
            .arg(&id)
            .args(args)
            .timeout(Duration::from_secs(30))
    };
    let runs: [(&[&str], &[&str], &str, i32); 5] = [
        (
            &[],
            &["/hello.wasm", "args", "x"],
            "/hello.wasm\nargs\nx\n",
            0,
        ),
        (&[], &["/hello.wasm", "exit", "5"], "", 5),
        (&[], &["/hello.wasm", "env", "NAME"], "from-container\n", 0),
        (
            &["-e", "NAME=from-exec"],
            &["/hello.wasm", "env", "NAME"],
            "from-exec\n",
            0,
        ),
        (&[], &["/component.wasm"], "hello from a component\n", 0),
    ];
    for (flags, args, stdout, code) in runs {
        let out = exec(flags, args).run()?;
        expect(&out, stdout, code).with_context(|| args.join(" "))?;
    }
    let out = exec(&[], &["/hello.wasm", "trap"]).run()?;
    expect(&out, "", TRAP_EXIT)?;
    stderr_has(&out, "unreachable")?;
    let data = "line one\nline two\n";
    let out = exec(&["-i"], &["/hello.wasm", "cat"]).stdin(data).run()?;
    expect(&out, data, 0).context("docker exec -i cat")?;
    let state = ctx.state(&id)?;
    ensure!(
        state.running && state.pid == init,
        "the container's init (pid {init}) no longer runs: {state:?}"
    );
    ctx.docker().args(["rm", "-f", &id]).ok()?;
    cleanup.done();
    Ok(())
}
