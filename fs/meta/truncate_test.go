package meta

import (
	"context"
	"errors"
	"testing"
)

// bigFile writes a file of many 4 KiB blocks, more than one transaction
// can release: chunk 0 one slice of 16,384 blocks, chunk 1 three slices of
// 5,000, chunk 2 5,000 one-block slices. It returns the file and the
// number of blocks.
func bigFile(v *testVolume, name string, first int) (*Attr, int) {
	v.t.Helper()
	const bs = 4096
	n := 0
	block := func() BlockRef { n++; return fakeBlock(first+n, bs) }
	f := v.mkfile(RootIno, name)
	big := make([]BlockRef, 16384)
	for i := range big {
		big[i] = block()
	}
	v.writeSlice(f.Ino, 0, big...)
	for i := range 3 {
		s := make([]BlockRef, 5000)
		for j := range s {
			s[j] = block()
		}
		v.writeSlice(f.Ino, 64<<20+uint64(i)*5000*bs, s...)
	}
	var small []Slice
	for i := range 5000 {
		small = append(small, Slice{Pos: uint32(i * bs), Len: bs, Blocks: []BlockRef{block()}})
	}
	a, err := v.m.Write(v.ctx, f.Ino, WriteIn{Chunks: []ChunkWrite{{Index: 2, Slices: small}}, End: 2*64<<20 + 5000*bs})
	if err != nil {
		v.t.Fatal(err)
	}
	return a, n
}

func bigVolume(t *testing.T) *testVolume {
	return newVolume(t, func(f *Format) { f.BlockSize = 4096; f.ChunkSize = 64 << 20 })
}

// countKeys counts the records whose keys start with prefix.
func (v *testVolume) countKeys(prefix []byte) int {
	v.t.Helper()
	n := 0
	err := v.kv.View(v.ctx, func(t Txn) error {
		return t.Scan(prefix, nil, func(k, _ []byte) (bool, error) {
			n++
			return true, nil
		})
	})
	if err != nil {
		v.t.Fatal(err)
	}
	return n
}

// chunkCount counts the chunk records of ino.
func (v *testVolume) chunkCount(ino uint64) int { return v.countKeys(keyIno(pSlices, ino)) }

// wantNoErrors fails the test if Check finds an error.
func (v *testVolume) wantNoErrors() {
	v.t.Helper()
	if r := v.runCheck(false); r.Errors() != 0 {
		v.t.Errorf("check:\n%s", problems(r))
	}
}

// TestTruncateFreesManyBlocksInSteps: a truncation that releases more
// blocks than one transaction holds succeeds (it used to fail with
// "transaction too big", EFBIG, changing nothing), frees every block
// beyond the new end and leaves a clean volume.
func TestTruncateFreesManyBlocksInSteps(t *testing.T) {
	for _, tc := range []struct {
		name       string
		size       uint64
		wantBlocks int64
		wantChunks int
	}{
		{"to zero", 0, 0, 0},
		// Inside chunk 1's first slice: chunk 0 stays whole, 7 blocks
		// and a partial one of chunk 1 stay.
		{"mid chunk", 64<<20 + 7*4096 + 100, 16384 + 8, 2},
		{"chunk boundary", 64 << 20, 16384, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := bigVolume(t)
			f, n := bigFile(v, "f", 1000)
			a, err := v.m.SetAttr(v.ctx, &Root, f.Ino, SetAttrIn{Valid: SetSize, Size: tc.size})
			if err != nil {
				t.Fatalf("truncate %d blocks to %d: %v", n, tc.size, err)
			}
			if a.Size != tc.size || v.attr(f.Ino).Size != tc.size {
				t.Errorf("size %d (stored %d), want %d", a.Size, v.attr(f.Ino).Size, tc.size)
			}
			if st := v.m.Stats(); st.Blocks != tc.wantBlocks || st.Bytes != int64(tc.size) {
				t.Errorf("stats %+v, want %d blocks, %d bytes", st, tc.wantBlocks, tc.size)
			}
			if got := v.chunkCount(f.Ino); got != tc.wantChunks {
				t.Errorf("%d chunks left, want %d", got, tc.wantChunks)
			}
			if tr, err := v.m.Truncations(v.ctx); err != nil || len(tr) != 0 {
				t.Errorf("truncations left: %v (%v)", tr, err)
			}
			if got := len(v.pending()); int64(got) != int64(n)-tc.wantBlocks {
				t.Errorf("%d blocks queued for deletion, want %d", got, int64(n)-tc.wantBlocks)
			}
			if r := v.runCheck(false); r.Errors() != 0 || notes(r) != 1 {
				t.Errorf("check, want no errors and a note of the blocks queued:\n%s", problems(r))
			}
		})
	}
}

// cutShort leaves the state a truncation of ino to size leaves when it
// stops after its first transaction (a crash, a cancelled request): the
// new size, some chunks beyond it, a truncation record.
func (v *testVolume) cutShort(ino, size uint64) {
	v.t.Helper()
	err := v.m.update(v.ctx, func(x *tx) error {
		a, err := x.inode(ino)
		if err != nil {
			return err
		}
		if err := x.setSize(a, size); err != nil {
			return err
		}
		x.touch(a)
		return nil
	})
	if err != nil {
		v.t.Fatal(err)
	}
	if tr, err := v.m.Truncations(v.ctx); err != nil || len(tr) != 1 || tr[0] != ino {
		v.t.Fatalf("truncations %v (%v), want [%d]", tr, err, ino)
	}
	if v.chunkCount(ino) == 0 {
		v.t.Fatal("the first step released everything")
	}
}

// cutShortFile makes a big file on a new volume and leaves a truncation
// of it to size cut short.
func cutShortFile(t *testing.T, size uint64) (*testVolume, *Attr, int) {
	v := bigVolume(t)
	f, n := bigFile(v, "f", 1000)
	v.cutShort(f.Ino, size)
	return v, f, n
}

// TestUnfinishedTruncation: while a truncation is still releasing chunks,
// the dead chunks never show: a write or an extension first finishes the
// release, so the bytes beyond the old end read as zeros; fsck calls the
// state normal, and the next start (FinishTruncate) or a reap completes
// it.
func TestUnfinishedTruncation(t *testing.T) {
	t.Run("write", func(t *testing.T) {
		v, f, _ := cutShortFile(t, 0)
		r := v.runCheck(false)
		if r.Errors() != 0 || notes(r) != 2 {
			t.Errorf("check of a truncation under way:\n%s", problems(r))
		}
		nb := fakeBlock(1, 4096)
		a := v.writeSlice(f.Ino, 64<<20+8192, nb) // into dead chunk 1
		if a.Size != 64<<20+3*4096 {
			t.Errorf("size %d after the write", a.Size)
		}
		if got := v.chunk(f.Ino, 1); len(got) != 1 || got[0].Pos != 8192 || got[0].Blocks[0] != nb {
			t.Errorf("chunk 1 after the write: %+v, want only the new slice", got)
		}
		if got := v.chunkCount(f.Ino); got != 1 {
			t.Errorf("%d chunks, want 1", got)
		}
		if st := v.m.Stats(); st.Blocks != 1 {
			t.Errorf("stats %+v, want 1 block", st)
		}
		v.wantNoErrors()
	})
	t.Run("extend", func(t *testing.T) {
		v, f, _ := cutShortFile(t, 100)
		v.truncate(f.Ino, 3<<26)
		for idx := uint64(1); idx < 3; idx++ {
			if got := v.chunk(f.Ino, idx); len(got) != 0 {
				t.Errorf("chunk %d shows %d stale slices after the extension", idx, len(got))
			}
		}
		if got := v.chunk(f.Ino, 0); len(got) != 1 || got[0].Len != 100 {
			t.Errorf("chunk 0: %+v, want one slice of 100 bytes", got)
		}
		v.wantNoErrors()
	})
	t.Run("next start", func(t *testing.T) {
		v, f, n := cutShortFile(t, 0)
		if err := v.m.FinishTruncate(v.ctx, f.Ino); err != nil {
			t.Fatal(err)
		}
		if got := v.chunkCount(f.Ino); got != 0 {
			t.Errorf("%d chunks left", got)
		}
		if got := len(v.pending()); got != n {
			t.Errorf("%d blocks queued, want %d", got, n)
		}
		v.wantNoErrors()
	})
	t.Run("reap", func(t *testing.T) {
		v, _, _ := cutShortFile(t, 0)
		if _, err := v.m.Unlink(v.ctx, &Root, RootIno, "f"); err != nil {
			t.Fatal(err)
		}
		v.reapAll()
		if tr, err := v.m.Truncations(v.ctx); err != nil || len(tr) != 0 {
			t.Errorf("truncations left: %v (%v)", tr, err)
		}
		v.wantNoErrors()
	})
	t.Run("cancelled", func(t *testing.T) {
		// FinishTruncate stops with its context; the record stays for
		// the next try.
		v, f, _ := cutShortFile(t, 0)
		ctx, cancel := context.WithCancel(v.ctx)
		cancel()
		if err := v.m.FinishTruncate(ctx, f.Ino); !errors.Is(err, context.Canceled) {
			t.Errorf("finish with a cancelled context: %v", err)
		}
		if tr, _ := v.m.Truncations(v.ctx); len(tr) != 1 {
			t.Errorf("truncations %v, want the file's", tr)
		}
	})
}

// TestCheckChunksPastEnd: chunks or slices beyond the end of a file with
// no truncation under way are errors (an extension would show them); the
// repair trims the slices, and leaves a truncation record that the next
// start finishes for whole chunks.
func TestCheckChunksPastEnd(t *testing.T) {
	v := bigVolume(t)
	f, _ := bigFile(v, "f", 1000)
	// Damage: the size drops without a truncation (as a bug would).
	err := v.m.update(v.ctx, func(x *tx) error {
		a, err := x.inode(f.Ino)
		if err != nil {
			return err
		}
		size := uint64(64<<20 + 4096 + 10)
		x.addDelta(Stats{Bytes: int64(size) - int64(a.Size)})
		a.Size = size
		x.touch(a)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r := v.runCheck(false)
	if r.Errors() != 2 {
		t.Fatalf("check found %d errors, want 2 (a slice past the end, a chunk past it):\n%s", r.Errors(), problems(r))
	}
	if r := v.runCheck(true); r.Errors() != 0 {
		t.Fatalf("repair left errors:\n%s", problems(r))
	}
	if err := v.m.FinishTruncate(v.ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	if got := v.chunkCount(f.Ino); got != 2 {
		t.Errorf("%d chunks after repair and finish, want 2", got)
	}
	if got := v.chunk(f.Ino, 1); len(got) != 1 || got[0].Len != 4096+10 || len(got[0].Blocks) != 2 {
		t.Errorf("chunk 1: %+v, want one slice of 4106 bytes in 2 blocks", got)
	}
	v.wantNoErrors()
}

// notes counts a check's notes.
func notes(r *CheckResult) int {
	n := 0
	for _, p := range r.Problems {
		if p.Severity == Note {
			n++
		}
	}
	return n
}
