package meta

import (
	"syscall"
	"testing"
	"time"
)

func TestSetAttr(t *testing.T) {
	member := Caller{Uid: 1000, Gid: 1000, Groups: []uint32{50}}
	// Every case starts from a fresh inode of alice's (uid 1000, gid 1000).
	type check func(t *testing.T, before, after *Attr)
	mode := func(want uint32) check {
		return func(t *testing.T, _, a *Attr) {
			t.Helper()
			if a.Mode != want {
				t.Errorf("mode %o, want %o", a.Mode, want)
			}
		}
	}
	owner := func(uid, gid uint32) check {
		return func(t *testing.T, _, a *Attr) {
			t.Helper()
			if a.Uid != uid || a.Gid != gid {
				t.Errorf("owner %d:%d, want %d:%d", a.Uid, a.Gid, uid, gid)
			}
		}
	}
	times := func(atime, mtime int64) check {
		return func(t *testing.T, _, a *Attr) {
			t.Helper()
			if a.Atime != atime || a.Mtime != mtime {
				t.Errorf("atime %d mtime %d, want %d %d", a.Atime, a.Mtime, atime, mtime)
			}
		}
	}
	timesNow := func(t *testing.T, b, a *Attr) {
		t.Helper()
		if a.Atime <= b.Atime || a.Mtime <= b.Mtime {
			t.Errorf("times not set to now: atime %d->%d mtime %d->%d", b.Atime, a.Atime, b.Mtime, a.Mtime)
		}
	}
	size := func(want uint64) check {
		return func(t *testing.T, b, a *Attr) {
			t.Helper()
			if a.Size != want {
				t.Errorf("size %d, want %d", a.Size, want)
			}
			if a.Mtime <= b.Mtime {
				t.Errorf("truncate did not update mtime")
			}
		}
	}
	tests := []struct {
		name  string
		c     Caller
		typ   uint32 // type of the inode to change; it starts as alice's, mode 0644 (0755 dirs)
		start uint32 // extra start mode bits
		in    SetAttrIn
		want  syscall.Errno
		check check
	}{
		{name: "chmod by owner", c: alice, in: SetAttrIn{Valid: SetMode, Mode: 0o600}, check: mode(syscall.S_IFREG | 0o600)},
		{name: "chmod keeps type bits", c: alice, in: SetAttrIn{Valid: SetMode, Mode: syscall.S_IFDIR | 0o600}, check: mode(syscall.S_IFREG | 0o600)},
		{name: "chmod by non-owner", c: bob, in: SetAttrIn{Valid: SetMode, Mode: 0o777}, want: syscall.EPERM},
		{name: "chmod by root", c: Root, in: SetAttrIn{Valid: SetMode, Mode: 0o4755}, check: mode(syscall.S_IFREG | 0o4755)},
		{name: "chmod setgid by owner outside group", c: Caller{Uid: alice.Uid, Gid: 2000}, in: SetAttrIn{Valid: SetMode, Mode: 0o2755}, check: mode(syscall.S_IFREG | 0o755)},
		{name: "chmod sticky dir", c: alice, typ: syscall.S_IFDIR, in: SetAttrIn{Valid: SetMode, Mode: 0o1777}, check: mode(syscall.S_IFDIR | 0o1777)},
		{name: "chown by non-root", c: alice, in: SetAttrIn{Valid: SetUid, Uid: bob.Uid}, want: syscall.EPERM},
		{name: "chown to self by non-root", c: alice, in: SetAttrIn{Valid: SetUid, Uid: alice.Uid}, check: owner(alice.Uid, alice.Gid)},
		{name: "chown by other non-root", c: bob, in: SetAttrIn{Valid: SetUid, Uid: bob.Uid}, want: syscall.EPERM},
		{name: "chgrp to own group", c: member, in: SetAttrIn{Valid: SetGid, Gid: 50}, check: owner(alice.Uid, 50)},
		{name: "chgrp to foreign group", c: alice, in: SetAttrIn{Valid: SetGid, Gid: 51}, want: syscall.EPERM},
		{name: "chgrp by non-owner", c: bob, in: SetAttrIn{Valid: SetGid, Gid: bob.Gid}, want: syscall.EPERM},
		{name: "chown by root", c: Root, in: SetAttrIn{Valid: SetUid | SetGid, Uid: 7, Gid: 8}, check: owner(7, 8)},
		{name: "chown clears suid", c: Root, start: syscall.S_ISUID | 0o111, in: SetAttrIn{Valid: SetUid, Uid: 7},
			check: mode(syscall.S_IFREG | 0o755)},
		{name: "chown clears group-exec setgid", c: Root, start: syscall.S_ISGID | 0o111, in: SetAttrIn{Valid: SetGid, Gid: 9},
			check: mode(syscall.S_IFREG | 0o755)},
		{name: "chown keeps setgid without group exec", c: Root, start: syscall.S_ISGID, in: SetAttrIn{Valid: SetUid, Uid: 7},
			check: mode(syscall.S_IFREG | syscall.S_ISGID | 0o644)},
		{name: "chgrp by owner clears suid", c: member, start: syscall.S_ISUID | 0o100, in: SetAttrIn{Valid: SetGid, Gid: 50},
			check: mode(syscall.S_IFREG | 0o744)},
		{name: "chown of dir keeps setgid", c: Root, typ: syscall.S_IFDIR, start: syscall.S_ISGID, in: SetAttrIn{Valid: SetUid, Uid: 7},
			check: mode(syscall.S_IFDIR | syscall.S_ISGID | 0o755)},
		{name: "utimes explicit by owner", c: alice, in: SetAttrIn{Valid: SetAtime | SetMtime, Atime: 1e9, Mtime: 2e9}, check: times(1e9, 2e9)},
		{name: "utimes explicit by root", c: Root, in: SetAttrIn{Valid: SetAtime | SetMtime, Atime: 3, Mtime: 4}, check: times(3, 4)},
		{name: "utimes explicit by non-owner with write", c: bob, start: 0o022, in: SetAttrIn{Valid: SetMtime, Mtime: 5}, want: syscall.EPERM},
		{name: "utimes now by non-owner with write", c: bob, start: 0o022, in: SetAttrIn{Valid: SetAtimeNow | SetMtimeNow}, check: timesNow},
		{name: "utimes now by non-owner without write", c: bob, in: SetAttrIn{Valid: SetAtimeNow | SetMtimeNow}, want: syscall.EACCES},
		{name: "truncate dir", c: Root, typ: syscall.S_IFDIR, in: SetAttrIn{Valid: SetSize, Size: 0}, want: syscall.EISDIR},
		{name: "truncate fifo", c: Root, typ: syscall.S_IFIFO, in: SetAttrIn{Valid: SetSize, Size: 0}, want: syscall.EINVAL},
		{name: "truncate symlink", c: Root, typ: syscall.S_IFLNK, in: SetAttrIn{Valid: SetSize, Size: 0}, want: syscall.EINVAL},
		{name: "truncate too big", c: Root, in: SetAttrIn{Valid: SetSize, Size: MaxFileSize + 1}, want: syscall.EFBIG},
		{name: "truncate to max", c: Root, in: SetAttrIn{Valid: SetSize, Size: MaxFileSize}, check: size(MaxFileSize)},
		{name: "truncate up by owner", c: alice, in: SetAttrIn{Valid: SetSize, Size: 12345}, check: size(12345)},
		{name: "truncate by non-owner without write", c: bob, in: SetAttrIn{Valid: SetSize, Size: 1}, want: syscall.EACCES},
		{name: "truncate by non-owner through an open file", c: bob, in: SetAttrIn{Valid: SetSize, Size: 1, OpenForWrite: true}, check: size(1)},
		{name: "failed chmod changes nothing", c: bob, in: SetAttrIn{Valid: SetMode | SetSize, Mode: 0o777, Size: 99, OpenForWrite: true}, want: syscall.EPERM},
	}
	v := newVolume(t, nil)
	v.openRoot()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			typ := tc.typ
			if typ == 0 {
				typ = syscall.S_IFREG
			}
			perm := uint32(0o644)
			if typ == syscall.S_IFDIR {
				perm = 0o755
			}
			a := v.mknod(alice, RootIno, "n"+string(rune('A'+i)), typ|perm)
			if tc.start != 0 {
				if _, err := v.m.SetAttr(v.ctx, &Root, a.Ino, SetAttrIn{Valid: SetMode, Mode: perm | tc.start}); err != nil {
					t.Fatal(err)
				}
			}
			before := v.attr(a.Ino)
			time.Sleep(time.Microsecond)
			got, err := v.m.SetAttr(v.ctx, &tc.c, a.Ino, tc.in)
			wantErrno(t, "setattr", err, tc.want)
			after := v.attr(a.Ino)
			if tc.want != 0 {
				if *after != *before {
					t.Errorf("failed setattr changed the inode: %+v -> %+v", before, after)
				}
				return
			}
			if *got != *after {
				t.Errorf("setattr returned %+v, inode is %+v", got, after)
			}
			if after.Ctime <= before.Ctime {
				t.Errorf("ctime not updated")
			}
			if tc.check != nil {
				tc.check(t, before, after)
			}
		})
	}
}

// TestSetAttrGrowOnly: a grow-only size change (fallocate) extends a file
// but never cuts one that is already as long or longer, whatever size the
// caller saw before.
func TestSetAttrGrowOnly(t *testing.T) {
	v := newVolume(t, nil)
	v.openRoot()
	a := v.mknod(alice, RootIno, "f", syscall.S_IFREG|0o644)
	for _, tc := range []struct {
		size, want uint64
	}{
		{1000, 1000}, // grows
		{500, 1000},  // would shrink: left alone
		{1000, 1000}, // as long already
		{4096, 4096},
	} {
		got, err := v.m.SetAttr(v.ctx, &alice, a.Ino, SetAttrIn{Valid: SetSize, Size: tc.size, GrowOnly: true, OpenForWrite: true})
		if err != nil {
			t.Fatalf("grow-only to %d: %v", tc.size, err)
		}
		if got.Size != tc.want || v.attr(a.Ino).Size != tc.want {
			t.Errorf("grow-only to %d: size %d (stored %d), want %d", tc.size, got.Size, v.attr(a.Ino).Size, tc.want)
		}
	}
}

// TestTruncateStats: truncation adjusts the byte total exactly.
func TestTruncateStats(t *testing.T) {
	v := newVolume(t, nil)
	f := v.mkfile(RootIno, "f")
	base := v.m.Stats().Bytes
	for _, sz := range []uint64{100, 1 << 30, 5, 0, 77} {
		if _, err := v.m.SetAttr(v.ctx, &Root, f.Ino, SetAttrIn{Valid: SetSize, Size: sz}); err != nil {
			t.Fatal(err)
		}
		if got := v.m.Stats().Bytes - base; got != int64(sz) {
			t.Errorf("after truncate to %d stats count %d bytes", sz, got)
		}
	}
}
