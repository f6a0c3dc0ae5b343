//! Wasm: guests of the hello image (`docker.io/barge/wasm-hello`, built by
//! `make wasm-fixtures`) run by barge's Wasm executor, which barge picks
//! itself from the entrypoint (the options name no executor).
//!
//! - Lifecycle: `ctr run --rm` of the image (its entrypoint /hello.wasm
//!   prints "hello from wasm"), end to end, with the compile cache empty
//!   (cold: every run gets a fresh, empty `cache_dir`) and populated (warm),
//!   interleaved with `ctr run --rm busybox echo hello` through the other
//!   variants.
//! - Memory: n `/http.wasm` servers (a wasi:http component that waits in
//!   accept, `ctr run -d --net-host`, one port each) next to n busybox
//!   `sleep 1000` containers through the other variants: the RSS and PSS of
//!   the shims per container, as `memory.rs` samples them, and of the
//!   containers' inits.
//!
//! In every row the runc-v2, barge native and barge oci-binary columns hold
//! busybox figures and the barge wasm column the Wasm guest's, so that the
//! ratio is "Wasm under barge / busybox under runc-v2".

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use barge_integration::cmd::poll;
use barge_integration::containerd::{IMAGE, RUNTIME, SHIM_NAME};
use barge_integration::wasm_cases::{wasm_dir, HELLO};
use serde_json::{json, Value};

use super::memory::{new_shims, ShimMem, SETTLE};
use super::progress::check_stop;
use super::stats::{median, percentile};
use super::{Bench, Better, Outcome, Row, Variant};

/// The key (and report column) of the Wasm executor.
pub const KEY: &str = "barge-wasm";

/// The annotation that gives the wasi:http server its port.
const HTTP_PORT: &str = "io.barge.wasm.http-port";

/// What the busybox variants run in the lifecycle figures.
const ECHO: &[&str] = &["echo", "hello"];

/// How long a Wasm server may take to listen after `ctr run -d` returned.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Barge with its Wasm executor (options: only the compile cache).
pub fn variant(config: Option<PathBuf>) -> Variant {
    Variant {
        key: KEY,
        label: "barge wasm",
        runtime: RUNTIME,
        executor: Some("auto"),
        config,
        shim_name: SHIM_NAME,
    }
}

pub fn run(b: &Bench) -> Result<Outcome> {
    let work = WorkDir::create(&b.cd.dirs.lib.join("bench-wasm"))?;
    b.progress.update("wasm", "importing the hello image");
    import(b)?;
    let (mut rows, expected) = lifecycle(b, &work)?;
    rows.extend(memory(b, &work)?);
    // By now containerd has the shims' logs of every lifecycle run.
    let check = check_cache_log(b, &expected);
    if let Some(bad) = check["unexpected"].as_array().filter(|a| !a.is_empty()) {
        b.progress.note(&format!(
            "warning: wasm: runs that did not use the cache as their figure says: {bad:?}"
        ));
    }
    for r in &mut rows {
        if r.figure.contains("lifecycle median") {
            r.detail["cache_log_check"] = check.clone();
        }
    }
    Ok(Outcome::Rows(rows))
}

/// `ctr image import --no-unpack` of the hello image (`ctr run` unpacks
/// it: containerd 1.6.20 can't unpack Wasm layers, see wasm_cases.rs).
fn import(b: &Bench) -> Result<()> {
    let tar = wasm_dir().join("images/wasm-hello.tar");
    ensure!(
        tar.is_file(),
        "{} is missing: run `make wasm-fixtures` (or set BARGE_IT_WASM)",
        tar.display()
    );
    b.cd.ctr(&b.ns)
        .args(["image", "import", "--no-unpack"])
        .arg(&tar)
        .timeout(Duration::from_secs(60))
        .ok()?;
    Ok(())
}

/// A directory for the caches and options files, removed on drop (pass or
/// fail; the private containerd's teardown would remove it too).
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(dir: &Path) -> Result<WorkDir> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(WorkDir(dir.to_path_buf()))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `<name>.toml`: runtime options whose compile cache is `cache`.
    fn options(&self, name: &str, cache: &Path) -> Result<PathBuf> {
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(
            &path,
            format!("[wasm]\ncache_dir = \"{}\"\n", cache.display()),
        )
        .with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("barge-bench: remove {}: {e}", self.0.display());
            }
        }
    }
}

/// The compiled modules in a cache directory.
fn cache_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
                .count()
        })
        .unwrap_or(0)
}

/// Whether a run should have compiled (cold) or loaded (warm) its module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cache {
    Cold,
    Warm,
}

impl Cache {
    fn name(self) -> &'static str {
        match self {
            Cache::Cold => "cold",
            Cache::Warm => "warm",
        }
    }

    /// What the guest logs for this kind of start (crates/wasm/src/guest.rs).
    fn log_needle(self) -> &'static str {
        match self {
            Cache::Cold => "cache miss for",
            Cache::Warm => "cache hit ",
        }
    }
}

/// A Wasm run that succeeded, and what it should have done with the cache.
struct WasmRun {
    id: String,
    cache: Cache,
}

/// The lifecycle rows, and the Wasm runs that succeeded.
fn lifecycle(b: &Bench, work: &WorkDir) -> Result<(Vec<Row>, Vec<WasmRun>)> {
    let runs = b.cfg.lifecycle_runs;
    let warm_cache = work.path("warm-cache");
    let warm = variant(Some(work.options("warm", &warm_cache)?));

    // Not measured: unpacks the image, warms the page cache, and fills the
    // warm cache.
    b.progress
        .update("wasm", "warm-up run of the hello image through barge");
    let id = "wasm-warmup";
    b.cd.note_group(&b.ns, id);
    let t = b.ctr_run_image(&warm, &["--rm"], HELLO, id, &[])?;
    if !t.success() {
        b.remove_container(id);
        bail!("the Wasm hello image does not run: {}", t.failure());
    }
    let entries = cache_entries(&warm_cache);
    ensure!(
        entries == 1,
        "the warm-up run left {entries} compiled module(s) in {}, expected 1",
        warm_cache.display()
    );

    let mut busybox: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut wasm: BTreeMap<Cache, Vec<f64>> = BTreeMap::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let mut cold_entries = Vec::new();
    let mut expected = Vec::new();
    // Interleaved: busybox through every variant, Wasm cold, Wasm warm, ...
    for i in 0..runs {
        for v in &b.variants {
            check_stop()?;
            b.progress.update(
                "wasm",
                &format!("lifecycle {}/{runs}: busybox through {}", i + 1, v.label),
            );
            let id = format!("wl-{}-{i}", v.key);
            match b.run_rm_once(v, IMAGE, &id, ECHO)? {
                Some(d) => busybox.entry(v.key).or_default().push(ms(d)),
                None => *failures.entry(v.key.to_string()).or_default() += 1,
            }
        }
        for cache in [Cache::Cold, Cache::Warm] {
            check_stop()?;
            b.progress.update(
                "wasm",
                &format!(
                    "lifecycle {}/{runs}: hello.wasm, {} cache",
                    i + 1,
                    cache.name()
                ),
            );
            let id = format!("wl-{}-{i}", cache.name());
            let (v, cold_dir) = match cache {
                Cache::Warm => (warm.clone(), None),
                Cache::Cold => {
                    let dir = work.path(&format!("cold-{i}"));
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("create {}", dir.display()))?;
                    let options = work.options(&format!("cold-{i}"), &dir)?;
                    (variant(Some(options)), Some(dir))
                }
            };
            let took = b.run_rm_once(&v, HELLO, &id, &[])?;
            if let Some(dir) = cold_dir {
                cold_entries.push(cache_entries(&dir));
                let _ = std::fs::remove_dir_all(&dir);
                if let Some(o) = &v.config {
                    let _ = std::fs::remove_file(o);
                }
            }
            match took {
                Some(d) => {
                    wasm.entry(cache).or_default().push(ms(d));
                    expected.push(WasmRun { id, cache });
                }
                None => {
                    *failures
                        .entry(format!("{KEY}-{}", cache.name()))
                        .or_default() += 1
                }
            }
        }
    }
    if cold_entries.iter().any(|&n| n != 1) {
        b.progress.note(&format!(
            "warning: wasm: cold runs left {cold_entries:?} compiled module(s) in their caches, expected 1 each"
        ));
    }
    let entries = cache_entries(&warm_cache);
    if entries != 1 {
        b.progress.note(&format!(
            "warning: wasm: the warm cache holds {entries} compiled modules after the runs, expected 1"
        ));
    }

    let mut rows = Vec::new();
    for cache in [Cache::Cold, Cache::Warm] {
        let values = |f: &dyn Fn(&[f64]) -> Option<f64>| -> BTreeMap<&'static str, f64> {
            let mut m: BTreeMap<&'static str, f64> = busybox
                .iter()
                .filter_map(|(k, s)| Some((*k, f(s)?)))
                .collect();
            if let Some(v) = wasm.get(&cache).and_then(|s| f(s)) {
                m.insert(KEY, v);
            }
            m
        };
        let tag = format!("{} cache", cache.name());
        rows.push(Row {
            figure: format!("wasm: lifecycle median, {tag}"),
            unit: "ms",
            better: Better::Lower,
            decimals: 1,
            values: values(&median),
            failed: BTreeMap::new(),
            target: None,
            detail: json!({
                "runs": runs,
                "cache": cache.name(),
                "command": format!("ctr run --rm [--runtime-config-path TOML] {HELLO} ID"),
                "baseline_command": format!("ctr run --rm {} ID echo hello", IMAGE),
                "cache_dir": match cache {
                    Cache::Cold => "a fresh empty directory per run".to_string(),
                    Cache::Warm => warm_cache.display().to_string(),
                },
                "cold_cache_entries_after_run": (cache == Cache::Cold).then_some(&cold_entries),
                "samples_ms": {
                    "busybox": &busybox,
                    KEY: wasm.get(&cache),
                },
                "failed_runs": &failures,
            }),
        });
        rows.push(Row {
            figure: format!("wasm: lifecycle p90, {tag}"),
            unit: "ms",
            better: Better::Lower,
            decimals: 1,
            values: values(&|s| percentile(s, 90.0)),
            failed: BTreeMap::new(),
            target: None,
            detail: json!({ "runs": runs, "cache": cache.name() }),
        });
    }
    Ok((rows, expected))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Checks the shims' log lines of the measured Wasm runs: each chose the
/// wasm executor, cold runs compiled and warm runs loaded from the cache.
fn check_cache_log(b: &Bench, expected: &[WasmRun]) -> Value {
    let log = b.cd.shim_log_lines();
    let has = |needle: &str| log.iter().any(|l| l.contains(needle));
    let mut unexpected = Vec::new();
    for WasmRun { id, cache } in expected {
        if !has(&format!("creating container {id} with executor wasm")) {
            unexpected.push(format!("{id}: no \"with executor wasm\" line"));
        }
        if !has(&format!("wasm {id}: {}", cache.log_needle())) {
            unexpected.push(format!("{id}: no {:?} line", cache.log_needle()));
        }
    }
    json!({ "runs_checked": expected.len(), "unexpected": unexpected })
}

/// Memory of the shims and inits of one variant's n containers.
struct Sample {
    shims: Vec<ShimMem>,
    inits: Vec<ShimMem>,
    start_seconds: f64,
    command: String,
}

impl Sample {
    fn per_ctr(list: &[ShimMem], f: fn(&ShimMem) -> u64, n: usize) -> f64 {
        list.iter().map(f).sum::<u64>() as f64 / 1024.0 / n as f64
    }

    fn json(&self) -> Value {
        json!({
            "command": self.command,
            "start_seconds": self.start_seconds,
            "shim_processes": self.shims.len(),
            "shims": self.shims.iter().map(ShimMem::json).collect::<Vec<_>>(),
            "inits": self.inits.iter().map(ShimMem::json).collect::<Vec<_>>(),
        })
    }
}

/// What the containers of one memory sample run.
enum Guest {
    /// busybox `sleep 1000`.
    Sleep,
    /// `/http.wasm` on these ports, one per container.
    Http(Vec<u16>),
}

fn memory(b: &Bench, work: &WorkDir) -> Result<Vec<Row>> {
    if !b.ctr_has_annotation {
        bail!("this ctr has no `run --annotation`, which the Wasm servers need for their ports");
    }
    let n = b.cfg.wasm_containers;
    let cache = work.path("memory-cache");
    let wasm = variant(Some(work.options("memory", &cache)?));
    prime(b, &wasm, &cache)?;

    let mut shim_rss = BTreeMap::new();
    let mut shim_pss = BTreeMap::new();
    let mut init_rss = BTreeMap::new();
    let mut total_pss = BTreeMap::new();
    let mut detail = BTreeMap::new();
    let all: Vec<&Variant> = b.variants.iter().chain([&wasm]).collect();
    for v in all {
        check_stop()?;
        let guest = if v.key == KEY {
            Guest::Http(free_ports(n)?)
        } else {
            Guest::Sleep
        };
        let s = measure(b, v, n, &guest)?;
        if s.shims.len() != n {
            b.progress.note(&format!(
                "wasm: {} served {n} container(s) with {} shim process(es), expected {n}",
                v.label,
                s.shims.len()
            ));
        }
        let rss = |m: &ShimMem| m.rss_kib;
        let pss = |m: &ShimMem| m.pss_kib;
        shim_rss.insert(v.key, Sample::per_ctr(&s.shims, rss, n));
        shim_pss.insert(v.key, Sample::per_ctr(&s.shims, pss, n));
        init_rss.insert(v.key, Sample::per_ctr(&s.inits, rss, n));
        total_pss.insert(
            v.key,
            Sample::per_ctr(&s.shims, pss, n) + Sample::per_ctr(&s.inits, pss, n),
        );
        detail.insert(v.key, s.json());
    }
    let suffix = format!("{n} ctr{}", if n == 1 { "" } else { "s" });
    let row = |figure: &str, values: BTreeMap<&'static str, f64>, detail: Value| Row {
        figure: format!("wasm: {figure}, {suffix}"),
        unit: "MiB",
        better: Better::Lower,
        decimals: 2,
        values,
        failed: BTreeMap::new(),
        target: None,
        detail,
    };
    let short = json!({ "containers": n });
    Ok(vec![
        row(
            "shim RSS per ctr",
            shim_rss,
            json!({
                "containers": n,
                "settle_seconds": SETTLE.as_secs_f64(),
                "per_variant": detail,
            }),
        ),
        row("shim PSS per ctr", shim_pss, short.clone()),
        row("init RSS per ctr", init_rss, short.clone()),
        row("shim+init PSS per ctr", total_pss, short),
    ])
}

/// Starts one server so that the measured ones load the compiled component
/// from the cache rather than each compile it; then removes it.
fn prime(b: &Bench, v: &Variant, cache: &Path) -> Result<()> {
    b.progress
        .update("wasm", "compiling /http.wasm into the memory cache");
    let ports = free_ports(1)?;
    let result = (|| {
        start_http(b, v, "wm-prime", ports[0])?;
        wait_listening(b, "wm-prime", ports[0])?;
        let entries = cache_entries(cache);
        ensure!(
            entries == 1,
            "the first /http.wasm left {entries} compiled module(s) in {}, expected 1",
            cache.display()
        );
        Ok(())
    })();
    let cleaned = b.clean_namespace();
    result?;
    cleaned
}

fn start_http(b: &Bench, v: &Variant, id: &str, port: u16) -> Result<()> {
    b.cd.note_group(&b.ns, id);
    let annotation = format!("{HTTP_PORT}={port}");
    let t = b.ctr_run_image(
        v,
        &["-d", "--net-host", "--annotation", &annotation],
        HELLO,
        id,
        &["/http.wasm"],
    )?;
    if !t.success() {
        let msg = format!("ctr run -d {id}: {}", t.failure());
        b.record_error(v, msg.clone());
        bail!("{msg}");
    }
    Ok(())
}

/// Waits until something listens on `port` (in our network namespace,
/// which the servers share with `--net-host`). Looked up in /proc, so that
/// no request makes the server instantiate its component.
fn wait_listening(b: &Bench, id: &str, port: u16) -> Result<()> {
    poll(
        &format!("{id} to listen on port {port}"),
        LISTEN_TIMEOUT,
        || Ok(listening_ports().contains(&port).then_some(())),
    )
    .with_context(|| {
        let tasks =
            b.cd.ctr(&b.ns)
                .args(["tasks", "ls"])
                .run()
                .map(|o| o.stdout)
                .unwrap_or_default();
        format!("tasks:\n{tasks}")
    })
}

/// Starts n containers through `v`, samples its shims and the containers'
/// inits, and removes everything again.
fn measure(b: &Bench, v: &Variant, n: usize, guest: &Guest) -> Result<Sample> {
    let before: BTreeSet<u32> = b.cd.shims().iter().map(|p| p.pid).collect();
    let started = Instant::now();
    let ids: Vec<String> = (0..n).map(|i| format!("wm-{}-{i}", v.key)).collect();
    let result = (|| -> Result<Sample> {
        for (i, id) in ids.iter().enumerate() {
            check_stop()?;
            b.progress.update(
                "wasm",
                &format!("memory: {}: starting {}/{n}", v.label, i + 1),
            );
            match guest {
                Guest::Sleep => {
                    b.cd.note_group(&b.ns, id);
                    let t = b.ctr_run(v, &["-d"], id, &["sleep", "1000"])?;
                    if !t.success() {
                        let msg = format!("ctr run -d {id}: {}", t.failure());
                        b.record_error(v, msg.clone());
                        bail!("{msg}");
                    }
                }
                Guest::Http(ports) => start_http(b, v, id, ports[i])?,
            }
        }
        if let Guest::Http(ports) = guest {
            for (id, port) in ids.iter().zip(ports) {
                wait_listening(b, id, *port)?;
            }
        }
        let start_seconds = started.elapsed().as_secs_f64();
        std::thread::sleep(SETTLE);
        let shims = new_shims(b, v.shim_name, &before);
        let inits = inits(b, &ids)?;
        Ok(Sample {
            shims,
            inits,
            start_seconds,
            command: match guest {
                Guest::Sleep => format!("ctr run -d {} ID sleep 1000", IMAGE),
                Guest::Http(_) => format!(
                    "ctr run -d --net-host --annotation {HTTP_PORT}=PORT {HELLO} ID /http.wasm"
                ),
            },
        })
    })();
    b.progress.update(
        "wasm",
        &format!("memory: {}: removing {n} container(s)", v.label),
    );
    let cleaned = b.clean_namespace();
    let sample = result?;
    cleaned?;
    Ok(sample)
}

/// Samples the init of each container, which must be running.
fn inits(b: &Bench, ids: &[String]) -> Result<Vec<ShimMem>> {
    let out = b.cd.ctr(&b.ns).args(["tasks", "ls"]).ok()?;
    let tasks = parse_tasks(&out.stdout);
    ids.iter()
        .map(|id| {
            let Some((pid, status)) = tasks.get(id.as_str()) else {
                bail!("no task {id} in `ctr tasks ls`:\n{}", out.stdout);
            };
            ensure!(status == "RUNNING", "task {id} is {status}, not RUNNING");
            let ppid = barge_integration::sys::process(*pid)
                .map(|p| p.ppid)
                .unwrap_or(0);
            Ok(ShimMem::of(*pid, ppid))
        })
        .collect()
}

/// `ctr tasks ls`: id → (pid, status).
fn parse_tasks(text: &str) -> BTreeMap<&str, (u32, String)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?;
            let pid = f.next()?.parse().ok()?;
            Some((id, (pid, f.next()?.to_string())))
        })
        .collect()
}

/// `n` distinct TCP ports that are free now (there is a small race until
/// the servers bind them).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("0.0.0.0:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("find free ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Local ports in the LISTEN state, from /proc/net/tcp and tcp6.
fn listening_ports() -> BTreeSet<u16> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|p| parse_listening(&std::fs::read_to_string(p).unwrap_or_default()))
        .collect()
}

fn parse_listening(text: &str) -> Vec<u16> {
    const LISTEN: &str = "0A";
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            if state != LISTEN {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_sockets() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:A2B4 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        assert_eq!(parse_listening(tcp), vec![8080]);
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n";
        assert_eq!(parse_listening(tcp6), vec![80]);
        assert!(parse_listening("").is_empty());
    }

    #[test]
    fn parses_task_list() {
        let text = "TASK        PID      STATUS    \nwm-a-0      4242     RUNNING\nwm-a-1      0        STOPPED\n";
        let t = parse_tasks(text);
        assert_eq!(t["wm-a-0"], (4242, "RUNNING".to_string()));
        assert_eq!(t["wm-a-1"], (0, "STOPPED".to_string()));
        assert_eq!(t.len(), 2);
    }
}
