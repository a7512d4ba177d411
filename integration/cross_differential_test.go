package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"golang.org/x/sys/unix"

	"github.com/objfs/objfs/integration/difftest"
)

// TestCrossDifferential applies one seeded random sequence of changes to a
// volume, each made at random through the FUSE mount or through the NFS
// server of the same process, and mirrors it on a plain local directory.
// After every change both front ends are asked about the paths it touched
// and a few others, and must answer what the reference directory answers;
// where the reference cannot say (times, inode numbers), the two front ends
// must agree with each other.
//
// The FUSE side keeps the kernel's caches warm: entries and attributes are
// cached for a minute, file pages are kept between opens, and descriptors
// stay open across changes. objfs promises that a change through either
// front end is seen through the other at once, so an NFS change that
// leaves a kernel cache stale shows up here as a wrong answer. That is the
// promise the rename-into-place pipelines rely on.
//
// Success and failure must agree, not the errno: how knfsd and the local
// system calls differ on errors is TestNFSDifferential's business. FUSE
// lookups must give the reference's errno exactly.
//
// OBJFS_XDIFF_SEED fixes the seed, OBJFS_XDIFF_OPS the number of changes.
// On failure the test searches for the shortest failing prefix.
func TestCrossDifferential(t *testing.T) {
	requirePrereqs(t)
	seed := envSeed(t, "OBJFS_XDIFF_SEED")
	nops := envCount(t, "OBJFS_XDIFF_OPS", 1500)
	t.Logf("seed %d, %d changes (rerun with OBJFS_XDIFF_SEED=%d OBJFS_XDIFF_OPS=%d)", seed, nops, seed, nops)
	old := syscall.Umask(0) // modes are compared; the umask must not hide bits
	defer syscall.Umask(old)

	difftest.Check(t, seed, nops, func(k int, full bool) *difftest.Failure { return runCross(t, seed, k, full) },
		12, 120*time.Second, "OBJFS_XDIFF_SEED", "OBJFS_XDIFF_OPS")
}

// xRun is one run: the volume's work directory seen through FUSE and NFS,
// and the reference directory.
type xRun struct {
	rng     *rand.Rand
	data    *rand.ChaCha8
	fuse    string        // the work directory on the mount
	ref     string        // the reference work directory
	tree    difftest.Tree // the reference work directory's paths
	nfs     *wireNFS      // a connection to the NFS server of the mount process
	work    []byte        // NFS handle of the work directory
	handles []*xHandle
	// dirNlink: objfs counts a directory's links as ext4 does (2 +
	// subdirectories), so directory link counts are compared.
	dirNlink bool
	desc     string
	touched  []string // paths to observe after the current change
	trace    []string
}

// xHandle is a file open read-write on both sides since a change opened it;
// it keeps naming the same file whatever renames and removals follow.
type xHandle struct {
	fuse, ref *os.File
	name      string // the path it was opened by, for the trace
}

const (
	xMaxHandles = 4
	xMaxDepth   = 3
)

// xNames are few, so that changes keep landing on names that exist.
var xNames = []string{"a", "b", "c"}

// runCross runs the first nops changes of the sequence for seed on a fresh
// volume and reference directory, compares the whole trees, and (if
// remount) compares them again after a remount. It returns nil on success.
func runCross(t *testing.T, seed uint64, nops int, remount bool) *difftest.Failure {
	t.Helper()
	v := newVolume(t)
	defer v.destroy(t)
	addr := freeAddr(t)
	v.mount(t, "--nfs", addr, "--nfs-squash", "none")
	refTop := t.TempDir()
	defer os.RemoveAll(refTop)

	r := &xRun{
		rng:  rand.New(rand.NewPCG(seed, 0x78646966)),
		data: difftest.Data(seed),
		fuse: v.mnt + "/x",
		ref:  refTop + "/x",
		tree: difftest.Tree{Root: refTop + "/x"},
	}
	defer r.closeHandles()
	fail := func(step int, phase, msg string) *difftest.Failure {
		if ok, why := v.alive(); !ok {
			msg += "\n" + why
		} else {
			msg += fmt.Sprintf("\n(objfs log: %s)", v.proc.logPath)
		}
		return &difftest.Failure{Step: step, Phase: phase, Msg: msg, Trace: r.trace}
	}
	for _, d := range []string{r.fuse, r.ref} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fail(-1, "setup", err.Error())
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(r.fuse, &st); err != nil {
		return fail(-1, "setup", err.Error())
	}
	r.dirNlink = st.Nlink == 2
	if err := r.connect(t, v, addr); err != nil {
		return fail(-1, "setup", err.Error())
	}

	stopWatch := func() {}
	defer func() { stopWatch() }()
	for i := range nops {
		stopWatch()
		stopWatch = v.stallWatchdog(t, "cross differential", time.Minute)
		r.desc = ""
		err := r.step()
		r.trace = append(r.trace, fmt.Sprintf("#%d %s", i, r.desc))
		if err != nil {
			return fail(i, "change", err.Error())
		}
	}
	stopWatch()
	if diffs := r.compareAll(); len(diffs) > 0 {
		return fail(-1, "whole-tree comparison", strings.Join(diffs, "\n"))
	}
	if !remount {
		return nil
	}
	r.closeHandles()
	r.nfs.Close()
	v.unmount(t)
	addr = freeAddr(t)
	v.mount(t, "--nfs", addr, "--nfs-squash", "none")
	if err := r.connect(t, v, addr); err != nil {
		return fail(-1, "remount", err.Error())
	}
	if diffs := r.compareAll(); len(diffs) > 0 {
		return fail(-1, "whole-tree comparison after a remount", strings.Join(diffs, "\n"))
	}
	return nil
}

// connect dials the NFS server at addr and finds the work directory.
func (r *xRun) connect(t *testing.T, v *volume, addr string) error {
	c, root := dialWireRoot(t, v, addr)
	r.nfs = c
	var err error
	if r.work, _, err = c.lookup(root, "x"); err != nil {
		return fmt.Errorf("NFS LOOKUP of the work directory: %w", err)
	}
	return nil
}

func (r *xRun) closeHandles() {
	for _, h := range r.handles {
		h.fuse.Close()
		h.ref.Close()
	}
	r.handles = nil
}

// --- choosing paths ---

// pick returns an existing path whose type is one of kinds ('f' file, 'd'
// directory, 'l' symlink) most of the time, else a random path, which may
// or may not exist.
func (r *xRun) pick(kinds string) string {
	if r.rng.IntN(5) > 0 {
		if p, ok := r.tree.Existing(r.rng, kinds); ok {
			return p
		}
	}
	return r.randomPath()
}

// randomPath builds a path of one to xMaxDepth names; it is often new.
func (r *xRun) randomPath() string {
	parts := make([]string, 1+r.rng.IntN(xMaxDepth))
	for i := range parts {
		parts[i] = xNames[r.rng.IntN(len(xNames))]
	}
	return path.Join(parts...)
}

// refKind is 'f', 'd', 'l' or '-' (missing) for a reference path.
func (r *xRun) refKind(rel string) byte {
	fi, err := os.Lstat(r.refPath(rel))
	switch {
	case err != nil:
		return '-'
	case fi.IsDir():
		return 'd'
	case fi.Mode()&os.ModeSymlink != 0:
		return 'l'
	case fi.Mode().IsRegular():
		return 'f'
	}
	return '?'
}

func (r *xRun) refPath(rel string) string  { return path.Join(r.ref, rel) }
func (r *xRun) fusePath(rel string) string { return path.Join(r.fuse, rel) }

// resolve looks a path up over NFS, one LOOKUP per name (a symbolic link
// on the way is not followed: the next LOOKUP in it fails).
func (r *xRun) resolve(rel string) ([]byte, nfsc.Fattr, error) {
	fh := r.work
	var a nfsc.Fattr
	var err error
	if rel == "" || rel == "." {
		a, err = r.nfs.getattr(fh)
		return fh, a, err
	}
	for _, name := range strings.Split(rel, "/") {
		if fh, a, err = r.nfs.lookup(fh, name); err != nil {
			return nil, a, fmt.Errorf("LOOKUP %s in %s: %w", name, rel, err)
		}
	}
	return fh, a, nil
}

// resolveParent resolves the directory of rel and returns it with rel's
// last name.
func (r *xRun) resolveParent(rel string) ([]byte, string, error) {
	dir, name := path.Split(rel)
	fh, _, err := r.resolve(strings.TrimSuffix(dir, "/"))
	return fh, name, err
}

// --- the changes ---

type xOp = difftest.Op[*xRun]

var xOps = []xOp{
	{Name: "write", Weight: 14, Fn: (*xRun).opWrite},
	{Name: "truncate", Weight: 4, Fn: (*xRun).opTruncate},
	{Name: "mkdir", Weight: 6, Fn: (*xRun).opMkdir},
	{Name: "unlink", Weight: 5, Fn: (*xRun).opUnlink},
	{Name: "rmdir", Weight: 3, Fn: (*xRun).opRmdir},
	{Name: "rename", Weight: 12, Fn: (*xRun).opRename},
	{Name: "link", Weight: 4, Fn: (*xRun).opLink},
	{Name: "symlink", Weight: 3, Fn: (*xRun).opSymlink},
	{Name: "chmod", Weight: 3, Fn: (*xRun).opChmod},
	{Name: "utimes", Weight: 3, Fn: (*xRun).opUtimes},
	{Name: "open", Weight: 3, Fn: (*xRun).opOpen},
	{Name: "close", Weight: 2, Fn: (*xRun).opClose},
	{Name: "handle write", Weight: 4, Fn: (*xRun).opHandleWrite},
}

// step makes one change and then checks what both front ends see.
func (r *xRun) step() error {
	r.touched = r.touched[:0]
	err := difftest.Pick(r.rng, xOps).Fn(r)
	r.tree.Changed() // whatever it did, the reference may have changed
	if err != nil {
		return err
	}
	r.touched = append(r.touched, r.pick("fdl"), r.pick("fdl"))
	for _, p := range r.touched {
		if err := r.observe(p); err != nil {
			return err
		}
	}
	return r.observeHandles()
}

// viaNFS decides which front end makes the next change, and names it.
func (r *xRun) viaNFS(format string, args ...any) bool {
	nfs := r.rng.IntN(2) == 0
	side := "FUSE"
	if nfs {
		side = "NFS"
	}
	r.desc = side + " " + fmt.Sprintf(format, args...)
	return nfs
}

// agree compares the outcome of a change on objfs and on the reference.
func (r *xRun) agree(got, want error) error {
	switch {
	case want == nil && got == nil:
		r.desc += " -> ok"
		return nil
	case want != nil && got != nil:
		r.desc += fmt.Sprintf(" -> fails (%v)", want)
		return nil
	case got != nil:
		return fmt.Errorf("objfs failed (%v), the reference succeeded", got)
	}
	return fmt.Errorf("objfs succeeded, the reference failed (%v)", want)
}

// touch notes paths a change made or may have made, and the directories
// above them, to be observed after the change.
func (r *xRun) touch(rel ...string) {
	for _, p := range rel {
		for ; p != "." && p != ""; p = path.Dir(p) {
			r.touched = append(r.touched, p)
		}
	}
	r.touched = append(r.touched, ".")
}

func (r *xRun) randData(n int) []byte {
	b := make([]byte, n)
	r.data.Read(b)
	return b
}

// randWrite chooses an offset and a length: mostly small files kept in
// the metadata, sometimes a write reaching into the second data block.
func (r *xRun) randWrite() (int64, int) {
	switch r.rng.IntN(20) {
	case 0:
		return int64(r.rng.IntN(6 << 20)), 1 + r.rng.IntN(256<<10)
	case 1, 2, 3:
		return int64(r.rng.IntN(256 << 10)), 1 + r.rng.IntN(64<<10)
	}
	return int64(r.rng.IntN(8 << 10)), 1 + r.rng.IntN(8<<10)
}

func (r *xRun) randMode(dir bool) uint32 {
	if dir {
		return []uint32{0o755, 0o700, 0o2775, 0o1777}[r.rng.IntN(4)]
	}
	return []uint32{0o644, 0o600, 0o755, 0o4755, 0o444}[r.rng.IntN(5)]
}

// opWrite writes at an offset, creating the file if it is missing.
func (r *xRun) opWrite() error {
	rel := r.pick("f")
	off, n := r.randWrite()
	mode := r.randMode(false)
	data := r.randData(n)
	unstable := r.rng.IntN(3) == 0
	var got error
	if r.viaNFS("write %s [%d,+%d) mode %#o unstable=%v", rel, off, n, mode, unstable) {
		got = r.nfsWrite(rel, off, data, mode, unstable)
	} else {
		got = writeAt(r.fusePath(rel), off, data, mode)
	}
	r.touch(rel)
	return r.agree(got, writeAt(r.refPath(rel), off, data, mode))
}

func writeAt(p string, off int64, data []byte, mode uint32) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, os.FileMode(mode&0o777))
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// nfsWrite is what a client's open(O_CREAT) and write do: LOOKUP, CREATE
// UNCHECKED if missing, then WRITEs (UNSTABLE ones followed by a COMMIT).
func (r *xRun) nfsWrite(rel string, off int64, data []byte, mode uint32, unstable bool) error {
	dir, name, err := r.resolveParent(rel)
	if err != nil {
		return err
	}
	fh, _, err := r.nfs.lookup(dir, name)
	if errors.Is(err, os.ErrNotExist) {
		fh, err = r.nfs.create(dir, name, createUnchecked, mode&0o777)
	}
	if err != nil {
		return err
	}
	how := uint32(stableFileSync)
	if unstable {
		how = stableUnstable
	}
	for done := 0; done < len(data); {
		c := min(len(data)-done, wireMaxWrite)
		n, _, _, err := r.nfs.write(fh, off+int64(done), data[done:done+c], how)
		if err != nil {
			return err
		}
		if n <= 0 {
			return fmt.Errorf("WRITE at %d wrote %d bytes", off+int64(done), n)
		}
		done += n
	}
	if unstable {
		_, err = r.nfs.commit(fh)
	}
	return err
}

func (r *xRun) opTruncate() error {
	rel := r.pick("f")
	size := int64(r.rng.IntN(16 << 10))
	if r.rng.IntN(4) == 0 {
		size = int64(r.rng.IntN(6 << 20))
	}
	var got error
	if r.viaNFS("truncate %s to %d", rel, size) {
		got = r.nfsSetattr(rel, nfsc.Sattr3{Size: nfsc.SetSize{SetIt: true, Size: uint64(size)}})
	} else {
		got = os.Truncate(r.fusePath(rel), size)
	}
	r.touch(rel)
	return r.agree(got, os.Truncate(r.refPath(rel), size))
}

func (r *xRun) nfsSetattr(rel string, s nfsc.Sattr3) error {
	fh, _, err := r.resolve(rel)
	if err != nil {
		return err
	}
	return r.nfs.setattr(fh, s)
}

func (r *xRun) opMkdir() error {
	rel := r.randomPath()
	mode := r.randMode(true)
	var got error
	if r.viaNFS("mkdir %s %#o", rel, mode) {
		got = r.nfsDir(rel, func(dir []byte, name string) error { return r.nfs.mkdir(dir, name, mode) })
	} else {
		got = unix.Mkdir(r.fusePath(rel), mode)
	}
	r.touch(rel)
	return r.agree(got, unix.Mkdir(r.refPath(rel), mode))
}

// nfsDir resolves rel's directory and calls fn with it and rel's name.
func (r *xRun) nfsDir(rel string, fn func(dir []byte, name string) error) error {
	dir, name, err := r.resolveParent(rel)
	if err != nil {
		return err
	}
	return fn(dir, name)
}

func (r *xRun) opUnlink() error { return r.removing("unlink", "fl", r.nfs.remove, unix.Unlink) }
func (r *xRun) opRmdir() error  { return r.removing("rmdir", "d", r.nfs.rmdir, unix.Rmdir) }

// removing removes a path of one of kinds (see pick) through NFS (nfsRm)
// or FUSE, and on the reference (rm).
func (r *xRun) removing(what, kinds string, nfsRm func(dir []byte, name string) error, rm func(path string) error) error {
	rel := r.pick(kinds)
	var got error
	if r.viaNFS("%s %s", what, rel) {
		got = r.nfsDir(rel, nfsRm)
	} else {
		got = rm(r.fusePath(rel))
	}
	r.touch(rel)
	return r.agree(got, rm(r.refPath(rel)))
}

func (r *xRun) opRename() error {
	from := r.pick("fdl")
	to := r.randomPath()
	if r.rng.IntN(3) == 0 {
		to = r.pick("fdl") // often onto something that exists
	}
	var got error
	if r.viaNFS("rename %s -> %s", from, to) {
		got = r.nfsDir(from, func(fromDir []byte, fromName string) error {
			return r.nfsDir(to, func(toDir []byte, toName string) error {
				return r.nfs.rename(fromDir, fromName, toDir, toName)
			})
		})
	} else {
		got = unix.Rename(r.fusePath(from), r.fusePath(to))
	}
	r.touch(from, to)
	return r.agree(got, unix.Rename(r.refPath(from), r.refPath(to)))
}

func (r *xRun) opLink() error {
	from := r.pick("fl")
	to := r.randomPath()
	var got error
	if r.viaNFS("link %s -> %s", to, from) {
		fh, _, err := r.resolve(from)
		if err != nil {
			got = err
		} else {
			got = r.nfsDir(to, func(dir []byte, name string) error { return r.nfs.link(fh, dir, name) })
		}
	} else {
		got = unix.Link(r.fusePath(from), r.fusePath(to))
	}
	r.touch(from, to)
	return r.agree(got, unix.Link(r.refPath(from), r.refPath(to)))
}

// opSymlink makes a link whose target never resolves, so that a path
// through it fails the same way on all sides (NFS LOOKUP never follows).
func (r *xRun) opSymlink() error {
	rel := r.randomPath()
	target := fmt.Sprintf("/objfs-xdiff-nowhere/%d", r.rng.IntN(1000))
	var got error
	if r.viaNFS("symlink %s -> %s", rel, target) {
		got = r.nfsDir(rel, func(dir []byte, name string) error { return r.nfs.symlink(dir, name, target) })
	} else {
		got = unix.Symlink(target, r.fusePath(rel))
	}
	r.touch(rel)
	return r.agree(got, unix.Symlink(target, r.refPath(rel)))
}

// opChmod changes a file's or directory's mode (chmod(2) follows a
// symbolic link, SETATTR would not: links are left alone).
func (r *xRun) opChmod() error {
	rel := r.pick("fd")
	if r.refKind(rel) == 'l' {
		r.desc = "chmod of a symbolic link: skipped"
		return nil
	}
	mode := r.randMode(r.refKind(rel) == 'd')
	var got error
	if r.viaNFS("chmod %s %#o", rel, mode) {
		got = r.nfsSetattr(rel, nfsc.Sattr3{Mode: nfsc.SetMode{SetIt: true, Mode: mode}})
	} else {
		got = unix.Chmod(r.fusePath(rel), mode)
	}
	r.touch(rel)
	return r.agree(got, unix.Chmod(r.refPath(rel), mode))
}

// opUtimes sets mtime and atime without following a symbolic link.
func (r *xRun) opUtimes() error {
	rel := r.pick("fdl")
	sec := int64(1_000_000_000 + r.rng.IntN(1_000_000_000))
	nsec := int64(r.rng.IntN(1_000_000_000))
	ts := []unix.Timespec{{Sec: sec, Nsec: nsec}, {Sec: sec + 1, Nsec: nsec}}
	var got error
	if r.viaNFS("utimes %s %d.%09d", rel, sec, nsec) {
		at := nfsc.SetTime{SetIt: nfsc.SetToClientTime, Time: nfsc.NFS3Time{Seconds: uint32(sec), Nseconds: uint32(nsec)}}
		mt := nfsc.SetTime{SetIt: nfsc.SetToClientTime, Time: nfsc.NFS3Time{Seconds: uint32(sec + 1), Nseconds: uint32(nsec)}}
		got = r.nfsSetattr(rel, nfsc.Sattr3{Atime: at, Mtime: mt})
	} else {
		got = unix.UtimesNanoAt(unix.AT_FDCWD, r.fusePath(rel), ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	r.touch(rel)
	return r.agree(got, unix.UtimesNanoAt(unix.AT_FDCWD, r.refPath(rel), ts, unix.AT_SYMLINK_NOFOLLOW))
}

// opOpen opens an existing file read-write through FUSE and on the
// reference, and keeps both descriptors.
func (r *xRun) opOpen() error {
	rel := r.pick("f")
	r.desc = "open " + rel
	if len(r.handles) >= xMaxHandles || r.refKind(rel) != 'f' {
		r.desc += ": skipped"
		return nil
	}
	rf, err := os.OpenFile(r.refPath(rel), os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("reference: %w", err)
	}
	ff, err := os.OpenFile(r.fusePath(rel), os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		rf.Close()
		return fmt.Errorf("objfs: %w", err)
	}
	r.handles = append(r.handles, &xHandle{fuse: ff, ref: rf, name: rel})
	r.desc += fmt.Sprintf(" as handle %d", len(r.handles)-1)
	r.touch(rel)
	return nil
}

func (r *xRun) opClose() error {
	if len(r.handles) == 0 {
		r.desc = "close: no handle"
		return nil
	}
	i := r.rng.IntN(len(r.handles))
	h := r.handles[i]
	r.handles = slices.Delete(r.handles, i, i+1)
	r.desc = fmt.Sprintf("close handle %d (%s)", i, h.name)
	ef, er := h.fuse.Close(), h.ref.Close()
	return r.agree(ef, er)
}

// opHandleWrite writes through a kept FUSE descriptor, whatever has
// happened to its name since.
func (r *xRun) opHandleWrite() error {
	if len(r.handles) == 0 {
		r.desc = "handle write: no handle"
		return nil
	}
	i := r.rng.IntN(len(r.handles))
	h := r.handles[i]
	off, n := r.randWrite()
	data := r.randData(n)
	r.desc = fmt.Sprintf("FUSE write through handle %d (%s) [%d,+%d)", i, h.name, off, n)
	_, ef := h.fuse.WriteAt(data, off)
	_, er := h.ref.WriteAt(data, off)
	return r.agree(ef, er)
}

// --- what both front ends see ---

// nfsInfo is statInfo for NFS attributes.
func nfsInfo(a nfsc.Fattr, dirNlink bool) string {
	var st unix.Stat_t
	st.Mode = a.FileMode & 0o7777
	switch a.Type {
	case 1:
		st.Mode |= unix.S_IFREG
	case 2:
		st.Mode |= unix.S_IFDIR
	case 5:
		st.Mode |= unix.S_IFLNK
	}
	st.Uid, st.Gid, st.Size, st.Nlink = a.UID, a.GID, int64(a.Filesize), uint64(a.Nlink)
	return statInfo(&st, dirNlink)
}

// observe asks both front ends about rel and compares their answers with
// the reference and with each other.
func (r *xRun) observe(rel string) error {
	var ref, fu unix.Stat_t
	errRef := unix.Lstat(r.refPath(rel), &ref)
	errFuse := unix.Lstat(r.fusePath(rel), &fu)
	fh, na, errNFS := r.resolve(rel)
	if errFuse != errRef {
		return fmt.Errorf("FUSE lstat %s: %v, the reference says %v", rel, errFuse, errRef)
	}
	if (errNFS == nil) != (errRef == nil) {
		return fmt.Errorf("NFS lookup %s: %v, the reference lstat says %v", rel, errNFS, errRef)
	}
	if errRef != nil {
		return nil
	}
	want := statInfo(&ref, r.dirNlink)
	if got := statInfo(&fu, r.dirNlink); got != want {
		return fmt.Errorf("FUSE lstat %s: %s; the reference: %s", rel, got, want)
	}
	if got := nfsInfo(na, r.dirNlink); got != want {
		return fmt.Errorf("NFS lookup %s: %s; the reference: %s", rel, got, want)
	}
	// What only objfs knows must be the same on both sides: a stale kernel
	// cache shows here first (an NFS change leaves FUSE's mtime behind).
	if fu.Ino != na.Fileid || fu.Mtim.Sec != int64(na.Mtime.Seconds) || fu.Mtim.Nsec != int64(na.Mtime.Nseconds) ||
		fu.Ctim.Sec != int64(na.Ctime.Seconds) || fu.Ctim.Nsec != int64(na.Ctime.Nseconds) ||
		(ref.Mode&unix.S_IFMT == unix.S_IFREG && uint64(fu.Blocks)*512 != na.Used) {
		return fmt.Errorf("%s: FUSE says inode %d mtime %d.%09d ctime %d.%09d blocks %d; NFS says fileid %d mtime %d.%09d ctime %d.%09d used %d",
			rel, fu.Ino, fu.Mtim.Sec, fu.Mtim.Nsec, fu.Ctim.Sec, fu.Ctim.Nsec, fu.Blocks,
			na.Fileid, na.Mtime.Seconds, na.Mtime.Nseconds, na.Ctime.Seconds, na.Ctime.Nseconds, na.Used)
	}
	switch ref.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		want, err := os.ReadFile(r.refPath(rel))
		if err != nil {
			return fmt.Errorf("reference read %s: %w", rel, err)
		}
		got, err := readNoFollow(r.fusePath(rel))
		if err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("FUSE read %s (%v): %s", rel, err, describeDiff(got, want))
		}
		if got, err = r.nfs.readAll(fh); err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("NFS read %s (%v): %s", rel, err, describeDiff(got, want))
		}
	case unix.S_IFLNK:
		want, err := os.Readlink(r.refPath(rel))
		if err != nil {
			return fmt.Errorf("reference readlink %s: %w", rel, err)
		}
		if got, err := os.Readlink(r.fusePath(rel)); got != want {
			return fmt.Errorf("FUSE readlink %s: %q (%v), want %q", rel, got, err, want)
		}
		if got, err := r.nfs.readlink(fh); got != want {
			return fmt.Errorf("NFS readlink %s: %q (%v), want %q", rel, got, err, want)
		}
	case unix.S_IFDIR:
		return r.observeDir(rel, fh)
	}
	return nil
}

// observeDir compares a directory's listings, and the attributes
// READDIRPLUS gives for each entry.
func (r *xRun) observeDir(rel string, fh []byte) error {
	want, err := readNames(r.refPath(rel))
	if err != nil {
		return fmt.Errorf("reference readdir %s: %w", rel, err)
	}
	got, err := readNames(r.fusePath(rel))
	if err != nil || !slices.Equal(got, want) {
		return fmt.Errorf("FUSE readdir %s: %q (%v), the reference has %q", rel, got, err, want)
	}
	entries, err := r.nfs.readdirplus(fh)
	if err != nil {
		return fmt.Errorf("NFS READDIRPLUS %s: %w", rel, err)
	}
	got = got[:0]
	for _, e := range entries {
		got = append(got, e.Name)
		if e.Attr == nil {
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(r.refPath(path.Join(rel, e.Name)), &st); err != nil {
			continue // the names are compared below
		}
		if g, w := nfsInfo(*e.Attr, r.dirNlink), statInfo(&st, r.dirNlink); g != w {
			return fmt.Errorf("NFS READDIRPLUS %s: entry %s: %s; the reference: %s", rel, e.Name, g, w)
		}
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		return fmt.Errorf("NFS READDIRPLUS %s: %q, the reference has %q", rel, got, want)
	}
	return nil
}

func readNoFollow(p string) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// observeHandles reads every kept descriptor whole and compares it with
// its reference twin: the kernel must not serve pages an NFS write made
// stale, nor a size it no longer has.
func (r *xRun) observeHandles() error {
	for i, h := range r.handles {
		var fs, rs unix.Stat_t
		if err := unix.Fstat(int(h.ref.Fd()), &rs); err != nil {
			return fmt.Errorf("reference fstat of handle %d: %w", i, err)
		}
		if err := unix.Fstat(int(h.fuse.Fd()), &fs); err != nil {
			return fmt.Errorf("FUSE fstat of handle %d (%s): %w", i, h.name, err)
		}
		if got, want := statInfo(&fs, r.dirNlink), statInfo(&rs, r.dirNlink); got != want {
			return fmt.Errorf("FUSE fstat of handle %d (%s): %s; the reference: %s", i, h.name, got, want)
		}
		want := make([]byte, rs.Size)
		if _, err := h.ref.ReadAt(want, 0); err != nil && err != io.EOF {
			return fmt.Errorf("reference read of handle %d: %w", i, err)
		}
		got := make([]byte, rs.Size+1)
		n, err := h.fuse.ReadAt(got, 0)
		if err != nil && err != io.EOF {
			return fmt.Errorf("FUSE read of handle %d (%s): %w", i, h.name, err)
		}
		if !bytes.Equal(got[:n], want) {
			return fmt.Errorf("FUSE read of handle %d (%s): %s", i, h.name, describeDiff(got[:n], want))
		}
	}
	return nil
}

// compareAll observes every path either side has, and every handle.
func (r *xRun) compareAll() []string {
	var diffs []string
	seen := map[string]bool{}
	r.tree.Changed()
	paths := []string{"."}
	for _, e := range r.tree.List() {
		paths = append(paths, e.Rel)
	}
	var walk func(rel string)
	walk = func(rel string) { // names only objfs has
		names, _ := readNames(r.fusePath(rel))
		for _, n := range names {
			p := path.Join(rel, n)
			paths = append(paths, p)
			if fi, err := os.Lstat(r.fusePath(p)); err == nil && fi.IsDir() {
				walk(p)
			}
		}
	}
	walk("")
	for _, p := range paths {
		if seen[p] || len(diffs) >= 20 {
			continue
		}
		seen[p] = true
		if err := r.observe(p); err != nil {
			diffs = append(diffs, err.Error())
		}
	}
	if err := r.observeHandles(); err != nil {
		diffs = append(diffs, err.Error())
	}
	return diffs
}
