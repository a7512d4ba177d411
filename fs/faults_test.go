package fs

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore/faulty"
)

// TestStoreFailureKeepsBuffer: when the object store refuses uploads, Flush
// fails, the buffered data stays (reads still see it), nothing leaks, and a
// later Flush commits it once the store is back.
func TestStoreFailureKeepsBuffer(t *testing.T) {
	fst := faulty.New(newMemStore(), 1)
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100})
	// Swap the store for the faulty wrapper and remount; one uploader makes
	// the failure hit exactly the first block, while the others upload.
	v.close()
	v.store = fst
	v.opts.Uploaders = 1
	v.open()
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	v.write(fh, 0, pattern(1, 20000))
	v.flush(fh)
	model := pattern(1, 20000)
	copy(model[5000:], pattern(2, 30000))
	model = append(model, pattern(2, 30000)[15000:]...)
	// Whole blocks are stored as soon as a write completes them, so the
	// store fails from before the write: those early stores fail too.
	fst.SetErrorRate(faulty.OpPut, 1)
	v.write(fh, 5000, pattern(2, 30000))
	if err := v.f.Flush(v.ctx, fh); err == nil {
		t.Fatalf("flush with a failing store succeeded")
	}
	fst.SetErrorRate(faulty.OpPut, 0)
	if got := v.read(fh, 0, len(model)+1); !bytes.Equal(got, model) {
		t.Fatalf("read after a failed flush: %s", firstDiff(got, model))
	}
	v.flush(fh)
	v.release(fh)
	v.reopen(v.opts)
	if got := v.content(ino); !bytes.Equal(got, model) {
		t.Fatalf("content after the store recovered: %s", firstDiff(got, model))
	}
	v.checkNoLeaks()
	v.waitStoreMatchesReferences(6 * time.Second)
}

// TestTransientGetFailures: reads retry a store that fails a couple of times.
func TestTransientGetFailures(t *testing.T) {
	fst := faulty.New(newMemStore(), 2)
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: -1})
	v.close()
	v.store = fst
	v.opts.MemCacheBytes = -1
	v.open()
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	v.write(fh, 0, pattern(3, 10000))
	v.release(fh)
	fst.FailNext(faulty.OpGet, 2)
	if got := v.content(ino); !bytes.Equal(got, pattern(3, 10000)) {
		t.Fatalf("content: %s", firstDiff(got, pattern(3, 10000)))
	}
}

// TestConcurrentFiles runs writers, readers, renamers and the block deleter
// at once (run with -race): every file ends with exactly its writer's content.
func TestConcurrentFiles(t *testing.T) {
	// The test's own deleter (below) runs every 2 ms with no grace; the
	// background one is kept out of its way (deleteBatch is not meant to run
	// concurrently with itself).
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 32 << 10, inlineMax: 500, opts: Options{DeleteGrace: time.Hour}})
	d, err := v.f.Mkdir(v.ctx, &meta.Root, meta.RootIno, "d", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	const writers = 4
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	models := make([][]byte, writers)
	inos := make([]uint64, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 3))
			a, fh, err := v.f.Create(v.ctx, &meta.Root, d.Ino, fmt.Sprint("w", w), 0o644, syscall.O_CREAT|syscall.O_RDWR)
			if err != nil {
				errs <- err
				return
			}
			inos[w] = a.Ino
			var model []byte
			for i := range 150 {
				off := r.IntN(len(model) + 2000)
				// Shared content across writers: dedup under concurrency.
				data := pattern(uint64(r.IntN(20)), 1+r.IntN(9000))
				if _, err := v.f.Write(v.ctx, fh, uint64(off), data); err != nil {
					errs <- err
					return
				}
				if end := off + len(data); end > len(model) {
					model = append(model, make([]byte, end-len(model))...)
				}
				copy(model[off:], data)
				switch r.IntN(5) {
				case 0:
					if err := v.f.Flush(v.ctx, fh); err != nil {
						errs <- err
						return
					}
				case 1:
					size := r.IntN(len(model) + 1)
					if _, err := v.f.SetAttr(v.ctx, &meta.Root, a.Ino, meta.SetAttrIn{Valid: meta.SetSize, Size: uint64(size)}, fh); err != nil {
						errs <- err
						return
					}
					model = model[:size]
				}
				if i%10 == 0 {
					buf := make([]byte, len(model)+10)
					n, err := v.f.Read(v.ctx, fh, 0, buf)
					if err != nil || !bytes.Equal(buf[:n], model) {
						errs <- fmt.Errorf("writer %d op %d: read %d bytes, %v: %s", w, i, n, err, firstDiff(buf[:n], model))
						return
					}
				}
			}
			models[w] = model
			if err := v.f.Release(v.ctx, fh); err != nil {
				errs <- err
			}
		}()
	}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { // churn: create, rename, delete files with the writers' content
		defer bg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprint("tmp", i%5)
			_, fh, err := v.f.Create(v.ctx, &meta.Root, meta.RootIno, name, 0o644, syscall.O_CREAT|syscall.O_RDWR)
			if err != nil {
				errs <- err
				return
			}
			_, _ = v.f.Write(v.ctx, fh, 0, pattern(uint64(i%20), 1+i%9000))
			_ = v.f.Release(v.ctx, fh)
			_ = v.f.Rename(v.ctx, &meta.Root, meta.RootIno, name, meta.RootIno, "tmp-final", 0)
			var n int
			_ = v.f.ReadDir(v.ctx, &meta.Root, meta.RootIno, 0, func(meta.Dirent) bool { n++; return true })
		}
	}()
	go func() { // the deleter, much more often than the background loop
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			_ = v.f.blocks.deletePending(context.Background(), v.m, 0)
		}
	}()
	wg.Wait()
	close(stop)
	bg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	v.reopen(Options{MemCacheBytes: -1})
	for w := range writers {
		if got := v.content(inos[w]); !bytes.Equal(got, models[w]) {
			t.Errorf("writer %d: %s", w, firstDiff(got, models[w]))
		}
	}
	v.checkNoLeaks()
}

// TestConcurrentReleaseCommits: when the handles of a file are released
// concurrently, the last release must still commit the buffered writes.
// releaseInode decides "last" (refs == 1) and decrements refs under two
// separate locks, so two concurrent releases can both see refs == 2, both
// skip the flush, and the second removes the inode with its buffer. The race
// window is small: the test repeats for a few seconds and fails on the
// first lost write.
func TestConcurrentReleaseCommits(t *testing.T) {
	v := newVol(t, volConfig{})
	ino, h := v.create(meta.RootIno, "f", syscall.O_RDWR)
	v.release(h)
	deadline := time.Now().Add(5 * time.Second)
	i := 0
	for ; time.Now().Before(deadline) && i < 50000; i++ {
		hs := []uint64{v.openFile(ino, syscall.O_RDWR)}
		for range 15 {
			hs = append(hs, v.openFile(ino, syscall.O_RDONLY))
		}
		v.write(hs[0], uint64(i), []byte{'x'})
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, h := range hs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if err := v.f.Release(v.ctx, h); err != nil {
					t.Errorf("release: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		a, err := v.f.GetAttr(v.ctx, ino)
		if err != nil {
			t.Fatal(err)
		}
		if a.Size != uint64(i+1) {
			t.Fatalf("iteration %d: after all %d handles were released concurrently the file has size %d, want %d: the buffered write was lost", i, len(hs), a.Size, i+1)
		}
	}
	t.Logf("%d iterations without a lost write", i)
}

// TestUnlinkedBufferDropped: a file unlinked while open, whose buffered
// data cannot be committed (the store refuses every upload: a full
// disk), is let go at its last close: the close succeeds, nothing is
// retried, and the orphan is reaped. Before, its buffer was committed
// again and again for data no one could read, and the file, with the
// space its blocks took, was never freed.
func TestUnlinkedBufferDropped(t *testing.T) {
	fst := faulty.New(newMemStore(), 1)
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100})
	v.close()
	v.store = fst
	v.open()
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	v.write(fh, 0, pattern(1, 20000))
	v.flush(fh)
	_, fh2 := v.create(meta.RootIno, "kept", syscall.O_RDWR)
	fst.SetErrorRate(faulty.OpPut, 1)
	v.write(fh, 20000, pattern(2, 30000))
	v.write(fh2, 0, pattern(3, 30000))
	if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "f"); err != nil {
		t.Fatal(err)
	}
	if err := v.f.Release(v.ctx, fh); err != nil {
		t.Errorf("last close of an unlinked file with a failing store: %v", err)
	}
	// A file that still has a name keeps its data and its error.
	if err := v.f.Release(v.ctx, fh2); err == nil {
		t.Errorf("last close of a named file with a failing store succeeded")
	}
	v.waitOrphansReaped(5 * time.Second)
	if _, err := v.m.GetAttr(v.ctx, ino); err == nil {
		t.Errorf("unlinked inode %d still there", ino)
	}
	fst.SetErrorRate(faulty.OpPut, 0)
	v.close()
	v.store = fst
	v.open()
	a, err := v.f.Lookup(v.ctx, &meta.Root, meta.RootIno, "kept")
	if err != nil || a.Size != 30000 {
		t.Fatalf("kept file after the store recovered and a remount: %+v, %v", a, err)
	}
	if got := v.content(a.Ino); !bytes.Equal(got, pattern(3, 30000)) {
		t.Fatalf("kept file: %s", firstDiff(got, pattern(3, 30000)))
	}
	v.checkNoLeaks()
}
