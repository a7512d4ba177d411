package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenKeepsPageCache: reading a file again through a new descriptor
// is served from the kernel's page cache (objfs answers OPEN with
// FOPEN_KEEP_CACHE), and closing a descriptor that cannot write sends no
// FLUSH (FOPEN_NOFLUSH) while a writer's close still does. That the kept
// pages follow changes made over NFS is TestNFSChangesReachFUSECaches.
func TestOpenKeepsPageCache(t *testing.T) {
	v := newVolume(t)
	v.mount(t, "--metrics", "127.0.0.1:0")
	defer v.unmount(t)
	addr := metricsAddrOf(t, v)
	path := filepath.Join(v.mnt, "f")
	data := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	readAll := func() {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes (%v), want %d", len(got), err, len(data))
		}
	}
	readAll()
	reads, flushes := fuseOpCount(t, addr, "read"), fuseOpCount(t, addr, "flush")
	for range 5 {
		readAll()
	}
	if n := fuseOpCount(t, addr, "read") - reads; n != 0 {
		t.Errorf("reading a cached file through 5 new descriptors sent %d READs, want 0 (page cache dropped at open)", n)
	}
	if n := fuseOpCount(t, addr, "flush") - flushes; n != 0 {
		t.Errorf("5 closes of read-only descriptors sent %d FLUSHes, want 0", n)
	}
	// A writer's close commits: it must still reach objfs.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("X"), 5); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if n := fuseOpCount(t, addr, "flush") - flushes; n != 1 {
		t.Errorf("a writer's close sent %d FLUSHes, want 1", n)
	}
	data[5] = 'X'
	readAll()
}
