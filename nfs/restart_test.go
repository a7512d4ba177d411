package nfs

import (
	"bytes"
	"testing"
)

// TestHandlesSurviveRestart holds handles across a rename of the file's
// directory and a restart of the server on the same volume, then goes on
// reading and writing with them. A removed file's handle stays STALE.
func TestHandlesSurviveRestart(t *testing.T) {
	v := newTestVolume(t)
	f, closeFS := v.open(t)
	addr, stop := startServer(t, f, Options{Squash: SquashNone})
	w := dialWire(t, addr)
	w.uid, w.gid = 0, 0
	root := w.mountRoot()
	_, dir := w.mkdir(root, "a")
	_, sub := w.mkdir(dir, "b")
	_, file := w.create(sub, "f", createGuarded)
	if st := w.write(file, 0, []byte("before restart"), fileSync); st != nfsOK {
		t.Fatalf("write: %d", st)
	}
	_, gone := w.create(sub, "gone", createGuarded)
	if st, _ := w.nfs(12, args(sub, "gone")); st != nfsOK {
		t.Fatalf("remove: %d", st)
	}
	if st, _ := w.nfs(14, args(root, "a", root, "renamed")); st != nfsOK {
		t.Fatalf("rename: %d", st)
	}

	stop()
	closeFS()
	f2, _ := v.open(t)
	addr2, _ := startServer(t, f2, Options{Squash: SquashNone})
	w2 := dialWire(t, addr2)
	w2.uid, w2.gid = 0, 0

	if st, data, _ := w2.read(file, 0, 100); st != nfsOK || string(data) != "before restart" {
		t.Fatalf("read with an old handle: status %d data %q", st, data)
	}
	if st := w2.write(file, 0, []byte("AFTER"), fileSync); st != nfsOK {
		t.Fatalf("write with an old handle: %d", st)
	}
	if _, data, _ := w2.read(file, 0, 100); string(data) != "AFTERe restart" {
		t.Errorf("read back %q", data)
	}
	if st, fh := w2.lookup(sub, "f"); st != nfsOK || !bytes.Equal(fh, file) {
		t.Errorf("lookup in an old directory handle: status %d handle %x", st, fh)
	}
	if st, fh := w2.lookup(root, "renamed"); st != nfsOK || !bytes.Equal(fh, dir) {
		t.Errorf("renamed directory: status %d handle %x, want %x", st, fh, dir)
	}
	if st, _ := w2.getattr(gone); st != errStale {
		t.Errorf("removed file's handle after restart: status %d, want STALE", st)
	}
}
