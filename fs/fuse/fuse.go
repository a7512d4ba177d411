// Package fuse is the FUSE front end: it translates the kernel's requests,
// as decoded by go-fuse's raw protocol layer, into calls of the POSIX layer
// in package fs, and its errors into errno values. It keeps no state of its
// own beyond what the kernel protocol needs: inode numbers are objfs's own.
package fuse

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/fs/metrics"
)

// Timeouts for the kernel's caches of entries (including negative ones)
// and attributes. They can be long: the kernel sees every change made
// through this mount, and changes made through the NFS front end of the
// same process drop the cached state explicitly (Invalidator), so a cache
// hit is never stale. Nothing else changes a mounted volume.
const (
	entryTimeout = time.Minute
	attrTimeout  = time.Minute
)

// FS adapts fs.FS to go-fuse's RawFileSystem.
type FS struct {
	gofuse.RawFileSystem // defaults answer ENOSYS for what is not implemented
	fs                   *fs.FS
	log                  *slog.Logger
	ops                  *metrics.Ops   // nil: no metrics
	srv                  *gofuse.Server // for notifications; nil before Mount
	// noKernelChecks: mounted without default_permissions (KernelChecks),
	// so a caller other than root is worth a warning, once (warned).
	noKernelChecks bool
	warned         atomic.Bool
	punchWarned    atomic.Bool // a punch refused on an older format, logged
	// holds: names an NFS rename is changing (Invalidator.Renaming);
	// the mount's own changes to a held name refresh it.
	holds nameHolds
}

// New returns the FUSE adapter for f; ops, when not nil, records every
// request.
func New(f *fs.FS, log *slog.Logger, ops *metrics.Ops) *FS {
	a := &FS{RawFileSystem: gofuse.NewDefaultRawFileSystem(), fs: f, log: log, ops: ops}
	a.holds.lookup = func(dir uint64, name string) uint64 {
		// Under the holds' lock: Named, which waits for no commit.
		ino, err := f.Named(context.Background(), dir, name)
		if err != nil {
			return 0 // missing, or unreadable: the kernel will ask again
		}
		return ino
	}
	return a
}

// MountOptions are the choices a mount leaves to its user.
type MountOptions struct {
	// Debug logs every request and reply.
	Debug bool
	// AllowOther lets every user's processes use the mount, not only
	// those of the user who mounted it (the kernel refuses all others
	// with EACCES otherwise). Permissions are still checked for each
	// caller: by the kernel (default_permissions) and by objfs. A mount
	// by anyone but root needs user_allow_other in /etc/fuse.conf.
	AllowOther bool
	// KernelPermissions keeps the kernel's own permission checks
	// (default_permissions) on a mount that root alone can use, where
	// they are otherwise left to objfs (see KernelChecks).
	KernelPermissions bool
}

// KernelChecks reports whether a mount asks the kernel to check every
// access against the mode bits (default_permissions) before objfs checks
// it again. That costs a GETATTR of each directory a create, unlink or
// rename touches, since the kernel drops a directory's attributes at each
// change of it: 2 of a rename's 5 requests, 1 of an unlink's 2. On a
// mount by root without allow_other the kernel lets only processes whose
// uid and gid are 0 in, which the checks would let through anyway (objfs
// still refuses to execute a file without an execute bit, and the kernel
// asks it for access() and chdir()), so they are left out there. The one
// thing only the kernel can check is search permission on directories
// whose entries it has cached, for a root process that switched its
// filesystem uid (knfsd, NFS-Ganesha re-exporting the mount): such a
// mount needs kernelPermissions. Any other mounter's processes are
// ordinary users, and with allowOther everyone's are.
func KernelChecks(allowOther, kernelPermissions bool, euid int) bool {
	return allowOther || kernelPermissions || euid != 0
}

// PermissionOptions are the mount options that KernelChecks asks for,
// also for other go-fuse file systems that should be mounted the way objfs
// is.
func PermissionOptions(allowOther, kernelPermissions bool, euid int) []string {
	if KernelChecks(allowOther, kernelPermissions, euid) {
		return []string{"default_permissions"}
	}
	return nil
}

// Mount mounts f at mountpoint and starts serving; the caller waits on the
// returned server and unmounts it.
//
// The Invalidator it returns keeps the kernel's caches true to changes
// another front end of the process makes (see nfs.Watcher).
func Mount(f *fs.FS, mountpoint string, mo MountOptions, log *slog.Logger, ops *metrics.Ops) (*gofuse.Server, *Invalidator, error) {
	opts := &gofuse.MountOptions{
		FsName:        "objfs",
		Name:          "objfs",
		MaxWrite:      1 << 20,
		MaxReadAhead:  1 << 20,
		MaxBackground: 64,
		Debug:         mo.Debug,
		AllowOther:    mo.AllowOther,
		// The kernel keeps flock and POSIX locks for the mount itself.
		EnableLocks: false,
		Options:     PermissionOptions(mo.AllowOther, mo.KernelPermissions, os.Geteuid()),
		// objfs drops setuid, setgid and file capabilities itself on
		// write, truncate and chown (see Write, SetAttr, Create). In
		// exchange the kernel sets SB_NOSEC and asks for
		// security.capability once per inode instead of before every
		// write(), a round trip per write saved.
		ExtraCapabilities: gofuse.CAP_HANDLE_KILLPRIV_V2,
		// Replies carry data from memory (viewResult), never a file
		// descriptor to splice from; with splicing enabled go-fuse still
		// sets up a pipe for every READ reply before falling back to a
		// plain write, three wasted system calls per READ.
		DisableSplice: true,
	}
	a := New(f, log, ops)
	a.noKernelChecks = !KernelChecks(mo.AllowOther, mo.KernelPermissions, os.Geteuid())
	srv, err := gofuse.NewServer(a, mountpoint, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	a.srv = srv
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		_ = srv.Unmount()
		return nil, nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	if err := SetReadAhead(mountpoint, ReadAheadKB); err != nil {
		log.Debug("kernel read-ahead left at its default (needs root)", "err", err)
	}
	return srv, &Invalidator{srv: srv, fs: a}, nil
}

func (a *FS) String() string { return "objfs" }

// errno turns an error from the POSIX layer into a FUSE status. Errors
// that are not errno values are unexpected (I/O, corruption): they are
// logged and reported as EIO.
func (a *FS) errno(op string, err error) gofuse.Status {
	if err == nil {
		return gofuse.OK
	}
	a.ops.Failed(op)
	var e syscall.Errno
	if errors.As(err, &e) && !errors.Is(err, syscall.EIO) {
		return gofuse.Status(e)
	}
	switch {
	case errors.Is(err, meta.ErrTxnTooBig):
		a.log.Warn("operation too large for one transaction", "op", op, "err", err)
		return gofuse.Status(syscall.EFBIG)
	}
	a.log.Error("operation failed", "op", op, "err", err)
	return gofuse.EIO
}

// ctx gives a request its context. The kernel's INTERRUPT is deliberately
// not turned into cancellation: the kernel sends it for any signal to the
// calling thread, including the Go runtime's own preemption signals, and an
// operation that fails with EINTR (close, chown, utimes...) is one that
// applications do not retry. Operations finish; a stuck object store is
// bounded by the store's own timeouts and retries instead.
func ctx(<-chan struct{}) (context.Context, func()) {
	return context.Background(), func() {}
}

// caller builds the permission identity of a request. FUSE sends no
// supplementary groups, so they are read from /proc, for non-root callers,
// when a check first depends on them (reading them costs about as much CPU
// as serving a whole GETATTR).
func (a *FS) caller(h *gofuse.InHeader) *meta.Caller {
	if h.Uid == 0 {
		return &meta.Caller{Uid: h.Uid, Gid: h.Gid}
	}
	if a.noKernelChecks && !a.warned.Swap(true) {
		// Only a root process that switched its filesystem uid gets here.
		a.log.Warn("a process acting as another user uses a mount without the kernel's permission checks: "+
			"directories whose entries the kernel caches are searched without a check of their permissions; "+
			"mount with --kernel-permissions for such a process", "uid", h.Uid, "pid", h.Pid)
	}
	return lazyCaller(h)
}

// lazyCaller is the identity of a request whose supplementary groups are
// read from /proc when a check first needs them.
func lazyCaller(h *gofuse.InHeader) *meta.Caller {
	pid := h.Pid
	return meta.LazyCaller(h.Uid, h.Gid, func() []uint32 {
		if pid == 0 {
			return nil
		}
		return procGroups(pid)
	})
}

// unprivileged returns the identity of a caller that the kernel says lacks
// CAP_FSETID, for the privileges its write or truncation drops. Its groups
// are read even for uid 0: the setgid rule asks whether the caller is in
// the file's group, and such a root has no capability to stand in for it.
func unprivileged(h *gofuse.InHeader) func() *meta.Caller {
	return func() *meta.Caller { return lazyCaller(h) }
}

// privsDropped tells the kernel that ino's attributes changed behind its
// back (a write dropped setuid, setgid or capabilities): it drops the
// attributes it caches, not the pages (offset -1), so that the next stat
// asks again. Sent while the write is being served, which is safe
// because invalidating attributes takes no lock the writer holds.
func (a *FS) privsDropped(ino uint64) {
	if a.srv == nil {
		return
	}
	if st := a.srv.InodeNotify(ino, -1, 0); st != gofuse.OK && st != gofuse.ENOENT {
		a.log.Warn("invalidate cached attributes after dropping privileges", "ino", ino, "status", st)
	}
}

func procGroups(pid uint32) []uint32 {
	f, err := os.Open("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if err != nil {
		return nil
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "Groups:"); ok {
			var out []uint32
			for _, g := range strings.Fields(rest) {
				if v, err := strconv.ParseUint(g, 10, 32); err == nil {
					out = append(out, uint32(v))
				}
			}
			return out
		}
	}
	return nil
}

// splitTime turns nanoseconds since the epoch into seconds and a
// non-negative nanosecond part (floor division: -1.5 s is -2 s + 0.5e9 ns).
func splitTime(ns int64) (uint64, uint32) {
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return uint64(sec), uint32(nsec)
}

func fillAttr(out *gofuse.Attr, a *meta.Attr) {
	out.Ino = a.Ino
	out.Size = a.Size
	out.Blocks = a.Blocks()
	out.Atime, out.Atimensec = splitTime(a.Atime)
	out.Mtime, out.Mtimensec = splitTime(a.Mtime)
	out.Ctime, out.Ctimensec = splitTime(a.Ctime)
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Uid, out.Gid = a.Uid, a.Gid
	out.Rdev = a.Rdev
	out.Blksize = 1 << 20
}

func fillEntry(out *gofuse.EntryOut, a *meta.Attr) {
	out.NodeId = a.Ino
	out.Generation = a.Gen
	out.SetEntryTimeout(entryTimeout)
	out.SetAttrTimeout(attrTimeout)
	fillAttr(&out.Attr, a)
}

func (a *FS) Lookup(cancel <-chan struct{}, h *gofuse.InHeader, name string, out *gofuse.EntryOut) gofuse.Status {
	defer a.ops.Observe("lookup", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	epoch := a.fs.Commits()
	at, err := a.fs.Lookup(c, a.caller(h), h.NodeId, name)
	if err == nil || errors.Is(err, syscall.ENOENT) {
		// Asked after the lookup: a rename that committed while it ran
		// is held from before its commit until the kernel knows of it.
		if ino, held := a.holds.get(h.NodeId, name); held {
			return a.heldEntry(c, ino, out)
		}
	}
	if errors.Is(err, syscall.ENOENT) {
		// A negative entry: the kernel remembers that the name is
		// missing, so a create or a search path does not ask again.
		out.NodeId = 0
		out.SetEntryTimeout(entryTimeout)
		return gofuse.OK
	}
	if err != nil {
		return a.errno("lookup", err)
	}
	fillEntry(out, at)
	if !a.cacheable(at.Ino, epoch) {
		out.SetAttrTimeout(0)
	}
	return gofuse.OK
}

// heldEntry answers a lookup of a held name (Invalidator.Renaming) with
// what it named before the rename, ino (0: nothing), and timeouts of zero,
// so that the kernel asks again next time.
func (a *FS) heldEntry(c context.Context, ino uint64, out *gofuse.EntryOut) gofuse.Status {
	if ino != 0 {
		at, err := a.fs.GetAttr(c, ino)
		if err == nil && at.Nlink == 0 {
			err = syscall.ENOENT // removed since: no name names it
		}
		if err == nil {
			fillEntry(out, at)
			out.SetEntryTimeout(0)
			out.SetAttrTimeout(0)
			return gofuse.OK
		}
		if !errors.Is(err, syscall.ENOENT) {
			return a.errno("lookup", err)
		}
	}
	out.NodeId = 0
	out.SetEntryTimeout(0)
	return gofuse.OK
}

// Forget needs no work: objfs keeps no per-lookup state.
func (a *FS) Forget(nodeid, nlookup uint64) {}

func (a *FS) GetAttr(cancel <-chan struct{}, in *gofuse.GetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	defer a.ops.Observe("getattr", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	epoch := a.fs.Commits()
	at, err := a.fs.GetAttr(c, in.NodeId)
	if err != nil {
		return a.errno("getattr", err)
	}
	fillAttr(&out.Attr, at)
	out.SetTimeout(attrTimeout)
	if !a.cacheable(at.Ino, epoch) {
		out.SetTimeout(0)
	}
	return gofuse.OK
}

// cacheable reports whether the kernel may keep attributes of ino read
// since fs.Commits was epoch: not if a commit of buffered writes became
// visible meanwhile, nor while ino has writes buffered, since committing
// them changes what the file stores (st_blocks) without the kernel's
// knowing. Its next stat then asks again.
func (a *FS) cacheable(ino uint64, epoch uint64) bool {
	return a.fs.Commits() == epoch && !a.fs.Buffered(ino)
}

func (a *FS) SetAttr(cancel <-chan struct{}, in *gofuse.SetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	defer a.ops.Observe("setattr", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	var s meta.SetAttrIn
	v := in.Valid
	if v&gofuse.FATTR_MODE != 0 {
		s.Valid |= meta.SetMode
		s.Mode = in.Mode
	}
	if v&gofuse.FATTR_UID != 0 {
		s.Valid |= meta.SetUid
		s.Uid = in.Uid
	}
	if v&gofuse.FATTR_GID != 0 {
		s.Valid |= meta.SetGid
		s.Gid = in.Gid
	}
	if v&gofuse.FATTR_SIZE != 0 {
		s.Valid |= meta.SetSize
		s.Size = in.Size
		// Sent with a truncation by a caller without CAP_FSETID. (With
		// a chown the kernel always sends it; fs/meta always drops
		// privileges on chown anyway.)
		s.KillSuidgid = v&gofuse.FATTR_KILL_SUIDGID != 0
	}
	if v&gofuse.FATTR_ATIME_NOW != 0 {
		s.Valid |= meta.SetAtimeNow
	} else if v&gofuse.FATTR_ATIME != 0 {
		s.Valid |= meta.SetAtime
		s.Atime = int64(in.Atime)*1e9 + int64(in.Atimensec)
	}
	if v&gofuse.FATTR_MTIME_NOW != 0 {
		s.Valid |= meta.SetMtimeNow
	} else if v&gofuse.FATTR_MTIME != 0 {
		s.Valid |= meta.SetMtime
		s.Mtime = int64(in.Mtime)*1e9 + int64(in.Mtimensec)
	}
	if v&gofuse.FATTR_CTIME != 0 {
		s.Valid |= meta.SetCtime
		s.Ctime = int64(in.Ctime)*1e9 + int64(in.Ctimensec)
	}
	// chown(path, -1, -1): with FUSE_HANDLE_KILLPRIV_V2 the kernel leaves
	// dropping privileges to objfs, but flags a chown only when it names
	// an id, so one naming none comes as a SETATTR naming nothing.
	const named = gofuse.FATTR_MODE | gofuse.FATTR_UID | gofuse.FATTR_GID | gofuse.FATTR_SIZE |
		gofuse.FATTR_ATIME | gofuse.FATTR_MTIME | gofuse.FATTR_ATIME_NOW | gofuse.FATTR_MTIME_NOW | gofuse.FATTR_CTIME
	s.Chown = v&named == 0
	fh, _ := in.GetFh()
	var who *meta.Caller
	if s.KillSuidgid {
		who = unprivileged(&in.InHeader)()
	} else {
		who = a.caller(&in.InHeader)
	}
	epoch := a.fs.Commits()
	at, err := a.fs.SetAttr(c, who, in.NodeId, s, fh)
	if err != nil {
		return a.errno("setattr", err)
	}
	fillAttr(&out.Attr, at)
	out.SetTimeout(attrTimeout)
	if !a.cacheable(at.Ino, epoch) {
		out.SetTimeout(0)
	}
	return gofuse.OK
}

func (a *FS) Mknod(cancel <-chan struct{}, in *gofuse.MknodIn, name string, out *gofuse.EntryOut) gofuse.Status {
	defer a.ops.Observe("mknod", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	at, err := a.fs.Mknod(c, a.caller(&in.InHeader), in.NodeId, name, meta.NewNode{Mode: in.Mode, Rdev: in.Rdev})
	if err != nil {
		return a.errno("mknod", err)
	}
	a.holds.refresh(in.NodeId, name)
	fillEntry(out, at)
	return gofuse.OK
}

func (a *FS) Mkdir(cancel <-chan struct{}, in *gofuse.MkdirIn, name string, out *gofuse.EntryOut) gofuse.Status {
	defer a.ops.Observe("mkdir", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	at, err := a.fs.Mkdir(c, a.caller(&in.InHeader), in.NodeId, name, in.Mode)
	if err != nil {
		return a.errno("mkdir", err)
	}
	a.holds.refresh(in.NodeId, name)
	fillEntry(out, at)
	return gofuse.OK
}

func (a *FS) Unlink(cancel <-chan struct{}, h *gofuse.InHeader, name string) gofuse.Status {
	defer a.ops.Observe("unlink", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	err := a.fs.Unlink(c, a.caller(h), h.NodeId, name)
	if err == nil {
		a.holds.refresh(h.NodeId, name)
	}
	return a.errno("unlink", err)
}

func (a *FS) Rmdir(cancel <-chan struct{}, h *gofuse.InHeader, name string) gofuse.Status {
	defer a.ops.Observe("rmdir", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	err := a.fs.Rmdir(c, a.caller(h), h.NodeId, name)
	if err == nil {
		a.holds.refresh(h.NodeId, name)
	}
	return a.errno("rmdir", err)
}

func (a *FS) Rename(cancel <-chan struct{}, in *gofuse.RenameIn, oldName, newName string) gofuse.Status {
	defer a.ops.Observe("rename", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	err := a.fs.Rename(c, a.caller(&in.InHeader), in.NodeId, oldName, in.Newdir, newName, in.Flags)
	if err == nil {
		a.holds.refresh(in.NodeId, oldName)
		a.holds.refresh(in.Newdir, newName)
	}
	return a.errno("rename", err)
}

func (a *FS) Link(cancel <-chan struct{}, in *gofuse.LinkIn, name string, out *gofuse.EntryOut) gofuse.Status {
	defer a.ops.Observe("link", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	epoch := a.fs.Commits()
	at, err := a.fs.Link(c, a.caller(&in.InHeader), in.Oldnodeid, in.NodeId, name)
	if err != nil {
		return a.errno("link", err)
	}
	a.holds.refresh(in.NodeId, name)
	fillEntry(out, at)
	if !a.cacheable(at.Ino, epoch) {
		out.SetAttrTimeout(0) // a file being written, linked
	}
	return gofuse.OK
}

func (a *FS) Symlink(cancel <-chan struct{}, h *gofuse.InHeader, target, name string, out *gofuse.EntryOut) gofuse.Status {
	defer a.ops.Observe("symlink", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	at, err := a.fs.Symlink(c, a.caller(h), h.NodeId, name, target)
	if err != nil {
		return a.errno("symlink", err)
	}
	a.holds.refresh(h.NodeId, name)
	fillEntry(out, at)
	return gofuse.OK
}

func (a *FS) Readlink(cancel <-chan struct{}, h *gofuse.InHeader) ([]byte, gofuse.Status) {
	defer a.ops.Observe("readlink", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	t, err := a.fs.Readlink(c, h.NodeId)
	if err != nil {
		return nil, a.errno("readlink", err)
	}
	return []byte(t), gofuse.OK
}

func (a *FS) Access(cancel <-chan struct{}, in *gofuse.AccessIn) gofuse.Status {
	defer a.ops.Observe("access", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	return a.errno("access", a.fs.Access(c, a.caller(&in.InHeader), in.NodeId, in.Mask))
}

func (a *FS) GetXAttr(cancel <-chan struct{}, h *gofuse.InHeader, attr string, dest []byte) (uint32, gofuse.Status) {
	defer a.ops.Observe("getxattr", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	v, err := a.fs.GetXattr(c, a.caller(h), h.NodeId, attr)
	if err != nil {
		return 0, a.errno("getxattr", err)
	}
	return xattrReply(dest, v)
}

// xattrReply answers getxattr/listxattr: the size alone when the caller
// asks for it (empty dest), ERANGE when dest is too small.
func xattrReply(dest, v []byte) (uint32, gofuse.Status) {
	switch {
	case len(dest) == 0:
		return uint32(len(v)), gofuse.OK
	case len(v) > len(dest):
		return uint32(len(v)), gofuse.ERANGE
	}
	return uint32(copy(dest, v)), gofuse.OK
}

func (a *FS) ListXAttr(cancel <-chan struct{}, h *gofuse.InHeader, dest []byte) (uint32, gofuse.Status) {
	defer a.ops.Observe("listxattr", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	names, err := a.fs.ListXattr(c, a.caller(h), h.NodeId)
	if err != nil {
		return 0, a.errno("listxattr", err)
	}
	var b []byte
	for _, n := range names {
		b = append(append(b, n...), 0)
	}
	return xattrReply(dest, b)
}

func (a *FS) SetXAttr(cancel <-chan struct{}, in *gofuse.SetXAttrIn, attr string, data []byte) gofuse.Status {
	defer a.ops.Observe("setxattr", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	return a.errno("setxattr", a.fs.SetXattr(c, a.caller(&in.InHeader), in.NodeId, attr, data, in.Flags))
}

func (a *FS) RemoveXAttr(cancel <-chan struct{}, h *gofuse.InHeader, attr string) gofuse.Status {
	defer a.ops.Observe("removexattr", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	return a.errno("removexattr", a.fs.RemoveXattr(c, a.caller(h), h.NodeId, attr))
}

func (a *FS) Create(cancel <-chan struct{}, in *gofuse.CreateIn, name string, out *gofuse.CreateOut) gofuse.Status {
	defer a.ops.Observe("create", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	// CREATE carries the open(2) flags, O_TRUNC included. The name may
	// exist (another creator won a race): then an O_TRUNC by a caller
	// without CAP_FSETID, flagged by the kernel, drops setuid and setgid.
	at, fh, err := a.fs.Create(c, a.caller(&in.InHeader), in.NodeId, name, in.Mode, openFlags(in.Flags, in.OpenFlags))
	if err != nil {
		return a.errno("create", err)
	}
	a.holds.refresh(in.NodeId, name)
	fillEntry(&out.EntryOut, at)
	out.Fh, out.OpenFlags = fh, openReplyFlags(in.Flags)
	return gofuse.OK
}

func (a *FS) Tmpfile(cancel <-chan struct{}, in *gofuse.CreateIn, out *gofuse.CreateOut) gofuse.Status {
	defer a.ops.Observe("tmpfile", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	at, fh, err := a.fs.Tmpfile(c, a.caller(&in.InHeader), in.NodeId, in.Mode, in.Flags)
	if err != nil {
		return a.errno("tmpfile", err)
	}
	fillEntry(&out.EntryOut, at)
	out.Fh, out.OpenFlags = fh, openReplyFlags(in.Flags)
	return gofuse.OK
}

func (a *FS) Open(cancel <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	defer a.ops.Observe("open", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	// Without CAP_ATOMIC_O_TRUNC (not negotiated) the kernel strips
	// O_TRUNC from OPEN, so the kill flag never comes here today: the
	// truncation comes as a SETATTR with FATTR_KILL_SUIDGID instead.
	fh, err := a.fs.Open(c, a.caller(&in.InHeader), in.NodeId, openFlags(in.Flags, in.Mode))
	if err != nil {
		return a.errno("open", err)
	}
	out.Fh, out.OpenFlags = fh, openReplyFlags(in.Flags)
	return gofuse.OK
}

// openReplyFlags tells the kernel how to treat a handle opened with the
// open(2) flags given:
//   - FOPEN_KEEP_CACHE: keep what the page cache holds of the file rather
//     than drop it at every open. It cannot be stale: the kernel sees every
//     change made through this mount, and each change made through the NFS
//     front end drops it (Invalidator).
//   - FOPEN_NOFLUSH, for a handle that cannot write: its close() sends no
//     FLUSH. Such a close has nothing of its own to commit (writers'
//     closes commit theirs), and a small file read whole costs one round
//     trip less.
func openReplyFlags(flags uint32) uint32 {
	reply := uint32(gofuse.FOPEN_KEEP_CACHE)
	if flags&syscall.O_ACCMODE == syscall.O_RDONLY && flags&syscall.O_TRUNC == 0 {
		reply |= gofuse.FOPEN_NOFLUSH
	}
	return reply
}

// openFlags adds fs.OpenKillSuidgid to the open(2) flags of an OPEN or
// CREATE when the kernel's open_flags carry FUSE_OPEN_KILL_SUIDGID.
func openFlags(flags, openFlags uint32) uint32 {
	if openFlags&gofuse.OPEN_KILL_SUIDGID != 0 {
		flags |= fs.OpenKillSuidgid
	}
	return flags
}

func (a *FS) Read(cancel <-chan struct{}, in *gofuse.ReadIn, buf []byte) (gofuse.ReadResult, gofuse.Status) {
	defer a.ops.Observe("read", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	data, release, err := a.fs.ReadView(c, in.Fh, in.Offset, buf[:min(len(buf), int(in.Size))])
	if err != nil {
		return nil, a.errno("read", err)
	}
	return &viewResult{data: data, release: release}, gofuse.OK
}

// viewResult answers a READ with bytes where they lie (fs.ReadView: in
// go-fuse's buffer, or in a block at hand): go-fuse writes them to the
// kernel straight from there (Slices; one writev with the header) and
// calls Done once they are sent, which lets a block read ahead go.
type viewResult struct {
	data    []byte
	release func()
}

func (r *viewResult) Size() int { return len(r.data) }

func (r *viewResult) Bytes([]byte) ([]byte, gofuse.Status) { return r.data, gofuse.OK }

func (r *viewResult) Slices() ([][]byte, gofuse.Status) { return [][]byte{r.data}, gofuse.OK }

func (r *viewResult) Done() { r.release() }

func (a *FS) Write(cancel <-chan struct{}, in *gofuse.WriteIn, data []byte) (uint32, gofuse.Status) {
	defer a.ops.Observe("write", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	// The kernel flags the writes of callers without CAP_FSETID: they
	// drop setuid and setgid. The caller's groups are read (from /proc)
	// only if the file is setuid or setgid.
	var who func() *meta.Caller
	if in.WriteFlags&gofuse.WRITE_KILL_SUIDGID != 0 {
		who = unprivileged(&in.InHeader)
	}
	// A write from the page cache (a shared mapping) comes at its page's
	// offset, through a handle the file was mapped with; only a write(2)
	// through an O_APPEND handle goes to the end of the file.
	fromCache := in.WriteFlags&gofuse.WRITE_CACHE != 0
	n, dropped, err := a.fs.WriteAs(c, in.Fh, in.Offset, data, who, fromCache)
	if dropped {
		a.privsDropped(in.NodeId)
	}
	if err != nil {
		return 0, a.errno("write", err)
	}
	return uint32(n), gofuse.OK
}

// CopyFileRange serves copy_file_range(2) inside the mount without the
// data passing through the kernel: whole chunks share their blocks (see
// fs.CopyFileRange). As for fallocate, the kernel leaves dropping the
// destination's privileges to us (CAP_HANDLE_KILLPRIV_V2), and a caller
// other than root is taken to lack CAP_FSETID.
func (a *FS) CopyFileRange(cancel <-chan struct{}, in *gofuse.CopyFileRangeIn) (uint32, gofuse.Status) {
	defer a.ops.Observe("copy_file_range", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	if in.Flags != 0 {
		return 0, gofuse.EINVAL
	}
	var who func() *meta.Caller
	if in.Uid != 0 {
		who = unprivileged(&in.InHeader)
	}
	// The reply counts bytes in 32 bits; a whole number of pages, so
	// that the kernel's page cache of the rest stays aligned.
	n, dropped, err := a.fs.CopyFileRange(c, in.FhIn, in.OffIn, in.FhOut, in.OffOut, min(in.Len, math.MaxUint32&^0xfff), who)
	if dropped {
		a.privsDropped(in.NodeIdOut)
	}
	if err != nil {
		return 0, a.errno("copy_file_range", err)
	}
	return uint32(n), gofuse.OK
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the file's chunks: holes are
// the ranges no write covered (see fs.FS.Seek).
func (a *FS) Lseek(cancel <-chan struct{}, in *gofuse.LseekIn, out *gofuse.LseekOut) gofuse.Status {
	defer a.ops.Observe("lseek", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	const seekData, seekHole = 3, 4
	if in.Whence != seekData && in.Whence != seekHole {
		return gofuse.EINVAL
	}
	off, err := a.fs.Seek(c, in.NodeId, in.Offset, in.Whence == seekHole)
	if errors.Is(err, syscall.ENXIO) {
		return gofuse.Status(syscall.ENXIO) // the end of the file: an answer, not a failure
	}
	if err != nil {
		return a.errno("lseek", err)
	}
	out.Offset = off
	return gofuse.OK
}

func (a *FS) Release(cancel <-chan struct{}, in *gofuse.ReleaseIn) {
	defer a.ops.Observe("release", time.Now())
	if err := a.fs.Release(context.Background(), in.Fh); err != nil {
		a.errno("release", err)
	}
}

func (a *FS) Flush(cancel <-chan struct{}, in *gofuse.FlushIn) gofuse.Status {
	defer a.ops.Observe("flush", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	return a.errno("flush", a.fs.Flush(c, in.Fh))
}

func (a *FS) Fsync(cancel <-chan struct{}, in *gofuse.FsyncIn) gofuse.Status {
	defer a.ops.Observe("fsync", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	return a.errno("fsync", a.fs.FsyncInode(c, in.NodeId))
}

func (a *FS) Fallocate(cancel <-chan struct{}, in *gofuse.FallocateIn) gofuse.Status {
	defer a.ops.Observe("fallocate", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	const (
		keepSize  = 0x01 // FALLOC_FL_KEEP_SIZE
		punchHole = 0x02 // FALLOC_FL_PUNCH_HOLE
		zeroRange = 0x10 // FALLOC_FL_ZERO_RANGE
	)
	punch := false
	switch in.Mode {
	case 0:
	case keepSize:
		// Blocks are allocated when written; there is nothing to reserve
		// in an object store, and the size stays.
		return gofuse.OK
	case punchHole | keepSize, zeroRange, zeroRange | keepSize:
		// A zeroed range is a punched one: holes read as zeros, and
		// there is nothing to allocate for the zeros.
		punch = true
	default:
		// Collapsing and inserting ranges, unsharing, and a punch that
		// would change the size (the kernel refuses that first) are not
		// supported.
		return gofuse.Status(syscall.EOPNOTSUPP)
	}
	// A fallocate changes the file as a write does, and Linux drops
	// privileges for it (file_modified), but FUSE has no kill flag for
	// it and with CAP_HANDLE_KILLPRIV_V2 the kernel leaves the job to
	// us: a caller other than root is taken to lack CAP_FSETID.
	var who func() *meta.Caller
	if in.Uid != 0 {
		who = unprivileged(&in.InHeader)
	}
	dropped, err := a.fs.DropPrivs(c, in.NodeId, who)
	if dropped {
		a.privsDropped(in.NodeId)
	}
	if err != nil {
		return a.errno("fallocate", err)
	}
	if punch {
		err := a.fs.Punch(c, in.NodeId, in.Offset, in.Length, in.Mode&keepSize != 0)
		if errors.Is(err, syscall.EOPNOTSUPP) && !a.punchWarned.Swap(true) {
			a.log.Warn("fallocate refused (logged once)", "ino", in.NodeId, "err", err)
		}
		return a.errno("fallocate", err)
	}
	// The size only grows, decided in the transaction: a write from NFS
	// (which the kernel's inode lock does not hold back) may have made
	// the file longer than it was a moment ago.
	end := in.Offset + in.Length
	if end < in.Offset {
		return gofuse.Status(syscall.EFBIG)
	}
	_, err = a.fs.SetAttr(c, a.caller(&in.InHeader), in.NodeId, meta.SetAttrIn{Valid: meta.SetSize, Size: end, OpenForWrite: true, GrowOnly: true}, in.Fh)
	return a.errno("fallocate", err)
}

func (a *FS) OpenDir(cancel <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	defer a.ops.Observe("opendir", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	fh, err := a.fs.OpenDirHandle(c, a.caller(&in.InHeader), in.NodeId)
	if err != nil {
		return a.errno("opendir", err)
	}
	out.Fh = fh
	return gofuse.OK
}

func (a *FS) ReadDir(cancel <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList) gofuse.Status {
	defer a.ops.Observe("readdir", time.Now())
	return a.readDir(cancel, in, out, false)
}

func (a *FS) ReadDirPlus(cancel <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList) gofuse.Status {
	defer a.ops.Observe("readdirplus", time.Now())
	return a.readDir(cancel, in, out, true)
}

// readDir lists a directory from the cookie the kernel passes back: 1 and 2
// are "." and "..", larger ones are objfs's stable entry cookies.
func (a *FS) readDir(cancel <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList, plus bool) gofuse.Status {
	op := "readdir"
	if plus {
		op = "readdirplus"
	}
	c, stop := ctx(cancel)
	defer stop()
	epoch := a.fs.Commits()
	dir, err := a.fs.GetAttr(c, in.NodeId)
	if err != nil {
		return a.errno(op, err)
	}
	add := func(e gofuse.DirEntry, at *meta.Attr) bool {
		if !plus {
			return out.AddDirEntry(e)
		}
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			return false
		}
		if at != nil {
			fillEntry(eo, at)
			if !a.cacheable(at.Ino, epoch) {
				eo.SetAttrTimeout(0)
			}
		}
		return true
	}
	if dir.Nlink == 0 {
		return gofuse.OK // removed while open: no entries at all, as on ext4
	}
	if in.Offset < 1 && !add(gofuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: dir.Ino, Off: 1}, nil) {
		return gofuse.OK
	}
	if in.Offset < 2 && !add(gofuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: dir.Parent, Off: 2}, nil) {
		return gofuse.OK
	}
	var ferr error
	err = a.fs.ReadDir(c, a.caller(&in.InHeader), in.NodeId, in.Offset, func(d meta.Dirent) bool {
		var at *meta.Attr
		if _, held := a.holds.get(in.NodeId, d.Name); plus && !held {
			// A held name gets no attributes: the kernel makes no
			// entry of it, and looks it up when it needs it.
			if at, ferr = a.fs.GetAttr(c, d.Ino); ferr != nil {
				if errors.Is(ferr, syscall.ENOENT) {
					ferr = nil
					return true // removed since: skip it
				}
				return false
			}
		}
		return add(gofuse.DirEntry{Name: d.Name, Mode: d.Type, Ino: d.Ino, Off: d.Cookie}, at)
	})
	if err == nil {
		err = ferr
	}
	return a.errno(op, err)
}

func (a *FS) ReleaseDir(in *gofuse.ReleaseIn) {
	defer a.ops.Observe("releasedir", time.Now())
	if err := a.fs.Release(context.Background(), in.Fh); err != nil {
		a.errno("releasedir", err)
	}
}

func (a *FS) FsyncDir(cancel <-chan struct{}, in *gofuse.FsyncIn) gofuse.Status {
	defer a.ops.Observe("fsyncdir", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	return a.errno("fsyncdir", a.fs.FsyncInode(c, in.NodeId))
}

func (a *FS) StatFs(cancel <-chan struct{}, h *gofuse.InHeader, out *gofuse.StatfsOut) gofuse.Status {
	defer a.ops.Observe("statfs", time.Now())
	c, stop := ctx(cancel)
	defer stop()
	st, err := a.fs.StatFs(c)
	if err != nil {
		return a.errno("statfs", err)
	}
	out.Bsize, out.Frsize = st.BlockSize, st.BlockSize
	out.Blocks, out.Bfree, out.Bavail = st.Blocks, st.BlocksFree, st.BlocksFree
	out.Files, out.Ffree = st.Files, st.FilesFree
	out.NameLen = st.NameLen
	return gofuse.OK
}
