package fs

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/fs/meta"
)

// TestDirtyLimitBoundsMemory: 32 writers, each on its own file, write
// faster than anything commits. The bytes buffered across all files stay
// within the global limit plus one write per writer, instead of growing
// to the per-file limits added up.
func TestDirtyLimitBoundsMemory(t *testing.T) {
	const (
		writers   = 32
		writeSize = 64 << 10
		perFile   = 4 << 20
		limit     = 2 << 20
	)
	v := newVol(t, volConfig{blockSize: 64 << 10, opts: Options{DirtyLimit: limit, InodeDirty: 64 << 20}})
	var peak atomic.Int64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-done:
				return
			default:
			}
			if d := v.f.DirtyBytes(); d > peak.Load() {
				peak.Store(d)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, fh, err := v.f.Create(v.ctx, &meta.Root, meta.RootIno, fmt.Sprintf("w%d", w), 0o644, syscall.O_RDWR|syscall.O_CREAT)
			if err != nil {
				t.Error(err)
				return
			}
			_ = a
			data := pattern(uint64(w), writeSize)
			for off := 0; off < perFile; off += writeSize {
				if _, err := v.f.Write(v.ctx, fh, uint64(off), data); err != nil {
					t.Error(err)
					return
				}
			}
			if err := v.f.Release(v.ctx, fh); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	close(done)
	<-sampled
	bound := int64(limit + writers*writeSize)
	t.Logf("peak buffered %d bytes (limit %d, bound %d, unbounded would be %d)", peak.Load(), limit, bound, writers*perFile)
	if peak.Load() > bound {
		t.Errorf("peak buffered %d bytes, above limit+one write per writer = %d", peak.Load(), bound)
	}
	if d := v.f.DirtyBytes(); d != 0 {
		t.Errorf("after every file was closed %d bytes are still counted as buffered", d)
	}
	for w := 0; w < writers; w++ {
		a, err := v.lookupPath(fmt.Sprintf("w%d", w))
		if err != nil || a.Size != perFile {
			t.Fatalf("w%d: %v size %d", w, err, a.Size)
		}
	}
}

// TestIdleBuffersAreCommitted: a write to a file left open reaches the
// metadata (visible to everyone, also after a crash of the process) within
// DirtyExpire plus a background tick, without a close.
func TestIdleBuffersAreCommitted(t *testing.T) {
	v := newVol(t, volConfig{opts: Options{DirtyExpire: 200 * time.Millisecond}})
	ino, fh := v.create(meta.RootIno, "open", syscall.O_RDWR)
	v.write(fh, 0, []byte("not closed"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, err := v.m.GetAttr(v.ctx, ino)
		if err != nil {
			t.Fatal(err)
		}
		if a.Size == 10 && v.f.DirtyBytes() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("buffered write not committed after 5 s: committed size %d, %d bytes buffered", a.Size, v.f.DirtyBytes())
		}
		time.Sleep(50 * time.Millisecond)
	}
	v.release(fh)
}
