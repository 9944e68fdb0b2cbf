# berth: build, run and test. `make demo` and `make test` are the README's
# two commands; both install what they need first (scripts/setup.sh).
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/berth-dev/berth/internal/version.Revision=$(VERSION)
# static, stripped binaries: the shim runs once per container, so every page counts
export CGO_ENABLED = 0
# grpcnotrace drops gRPC's x/net/trace (and with it html/template, whose
# reflection keeps every exported method alive): berthd is 11.4 MB instead
# of 14.9. bench/ and internal/testutil build with the same flags.
TAGS := grpcnotrace

.PHONY: all build setup demo test unit fuzz bench clean

all: build

build:
	$(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

setup:
	./scripts/setup.sh

# The main job: build, start berthd on its built-in defaults, use it.
demo: setup build
	./scripts/demo.sh

# Every test: unit, end-to-end (Debian's ctr and our CLI against a real
# berthd), crash and bad-input tests. Benchmarks are not part of it.
test: setup build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

unit: build
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

# A short run of every fuzz target (not part of `make test`).
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep ^Fuzz); do \
	    echo "== $$pkg $$f"; $(GO) test -run XXX -fuzz "^$$f$$" -fuzztime 20s $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin

# Side by side with Debian's containerd 1.6 on this machine, as root
# (about 5 minutes, --quick about 2; docs/benchmarks.md). BENCH_FLAGS passes flags, for example
#   make bench BENCH_FLAGS='--only Create --reps 5 --json bench.json'
BENCH_FLAGS ?=
bench:
	@command -v containerd >/dev/null || { apt-get update && apt-get install -y containerd; }
	@# containerd inflates layers with unpigz when it is installed, as berthd does with igzip
	@command -v unpigz >/dev/null || { apt-get update && apt-get install -y pigz; }
	$(GO) build -o bin/berth-bench ./bench
	./bin/berth-bench $(BENCH_FLAGS)
