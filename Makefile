# Barge: a containerd runtime-v2 shim. Run as root.
SHIM      := target/release/containerd-shim-barge-v1
PREFIX    ?= /usr/local
CARGO     ?= cargo

.PHONY: run test bench soak deps build install lint unit integration demo-stop clean wasm-fixtures fuzz

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

## soak: 10,000 `ctr run --rm` (4 workers), 1,000 Wasm runs, 1,000 execs and 1,000 cycles in one
##       grouped shim, then a check that nothing is left (not in CI; ~21 min). SOAK_RUNS, SOAK_WASM,
##       SOAK_EXECS, SOAK_CYCLES, SOAK_WORKERS, SOAK_CONTAINERD=2.3, SOAK_RUNTIMES=barge,runc-v2.
##       Results in target/soak/results.{json,md}
soak: deps build wasm-fixtures
	$(CARGO) run --release -p barge-integration --bin barge-soak

## fuzz: every fuzz target (fuzz/: runtime options, config.json and the entrypoint, protobuf
##       inputs, mount options, Wasm loading), 1,000,000 inputs each (FUZZ_COUNT, FUZZ_SEED);
##       `make test` runs a short smoke run of each
FUZZ_COUNT ?= 1000000
FUZZ_SEED  ?= 1
fuzz: wasm-fixtures
	$(CARGO) run --release -p barge-fuzz -- all --count $(FUZZ_COUNT) --seed $(FUZZ_SEED) --progress-seconds 60

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
