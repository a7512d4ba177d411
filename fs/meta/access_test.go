package meta

import (
	"errors"
	"syscall"
	"testing"
)

// TestAccess checks the permission rule of Access, and that a LazyCaller's
// groups are read only when the decision depends on them: the owner's
// bits settle it, or the group and other bits agree on what is asked.
func TestAccess(t *testing.T) {
	file := func(mode, uid, gid uint32) *Attr {
		return &Attr{Mode: syscall.S_IFREG | mode, Uid: uid, Gid: gid}
	}
	for _, tc := range []struct {
		name     string
		a        *Attr
		uid, gid uint32
		groups   []uint32
		mask     uint32
		want     error
		loads    bool // the groups must be read
	}{
		{"owner reads own file", file(0o600, 1000, 1000), 1000, 1000, nil, MayRead, nil, false},
		{"owner bits win over others'", file(0o066, 1000, 50), 1000, 1000, []uint32{50}, MayRead, syscall.EACCES, false},
		{"others may read 0644", file(0o644, 0, 0), 1000, 1000, nil, MayRead, nil, false},
		{"nobody else may write 0644", file(0o644, 0, 0), 1000, 1000, nil, MayWrite, syscall.EACCES, false},
		{"primary group", file(0o640, 0, 1000), 1000, 1000, nil, MayRead, nil, false},
		{"supplementary group reads 0640", file(0o640, 0, 50), 1000, 1000, []uint32{7, 50}, MayRead, nil, true},
		{"not in the group: 0640", file(0o640, 0, 50), 1000, 1000, []uint32{7}, MayRead, syscall.EACCES, true},
		{"group bits win over others' (0604)", file(0o604, 0, 50), 1000, 1000, []uint32{50}, MayRead, syscall.EACCES, true},
		{"0604 outside the group", file(0o604, 0, 50), 1000, 1000, []uint32{51}, MayRead, nil, true},
		{"group and other agree on read (0674)", file(0o674, 0, 50), 1000, 1000, []uint32{50}, MayRead, nil, false},
		{"but not on write (0674)", file(0o674, 0, 50), 1000, 1000, []uint32{50}, MayWrite, nil, true},
		{"directory search via group", &Attr{Mode: syscall.S_IFDIR | 0o710, Gid: 50}, 1000, 1000, []uint32{50}, MayExec, nil, true},
		{"root reads anything", file(0o000, 1000, 1000), 0, 0, nil, MayRead, nil, false},
		{"root needs an x bit to execute", file(0o600, 1000, 1000), 0, 0, nil, MayExec, syscall.EACCES, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loaded := 0
			c := LazyCaller(tc.uid, tc.gid, func() []uint32 { loaded++; return tc.groups })
			if err := Access(tc.a, c, tc.mask); !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Errorf("Access = %v, want %v", err, tc.want)
			}
			if (loaded > 0) != tc.loads {
				t.Errorf("groups read %d times, want read: %v", loaded, tc.loads)
			}
			// Asked again, the groups are not read again.
			_ = Access(tc.a, c, tc.mask)
			if loaded > 1 {
				t.Errorf("groups read %d times", loaded)
			}
			// A caller with its groups given decides the same.
			eager := &Caller{Uid: tc.uid, Gid: tc.gid, Groups: tc.groups}
			if err := Access(tc.a, eager, tc.mask); !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Errorf("Access with groups given = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestAccessByHandle checks the rule for reads, writes and size changes
// by file handle (NFS), against Access on the same inode: the owner passes
// whatever the mode, a read passes with execute permission, and nothing
// else changes.
func TestAccessByHandle(t *testing.T) {
	file := func(mode uint32) *Attr { return &Attr{Mode: syscall.S_IFREG | mode, Uid: 1000, Gid: 50} }
	dir := &Attr{Mode: syscall.S_IFDIR | 0o711, Uid: 0, Gid: 0}
	for _, tc := range []struct {
		name             string
		a                *Attr
		uid              uint32
		groups           []uint32
		mask             uint32
		access, byHandle error
	}{
		{"owner writes a 0444 file", file(0o444), 1000, nil, MayWrite, syscall.EACCES, nil},
		{"owner reads and writes a mode 0 file", file(0), 1000, nil, MayRead | MayWrite, syscall.EACCES, nil},
		{"owner reads a 0200 file", file(0o200), 1000, nil, MayRead, syscall.EACCES, nil},
		{"others still may not write 0444", file(0o444), 1001, nil, MayWrite, syscall.EACCES, syscall.EACCES},
		{"others still may not read 0600", file(0o600), 1001, nil, MayRead, syscall.EACCES, syscall.EACCES},
		{"others read a 0711 program", file(0o711), 1001, nil, MayRead, syscall.EACCES, nil},
		{"group reads a 0710 program", file(0o710), 1001, []uint32{50}, MayRead, syscall.EACCES, nil},
		{"outside the group: 0710", file(0o710), 1001, nil, MayRead, syscall.EACCES, syscall.EACCES},
		{"execute lets read, not write", file(0o711), 1001, nil, MayWrite, syscall.EACCES, syscall.EACCES},
		{"nor read and write together", file(0o711), 1001, nil, MayRead | MayWrite, syscall.EACCES, syscall.EACCES},
		{"search is not read for a directory", dir, 1001, nil, MayRead, syscall.EACCES, syscall.EACCES},
		{"others read 0644 as before", file(0o644), 1001, nil, MayRead, nil, nil},
		{"root as before", file(0), 0, nil, MayRead | MayWrite, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Caller{Uid: tc.uid, Gid: tc.uid, Groups: tc.groups}
			if err := Access(tc.a, c, tc.mask); !errors.Is(err, tc.access) || (err == nil) != (tc.access == nil) {
				t.Errorf("Access = %v, want %v", err, tc.access)
			}
			if err := AccessByHandle(tc.a, c, tc.mask); !errors.Is(err, tc.byHandle) || (err == nil) != (tc.byHandle == nil) {
				t.Errorf("AccessByHandle = %v, want %v", err, tc.byHandle)
			}
		})
	}
}

// TestKillSuidgidReadsGroupsOnlyForSetgid checks that a write by an
// unprivileged caller reads its groups only when the file is setgid
// without group execute, the one case where membership decides.
func TestKillSuidgidReadsGroupsOnlyForSetgid(t *testing.T) {
	for _, tc := range []struct {
		mode  uint32
		in    bool
		want  uint32
		loads bool
	}{
		{0o644, false, 0o644, false},
		{0o4755, false, 0o755, false},
		{0o2775, true, 0o775, false}, // group execute: setgid goes whoever writes
		{0o2765, true, 0o2765, true}, // member keeps it
		{0o2765, false, 0o765, true}, // non-member loses it
	} {
		loaded := false
		got := killSuidgid(tc.mode, func() bool { loaded = true; return tc.in })
		if got != tc.want || loaded != tc.loads {
			t.Errorf("killSuidgid(%o, in group %v) = %o (asked %v), want %o (asked %v)", tc.mode, tc.in, got, loaded, tc.want, tc.loads)
		}
	}
}
