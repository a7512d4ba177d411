package nfs

import (
	"context"
	"errors"
	"syscall"

	"github.com/objfs/objfs/fs/meta"
)

// request is one NFS call being answered: decoded credentials, the
// argument reader and the reply being built (RPC header already written).
type request struct {
	s    *server
	ctx  context.Context
	c    *meta.Caller
	args *xdrReader
	w    *xdrWriter
	op   string
}

// proc is one NFSv3 procedure. failBody is the number of empty XDR words
// (post_op_attr or pre_op_attr "absent") its failure reply carries after
// the status: every NFSv3 failure body is made of those.
type proc struct {
	name     string
	fn       func(*request)
	change   bool
	failBody int
}

// procs are the NFSv3 procedures served here, by number; NULL (0) goes to
// go-nfs.
var procs = map[uint32]proc{
	1:  {"GETATTR", (*request).getattr, false, 0},
	2:  {"SETATTR", (*request).setattr, true, 2},
	3:  {"LOOKUP", (*request).lookup, false, 1},
	4:  {"ACCESS", (*request).access, false, 1},
	5:  {"READLINK", (*request).readlink, false, 1},
	6:  {"READ", (*request).read, false, 1},
	7:  {"WRITE", (*request).write, true, 2},
	8:  {"CREATE", (*request).create, true, 2},
	9:  {"MKDIR", (*request).mkdir, true, 2},
	10: {"SYMLINK", (*request).symlink, true, 2},
	11: {"MKNOD", (*request).mknod, true, 2},
	12: {"REMOVE", (*request).remove, true, 2},
	13: {"RMDIR", (*request).rmdir, true, 2},
	14: {"RENAME", (*request).rename, true, 4},
	15: {"LINK", (*request).link, true, 3},
	16: {"READDIR", (*request).readdir, false, 1},
	17: {"READDIRPLUS", (*request).readdirplus, false, 1},
	18: {"FSSTAT", (*request).fsstat, false, 1},
	19: {"FSINFO", (*request).fsinfo, false, 1},
	20: {"PATHCONF", (*request).pathconf, false, 1},
	21: {"COMMIT", (*request).commit, false, 2},
}

// fail writes a failure status and its empty body.
func (rq *request) fail(status uint32, words int) {
	rq.w.u32(status)
	for range words {
		rq.w.u32(0)
	}
}

// failErr writes the status for err.
func (rq *request) failErr(err error, words int) {
	rq.fail(statusOf(rq.ctx, rq.s.log, rq.op, err), words)
}

// argsOK reports whether the arguments decoded; if not, dispatch answers
// GARBAGE_ARGS and nothing may be changed.
func (rq *request) argsOK() bool { return rq.args.err == nil }

func (rq *request) handle() []byte { return rq.args.opaque(64) }

func (rq *request) name() string { return string(rq.args.opaque(maxName + 1)) }

// resolve turns a handle into its inode's attributes. A malformed handle is
// BADHANDLE; one whose inode is gone or was replaced is STALE.
func (rq *request) resolve(h []byte) (*meta.Attr, uint32) {
	ino, gen, err := decodeHandle(h)
	if err != nil {
		return nil, errBadHandleSt
	}
	a, err := rq.s.f.GetAttr(rq.ctx, ino)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil, errStale
		}
		return nil, statusOf(rq.ctx, rq.s.log, rq.op, err)
	}
	if a.Gen != gen || a.Nlink == 0 {
		return nil, errStale
	}
	return a, nfsOK
}

// resolveDir is resolve for a directory argument.
func (rq *request) resolveDir(h []byte) (*meta.Attr, uint32) {
	a, st := rq.resolve(h)
	if st == nfsOK && !a.IsDir() {
		return nil, errNotDir
	}
	return a, st
}

// attr returns the current attributes of ino, nil if it cannot be read
// (post-op attributes are optional, so a failure is not reported).
func (rq *request) attr(ino uint64) *meta.Attr {
	a, err := rq.s.f.GetAttr(rq.ctx, ino)
	if err != nil {
		return nil
	}
	return a
}

func (rq *request) postOp(ino uint64) { rq.s.putPostOp(rq.w, rq.attr(ino)) }

// wcc writes wcc_data with no pre-operation attributes: we cannot read
// them atomically with the change, and an absent pre_op_attr makes the
// client revalidate instead of trusting stale data.
func (rq *request) wcc(ino uint64) {
	rq.w.bool(false)
	rq.postOp(ino)
}

// checkName validates a name argument before it reaches the POSIX layer,
// for the NFS-specific statuses.
func checkName(name string) uint32 {
	if len(name) > maxName {
		return errNameTooLong
	}
	if err := meta.CheckName(name); err != nil {
		return errInval
	}
	return nfsOK
}

func (rq *request) getattr() {
	h := rq.handle()
	if !rq.argsOK() {
		return
	}
	a, st := rq.resolve(h)
	if st != nfsOK {
		rq.fail(st, 0)
		return
	}
	rq.w.u32(nfsOK)
	rq.s.putAttr(rq.w, a)
}

func (rq *request) setattr() {
	h := rq.handle()
	sa := readSattr(rq.args)
	guard := rq.args.bool()
	var guardCtime int64
	if guard {
		guardCtime = readTime(rq.args)
	}
	if !rq.argsOK() {
		return
	}
	a, st := rq.resolve(h)
	if st != nfsOK {
		rq.fail(st, 2)
		return
	}
	// The guard compares at the wire's precision: what the client saw.
	if guard && guardCtime != a.Ctime {
		rq.fail(errNotSync, 0)
		rq.wcc(a.Ino)
		return
	}
	// A size change by anyone but root (after squashing) clears setuid
	// and setgid, as truncate(2) by a process without CAP_FSETID does.
	// Linux's knfsd would not (its SETATTR bypasses the VFS's truncate
	// path), but the next WRITE would; objfs errs on the safe side. Any
	// truncation drops file capabilities, and any chown all three
	// (fs/meta), as knfsd does.
	sa.in.KillSuidgid = rq.c.Uid != 0
	sa.in.ByHandle = true
	// A symlink's mode is always 0777 (Linux has no lchmod, and its
	// clients follow links to chmod): as knfsd does, a mode given for one
	// is ignored, and a SETATTR that gave nothing else changes nothing.
	// A chown of a non-directory drops setuid, and setgid with group
	// execute; when the same SETATTR sets the mode, they are dropped from
	// that mode, which would otherwise be applied as given after the
	// chown (knfsd's nfsd_sanitize_attrs; chmod then chown gives the
	// same). FUSE never asks this: the kernel folds the drop into the
	// mode it sends.
	if sa.in.Valid&(meta.SetUid|meta.SetGid) != 0 && sa.in.Valid&meta.SetMode != 0 && a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		sa.in.Mode &^= syscall.S_ISUID
		if sa.in.Mode&syscall.S_IXGRP != 0 {
			sa.in.Mode &^= syscall.S_ISGID
		}
	}
	if a.Mode&syscall.S_IFMT == syscall.S_IFLNK && sa.in.Valid&meta.SetMode != 0 {
		sa.in.Valid &^= meta.SetMode
		if sa.in.Valid == 0 {
			rq.w.u32(nfsOK)
			rq.wcc(a.Ino)
			return
		}
	}
	if _, err := rq.s.f.SetAttr(rq.ctx, rq.c, a.Ino, sa.in, 0); err != nil {
		rq.failErr(err, 0)
		rq.wcc(a.Ino)
		return
	}
	rq.s.changed(a.Ino)
	rq.w.u32(nfsOK)
	rq.wcc(a.Ino)
}

func (rq *request) lookup() {
	h := rq.handle()
	name := rq.name()
	if !rq.argsOK() {
		return
	}
	dir, st := rq.resolveDir(h)
	if st != nfsOK {
		rq.fail(st, 1)
		return
	}
	var a *meta.Attr
	var err error
	switch name {
	case ".":
		a = dir
	case "..":
		parent := dir.Parent
		if dir.Ino == meta.RootIno || parent == 0 {
			parent = meta.RootIno
		}
		a, err = rq.s.f.GetAttr(rq.ctx, parent)
	default:
		if st := checkName(name); st != nfsOK {
			rq.fail(st, 0)
			rq.s.putPostOp(rq.w, dir)
			return
		}
		a, err = rq.s.f.Lookup(rq.ctx, rq.c, dir.Ino, name)
	}
	if err != nil {
		rq.failErr(err, 0)
		rq.s.putPostOp(rq.w, dir)
		return
	}
	rq.w.u32(nfsOK)
	rq.w.opaque(encodeHandle(a.Ino, a.Gen))
	rq.s.putPostOp(rq.w, a)
	rq.s.putPostOp(rq.w, dir)
}

// ACCESS bits (RFC 1813 section 3.3.4).
const (
	accessRead    = 0x01
	accessLookup  = 0x02
	accessModify  = 0x04
	accessExtend  = 0x08
	accessDelete  = 0x10
	accessExecute = 0x20
)

func (rq *request) access() {
	h := rq.handle()
	want := rq.args.u32()
	if !rq.argsOK() {
		return
	}
	a, st := rq.resolve(h)
	if st != nfsOK {
		rq.fail(st, 1)
		return
	}
	may := func(mask uint32) bool { return meta.Access(a, rq.c, mask) == nil }
	var got uint32
	if may(meta.MayRead) {
		got |= accessRead
	}
	if may(meta.MayWrite) && !rq.s.opts.ReadOnly {
		got |= accessModify | accessExtend
		if a.IsDir() {
			got |= accessDelete
		}
	}
	if may(meta.MayExec) {
		if a.IsDir() {
			got |= accessLookup
		} else {
			got |= accessExecute
		}
	}
	rq.w.u32(nfsOK)
	rq.s.putPostOp(rq.w, a)
	rq.w.u32(want & got)
}

func (rq *request) readlink() {
	h := rq.handle()
	if !rq.argsOK() {
		return
	}
	a, st := rq.resolve(h)
	if st != nfsOK {
		rq.fail(st, 1)
		return
	}
	if a.Type() != syscall.S_IFLNK {
		rq.fail(errInval, 0)
		rq.s.putPostOp(rq.w, a)
		return
	}
	target, err := rq.s.f.Readlink(rq.ctx, a.Ino)
	if err != nil {
		rq.failErr(err, 0)
		rq.s.putPostOp(rq.w, a)
		return
	}
	rq.w.u32(nfsOK)
	rq.s.putPostOp(rq.w, a)
	rq.w.opaque([]byte(target))
}

func (rq *request) read() {
	h := rq.handle()
	off := rq.args.u64()
	count := rq.args.u32()
	if !rq.argsOK() {
		return
	}
	a, st := rq.resolve(h)
	if st != nfsOK {
		rq.fail(st, 1)
		return
	}
	if a.IsDir() {
		rq.fail(errIsDir, 0)
		rq.s.putPostOp(rq.w, a)
		return
	}
	count = min(count, maxData)
	var buf []byte
	if off < a.Size {
		buf = make([]byte, min(uint64(count), a.Size-off))
	}
	n := 0
	if len(buf) > 0 || !a.IsRegular() {
		var err error
		n, err = rq.s.f.ReadInode(rq.ctx, rq.c, a.Ino, off, buf)
		if err != nil {
			rq.failErr(err, 0)
			rq.s.putPostOp(rq.w, a)
			return
		}
	} else if err := meta.AccessByHandle(a, rq.c, meta.MayRead); err != nil {
		rq.failErr(err, 1)
		return
	}
	post := rq.attr(a.Ino)
	size := a.Size
	if post != nil {
		size = post.Size
	}
	rq.w.u32(nfsOK)
	rq.s.putPostOp(rq.w, post)
	rq.w.u32(uint32(n))
	rq.w.bool(off+uint64(n) >= size)
	rq.w.opaque(buf[:n])
}

// stable_how values.
const (
	unstable = 0
	dataSync = 1
	fileSync = 2
)

func (rq *request) write() {
	h := rq.handle()
	off := rq.args.u64()
	count := rq.args.u32()
	how := rq.args.u32()
	data := rq.args.opaque(maxData)
	if how > fileSync {
		rq.args.fail()
	}
	if !rq.argsOK() {
		return
	}
	if int(count) < len(data) {
		data = data[:count]
	}
	a, st := rq.resolve(h)
	if st != nfsOK {
		rq.fail(st, 2)
		return
	}
	// A stable write is committed and synced before the reply. An
	// UNSTABLE one is buffered (see unstable.go), visible to every reader
	// at once and made durable by COMMIT, which the client sends before it
	// forgets the data; the verifier tells it to resend after a restart.
	stable := how != unstable
	err := rq.checkWrite(a)
	buffered := false
	if err == nil && !stable {
		buffered, err = rq.s.writeUnstable(rq.ctx, rq.c, a, off, data)
	}
	if err == nil && !buffered {
		_, err = rq.s.f.WriteInode(rq.ctx, rq.c, a.Ino, off, data, stable)
	}
	if err != nil {
		rq.failErr(err, 0)
		rq.wcc(a.Ino)
		return
	}
	rq.s.changed(a.Ino)
	rq.w.u32(nfsOK)
	rq.wcc(a.Ino)
	rq.w.u32(uint32(len(data)))
	if stable {
		rq.w.u32(fileSync)
	} else {
		rq.w.u32(unstable)
	}
	rq.w.b = append(rq.w.b, rq.s.verifier()...)
}

// checkWrite refuses what WriteInode would, before anything is buffered.
func (rq *request) checkWrite(a *meta.Attr) error {
	switch {
	case a.IsDir():
		return syscall.EISDIR
	case !a.IsRegular():
		return syscall.EINVAL
	}
	return meta.AccessByHandle(a, rq.c, meta.MayWrite)
}

func (rq *request) commit() {
	h := rq.handle()
	rq.args.u64() // offset and count: we always commit the whole file
	rq.args.u32()
	if !rq.argsOK() {
		return
	}
	a, st := rq.resolve(h)
	if st != nfsOK {
		rq.fail(st, 2)
		return
	}
	found, err := rq.s.commitOpen(rq.ctx, a.Ino)
	if !found {
		err = rq.s.f.FsyncInode(rq.ctx, a.Ino)
	}
	if err != nil {
		rq.failErr(err, 0)
		rq.wcc(a.Ino)
		return
	}
	rq.w.u32(nfsOK)
	rq.wcc(a.Ino)
	rq.w.b = append(rq.w.b, rq.s.verifier()...)
}

// created writes the success reply of CREATE, MKDIR, SYMLINK and MKNOD.
func (rq *request) created(a *meta.Attr, dir uint64) {
	rq.w.u32(nfsOK)
	rq.w.bool(true)
	rq.w.opaque(encodeHandle(a.Ino, a.Gen))
	rq.postOp(a.Ino)
	rq.wcc(dir)
}

// createFailed writes a failure reply of the four creating procedures.
func (rq *request) createFailed(st uint32, dir uint64) {
	rq.w.u32(st)
	rq.wcc(dir)
}

// applyRest applies the attributes a create could not set itself.
func (rq *request) applyRest(a *meta.Attr, in meta.SetAttrIn) error {
	if in.Valid == 0 {
		return nil
	}
	in.ByHandle = true
	_, err := rq.s.f.SetAttr(rq.ctx, rq.c, a.Ino, in, 0)
	return err
}

// createhow3 modes.
const (
	createUnchecked = 0
	createGuarded   = 1
	createExclusive = 2
)

func (rq *request) create() {
	h := rq.handle()
	name := rq.name()
	how := rq.args.u32()
	var sa sattr
	var verf []byte
	switch how {
	case createUnchecked, createGuarded:
		sa = readSattr(rq.args)
	case createExclusive:
		verf = rq.args.fixed(8)
	default:
		rq.args.fail()
	}
	if !rq.argsOK() {
		return
	}
	dir, st := rq.resolveDir(h)
	if st != nfsOK {
		rq.fail(st, 2)
		return
	}
	if st := checkName(name); st != nfsOK {
		rq.createFailed(st, dir.Ino)
		return
	}
	mode := sa.mode(0o644)
	if how == createExclusive {
		// The verifier is kept in atime and mtime until the client's
		// follow-up SETATTR, so a retransmitted create is recognised.
		mode = 0
		sa.in = meta.SetAttrIn{Valid: meta.SetAtime | meta.SetMtime,
			Atime: int64(be32(verf[:4])) * 1e9, Mtime: int64(be32(verf[4:])) * 1e9}
	}
	a, err := rq.s.f.Mknod(rq.ctx, rq.c, dir.Ino, name, meta.NewNode{Mode: syscall.S_IFREG | mode})
	if errors.Is(err, syscall.EEXIST) && how != createGuarded {
		old, lerr := rq.s.f.Lookup(rq.ctx, rq.c, dir.Ino, name)
		switch {
		case lerr != nil:
			err = lerr
		case how == createExclusive:
			if old.IsRegular() && old.Atime == sa.in.Atime && old.Mtime == sa.in.Mtime {
				rq.created(old, dir.Ino)
				return
			}
		case !old.IsRegular():
			// UNCHECKED over a directory or special file: EXIST, as
			// open(O_CREAT) of a directory fails.
		default:
			// UNCHECKED over a file is open(O_CREAT): only a size given
			// (O_TRUNC) applies, never the mode or owner meant for a new file.
			in := meta.SetAttrIn{Valid: sa.in.Valid & meta.SetSize, Size: sa.in.Size, KillSuidgid: rq.c.Uid != 0}
			if err = rq.applyRest(old, in); err == nil {
				rq.s.changed(old.Ino)
				rq.created(old, dir.Ino)
				return
			}
		}
	}
	if err != nil {
		rq.createFailed(statusOf(rq.ctx, rq.s.log, rq.op, err), dir.Ino)
		return
	}
	if err := rq.applyRest(a, sa.rest()); err != nil {
		rq.createFailed(statusOf(rq.ctx, rq.s.log, rq.op, err), dir.Ino)
		return
	}
	rq.s.entryChanged(dir.Ino, name)
	rq.created(a, dir.Ino)
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// mkobj creates a node of any kind and applies the remaining attributes.
func (rq *request) mkobj(h []byte, name string, n meta.NewNode, rest meta.SetAttrIn) {
	dir, st := rq.resolveDir(h)
	if st != nfsOK {
		rq.fail(st, 2)
		return
	}
	if n.Mode&syscall.S_IFMT == syscall.S_IFLNK && n.Target == "" {
		// An empty target is refused before the name is looked at, as
		// symlink(2) (ENOENT) and knfsd (INVAL) both do.
		rq.createFailed(errNoEnt, dir.Ino)
		return
	}
	if st := checkName(name); st != nfsOK {
		if name == "." || name == ".." {
			st = errExist
		}
		rq.createFailed(st, dir.Ino)
		return
	}
	a, err := rq.s.f.Mknod(rq.ctx, rq.c, dir.Ino, name, n)
	if err == nil {
		err = rq.applyRest(a, rest)
	}
	if err != nil {
		rq.createFailed(statusOf(rq.ctx, rq.s.log, rq.op, err), dir.Ino)
		return
	}
	rq.s.entryChanged(dir.Ino, name)
	rq.created(a, dir.Ino)
}

func (rq *request) mkdir() {
	h := rq.handle()
	name := rq.name()
	sa := readSattr(rq.args)
	if !rq.argsOK() {
		return
	}
	rq.mkobj(h, name, meta.NewNode{Mode: syscall.S_IFDIR | sa.mode(0o755)}, sa.rest())
}

func (rq *request) symlink() {
	h := rq.handle()
	name := rq.name()
	sa := readSattr(rq.args)
	target := rq.args.opaque(maxPath)
	if !rq.argsOK() {
		return
	}
	// A symlink's mode is always 0777; only owner and times apply.
	rq.mkobj(h, name, meta.NewNode{Mode: syscall.S_IFLNK | 0o777, Target: string(target)}, sa.rest())
}

func (rq *request) mknod() {
	h := rq.handle()
	name := rq.name()
	typ := rq.args.u32()
	var sa sattr
	var rdev uint32
	var mode uint32
	switch typ {
	case nf3Chr, nf3Blk:
		sa = readSattr(rq.args)
		major, minor := rq.args.u32(), rq.args.u32()
		rdev = mkdev(major, minor)
		mode = syscall.S_IFCHR
		if typ == nf3Blk {
			mode = syscall.S_IFBLK
		}
	case nf3Sock:
		sa = readSattr(rq.args)
		mode = syscall.S_IFSOCK
	case nf3Fifo:
		sa = readSattr(rq.args)
		mode = syscall.S_IFIFO
	}
	if !rq.argsOK() {
		return
	}
	if mode == 0 {
		// Regular files, directories and symlinks have their own procedures.
		dir, st := rq.resolveDir(h)
		if st != nfsOK {
			rq.fail(st, 2)
			return
		}
		rq.createFailed(errBadType, dir.Ino)
		return
	}
	rq.mkobj(h, name, meta.NewNode{Mode: mode | sa.mode(0o644), Rdev: rdev}, sa.rest())
}

// unlinkLike serves REMOVE and RMDIR.
func (rq *request) unlinkLike(rmdir bool) {
	h := rq.handle()
	name := rq.name()
	if !rq.argsOK() {
		return
	}
	dir, st := rq.resolveDir(h)
	if st != nfsOK {
		rq.fail(st, 2)
		return
	}
	var err error
	switch {
	case name == "." && rmdir:
		err = syscall.EINVAL
	case name == ".." && rmdir:
		err = syscall.ENOTEMPTY
	case name == "." || name == "..":
		err = syscall.EISDIR
	case len(name) > maxName:
		err = syscall.ENAMETOOLONG
	case rmdir:
		err = rq.s.f.Rmdir(rq.ctx, rq.c, dir.Ino, name)
	default:
		var child uint64
		if child, err = rq.s.f.UnlinkInode(rq.ctx, rq.c, dir.Ino, name); err == nil {
			rq.s.changed(child) // its link count and ctime changed
		}
	}
	if err != nil {
		rq.createFailed(statusOf(rq.ctx, rq.s.log, rq.op, err), dir.Ino)
		return
	}
	rq.s.entryChanged(dir.Ino, name)
	rq.w.u32(nfsOK)
	rq.wcc(dir.Ino)
}

func (rq *request) remove() { rq.unlinkLike(false) }
func (rq *request) rmdir()  { rq.unlinkLike(true) }

func (rq *request) rename() {
	fromH := rq.handle()
	fromName := rq.name()
	toH := rq.handle()
	toName := rq.name()
	if !rq.argsOK() {
		return
	}
	from, st := rq.resolveDir(fromH)
	if st != nfsOK {
		rq.fail(st, 4)
		return
	}
	to, st := rq.resolveDir(toH)
	if st != nfsOK {
		rq.fail(st, 4)
		return
	}
	var err error
	switch {
	case fromName == "." || fromName == ".." || toName == "." || toName == "..":
		err = syscall.EINVAL
	default:
		// Names too long are the metadata's to refuse, in rename(2)'s
		// order: a missing source first.
		done := rq.s.renaming(from.Ino, fromName, to.Ino, toName)
		var changed []uint64
		if changed, err = rq.s.f.RenameInodes(rq.ctx, rq.c, from.Ino, fromName, to.Ino, toName, 0); err == nil {
			// The moved inode's ctime (and a directory's ".."), the
			// replaced one's link count: as the transaction found them.
			for _, ino := range changed {
				rq.s.changed(ino)
			}
		}
		done(err == nil) // reports both names changed
	}
	if err != nil {
		rq.w.u32(statusOf(rq.ctx, rq.s.log, rq.op, err))
	} else {
		rq.w.u32(nfsOK)
	}
	rq.wcc(from.Ino)
	rq.wcc(to.Ino)
}

// link serves LINK3args as RFC 1813 defines them: the file's handle, then
// the directory and name of the new link.
func (rq *request) link() {
	fileH := rq.handle()
	dirH := rq.handle()
	name := rq.name()
	if !rq.argsOK() {
		return
	}
	file, st := rq.resolve(fileH)
	if st != nfsOK {
		rq.fail(st, 3)
		return
	}
	dir, st := rq.resolveDir(dirH)
	if st != nfsOK {
		rq.fail(st, 0)
		rq.s.putPostOp(rq.w, file)
		rq.w.u32(0)
		rq.w.u32(0)
		return
	}
	st = checkName(name)
	if name == "." || name == ".." {
		st = errExist
	}
	if st == nfsOK {
		_, err := rq.s.f.Link(rq.ctx, rq.c, file.Ino, dir.Ino, name)
		st = statusOf(rq.ctx, rq.s.log, rq.op, err)
		if err == nil {
			rq.s.changed(file.Ino)
			rq.s.entryChanged(dir.Ino, name)
		}
	}
	rq.w.u32(st)
	rq.postOp(file.Ino)
	rq.wcc(dir.Ino)
}

func (rq *request) fsstat() {
	h := rq.handle()
	if !rq.argsOK() {
		return
	}
	a, st := rq.resolve(h)
	if st != nfsOK {
		rq.fail(st, 1)
		return
	}
	sf, err := rq.s.f.StatFs(rq.ctx)
	if err != nil {
		rq.failErr(err, 0)
		rq.s.putPostOp(rq.w, a)
		return
	}
	bs := uint64(sf.BlockSize)
	rq.w.u32(nfsOK)
	rq.s.putPostOp(rq.w, a)
	rq.w.u64(sf.Blocks * bs)
	rq.w.u64(sf.BlocksFree * bs)
	rq.w.u64(sf.BlocksFree * bs)
	rq.w.u64(sf.Files)
	rq.w.u64(sf.FilesFree)
	rq.w.u64(sf.FilesFree)
	rq.w.u32(0) // invarsec: the file system changes at any time
}

// FSINFO properties.
const (
	fsfLink        = 0x1
	fsfSymlink     = 0x2
	fsfHomogeneous = 0x8
	fsfCanSetTime  = 0x10
)

func (rq *request) fsinfo() {
	h := rq.handle()
	if !rq.argsOK() {
		return
	}
	a, st := rq.resolve(h)
	if st != nfsOK {
		rq.fail(st, 1)
		return
	}
	rq.w.u32(nfsOK)
	rq.s.putPostOp(rq.w, a)
	rq.w.u32(maxData)  // rtmax
	rq.w.u32(maxData)  // rtpref
	rq.w.u32(4096)     // rtmult
	rq.w.u32(maxData)  // wtmax
	rq.w.u32(maxData)  // wtpref
	rq.w.u32(4096)     // wtmult
	rq.w.u32(64 << 10) // dtpref
	rq.w.u64(meta.MaxFileSize)
	rq.w.u32(0) // time_delta: nanosecond timestamps
	rq.w.u32(1)
	rq.w.u32(fsfLink | fsfSymlink | fsfHomogeneous | fsfCanSetTime)
}

func (rq *request) pathconf() {
	h := rq.handle()
	if !rq.argsOK() {
		return
	}
	a, st := rq.resolve(h)
	if st != nfsOK {
		rq.fail(st, 1)
		return
	}
	rq.w.u32(nfsOK)
	rq.s.putPostOp(rq.w, a)
	rq.w.u32(65000) // linkmax, as fs/meta enforces
	rq.w.u32(meta.MaxNameLen)
	rq.w.bool(true)  // no_trunc: long names are refused, not cut
	rq.w.bool(true)  // chown_restricted
	rq.w.bool(false) // case_insensitive
	rq.w.bool(true)  // case_preserving
}

// mnt answers MOUNT MNT. The export is the volume root, "/"; like Linux's
// server, any directory below it may be mounted too (libnfs mounts the
// directory of the file a URL names). An empty path means the root.
func (s *server) mnt(ctx context.Context, xid uint32, c *meta.Caller, args *xdrReader) []byte {
	dir := args.opaque(1024)
	if args.err != nil {
		return replyHeader(xid, acceptGarbageArgs).b
	}
	w := replyHeader(xid, acceptSuccess)
	a, err := s.f.GetAttr(ctx, meta.RootIno)
	for _, name := range splitPath(string(dir)) {
		if err != nil {
			break
		}
		a, err = s.f.Lookup(ctx, c, a.Ino, name)
	}
	if err == nil && !a.IsDir() {
		err = syscall.ENOTDIR
	}
	if err != nil {
		// mountstat3 shares its values with the errnos NFS uses.
		w.u32(statusOf(ctx, s.log, "MNT", err))
		return w.b
	}
	w.u32(nfsOK)
	w.opaque(encodeHandle(a.Ino, a.Gen))
	w.u32(2) // auth flavors accepted
	w.u32(authSys)
	w.u32(authNone)
	return w.b
}

// export answers MOUNT EXPORT with the one export, "/", open to every
// client --allow admits. go-nfs has no handler for it and its "procedure
// unavailable" answer makes libnfs give up on mounting.
func (s *server) export(xid uint32) []byte {
	w := replyHeader(xid, acceptSuccess)
	w.bool(true) // an export follows
	w.opaque([]byte("/"))
	w.bool(false) // no group list
	w.bool(false) // no more exports
	return w.b
}
