package meta

import (
	"context"
	"errors"
	"strings"
	"syscall"
)

// Extended attribute limits, as on Linux.
const (
	MaxXattrName  = 255
	MaxXattrValue = 64 << 10
)

// Xattr set flags, as in setxattr(2).
const (
	XattrCreate  = 1
	XattrReplace = 2
)

// xattrAccess checks c may read (write=false) or change an attribute of a.
func xattrAccess(a *Attr, c *Caller, name string, write bool) error {
	switch {
	case strings.HasPrefix(name, "user."):
		if !a.IsRegular() && !a.IsDir() {
			if write {
				return syscall.EPERM
			}
			return syscall.ENODATA
		}
		if write {
			if a.IsDir() && a.Mode&syscall.S_ISVTX != 0 && c.Uid != 0 && c.Uid != a.Uid {
				return syscall.EPERM
			}
			return Access(a, c, MayWrite)
		}
		return Access(a, c, MayRead)
	case strings.HasPrefix(name, "trusted."):
		if c.Uid != 0 {
			return syscall.EPERM
		}
	case strings.HasPrefix(name, "security."):
		if write && c.Uid != 0 {
			return syscall.EPERM
		}
	default:
		// system.* (ACLs) and unknown namespaces are not supported.
		return syscall.EOPNOTSUPP
	}
	return nil
}

func checkXattrName(name string) error {
	if name == "" || len(name) > MaxXattrName {
		return syscall.ERANGE
	}
	return nil
}

// GetXattr returns the value of attribute name of ino.
func (m *Meta) GetXattr(ctx context.Context, c *Caller, ino uint64, name string) ([]byte, error) {
	if err := checkXattrName(name); err != nil {
		return nil, err
	}
	var out []byte
	err := m.view(ctx, func(x *tx) error {
		a, err := x.inode(ino)
		if err != nil {
			return err
		}
		if err := xattrAccess(a, c, name, false); err != nil {
			return err
		}
		if a.hasNo(FlagNoXattrs) {
			return syscall.ENODATA
		}
		v, err := x.t.Get(keyInoName(pXattr, ino, name))
		if errors.Is(err, ErrKeyNotFound) {
			return syscall.ENODATA
		}
		out = v
		return err
	})
	return out, err
}

// ListXattr returns the names of ino's attributes.
func (m *Meta) ListXattr(ctx context.Context, c *Caller, ino uint64) ([]string, error) {
	var out []string
	err := m.view(ctx, func(x *tx) error {
		if a, err := x.inode(ino); err != nil || a.hasNo(FlagNoXattrs) {
			return err
		}
		return x.t.Scan(keyIno(pXattr, ino), nil, func(k, v []byte) (bool, error) {
			name := string(k[9:])
			// As on Linux, trusted.* attributes are listed to root only.
			if c.Uid == 0 || !strings.HasPrefix(name, "trusted.") {
				out = append(out, name)
			}
			return true, nil
		})
	})
	return out, err
}

// SetXattr sets attribute name of ino, honouring XattrCreate/XattrReplace.
func (m *Meta) SetXattr(ctx context.Context, c *Caller, ino uint64, name string, value []byte, flags uint32) error {
	if len(value) > MaxXattrValue {
		return syscall.E2BIG
	}
	if flags&^(XattrCreate|XattrReplace) != 0 || flags == XattrCreate|XattrReplace {
		return syscall.EINVAL
	}
	return m.changeXattr(ctx, c, ino, name, func(x *tx, k []byte, exists bool) error {
		switch {
		case flags&XattrCreate != 0 && exists:
			return syscall.EEXIST
		case flags&XattrReplace != 0 && !exists:
			return syscall.ENODATA
		}
		return x.set(k, value)
	})
}

// RemoveXattr removes attribute name of ino.
func (m *Meta) RemoveXattr(ctx context.Context, c *Caller, ino uint64, name string) error {
	ctx = freeing(ctx)
	return m.changeXattr(ctx, c, ino, name, func(x *tx, k []byte, exists bool) error {
		if !exists {
			return syscall.ENODATA
		}
		return x.del(k)
	})
}

// changeXattr runs change on attribute name of ino (key k, set or not) in
// one transaction, once c is allowed to change it, and updates ctime.
func (m *Meta) changeXattr(ctx context.Context, c *Caller, ino uint64, name string, change func(x *tx, k []byte, exists bool) error) error {
	if err := checkXattrName(name); err != nil {
		return err
	}
	return m.update(ctx, func(x *tx) error {
		a, err := x.inode(ino)
		if err != nil {
			return err
		}
		if err := xattrAccess(a, c, name, true); err != nil {
			return err
		}
		k := keyInoName(pXattr, ino, name)
		_, err = x.t.Get(k)
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			return err
		}
		if err := change(x, k, err == nil); err != nil {
			return err
		}
		a.Flags &^= FlagNoXattrs
		x.touchCtime(a)
		return nil
	})
}
