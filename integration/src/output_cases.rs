//! Nothing is lost, and a flood is held back (issue 11).
//!
//! - What a process writes just before it exits reaches the client in full,
//!   under load: 16 containers (or 16 execs) at once each write 1 MiB and
//!   exit, with and without a terminal, through `ctr run`, `ctr task exec`,
//!   `docker run` and `docker logs`. Every byte is compared.
//! - A container that floods its stdout to a client that stops reading is
//!   held back (its write blocks: every copy on the way has a bounded
//!   buffer), while the other container of its shim keeps answering, and
//!   the shim's memory stays flat while hundreds of MiB go through.
//!
//! Every case runs under runc-v2 (the reference) as well.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::cmd::{bounded, poll, Cmd, Output};
use crate::containerd::shim_socket;
use crate::ctr::CtrCtx;
use crate::ctr_cases::CtrCase;
use crate::docker_cases::{DockerCase, DockerCtx};
use crate::docker_exec_cases::{name, runtime};
use crate::pty::Pty;
use crate::sys;
use crate::tty_cases::{Cleanup, Side, START};

/// How many containers (or execs) write at once.
const PARALLEL: usize = 16;
/// What each of them writes: 1 MiB.
const PAYLOAD_LEN: usize = 1 << 20;
/// Prints [`payload`] and exits at once: numbers, `000001.000002.` and so
/// on, with no line end, which a terminal would turn into two bytes.
const PAYLOAD_SCRIPT: &str = "seq -s . -w 1 200000 | head -c 1048576";
/// How long one client may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);

/// What [`PAYLOAD_SCRIPT`] prints.
fn payload() -> &'static str {
    static PAYLOAD: OnceLock<String> = OnceLock::new();
    PAYLOAD.get_or_init(|| {
        let mut s: String = (1..=200_000)
            .map(|i| format!("{i:06}"))
            .collect::<Vec<_>>()
            .join(".");
        s.truncate(PAYLOAD_LEN);
        s
    })
}

/// What the clients of one side received.
#[derive(Debug, Default)]
struct Tally {
    complete: usize,
    bytes: usize,
    /// One line per client that got less, more or other than the payload.
    bad: Vec<String>,
}

impl Tally {
    /// Checks each client's output: exit 0 and exactly the payload.
    fn of(results: Vec<Result<Output>>) -> Tally {
        let want = payload();
        let mut t = Tally::default();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(out) => {
                    let got = &out.stdout;
                    t.bytes += got.len();
                    if out.code() == 0 && got == want {
                        t.complete += 1;
                        continue;
                    }
                    let same = got
                        .bytes()
                        .zip(want.bytes())
                        .take_while(|(a, b)| a == b)
                        .count();
                    t.bad.push(format!(
                        "#{i}: exit {}, {} of {} bytes, the first {same} right (stderr {:?})",
                        out.code(),
                        got.len(),
                        want.len(),
                        out.stderr.chars().take(200).collect::<String>()
                    ));
                }
                Err(e) => t.bad.push(format!("#{i}: {e:#}")),
            }
        }
        t
    }

    fn summary(&self) -> String {
        format!(
            "{}/{PARALLEL} complete, {} of {} bytes",
            self.complete,
            self.bytes,
            PARALLEL * PAYLOAD_LEN
        )
    }
}

/// Runs `f` on runc-v2's and barge's side: barge's clients must all get
/// the whole payload. runc-v2 is the reference: when it loses bytes, that
/// is printed and the case still requires barge to lose none.
fn compare(what: &str, f: impl Fn(Side) -> Result<Tally>) -> Result<()> {
    let runc = f(Side::Runc).context("runc-v2 (reference)")?;
    let barge = f(Side::Barge).context("barge")?;
    println!(
        "        {what}: runc-v2 {}; barge {}",
        runc.summary(),
        barge.summary()
    );
    if !runc.bad.is_empty() {
        println!(
            "        {what}: runc-v2 lost output: {}",
            runc.bad.join("; ")
        );
    }
    ensure!(
        barge.bad.is_empty(),
        "barge lost output ({}): {}; runc-v2: {}",
        barge.summary(),
        barge.bad.join("; "),
        runc.summary()
    );
    Ok(())
}

/// Runs `cmd` on a pty of its own; the output is what the pty showed.
fn on_pty(cmd: Cmd) -> Result<Output> {
    Pty::spawn(cmd, START)?.wait()
}

/// The prefix of a pass for printed lines: `c1.7/native`.
fn pass(ctx: &CtrCtx) -> String {
    format!("c{}/{}", ctx.cd.version, ctx.executor.name())
}

/// The ctr cases.
pub fn cases() -> Vec<CtrCase> {
    type Custom = (&'static str, fn(&CtrCtx) -> Result<()>);
    let custom: [Custom; 6] = [
        ("output-1mib-x16", |ctx| run_1mib(ctx, false)),
        ("output-1mib-x16-tty", |ctx| run_1mib(ctx, true)),
        ("output-exec-1mib-x16", |ctx| exec_1mib(ctx, false)),
        ("output-exec-1mib-x16-tty", |ctx| exec_1mib(ctx, true)),
        ("flood-fifo", |ctx| flood(ctx, false)),
        ("flood-tty", |ctx| flood(ctx, true)),
    ];
    CtrCase::list(custom)
}

/// 16 `ctr run --rm` at once (with `-t`, each on its own pty), each
/// writing 1 MiB and exiting.
fn run_1mib(ctx: &CtrCtx, tty: bool) -> Result<()> {
    compare(&pass(ctx), |side| {
        let mut cleanup = Cleanup::new();
        let cmds: Vec<Cmd> = (0..PARALLEL)
            .map(|i| {
                let id = side.id(ctx, &i.to_string());
                cleanup.ctr(ctx, &id);
                side.run(ctx, &id)
                    .rm()
                    .flags(tty.then_some("-t"))
                    .args(["sh", "-c", PAYLOAD_SCRIPT])
                    .timeout(CLIENT_TIMEOUT)
                    .cmd()
            })
            .collect();
        let results = if tty {
            crate::cmd::at_once(cmds, on_pty)
        } else {
            crate::cmd::at_once(cmds, Cmd::run)
        };
        cleanup.done();
        Ok(Tally::of(results))
    })
}

/// 16 `ctr task exec` at once into one container (with `-t`, each on its
/// own pty), each writing 1 MiB and exiting.
fn exec_1mib(ctx: &CtrCtx, tty: bool) -> Result<()> {
    compare(&pass(ctx), |side| {
        let id = side.id(ctx, "");
        let mut cleanup = Cleanup::new();
        cleanup.ctr(ctx, &id);
        ctx.start_sleeper(side.run(ctx, &id), &id)?;
        let cmds: Vec<Cmd> = (0..PARALLEL)
            .map(|i| {
                let exec_id = side.id(ctx, &format!("exec{i}"));
                ctx.ctr()
                    .args(["tasks", "exec"])
                    .args(tty.then_some("-t"))
                    .args(["--exec-id", &exec_id, &id, "sh", "-c", PAYLOAD_SCRIPT])
                    .timeout(CLIENT_TIMEOUT)
            })
            .collect();
        let results = if tty {
            crate::cmd::at_once(cmds, on_pty)
        } else {
            crate::cmd::at_once(cmds, Cmd::run)
        };
        ctx.kill_and_remove(&id)?;
        cleanup.done();
        Ok(Tally::of(results))
    })
}

/// A client of a flooding container: it counts what it gets and throws it
/// away, and can stop reading.
trait Client {
    fn bytes(&self) -> u64;
    fn pause_reading(&self, paused: bool);
    /// Waits for the client's end (after the container was killed).
    fn finish(self: Box<Self>) -> Result<Output>;
}

impl Client for Pty {
    fn bytes(&self) -> u64 {
        Pty::bytes(self)
    }

    fn pause_reading(&self, paused: bool) {
        Pty::pause_reading(self, paused)
    }

    fn finish(self: Box<Self>) -> Result<Output> {
        self.wait()
    }
}

/// A command whose stdout is a pipe that the case reads, counting, and
/// stops reading while paused. Dropping it kills the command's group.
struct Drain {
    child: Option<Child>,
    count: Arc<AtomicU64>,
    paused: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
    cmdline: String,
    timeout: Duration,
    started: Instant,
}

impl Drain {
    fn spawn(cmd: Cmd) -> Result<Drain> {
        let cmdline = cmd.cmdline();
        let mut c = cmd.command();
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = c.spawn().with_context(|| format!("spawn `{cmdline}`"))?;
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let count = Arc::new(AtomicU64::new(0));
        let paused = Arc::new(AtomicBool::new(false));
        let reader = {
            let (count, paused) = (count.clone(), paused.clone());
            std::thread::spawn(move || {
                let Some(out) = out.as_mut() else { return };
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    if paused.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    match out.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            count.fetch_add(n as u64, Ordering::SeqCst);
                        }
                    }
                }
            })
        };
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        Ok(Drain {
            child: Some(child),
            count,
            paused,
            reader: Some(reader),
            stderr: Some(stderr),
            cmdline,
            timeout: cmd.timeout_of(),
            started: Instant::now(),
        })
    }

    /// Kills the command's group and reaps it.
    fn kill(&mut self) {
        self.paused.store(false, Ordering::SeqCst);
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group of our own child, which
            // has not been reaped, so its id cannot have been reused.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Client for Drain {
    fn bytes(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    fn pause_reading(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst)
    }

    fn finish(mut self: Box<Self>) -> Result<Output> {
        self.paused.store(false, Ordering::SeqCst);
        let end = bounded(self.timeout.saturating_sub(self.started.elapsed()));
        let mut child = self.child.take().context("already finished")?;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() >= end {
                self.child = Some(child);
                self.kill();
                bail!("`{}` did not end and was killed", self.cmdline);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        Ok(Output {
            status,
            stdout: String::new(),
            stderr,
            cmdline: self.cmdline.clone(),
            elapsed: self.started.elapsed(),
        })
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.kill();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The shim's memory, from /proc/<pid>/status, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss: u64,
    hwm: u64,
    anon: u64,
}

impl Mem {
    fn of(pid: u32) -> Result<Mem> {
        Ok(Mem {
            rss: sys::status_kib(pid, "VmRSS")?,
            hwm: sys::status_kib(pid, "VmHWM")?,
            anon: sys::status_kib(pid, "RssAnon")?,
        })
    }
}

/// Bytes a process has written (`wchar` of /proc/<pid>/io).
fn written(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/io");
    let io = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no wchar in {path}"))
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The flood is measured from here on (the shim has copied this much).
const WARM: u64 = 16 * MIB;
/// Through a pipe, the client stops reading after 256 MiB, and the flood
/// ends after 512 MiB (about 3 s here).
const PIPE_FLOOD: (u64, u64) = (256 * MIB, 512 * MIB);
/// Through two ptys (the container's and the one ctr runs on), 64 and
/// 128 MiB: a pty moves 15 to 40 MB/s here.
const TTY_FLOOD: (u64, u64) = (64 * MIB, 128 * MIB);
/// The flooding process, as the init, so that its `wchar` counts every
/// byte it wrote: `dd` writes 64 KiB blocks with write(2). (busybox `cat`
/// uses sendfile(2), whose bytes show in `wchar` only once a call of up to
/// 16 MiB returns.)
const FLOOD_SCRIPT: &str = "exec dd if=/dev/zero bs=64k";
/// How long the client leaves the flood unread, at least.
const PAUSE: Duration = Duration::from_millis(1500);
/// What the shim's memory may grow by, and what may be on the way between
/// the flooding process and its client.
const BOUND: u64 = 8 * MIB;

/// What a flood showed.
#[derive(Debug, Default)]
struct Flood {
    /// At [`WARM`], the most seen after, and at the end.
    base: Mem,
    peak: Mem,
    end: Mem,
    /// The most that the process had written and the client not received.
    in_flight: u64,
    /// What the process wrote while the client did not read.
    written_paused: u64,
    received: u64,
    secs: f64,
    /// The steady container's exec, while the flood was held.
    exec_ms: u128,
    /// The shim left the group's socket (runc-v2 on containerd 2.x).
    left_socket: bool,
}

impl Flood {
    fn growth(&self) -> u64 {
        let rss = self.peak.rss.saturating_sub(self.base.rss);
        let anon = self.peak.anon.saturating_sub(self.base.anon);
        let hwm = self.end.hwm.saturating_sub(self.base.hwm);
        rss.max(anon).max(hwm) * KIB
    }

    fn summary(&self) -> String {
        format!(
            "{} MiB in {:.1} s; shim VmRSS {} -> peak {} KiB, RssAnon {} -> {} KiB, VmHWM {} -> {} KiB; \
             at most {} KiB on the way; {} bytes written while unread; exec {} ms{}",
            self.received / MIB,
            self.secs,
            self.base.rss,
            self.peak.rss,
            self.base.anon,
            self.peak.anon,
            self.base.hwm,
            self.end.hwm,
            self.in_flight / KIB,
            self.written_paused,
            self.exec_ms,
            if self.left_socket {
                "; the exited shim left its group's socket"
            } else {
                ""
            }
        )
    }
}

/// One flood on `side`: in one shim (a group), a steady container sleeps
/// and a flooding one runs [`FLOOD_SCRIPT`] attached to a client the case
/// reads: ctr's stdout pipe, or with `tty` the pty ctr runs on. Part way
/// ([`PIPE_FLOOD`], [`TTY_FLOOD`]) the client stops reading: the flood must
/// stop (nothing written for a while), and the steady container must answer
/// an exec with its whole output. Then the client reads on to the end. The
/// shim's memory and what is on the way are sampled throughout.
fn flood_once(ctx: &CtrCtx, side: Side, tty: bool) -> Result<Flood> {
    let group = ctx.group(if side == Side::Runc {
        "runc-grp"
    } else {
        "grp"
    });
    let annotation = format!("io.containerd.runc.v2.group={group}");
    let steady = side.id(ctx, "steady");
    let flooder = side.id(ctx, "flood");
    let mut cleanup = Cleanup::new();
    cleanup.ctr(ctx, &flooder);
    cleanup.ctr(ctx, &steady);
    let task = ctx.start_sleeper(
        side.run(ctx, &steady).flags(["--annotation", &annotation]),
        &steady,
    )?;
    let shim = sys::process(task.pid)
        .context("the steady init is gone")?
        .ppid;
    let cmd = side
        .run(ctx, &flooder)
        .rm()
        .flags(["--annotation", &annotation])
        .flags(tty.then_some("-t"))
        .args(["sh", "-c", FLOOD_SCRIPT])
        .timeout(Duration::from_secs(50))
        .cmd();
    let client: Box<dyn Client> = if tty {
        Box::new(Pty::spawn_counting(cmd, START)?)
    } else {
        Box::new(Drain::spawn(cmd)?)
    };
    let flood_pid = ctx.wait_status(&flooder, "RUNNING")?.pid;
    let parent = sys::process(flood_pid).map(|p| p.ppid);
    ensure!(
        parent == Some(shim),
        "the flooding init {flood_pid} has parent {parent:?}, not the group's shim {shim}"
    );
    let (pause_at, total) = if tty { TTY_FLOOD } else { PIPE_FLOOD };
    let started = Instant::now();
    let mut f = Flood::default();
    // Samples the shim's memory and what is on the way until the client
    // has `target` bytes.
    let sample = |f: &mut Flood, target: u64, client: &dyn Client| -> Result<()> {
        poll(
            &format!("the client to receive {} MiB", target / MIB),
            Duration::from_secs(30),
            || {
                let m = Mem::of(shim)?;
                f.peak.rss = f.peak.rss.max(m.rss);
                f.peak.anon = f.peak.anon.max(m.anon);
                let received = client.bytes();
                let sent = written(flood_pid)?;
                f.in_flight = f.in_flight.max(sent.saturating_sub(received));
                Ok((received >= target).then_some(()))
            },
        )
        .with_context(|| format!("received {} bytes", client.bytes()))
    };
    sample(&mut f, WARM, &*client)?;
    f.base = Mem::of(shim)?;
    f.peak = f.base;
    f.in_flight = 0;
    sample(&mut f, pause_at, &*client)?;
    client.pause_reading(true);
    // The buffers on the way fill up; then nothing more may be written.
    std::thread::sleep(Duration::from_millis(300));
    let held_at = written(flood_pid)?;
    let exec_start = Instant::now();
    let exec_id = side.id(ctx, "steady-exec");
    let out = ctx
        .ctr()
        .args(["tasks", "exec", "--exec-id", &exec_id, &steady])
        .args(["sh", "-c", PAYLOAD_SCRIPT])
        .timeout(Duration::from_secs(20))
        .run()
        .context("exec in the steady container while the flood is held")?;
    f.exec_ms = exec_start.elapsed().as_millis();
    ensure!(
        out.code() == 0 && out.stdout == payload(),
        "the steady container's exec, while the flood was held: exit {}, {} of {} bytes",
        out.code(),
        out.stdout.len(),
        payload().len()
    );
    let rest = PAUSE.saturating_sub(exec_start.elapsed());
    std::thread::sleep(rest);
    f.written_paused = written(flood_pid)?.saturating_sub(held_at);
    let m = Mem::of(shim)?;
    f.peak.rss = f.peak.rss.max(m.rss);
    f.peak.anon = f.peak.anon.max(m.anon);
    client.pause_reading(false);
    sample(&mut f, total, &*client)?;
    f.end = Mem::of(shim)?;
    f.received = client.bytes();
    f.secs = started.elapsed().as_secs_f64();
    ctx.ctr()
        .args(["tasks", "kill", "-s", "SIGKILL", &flooder])
        .ok()?;
    let out = client.finish()?;
    ensure!(
        out.code() == 137,
        "the flooding `ctr run` did not exit 137: {}",
        out.describe()
    );
    let steady_row = ctx.task(&steady)?.context("the steady task is gone")?;
    ensure!(
        steady_row.status == "RUNNING",
        "the steady task is {}",
        steady_row.status
    );
    ctx.kill_and_remove(&steady)?;
    cleanup.done();
    if side == Side::Runc {
        // runc-v2 2.x leaves the socket of a group behind when its shim
        // exits (1.7's removes it): remove it here, and say so; barge's is
        // left to the leak check.
        poll("runc-v2's shim to exit", Duration::from_secs(10), || {
            Ok((!sys::alive(shim)).then_some(()))
        })?;
        let socket = shim_socket(&ctx.cd.address(), &ctx.ns, &group);
        if socket.exists() {
            std::fs::remove_file(&socket)?;
            f.left_socket = true;
        }
    }
    Ok(f)
}

/// A flood under runc-v2 (reported), then under barge, which must hold it
/// back: nothing written while the client does not read, less than
/// [`BOUND`] on the way, and the shim's memory grown by less than
/// [`BOUND`].
fn flood(ctx: &CtrCtx, tty: bool) -> Result<()> {
    let what = format!("{}/flood-{}", pass(ctx), if tty { "tty" } else { "fifo" });
    let runc = flood_once(ctx, Side::Runc, tty).context("runc-v2 (reference)")?;
    println!("        {what}: runc-v2: {}", runc.summary());
    let barge = flood_once(ctx, Side::Barge, tty).context("barge")?;
    println!("        {what}: barge: {}", barge.summary());
    ensure!(
        barge.written_paused == 0,
        "barge: the flood went on while its client did not read ({} bytes written): {}",
        barge.written_paused,
        barge.summary()
    );
    ensure!(
        barge.in_flight < BOUND,
        "barge: {} KiB on the way between the process and its client: {}",
        barge.in_flight / KIB,
        barge.summary()
    );
    ensure!(
        barge.growth() < BOUND,
        "barge: the shim grew by {} KiB: {}",
        barge.growth() / KIB,
        barge.summary()
    );
    Ok(())
}

/// The Docker cases (native pass only: the output path is the shim's, the
/// same for every executor, and the oci-binary pass runs the ctr cases).
pub fn docker_cases() -> Vec<DockerCase> {
    type Custom = (&'static str, fn(&DockerCtx) -> Result<()>);
    let custom: [Custom; 3] = [
        ("output-1mib-x16", |ctx| docker_1mib(ctx, Attach::Plain)),
        ("output-1mib-x16-tty", |ctx| docker_1mib(ctx, Attach::Tty)),
        ("output-1mib-x16-logs", |ctx| docker_1mib(ctx, Attach::Logs)),
    ];
    custom
        .into_iter()
        .map(|(name, run)| DockerCase {
            name,
            only: Some(crate::ctr::Executor::Native),
            run,
        })
        .collect()
}

/// How a Docker client gets the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attach {
    /// `docker run --rm`, attached.
    Plain,
    /// `docker run --rm -t` on a pty.
    Tty,
    /// `docker run -d`, then `docker logs` once it has stopped.
    Logs,
}

/// 16 Docker containers at once, each writing 1 MiB and exiting.
fn docker_1mib(ctx: &DockerCtx, how: Attach) -> Result<()> {
    let what = format!("d{}/{}", ctx.d.version, ctx.executor.name());
    compare(&what, |side| {
        let names: Vec<String> = (0..PARALLEL)
            .map(|i| name(&format!("output-{i}"), side))
            .collect();
        let mut cleanup = Cleanup::new();
        for n in &names {
            cleanup.push(ctx.docker().args(["rm", "-f", n]));
        }
        let cmds: Vec<Cmd> = names
            .iter()
            .map(|n| {
                let flags: &[&str] = match how {
                    Attach::Plain => &["--rm"],
                    Attach::Tty => &["--rm", "-t"],
                    Attach::Logs => &["-d"],
                };
                ctx.run_with(runtime(ctx, side))
                    .args(["--name", n])
                    .args(flags)
                    .args(["busybox", "sh", "-c", PAYLOAD_SCRIPT])
                    .timeout(CLIENT_TIMEOUT)
            })
            .collect();
        let results = match how {
            Attach::Plain => crate::cmd::at_once(cmds, Cmd::run),
            Attach::Tty => crate::cmd::at_once(cmds, on_pty),
            Attach::Logs => {
                let started = crate::cmd::at_once(cmds, Cmd::run);
                let mut logs = Vec::new();
                for (n, r) in names.iter().zip(started) {
                    logs.push(r.and_then(|out| {
                        let out = out.ok()?;
                        ctx.d.note_id(out.stdout.trim());
                        docker_logs(ctx, n)
                    }));
                }
                for n in &names {
                    ctx.docker().args(["rm", "-f", n]).ok()?;
                }
                logs
            }
        };
        cleanup.done();
        Ok(Tally::of(results))
    })
}

/// `docker logs` of a container once it has stopped (exit 0 required).
fn docker_logs(ctx: &DockerCtx, name: &str) -> Result<Output> {
    let state = ctx.wait_stopped(name)?;
    ensure!(state.exit_code == 0, "{name} exited {}", state.exit_code);
    ctx.docker().args(["logs", name]).run()
}
