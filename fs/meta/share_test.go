package meta

import (
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"
)

// layout reads the chunks of ino, by index.
func (v *testVolume) layout(ino uint64) map[uint64][]Slice {
	v.t.Helper()
	d, err := v.m.ReadData(v.ctx, ino, 0, MaxFileSize/uint64(v.m.Format().ChunkSize)-1)
	if err != nil {
		v.t.Fatal(err)
	}
	return d.Chunks
}

func (v *testVolume) share(src, srcOff, dst, dstOff, n uint64) uint64 {
	v.t.Helper()
	k, err := v.m.ShareRange(v.ctx, src, srcOff, dst, dstOff, n)
	if err != nil {
		v.t.Fatalf("share %d bytes at %d of %d to %d of %d: %v", n, srcOff, src, dstOff, dst, err)
	}
	return k
}

// TestShareRange: copy_file_range by sharing blocks. Whole chunks at
// chunk-aligned offsets, and a last partial chunk only when neither file
// holds anything past the range in it, are shared: one reference more per
// block, no new block. What the destination had there is released, and
// the volume stays consistent whatever is deleted afterwards.
func TestShareRange(t *testing.T) {
	const bs, cs = 4096, 8192 // two blocks a chunk
	newVol := func(t *testing.T) *testVolume {
		return newVolume(t, func(f *Format) { f.BlockSize = bs; f.ChunkSize = cs })
	}
	// src: 4 whole chunks and a last one of 1,000 bytes.
	blocks := make([]BlockRef, 9)
	for i := range blocks {
		blocks[i] = fakeBlock(i, bs)
	}
	tail := fakeBlock(99, 1000)
	mkSrc := func(v *testVolume) *Attr {
		f := v.mkfile(RootIno, "src")
		for c := range 4 {
			v.writeSlice(f.Ino, uint64(c*cs), blocks[2*c], blocks[2*c+1])
		}
		v.writeSlice(f.Ino, 4*cs, blocks[8], tail)
		return v.attr(f.Ino)
	}
	const srcSize = 4*cs + bs + 1000

	t.Run("whole file into an empty one", func(t *testing.T) {
		v := newVol(t)
		src := mkSrc(v)
		dst := v.mkfile(RootIno, "dst")
		before := v.m.Stats()
		if k := v.share(src.Ino, 0, dst.Ino, 0, 1<<30); k != srcSize {
			t.Fatalf("shared %d bytes, want %d", k, srcSize)
		}
		if got := v.attr(dst.Ino).Size; got != srcSize {
			t.Errorf("dst size %d, want %d", got, srcSize)
		}
		for _, b := range append(slices.Clone(blocks), tail) {
			if n := v.refcount(b.ID); n != 2 {
				t.Errorf("block %s: %d references, want 2", b.ID, n)
			}
		}
		after := v.m.Stats()
		if after.Blocks != before.Blocks || after.BlockBytes != before.BlockBytes || after.Bytes != before.Bytes+srcSize {
			t.Errorf("stats %+v after sharing, before %+v: want the same blocks and %d bytes more", after, before, srcSize)
		}
		if src, dst := v.layout(src.Ino), v.layout(dst.Ino); len(dst) != 5 || !equalLayouts(src, dst) {
			t.Errorf("dst chunks %v, want those of src %v", dst, src)
		}
		if a := v.attr(dst.Ino); a.Flags&FlagNoChunks != 0 {
			t.Errorf("dst still marked as having no chunks (%#x)", a.Flags)
		}
		// Deleting either file leaves the other whole.
		if _, err := v.m.Unlink(v.ctx, &Root, RootIno, "src"); err != nil {
			t.Fatal(err)
		}
		v.reapAll()
		if n := v.refcount(blocks[0].ID); n != 1 {
			t.Errorf("after deleting src: %d references, want 1", n)
		}
		if len(v.pending()) != 0 {
			t.Errorf("blocks queued for deletion while dst holds them: %d", len(v.pending()))
		}
		v.wantNoErrors()
	})

	t.Run("into a longer file, over its data", func(t *testing.T) {
		v := newVol(t)
		src := mkSrc(v)
		dst := v.mkfile(RootIno, "dst")
		var old []BlockRef
		for c := range 6 {
			b := []BlockRef{fakeBlock(200+2*c, bs), fakeBlock(201+2*c, bs)}
			old = append(old, b...)
			v.writeSlice(dst.Ino, uint64(c*cs), b...)
		}
		// The last chunk of the range holds dst data beyond it: only the
		// 4 whole chunks are shared, the caller copies the rest.
		if k := v.share(src.Ino, 0, dst.Ino, 0, srcSize); k != 4*cs {
			t.Fatalf("shared %d bytes, want %d", k, 4*cs)
		}
		if got := v.attr(dst.Ino).Size; got != 6*cs {
			t.Errorf("dst size %d, want %d (unchanged)", got, 6*cs)
		}
		p := v.pending()
		for i, b := range old {
			released := i < 8
			if n := v.refcount(b.ID); (n == 0) != released || p[b.ID] != released {
				t.Errorf("old dst block %d: %d references, queued %v; want released %v", i, n, p[b.ID], released)
			}
		}
		v.wantNoErrors()
	})

	t.Run("cannot share", func(t *testing.T) {
		v := newVol(t)
		src := mkSrc(v)
		dst := v.mkfile(RootIno, "dst")
		small := v.mkfile(RootIno, "small")
		if _, err := v.m.Write(v.ctx, small.Ino, WriteIn{Inline: []byte("inline"), End: 6, Mtime: time.Now().UnixNano()}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name                string
			src, srcOff, dstOff uint64
			n                   uint64
			dst                 uint64
		}{
			{"source offset off a chunk boundary", src.Ino, bs, 0, cs, dst.Ino},
			{"destination offset off a chunk boundary", src.Ino, 0, 100, cs, dst.Ino},
			{"a partial chunk not at the source's end", src.Ino, 0, 0, cs / 2, dst.Ino},
			{"past the source's end", src.Ino, 5 * cs, 0, cs, dst.Ino},
			{"inline source", small.Ino, 0, 0, cs, dst.Ino},
			{"inline destination", src.Ino, 0, 0, cs, small.Ino},
		} {
			if k := v.share(tc.src, tc.srcOff, tc.dst, tc.dstOff, tc.n); k != 0 {
				t.Errorf("%s: shared %d bytes, want 0", tc.name, k)
			}
		}
		if a := v.attr(dst.Ino); a.Size != 0 || len(v.layout(dst.Ino)) != 0 {
			t.Errorf("dst changed: size %d, chunks %v", a.Size, v.layout(dst.Ino))
		}
		if _, err := v.m.ShareRange(v.ctx, src.Ino, 0, src.Ino, cs, 2*cs); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("overlapping ranges of one file: %v, want EINVAL", err)
		}
		dir := v.mkdir(RootIno, "d")
		if _, err := v.m.ShareRange(v.ctx, src.Ino, 0, dir.Ino, 0, cs); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("into a directory: %v, want EINVAL", err)
		}
		v.wantNoErrors()
	})

	t.Run("within one file", func(t *testing.T) {
		v := newVol(t)
		src := mkSrc(v)
		if k := v.share(src.Ino, 0, src.Ino, 8*cs, 2*cs); k != 2*cs {
			t.Fatalf("shared %d bytes, want %d", k, 2*cs)
		}
		l := v.layout(src.Ino)
		if got := v.attr(src.Ino).Size; got != 10*cs {
			t.Errorf("size %d, want %d", got, 10*cs)
		}
		if !equalLayouts(map[uint64][]Slice{0: l[0], 1: l[1]}, map[uint64][]Slice{0: l[8], 1: l[9]}) {
			t.Errorf("chunks 8 and 9 %v %v, want chunks 0 and 1 %v %v", l[8], l[9], l[0], l[1])
		}
		v.wantNoErrors()
	})

	t.Run("one transaction at a time", func(t *testing.T) {
		v := newVolume(t, func(f *Format) { f.BlockSize = bs; f.ChunkSize = bs })
		src := v.mkfile(RootIno, "src")
		const chunks = reapBatch + 36
		for c := range chunks {
			v.writeSlice(src.Ino, uint64(c*bs), fakeBlock(500+c, bs))
		}
		dst := v.mkfile(RootIno, "dst")
		if k := v.share(src.Ino, 0, dst.Ino, 0, chunks*bs); k != reapBatch*bs {
			t.Fatalf("first call shared %d bytes, want %d", k, reapBatch*bs)
		}
		if k := v.share(src.Ino, reapBatch*bs, dst.Ino, reapBatch*bs, 36*bs); k != 36*bs {
			t.Fatalf("second call shared %d bytes, want %d", k, 36*bs)
		}
		if !equalLayouts(v.layout(src.Ino), v.layout(dst.Ino)) {
			t.Error("dst chunks differ from src's")
		}
		v.wantNoErrors()
	})
}

func equalLayouts(a, b map[uint64][]Slice) bool {
	if len(a) != len(b) {
		return false
	}
	for i, sa := range a {
		if string(encodeSlices(sa)) != string(encodeSlices(b[i])) {
			return false
		}
	}
	return true
}
