package meta

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// TestDamagedRecords runs every namespace and data operation against the
// damage a volume's records can suffer (an entry naming a missing inode,
// an inode, entry, slice list or statistics record that does not decode,
// a parent chain that loops) and requires each to answer with an errno,
// never a panic: ENOENT where the thing is simply not there, EIO (the
// corrupt record error) where a record is unreadable. Undamaged names in
// the same directory keep working, and fsck's Check names the damage.
func TestDamagedRecords(t *testing.T) {
	type damage struct {
		name   string
		apply  func(v *testVolume, dir, f *Attr) // f is the victim, in dir
		victim string                            // name of the victim in dir
	}
	set := func(v *testVolume, k, val []byte) {
		if err := v.kv.Update(v.ctx, func(t Txn) error { return t.Set(k, val) }); err != nil {
			v.t.Fatal(err)
		}
	}
	del := func(v *testVolume, k []byte) {
		if err := v.kv.Update(v.ctx, func(t Txn) error { return t.Delete(k) }); err != nil {
			v.t.Fatal(err)
		}
	}
	for _, d := range []damage{
		{"entry naming a missing inode", func(v *testVolume, dir, f *Attr) { del(v, keyIno(pInode, f.Ino)) }, "f"},
		{"inode record too short", func(v *testVolume, dir, f *Attr) { set(v, keyIno(pInode, f.Ino), []byte{attrVersion, 1, 2}) }, "f"},
		{"inode record of an unknown version", func(v *testVolume, dir, f *Attr) {
			b := f.encode()
			b[0] = 99
			set(v, keyIno(pInode, f.Ino), b)
		}, "f"},
		{"entry record too short", func(v *testVolume, dir, f *Attr) { set(v, keyInoName(pEntry, dir.Ino, "f"), []byte{1}) }, "f"},
		{"slice list undecodable", func(v *testVolume, dir, f *Attr) { set(v, keyChunk(f.Ino, 0), []byte{slicesVersion, 1, 2, 3}) }, "f"},
		{"slice list of an unknown version", func(v *testVolume, dir, f *Attr) { set(v, keyChunk(f.Ino, 0), []byte{42}) }, "f"},
		{"directory inode missing", func(v *testVolume, dir, f *Attr) { del(v, keyIno(pInode, dir.Ino)) }, "f"},
		{"directory's parent chain loops", func(v *testVolume, dir, f *Attr) {
			dir.Parent = dir.Ino
			set(v, keyIno(pInode, dir.Ino), dir.encode())
		}, "f"},
	} {
		t.Run(d.name, func(t *testing.T) {
			v := newVolume(t, nil)
			m, ctx := v.m, v.ctx
			dir, err := m.Mknod(ctx, &Root, RootIno, "d", NewNode{Mode: syscall.S_IFDIR | 0o755})
			if err != nil {
				t.Fatal(err)
			}
			other, err := m.Mknod(ctx, &Root, RootIno, "other", NewNode{Mode: syscall.S_IFDIR | 0o755})
			if err != nil {
				t.Fatal(err)
			}
			f, err := m.Mknod(ctx, &Root, dir.Ino, "f", NewNode{Mode: syscall.S_IFREG | 0o644})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.Write(ctx, f.Ino, WriteIn{End: 100, Inline: make([]byte, 100)}); err != nil {
				t.Fatal(err)
			}
			ok, err := m.Mknod(ctx, &Root, RootIno, "ok", NewNode{Mode: syscall.S_IFREG | 0o644})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.Mknod(ctx, &Root, RootIno, "src", NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
				t.Fatal(err)
			}
			d.apply(v, dir, f)
			if r, err := m.Check(ctx, CheckOptions{}); err != nil {
				t.Errorf("check: %v", err)
			} else if r.Errors() == 0 {
				t.Errorf("check found nothing wrong")
			} else {
				t.Logf("check: %s", problems(r))
			}

			ops := []struct {
				name string
				op   func() error
			}{
				{"lookup", func() error { _, err := m.Lookup(ctx, &Root, dir.Ino, d.victim); return err }},
				{"getattr", func() error { _, err := m.GetAttr(ctx, f.Ino); return err }},
				{"readdir", func() error { return m.ReadDir(ctx, dir.Ino, 0, func(Dirent) bool { return true }) }},
				{"path", func() error { _, err := m.Path(ctx, f.Ino); return err }},
				{"readdata", func() error { _, err := m.ReadData(ctx, f.Ino, 0, 0); return err }},
				{"write", func() error { _, err := m.Write(ctx, f.Ino, WriteIn{End: 10, Inline: make([]byte, 10)}); return err }},
				{"setattr", func() error {
					_, err := m.SetAttr(ctx, &Root, f.Ino, SetAttrIn{Valid: SetMode, Mode: 0o600})
					return err
				}},
				{"truncate", func() error { _, err := m.SetAttr(ctx, &Root, f.Ino, SetAttrIn{Valid: SetSize, Size: 0}); return err }},
				{"setxattr", func() error { return m.SetXattr(ctx, &Root, f.Ino, "user.x", []byte("v"), 0) }},
				{"listxattr", func() error { _, err := m.ListXattr(ctx, &Root, f.Ino); return err }},
				{"create beside", func() error {
					_, err := m.Mknod(ctx, &Root, dir.Ino, "new", NewNode{Mode: syscall.S_IFREG | 0o644})
					return err
				}},
				{"link", func() error { _, err := m.Link(ctx, &Root, f.Ino, other.Ino, "link"); return err }},
				{"rename away", func() error { return errOnly(m.Rename(ctx, &Root, dir.Ino, d.victim, other.Ino, "moved", 0)) }},
				{"rename over", func() error { return errOnly(m.Rename(ctx, &Root, RootIno, "src", dir.Ino, d.victim, 0)) }},
				{"rename the directory", func() error { return errOnly(m.Rename(ctx, &Root, RootIno, "d", other.Ino, "d2", 0)) }},
				{"unlink", func() error {
					_, _, err := m.UnlinkFreeing(ctx, &Root, dir.Ino, d.victim, func(uint64) bool { return true })
					return err
				}},
				{"rmdir", func() error { _, err := m.Rmdir(ctx, &Root, RootIno, "d"); return err }},
				{"reap", func() error { return m.Reap(ctx, f.Ino) }},
			}
			for _, o := range ops {
				err := func() (err error) {
					defer func() {
						if r := recover(); r != nil {
							err = fmt.Errorf("panic: %v", r)
						}
					}()
					return o.op()
				}()
				var errno syscall.Errno
				if err != nil && !errors.As(err, &errno) {
					t.Errorf("%s: %v: not an errno", o.name, err)
				}
			}
			// The rest of the volume still works.
			if _, err := m.Lookup(ctx, &Root, RootIno, "ok"); err != nil {
				t.Errorf("lookup of an undamaged file: %v", err)
			}
			if _, err := m.GetAttr(ctx, ok.Ino); err != nil {
				t.Errorf("getattr of an undamaged file: %v", err)
			}
			if _, err := m.Mknod(ctx, &Root, RootIno, "after", NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
				t.Errorf("create after the damage: %v", err)
			}
		})
	}
}

func errOnly(_ *Attr, err error) error { return err }
