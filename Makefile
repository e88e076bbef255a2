# sensorfarm: `make demo` runs the farm on this machine, `make test` checks it.
# Every target installs what it needs (Debian packages, staticcheck) first.

GO          ?= go
BIN         := bin
VERSION     := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
GOPATH_BIN  := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOPATH_BIN)/staticcheck
# Debian packages the demo and the tests use: the real mosquitto broker and
# clients as peers, and qemu to run the ARMv6 bridge as a Pi Zero would.
APT_PACKAGES := mosquitto mosquitto-clients qemu-user-static
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TEST_TIMEOUT ?= 20m
# Fuzz targets as package:Func, each run for FUZZ_TIME by `make test`: long
# enough to catch a regression on the seed corpus and nearby inputs, short
# enough for CI.
FUZZ_TIME   ?= 10s
FUZZ_TARGETS := ./bridge/sensor/pa1010d:FuzzReassembler ./bridge/sensor/pa1010d:FuzzEpochCombiner \
  ./bridge/spool:FuzzOpenCorrupt ./bridge/spool:FuzzDeltaRoundTrip ./broker/gaps:FuzzReadSeq \
  ./broker/server:FuzzListener

.PHONY: all deps build demo test lint fuzz bench bench-quick bench-broker bench-broker-quick bench-bridge bench-bridge-quick clean

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
# stripped) and the Pi 4 cluster's broker (arm64).
build: deps
	@mkdir -p $(BIN)/linux-arm6 $(BIN)/linux-arm64
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./broker ./bridge ./demo
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/linux-arm6/bridge ./bridge
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/linux-arm64/broker ./broker

demo: build
	@$(BIN)/demo --bin $(BIN) --dir .cache/demo

lint: deps
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	  if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

test: build lint
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	@$(MAKE) -s fuzz

fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$fn in $$pkg for $(FUZZ_TIME)"; \
	  $(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZ_TIME) $$pkg || exit 1; \
	done

# Benchmarks report ratios against a peer run in the same invocation, and
# write bench/results/. bench-quick is the smoke run CI does: it checks that
# the tools work, not the numbers.
bench: bench-broker bench-bridge
bench-quick: bench-broker-quick bench-bridge-quick

# The broker against bare mochi-mqtt and Debian's mosquitto (bench/README.md).
bench-broker: build
	@echo "bench-broker: to be written"

bench-broker-quick: build
	@echo "bench-broker-quick: to be written"

# The bridge and its spool: natively, and as the Pi Zero's ARMv6 build on
# qemu's ARM1176, against a naive bridge and paho's FileStore.
BENCH_TIME ?= 5x
bench-bridge: build
	$(GO) test -run '^$$' -bench . -benchtime $(BENCH_TIME) ./bridge/spool
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) test -c -o $(BIN)/linux-arm6/spool.test ./bridge/spool
	cd $(BIN)/linux-arm6 && qemu-arm-static -cpu arm1176 ./spool.test -test.run '^$$' \
	  -test.bench 'Outage/(filestore|spool-sync30s)$$|Replay' -test.benchtime 2x

bench-bridge-quick: build
	@echo "bench-bridge-quick: to be written"

clean:
	rm -rf $(BIN) .cache
