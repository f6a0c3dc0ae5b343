//! `make bench`: speed and memory of barge side by side with
//! containerd-shim-runc-v2, on a private containerd.
//!
//! Environment:
//! - `BENCH_QUICK=1`: the short version (a few runs, 2 s per throughput
//!   config, 1 and 5 sleeping containers, 5 Wasm servers).
//! - `BENCH_CONTAINERD=1.6|1.7|2.1|2.3`: which containerd (default 1.7).
//! - `BENCH_ONLY=stats,exec`: only these sections (lifecycle, throughput,
//!   memory, exec, stats, wasm, cri); all by default.
//! - `BENCH_CRI=2.3,1.7`: the CRI containerds of the cri section (default
//!   2.3, and 1.7 too with `BENCH_QUICK` unset).
//! - `BARGE_SHIM`: the shim under test (default
//!   `target/release/containerd-shim-barge-v1`).
//! - `BARGE_IT_WASM`: where `make wasm-fixtures` put the Wasm images that
//!   the wasm figures run (default `target/wasm`).
//!
//! Results go to the terminal and to `target/bench/results.{json,md}`.

#[path = "../bench/mod.rs"]
mod bench;

fn main() -> std::process::ExitCode {
    bench::main()
}
