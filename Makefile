# objfs: the first two targets are the README's first two commands.
VOLUME ?= $(CURDIR)/volume
MNT    ?= $(CURDIR)/mnt
BIN    := $(CURDIR)/bin/objfs
GO     ?= go

.PHONY: run test build setup unmount bench vet

# Format a default local volume (once) and mount it in the background.
run: setup build
	@test -f $(VOLUME)/VOLUME || $(BIN) format $(VOLUME)
	@mkdir -p $(MNT)
	$(BIN) mount --background $(VOLUME) $(MNT)

# The whole test suite: unit, FUSE integration, differential and crash tests.
test: setup
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 25m ./...

build:
	$(GO) build -o $(BIN) ./cmd/objfs

setup:
	@bash .ci/setup

unmount:
	fusermount3 -u $(MNT)

vet:
	$(GO) vet ./...
