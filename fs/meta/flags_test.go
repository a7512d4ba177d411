package meta

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestInodeFlags: a new inode is marked as having no extended attributes
// and no chunks; the first attribute set and the first chunk written clear
// the marks for good, and a failed change leaves them.
func TestInodeFlags(t *testing.T) {
	v := newVolume(t, func(f *Format) { f.BlockSize = 4096; f.ChunkSize = 4096 })
	const both = FlagNoXattrs | FlagNoChunks
	wantFlags := func(what string, ino uint64, want uint32) {
		t.Helper()
		if got := v.attr(ino).Flags &^ FlagAlloc; got != want { // FlagAlloc: TestAlloc
			t.Errorf("%s: flags %#x, want %#x", what, got, want)
		}
	}
	f := v.mkfile(RootIno, "f")
	wantFlags("new file", f.Ino, both)
	wantFlags("new directory", v.mkdir(RootIno, "d").Ino, both)
	wantFlags("new symlink", v.mknod(Root, RootIno, "s", syscall.S_IFLNK|0o777).Ino, both)
	tmp, err := v.m.Tmpfile(v.ctx, &Root, RootIno, 0o600, true)
	if err != nil {
		t.Fatal(err)
	}
	wantFlags("new linkable O_TMPFILE", tmp.Ino, both|FlagLinkable)
	wantFlags("the root of a new volume", RootIno, both)

	if _, err := v.m.Write(v.ctx, f.Ino, WriteIn{Inline: []byte("small"), End: 5}); err != nil {
		t.Fatal(err)
	}
	wantFlags("after an inline write", f.Ino, both)
	v.writeSlice(f.Ino, 0, fakeBlock(1, 4096))
	wantFlags("after the first chunk", f.Ino, FlagNoXattrs)
	if _, err := v.m.SetAttr(v.ctx, &Root, f.Ino, SetAttrIn{Valid: SetSize, Size: 0}); err != nil {
		t.Fatal(err)
	}
	wantFlags("after truncating its chunks away", f.Ino, FlagNoXattrs)

	if _, err := v.m.GetXattr(v.ctx, &Root, f.Ino, "user.k"); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("GetXattr of a file without attributes: %v, want ENODATA", err)
	}
	if names, err := v.m.ListXattr(v.ctx, &Root, f.Ino); err != nil || len(names) != 0 {
		t.Errorf("ListXattr of a file without attributes: %q, %v", names, err)
	}
	if err := v.m.SetXattr(v.ctx, &Root, f.Ino, "user.k", []byte("v"), XattrReplace); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("SetXattr XATTR_REPLACE of a missing attribute: %v, want ENODATA", err)
	}
	wantFlags("after a failed SetXattr", f.Ino, FlagNoXattrs)
	if err := v.m.SetXattr(v.ctx, &Root, f.Ino, "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	wantFlags("after the first attribute", f.Ino, 0)
	if got, err := v.m.GetXattr(v.ctx, &Root, f.Ino, "user.k"); err != nil || string(got) != "v" {
		t.Errorf("GetXattr: %q, %v", got, err)
	}
	if names, err := v.m.ListXattr(v.ctx, &Root, f.Ino); err != nil || !slices.Equal(names, []string{"user.k"}) {
		t.Errorf("ListXattr: %q, %v", names, err)
	}
	if err := v.m.RemoveXattr(v.ctx, &Root, f.Ino, "user.k"); err != nil {
		t.Fatal(err)
	}
	wantFlags("after removing the last attribute", f.Ino, 0)
	if _, err := v.m.GetXattr(v.ctx, &Root, f.Ino, "user.k"); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("GetXattr of a removed attribute: %v, want ENODATA", err)
	}
	v.wantNoErrors()
}

// recordingKV records the key of every Set and Delete of its updates.
type recordingKV struct {
	KV
	mu      sync.Mutex
	written [][]byte
}

func (k *recordingKV) Update(ctx context.Context, fn func(Txn) error) error {
	return k.KV.Update(ctx, func(t Txn) error { return fn(recordingTxn{Txn: t, kv: k}) })
}

// take returns the keys written since the last take.
func (k *recordingKV) take() [][]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	w := k.written
	k.written = nil
	return w
}

func (k *recordingKV) note(key []byte) {
	k.mu.Lock()
	k.written = append(k.written, bytes.Clone(key))
	k.mu.Unlock()
}

type recordingTxn struct {
	Txn
	kv *recordingKV
}

func (t recordingTxn) Set(key, value []byte) error { t.kv.note(key); return t.Txn.Set(key, value) }
func (t recordingTxn) Delete(key []byte) error     { t.kv.note(key); return t.Txn.Delete(key) }

// TestFreeingAtUnlink: the unlink that frees a closed file at once leaves
// none of its records behind, whatever it had and whether or not its flags
// spare the looks (inodes of volumes made before the flags lack them), and
// writes no orphan or truncation record only to delete it again.
func TestFreeingAtUnlink(t *testing.T) {
	for _, tc := range []struct {
		name          string
		inline        bool
		chunks        int
		xattrs        int
		oldInode      bool // flags cleared, as on an inode made before they existed
		wantFlagsLeft uint32
	}{
		{name: "empty file", wantFlagsLeft: FlagNoXattrs | FlagNoChunks},
		{name: "inline file", inline: true, wantFlagsLeft: FlagNoXattrs | FlagNoChunks},
		{name: "file of chunks", chunks: 3, wantFlagsLeft: FlagNoXattrs},
		{name: "file with attributes", inline: true, xattrs: 2, wantFlagsLeft: FlagNoChunks},
		{name: "file of chunks with attributes", chunks: 3, xattrs: 2},
		{name: "old inode, inline", inline: true, oldInode: true},
		{name: "old inode of chunks with attributes", chunks: 2, xattrs: 1, oldInode: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const bs = 4096
			v := newVolume(t, func(f *Format) { f.BlockSize = bs; f.ChunkSize = bs })
			rec := &recordingKV{KV: v.kv}
			m, err := Open(v.ctx, rec)
			if err != nil {
				t.Fatal(err)
			}
			v.m = m
			f := v.mkfile(RootIno, "f")
			if tc.inline {
				if _, err := m.Write(v.ctx, f.Ino, WriteIn{Inline: []byte("small"), End: 5, Mtime: time.Now().UnixNano()}); err != nil {
					t.Fatal(err)
				}
			}
			for i := range tc.chunks {
				v.writeSlice(f.Ino, uint64(i)*bs, fakeBlock(300+i, bs))
			}
			for i := range tc.xattrs {
				if err := m.SetXattr(v.ctx, &Root, f.Ino, "user."+string(rune('a'+i)), []byte("v"), 0); err != nil {
					t.Fatal(err)
				}
			}
			if tc.oldInode {
				err := v.kv.Update(v.ctx, func(t Txn) error {
					a := v.attr(f.Ino)
					a.Flags = 0
					return t.Set(keyIno(pInode, f.Ino), a.encode())
				})
				if err != nil {
					t.Fatal(err)
				}
			} else if got := v.attr(f.Ino).Flags &^ FlagAlloc; got != tc.wantFlagsLeft {
				t.Fatalf("flags before the unlink %#x, want %#x", got, tc.wantFlagsLeft)
			}
			rec.take()
			if _, freed, err := m.UnlinkFreeing(v.ctx, &Root, RootIno, "f", func(uint64) bool { return true }); err != nil || !freed {
				t.Fatalf("unlink: freed %v, %v", freed, err)
			}
			for _, k := range rec.take() {
				if k[0] == pOrphan || k[0] == pTruncate {
					t.Errorf("the freeing unlink wrote key %x", k)
				}
			}
			for _, p := range []byte{pInode, pSlices, pXattr, pInline, pOrphan, pTruncate, pBack} {
				if n := v.countKeys(keyIno(p, f.Ino)); n != 0 {
					t.Errorf("%d records %q of the freed inode left", n, p)
				}
			}
			if p := v.pending(); len(p) != tc.chunks {
				t.Errorf("%d blocks queued for deletion, want %d", len(p), tc.chunks)
			}
			if st := m.Stats(); st != (Stats{Inodes: 1, Dirs: 1}) {
				t.Errorf("stats after freeing: %+v", st)
			}
			v.wantNoErrors()
		})
	}
}

// TestUnlinkOfOpenFileKeepsOrphan: without the freeing, the last unlink
// writes the orphan record the next start relies on.
func TestUnlinkOfOpenFileKeepsOrphan(t *testing.T) {
	v := newVolume(t, nil)
	f := v.mkfile(RootIno, "f")
	if _, freed, err := v.m.UnlinkFreeing(v.ctx, &Root, RootIno, "f", func(uint64) bool { return false }); err != nil || freed {
		t.Fatalf("unlink: freed %v, %v", freed, err)
	}
	if o := v.orphans(); !slices.Equal(o, []uint64{f.Ino}) {
		t.Fatalf("orphans %v, want [%d]", o, f.Ino)
	}
	v.reapAll()
	if n := v.countKeys(keyIno(pOrphan, f.Ino)) + v.countKeys(keyIno(pInode, f.Ino)); n != 0 {
		t.Errorf("%d records of the reaped inode left", n)
	}
	v.wantNoErrors()
}
