package fs

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"github.com/objfs/objfs/fs/meta"
)

// TestCopyFileRange: a copy of whole chunks shares the source's blocks (no
// block is added to the volume), sees writes still buffered in either file,
// and leaves both files intact whichever is changed or deleted afterwards.
func TestCopyFileRange(t *testing.T) {
	const bs, cs = 4096, 16384
	v := newVol(t, volConfig{blockSize: bs, chunkSize: cs, inlineMax: 100})
	src, sfh := v.create(meta.RootIno, "src", syscall.O_RDWR)
	data := pattern(1, 5*cs+777)
	v.write(sfh, 0, data)
	v.flush(sfh)
	dst, dfh := v.create(meta.RootIno, "dst", syscall.O_RDWR)
	// Buffered, not committed: the copy must see the source's last write
	// and replace the destination's.
	v.write(sfh, 2*cs, []byte("late write"))
	copy(data[2*cs:], "late write")
	v.write(dfh, 0, bytes.Repeat([]byte("x"), 3*cs))

	before := v.m.Stats()
	var done uint64
	for done < uint64(len(data)) {
		n, _, err := v.f.CopyFileRange(v.ctx, sfh, done, dfh, done, 1<<30, nil)
		if err != nil || n == 0 {
			t.Fatalf("copy at %d: %d, %v", done, n, err)
		}
		done += n
	}
	if done != uint64(len(data)) {
		t.Fatalf("copied %d bytes, want %d", done, len(data))
	}
	if got := v.content(dst); !bytes.Equal(got, data) {
		t.Fatalf("dst: %s", firstDiff(got, data))
	}
	after := v.m.Stats()
	// The buffered source write became one block of its own; the
	// destination's buffered writes were committed, then released. (A
	// copy of the data would add a block for every one the late write
	// changed: blocks are named by their content.)
	if after.Blocks != before.Blocks+1 {
		t.Errorf("blocks %d -> %d: the copy stored data instead of sharing it", before.Blocks, after.Blocks)
	}
	// Writing to one file changes only that one.
	v.write(sfh, 10, []byte("changed"))
	v.flush(sfh)
	if got := v.content(dst); !bytes.Equal(got, data) {
		t.Errorf("dst after a write to src: %s", firstDiff(got, data))
	}
	v.release(sfh)
	if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "src"); err != nil {
		t.Fatal(err)
	}
	v.waitGone(src, 5e9)
	if got := v.content(dst); !bytes.Equal(got, data) {
		t.Errorf("dst after deleting src: %s", firstDiff(got, data))
	}
	v.release(dfh)
	v.reopen(v.opts)
	if got := v.content(dst); !bytes.Equal(got, data) {
		t.Errorf("dst after a remount: %s", firstDiff(got, data))
	}
	v.checkNoLeaks()
}

// TestCopyFileRangeRefuses: copy_file_range(2)'s errors, and the
// destination losing its file capabilities as on a write.
func TestCopyFileRangeRefuses(t *testing.T) {
	v := newVol(t, volConfig{})
	src, sfh := v.create(meta.RootIno, "src", syscall.O_RDWR)
	v.write(sfh, 0, pattern(2, 5000))
	dst, dfh := privFile(v, "dst", 0o755, true)
	ro := v.openFile(src, syscall.O_RDONLY)
	wo := v.openFile(src, syscall.O_WRONLY)
	app := v.openFile(dst, syscall.O_WRONLY|syscall.O_APPEND)
	for _, tc := range []struct {
		name             string
		in, out          uint64
		offIn, offOut, n uint64
		want             error
	}{
		{"source open write-only", wo, dfh, 0, 0, 10, syscall.EBADF},
		{"destination open read-only", sfh, ro, 0, 0, 10, syscall.EBADF},
		{"destination open O_APPEND", sfh, app, 0, 0, 10, syscall.EBADF},
		{"unknown handle", 9999, dfh, 0, 0, 10, syscall.EBADF},
		{"overlapping ranges of one file", sfh, sfh, 0, 100, 200, syscall.EINVAL},
		{"past the largest file size", sfh, dfh, 0, meta.MaxFileSize - 10, 100, syscall.EFBIG},
	} {
		if n, _, err := v.f.CopyFileRange(v.ctx, tc.in, tc.offIn, tc.out, tc.offOut, tc.n, nil); n != 0 || !errors.Is(err, tc.want) {
			t.Errorf("%s: %d, %v; want %v", tc.name, n, err, tc.want)
		}
	}
	dirFh, err := v.f.OpenDirHandle(v.ctx, &meta.Root, meta.RootIno)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		in, out uint64
		want    error
	}{
		{"from a directory", dirFh, dfh, syscall.EINVAL},
		{"into a directory (open read-only)", sfh, dirFh, syscall.EBADF},
	} {
		if n, _, err := v.f.CopyFileRange(v.ctx, tc.in, 0, tc.out, 0, 10, nil); n != 0 || !errors.Is(err, tc.want) {
			t.Errorf("%s: %d, %v; want %v", tc.name, n, err, tc.want)
		}
	}
	if _, caps := privsOf(v, dst); !caps {
		t.Fatal("a refused copy dropped the capabilities")
	}
	if n, _, err := v.f.CopyFileRange(v.ctx, sfh, 6000, dfh, 0, 10, nil); n != 0 || err != nil {
		t.Errorf("from past the source's end: %d, %v; want 0, nil", n, err)
	}
	n, dropped, err := v.f.CopyFileRange(v.ctx, sfh, 100, dfh, 0, 1000, as(&meta.Caller{Uid: 1000, Gid: 1000}))
	if n != 1000 || err != nil || !dropped {
		t.Fatalf("copy: %d, dropped %v, %v", n, dropped, err)
	}
	if mode, caps := privsOf(v, dst); caps || mode != 0o755 {
		t.Errorf("after the copy: mode %o, capabilities %v; want 755 without", mode, caps)
	}
	if got, want := v.read(dfh, 0, 1000), pattern(2, 5000)[100:1100]; !bytes.Equal(got, want) {
		t.Errorf("copied data: %s", firstDiff(got, want))
	}
	for _, fh := range []uint64{sfh, dfh, ro, wo, app, dirFh} {
		v.release(fh)
	}
}
