//! Barge's integration suite: real containerd, real Docker, real kernel.
//!
//! The harness starts private daemons ([`containerd::Containerd`],
//! [`docker::Dockerd`]) that are torn down on drop, runs cases with a
//! deadline each ([`runner::Runner`]), and after every case checks that
//! nothing of it is left ([`ctr::CtrCtx::check_leaks`],
//! [`docker_cases::DockerCtx::check_leaks`]). The runner is
//! `tests/suite.rs`.

pub mod cmd;
pub mod containerd;
pub mod containerd_api;
pub mod cri;
pub mod critest;
pub mod ctr;
pub mod ctr_cases;
pub mod docker;
pub mod docker_cases;
pub mod docker_exec_cases;
pub mod docker_resource_cases;
pub mod exe_cases;
pub mod exec_cases;
pub mod fault_cases;
pub mod info_cases;
pub mod log_cases;
pub mod output_cases;
pub mod pod_cases;
pub mod propagation_cases;
pub mod pty;
pub mod runc_options_cases;
pub mod runner;
pub mod security_cases;
pub mod soak;
pub mod sys;
pub mod tty_cases;
pub mod wasm_cases;
