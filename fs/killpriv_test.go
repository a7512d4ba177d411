package fs

import (
	"bytes"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/objfs/objfs/fs/meta"
)

// capsValue is a valid vfs_cap_data (revision 2, cap_net_raw effective).
var capsValue = []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// Callers of the kill-privilege tests: files are root's (gid 0); member is
// in group 0, outsider is not.
var (
	outsider = &meta.Caller{Uid: 1002, Gid: 1002, Groups: []uint32{7}}
	member   = &meta.Caller{Uid: 1003, Gid: 1003, Groups: []uint32{0}}
)

// as is the unprivileged argument of WriteAs for a writer c lacking
// CAP_FSETID; nil stands for one that has it.
func as(c *meta.Caller) func() *meta.Caller {
	if c == nil {
		return nil
	}
	return func() *meta.Caller { return c }
}

// privFile creates a file of mode with capabilities if caps, opened for
// writing; it returns its inode and handle.
func privFile(v *testVol, name string, mode uint32, caps bool) (uint64, uint64) {
	v.t.Helper()
	ino, fh := v.create(meta.RootIno, name, syscall.O_RDWR)
	if _, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetMode, Mode: mode}, 0); err != nil {
		v.t.Fatal(err)
	}
	if caps {
		if err := v.f.SetXattr(v.ctx, &meta.Root, ino, meta.XattrCaps, capsValue, 0); err != nil {
			v.t.Fatal(err)
		}
	}
	return ino, fh
}

// privsOf returns ino's permission bits (from fs.GetAttr, what both front
// ends answer) and whether it has file capabilities.
func privsOf(v *testVol, ino uint64) (uint32, bool) {
	v.t.Helper()
	a, err := v.f.GetAttr(v.ctx, ino)
	if err != nil {
		v.t.Fatal(err)
	}
	// What is stored: some tests change it behind fs's back.
	_, err = v.m.GetXattr(v.ctx, &meta.Root, ino, meta.XattrCaps)
	if err != nil && !errors.Is(err, syscall.ENODATA) {
		v.t.Fatal(err)
	}
	return a.Mode & 0o7777, err == nil
}

// TestCapsXattrOfOpenFiles: security.capability of an open file, whose
// privileges fs caches for its writes, shows every change made through fs
// at once: setxattr, a write (which drops it), removexattr.
func TestCapsXattrOfOpenFiles(t *testing.T) {
	v := newVol(t, volConfig{})
	ino, fh := privFile(v, "f", 0o644, false)
	defer v.release(fh)
	get := func(what string, want []byte) {
		t.Helper()
		got, err := v.f.GetXattr(v.ctx, &meta.Root, ino, meta.XattrCaps)
		switch {
		case want == nil && !errors.Is(err, syscall.ENODATA):
			t.Fatalf("%s: %q, %v; want ENODATA", what, got, err)
		case want != nil && (err != nil || !bytes.Equal(got, want)):
			t.Fatalf("%s: %q, %v; want %q", what, got, err, want)
		}
	}
	get("new open file", nil)
	if err := v.f.SetXattr(v.ctx, &meta.Root, ino, meta.XattrCaps, capsValue, 0); err != nil {
		t.Fatal(err)
	}
	get("after setxattr", capsValue)
	if _, _, err := v.f.WriteAs(v.ctx, fh, 0, []byte("x"), nil, false); err != nil {
		t.Fatal(err)
	}
	get("after a write, which drops capabilities", nil)
	if err := v.f.SetXattr(v.ctx, &meta.Root, ino, meta.XattrCaps, capsValue, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.f.RemoveXattr(v.ctx, &meta.Root, ino, meta.XattrCaps); err != nil {
		t.Fatal(err)
	}
	get("after removexattr", nil)
}

// TestKillPrivWrite: writes, truncations and O_TRUNC opens drop setuid,
// setgid and file capabilities as on Linux, visibly as soon as they
// return; through FUSE handles (WriteAs) and NFS (WriteInode).
func TestKillPrivWrite(t *testing.T) {
	// An op acts on file name (inode ino, open read-write as fh).
	type op func(v *testVol, name string, ino, fh uint64) error
	writeAs := func(c *meta.Caller) op {
		return func(v *testVol, name string, ino, fh uint64) error {
			n, _, err := v.f.WriteAs(v.ctx, fh, 0, []byte("data"), as(c), false)
			if err == nil && n != 4 {
				err = fmt.Errorf("short write %d", n)
			}
			return err
		}
	}
	nfsWrite := func(c *meta.Caller) op {
		return func(v *testVol, name string, ino, fh uint64) error {
			_, err := v.f.WriteInode(v.ctx, c, ino, 0, []byte("data"), false)
			return err
		}
	}
	truncate := func(c *meta.Caller, kill bool) op {
		return func(v *testVol, name string, ino, fh uint64) error {
			_, err := v.f.SetAttr(v.ctx, c, ino, meta.SetAttrIn{Valid: meta.SetSize, Size: 1, KillSuidgid: kill}, fh)
			return err
		}
	}
	openTrunc := func(flags uint32) op {
		return func(v *testVol, name string, ino, fh uint64) error {
			h, err := v.f.Open(v.ctx, &meta.Root, ino, syscall.O_WRONLY|syscall.O_TRUNC|flags)
			if err == nil {
				err = v.f.Release(v.ctx, h)
			}
			return err
		}
	}
	createTrunc := func(flags uint32) op {
		return func(v *testVol, name string, ino, fh uint64) error {
			a, h, err := v.f.Create(v.ctx, &meta.Root, meta.RootIno, name, 0o644, syscall.O_CREAT|syscall.O_WRONLY|syscall.O_TRUNC|flags)
			if err == nil && a.Ino != ino {
				err = fmt.Errorf("create opened inode %d, want the existing %d", a.Ino, ino)
			}
			if err == nil {
				err = v.f.Release(v.ctx, h)
			}
			return err
		}
	}
	chownNoIDs := func(c *meta.Caller) op {
		return func(v *testVol, name string, ino, fh uint64) error {
			_, err := v.f.SetAttr(v.ctx, c, ino, meta.SetAttrIn{Chown: true}, 0)
			return err
		}
	}
	tests := []struct {
		name     string
		mode     uint32
		caps     bool
		op       op
		wantMode uint32
		wantCaps bool
	}{
		{"write without CAP_FSETID clears suid", 0o4777, false, writeAs(outsider), 0o777, false},
		{"write without CAP_FSETID clears sgid with group exec", 0o2777, false, writeAs(member), 0o777, false},
		{"write without CAP_FSETID by group member keeps sgid without group exec", 0o2767, false, writeAs(member), 0o2767, false},
		{"write without CAP_FSETID by outsider clears sgid without group exec", 0o2767, false, writeAs(outsider), 0o767, false},
		{"write without CAP_FSETID clears both", 0o6777, false, writeAs(outsider), 0o777, false},
		{"write with CAP_FSETID keeps both", 0o6777, false, writeAs(nil), 0o6777, false},
		{"write with CAP_FSETID drops caps", 0o755, true, writeAs(nil), 0o755, false},
		{"write without CAP_FSETID drops caps and suid", 0o4777, true, writeAs(outsider), 0o777, false},
		{"NFS write by non-root clears suid", 0o4777, false, nfsWrite(outsider), 0o777, false},
		{"NFS write by root keeps suid, drops caps", 0o4777, true, nfsWrite(&meta.Root), 0o4777, false},
		{"truncate with CAP_FSETID drops caps, keeps suid", 0o4755, true, truncate(&meta.Root, false), 0o4755, false},
		{"truncate without CAP_FSETID clears suid", 0o4777, false, truncate(outsider, true), 0o777, false},
		{"O_TRUNC drops caps", 0o4755, true, openTrunc(0), 0o4755, false},
		{"O_TRUNC without CAP_FSETID clears suid", 0o4755, false, openTrunc(OpenKillSuidgid), 0o755, false},
		{"create O_TRUNC of an existing file without CAP_FSETID clears suid", 0o4755, true, createTrunc(OpenKillSuidgid), 0o755, false},
		{"create O_TRUNC of an existing file with CAP_FSETID keeps suid", 0o4755, false, createTrunc(0), 0o4755, false},
		{"plain file: nothing to drop", 0o666, false, writeAs(outsider), 0o666, false},
		{"chown naming no ids clears suid and caps", 0o4755, true, chownNoIDs(&meta.Root), 0o755, false},
		{"chown naming no ids clears sgid with group exec", 0o2755, false, chownNoIDs(&meta.Root), 0o755, false},
		{"chown naming no ids by root keeps sgid without group exec", 0o2745, false, chownNoIDs(&meta.Root), 0o2745, false},
		{"chown naming no ids by a non-owner drops caps of a plain file", 0o755, true, chownNoIDs(outsider), 0o755, false},
	}
	v := newVol(t, volConfig{})
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parent := v.t
			v.t = t // the helpers fail this subtest
			defer func() { v.t = parent }()
			name := fmt.Sprintf("w%d", i)
			ino, fh := privFile(v, name, tc.mode, tc.caps)
			defer v.release(fh)
			if err := tc.op(v, name, ino, fh); err != nil {
				t.Fatal(err)
			}
			// Visible at once, before any commit of the written data.
			mode, caps := privsOf(v, ino)
			if mode != tc.wantMode || caps != tc.wantCaps {
				t.Errorf("mode %o caps %v, want %o caps %v", mode, caps, tc.wantMode, tc.wantCaps)
			}
		})
	}
}

// TestChownNoIDsNeedsOwner: a chown naming no ids that would clear setuid
// is a mode change, so (as on Linux) only the owner or root may make it.
// From anyone else it changes nothing, capabilities and ctime included,
// but succeeds: through FUSE the kernel sends the same request before
// every write by a caller without CAP_FSETID, and refusing it would refuse
// the write (Linux refuses such a chown with EPERM).
func TestChownNoIDsNeedsOwner(t *testing.T) {
	v := newVol(t, volConfig{})
	ino, fh := privFile(v, "f", 0o4755, true)
	defer v.release(fh)
	before, err := v.f.GetAttr(v.ctx, ino)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.f.SetAttr(v.ctx, outsider, ino, meta.SetAttrIn{Chown: true}, 0)
	if err != nil {
		t.Fatalf("chown naming no ids by a non-owner of a setuid file: %v, want success without a change", err)
	}
	if got.Mode != before.Mode || got.Ctime != before.Ctime {
		t.Errorf("the non-owner's chown answered mode %o ctime %d, want %o %d", got.Mode, got.Ctime, before.Mode, before.Ctime)
	}
	if mode, caps := privsOf(v, ino); mode != 0o4755 || !caps {
		t.Errorf("after the non-owner's chown: mode %o caps %v, want 4755 and caps", mode, caps)
	}
	if a, err := v.f.GetAttr(v.ctx, ino); err != nil {
		t.Fatal(err)
	} else if a.Ctime != before.Ctime {
		t.Errorf("after the non-owner's chown: ctime %d, want %d", a.Ctime, before.Ctime)
	}
	owner := &meta.Caller{Uid: 1002, Gid: 1002}
	if _, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetUid | meta.SetMode, Uid: owner.Uid, Mode: 0o4755}, 0); err != nil {
		t.Fatal(err)
	}
	a, err := v.f.SetAttr(v.ctx, owner, ino, meta.SetAttrIn{Chown: true}, 0)
	if err != nil {
		t.Fatalf("chown naming no ids by the owner: %v", err)
	}
	if a.Mode&0o7777 != 0o755 || a.Uid != owner.Uid || a.Gid != before.Gid {
		t.Errorf("after the owner's chown: mode %o uid %d gid %d, want 755 %d %d", a.Mode&0o7777, a.Uid, a.Gid, owner.Uid, before.Gid)
	}
	if a.Ctime <= before.Ctime {
		t.Errorf("ctime %d not after %d", a.Ctime, before.Ctime)
	}
}

// TestKillPrivDroppedReport: WriteAs reports dropped exactly when
// something went, so the FUSE front end knows to drop the kernel's cached
// attributes.
func TestKillPrivDroppedReport(t *testing.T) {
	v := newVol(t, volConfig{})
	for _, tc := range []struct {
		mode        uint32
		caps        bool
		c           *meta.Caller
		wantDropped bool
	}{
		{0o4777, false, outsider, true},
		{0o4777, false, nil, false},
		{0o644, true, nil, true},
		{0o644, false, outsider, false},
	} {
		_, fh := privFile(v, fmt.Sprintf("r%o%v%v", tc.mode, tc.caps, tc.c != nil), tc.mode, tc.caps)
		_, dropped, err := v.f.WriteAs(v.ctx, fh, 0, []byte("x"), as(tc.c), false)
		if err != nil {
			t.Fatal(err)
		}
		if dropped != tc.wantDropped {
			t.Errorf("mode %o caps %v unprivileged %v: dropped %v, want %v", tc.mode, tc.caps, tc.c != nil, dropped, tc.wantDropped)
		}
		// A second write finds nothing left.
		if _, dropped, _ := v.f.WriteAs(v.ctx, fh, 1, []byte("y"), as(tc.c), false); dropped {
			t.Errorf("mode %o caps %v: second write dropped again", tc.mode, tc.caps)
		}
		v.release(fh)
	}
}

// TestKillPrivCache: what a write must drop is read from metadata once per
// in-memory inode, not per write: a change made behind fs's back (straight
// in fs/meta) goes unnoticed, which proves writes do not look. Every
// change made through fs that can set privileges again (chmod, chown,
// setxattr of security.capability, truncate) resets it, so the next write
// drops them again.
func TestKillPrivCache(t *testing.T) {
	v := newVol(t, volConfig{})
	ino, fh := privFile(v, "f", 0o666, false)
	defer v.release(fh)
	write := func(what string, wantMode uint32, wantCaps bool) {
		t.Helper()
		if _, _, err := v.f.WriteAs(v.ctx, fh, 0, []byte("data"), as(outsider), false); err != nil {
			t.Fatal(err)
		}
		if mode, caps := privsOf(v, ino); mode != wantMode || caps != wantCaps {
			t.Errorf("%s: mode %o caps %v, want %o caps %v", what, mode, caps, wantMode, wantCaps)
		}
	}
	behindBack := func(mode uint32, caps bool) {
		t.Helper()
		if _, err := v.m.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetMode, Mode: mode}); err != nil {
			t.Fatal(err)
		}
		if caps {
			if err := v.m.SetXattr(v.ctx, &meta.Root, ino, meta.XattrCaps, capsValue, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("first write, nothing to drop", 0o666, false)

	behindBack(0o4777, true)
	write("write after a change behind fs's back (cached: nothing to drop)", 0o4777, true)

	for _, tc := range []struct {
		name  string
		reset func() error
	}{
		{"chmod", func() error {
			_, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetMode, Mode: 0o4777}, 0)
			return err
		}},
		{"chown", func() error {
			_, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetUid, Uid: 0}, 0)
			return err
		}},
		{"setxattr security.capability", func() error {
			return v.f.SetXattr(v.ctx, &meta.Root, ino, meta.XattrCaps, capsValue, 0)
		}},
		{"truncate", func() error {
			_, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetSize, Size: 100}, fh)
			return err
		}},
	} {
		// Clean slate, known to the cache: a write that drops everything.
		behindBack(0o777, false)
		if _, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetMode, Mode: 0o777}, 0); err != nil {
			t.Fatal(err)
		}
		write("before "+tc.name, 0o777, false)
		// Set privileges behind fs's back, then the change through fs
		// (which may itself drop some: chown and truncate do).
		behindBack(0o4777, true)
		if err := tc.reset(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		behindBack(0o4777, true)
		write("write after "+tc.name, 0o777, false)
	}
}

// TestKillPrivPrimed: creating a file, or opening one for writing, learns
// its privileges in the read it makes anyway, so not even the first write
// reads them: a change behind fs's back right after goes unnoticed.
func TestKillPrivPrimed(t *testing.T) {
	v := newVol(t, volConfig{})
	for _, how := range []string{"create", "open"} {
		ino, fh := v.create(meta.RootIno, how, syscall.O_RDWR)
		if how == "open" {
			v.release(fh)
			if _, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetMode, Mode: 0o666}, 0); err != nil {
				t.Fatal(err)
			}
			fh = v.openFile(ino, syscall.O_WRONLY)
		}
		if _, err := v.m.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetMode, Mode: 0o4777}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := v.f.WriteAs(v.ctx, fh, 0, []byte("x"), as(outsider), false); err != nil {
			t.Fatal(err)
		}
		if mode, _ := privsOf(v, ino); mode != 0o4777 {
			t.Errorf("%s: the first write read the privileges again (mode %o)", how, mode)
		}
		v.release(fh)
	}
}

// TestKillPrivEpoch: privileges read before a change that may set them
// again committed are not kept, even when the change found no in-memory
// inode to forget them on.
func TestKillPrivEpoch(t *testing.T) {
	v := newVol(t, volConfig{})
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	defer v.release(fh)
	in := v.f.lookupInode(ino)
	v.f.forgetPrivs(ino)
	epoch := v.f.privEpoch.Load()
	v.f.forgetPrivs(ino + 1) // a chmod of any file commits meanwhile
	v.f.knowPrivs(in, meta.Privs{Mode: syscall.S_IFREG | 0o644}, epoch)
	if _, known := in.knownPrivs(); known {
		t.Error("privileges read before a chmod were kept")
	}
	v.f.knowPrivs(in, meta.Privs{Mode: syscall.S_IFREG | 0o644}, v.f.privEpoch.Load())
	if _, known := in.knownPrivs(); !known {
		t.Error("privileges read after the last chmod were not kept")
	}
}
