package meta

import (
	"context"
	"errors"
	"slices"
	"syscall"
	"testing"
)

// testVolume is a freshly formatted volume in a temporary Badger database.
type testVolume struct {
	t   testing.TB
	ctx context.Context
	kv  *Badger
	m   *Meta
}

// newVolume formats and opens a volume with 64 KiB blocks; tweak, when not
// nil, may change the format record before it is written.
func newVolume(t testing.TB, tweak func(*Format)) *testVolume {
	t.Helper()
	ctx := context.Background()
	kv, err := OpenBadger(t.TempDir(), false)
	if err != nil {
		t.Fatalf("open badger: %v", err)
	}
	t.Cleanup(func() { _ = kv.Close() })
	f := NewFormat([]string{"local"}, 64<<10)
	if tweak != nil {
		tweak(f)
	}
	if err := Create(ctx, kv, f); err != nil {
		t.Fatalf("create volume: %v", err)
	}
	m, err := Open(ctx, kv)
	if err != nil {
		t.Fatalf("open volume: %v", err)
	}
	return &testVolume{t: t, ctx: ctx, kv: kv, m: m}
}

// Callers used by the permission tests.
var (
	alice = Caller{Uid: 1000, Gid: 1000}
	bob   = Caller{Uid: 1001, Gid: 1001}
)

// openRoot makes the root directory writable by everyone, so that non-root
// callers can create entries in it.
func (v *testVolume) openRoot() {
	v.t.Helper()
	if _, err := v.m.SetAttr(v.ctx, &Root, RootIno, SetAttrIn{Valid: SetMode, Mode: 0o777}); err != nil {
		v.t.Fatalf("chmod root: %v", err)
	}
}

func (v *testVolume) mknod(c Caller, parent uint64, name string, mode uint32) *Attr {
	v.t.Helper()
	n := NewNode{Mode: mode}
	if mode&syscall.S_IFMT == syscall.S_IFLNK {
		n.Target = "target-of-" + name
	}
	a, err := v.m.Mknod(v.ctx, &c, parent, name, n)
	if err != nil {
		v.t.Fatalf("mknod %q (mode %o) in %d: %v", name, mode, parent, err)
	}
	return a
}

func (v *testVolume) mkdir(parent uint64, name string) *Attr {
	v.t.Helper()
	return v.mknod(Root, parent, name, syscall.S_IFDIR|0o755)
}

func (v *testVolume) mkfile(parent uint64, name string) *Attr {
	v.t.Helper()
	return v.mknod(Root, parent, name, syscall.S_IFREG|0o644)
}

func (v *testVolume) attr(ino uint64) *Attr {
	v.t.Helper()
	a, err := v.m.GetAttr(v.ctx, ino)
	if err != nil {
		v.t.Fatalf("getattr %d: %v", ino, err)
	}
	return a
}

func (v *testVolume) lookup(parent uint64, name string) (*Attr, error) {
	return v.m.Lookup(v.ctx, &Root, parent, name)
}

func (v *testVolume) mustLookup(parent uint64, name string) *Attr {
	v.t.Helper()
	a, err := v.lookup(parent, name)
	if err != nil {
		v.t.Fatalf("lookup %q in %d: %v", name, parent, err)
	}
	return a
}

func (v *testVolume) path(ino uint64) string {
	v.t.Helper()
	p, err := v.m.Path(v.ctx, ino)
	if err != nil {
		v.t.Fatalf("path of %d: %v", ino, err)
	}
	return p
}

func (v *testVolume) names(dir uint64) []string {
	v.t.Helper()
	var out []string
	if err := v.m.ReadDir(v.ctx, dir, 0, func(d Dirent) bool { out = append(out, d.Name); return true }); err != nil {
		v.t.Fatalf("readdir %d: %v", dir, err)
	}
	slices.Sort(out)
	return out
}

func (v *testVolume) orphans() []uint64 {
	v.t.Helper()
	o, err := v.m.Orphans(v.ctx)
	if err != nil {
		v.t.Fatalf("orphans: %v", err)
	}
	return o
}

// reapAll reaps every orphan, as fs does once nothing has them open.
func (v *testVolume) reapAll() {
	v.t.Helper()
	for _, ino := range v.orphans() {
		if err := v.m.Reap(v.ctx, ino); err != nil {
			v.t.Fatalf("reap %d: %v", ino, err)
		}
	}
	if o := v.orphans(); len(o) != 0 {
		v.t.Fatalf("orphans left after reaping: %v", o)
	}
}

// wantErrno fails unless err is (wraps) want; want 0 means no error.
func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	switch {
	case want == 0 && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case want != 0 && !errors.Is(err, want):
		t.Errorf("%s: got error %v, want %v (%d)", what, err, want, int(want))
	}
}

// treeCounts is what a walk of the namespace finds.
type treeCounts struct {
	inodes, dirs, files, bytes int64
}

// checkTree walks the whole tree from the root and checks the invariants
// every operation must keep: a directory's nlink is 2 plus its
// subdirectories, its subdirectories' Parent is it, every entry's type
// matches its inode, a file's nlink equals the number of entries naming it,
// and every inode's Path resolves to an entry that names it. It returns the
// counts of distinct live inodes found.
func (v *testVolume) checkTree() treeCounts {
	v.t.Helper()
	links := map[uint64]int{}
	attrs := map[uint64]*Attr{RootIno: v.attr(RootIno)}
	var walk func(dir uint64, depth int)
	walk = func(dir uint64, depth int) {
		if depth > 100 {
			v.t.Fatalf("tree deeper than 100: a loop at %d?", dir)
		}
		da := v.attr(dir)
		var ents []Dirent
		if err := v.m.ReadDir(v.ctx, dir, 0, func(d Dirent) bool { ents = append(ents, d); return true }); err != nil {
			v.t.Fatalf("readdir %d: %v", dir, err)
		}
		subdirs := 0
		for _, e := range ents {
			a := v.attr(e.Ino)
			attrs[e.Ino] = a
			links[e.Ino]++
			if a.Type() != e.Type {
				v.t.Errorf("entry %q in %d: type %o, inode type %o", e.Name, dir, e.Type, a.Type())
			}
			if a.IsDir() {
				subdirs++
				if a.Parent != dir {
					v.t.Errorf("directory %q (ino %d) in %d has Parent %d", e.Name, e.Ino, dir, a.Parent)
				}
				walk(e.Ino, depth+1)
			}
		}
		if want := uint32(2 + subdirs); da.Nlink != want {
			p, _ := v.m.Path(v.ctx, dir)
			v.t.Errorf("directory %d (%s) has nlink %d, want 2+%d subdirectories = %d", dir, p, da.Nlink, subdirs, want)
		}
	}
	walk(RootIno, 0)
	var c treeCounts
	for ino, a := range attrs {
		c.inodes++
		switch {
		case a.IsDir():
			c.dirs++
		case a.IsRegular():
			c.files++
			c.bytes += int64(a.Size)
		}
		if ino != RootIno && !a.IsDir() && int(a.Nlink) != links[ino] {
			v.t.Errorf("inode %d has nlink %d but %d entries name it", ino, a.Nlink, links[ino])
		}
		if ino == RootIno {
			continue
		}
		p, err := v.m.Path(v.ctx, ino)
		if err != nil {
			v.t.Errorf("path of live inode %d: %v", ino, err)
			continue
		}
		if got := v.resolve(p); got != ino {
			v.t.Errorf("Path(%d) = %q, which resolves to %d", ino, p, got)
		}
	}
	return c
}

// resolve walks an absolute path from the root; 0 if it does not resolve.
func (v *testVolume) resolve(p string) uint64 {
	v.t.Helper()
	ino := uint64(RootIno)
	if p == "/" {
		return ino
	}
	start := 1
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			a, err := v.lookup(ino, p[start:i])
			if err != nil {
				return 0
			}
			ino, start = a.Ino, i+1
		}
	}
	return ino
}
