package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSeekHoles: SEEK_DATA and SEEK_HOLE on a sparse file in a FUSE mount
// find its data and its holes: a copy that skips the holes (as qemu-img or
// tar --sparse make one) loses nothing.
func TestSeekHoles(t *testing.T) {
	v := newVolume(t)
	v.mount(t)
	path := filepath.Join(v.mnt, "sparse")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	const (
		first  = 200 << 20 // past three 64 MiB chunks of hole
		second = 700 << 20
		size   = 1 << 30
	)
	data := bytes.Repeat([]byte("objfs"), 2000)
	for _, off := range []int64{first, second} {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
	}{
		{0, unix.SEEK_DATA, first},
		{0, unix.SEEK_HOLE, 0},
		{first, unix.SEEK_HOLE, first + int64(len(data))},
		{first + int64(len(data)), unix.SEEK_DATA, second},
		{second + 1, unix.SEEK_HOLE, second + int64(len(data))},
		{second + int64(len(data)), unix.SEEK_HOLE, second + int64(len(data))},
	} {
		got, err := unix.Seek(fd, c.off, c.whence)
		if err != nil || got != c.want {
			t.Errorf("lseek(%d, whence %d) = %d, %v; want %d", c.off, c.whence, got, err, c.want)
		}
	}
	if _, err := unix.Seek(fd, second+int64(len(data)), unix.SEEK_DATA); err != syscall.ENXIO {
		t.Errorf("SEEK_DATA after the last data: %v, want ENXIO", err)
	}
	// What qemu-img or tar --sparse do: walk the data segments, then check
	// that every byte outside them reads as zero.
	type segment struct{ lo, hi int64 }
	var segs []segment
	for off := int64(0); ; {
		lo, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == syscall.ENXIO {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hi, err := unix.Seek(fd, lo, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, segment{lo, hi})
		off = hi
	}
	if len(segs) != 2 {
		t.Errorf("data segments %v, want the two written", segs)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		for i, b := range buf {
			at := off + int64(i)
			if b == 0 {
				continue
			}
			inData := false
			for _, s := range segs {
				inData = inData || s.lo <= at && at < s.hi
			}
			if !inData {
				t.Fatalf("byte %d is %#x but lies in a hole by SEEK_DATA/SEEK_HOLE %v", at, b, segs)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	v.unmount(t)
	v.fsck(t)
}
