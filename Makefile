# Portcullis — the two commands a fresh clone needs are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin/portcullis
TEST_TIMEOUT ?= 14m
TESTLOG := .test-output/test.log
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/portcullis-auth/portcullis/server/buildinfo.Version=$(VERSION) -X github.com/portcullis-auth/portcullis/server/buildinfo.Commit=$(COMMIT)

.PHONY: all build run test lint bench fuzz soak clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/portcullis

## run: the server on the embedded default (SQLite under ./data, token state in the same database)
run: build
	./$(BIN) serve

## lint: go vet and a gofmt check
lint:
	@$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi

## test: every test, on throwaway PostgreSQL and Redis servers (installed from Debian when missing)
test: lint
	@mkdir -p $(dir $(TESTLOG))
	@set -o pipefail; $(GO) run ./cmd/testenv $(GO) test -count=1 -v -timeout $(TEST_TIMEOUT) ./... 2>&1 \
		| tee $(TESTLOG) | grep -E --line-buffered '^(--- |ok |FAIL|panic:|testenv:)|^\s+--- FAIL|^    --- (PASS|FAIL): Test[A-Za-z]*Conformance[A-Za-z]*/[^/ ]+ ' ; \
	status=$$?; \
	if grep -q -- '--- SKIP' $(TESTLOG); then echo "FAIL: skipped tests (a skipped backend is a failure):"; grep -- '--- SKIP' $(TESTLOG); exit 1; fi; \
	pass=$$(grep -c -- '--- PASS' $(TESTLOG)); fail=$$(grep -c -- '--- FAIL' $(TESTLOG)); \
	echo "$$pass passed, $$fail failed"; \
	exit $$status

## bench: Go benchmarks, then HTTP load on real PostgreSQL + Redis; writes docs/benchmarks.md
BENCH_DURATION ?= 10s
BENCH_CONCURRENCY ?= 32
BENCH_PKGS ?= $$($(GO) list ./keys/... ./policy/... ./server/... | grep -v /servertest)
bench: build
	@mkdir -p .bench
	$(GO) build -o bin/portcullis-loadtest ./cmd/portcullis-loadtest
	@set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem -count 1 $(BENCH_PKGS) 2>&1 | grep -E '^(Benchmark|ok|FAIL|goos|goarch|cpu|pkg)' | tee .bench/go.txt
	./bin/portcullis-loadtest -go-bench .bench/go.txt -report docs/benchmarks.md
	$(GO) run ./cmd/testenv ./bin/portcullis-loadtest -stack bin/portcullis -algs EdDSA,RS256 \
		-scenarios http_ceiling,jwks,client_credentials,cc_paired,introspection,userinfo,refresh,password,password_paired,sso,code_redemption,mfa,apikey_introspection,apikey_verify \
		-duration $(BENCH_DURATION) -concurrency $(BENCH_CONCURRENCY) -report docs/benchmarks.md -section http

## soak: 10 minutes of mixed load at a steady rate; fails on any error; figures into docs/benchmarks.md
SOAK_DURATION ?= 10m
SOAK_RATE ?= 400
soak: build
	$(GO) build -o bin/portcullis-loadtest ./cmd/portcullis-loadtest
	$(GO) run ./cmd/testenv ./bin/portcullis-loadtest -stack bin/portcullis -algs EdDSA -scenarios mixed \
		-rate $(SOAK_RATE) -concurrency 64 -duration $(SOAK_DURATION) -report docs/benchmarks.md -section soak

## fuzz: every fuzz target for FUZZTIME each (make test runs their seed corpora)
FUZZTIME ?= 30s
FUZZ_TARGETS := ./server/config:FuzzLoad ./server/token:FuzzTokenForm ./keys:FuzzVerify \
	./policy:FuzzMatches ./policy:FuzzParse ./policy:FuzzParseScope ./policy/password:FuzzCheck \
	./keys/verify:FuzzCheckAPIKey ./keys/verify:FuzzRequireTenant ./keys/verify/apikey:FuzzParse
fuzz:
	@set -e; for t in $(FUZZ_TARGETS) $(EXTRA_FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "== $$name ($$pkg)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

clean:
	rm -rf bin .test-output
