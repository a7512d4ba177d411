package fuse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
)

// newTestFS opens the POSIX layer of a fresh volume in a temporary
// directory, closed when the test ends.
func newTestFS(t *testing.T) *fs.FS {
	t.Helper()
	return newTestFSWith(t, nil)
}

// newTestFSWith is newTestFS over the store that wrap, when not nil, makes
// of the volume's own.
func newTestFSWith(t *testing.T, wrap func(objstore.Store) objstore.Store) *fs.FS {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	kv, err := meta.OpenBadger(filepath.Join(dir, "meta"), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := meta.Create(ctx, kv, meta.NewFormat([]string{store}, 64<<10)); err != nil {
		t.Fatal(err)
	}
	m, err := meta.Open(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	s, err := objstore.Create(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	var fsStore objstore.Store = s
	if wrap != nil {
		fsStore = wrap(s)
	}
	f, err := fs.New(ctx, m, fsStore, fs.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(ctx); err != nil {
			t.Error(err)
		}
		s.Close()
		kv.Close()
	})
	return f
}

// fakeNotifier records notifications, and runs during before each.
type fakeNotifier struct {
	log    []string
	during func()
}

func (n *fakeNotifier) EntryNotify(parent uint64, name string) gofuse.Status {
	if n.during != nil {
		n.during()
	}
	n.log = append(n.log, fmt.Sprintf("entry %d/%s", parent, name))
	return gofuse.OK
}

func (n *fakeNotifier) InodeNotify(node uint64, off, length int64) gofuse.Status {
	n.log = append(n.log, fmt.Sprintf("inode %d", node))
	return gofuse.OK
}

// TestRenamingHoldsNames: while a rename by another front end is held
// (Invalidator.Renaming), lookups of both its names answer what they named
// before, uncached, whatever the metadata says, until the kernel has been
// told; then the truth, cached. Changes the kernel knows of refresh holds.
func TestRenamingHoldsNames(t *testing.T) {
	f := newTestFS(t)
	a := New(f, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	n := &fakeNotifier{}
	inv := &Invalidator{srv: n, fs: a}
	ctx := context.Background()
	mk := func(parent uint64, name string) uint64 {
		t.Helper()
		at, err := f.Mkdir(ctx, &meta.Root, parent, name, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		return at.Ino
	}
	src, dst := mk(meta.RootIno, "inbox"), mk(meta.RootIno, "claimed")
	moved := mk(src, "x")

	check := func(when string, parent uint64, name string, wantIno uint64, cached bool) {
		t.Helper()
		var out gofuse.EntryOut
		if st := a.Lookup(nil, &gofuse.InHeader{NodeId: parent}, name, &out); st != gofuse.OK {
			t.Fatalf("%s: lookup %s: %v", when, name, st)
		}
		if out.NodeId != wantIno {
			t.Errorf("%s: lookup of %s answered inode %d, want %d", when, name, out.NodeId, wantIno)
		}
		if (out.EntryValid > 0) != cached || (out.NodeId != 0 && (out.AttrValid > 0) != cached) {
			t.Errorf("%s: lookup of %s: entry timeout %ds, attribute timeout %ds; want cached=%v", when, name, out.EntryValid, out.AttrValid, cached)
		}
	}

	check("before", src, "x", moved, true)
	check("before", dst, "x", 0, true)
	done := inv.Renaming(src, "x", dst, "x")
	if err := f.Rename(ctx, &meta.Root, src, "x", dst, "x", 0); err != nil {
		t.Fatal(err)
	}
	check("held, after the commit", src, "x", moved, false)
	check("held, after the commit", dst, "x", 0, false)
	// A later hold of the same names (a second client's rename, which
	// will fail) sees the new state, but the oldest hold answers.
	done2 := inv.Renaming(src, "x", dst, "x")
	done2(false)
	check("first hold still in place", dst, "x", 0, false)
	if len(n.log) != 0 {
		t.Errorf("a failed rename notified the kernel: %q", n.log)
	}
	// The kernel is told while the names are still held.
	n.during = func() {
		check("held while the kernel is told", src, "x", moved, false)
		check("held while the kernel is told", dst, "x", 0, false)
	}
	done(true)
	n.during = nil
	want := []string{fmt.Sprintf("entry %d/x", src), fmt.Sprintf("inode %d", src), fmt.Sprintf("entry %d/x", dst), fmt.Sprintf("inode %d", dst)}
	if !slices.Equal(n.log, want) {
		t.Errorf("notifications %q, want %q", n.log, want)
	}
	check("after done", src, "x", 0, true)
	check("after done", dst, "x", moved, true)
	if c := a.holds.n.Load(); c != 0 || len(a.holds.m) != 0 {
		t.Errorf("after done: %d holds in place, map %v", c, a.holds.m)
	}

	// A change made through the mount to a held name refreshes the hold:
	// the kernel knows of it, and must not be shown the old state.
	done = inv.Renaming(dst, "x", src, "y")
	var out gofuse.EntryOut
	if st := a.Rename(nil, &gofuse.RenameIn{InHeader: gofuse.InHeader{NodeId: dst}, Newdir: src}, "x", "z"); st != gofuse.OK {
		t.Fatalf("rename through the mount: %v", st)
	}
	check("held name renamed through the mount", dst, "x", 0, false)
	if st := a.Mkdir(nil, &gofuse.MkdirIn{InHeader: gofuse.InHeader{NodeId: src}, Mode: 0o755}, "y", &out); st != gofuse.OK {
		t.Fatalf("mkdir through the mount: %v", st)
	}
	check("held name made through the mount", src, "y", out.NodeId, false)
	done(false)

	// A held name whose old inode is gone answers that the name is missing.
	mk(src, "w")
	done = inv.Renaming(src, "w", dst, "w")
	if err := f.Rmdir(ctx, &meta.Root, src, "w"); err != nil {
		t.Fatal(err)
	}
	check("held, inode removed by another front end", src, "w", 0, false)
	done(false)
}

// gatedStore holds every Put until gate is closed, telling entered when
// one starts.
type gatedStore struct {
	objstore.Store
	entered chan struct{}
	gate    chan struct{}
}

func (s *gatedStore) Put(ctx context.Context, key string, data []byte) error {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	select {
	case <-s.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.Put(ctx, key, data)
}

// TestHoldsDoNotWaitForCommits: taking a hold reads what the name names
// under the holds' lock, which every lookup of a held name takes too. It
// must not wait for the file's commit, which holds the file while its
// blocks upload (seconds to a slow store): an NFS rename of a file being
// written would stall every FUSE lookup of any held name meanwhile.
func TestHoldsDoNotWaitForCommits(t *testing.T) {
	gs := &gatedStore{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	f := newTestFSWith(t, func(s objstore.Store) objstore.Store { gs.Store = s; return gs })
	opened := true
	defer func() {
		if opened {
			close(gs.gate)
		}
	}()
	a := New(f, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	inv := &Invalidator{srv: &fakeNotifier{}, fs: a}
	ctx := context.Background()
	at, fh, err := f.Create(ctx, &meta.Root, meta.RootIno, "f", 0o644, syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(ctx, fh, 0, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	flushed := make(chan error, 1)
	go func() { flushed <- f.Flush(ctx, fh) }()
	select {
	case <-gs.entered:
	case err := <-flushed:
		t.Fatalf("the commit did not upload anything (flush: %v)", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the commit never reached the store")
	}
	held := make(chan func(bool), 1)
	go func() { held <- inv.Renaming(meta.RootIno, "f", meta.RootIno, "g") }()
	select {
	case done := <-held:
		var out gofuse.EntryOut
		if st := a.Lookup(nil, &gofuse.InHeader{NodeId: meta.RootIno}, "g", &out); st != gofuse.OK || out.NodeId != 0 {
			t.Errorf("lookup of the held, missing name: %v, inode %d", st, out.NodeId)
		}
		done(false)
	case <-time.After(10 * time.Second):
		t.Error("taking a hold of a file's name waited for the file's commit")
	}
	close(gs.gate)
	opened = false
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	select {
	case done := <-held: // after a failure above: let it end
		done(false)
	default:
	}
	if err := f.Release(ctx, fh); err != nil {
		t.Fatal(err)
	}
	if got, err := f.Named(ctx, meta.RootIno, "f"); err != nil || got != at.Ino {
		t.Errorf("Named(f) = %d, %v; want %d", got, err, at.Ino)
	}
	if _, err := f.Named(ctx, meta.RootIno, "g"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("Named(g) of a missing name: %v, want ENOENT", err)
	}
}

// TestBufferedAttributesNotCached: attributes read while a file has writes
// buffered are not for the kernel to keep: the commit changes what the
// file stores (st_blocks) without the kernel's knowing.
func TestBufferedAttributesNotCached(t *testing.T) {
	f := newTestFS(t)
	a := New(f, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	ctx := context.Background()
	at, fh, err := f.Create(ctx, &meta.Root, meta.RootIno, "f", 0o644, syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	getattr := func(when string, wantCached bool) *gofuse.AttrOut {
		t.Helper()
		var out gofuse.AttrOut
		if st := a.GetAttr(nil, &gofuse.GetAttrIn{InHeader: gofuse.InHeader{NodeId: at.Ino}}, &out); st != gofuse.OK {
			t.Fatalf("%s: getattr: %v", when, st)
		}
		if (out.AttrValid > 0) != wantCached {
			t.Errorf("%s: attribute timeout %ds, want cached=%v", when, out.AttrValid, wantCached)
		}
		var eo gofuse.EntryOut
		if st := a.Lookup(nil, &gofuse.InHeader{NodeId: meta.RootIno}, "f", &eo); st != gofuse.OK {
			t.Fatalf("%s: lookup: %v", when, st)
		}
		if (eo.AttrValid > 0) != wantCached {
			t.Errorf("%s: lookup's attribute timeout %ds, want cached=%v", when, eo.AttrValid, wantCached)
		}
		return &out
	}
	getattr("empty", true)
	if _, err := f.Write(ctx, fh, 0, make([]byte, 100<<10)); err != nil {
		t.Fatal(err)
	}
	buffered := getattr("buffered", false)
	if err := f.Flush(ctx, fh); err != nil {
		t.Fatal(err)
	}
	committed := getattr("committed", true)
	if buffered.Blocks == committed.Blocks {
		t.Logf("the commit left st_blocks at %d: the case this guards against did not arise", committed.Blocks)
	}
	if err := f.Release(ctx, fh); err != nil {
		t.Fatal(err)
	}
}
