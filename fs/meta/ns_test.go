package meta

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMknodEveryType(t *testing.T) {
	v := newVolume(t, nil)
	v.openRoot()
	types := []struct {
		name  string
		mode  uint32
		rdev  uint32
		files int64
		dirs  int64
	}{
		{"reg", syscall.S_IFREG | 0o640, 0, 1, 0},
		{"dir", syscall.S_IFDIR | 0o750, 0, 0, 1},
		{"lnk", syscall.S_IFLNK | 0o777, 0, 0, 0},
		{"fifo", syscall.S_IFIFO | 0o600, 0, 0, 0},
		{"sock", syscall.S_IFSOCK | 0o600, 0, 0, 0},
		{"chr", syscall.S_IFCHR | 0o600, 0x0103, 0, 0},
		{"blk", syscall.S_IFBLK | 0o600, 0x0801, 0, 0},
	}
	seen := map[uint64]bool{}
	for _, tc := range types {
		t.Run(tc.name, func(t *testing.T) {
			before := v.m.Stats()
			rootBefore := v.attr(RootIno)
			n := NewNode{Mode: tc.mode, Rdev: tc.rdev}
			if tc.mode&syscall.S_IFMT == syscall.S_IFLNK {
				n.Target = "../some/where"
			}
			a, err := v.m.Mknod(v.ctx, &alice, RootIno, tc.name, n)
			if err != nil {
				t.Fatalf("mknod: %v", err)
			}
			if seen[a.Ino] || a.Ino == RootIno {
				t.Fatalf("inode number %d reused", a.Ino)
			}
			seen[a.Ino] = true
			got := v.mustLookup(RootIno, tc.name)
			if got.Ino != a.Ino || got.Mode != tc.mode || got.Rdev != tc.rdev || got.Uid != alice.Uid || got.Gid != alice.Gid {
				t.Errorf("lookup gives ino %d mode %o rdev %x uid %d gid %d; want ino %d mode %o rdev %x uid %d gid %d",
					got.Ino, got.Mode, got.Rdev, got.Uid, got.Gid, a.Ino, tc.mode, tc.rdev, alice.Uid, alice.Gid)
			}
			wantNlink := uint32(1)
			if tc.dirs == 1 {
				wantNlink = 2
			}
			if got.Nlink != wantNlink {
				t.Errorf("nlink %d, want %d", got.Nlink, wantNlink)
			}
			if got.Parent != RootIno {
				t.Errorf("parent %d, want root", got.Parent)
			}
			if tc.mode&syscall.S_IFMT == syscall.S_IFLNK {
				target, err := v.m.Readlink(v.ctx, a.Ino)
				if err != nil || target != "../some/where" {
					t.Errorf("readlink = %q, %v", target, err)
				}
				if got.Size != uint64(len("../some/where")) {
					t.Errorf("symlink size %d, want %d", got.Size, len("../some/where"))
				}
			} else if _, err := v.m.Readlink(v.ctx, a.Ino); err != syscall.EINVAL {
				t.Errorf("readlink of a non-symlink: %v, want EINVAL", err)
			}
			rootAfter := v.attr(RootIno)
			if rootAfter.Nlink != rootBefore.Nlink+uint32(tc.dirs) {
				t.Errorf("root nlink %d -> %d, want +%d", rootBefore.Nlink, rootAfter.Nlink, tc.dirs)
			}
			if rootAfter.Mtime < rootBefore.Mtime || rootAfter.Mtime == rootBefore.Mtime && rootAfter.Ctime == rootBefore.Ctime {
				t.Errorf("parent mtime/ctime not updated by mknod")
			}
			after := v.m.Stats()
			want := before
			want.Inodes++
			want.Files += tc.files
			want.Dirs += tc.dirs
			if after != want {
				t.Errorf("stats %+v, want %+v", after, want)
			}
			// The same name again is EEXIST, whatever the type.
			_, err = v.m.Mknod(v.ctx, &alice, RootIno, tc.name, NewNode{Mode: syscall.S_IFREG | 0o644})
			wantErrno(t, "mknod existing name", err, syscall.EEXIST)
		})
	}
	v.checkTree()
}

func TestMknodErrors(t *testing.T) {
	v := newVolume(t, nil)
	file := v.mkfile(RootIno, "file")
	closed := v.mknod(Root, RootIno, "closed", syscall.S_IFDIR|0o755) // owned by root, no write for others
	open := v.mknod(Root, RootIno, "open", syscall.S_IFDIR|0o777)
	noexec := v.mknod(Root, RootIno, "noexec", syscall.S_IFDIR|0o766)
	aliceDir := v.mknod(alice, open.Ino, "alice", syscall.S_IFDIR|0o500) // owner without write
	gone := v.mkdir(RootIno, "gone")
	if _, err := v.m.Rmdir(v.ctx, &Root, RootIno, "gone"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		c      Caller
		parent uint64
		child  string
		node   NewNode
		want   syscall.Errno
	}{
		{"name 255 bytes ok", Root, RootIno, strings.Repeat("a", 255), NewNode{Mode: syscall.S_IFREG | 0o644}, 0},
		{"name 256 bytes", Root, RootIno, strings.Repeat("b", 256), NewNode{Mode: syscall.S_IFREG | 0o644}, syscall.ENAMETOOLONG},
		{"dir name 256 bytes", Root, RootIno, strings.Repeat("c", 256), NewNode{Mode: syscall.S_IFDIR | 0o755}, syscall.ENAMETOOLONG},
		{"parent is a file", Root, file.Ino, "x", NewNode{Mode: syscall.S_IFREG | 0o644}, syscall.ENOTDIR},
		{"parent missing", Root, 999999, "x", NewNode{Mode: syscall.S_IFREG | 0o644}, syscall.ENOENT},
		{"parent removed", Root, gone.Ino, "x", NewNode{Mode: syscall.S_IFREG | 0o644}, syscall.ENOENT},
		{"dot", Root, RootIno, ".", NewNode{Mode: syscall.S_IFDIR | 0o755}, syscall.EEXIST},
		{"dotdot", Root, RootIno, "..", NewNode{Mode: syscall.S_IFREG | 0o644}, syscall.EEXIST},
		{"slash in name", Root, RootIno, "a/b", NewNode{Mode: syscall.S_IFREG | 0o644}, syscall.EINVAL},
		{"empty name", Root, RootIno, "", NewNode{Mode: syscall.S_IFREG | 0o644}, syscall.EINVAL},
		{"no type", Root, RootIno, "notype", NewNode{Mode: 0o644}, syscall.EINVAL},
		{"symlink without target", Root, RootIno, "l0", NewNode{Mode: syscall.S_IFLNK | 0o777}, syscall.ENOENT},
		{"symlink target 4096", Root, RootIno, "l1", NewNode{Mode: syscall.S_IFLNK | 0o777, Target: strings.Repeat("t", 4096)}, syscall.ENAMETOOLONG},
		{"non-root, no write on parent", alice, closed.Ino, "x", NewNode{Mode: syscall.S_IFREG | 0o644}, syscall.EACCES},
		{"non-root, no exec on parent", alice, noexec.Ino, "x", NewNode{Mode: syscall.S_IFREG | 0o644}, syscall.EACCES},
		{"owner without write bit", alice, aliceDir.Ino, "x", NewNode{Mode: syscall.S_IFREG | 0o644}, syscall.EACCES},
		{"non-root, world-writable parent", bob, open.Ino, "bobs", NewNode{Mode: syscall.S_IFREG | 0o644}, 0},
		{"root ignores permission bits", Root, aliceDir.Ino, "rootfile", NewNode{Mode: syscall.S_IFREG | 0o644}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := v.m.Stats()
			a, err := v.m.Mknod(v.ctx, &tc.c, tc.parent, tc.child, tc.node)
			wantErrno(t, "mknod", err, tc.want)
			if tc.want != 0 {
				if a != nil {
					t.Errorf("failed mknod returned an inode %+v", a)
				}
				if after := v.m.Stats(); after != before {
					t.Errorf("failed mknod changed stats %+v -> %+v", before, after)
				}
				if len(tc.child) <= MaxNameLen && tc.child != "." && tc.child != ".." && tc.child != "" {
					if _, err := v.m.Lookup(v.ctx, &Root, tc.parent, tc.child); err == nil {
						t.Errorf("failed mknod left an entry %q", tc.child)
					}
				}
			}
		})
	}
	v.checkTree()
}

func TestMknodSetgidInheritance(t *testing.T) {
	v := newVolume(t, nil)
	// mkdir(2) never sets setgid from the mode (below): chmod does.
	sg := v.mknod(Root, RootIno, "sg", syscall.S_IFDIR|0o777)
	if _, err := v.m.SetAttr(v.ctx, &Root, sg.Ino, SetAttrIn{Valid: SetGid | SetMode, Gid: 500, Mode: syscall.S_ISGID | 0o777}); err != nil {
		t.Fatal(err)
	}
	if a := v.attr(sg.Ino); a.Gid != 500 || a.Mode&syscall.S_ISGID == 0 {
		t.Fatalf("setup: gid %d mode %o", a.Gid, a.Mode)
	}
	member := Caller{Uid: 1000, Gid: 1000, Groups: []uint32{500}}
	tests := []struct {
		name     string
		c        Caller
		mode     uint32
		wantGid  uint32
		wantMode uint32
	}{
		{"file gets dir's group", alice, syscall.S_IFREG | 0o644, 500, syscall.S_IFREG | 0o644},
		{"subdir gets group and setgid", alice, syscall.S_IFDIR | 0o755, 500, syscall.S_IFDIR | syscall.S_ISGID | 0o755},
		{"setgid file by non-member loses setgid", alice, syscall.S_IFREG | syscall.S_ISGID | 0o755, 500, syscall.S_IFREG | 0o755},
		{"setgid file by member keeps setgid", member, syscall.S_IFREG | syscall.S_ISGID | 0o755, 500, syscall.S_IFREG | syscall.S_ISGID | 0o755},
		{"setgid file by root keeps setgid", Root, syscall.S_IFREG | syscall.S_ISGID | 0o755, 500, syscall.S_IFREG | syscall.S_ISGID | 0o755},
		{"fifo gets group", alice, syscall.S_IFIFO | 0o600, 500, syscall.S_IFIFO | 0o600},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := "n" + string(rune('a'+i))
			a := v.mknod(tc.c, sg.Ino, name, tc.mode)
			got := v.mustLookup(sg.Ino, name)
			for _, x := range []*Attr{a, got} {
				if x.Gid != tc.wantGid || x.Mode != tc.wantMode || x.Uid != tc.c.Uid {
					t.Errorf("uid %d gid %d mode %o; want uid %d gid %d mode %o", x.Uid, x.Gid, x.Mode, tc.c.Uid, tc.wantGid, tc.wantMode)
				}
			}
		})
	}
	// Without setgid on the parent, the creator's group is used.
	plain := v.mknod(Root, RootIno, "plain", syscall.S_IFDIR|0o777)
	a := v.mknod(alice, plain.Ino, "f", syscall.S_IFREG|0o644)
	if a.Gid != alice.Gid {
		t.Errorf("file in a plain directory has gid %d, want the creator's %d", a.Gid, alice.Gid)
	}
	// A directory gets neither setuid nor setgid from the mode asked
	// for (vfs_mkdir keeps the permission and sticky bits); an NFS MKDIR
	// passes the client's mode on.
	for _, c := range []Caller{Root, alice} {
		d := v.mknod(c, plain.Ino, fmt.Sprintf("d%d", c.Uid), syscall.S_IFDIR|syscall.S_ISUID|syscall.S_ISGID|syscall.S_ISVTX|0o755)
		if d.Mode != syscall.S_IFDIR|syscall.S_ISVTX|0o755 {
			t.Errorf("mkdir by uid %d with mode 07755 in a plain directory: mode %o, want 41755", c.Uid, d.Mode)
		}
	}
	v.checkTree()
}

func TestLink(t *testing.T) {
	v := newVolume(t, nil)
	d1 := v.mkdir(RootIno, "d1")
	d2 := v.mkdir(RootIno, "d2")
	f := v.mkfile(d1.Ino, "f")
	ro := v.mknod(Root, RootIno, "ro", syscall.S_IFDIR|0o755)
	gone := v.mkfile(RootIno, "gone")
	if _, err := v.m.Unlink(v.ctx, &Root, RootIno, "gone"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		c         Caller
		ino       uint64
		parent    uint64
		newName   string
		want      syscall.Errno
		wantNlink uint32
	}{
		{"second link other dir", Root, f.Ino, d2.Ino, "f2", 0, 2},
		{"third link same dir", Root, f.Ino, d1.Ino, "f3", 0, 3},
		{"existing name", Root, f.Ino, d2.Ino, "f2", syscall.EEXIST, 3},
		{"link to a directory", Root, d1.Ino, d2.Ino, "dirlink", syscall.EPERM, 3},
		{"link to the root", Root, RootIno, d2.Ino, "rootlink", syscall.EPERM, 3},
		{"link of an unlinked inode", Root, gone.Ino, d2.Ino, "zombie", syscall.ENOENT, 3},
		{"into a file", Root, f.Ino, f.Ino, "x", syscall.ENOTDIR, 3},
		{"name too long", Root, f.Ino, d2.Ino, strings.Repeat("n", 256), syscall.ENAMETOOLONG, 3},
		{"dot", Root, f.Ino, d2.Ino, ".", syscall.EEXIST, 3},
		{"non-root without write on dir", alice, f.Ino, ro.Ino, "x", syscall.EACCES, 3},
		{"missing inode", Root, 987654, d2.Ino, "x", syscall.ENOENT, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctimeBefore := v.attr(f.Ino).Ctime
			a, err := v.m.Link(v.ctx, &tc.c, tc.ino, tc.parent, tc.newName)
			wantErrno(t, "link", err, tc.want)
			if got := v.attr(f.Ino).Nlink; got != tc.wantNlink {
				t.Errorf("nlink of f is %d, want %d", got, tc.wantNlink)
			}
			if tc.want == 0 {
				if a.Nlink != tc.wantNlink {
					t.Errorf("link returned nlink %d, want %d", a.Nlink, tc.wantNlink)
				}
				if l := v.mustLookup(tc.parent, tc.newName); l.Ino != f.Ino {
					t.Errorf("new name resolves to %d, want %d", l.Ino, f.Ino)
				}
				if v.attr(f.Ino).Ctime == ctimeBefore {
					t.Errorf("link did not change ctime")
				}
			}
		})
	}
	if d := v.attr(d1.Ino); d.Nlink != 2 {
		t.Errorf("d1 nlink %d after links, want 2 (hard links to files do not count)", d.Nlink)
	}
	// Every name unlinked but the last leaves no orphan; the last does.
	for i, name := range []struct {
		dir  uint64
		name string
	}{{d1.Ino, "f"}, {d2.Ino, "f2"}, {d1.Ino, "f3"}} {
		a, err := v.m.Unlink(v.ctx, &Root, name.dir, name.name)
		if err != nil {
			t.Fatalf("unlink %s: %v", name.name, err)
		}
		if want := uint32(2 - i); a.Nlink != want {
			t.Errorf("after unlinking %s nlink %d, want %d", name.name, a.Nlink, want)
		}
		if i < 2 {
			if p := v.path(f.Ino); !strings.HasSuffix(p, "/f2") && !strings.HasSuffix(p, "/f3") && !strings.HasSuffix(p, "/f") {
				t.Errorf("path of a linked file = %q", p)
			}
			if slices.Contains(v.orphans(), f.Ino) {
				t.Errorf("inode with links left is an orphan")
			}
		}
	}
	if !slices.Contains(v.orphans(), f.Ino) {
		t.Errorf("inode without links is not an orphan: %v", v.orphans())
	}
	v.reapAll()
	v.checkTree()
}

func TestUnlink(t *testing.T) {
	v := newVolume(t, nil)
	d := v.mkdir(RootIno, "d")
	f := v.mkfile(d.Ino, "f")
	sym := v.mknod(Root, d.Ino, "sym", syscall.S_IFLNK|0o777)
	fifo := v.mknod(Root, d.Ino, "fifo", syscall.S_IFIFO|0o600)
	sub := v.mkdir(d.Ino, "sub")
	ro := v.mknod(Root, RootIno, "ro", syscall.S_IFDIR|0o755)
	v.mkfile(ro.Ino, "x")
	tests := []struct {
		name   string
		c      Caller
		parent uint64
		child  string
		want   syscall.Errno
		ino    uint64
	}{
		{"directory", Root, d.Ino, "sub", syscall.EISDIR, sub.Ino},
		{"missing", Root, d.Ino, "nope", syscall.ENOENT, 0},
		{"too long", Root, d.Ino, strings.Repeat("z", 256), syscall.ENAMETOOLONG, 0},
		{"parent is a file", Root, f.Ino, "x", syscall.ENOTDIR, 0},
		{"no write permission", alice, ro.Ino, "x", syscall.EACCES, 0},
		{"file", Root, d.Ino, "f", 0, f.Ino},
		{"symlink", Root, d.Ino, "sym", 0, sym.Ino},
		{"fifo", Root, d.Ino, "fifo", 0, fifo.Ino},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := v.attr(d.Ino)
			a, err := v.m.Unlink(v.ctx, &tc.c, tc.parent, tc.child)
			wantErrno(t, "unlink", err, tc.want)
			if tc.want != 0 {
				return
			}
			if a.Ino != tc.ino || a.Nlink != 0 {
				t.Errorf("unlink returned ino %d nlink %d, want ino %d nlink 0", a.Ino, a.Nlink, tc.ino)
			}
			if _, err := v.lookup(tc.parent, tc.child); err != syscall.ENOENT {
				t.Errorf("lookup after unlink: %v, want ENOENT", err)
			}
			if !slices.Contains(v.orphans(), tc.ino) {
				t.Errorf("unlinked inode %d is not in Orphans %v", tc.ino, v.orphans())
			}
			// The inode stays (it may be open) until reaped.
			if got, err := v.m.GetAttr(v.ctx, tc.ino); err != nil || got.Nlink != 0 {
				t.Errorf("orphan getattr: %+v, %v", got, err)
			}
			after := v.attr(d.Ino)
			if after.Nlink != before.Nlink {
				t.Errorf("parent nlink %d -> %d on unlink of a non-directory", before.Nlink, after.Nlink)
			}
			if after.Mtime == before.Mtime {
				t.Errorf("parent mtime unchanged")
			}
		})
	}
	stats := v.m.Stats()
	v.reapAll()
	if got := v.m.Stats(); got.Inodes != stats.Inodes-3 || got.Files != stats.Files-1 {
		t.Errorf("reaping 3 orphans (1 file): stats %+v -> %+v", stats, got)
	}
	for _, ino := range []uint64{f.Ino, sym.Ino, fifo.Ino} {
		if _, err := v.m.GetAttr(v.ctx, ino); err != syscall.ENOENT {
			t.Errorf("reaped inode %d: getattr %v, want ENOENT", ino, err)
		}
	}
	v.checkTree()
}

func TestRmdir(t *testing.T) {
	v := newVolume(t, nil)
	d := v.mkdir(RootIno, "d")
	full := v.mkdir(d.Ino, "full")
	v.mkfile(full.Ino, "f")
	withDir := v.mkdir(d.Ino, "withdir")
	v.mkdir(withDir.Ino, "inner")
	empty := v.mkdir(d.Ino, "empty")
	v.mkfile(d.Ino, "file")
	ro := v.mknod(Root, RootIno, "ro", syscall.S_IFDIR|0o755)
	v.mkdir(ro.Ino, "x")
	tests := []struct {
		name      string
		c         Caller
		parent    uint64
		child     string
		want      syscall.Errno
		nlinkDiff int // change of the parent's nlink
	}{
		{"not empty (file)", Root, d.Ino, "full", syscall.ENOTEMPTY, 0},
		{"not empty (dir)", Root, d.Ino, "withdir", syscall.ENOTEMPTY, 0},
		{"a file", Root, d.Ino, "file", syscall.ENOTDIR, 0},
		{"dot", Root, d.Ino, ".", syscall.EINVAL, 0},
		{"dotdot", Root, d.Ino, "..", syscall.ENOTEMPTY, 0},
		{"missing", Root, d.Ino, "nope", syscall.ENOENT, 0},
		{"too long", Root, d.Ino, strings.Repeat("y", 256), syscall.ENAMETOOLONG, 0},
		{"no permission", alice, ro.Ino, "x", syscall.EACCES, 0},
		{"empty", Root, d.Ino, "empty", 0, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parent := v.attr(tc.parent)
			a, err := v.m.Rmdir(v.ctx, &tc.c, tc.parent, tc.child)
			wantErrno(t, "rmdir", err, tc.want)
			if got := v.attr(tc.parent); int(got.Nlink)-int(parent.Nlink) != tc.nlinkDiff {
				t.Errorf("parent nlink %d -> %d, want change %d", parent.Nlink, got.Nlink, tc.nlinkDiff)
			}
			if tc.want != 0 {
				return
			}
			if a.Ino != empty.Ino || a.Nlink != 0 {
				t.Errorf("rmdir returned ino %d nlink %d, want %d, 0", a.Ino, a.Nlink, empty.Ino)
			}
			if !slices.Contains(v.orphans(), empty.Ino) {
				t.Errorf("removed directory not in Orphans")
			}
			// A removed directory accepts no new entries.
			_, err = v.m.Mknod(v.ctx, &Root, empty.Ino, "late", NewNode{Mode: syscall.S_IFREG | 0o644})
			wantErrno(t, "mknod in removed dir", err, syscall.ENOENT)
		})
	}
	v.reapAll()
	c := v.checkTree()
	if st := v.m.Stats(); st.Dirs != c.dirs {
		t.Errorf("stats count %d directories, the tree has %d", st.Dirs, c.dirs)
	}
}

// renameFixture is a small tree the rename cases start from:
//
//	/a/f      file "f" (ino fa)
//	/a/sub/   directory
//	/a/sub/x  file
//	/b/g      file
//	/b/empty/ directory
//	/b/full/  directory with /b/full/y
//	/b/h      second link of /a/f
type renameFixture struct {
	v                                  *testVolume
	a, b, f, sub, x, g, empty, full, y *Attr
}

func newRenameFixture(t *testing.T) *renameFixture {
	t.Helper()
	v := newVolume(t, nil)
	r := &renameFixture{v: v}
	r.a = v.mkdir(RootIno, "a")
	r.b = v.mkdir(RootIno, "b")
	r.f = v.mkfile(r.a.Ino, "f")
	r.sub = v.mkdir(r.a.Ino, "sub")
	r.x = v.mkfile(r.sub.Ino, "x")
	r.g = v.mkfile(r.b.Ino, "g")
	r.empty = v.mkdir(r.b.Ino, "empty")
	r.full = v.mkdir(r.b.Ino, "full")
	r.y = v.mkfile(r.full.Ino, "y")
	if _, err := v.m.Link(v.ctx, &Root, r.f.Ino, r.b.Ino, "h"); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *renameFixture) dir(name string) uint64 {
	switch name {
	case "/":
		return RootIno
	case "a":
		return r.a.Ino
	case "b":
		return r.b.Ino
	case "sub":
		return r.sub.Ino
	case "full":
		return r.full.Ino
	case "empty":
		return r.empty.Ino
	}
	panic("unknown dir " + name)
}

func TestRename(t *testing.T) {
	type names map[string]string // path -> name of the fixture inode expected there ("" = absent)
	tests := []struct {
		name       string
		from, to   [2]string // dir, name
		flags      uint32
		want       syscall.Errno
		replaced   string // fixture inode that lost its last link
		after      names
		nlinkAfter map[string]uint32 // fixture dir -> nlink
	}{
		{name: "same name no-op", from: [2]string{"a", "f"}, to: [2]string{"a", "f"},
			after: names{"/a/f": "f"}, nlinkAfter: map[string]uint32{"a": 3}},
		{name: "file to new name same dir", from: [2]string{"a", "f"}, to: [2]string{"a", "f2"},
			after: names{"/a/f": "", "/a/f2": "f", "/b/h": "f"}},
		{name: "file across dirs", from: [2]string{"a", "f"}, to: [2]string{"b", "moved"},
			after: names{"/a/f": "", "/b/moved": "f"}},
		{name: "file over file", from: [2]string{"b", "g"}, to: [2]string{"a", "f"},
			after: names{"/a/f": "g", "/b/g": "", "/b/h": "f"}},
		{name: "file over file drops last link", from: [2]string{"a", "f"}, to: [2]string{"b", "g"},
			replaced: "g", after: names{"/b/g": "f", "/a/f": ""}},
		{name: "dir over empty dir across parents", from: [2]string{"a", "sub"}, to: [2]string{"b", "empty"},
			replaced: "empty", after: names{"/b/empty": "sub", "/b/empty/x": "x", "/a/sub": ""},
			nlinkAfter: map[string]uint32{"a": 2, "b": 4}},
		{name: "dir over empty dir same parent", from: [2]string{"b", "full"}, to: [2]string{"b", "empty"},
			replaced: "empty", after: names{"/b/empty": "full", "/b/empty/y": "y", "/b/full": ""},
			nlinkAfter: map[string]uint32{"b": 3}},
		{name: "dir over non-empty dir", from: [2]string{"a", "sub"}, to: [2]string{"b", "full"}, want: syscall.ENOTEMPTY,
			after: names{"/a/sub": "sub", "/b/full": "full"}},
		{name: "dir over file", from: [2]string{"a", "sub"}, to: [2]string{"b", "g"}, want: syscall.ENOTDIR,
			after: names{"/a/sub": "sub", "/b/g": "g"}},
		{name: "file over dir", from: [2]string{"b", "g"}, to: [2]string{"b", "empty"}, want: syscall.EISDIR,
			after: names{"/b/g": "g", "/b/empty": "empty"}},
		{name: "dir into itself", from: [2]string{"/", "a"}, to: [2]string{"a", "a2"}, want: syscall.EINVAL,
			after: names{"/a": "a"}},
		{name: "dir into own subtree", from: [2]string{"/", "a"}, to: [2]string{"sub", "a2"}, want: syscall.EINVAL,
			after: names{"/a": "a", "/a/sub": "sub"}},
		{name: "dir across parents", from: [2]string{"a", "sub"}, to: [2]string{"b", "sub2"},
			after:      names{"/b/sub2": "sub", "/b/sub2/x": "x", "/a/sub": ""},
			nlinkAfter: map[string]uint32{"a": 2, "b": 5}},
		{name: "dir up to root", from: [2]string{"a", "sub"}, to: [2]string{"/", "top"},
			after: names{"/top": "sub", "/top/x": "x"}, nlinkAfter: map[string]uint32{"a": 2, "/": 5}},
		{name: "noreplace existing", from: [2]string{"a", "f"}, to: [2]string{"b", "g"}, flags: RenameNoReplace, want: syscall.EEXIST,
			after: names{"/a/f": "f", "/b/g": "g"}},
		{name: "noreplace same name", from: [2]string{"a", "f"}, to: [2]string{"a", "f"}, flags: RenameNoReplace, want: syscall.EEXIST,
			after: names{"/a/f": "f"}},
		{name: "noreplace new name", from: [2]string{"a", "f"}, to: [2]string{"b", "new"}, flags: RenameNoReplace,
			after: names{"/b/new": "f", "/a/f": ""}},
		{name: "exchange missing target", from: [2]string{"a", "f"}, to: [2]string{"b", "nope"}, flags: RenameExchange, want: syscall.ENOENT,
			after: names{"/a/f": "f", "/b/nope": ""}},
		{name: "exchange missing source", from: [2]string{"a", "nope"}, to: [2]string{"b", "g"}, flags: RenameExchange, want: syscall.ENOENT,
			after: names{"/b/g": "g"}},
		{name: "exchange file and dir across parents", from: [2]string{"a", "f"}, to: [2]string{"b", "full"}, flags: RenameExchange,
			after:      names{"/a/f": "full", "/a/f/y": "y", "/b/full": "f"},
			nlinkAfter: map[string]uint32{"a": 4, "b": 3, "full": 2}},
		{name: "exchange dir and file across parents", from: [2]string{"a", "sub"}, to: [2]string{"b", "g"}, flags: RenameExchange,
			after:      names{"/a/sub": "g", "/b/g": "sub", "/b/g/x": "x"},
			nlinkAfter: map[string]uint32{"a": 2, "b": 5}},
		{name: "exchange two dirs", from: [2]string{"a", "sub"}, to: [2]string{"b", "full"}, flags: RenameExchange,
			after:      names{"/a/sub": "full", "/a/sub/y": "y", "/b/full": "sub", "/b/full/x": "x"},
			nlinkAfter: map[string]uint32{"a": 3, "b": 4}},
		{name: "exchange same dir", from: [2]string{"b", "g"}, to: [2]string{"b", "empty"}, flags: RenameExchange,
			after: names{"/b/g": "empty", "/b/empty": "g"}, nlinkAfter: map[string]uint32{"b": 4}},
		{name: "exchange dir with its own child", from: [2]string{"/", "a"}, to: [2]string{"a", "sub"}, flags: RenameExchange, want: syscall.EINVAL,
			after: names{"/a": "a", "/a/sub": "sub"}},
		{name: "exchange child with its parent", from: [2]string{"a", "sub"}, to: [2]string{"/", "a"}, flags: RenameExchange, want: syscall.EINVAL,
			after: names{"/a": "a", "/a/sub": "sub"}},
		{name: "both flags", from: [2]string{"a", "f"}, to: [2]string{"b", "g"}, flags: RenameExchange | RenameNoReplace, want: syscall.EINVAL,
			after: names{"/a/f": "f", "/b/g": "g"}},
		{name: "whiteout unsupported", from: [2]string{"a", "f"}, to: [2]string{"b", "w"}, flags: RenameWhiteout, want: syscall.EINVAL,
			after: names{"/a/f": "f"}},
		{name: "hard links to one inode", from: [2]string{"a", "f"}, to: [2]string{"b", "h"},
			after: names{"/a/f": "f", "/b/h": "f"}},
		{name: "source missing", from: [2]string{"a", "nope"}, to: [2]string{"b", "x"}, want: syscall.ENOENT},
		{name: "slash in new name", from: [2]string{"a", "f"}, to: [2]string{"b", "g/x"}, want: syscall.EINVAL,
			after: names{"/a/f": "f"}},
		{name: "new name too long", from: [2]string{"a", "f"}, to: [2]string{"b", strings.Repeat("l", 256)}, want: syscall.ENAMETOOLONG,
			after: names{"/a/f": "f"}},
		{name: "source missing, new name too long", from: [2]string{"a", "nope"}, to: [2]string{"b", strings.Repeat("l", 256)}, want: syscall.ENOENT},
		{name: "source name too long", from: [2]string{"a", strings.Repeat("l", 256)}, to: [2]string{"b", "x"}, want: syscall.ENAMETOOLONG},
		// The target holds the source (Linux's rename "trap"): ENOTEMPTY
		// before any type check, also for a file; EINVAL for an exchange.
		{name: "file onto an ancestor of its directory", from: [2]string{"sub", "x"}, to: [2]string{"/", "a"}, want: syscall.ENOTEMPTY,
			after: names{"/a/sub/x": "x", "/a": "a"}},
		{name: "file onto its own directory", from: [2]string{"a", "f"}, to: [2]string{"/", "a"}, want: syscall.ENOTEMPTY,
			after: names{"/a/f": "f", "/a": "a"}},
		{name: "exchange file with an ancestor", from: [2]string{"sub", "x"}, to: [2]string{"/", "a"}, flags: RenameExchange, want: syscall.EINVAL,
			after: names{"/a/sub/x": "x", "/a": "a"}},
		{name: "dot source", from: [2]string{"a", "."}, to: [2]string{"b", "x"}, want: syscall.EBUSY},
		{name: "dotdot target", from: [2]string{"a", "f"}, to: [2]string{"b", ".."}, want: syscall.EBUSY},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRenameFixture(t)
			v := r.v
			byName := map[string]uint64{"a": r.a.Ino, "b": r.b.Ino, "f": r.f.Ino, "sub": r.sub.Ino, "x": r.x.Ino,
				"g": r.g.Ino, "empty": r.empty.Ino, "full": r.full.Ino, "y": r.y.Ino}
			// What the two names name before: a rename that does
			// something changes the one it moves and the one it
			// replaces or exchanges, and reports both (Changed).
			named := func(dir uint64, name string) uint64 {
				if a, err := v.lookup(dir, name); err == nil && name != "." && name != ".." {
					return a.Ino
				}
				return 0
			}
			srcIno, dstIno := named(r.dir(tc.from[0]), tc.from[1]), named(r.dir(tc.to[0]), tc.to[1])
			var wantChanged []uint64
			if tc.want == 0 && srcIno != dstIno {
				wantChanged = append(wantChanged, srcIno)
				if dstIno != 0 {
					wantChanged = append(wantChanged, dstIno)
				}
			}
			res, err := v.m.RenameFreeing(v.ctx, &Root, r.dir(tc.from[0]), tc.from[1], r.dir(tc.to[0]), tc.to[1], tc.flags, nil)
			wantErrno(t, "rename", err, tc.want)
			if got := res.Changed(); !slices.Equal(got, wantChanged) {
				t.Errorf("rename reports inodes %v changed, want %v", got, wantChanged)
			}
			replaced := res.Replaced
			switch {
			case tc.replaced == "" && replaced != nil && replaced.Nlink == 0:
				t.Errorf("rename reports inode %d lost its last link, want none", replaced.Ino)
			case tc.replaced != "" && (replaced == nil || replaced.Ino != byName[tc.replaced] || replaced.Nlink != 0):
				t.Errorf("rename reports replaced %+v, want inode %d with nlink 0", replaced, byName[tc.replaced])
			}
			if tc.replaced != "" && !slices.Contains(v.orphans(), byName[tc.replaced]) {
				t.Errorf("replaced inode is not an orphan")
			}
			if tc.replaced == "" && len(v.orphans()) != 0 {
				t.Errorf("orphans %v, want none", v.orphans())
			}
			for p, who := range tc.after {
				got := v.resolve(p)
				if got != byName[who] {
					t.Errorf("%s resolves to inode %d, want %q (%d)", p, got, who, byName[who])
				}
				if who != "" {
					if path := v.path(byName[who]); who != "f" && path != p {
						t.Errorf("Path(%s) = %q, want %q", who, path, p)
					}
					if a := v.attr(byName[who]); a.IsDir() {
						dir := p[:strings.LastIndexByte(p, '/')]
						if dir == "" {
							dir = "/"
						}
						if a.Parent != v.resolve(dir) {
							t.Errorf("directory %s has Parent %d, want %d", p, a.Parent, v.resolve(dir))
						}
					}
				}
			}
			byName["/"] = RootIno
			for d, n := range tc.nlinkAfter {
				if got := v.attr(byName[d]); got.Nlink != n {
					t.Errorf("nlink of %s is %d, want %d", d, got.Nlink, n)
				}
			}
			v.reapAll()
			v.checkTree()
		})
	}
}

func TestRenameTimes(t *testing.T) {
	r := newRenameFixture(t)
	v := r.v
	a0, b0, f0 := v.attr(r.a.Ino), v.attr(r.b.Ino), v.attr(r.f.Ino)
	time.Sleep(time.Microsecond)
	if _, err := v.m.Rename(v.ctx, &Root, r.a.Ino, "f", r.b.Ino, "f", 0); err != nil {
		t.Fatal(err)
	}
	a1, b1, f1 := v.attr(r.a.Ino), v.attr(r.b.Ino), v.attr(r.f.Ino)
	if a1.Mtime <= a0.Mtime || b1.Mtime <= b0.Mtime || a1.Ctime <= a0.Ctime || b1.Ctime <= b0.Ctime {
		t.Errorf("rename did not update both parents' mtime and ctime")
	}
	if f1.Ctime <= f0.Ctime {
		t.Errorf("rename did not update the moved inode's ctime")
	}
	if f1.Mtime != f0.Mtime {
		t.Errorf("rename changed the moved file's mtime")
	}
}

func TestRenameSticky(t *testing.T) {
	tests := []struct {
		name    string
		c       Caller
		src     string // owner of the source: "alice" or "bob"
		dst     string // owner of an existing target, "" for none
		dirUid  uint32
		want    syscall.Errno
		exch    bool
		unlinks bool // also check Unlink of the source with the same caller
	}{
		{name: "owner of file moves it", c: alice, src: "alice", dirUid: 0, want: 0},
		{name: "non-owner moves file", c: bob, src: "alice", dirUid: 0, want: syscall.EPERM, unlinks: true},
		{name: "owner of dir moves others' file", c: bob, src: "alice", dirUid: bob.Uid, want: 0},
		{name: "root moves anything", c: Root, src: "alice", dirUid: 0, want: 0},
		{name: "replace others' target", c: bob, src: "bob", dst: "alice", dirUid: 0, want: syscall.EPERM},
		{name: "replace own target", c: bob, src: "bob", dst: "bob", dirUid: 0, want: 0},
		{name: "exchange with others' target", c: bob, src: "bob", dst: "alice", dirUid: 0, want: syscall.EPERM, exch: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVolume(t, nil)
			tmp := v.mknod(Root, RootIno, "tmp", syscall.S_IFDIR|syscall.S_ISVTX|0o777)
			if tc.dirUid != 0 {
				if _, err := v.m.SetAttr(v.ctx, &Root, tmp.Ino, SetAttrIn{Valid: SetUid, Uid: tc.dirUid}); err != nil {
					t.Fatal(err)
				}
			}
			owners := map[string]Caller{"alice": alice, "bob": bob}
			src := v.mknod(owners[tc.src], tmp.Ino, "src", syscall.S_IFREG|0o666)
			if tc.dst != "" {
				v.mknod(owners[tc.dst], tmp.Ino, "dst", syscall.S_IFREG|0o666)
			}
			var flags uint32
			if tc.exch {
				flags = RenameExchange
			}
			_, err := v.m.Rename(v.ctx, &tc.c, tmp.Ino, "src", tmp.Ino, "dst", flags)
			wantErrno(t, "rename in sticky dir", err, tc.want)
			if tc.want != 0 {
				if got := v.mustLookup(tmp.Ino, "src"); got.Ino != src.Ino {
					t.Errorf("failed rename moved the source")
				}
			}
			if tc.unlinks {
				_, err := v.m.Unlink(v.ctx, &tc.c, tmp.Ino, "src")
				wantErrno(t, "unlink in sticky dir", err, tc.want)
				d := v.mknod(owners[tc.src], tmp.Ino, "d", syscall.S_IFDIR|0o777)
				_, err = v.m.Rmdir(v.ctx, &tc.c, tmp.Ino, "d")
				wantErrno(t, "rmdir in sticky dir", err, tc.want)
				_ = d
			}
		})
	}
}

func TestRenamePermissions(t *testing.T) {
	v := newVolume(t, nil)
	pub := v.mknod(Root, RootIno, "pub", syscall.S_IFDIR|0o777)
	pub2 := v.mknod(Root, RootIno, "pub2", syscall.S_IFDIR|0o777)
	ro := v.mknod(Root, RootIno, "ro", syscall.S_IFDIR|0o755)
	v.mknod(alice, pub.Ino, "file", syscall.S_IFREG|0o644)
	v.mknod(alice, pub.Ino, "rodir", syscall.S_IFDIR|0o555) // alice's, but not writable: its ".." cannot change
	tests := []struct {
		name     string
		from, to uint64
		old, new string
		want     syscall.Errno
	}{
		{"into a read-only dir", pub.Ino, ro.Ino, "file", "file", syscall.EACCES},
		{"out of a read-only dir", ro.Ino, pub.Ino, "nothing", "x", syscall.EACCES},
		{"directory without write across parents", pub.Ino, pub2.Ino, "rodir", "rodir", syscall.EACCES},
		{"directory without write same parent", pub.Ino, pub.Ino, "rodir", "rodir2", 0},
		{"file across parents", pub.Ino, pub2.Ino, "file", "file", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.m.Rename(v.ctx, &alice, tc.from, tc.old, tc.to, tc.new, 0)
			wantErrno(t, "rename", err, tc.want)
		})
	}
	v.checkTree()
}

// TestRenameRandomInvariants applies many random renames among a small tree
// and checks after each that directory link counts, parents and paths hold.
func TestRenameRandomInvariants(t *testing.T) {
	v := newVolume(t, nil)
	dirs := []uint64{RootIno}
	for i := range 8 {
		d := v.mkdir(dirs[i/2], "d"+string(rune('0'+i)))
		dirs = append(dirs, d.Ino)
	}
	for i := range 8 {
		v.mkfile(dirs[i], "f"+string(rune('0'+i)))
	}
	nameSet := []string{"d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "n"}
	seed := uint64(7)
	rnd := func(n int) int { seed = seed*6364136223846793005 + 1442695040888963407; return int(seed>>33) % n }
	ok := 0
	for i := range 400 {
		from, to := dirs[rnd(len(dirs))], dirs[rnd(len(dirs))]
		oldName, newName := nameSet[rnd(len(nameSet))], nameSet[rnd(len(nameSet))]
		flags := []uint32{0, 0, RenameExchange, RenameNoReplace}[rnd(4)]
		_, err := v.m.Rename(v.ctx, &Root, from, oldName, to, newName, flags)
		if err == nil {
			ok++
		}
		// Directories removed by being replaced drop out of the candidates.
		v.reapAll()
		live := dirs[:0]
		for _, d := range dirs {
			if a, err := v.m.GetAttr(v.ctx, d); err == nil && a.Nlink > 0 {
				live = append(live, d)
			}
		}
		dirs = live
		if i%20 == 0 || err == nil {
			v.checkTree()
		}
		if t.Failed() {
			t.Fatalf("after op %d: rename(%d/%s -> %d/%s, flags %d) = %v", i, from, oldName, to, newName, flags, err)
		}
	}
	if ok < 20 {
		t.Errorf("only %d of 400 random renames succeeded; the test exercises too little", ok)
	}
}

// TestOrphansAfter: the orphan list read a page at a time gives each orphan
// once, in ascending order, whatever the page size.
func TestOrphansAfter(t *testing.T) {
	v := newVolume(t, nil)
	var want []uint64
	for i := range 7 {
		a := v.mkdir(RootIno, fmt.Sprint("d", i))
		if _, err := v.m.Rmdir(v.ctx, &Root, RootIno, fmt.Sprint("d", i)); err != nil {
			t.Fatal(err)
		}
		want = append(want, a.Ino)
	}
	if got := v.orphans(); !slices.Equal(got, want) {
		t.Fatalf("orphans %v, want %v", got, want)
	}
	for _, limit := range []int{1, 2, 3, 7, 8, 100} {
		var got []uint64
		var after uint64
		for pages := 0; ; pages++ {
			if pages > len(want) {
				t.Fatalf("limit %d: more than %d pages", limit, pages)
			}
			page, err := v.m.OrphansAfter(v.ctx, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(page))
			}
			got = append(got, page...)
			if len(page) < limit {
				break
			}
			after = page[len(page)-1]
		}
		if !slices.Equal(got, want) {
			t.Errorf("limit %d: %v, want %v", limit, got, want)
		}
	}
	if page, err := v.m.OrphansAfter(v.ctx, want[3], 100); err != nil || !slices.Equal(page, want[4:]) {
		t.Errorf("after %d: %v, %v; want %v", want[3], page, err, want[4:])
	}
	if page, err := v.m.OrphansAfter(v.ctx, math.MaxUint64, 100); err != nil || len(page) != 0 {
		t.Errorf("after the largest inode number: %v, %v", page, err)
	}
	if _, err := v.m.OrphansAfter(v.ctx, 0, 0); err == nil {
		t.Error("limit 0: no error")
	}
}
