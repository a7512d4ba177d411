package meta

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
)

// seekModel is a file's layout byte by byte: which bytes some write covers.
type seekModel struct {
	covered []bool
	size    uint64
}

// seek is what SEEK_DATA/SEEK_HOLE must answer, found the slow way.
func (s *seekModel) seek(off uint64, hole bool) (uint64, error) {
	if off >= s.size {
		return 0, syscall.ENXIO
	}
	for i := off; i < s.size; i++ {
		if s.covered[i] != hole {
			return i, nil
		}
	}
	if hole {
		return s.size, nil
	}
	return 0, syscall.ENXIO
}

// TestSeekAgainstModel: random layouts of writes (across chunk boundaries,
// over each other, in several commits so that chunks get tail records),
// truncations down and up: every SEEK_DATA and SEEK_HOLE answer equals
// the byte-by-byte model's.
func TestSeekAgainstModel(t *testing.T) {
	const chunk = 16 << 10
	for seed := range uint64(40) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			v := newVolume(t, func(f *Format) { f.ChunkSize = chunk; f.BlockSize = 4 << 10 })
			a := v.mkfile(RootIno, "f")
			r := rand.New(rand.NewPCG(seed, 7))
			maxSize := uint64(1+r.IntN(12)) * chunk
			m := &seekModel{covered: make([]bool, 2*maxSize)}
			blk := 0
			for range 1 + r.IntN(30) {
				switch r.IntN(8) {
				case 0: // truncate down or up
					size := uint64(r.Int64N(int64(maxSize)))
					if _, err := v.m.SetAttr(v.ctx, &Root, a.Ino, SetAttrIn{Valid: SetSize, Size: size}); err != nil {
						t.Fatal(err)
					}
					for i := size; i < m.size; i++ {
						m.covered[i] = false
					}
					m.size = size
				case 1: // a hole slice of up to 8 KiB inside the file (a punch)
					if m.size == 0 {
						continue
					}
					off := uint64(r.Int64N(int64(m.size)))
					end := min(m.size, off+1+uint64(r.IntN(8<<10)))
					var cws []ChunkWrite
					for lo := off; lo < end; lo = (lo/chunk + 1) * chunk {
						hi := min(end, (lo/chunk+1)*chunk)
						cws = append(cws, ChunkWrite{Index: lo / chunk, Slices: []Slice{{Pos: uint32(lo % chunk), Len: uint32(hi - lo)}}})
					}
					if _, err := v.m.Write(v.ctx, a.Ino, WriteIn{Chunks: cws, End: m.size, Mtime: time.Now().UnixNano()}); err != nil {
						t.Fatal(err)
					}
					for i := off; i < end; i++ {
						m.covered[i] = false
					}
				default: // a write of up to 4 KiB, split at chunk boundaries
					off := uint64(r.Int64N(int64(maxSize)))
					n := 1 + uint64(r.IntN(4<<10))
					for end := off + n; off < end; {
						part := min(end, (off/chunk+1)*chunk) - off
						blk++
						v.writeSlice(a.Ino, off, fakeBlock(blk, uint32(part)))
						for i := off; i < off+part; i++ {
							m.covered[i] = true
						}
						m.size = max(m.size, off+part)
						off += part
					}
				}
			}
			if got := v.attr(a.Ino).Size; got != m.size {
				t.Fatalf("size %d, model %d", got, m.size)
			}
			offs := []uint64{0, m.size - 1, m.size, m.size + 1, m.size + chunk}
			for range 60 {
				offs = append(offs, uint64(r.Int64N(int64(m.size)+1)))
			}
			for i := uint64(0); i <= m.size+chunk; i += chunk / 2 {
				offs = append(offs, i)
			}
			for _, off := range offs {
				if off > m.size+2*chunk { // m.size - 1 of an empty file
					continue
				}
				for _, hole := range []bool{false, true} {
					want, wantErr := m.seek(off, hole)
					got, err := v.m.Seek(v.ctx, a.Ino, off, hole)
					if !errors.Is(err, wantErr) || err == nil && got != want {
						t.Fatalf("size %d: seek(%d, hole %v) = %d, %v; want %d, %v", m.size, off, hole, got, err, want, wantErr)
					}
				}
			}
		})
	}
}

// TestSeekCases: inline files, huge holes, and files that are not regular.
func TestSeekCases(t *testing.T) {
	v := newVolume(t, nil) // 64 MiB chunks
	inline := v.mkfile(RootIno, "inline")
	if _, err := v.m.Write(v.ctx, inline.Ino, WriteIn{Inline: []byte("hello"), End: 5, Mtime: time.Now().UnixNano()}); err != nil {
		t.Fatal(err)
	}
	sparse := v.mkfile(RootIno, "sparse")
	const far = 1 << 45 // half a million chunks of hole before the data
	v.writeSlice(sparse.Ino, far, fakeBlock(1, 4096))
	if _, err := v.m.SetAttr(v.ctx, &Root, sparse.Ino, SetAttrIn{Valid: SetSize, Size: far + 1<<30}); err != nil {
		t.Fatal(err)
	}
	empty := v.mkfile(RootIno, "empty")
	dir := v.mkdir(RootIno, "d")
	for _, c := range []struct {
		name string
		ino  uint64
		off  uint64
		hole bool
		want uint64
		err  error
	}{
		{"inline data", inline.Ino, 2, false, 2, nil},
		{"inline hole", inline.Ino, 2, true, 5, nil},
		{"inline at the end", inline.Ino, 5, true, 0, syscall.ENXIO},
		{"data after a huge hole", sparse.Ino, 0, false, far, nil},
		{"hole at the start", sparse.Ino, 0, true, 0, nil},
		{"hole after the data", sparse.Ino, far, true, far + 4096, nil},
		{"no data after the last", sparse.Ino, far + 4096, false, 0, syscall.ENXIO},
		{"hole at the end of the file", sparse.Ino, far + 4096, true, far + 4096, nil},
		{"empty file", empty.Ino, 0, false, 0, syscall.ENXIO},
		{"empty file hole", empty.Ino, 0, true, 0, syscall.ENXIO},
		{"directory", dir.Ino, 0, false, 0, syscall.EISDIR},
		{"missing inode", 1 << 40, 0, false, 0, syscall.ENOENT},
	} {
		got, err := v.m.Seek(v.ctx, c.ino, c.off, c.hole)
		if !errors.Is(err, c.err) || err == nil && got != c.want {
			t.Errorf("%s: seek(%d, hole %v) = %d, %v; want %d, %v", c.name, c.off, c.hole, got, err, c.want, c.err)
		}
	}
}
