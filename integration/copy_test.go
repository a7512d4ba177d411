package integration

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// volumeTotals waits until `objfs status` reports files of bytes in all
// (the mount publishes its figures every few seconds) and returns the
// block count it reports with them.
func volumeTotals(t *testing.T, v *volume, bytes int64) (blocks int) {
	t.Helper()
	var out string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var err error
		if out, err = runObjfs(time.Minute, "status", v.dir); err != nil {
			t.Fatalf("objfs status: %v\n%s", err, out)
		}
		b := regexp.MustCompile(`(?m)^bytes:\s+(\d+)`).FindStringSubmatch(out)
		n := regexp.MustCompile(`(?m)^blocks:\s+(\d+)`).FindStringSubmatch(out)
		if b != nil && n != nil && b[1] == strconv.FormatInt(bytes, 10) {
			blocks, _ = strconv.Atoi(n[1])
			return blocks
		}
	}
	t.Fatalf("objfs status does not report %d bytes:\n%s", bytes, out)
	return 0
}

// TestCopyFileRange: on a real mount, cp (copy_file_range(2) in coreutils
// 9) of a file of several chunks is served by objfs, which shares its
// blocks: no data passes through the kernel (no READ or WRITE request),
// no block is added, and the two files stay independent, across a remount
// and fsck. (Blocks are named by their content, so a copy of the data
// would add none either: the request counts are what tell them apart.)
// An unaligned copy_file_range moves the data and reads back exactly.
func TestCopyFileRange(t *testing.T) {
	requirePrereqs(t)
	v := newVolume(t)
	v.mount(t, "--metrics", "127.0.0.1:0")
	metricsAddr := metricsAddrOf(t, v)
	const size = 150<<20 + 12345 // three 64 MiB chunks, the last partial
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 5))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	a, b := filepath.Join(v.mnt, "a"), filepath.Join(v.mnt, "b")
	if err := os.WriteFile(a, data, 0o644); err != nil {
		t.Fatal(err)
	}
	blocks := volumeTotals(t, v, size)
	reads, writes := fuseOpCount(t, metricsAddr, "read"), fuseOpCount(t, metricsAddr, "write")
	start := time.Now()
	if out, err := exec.Command("cp", a, b).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	t.Logf("cp of %d MiB took %v", size>>20, time.Since(start))
	if n := fuseOpCount(t, metricsAddr, "copy_file_range"); n == 0 {
		t.Error("cp sent no COPY_FILE_RANGE request")
	}
	if r, w := fuseOpCount(t, metricsAddr, "read")-reads, fuseOpCount(t, metricsAddr, "write")-writes; r != 0 || w != 0 {
		t.Errorf("cp sent %d READ and %d WRITE requests: the data went through the kernel", r, w)
	}
	if got := volumeTotals(t, v, 2*size); got != blocks {
		t.Errorf("blocks %d after cp, %d before", got, blocks)
	}
	if got, err := os.ReadFile(b); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("b after cp: %d bytes (%v), equal %v", len(got), err, bytes.Equal(got, data))
	}

	// Unaligned: the data is copied, not shared.
	c := filepath.Join(v.mnt, "c")
	in, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close() // on failure; closed below, before the unmount
	out, err := os.OpenFile(c, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	offIn, offOut := int64(1000), int64(7)
	const n = 5<<20 + 3
	for done := 0; done < n; {
		k, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, n-done, 0)
		if err != nil || k == 0 {
			t.Fatalf("copy_file_range after %d bytes: %d, %v", done, k, err)
		}
		done += k
	}
	for _, f := range []*os.File{in, out} {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	want := append(make([]byte, 7), data[1000:1000+n]...)
	if got, err := os.ReadFile(c); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("c: %d bytes (%v), want %d, equal %v", len(got), err, len(want), bytes.Equal(got, want))
	}

	// Changing the source leaves the copy alone.
	if err := os.WriteFile(a, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	v.unmount(t)
	v.mount(t)
	if got, err := os.ReadFile(b); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("b after a remount: %d bytes (%v), equal %v", len(got), err, bytes.Equal(got, data))
	}
	v.unmount(t)
	if out, err := runObjfs(5*time.Minute, "fsck", v.dir); err != nil {
		t.Fatalf("fsck: %v\n%s", err, out)
	}
}
