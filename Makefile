# objfs: the first two targets are the README's first two commands.
VOLUME ?= $(CURDIR)/volume
MNT    ?= $(CURDIR)/mnt
NFS    ?= 127.0.0.1:2049
BIN    := $(CURDIR)/bin/objfs
GO     ?= go

.PHONY: run test build setup unmount bench vet

# Format a default local volume (once), mount it in the background and serve
# it over NFSv3 on $(NFS) from the same process.
run: build
	@bash .ci/setup --run
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

# Formats a fresh volume in a temporary directory, mounts it in the
# background and runs `objfs bench` on the mount, on a raw directory next to
# the volume (same disk) and on `objfs loopback` (go-fuse's passthrough file
# system, same mount settings) of another directory there, in one run that
# takes turns group by group (see objfs bench --help): loopback/raw (the
# most any go-fuse file system gets here) and objfs/raw per row plus the
# mount's peak RSS. Caches are dropped between phases: the
# kernel's, and the mount's block cache through SIGUSR1. The trap unmounts
# both mounts, waits for their servers and removes everything, also on
# failure or Ctrl-C. Quick run: make bench BENCH_FLAGS='--scale 0.1'; medians
# of three rounds: make bench BENCH_FLAGS='--rounds 3'.
BENCH_TMP   ?= /var/tmp
BENCH_FLAGS ?=
bench: setup build
	@set -eu; t=$$(mktemp -d $(BENCH_TMP)/objfs-bench.XXXXXX); pid=; lpid=; \
	cleanup() { \
	  for m in mnt lmnt; do fusermount3 -u $$t/$$m 2>/dev/null || fusermount3 -u -z $$t/$$m 2>/dev/null || true; done; \
	  for p in $$pid $$lpid; do for i in $$(seq 1200); do kill -0 $$p 2>/dev/null || break; sleep 0.1; done; done; \
	  rm -rf $$t; }; \
	trap cleanup EXIT; trap 'exit 130' INT TERM; \
	mkdir $$t/raw $$t/mnt $$t/lraw $$t/lmnt; \
	$(BIN) format $$t/vol >/dev/null; \
	out=$$($(BIN) mount --background $$t/vol $$t/mnt); \
	pid=$$(echo "$$out" | sed -n 's/.*(pid \([0-9]*\),.*/\1/p'); \
	test -n "$$pid" || { echo "bench: no pid in the mount's output: $$out" >&2; exit 1; }; \
	out=$$($(BIN) loopback --background --log $$t/loopback.log $$t/lraw $$t/lmnt); \
	lpid=$$(echo "$$out" | sed -n 's/.*(pid \([0-9]*\),.*/\1/p'); \
	test -n "$$lpid" || { echo "bench: no pid in the loopback's output: $$out" >&2; exit 1; }; \
	drop="sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; \
	  else echo 'bench: not root: kernel caches not dropped' >&2; fi; kill -USR1 $$pid; sleep 0.2"; \
	$(BIN) bench $(BENCH_FLAGS) --compare $$t/raw --loopback $$t/lmnt --rss-pid $$pid --drop-caches "$$drop" $$t/mnt
