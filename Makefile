# objfs: the first two targets are the README's first two commands.
VOLUME ?= $(CURDIR)/volume
MNT    ?= $(CURDIR)/mnt
NFS    ?= 127.0.0.1:2049
BIN    := $(CURDIR)/bin/objfs
GO     ?= go

.PHONY: run test build setup unmount bench vet

# Format a default local volume (once), mount it in the background and serve
# it over NFSv3 on $(NFS) from the same process.
run: setup build
	@test -f $(VOLUME)/VOLUME || $(BIN) format $(VOLUME)
	@mkdir -p $(MNT)
	$(BIN) mount --background --nfs $(NFS) $(VOLUME) $(MNT)

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
