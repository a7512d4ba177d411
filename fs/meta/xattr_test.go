package meta

import (
	"bytes"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestXattr(t *testing.T) {
	v := newVolume(t, nil)
	v.openRoot()
	f := v.mknod(alice, RootIno, "f", syscall.S_IFREG|0o644)
	d := v.mknod(alice, RootIno, "d", syscall.S_IFDIR|0o755)
	l := v.mknod(alice, RootIno, "l", syscall.S_IFLNK|0o777)
	big := bytes.Repeat([]byte{'v'}, MaxXattrValue)
	tests := []struct {
		name  string
		op    string // set, get, remove
		c     Caller
		ino   uint64
		xname string
		value []byte
		flags uint32
		want  syscall.Errno
	}{
		{"get missing", "get", alice, f.Ino, "user.a", nil, 0, syscall.ENODATA},
		{"remove missing", "remove", alice, f.Ino, "user.a", nil, 0, syscall.ENODATA},
		{"replace missing", "set", alice, f.Ino, "user.a", []byte("x"), XattrReplace, syscall.ENODATA},
		{"set", "set", alice, f.Ino, "user.a", []byte("one"), 0, 0},
		{"get", "get", alice, f.Ino, "user.a", []byte("one"), 0, 0},
		{"create existing", "set", alice, f.Ino, "user.a", []byte("two"), XattrCreate, syscall.EEXIST},
		{"unchanged after EEXIST", "get", alice, f.Ino, "user.a", []byte("one"), 0, 0},
		{"replace existing", "set", alice, f.Ino, "user.a", []byte("two"), XattrReplace, 0},
		{"replaced value", "get", alice, f.Ino, "user.a", []byte("two"), 0, 0},
		{"create new", "set", alice, f.Ino, "user.b", []byte{}, XattrCreate, 0},
		{"empty value", "get", alice, f.Ino, "user.b", []byte{}, 0, 0},
		{"binary value", "set", alice, f.Ino, "user.bin", []byte{0, 1, 2, 0, 255}, 0, 0},
		{"binary value back", "get", alice, f.Ino, "user.bin", []byte{0, 1, 2, 0, 255}, 0, 0},
		{"64 KiB value", "set", alice, f.Ino, "user.big", big, 0, 0},
		{"64 KiB value back", "get", alice, f.Ino, "user.big", big, 0, 0},
		{"value over 64 KiB", "set", alice, f.Ino, "user.huge", append(big, 'x'), 0, syscall.E2BIG},
		{"name 255 bytes", "set", alice, f.Ino, "user." + strings.Repeat("n", 250), []byte("x"), 0, 0},
		{"name 256 bytes set", "set", alice, f.Ino, "user." + strings.Repeat("n", 251), []byte("x"), 0, syscall.ERANGE},
		{"name 256 bytes get", "get", alice, f.Ino, "user." + strings.Repeat("n", 251), nil, 0, syscall.ERANGE},
		{"empty name", "set", alice, f.Ino, "", []byte("x"), 0, syscall.ERANGE},
		{"system namespace", "set", Root, f.Ino, "system.posix_acl_access", []byte("x"), 0, syscall.EOPNOTSUPP},
		{"system namespace get", "get", Root, f.Ino, "system.posix_acl_access", nil, 0, syscall.EOPNOTSUPP},
		{"unknown namespace", "set", Root, f.Ino, "foo.bar", []byte("x"), 0, syscall.EOPNOTSUPP},
		{"trusted by non-root", "set", alice, f.Ino, "trusted.t", []byte("x"), 0, syscall.EPERM},
		{"trusted by root", "set", Root, f.Ino, "trusted.t", []byte("root"), 0, 0},
		{"trusted get by non-root", "get", alice, f.Ino, "trusted.t", nil, 0, syscall.EPERM},
		{"trusted get by root", "get", Root, f.Ino, "trusted.t", []byte("root"), 0, 0},
		{"security by non-root", "set", alice, f.Ino, "security.s", []byte("x"), 0, syscall.EPERM},
		{"security by root", "set", Root, f.Ino, "security.s", []byte("sec"), 0, 0},
		{"user by non-owner without write", "set", bob, f.Ino, "user.bob", []byte("x"), 0, syscall.EACCES},
		{"user get by other with read", "get", bob, f.Ino, "user.a", []byte("two"), 0, 0},
		{"user on a directory", "set", alice, d.Ino, "user.d", []byte("dir"), 0, 0},
		{"user on a symlink", "set", alice, l.Ino, "user.l", []byte("x"), 0, syscall.EPERM},
		{"both flags", "set", alice, f.Ino, "user.c", []byte("x"), XattrCreate | XattrReplace, syscall.EINVAL},
		{"missing inode", "set", Root, 999999, "user.a", []byte("x"), 0, syscall.ENOENT},
		{"remove", "remove", alice, f.Ino, "user.b", nil, 0, 0},
		{"removed", "get", alice, f.Ino, "user.b", nil, 0, syscall.ENODATA},
		{"remove again", "remove", alice, f.Ino, "user.b", nil, 0, syscall.ENODATA},
		{"remove trusted by non-root", "remove", alice, f.Ino, "trusted.t", nil, 0, syscall.EPERM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var before *Attr
			if tc.ino != 999999 {
				before = v.attr(tc.ino)
			}
			time.Sleep(time.Microsecond)
			var err error
			switch tc.op {
			case "set":
				err = v.m.SetXattr(v.ctx, &tc.c, tc.ino, tc.xname, tc.value, tc.flags)
			case "remove":
				err = v.m.RemoveXattr(v.ctx, &tc.c, tc.ino, tc.xname)
			case "get":
				var got []byte
				got, err = v.m.GetXattr(v.ctx, &tc.c, tc.ino, tc.xname)
				if err == nil && !bytes.Equal(got, tc.value) {
					t.Errorf("value %q, want %q", trunc(got), trunc(tc.value))
				}
			}
			wantErrno(t, tc.op, err, tc.want)
			if tc.ino == 999999 {
				return
			}
			after := v.attr(tc.ino)
			changed := after.Ctime != before.Ctime
			if wantChange := tc.op != "get" && tc.want == 0; changed != wantChange {
				t.Errorf("ctime changed: %v, want %v", changed, wantChange)
			}
			if after.Mtime != before.Mtime {
				t.Errorf("xattr %s changed mtime", tc.op)
			}
		})
	}
	list, err := v.m.ListXattr(v.ctx, &Root, f.Ino)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(list)
	want := []string{"security.s", "trusted.t", "user." + strings.Repeat("n", 250), "user.a", "user.big", "user.bin"}
	slices.Sort(want)
	if !slices.Equal(list, want) {
		t.Errorf("list = %v, want %v", list, want)
	}
	if list, _ := v.m.ListXattr(v.ctx, &Root, d.Ino); !slices.Equal(list, []string{"user.d"}) {
		t.Errorf("list of d = %v, want [user.d]", list)
	}
	// Reaping an inode removes its attributes.
	if _, err := v.m.Unlink(v.ctx, &Root, RootIno, "f"); err != nil {
		t.Fatal(err)
	}
	v.reapAll()
	if _, err := v.m.ListXattr(v.ctx, &Root, f.Ino); err != syscall.ENOENT {
		t.Errorf("list of a reaped inode: %v, want ENOENT", err)
	}
	leftover := 0
	_ = v.kv.View(v.ctx, func(t Txn) error {
		return t.Scan(keyIno(pXattr, f.Ino), nil, func(k, _ []byte) (bool, error) { leftover++; return true, nil })
	})
	if leftover != 0 {
		t.Errorf("%d xattr records of the reaped inode remain", leftover)
	}
}

// TestListXattrHidesTrustedFromNonRoot: as on Linux, listxattr(2) by an
// unprivileged caller does not show trusted.* names, which it could not read.
func TestListXattrHidesTrustedFromNonRoot(t *testing.T) {
	v := newVolume(t, nil)
	v.openRoot()
	f := v.mknod(alice, RootIno, "f", syscall.S_IFREG|0o644)
	for _, n := range []string{"user.u", "trusted.t"} {
		if err := v.m.SetXattr(v.ctx, &Root, f.Ino, n, []byte("x"), 0); err != nil {
			t.Fatal(err)
		}
	}
	got, err := v.m.ListXattr(v.ctx, &alice, f.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"user.u"}) {
		t.Errorf("non-root listxattr = %v, want [user.u] (trusted.* hidden)", got)
	}
	got, _ = v.m.ListXattr(v.ctx, &Root, f.Ino)
	slices.Sort(got)
	if !slices.Equal(got, []string{"trusted.t", "user.u"}) {
		t.Errorf("root listxattr = %v", got)
	}
}

func trunc(b []byte) []byte {
	if len(b) > 20 {
		return b[:20]
	}
	return b
}
