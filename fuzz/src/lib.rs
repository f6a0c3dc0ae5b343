//! barge's fuzz harness: in-process, on the stable toolchain, with no
//! libFuzzer. Each target decodes what the shim receives from containerd
//! (or finds in a bundle) through the shim's own functions, from inputs that
//! are either generated from a grammar (with `arbitrary`'s `Unstructured`)
//! or mutated from valid seeds.
//!
//! Input `i` of a run with seed `s` depends only on `(s, i)` and the
//! target's seeds, so any input can be made again (`--skip i --count 1`).
//! A panic (a failed check counts as one), an input that runs longer than the
//! time limit, or an allocation over the limits (see [`alloc`]) is a finding:
//! it is reported with the way to reproduce it.

pub mod alloc;
pub mod driver;
pub mod mutate;
pub mod targets;

/// Every target's allocations go through the limiting allocator, in the
/// `barge-fuzz` binary and in the smoke tests alike.
#[global_allocator]
static ALLOCATOR: alloc::Limited = alloc::Limited;
