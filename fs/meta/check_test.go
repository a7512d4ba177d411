package meta

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fixture is a small tree with every kind of record: directories, files
// with blocks (one shared), a hard link, a symlink, an extended attribute.
type fixture struct {
	v          *testVolume
	d, f, g    *Attr
	sym        *Attr
	b1, b2, b3 BlockRef
}

func testBlock(s string) BlockRef {
	return BlockRef{ID: sha256.Sum256([]byte(s)), Size: uint32(len(s))}
}

func (v *testVolume) writeBlocks(ino uint64, blocks ...BlockRef) {
	v.t.Helper()
	var n uint32
	for _, b := range blocks {
		n += b.Size
	}
	_, err := v.m.Write(v.ctx, ino, WriteIn{
		Chunks: []ChunkWrite{{Index: 0, Slices: []Slice{{Pos: 0, Len: n, Blocks: blocks}}}},
		End:    uint64(n), Mtime: time.Now().UnixNano(),
	})
	if err != nil {
		v.t.Fatalf("write %d: %v", ino, err)
	}
}

func newFixture(t *testing.T) *fixture {
	v := newVolume(t, nil)
	fx := &fixture{v: v, b1: testBlock("first block"), b2: testBlock("second"), b3: testBlock("shared block")}
	fx.d = v.mkdir(RootIno, "d")
	fx.f = v.mkfile(RootIno, "f")
	fx.g = v.mkfile(fx.d.Ino, "g")
	fx.sym = v.mknod(Root, fx.d.Ino, "s", syscall.S_IFLNK|0o777)
	v.writeBlocks(fx.f.Ino, fx.b1, fx.b3)
	v.writeBlocks(fx.g.Ino, fx.b2, fx.b3)
	if _, err := v.m.Link(v.ctx, &Root, fx.f.Ino, fx.d.Ino, "h"); err != nil {
		t.Fatalf("link: %v", err)
	}
	if err := v.m.SetXattr(v.ctx, &Root, fx.f.Ino, "user.k", []byte("v"), 0); err != nil {
		t.Fatalf("setxattr: %v", err)
	}
	return fx
}

// raw changes records directly, as damage would.
func (v *testVolume) raw(fn func(t Txn) error) {
	v.t.Helper()
	if err := v.kv.Update(v.ctx, fn); err != nil {
		v.t.Fatalf("corrupt: %v", err)
	}
}

func (v *testVolume) runCheck(repair bool) *CheckResult {
	v.t.Helper()
	r, err := v.m.Check(v.ctx, CheckOptions{Repair: repair})
	if err != nil {
		v.t.Fatalf("check: %v", err)
	}
	return r
}

func problems(r *CheckResult) string {
	var b strings.Builder
	for _, p := range r.Problems {
		fmt.Fprintln(&b, p)
	}
	return b.String()
}

func TestCheckCleanVolume(t *testing.T) {
	fx := newFixture(t)
	r := fx.v.runCheck(false)
	if r.Errors() != 0 || len(r.Problems) != 0 {
		t.Fatalf("fresh volume has problems:\n%s", problems(r))
	}
	if r.Blocks != 3 || r.Counted.Files != 2 || r.Counted.Dirs != 2 {
		t.Errorf("counted %d blocks, %+v", r.Blocks, r.Counted)
	}
}

func TestCheckFindsAndRepairs(t *testing.T) {
	editInode := func(t Txn, ino uint64, edit func(a *Attr)) error {
		v, err := t.Get(keyIno(pInode, ino))
		if err != nil {
			return err
		}
		a, err := decodeAttr(ino, v)
		if err != nil {
			return err
		}
		edit(a)
		return t.Set(keyIno(pInode, ino), a.encode())
	}
	setNlink := func(t Txn, ino uint64, n uint32) error {
		return editInode(t, ino, func(a *Attr) { a.Nlink = n })
	}
	addFlags := func(t Txn, ino uint64, flags uint32) error {
		return editInode(t, ino, func(a *Attr) { a.Flags |= flags })
	}
	entryOf := func(t Txn, parent uint64, name string) entry {
		k := keyInoName(pEntry, parent, name)
		v, _ := t.Get(k)
		e, _ := decodeEntry(k, v)
		return e
	}
	tests := []struct {
		name    string
		prepare func(fx *fixture) // optional, before corrupt
		corrupt func(fx *fixture, t Txn) error
		want    string // substring of the report
		ino     func(fx *fixture) uint64
		after   func(t *testing.T, fx *fixture)
	}{
		{
			name: "missing order record",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Delete(keyInoU64(pOrder, RootIno, entryOf(t, RootIno, "f").seq))
			},
			want: `entry "f" (inode`,
			ino:  func(*fixture) uint64 { return RootIno },
			after: func(t *testing.T, fx *fixture) {
				if got := fx.v.names(RootIno); !strings.Contains(strings.Join(got, ","), "f") {
					t.Errorf("f not listed after repair: %v", got)
				}
			},
		},
		{
			name: "stale order record",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(keyInoU64(pOrder, RootIno, 1000), orderValue(entry{child: 5}, "ghost"))
			},
			want: `readdir order record (cookie 1000, "ghost") has no matching directory entry`,
			ino:  func(*fixture) uint64 { return RootIno },
		},
		{
			name: "missing back-link",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Delete(keyBack(fx.g.Ino, fx.d.Ino, "g"))
			},
			want: "has no back-link",
			ino:  func(fx *fixture) uint64 { return fx.g.Ino },
		},
		{
			name: "stale back-link",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(keyBack(fx.g.Ino, RootIno, "nothere"), nil)
			},
			want: `back-link to "nothere" in directory 1 has no matching directory entry`,
			ino:  func(fx *fixture) uint64 { return fx.g.Ino },
		},
		{
			name: "refcount too high",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(keyBlock(pRefcount, fx.b3.ID), refValue(7, fx.b3.Size))
			},
			want: "refcount 7 size 12, but slices hold 2 references",
		},
		{
			name: "refcount missing",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Delete(keyBlock(pRefcount, fx.b1.ID))
			},
			want: "1 references but no refcount record",
		},
		{
			name: "refcount of an unreferenced block",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(keyBlock(pRefcount, testBlock("nobody").ID), refValue(1, 6))
			},
			want: "refcount 1, but no slice references it",
		},
		{
			name: "unreachable file",
			corrupt: func(fx *fixture, t Txn) error {
				e := entryOf(t, fx.d.Ino, "g")
				for _, k := range [][]byte{keyInoName(pEntry, fx.d.Ino, "g"), keyInoU64(pOrder, fx.d.Ino, e.seq), keyBack(fx.g.Ino, fx.d.Ino, "g")} {
					if err := t.Delete(k); err != nil {
						return err
					}
				}
				return nil
			},
			want: msgUnreachable,
			ino:  func(fx *fixture) uint64 { return fx.g.Ino },
			after: func(t *testing.T, fx *fixture) {
				want := fmt.Sprintf("/lost+found/#%d", fx.g.Ino)
				if p := fx.v.path(fx.g.Ino); p != want {
					t.Errorf("path after repair %q, want %q", p, want)
				}
			},
		},
		{
			name: "unreachable directory",
			corrupt: func(fx *fixture, t Txn) error {
				e := entryOf(t, RootIno, "d")
				for _, k := range [][]byte{keyInoName(pEntry, RootIno, "d"), keyInoU64(pOrder, RootIno, e.seq), keyBack(fx.d.Ino, RootIno, "d")} {
					if err := t.Delete(k); err != nil {
						return err
					}
				}
				return nil
			},
			want: msgUnreachable,
			ino:  func(fx *fixture) uint64 { return fx.d.Ino },
			after: func(t *testing.T, fx *fixture) {
				want := fmt.Sprintf("/lost+found/#%d/g", fx.d.Ino)
				if p := fx.v.path(fx.g.Ino); p != want {
					t.Errorf("path after repair %q, want %q", p, want)
				}
			},
		},
		{
			name: "entry to a missing inode",
			corrupt: func(fx *fixture, t Txn) error {
				d := fx.v.attr(RootIno)
				e := entry{child: 999999, seq: d.NextSeq - 1, typ: syscall.S_IFREG}
				return t.Set(keyInoName(pEntry, RootIno, "dangling"), e.encode())
			},
			want: `entry "dangling" points to inode 999999, which does not exist`,
			ino:  func(*fixture) uint64 { return RootIno },
			after: func(t *testing.T, fx *fixture) {
				if _, err := fx.v.lookup(RootIno, "dangling"); err == nil {
					t.Errorf("dangling entry still there")
				}
			},
		},
		{
			name: "orphan record on a linked inode",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(keyIno(pOrphan, fx.f.Ino), u64bytes(1))
			},
			want: "stale orphan record: 2 directory entries name it",
			ino:  func(fx *fixture) uint64 { return fx.f.Ino },
		},
		{
			name: "orphan record of a missing inode",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(keyIno(pOrphan, 424242), u64bytes(1))
			},
			want: "stale orphan record: the inode does not exist",
			ino:  func(*fixture) uint64 { return 424242 },
		},
		{
			name: "truncation record of a missing inode",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(keyIno(pTruncate, 424242), u64bytes(1))
			},
			want: "stale truncation record: the inode does not exist",
			ino:  func(*fixture) uint64 { return 424242 },
		},
		{
			name: "truncation record of a directory",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(keyIno(pTruncate, fx.d.Ino), u64bytes(1))
			},
			want: "truncation record on an inode of type 40000",
			ino:  func(fx *fixture) uint64 { return fx.d.Ino },
		},
		{
			name: "truncation record of a file not marked truncating",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(keyIno(pTruncate, fx.f.Ino), u64bytes(1))
			},
			want: "truncation record, but the file is not marked as truncating",
			ino:  func(fx *fixture) uint64 { return fx.f.Ino },
		},
		{
			name:    "file marked truncating without a record",
			corrupt: func(fx *fixture, t Txn) error { return addFlags(t, fx.f.Ino, FlagTruncating) },
			want:    "marked as truncating with no truncation record",
			ino:     func(fx *fixture) uint64 { return fx.f.Ino },
		},
		{
			name:    "chunk of a file marked as having none",
			corrupt: func(fx *fixture, t Txn) error { return addFlags(t, fx.g.Ino, FlagNoChunks) },
			want:    "chunk 0 on an inode marked as having none",
			ino:     func(fx *fixture) uint64 { return fx.g.Ino },
			after: func(t *testing.T, fx *fixture) {
				// Freed after the repair, g releases its blocks: a
				// lying flag would leave its chunk behind.
				v := fx.v
				if _, freed, err := v.m.UnlinkFreeing(v.ctx, &Root, fx.d.Ino, "g", func(uint64) bool { return true }); err != nil || !freed {
					t.Fatalf("unlink g: freed %v, %v", freed, err)
				}
				v.wantNoErrors()
			},
		},
		{
			name:    "attribute of an inode marked as having none",
			corrupt: func(fx *fixture, t Txn) error { return addFlags(t, fx.f.Ino, FlagNoXattrs) },
			want:    `extended attribute "user.k" on an inode marked as having none`,
			ino:     func(fx *fixture) uint64 { return fx.f.Ino },
			after: func(t *testing.T, fx *fixture) {
				v := fx.v
				if got, err := v.m.GetXattr(v.ctx, &Root, fx.f.Ino, "user.k"); err != nil || string(got) != "v" {
					t.Errorf("user.k after the repair: %q, %v; want \"v\"", got, err)
				}
			},
		},
		{
			name:    "file nlink wrong",
			corrupt: func(fx *fixture, t Txn) error { return setNlink(t, fx.f.Ino, 5) },
			want:    "nlink 5, but 2 directory entries name it",
			ino:     func(fx *fixture) uint64 { return fx.f.Ino },
		},
		{
			name:    "directory nlink wrong",
			corrupt: func(fx *fixture, t Txn) error { return setNlink(t, RootIno, 9) },
			want:    "directory nlink 9, want 2 + 1 subdirectories",
			ino:     func(*fixture) uint64 { return RootIno },
		},
		{
			name: "unlinked inode without orphan record",
			// Unlinked while open, then the X record is lost.
			prepare: func(fx *fixture) {
				if _, err := fx.v.m.Unlink(fx.v.ctx, &Root, fx.d.Ino, "g"); err != nil {
					fx.v.t.Fatal(err)
				}
			},
			corrupt: func(fx *fixture, t Txn) error { return t.Delete(keyIno(pOrphan, fx.g.Ino)) },
			want:    "nlink 0 but no orphan record",
		},
		{
			name: "pending deletion of a referenced block",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(keyBlock(pPending, fx.b2.ID), u64bytes(1))
			},
			want: "is queued for deletion but still referenced",
		},
		{
			name: "statistics off",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(key1(pTotals), Stats{Inodes: 1}.encode())
			},
			want: "statistics say",
		},
		{
			name: "slices of a missing inode",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(keyChunk(777777, 0), encodeSlices([]Slice{{Pos: 0, Len: fx.b1.Size, Blocks: []BlockRef{fx.b1}}}))
			},
			want: "chunk 0: slices of an inode that does not exist",
			ino:  func(*fixture) uint64 { return 777777 },
		},
		{
			name: "xattr of a missing inode",
			corrupt: func(fx *fixture, t Txn) error {
				return t.Set(keyInoName(pXattr, 777778, "user.x"), []byte("1"))
			},
			want: "extended attribute of an inode that does not exist",
		},
		{
			name: "entry type wrong",
			corrupt: func(fx *fixture, t Txn) error {
				e := entryOf(t, RootIno, "f")
				e.typ = syscall.S_IFDIR
				return t.Set(keyInoName(pEntry, RootIno, "f"), e.encode())
			},
			want: `entry "f" in directory 1 has type 40000, the inode has type 100000`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			v := fx.v
			if tc.prepare != nil {
				tc.prepare(fx)
			}
			v.raw(func(t Txn) error { return tc.corrupt(fx, t) })
			r := v.runCheck(false)
			found := false
			for _, p := range r.Problems {
				if p.Severity == Error && strings.Contains(p.Msg, tc.want) {
					found = true
					if tc.ino != nil && p.Ino != tc.ino(fx) {
						t.Errorf("problem %q names inode %d, want %d", p, p.Ino, tc.ino(fx))
					}
				}
			}
			if !found {
				t.Fatalf("check did not report %q; it reported:\n%s", tc.want, problems(r))
			}
			r = v.runCheck(true)
			if r.Errors() != 0 {
				t.Fatalf("errors remain after repair:\n%s", problems(r))
			}
			r = v.runCheck(false)
			for _, p := range r.Problems {
				if p.Severity == Error {
					t.Errorf("second check: %s", p)
				}
			}
			if tc.after != nil {
				tc.after(t, fx)
			}
			// The volume still works: the checker's own tree walk agrees.
			v.checkTree()
		})
	}
}

func TestCheckNotesUnfinishedWork(t *testing.T) {
	fx := newFixture(t)
	v := fx.v
	// g unlinked while open: an orphan; its blocks b2 queued after reaping
	// would be pending deletions. Both are notes, not errors.
	if _, err := v.m.Unlink(v.ctx, &Root, fx.d.Ino, "g"); err != nil {
		t.Fatal(err)
	}
	r := v.runCheck(false)
	if r.Errors() != 0 {
		t.Fatalf("unexpected errors:\n%s", problems(r))
	}
	if !strings.Contains(problems(r), "note: inode") {
		t.Errorf("orphan not noted:\n%s", problems(r))
	}
	v.reapAll()
	r = v.runCheck(false)
	if r.Errors() != 0 || !strings.Contains(problems(r), "unreferenced blocks waiting to be deleted") {
		t.Errorf("after reaping:\n%s", problems(r))
	}
}

func TestCheckBlockCallback(t *testing.T) {
	fx := newFixture(t)
	missing := fx.b2.ID
	seen := 0
	r, err := fx.v.m.Check(context.Background(), CheckOptions{Block: func(ctx context.Context, id BlockID, size uint32) error {
		seen++
		if id == missing {
			return fmt.Errorf("object not found")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if seen != 3 || r.Errors() != 1 || !strings.Contains(problems(r), missing.String()) {
		t.Errorf("asked about %d blocks; report:\n%s", seen, problems(r))
	}
	// A repair that needs a second pass asks the store once, and still
	// reports the missing block it cannot fix.
	fx.v.raw(func(t Txn) error { return t.Set(keyBlock(pRefcount, fx.b3.ID), refValue(9, fx.b3.Size)) })
	seen = 0
	r, err = fx.v.m.Check(context.Background(), CheckOptions{Repair: true, Block: func(ctx context.Context, id BlockID, size uint32) error {
		seen++
		if id == missing {
			return fmt.Errorf("object not found")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if seen != 3 || r.Errors() != 1 || !strings.Contains(problems(r), "[fixed]") {
		t.Errorf("repair asked about %d blocks; report:\n%s", seen, problems(r))
	}
}

func TestGCRecords(t *testing.T) {
	fx := newFixture(t)
	v := fx.v
	orphan := testBlock("uploaded, never committed").ID
	t0 := time.Now()
	seen, err := v.m.GCObserve(v.ctx, []BlockID{fx.b1.ID, orphan}, t0, true)
	if err != nil {
		t.Fatal(err)
	}
	if !seen[0].Referenced || seen[1].Referenced || !seen[1].FirstSeen.Equal(time.Unix(0, t0.UnixNano())) {
		t.Fatalf("first observation: %+v", seen)
	}
	seen, err = v.m.GCObserve(v.ctx, []BlockID{orphan}, t0.Add(time.Hour), true)
	if err != nil {
		t.Fatal(err)
	}
	if !seen[0].FirstSeen.Equal(time.Unix(0, t0.UnixNano())) {
		t.Errorf("first-seen time moved: %v", seen[0].FirstSeen)
	}
	// A run that does not list it any more sweeps its record.
	n, err := v.m.GCSweep(v.ctx, t0.Add(2*time.Hour))
	if err != nil || n != 1 {
		t.Errorf("sweep: %d, %v", n, err)
	}
	if r := v.runCheck(false); r.Errors() != 0 {
		t.Errorf("check after gc records:\n%s", problems(r))
	}
}
