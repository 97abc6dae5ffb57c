# twinbox: one static binary. `make demo` builds it and shows two replicas
# syncing; `make test` runs every test, installing what they need.
GO ?= go
export CGO_ENABLED = 0

.PHONY: build demo test test-deps test-long fuzz bench vet

build:
	$(GO) build -trimpath -o bin/twinbox .

demo: build
	bin/twinbox demo

# Installs Dovecot, OpenSSH and iproute2 when missing (as root), then runs
# all tests; Dovecot is required in CI.
test: test-deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...

test-deps:
	@if [ "$$(id -u)" = 0 ]; then bash scripts/test-deps.sh; else echo "not root: skipping scripts/test-deps.sh (tests that need Dovecot will be skipped)"; fi

# Longer property and stress runs.
test-long: test-deps
	TWINBOX_LONG=1 $(GO) test -count=1 -timeout 120m ./...

FUZZTIME ?= 30s
fuzz:
	@for pkg in ./maildir ./wire ./index ./sshd; do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=10s $$pkg || exit 1; \
	  done; \
	done

bench: build
	bash bench/bench.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)
