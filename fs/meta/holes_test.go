package meta

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAppendSliceHoles: a hole slice is merged only with a hole it
// continues, never into a slice of blocks (whose length must stay that of
// its blocks), nor a slice of blocks into it.
func TestAppendSliceHoles(t *testing.T) {
	data := func(pos, n uint32, id int) Slice {
		return Slice{Pos: pos, Len: n, Blocks: []BlockRef{fakeBlock(id, n)}}
	}
	hole := func(pos, n uint32) Slice { return Slice{Pos: pos, Len: n} }
	for _, tc := range []struct {
		name   string
		ss     []Slice
		add    Slice
		want   int    // slices after
		lastLn uint32 // length of the last one
	}{
		{"data continues data", []Slice{data(0, 4096, 1)}, data(4096, 4096, 2), 1, 8192},
		{"hole continues data", []Slice{data(0, 4096, 1)}, hole(4096, 100), 2, 100},
		{"data continues a hole", []Slice{hole(0, 4096)}, data(4096, 4096, 2), 2, 4096},
		{"hole continues a hole", []Slice{hole(0, 4096)}, hole(4096, 100), 1, 4196},
		{"hole after a gap", []Slice{hole(0, 4096)}, hole(5000, 100), 2, 100},
	} {
		got := appendSlice(append([]Slice(nil), tc.ss...), tc.add)
		if len(got) != tc.want || got[len(got)-1].Len != tc.lastLn {
			t.Errorf("%s: %d slices, last %+v; want %d, length %d", tc.name, len(got), got[len(got)-1], tc.want, tc.lastLn)
		}
		for _, s := range got {
			var total uint32
			for _, b := range s.Blocks {
				total += b.Size
			}
			if !s.Hole() && total < s.Len {
				t.Errorf("%s: slice %+v is longer than its blocks", tc.name, s)
			}
		}
	}
}

// TestHoleSlices: a hole slice over a whole slice of blocks releases those
// blocks, survives encoding, and checks clean on a format 4 volume; a
// format 3 volume refuses to write one (EOPNOTSUPP), and fsck names one
// found there.
func TestHoleSlices(t *testing.T) {
	punchWrite := func(v *testVolume, ino uint64, pos, n uint32) error {
		_, err := v.m.Write(v.ctx, ino, WriteIn{Chunks: []ChunkWrite{{Index: 0, Slices: []Slice{{Pos: pos, Len: n}}}}, End: 8192, Mtime: time.Now().UnixNano()})
		return err
	}
	t.Run("format 4", func(t *testing.T) {
		v := tailVolume(t, 4)
		f := v.mkfile(RootIno, "f")
		a, b := fakeBlock(1, 4096), fakeBlock(2, 4096)
		v.writeSlice(f.Ino, 0, a)
		v.writeSlice(f.Ino, 4096, b)
		if err := punchWrite(v, f.Ino, 4096, 4096); err != nil {
			t.Fatal(err)
		}
		if v.refcount(b.ID) != 0 || v.refcount(a.ID) != 1 {
			t.Errorf("after punching block 2's range: refs %d and %d, want 1 and 0", v.refcount(a.ID), v.refcount(b.ID))
		}
		ss := v.chunk(f.Ino, 0)
		if n := len(ss); n != 2 || !ss[1].Hole() || ss[1].Pos != 4096 || ss[1].Len != 4096 {
			t.Errorf("chunk after the punch: %+v; want block 1's slice, then a hole over [4096, 8192)", ss)
		}
		if v.attr(f.Ino).Size != 8192 {
			t.Errorf("size %d after the punch, want 8192", v.attr(f.Ino).Size)
		}
		if r := v.runCheck(false); r.Errors() != 0 {
			t.Errorf("fsck of a punched file:\n%s", problems(r))
		}
	})
	t.Run("format 3", func(t *testing.T) {
		v := tailVolume(t, 3)
		f := v.mkfile(RootIno, "f")
		v.writeSlice(f.Ino, 0, fakeBlock(1, 4096))
		err := punchWrite(v, f.Ino, 0, 4096)
		if !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("hole slice written to a format 3 volume: %v, want EOPNOTSUPP", err)
		}
		if ss := v.chunk(f.Ino, 0); len(ss) != 1 || ss[0].Hole() {
			t.Errorf("chunk after the refused punch: %+v", ss)
		}
		v.raw(func(t Txn) error {
			return t.Set(keyChunk(f.Ino, 0), encodeSlices([]Slice{{Pos: 0, Len: 4096, Blocks: []BlockRef{fakeBlock(1, 4096)}}, {Pos: 0, Len: 100}}))
		})
		if r := v.runCheck(false); !strings.Contains(problems(r), "hole slice on a volume of format version 3") {
			t.Errorf("fsck of a hole slice on a format 3 volume:\n%s", problems(r))
		}
	})
}

// TestAllocRecord: an inode record carries Alloc only with FlagAlloc (8
// bytes more), a record whose length and flag disagree is corrupt, and a
// volume of format 3 makes files without it, so an objfs that reads only
// format 3 can still read their records.
func TestAllocRecord(t *testing.T) {
	a := &Attr{Ino: 7, Mode: syscall.S_IFREG | 0o644, Size: 1 << 20, Alloc: 4096, Flags: FlagAlloc | FlagNoXattrs}
	b := a.encode()
	if len(b) != attrLen+8 {
		t.Fatalf("record of %d bytes, want %d", len(b), attrLen+8)
	}
	got, err := decodeAttr(7, b)
	if err != nil || *got != *a {
		t.Fatalf("decoded %+v, %v; want %+v", got, err, a)
	}
	if got.Blocks() != 8 {
		t.Errorf("st_blocks %d, want 8", got.Blocks())
	}
	old := *a
	old.Flags &^= FlagAlloc
	if len(old.encode()) != attrLen || old.Blocks() != 2048 {
		t.Errorf("without FlagAlloc: %d bytes, st_blocks %d; want %d, 2048 (the size)", len(old.encode()), old.Blocks(), attrLen)
	}
	for _, bad := range [][]byte{b[:attrLen], append(old.encode(), make([]byte, 8)...)} {
		if _, err := decodeAttr(7, bad); !errors.Is(err, errCorrupt) {
			t.Errorf("a record of %d bytes whose flag disagrees: %v, want corrupt", len(bad), err)
		}
	}
	v3 := tailVolume(t, 3)
	if f := v3.mkfile(RootIno, "f"); f.Flags&FlagAlloc != 0 {
		t.Errorf("a file made on a format 3 volume has FlagAlloc")
	}
	v4 := tailVolume(t, 4)
	if f := v4.mkfile(RootIno, "f"); f.Flags&FlagAlloc == 0 {
		t.Errorf("a file made on a format 4 volume lacks FlagAlloc")
	}
}

// TestCountAllocsAfterUpgrade: files made on a format 3 volume keep
// reporting their size as st_blocks after an upgrade to 4; fsck says how
// many, and fsck --repair counts what each stores, after which st_blocks
// is right and the check is clean.
func TestCountAllocsAfterUpgrade(t *testing.T) {
	v := newVolume(t, func(f *Format) { f.Version, f.BlockSize, f.ChunkSize = 3, 4096, 1<<20 })
	sparse := v.mkfile(RootIno, "sparse")
	v.writeSlice(sparse.Ino, 0, fakeBlock(1, 4096))
	v.writeSlice(sparse.Ino, 3<<20, fakeBlock(2, 4096)) // a 3 MiB hole, two chunks on
	small := v.mkfile(RootIno, "small")
	if _, err := v.m.Write(v.ctx, small.Ino, WriteIn{Inline: []byte("hello"), End: 5, Mtime: 1}); err != nil {
		t.Fatal(err)
	}
	empty := v.mkfile(RootIno, "empty")
	if _, _, err := Upgrade(v.ctx, v.kv); err != nil {
		t.Fatal(err)
	}
	var err error
	if v.m, err = Open(v.ctx, v.kv); err != nil {
		t.Fatal(err)
	}
	if b := v.attr(sparse.Ino).Blocks(); b != (3<<20+4096)/512 {
		t.Errorf("before the recount: st_blocks %d, want the size's %d", b, (3<<20+4096)/512)
	}
	if r := v.runCheck(false); r.Errors() != 0 || !strings.Contains(problems(r), "3 files made before format 4") {
		t.Errorf("check of the upgraded volume:\n%s", problems(r))
	}
	r := v.runCheck(true)
	if !strings.Contains(problems(r), "3 files made before format 4 now count") {
		t.Errorf("repair:\n%s", problems(r))
	}
	for _, tc := range []struct {
		ino    uint64
		blocks uint64
	}{{sparse.Ino, 16}, {small.Ino, 1}, {empty.Ino, 0}} {
		if a := v.attr(tc.ino); a.Flags&FlagAlloc == 0 || a.Blocks() != tc.blocks {
			t.Errorf("inode %d after the repair: flags %#x, st_blocks %d; want FlagAlloc, %d", tc.ino, a.Flags, a.Blocks(), tc.blocks)
		}
	}
	if r := v.runCheck(false); r.Errors() != 0 || len(r.Problems) != 0 {
		t.Errorf("check after the repair:\n%s", problems(r))
	}
}
