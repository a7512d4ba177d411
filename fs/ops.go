package fs

import (
	"context"
	"syscall"

	"github.com/objfs/objfs/fs/meta"
)

// withBuffered adjusts attributes for writes still in the buffer and for
// an access time not committed yet.
func (f *FS) withBuffered(a *Attr) *Attr {
	f.withAtime(a)
	in := f.lookupInode(a.Ino)
	if in == nil || !a.IsRegular() {
		return a
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.buf.extents) > 0 {
		// What the commit will write (meta.Write): mtime is the last
		// buffered write's time even when an earlier utimes set it
		// later (touch -d tomorrow, then a write); explicit times after
		// the writes commit those first (SetAttr), so none is pending.
		a.Size = max(a.Size, in.buf.end())
		a.Mtime = in.mtime
		a.Ctime = max(a.Ctime, in.mtime)
	}
	return a
}

// Commits counts the commits of buffered writes so far, each counted once
// it is visible. Attributes read while writes were buffered show them
// (size, mtime) but not what their commit will change beyond that (the
// bytes a file stores, st_blocks): a front end that lets its clients
// cache attributes must not let them keep ones read while Commits moved
// or while the file had writes buffered (Buffered).
func (f *FS) Commits() uint64 { return f.commits.Load() }

// Buffered reports whether ino has writes not committed yet.
func (f *FS) Buffered(ino uint64) bool {
	in := f.lookupInode(ino)
	if in == nil {
		return false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.buf.extents) > 0
}

// GetAttr returns ino's attributes, including buffered writes.
func (f *FS) GetAttr(ctx context.Context, ino uint64) (*Attr, error) {
	a, err := f.meta.GetAttr(ctx, ino)
	if err != nil {
		return nil, err
	}
	return f.withBuffered(a), nil
}

// Lookup finds name in parent.
func (f *FS) Lookup(ctx context.Context, c *Caller, parent uint64, name string) (*Attr, error) {
	a, err := f.meta.Lookup(ctx, c, parent, name)
	if err != nil {
		return nil, err
	}
	return f.withBuffered(a), nil
}

// Named returns the inode that name names in directory parent, as
// committed: unlike Lookup it never waits for a file's buffered writes (a
// commit holds the file while it uploads), so a caller that needs only the
// inode may call it while holding a lock of its own.
func (f *FS) Named(ctx context.Context, parent uint64, name string) (uint64, error) {
	a, err := f.meta.Lookup(ctx, &meta.Root, parent, name)
	if err != nil {
		return 0, err
	}
	return a.Ino, nil
}

// SetAttr changes attributes; size and time changes commit buffered writes first.
// fh, when not zero, is the handle the change comes through (ftruncate).
func (f *FS) SetAttr(ctx context.Context, c *Caller, ino uint64, in meta.SetAttrIn, fh uint64) (*Attr, error) {
	// Size and time changes must come after the buffered writes they
	// follow: commit those first, or the commit would undo the change.
	const ordered = meta.SetSize | meta.SetAtime | meta.SetMtime | meta.SetAtimeNow | meta.SetMtimeNow | meta.SetCtime
	if in.Valid&(meta.SetAtime|meta.SetAtimeNow) != 0 {
		f.dropAtime(ino)
	}
	if fh != 0 {
		if h, err := f.handle(fh); err == nil && h.ino.ino == ino && h.flags&accMode != syscall.O_RDONLY {
			in.OpenForWrite = true
		}
	}
	if in.Valid&ordered != 0 && f.lookupInode(ino) != nil {
		st, err := f.acquire(ino)
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.releaseInode(ctx, st) }()
		st.mu.Lock()
		defer st.mu.Unlock()
		if err := f.flushLocked(ctx, st); err != nil {
			return nil, err
		}
		a, err := f.meta.SetAttr(ctx, c, ino, in)
		if err == nil && changesPrivs(in) {
			f.forgetPrivs(ino)
		}
		return a, err
	}
	a, err := f.meta.SetAttr(ctx, c, ino, in)
	if err != nil {
		return nil, err
	}
	if changesPrivs(in) {
		f.forgetPrivs(ino)
	}
	return f.withBuffered(a), nil
}

// changesPrivs reports whether the change may set or drop setuid, setgid
// or file capabilities, so that an inode's cached privileges are forgotten.
func changesPrivs(in meta.SetAttrIn) bool {
	return in.Chown || in.Valid&(meta.SetMode|meta.SetUid|meta.SetGid|meta.SetSize) != 0
}

// Mknod creates a node of any type but regular files opened at once (see Create).
func (f *FS) Mknod(ctx context.Context, c *Caller, parent uint64, name string, n meta.NewNode) (*Attr, error) {
	return f.meta.Mknod(ctx, c, parent, name, n)
}

// Mkdir creates a directory.
func (f *FS) Mkdir(ctx context.Context, c *Caller, parent uint64, name string, mode uint32) (*Attr, error) {
	return f.meta.Mknod(ctx, c, parent, name, meta.NewNode{Mode: syscall.S_IFDIR | mode&0o7777})
}

// Symlink creates a symbolic link to target.
func (f *FS) Symlink(ctx context.Context, c *Caller, parent uint64, name, target string) (*Attr, error) {
	return f.meta.Mknod(ctx, c, parent, name, meta.NewNode{Mode: syscall.S_IFLNK | 0o777, Target: target})
}

// Readlink returns a symlink's target.
func (f *FS) Readlink(ctx context.Context, ino uint64) (string, error) {
	return f.meta.Readlink(ctx, ino)
}

// Link makes a hard link.
func (f *FS) Link(ctx context.Context, c *Caller, ino, parent uint64, name string) (*Attr, error) {
	a, err := f.meta.Link(ctx, c, ino, parent, name)
	if err != nil {
		return nil, err
	}
	return f.withBuffered(a), nil
}

// Unlink removes a name; an inode left without links is freed after its
// last close. A file nothing has open is freed in the unlink's own
// transaction (one commit instead of two); one still open, by its last
// release.
func (f *FS) Unlink(ctx context.Context, c *Caller, parent uint64, name string) error {
	_, err := f.UnlinkInode(ctx, c, parent, name)
	return err
}

// UnlinkInode is Unlink that returns the inode that lost the link, for a
// front end that tells others of the change (its link count and ctime).
func (f *FS) UnlinkInode(ctx context.Context, c *Caller, parent uint64, name string) (uint64, error) {
	g := f.freeGuard()
	defer g.done()
	a, freed, err := f.meta.UnlinkFreeing(ctx, c, parent, name, g.closed)
	if err != nil {
		return 0, err
	}
	if !freed {
		f.orphaned(a)
	}
	return a.Ino, nil
}

// freeGuard keeps the inode a transaction frees (see meta.UnlinkFreeing)
// from being acquired while the transaction runs, as reapIfClosed does
// for the background reaper.
type freeGuard struct {
	f      *FS
	marked uint64 // the inode closed marked as being reaped
}

func (f *FS) freeGuard() *freeGuard { return &freeGuard{f: f} }

// closed reports whether nothing has ino open and, if so, marks it as being
// reaped until done. A retried transaction may ask again, perhaps about
// another inode (the name now names another file).
func (g *freeGuard) closed(ino uint64) bool {
	g.f.mu.Lock()
	defer g.f.mu.Unlock()
	if ino == g.marked {
		return true
	}
	if _, open := g.f.inodes[ino]; open || g.f.reaping[ino] {
		return false
	}
	if g.marked != 0 {
		delete(g.f.reaping, g.marked)
	}
	g.f.reaping[ino] = true
	g.marked = ino
	return true
}

// done lifts the mark once the transaction has committed or failed.
func (g *freeGuard) done() {
	if g.marked != 0 {
		g.f.mu.Lock()
		delete(g.f.reaping, g.marked)
		g.f.mu.Unlock()
	}
}

// Rmdir removes an empty directory.
func (f *FS) Rmdir(ctx context.Context, c *Caller, parent uint64, name string) error {
	a, err := f.meta.Rmdir(ctx, c, parent, name)
	if err == nil {
		f.orphaned(a)
	}
	return err
}

// Rename moves a name atomically (flags as in renameat2). A replaced file
// nothing has open is freed in the same transaction, as by Unlink.
func (f *FS) Rename(ctx context.Context, c *Caller, oldParent uint64, oldName string, newParent uint64, newName string, flags uint32) error {
	_, err := f.RenameInodes(ctx, c, oldParent, oldName, newParent, newName, flags)
	return err
}

// RenameInodes is Rename that returns the inodes besides the two
// directories whose attributes the rename changed (the one moved, the one
// replaced or exchanged), for a front end that tells others of them.
func (f *FS) RenameInodes(ctx context.Context, c *Caller, oldParent uint64, oldName string, newParent uint64, newName string, flags uint32) ([]uint64, error) {
	g := f.freeGuard()
	defer g.done()
	r, err := f.meta.RenameFreeing(ctx, c, oldParent, oldName, newParent, newName, flags, g.closed)
	if err != nil {
		return nil, err
	}
	if !r.Freed {
		f.orphaned(r.Replaced)
	}
	return r.Changed(), nil
}

// ReadDir lists dir after cookie; see meta.ReadDir.
func (f *FS) ReadDir(ctx context.Context, c *Caller, dir uint64, cookie uint64, fn func(meta.Dirent) bool) error {
	return f.meta.ReadDir(ctx, dir, cookie, fn)
}

// OpenDir checks that c may list directory ino (stateless front ends).
func (f *FS) OpenDir(ctx context.Context, c *Caller, ino uint64) error {
	a, err := f.meta.GetAttr(ctx, ino)
	if err != nil {
		return err
	}
	if !a.IsDir() {
		return syscall.ENOTDIR
	}
	return meta.Access(a, c, meta.MayRead)
}

// OpenDirHandle opens directory ino for listing. Like an open file, an
// open directory that is removed keeps its inode (nlink 0) until released.
func (f *FS) OpenDirHandle(ctx context.Context, c *Caller, ino uint64) (fh uint64, err error) {
	in, err := f.acquire(ino)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			_ = f.releaseInode(ctx, in)
		}
	}()
	a, err := f.meta.GetAttr(ctx, ino)
	if err != nil {
		return 0, err
	}
	if !a.IsDir() {
		return 0, syscall.ENOTDIR
	}
	if err := meta.Access(a, c, meta.MayRead); err != nil {
		return 0, err
	}
	return f.newHandle(in, syscall.O_RDONLY), nil
}

// Access implements access(2).
func (f *FS) Access(ctx context.Context, c *Caller, ino uint64, mask uint32) error {
	a, err := f.meta.GetAttr(ctx, ino)
	if err != nil {
		return err
	}
	return meta.Access(a, c, mask&7)
}

// GetXattr, ListXattr, SetXattr and RemoveXattr manage extended attributes.
func (f *FS) GetXattr(ctx context.Context, c *Caller, ino uint64, name string) ([]byte, error) {
	// The kernel asks for a file's capabilities before its first write
	// (see meta.XattrCaps); an open file often knows it has none, and
	// reading a security.* attribute needs no permission.
	if name == meta.XattrCaps {
		if in := f.lookupInode(ino); in != nil {
			if p, known := in.knownPrivs(); known && !p.Caps {
				return nil, syscall.ENODATA
			}
		}
	}
	return f.meta.GetXattr(ctx, c, ino, name)
}

// ListXattr lists extended attribute names.
func (f *FS) ListXattr(ctx context.Context, c *Caller, ino uint64) ([]string, error) {
	return f.meta.ListXattr(ctx, c, ino)
}

// SetXattr sets an extended attribute.
func (f *FS) SetXattr(ctx context.Context, c *Caller, ino uint64, name string, value []byte, flags uint32) error {
	err := f.meta.SetXattr(ctx, c, ino, name, value, flags)
	if err == nil && name == meta.XattrCaps {
		f.forgetPrivs(ino) // the next write must drop them
	}
	return err
}

// RemoveXattr removes an extended attribute.
func (f *FS) RemoveXattr(ctx context.Context, c *Caller, ino uint64, name string) error {
	err := f.meta.RemoveXattr(ctx, c, ino, name)
	if err == nil && name == meta.XattrCaps {
		f.forgetPrivs(ino)
	}
	return err
}

// StatFS is the answer to statfs.
type StatFS struct {
	BlockSize          uint32
	Blocks, BlocksFree uint64
	Files, FilesFree   uint64
	NameLen            uint32
}

// StatFs reports space and inodes. Space comes from the store's capacity
// when known; files are counted exactly.
func (f *FS) StatFs(ctx context.Context) (StatFS, error) {
	const bs = 4096
	st := f.meta.Stats()
	used := uint64(max(st.BlockBytes, 0))
	total, free := uint64(1<<50), uint64(1<<50)-used
	if f.opts.Capacity != nil {
		if t, fr, err := f.opts.Capacity(); err == nil {
			total, free = t, fr
		}
	}
	const maxFiles = 1 << 40
	inodes := uint64(max(st.Inodes, 0))
	return StatFS{
		BlockSize:  bs,
		Blocks:     total / bs,
		BlocksFree: free / bs,
		Files:      maxFiles,
		FilesFree:  maxFiles - inodes,
		NameLen:    meta.MaxNameLen,
	}, nil
}
