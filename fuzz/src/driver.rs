//! Running a target: making each input, timing it, catching what it finds.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alloc;
use crate::mutate::{mutate, Rng};

/// One fuzz target.
pub trait Target {
    /// The name on the command line.
    fn name(&self) -> &'static str;
    /// Valid (or nearly valid) inputs, mutated to make most inputs.
    fn seeds(&self) -> Vec<Vec<u8>>;
    /// Tokens worth inserting into an input.
    fn dict(&self) -> &'static [&'static [u8]] {
        &[]
    }
    /// The longest input made for this target.
    fn max_len(&self) -> usize {
        4096
    }
    /// Runs one input. A failed check panics. Returns what happened (one
    /// word, counted for the report: how far inputs got).
    fn run(&mut self, data: &[u8]) -> &'static str;
}

/// How to run a target.
#[derive(Debug, Clone)]
pub struct Config {
    pub count: u64,
    pub seed: u64,
    /// The first input's index (to reproduce one input).
    pub skip: u64,
    /// The limit on one input.
    pub time_limit: Duration,
    /// Where an input that found something is written.
    pub artifacts: PathBuf,
    /// Print each input (hex) before running it.
    pub dump: bool,
    /// Stop after this long, even before `count` inputs.
    pub max_time: Option<Duration>,
    /// Print the count and rate this often (to stderr).
    pub progress: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            count: 1_000_000,
            seed: 1,
            skip: 0,
            time_limit: Duration::from_secs(2),
            artifacts: std::env::temp_dir().join("barge-fuzz"),
            dump: false,
            max_time: None,
            progress: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub inputs: u64,
    pub elapsed: Duration,
    /// How many inputs ended each way.
    pub outcomes: BTreeMap<&'static str, u64>,
    pub slowest: Duration,
    pub largest_input: usize,
    pub usage: alloc::Usage,
    /// The panic that stopped the run, with the way to reproduce it.
    pub finding: Option<String>,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.inputs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} inputs in {:.1} s ({:.0}/s), slowest {:.1} ms, largest input {} B, peak live heap {} KiB, largest allocation {} KiB, {}",
            self.target,
            self.inputs,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.slowest.as_secs_f64() * 1e3,
            self.largest_input,
            self.usage.peak_live >> 10,
            self.usage.largest >> 10,
            match &self.finding {
                Some(_) => "FOUND a crash".to_string(),
                None => "no finding".to_string(),
            }
        )?;
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        write!(f, "\n  outcomes: {}", outcomes.join(", "))?;
        if let Some(finding) = &self.finding {
            write!(f, "\n  {finding}")?;
        }
        Ok(())
    }
}

/// Makes input `index`: mostly a seed mutated a few times, sometimes two
/// seeds spliced, sometimes random bytes.
pub fn make_input(
    target: &dyn Target,
    seeds: &[Vec<u8>],
    seed: u64,
    index: u64,
    out: &mut Vec<u8>,
) {
    let mut rng = Rng::for_input(seed, index);
    out.clear();
    let max = target.max_len();
    if seeds.is_empty() || rng.one_in(8) {
        out.resize(rng.length(max.min(1024)), 0);
        rng.fill(out);
        return;
    }
    let first = rng.pick::<Vec<u8>>(seeds).as_slice();
    out.extend_from_slice(first);
    out.truncate(max);
    // 0 to 15 mutations, few more often than many; a seed as it is now and then.
    let rounds = (1usize << rng.below(5)) - 1;
    for _ in 0..rounds {
        let other = rng.pick::<Vec<u8>>(seeds).as_slice();
        mutate(&mut rng, out, max, target.dict(), other);
    }
}

/// Aborts the process when an input runs past the limit: a hang cannot be
/// unwound from another thread.
struct Watchdog {
    /// When the current input started, in ms since `epoch`; 0 when idle.
    started: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    epoch: Instant,
}

impl Watchdog {
    fn start(target: &'static str, seed: u64, limit: Duration) -> Watchdog {
        let started = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let thread = {
            let (started, stop) = (started.clone(), stop.clone());
            std::thread::spawn(move || {
                let tick =
                    (limit / 10).clamp(Duration::from_millis(10), Duration::from_millis(200));
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    let at = started.load(Ordering::Relaxed);
                    let now = epoch.elapsed().as_millis() as u64 + 1;
                    if at != 0 && now.saturating_sub(at) > limit.as_millis() as u64 {
                        let input = alloc::CURRENT_INPUT.load(Ordering::Relaxed);
                        eprintln!(
                            "barge-fuzz: FINDING: input {input} of target {target} ran for more than {} ms; \
                             reproduce: barge-fuzz {target} --seed {seed} --skip {input} --count 1",
                            limit.as_millis()
                        );
                        std::process::abort();
                    }
                }
            })
        };
        Watchdog {
            started,
            stop,
            thread: Some(thread),
            epoch,
        }
    }

    fn begin(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.started.store(now, Ordering::Relaxed);
    }

    fn end(&self) {
        self.started.store(0, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `config.count` inputs through `target`; stops at the first finding.
pub fn run(target: &mut dyn Target, config: &Config) -> Report {
    let name = target.name();
    let seeds = target.seeds();
    alloc::CURRENT_TARGET.store(
        crate::targets::NAMES
            .iter()
            .position(|n| *n == name)
            .unwrap_or(usize::MAX),
        Ordering::Relaxed,
    );
    alloc::CURRENT_SEED.store(config.seed, Ordering::Relaxed);
    let watchdog = Watchdog::start(name, config.seed, config.time_limit);
    let mut report = Report {
        target: name,
        inputs: 0,
        elapsed: Duration::ZERO,
        outcomes: BTreeMap::new(),
        slowest: Duration::ZERO,
        largest_input: 0,
        usage: alloc::usage(),
        finding: None,
    };
    let mut input = Vec::new();
    alloc::reset_peaks();
    let started = Instant::now();
    let mut next_progress = config.progress.map(|p| started + p);
    for index in config.skip..config.skip.saturating_add(config.count) {
        if index % 64 == 0 {
            let now = Instant::now();
            if config.max_time.is_some_and(|max| now - started >= max) {
                break;
            }
            if let (Some(at), Some(every)) = (next_progress, config.progress) {
                if now >= at {
                    let secs = (now - started).as_secs_f64();
                    eprintln!(
                        "{name}: {} inputs in {secs:.0} s ({:.0}/s)",
                        report.inputs,
                        report.inputs as f64 / secs
                    );
                    next_progress = Some(at + every);
                }
            }
        }
        make_input(target, &seeds, config.seed, index, &mut input);
        if config.dump {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            eprintln!("input {index} ({} bytes): {hex}", input.len());
        }
        report.largest_input = report.largest_input.max(input.len());
        alloc::CURRENT_INPUT.store(index, Ordering::Relaxed);
        watchdog.begin();
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| target.run(&input)));
        let took = t.elapsed();
        watchdog.end();
        report.slowest = report.slowest.max(took);
        report.inputs += 1;
        match result {
            Ok(outcome) => *report.outcomes.entry(outcome).or_default() += 1,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let file = config
                    .artifacts
                    .join(format!("{name}-seed{}-input{index}.bin", config.seed));
                let saved = std::fs::create_dir_all(&config.artifacts)
                    .and_then(|()| std::fs::write(&file, &input))
                    .map(|()| format!(", saved in {}", file.display()))
                    .unwrap_or_default();
                report.finding = Some(format!(
                    "input {index} panicked: {message}{saved}; reproduce: barge-fuzz {name} --seed {} --skip {index} --count 1",
                    config.seed
                ));
                break;
            }
        }
    }
    alloc::CURRENT_INPUT.store(u64::MAX, Ordering::Relaxed);
    report.elapsed = started.elapsed();
    report.usage = alloc::usage();
    report
}
