//! `-info`: containerd 2.0 and later run `containerd-shim-barge-v1 -info`
//! to learn what the runtime is and can do (`ctr plugins inspect-runtime`,
//! CRI's runtime handler features), and 2.2 and later before every create,
//! logging "failed to load runtime info" at ERROR each time it fails.

use std::process::Stdio;

use anyhow::{ensure, Context, Result};
use prost::Message;
use serde_json::Value;

use crate::containerd::RUNTIME;
use crate::containerd_api::Any;
use crate::ctr::{CtrCtx, Executor};
use crate::ctr_cases::CtrCase;

pub fn cases() -> Vec<CtrCase> {
    vec![CtrCase {
        name: "runtime-info",
        run: Box::new(runtime_info),
    }]
}

/// What a RuntimeInfo says, as the case checks it.
#[derive(Debug)]
struct Info {
    name: String,
    /// The `config_path` of the echoed `runtimeoptions.v1.Options`.
    config_path: String,
    /// The OCI features document, if any.
    features: Option<Value>,
}

fn runtime_info(ctx: &CtrCtx) -> Result<()> {
    let (major, minor) = version(&ctx.cd.version);
    let info = if major >= 2 {
        inspect(ctx, Some(RUNTIME))?
    } else {
        // containerd 1.x has no runtime introspection: ask the shim as 2.x does.
        direct(ctx)?
    };
    ensure!(info.name == RUNTIME, "runtime name {:?}", info.name);
    ensure!(
        info.config_path == ctx.executor_toml.display().to_string(),
        "options not echoed back: config_path {:?}",
        info.config_path
    );
    match ctx.executor {
        Executor::OciBinary => {
            // The runtime binary's own features, as runc-v2 answers them.
            let reference = if major >= 2 {
                inspect(ctx, None)?.features
            } else {
                runc_features()?
            };
            ensure!(
                info.features == reference,
                "features {:?}, runc-v2 (reference) {reference:?}",
                info.features
            );
        }
        Executor::Native | Executor::Wasm => {
            check_libcontainer(info.features.as_ref().context("no features document")?)?
        }
    }
    if (major, minor) >= (2, 2) {
        // Each create asks for the info until it is had once.
        for tag in ["a", "b"] {
            let id = ctx.id(tag);
            ctx.run(&id).rm().args(["true"]).ok()?;
        }
        let errors: Vec<String> = ctx
            .case_log()
            .into_iter()
            .filter(|l| l.contains("failed to load runtime info"))
            .collect();
        ensure!(errors.is_empty(), "containerd logged: {errors:?}");
    }
    Ok(())
}

/// The features document `-info` gives for the pass's options (through
/// containerd on 2.x, straight from the shim on 1.x), and runc-v2's on 2.x
/// (`None` on 1.x, which cannot ask it).
pub fn features(ctx: &CtrCtx) -> Result<(Option<Value>, Option<Option<Value>>)> {
    let (major, _) = version(&ctx.cd.version);
    if major >= 2 {
        Ok((
            inspect(ctx, Some(RUNTIME))?.features,
            Some(inspect(ctx, None)?.features),
        ))
    } else {
        Ok((direct(ctx)?.features, None))
    }
}

/// `ctr plugins inspect-runtime`: containerd runs `-info` with the pass's
/// options and decodes the answer (the features through its typeurl
/// registry). `None` is the default runtime, runc-v2, without options.
fn inspect(ctx: &CtrCtx, runtime: Option<&str>) -> Result<Info> {
    let mut cmd = ctx.ctr().args(["plugins", "inspect-runtime"]);
    if let Some(r) = runtime {
        cmd = cmd
            .args(["--runtime", r, "--runtime-config-path"])
            .arg(&ctx.executor_toml);
    }
    let out = cmd.ok()?;
    let v: Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("inspect-runtime printed {:?}", out.stdout))?;
    Ok(Info {
        name: v["Name"].as_str().unwrap_or_default().to_string(),
        config_path: v["Options"]["config_path"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        features: Some(v["Features"].clone()).filter(|f| !f.is_null()),
    })
}

/// `containerd.types.RuntimeInfo`, with the fields the case reads.
#[derive(Clone, PartialEq, prost::Message)]
struct RuntimeInfo {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "3")]
    options: Option<Any>,
    #[prost(message, optional, tag = "4")]
    features: Option<Any>,
}

/// `runtimeoptions.v1.Options`.
#[derive(Clone, PartialEq, prost::Message)]
struct RuntimeOptions {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(string, tag = "2")]
    config_path: String,
    #[prost(string, tag = "3")]
    config_body: String,
}

/// Runs the shim under test with `-info` and the pass's options on stdin,
/// as containerd 2.x writes them.
fn direct(ctx: &CtrCtx) -> Result<Info> {
    let options = Any {
        type_url: "runtimeoptions.v1.Options".into(),
        value: RuntimeOptions {
            config_path: ctx.executor_toml.display().to_string(),
            ..Default::default()
        }
        .encode_to_vec(),
    };
    let mut child = crate::cmd::Cmd::new(&ctx.cd.shim)
        .arg("-info")
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run the shim's -info")?;
    std::io::Write::write_all(
        &mut child.stdin.take().context("stdin")?,
        &options.encode_to_vec(),
    )?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "-info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = RuntimeInfo::decode(out.stdout.as_slice()).context("decode RuntimeInfo")?;
    let echoed = info.options.unwrap_or_default();
    ensure!(
        echoed == options,
        "options not echoed back: {echoed:?}, sent {options:?}"
    );
    let features = match info.features {
        Some(any) => {
            ensure!(
                any.type_url
                    == "types.containerd.io/opencontainers/runtime-spec/1/features/Features",
                "features of type {}",
                any.type_url
            );
            Some(serde_json::from_slice(&any.value).context("features JSON")?)
        }
        None => None,
    };
    Ok(Info {
        name: info.name,
        config_path: RuntimeOptions::decode(echoed.value.as_slice())?.config_path,
        features,
    })
}

/// `runc features` (none from a runc without that command).
fn runc_features() -> Result<Option<Value>> {
    let out = crate::cmd::Cmd::new("runc").arg("features").run()?;
    Ok(out
        .success()
        .then(|| serde_json::from_str(&out.stdout))
        .transpose()?)
}

/// What the document of a libcontainer executor must say here.
fn check_libcontainer(doc: &Value) -> Result<()> {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    ensure!(doc["ociVersionMin"] == "1.0.0", "ociVersionMin in {doc}");
    ensure!(list(&doc["hooks"]).len() == 6, "hooks in {doc}");
    let mounts = list(&doc["mountOptions"]);
    // CRI turns on recursive read-only mounts for the handler from `rro`,
    // which needs mount_setattr(2), Linux 5.12.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let kernel = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    ensure!(
        mounts.iter().any(|o| o == "rro") == (kernel >= (5, 12)),
        "rro on kernel {release:?}: {mounts:?}"
    );
    let linux = &doc["linux"];
    // libcontainer makes no idmapped mounts: CRI must not run user
    // namespaced pods on barge.
    ensure!(
        linux["mountExtensions"]["idmap"]["enabled"] == false,
        "idmap in {linux}"
    );
    ensure!(linux["seccomp"]["enabled"] == true, "seccomp in {linux}");
    let caps = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?;
    let known = caps.trim().parse::<usize>()? + 1;
    ensure!(
        list(&linux["capabilities"]).len() == known.min(41),
        "capabilities in {linux}"
    );
    Ok(())
}

/// `major.minor` of a containerd version such as `2.3`.
pub(crate) fn version(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}
