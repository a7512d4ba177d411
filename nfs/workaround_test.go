package nfs

import (
	"context"
	"syscall"
	"testing"

	"github.com/objfs/objfs/fs/meta"
)

// TestWorkaroundsNeeded runs the same calls against our server and against
// go-nfs alone (every call forwarded to it, over the same billy adapter and
// handle handler), and checks that ours is right and go-nfs alone is not.
// Should go-nfs get one of these right some day, the test says so, and the
// workaround can go.
func TestWorkaroundsNeeded(t *testing.T) {
	type env struct {
		w                 *wireClient
		root, dir, locked []byte
		file              []byte
	}
	setup := func(t *testing.T, goNFSOnly bool) env {
		v := newTestVolume(t)
		f, _ := v.open(t)
		ctx := context.Background()
		mk := func(parent uint64, name string, mode uint32) *meta.Attr {
			a, err := f.Mknod(ctx, &meta.Root, parent, name, meta.NewNode{Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
		dir := mk(meta.RootIno, "dir", syscall.S_IFDIR|0o777)
		mk(dir.Ino, "inner", syscall.S_IFREG|0o644)
		mk(meta.RootIno, "empty", syscall.S_IFDIR|0o777)
		locked := mk(meta.RootIno, "locked", syscall.S_IFDIR|0o555)
		file := mk(meta.RootIno, "file", syscall.S_IFREG|0o644)
		addr, _ := startServer(t, f, Options{Squash: SquashNone, goNFSOnly: goNFSOnly})
		w := dialWire(t, addr)
		w.uid, w.gid = 0, 0
		return env{w: w, root: w.mountRoot(), dir: encodeHandle(dir.Ino, dir.Gen),
			locked: encodeHandle(locked.Ino, locked.Gen), file: encodeHandle(file.Ino, file.Gen)}
	}
	cases := []struct {
		name string
		// run returns a result to compare: an accept_stat, an NFS status
		// or what a follow-up call sees.
		run  func(e env) uint32
		want uint32
	}{
		{"MOUNT EXPORT is answered", func(e env) uint32 {
			st, _, _ := e.w.callRaw(progMount, 3, mountProcExport, nil)
			return st
		}, acceptSuccess},
		{"MNT of the empty path (libnfs, auto-traverse-mounts=0)", func(e env) uint32 {
			st, r, err := e.w.callRaw(progMount, 3, mountProcMnt, args("").b)
			if err != nil || st != acceptSuccess {
				return 1000 + st
			}
			return r.u32()
		}, nfsOK},
		{"RMDIR of a non-empty directory", func(e env) uint32 {
			st, _ := e.w.nfs(13, args(e.root, "dir"))
			return st
		}, errNotEmpty},
		{"RENAME over a non-empty directory", func(e env) uint32 {
			st, _ := e.w.nfs(14, args(e.root, "empty", e.root, "dir"))
			return st
		}, errNotEmpty},
		{"CREATE is checked against the caller's uid", func(e env) uint32 {
			e.w.uid, e.w.gid = 1000, 1000
			st, _ := e.w.nfs(8, args(e.locked, "x", createGuarded, noSattr))
			return st
		}, errAcces},
		{"LINK arguments in RFC 1813 order", func(e env) uint32 {
			st, _ := e.w.nfs(15, args(e.file, e.dir, "hard"))
			if st != nfsOK {
				return st
			}
			_, a := e.w.getattr(e.file)
			return a.nlink
		}, 2},
		{"MKNOD of a character device creates it", func(e env) uint32 {
			e.w.nfs(11, args(e.root, "chr", uint32(nf3Chr), noSattr, uint32(1), uint32(3)))
			st, fh := e.w.lookup(e.root, "chr")
			if st != nfsOK {
				return st
			}
			_, a := e.w.getattr(fh)
			return a.typ
		}, nf3Chr},
		{"WRITE to a directory", func(e env) uint32 {
			st, _ := e.w.nfs(7, args(e.dir, uint64(0), uint32(1), uint32(2), "x"))
			return st
		}, errIsDir},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.run(setup(t, false)); got != tc.want {
				t.Errorf("our server: %d, want %d", got, tc.want)
			}
			if got := tc.run(setup(t, true)); got == tc.want {
				t.Errorf("go-nfs alone also gives %d: this workaround may no longer be needed", got)
			}
		})
	}
}
