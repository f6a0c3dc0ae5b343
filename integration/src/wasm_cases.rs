//! The Wasm cases: guests built from our WAT sources (examples/wasm) run
//! through barge under ctr and Docker. The executor is never named: barge
//! picks wasm from the entrypoint or the image's layers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::cmd::{poll, Output};
use crate::ctr::{CtrCtx, Executor, RuntimeOptions};
use crate::ctr_cases::{expect, must_fail, CtrCase};
use crate::docker_cases::{DockerCase, DockerCtx};
use crate::sys;

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

fn image_tar(name: &str) -> Result<PathBuf> {
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
fn hello<'a>(ctx: &'a CtrCtx<'a>, id: &str) -> Result<crate::ctr::Run<'a>> {
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
    type Case = (&'static str, fn(&CtrCtx) -> Result<()>);
    let cases: [Case; 22] = [
        ("module-hello", module_hello),
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
    v.extend(cases.into_iter().map(|(name, f)| CtrCase {
        name,
        run: Box::new(f),
    }));
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
    ]
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
