#!/usr/bin/env bash
# `make run`: runs a container, and a Wasm one, through barge. Uses the containerd that
# answers on /run/containerd/containerd.sock; when none does, starts a
# private one (Debian 12's containerd 1.6) under /run/barge-demo and leaves it
# running for you. `demo.sh stop` stops that private one.
set -euo pipefail
DEMO=/run/barge-demo
IMAGE=docker.io/library/busybox:latest
TAR=/opt/barge-test/images/busybox.tar
WASM_IMAGE=docker.io/barge/wasm-hello:latest
WASM_TAR=$(cd "$(dirname "$0")/../.." && pwd)/target/wasm/images/wasm-hello.tar

if [ "${1:-}" = stop ]; then
  if [ -f $DEMO/containerd.pid ]; then
    pid=$(cat $DEMO/containerd.pid)
    ctr -a $DEMO/containerd.sock task ls -q 2>/dev/null | while read -r t; do
      ctr -a $DEMO/containerd.sock task kill -s SIGKILL "$t" || true
    done
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  grep -o " $DEMO[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l || true
  rm -rf $DEMO /var/lib/barge-demo
  echo "private containerd stopped"
  exit 0
fi

live() { ctr -a "$1" version >/dev/null 2>&1; }
if live /run/containerd/containerd.sock; then
  SOCK=/run/containerd/containerd.sock
elif live $DEMO/containerd.sock; then
  SOCK=$DEMO/containerd.sock
else
  SOCK=$DEMO/containerd.sock
  mkdir -p $DEMO
  cat > $DEMO/config.toml <<TOML
version = 2
root = "/var/lib/barge-demo"
state = "$DEMO/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
TOML
  setsid containerd --config $DEMO/config.toml >$DEMO/containerd.log 2>&1 </dev/null &
  echo $! > $DEMO/containerd.pid
  for _ in $(seq 100); do live $SOCK && break; sleep 0.1; done
  live $SOCK || { echo "containerd did not start; see $DEMO/containerd.log" >&2; exit 1; }
  echo "started a private containerd on $SOCK (stop it with: make demo-stop)"
fi

ctr -a $SOCK image ls -q | grep -qx $IMAGE || ctr -a $SOCK image import $TAR >/dev/null
id=barge-demo-$$
echo "+ ctr -a $SOCK run --rm --runtime io.containerd.barge.v1 $IMAGE $id echo hello from barge"
ctr -a $SOCK run --rm --runtime io.containerd.barge.v1 $IMAGE $id echo hello from barge

# The same shim picks wasmtime for a WebAssembly entrypoint (make wasm-fixtures
# builds the image from examples/wasm).
if [ -f "$WASM_TAR" ]; then
  ctr -a $SOCK image ls -q | grep -qx $WASM_IMAGE || ctr -a $SOCK image import "$WASM_TAR" >/dev/null
  echo "+ ctr -a $SOCK run --rm --runtime io.containerd.barge.v1 $WASM_IMAGE $id-wasm"
  ctr -a $SOCK run --rm --runtime io.containerd.barge.v1 $WASM_IMAGE $id-wasm
fi
