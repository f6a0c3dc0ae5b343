# Barge: a containerd runtime-v2 shim. Run as root.
SHIM      := target/release/containerd-shim-barge-v1
PREFIX    ?= /usr/local
CARGO     ?= cargo

.PHONY: run test bench deps build install lint unit integration demo-stop clean wasm-fixtures

## run: install what is needed, build, install the shim, run a container and a Wasm guest through it
run: deps install wasm-fixtures
	integration/scripts/demo.sh

## test: every test (unit, protocol, integration against real containerd and Docker)
test: deps build lint wasm-fixtures
	$(CARGO) test --release --workspace --exclude barge-integration
	$(CARGO) test --release -p barge-integration

## bench: speed and memory of barge next to containerd-shim-runc-v2 (BENCH_QUICK=1: short;
##        BENCH_CONTAINERD=1.6|1.7|2.1|2.3). Results in target/bench/results.{json,md}
bench: deps build wasm-fixtures
	$(CARGO) run --release -p barge-integration --bin barge-bench

deps:
	integration/scripts/install.sh
	integration/scripts/build-image.sh
	integration/scripts/build-cri-images.sh

build:
	$(CARGO) build --release -p containerd-shim-barge-v1

## wasm-fixtures: the Wasm test programs (from examples/wasm's WAT sources) and
##                their images, in target/wasm/{fixtures,images}
wasm-fixtures:
	$(CARGO) run --release -q -p barge-wasm-fixtures -- target/wasm/fixtures
	examples/wasm/build-images.sh target/wasm/fixtures target/wasm/images

install: build
	install -D -m 0755 $(SHIM) $(DESTDIR)$(PREFIX)/bin/containerd-shim-barge-v1

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

## demo-stop: stop the private containerd that `make run` started
demo-stop:
	integration/scripts/demo.sh stop

clean:
	$(CARGO) clean
