//! `make soak`: issue 11's soak of barge (10,000 `ctr run --rm`, 1,000 Wasm
//! runs, 1,000 execs, 1,000 create/delete cycles in one grouped shim) on a
//! private containerd, then a check that nothing is left. See
//! `barge_integration::soak`.
//!
//! Environment:
//! - `SOAK_RUNS`, `SOAK_WORKERS`, `SOAK_WASM`, `SOAK_EXECS`, `SOAK_CYCLES`,
//!   `SOAK_WARMUP`: the counts (10000, 4, 1000, 1000, 1000, 20);
//!   `SOAK_SHORT=1` starts from the suite's short counts instead.
//! - `SOAK_RSS_LIMIT_KIB`: the grouped shim's allowed RSS growth (1024;
//!   `none`: report only).
//! - `SOAK_CONTAINERD=1.6|1.7|2.1|2.3`: which containerd (default 2.3).
//! - `SOAK_RUNTIMES=barge,runc-v2`: also soak containerd-shim-runc-v2, side
//!   by side (default `barge`).
//! - `BARGE_SHIM`: the shim under test (default
//!   `target/release/containerd-shim-barge-v1`); `BARGE_IT_WASM`: where
//!   `make wasm-fixtures` put the Wasm images (default `target/wasm`).
//!
//! Results go to the terminal and to `target/soak/results.{json,md}`.

fn main() -> std::process::ExitCode {
    barge_integration::soak::main()
}
