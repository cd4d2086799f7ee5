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
		| tee $(TESTLOG) | grep -E --line-buffered '^(--- |ok |FAIL|panic:|testenv:)|^\s+--- FAIL' ; \
	status=$$?; \
	if grep -q -- '--- SKIP' $(TESTLOG); then echo "FAIL: skipped tests (a skipped backend is a failure):"; grep -- '--- SKIP' $(TESTLOG); exit 1; fi; \
	pass=$$(grep -c -- '--- PASS' $(TESTLOG)); fail=$$(grep -c -- '--- FAIL' $(TESTLOG)); \
	echo "$$pass passed, $$fail failed"; \
	exit $$status

clean:
	rm -rf bin .test-output
