package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMmapWriteThroughAppendHandle: pages written through a shared mapping
// of a descriptor opened with O_APPEND reach the file at their own
// offsets. The kernel writes such pages back through a handle the file
// was mapped with, and objfs used to send every write arriving through an
// O_APPEND handle to the end of the file: the mapped bytes were appended
// instead (found by the differential test's mmap operation).
func TestMmapWriteThroughAppendHandle(t *testing.T) {
	v := newVolume(t)
	v.mount(t)
	const size = 3 * 4096
	path := filepath.Join(v.mnt, "log")
	want := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	for _, off := range []int{100, 4096 + 7, size - 5} {
		copy(m[off:], "MMAP!")
		copy(want[off:], "MMAP!")
	}
	err = unix.Msync(m, unix.MS_SYNC)
	if uerr := unix.Munmap(m); err == nil {
		err = uerr
	}
	// A write(2) through the same descriptor still appends.
	if _, werr := unix.Write(fd, []byte("tail")); err == nil {
		err = werr
	}
	want = append(want, "tail"...)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("after msync: %s", describeDiff(got, want))
	}
	// What the kernel showed from its page cache must be what objfs
	// stored.
	v.unmount(t)
	v.mount(t)
	if got, err = os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("after a remount: %s", describeDiff(got, want))
	}
	v.unmount(t)
	v.fsck(t)
}
