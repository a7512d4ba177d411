package meta

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

// capsValue is a valid vfs_cap_data (revision 2, cap_net_raw effective).
var capsValue = []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// TestKillPriv: what writes (DropPrivs), truncations and chowns (SetAttr)
// drop, as on Linux: setuid always for a caller without CAP_FSETID, setgid
// with group execute or for a caller outside the file's group, file
// capabilities for everyone; a caller with CAP_FSETID (nil for writes)
// keeps the bits.
func TestKillPriv(t *testing.T) {
	const ug = syscall.S_ISUID | syscall.S_ISGID
	// Every file is alice's (uid 1000, gid 1000); outsider is in no group of it.
	outsider := Caller{Uid: 1002, Gid: 1002, Groups: []uint32{7}}
	member := Caller{Uid: 1003, Gid: 1003, Groups: []uint32{1000}}
	rootNoFsetid := Caller{Uid: 0, Gid: 0}
	type op int
	const (
		write    op = iota // DropPrivs by c (nil: privileged writer)
		truncate           // SetAttr SetSize, KillSuidgid when kill
		chown              // SetAttr SetGid to the file's own group
	)
	tests := []struct {
		name     string
		op       op
		c        *Caller
		kill     bool // truncate: the caller lacks CAP_FSETID
		mode     uint32
		caps     bool
		wantMode uint32
		wantCaps bool
	}{
		{name: "write by outsider clears suid", op: write, c: &outsider, mode: 0o4777, wantMode: 0o777},
		{name: "write by outsider clears sgid with group exec", op: write, c: &outsider, mode: 0o2777, wantMode: 0o777},
		{name: "write by outsider clears sgid without group exec", op: write, c: &outsider, mode: 0o2767, wantMode: 0o767},
		{name: "write by member clears sgid with group exec", op: write, c: &member, mode: 0o2777, wantMode: 0o777},
		{name: "write by member keeps sgid without group exec", op: write, c: &member, mode: 0o2767, wantMode: 0o2767},
		{name: "write by member clears suid keeps sgid without group exec", op: write, c: &member, mode: 0o6767, wantMode: 0o2767},
		{name: "write by owner clears both", op: write, c: &alice, mode: 0o6775, wantMode: 0o775},
		{name: "write by root without CAP_FSETID outside the group", op: write, c: &rootNoFsetid, mode: 0o6767, wantMode: 0o767},
		{name: "write by privileged writer keeps both", op: write, c: nil, mode: 0o6777, wantMode: 0o6777},
		{name: "write by privileged writer drops caps", op: write, c: nil, mode: 0o4755, caps: true, wantMode: 0o4755},
		{name: "write by outsider drops caps and suid", op: write, c: &outsider, mode: 0o4777, caps: true, wantMode: 0o777},
		{name: "write of a plain file changes nothing", op: write, c: &outsider, mode: 0o666, wantMode: 0o666},
		{name: "truncate without CAP_FSETID clears suid", op: truncate, c: &outsider, kill: true, mode: 0o4777, wantMode: 0o777},
		{name: "truncate without CAP_FSETID by member keeps sgid without group exec", op: truncate, c: &member, kill: true, mode: 0o2767, wantMode: 0o2767},
		{name: "truncate with CAP_FSETID keeps suid", op: truncate, c: &Root, mode: 0o6777, wantMode: 0o6777},
		{name: "truncate with CAP_FSETID drops caps", op: truncate, c: &Root, mode: 0o755, caps: true, wantMode: 0o755},
		{name: "chown by root to the same group clears suid and caps", op: chown, c: &Root, mode: 0o4755, caps: true, wantMode: 0o755},
		{name: "chown by root keeps sgid without group exec", op: chown, c: &Root, mode: 0o2745, wantMode: 0o2745},
		{name: "chown by root clears sgid with group exec", op: chown, c: &Root, mode: 0o2755, wantMode: 0o755},
		{name: "chown by owner clears suid", op: chown, c: &alice, mode: 0o4755, wantMode: 0o755},
	}
	v := newVolume(t, nil)
	v.openRoot()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := v.mknod(alice, RootIno, "k"+string(rune('A'+i)), syscall.S_IFREG|0o644)
			if _, err := v.m.SetAttr(v.ctx, &Root, a.Ino, SetAttrIn{Valid: SetMode, Mode: tc.mode}); err != nil {
				t.Fatal(err)
			}
			if tc.caps {
				if err := v.m.SetXattr(v.ctx, &Root, a.Ino, XattrCaps, capsValue, 0); err != nil {
					t.Fatal(err)
				}
			}
			before := v.attr(a.Ino)
			if before.Mode&ug != tc.mode&ug {
				t.Fatalf("setup: mode %o", before.Mode)
			}
			p, err := v.m.Privs(v.ctx, a.Ino)
			if err != nil || p.Mode != before.Mode || p.Gid != before.Gid || p.Caps != tc.caps {
				t.Fatalf("Privs = %+v, %v; inode mode %o gid %d, caps %v", p, err, before.Mode, before.Gid, tc.caps)
			}
			time.Sleep(time.Microsecond)
			switch tc.op {
			case write:
				drops := p.Drops(tc.c)
				left, err := v.m.DropPrivs(v.ctx, a.Ino, tc.c)
				if err != nil {
					t.Fatal(err)
				}
				if after := v.attr(a.Ino); left.Mode != after.Mode || left.Caps != tc.wantCaps {
					t.Errorf("DropPrivs returned %+v, inode mode is %o", left, after.Mode)
				}
				if changed := tc.caps || tc.wantMode != tc.mode; drops != changed {
					t.Errorf("Drops = %v, but the write changed something: %v", drops, changed)
				}
			case truncate:
				_, err = v.m.SetAttr(v.ctx, tc.c, a.Ino, SetAttrIn{Valid: SetSize, Size: 0, OpenForWrite: true, KillSuidgid: tc.kill})
			case chown:
				_, err = v.m.SetAttr(v.ctx, tc.c, a.Ino, SetAttrIn{Valid: SetGid, Gid: alice.Gid})
			}
			if err != nil {
				t.Fatal(err)
			}
			after := v.attr(a.Ino)
			if after.Mode != syscall.S_IFREG|tc.wantMode {
				t.Errorf("mode %o, want %o", after.Mode&0o7777, tc.wantMode)
			}
			_, err = v.m.GetXattr(v.ctx, &Root, a.Ino, XattrCaps)
			if gotCaps := err == nil; gotCaps != tc.wantCaps {
				t.Errorf("security.capability present: %v, want %v (%v)", gotCaps, tc.wantCaps, err)
			} else if err != nil && !errors.Is(err, syscall.ENODATA) {
				t.Errorf("getxattr: %v", err)
			}
			changed := tc.caps || tc.wantMode != tc.mode
			if tc.op == write && changed != (after.Ctime > before.Ctime) {
				t.Errorf("ctime %d -> %d; something dropped: %v", before.Ctime, after.Ctime, changed)
			}
		})
	}
}
