package fs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/objfs/objfs/fs/meta"
)

// TestBlockHashPerFormat writes a multi-block file on volumes of each
// format and checks that every stored object is named by its volume's
// hash (so version 1 volumes keep SHA-256 names and new ones use BLAKE3),
// that the file reads back from the store after a restart, and that a
// damaged object is refused rather than returned.
func TestBlockHashPerFormat(t *testing.T) {
	sha := func(b []byte) meta.BlockID { return sha256.Sum256(b) }
	b3 := func(b []byte) meta.BlockID { return blake3.Sum256(b) }
	tests := []struct {
		name    string
		version int
		hash    string
		want    func([]byte) meta.BlockID
	}{
		{"version 1 (sha256, no hash field)", 1, "", sha},
		{"version 2 sha256", 2, meta.HashSHA256, sha},
		{"version 2 blake3", 2, meta.HashBLAKE3, b3},
		{"new volume default", 0, "", b3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVol(t, volConfig{version: tc.version, blockHash: tc.hash, opts: Options{MemCacheBytes: -1}})
			data := make([]byte, 200<<10) // three whole 64 KiB blocks and a tail
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
			v.write(fh, 0, data)
			v.flush(fh)
			v.release(fh)
			v.waitCompactions()

			st := v.store.(*memStore)
			st.mu.Lock()
			if len(st.objs) == 0 {
				st.mu.Unlock()
				t.Fatal("no blocks stored")
			}
			var victim string
			for key, obj := range st.objs {
				if want := tc.want(obj).ObjectKey(); key != want {
					t.Errorf("object %s holds content whose %s name is %s", key, tc.name, want)
				}
				victim = key
			}
			st.mu.Unlock()

			v.reopen(Options{MemCacheBytes: -1})
			if got := v.content(ino); !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, differing from the %d written", len(got), len(data))
			}

			st.mu.Lock()
			st.objs[victim][7] ^= 0x40
			st.mu.Unlock()
			fh = v.openFile(ino, syscall.O_RDONLY)
			defer v.release(fh)
			_, err := v.f.Read(v.ctx, fh, 0, make([]byte, len(data)))
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("read with a damaged block: %v, want EIO", err)
			}
		})
	}
}
