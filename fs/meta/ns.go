package meta

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
)

// Permission bits asked of access().
const (
	MayRead  = 4
	MayWrite = 2
	MayExec  = 1
)

// maxLinks bounds a file's hard links (as ext4 does).
const maxLinks = 65000

// Access reports whether c may access a with the mask of MayRead, MayWrite
// and MayExec bits.
func Access(a *Attr, c *Caller, mask uint32) error {
	if c.Uid == 0 {
		// root needs an execute bit somewhere to execute a non-directory
		if mask&MayExec != 0 && !a.IsDir() && a.Mode&0o111 == 0 {
			return syscall.EACCES
		}
		return nil
	}
	var perm uint32
	switch {
	case c.Uid == a.Uid:
		perm = a.Mode >> 6 & 7
	case (a.Mode>>3^a.Mode)&mask == 0:
		// Group and other bits agree on what is asked: membership
		// does not matter, and the caller's groups need not be read.
		perm = a.Mode & 7
	case c.inGroup(a.Gid):
		perm = a.Mode >> 3 & 7
	default:
		perm = a.Mode & 7
	}
	if perm&mask != mask {
		return syscall.EACCES
	}
	return nil
}

// AccessByHandle is Access for a read, a write or a size change that
// comes by file handle, without an open (NFS). An NFS client checks
// permission when a file is opened (ACCESS) and then sends READs and
// WRITEs for the descriptor, so the server cannot tell them from requests
// of someone who never opened it. As Linux's knfsd does, the owner passes
// whatever the mode says: a file created with mode 0444 or 0 is written
// through the descriptor that created it (git's object files, tar
// extracting read-only files, ftruncate after fchmod(fd, 0)), and the
// owner could chmod the file anyway. A read passes for a caller who may
// execute the file: a client pages in a mode 0111 program with READs.
func AccessByHandle(a *Attr, c *Caller, mask uint32) error {
	if c.Uid == a.Uid {
		return nil
	}
	err := Access(a, c, mask)
	if err != nil && mask == MayRead && a.IsRegular() && Access(a, c, MayExec) == nil {
		return nil
	}
	return err
}

// CheckName validates a name for a new directory entry.
func CheckName(name string) error {
	switch {
	case name == "" || strings.IndexByte(name, '/') >= 0 || strings.IndexByte(name, 0) >= 0:
		return syscall.EINVAL
	case len(name) > MaxNameLen:
		return syscall.ENAMETOOLONG
	}
	return nil
}

// stickyDenies reports whether the sticky bit of dir forbids c from
// removing or replacing child.
func stickyDenies(dir, child *Attr, c *Caller) bool {
	return dir.Mode&syscall.S_ISVTX != 0 && c.Uid != 0 && c.Uid != dir.Uid && c.Uid != child.Uid
}

func (x *tx) entry(parent uint64, name string) (entry, bool, error) {
	k := keyInoName(pEntry, parent, name)
	v, err := x.t.Get(k)
	if errors.Is(err, ErrKeyNotFound) {
		return entry{}, false, nil
	}
	if err != nil {
		return entry{}, false, fmt.Errorf("read entry %q in %d: %w", name, parent, err)
	}
	e, err := decodeEntry(k, v)
	return e, err == nil, err
}

// addEntry links child into dir under name with a fresh readdir cookie.
func (x *tx) addEntry(dir *Attr, name string, child *Attr) error {
	seq := dir.NextSeq
	dir.NextSeq++
	x.touchTimes(dir)
	e := entry{child: child.Ino, seq: seq, typ: child.Type()}
	if err := x.set(keyInoName(pEntry, dir.Ino, name), e.encode()); err != nil {
		return err
	}
	ov := make([]byte, 0, 12+len(name))
	ov = append(ov, e.encode()[:8]...)
	ov = append(ov, e.encode()[16:]...)
	ov = append(ov, name...)
	if err := x.set(keyInoU64(pOrder, dir.Ino, seq), ov); err != nil {
		return err
	}
	return x.set(keyBack(child.Ino, dir.Ino, name), nil)
}

func keyBack(child, parent uint64, name string) []byte {
	return append(keyInoU64(pBack, child, parent), name...)
}

func (x *tx) removeEntry(dir *Attr, name string, e entry) error {
	x.touchTimes(dir)
	if err := x.del(keyInoName(pEntry, dir.Ino, name)); err != nil {
		return err
	}
	if err := x.del(keyBack(e.child, dir.Ino, name)); err != nil {
		return err
	}
	return x.del(keyInoU64(pOrder, dir.Ino, e.seq))
}

// dropLink decrements a's link count. At zero the inode becomes an orphan,
// kept until it is closed everywhere and then reaped; or, when closed (not
// nil) says nothing has it open, it is freed at once if that fits in x,
// and freed says so. Either way its orphan record is written only if it
// stays.
func (x *tx) dropLink(a *Attr, closed func(ino uint64) bool) (freed bool, err error) {
	if a.IsDir() {
		a.Nlink = 0
	} else if a.Nlink > 0 {
		a.Nlink--
	}
	x.touchCtime(a)
	if a.Nlink > 0 {
		return false, nil
	}
	if closed != nil && closed(a.Ino) {
		if freed, err = x.reapStep(a, false); err != nil || freed {
			return freed, err
		}
	}
	return false, x.set(keyIno(pOrphan, a.Ino), u64bytes(uint64(x.now)))
}

// Lookup finds name in directory parent.
func (m *Meta) Lookup(ctx context.Context, c *Caller, parent uint64, name string) (*Attr, error) {
	var out *Attr
	err := m.viewCached(ctx, func(x *tx) error {
		dir, err := x.dir(parent)
		if err != nil {
			return err
		}
		if err := Access(dir, c, MayExec); err != nil {
			return err
		}
		switch name {
		case ".":
			out = dir
			return nil
		case "..":
			out, err = x.inode(dir.Parent)
			return err
		}
		if len(name) > MaxNameLen {
			return syscall.ENAMETOOLONG
		}
		e, ok, err := x.entry(parent, name)
		if err != nil {
			return err
		}
		if !ok {
			return syscall.ENOENT
		}
		out, err = x.inode(e.child)
		return err
	})
	return out, err
}

// GetAttr reads an inode's attributes.
func (m *Meta) GetAttr(ctx context.Context, ino uint64) (*Attr, error) {
	var out *Attr
	err := m.viewCached(ctx, func(x *tx) error {
		var err error
		out, err = x.inode(ino)
		return err
	})
	return out, err
}

// NewNode describes an inode to create.
type NewNode struct {
	Mode   uint32 // type and permission bits, umask already applied
	Rdev   uint32
	Target string // symlink target
}

// Mknod creates a file, directory, symlink, device, fifo or socket named
// name in parent. An existing name gives EEXIST.
func (m *Meta) Mknod(ctx context.Context, c *Caller, parent uint64, name string, n NewNode) (*Attr, error) {
	if err := CheckName(name); err != nil {
		if name == "." || name == ".." {
			return nil, syscall.EEXIST
		}
		return nil, err
	}
	if name == "." || name == ".." {
		return nil, syscall.EEXIST
	}
	switch n.Mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFLNK, syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
	default:
		return nil, syscall.EINVAL
	}
	if n.Mode&syscall.S_IFMT == syscall.S_IFLNK && (len(n.Target) == 0 || len(n.Target) > 4095) {
		if len(n.Target) == 0 {
			return nil, syscall.ENOENT
		}
		return nil, syscall.ENAMETOOLONG
	}
	return m.create(ctx, c, parent, n.Mode, func(x *tx, dir, a *Attr) error {
		if _, ok, err := x.entry(parent, name); err != nil {
			return err
		} else if ok {
			return syscall.EEXIST
		}
		a.Nlink, a.Rdev = 1, n.Rdev
		d := Stats{Inodes: 1}
		switch a.Type() {
		case syscall.S_IFDIR:
			a.Nlink = 2
			a.NextSeq = firstSeq
			dir.Nlink++
			d.Dirs = 1
		case syscall.S_IFLNK:
			a.Size = uint64(len(n.Target))
			if err := x.set(keyIno(pInline, a.Ino), []byte(n.Target)); err != nil {
				return err
			}
		case syscall.S_IFREG:
			d.Files = 1
		}
		x.addDelta(d)
		return x.addEntry(dir, name, a)
	})
}

// create makes a new inode with mode in directory parent, in one
// transaction with the directory locked: c must be allowed to change the
// directory, and fill completes the inode (links, entry or orphan record,
// statistics) or refuses.
func (m *Meta) create(ctx context.Context, c *Caller, parent uint64, mode uint32, fill func(x *tx, dir, a *Attr) error) (*Attr, error) {
	ino, err := m.allocIno(ctx)
	if err != nil {
		return nil, err
	}
	gen := rand.Uint64()>>1 | 1
	var out *Attr
	defer m.dirs.lock(parent)()
	err = m.update(ctx, func(x *tx) error {
		dir, err := x.dir(parent)
		if err != nil {
			return err
		}
		if err := Access(dir, c, MayWrite|MayExec); err != nil {
			return err
		}
		a := x.newInode(c, dir, ino, gen, mode)
		if err := fill(x, dir, a); err != nil {
			return err
		}
		x.inodes[ino] = a
		x.touch(a)
		cp := *a
		out = &cp
		return nil
	})
	return out, err
}

// newInode returns the attributes of a new inode created by c in dir, with
// no links yet: owner and times, and the set-group-ID rules (a setgid
// directory gives its group, and its setgid bit to subdirectories; a
// non-directory keeps setgid only if c belongs to its group or is root).
// A directory never gets setuid, nor setgid but from its parent, as
// mkdir(2) (vfs_mkdir) has it: the kernel strips them for FUSE, but an
// NFS MKDIR passes the client's mode on.
func (x *tx) newInode(c *Caller, dir *Attr, ino, gen uint64, mode uint32) *Attr {
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		mode &^= syscall.S_ISUID | syscall.S_ISGID
	}
	a := &Attr{Ino: ino, Gen: gen, Mode: mode, Uid: c.Uid, Gid: c.Gid,
		Atime: x.now, Mtime: x.now, Ctime: x.now, Parent: dir.Ino,
		Flags: FlagNoXattrs | FlagNoChunks}
	if a.IsRegular() && x.m.format.Version >= 4 {
		a.Flags |= FlagAlloc // see Attr.Alloc
	}
	if dir.Mode&syscall.S_ISGID != 0 {
		a.Gid = dir.Gid
		if a.IsDir() {
			a.Mode |= syscall.S_ISGID
		}
	}
	if a.Mode&syscall.S_ISGID != 0 && !a.IsDir() && c.Uid != 0 && !c.inGroup(a.Gid) {
		a.Mode &^= syscall.S_ISGID
	}
	return a
}

// Tmpfile creates an unnamed regular file in directory parent (O_TMPFILE):
// an orphan from birth, freed at its last close unless linkat names it
// (only if linkable: O_TMPFILE|O_EXCL files never get a name).
func (m *Meta) Tmpfile(ctx context.Context, c *Caller, parent uint64, mode uint32, linkable bool) (*Attr, error) {
	return m.create(ctx, c, parent, syscall.S_IFREG|mode&0o7777, func(x *tx, dir, a *Attr) error {
		if linkable {
			a.Flags |= FlagLinkable
		}
		x.addDelta(Stats{Inodes: 1, Files: 1})
		return x.set(keyIno(pOrphan, a.Ino), u64bytes(uint64(x.now)))
	})
}

// Link adds a hard link newName in newParent to inode ino.
func (m *Meta) Link(ctx context.Context, c *Caller, ino, newParent uint64, newName string) (*Attr, error) {
	if err := CheckName(newName); err != nil {
		return nil, err
	}
	if newName == "." || newName == ".." {
		return nil, syscall.EEXIST
	}
	var out *Attr
	defer m.dirs.lock(newParent)()
	err := m.update(ctx, func(x *tx) error {
		a, err := x.inode(ino)
		if err != nil {
			return err
		}
		if a.IsDir() {
			return syscall.EPERM
		}
		if a.Nlink == 0 && a.Flags&FlagLinkable == 0 {
			return syscall.ENOENT // unlinked files stay unlinked
		}
		if a.Nlink >= maxLinks {
			return syscall.EMLINK
		}
		dir, err := x.dir(newParent)
		if err != nil {
			return err
		}
		if err := Access(dir, c, MayWrite|MayExec); err != nil {
			return err
		}
		if _, ok, err := x.entry(newParent, newName); err != nil {
			return err
		} else if ok {
			return syscall.EEXIST
		}
		if a.Nlink == 0 {
			// An O_TMPFILE file gets its first name: no longer an orphan.
			a.Flags &^= FlagLinkable
			a.Parent = newParent
			if err := x.del(keyIno(pOrphan, a.Ino)); err != nil {
				return err
			}
		}
		a.Nlink++
		x.touchCtime(a)
		if err := x.addEntry(dir, newName, a); err != nil {
			return err
		}
		cp := *a
		out = &cp
		return nil
	})
	return out, err
}

// removable looks up name in parent for removal: c must be allowed to
// change parent, and the name must exist.
func (x *tx) removable(c *Caller, parent uint64, name string) (dir *Attr, e entry, child *Attr, err error) {
	if dir, err = x.dir(parent); err != nil {
		return nil, entry{}, nil, err
	}
	if err = Access(dir, c, MayWrite|MayExec); err != nil {
		return nil, entry{}, nil, err
	}
	e, ok, err := x.entry(parent, name)
	if err != nil {
		return nil, entry{}, nil, err
	}
	if !ok {
		return nil, entry{}, nil, syscall.ENOENT
	}
	child, err = x.inode(e.child)
	return dir, e, child, err
}

// Unlink removes the entry name of a non-directory from parent and returns
// the inode as it is afterwards (Nlink 0: it is now an orphan).
func (m *Meta) Unlink(ctx context.Context, c *Caller, parent uint64, name string) (*Attr, error) {
	a, _, err := m.UnlinkFreeing(ctx, c, parent, name, nil)
	return a, err
}

// UnlinkFreeing is Unlink that also frees the file in the same transaction
// when that was its last link and closed, called inside the transaction
// (perhaps more than once, if it is retried), reports that nothing has the
// file open; freed says it did. A freed file needs no Reap: one
// transaction instead of two for the common delete of a closed file. A
// file with more than one transaction frees (reapBatch chunks, about
// reapBlocks block references) keeps its orphan record and is left to Reap
// (freed is false).
func (m *Meta) UnlinkFreeing(ctx context.Context, c *Caller, parent uint64, name string, closed func(ino uint64) bool) (a *Attr, freed bool, err error) {
	ctx = freeing(ctx)
	if len(name) > MaxNameLen {
		return nil, false, syscall.ENAMETOOLONG
	}
	var out *Attr
	defer m.dirs.lock(parent)()
	err = m.update(ctx, func(x *tx) error {
		freed = false
		dir, e, a, err := x.removable(c, parent, name)
		if err != nil {
			return err
		}
		if a.IsDir() {
			return syscall.EISDIR
		}
		if stickyDenies(dir, a, c) {
			return syscall.EPERM
		}
		if err := x.removeEntry(dir, name, e); err != nil {
			return err
		}
		freed, err = x.dropLink(a, closed)
		cp := *a
		out = &cp
		return err
	})
	return out, freed, err
}

// isEmptyDir reports whether directory ino has no entries.
func (x *tx) isEmptyDir(ino uint64) (bool, error) {
	empty := true
	err := x.t.Scan(keyIno(pEntry, ino), nil, func(k, v []byte) (bool, error) {
		empty = false
		return false, nil
	})
	return empty, err
}

// Rmdir removes the empty directory name from parent.
func (m *Meta) Rmdir(ctx context.Context, c *Caller, parent uint64, name string) (*Attr, error) {
	ctx = freeing(ctx)
	switch {
	case name == ".":
		return nil, syscall.EINVAL
	case name == "..":
		return nil, syscall.ENOTEMPTY
	case len(name) > MaxNameLen:
		return nil, syscall.ENAMETOOLONG
	}
	var out *Attr
	defer m.dirs.lock(parent)()
	err := m.update(ctx, func(x *tx) error {
		dir, e, a, err := x.removable(c, parent, name)
		if err != nil {
			return err
		}
		if !a.IsDir() {
			return syscall.ENOTDIR
		}
		if stickyDenies(dir, a, c) {
			return syscall.EPERM
		}
		if empty, err := x.isEmptyDir(a.Ino); err != nil {
			return err
		} else if !empty {
			return syscall.ENOTEMPTY
		}
		if err := x.removeEntry(dir, name, e); err != nil {
			return err
		}
		dir.Nlink--
		if _, err := x.dropLink(a, nil); err != nil {
			return err
		}
		cp := *a
		out = &cp
		return nil
	})
	return out, err
}

// Rename flags, as in renameat2(2).
const (
	RenameNoReplace = 1
	RenameExchange  = 2
	RenameWhiteout  = 4
)

// isAncestor reports whether dir anc is dir ino or one of its ancestors.
func (x *tx) isAncestor(anc, ino uint64) (bool, error) {
	for depth := 0; ; depth++ {
		if ino == anc {
			return true, nil
		}
		if ino == RootIno {
			return false, nil
		}
		if depth > 1<<16 {
			return false, fmt.Errorf("%w: directory %d: parent chain loops", errCorrupt, ino)
		}
		a, err := x.inode(ino)
		if err != nil {
			return false, fmt.Errorf("walk to root from %d: %w", ino, err)
		}
		ino = a.Parent
	}
}

// Rename moves oldName in oldParent to newName in newParent, atomically. It
// returns the inode it replaced, if any, as it is afterwards (its Nlink
// tells whether it lost its last link).
func (m *Meta) Rename(ctx context.Context, c *Caller, oldParent uint64, oldName string, newParent uint64, newName string, flags uint32) (replaced *Attr, err error) {
	r, err := m.RenameFreeing(ctx, c, oldParent, oldName, newParent, newName, flags, nil)
	return r.Replaced, err
}

// Renamed is what a rename did besides changing its two directories.
type Renamed struct {
	// Moved is the inode whose name changed (its ctime, and a
	// directory's ".."); 0 when the rename changed nothing (a name onto
	// itself, or onto another link of the same file).
	Moved uint64
	// Replaced is the inode the new name named, as it is afterwards (its
	// Nlink tells whether it lost its last link); nil when there was none
	// and for an exchange, which moves it to the old name (Exchanged).
	Replaced  *Attr
	Exchanged uint64
	// Freed says that Replaced lost its last link and was freed in the
	// same transaction (see RenameFreeing).
	Freed bool
}

// Changed lists the inodes besides the two directories whose attributes
// the rename changed: for a front end that tells others of them.
func (r Renamed) Changed() []uint64 {
	var out []uint64
	for _, ino := range []uint64{r.Moved, r.Exchanged} {
		if ino != 0 {
			out = append(out, ino)
		}
	}
	if r.Replaced != nil {
		out = append(out, r.Replaced.Ino)
	}
	return out
}

// RenameFreeing is Rename that frees the replaced inode in the same
// transaction when it lost its last link and closed reports that nothing
// has it open, as UnlinkFreeing does (Renamed.Freed says it did), and
// reports every inode it changed.
func (m *Meta) RenameFreeing(ctx context.Context, c *Caller, oldParent uint64, oldName string, newParent uint64, newName string, flags uint32, closed func(ino uint64) bool) (r Renamed, err error) {
	ctx = freeing(ctx)
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return Renamed{}, syscall.EINVAL
	}
	for _, n := range []string{oldName, newName} {
		if n == "." || n == ".." {
			return Renamed{}, syscall.EBUSY
		}
	}
	// The new name is checked once the source is found: a missing
	// source is ENOENT whatever the new name, as rename(2) says.
	if err := CheckName(oldName); err != nil {
		return Renamed{}, err
	}
	defer m.dirs.lock(oldParent, newParent)()
	err = m.update(ctx, func(x *tx) error {
		r = Renamed{}
		od, err := x.dir(oldParent)
		if err != nil {
			return err
		}
		nd, err := x.dir(newParent)
		if err != nil {
			return err
		}
		if err := Access(od, c, MayWrite|MayExec); err != nil {
			return err
		}
		if err := Access(nd, c, MayWrite|MayExec); err != nil {
			return err
		}
		se, ok, err := x.entry(oldParent, oldName)
		if err != nil {
			return err
		}
		if !ok {
			return syscall.ENOENT
		}
		if err := CheckName(newName); err != nil {
			return err
		}
		src, err := x.inode(se.child)
		if err != nil {
			return err
		}
		de, dstExists, err := x.entry(newParent, newName)
		if err != nil {
			return err
		}
		switch {
		case flags&RenameNoReplace != 0 && dstExists:
			return syscall.EEXIST
		case flags&RenameExchange != 0 && !dstExists:
			return syscall.ENOENT
		}
		if oldParent == newParent && oldName == newName {
			return nil
		}
		// A target directory on the way down to the source holds it:
		// Linux answers ENOTEMPTY (EINVAL for an exchange) before it
		// looks at permissions or types (the "trap" of do_renameat2),
		// also when the source is a file. Only NFS can ask this: the
		// kernel answers FUSE itself.
		if dstExists && de.typ == syscall.S_IFDIR && oldParent != newParent {
			if trap, err := x.isAncestor(de.child, oldParent); err != nil {
				return err
			} else if trap && flags&RenameExchange != 0 {
				return syscall.EINVAL
			} else if trap {
				return syscall.ENOTEMPTY
			}
		}
		if stickyDenies(od, src, c) {
			return syscall.EPERM
		}
		// A directory cannot move below itself.
		if src.IsDir() && oldParent != newParent {
			if below, err := x.isAncestor(src.Ino, newParent); err != nil {
				return err
			} else if below {
				return syscall.EINVAL
			}
			// Its ".." changes: that needs write access to it.
			if err := Access(src, c, MayWrite); err != nil {
				return err
			}
		}
		if !dstExists {
			if err := x.removeEntry(od, oldName, se); err != nil {
				return err
			}
			if err := x.addEntry(nd, newName, src); err != nil {
				return err
			}
			x.moved(src, od, nd)
			r.Moved = src.Ino
			return nil
		}
		dst, err := x.inode(de.child)
		if err != nil {
			return err
		}
		if stickyDenies(nd, dst, c) {
			return syscall.EPERM
		}
		if flags&RenameExchange != 0 {
			if err := x.exchange(c, od, oldName, se, src, nd, newName, de, dst); err != nil {
				return err
			}
			r.Moved, r.Exchanged = src.Ino, dst.Ino
			return nil
		}
		if dst.Ino == src.Ino {
			return nil // two links to one file: POSIX says do nothing
		}
		switch {
		case src.IsDir() && !dst.IsDir():
			return syscall.ENOTDIR
		case !src.IsDir() && dst.IsDir():
			return syscall.EISDIR
		case dst.IsDir():
			if empty, err := x.isEmptyDir(dst.Ino); err != nil {
				return err
			} else if !empty {
				return syscall.ENOTEMPTY
			}
		}
		if err := x.removeEntry(od, oldName, se); err != nil {
			return err
		}
		if err := x.removeEntry(nd, newName, de); err != nil {
			return err
		}
		if err := x.addEntry(nd, newName, src); err != nil {
			return err
		}
		if dst.IsDir() {
			nd.Nlink--
		}
		if r.Freed, err = x.dropLink(dst, closed); err != nil {
			return err
		}
		x.moved(src, od, nd)
		cp := *dst
		r.Moved, r.Replaced = src.Ino, &cp
		return nil
	})
	if err != nil {
		return Renamed{}, err
	}
	return r, nil
}

// moved records that src now lives in nd instead of od.
func (x *tx) moved(src, od, nd *Attr) {
	src.Parent = nd.Ino
	x.touchCtime(src)
	if src.IsDir() && od.Ino != nd.Ino {
		od.Nlink--
		nd.Nlink++
	}
}

func (x *tx) exchange(c *Caller, od *Attr, oldName string, se entry, src *Attr, nd *Attr, newName string, de entry, dst *Attr) error {
	if od.Ino != nd.Ino {
		for _, p := range []struct{ dir, under uint64 }{{src.Ino, nd.Ino}, {dst.Ino, od.Ino}} {
			if a, _ := x.inode(p.dir); a == nil || !a.IsDir() {
				continue
			}
			if below, err := x.isAncestor(p.dir, p.under); err != nil {
				return err
			} else if below {
				return syscall.EINVAL
			}
		}
		for _, a := range []*Attr{src, dst} {
			if a.IsDir() {
				if err := Access(a, c, MayWrite); err != nil {
					return err
				}
			}
		}
	}
	if err := x.removeEntry(od, oldName, se); err != nil {
		return err
	}
	if err := x.removeEntry(nd, newName, de); err != nil {
		return err
	}
	if err := x.addEntry(od, oldName, dst); err != nil {
		return err
	}
	if err := x.addEntry(nd, newName, src); err != nil {
		return err
	}
	x.moved(src, od, nd)
	x.moved(dst, nd, od)
	return nil
}

// Readlink returns a symlink's target.
func (m *Meta) Readlink(ctx context.Context, ino uint64) (string, error) {
	var target string
	err := m.view(ctx, func(x *tx) error {
		a, err := x.inode(ino)
		if err != nil {
			return err
		}
		if a.Type() != syscall.S_IFLNK {
			return syscall.EINVAL
		}
		v, err := x.t.Get(keyIno(pInline, ino))
		if err != nil {
			return fmt.Errorf("read symlink %d: %w", ino, err)
		}
		target = string(v)
		return nil
	})
	return target, err
}

// Dirent is one directory entry as listed.
type Dirent struct {
	Name   string
	Ino    uint64
	Type   uint32 // mode type bits
	Cookie uint64 // pass back to ReadDir to continue after this entry
}

// ReadDir lists directory dir in creation order, starting after cookie
// (0: from the start). Cookies stay valid while the directory changes: an
// entry present for the whole listing is returned exactly once. fn returns
// false to stop.
func (m *Meta) ReadDir(ctx context.Context, dir uint64, cookie uint64, fn func(Dirent) bool) error {
	return m.view(ctx, func(x *tx) error {
		// A removed directory that is still open lists as empty.
		a, err := x.inode(dir)
		if err != nil {
			return err
		}
		if !a.IsDir() {
			return syscall.ENOTDIR
		}
		start := keyInoU64(pOrder, dir, max(cookie+1, firstSeq))
		return x.t.Scan(keyIno(pOrder, dir), start, func(k, v []byte) (bool, error) {
			if len(k) != 17 || len(v) < 12 {
				return false, corrupt("directory order record", k)
			}
			d := Dirent{
				Ino:    u64(v),
				Type:   uint32(v[8]) | uint32(v[9])<<8 | uint32(v[10])<<16 | uint32(v[11])<<24,
				Name:   string(v[12:]),
				Cookie: beU64(k[9:]),
			}
			return fn(d), nil
		})
	})
}

func beU64(b []byte) uint64 {
	var v uint64
	for _, c := range b[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}

// Path returns a path of ino from the root, for NFS handles, tools and
// messages, walking the back-links up: O(depth) reads. A file with several
// links gets one of its paths.
func (m *Meta) Path(ctx context.Context, ino uint64) (string, error) {
	var parts []string
	err := m.view(ctx, func(x *tx) error {
		for depth := 0; ino != RootIno; depth++ {
			if depth > 4096 {
				return fmt.Errorf("%w: parent chain of %d too deep", errCorrupt, ino)
			}
			var parent uint64
			name := ""
			err := x.t.Scan(keyIno(pBack, ino), nil, func(k, v []byte) (bool, error) {
				if len(k) < 18 {
					return false, corrupt("back link", k)
				}
				parent, name = beU64(k[9:]), string(k[17:])
				return false, nil
			})
			if err != nil {
				return err
			}
			if name == "" {
				return syscall.ENOENT
			}
			parts = append(parts, name)
			ino = parent
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for i := len(parts) - 1; i >= 0; i-- {
		b.WriteString("/")
		b.WriteString(parts[i])
	}
	if b.Len() == 0 {
		return "/", nil
	}
	return b.String(), nil
}

// relatimeAge is how stale atime may get before a read refreshes it anyway.
const relatimeAge = 24 * 60 * 60 * 1e9

// NeedsAtime reports whether a read of a should update its atime, by the
// rule of Linux's default relatime mount option: when atime is not newer
// than mtime or ctime, or more than a day old.
func NeedsAtime(a *Attr, now int64) bool {
	return a.Atime <= a.Mtime || a.Atime <= a.Ctime || now-a.Atime > relatimeAge
}

// SetAtimes raises the atime of each inode to the time given for it (reads
// recorded lazily by the POSIX layer), in one transaction. Inodes gone
// meanwhile are skipped; an atime already newer is kept.
func (m *Meta) SetAtimes(ctx context.Context, times map[uint64]int64) error {
	return m.update(ctx, func(x *tx) error {
		for ino, t := range times {
			a, err := x.inode(ino)
			if errors.Is(err, syscall.ENOENT) {
				continue
			}
			if err != nil {
				return err
			}
			if a.Atime < t {
				a.Atime = t
				x.touch(a)
			}
		}
		return nil
	})
}
