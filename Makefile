# sensorfarm: `make demo` runs the farm on this machine, `make test` checks it.
# Every target installs what it needs (Debian packages, staticcheck) first.

GO          ?= go
BIN         := bin
VERSION     := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
GOPATH_BIN  := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOPATH_BIN)/staticcheck
# Debian packages the demo and the tests use: the real mosquitto broker and
# clients as peers, qemu to run the ARMv6 bridge as a Pi Zero would,
# PostgreSQL for the archive's tests (internal/pgtest starts it), and systemd
# for systemd-analyze, which checks the bridge's unit (systemd/).
APT_PACKAGES := mosquitto mosquitto-clients qemu-user-static postgresql systemd
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TEST_TIMEOUT ?= 20m
# Fuzz targets as package:Func:executions, each run by `make test` for about
# 10 s on this project's 2-core machine: long enough to catch a regression on
# the seed corpus and nearby inputs, short enough for CI. A count, not a
# duration: Go 1.26's fuzz coordinator can fail a run with "context deadline
# exceeded" when a -fuzztime duration expires mid-execution (golang/go#75804,
# fixed in Go 1.27), a failure with no crasher behind it.
FUZZ_TARGETS := ./bridge/sensor/pa1010d:FuzzReassembler:500000 ./bridge/sensor/pa1010d:FuzzEpochCombiner:350000 \
  ./bridge/spool:FuzzOpenCorrupt:50000 ./bridge/spool:FuzzDeltaRoundTrip:500000 ./broker/gaps:FuzzReadSeq:250000 \
  ./broker/server:FuzzListener:30000

.PHONY: all deps build demo dashboards test lint fuzz bench bench-quick bench-broker bench-broker-quick bench-broker-tools bench-bridge bench-bridge-quick bench-durable bench-durable-quick clean image release $(BIN)/linux-amd64/broker bench-cluster bench-cluster-quick bench-archive bench-archive-quick bench-reconnect

all: build

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@[ -x $(STATICCHECK) ] || { echo "installing staticcheck"; $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2; }

# Host binaries for the demo and tests; the Pi Zero's bridge (ARMv6, static,
# stripped) and the Pi 4 cluster's broker (arm64). nats-server is the Go
# module go.mod names as a tool (its version pinned there), for the tests of
# the farm on a NATS cluster (nats/README.md).
build: deps
	@mkdir -p $(BIN)/linux-arm6 $(BIN)/linux-arm64
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./broker ./bridge ./archive ./demo
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/nats-server github.com/nats-io/nats-server/v2
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/linux-arm6/bridge ./bridge
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/linux-arm64/broker ./broker
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/linux-arm64/archive ./archive

demo: build
	@$(BIN)/demo --bin $(BIN) --dir .cache/demo

# The Grafana dashboards, generated from Go (dashboards/README.md); the
# committed JSON must be what this writes, or `make test` fails.
dashboards:
	$(GO) run ./dashboards/gen -dir dashboards

lint: deps
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	  if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# Tests that need a real system this machine lacks (Nomad, a Kubernetes API
# server) skip; go test hides a passing package's skips, so they are listed
# here, at the end of the tests.
SKIPPED := $(CURDIR)/.cache/skipped.txt
test: build lint
	@mkdir -p $(dir $(SKIPPED)) && rm -f $(SKIPPED)
	SENSORFARM_SKIPPED=$(SKIPPED) $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	@if [ -s $(SKIPPED) ]; then echo "SKIPPED, not run on this machine:"; sed 's/^/  /' $(SKIPPED); fi
	@$(MAKE) -s fuzz
	@$(MAKE) -s bench-quick

fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; rest=$${t#*:}; fn=$${rest%%:*}; n=$${rest#*:}; \
	  echo "fuzz $$fn in $$pkg for $$n executions"; \
	  $(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$${n}x $$pkg || exit 1; \
	done

# Benchmarks report ratios against a peer run in the same invocation, and
# write bench/results/. bench-quick is the smoke run CI does: it checks that
# the tools work, not the numbers.
bench: bench-broker bench-bridge bench-durable bench-reconnect bench-cluster bench-archive
bench-quick: bench-broker-quick bench-bridge-quick bench-durable-quick bench-cluster-quick bench-archive-quick

# The broker against bare mochi-mqtt and Debian's mosquitto (bench/README.md).
# The runner pins each broker to core 0 and itself to core 1, then runs
# benchmarks 1-3 again unpinned; it starts and ends every peer itself.
BENCH_BIN := $(BIN)/bench
bench-broker-tools:
	@mkdir -p $(BENCH_BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BENCH_BIN)/broker-bench ./bench/broker
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BENCH_BIN)/baremochi ./bench/baremochi

bench-broker: build bench-broker-tools
	$(BENCH_BIN)/broker-bench --bin $(BIN) --baremochi $(BENCH_BIN)/baremochi --out bench/results
	$(BENCH_BIN)/broker-bench --pin=false --bin $(BIN) --baremochi $(BENCH_BIN)/baremochi --out bench/results

bench-broker-quick: build bench-broker-tools
	$(BENCH_BIN)/broker-bench --quick --bin $(BIN) --baremochi $(BENCH_BIN)/baremochi --out .cache/bench-broker-quick

# Benchmark 7: the farm's workload on the store (retained readings, a
# persistent archiver, a SIGKILL) against mosquitto with persistence on and
# the same users (bench/README.md).
bench-durable: build bench-broker-tools
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BENCH_BIN)/durable ./bench/durable
	$(BENCH_BIN)/durable --baremochi $(BENCH_BIN)/baremochi --out bench/results
	$(BENCH_BIN)/durable --baremochi $(BENCH_BIN)/baremochi --pin=false --out bench/results

bench-durable-quick: build bench-broker-tools
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BENCH_BIN)/durable ./bench/durable
	$(BENCH_BIN)/durable --quick --baremochi $(BENCH_BIN)/baremochi --out .cache/bench-durable-quick

# The reconnect storm: 1,000 real bridges readmitted after a SIGKILL of our
# broker, and of mosquitto with the same users (bench/README.md).
bench-reconnect: build
	@mkdir -p $(BENCH_BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BENCH_BIN)/reconnect ./bench/reconnect
	$(BENCH_BIN)/reconnect --bin $(BIN) --out bench/results

# The bridge and its spool: natively, and as the Pi Zero's ARMv6 build on
# qemu's ARM1176, against a naive bridge and paho's FileStore.
BENCH_TIME ?= 5x
bench-bridge: build
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/naive-bridge ./bench/naive
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/linux-arm6/naive-bridge ./bench/naive
	$(GO) run ./bench/bridge --bin $(BIN) --out bench/results

bench-bridge-quick: build
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/naive-bridge ./bench/naive
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/linux-arm6/naive-bridge ./bench/naive
	$(GO) run ./bench/bridge --bin $(BIN) --out .cache/bench-quick --quick

# The farm on our broker and on a three-node NATS cluster (nats/README.md):
# CPU per reading, latency, and the time from a SIGKILL until every bridge
# publishes live again.
bench-cluster: build
	$(GO) run ./bench/cluster --bin $(BIN) --out bench/results

bench-cluster-quick: build
	$(GO) run ./bench/cluster --quick --bin $(BIN) --out .cache/bench-cluster-quick

# The archive against a naive one-insert-per-message archiver, on SQLite and
# PostgreSQL (bench/README.md).
bench-archive: build
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/naive-archive ./bench/naivearchive
	$(GO) run ./bench/archive --bin $(BIN) --out bench/results

bench-archive-quick: build
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/naive-archive ./bench/naivearchive
	$(GO) run ./bench/archive --bin $(BIN) --out .cache/bench-archive-quick --quick

# The broker's OCI image (an index for linux/arm64 and linux/amd64), built
# from the static binaries without Docker: bin/image/broker-oci.tar, an OCI
# layout for ctr import, docker load or crane push (broker/k8s/README.md).
# Every timestamp in it is the last commit's, so a rebuild of the same commit
# gives the same digest.
IMAGE_REPOSITORY ?= docker.io/sensorfarm/broker
image: build $(BIN)/linux-amd64/broker
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) $(GO) run ./broker/image \
	  --out $(BIN)/image/broker-oci.tar --repository $(IMAGE_REPOSITORY) --version $(VERSION) \
	  --revision "$$(git rev-parse HEAD 2>/dev/null)" \
	  --binary linux/arm64=$(BIN)/linux-arm64/broker --binary linux/amd64=$(BIN)/linux-amd64/broker

# Phony so that go build (which skips what is up to date) always decides.
$(BIN)/linux-amd64/broker:
	@mkdir -p $(@D)
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./broker

# Release binaries with --version stamped from git and their SHA256SUMS; the
# Pi Zero's build is run on qemu's ARM1176 to check it starts and says its
# version, and its build settings must say GOARM=6.
RELEASE := $(BIN)/release
release: deps
	@rm -rf $(RELEASE) && mkdir -p $(RELEASE)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(RELEASE)/bridge-linux-armv6 ./bridge
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(RELEASE)/bridge-linux-armv7 ./bridge
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(RELEASE)/bridge-linux-arm64 ./bridge
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(RELEASE)/bridge-linux-amd64 ./bridge
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(RELEASE)/broker-linux-arm64 ./broker
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(RELEASE)/broker-linux-amd64 ./broker
	cd $(RELEASE) && sha256sum bridge-* broker-* > SHA256SUMS && sha256sum --quiet -c SHA256SUMS
	@$(GO) version -m $(RELEASE)/bridge-linux-armv6 | grep -q 'GOARM=6$$' || { echo "bridge-linux-armv6 is not a GOARM=6 build"; exit 1; }
	@v=$$(qemu-arm-static -cpu arm1176 $(RELEASE)/bridge-linux-armv6 --version) && [ "$$v" = "$(VERSION)" ] || \
	  { echo "bridge-linux-armv6 --version on qemu's ARM1176 says '$$v', want '$(VERSION)'"; exit 1; }
	@echo "release $(VERSION): bridge-linux-armv6 --version on qemu -cpu arm1176 says $(VERSION)"; cat $(RELEASE)/SHA256SUMS

clean:
	rm -rf $(BIN) .cache
