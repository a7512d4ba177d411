package integration

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestTruncateLargeFile: on a volume of 4 KiB blocks, truncating a file
// of 28,672 blocks (more than one metadata transaction can release) to a
// few bytes and extending it again work; the bytes past the cut read as
// zeros after the extension, and fsck is clean. The truncation used to
// fail with EFBIG and change nothing. (fs's TestLargeTruncation covers
// O_TRUNC and a truncation cut short.)
func TestTruncateLargeFile(t *testing.T) {
	v := newVolumeWith(t, "--block-size", "4096")
	v.mount(t)
	const size = 112 << 20
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(7, 11))
	for i := 0; i < size; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	write := func(name string) string {
		t.Helper()
		p := filepath.Join(v.mnt, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < size; off += 1 << 20 {
			if _, err := f.Write(data[off : off+1<<20]); err != nil {
				t.Fatalf("write %s at %d: %v", name, off, err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatalf("close %s: %v", name, err)
		}
		return p
	}

	a := write("a")
	const cut = 5000
	if err := os.Truncate(a, cut); err != nil {
		t.Fatalf("truncate %d bytes of 4 KiB blocks to %d: %v", size, cut, err)
	}
	if fi, err := os.Stat(a); err != nil || fi.Size() != cut {
		t.Fatalf("after the truncation: %v, %v", fi, err)
	}
	got, err := os.ReadFile(a)
	if err != nil || !bytes.Equal(got, data[:cut]) {
		t.Fatalf("after the truncation: read %d bytes (%v), want the first %d written", len(got), err, cut)
	}
	// Extend again: nothing of the old data may show.
	const ext = 100 << 20
	if err := os.Truncate(a, ext); err != nil {
		t.Fatalf("extend: %v", err)
	}
	f, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, 1<<20)
	for _, off := range []int64{cut, 1 << 20, 64 << 20, ext - 1<<20} {
		n, err := f.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			t.Fatalf("read at %d: %v", off, err)
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			t.Errorf("read at %d after the extension: old bytes show", off)
		}
	}
	f.Close()

	v.unmount(t)
	v.fsck(t)
}
