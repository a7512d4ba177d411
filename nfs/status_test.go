package nfs

import (
	"strings"
	"syscall"
	"testing"
)

// TestStatusCodes checks that each failure gets its precise NFS status.
// go-nfs's own handlers answer most of these with NFS3ERR_ACCES or
// NFS3ERR_IO (or read LINK's arguments in the wrong order), which is why
// the wrapper serves these procedures itself.
func TestStatusCodes(t *testing.T) {
	addr, _ := newTestServer(t, Options{Squash: SquashNone})
	w := dialWire(t, addr)
	w.uid, w.gid = 0, 0
	root := w.mountRoot()

	mustOK := func(st uint32, fh []byte) []byte {
		t.Helper()
		if st != nfsOK {
			t.Fatalf("setup: status %d", st)
		}
		return fh
	}
	file := mustOK(w.create(root, "file", createGuarded))
	dir := mustOK(w.mkdir(root, "dir"))
	mustOK(w.create(dir, "inner", createGuarded))
	empty := mustOK(w.mkdir(root, "empty"))
	gone := mustOK(w.create(root, "gone", createGuarded))
	if st, _ := w.nfs(12, args(root, "gone")); st != nfsOK {
		t.Fatalf("remove: %d", st)
	}
	locked := mustOK(w.mkdir(root, "locked"))
	if st, _ := w.nfs(2, args(locked, sattrMode(0o555), false)); st != nfsOK {
		t.Fatalf("chmod: %d", st)
	}
	link := raw(args("target").b)
	if st, _ := w.nfs(10, args(root, "sym", noSattr, link)); st != nfsOK {
		t.Fatalf("symlink: %d", st)
	}
	_, sym := w.lookup(root, "sym")
	long := strings.Repeat("x", 256)
	bogus := []byte("not a handle")
	otherGen := append([]byte(nil), file...)
	otherGen[16] ^= 1

	type call struct {
		proc uint32
		args *xdrWriter
	}
	tests := []struct {
		name string
		uid  uint32
		call call
		want uint32
	}{
		{"lookup missing", 0, call{3, args(root, "nope")}, errNoEnt},
		{"lookup in a file", 0, call{3, args(file, "x")}, errNotDir},
		{"lookup long name", 0, call{3, args(root, long)}, errNameTooLong},
		{"create guarded over file", 0, call{8, args(root, "file", createGuarded, noSattr)}, errExist},
		{"create over directory", 0, call{8, args(root, "dir", createUnchecked, noSattr)}, errExist},
		{"create long name", 0, call{8, args(root, long, createGuarded, noSattr)}, errNameTooLong},
		{"create in a file", 0, call{8, args(file, "x", createGuarded, noSattr)}, errNotDir},
		{"create without permission", 1000, call{8, args(locked, "x", createGuarded, noSattr)}, errAcces},
		{"mkdir existing", 0, call{9, args(root, "dir", noSattr)}, errExist},
		{"mkdir dot", 0, call{9, args(root, ".", noSattr)}, errExist},
		{"rmdir not empty", 0, call{13, args(root, "dir")}, errNotEmpty},
		{"rmdir a file", 0, call{13, args(root, "file")}, errNotDir},
		{"rmdir dot", 0, call{13, args(empty, ".")}, errInval},
		{"remove a directory", 0, call{12, args(root, "empty")}, errIsDir},
		{"remove missing", 0, call{12, args(root, "nope")}, errNoEnt},
		{"rename dir over non-empty dir", 0, call{14, args(root, "empty", root, "dir")}, errNotEmpty},
		{"rename file over dir", 0, call{14, args(root, "file", root, "empty")}, errIsDir},
		{"rename dir over file", 0, call{14, args(root, "empty", root, "file")}, errNotDir},
		{"rename dir into itself", 0, call{14, args(root, "dir", dir, "sub")}, errInval},
		{"rename missing", 0, call{14, args(root, "nope", root, "x")}, errNoEnt},
		{"setattr mode not owner", 1000, call{2, args(file, sattrMode(0o777), false)}, errPerm},
		{"setattr guard mismatch", 0, call{2, args(file, noSattr, true, uint32(1), uint32(0))}, errNotSync},
		{"getattr removed", 0, call{1, args(gone)}, errStale},
		{"getattr other generation", 0, call{1, args(otherGen)}, errStale},
		{"getattr bogus handle", 0, call{1, args(bogus)}, errBadHandleSt},
		{"write removed", 0, call{7, args(gone, uint64(0), uint32(1), uint32(2), "x")}, errStale},
		{"write too far", 0, call{7, args(file, uint64(1)<<50, uint32(1), uint32(2), "x")}, errFBig},
		{"write a directory", 0, call{7, args(dir, uint64(0), uint32(1), uint32(2), "x")}, errIsDir},
		{"write without permission", 1000, call{7, args(file, uint64(0), uint32(1), uint32(2), "x")}, errAcces},
		{"read a directory", 0, call{6, args(dir, uint64(0), uint32(10))}, errIsDir},
		{"readlink a file", 0, call{5, args(file)}, errInval},
		{"readdir a file", 0, call{16, args(file, uint64(0), uint64(0), uint32(4096))}, errNotDir},
		{"link a directory", 0, call{15, args(dir, root, "dirlink")}, errPerm},
		{"link over existing", 0, call{15, args(file, root, "dir")}, errExist},
		{"link into a file", 0, call{15, args(file, sym, "x")}, errNotDir},
		{"mknod regular", 0, call{11, args(root, "reg", uint32(nf3Reg))}, errBadType},
		{"symlink existing", 0, call{10, args(root, "file", noSattr, "t")}, errExist},
		{"symlink empty target", 0, call{10, args(root, "s2", noSattr, "")}, errNoEnt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w.uid, w.gid = tc.uid, tc.uid
			defer func() { w.uid, w.gid = 0, 0 }()
			if got, _ := w.nfs(tc.call.proc, tc.call.args); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
		})
	}
}

// TestReadOnly checks that every change is refused with ROFS and reads work.
func TestReadOnly(t *testing.T) {
	v := newTestVolume(t)
	f, _ := v.open(t)
	addr, _ := startServer(t, f, Options{ReadOnly: true, Squash: SquashNone})
	w := dialWire(t, addr)
	w.uid, w.gid = 0, 0
	root := w.mountRoot()
	for name, c := range map[string]struct {
		proc uint32
		a    *xdrWriter
	}{
		"create":  {8, args(root, "f", createGuarded, noSattr)},
		"mkdir":   {9, args(root, "d", noSattr)},
		"setattr": {2, args(root, sattrMode(0o700), false)},
		"remove":  {12, args(root, "x")},
		"rename":  {14, args(root, "a", root, "b")},
		"link":    {15, args(root, root, "b")},
		"symlink": {10, args(root, "s", noSattr, "t")},
		"mknod":   {11, args(root, "p", uint32(nf3Fifo), noSattr)},
		"write":   {7, args(root, uint64(0), uint32(1), uint32(2), "x")},
	} {
		if st, _ := w.nfs(c.proc, c.a); st != errROFS {
			t.Errorf("%s: status %d, want ROFS", name, st)
		}
	}
	if st, _ := w.getattr(root); st != nfsOK {
		t.Errorf("getattr on read-only export: %d", st)
	}
}

// TestErrnoMapping covers the statuses no test can provoke on a healthy
// local volume (NOSPC, DQUOT, ...).
func TestErrnoMapping(t *testing.T) {
	for errno, want := range map[syscall.Errno]uint32{
		syscall.ENOSPC: errNoSpc, syscall.EDQUOT: errDQuot, syscall.EROFS: errROFS,
		syscall.EFBIG: errFBig, syscall.ESTALE: errStale, syscall.EMLINK: errMLink,
		syscall.EBUSY: errIO,
	} {
		if got := statusOf(t.Context(), testLog(), "test", errno); got != want {
			t.Errorf("%v: %d, want %d", errno, got, want)
		}
	}
}
