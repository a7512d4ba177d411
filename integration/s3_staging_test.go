package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestS3StagingCarriesAnOutage: with the volume's only store (MinIO) down,
// fsynced writes are acknowledged from the local staging log and read back
// from it; then objfs is killed with SIGKILL. While the store stays down
// the volume does not open (a clear error, the staged data untouched).
// Once MinIO is back, a mount serves every acknowledged file and uploads
// what was staged; after unmount, with the staging directory removed,
// fsck --verify finds every block in the bucket.
func TestS3StagingCarriesAnOutage(t *testing.T) {
	srv := startMinIO(t)
	bucket := "objfs-staging"
	srv.MakeBucket(t, bucket)
	v := newVolumeWith(t, "--block-size", "65536", "--store", srv.URL(bucket, "vol"))
	v.mount(t)

	acked := map[string][]byte{}
	write := func(name string, n int, seed byte) {
		t.Helper()
		data := make([]byte, n)
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		if err := writeSynced(filepath.Join(v.mnt, name), data); err != nil {
			t.Fatalf("write %s while the store is down: %v", name, err)
		}
		acked[name] = data
	}
	write("before", 300_000, 1)
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i, n := range []int{1000, 100_000, 1 << 20, 3<<20 + 17} {
		write(fmt.Sprintf("during-%d", i), n, byte(10+i))
	}
	t.Logf("4 files (4.2 MiB) written and fsynced with the store down in %v", time.Since(start).Round(time.Millisecond))

	// Read back with the mount's block cache and the kernel's page cache
	// dropped: the blocks come from the staging log. (The file written
	// before the outage may already be only in the store, and then fails
	// with EIO until the store is back, as documented.)
	v.proc.signal(syscall.SIGUSR1)
	time.Sleep(100 * time.Millisecond) // the signal is handled asynchronously
	for name, want := range acked {
		if name == "before" {
			continue
		}
		got, err := readUncached(filepath.Join(v.mnt, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %s with the store down: %v (equal %v)", name, err, bytes.Equal(got, want))
		}
	}
	v.kill9(t)

	segs, err := filepath.Glob(filepath.Join(v.dir, "staging", "*.seg"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no staging segments after the kill (%v): the acknowledged data has nowhere to be", err)
	}
	out, err := runObjfs(time.Minute, "fsck", v.dir)
	if err == nil || !strings.Contains(out, "unreachable") {
		t.Fatalf("fsck with the store down: err %v, want a failure naming the unreachable endpoint:\n%s", err, out)
	}
	if after, _ := filepath.Glob(filepath.Join(v.dir, "staging", "*.seg")); len(after) != len(segs) {
		t.Fatalf("staging segments changed while the store was down: %d before, %d after", len(segs), len(after))
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	v.mount(t)
	for name, want := range acked {
		got, err := os.ReadFile(filepath.Join(v.mnt, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %s after the restart: %v (equal %v)", name, err, bytes.Equal(got, want))
		}
	}
	// The mount publishes its staging state every 2 s.
	deadline := time.Now().Add(time.Minute)
	for {
		staged, err := stagedBlocks(v.dir)
		if err == nil && staged == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("blocks still staged a minute after the store came back (%d, %v)", staged, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	v.unmount(t)
	if err := os.RemoveAll(filepath.Join(v.dir, "staging")); err != nil {
		t.Fatal(err)
	}
	t.Log(v.fsck(t, "--verify"))
	// Distinct random content: 5 + 2 + 16 + 49 blocks of 64 KiB (the
	// 1000-byte file is inline).
	if n := len(bucketObjects(t, srv, bucket, "vol/blocks/")); n < 72 {
		t.Fatalf("bucket holds %d blocks, want at least 72", n)
	}
}

// stagedBlocks reads the count of blocks not yet uploaded from the
// mount.json a mounted volume publishes.
func stagedBlocks(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "mount.json"))
	if err != nil {
		return -1, err
	}
	var mi struct {
		Staged *int `json:"staged_blocks"`
	}
	if err := json.Unmarshal(b, &mi); err != nil {
		return -1, err
	}
	if mi.Staged == nil {
		return -1, fmt.Errorf("mount.json has no staged_blocks")
	}
	return *mi.Staged, nil
}
