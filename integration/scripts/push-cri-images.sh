#!/usr/bin/env bash
# push-cri-images.sh REGISTRY_ADDR [OUTDIR]   (default OUTDIR: /opt/barge-test/cri/images)
#
# Pushes every line of OUTDIR/images.list (build-cri-images.sh) to the plain-HTTP
# registry at REGISTRY_ADDR (host:port, e.g. 127.0.0.1:5000), under the
# reference's path without its registry host:
#   registry.k8s.io/e2e-test-images/busybox:1.29-2 -> REGISTRY_ADDR/e2e-test-images/busybox:1.29-2
# Manifests are copied unchanged (--preserve-digests), so image IDs and digests
# in the registry are the ones built.  Blobs the registry has are skipped.
set -euo pipefail

ADDR=${1:?usage: push-cri-images.sh REGISTRY_ADDR [OUTDIR]}
OUT=${2:-/opt/barge-test/cri/images}
LIST=$OUT/images.list
[ -s "$LIST" ] || { echo "push-cri-images.sh: $LIST is missing (run build-cri-images.sh)" >&2; exit 1; }
command -v skopeo >/dev/null || { echo "push-cri-images.sh: needs skopeo (run install.sh)" >&2; exit 1; }

# Our own policy and auth file: nothing from /etc/containers or ~/.docker is read.
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$T/policy.json"
echo '{}' >"$T/auth.json"

n=0
while read -r ref src; do
  [ -n "$ref" ] || continue
  path=${ref#*/}
  skopeo --policy "$T/policy.json" copy --quiet --preserve-digests \
    --dest-tls-verify=false --dest-authfile "$T/auth.json" \
    "oci:$src" "docker://$ADDR/$path"
  n=$((n + 1))
done <"$LIST"
echo "pushed $n references to $ADDR"
