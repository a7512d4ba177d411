package meta

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// countingKV counts the inode records its transactions read.
type countingKV struct {
	KV
	inodeGets atomic.Int64
}

func (k *countingKV) View(ctx context.Context, fn func(Txn) error) error {
	return k.KV.View(ctx, func(t Txn) error { return fn(countingTxn{t, k}) })
}

func (k *countingKV) Update(ctx context.Context, fn func(Txn) error) error {
	return k.KV.Update(ctx, func(t Txn) error { return fn(countingTxn{t, k}) })
}

type countingTxn struct {
	Txn
	k *countingKV
}

func (t countingTxn) Get(key []byte) ([]byte, error) {
	if len(key) > 0 && key[0] == pInode {
		t.k.inodeGets.Add(1)
	}
	return t.Txn.Get(key)
}

// TestAttrCacheServesRepeatedReads: a second GetAttr or Lookup of an
// inode reads no inode record; a change through any operation is seen by
// the next read, and the cache is filled again after it.
func TestAttrCacheServesRepeatedReads(t *testing.T) {
	v := newVolume(t, nil)
	kv := &countingKV{KV: v.kv}
	m, err := Open(v.ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	f, err := m.Mknod(v.ctx, &Root, RootIno, "f", NewNode{Mode: 0o100644})
	if err != nil {
		t.Fatal(err)
	}
	reads := func(what string, fn func() error, want int64) {
		t.Helper()
		before := kv.inodeGets.Load()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := kv.inodeGets.Load() - before; got != want {
			t.Errorf("%s read %d inode records, want %d", what, got, want)
		}
	}
	getattr := func() error { _, err := m.GetAttr(v.ctx, f.Ino); return err }
	lookup := func() error { _, err := m.Lookup(v.ctx, &Root, RootIno, "f"); return err }
	reads("first getattr", getattr, 1)
	reads("second getattr", getattr, 0)
	reads("first lookup", lookup, 1) // the root directory
	reads("second lookup", lookup, 0)

	if _, err := m.SetAttr(v.ctx, &Root, f.Ino, SetAttrIn{Valid: SetMode, Mode: 0o600}); err != nil {
		t.Fatal(err)
	}
	a, err := m.GetAttr(v.ctx, f.Ino)
	if err != nil || a.Mode&0o7777 != 0o600 {
		t.Fatalf("getattr after chmod: %v, %v; want mode 600", a, err)
	}
	reads("getattr after the chmod's read", getattr, 0)
	// A returned inode is the caller's to change.
	a.Size = 12345
	if b, _ := m.GetAttr(v.ctx, f.Ino); b.Size != 0 {
		t.Errorf("the cache kept a change made to a returned inode: size %d", b.Size)
	}
	if _, err := m.Unlink(v.ctx, &Root, RootIno, "f"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Lookup(v.ctx, &Root, RootIno, "f"); err == nil {
		t.Error("lookup after unlink found the file")
	}
}

// TestAttrCacheNeverStale races readers that keep filling the cache with
// writers that change inodes: once a change returns, every read shows it.
// A reader that read an inode before a commit must not put that old copy
// back after the commit dropped it (run with -race as well).
func TestAttrCacheNeverStale(t *testing.T) {
	v := newVolume(t, nil)
	const files, rounds = 4, 300
	var inos [files]uint64
	for i := range inos {
		inos[i] = v.mkfile(RootIno, fmt.Sprint("f", i)).Ino
	}
	ctx, cancel := context.WithCancel(v.ctx)
	var readers sync.WaitGroup
	for r := range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := 0; ctx.Err() == nil; i++ {
				ino := inos[(i+r)%files]
				if r%2 == 0 {
					_, _ = v.m.GetAttr(ctx, ino)
				} else {
					_, _ = v.m.Lookup(ctx, &Root, RootIno, fmt.Sprint("f", (i+r)%files))
				}
			}
		}()
	}
	var writers sync.WaitGroup
	errs := make(chan error, files)
	for w := range files {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := 1; i <= rounds; i++ {
				mode := uint32(i % 0o1000)
				if _, err := v.m.SetAttr(v.ctx, &Root, inos[w], SetAttrIn{Valid: SetMode | SetMtime, Mode: mode, Mtime: int64(i)}); err != nil {
					errs <- err
					return
				}
				a, err := v.m.GetAttr(v.ctx, inos[w])
				if err == nil && (a.Mode&0o777 != mode || a.Mtime != int64(i)) {
					err = fmt.Errorf("inode %d after change %d: mode %o mtime %d, want %o %d", inos[w], i, a.Mode&0o777, a.Mtime, mode, i)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	writers.Wait()
	cancel()
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
