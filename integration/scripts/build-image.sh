#!/usr/bin/env bash
# build-image.sh [OUT]   (default OUT: /opt/barge-test/images/busybox.tar)
#
# Builds docker.io/library/busybox:latest (linux/amd64, cmd "sh") from Debian's
# busybox-static without any registry, with umoci.  One tar serves both:
#   * an OCI image layout (oci-layout, index.json, blobs/) whose index entry is
#     annotated io.containerd.image.name=docker.io/library/busybox:latest, and
#   * a docker-save style manifest.json (RepoTags busybox:latest) pointing at
#     the same blobs.
# Import with (checked on containerd 1.6.20, 1.7.24, 2.1.9, docker 26.1.5, 28.5.2):
#   ctr -a SOCK -n NS image import OUT          -> docker.io/library/busybox:latest
#   docker -H SOCK load -i OUT                  -> busybox:latest
# No --all-platforms / --index-name / --base-name flags are needed.
# Rebuilt only when OUT is missing or older than this script or /bin/busybox.
set -euo pipefail

OUT=${1:-/opt/barge-test/images/busybox.tar}
BB=/bin/busybox
if [ -s "$OUT" ] && [ "$OUT" -nt "$0" ] && [ "$OUT" -nt "$BB" ]; then
  echo "$OUT is up to date"; exit 0
fi
command -v umoci >/dev/null && command -v jq >/dev/null && [ -x "$BB" ] ||
  { echo "needs umoci, jq and busybox-static (run install.sh)" >&2; exit 1; }
# busybox-static is a static binary: nothing else goes into the rootfs.
! ldd "$BB" >/dev/null 2>&1 || { echo "$BB is not static" >&2; exit 1; }

W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
R=$W/rootfs
umask 022

# ---- rootfs ----
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,root,home/app,dev,proc,sys,run,var/tmp,tmp}
chmod 1777 "$R/tmp" "$R/var/tmp"; chmod 700 "$R/root"
install -m 0755 "$BB" "$R/bin/busybox"
for a in $("$BB" --list-full); do
  [ "$a" = bin/busybox ] || ln -sf /bin/busybox "$R/$a"
done
cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
app:x:1000:
nogroup:x:65534:
EOF
echo busybox >"$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
: >"$R/etc/resolv.conf"
chown 1000:1000 "$R/home/app"

# ---- OCI layout ----
L=$W/oci
umoci init --layout "$L"
umoci new --image "$L:latest"
umoci insert --image "$L:latest" --history.created_by "build-image.sh" "$R" /
umoci config --image "$L:latest" --os linux --architecture amd64 \
  --config.cmd sh --config.workingdir / \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umoci gc --layout "$L"

# Name for containerd, and a docker-save manifest.json for `docker load`.
jq '.manifests[0].annotations["io.containerd.image.name"] = "docker.io/library/busybox:latest"
    | .manifests[0].platform = {architecture: "amd64", os: "linux"}' \
  "$L/index.json" >"$W/index.json" && mv "$W/index.json" "$L/index.json"
mdg=$(jq -r '.manifests[0].digest' "$L/index.json")
mf=$L/blobs/sha256/${mdg#sha256:}
jq '[{Config: ("blobs/sha256/" + (.config.digest | sub("^sha256:"; ""))),
      RepoTags: ["busybox:latest"],
      Layers: [.layers[].digest | "blobs/sha256/" + sub("^sha256:"; "")]}]' "$mf" >"$L/manifest.json"
jq -e '.os == "linux" and .architecture == "amd64"' \
  "$L/blobs/sha256/$(jq -r '.config.digest | sub("^sha256:"; "")' "$mf")" >/dev/null

mkdir -p "$(dirname "$OUT")"
tar -C "$L" --sort=name --owner=0 --group=0 --numeric-owner -cf "$OUT.tmp" oci-layout index.json manifest.json blobs
mv "$OUT.tmp" "$OUT"
echo "built $OUT ($(du -h "$OUT" | cut -f1)): docker.io/library/busybox:latest, manifest $mdg"
