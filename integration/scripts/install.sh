#!/usr/bin/env bash
# Install every integration-test dependency (run as root, non-interactive).
#
#  * Debian 12 packages into the system (containerd 1.6, runc, crun, umoci, ...).
#  * containerd 1.7 + docker 26 (trixie) and containerd 2.1 + docker 28 (sid),
#    fetched through the bookworm mirror with a private apt state and unpacked
#    with `dpkg -x` under /opt/barge-test/<prefix>/root; <prefix>/bin holds
#    symlinks, <prefix>/VERSION the Debian package version.  Nothing from
#    trixie/sid is installed into the system.
#  * containerd 2.3 from ../shared/tools/containerd-2.3.4.tar.xz (next to the
#    checkout) into /opt/barge-test/containerd-2.3/bin, VERSION 2.3.4.
#  * critest, crictl (cri-tools v1.31.1) and a static busybox 1.36.1 from the
#    same folder into /opt/barge-test/cri/bin.
#
# Idempotent: a prefix whose VERSION and bin/ are in place is left alone.
# BARGE_REFRESH=1 re-fetches trixie/sid and re-extracts everything.
# BARGE_TOOLS overrides where containerd 2.3's tarball is looked for.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

OPT=${BARGE_OPT:-/opt/barge-test}
APTDIR=${BARGE_APT_DIR:-/var/cache/barge-test/apt}
REFRESH=${BARGE_REFRESH:-0}
[ "$(id -u)" = 0 ] || { echo "install.sh: must run as root" >&2; exit 1; }
log() { echo "==> $*"; }

# ---- 1. Debian 12 packages -------------------------------------------------
PKGS=(containerd runc crun busybox-static umoci skopeo libseccomp-dev libseccomp2
      pkg-config jq iptables procps psmisc xz-utils ca-certificates
      protobuf-compiler libsystemd0 util-linux tar gzip tini
      docker-registry containernetworking-plugins gcc libc6-dev iproute2)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian 12's containerd enables/starts a systemd unit when systemd runs.
# Our tests use private instances only: make sure no system containerd runs.
if [ -d /run/systemd/system ]; then
  systemctl disable --now containerd.service >/dev/null 2>&1 || true
  # Debian's docker-registry starts a system registry on :5000; the CRI
  # tests run their own on 127.0.0.1 only.
  systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
fi
for pid in $(pgrep -x containerd || true); do
  args=$(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null || true)
  case "$args" in  # the unit runs plain /usr/bin/containerd (no --config/--address)
    "/usr/bin/containerd "|"/usr/bin/containerd") log "stopping system containerd (pid $pid)"; kill "$pid" || true ;;
  esac
done

# ---- 2. trixie / sid packages into prefixes ---------------------------------
# Mirror: the one the system uses for bookworm (deb822 or one-line format).
mirror() {
  apt-cache policy 2>/dev/null | awk '$3 ~ /^bookworm\// {print $2; exit}'
}

declare -A UPDATED=()
apt_suite() {  # apt_suite SUITE apt-get|apt-cache ARGS...  (private state/cache)
  local s=$1 tool=$2; shift 2
  local d=$APTDIR/$s
  "$tool" -q -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State="$d/state" -o Dir::State::status="$d/state/status" \
    -o Dir::Cache="$d/cache" -o APT::Sandbox::User=root \
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false "$@"
}
suite_update() {
  local s=$1 d=$APTDIR/$1
  [ -n "${UPDATED[$s]:-}" ] && return 0
  local m; m=$(mirror)
  if [ -z "$m" ]; then apt-get update -q; m=$(mirror); fi
  [ -n "$m" ] || { echo "cannot find the bookworm mirror in apt's config" >&2; exit 1; }
  mkdir -p "$d/state/lists/partial" "$d/cache/archives/partial"
  touch "$d/state/status"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $m $s main" >"$d/sources.list"
  log "apt-get update ($s from $m)"
  apt_suite "$s" apt-get update >/dev/null
  UPDATED[$s]=1
}

# fetch PREFIX SUITE MAIN_PKG "OTHER_PKGS" "BINS" EXPECT_GLOB
fetch() {
  local prefix=$1 suite=$2 main=$3 others=$4 bins=$5 expect=$6
  local dir=$OPT/$prefix ok=1 b
  [ -s "$dir/VERSION" ] || ok=0
  for b in $bins; do [ -x "$dir/bin/$b" ] || ok=0; done
  if [ "$ok" = 1 ] && [ "$REFRESH" != 1 ]; then return 0; fi

  suite_update "$suite"
  local ver; ver=$(apt_suite "$suite" apt-cache show --no-all-versions "$main" | awk '/^Version:/ {print $2; exit}')
  # shellcheck disable=SC2053
  [[ $ver == $expect ]] || echo "WARNING: $suite $main is $ver, expected $expect; installing it into $prefix anyway" >&2
  log "$prefix: $main $others from $suite ($ver)"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && apt_suite "$suite" apt-get download $main $others >/dev/null)
  rm -rf "$dir"; mkdir -p "$dir/root" "$dir/bin"
  local deb; for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$dir/root"; done
  rm -rf "$tmp"
  for b in $bins; do
    local f; f=$(find "$dir/root/usr/bin" "$dir/root/usr/sbin" -name "$b" \( -type f -o -type l \) 2>/dev/null | head -n1 || true)
    [ -n "$f" ] || { echo "$prefix: $b not found in the packages" >&2; exit 1; }
    ln -sfn "../${f#"$dir"/}" "$dir/bin/$b"  # bin/x -> ../root/usr/bin/x
  done
  echo "$ver" >"$dir/VERSION"
}

CTRD_BINS="containerd ctr containerd-shim-runc-v2"
DOCKER_BINS="dockerd docker docker-proxy"
fetch containerd-1.7 trixie containerd ""         "$CTRD_BINS"   '1.7.*'
fetch docker-26      trixie docker.io  docker-cli "$DOCKER_BINS" '26.*'
fetch containerd-2.1 sid    containerd ""         "$CTRD_BINS"   '2.1.*'
fetch docker-28      sid    docker.io  docker-cli "$DOCKER_BINS" '28.*'

# dockerd looks for docker-init (for --init) next to itself / on PATH.
for p in docker-26 docker-28; do ln -sfn /usr/bin/tini-static "$OPT/$p/bin/docker-init"; done

# containerd 2.3 = the build in the checkout's ../shared/tools (no Debian
# suite has it): unpacked into a temporary prefix, then moved into place.
CTRD23_TAR=containerd-2.3.4.tar.xz
CTRD23_VERSION=2.3.4
TOOLS=${BARGE_TOOLS:-$(realpath -m "$(dirname "$0")/../../../shared/tools")}
unpack_containerd23() {
  local dir=$OPT/containerd-2.3 ok=1 b
  [ "$(cat "$dir/VERSION" 2>/dev/null)" = "$CTRD23_VERSION" ] || ok=0
  for b in $CTRD_BINS; do [ -x "$dir/bin/$b" ] || ok=0; done
  if [ "$ok" = 1 ] && [ "$REFRESH" != 1 ]; then return 0; fi
  local tar=$TOOLS/$CTRD23_TAR
  if [ ! -f "$tar" ]; then
    echo "install.sh: $tar is missing: containerd 2.3 comes from the shared/ folder next to the checkout (../shared/tools; BARGE_TOOLS overrides)" >&2
    exit 1
  fi
  log "containerd-2.3: $CTRD23_TAR from $TOOLS"
  local tmp; tmp=$(mktemp -d "$OPT/.containerd-2.3.XXXXXX")
  mkdir -p "$tmp/bin"
  if ! xz -dc "$tar" | tar -x -C "$tmp/bin"; then
    rm -rf "$tmp"; echo "install.sh: cannot unpack $tar" >&2; exit 1
  fi
  for b in $CTRD_BINS; do
    [ -x "$tmp/bin/$b" ] || { rm -rf "$tmp"; echo "install.sh: $b is not in $tar" >&2; exit 1; }
  done
  echo "$CTRD23_VERSION" >"$tmp/VERSION"
  chmod 755 "$tmp"
  rm -rf "$dir"; mv "$tmp" "$dir"
}
unpack_containerd23

# ---- CRI test tools ---------------------------------------------------------
# critest and crictl (cri-tools v1.31.1) and a static busybox 1.36.1 (the
# applets critest's specs run: ipcs, pgrep, brctl, hostname, httpd, ...),
# from the same ../shared/tools, into $OPT/cri/bin.  build-cri-images.sh makes
# the test images from that busybox.  A tool is unpacked again when its .xz
# is newer than the binary.
CRI_BIN=$OPT/cri/bin
unpack_cri_tool() {  # unpack_cri_tool NAME FILE.xz
  local src=$TOOLS/$2 dst=$CRI_BIN/$1
  if [ -x "$dst" ] && [ "$dst" -nt "$src" ] && [ "$REFRESH" != 1 ]; then return 0; fi
  if [ ! -f "$src" ]; then
    echo "install.sh: $src is missing: the CRI test tools come from the shared/ folder next to the checkout (../shared/tools; BARGE_TOOLS overrides)" >&2
    exit 1
  fi
  log "cri: $1 from $src"
  mkdir -p "$CRI_BIN"
  xz -dc "$src" >"$dst.tmp" || { rm -f "$dst.tmp"; echo "install.sh: cannot unpack $src" >&2; exit 1; }
  chmod 755 "$dst.tmp"; mv "$dst.tmp" "$dst"
}
unpack_cri_tool critest critest.xz
unpack_cri_tool crictl crictl.xz
unpack_cri_tool busybox busybox-1.36.1.xz

# containerd 1.6 = Debian 12's own.
mkdir -p "$OPT/containerd-1.6/bin"
for b in $CTRD_BINS; do ln -sfn "/usr/bin/$b" "$OPT/containerd-1.6/bin/$b"; done
dpkg-query -W -f='${Version}\n' containerd >"$OPT/containerd-1.6/VERSION"

# ---- 3. verify + summary ----------------------------------------------------
log "summary"
fail=0
check() {  # print the first line of "$@" that has a version number
  local out; out=$("$@" 2>&1 | grep -m1 -E '[0-9]+\.[0-9]+\.[0-9]' | sed 's/^[[:space:]]*//' || true)
  if [ -n "$out" ]; then printf '  %-42s %s\n' "${1#"$OPT"/}" "$out"; else printf '  %-42s FAILED\n' "$1"; fail=1; fi; }
for p in containerd-1.6 containerd-1.7 containerd-2.1 containerd-2.3; do
  echo "$p ($(cat "$OPT/$p/VERSION"))"
  check "$OPT/$p/bin/containerd" --version
  check "$OPT/$p/bin/ctr" --version
  check "$OPT/$p/bin/containerd-shim-runc-v2" -v
done
for p in docker-26 docker-28; do
  echo "$p ($(cat "$OPT/$p/VERSION"))"
  check "$OPT/$p/bin/dockerd" --version
  check "$OPT/$p/bin/docker" --version
  check "$OPT/$p/bin/docker-proxy" --version
  check "$OPT/$p/bin/docker-init" --version
done
echo "cri"
check "$OPT/cri/bin/critest" --version
check "$OPT/cri/bin/crictl" --version
check "$OPT/cri/bin/busybox" --help
check /usr/bin/docker-registry --version
for b in bridge host-local portmap loopback; do  # the CNI plugins print the protocol versions they speak
  check "/usr/lib/cni/$b" --version
done
echo "system"
check /usr/sbin/runc --version
check /usr/bin/crun --version
check /usr/bin/umoci --version
check /bin/busybox --help
exit $fail
