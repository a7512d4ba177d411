package integration

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFallocate: fallocate(2) on the mount extends a file (mode 0) with
// bytes that read as zeros, never shortens one, keeps the size with
// FALLOC_FL_KEEP_SIZE, and refuses what objfs does not do (punching holes,
// zeroing ranges) with EOPNOTSUPP, the data untouched.
func TestFallocate(t *testing.T) {
	v := newVolume(t)
	v.mount(t)
	p := filepath.Join(v.mnt, "f")
	data := bytes.Repeat([]byte("objfs!"), 1000) // 6,000 bytes
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	want := append([]byte(nil), data...)
	for _, tc := range []struct {
		what        string
		mode        uint32
		off, length int64
		errno       error
		size        int64 // what the file is after
	}{
		{"inside the file", 0, 0, 4096, nil, 6000},
		{"past the end", 0, 4096, 8192, nil, 12288},
		{"ending before the end", 0, 100, 10, nil, 12288},
		{"keep size past the end", unix.FALLOC_FL_KEEP_SIZE, 0, 1 << 20, nil, 12288},
		{"punch hole", unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, 0, 4096, unix.EOPNOTSUPP, 12288},
		{"zero range", unix.FALLOC_FL_ZERO_RANGE, 0, 4096, unix.EOPNOTSUPP, 12288},
	} {
		err := unix.Fallocate(fd, tc.mode, tc.off, tc.length)
		if (tc.errno == nil && err != nil) || (tc.errno != nil && !errors.Is(err, tc.errno)) {
			t.Errorf("fallocate %s: %v, want %v", tc.what, err, tc.errno)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != tc.size {
			t.Errorf("after fallocate %s: size %d, want %d", tc.what, st.Size, tc.size)
		}
		for int64(len(want)) < tc.size {
			want = append(want, 0)
		}
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("file holds %d bytes not as written and extended with zeros (%d bytes read)", countDiff(got, want), len(got))
	}
}

func countDiff(a, b []byte) int {
	n := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}
