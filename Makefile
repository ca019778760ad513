# kubegpu build, test and lint. Needs only Go and gcc (cgo, for go-nvml).

GO ?= go
export CGO_ENABLED := 1
# go-nvml's headers use deprecated declarations; the warnings are noise.
export CGO_CFLAGS := -O2 -g -Wno-deprecated-declarations

BIN := bin
# Every main package under cmd/ becomes bin/<name>.
COMMANDS := $(notdir $(patsubst %/,%,$(dir $(wildcard cmd/*/main.go))))
GIT_SHA := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# kube-scheduler reports version.gitVersion; without it it says v0.0.0-master.
LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=v1.37.2+kubegpu-$(GIT_SHA)

# Test timeout covers a cold build cache on a 2-core machine.
TEST_TIMEOUT ?= 30m
TEST_FLAGS ?=
BENCH ?= .
BENCH_FLAGS ?= -benchmem -count=1

.PHONY: all build demo test fuzz bench bench-throughput lint fmt clean manifests $(COMMANDS)

all: build

build: $(COMMANDS)

$(COMMANDS):
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/$@ ./cmd/$@

# The embedded demo: control plane, fake GPU nodes with device plugins,
# scheduler and scaler in one process; applies examples/, drives a load
# on the inference example and writes demo-report.html. Exits 0 only if
# every step held. DEMO_FLAGS=--short for the 30 s version.
DEMO_FLAGS ?=
demo:
	$(GO) run ./cmd/kubegpu demo $(DEMO_FLAGS)

# Unit and integration tests. Integration tests run a real kube-apiserver
# (embedded etcd) and kube-scheduler in-process; see pkg/testenv.
test:
	$(GO) test -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...

# Each fuzz target (every "func FuzzX" in a _test.go file) runs for
# FUZZTIME, one after the other. `make test` already runs their seed
# corpora and the inputs kept under testdata/fuzz as plain tests. New
# inputs are minimized for at most 5s (default 60s), which otherwise eats
# most of a short run on targets with large seeds (FuzzDecode).
FUZZTIME ?= 20s
FUZZ_FLAGS ?= -fuzzminimizetime 5s
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
		dir=$$(dirname $$f); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "== $$dir $$t ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $(FUZZ_FLAGS) $$dir; \
		done; \
	done

# Every benchmark, BenchmarkThroughput (test/e2e) included: that one
# alone takes minutes on a 2-core machine; see bench-throughput.
bench:
	$(GO) test -timeout $(TEST_TIMEOUT) -run '^$$' -bench '$(BENCH)' $(BENCH_FLAGS) ./...

# Scheduling throughput through the real in-process kube-scheduler,
# kubegpu's profile against the default one (5000 nodes, 10000 pods;
# smaller with KUBEGPU_BENCH_NODES=... KUBEGPU_BENCH_PODS=...). Prints
# "throughput: kubegpu=X pods/s default=Y pods/s ratio=Z", the mean of
# BENCH_ROUNDS rounds that alternate which profile runs first (single
# rounds swing by about 20 % on a 2-core machine).
BENCH_ROUNDS ?= 3
bench-throughput:
	KUBEGPU_BENCH_ROUNDS=$(BENCH_ROUNDS) $(GO) test -timeout 60m -run '^$$' -bench '^BenchmarkThroughput$$' -benchtime 1x $(BENCH_FLAGS) ./test/e2e/

# gofmt check and go vet on our own packages only (vetting the
# dependencies takes very long and is not ours to fix).
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Render deploy/helm/kubegpu into deploy/manifests/ (and copy
# deploy/grafana/*.json into the chart) with Helm's own engine; no helm
# binary needed. deploy/render's test fails while they are out of date.
manifests:
	$(GO) run ./deploy/render/gen

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
