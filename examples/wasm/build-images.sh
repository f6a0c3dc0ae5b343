#!/usr/bin/env bash
# build-images.sh FIXTURES_DIR OUT_DIR
#
# Builds Wasm images from the fixtures that `barge-wasm-fixtures` wrote into
# FIXTURES_DIR, without any registry, as tars that are an OCI image layout
# (oci-layout, index.json, blobs/) whose index entry is annotated with
# io.containerd.image.name.  The images:
#
#   wasm-hello.tar     docker.io/barge/wasm-hello:latest: an ordinary image.
#                      One tar layer with every fixture at / and
#                      /data/greeting.txt; Entrypoint ["/hello.wasm"];
#                      platform wasi/wasm32.  Also a docker-save manifest.json,
#                      so `docker load` names it barge/wasm-hello:latest.
#   wasm-layer.tar     docker.io/barge/wasm-layer:latest: an OCI image config
#                      (wasi/wasm, no diff_ids) and one layer of media type
#                      application/wasm holding hello.wasm's bytes.
#   wasm-component-layer.tar
#                      docker.io/barge/wasm-component-layer:latest: the same
#                      with component.wasm in a layer of media type
#                      application/vnd.bytecodealliance.wasm.component.layer.v0+wasm.
#   wasm-artifact.tar  docker.io/barge/wasm-artifact:latest: the CNCF Wasm OCI
#                      artifact: config application/vnd.wasm.config.v0+json
#                      (os wasip1) and one application/vnd.wasm.content.layer.v1+wasm
#                      layer holding hello.wasm.
#   wasm-artifact-component.tar
#                      docker.io/barge/wasm-artifact-component:latest: the same
#                      for component.wasm (os wasip2, with the config's
#                      "component" object from components.json).
#
# Import:  ctr -a SOCK image import OUT_DIR/wasm-hello.tar
#          docker -H unix://SOCK load -i OUT_DIR/wasm-hello.tar
# What each containerd and Docker version does with them: examples/wasm/README.md.
#
# Needs bash and python3 (standard library only).  Same inputs, same bytes:
# every timestamp is SOURCE_DATE_EPOCH (default 1735689600, 2025-01-01).
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 FIXTURES_DIR OUT_DIR" >&2; exit 2; }
FIXTURES=$1
OUT=$2
for f in hello.wasm hello.wat component.wasm http.wasm no-start.wasm bad-import.wasm \
         invalid.wasm components.json; do
  [ -f "$FIXTURES/$f" ] || {
    echo "$FIXTURES/$f is missing: run cargo run -p barge-wasm-fixtures -- $FIXTURES" >&2
    exit 1
  }
done
command -v python3 >/dev/null || { echo "needs python3" >&2; exit 1; }
mkdir -p "$OUT"

python3 - "$FIXTURES" "$OUT" <<'PY'
import hashlib, io, json, os, sys, tarfile, time

fixtures, out = sys.argv[1], sys.argv[2]
epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "1735689600"))  # 2025-01-01
created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
WASM_LAYER = "application/wasm"
COMPONENT_LAYER = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"
WASM_CONFIG = "application/vnd.wasm.config.v0+json"
WASM_CONTENT_LAYER = "application/vnd.wasm.content.layer.v1+wasm"


def read(name):
    with open(os.path.join(fixtures, name), "rb") as f:
        return f.read()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    """An OCI image layout held in memory, written out as one tar."""

    def __init__(self):
        self.blobs = {}

    def add(self, media_type, data, **extra):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return dict(mediaType=media_type, digest=digest, size=len(data), **extra)

    def write(self, path, name, target, docker_manifest=None):
        # The entry has no "platform": with a non-host platform there,
        # `ctr image import` filters the image out ("image might be filtered
        # out") unless given --all-platforms or --platform.
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [dict(target, annotations={
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
            })],
        }
        files = [("oci-layout", canonical({"imageLayoutVersion": "1.0.0"})),
                 ("index.json", canonical(index))]
        if docker_manifest is not None:
            files.append(("manifest.json", canonical(docker_manifest)))
        files += [("blobs/sha256/" + d.split(":", 1)[1], b)
                  for d, b in sorted(self.blobs.items())]
        tmp = path + ".tmp"
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for dname in ("blobs", "blobs/sha256"):
                tar.addfile(entry(dname, dir=True))
            for fname, data in files:
                tar.addfile(entry(fname, size=len(data)), io.BytesIO(data))
        os.replace(tmp, path)
        print(f"built {path}: {name}, {target['mediaType']} {target['digest']}")


def entry(name, size=0, mode=0o644, dir=False):
    info = tarfile.TarInfo(name)
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if dir:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size, info.mode = size, mode
    return info


def layer_tar(files):
    """An uncompressed tar layer; files is a list of (path, bytes, mode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({os.path.dirname(p) for p, _, _ in files} - {""})
        for d in dirs:
            tar.addfile(entry(d, dir=True))
        for p, data, mode in files:
            tar.addfile(entry(p, size=len(data), mode=mode), io.BytesIO(data))
    return buf.getvalue()


def image_config(os_, arch, diff_ids, entrypoint):
    return {
        "created": created,
        "architecture": arch,
        "os": os_,
        "config": {"Entrypoint": entrypoint, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": "examples/wasm/build-images.sh"}],
    }


def manifest(layout, config_desc, layers, annotations=None):
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": layers}
    if annotations:
        m["annotations"] = annotations
    return m


# ---- a: wasm-hello, an ordinary image for wasi/wasm32 ----
fx = ["hello.wasm", "hello.wat", "component.wasm", "http.wasm", "no-start.wasm",
      "bad-import.wasm", "invalid.wasm"]
tar = layer_tar([(f, read(f), 0o755 if f.endswith(".wasm") else 0o644) for f in fx]
                + [("data/greeting.txt", b"hi from a file\n", 0o644)])
L = Layout()
layer = L.add(OCI_LAYER, tar)
config = L.add(OCI_CONFIG, canonical(image_config(
    "wasi", "wasm32", [layer["digest"]], ["/hello.wasm"])))
m = L.add(OCI_MANIFEST, canonical(manifest(L, config, [layer])))
docker = [{"Config": "blobs/sha256/" + config["digest"][7:],
           "RepoTags": ["barge/wasm-hello:latest"],
           "Layers": ["blobs/sha256/" + layer["digest"][7:]]}]
L.write(os.path.join(out, "wasm-hello.tar"), "docker.io/barge/wasm-hello:latest", m, docker)


# ---- b: the Wasm bytes as the layer itself, runwasi style ----
def wasm_layer_image(tar_name, image, wasm_file, layer_type):
    L = Layout()
    layer = L.add(layer_type, read(wasm_file),
                  annotations={"org.opencontainers.image.title": wasm_file})
    # No diff_ids: there is no filesystem layer to unpack.
    config = L.add(OCI_CONFIG, canonical(image_config("wasi", "wasm", [], ["/" + wasm_file])))
    m = L.add(OCI_MANIFEST, canonical(manifest(L, config, [layer])))
    L.write(os.path.join(out, tar_name), image, m)


wasm_layer_image("wasm-layer.tar", "docker.io/barge/wasm-layer:latest", "hello.wasm", WASM_LAYER)
wasm_layer_image("wasm-component-layer.tar", "docker.io/barge/wasm-component-layer:latest",
                 "component.wasm", COMPONENT_LAYER)


# ---- c: the CNCF Wasm OCI artifact ----
components = json.loads(read("components.json"))


def artifact(tar_name, image, wasm_file, os_):
    L = Layout()
    layer = L.add(WASM_CONTENT_LAYER, read(wasm_file),
                  annotations={"org.opencontainers.image.title": wasm_file})
    cfg = {"created": created, "author": "barge examples", "architecture": "wasm",
           "os": os_, "layerDigests": [layer["digest"]]}
    if wasm_file in components:
        cfg["component"] = components[wasm_file]
    config = L.add(WASM_CONFIG, canonical(cfg))
    m = L.add(OCI_MANIFEST, canonical(manifest(L, config, [layer], {
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.title": wasm_file,
    })))
    L.write(os.path.join(out, tar_name), image, m)


artifact("wasm-artifact.tar", "docker.io/barge/wasm-artifact:latest", "hello.wasm", "wasip1")
artifact("wasm-artifact-component.tar", "docker.io/barge/wasm-artifact-component:latest",
         "component.wasm", "wasip2")
PY
