package integration

import (
	"os"
	"testing"
	"time"

	"github.com/objfs/objfs/fs/fuse"
)

// TestMountRaisesReadAhead checks that a mount made by root asks the
// kernel for objfs's read-ahead instead of FUSE's 128 KiB default, and
// that a file read through it still reads back exactly.
func TestMountRaisesReadAhead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting a mount's read-ahead needs root")
	}
	v := newVolume(t)
	v.mount(t)
	defer v.unmount(t)
	// The harness sees the mount as soon as the kernel lists it; objfs
	// sets the read-ahead just after the kernel's INIT: give it a moment.
	var kb int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if kb, err = fuse.ReadAhead(v.mnt); err != nil {
			t.Fatal(err)
		}
		if kb == fuse.ReadAheadKB || time.Now().After(deadline) {
			break
		}
	}
	if kb != fuse.ReadAheadKB {
		t.Errorf("read-ahead of the mount is %d KiB, want %d", kb, fuse.ReadAheadKB)
	}
	data := make([]byte, 9<<20+12345)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	path := v.mnt + "/f"
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readUncached(path) // through FUSE, not the page cache
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(data) {
		t.Fatal("file read back differs from what was written")
	}
}
