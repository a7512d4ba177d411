package nfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"
	gonfsfile "github.com/willscott/go-nfs/file"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/meta"
)

// billyFS adapts fs.FS to go-billy for go-nfs. Paths are slash-separated
// from the volume root and resolved one name at a time, as caller c.
// Errors are *os.PathError carrying the POSIX layer's errno, so
// os.IsNotExist and errors.Is(err, syscall.EXXX) both work.
type billyFS struct {
	ctx context.Context
	f   *fs.FS
	c   *meta.Caller
	ro  bool
}

var (
	_ billy.Filesystem = (*billyFS)(nil)
	_ billy.Change     = (*billyFS)(nil)
	_ billy.Capable    = (*billyFS)(nil)
)

func pathErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return &os.PathError{Op: op, Path: name, Err: err}
}

// walk resolves path components from the root.
func (b *billyFS) walk(parts []string) (*meta.Attr, error) {
	a, err := b.f.GetAttr(b.ctx, meta.RootIno)
	for _, p := range parts {
		if err != nil {
			return nil, err
		}
		a, err = b.f.Lookup(b.ctx, b.c, a.Ino, p)
	}
	return a, err
}

func (b *billyFS) lookup(name string) (*meta.Attr, error) { return b.walk(splitPath(name)) }

// parent resolves the directory of name and returns name's last element.
func (b *billyFS) parent(name string) (*meta.Attr, string, error) {
	parts := splitPath(name)
	if len(parts) == 0 {
		return nil, "", syscall.EINVAL
	}
	dir, err := b.walk(parts[:len(parts)-1])
	return dir, parts[len(parts)-1], err
}

func (b *billyFS) writable() error {
	if b.ro {
		return syscall.EROFS
	}
	return nil
}

// Capabilities: no locking; no writing on a read-only export.
func (b *billyFS) Capabilities() billy.Capability {
	c := billy.ReadCapability | billy.SeekCapability
	if !b.ro {
		c |= billy.WriteCapability | billy.ReadAndWriteCapability | billy.TruncateCapability
	}
	return c
}

func (b *billyFS) Create(name string) (billy.File, error) {
	return b.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

func (b *billyFS) Open(name string) (billy.File, error) { return b.OpenFile(name, os.O_RDONLY, 0) }

func (b *billyFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC) != 0 {
		if err := b.writable(); err != nil {
			return nil, pathErr("open", name, err)
		}
	}
	a, err := b.lookup(name)
	if errors.Is(err, syscall.ENOENT) && flag&os.O_CREATE != 0 {
		dir, base, perr := b.parent(name)
		if perr != nil {
			return nil, pathErr("open", name, perr)
		}
		a, err = b.f.Mknod(b.ctx, b.c, dir.Ino, base, meta.NewNode{Mode: syscall.S_IFREG | uint32(perm.Perm())})
	} else if err == nil && flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL {
		err = syscall.EEXIST
	}
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	if a.IsDir() && flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		return nil, pathErr("open", name, syscall.EISDIR)
	}
	if flag&os.O_TRUNC != 0 && a.IsRegular() && a.Size > 0 {
		if _, err := b.f.SetAttr(b.ctx, b.c, a.Ino, meta.SetAttrIn{Valid: meta.SetSize}, 0); err != nil {
			return nil, pathErr("open", name, err)
		}
	}
	return &billyFile{b: b, name: name, ino: a.Ino, flag: flag}, nil
}

func (b *billyFS) Stat(name string) (os.FileInfo, error) {
	a, err := b.lookup(name)
	if err == nil && a.Type() == syscall.S_IFLNK {
		// Stat follows one level of symlink relative to its directory;
		// deeper chains are not needed by go-nfs.
		if target, rerr := b.f.Readlink(b.ctx, a.Ino); rerr == nil {
			if !path.IsAbs(target) {
				target = path.Join(path.Dir("/"+name), target)
			}
			a, err = b.lookup(target)
		}
	}
	if err != nil {
		return nil, pathErr("stat", name, err)
	}
	return fileInfo(path.Base("/"+name), a), nil
}

func (b *billyFS) Lstat(name string) (os.FileInfo, error) {
	a, err := b.lookup(name)
	if err != nil {
		return nil, pathErr("lstat", name, err)
	}
	return fileInfo(path.Base("/"+name), a), nil
}

func (b *billyFS) Rename(oldpath, newpath string) error {
	if err := b.writable(); err != nil {
		return pathErr("rename", oldpath, err)
	}
	od, on, err := b.parent(oldpath)
	if err != nil {
		return pathErr("rename", oldpath, err)
	}
	nd, nn, err := b.parent(newpath)
	if err != nil {
		return pathErr("rename", newpath, err)
	}
	return pathErr("rename", oldpath, b.f.Rename(b.ctx, b.c, od.Ino, on, nd.Ino, nn, 0))
}

func (b *billyFS) Remove(name string) error {
	if err := b.writable(); err != nil {
		return pathErr("remove", name, err)
	}
	dir, base, err := b.parent(name)
	if err != nil {
		return pathErr("remove", name, err)
	}
	a, err := b.f.Lookup(b.ctx, b.c, dir.Ino, base)
	switch {
	case err != nil:
	case a.IsDir():
		err = b.f.Rmdir(b.ctx, b.c, dir.Ino, base)
	default:
		err = b.f.Unlink(b.ctx, b.c, dir.Ino, base)
	}
	return pathErr("remove", name, err)
}

func (b *billyFS) Join(elem ...string) string { return path.Join(elem...) }

// TempFile is not offered: NFS clients create their own names.
func (b *billyFS) TempFile(dir, prefix string) (billy.File, error) {
	return nil, pathErr("tempfile", dir, syscall.ENOTSUP)
}

// ReadDir lists a whole directory. go-nfs uses it only for procedures we
// serve ourselves; it is here for completeness and for tools.
func (b *billyFS) ReadDir(name string) ([]os.FileInfo, error) {
	dir, err := b.lookup(name)
	if err == nil {
		err = b.f.OpenDir(b.ctx, b.c, dir.Ino)
	}
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	var out []os.FileInfo
	err = b.f.ReadDir(b.ctx, b.c, dir.Ino, 0, func(d meta.Dirent) bool {
		if a, aerr := b.f.GetAttr(b.ctx, d.Ino); aerr == nil {
			out = append(out, fileInfo(d.Name, a))
		}
		return true
	})
	return out, pathErr("readdir", name, err)
}

func (b *billyFS) MkdirAll(name string, perm os.FileMode) error {
	if err := b.writable(); err != nil {
		return pathErr("mkdir", name, err)
	}
	a, err := b.f.GetAttr(b.ctx, meta.RootIno)
	for _, p := range splitPath(name) {
		if err != nil {
			break
		}
		var next *meta.Attr
		next, err = b.f.Lookup(b.ctx, b.c, a.Ino, p)
		if errors.Is(err, syscall.ENOENT) {
			next, err = b.f.Mkdir(b.ctx, b.c, a.Ino, p, uint32(perm.Perm()))
		}
		if err == nil && !next.IsDir() {
			err = syscall.ENOTDIR
		}
		a = next
	}
	return pathErr("mkdir", name, err)
}

func (b *billyFS) Symlink(target, link string) error {
	if err := b.writable(); err != nil {
		return pathErr("symlink", link, err)
	}
	dir, base, err := b.parent(link)
	if err == nil {
		_, err = b.f.Symlink(b.ctx, b.c, dir.Ino, base, target)
	}
	return pathErr("symlink", link, err)
}

func (b *billyFS) Readlink(link string) (string, error) {
	a, err := b.lookup(link)
	if err != nil {
		return "", pathErr("readlink", link, err)
	}
	if a.Type() != syscall.S_IFLNK {
		return "", pathErr("readlink", link, syscall.EINVAL)
	}
	t, err := b.f.Readlink(b.ctx, a.Ino)
	return t, pathErr("readlink", link, err)
}

// Chroot is not offered: the export is the whole volume.
func (b *billyFS) Chroot(p string) (billy.Filesystem, error) {
	return nil, pathErr("chroot", p, syscall.ENOTSUP)
}

func (b *billyFS) Root() string { return "/" }

func (b *billyFS) setattr(op, name string, in meta.SetAttrIn) error {
	if err := b.writable(); err != nil {
		return pathErr(op, name, err)
	}
	a, err := b.lookup(name)
	if err == nil {
		_, err = b.f.SetAttr(b.ctx, b.c, a.Ino, in, 0)
	}
	return pathErr(op, name, err)
}

func (b *billyFS) Chmod(name string, mode os.FileMode) error {
	perm := uint32(mode.Perm())
	if mode&os.ModeSetuid != 0 {
		perm |= syscall.S_ISUID
	}
	if mode&os.ModeSetgid != 0 {
		perm |= syscall.S_ISGID
	}
	if mode&os.ModeSticky != 0 {
		perm |= syscall.S_ISVTX
	}
	return b.setattr("chmod", name, meta.SetAttrIn{Valid: meta.SetMode, Mode: perm})
}

func (b *billyFS) Lchown(name string, uid, gid int) error {
	var in meta.SetAttrIn
	if uid >= 0 {
		in.Valid |= meta.SetUid
		in.Uid = uint32(uid)
	}
	if gid >= 0 {
		in.Valid |= meta.SetGid
		in.Gid = uint32(gid)
	}
	return b.setattr("lchown", name, in)
}

func (b *billyFS) Chown(name string, uid, gid int) error { return b.Lchown(name, uid, gid) }

func (b *billyFS) Chtimes(name string, atime, mtime time.Time) error {
	return b.setattr("chtimes", name, meta.SetAttrIn{Valid: meta.SetAtime | meta.SetMtime,
		Atime: atime.UnixNano(), Mtime: mtime.UnixNano()})
}

// mknodAt creates a special file (go-nfs's UnixChange).
func (b *billyFS) mknodAt(op, name string, mode, rdev uint32) error {
	if err := b.writable(); err != nil {
		return pathErr(op, name, err)
	}
	dir, base, err := b.parent(name)
	if err == nil {
		_, err = b.f.Mknod(b.ctx, b.c, dir.Ino, base, meta.NewNode{Mode: mode, Rdev: rdev})
	}
	return pathErr(op, name, err)
}

// Mknod creates a character device: go-nfs passes no type.
func (b *billyFS) Mknod(name string, mode, major, minor uint32) error {
	return b.mknodAt("mknod", name, syscall.S_IFCHR|mode&0o7777, mkdev(major, minor))
}

func (b *billyFS) Mkfifo(name string, mode uint32) error {
	return b.mknodAt("mkfifo", name, syscall.S_IFIFO|mode&0o7777, 0)
}

func (b *billyFS) Socket(name string) error {
	return b.mknodAt("socket", name, syscall.S_IFSOCK|0o644, 0)
}

// Link makes link a new name of the file at path.
func (b *billyFS) Link(target, link string) error {
	if err := b.writable(); err != nil {
		return pathErr("link", link, err)
	}
	a, err := b.lookup(target)
	if err != nil {
		return pathErr("link", target, err)
	}
	dir, base, err := b.parent(link)
	if err == nil {
		_, err = b.f.Link(b.ctx, b.c, a.Ino, dir.Ino, base)
	}
	return pathErr("link", link, err)
}

// billyFile is an open file: handle-less reads and writes by inode, so it
// holds nothing in the POSIX layer and Close has nothing to release.
type billyFile struct {
	b    *billyFS
	name string
	ino  uint64
	flag int
	off  int64
}

func (f *billyFile) Name() string { return f.name }

func (f *billyFile) Write(p []byte) (int, error) {
	if f.flag&(os.O_WRONLY|os.O_RDWR) == 0 {
		return 0, pathErr("write", f.name, syscall.EBADF)
	}
	if f.flag&os.O_APPEND != 0 {
		a, err := f.b.f.GetAttr(f.b.ctx, f.ino)
		if err != nil {
			return 0, pathErr("write", f.name, err)
		}
		f.off = int64(a.Size)
	}
	n, err := f.b.f.WriteInode(f.b.ctx, f.b.c, f.ino, uint64(f.off), p, false)
	f.off += int64(n)
	return n, pathErr("write", f.name, err)
}

func (f *billyFile) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	return n, err
}

func (f *billyFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, pathErr("read", f.name, syscall.EINVAL)
	}
	if f.flag&os.O_WRONLY != 0 {
		return 0, pathErr("read", f.name, syscall.EBADF)
	}
	n, err := f.b.f.ReadInode(f.b.ctx, f.b.c, f.ino, uint64(off), p)
	if err != nil {
		return n, pathErr("read", f.name, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *billyFile) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		a, err := f.b.f.GetAttr(f.b.ctx, f.ino)
		if err != nil {
			return 0, pathErr("seek", f.name, err)
		}
		offset += int64(a.Size)
	default:
		return 0, pathErr("seek", f.name, syscall.EINVAL)
	}
	if offset < 0 {
		return 0, pathErr("seek", f.name, syscall.EINVAL)
	}
	f.off = offset
	return offset, nil
}

func (f *billyFile) Close() error { return nil }

// Lock and Unlock: NFSv3 locking is the separate NLM protocol, not served.
func (f *billyFile) Lock() error   { return pathErr("lock", f.name, syscall.ENOTSUP) }
func (f *billyFile) Unlock() error { return pathErr("unlock", f.name, syscall.ENOTSUP) }

func (f *billyFile) Truncate(size int64) error {
	if size < 0 {
		return pathErr("truncate", f.name, syscall.EINVAL)
	}
	_, err := f.b.f.SetAttr(f.b.ctx, f.b.c, f.ino, meta.SetAttrIn{Valid: meta.SetSize, Size: uint64(size)}, 0)
	return pathErr("truncate", f.name, err)
}

// info is os.FileInfo over an inode's attributes. Sys returns the
// go-nfs file.FileInfo shape so go-nfs reports the real inode number,
// link count and owner.
type info struct {
	name string
	a    meta.Attr
}

func fileInfo(name string, a *meta.Attr) os.FileInfo { return &info{name: name, a: *a} }

func (i *info) Name() string       { return i.name }
func (i *info) Size() int64        { return int64(i.a.Size) }
func (i *info) ModTime() time.Time { return time.Unix(0, i.a.Mtime) }
func (i *info) IsDir() bool        { return i.a.IsDir() }
func (i *info) Mode() os.FileMode {
	m := os.FileMode(i.a.Mode & 0o777)
	switch i.a.Type() {
	case syscall.S_IFDIR:
		m |= os.ModeDir
	case syscall.S_IFLNK:
		m |= os.ModeSymlink
	case syscall.S_IFIFO:
		m |= os.ModeNamedPipe
	case syscall.S_IFSOCK:
		m |= os.ModeSocket
	case syscall.S_IFCHR:
		m |= os.ModeDevice | os.ModeCharDevice
	case syscall.S_IFBLK:
		m |= os.ModeDevice
	}
	if i.a.Mode&syscall.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if i.a.Mode&syscall.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if i.a.Mode&syscall.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}

func (i *info) Sys() any {
	return &gonfsfile.FileInfo{Nlink: i.a.Nlink, UID: i.a.Uid, GID: i.a.Gid,
		Major: devMajor(i.a.Rdev), Minor: devMinor(i.a.Rdev), Fileid: i.a.Ino}
}

func (i *info) String() string { return fmt.Sprintf("%s (inode %d)", i.name, i.a.Ino) }
