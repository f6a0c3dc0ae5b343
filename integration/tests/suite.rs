//! The integration suite (`harness = false`): one private containerd per
//! version runs every ctr case for every executor; one private dockerd per
//! Docker version (on its own containerd) runs the Docker cases.
//!
//! ```sh
//! cargo build --release -p containerd-shim-barge-v1
//! cargo test -p barge-integration --test suite
//! ```
//!
//! Environment: `BARGE_SHIM` (the shim binary), `BARGE_IT_CONTAINERD`
//! (`1.6,1.7,2.1,2.3`), `BARGE_IT_DOCKER` (`26,28`), `BARGE_IT_EXECUTORS`
//! (`native,oci-binary,wasm`), `BARGE_IT_FILTER` (a substring of case names),
//! `BARGE_IT_DEBUG` (containerd at debug level), `BARGE_IT_LOG_DIR` (where
//! daemon logs are kept).

use std::time::Duration;

use barge_integration::containerd::{shim_binary, Containerd};
use barge_integration::ctr::{CtrCtx, Executor};
use barge_integration::docker::Dockerd;
use barge_integration::docker_cases::DockerCtx;
use barge_integration::runner::{self, env_list, Runner};
use barge_integration::{ctr_cases, docker_cases, sys, wasm_cases};

const CASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Held for the whole run; outside the directories that teardown removes.
const LOCK: &str = "/run/barge-it.lock";

/// The containerd each Docker version runs on (pairs checked in
/// integration/scripts/README.md).
fn containerd_for_docker(docker: &str) -> &'static str {
    match docker {
        "26" => "1.7",
        _ => "2.1",
    }
}

fn main() {
    runner::capture_panics();
    runner::handle_interrupts();
    let mut r = Runner::from_env();
    let code = run(&mut r);
    std::process::exit(code);
}

fn run(r: &mut Runner) -> i32 {
    let shim = match shim_binary() {
        Ok(s) => s,
        Err(e) => {
            r.fail("setup", format!("{e:#}"));
            return r.finish();
        }
    };
    let executors: Vec<Executor> = match env_list("BARGE_IT_EXECUTORS", "native,oci-binary,wasm")
        .iter()
        .map(|e| Executor::parse(e))
        .collect()
    {
        Ok(v) => v,
        Err(e) => {
            r.fail("setup", format!("{e:#}"));
            return r.finish();
        }
    };
    // Runs share instance names (c16, d26, ...): one run at a time.
    let lock = sys::lock_file(std::path::Path::new(LOCK), || {
        eprintln!("waiting for another integration run to finish (lock {LOCK})")
    });
    let _lock = match lock {
        Ok(l) => l,
        Err(e) => {
            r.fail("setup", format!("{e:#}"));
            return r.finish();
        }
    };
    eprintln!("shim under test: {}", shim.display());

    let busybox_cases = ctr_cases::cases();
    let wasm_ctr_cases = wasm_cases::ctr_cases();
    let ctr_cases_for = |e: Executor| match e {
        Executor::Wasm => &wasm_ctr_cases,
        _ => &busybox_cases,
    };
    for version in env_list("BARGE_IT_CONTAINERD", "1.6,1.7,2.1,2.3") {
        let prefix = format!("c{version}");
        let names: Vec<String> = executors
            .iter()
            .flat_map(|e| {
                let prefix = &prefix;
                ctr_cases_for(*e)
                    .iter()
                    .map(move |c| format!("{prefix}/{}/{}", e.name(), c.name))
            })
            .collect();
        if !r.any_selected(names.iter().map(String::as_str)) || runner::interrupted() {
            continue;
        }
        let cd = match Containerd::start(&version, &format!("c{}", version.replace('.', "")), &shim)
        {
            Ok(cd) => cd,
            Err(e) => {
                r.fail(&format!("{prefix}/setup"), format!("{e:#}"));
                continue;
            }
        };
        for &executor in &executors {
            let pass = format!("{prefix}/{}", executor.name());
            let ctr_cases = ctr_cases_for(executor);
            if !r.any_selected(
                ctr_cases
                    .iter()
                    .map(|c| format!("{pass}/{}", c.name))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str),
            ) {
                continue;
            }
            let ctx = match CtrCtx::new(&cd, executor) {
                Ok(ctx) => ctx,
                Err(e) => {
                    r.fail(&format!("{pass}/setup"), format!("{e:#}"));
                    continue;
                }
            };
            for case in ctr_cases {
                let name = format!("{pass}/{}", case.name);
                r.run(
                    &name,
                    CASE_TIMEOUT,
                    || {
                        ctx.begin(&name);
                        (case.run)(&ctx)
                    },
                    || ctx.check_leaks(),
                );
            }
        }
        drop(cd);
    }

    let docker_cases = docker_cases::cases();
    let runs_under =
        |c: &docker_cases::DockerCase, e: Executor| c.only.map_or(e != Executor::Wasm, |o| o == e);
    for version in env_list("BARGE_IT_DOCKER", "26,28") {
        let prefix = format!("d{version}");
        // Wasm images need containerd's image store, which changes how
        // Docker keeps every image: the Wasm pass gets a dockerd of its own.
        let linux: Vec<Executor> = executors
            .iter()
            .copied()
            .filter(|e| *e != Executor::Wasm)
            .collect();
        let wasm: Vec<Executor> = executors
            .iter()
            .copied()
            .filter(|e| *e == Executor::Wasm)
            .collect();
        for (passes, image_store, name) in [
            (linux, false, format!("d{version}")),
            (wasm, true, format!("d{version}w")),
        ] {
            let names: Vec<String> = passes
                .iter()
                .flat_map(|e| {
                    let prefix = &prefix;
                    docker_cases
                        .iter()
                        .filter(move |c| runs_under(c, *e))
                        .map(move |c| format!("{prefix}/{}/{}", e.name(), c.name))
                })
                .collect();
            if !r.any_selected(names.iter().map(String::as_str)) || runner::interrupted() {
                continue;
            }
            let cversion = containerd_for_docker(&version);
            let started = Containerd::start(cversion, &format!("{name}c"), &shim)
                .and_then(|cd| Dockerd::start(&version, &name, cd, image_store));
            let d = match started {
                Ok(d) => d,
                Err(e) => {
                    r.fail(&format!("{prefix}/setup"), format!("{e:#}"));
                    continue;
                }
            };
            eprintln!(
                "docker {version} on containerd {cversion}{}",
                if image_store {
                    " with the containerd image store"
                } else {
                    ""
                }
            );
            for &executor in &passes {
                let ctx = match DockerCtx::new(&d, executor) {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        r.fail(
                            &format!("{prefix}/{}/setup", executor.name()),
                            format!("{e:#}"),
                        );
                        continue;
                    }
                };
                for case in docker_cases.iter().filter(|c| runs_under(c, executor)) {
                    let name = format!("{prefix}/{}/{}", executor.name(), case.name);
                    r.run(
                        &name,
                        CASE_TIMEOUT,
                        || {
                            ctx.begin();
                            (case.run)(&ctx)
                        },
                        || ctx.check_leaks(),
                    );
                }
            }
            drop(d);
        }
    }
    r.finish()
}
