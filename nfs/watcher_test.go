package nfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/objfs/objfs/fs/meta"
)

// recordingWatcher notes what the server tells a Watcher, in order.
type recordingWatcher struct {
	mu  sync.Mutex
	log []string
}

func (w *recordingWatcher) add(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log = append(w.log, fmt.Sprintf(format, args...))
}

func (w *recordingWatcher) Changed(ino uint64)                   { w.add("changed %d", ino) }
func (w *recordingWatcher) EntryChanged(dir uint64, name string) { w.add("entry %d/%s", dir, name) }
func (w *recordingWatcher) Renaming(fromDir uint64, fromName string, toDir uint64, toName string) func(bool) {
	w.add("renaming %d/%s -> %d/%s", fromDir, fromName, toDir, toName)
	return func(renamed bool) { w.add("done %v", renamed) }
}

func (w *recordingWatcher) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.log
	w.log = nil
	return l
}

// TestWatcherRenaming: a RENAME tells the Watcher before it is made, and
// after it, whether it was made; a failed RENAME reports nothing changed.
func TestWatcherRenaming(t *testing.T) {
	w := &recordingWatcher{}
	addr, f := newTestServer(t, Options{Squash: SquashNone, Watcher: w})
	v := dialTarget(t, addr, 0)
	for _, d := range []string{"a", "b"} {
		if _, err := v.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"a/f", "b/g"} {
		if _, err := v.Create(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	ino := func(p string) uint64 {
		t.Helper()
		a, err := f.Lookup(ctx, &meta.Root, meta.RootIno, p)
		if err != nil {
			t.Fatal(err)
		}
		return a.Ino
	}
	in := func(dir, name string) uint64 {
		t.Helper()
		a, err := f.Lookup(ctx, &meta.Root, ino(dir), name)
		if err != nil {
			t.Fatal(err)
		}
		return a.Ino
	}
	a, b := ino("a"), ino("b")
	fIno, gIno := in("a", "f"), in("b", "g")
	w.take()

	if err := v.Rename("a/f", "b/g"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf("renaming %d/f -> %d/g", a, b),
		fmt.Sprintf("changed %d", fIno),
		fmt.Sprintf("changed %d", gIno),
		"done true", // which reports both names changed
	}
	if got := w.take(); !slices.Equal(got, want) {
		t.Errorf("rename over an existing file told the watcher\n%q\nwant\n%q", got, want)
	}

	err := v.Rename("a/f", "b/h") // a/f is gone
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("rename of a missing name: %v, want NOENT", err)
	}
	want = []string{fmt.Sprintf("renaming %d/f -> %d/h", a, b), "done false"}
	if got := w.take(); !slices.Equal(got, want) {
		t.Errorf("failed rename told the watcher\n%q\nwant\n%q", got, want)
	}

	// A rename of a name onto itself changes nothing and reports no inode.
	if err := v.Rename("b/g", "b/g"); err != nil {
		t.Fatal(err)
	}
	want = []string{fmt.Sprintf("renaming %d/g -> %d/g", b, b), "done true"}
	if got := w.take(); !slices.Equal(got, want) {
		t.Errorf("rename onto itself told the watcher\n%q\nwant\n%q", got, want)
	}

	// A REMOVE reports the inode that lost a link, then the name.
	if err := v.Remove("b/g"); err != nil {
		t.Fatal(err)
	}
	want = []string{fmt.Sprintf("changed %d", fIno), fmt.Sprintf("entry %d/g", b)}
	if got := w.take(); !slices.Equal(got, want) {
		t.Errorf("remove told the watcher\n%q\nwant\n%q", got, want)
	}
}
