//! The CI smoke run of every fuzz target: a few thousand inputs each, a
//! few seconds in all (`make fuzz` runs a million each). A finding fails
//! the test with the way to reproduce it. `BARGE_FUZZ_SEED` picks another
//! seed than 1.

use std::sync::Mutex;

use barge_fuzz::driver::{self, Config};
use barge_fuzz::targets;

/// The allocator's counters and the watchdog's target are process-wide:
/// one target at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn smoke(name: &str, count: u64) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::env::var("BARGE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let config = Config {
        count,
        seed,
        ..Config::default()
    };
    let mut target = targets::make(name).expect("a target");
    let report = driver::run(target.as_mut(), &config);
    println!("{report}");
    assert_eq!(report.finding, None, "{report}");
    assert_eq!(report.inputs, count);
}

#[test]
fn options() {
    smoke("options", 20_000);
}

#[test]
fn entrypoint() {
    smoke("entrypoint", 10_000);
}

#[test]
fn proto() {
    smoke("proto", 20_000);
}

#[test]
fn mount() {
    smoke("mount", 20_000);
}

#[test]
fn wasm() {
    smoke("wasm", 1_000);
}
