package fs

import (
	"syscall"
	"testing"

	"github.com/objfs/objfs/fs/meta"
)

// TestSeekSeesBufferedWrites: SEEK_DATA and SEEK_HOLE count writes still in
// the buffer, and the holes of a sparse file stay holes.
func TestSeekSeesBufferedWrites(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100})
	ino, fh := v.create(meta.RootIno, "sparse", syscall.O_RDWR)
	const at = 300 << 10 // chunk 4
	v.write(fh, at, pattern(1, 5000))
	for _, c := range []struct {
		off  uint64
		hole bool
		want uint64
	}{
		{0, false, at},
		{0, true, 0},
		{at + 10, true, at + 5000},
		{at + 10, false, at + 10},
	} {
		got, err := v.f.Seek(v.ctx, ino, c.off, c.hole)
		if err != nil || got != c.want {
			t.Errorf("seek(%d, hole %v) = %d, %v; want %d", c.off, c.hole, got, err, c.want)
		}
	}
	v.write(fh, 10, pattern(2, 100)) // buffered again, before the first data
	if got, err := v.f.Seek(v.ctx, ino, 0, false); err != nil || got != 10 {
		t.Errorf("seek data after a second write: %d, %v; want 10", got, err)
	}
	if _, err := v.f.Seek(v.ctx, ino, at+5000, false); err != syscall.ENXIO {
		t.Errorf("seek data at the end: %v, want ENXIO", err)
	}
	v.release(fh)
}
