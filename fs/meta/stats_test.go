package meta

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeBlock names a block that need not exist: the metadata layer only
// counts references.
func fakeBlock(n int, size uint32) BlockRef {
	return BlockRef{ID: sha256.Sum256(fmt.Appendf(nil, "block-%d", n)), Size: size}
}

// writeSlice commits one slice of blocks at file offset off (within one chunk).
func (v *testVolume) writeSlice(ino uint64, off uint64, blocks ...BlockRef) *Attr {
	v.t.Helper()
	cs := uint64(v.m.Format().ChunkSize)
	var n uint32
	for _, b := range blocks {
		n += b.Size
	}
	a, err := v.m.Write(v.ctx, ino, WriteIn{
		Chunks: []ChunkWrite{{Index: off / cs, Slices: []Slice{{Pos: uint32(off % cs), Len: n, Blocks: blocks}}}},
		End:    off + uint64(n),
		Mtime:  time.Now().UnixNano(),
	})
	if err != nil {
		v.t.Fatalf("write %d bytes at %d of %d: %v", n, off, ino, err)
	}
	return a
}

// referencedBlocks reads the layout of every regular file in the tree and
// returns the distinct blocks referenced and their total size.
func (v *testVolume) referencedBlocks() (int64, int64, map[BlockID]uint32) {
	v.t.Helper()
	ids := map[BlockID]uint32{}
	var walk func(dir uint64)
	walk = func(dir uint64) {
		var ents []Dirent
		_ = v.m.ReadDir(v.ctx, dir, 0, func(d Dirent) bool { ents = append(ents, d); return true })
		for _, e := range ents {
			switch e.Type {
			case syscall.S_IFDIR:
				walk(e.Ino)
			case syscall.S_IFREG:
				d, err := v.m.ReadData(v.ctx, e.Ino, 0, ^uint64(0))
				if err != nil {
					v.t.Fatalf("read layout of %d: %v", e.Ino, err)
				}
				for _, ss := range d.Chunks {
					for _, s := range ss {
						for _, b := range s.Blocks {
							ids[b.ID] = b.Size
						}
					}
				}
			}
		}
	}
	walk(RootIno)
	var bytes int64
	for _, sz := range ids {
		bytes += int64(sz)
	}
	return int64(len(ids)), bytes, ids
}

// TestStatsMatchTreeAndReopen applies a random mix of namespace and data
// operations, then checks that the in-memory totals, the totals a fresh Open
// folds from the delta records, and the counts of a walk of the tree agree.
func TestStatsMatchTreeAndReopen(t *testing.T) {
	v := newVolume(t, func(f *Format) { f.ChunkSize = 256 << 10 })
	r := rand.New(rand.NewPCG(42, 42))
	dirs := []uint64{RootIno}
	var files []uint64
	name := func() string { return fmt.Sprintf("n%d", r.IntN(40)) }
	blockN := 0
	for i := range 1500 {
		parent := dirs[r.IntN(len(dirs))]
		switch op := r.IntN(12); op {
		case 0, 1:
			if a, err := v.m.Mknod(v.ctx, &Root, parent, name(), NewNode{Mode: syscall.S_IFREG | 0o644}); err == nil {
				files = append(files, a.Ino)
			}
		case 2:
			if a, err := v.m.Mknod(v.ctx, &Root, parent, name(), NewNode{Mode: syscall.S_IFDIR | 0o755}); err == nil {
				dirs = append(dirs, a.Ino)
			}
		case 3:
			_, _ = v.m.Mknod(v.ctx, &Root, parent, name(), NewNode{Mode: syscall.S_IFLNK | 0o777, Target: "t"})
		case 4:
			_, _ = v.m.Unlink(v.ctx, &Root, parent, name())
		case 5:
			_, _ = v.m.Rmdir(v.ctx, &Root, parent, name())
		case 6:
			_, _ = v.m.Rename(v.ctx, &Root, parent, name(), dirs[r.IntN(len(dirs))], name(), uint32(r.IntN(3)))
		case 7:
			if len(files) > 0 {
				_, _ = v.m.Link(v.ctx, &Root, files[r.IntN(len(files))], parent, name())
			}
		case 8, 9:
			if len(files) > 0 {
				ino := files[r.IntN(len(files))]
				if a, err := v.m.GetAttr(v.ctx, ino); err == nil && a.Nlink > 0 {
					var bs []BlockRef
					for range 1 + r.IntN(3) {
						// Reuse block names now and then: dedup across files.
						n := r.IntN(blockN + 1)
						if r.IntN(2) == 0 {
							blockN++
							n = blockN
						}
						bs = append(bs, fakeBlock(n, uint32(1000+n%7)))
					}
					v.writeSlice(ino, uint64(r.IntN(4))<<18+uint64(r.IntN(1<<18-8000)), bs...)
				}
			}
		case 10:
			if len(files) > 0 {
				ino := files[r.IntN(len(files))]
				if a, err := v.m.GetAttr(v.ctx, ino); err == nil && a.Nlink > 0 {
					_, _ = v.m.SetAttr(v.ctx, &Root, ino, SetAttrIn{Valid: SetSize, Size: uint64(r.IntN(1 << 20))})
				}
			}
		case 11:
			if r.IntN(4) == 0 {
				v.reapAll()
			}
			if r.IntN(10) == 0 {
				if err := v.m.FoldStats(v.ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Drop removed directories from the candidates.
		if i%50 == 0 {
			live := dirs[:0]
			for _, d := range dirs {
				if a, err := v.m.GetAttr(v.ctx, d); err == nil && a.Nlink > 0 {
					live = append(live, d)
				}
			}
			dirs = live
		}
	}
	v.reapAll()
	mem := v.m.Stats()
	fresh, err := Open(v.ctx, v.kv)
	if err != nil {
		t.Fatal(err)
	}
	if got := fresh.Stats(); got != mem {
		t.Errorf("stats folded by a fresh Open %+v differ from in-memory %+v", got, mem)
	}
	c := v.checkTree()
	blocks, blockBytes, ids := v.referencedBlocks()
	want := Stats{Inodes: c.inodes, Dirs: c.dirs, Files: c.files, Bytes: c.bytes, Blocks: blocks, BlockBytes: blockBytes}
	if mem != want {
		t.Errorf("stats %+v, walk of the tree finds %+v", mem, want)
	}
	if mem.Files < 5 || mem.Dirs < 3 || mem.Blocks < 5 {
		t.Errorf("the random mix built too little to test: %+v", mem)
	}
	// Once everything is deleted, only the root remains, and every block
	// is queued for deletion.
	var clear func(dir uint64)
	clear = func(dir uint64) {
		var ents []Dirent
		_ = v.m.ReadDir(v.ctx, dir, 0, func(d Dirent) bool { ents = append(ents, d); return true })
		for _, e := range ents {
			if e.Type == syscall.S_IFDIR {
				clear(e.Ino)
				if _, err := v.m.Rmdir(v.ctx, &Root, dir, e.Name); err != nil {
					t.Fatalf("rmdir %s: %v", e.Name, err)
				}
			} else if _, err := v.m.Unlink(v.ctx, &Root, dir, e.Name); err != nil {
				t.Fatalf("unlink %s: %v", e.Name, err)
			}
		}
	}
	clear(RootIno)
	v.reapAll()
	if got, want := v.m.Stats(), (Stats{Inodes: 1, Dirs: 1}); got != want {
		t.Errorf("stats of an empty volume %+v, want %+v", got, want)
	}
	pending, err := v.m.PendingBlocks(v.ctx, time.Now(), nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	queued := map[BlockID]bool{}
	for _, id := range pending {
		queued[id] = true
	}
	for id := range ids {
		if !queued[id] {
			t.Errorf("block %s was referenced, now is not, but is not queued for deletion", id)
		}
	}
	refs := 0
	_ = v.kv.View(v.ctx, func(t Txn) error {
		return t.Scan(key1(pRefcount), nil, func(k, _ []byte) (bool, error) { refs++; return true, nil })
	})
	if refs != 0 {
		t.Errorf("%d refcount records remain on an empty volume", refs)
	}
}

// deltaRecords counts the delta records in the database.
func (v *testVolume) deltaRecords() int { return v.countKeys(key1(pDelta)) }

// TestFoldSkipsFoldedButNotUnsettled: a fold starts after the records
// earlier folds took, but never after one whose transaction had numbered
// its record and not yet committed when an earlier fold began: such a
// record, committed later, is folded by the next fold.
func TestFoldSkipsFoldedButNotUnsettled(t *testing.T) {
	v := newVolume(t, nil)
	v.mkfile(RootIno, "a") // delta record 1
	// A transaction numbers record 2 and is still committing...
	v.m.statsMu.Lock()
	v.m.deltaSeq++
	late := v.m.deltaSeq
	v.m.unsettled[late] = true
	v.m.statsMu.Unlock()
	v.mkfile(RootIno, "b") // record 3
	if err := v.m.FoldStats(v.ctx); err != nil {
		t.Fatal(err)
	}
	if n := v.deltaRecords(); n != 0 {
		t.Fatalf("%d delta records after a fold", n)
	}
	if v.m.foldFrom != late {
		t.Errorf("next fold starts at %d, want %d (the unsettled record)", v.m.foldFrom, late)
	}
	// ...and commits after the fold.
	d := Stats{Files: 1, Inodes: 1}
	v.raw(func(t Txn) error { return t.Set(keyInoU64(pDelta, v.m.boot, late), d.encode()) })
	v.m.statsMu.Lock()
	delete(v.m.unsettled, late)
	v.m.stats.add(d)
	v.m.statsMu.Unlock()
	v.mkfile(RootIno, "c")
	if err := v.m.FoldStats(v.ctx); err != nil {
		t.Fatal(err)
	}
	if n := v.deltaRecords(); n != 0 {
		t.Errorf("%d delta records left after the late commit and a fold", n)
	}
	if v.m.foldFrom != v.m.deltaSeq+1 {
		t.Errorf("next fold starts at %d, want %d", v.m.foldFrom, v.m.deltaSeq+1)
	}
	// The totals record holds everything: a reopen loads what memory has.
	want := v.m.Stats()
	m, err := Open(v.ctx, v.kv)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Stats(); got != want {
		t.Errorf("totals after reopening %+v, want %+v", got, want)
	}
}

// TestFoldUnderConcurrentCommits: transactions committing out of order
// while folds run leave no delta record behind and exact totals.
func TestFoldUnderConcurrentCommits(t *testing.T) {
	v := newVolume(t, nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	folds := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				folds <- nil
				return
			default:
			}
			if err := v.m.FoldStats(v.ctx); err != nil {
				folds <- err
				return
			}
		}
	}()
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if _, err := v.m.Mknod(v.ctx, &Root, RootIno, fmt.Sprintf("w%d-%d", w, i), NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-folds; err != nil {
		t.Fatal(err)
	}
	if err := v.m.FoldStats(v.ctx); err != nil {
		t.Fatal(err)
	}
	if n := v.deltaRecords(); n != 0 {
		t.Errorf("%d delta records left", n)
	}
	if st := v.m.Stats(); st.Files != 1600 {
		t.Errorf("stats %+v, want 1600 files", st)
	}
	v.wantNoErrors()
}
