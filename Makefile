# Stance — the two commands a newcomer runs as root on a fresh Debian machine:
#   make run    install what is missing, build, start the daemon observing this host
#   make test   install what is missing, build, run every test tier
SHELL := /bin/bash
DB ?= /var/lib/stance/stance.db
CARGO ?= cargo
# Honour CARGO_TARGET_DIR, so a build in a shared or out-of-tree target dir is the one that runs.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/release
RELEASE := $(BIN)/stance

.PHONY: run test deps build web abi check unit root-tests browser-tests vm-tests lint bench clean

deps:
	@bash deploy/install-deps.sh

build: deps web
	$(CARGO) build --release --locked

# The dashboard (web/dist, served by the daemon at /). npm ci installs exactly package-lock.json.
web:
	cd web && npm ci --no-audit --no-fund && npm run build

run: build
	$(RELEASE) run --db $(DB)

# Every tier, in order of cost. Each one fails loudly; none skips.
test: build lint unit root-tests browser-tests vm-tests
	@echo "make test: all tiers passed"

lint:
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

unit:
	$(CARGO) test --release --locked --lib --bins

root-tests:
	$(CARGO) test --release --locked --test '*' -- --test-threads=2

# The dashboard in real headless Chromium against the real daemon (root: it observes and launches).
browser-tests: build
	STANCE_BIN=$(RELEASE) node tests/browser/dashboard.test.mjs

# Debian's 6.1 and 6.12 kernels in QEMU (software emulation): BPF-LSM is active there.
# Real servers and clients from Debian's packages (nginx-light, redis-server, redis-tools,
# memcached, curl) for scenario 41, at their own paths.
VM_SERVERS = --file /usr/sbin/nginx --file /etc/nginx/mime.types --file /usr/bin/redis-server \
	--file /usr/bin/redis-cli --file /usr/bin/memcached --file /usr/bin/curl
# Scenario 42 (the observation bench of `make bench`) runs here too, with one short pair: the load
# generator, the floor loader and the floor's empty fexit programs are compiled as
# tests/bench/run.sh compiles them.
FLOOR_OBJ_GUEST = /opt/stance-bench/floor-fexit.bpf.o
vm-tests:
	gcc -O2 -Wall -Wextra -Werror -pthread -o $(BIN)/loadgen tests/bench/loadgen.c
	gcc -O2 -Wall -Wextra -Werror -o $(BIN)/bench-floor tests/bench/floor.c -lbpf
	clang-19 -O2 -g -target bpf -I/usr/include/$$(gcc -dumpmachine) -c tests/bench/floor-fexit.bpf.c \
		-o $(BIN)/floor-fexit.bpf.o
	gcc -m32 -static -nostdlib -ffreestanding -fno-pic -O2 -Wall -Wextra -Werror -o $(BIN)/send32 \
		tests/vm/compat/send32.c
	$(BIN)/stance-vmtest --bin $(BIN)/stance --bin $(BIN)/canary-loader \
		--bin $(BIN)/stance-enforce-test --bin $(BIN)/enforce-probe --bin $(BIN)/flow-workload \
		--bin $(BIN)/send32 --bin $(BIN)/loadgen --bin $(BIN)/bench-floor --file $(BIN)/floor-fexit.bpf.o:$(FLOOR_OBJ_GUEST) \
		--bin "$$(command -v bpftool)" --env STANCE_OBS_BENCH_PAIRS=1 --env STANCE_OBS_BENCH_SECONDS=0.1 \
		$(VM_SERVERS) --lib-from-ldd --scenarios tests/vm/scenarios

bench: build
	bash tests/bench/run.sh
	$(CARGO) bench --locked --bench api
	$(CARGO) bench --locked --bench recommend

# Regenerate the committed Rust copy of probes-ebpf/include/stance_events.h.
abi:
	STANCE_UPDATE_ABI=1 $(CARGO) build --locked

# Type-check without the BPF toolchain (uses the committed ABI, embeds no BPF objects).
check:
	STANCE_SKIP_BPF=1 $(CARGO) check --all-targets

clean:
	$(CARGO) clean
