//! `wasm_layers` against real, private containerd daemons (1.6, 1.7, 2.1
//! from `/opt/barge-test`, see `integration/scripts/install.sh`), with
//! images built here as OCI layout tarballs and imported with `ctr`.
//!
//! ```sh
//! cargo test -p barge-containerd-api --test containerd
//! ```
//!
//! Needs root; skips (and says so) without it, and skips each containerd
//! version that is not installed. `BARGE_API_CONTAINERD` picks the versions
//! (default `1.6,1.7,2.1`), `BARGE_IT_FILTER` a substring of case names.
//!
//! `harness = false`: the cases run one after another on the main thread,
//! so the process is single-threaded between commands and the `threads`
//! case can check that `wasm_layers` leaves no thread behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use barge_containerd_api::{
    thread_count, wait_single_threaded, wasm_layers, wasm_layers_with, Error, Layer, Options,
    WASM_MEDIA_TYPES,
};
use barge_integration::containerd::Containerd;
use barge_integration::runner::{self, env_list, Runner};
use serde_json::json;
use sha2::{Digest, Sha256};

const CASE_TIMEOUT: Duration = Duration::from_secs(60);
/// The smallest Wasm module: magic and version.
const WASM: &[u8] = b"\0asm\x01\0\0\0";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn main() {
    runner::capture_panics();
    runner::handle_interrupts();
    let mut r = Runner::from_env();
    if !is_root() {
        println!("skipped: the containerd tests of barge-containerd-api need root");
        std::process::exit(r.finish());
    }
    for version in env_list("BARGE_API_CONTAINERD", "1.6,1.7,2.1") {
        let bin = format!("/opt/barge-test/containerd-{version}/bin/containerd");
        if !Path::new(&bin).exists() {
            println!("skipped: containerd {version} ({bin} is missing; run integration/scripts/install.sh)");
            continue;
        }
        run_version(&mut r, &version);
    }
    std::process::exit(r.finish());
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

type Case = fn(&Env) -> Result<()>;

const CASES: &[(&str, Case)] = &[
    ("wasm-layer", case_wasm_layer),
    ("threads", case_threads),
    ("multi-chunk-layer", case_multi_chunk_layer),
    ("index-picks-wasm-platform", case_index_picks_wasm_platform),
    ("no-wasm-layers", case_no_wasm_layers),
    ("no-image", case_no_image),
    ("missing-container", case_missing_container),
    ("missing-image", case_missing_image),
    ("deleted-blob", case_deleted_blob),
    ("tampered-blob", case_tampered_blob),
    ("too-large", case_too_large),
    ("inside-a-runtime", case_inside_a_runtime),
];

fn run_version(r: &mut Runner, version: &str) {
    let name = format!("api{}", version.replace('.', ""));
    if !r.any_selected(CASES.iter().map(|(c, _)| *c)) {
        return;
    }
    // No shim is ever started here: containers are records only.
    let cd = match Containerd::start(version, &name, Path::new("/nonexistent/barge-shim")) {
        Ok(cd) => cd,
        Err(e) => {
            r.fail(&format!("containerd-{version}"), format!("{e:#}"));
            return;
        }
    };
    let work = cd.dirs.run.join("work");
    if let Err(e) = std::fs::create_dir_all(&work) {
        r.fail(&format!("containerd-{version}"), e);
        return;
    }
    for (case, f) in CASES {
        let env = Env {
            cd: &cd,
            ns: cd.namespace(case),
            work: work.join(case),
            version,
        };
        r.run(
            &format!("containerd-{version}/{case}"),
            CASE_TIMEOUT,
            || f(&env),
            || Ok(()),
        );
    }
    // Dropping `cd` stops containerd and removes its directories.
}

struct Env<'a> {
    cd: &'a Containerd,
    ns: String,
    work: PathBuf,
    version: &'a str,
}

impl Env<'_> {
    fn address(&self) -> String {
        self.cd.address()
    }

    fn ctr(&self, args: &[&str]) -> Result<String> {
        Ok(self.cd.ctr(&self.ns).args(args).ok()?.stdout)
    }

    /// Imports an OCI layout tarball without unpacking it, for every
    /// platform (a `wasip1/wasm` manifest is filtered out otherwise).
    fn import(&self, tar: &Path) -> Result<()> {
        self.cd
            .ctr(&self.ns)
            .args(["images", "import", "--all-platforms", "--no-unpack"])
            .arg(tar)
            .timeout(Duration::from_secs(60))
            .ok()?;
        Ok(())
    }

    /// Creates container `id` from `image` with `ctr containers create`. When
    /// ctr refuses (containerd 1.6 before 1.6.25 cannot unpack an image with
    /// non-filesystem layers), creates the record through the Containers API
    /// instead, as a client that needs no snapshot would.
    fn create_container(&self, id: &str, image: &str) -> Result<()> {
        let out = self
            .cd
            .ctr(&self.ns)
            .args(["containers", "create", image, id])
            .run()?;
        if out.success() {
            return Ok(());
        }
        println!(
            "        note: containerd {}: `ctr containers create {image}` failed ({}); creating the record through the API",
            self.version,
            out.stderr.trim()
        );
        barge_integration::containerd_api::create_container(
            &self.address(),
            &self.ns,
            &barge_integration::containerd_api::NewContainer {
                id,
                image,
                runtime: "io.containerd.runc.v2",
                spec: b"{}",
                snapshot: None,
                runtime_options: None,
            },
        )
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.cd
            .root_dir
            .join("io.containerd.content.v1.content/blobs/sha256")
            .join(hex)
    }
}

// ---------------------------------------------------------------- images

struct Blob {
    media_type: String,
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, bytes: impl Into<Vec<u8>>) -> Blob {
        let bytes = bytes.into();
        Blob {
            media_type: media_type.into(),
            digest: format!("sha256:{:x}", Sha256::digest(&bytes)),
            bytes,
        }
    }

    fn json(media_type: &str, value: serde_json::Value) -> Blob {
        Blob::new(media_type, serde_json::to_vec(&value).unwrap())
    }

    fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// The host's architecture as OCI names it (what ctr unpacks).
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An empty tar archive: a real, unpackable filesystem layer.
fn empty_tar_layer() -> Blob {
    Blob::new(TAR_LAYER, vec![0u8; 1024])
}

/// One platform's manifest: its layers, and the config whose
/// `rootfs.diff_ids` lists the filesystem (tar) layers only.
struct ManifestSpec {
    os: &'static str,
    arch: &'static str,
    layers: Vec<Blob>,
}

impl ManifestSpec {
    fn new(os: &'static str, arch: &'static str, layers: Vec<Blob>) -> ManifestSpec {
        ManifestSpec { os, arch, layers }
    }

    /// Adds the config and manifest to `blobs`; returns the manifest.
    fn build(&self, blobs: &mut Vec<Blob>) -> Blob {
        let diff_ids: Vec<&str> = self
            .layers
            .iter()
            .filter(|l| l.media_type == TAR_LAYER)
            .map(|l| l.digest.as_str())
            .collect();
        let config = Blob::json(
            OCI_CONFIG,
            json!({
                "architecture": self.arch,
                "os": self.os,
                "config": {"Entrypoint": ["/app.wasm"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }),
        );
        let manifest = Blob::json(
            OCI_MANIFEST,
            json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": self.layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
            }),
        );
        blobs.push(config);
        blobs.extend(
            self.layers
                .iter()
                .map(|l| Blob::new(&l.media_type, l.bytes.clone())),
        );
        manifest
    }

    fn platform(&self) -> serde_json::Value {
        json!({"os": self.os, "architecture": self.arch})
    }
}

/// Writes an OCI layout tarball for image `name`. With one manifest, the
/// image's target is that manifest; with several, a nested index that lists
/// them (as multi-platform exports do).
fn oci_tar(dir: &Path, name: &str, manifests: &[ManifestSpec]) -> Result<PathBuf> {
    let layout = dir.join("layout");
    let blob_dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir)?;
    let mut blobs = Vec::new();
    let mut entries = Vec::new();
    for m in manifests {
        let manifest = m.build(&mut blobs);
        let mut d = manifest.descriptor();
        d["platform"] = m.platform();
        entries.push(d);
        blobs.push(manifest);
    }
    let annotations = json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": "latest",
    });
    let top = if entries.len() == 1 {
        let mut d = entries.pop().unwrap();
        d["annotations"] = annotations;
        d
    } else {
        let index = Blob::json(
            OCI_INDEX,
            json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
        );
        let mut d = index.descriptor();
        d["annotations"] = annotations;
        blobs.push(index);
        d
    };
    for b in &blobs {
        let hex = b.digest.strip_prefix("sha256:").unwrap();
        std::fs::write(blob_dir.join(hex), &b.bytes)?;
    }
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]}),
        )?,
    )?;
    let tar = dir.join("image.tar");
    let out = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tar)
        .args(["oci-layout", "index.json", "blobs"])
        .output()
        .context("run tar")?;
    ensure!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(tar)
}

/// Imports a one-manifest `wasip1/wasm` image with a single `application/wasm`
/// layer of `bytes` and creates container `id` from it; returns the layer.
fn wasm_container(env: &Env, id: &str, image: &str, bytes: &[u8]) -> Result<Blob> {
    std::fs::create_dir_all(&env.work)?;
    let layer = Blob::new("application/wasm", bytes);
    let tar = oci_tar(
        &env.work,
        image,
        &[ManifestSpec::new(
            "wasip1",
            "wasm",
            vec![Blob::new(&layer.media_type, layer.bytes.clone())],
        )],
    )?;
    env.import(&tar)?;
    env.create_container(id, image)?;
    Ok(layer)
}

fn assert_layers(got: &[Layer], want: &[&Blob]) -> Result<()> {
    ensure!(
        got.len() == want.len(),
        "{} layers, want {}: {got:?}",
        got.len(),
        want.len()
    );
    for (g, w) in got.iter().zip(want) {
        ensure!(g.media_type == w.media_type, "{g:?}: want {}", w.media_type);
        ensure!(g.digest == w.digest, "{g:?}: want {}", w.digest);
        ensure!(g.bytes == w.bytes, "{g:?}: bytes differ");
    }
    Ok(())
}

// ----------------------------------------------------------------- cases

fn case_wasm_layer(env: &Env) -> Result<()> {
    let layer = wasm_container(env, "c1", "example.com/barge/one:latest", WASM)?;
    let got = wasm_layers(&env.address(), &env.ns, "c1")?;
    assert_layers(&got, &[&layer])?;
    ensure!(got[0].bytes == WASM);
    // containerd's own form of the address, with the scheme.
    let got = wasm_layers(&format!("unix://{}", env.address()), &env.ns, "c1")?;
    assert_layers(&got, &[&layer])
}

fn case_threads(env: &Env) -> Result<()> {
    wasm_container(env, "c1", "example.com/barge/threads:latest", WASM)?;
    let mut times = Vec::new();
    for _ in 0..20 {
        // `ctr` ran through threads that read its output; let them go.
        ensure!(
            wait_single_threaded(Duration::from_secs(2)),
            "the test has {:?} threads before the call",
            thread_count()
        );
        let start = Instant::now();
        let got = wasm_layers(&env.address(), &env.ns, "c1")?;
        times.push(start.elapsed());
        // No waiting here: wasm_layers must already be down to one thread.
        let n = thread_count();
        ensure!(n == Some(1), "Threads: {n:?} right after wasm_layers");
        ensure!(got.len() == 1);
    }
    times.sort();
    println!(
        "        containerd {}: wasm_layers took min {:.2} ms, median {:.2} ms, max {:.2} ms over {} calls",
        env.version,
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    );
    Ok(())
}

/// A layer of several of containerd's 1 MiB read chunks, not a whole number
/// of them.
fn case_multi_chunk_layer(env: &Env) -> Result<()> {
    let mut bytes = WASM.to_vec();
    let mut x: u32 = 1;
    bytes.extend((0..(5 << 20) + 123).map(|_| {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (x >> 16) as u8
    }));
    let layer = wasm_container(env, "c1", "example.com/barge/big:latest", &bytes)?;
    let start = Instant::now();
    let got = wasm_layers(&env.address(), &env.ns, "c1")?;
    let took = start.elapsed();
    assert_layers(&got, &[&layer])?;
    println!(
        "        containerd {}: a {} byte layer read in {:.1} ms",
        env.version,
        bytes.len(),
        ms(took)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn case_index_picks_wasm_platform(env: &Env) -> Result<()> {
    std::fs::create_dir_all(&env.work)?;
    let image = "example.com/barge/multi:latest";
    let component = Blob::new(
        "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
        b"\0asm\x0d\0\x01\0".to_vec(),
    );
    let content = Blob::new(
        "application/vnd.wasm.content.layer.v1+wasm",
        b"\0asm\x01\0\0\0\0".to_vec(),
    );
    let copy = |b: &Blob| Blob::new(&b.media_type, b.bytes.clone());
    let tar = oci_tar(
        &env.work,
        image,
        &[
            ManifestSpec::new("linux", host_arch(), vec![empty_tar_layer()]),
            ManifestSpec::new(
                "wasip2",
                "wasm32",
                vec![
                    copy(&component),
                    Blob::new("application/vnd.example.not-wasm", b"x".to_vec()),
                    copy(&content),
                ],
            ),
        ],
    )?;
    env.import(&tar)?;
    let target = env.ctr(&["images", "ls"])?;
    ensure!(
        target.contains(OCI_INDEX),
        "the image is not an index: {target}"
    );
    env.create_container("c1", image)?;
    let got = wasm_layers(&env.address(), &env.ns, "c1")?;
    assert_layers(&got, &[&component, &content])?;
    for l in &got {
        ensure!(WASM_MEDIA_TYPES.contains(&l.media_type.as_str()));
    }
    Ok(())
}

fn case_no_wasm_layers(env: &Env) -> Result<()> {
    std::fs::create_dir_all(&env.work)?;
    let image = "example.com/barge/plain:latest";
    let tar = oci_tar(
        &env.work,
        image,
        &[ManifestSpec::new(
            "linux",
            host_arch(),
            vec![empty_tar_layer()],
        )],
    )?;
    env.import(&tar)?;
    env.create_container("c1", image)?;
    let got = wasm_layers(&env.address(), &env.ns, "c1")?;
    ensure!(got.is_empty(), "{got:?}");
    Ok(())
}

fn case_no_image(env: &Env) -> Result<()> {
    let rootfs = env.work.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    env.ctr(&[
        "containers",
        "create",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "c1",
    ])?;
    let got = wasm_layers(&env.address(), &env.ns, "c1")?;
    ensure!(got.is_empty(), "{got:?}");
    Ok(())
}

fn case_missing_container(env: &Env) -> Result<()> {
    let err = wasm_layers(&env.address(), &env.ns, "no-such-container").unwrap_err();
    ensure!(matches!(err, Error::ContainerNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    ensure!(msg.contains("\"no-such-container\""), "{msg}");
    ensure!(msg.contains(&env.ns), "{msg}");
    ensure!(msg.contains(&env.address()), "{msg}");
    println!("        error: {msg}");
    Ok(())
}

fn case_missing_image(env: &Env) -> Result<()> {
    let image = "example.com/barge/removed:latest";
    wasm_container(env, "c1", image, WASM)?;
    env.ctr(&["images", "rm", image])?;
    let err = wasm_layers(&env.address(), &env.ns, "c1").unwrap_err();
    ensure!(matches!(err, Error::ImageNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    ensure!(msg.contains(image), "{msg}");
    println!("        error: {msg}");
    Ok(())
}

fn case_deleted_blob(env: &Env) -> Result<()> {
    let layer = wasm_container(env, "c1", "example.com/barge/deleted:latest", WASM)?;
    env.ctr(&["content", "rm", &layer.digest])?;
    let err = wasm_layers(&env.address(), &env.ns, "c1").unwrap_err();
    ensure!(matches!(err, Error::BlobMissing { .. }), "{err:?}");
    let msg = err.to_string();
    ensure!(msg.contains(&layer.digest), "{msg}");
    ensure!(msg.contains("application/wasm"), "{msg}");
    println!("        error: {msg}");
    Ok(())
}

fn case_tampered_blob(env: &Env) -> Result<()> {
    // Bytes of its own, so that no other case shares the blob file.
    let bytes = b"\0asm\x01\0\0\0\0\x04\x03tmp".to_vec();
    let layer = wasm_container(env, "c1", "example.com/barge/tampered:latest", &bytes)?;
    let path = env.blob_path(&layer.digest);
    ensure!(path.is_file(), "{} is not there", path.display());
    let mut wrong = bytes.clone();
    *wrong.last_mut().unwrap() = b'X';
    std::fs::write(&path, &wrong)?;
    let err = wasm_layers(&env.address(), &env.ns, "c1").unwrap_err();
    ensure!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    ensure!(msg.contains(&layer.digest), "{msg}");
    ensure!(
        msg.contains(&format!("sha256:{:x}", Sha256::digest(&wrong))),
        "{msg}"
    );
    println!("        error: {msg}");
    Ok(())
}

fn case_too_large(env: &Env) -> Result<()> {
    let layer = wasm_container(env, "c1", "example.com/barge/large:latest", WASM)?;
    let options = Options {
        max_layer_size: 4,
        ..Options::default()
    };
    let err = wasm_layers_with(&env.address(), &env.ns, "c1", &options).unwrap_err();
    ensure!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    let msg = err.to_string();
    ensure!(msg.contains(&layer.digest), "{msg}");
    println!("        error: {msg}");
    Ok(())
}

fn case_inside_a_runtime(env: &Env) -> Result<()> {
    let layer = wasm_container(env, "c1", "example.com/barge/nested:latest", WASM)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let got = rt.block_on(async { wasm_layers(&env.address(), &env.ns, "c1") })?;
    assert_layers(&got, &[&layer])
}
