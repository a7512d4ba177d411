package objstore

import (
	"bytes"
	"context"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// alignedBuf returns n bytes of a pattern starting at an address that is a
// multiple of directAlign, shifted by skew bytes.
func alignedBuf(n, skew int) []byte {
	raw := make([]byte, n+2*directAlign)
	addr := int(uintptrOf(raw)) % directAlign
	start := (directAlign-addr)%directAlign + skew
	b := raw[start : start+n]
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	return b
}

// Large aligned objects are written (and read back) with O_DIRECT,
// everything else through the page cache, and every one reads back intact
// whatever buffer it is read into.
func TestDirectWrites(t *testing.T) {
	dirs := map[string]string{"temp dir": t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		shm, err := os.MkdirTemp("/dev/shm", "objfs-direct-")
		if err == nil {
			defer os.RemoveAll(shm)
			dirs["tmpfs"] = shm
		}
	}
	tests := []struct {
		name       string
		data       []byte
		wantDirect bool
	}{
		{"4 MiB aligned", alignedBuf(4<<20, 0), true},
		{"1 MiB aligned", alignedBuf(1<<20, 0), true},
		{"4 MiB at an odd address", alignedBuf(4<<20, 1), false},
		{"length not a multiple of 4096", alignedBuf(1<<20+100, 0), false},
		{"small", alignedBuf(64<<10, 0), false},
	}
	for dname, dir := range dirs {
		d, err := NewDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for i, tc := range tests {
			t.Run(dname+"/"+tc.name, func(t *testing.T) {
				f, err := os.CreateTemp(dir, "probe")
				if err != nil {
					t.Fatal(err)
				}
				defer os.Remove(f.Name())
				defer f.Close()
				flags := func() int {
					fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
					if err != nil {
						t.Fatal(err)
					}
					return fl
				}
				direct := setDirect(f, tc.data)
				switch {
				case direct && !tc.wantDirect:
					t.Errorf("O_DIRECT for data it cannot take")
				case !direct && tc.wantDirect && dname != "tmpfs": // tmpfs may refuse it
					t.Errorf("no O_DIRECT for large aligned data")
				case direct && flags()&unix.O_DIRECT == 0:
					t.Fatalf("setDirect said yes, but the flags are %#x", flags())
				}
				if direct {
					if err := clearDirect(f); err != nil || flags()&unix.O_DIRECT != 0 {
						t.Fatalf("clearDirect: %v, flags %#x", err, flags())
					}
				}
				key := "blocks/direct/" + string(rune('a'+i))
				if err := d.Put(context.Background(), key, tc.data); err != nil {
					t.Fatal(err)
				}
				got, err := d.Get(context.Background(), key)
				if err != nil || !bytes.Equal(got, tc.data) {
					t.Fatalf("read back %d bytes (%v), wrote %d", len(got), err, len(tc.data))
				}
				// Reads into buffers direct I/O can and cannot use: an
				// aligned one with room for the rounded-up length, one
				// without that room, one at an odd address.
				n := int(roundDirect(int64(len(tc.data))))
				for _, buf := range [][]byte{alignedBuf(n, 0), alignedBuf(len(tc.data), 0)[:len(tc.data):len(tc.data)], alignedBuf(n, 3)} {
					clear(buf)
					got, err := d.GetInto(context.Background(), key, buf)
					if err != nil || !bytes.Equal(got, tc.data) {
						t.Fatalf("GetInto a buffer of cap %d: %d bytes (%v), wrote %d", cap(buf), len(got), err, len(tc.data))
					}
				}
			})
		}
	}
}
