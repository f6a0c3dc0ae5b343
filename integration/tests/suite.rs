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
//! (`native,oci-binary,wasm`), `BARGE_IT_CRI` (`1.7,2.1,2.3`: the CRI
//! containerds that run critest), `BARGE_IT_FILTER` (a substring of case
//! names), `BARGE_IT_DEBUG` (containerd at debug level), `BARGE_IT_LOG_DIR`
//! (where daemon logs are kept).

use std::collections::BTreeMap;
use std::time::Duration;

use barge_integration::containerd::{shim_binary, Containerd};
use barge_integration::cri::{self, CriContainerd, CriImages, Registry};
use barge_integration::critest;
use barge_integration::ctr::{CtrCtx, Executor};
use barge_integration::ctr_cases::CtrCase;
use barge_integration::docker::Dockerd;
use barge_integration::docker_cases::DockerCtx;
use barge_integration::runner::{self, env_list, Runner};
use barge_integration::{
    ctr_cases, docker_cases, fault_cases, output_cases, pod_cases, security_cases, soak, sys,
    wasm_cases,
};

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
    // The native pass on containerd 1.7 and later also puts the shim
    // through the faults of fault_cases.rs.
    let native_faults = fault_cases::native_cases();
    // And the output cases of output_cases.rs (nothing lost, floods), which
    // move a lot of data.
    let native_output = output_cases::cases();
    let ctr_cases_for = |e: Executor, version: &str| -> Vec<&CtrCase> {
        let mut cases: Vec<&CtrCase> = match e {
            Executor::Wasm => wasm_ctr_cases.iter().collect(),
            _ => busybox_cases.iter().collect(),
        };
        if e == Executor::Native && version != "1.6" {
            cases.extend(&native_faults);
            cases.extend(&native_output);
        }
        cases
    };
    for version in env_list("BARGE_IT_CONTAINERD", "1.6,1.7,2.1,2.3") {
        let prefix = format!("c{version}");
        let mut names: Vec<String> = executors
            .iter()
            .flat_map(|e| {
                let prefix = &prefix;
                ctr_cases_for(*e, &version)
                    .into_iter()
                    .map(move |c| format!("{prefix}/{}/{}", e.name(), c.name))
            })
            .collect();
        names.extend(soak::suite_case(&version));
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
            let ctr_cases = ctr_cases_for(executor, &version);
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
        // The short soak (issue 11): its own namespace; it checks its
        // leaks itself and removes what it finds.
        if let Some(name) = soak::suite_case(&version) {
            r.run(
                &name,
                soak::SUITE_TIMEOUT,
                || soak::short_case(&cd),
                || cd.check_running(),
            );
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
    if env_list("BARGE_IT_DOCKER", "26,28")
        .iter()
        .any(|v| v == security_cases::USERNS_REMAP_DOCKER)
    {
        let cversion = containerd_for_docker(security_cases::USERNS_REMAP_DOCKER);
        security_cases::run_docker_userns_remap(r, &shim, &executors, cversion);
    }
    run_cri(r, &shim, &env_list("BARGE_IT_CRI", "1.7,2.1,2.3"));
    r.finish()
}

/// A critest run, and the leak check after it, get this long.
const CRITEST_CASE_TIMEOUT: Duration = Duration::from_secs(22 * 60);

/// The CRI cases of containerd `version`, in the order they run.
fn cri_case_names(version: &str) -> Vec<String> {
    let prefix = format!("k{version}");
    let mut names = vec![format!("{prefix}/crictl-pod")];
    names.extend(
        pod_cases::cases(&cri::handlers(version))
            .iter()
            .chain(&security_cases::pod_cases(version))
            .map(|c| format!("{prefix}/{}", c.name)),
    );
    for h in cri::handlers(version) {
        names.push(format!("{prefix}/critest-{h}"));
        if let Some(c) = compare_case(h) {
            names.push(format!("{prefix}/{c}"));
        }
    }
    names
}

/// The case that compares handler `h` with runc-v2.
fn compare_case(h: &str) -> Option<&'static str> {
    match h {
        cri::HANDLER_BARGE => Some("critest-compare"),
        cri::HANDLER_SANDBOX => Some("critest-compare-sandbox"),
        _ => None,
    }
}

/// CRI: one loopback registry for the run; per containerd version, a
/// pod through crictl, then critest for each handler, each barge handler
/// compared with runc-v2.
fn run_cri(r: &mut Runner, shim: &std::path::Path, versions: &[String]) {
    let all: Vec<String> = versions.iter().flat_map(|v| cri_case_names(v)).collect();
    if !r.any_selected(all.iter().map(String::as_str)) || runner::interrupted() {
        return;
    }
    let started = CriImages::load()
        .and_then(|images| Registry::start(&images).map(|registry| (images, registry)));
    let (images, registry) = match started {
        Ok(v) => v,
        Err(e) => {
            r.fail("k/setup", format!("{e:#}"));
            return;
        }
    };
    for version in versions {
        let prefix = format!("k{version}");
        let names = cri_case_names(version);
        if !r.any_selected(names.iter().map(String::as_str)) || runner::interrupted() {
            continue;
        }
        let started = registry
            .check_running()
            .and_then(|_| CriContainerd::start(version, shim, &registry, &images));
        let cri = match started {
            Ok(c) => c,
            Err(e) => {
                r.fail(&format!("{prefix}/setup"), format!("{e:#}"));
                continue;
            }
        };
        let c = &cri;
        r.run(
            &format!("{prefix}/crictl-pod"),
            CASE_TIMEOUT,
            || {
                c.begin();
                cri::pod_case(c)
            },
            || c.check_leaks(),
        );
        for case in pod_cases::cases(&cri.handlers)
            .into_iter()
            .chain(security_cases::pod_cases(version))
        {
            r.run(
                &format!("{prefix}/{}", case.name),
                case.timeout,
                || {
                    c.begin();
                    (case.run)(c)
                },
                || c.check_leaks(),
            );
        }
        let mut reports: BTreeMap<&str, critest::Report> = BTreeMap::new();
        for &h in &cri.handlers {
            r.run(
                &format!("{prefix}/critest-{h}"),
                CRITEST_CASE_TIMEOUT,
                || {
                    c.begin();
                    let report = critest::run(c, h)?;
                    println!("        {prefix}/critest-{h}: {}", report.counts());
                    reports.insert(h, report);
                    Ok(())
                },
                || c.check_leaks(),
            );
            let Some(case) = compare_case(h) else {
                continue;
            };
            r.run(
                &format!("{prefix}/{case}"),
                CASE_TIMEOUT,
                || {
                    let (Some(runc), Some(barge)) = (reports.get(cri::HANDLER_RUNC), reports.get(h))
                    else {
                        anyhow::bail!(
                            "needs the reports of critest-{} and critest-{h} (BARGE_IT_FILTER={prefix}/critest selects them all)",
                            cri::HANDLER_RUNC
                        );
                    };
                    let cmp = critest::compare(runc, barge);
                    let summary = cmp.summary();
                    println!("{summary}");
                    let _ = std::fs::write(critest::summary_path(&c.cd.dirs.name, h), &summary);
                    cmp.check()
                },
                || Ok(()),
            );
        }
        drop(cri);
    }
    drop(registry);
}
