package meta

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// record reads one raw record; nil if there is none.
func (v *testVolume) record(k []byte) []byte {
	v.t.Helper()
	var out []byte
	err := v.kv.View(v.ctx, func(t Txn) error {
		b, err := t.Get(k)
		if errors.Is(err, ErrKeyNotFound) {
			return nil
		}
		out = bytes.Clone(b)
		return err
	})
	if err != nil {
		v.t.Fatalf("read %x: %v", k, err)
	}
	return out
}

// firstDiff is the index of the first slice where a and b differ.
func firstDiff(a, b []Slice) int {
	i := 0
	for i < min(len(a), len(b)) && sameSlice(a[i], b[i]) {
		i++
	}
	return i
}

// tailVolume is a volume of format version, 4 KiB blocks and 1 MiB chunks.
func tailVolume(t *testing.T, version int) *testVolume {
	return newVolume(t, func(f *Format) { f.Version = version; f.BlockSize = 4096; f.ChunkSize = 1 << 20 })
}

// TestChunkTail follows one chunk through small commits. From format 3
// on, a commit to a chunk that has a main record goes to its tail, and the
// main record is rewritten only when the tail would pass tailMax or a new
// slice hides one of its slices whole; older volumes rewrite the main
// record every time and never get a tail (an objfs that reads only them
// would not see it). Either way the chunk reads as every slice in commit
// order, references are exact, and fsck finds nothing.
func TestChunkTail(t *testing.T) {
	for _, version := range []int{2, FormatVersion} {
		t.Run(fmt.Sprintf("version %d", version), func(t *testing.T) {
			v := tailVolume(t, version)
			f := v.mkfile(RootIno, "f")
			mainKey, tailKey := keyChunk(f.Ino, 0), keyChunkTail(f.Ino, 0)
			var want []Slice
			write := func(off uint64, b BlockRef) {
				t.Helper()
				v.writeSlice(f.Ino, off, b)
				want = append(want, Slice{Pos: uint32(off), Len: b.Size, Blocks: []BlockRef{b}})
			}

			write(0, fakeBlock(0, 4096))
			if v.record(tailKey) != nil {
				t.Fatal("the first commit to a chunk wrote a tail record")
			}
			const commits = 60 // tailMax holds about 20 one-block slices
			mainWrites, longestTail := 0, 0
			for i := 1; i <= commits; i++ {
				before := v.record(mainKey)
				// 8 KiB apart: no two slices touch, so none merge.
				write(uint64(i)*8192, fakeBlock(i, 4096))
				if !bytes.Equal(before, v.record(mainKey)) {
					mainWrites++
				}
				tail := v.record(tailKey)
				longestTail = max(longestTail, len(tail))
				if got := v.chunk(f.Ino, 0); !slices.EqualFunc(got, want, sameSlice) {
					t.Fatalf("after commit %d the chunk reads %d slices, want %d; first difference at %d", i, len(got), len(want), firstDiff(got, want))
				}
			}
			if version < 3 {
				if longestTail != 0 || mainWrites != commits {
					t.Errorf("format %d: longest tail record %d bytes, main record rewritten by %d of %d commits; want no tail, every commit", version, longestTail, mainWrites, commits)
				}
			} else {
				perFold := (tailMax - 1) / (encodedSize(want[:1]) - 1) // one-block slices a tail holds
				if longestTail == 0 || longestTail > tailMax || mainWrites == 0 || mainWrites > commits/(perFold-1) {
					t.Errorf("longest tail record %d bytes (at most %d), main record rewritten by %d of %d commits (want 1 to %d)", longestTail, tailMax, mainWrites, commits, commits/(perFold-1))
				}
			}
			for i := 0; i <= commits; i++ {
				if n := v.refcount(fakeBlock(i, 4096).ID); n != 1 {
					t.Errorf("block %d has %d references, want 1", i, n)
				}
			}
			v.wantNoErrors()

			// A slice hiding a main record slice whole releases it at once.
			hidden := fakeBlock(0, 4096)
			v.writeSlice(f.Ino, 0, fakeBlock(1000, 4096))
			if n := v.refcount(hidden.ID); n != 0 || !v.pending()[hidden.ID] {
				t.Errorf("block of a slice hidden whole: %d references, queued %v; want 0, queued", n, v.pending()[hidden.ID])
			}
			if v.record(tailKey) != nil {
				t.Error("the tail record is still there after a commit hid a main record slice")
			}
			got := v.chunk(f.Ino, 0)
			if len(got) != commits+1 || got[len(got)-1].Blocks[0] != fakeBlock(1000, 4096) {
				t.Errorf("after hiding the first slice the chunk has %d slices (want %d), newest %+v", len(got), commits+1, got[len(got)-1])
			}
			v.wantNoErrors()
		})
	}
}

// withTail gives chunk idx of ino a main record of one slice and a tail of
// two, and returns the three blocks.
func (v *testVolume) withTail(ino, idx uint64, seed int) []BlockRef {
	v.t.Helper()
	cs := uint64(v.m.Format().ChunkSize)
	bs := []BlockRef{fakeBlock(seed, 4096), fakeBlock(seed+1, 4096), fakeBlock(seed+2, 4096)}
	for i, b := range bs {
		v.writeSlice(ino, idx*cs+uint64(i)*8192, b)
	}
	if v.record(keyChunkTail(ino, idx)) == nil {
		v.t.Fatalf("chunk %d of %d has no tail record", idx, ino)
	}
	return bs
}

// TestChunkTailEverywhere: every reader and rewriter of chunks sees a
// tail: reads by key and by scan, sharing from and onto it, truncation,
// compaction (ReplaceChunk) and reaping.
func TestChunkTailEverywhere(t *testing.T) {
	const cs = 1 << 20
	v := tailVolume(t, FormatVersion)
	f := v.mkfile(RootIno, "f")
	var blocks []BlockRef
	for idx := uint64(0); idx < 2*pointReads; idx++ {
		blocks = append(blocks, v.withTail(f.Ino, idx, 100*int(idx))...)
	}

	// Point reads and the scan (a range of pointReads chunks or more).
	scanned := v.layout(f.Ino)
	for idx := uint64(0); idx < 2*pointReads; idx++ {
		got := v.chunk(f.Ino, idx)
		if len(got) != 3 || !slices.EqualFunc(got, scanned[idx], sameSlice) {
			t.Fatalf("chunk %d: point read %+v, scan %+v; want both the same 3 slices", idx, got, scanned[idx])
		}
	}

	// Sharing a chunk with a tail, and sharing onto one.
	g := v.mkfile(RootIno, "g")
	gBlocks := v.withTail(g.Ino, 0, 5000)
	if n := v.share(f.Ino, 0, g.Ino, 0, cs); n != cs {
		t.Fatalf("shared %d bytes, want %d", n, cs)
	}
	if got := v.chunk(g.Ino, 0); !slices.EqualFunc(got, scanned[0], sameSlice) {
		t.Errorf("shared chunk reads %+v, want %+v", got, scanned[0])
	}
	if v.record(keyChunkTail(g.Ino, 0)) != nil {
		t.Error("the destination's tail record survived the share")
	}
	for _, b := range gBlocks {
		if n := v.refcount(b.ID); n != 0 {
			t.Errorf("replaced block of the destination has %d references", n)
		}
	}
	for _, b := range blocks[:3] {
		if n := v.refcount(b.ID); n != 2 {
			t.Errorf("shared block has %d references, want 2", n)
		}
	}
	v.wantNoErrors()

	// Truncating into chunk 1, between its main slice and its tail.
	v.truncate(f.Ino, cs+4096)
	if got := v.chunk(f.Ino, 1); len(got) != 1 || got[0].Blocks[0] != blocks[3] {
		t.Errorf("chunk 1 after truncating to its first 4 KiB: %+v", got)
	}
	if v.record(keyChunkTail(f.Ino, 1)) != nil {
		t.Error("chunk 1's tail record survived the truncation")
	}
	for _, b := range blocks[4:] {
		if n := v.refcount(b.ID); n != 0 {
			t.Errorf("block past the new end has %d references", n)
		}
	}
	v.wantNoErrors()

	// Compaction of chunk 0 while a newer commit went to its tail.
	old := v.chunk(f.Ino, 0)
	v.writeSlice(f.Ino, 32768, fakeBlock(7000, 4096))
	repl := []Slice{{Pos: 0, Len: 20480, Blocks: []BlockRef{fakeBlock(7001, 4096), fakeBlock(7002, 4096), fakeBlock(7003, 4096), fakeBlock(7004, 4096), fakeBlock(7005, 4096)}}}
	if ok, err := v.m.ReplaceChunk(v.ctx, f.Ino, 0, old, repl); !ok || err != nil {
		t.Fatalf("ReplaceChunk = %v, %v; want true", ok, err)
	}
	got := v.chunk(f.Ino, 0)
	if len(got) != 2 || !sameSlice(got[0], repl[0]) || got[1].Blocks[0] != fakeBlock(7000, 4096) {
		t.Errorf("chunk 0 after compaction: %+v; want the compacted slice, then the newer one", got)
	}
	if v.record(keyChunkTail(f.Ino, 0)) != nil {
		t.Error("chunk 0's tail record survived the compaction")
	}
	for _, b := range blocks[:3] {
		if n := v.refcount(b.ID); n != 1 {
			t.Errorf("compacted-away block has %d references, want 1 (g still shares it)", n)
		}
	}
	v.wantNoErrors()

	// Reaping releases everything, tails included.
	for _, name := range []string{"f", "g"} {
		if _, err := v.m.Unlink(v.ctx, &Root, RootIno, name); err != nil {
			t.Fatal(err)
		}
	}
	v.reapAll()
	if n := v.countKeys(key1(pSlices)); n != 0 {
		t.Errorf("%d slice list records left after reaping", n)
	}
	if st := v.m.Stats(); st.Blocks != 0 {
		t.Errorf("%d blocks still referenced after reaping", st.Blocks)
	}
	v.wantNoErrors()
}

// TestCheckTailRecords: fsck counts a tail's references, and reports a
// tail record where the format has none and one of a missing inode.
func TestCheckTailRecords(t *testing.T) {
	tests := []struct {
		name    string
		version int
		damage  func(v *testVolume, ino uint64) // nil: none
		want    string                          // in the problems; "" for none
		slices  [2]int                          // the chunk's slices before and after repair; 0: not checked
	}{
		{"tails counted", FormatVersion, nil, "", [2]int{}},
		{"tail on a version 2 volume", 2, func(v *testVolume, ino uint64) {
			v.raw(func(t Txn) error {
				return t.Set(keyChunkTail(ino, 0), encodeSlices([]Slice{{Pos: 0, Len: 4096, Blocks: []BlockRef{fakeBlock(9, 4096)}}}))
			})
		}, "malformed slice list key", [2]int{}},
		{"tail of a missing inode", FormatVersion, func(v *testVolume, ino uint64) {
			v.raw(func(t Txn) error {
				return t.Set(keyChunkTail(ino+100, 0), encodeSlices([]Slice{{Pos: 0, Len: 4096, Blocks: []BlockRef{fakeBlock(9, 4096)}}}))
			})
		}, "slices of an inode that does not exist", [2]int{}},
		{"tail of an inode not marked", FormatVersion, func(v *testVolume, ino uint64) {
			v.raw(func(t Txn) error {
				x := &tx{m: v.m, t: t, inodes: map[uint64]*Attr{}, dirty: map[uint64]bool{}, gone: map[uint64]bool{}}
				a, err := x.inode(ino)
				if err != nil {
					return err
				}
				a.Flags &^= FlagTails
				return t.Set(keyIno(pInode, ino), a.encode())
			})
		}, "tail record on an inode not marked", [2]int{1, 3}},
		{"tail of a bad suffix", FormatVersion, func(v *testVolume, ino uint64) {
			v.raw(func(t Txn) error { return t.Set(append(keyChunk(ino, 0), 'x'), encodeSlices(nil)) })
		}, "malformed slice list key", [2]int{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := tailVolume(t, tc.version)
			f := v.mkfile(RootIno, "f")
			if tc.version >= 3 {
				v.withTail(f.Ino, 0, 0)
			} else {
				v.writeSlice(f.Ino, 0, fakeBlock(0, 4096))
			}
			if tc.damage != nil {
				tc.damage(v, f.Ino)
			}
			r := v.runCheck(false)
			if tc.want == "" {
				if r.Errors() != 0 || len(r.Problems) != 0 {
					t.Fatalf("problems:\n%s", problems(r))
				}
				return
			}
			if !strings.Contains(problems(r), tc.want) {
				t.Fatalf("problems:\n%s\nwant one saying %q", problems(r), tc.want)
			}
			if n := tc.slices[0]; n != 0 && len(v.chunk(f.Ino, 0)) != n {
				t.Errorf("before repair the chunk reads %d slices, want %d", len(v.chunk(f.Ino, 0)), n)
			}
			v.runCheck(true)
			if n := tc.slices[1]; n != 0 && len(v.chunk(f.Ino, 0)) != n {
				t.Errorf("after repair the chunk reads %d slices, want %d", len(v.chunk(f.Ino, 0)), n)
			}
			if r := v.runCheck(false); r.Errors() != 0 {
				t.Errorf("after repair:\n%s", problems(r))
			}
		})
	}
}

// TestUpgrade: Upgrade raises older format records to FormatVersion
// (keeping what a version 1 record's missing hash meant), leaves a current
// one alone, and a volume reopened after it gets tails for its chunks
// while its data reads as before.
func TestUpgrade(t *testing.T) {
	tests := []struct {
		version  int
		hash     string
		wantHash string
	}{
		{1, "", HashSHA256},
		{2, HashBLAKE3, HashBLAKE3},
		{2, HashSHA256, HashSHA256},
		{FormatVersion, HashBLAKE3, HashBLAKE3},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("version %d %s", tc.version, tc.hash), func(t *testing.T) {
			v := newVolume(t, func(f *Format) {
				f.Version, f.BlockHash, f.BlockSize, f.ChunkSize = tc.version, tc.hash, 4096, 1<<20
			})
			f := v.mkfile(RootIno, "f")
			for i := range 3 {
				v.writeSlice(f.Ino, uint64(i)*8192, fakeBlock(i, 4096))
			}
			before := v.chunk(f.Ino, 0)
			from, ft, err := Upgrade(v.ctx, v.kv)
			if err != nil || from != tc.version || ft.Version != FormatVersion {
				t.Fatalf("Upgrade = %d, version %d, %v; want %d, %d", from, ft.Version, err, tc.version, FormatVersion)
			}
			if v.m, err = Open(v.ctx, v.kv); err != nil {
				t.Fatalf("open after upgrade: %v", err)
			}
			if got := v.m.Format(); got.Version != FormatVersion || got.BlockHash != tc.wantHash {
				t.Errorf("format after upgrade: version %d, hash %q; want %d, %q", got.Version, got.BlockHash, FormatVersion, tc.wantHash)
			}
			if got := v.chunk(f.Ino, 0); !slices.EqualFunc(got, before, sameSlice) {
				t.Errorf("chunk after upgrade: %+v, want %+v", got, before)
			}
			v.writeSlice(f.Ino, 3*8192, fakeBlock(3, 4096))
			if v.record(keyChunkTail(f.Ino, 0)) == nil {
				t.Error("a commit after the upgrade wrote no tail")
			}
			if got := v.chunk(f.Ino, 0); len(got) != 4 {
				t.Errorf("chunk has %d slices after a fourth commit, want 4", len(got))
			}
			v.wantNoErrors()
			if from, ft, err := Upgrade(v.ctx, v.kv); err != nil || from != FormatVersion || ft.Version != FormatVersion {
				t.Errorf("second Upgrade = %d, version %d, %v; want nothing to do", from, ft.Version, err)
			}
		})
	}
}
