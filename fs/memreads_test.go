package fs

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/fs/meta"
)

// countedKey marks the contexts whose metadata reads readCountingKV counts
// (background work reads with its own context).
type countedKey struct{}

// readCountingKV counts the read-only transactions run for a marked context.
type readCountingKV struct {
	meta.KV
	views atomic.Int64
}

func (k *readCountingKV) View(ctx context.Context, fn func(meta.Txn) error) error {
	if ctx.Value(countedKey{}) != nil {
		k.views.Add(1)
	}
	return k.KV.View(ctx, fn)
}

// TestOpenFileAnswersFromMemory: what a small file's create, first write
// and close ask of an open file, objfs answers from memory when it knows
// the answer: the kernel's query for security.capability, and the link
// count at the last close of a file that was never unlinked. Each still
// reads metadata when it cannot know.
func TestOpenFileAnswersFromMemory(t *testing.T) {
	kv := &readCountingKV{}
	v := newVol(t, volConfig{wrapKV: func(inner meta.KV) meta.KV { kv.KV = inner; return kv }})
	counted := context.WithValue(v.ctx, countedKey{}, true)
	reads := func(what string, want int64, op func() error) {
		t.Helper()
		before := kv.views.Load()
		if err := op(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := kv.views.Load() - before; got != want {
			t.Errorf("%s: %d metadata reads, want %d", what, got, want)
		}
	}
	caps := func(ino uint64, want []byte) func() error {
		return func() error {
			got, err := v.f.GetXattr(counted, &meta.Root, ino, meta.XattrCaps)
			switch {
			case want == nil && !errors.Is(err, syscall.ENODATA):
				return errors.Join(errors.New("want ENODATA"), err)
			case want != nil && (err != nil || !bytes.Equal(got, want)):
				return errors.Join(errors.New("want the capabilities set"), err)
			}
			return nil
		}
	}

	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	reads("security.capability of a new file", 0, caps(ino, nil))
	if _, err := v.f.Write(v.ctx, fh, 0, []byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := v.f.Flush(v.ctx, fh); err != nil {
		t.Fatal(err)
	}
	reads("last close of a linked file", 0, func() error { return v.f.Release(counted, fh) })

	// Capabilities set: not known to be absent.
	ino, fh = v.create(meta.RootIno, "g", syscall.O_RDWR)
	if err := v.f.SetXattr(v.ctx, &meta.Root, ino, meta.XattrCaps, capsValue, 0); err != nil {
		t.Fatal(err)
	}
	reads("security.capability after setxattr", 1, caps(ino, capsValue))
	v.release(fh)
	reads("security.capability of a closed file", 1, caps(ino, capsValue))

	// Unlinked while open: the last close reads the link count, and the
	// file is reaped.
	ino, fh = v.create(meta.RootIno, "h", syscall.O_RDWR)
	if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "h"); err != nil {
		t.Fatal(err)
	}
	// The reaper finds it open and leaves it to the last close.
	deadline := time.Now().Add(5 * time.Second)
	for !v.f.markedUnlinked(ino) {
		if time.Now().After(deadline) {
			t.Fatal("the reaper did not mark the open unlinked file")
		}
		time.Sleep(time.Millisecond)
	}
	reads("last close of an unlinked file", 1, func() error { return v.f.Release(counted, fh) })
	v.waitGone(ino, 5*time.Second)
}

// markedUnlinked reports whether the open inode ino is marked as maybe
// unlinked.
func (f *FS) markedUnlinked(ino uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	in := f.inodes[ino]
	return in != nil && in.unlinked
}
