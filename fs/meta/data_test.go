package meta

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"
)

// refcount reads a block's reference count (0 if it has no record).
func (v *testVolume) refcount(id BlockID) int64 {
	v.t.Helper()
	var n int64
	err := v.kv.View(v.ctx, func(t Txn) error {
		val, err := t.Get(keyBlock(pRefcount, id))
		if errors.Is(err, ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		n = int64(binary.LittleEndian.Uint64(val))
		return nil
	})
	if err != nil {
		v.t.Fatalf("read refcount: %v", err)
	}
	return n
}

func (v *testVolume) pending() map[BlockID]bool {
	v.t.Helper()
	ids, err := v.m.PendingBlocks(v.ctx, time.Now().Add(time.Hour), nil, 1<<20)
	if err != nil {
		v.t.Fatalf("pending blocks: %v", err)
	}
	out := map[BlockID]bool{}
	for _, id := range ids {
		out[id] = true
	}
	return out
}

func (v *testVolume) chunk(ino uint64, idx uint64) []Slice {
	v.t.Helper()
	d, err := v.m.ReadData(v.ctx, ino, idx, idx)
	if err != nil {
		v.t.Fatalf("read data of %d: %v", ino, err)
	}
	return d.Chunks[idx]
}

func (v *testVolume) truncate(ino uint64, size uint64) {
	v.t.Helper()
	if _, err := v.m.SetAttr(v.ctx, &Root, ino, SetAttrIn{Valid: SetSize, Size: size}); err != nil {
		v.t.Fatalf("truncate %d to %d: %v", ino, size, err)
	}
}

// TestBlockRefcounts follows the reference counts and the deletion queue of
// blocks through writes, truncation, sharing and reaping.
func TestBlockRefcounts(t *testing.T) {
	v := newVolume(t, func(f *Format) { f.BlockSize = 4096; f.ChunkSize = 64 << 10 })
	b := []BlockRef{fakeBlock(0, 4096), fakeBlock(1, 4096), fakeBlock(2, 4096), fakeBlock(3, 4096)}
	f := v.mkfile(RootIno, "f")
	g := v.mkfile(RootIno, "g")
	v.writeSlice(f.Ino, 0, b[0], b[1], b[2])
	v.writeSlice(g.Ino, 8192, b[2], b[3])
	for i, want := range []int64{1, 1, 2, 1} {
		if got := v.refcount(b[i].ID); got != want {
			t.Errorf("block %d: refcount %d, want %d", i, got, want)
		}
	}
	if st := v.m.Stats(); st.Blocks != 4 || st.BlockBytes != 4*4096 {
		t.Errorf("stats %+v, want 4 blocks of 4096", st)
	}

	// Truncating into the middle of block 1 drops block 2 from f only.
	v.truncate(f.Ino, 5000)
	if got := v.refcount(b[2].ID); got != 1 {
		t.Errorf("after truncate: block 2 refcount %d, want 1 (g still has it)", got)
	}
	if got := v.refcount(b[1].ID); got != 1 {
		t.Errorf("after truncate: block 1 refcount %d, want 1 (bytes 4096..5000 are in it)", got)
	}
	if ss := v.chunk(f.Ino, 0); len(ss) != 1 || ss[0].Len != 5000 || len(ss[0].Blocks) != 2 {
		t.Errorf("after truncate to 5000: slices %+v, want one of 5000 bytes in 2 blocks", ss)
	}
	if p := v.pending(); len(p) != 0 {
		t.Errorf("blocks queued while still referenced: %d", len(p))
	}

	// Truncating to a block boundary drops block 1.
	v.truncate(f.Ino, 4096)
	if got := v.refcount(b[1].ID); got != 0 || !v.pending()[b[1].ID] {
		t.Errorf("block 1 after truncate to 4096: refcount %d, queued %v; want 0, true", got, v.pending()[b[1].ID])
	}
	// Referencing it again takes it off the queue, and ClaimBlock refuses it.
	v.writeSlice(g.Ino, 0, b[1])
	if v.pending()[b[1].ID] {
		t.Errorf("re-referenced block is still queued")
	}
	if ok, err := v.m.ClaimBlock(v.ctx, b[1].ID); ok || err != nil {
		t.Errorf("ClaimBlock of a referenced block = %v, %v", ok, err)
	}

	// Truncate to 0 drops everything of f and its chunk record.
	v.truncate(f.Ino, 0)
	if got := v.refcount(b[0].ID); got != 0 || !v.pending()[b[0].ID] {
		t.Errorf("block 0 after truncate to 0: refcount %d, queued %v", got, v.pending()[b[0].ID])
	}
	d, _ := v.m.ReadData(v.ctx, f.Ino, 0, ^uint64(0))
	if len(d.Chunks) != 0 {
		t.Errorf("chunks left after truncate to 0: %+v", d.Chunks)
	}
	// A queued, unreferenced block is claimed exactly once.
	if ok, err := v.m.ClaimBlock(v.ctx, b[0].ID); !ok || err != nil {
		t.Errorf("first ClaimBlock of an unreferenced block = %v, %v; want true", ok, err)
	}
	if ok, _ := v.m.ClaimBlock(v.ctx, b[0].ID); ok {
		t.Errorf("second ClaimBlock of the same block = true")
	}

	// Reaping g releases its references.
	if _, err := v.m.Unlink(v.ctx, &Root, RootIno, "g"); err != nil {
		t.Fatal(err)
	}
	v.reapAll()
	for i := 1; i < 4; i++ {
		if got := v.refcount(b[i].ID); got != 0 {
			t.Errorf("block %d after reaping: refcount %d", i, got)
		}
		if !v.pending()[b[i].ID] {
			t.Errorf("block %d after reaping is not queued", i)
		}
	}
	if st := v.m.Stats(); st.Blocks != 0 || st.BlockBytes != 0 {
		t.Errorf("stats after everything is released: %+v", st)
	}
}

// TestWriteReleasesShadowedSlices: a write that covers an older slice
// completely makes its blocks unreachable; they must be released (and
// queued for deletion) rather than kept referenced forever.
func TestWriteReleasesShadowedSlices(t *testing.T) {
	v := newVolume(t, func(f *Format) { f.BlockSize = 4096; f.ChunkSize = 64 << 10 })
	f := v.mkfile(RootIno, "f")
	old := []BlockRef{fakeBlock(10, 4096), fakeBlock(11, 4096)}
	v.writeSlice(f.Ino, 4096, old...)
	v.writeSlice(f.Ino, 0, fakeBlock(12, 4096), fakeBlock(13, 4096), fakeBlock(14, 4096), fakeBlock(15, 4096))
	for i, b := range old {
		if n := v.refcount(b.ID); n != 0 {
			t.Errorf("block %d of a fully overwritten slice still has %d references", i, n)
		}
		if !v.pending()[b.ID] {
			t.Errorf("block %d of a fully overwritten slice is not queued for deletion", i)
		}
	}
	if ss := v.chunk(f.Ino, 0); len(ss) != 1 {
		t.Errorf("chunk keeps %d slices after a full overwrite, want 1", len(ss))
	}
}

// TestTruncateHugeSparseFile: truncating a sparse file whose size is beyond
// 2^32 chunks must not touch data at the start of the file. (The chunk index
// is a uint32: size/ChunkSize wraps around for chunk sizes below 256 KiB.)
func TestTruncateHugeSparseFile(t *testing.T) {
	v := newVolume(t, func(f *Format) { f.BlockSize = 4096; f.ChunkSize = 64 << 10 })
	if ft := v.m.Format(); ft.Validate() != nil {
		t.Fatalf("format rejected: %v", ft.Validate())
	}
	f := v.mkfile(RootIno, "f")
	v.writeSlice(f.Ino, 0, fakeBlock(20, 4096))
	huge := uint64(1) << 48 // 2^32 chunks of 64 KiB: still below MaxFileSize
	v.truncate(f.Ino, huge+8192)
	v.truncate(f.Ino, huge+100)
	ss := v.chunk(f.Ino, 0)
	if len(ss) != 1 || ss[0].Len != 4096 {
		t.Errorf("truncating from %d to %d changed chunk 0 (bytes 0..4096): slices %+v", huge+8192, huge+100, ss)
	}
	if n := v.refcount(fakeBlock(20, 4096).ID); n != 1 {
		t.Errorf("block of chunk 0 has %d references after truncating far beyond it, want 1", n)
	}
}

// TestInlineData: inline content is replaced, cut by truncation and freed by
// reaping.
func TestInlineData(t *testing.T) {
	v := newVolume(t, nil)
	f := v.mkfile(RootIno, "f")
	write := func(content []byte, end uint64) {
		t.Helper()
		if _, err := v.m.Write(v.ctx, f.Ino, WriteIn{Inline: content, End: end, Mtime: time.Now().UnixNano()}); err != nil {
			t.Fatal(err)
		}
	}
	read := func() *Data {
		t.Helper()
		d, err := v.m.ReadData(v.ctx, f.Ino, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	write([]byte("hello, world"), 12)
	if d := read(); string(d.Inline) != "hello, world" || d.Attr.Size != 12 {
		t.Errorf("inline %q size %d", d.Inline, d.Attr.Size)
	}
	v.truncate(f.Ino, 5)
	if d := read(); string(d.Inline) != "hello" || d.Attr.Size != 5 {
		t.Errorf("after truncate to 5: inline %q size %d", d.Inline, d.Attr.Size)
	}
	v.truncate(f.Ino, 100)
	if d := read(); string(d.Inline) != "hello" || d.Attr.Size != 100 {
		t.Errorf("after truncate up to 100: inline %q size %d (the rest reads as zeros)", d.Inline, d.Attr.Size)
	}
	if st := v.m.Stats(); st.Bytes != 100 {
		t.Errorf("stats bytes %d, want 100", st.Bytes)
	}
	// Dropping the inline content for chunks.
	if _, err := v.m.Write(v.ctx, f.Ino, WriteIn{DropInline: true, End: 100, Mtime: time.Now().UnixNano(),
		Chunks: []ChunkWrite{{Index: 0, Slices: []Slice{{Pos: 0, Len: 100, Blocks: []BlockRef{fakeBlock(30, 100)}}}}}}); err != nil {
		t.Fatal(err)
	}
	if d := read(); d.Inline != nil || len(d.Chunks[0]) != 1 {
		t.Errorf("after DropInline: inline %q, chunk 0 %+v", d.Inline, d.Chunks[0])
	}
	// Writes to non-files and slices outside the chunk are refused.
	dir := v.mkdir(RootIno, "d")
	if _, err := v.m.Write(v.ctx, dir.Ino, WriteIn{Inline: []byte("x"), End: 1}); err != syscall.EINVAL {
		t.Errorf("write to a directory: %v, want EINVAL", err)
	}
	cs := uint32(v.m.Format().ChunkSize)
	if _, err := v.m.Write(v.ctx, f.Ino, WriteIn{End: 1, Chunks: []ChunkWrite{{Index: 0, Slices: []Slice{{Pos: cs - 10, Len: 20, Blocks: []BlockRef{fakeBlock(31, 20)}}}}}}); err == nil {
		t.Errorf("a slice crossing the chunk end was accepted")
	}
	if _, err := v.m.Write(v.ctx, f.Ino, WriteIn{End: MaxFileSize + 1}); err != syscall.EFBIG {
		t.Errorf("write beyond the maximum size: %v, want EFBIG", err)
	}
	if n := v.refcount(fakeBlock(31, 20).ID); n != 0 {
		t.Errorf("a refused write left %d references", n)
	}
}

// TestReapManyChunks: reaping works through more chunks than one batch.
func TestReapManyChunks(t *testing.T) {
	v := newVolume(t, func(f *Format) { f.BlockSize = 4096; f.ChunkSize = 4096 })
	f := v.mkfile(RootIno, "f")
	const n = 150 // more than two reap batches
	for i := range n {
		v.writeSlice(f.Ino, uint64(i)*4096, fakeBlock(100+i, 4096))
	}
	if err := v.m.SetXattr(v.ctx, &Root, f.Ino, "user.x", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if st := v.m.Stats(); st.Blocks != n || st.Bytes != n*4096 {
		t.Fatalf("stats before: %+v", st)
	}
	if _, err := v.m.Unlink(v.ctx, &Root, RootIno, "f"); err != nil {
		t.Fatal(err)
	}
	v.reapAll()
	if _, err := v.m.GetAttr(v.ctx, f.Ino); err != syscall.ENOENT {
		t.Errorf("reaped inode: %v", err)
	}
	if st := v.m.Stats(); st != (Stats{Inodes: 1, Dirs: 1}) {
		t.Errorf("stats after reaping: %+v", st)
	}
	if p := v.pending(); len(p) != n {
		t.Errorf("%d blocks queued, want %d", len(p), n)
	}
	// Reap is idempotent.
	if err := v.m.Reap(v.ctx, f.Ino); err != nil {
		t.Errorf("second reap: %v", err)
	}
	// Reap leaves a linked inode alone.
	g := v.mkfile(RootIno, "g")
	if err := v.m.Reap(v.ctx, g.Ino); err != nil {
		t.Fatal(err)
	}
	if _, err := v.m.GetAttr(v.ctx, g.Ino); err != nil {
		t.Errorf("Reap of a linked inode removed it: %v", err)
	}
}

// TestReplaceChunk: a compaction's result replaces the slices it read, and
// keeps what was written since (appended slices, including ones that
// dropped or extended a slice it read); after any other change it is
// refused and changes nothing. References end up exactly on what the chunk
// lists.
func TestReplaceChunk(t *testing.T) {
	const bs = 4096
	blk := func(n int) BlockRef { return fakeBlock(n, bs) }
	sl := func(pos uint32, bb ...BlockRef) Slice {
		return Slice{Pos: pos, Len: uint32(len(bb)) * bs, Blocks: bb}
	}
	// Read: blocks 40 over 16 KiB, then 41 at 4 KiB and 42 at 12 KiB; the
	// compaction's result is one slice of fresh blocks 50-53.
	repl := []Slice{sl(0, blk(50), blk(51), blk(52), blk(53))}
	tests := []struct {
		name  string
		since func(v *testVolume, ino uint64) // what happens after the read
		want  []Slice                         // the chunk after; nil: refused, unchanged
		gone  []int                           // blocks left with no reference
	}{
		{"unchanged", func(*testVolume, uint64) {}, repl, []int{40, 41, 42}},
		{"a write appended", func(v *testVolume, ino uint64) { v.writeSlice(ino, 6*bs, blk(60)) },
			append(slices.Clone(repl), sl(6*bs, blk(60))), []int{40, 41, 42}},
		{"a write covered a slice read", func(v *testVolume, ino uint64) { v.writeSlice(ino, bs, blk(61)) },
			append(slices.Clone(repl), sl(bs, blk(61))), []int{40, 41, 42}},
		{"a write extended the newest slice read", func(v *testVolume, ino uint64) { v.writeSlice(ino, 4*bs, blk(62)) },
			append(slices.Clone(repl), sl(3*bs, blk(42), blk(62))), []int{40, 41}},
		{"a truncation cut a slice", func(v *testVolume, ino uint64) { v.truncate(ino, 2*bs+100) }, nil, nil},
		{"a truncation, then a write over part of it", func(v *testVolume, ino uint64) {
			v.truncate(ino, bs)
			v.writeSlice(ino, 2*bs, blk(63))
		}, nil, nil},
		{"a truncation, then a write over all of it", func(v *testVolume, ino uint64) {
			v.truncate(ino, bs)
			v.writeSlice(ino, 0, blk(64), blk(65), blk(66), blk(67))
		}, []Slice{sl(0, blk(64), blk(65), blk(66), blk(67))}, []int{40, 41, 42, 50, 51, 52, 53}},
		{"a write over all of it: the compacted slice is hidden", func(v *testVolume, ino uint64) {
			v.writeSlice(ino, 0, blk(64), blk(65), blk(66), blk(67))
		}, []Slice{sl(0, blk(64), blk(65), blk(66), blk(67))}, []int{40, 41, 42, 50, 51, 52, 53}},
		{"a write over part of the compacted slice", func(v *testVolume, ino uint64) {
			v.writeSlice(ino, 0, blk(64), blk(65))
		}, append(slices.Clone(repl), sl(0, blk(64), blk(65))), []int{40, 41, 42}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVolume(t, func(f *Format) { f.BlockSize = bs; f.ChunkSize = 64 << 10 })
			f := v.mkfile(RootIno, "f")
			v.writeSlice(f.Ino, 0, blk(40), blk(40), blk(40), blk(40))
			v.writeSlice(f.Ino, bs, blk(41))
			v.writeSlice(f.Ino, 3*bs, blk(42))
			old := v.chunk(f.Ino, 0)
			if len(old) != 3 {
				t.Fatalf("setup: %d slices", len(old))
			}
			tt.since(v, f.Ino)
			before := v.chunk(f.Ino, 0)
			ok, err := v.m.ReplaceChunk(v.ctx, f.Ino, 0, old, repl)
			if err != nil || ok != (tt.want != nil) {
				t.Fatalf("ReplaceChunk = %v, %v; want %v", ok, err, tt.want != nil)
			}
			want := tt.want
			if want == nil {
				want = before
			}
			if got := v.chunk(f.Ino, 0); !bytes.Equal(encodeSlices(got), encodeSlices(want)) {
				t.Errorf("chunk after:\n%+v\nwant\n%+v", got, want)
			}
			// Every block holds one reference per time the chunk lists it.
			listed := map[BlockID]int64{}
			for _, s := range v.chunk(f.Ino, 0) {
				for _, b := range s.Blocks {
					listed[b.ID]++
				}
			}
			for n := 40; n < 70; n++ {
				if got, want := v.refcount(blk(n).ID), listed[blk(n).ID]; got != want {
					t.Errorf("block %d: %d references, want %d", n, got, want)
				}
			}
			for _, n := range tt.gone {
				if !v.pending()[blk(n).ID] {
					t.Errorf("block %d is not queued for deletion", n)
				}
			}
			v.wantNoErrors()
		})
	}
}

// TestReadDataRanges: ReadData returns exactly the chunks of the range
// that hold slices, whether it reads them key by key (short ranges) or
// with an iterator (long ones), and nothing of another inode.
func TestReadDataRanges(t *testing.T) {
	v := newVolume(t, nil)
	f := v.mkfile(RootIno, "f")
	other := v.mkfile(RootIno, "other")
	cs := uint64(v.m.Format().ChunkSize)
	stored := []uint64{0, 1, 3, 7}
	for i, idx := range stored {
		if _, err := v.m.Write(v.ctx, f.Ino, WriteIn{End: (idx + 1) * cs, Mtime: time.Now().UnixNano(),
			Chunks: []ChunkWrite{{Index: idx, Slices: []Slice{{Pos: 0, Len: 10, Blocks: []BlockRef{fakeBlock(40+i, 10)}}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	// A neighbour's chunk right after f's range must not leak in.
	if _, err := v.m.Write(v.ctx, other.Ino, WriteIn{End: cs, Mtime: time.Now().UnixNano(),
		Chunks: []ChunkWrite{{Index: 0, Slices: []Slice{{Pos: 0, Len: 10, Blocks: []BlockRef{fakeBlock(50, 10)}}}}}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		first, last uint64
		want        []uint64
	}{
		{0, 0, []uint64{0}},
		{2, 2, nil},
		{0, 3, []uint64{0, 1, 3}},
		{1, 2, []uint64{1}},
		{4, 6, nil},
		{2, 9, []uint64{3, 7}},
		{0, ^uint64(0), []uint64{0, 1, 3, 7}},
		{7, ^uint64(0), []uint64{7}},
		{^uint64(0) - 2, ^uint64(0), nil},
	} {
		d, err := v.m.ReadData(v.ctx, f.Ino, tc.first, tc.last)
		if err != nil {
			t.Fatalf("[%d, %d]: %v", tc.first, tc.last, err)
		}
		if len(d.Chunks) != len(tc.want) {
			t.Errorf("[%d, %d]: %d chunks, want %v", tc.first, tc.last, len(d.Chunks), tc.want)
		}
		for _, idx := range tc.want {
			ss := d.Chunks[idx]
			if len(ss) != 1 || ss[0].Len != 10 || ss[0].Blocks[0] != fakeBlock(40+slices.Index(stored, idx), 10) {
				t.Errorf("[%d, %d]: chunk %d = %+v", tc.first, tc.last, idx, ss)
			}
		}
	}
}

// TestUnlinkFreeing: unlinking the last name of a closed file frees it in
// the same transaction (inode, data references, inline data, extended
// attributes, no orphan left, statistics updated, the volume consistent);
// an open file, a file with another name, or one too big for one
// transaction becomes an orphan for Reap, as with Unlink.
func TestUnlinkFreeing(t *testing.T) {
	const cs = 4096
	for _, tc := range []struct {
		name      string
		chunks    int
		inline    bool
		link      bool // a second name survives the unlink
		open      bool // closed reports the file open
		wantFreed bool
	}{
		{"closed file with blocks", 3, false, false, false, true},
		{"closed small file with inline data", 0, true, false, false, true},
		{"closed empty file", 0, false, false, false, true},
		{"open file", 3, false, false, true, false},
		{"file with another name", 3, false, true, false, false},
		{"closed file of more chunks than one transaction frees", reapBatch + 5, false, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVolume(t, func(f *Format) { f.BlockSize = cs; f.ChunkSize = cs })
			f := v.mkfile(RootIno, "f")
			for i := range tc.chunks {
				v.writeSlice(f.Ino, uint64(i)*cs, fakeBlock(200+i, cs))
			}
			if tc.inline {
				if _, err := v.m.Write(v.ctx, f.Ino, WriteIn{Inline: []byte("small"), End: 5, Mtime: time.Now().UnixNano()}); err != nil {
					t.Fatal(err)
				}
			}
			if err := v.m.SetXattr(v.ctx, &Root, f.Ino, "user.x", []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
			if tc.link {
				if _, err := v.m.Link(v.ctx, &Root, f.Ino, RootIno, "g"); err != nil {
					t.Fatal(err)
				}
			}
			asked := 0
			closed := func(ino uint64) bool {
				asked++
				if ino != f.Ino {
					t.Errorf("closed asked about inode %d, want %d", ino, f.Ino)
				}
				return !tc.open
			}
			a, freed, err := v.m.UnlinkFreeing(v.ctx, &Root, RootIno, "f", closed)
			if err != nil {
				t.Fatal(err)
			}
			if freed != tc.wantFreed {
				t.Fatalf("freed %v, want %v", freed, tc.wantFreed)
			}
			if tc.link && asked != 0 {
				t.Errorf("closed asked %d times for a file that keeps a name", asked)
			}
			wantOrphans := 0
			if !freed && !tc.link {
				wantOrphans = 1
			}
			if o := v.orphans(); len(o) != wantOrphans {
				t.Errorf("orphans %v, want %d", o, wantOrphans)
			}
			_, err = v.m.GetAttr(v.ctx, f.Ino)
			if gone := errors.Is(err, syscall.ENOENT); gone != freed {
				t.Errorf("GetAttr after unlink: %v (freed %v)", err, freed)
			}
			if a.Nlink != 0 && !tc.link {
				t.Errorf("returned nlink %d", a.Nlink)
			}
			if tc.link {
				return
			}
			// Whatever was left to Reap, the end state is the same.
			v.reapAll()
			if st := v.m.Stats(); st != (Stats{Inodes: 1, Dirs: 1}) {
				t.Errorf("stats after freeing: %+v", st)
			}
			if p := v.pending(); len(p) != tc.chunks {
				t.Errorf("%d blocks queued for deletion, want %d", len(p), tc.chunks)
			}
			if r := v.runCheck(false); r.Errors() != 0 {
				t.Errorf("check after freeing:\n%s", problems(r))
			}
		})
	}
}

// TestRenameFreeing: a rename that takes the last name of a closed file
// or an empty directory frees it in the same transaction; a replaced file
// still open or still linked elsewhere is left as Rename leaves it, and an
// exchange frees nothing.
func TestRenameFreeing(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dir       bool
		link      bool
		open      bool
		flags     uint32
		wantFreed bool
	}{
		{"closed file", false, false, false, 0, true},
		{"empty directory", true, false, false, 0, true},
		{"open file", false, false, true, 0, false},
		{"file with another name", false, true, false, 0, false},
		{"exchange", false, false, false, RenameExchange, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVolume(t, func(f *Format) { f.BlockSize = 4096; f.ChunkSize = 4096 })
			var src, dst *Attr
			if tc.dir {
				src, dst = v.mkdir(RootIno, "src"), v.mkdir(RootIno, "dst")
			} else {
				src, dst = v.mkfile(RootIno, "src"), v.mkfile(RootIno, "dst")
				v.writeSlice(dst.Ino, 0, fakeBlock(300, 4096))
			}
			if tc.link {
				if _, err := v.m.Link(v.ctx, &Root, dst.Ino, RootIno, "other"); err != nil {
					t.Fatal(err)
				}
			}
			closed := func(ino uint64) bool {
				if ino != dst.Ino {
					t.Errorf("closed asked about inode %d, want %d", ino, dst.Ino)
				}
				return !tc.open
			}
			r, err := v.m.RenameFreeing(v.ctx, &Root, RootIno, "src", RootIno, "dst", tc.flags, closed)
			if err != nil {
				t.Fatal(err)
			}
			freed := r.Freed
			if freed != tc.wantFreed {
				t.Fatalf("freed %v, want %v", freed, tc.wantFreed)
			}
			_, err = v.m.GetAttr(v.ctx, dst.Ino)
			if gone := errors.Is(err, syscall.ENOENT); gone != freed {
				t.Errorf("GetAttr of the replaced inode: %v (freed %v)", err, freed)
			}
			wantOrphans := 0
			if tc.open {
				wantOrphans = 1
			}
			if o := v.orphans(); len(o) != wantOrphans {
				t.Errorf("orphans %v, want %d", o, wantOrphans)
			}
			if e, err := v.m.Lookup(v.ctx, &Root, RootIno, "dst"); err != nil || (tc.flags == 0 && e.Ino != src.Ino) {
				t.Errorf("dst after the rename: %+v, %v", e, err)
			}
			v.reapAll()
			if r := v.runCheck(false); r.Errors() != 0 {
				t.Errorf("check after the rename:\n%s", problems(r))
			}
		})
	}
}

// viewCountingKV counts read-only transactions.
type viewCountingKV struct {
	KV
	views int
}

func (k *viewCountingKV) View(ctx context.Context, fn func(Txn) error) error {
	k.views++
	return k.KV.View(ctx, fn)
}

// TestPendingBlocksSkipsScans: while nothing in the deletion queue can be
// due, PendingBlocks answers without scanning it, and every block still
// comes due at its time, including blocks queued after a scan.
func TestPendingBlocksSkipsScans(t *testing.T) {
	v := newVolume(t, nil)
	open := func() (*Meta, *viewCountingKV) {
		kv := &viewCountingKV{KV: v.kv}
		m, err := Open(v.ctx, kv)
		if err != nil {
			t.Fatal(err)
		}
		return m, kv
	}
	pending := func(m *Meta, cutoff time.Time) []BlockID {
		t.Helper()
		ids, err := m.PendingBlocks(v.ctx, cutoff, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	queue := func(m *Meta, b byte) {
		t.Helper()
		if err := m.QueueUnreferenced(v.ctx, []BlockID{{b}}); err != nil {
			t.Fatal(err)
		}
	}
	later := func() time.Time { return time.Now().Add(time.Hour) }

	// An empty queue, then a block queued after the scan: it comes due.
	m, _ := open()
	if ids := pending(m, time.Now()); len(ids) != 0 {
		t.Fatalf("empty queue: %v", ids)
	}
	queue(m, 1)
	if ids := pending(m, later()); len(ids) != 1 || ids[0] != (BlockID{1}) {
		t.Fatalf("block queued after an empty scan: %v", ids)
	}

	// A queue whose blocks are all in their grace period: the first ask
	// scans it, the next ones do not, until the oldest can be due.
	m, kv := open()
	queue(m, 2)
	base := kv.views // Open reads too
	for i := range 5 {
		if ids := pending(m, time.Now().Add(-time.Hour+time.Duration(i)*time.Second)); len(ids) != 0 {
			t.Fatalf("nothing due an hour ago: %v", ids)
		}
	}
	if n := kv.views - base; n != 1 {
		t.Errorf("%d scans for 5 asks while nothing could be due, want 1", n)
	}
	queue(m, 3)
	if ids := pending(m, later()); len(ids) != 3 {
		t.Errorf("an hour on: %d blocks due, want 3 (%v)", len(ids), ids)
	}
	if n := kv.views - base; n != 2 {
		t.Errorf("%d scans, want 2", n)
	}
}

// TestUnlinkFreesManyBlocksInSteps: a file whose blocks are too many for
// one transaction to release (4 KiB blocks: a 64 MiB slice holds 16,384)
// unlinks at once and is reaped in steps, whole slices at a time; before,
// the unlink itself failed with EFBIG.
func TestUnlinkFreesManyBlocksInSteps(t *testing.T) {
	v := bigVolume(t)
	_, n := bigFile(v, "f", 1000)
	if st := v.m.Stats(); st.Blocks != int64(n) {
		t.Fatalf("%d blocks referenced, want %d", st.Blocks, n)
	}
	_, freed, err := v.m.UnlinkFreeing(v.ctx, &Root, RootIno, "f", func(uint64) bool { return true })
	if err != nil {
		t.Fatalf("unlink: %v", err)
	}
	if freed {
		t.Fatalf("%d blocks released in one transaction", n)
	}
	if o := v.orphans(); len(o) != 1 {
		t.Fatalf("orphans %v, want the file", o)
	}
	v.reapAll()
	if st := v.m.Stats(); st != (Stats{Inodes: 1, Dirs: 1}) {
		t.Errorf("stats after reaping: %+v", st)
	}
	ids, err := v.m.PendingBlocks(v.ctx, time.Now().Add(time.Hour), nil, 1<<20)
	if err != nil || len(ids) != n {
		t.Errorf("%d blocks queued for deletion, want %d (%v)", len(ids), n, err)
	}
	if r := v.runCheck(false); r.Errors() != 0 {
		t.Errorf("check:\n%s", problems(r))
	}
}

// TestPendingBlocksPagesAndClaims: going through the deletion queue batch
// by batch (after the last block of the previous batch) yields every due
// block once, in order; ClaimBlocks answers per block in one transaction:
// queued and unreferenced (deletable, once), referenced again (which took
// it off the queue), never queued.
func TestPendingBlocksPagesAndClaims(t *testing.T) {
	v := newVolume(t, nil)
	var queued []BlockID
	for i := range 7 {
		id := BlockID{byte(10 * (7 - i))} // queued out of key order
		queued = append(queued, id)
	}
	if err := v.m.QueueUnreferenced(v.ctx, queued); err != nil {
		t.Fatal(err)
	}
	var got []BlockID
	var after *BlockID
	for pages := 0; ; pages++ {
		if pages > 7 {
			t.Fatal("paging does not end")
		}
		ids, err := v.m.PendingBlocks(v.ctx, time.Now().Add(time.Hour), after, 3)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids...)
		if len(ids) < 3 {
			break
		}
		after = &ids[len(ids)-1]
	}
	want := slices.Clone(queued)
	slices.SortFunc(want, func(a, b BlockID) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(got, want) {
		t.Errorf("paged through %v, want %v", got, want)
	}

	// Block 70 is referenced again (a write of the same content).
	f := v.mkfile(RootIno, "f")
	again := BlockRef{ID: BlockID{70}, Size: 4096}
	v.writeSlice(f.Ino, 0, again)
	ids := []BlockID{{10}, {70}, {99}, {20}}
	ok, err := v.m.ClaimBlocks(v.ctx, ids)
	if err != nil || !slices.Equal(ok, []bool{true, false, false, true}) {
		t.Errorf("ClaimBlocks(%v) = %v, %v; want [true false false true]", ids, ok, err)
	}
	if ok, err := v.m.ClaimBlocks(v.ctx, ids); err != nil || slices.Contains(ok, true) {
		t.Errorf("second ClaimBlocks = %v, %v; want nothing deletable", ok, err)
	}
	if r := v.runCheck(false); r.Errors() != 0 {
		t.Errorf("check:\n%s", problems(r))
	}
}
