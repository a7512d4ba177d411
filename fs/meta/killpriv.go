package meta

import (
	"context"
	"errors"
	"syscall"
)

// XattrCaps is the extended attribute holding a file's capabilities
// (setcap(8)); writes, truncations and chowns remove it, as on Linux.
const XattrCaps = "security.capability"

// Privs is what a write to a file may have to drop: its setuid and setgid
// bits and its file capabilities.
type Privs struct {
	Mode uint32 // the file's mode
	Gid  uint32 // the file's group
	Caps bool   // security.capability is set
}

// Drops reports whether a write by c drops something of p: the
// capabilities always, setuid and setgid only when c is not nil, i.e. the
// writer lacks CAP_FSETID.
func (p Privs) Drops(c *Caller) bool {
	return p.Caps || c != nil && p.Mode&syscall.S_IFMT == syscall.S_IFREG &&
		killSuidgid(p.Mode, func() bool { return c.inGroup(p.Gid) }) != p.Mode
}

// killSuidgid returns mode without the bits that a write, truncation or
// chown by a caller without CAP_FSETID clears, as the Linux VFS does
// (setattr_should_drop_suidgid, setattr_should_drop_sgid): setuid always;
// setgid when group execute is set (without it, setgid marks mandatory
// locking, not a privilege) or when the caller is not in the file's group
// (inGroup false; asked only when that decides).
func killSuidgid(mode uint32, inGroup func() bool) uint32 {
	mode &^= syscall.S_ISUID
	if mode&syscall.S_ISGID != 0 && (mode&0o010 != 0 || !inGroup()) {
		mode &^= syscall.S_ISGID
	}
	return mode
}

// dropCaps removes a's file capabilities; it reports whether there were any.
func (x *tx) dropCaps(a *Attr) (bool, error) {
	if a.hasNo(FlagNoXattrs) {
		return false, nil
	}
	k := keyInoName(pXattr, a.Ino, XattrCaps)
	if _, err := x.t.Get(k); errors.Is(err, ErrKeyNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, x.del(k)
}

// privs reads what a write to ino may have to drop.
func (x *tx) privs(a *Attr) (Privs, error) {
	p := Privs{Mode: a.Mode, Gid: a.Gid}
	if a.hasNo(FlagNoXattrs) {
		return p, nil
	}
	_, err := x.t.Get(keyInoName(pXattr, a.Ino, XattrCaps))
	switch {
	case err == nil:
		p.Caps = true
	case !errors.Is(err, ErrKeyNotFound):
		return Privs{}, err
	}
	return p, nil
}

// Privs returns what a write to ino may have to drop.
func (m *Meta) Privs(ctx context.Context, ino uint64) (Privs, error) {
	_, p, err := m.GetAttrPrivs(ctx, ino)
	return p, err
}

// GetAttrPrivs returns ino's attributes and what a write to it may have to
// drop, from one snapshot.
func (m *Meta) GetAttrPrivs(ctx context.Context, ino uint64) (*Attr, Privs, error) {
	var a *Attr
	var p Privs
	err := m.view(ctx, func(x *tx) error {
		var err error
		if a, err = x.inode(ino); err != nil {
			return err
		}
		p, err = x.privs(a)
		return err
	})
	return a, p, err
}

// DropPrivs drops, in one transaction, what a write to ino drops on Linux:
// the file capabilities whoever writes, and with c not nil (a writer
// without CAP_FSETID) setuid and setgid as killSuidgid says. ctime changes
// only if something was dropped. It returns what is left.
func (m *Meta) DropPrivs(ctx context.Context, ino uint64, c *Caller) (Privs, error) {
	var p Privs
	err := m.update(ctx, func(x *tx) error {
		a, err := x.inode(ino)
		if err != nil {
			return err
		}
		changed, err := x.dropCaps(a)
		if err != nil {
			return err
		}
		if c != nil && a.IsRegular() {
			if mode := killSuidgid(a.Mode, func() bool { return c.inGroup(a.Gid) }); mode != a.Mode {
				a.Mode, changed = mode, true
			}
		}
		if changed {
			x.touchCtime(a)
		}
		p, err = x.privs(a)
		return err
	})
	return p, err
}
