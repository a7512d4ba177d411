package fs

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
	"github.com/objfs/objfs/objstore/faulty"
)

// slowDeletes is a store whose deletes take delay each, or wait for gate
// to be closed when gate is not nil; it records how many ran at once.
type slowDeletes struct {
	objstore.Store
	delay time.Duration
	gate  chan struct{}

	mu               sync.Mutex
	running, maxRun  int
	started, deleted int
}

func (s *slowDeletes) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	s.running++
	s.started++
	s.maxRun = max(s.maxRun, s.running)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running--
		s.mu.Unlock()
	}()
	gate := s.gate
	if gate == nil {
		g := make(chan struct{})
		time.AfterFunc(s.delay, func() { close(g) })
		gate = g
	}
	select {
	case <-gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := s.Store.Delete(ctx, key); err != nil {
		return err
	}
	s.mu.Lock()
	s.deleted++
	s.mu.Unlock()
	return nil
}

func (s *slowDeletes) counts() (started, deleted, maxRun int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started, s.deleted, s.maxRun
}

// writeFiles writes n closed files of one distinct block each into dir.
func (v *testVol) writeFiles(n int, prefix string) {
	v.t.Helper()
	for i := range n {
		_, fh := v.create(meta.RootIno, fmt.Sprint(prefix, i), syscall.O_RDWR)
		v.write(fh, 0, pattern(uint64(100+i), 4096))
		v.release(fh)
	}
}

// TestDeletesRunInParallel: the objects of a deletion are deleted several
// at a time, as many as Uploaders, and all of them.
func TestDeletesRunInParallel(t *testing.T) {
	store := &slowDeletes{Store: newMemStore(), delay: 20 * time.Millisecond}
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100, opts: Options{Uploaders: 4}})
	v.close()
	v.store = store
	v.open()
	const files = 48
	v.writeFiles(files, "f")
	for i := range files {
		if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, fmt.Sprint("f", i)); err != nil {
			t.Fatal(err)
		}
	}
	v.waitStoreMatchesReferences(15 * time.Second)
	started, deleted, maxRun := store.counts()
	if deleted < files {
		t.Errorf("%d objects deleted, want at least %d", deleted, files)
	}
	if maxRun < 2 || maxRun > 4 {
		t.Errorf("at most %d deletes ran at once (of %d), want 2 to 4 (Uploaders)", maxRun, started)
	}
}

// TestStuckDeletesLeaveCommitsAlone: while the store's deletes hang, an idle
// buffer is still committed in the background and an orphan still reaped:
// neither waits on the block deleter.
func TestStuckDeletesLeaveCommitsAlone(t *testing.T) {
	store := &slowDeletes{Store: newMemStore(), gate: make(chan struct{})}
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100,
		opts: Options{DirtyExpire: 100 * time.Millisecond}})
	v.close()
	v.store = store
	v.open()
	defer close(store.gate)
	v.writeFiles(4, "gone")
	for i := range 4 {
		if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, fmt.Sprint("gone", i)); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if started, _, _ := store.counts(); started > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleter did not start deleting within 10 s")
		}
	}
	ino, fh := v.create(meta.RootIno, "open", syscall.O_RDWR)
	v.write(fh, 0, []byte("still open"))
	d, err := v.f.Mkdir(v.ctx, &meta.Root, meta.RootIno, "d", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.f.Rmdir(v.ctx, &meta.Root, meta.RootIno, "d"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		a, err := v.m.GetAttr(v.ctx, ino)
		if err != nil {
			t.Fatal(err)
		}
		_, gone := v.m.GetAttr(v.ctx, d.Ino)
		if a.Size == 10 && gone == syscall.ENOENT {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with deletes stuck, after 5 s: committed size %d (want 10), removed directory: %v (want ENOENT)", a.Size, gone)
		}
	}
	if _, deleted, _ := store.counts(); deleted != 0 {
		t.Fatalf("%d deletes got through the closed gate", deleted)
	}
	v.release(fh)
}

// BenchmarkDeletePending: one pass of the block deleter over 64 blocks
// whose store takes 5 ms a delete (a remote store's round trip), with
// deletes one at a time and eight at a time (Uploaders' default).
func BenchmarkDeletePending(b *testing.B) {
	for _, deleters := range []int{1, 8} {
		b.Run(fmt.Sprint("deleters=", deleters), func(b *testing.B) {
			store := &slowDeletes{Store: newMemStore(), delay: 5 * time.Millisecond}
			v := newVol(b, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100, opts: Options{DeleteGrace: time.Hour}})
			v.close()
			v.store = store
			v.open()
			v.f.blocks.deleters = deleters
			const files = 64
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				prefix := fmt.Sprint("r", i, "-")
				v.writeFiles(files, prefix)
				for j := range files {
					if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, fmt.Sprint(prefix, j)); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				if err := v.f.blocks.deletePending(v.ctx, v.m, 0); err != nil {
					b.Fatal(err)
				}
			}
			if _, deleted, _ := store.counts(); deleted < b.N*files {
				b.Fatalf("%d deleted, want %d", deleted, b.N*files)
			}
		})
	}
}

// TestFailedDeletesAreRetried: an object whose delete failed is deleted by a
// later pass, not left in the store until gc; the counts say so.
func TestFailedDeletesAreRetried(t *testing.T) {
	fst := faulty.New(newMemStore(), 5)
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100})
	v.close()
	v.store = fst
	v.open()
	v.writeFiles(6, "f")
	fst.FailNext(faulty.OpDelete, 4)
	for i := range 6 {
		if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, fmt.Sprint("f", i)); err != nil {
			t.Fatal(err)
		}
	}
	v.waitStoreMatchesReferences(15 * time.Second)
	if got := v.f.FreedStats(); got.BlocksDeleted != 6 || got.DeleteErrors != 4 {
		t.Errorf("freed stats %+v, want 6 blocks deleted after 4 failed deletes", got)
	}
	v.checkNoLeaks()
}
