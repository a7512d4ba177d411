package fs

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/fs/meta"
)

// waitGone polls until ino no longer exists.
func (v *testVol) waitGone(ino uint64, timeout time.Duration) {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, err := v.f.GetAttr(v.ctx, ino)
		if err == syscall.ENOENT {
			return
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("inode %d still exists %v after its last close and unlink (getattr: %v)", ino, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUnlinkedOpenFile: an unlinked file stays readable and writable through
// its open handles until the last Release, then is reaped and its blocks freed.
func TestUnlinkedOpenFile(t *testing.T) {
	for _, size := range []int{100, 100000} { // inline and chunked
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 1000, onDisk: true})
			ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
			model := pattern(1, size)
			v.write(fh, 0, model)
			v.flush(fh)
			fh2 := v.openFile(ino, syscall.O_RDONLY)
			if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "f"); err != nil {
				t.Fatal(err)
			}
			if _, err := v.f.Lookup(v.ctx, &meta.Root, meta.RootIno, "f"); err != syscall.ENOENT {
				t.Fatalf("lookup after unlink: %v", err)
			}
			time.Sleep(50 * time.Millisecond) // give the reaper a chance to misbehave
			if got := v.read(fh, 0, size+10); !bytes.Equal(got, model) {
				t.Fatalf("read of the open unlinked file: %s", firstDiff(got, model))
			}
			more := pattern(2, 3*size)
			v.write(fh, uint64(size/2), more)
			model = append(model[:size/2], more...)
			v.flush(fh)
			if got := v.read(fh2, 0, len(model)+10); !bytes.Equal(got, model) {
				t.Fatalf("read through the second handle after writing: %s", firstDiff(got, model))
			}
			a, err := v.f.GetAttr(v.ctx, ino)
			if err != nil || a.Nlink != 0 || a.Size != uint64(len(model)) {
				t.Fatalf("getattr of the open unlinked file: %+v, %v", a, err)
			}
			v.release(fh)
			time.Sleep(50 * time.Millisecond)
			if got := v.read(fh2, 0, len(model)+10); !bytes.Equal(got, model) {
				t.Fatalf("read through the last handle after the first closed: %s", firstDiff(got, model))
			}
			// An unlinked inode may still be opened by number (NFS) while open.
			fh3 := v.openFile(ino, syscall.O_RDONLY)
			v.release(fh3)
			v.release(fh2)
			v.waitGone(ino, 3*time.Second)
			if _, err := v.f.Open(v.ctx, &meta.Root, ino, syscall.O_RDONLY); err != syscall.ENOENT {
				t.Errorf("open of a reaped inode: %v, want ENOENT", err)
			}
			v.waitStoreMatchesReferences(6 * time.Second)
			if o, _ := v.m.Orphans(v.ctx); len(o) != 0 {
				t.Errorf("orphan records left: %v", o)
			}
		})
	}
}

// TestRenameOverOpenFile: the replaced file of a rename stays usable while
// open and is reaped at its last close.
func TestRenameOverOpenFile(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100})
	victim, fh := v.create(meta.RootIno, "victim", syscall.O_RDWR)
	v.write(fh, 0, pattern(1, 20000))
	v.flush(fh)
	_, fh2 := v.create(meta.RootIno, "new", syscall.O_RDWR)
	v.write(fh2, 0, []byte("new content"))
	v.release(fh2)
	if err := v.f.Rename(v.ctx, &meta.Root, meta.RootIno, "new", meta.RootIno, "victim", 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if got := v.read(fh, 0, 20000); !bytes.Equal(got, pattern(1, 20000)) {
		t.Fatalf("replaced open file: %s", firstDiff(got, pattern(1, 20000)))
	}
	v.release(fh)
	v.waitGone(victim, 3*time.Second)
	if a, err := v.f.Lookup(v.ctx, &meta.Root, meta.RootIno, "victim"); err != nil || string(v.content(a.Ino)) != "new content" {
		t.Errorf("renamed file: %v", err)
	}
}

// snapshot is everything observable about a tree, for comparing before and
// after a remount.
func (v *testVol) snapshot() map[string]string {
	v.t.Helper()
	out := map[string]string{}
	var walk func(dir uint64, path string)
	walk = func(dir uint64, path string) {
		var ents []meta.Dirent
		if err := v.f.ReadDir(v.ctx, &meta.Root, dir, 0, func(e meta.Dirent) bool { ents = append(ents, e); return true }); err != nil {
			v.t.Fatalf("readdir %s: %v", path, err)
		}
		for _, e := range ents {
			p := path + "/" + e.Name
			// Read content before the attributes: a read may update
			// atime (relatime), and the snapshot must show the result.
			var content []byte
			if a, err := v.f.GetAttr(v.ctx, e.Ino); err == nil && a.IsRegular() {
				content = v.content(e.Ino)
			}
			a, err := v.f.GetAttr(v.ctx, e.Ino)
			if err != nil {
				v.t.Fatalf("getattr %s: %v", p, err)
			}
			desc := fmt.Sprintf("ino=%d mode=%o uid=%d gid=%d nlink=%d size=%d rdev=%d atime=%d mtime=%d ctime=%d cookie=%d",
				a.Ino, a.Mode, a.Uid, a.Gid, a.Nlink, a.Size, a.Rdev, a.Atime, a.Mtime, a.Ctime, e.Cookie)
			names, err := v.f.ListXattr(v.ctx, &meta.Root, e.Ino)
			if err != nil {
				v.t.Fatalf("listxattr %s: %v", p, err)
			}
			slices.Sort(names)
			for _, n := range names {
				val, err := v.f.GetXattr(v.ctx, &meta.Root, e.Ino, n)
				if err != nil {
					v.t.Fatalf("getxattr %s %s: %v", p, n, err)
				}
				desc += fmt.Sprintf(" xattr %s=%q", n, val)
			}
			switch {
			case a.IsDir():
				walk(e.Ino, p)
			case a.IsRegular():
				desc += fmt.Sprintf(" content=%x", content)
			case a.Type() == syscall.S_IFLNK:
				target, err := v.f.Readlink(v.ctx, e.Ino)
				if err != nil {
					v.t.Fatalf("readlink %s: %v", p, err)
				}
				desc += " target=" + target
			}
			out[p] = desc
		}
	}
	walk(meta.RootIno, "")
	return out
}

// TestRemountKeepsEverything: after an unmount and mount, the tree,
// attributes, xattrs, contents, statistics and readdir cookies are as they were.
func TestRemountKeepsEverything(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 32 << 10, inlineMax: 500, onDisk: true})
	c := &meta.Root
	d, err := v.f.Mkdir(v.ctx, c, meta.RootIno, "dir", 0o750)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := v.f.Mkdir(v.ctx, c, d.Ino, "sub", 0o700)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{0, 1, 499, 500, 501, 40000, 100000} {
		parent := []uint64{meta.RootIno, d.Ino, sub.Ino}[i%3]
		_, fh := v.create(parent, fmt.Sprint("file", i), syscall.O_RDWR)
		v.write(fh, 0, pattern(uint64(i), n))
		if i%2 == 0 {
			v.write(fh, uint64(n+5000), []byte("after a hole"))
		}
		if i == 6 {
			// Left buffered: the unmount must commit it.
			v.write(fh, 3, []byte("unflushed"))
			continue
		}
		v.release(fh)
	}
	if _, err := v.f.Symlink(v.ctx, c, d.Ino, "link", "../file0"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.f.Mknod(v.ctx, c, sub.Ino, "fifo", meta.NewNode{Mode: syscall.S_IFIFO | 0o640}); err != nil {
		t.Fatal(err)
	}
	f1, _ := v.f.Lookup(v.ctx, c, d.Ino, "file1")
	if _, err := v.f.Link(v.ctx, c, f1.Ino, meta.RootIno, "hardlink"); err != nil {
		t.Fatal(err)
	}
	if err := v.f.SetXattr(v.ctx, c, f1.Ino, "user.color", []byte("blue"), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.f.SetXattr(v.ctx, c, d.Ino, "trusted.x", []byte{0, 1, 2}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := v.f.SetAttr(v.ctx, c, f1.Ino, meta.SetAttrIn{Valid: meta.SetMode | meta.SetUid | meta.SetGid | meta.SetAtime | meta.SetMtime,
		Mode: 0o4711, Uid: 12, Gid: 34, Atime: 1e9, Mtime: 2e9}, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.f.Rename(v.ctx, c, d.Ino, "file4", sub.Ino, "renamed", 0); err != nil {
		t.Fatal(err)
	}
	before := v.snapshot()
	v.reopen(v.opts)
	after := v.snapshot()
	for p, want := range before {
		if got := after[p]; got != want {
			t.Errorf("%s after remount:\n got  %.300s\n want %.300s", p, got, want)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared after remount", p)
		}
	}
	// Everything is committed now: totals survive a second remount exactly.
	statsBefore := v.m.Stats()
	if statsBefore.Files != 7 || statsBefore.Dirs != 3 || statsBefore.Inodes != 12 {
		t.Errorf("stats after remount: %+v", statsBefore)
	}
	v.reopen(v.opts)
	if got := v.m.Stats(); got != statsBefore {
		t.Errorf("stats after a second remount %+v, before %+v", got, statsBefore)
	}
	if len(before) < 12 {
		t.Errorf("snapshot too small: %d entries", len(before))
	}
	v.waitStoreMatchesReferences(6 * time.Second)
}

// TestCrashLeavesOrphanReapedAtStart: a file unlinked while open, whose
// handle was never released (the process died), is an orphan record at the
// next start; the reaper frees it in the background, blocks and all.
func TestCrashLeavesOrphanReapedAtStart(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100, onDisk: true})
	ino, fh := v.create(meta.RootIno, "doomed", syscall.O_RDWR)
	v.write(fh, 0, pattern(4, 50000))
	v.flush(fh)
	keep, kfh := v.create(meta.RootIno, "keep", syscall.O_RDWR)
	v.write(kfh, 0, pattern(5, 30000))
	v.release(kfh)
	if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "doomed"); err != nil {
		t.Fatal(err)
	}
	// The process dies with the handle open: nothing releases it. (Close
	// only commits buffers and stops background work; the orphan record is
	// what a crash leaves behind.)
	v.close()
	kv, err := meta.OpenBadger(v.metaDir, false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := meta.Open(v.ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	o, err := m.Orphans(v.ctx)
	_ = kv.Close()
	if err != nil || !slices.Contains(o, ino) {
		t.Fatalf("orphans before restart: %v, %v; want %d among them", o, err, ino)
	}
	v.open()
	v.waitOrphansReaped(5 * time.Second)
	if _, err := v.f.GetAttr(v.ctx, ino); err != syscall.ENOENT {
		t.Errorf("orphan after restart: getattr %v, want ENOENT", err)
	}
	if got := v.content(keep); !bytes.Equal(got, pattern(5, 30000)) {
		t.Errorf("other file after restart: %s", firstDiff(got, pattern(5, 30000)))
	}
	if st := v.m.Stats(); st.Files != 1 || st.Inodes != 2 || st.Bytes != 30000 {
		t.Errorf("stats after reaping the orphan: %+v", st)
	}
	v.waitStoreMatchesReferences(6 * time.Second)
	_ = fh
}

// TestTmpfile: an O_TMPFILE file is unnamed and freed at its last close,
// unless it is linked into the tree, where it then lives like any file.
func TestTmpfile(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100, onDisk: true})
	before := v.m.Stats()
	// Never linked: gone after the last close, blocks freed.
	a, fh, err := v.f.Tmpfile(v.ctx, &meta.Root, meta.RootIno, 0o600, syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	v.write(fh, 0, pattern(1, 30000))
	v.flush(fh)
	if got := v.read(fh, 0, 30001); !bytes.Equal(got, pattern(1, 30000)) {
		t.Fatalf("tmpfile content: %s", firstDiff(got, pattern(1, 30000)))
	}
	if ents := v.snapshot(); len(ents) != 0 {
		t.Errorf("a tmpfile appears in the tree: %v", ents)
	}
	v.release(fh)
	v.waitGone(a.Ino, 3*time.Second)
	v.waitStoreMatchesReferences(6 * time.Second)
	if st := v.m.Stats(); st != before {
		t.Errorf("stats after an unlinked tmpfile was freed: %+v, before %+v", st, before)
	}

	// O_EXCL: never linkable (open(2)).
	x, fh, err := v.f.Tmpfile(v.ctx, &meta.Root, meta.RootIno, 0o600, syscall.O_RDWR|syscall.O_EXCL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.f.Link(v.ctx, &meta.Root, x.Ino, meta.RootIno, "excl"); err != syscall.ENOENT {
		t.Errorf("linkat of an O_TMPFILE|O_EXCL file: %v, want ENOENT", err)
	}
	v.release(fh)
	v.waitGone(x.Ino, 3*time.Second)

	// Linked: a normal file from then on.
	b, fh, err := v.f.Tmpfile(v.ctx, &meta.Root, meta.RootIno, 0o640, syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	v.write(fh, 0, pattern(2, 20000))
	if _, err := v.f.Link(v.ctx, &meta.Root, b.Ino, meta.RootIno, "named"); err != nil {
		t.Fatalf("linkat of a tmpfile: %v", err)
	}
	if _, err := v.f.Link(v.ctx, &meta.Root, b.Ino, meta.RootIno, "second"); err != nil {
		t.Fatalf("second link of a linked tmpfile: %v", err)
	}
	v.release(fh)
	time.Sleep(100 * time.Millisecond)
	if o, _ := v.m.Orphans(v.ctx); slices.Contains(o, b.Ino) {
		t.Errorf("linked tmpfile is still an orphan")
	}
	if p, err := v.m.Path(v.ctx, b.Ino); err != nil || (p != "/named" && p != "/second") {
		t.Errorf("path of the linked tmpfile: %q, %v", p, err)
	}
	v.reopen(v.opts)
	got, err := v.f.Lookup(v.ctx, &meta.Root, meta.RootIno, "named")
	if err != nil || got.Ino != b.Ino || got.Nlink != 2 || got.Mode != syscall.S_IFREG|0o640 {
		t.Fatalf("linked tmpfile after remount: %+v, %v", got, err)
	}
	if c := v.content(b.Ino); !bytes.Equal(c, pattern(2, 20000)) {
		t.Errorf("linked tmpfile content: %s", firstDiff(c, pattern(2, 20000)))
	}
	if st := v.m.Stats(); st.Files != before.Files+1 || st.Inodes != before.Inodes+1 {
		t.Errorf("stats with one linked tmpfile: %+v, before %+v", st, before)
	}
	// An ordinary unlinked file cannot be linked back.
	if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "named"); err != nil {
		t.Fatal(err)
	}
	if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "second"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.f.Link(v.ctx, &meta.Root, b.Ino, meta.RootIno, "again"); err == nil {
		t.Errorf("an unlinked (formerly tmp) file was linked back")
	}
	v.waitGone(b.Ino, 3*time.Second)
	v.waitStoreMatchesReferences(6 * time.Second)
}

// TestRemovedOpenDirectory: a directory removed while open keeps its inode
// (nlink 0) until released, lists no entries (POSIX: "no new entries may be
// created", and ext4's getdents returns none rather than an error), and
// accepts no new entries.
func TestRemovedOpenDirectory(t *testing.T) {
	v := newVol(t, volConfig{})
	d, err := v.f.Mkdir(v.ctx, &meta.Root, meta.RootIno, "d", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	fh, err := v.f.OpenDirHandle(v.ctx, &meta.Root, d.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.f.Rmdir(v.ctx, &meta.Root, meta.RootIno, "d"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	a, err := v.f.GetAttr(v.ctx, d.Ino)
	if err != nil || a.Nlink != 0 {
		t.Errorf("getattr of the removed open directory: %+v, %v; want nlink 0", a, err)
	}
	n := 0
	if err := v.f.ReadDir(v.ctx, &meta.Root, d.Ino, 0, func(meta.Dirent) bool { n++; return true }); err != nil || n != 0 {
		t.Errorf("readdir of the removed open directory: %d entries, %v; want none and no error", n, err)
	}
	if _, err := v.f.Mkdir(v.ctx, &meta.Root, d.Ino, "x", 0o755); err != syscall.ENOENT {
		t.Errorf("mkdir in the removed directory: %v, want ENOENT", err)
	}
	v.release(fh)
	v.waitGone(d.Ino, 3*time.Second)
	if st := v.m.Stats(); st.Dirs != 1 {
		t.Errorf("stats count %d directories, want 1", st.Dirs)
	}
}

// TestUnlinkClosedFileFreesAtOnce: unlinking (or renaming over) a file
// nothing has open frees it in that transaction itself (nothing waits in the reap queue), and leaves no
// inode marked unopenable.
func TestUnlinkClosedFileFreesAtOnce(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 1000, onDisk: true})
	for _, size := range []int{100, 100000} {
		name := fmt.Sprint("f", size)
		ino, fh := v.create(meta.RootIno, name, syscall.O_RDWR)
		v.write(fh, 0, pattern(1, size))
		v.release(fh)
		if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, name); err != nil {
			t.Fatal(err)
		}
		if _, err := v.m.GetAttr(v.ctx, ino); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("size %d: inode right after the unlink: %v, want ENOENT", size, err)
		}
		if o, _ := v.m.Orphans(v.ctx); len(o) != 0 {
			t.Errorf("size %d: orphan records %v", size, o)
		}
		v.f.mu.Lock()
		if len(v.f.reaping) != 0 {
			t.Errorf("size %d: inodes still marked as being reaped: %v", size, v.f.reaping)
		}
		v.f.mu.Unlock()
	}
	// A rename over a closed file frees it too; over an open one it
	// stays readable through the open handle.
	for _, open := range []bool{false, true} {
		ino, fh := v.create(meta.RootIno, "victim", syscall.O_RDWR)
		model := pattern(2, 5000)
		v.write(fh, 0, model)
		v.flush(fh)
		if !open {
			v.release(fh)
		}
		_, nfh := v.create(meta.RootIno, "new", syscall.O_RDWR)
		v.release(nfh)
		if err := v.f.Rename(v.ctx, &meta.Root, meta.RootIno, "new", meta.RootIno, "victim", 0); err != nil {
			t.Fatal(err)
		}
		_, err := v.m.GetAttr(v.ctx, ino)
		if gone := errors.Is(err, syscall.ENOENT); gone == open {
			t.Errorf("open %v: replaced inode right after the rename: %v", open, err)
		}
		if open {
			if got := v.read(fh, 0, len(model)+10); !bytes.Equal(got, model) {
				t.Errorf("read of the open replaced file: %s", firstDiff(got, model))
			}
			v.release(fh)
			v.waitGone(ino, 3*time.Second)
		}
		if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "victim"); err != nil {
			t.Fatal(err)
		}
	}
	v.waitStoreMatchesReferences(6 * time.Second)
}

// TestUnlinkRacesOpen: an open by inode number (as NFS and FUSE do) racing
// the unlink of the file's last name either fails with ENOENT or gets a
// file it can read in full until it closes it; nothing is left behind.
func TestUnlinkRacesOpen(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 1000, onDisk: true})
	model := pattern(3, 10000)
	opened := 0
	for i := range 200 {
		name := fmt.Sprint("f", i)
		ino, fh := v.create(meta.RootIno, name, syscall.O_RDWR)
		v.write(fh, 0, model)
		v.release(fh)
		type result struct {
			fh  uint64
			err error
		}
		done := make(chan result)
		go func() {
			h, err := v.f.Open(v.ctx, &meta.Root, ino, syscall.O_RDONLY)
			done <- result{h, err}
		}()
		if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, name); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil {
			if !errors.Is(r.err, syscall.ENOENT) {
				t.Fatalf("open racing unlink: %v", r.err)
			}
			continue
		}
		opened++
		if got := v.read(r.fh, 0, len(model)+10); !bytes.Equal(got, model) {
			t.Fatalf("read of a file opened while it was unlinked: %s", firstDiff(got, model))
		}
		v.release(r.fh)
	}
	t.Logf("%d of 200 opens won the race", opened)
	deadline := time.Now().Add(5 * time.Second)
	for {
		o, err := v.m.Orphans(v.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(o) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphans left: %v", o)
		}
		time.Sleep(10 * time.Millisecond)
	}
	v.waitStoreMatchesReferences(6 * time.Second)
}

// TestReapQueueOverflow: a burst of orphans larger than the reaper's queue
// (here: directories removed while the reaper is held up) is still reaped
// without a restart, from the orphan list, and an orphan still open there
// is left alone until its last release.
func TestReapQueueOverflow(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100, onDisk: true})
	held, fh := v.create(meta.RootIno, "held", syscall.O_RDWR)
	model := pattern(7, 20000)
	v.write(fh, 0, model)
	v.flush(fh)
	if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "held"); err != nil {
		t.Fatal(err)
	}
	const dirs = reapQueue + 300
	mkdirs(v, dirs)
	before := v.m.Stats()
	// The reaper takes at most one from its queue: it overflows.
	rmdirsHoldingReaper(v, dirs)
	deadline := time.Now().Add(10 * time.Second)
	for {
		o, err := v.m.Orphans(v.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(o) == 1 && o[0] == held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d orphans listed 10 s after the burst, want only the open file %d", len(o), held)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := v.m.Stats(); st.Inodes != before.Inodes-dirs {
		t.Errorf("inodes after reaping: %d, want %d", st.Inodes, before.Inodes-dirs)
	}
	if got := v.read(fh, 0, len(model)+10); !bytes.Equal(got, model) {
		t.Fatalf("read of the open orphan after the reaper walked the list: %s", firstDiff(got, model))
	}
	v.release(fh)
	v.waitOrphansReaped(5 * time.Second)
	v.waitGone(held, 3*time.Second)
	v.waitStoreMatchesReferences(6 * time.Second)
}

// TestCloseReapsQueuedOrphans: orphans queued when the volume closes (here
// directories removed while the reaper is held up, and a file unlinked
// while open, released last) are freed by Close, not left as orphan
// records for the next start.
func TestCloseReapsQueuedOrphans(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100, onDisk: true})
	const dirs = 200 // fewer than reapQueue: all queued, none left to the list
	mkdirs(v, dirs)
	_, fh := v.create(meta.RootIno, "open", syscall.O_RDWR)
	v.write(fh, 0, pattern(3, 20000))
	v.flush(fh)
	if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "open"); err != nil {
		t.Fatal(err)
	}
	before := v.m.Stats()
	rmdirsHoldingReaper(v, dirs)
	v.release(fh)
	v.close()

	kv, err := meta.OpenBadger(v.metaDir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	m, err := meta.Open(v.ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if o, err := m.Orphans(v.ctx); err != nil || len(o) != 0 {
		t.Errorf("orphans after a clean close: %d (%v), want none", len(o), err)
	}
	if st := m.Stats(); st.Inodes != before.Inodes-dirs-1 || st.Bytes != before.Bytes-20000 {
		t.Errorf("stats after close: %d inodes, %d bytes; want %d, %d", st.Inodes, st.Bytes, before.Inodes-dirs-1, before.Bytes-20000)
	}
}

// mkdirs makes directories d0 ... d(n-1) in the root.
func mkdirs(v *testVol, n int) {
	v.t.Helper()
	for i := range n {
		if _, err := v.f.Mkdir(v.ctx, &meta.Root, meta.RootIno, fmt.Sprint("d", i), 0o755); err != nil {
			v.t.Fatal(err)
		}
	}
}

// rmdirsHoldingReaper removes what mkdirs made while the reaper cannot
// free any of the orphans: it needs f.mu for every inode it takes, and
// rmdir does not, so it takes at most one from its queue meanwhile.
func rmdirsHoldingReaper(v *testVol, n int) {
	v.t.Helper()
	v.f.mu.Lock()
	defer v.f.mu.Unlock()
	for i := range n {
		if err := v.f.Rmdir(v.ctx, &meta.Root, meta.RootIno, fmt.Sprint("d", i)); err != nil {
			v.t.Fatal(err)
		}
	}
}
