package nfs

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/objfs/objfs/integration/difftest"
)

// TestNFSDifferential applies one seeded random sequence of NFSv3
// procedures to an objfs NFS server and, in lock step, the matching system
// calls to a plain directory on the local disk (the reference). Every
// procedure must give the outcome the reference gives (the same status,
// attributes, data, link target, directory listing...), except where NFSv3
// as Linux's knfsd serves it legitimately differs from the local system
// call: those cases are listed, with their reasons, in ndRules. At the
// end, and again after the volume is closed and opened again behind a new
// server, the two trees must be identical.
//
// Handles are never kept across operations: every path is looked up from
// the work directory again, one LOOKUP per component, as a client whose
// cache has expired would. The NFS side never influences the random
// choices (they read the reference tree only), so a prefix of the
// sequence replays exactly.
//
// OBJFS_NFS_DIFF_SEED fixes the seed, OBJFS_NFS_DIFF_OPS the number of
// operations; OBJFS_NFS_DIFF_TRACE names a file to write the whole trace
// of a failing run to. On failure the test searches for the shortest
// failing prefix (each try on a fresh volume) and prints its last
// operations.
func TestNFSDifferential(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the reference side changes owners and needs root")
	}
	seed := difftest.EnvUint(t, "OBJFS_NFS_DIFF_SEED", uint64(time.Now().UnixNano()))
	nops := int(difftest.EnvUint(t, "OBJFS_NFS_DIFF_OPS", 3000))
	t.Logf("seed %d, %d operations (rerun with OBJFS_NFS_DIFF_SEED=%d OBJFS_NFS_DIFF_OPS=%d)", seed, nops, seed, nops)

	// Modes are compared exactly: the umask must not remove bits on the
	// reference side (the server side never applies one).
	old := unix.Umask(0)
	defer unix.Umask(old)

	start := time.Now()
	f := ndRunOnce(t, seed, nops, true, true)
	t.Logf("full run took %v", time.Since(start).Round(time.Millisecond))
	if f == nil {
		return
	}
	if p := os.Getenv("OBJFS_NFS_DIFF_TRACE"); p != "" {
		if err := os.WriteFile(p, []byte(strings.Join(f.Trace, "\n")+"\n"), 0o644); err != nil {
			t.Errorf("writing the trace: %v", err)
		} else {
			t.Logf("the whole trace of the full run is in %s", p)
		}
	}

	// Shortest failing prefix: a prefix of n operations replays exactly
	// the first n operations of the full run. A failure seen only once
	// the volume was reopened needs the reopen in every try.
	reopen := f.Phase == ndPhaseReopen || f.Phase == ndPhaseAfterReopen
	difftest.Investigate(t, seed, nops, f, func(k int) *difftest.Failure { return ndRunOnce(t, seed, k, reopen, false) },
		14, 90*time.Second, "OBJFS_NFS_DIFF_SEED", "OBJFS_NFS_DIFF_OPS")
}

// Phases of a run, as its difftest.Failure names them.
const (
	ndPhaseSetup       = "setup"
	ndPhaseOp          = "operation"
	ndPhaseFinal       = "final comparison"
	ndPhaseReopen      = "reopening the volume"
	ndPhaseAfterReopen = "comparison after closing and reopening the volume"
)

// --- NFSv3 procedures (RFC 1813) and statuses ---

const (
	ndProcGetattr     = 1
	ndProcSetattr     = 2
	ndProcLookup      = 3
	ndProcAccess      = 4
	ndProcReadlink    = 5
	ndProcRead        = 6
	ndProcWrite       = 7
	ndProcCreate      = 8
	ndProcMkdir       = 9
	ndProcSymlink     = 10
	ndProcMknod       = 11
	ndProcRemove      = 12
	ndProcRmdir       = 13
	ndProcRename      = 14
	ndProcLink        = 15
	ndProcReaddirplus = 17
	ndProcCommit      = 21
)

// ndErrnoStatus is the NFS status that stands for each errno the reference
// can give (RFC 1813 section 2.6: the values are the errno numbers). It is
// the test's own table, so that a wrong entry in objfs's errnoStatus shows.
var ndErrnoStatus = map[syscall.Errno]uint32{
	unix.EPERM:        1,
	unix.ENOENT:       2,
	unix.EIO:          5,
	unix.ENXIO:        6,
	unix.EACCES:       13,
	unix.EEXIST:       17,
	unix.EXDEV:        18,
	unix.ENODEV:       19,
	unix.ENOTDIR:      20,
	unix.EISDIR:       21,
	unix.EINVAL:       22,
	unix.EFBIG:        27,
	unix.ENOSPC:       28,
	unix.EROFS:        30,
	unix.EMLINK:       31,
	unix.ENAMETOOLONG: 63,
	unix.ENOTEMPTY:    66,
	unix.EDQUOT:       69,
	unix.ESTALE:       70,
}

// ndUnmapped marks a reference errno with no NFS status: the operation
// needs an entry in ndRules, so it never equals a real status.
const ndUnmapped = 0xEE000000

var ndStatusNames = map[uint32]string{
	nfsOK: "OK", errPerm: "PERM", errNoEnt: "NOENT", errIO: "IO", errNXIO: "NXIO",
	errAcces: "ACCES", errExist: "EXIST", errXDev: "XDEV", errNoDev: "NODEV",
	errNotDir: "NOTDIR", errIsDir: "ISDIR", errInval: "INVAL", errFBig: "FBIG",
	errNoSpc: "NOSPC", errROFS: "ROFS", errMLink: "MLINK", errNameTooLong: "NAMETOOLONG",
	errNotEmpty: "NOTEMPTY", errDQuot: "DQUOT", errStale: "STALE",
	errBadHandleSt: "BADHANDLE", errNotSync: "NOT_SYNC", errBadCookie: "BAD_COOKIE",
	errNotSupp: "NOTSUPP", errTooSmall: "TOOSMALL", errServerFault: "SERVERFAULT",
	errBadType: "BADTYPE", errJukebox: "JUKEBOX",
}

func ndStatusName(st uint32) string {
	if n, ok := ndStatusNames[st]; ok {
		return n
	}
	if st&ndUnmapped == ndUnmapped {
		return fmt.Sprintf("local %s, which has no NFS status", ndErrName(syscall.Errno(st&^ndUnmapped)))
	}
	return fmt.Sprintf("status(%d)", st)
}

func ndErrName(e syscall.Errno) string {
	if e == 0 {
		return "success"
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno(%d)", int(e))
}

func ndErrno(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

func ndStatusOf(err error) uint32 {
	if err == nil {
		return nfsOK
	}
	e := ndErrno(err)
	if st, ok := ndErrnoStatus[e]; ok {
		return st
	}
	return ndUnmapped | uint32(e)
}

// --- where NFSv3 (as knfsd answers it) differs from the local call ---

// ndRule is a case where the NFS answer legitimately differs from what the
// local system call gives, so the reference's errno cannot simply be
// translated. want lists the acceptable statuses, knfsd's first; a second
// one is accepted only where it leaves the tree exactly as knfsd's does
// (every such case is a refusal, or a success that changes nothing);
// where several are accepted, only the status is compared. The knfsd
// sources are Linux's fs/nfsd/{nfs3proc.c,vfs.c,nfsfh.c} (v6.x).
type ndRule struct {
	want  []uint32
	local string // what the local system call does instead
	why   string
}

var ndRules = map[string]ndRule{
	"dir-is-symlink": {[]uint32{errNotDir},
		"the kernel follows a symlink in the middle of a path",
		"a directory argument (of LOOKUP, CREATE, MKDIR, REMOVE, RENAME, LINK, READDIRPLUS...) that is a symlink: " +
			"the server never follows symlinks. knfsd: fh_verify(S_IFDIR) -> nfsd_mode_check -> nfserr_symlink_not_dir, " +
			"NOTDIR in v3 (nfsd3_map_status; older kernels answer nfserr_notdir directly)"},
	"create-over-nonregular": {[]uint32{nfsOK, errExist},
		"open(O_CREAT|O_WRONLY|O_NOFOLLOW) is EISDIR for a directory, ELOOP for a symlink, ENXIO for a FIFO without reader",
		"CREATE UNCHECKED of a name that is a directory, symlink or FIFO: knfsd answers NFS3_OK with the existing " +
			"object's handle and changes nothing (nfsd3_create_file: `case NFS3_CREATE_UNCHECKED: if (!d_is_reg(child)) break;`); " +
			"objfs answers EXIST on purpose (procs.go create; TestStatusCodes \"create over directory\"). Both leave the tree alone"},
	"io-nonregular": {[]uint32{errInval},
		"open(O_NOFOLLOW) of a symlink is ELOOP; a FIFO blocks, or is ENXIO without a peer",
		"READ or WRITE of a symlink or FIFO: knfsd's nfsd_file_acquire -> fh_verify(S_IFREG) -> nfserr_symlink or " +
			"nfserr_wrong_type, both INVAL in v3 (nfsd3_map_status); RFC 1813 lists INVAL for READ/WRITE of a non-file"},
	"setattr-size-symlink": {[]uint32{errInval},
		"truncate(2) follows the symlink",
		"SETATTR of a symlink's size: nfsd_setattr asks fh_verify(S_IFREG) when ATTR_SIZE is set -> INVAL in v3"},
	"setattr-mode-symlink": {[]uint32{nfsOK},
		"Linux has no lchmod (fchmodat(AT_SYMLINK_NOFOLLOW) of a symlink is EOPNOTSUPP)",
		"SETATTR of a symlink's mode: nfsd_sanitize_attrs drops ATTR_MODE for symlinks; the other attributes apply"},
	"setattr-guard": {[]uint32{errNotSync},
		"no local equivalent",
		"SETATTR whose guard ctime is not the object's: nfsd_setattr answers nfserr_notsync and changes nothing"},
	"setattr-guard-type": {[]uint32{errIsDir, errNotSync},
		"no local equivalent",
		"SETATTR of a directory's size with a wrong guard: knfsd's fh_verify(S_IFREG) refuses the size (ISDIR) " +
			"before it looks at the guard; objfs checks the guard first (NOT_SYNC). Both change nothing"},
	"setattr-guard-type-special": {[]uint32{errInval, errNotSync},
		"no local equivalent",
		"as setattr-guard-type, for a symlink or FIFO: knfsd answers INVAL, objfs NOT_SYNC"},
	"link-dir": {[]uint32{errIsDir, errPerm},
		"linkat(2) of a directory is EPERM, but EEXIST or ENAMETOOLONG first when the new name exists or is too long (it is looked up first)",
		"LINK of a directory: knfsd's nfsd_link answers nfserr_isdir before it looks at the new name; " +
			"objfs answers PERM as linkat(2) does. Accepted: ISDIR, PERM, or the refusal linkat(2) gives. All refuse"},
	"readlink-dir": {[]uint32{errIsDir, errInval},
		"readlink(2) of a directory is EINVAL",
		"READLINK of a directory: knfsd's fh_verify(S_IFLNK) answers nfserr_isdir; RFC 1813 lists INVAL for " +
			"a non-symlink, as readlink(2) answers (objfs). Both refuse"},
	"commit-dir": {[]uint32{errIsDir, nfsOK},
		"fsync(2) of a directory succeeds",
		"COMMIT of a directory: knfsd's nfsd_commit -> nfsd_file_acquire -> fh_verify(S_IFREG) answers ISDIR; " +
			"objfs syncs the volume for any inode and answers OK, as fsync(2) would. Nothing changes either way"},
	"commit-special": {[]uint32{errInval, nfsOK},
		"a symlink or FIFO cannot be opened to be fsynced",
		"COMMIT of a symlink or FIFO: knfsd's fh_verify(S_IFREG) answers INVAL; objfs answers OK. Nothing changes either way"},
	"symlink-empty-target": {[]uint32{errInval, errNoEnt},
		"symlink(2) with an empty target is ENOENT",
		"SYMLINK with an empty target: nfsd3_proc_symlink answers INVAL (tlen == 0); objfs answers NOENT as " +
			"symlink(2) does (TestStatusCodes \"symlink empty target\"). Both refuse"},
}

// --- outcomes ---

// ndAttr is the part of fattr3 that is compared.
type ndAttr struct {
	typ, mode, nlink, uid, gid uint32
	size                       uint64
	mtime                      [2]uint32
	fileid                     uint64 // NFS fileid or reference inode number; not compared directly
	fixed                      bool   // reference only: mtime was set by the test and is still that
}

func (a ndAttr) String() string {
	s := fmt.Sprintf("%s mode=%#o nlink=%d uid=%d gid=%d", ndTypeName(a.typ), a.mode, a.nlink, a.uid, a.gid)
	if a.typ != nf3Dir {
		// Directory sizes are the file system's business.
		s += fmt.Sprintf(" size=%d", a.size)
	}
	return s
}

// ndDiffAttr describes how the NFS attributes got differ from the
// reference's want, or returns "".
func ndDiffAttr(got, want ndAttr) string {
	if g, w := got.String(), want.String(); g != w {
		return fmt.Sprintf("objfs %s; reference %s", g, w)
	}
	if want.fixed && got.mtime != want.mtime {
		return fmt.Sprintf("mtime set by the test to %d.%09d; objfs has %d.%09d", want.mtime[0], want.mtime[1], got.mtime[0], got.mtime[1])
	}
	return ""
}

func ndFattr(a fattr) ndAttr {
	return ndAttr{typ: a.typ, mode: a.mode, nlink: a.nlink, uid: a.uid, gid: a.gid, size: a.size, mtime: a.mtime, fileid: a.fileid}
}

func ndTypeName(typ uint32) string {
	switch typ {
	case nf3Reg:
		return "file"
	case nf3Dir:
		return "dir"
	case nf3Lnk:
		return "symlink"
	case nf3Fifo:
		return "fifo"
	}
	return fmt.Sprintf("type%d", typ)
}

// ndOutcome is what one side answered. The reference's errno is
// translated to the NFS status that stands for it (or decided by a rule).
type ndOutcome struct {
	st    uint32
	alt   []uint32          // reference only: further acceptable statuses (ndRules)
	rule  string            // reference only: the ndRules entry that decided st
	local string            // reference only: what the local call answered when a rule decided
	info  string            // compared when the statuses are equal
	attrs map[string]ndAttr // compared when the statuses are equal ("" is the object itself; keys
	// starting with "?" are post-operation attributes that a reply may omit)
	data []byte // compared when the statuses are equal
	bad  string // NFS only: a protocol violation in the replies
}

func (o ndOutcome) String() string {
	s := ndStatusName(o.st)
	for _, a := range o.alt {
		s += "|" + ndStatusName(a)
	}
	if o.info != "" {
		s += " " + o.info
	}
	if a, ok := o.attrs[""]; ok {
		s += " [" + a.String() + "]"
	}
	if o.data != nil {
		s += fmt.Sprintf(" (%d bytes)", len(o.data))
	}
	if o.rule != "" {
		s += " (rule " + o.rule
		if o.local != "" {
			s += "; local " + o.local
		}
		s += ")"
	}
	return s
}

func ndErrOutcome(err error) ndOutcome { return ndOutcome{st: ndStatusOf(err)} }

func ndOK(attrs map[string]ndAttr) ndOutcome { return ndOutcome{st: nfsOK, attrs: attrs} }

// --- the run ---

type ndRun struct {
	t      *testing.T
	rng    *rand.Rand
	data   *rand.ChaCha8
	w      *wireClient
	rootFH []byte // the volume root, from MOUNT
	work   []byte // handle of the work directory "w" (never renamed)
	ref    string // the reference work directory

	tree    difftest.Tree            // the reference work directory's paths
	mtimes  map[uint64]unix.Timespec // reference inode -> mtime the test set
	verf    []byte                   // write verifier last seen
	desc    string
	outcome string
	trace   []string
	stats   difftest.Counts
	rules   map[string]int
	sizeSum int
	mtimeN  int // reference attributes with an mtime the test set (compared exactly)
}

var ndNames = []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}

const (
	ndMaxDepth = 2  // directories this deep get no new entries (renames may still nest deeper)
	ndBigTree  = 35 // beyond this many entries, removals are favoured
)

// ndRunOnce runs the first nops operations of the sequence for seed on a
// fresh volume and a fresh reference directory, compares the trees, and
// (with reopen) compares them again after the volume is closed and opened
// behind a new server. It returns nil on success. verbose logs what ran.
func ndRunOnce(t *testing.T, seed uint64, nops int, reopen, verbose bool) *difftest.Failure {
	t.Helper()
	v := newTestVolume(t)
	f, closeFS := v.open(t)
	addr, stop := startServer(t, f, Options{Squash: SquashNone})
	defer func() {
		stop()
		closeFS()
	}()
	refTop := t.TempDir()
	defer os.RemoveAll(refTop)

	r := &ndRun{
		t:      t,
		rng:    rand.New(rand.NewPCG(seed, 0x6e66737633)),
		data:   difftest.Data(seed),
		ref:    refTop + "/w",
		tree:   difftest.Tree{Root: refTop + "/w"},
		mtimes: map[uint64]unix.Timespec{},
		stats:  difftest.Counts{},
		rules:  map[string]int{},
	}
	fail := func(step int, phase, msg string) *difftest.Failure {
		return &difftest.Failure{Step: step, Phase: phase, Msg: msg, Trace: r.trace}
	}
	r.connect(addr)
	// The work directory: the same mode on both sides, so that the
	// comparison covers it too.
	st, rp := r.w.nfs(ndProcMkdir, args(r.root(), "w", sattrMode(0o755)))
	if st != nfsOK {
		return fail(-1, ndPhaseSetup, "MKDIR w: "+ndStatusName(st))
	}
	_, r.work = r.w.createdHandle(st, rp)
	if err := unix.Mkdir(r.ref, 0o755); err != nil {
		return fail(-1, ndPhaseSetup, err.Error())
	}

	for i := range nops {
		r.desc, r.outcome = "", ""
		err := r.step()
		r.trace = append(r.trace, fmt.Sprintf("#%d %s%s", i, r.desc, r.outcome))
		if err != nil {
			return fail(i, ndPhaseOp, err.Error())
		}
	}
	if verbose {
		t.Log(r.summary())
	}
	if diffs := r.compareTrees(); len(diffs) > 0 {
		return fail(-1, ndPhaseFinal, "trees differ:\n  "+strings.Join(diffs, "\n  "))
	}
	if !reopen {
		return nil
	}
	// Close everything (the server commits buffered UNSTABLE writes as it
	// stops), open the volume again and serve it anew.
	stop()
	closeFS()
	f2, closeFS2 := v.open(t)
	addr2, stop2 := startServer(t, f2, Options{Squash: SquashNone})
	defer func() {
		stop2()
		closeFS2()
	}()
	r.connect(addr2)
	st, work := r.w.lookup(r.root(), "w")
	if st != nfsOK {
		return fail(-1, ndPhaseReopen, "LOOKUP w after reopening: "+ndStatusName(st))
	}
	if !bytes.Equal(work, r.work) {
		return fail(-1, ndPhaseReopen, fmt.Sprintf("the work directory's handle changed across the reopen: %x, was %x", work, r.work))
	}
	if diffs := r.compareTrees(); len(diffs) > 0 {
		return fail(-1, ndPhaseAfterReopen, "trees differ:\n  "+strings.Join(diffs, "\n  "))
	}
	return nil
}

// connect dials the server as root (AUTH_SYS uid 0; the server runs with
// SquashNone, so root is root) and mounts the volume root.
func (r *ndRun) connect(addr string) {
	r.w = dialWire(r.t, addr)
	r.w.uid, r.w.gid = 0, 0
	r.rootFH = r.w.mountRoot()
}

func (r *ndRun) root() []byte { return r.rootFH }

func (r *ndRun) summary() string {
	var rb strings.Builder
	rules := make([]string, 0, len(r.rules))
	for n := range r.rules {
		rules = append(rules, n)
	}
	sort.Strings(rules)
	for _, n := range rules {
		fmt.Fprintf(&rb, " %s=%d", n, r.rules[n])
	}
	return fmt.Sprintf("operations (succeeded/run):%s\nNFS-vs-local rules applied:%s\nmtimes set by the test and compared: %d\ntree size: %.1f entries on average, %d at the end",
		r.stats, rb.String(), r.mtimeN, float64(r.sizeSum)/float64(max(1, len(r.trace))), len(r.list()))
}

// --- random choices (from the reference tree only) ---

func (r *ndRun) list() []difftest.Entry { return r.tree.List() }

func (r *ndRun) changed() { r.tree.Changed() }

func (r *ndRun) chance(p float64) bool { return r.rng.Float64() < p }

func (r *ndRun) name() string { return ndNames[r.rng.IntN(len(ndNames))] }

// existing returns a random existing path of one of the given kinds.
func (r *ndRun) existing(kinds string) (string, bool) { return r.tree.Existing(r.rng, kinds) }

// newPath is a pool name in the work directory or in an existing directory
// not too deep; the name may well exist already.
func (r *ndRun) newPath() string {
	dirs := r.tree.Dirs(ndMaxDepth)
	return ndJoin(dirs[r.rng.IntN(len(dirs))], r.name())
}

// mixPath is any path: mostly existing or new ones, sometimes one below a
// file, symlink or FIFO, below a missing directory, or with a name longer
// than NAME_MAX.
func (r *ndRun) mixPath() string {
	switch x := r.rng.Float64(); {
	case x < 0.50:
		if p, ok := r.existing("fdlp"); ok {
			return p
		}
	case x < 0.85:
	case x < 0.93:
		if p, ok := r.existing("flp"); ok {
			return p + "/" + r.name()
		}
	case x < 0.98:
		return "nx/" + r.name()
	default:
		return r.longName("n")
	}
	return r.newPath()
}

// longName is a name one byte longer than NAME_MAX in a directory where
// newPath would put a new entry.
func (r *ndRun) longName(c string) string {
	dir, _ := ndParent(r.newPath())
	return ndJoin(dir, strings.Repeat(c, 256))
}

// pathOf prefers an existing entry of the given kinds (with probability p).
func (r *ndRun) pathOf(kinds string, p float64) string {
	if r.chance(p) {
		if rel, ok := r.existing(kinds); ok {
			return rel
		}
	}
	return r.mixPath()
}

func (r *ndRun) randMode(dir bool) uint32 {
	m := uint32(r.rng.IntN(0o1000))
	if r.chance(0.1) {
		m |= unix.S_ISVTX
	}
	// Set-ID bits on directories too: mkdir(2) and knfsd's MKDIR drop them
	// (vfs_mkdir keeps only the permission and sticky bits), chmod keeps them.
	if r.chance(0.07) {
		m |= unix.S_ISUID
	}
	if r.chance(0.07) {
		m |= unix.S_ISGID
	}
	if !dir && r.chance(0.2) {
		m |= 0o600 // mostly files their owner could use
	}
	return m
}

func (r *ndRun) randID() uint32 { return []uint32{0, 42, 1000, 1001}[r.rng.IntN(4)] }

// randTime is a client time for SETATTR (nfstime3 seconds are unsigned 32-bit).
func (r *ndRun) randTime() [2]uint32 {
	return [2]uint32{uint32(1_000_000_000 + r.rng.IntN(1_000_000_000)), uint32(r.rng.IntN(1_000_000_000))}
}

func (r *ndRun) randTarget() string {
	switch x := r.rng.Float64(); {
	case x < 0.45:
		return r.name()
	case x < 0.70:
		return r.name() + "/" + r.name()
	case x < 0.85:
		return "../" + r.name()
	case x < 0.92:
		return "/nonexistent-objfs/" + r.name()
	case x < 0.94:
		return "" // refused: see ndRules["symlink-empty-target"]
	case x < 0.96:
		// At and just past the limit: 4095 bytes fit, 4096 do not.
		return strings.Repeat("t", 4095+r.rng.IntN(2))
	default:
		n := 1 + r.rng.IntN(3000)
		b := make([]byte, n)
		for i := range b {
			if i%100 == 99 {
				b[i] = '/'
			} else {
				b[i] = 'a' + byte(r.rng.IntN(26))
			}
		}
		return string(b)
	}
}

// refSize is the size of the regular file rel on the reference side, or 0.
func (r *ndRun) refSize(rel string) int64 {
	var st unix.Stat_t
	if unix.Lstat(r.refPath(rel), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0
	}
	return st.Size
}

// randWriteSize is 1 byte to 200 KiB.
func (r *ndRun) randWriteSize() int {
	switch x := r.rng.Float64(); {
	case x < 0.40:
		return 1 + r.rng.IntN(512)
	case x < 0.70:
		return 513 + r.rng.IntN(16<<10)
	default:
		return 16<<10 + r.rng.IntN(184<<10+1)
	}
}

// randOffset picks an offset for a file of the given size: inside, at EOF,
// past EOF (a hole), at 0, or farther out (up to 2 MiB, near chunk-ish
// boundaries sometimes).
func (r *ndRun) randOffset(size int64) uint64 {
	switch x := r.rng.Float64(); {
	case x < 0.40:
		return uint64(r.rng.Int64N(size + 1))
	case x < 0.60:
		return uint64(size)
	case x < 0.78:
		return uint64(size + 1 + r.rng.Int64N(64<<10))
	case x < 0.88:
		return 0
	case x < 0.95:
		return uint64(r.rng.Int64N(2 << 20))
	default:
		bounds := []int64{4 << 10, 64 << 10, 1 << 20}
		return uint64(bounds[r.rng.IntN(len(bounds))] + int64(r.rng.IntN(9)) - 4)
	}
}

func (r *ndRun) randData(n int) []byte {
	b := make([]byte, n)
	switch x := r.rng.Float64(); {
	case x < 0.8:
		_, _ = r.data.Read(b)
	case x < 0.9:
		// zeros: looks like a hole
	default:
		pat := []byte(fmt.Sprintf("objfs-%d|", r.rng.IntN(1000)))
		for i := range b {
			b[i] = pat[i%len(pat)]
		}
	}
	return b
}

// --- paths ---

func ndJoin(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func ndSplit(rel string) []string {
	if rel == "" {
		return nil
	}
	return strings.Split(rel, "/")
}

// ndParent splits rel into its directory ("" for the work directory) and
// last name.
func ndParent(rel string) (string, string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

func (r *ndRun) refPath(rel string) string {
	if rel == "" {
		return r.ref
	}
	return r.ref + "/" + rel
}

func ndShort(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%s...(%d bytes)", s[:16], len(s))
	}
	return s
}

// --- the NFS side ---

// ndLookup is LOOKUP returning the handle and the object's attributes
// (from GETATTR when the reply leaves them out, as it may).
func (w *wireClient) ndLookup(dir []byte, name string) (uint32, []byte, fattr, string) {
	st, r := w.nfs(ndProcLookup, args(dir, name))
	if st != nfsOK {
		return st, nil, fattr{}, ""
	}
	fh := append([]byte(nil), r.opaque(64)...)
	a, ok := skipPostOp(r)
	if r.err != nil {
		return st, fh, a, "LOOKUP reply does not decode"
	}
	if !ok {
		_, a = w.getattr(fh)
	}
	return st, fh, a, ""
}

// nfsPath looks rel up from the work directory, one component at a time,
// and returns the first failure or the handle and attributes. A reply
// that does not decode is reported as the status ndUnmapped.
func (r *ndRun) nfsPath(rel string) (uint32, []byte, fattr) {
	fh := r.work
	if rel == "" {
		st, a := r.w.getattr(fh)
		return st, fh, a
	}
	var a fattr
	for _, c := range ndSplit(rel) {
		st, h, attr, bad := r.w.ndLookup(fh, c)
		if bad != "" {
			return ndUnmapped, nil, fattr{}
		}
		if st != nfsOK {
			return st, nil, fattr{}
		}
		fh, a = h, attr
	}
	return nfsOK, fh, a
}

// sameHandle checks that rel, looked up from the work directory again,
// gives handle fh (what a creating procedure returned, or what rel named
// before a rename). It returns a protocol violation, or "".
func (r *ndRun) sameHandle(what, rel string, fh []byte) string {
	st, h, _ := r.nfsPath(rel)
	if st != nfsOK || !bytes.Equal(h, fh) {
		return fmt.Sprintf("%s: handle %x, but LOOKUP of %s from the root again gives %s, handle %x", what, fh, rel, ndStatusName(st), h)
	}
	return ""
}

// ndSattr is a sattr3 to send.
type ndSattr struct {
	mode, uid, gid *uint32
	size           *uint64
	atime, mtime   ndSetTime
}

type ndSetTime struct {
	how uint32 // timeDontChange, timeServer or timeClient
	t   [2]uint32
}

func (s ndSattr) raw() raw {
	w := &xdrWriter{}
	for _, v := range []*uint32{s.mode, s.uid, s.gid} {
		w.bool(v != nil)
		if v != nil {
			w.u32(*v)
		}
	}
	w.bool(s.size != nil)
	if s.size != nil {
		w.u64(*s.size)
	}
	for _, tm := range []ndSetTime{s.atime, s.mtime} {
		w.u32(tm.how)
		if tm.how == timeClient {
			w.u32(tm.t[0])
			w.u32(tm.t[1])
		}
	}
	return raw(w.b)
}

func (s ndSattr) String() string {
	var parts []string
	if s.mode != nil {
		parts = append(parts, fmt.Sprintf("mode=%#o", *s.mode))
	}
	if s.uid != nil {
		parts = append(parts, fmt.Sprintf("uid=%d", *s.uid))
	}
	if s.gid != nil {
		parts = append(parts, fmt.Sprintf("gid=%d", *s.gid))
	}
	if s.size != nil {
		parts = append(parts, fmt.Sprintf("size=%d", *s.size))
	}
	for _, x := range []struct {
		name string
		tm   ndSetTime
	}{{"atime", s.atime}, {"mtime", s.mtime}} {
		switch x.tm.how {
		case timeServer:
			parts = append(parts, x.name+"=server")
		case timeClient:
			parts = append(parts, fmt.Sprintf("%s=%d.%09d", x.name, x.tm.t[0], x.tm.t[1]))
		}
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func ndU32(v uint32) *uint32 { return &v }

// randOwnerTimes adds, sometimes, an owner and a client mtime to the
// attributes of a new object (knfsd applies them after the create, as root).
func (r *ndRun) randOwnerTimes(s *ndSattr) {
	if r.chance(0.15) {
		s.uid = ndU32(r.randID())
	}
	if r.chance(0.15) {
		s.gid = ndU32(r.randID())
	}
	if r.chance(0.1) {
		s.mtime = ndSetTime{how: timeClient, t: r.randTime()}
	}
}

// created reads the rest of a successful CREATE, MKDIR, SYMLINK or MKNOD
// reply: the new handle and attributes.
func (r *ndRun) created(rel string, rp *xdrReader) ndOutcome {
	o := ndOutcome{st: nfsOK}
	if !rp.bool() {
		o.bad = "reply without the new handle"
		return o
	}
	fh := append([]byte(nil), rp.opaque(64)...)
	a, ok := skipPostOp(rp)
	o.attrs = map[string]ndAttr{}
	ndWcc(rp, o.attrs, "?dir")
	if rp.err != nil {
		o.bad = "reply does not decode"
		return o
	}
	if !ok {
		// post_op_attr is optional: ask.
		_, a = r.w.getattr(fh)
	}
	o.attrs[""] = ndFattr(a)
	o.bad = r.sameHandle("the created object", rel, fh)
	return o
}

// ndWcc reads wcc_data and files its post-operation attributes, if
// present, under key.
func ndWcc(rp *xdrReader, attrs map[string]ndAttr, key string) {
	if rp.bool() {
		rp.u64()
		rp.u64()
		rp.u64()
	}
	if a, ok := skipPostOp(rp); ok {
		attrs[key] = ndFattr(a)
	}
}

// refAttrs adds the reference attributes of abs under key.
func (r *ndRun) refAttrs(o *ndOutcome, key, abs string) {
	a, err := r.refAttr(abs)
	if err != nil {
		o.st, o.info = ndUnmapped, "reference lstat after success: "+err.Error()
		return
	}
	if o.attrs == nil {
		o.attrs = map[string]ndAttr{}
	}
	o.attrs[key] = a
}

// --- the reference side ---

// refAttr returns the attributes of the reference object at abs (lstat).
func (r *ndRun) refAttr(abs string) (ndAttr, error) {
	var st unix.Stat_t
	if err := unix.Lstat(abs, &st); err != nil {
		return ndAttr{}, err
	}
	want, ok := r.mtimes[st.Ino]
	if ok && st.Mtim == want {
		r.mtimeN++
	}
	return ndAttr{
		typ: ftype(st.Mode), mode: st.Mode & 0o7777, nlink: uint32(st.Nlink),
		uid: st.Uid, gid: st.Gid, size: uint64(st.Size),
		mtime:  [2]uint32{uint32(st.Mtim.Sec), uint32(st.Mtim.Nsec)},
		fileid: st.Ino,
		fixed:  ok && st.Mtim == want,
	}, nil
}

// refOK is success with abs's attributes.
func (r *ndRun) refOK(abs string) ndOutcome {
	a, err := r.refAttr(abs)
	if err != nil {
		return ndOutcome{st: ndUnmapped, info: "reference lstat after success: " + err.Error()}
	}
	return ndOK(map[string]ndAttr{"": a})
}

// ruled is the outcome that rule name decides. local is what the local
// call answered (an error, nil for success), or a description where the
// call was not made because it would follow a symlink and change its
// target. A rule must never leave the reference changed.
func (r *ndRun) ruled(name string, local any) ndOutcome {
	rule, ok := ndRules[name]
	if !ok {
		panic("no rule " + name)
	}
	r.rules[name]++
	o := ndOutcome{st: rule.want[0], alt: slices.Clone(rule.want[1:]), rule: name}
	switch l := local.(type) {
	case nil:
		o.local = "success"
	case error:
		o.local = ndErrName(ndErrno(l))
	case string:
		o.local = l
	}
	return o
}

// refLookup resolves rel in the reference as the NFS client does: one
// component at a time, never following a symlink (the local kernel would
// follow one in the middle of a path; see ndRules["dir-is-symlink"]).
func (r *ndRun) refLookup(rel string) (string, *ndOutcome) {
	abs := r.ref
	for _, c := range ndSplit(rel) {
		if o := r.refMustBeDir(abs); o != nil {
			return "", o
		}
		abs += "/" + c
		var st unix.Stat_t
		if err := unix.Lstat(abs, &st); err != nil {
			o := ndErrOutcome(err)
			return "", &o
		}
	}
	return abs, nil
}

// refMustBeDir refuses an existing abs that is not a directory, as the
// server refuses a handle that is not one where a directory is expected.
func (r *ndRun) refMustBeDir(abs string) *ndOutcome {
	var st unix.Stat_t
	if err := unix.Lstat(abs, &st); err != nil {
		o := ndErrOutcome(err)
		return &o
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return nil
	case unix.S_IFLNK:
		o := r.ruled("dir-is-symlink", "not called: the kernel follows the symlink")
		return &o
	}
	o := ndErrOutcome(unix.ENOTDIR)
	return &o
}

// refDir resolves a directory argument.
func (r *ndRun) refDir(rel string) (string, *ndOutcome) {
	abs, o := r.refLookup(rel)
	if o != nil {
		return "", o
	}
	if o := r.refMustBeDir(abs); o != nil {
		return "", o
	}
	return abs, nil
}

func ndLstatType(abs string) uint32 {
	var st unix.Stat_t
	if unix.Lstat(abs, &st) != nil {
		return 0
	}
	return st.Mode & unix.S_IFMT
}

// refSetTimes applies the times of s to abs (not following a symlink) and
// remembers an mtime set to a client time.
func (r *ndRun) refSetTimes(abs string, s ndSattr) error {
	if s.atime.how == timeDontChange && s.mtime.how == timeDontChange {
		return nil
	}
	ts := make([]unix.Timespec, 2)
	for i, tm := range []ndSetTime{s.atime, s.mtime} {
		switch tm.how {
		case timeDontChange:
			ts[i] = unix.Timespec{Nsec: unix.UTIME_OMIT}
		case timeServer:
			ts[i] = unix.Timespec{Nsec: unix.UTIME_NOW}
		default:
			ts[i] = unix.Timespec{Sec: int64(tm.t[0]), Nsec: int64(tm.t[1])}
		}
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, abs, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if s.mtime.how == timeClient {
		var st unix.Stat_t
		if unix.Lstat(abs, &st) == nil {
			r.mtimes[st.Ino] = ts[1]
		}
	}
	return nil
}

// refOwner applies the owner of s to abs (not following a symlink).
func refOwner(abs string, s ndSattr) error {
	if s.uid == nil && s.gid == nil {
		return nil
	}
	uid, gid := -1, -1
	if s.uid != nil {
		uid = int(*s.uid)
	}
	if s.gid != nil {
		gid = int(*s.gid)
	}
	return unix.Lchown(abs, uid, gid)
}

// refTruncate sets a regular file's size as knfsd does (notify_change with
// ATTR_SIZE|ATTR_MTIME|ATTR_CTIME): through ftruncate(2), which, unlike
// truncate(2), updates the times even when the size does not change.
func refTruncate(abs string, size uint64) error {
	fd, err := unix.Open(abs, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = unix.Ftruncate(fd, int64(size))
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// --- comparing ---

// pair runs the NFS side and then the reference side and compares.
func (r *ndRun) pair(nfsSide, refSide func() ndOutcome) error {
	a := nfsSide()
	b := refSide()
	r.outcome = " -> " + b.String()
	return ndCompare(a, b)
}

func ndCompare(a, b ndOutcome) error {
	if a.bad != "" {
		return fmt.Errorf("objfs reply: %s (objfs %s; reference %s)", a.bad, a, b)
	}
	if a.st != b.st && !slices.Contains(b.alt, a.st) {
		if rule, ok := ndRules[b.rule]; ok {
			return fmt.Errorf("objfs: %s; reference: %s\nrule %s: %s (locally: %s)", a, b, b.rule, rule.why, rule.local)
		}
		return fmt.Errorf("objfs: %s; reference: %s", a, b)
	}
	if a.st != b.st || (b.rule != "" && len(ndRules[b.rule].want) > 1) {
		return nil // one of several acceptable answers: only the status is compared
	}
	if a.info != b.info {
		return fmt.Errorf("objfs: %s; reference: %s", a, b)
	}
	if !bytes.Equal(a.data, b.data) {
		return fmt.Errorf("data differs: %s", ndDescribeDiff(a.data, b.data))
	}
	var diffs []string
	for name, want := range b.attrs {
		got, ok := a.attrs[name]
		if !ok {
			if !strings.HasPrefix(name, "?") {
				diffs = append(diffs, fmt.Sprintf("%q: no attributes from objfs", name))
			}
			continue
		}
		if d := ndDiffAttr(got, want); d != "" {
			diffs = append(diffs, fmt.Sprintf("%q: %s", name, d))
		}
	}
	for name := range a.attrs {
		if _, ok := b.attrs[name]; !ok && b.attrs != nil {
			diffs = append(diffs, fmt.Sprintf("%q: only objfs has it", name))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		return fmt.Errorf("attributes differ: %s", strings.Join(diffs, "; "))
	}
	return nil
}

func ndDescribeDiff(got, want []byte) string {
	n := min(len(got), len(want))
	for i := range n {
		if got[i] != want[i] {
			end := min(i+16, n)
			return fmt.Sprintf("objfs %d bytes, reference %d bytes; first difference at offset %d: objfs % x, reference % x", len(got), len(want), i, got[i:end], want[i:end])
		}
	}
	return fmt.Sprintf("objfs %d bytes, reference %d bytes; equal up to the shorter length", len(got), len(want))
}

func (r *ndRun) op(format string, args ...any) { r.desc = fmt.Sprintf(format, args...) }

// --- the operations ---

type ndOp = difftest.Op[*ndRun]

var ndOps = []ndOp{
	{Name: "create", Weight: 11, Fn: (*ndRun).opCreate},
	{Name: "mkdir", Weight: 7, Fn: (*ndRun).opMkdir},
	{Name: "symlink", Weight: 4, Fn: (*ndRun).opSymlink},
	{Name: "mknod", Weight: 2, Fn: (*ndRun).opMknod},
	{Name: "link", Weight: 4, Fn: (*ndRun).opLink},
	{Name: "remove", Weight: 5, Fn: (*ndRun).opRemove},
	{Name: "rmdir", Weight: 4, Fn: (*ndRun).opRmdir},
	{Name: "rename", Weight: 11, Fn: (*ndRun).opRename},
	{Name: "write", Weight: 12, Fn: (*ndRun).opWrite},
	{Name: "read", Weight: 7, Fn: (*ndRun).opRead},
	{Name: "setattr", Weight: 8, Fn: (*ndRun).opSetattr},
	{Name: "getattr", Weight: 4, Fn: (*ndRun).opGetattr},
	{Name: "readlink", Weight: 2, Fn: (*ndRun).opReadlink},
	{Name: "readdirplus", Weight: 4, Fn: (*ndRun).opReaddirplus},
	{Name: "commit", Weight: 2, Fn: (*ndRun).opCommit},
	{Name: "lookup", Weight: 4, Fn: (*ndRun).opLookup},
	{Name: "access", Weight: 2, Fn: (*ndRun).opAccess},
	{Name: "rmtree", Weight: 1, Fn: (*ndRun).opRmtree},
}

// ndShrinkOps keep the tree small once it has grown.
var ndShrinkOps = []ndOp{
	{Name: "remove", Weight: 5, Fn: (*ndRun).opRemove},
	{Name: "rmdir", Weight: 3, Fn: (*ndRun).opRmdir},
	{Name: "rmtree", Weight: 2, Fn: (*ndRun).opRmtree},
}

func (r *ndRun) step() error {
	ops := ndOps
	r.sizeSum += len(r.list())
	if len(r.list()) > ndBigTree && r.chance(0.4) {
		ops = ndShrinkOps
	}
	o := difftest.Pick(r.rng, ops)
	err := o.Fn(r)
	r.stats.Add(o.Name, strings.HasPrefix(r.outcome, " -> OK"))
	return err
}

func (r *ndRun) opCreate() error {
	rel := r.mixPath()
	parent, name := ndParent(rel)
	s := ndSattr{mode: ndU32(r.randMode(false))}
	how, howName := uint32(createUnchecked), "UNCHECKED"
	switch x := r.rng.Float64(); {
	case x < 0.40:
	case x < 0.70:
		// With a size: O_TRUNC (size 0) or a size to extend to.
		size := uint64(0)
		if r.chance(0.5) {
			size = uint64(r.rng.IntN(256 << 10))
		}
		s.size = &size
	default:
		how, howName = createGuarded, "GUARDED"
	}
	r.randOwnerTimes(&s)
	r.op("CREATE %s %s %s", rel, howName, s)
	defer r.changed()
	return r.pair(func() ndOutcome {
		st, dir, _ := r.nfsPath(parent)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, rp := r.w.nfs(ndProcCreate, args(dir, name, how, s.raw()))
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		return r.created(rel, rp)
	}, func() ndOutcome {
		dir, o := r.refDir(parent)
		if o != nil {
			return *o
		}
		p := dir + "/" + name
		var st unix.Stat_t
		err := unix.Lstat(p, &st)
		switch {
		case err == nil && how == createGuarded:
			return ndErrOutcome(unix.EEXIST)
		case err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG:
			fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, *s.mode)
			if err == nil {
				unix.Close(fd)
			}
			return r.ruled("create-over-nonregular", err)
		case err == nil:
			// O_CREAT of an existing file: only the size applies (knfsd:
			// `iap->ia_valid &= ATTR_SIZE`), as O_TRUNC would.
			if s.size != nil {
				if err := refTruncate(p, *s.size); err != nil {
					return ndErrOutcome(err)
				}
			}
			out := r.refOK(p)
			r.refAttrs(&out, "?dir", dir)
			return out
		case !errors.Is(err, unix.ENOENT):
			return ndErrOutcome(err)
		}
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, *s.mode)
		if err != nil {
			return ndErrOutcome(err)
		}
		unix.Close(fd)
		if s.size != nil && *s.size > 0 {
			if err := refTruncate(p, *s.size); err != nil {
				return ndErrOutcome(err)
			}
		}
		if err := refOwner(p, s); err != nil {
			return ndErrOutcome(err)
		}
		if err := r.refSetTimes(p, s); err != nil {
			return ndErrOutcome(err)
		}
		out := r.refOK(p)
		r.refAttrs(&out, "?dir", dir)
		return out
	})
}

// creating runs a creating procedure whose arguments are the directory,
// the name and then more, and compares it with the reference's mk, which
// creates abs; owner and times of s apply afterwards on both sides.
func (r *ndRun) creating(rel string, proc uint32, more []any, s ndSattr, mk func(abs string) error) error {
	parent, name := ndParent(rel)
	defer r.changed()
	return r.pair(func() ndOutcome {
		st, dir, _ := r.nfsPath(parent)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, rp := r.w.nfs(proc, args(append([]any{dir, name}, more...)...))
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		return r.created(rel, rp)
	}, func() ndOutcome {
		dir, o := r.refDir(parent)
		if o != nil {
			return *o
		}
		p := dir + "/" + name
		if err := mk(p); err != nil {
			return ndErrOutcome(err)
		}
		if err := refOwner(p, s); err != nil {
			return ndErrOutcome(err)
		}
		if err := r.refSetTimes(p, s); err != nil {
			return ndErrOutcome(err)
		}
		out := r.refOK(p)
		r.refAttrs(&out, "?dir", dir)
		return out
	})
}

func (r *ndRun) opMkdir() error {
	rel := r.mixPath()
	s := ndSattr{mode: ndU32(r.randMode(true))}
	r.randOwnerTimes(&s)
	r.op("MKDIR %s %s", rel, s)
	return r.creating(rel, ndProcMkdir, []any{s.raw()}, s, func(p string) error {
		// mkdir(2) and knfsd's MKDIR (nfsd_create_locked -> vfs_mkdir)
		// both keep only the permission and sticky bits of the mode.
		return unix.Mkdir(p, *s.mode)
	})
}

func (r *ndRun) opSymlink() error {
	rel := r.mixPath()
	target := r.randTarget()
	var s ndSattr
	if r.chance(0.3) {
		s.mode = ndU32(r.randMode(false)) // ignored: a symlink's mode is 0777
	}
	r.randOwnerTimes(&s)
	r.op("SYMLINK %s -> %q %s", rel, ndShort(target), s)
	if target == "" {
		parent, name := ndParent(rel)
		return r.pair(func() ndOutcome {
			st, dir, _ := r.nfsPath(parent)
			if st != nfsOK {
				return ndOutcome{st: st}
			}
			st, _ = r.w.nfs(ndProcSymlink, args(dir, name, s.raw(), target))
			return ndOutcome{st: st}
		}, func() ndOutcome {
			dir, o := r.refDir(parent)
			if o != nil {
				return *o
			}
			err := unix.Symlink(target, dir+"/"+name)
			if err == nil {
				return ndOutcome{st: ndUnmapped, info: "symlink(2) with an empty target succeeded"}
			}
			return r.ruled("symlink-empty-target", err)
		})
	}
	return r.creating(rel, ndProcSymlink, []any{s.raw(), target}, s, func(p string) error {
		return unix.Symlink(target, p)
	})
}

func (r *ndRun) opMknod() error {
	rel := r.mixPath()
	s := ndSattr{mode: ndU32(r.randMode(false))}
	r.randOwnerTimes(&s)
	r.op("MKNOD FIFO %s %s", rel, s)
	return r.creating(rel, ndProcMknod, []any{uint32(nf3Fifo), s.raw()}, s, func(p string) error {
		return unix.Mknod(p, unix.S_IFIFO|*s.mode, 0)
	})
}

func (r *ndRun) opLink() error {
	src := r.pathOf("flp", 0.8) // directories come from mixPath
	dst := r.newPath()
	if r.chance(0.3) {
		dst = r.mixPath()
	}
	parent, name := ndParent(dst)
	r.op("LINK %s %s", src, dst)
	defer r.changed()
	return r.pair(func() ndOutcome {
		st, fh, _ := r.nfsPath(src)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, dir, _ := r.nfsPath(parent)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, rp := r.w.nfs(ndProcLink, args(fh, dir, name))
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		a, ok := skipPostOp(rp)
		o := ndOutcome{st: st, attrs: map[string]ndAttr{}}
		ndWcc(rp, o.attrs, "?dir")
		if rp.err != nil {
			o.bad = "LINK reply does not decode"
			return o
		}
		if !ok {
			_, a = r.w.getattr(fh) // post_op_attr is optional: ask
		}
		o.attrs[""] = ndFattr(a)
		o.bad = r.sameHandle("the linked file", dst, fh)
		return o
	}, func() ndOutcome {
		s, o := r.refLookup(src)
		if o != nil {
			return *o
		}
		dir, o := r.refDir(parent)
		if o != nil {
			return *o
		}
		// linkat without AT_SYMLINK_FOLLOW links a symlink itself, as
		// LINK of a symlink's handle does.
		err := unix.Linkat(unix.AT_FDCWD, s, unix.AT_FDCWD, dir+"/"+name, 0)
		if ndLstatType(s) == unix.S_IFDIR {
			o := r.ruled("link-dir", err)
			if st := ndStatusOf(err); !slices.Contains(o.alt, st) && st != o.st {
				o.alt = append(o.alt, st) // the refusal linkat(2) gives first
			}
			return o
		}
		if err != nil {
			return ndErrOutcome(err)
		}
		out := r.refOK(dir + "/" + name)
		r.refAttrs(&out, "?dir", dir)
		return out
	})
}

// removing runs REMOVE or RMDIR of rel.
func (r *ndRun) removing(rel string, proc uint32, rm func(abs string) error) error {
	parent, name := ndParent(rel)
	defer r.changed()
	return r.pair(func() ndOutcome {
		st, dir, _ := r.nfsPath(parent)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, rp := r.w.nfs(proc, args(dir, name))
		o := ndOutcome{st: st}
		if st == nfsOK {
			o.attrs = map[string]ndAttr{}
			ndWcc(rp, o.attrs, "?dir")
		}
		return o
	}, func() ndOutcome {
		dir, o := r.refDir(parent)
		if o != nil {
			return *o
		}
		out := ndErrOutcome(rm(dir + "/" + name))
		if out.st == nfsOK {
			r.refAttrs(&out, "?dir", dir)
		}
		return out
	})
}

func (r *ndRun) opRemove() error {
	rel := r.pathOf("flp", 0.8)
	r.op("REMOVE %s", rel)
	return r.removing(rel, ndProcRemove, unix.Unlink)
}

func (r *ndRun) opRmdir() error {
	rel := r.pathOf("d", 0.8)
	r.op("RMDIR %s", rel)
	return r.removing(rel, ndProcRmdir, unix.Rmdir)
}

// opRmtree removes a whole subtree, deepest entries first, one REMOVE or
// RMDIR at a time, each compared.
func (r *ndRun) opRmtree() error {
	top, ok := r.existing("d")
	if !ok {
		return r.opRemove()
	}
	var order []difftest.Entry
	for _, e := range r.list() {
		if e.Rel == top || strings.HasPrefix(e.Rel, top+"/") {
			order = append(order, e)
		}
	}
	// Children before parents: deeper paths first.
	sort.SliceStable(order, func(i, j int) bool { return order[i].Depth > order[j].Depth })
	r.op("rm -r %s (%d removals)", top, len(order))
	for i, e := range order {
		proc, rm, name := uint32(ndProcRemove), unix.Unlink, "REMOVE"
		if e.Kind == 'd' {
			proc, rm, name = ndProcRmdir, unix.Rmdir, "RMDIR"
		}
		if err := r.removing(e.Rel, proc, rm); err != nil {
			return fmt.Errorf("removal %d of %d, %s %s: %w", i+1, len(order), name, e.Rel, err)
		}
	}
	return nil
}

func (r *ndRun) opRename() error {
	src := r.pathOf("fdlp", 0.85)
	var dst string
	switch x := r.rng.Float64(); {
	case x < 0.35:
		dst = r.pathOf("fdlp", 1) // over an existing entry
	case x < 0.70:
		dst = r.newPath()
	case x < 0.80:
		// Into its own subtree (directly, or below a subdirectory).
		dst = src + "/" + r.name()
		if d, ok := r.existing("d"); ok && strings.HasPrefix(d, src+"/") {
			dst = d + "/" + r.name()
		}
	case x < 0.86:
		dst = src // onto itself
	case x < 0.93:
		// Onto an ancestor of the source (knfsd and rename(2): ENOTEMPTY).
		if i := strings.LastIndexByte(src, '/'); i > 0 {
			dst = src[:i]
			if j := strings.IndexByte(dst, '/'); j > 0 && r.chance(0.5) {
				dst = dst[:j]
			}
		} else {
			dst = r.newPath()
		}
	case x < 0.96:
		// A name longer than NAME_MAX: refused, but only once the source
		// is found (rename(2) and knfsd look the source up first).
		dst = r.longName("r")
	default:
		dst = r.mixPath()
	}
	sp, sn := ndParent(src)
	dp, dn := ndParent(dst)
	r.op("RENAME %s %s", src, dst)
	defer r.changed()
	return r.pair(func() ndOutcome {
		// The source's handle before, to check that the moved object
		// keeps it.
		_, before, _ := r.nfsPath(src)
		st, sdir, _ := r.nfsPath(sp)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, ddir, _ := r.nfsPath(dp)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, rp := r.w.nfs(ndProcRename, args(sdir, sn, ddir, dn))
		o := ndOutcome{st: st}
		if st == nfsOK {
			o.attrs = map[string]ndAttr{}
			ndWcc(rp, o.attrs, "?from")
			ndWcc(rp, o.attrs, "?to")
			o.bad = r.sameHandle("the renamed object", dst, before)
		}
		return o
	}, func() ndOutcome {
		// Both directories are looked up before the server sees the
		// RENAME, which then checks that both are directories.
		sdir, o := r.refLookup(sp)
		if o != nil {
			return *o
		}
		ddir, o := r.refLookup(dp)
		if o != nil {
			return *o
		}
		for _, d := range []string{sdir, ddir} {
			if o := r.refMustBeDir(d); o != nil {
				return *o
			}
		}
		out := ndErrOutcome(unix.Rename(sdir+"/"+sn, ddir+"/"+dn))
		if out.st == nfsOK {
			r.refAttrs(&out, "?from", sdir)
			r.refAttrs(&out, "?to", ddir)
		}
		return out
	})
}

// refOpenIO opens the reference object abs for READ or WRITE, or returns
// the outcome that stands for the handle's type.
func (r *ndRun) refOpenIO(abs string, flags int) (int, *ndOutcome) {
	typ := ndLstatType(abs)
	fd, err := unix.Open(abs, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if typ == unix.S_IFLNK || typ == unix.S_IFIFO {
		if err == nil {
			unix.Close(fd)
		}
		o := r.ruled("io-nonregular", err)
		return -1, &o
	}
	if err != nil {
		o := ndErrOutcome(err) // a directory opened for writing: EISDIR
		return -1, &o
	}
	return fd, nil
}

var ndStableNames = []string{"UNSTABLE", "DATA_SYNC", "FILE_SYNC"}

func (r *ndRun) opWrite() error {
	rel := r.pathOf("f", 0.85)
	off := r.randOffset(r.refSize(rel))
	data := r.randData(r.randWriteSize())
	how := uint32(unstable)
	switch x := r.rng.Float64(); {
	case x < 0.5:
	case x < 0.6:
		how = dataSync
	default:
		how = fileSync
	}
	r.op("WRITE %s off=%d len=%d %s", rel, off, len(data), ndStableNames[how])
	return r.pair(func() ndOutcome {
		st, fh, _ := r.nfsPath(rel)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, rp := r.w.nfs(ndProcWrite, args(fh, off, uint32(len(data)), how, data))
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		o := ndOutcome{st: st, attrs: map[string]ndAttr{}}
		ndWcc(rp, o.attrs, "?obj")
		n, committed := rp.u32(), rp.u32()
		verf := rp.fixed(8)
		o.info = fmt.Sprintf("n=%d", n)
		switch {
		case rp.err != nil:
			o.bad = "WRITE reply does not decode"
		case committed < how || committed > fileSync:
			o.bad = fmt.Sprintf("WRITE %s answered committed=%d", ndStableNames[how], committed)
		case r.verf != nil && !bytes.Equal(verf, r.verf):
			o.bad = fmt.Sprintf("write verifier changed from %x to %x while the server ran", r.verf, verf)
		}
		r.verf = append([]byte(nil), verf...)
		return o
	}, func() ndOutcome {
		abs, o := r.refLookup(rel)
		if o != nil {
			return *o
		}
		fd, o := r.refOpenIO(abs, unix.O_WRONLY)
		if o != nil {
			return *o
		}
		defer unix.Close(fd)
		n := 0
		for n < len(data) {
			m, err := unix.Pwrite(fd, data[n:], int64(off)+int64(n))
			if err != nil {
				return ndErrOutcome(err)
			}
			n += m
		}
		out := ndOutcome{st: nfsOK, info: fmt.Sprintf("n=%d", n)}
		r.refAttrs(&out, "?obj", abs)
		return out
	})
}

func (r *ndRun) opRead() error {
	rel := r.pathOf("f", 0.85)
	size := r.refSize(rel)
	var off uint64
	switch x := r.rng.Float64(); {
	case x < 0.3:
	case x < 0.9:
		off = uint64(r.rng.Int64N(size + 1))
	default:
		off = uint64(size + r.rng.Int64N(8192))
	}
	count := uint32(1 + r.rng.IntN(8<<10))
	switch x := r.rng.Float64(); {
	case x < 0.5:
	case x < 0.85:
		count = uint32(1 + r.rng.IntN(256<<10))
	default:
		count = uint32(max(1, size-int64(off))) // exactly to the end
	}
	// A client asks for at most rtmax (FSINFO) bytes; a server may answer
	// a larger READ with fewer bytes and eof false.
	count = min(count, maxData)
	r.op("READ %s off=%d count=%d", rel, off, count)
	return r.pair(func() ndOutcome {
		st, fh, _ := r.nfsPath(rel)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, rp := r.w.nfs(ndProcRead, args(fh, off, count))
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		skipPostOp(rp)
		n := rp.u32()
		eof := rp.bool()
		data := append([]byte{}, rp.opaque(maxData)...)
		o := ndOutcome{st: st, info: fmt.Sprintf("eof=%v", eof), data: data}
		switch {
		case rp.err != nil:
			o.bad = "READ reply does not decode"
		case int(n) != len(data):
			o.bad = fmt.Sprintf("READ count %d with %d bytes of data", n, len(data))
		}
		return o
	}, func() ndOutcome {
		abs, o := r.refLookup(rel)
		if o != nil {
			return *o
		}
		fd, o := r.refOpenIO(abs, unix.O_RDONLY)
		if o != nil {
			return *o
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return ndErrOutcome(err)
		}
		buf := make([]byte, count)
		n := 0
		for n < len(buf) {
			m, err := unix.Pread(fd, buf[n:], int64(off)+int64(n))
			if err != nil {
				return ndErrOutcome(err) // a directory: EISDIR
			}
			if m == 0 {
				break
			}
			n += m
		}
		eof := off+uint64(n) >= uint64(st.Size)
		return ndOutcome{st: nfsOK, info: fmt.Sprintf("eof=%v", eof), data: buf[:n]}
	})
}

func (r *ndRun) opSetattr() error {
	rel := r.pathOf("fdlp", 0.85)
	var s ndSattr
	for s == (ndSattr{}) {
		if r.chance(0.4) {
			s.mode = ndU32(r.randMode(false))
		}
		if r.chance(0.2) {
			s.uid = ndU32(r.randID())
		}
		if r.chance(0.2) {
			s.gid = ndU32(r.randID())
		}
		if r.chance(0.3) {
			size := uint64(r.rng.Int64N(r.refSize(rel) + 1))
			if r.chance(0.5) {
				size = r.randOffset(r.refSize(rel))
			}
			s.size = &size
		}
		if r.chance(0.3) {
			s.atime = ndSetTime{how: timeClient, t: r.randTime()}
			if r.chance(0.2) {
				s.atime = ndSetTime{how: timeServer}
			}
		}
		if r.chance(0.3) {
			s.mtime = ndSetTime{how: timeClient, t: r.randTime()}
			if r.chance(0.15) {
				s.mtime = ndSetTime{how: timeServer}
			}
		}
		if r.chance(0.05) {
			break // sometimes nothing at all
		}
	}
	// The ctime guard: mostly none; sometimes the object's ctime as GETATTR
	// gives it (passes), sometimes a stale one (NOT_SYNC, nothing changes).
	guard := "none"
	switch x := r.rng.Float64(); {
	case x < 0.06:
		guard = "current"
	case x < 0.12:
		guard = "stale"
	}
	r.op("SETATTR %s %s guard=%s", rel, s, guard)
	return r.pair(func() ndOutcome {
		st, fh, _ := r.nfsPath(rel)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		a := args(fh, s.raw(), guard != "none")
		switch guard {
		case "current":
			_, at := r.w.getattr(fh)
			a.u32(at.ctime[0])
			a.u32(at.ctime[1])
		case "stale":
			a.u32(1)
			a.u32(0)
		}
		st, rp := r.w.nfs(ndProcSetattr, a)
		o := ndOutcome{st: st}
		if st == nfsOK {
			o.attrs = map[string]ndAttr{}
			ndWcc(rp, o.attrs, "?obj")
		}
		return o
	}, func() ndOutcome {
		abs, o := r.refLookup(rel)
		if o != nil {
			return *o
		}
		typ := ndLstatType(abs)
		if guard == "stale" {
			const local = "no local equivalent"
			switch {
			case s.size != nil && typ == unix.S_IFDIR:
				return r.ruled("setattr-guard-type", local)
			case s.size != nil && typ != unix.S_IFREG:
				return r.ruled("setattr-guard-type-special", local)
			}
			return r.ruled("setattr-guard", local)
		}
		out := ndOutcome{st: nfsOK}
		// Size first, as knfsd does (and it alone may fail for the
		// object's type, before anything changed).
		if s.size != nil {
			var err error
			switch typ {
			case unix.S_IFREG:
				err = refTruncate(abs, *s.size)
			case unix.S_IFLNK:
				return r.ruled("setattr-size-symlink", "not called: truncate(2) follows the symlink")
			default:
				err = unix.Truncate(abs, int64(*s.size)) // directory: EISDIR; FIFO: EINVAL
			}
			if err != nil {
				return ndErrOutcome(err)
			}
		}
		// Mode, then owner: the owner change clears setuid (and setgid
		// with group execute) from the new mode, as knfsd's
		// nfsd_sanitize_attrs does for a SETATTR of mode and owner.
		if s.mode != nil {
			if typ == unix.S_IFLNK {
				out = r.ruled("setattr-mode-symlink", "not called: chmod(2) follows the symlink, and there is no lchmod")
			} else if err := unix.Chmod(abs, *s.mode); err != nil {
				return ndErrOutcome(err)
			}
		}
		if err := refOwner(abs, s); err != nil {
			return ndErrOutcome(err)
		}
		if err := r.refSetTimes(abs, s); err != nil {
			return ndErrOutcome(err)
		}
		r.refAttrs(&out, "?obj", abs)
		return out
	})
}

func (r *ndRun) opGetattr() error {
	rel := r.pathOf("fdlp", 0.85)
	r.op("GETATTR %s", rel)
	return r.pair(func() ndOutcome {
		st, fh, _ := r.nfsPath(rel)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, a := r.w.getattr(fh)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		return ndOK(map[string]ndAttr{"": ndFattr(a)})
	}, func() ndOutcome {
		abs, o := r.refLookup(rel)
		if o != nil {
			return *o
		}
		return r.refOK(abs)
	})
}

func (r *ndRun) opReadlink() error {
	rel := r.pathOf("l", 0.8)
	r.op("READLINK %s", rel)
	return r.pair(func() ndOutcome {
		st, fh, _ := r.nfsPath(rel)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, rp := r.w.nfs(ndProcReadlink, args(fh))
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		skipPostOp(rp)
		o := ndOutcome{st: st, info: fmt.Sprintf("%q", rp.opaque(maxPath))}
		if rp.err != nil {
			o.bad = "READLINK reply does not decode"
		}
		return o
	}, func() ndOutcome {
		abs, o := r.refLookup(rel)
		if o != nil {
			return *o
		}
		buf := make([]byte, 8192)
		n, err := unix.Readlink(abs, buf)
		if ndLstatType(abs) == unix.S_IFDIR {
			return r.ruled("readlink-dir", err)
		}
		if err != nil {
			return ndErrOutcome(err) // a file or FIFO: EINVAL, as knfsd answers
		}
		return ndOutcome{st: nfsOK, info: fmt.Sprintf("%q", buf[:n])}
	})
}

// ndDirEnt is one READDIRPLUS entry; its attributes and handle are
// optional (nil when the server left them out).
type ndDirEnt struct {
	attr *ndAttr
	fh   []byte
}

// nfsList lists directory fh with READDIRPLUS in pages of at most maxcount
// bytes, and checks what a listing must be: "." and ".." once, no name
// twice.
func (r *ndRun) nfsList(fh []byte, maxcount uint32) (uint32, map[string]ndDirEnt, string) {
	ents := map[string]ndDirEnt{}
	dots := 0
	cookie := uint64(0)
	for pages := 0; ; pages++ {
		if pages > 1000 {
			return nfsOK, ents, "READDIRPLUS does not reach eof after 1000 pages"
		}
		st, rp := r.w.nfs(ndProcReaddirplus, args(fh, cookie, uint64(0), maxcount/2, maxcount))
		if st != nfsOK {
			if pages > 0 {
				return nfsOK, ents, fmt.Sprintf("READDIRPLUS page %d: %s", pages, ndStatusName(st))
			}
			return st, nil, ""
		}
		skipPostOp(rp)
		rp.fixed(8)
		n := 0
		for rp.bool() {
			n++
			rp.u64()
			name := string(rp.opaque(maxName))
			cookie = rp.u64()
			var e ndDirEnt
			if a, ok := skipPostOp(rp); ok {
				na := ndFattr(a)
				e.attr = &na
			}
			if rp.bool() {
				e.fh = append([]byte(nil), rp.opaque(64)...)
			}
			if name == "." || name == ".." {
				dots++
				continue
			}
			if _, dup := ents[name]; dup {
				return nfsOK, ents, fmt.Sprintf("READDIRPLUS lists %q twice", name)
			}
			ents[name] = e
		}
		eof := rp.bool()
		if rp.err != nil {
			return nfsOK, ents, "READDIRPLUS reply does not decode"
		}
		if eof {
			break
		}
		if n == 0 {
			return nfsOK, ents, "READDIRPLUS page without entries and without eof"
		}
	}
	if dots != 2 {
		return nfsOK, ents, fmt.Sprintf("READDIRPLUS lists . and .. %d times in all", dots)
	}
	return nfsOK, ents, ""
}

func (r *ndRun) opReaddirplus() error {
	rel := r.pathOf("d", 0.8)
	if r.chance(0.1) {
		rel = ""
	}
	// Small pages (a few entries each) exercise the cookies.
	maxcount := uint32(600 + r.rng.IntN(8192))
	r.op("READDIRPLUS %q maxcount=%d", rel, maxcount)
	return r.pair(func() ndOutcome {
		st, fh, _ := r.nfsPath(rel)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, ents, bad := r.nfsList(fh, maxcount)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		o := ndOutcome{st: st, attrs: map[string]ndAttr{}, bad: bad}
		names := make([]string, 0, len(ents))
		for name, e := range ents {
			names = append(names, name)
			// An entry's handle must be the one LOOKUP gives; what
			// the server left out, LOOKUP tells.
			st, h, a := r.nfsPath(ndJoin(rel, name))
			if st != nfsOK {
				o.bad = fmt.Sprintf("READDIRPLUS lists %q, LOOKUP says %s", name, ndStatusName(st))
				continue
			}
			if e.fh != nil && !bytes.Equal(e.fh, h) && o.bad == "" {
				o.bad = fmt.Sprintf("READDIRPLUS handle of %q %x, LOOKUP handle %x", name, e.fh, h)
			}
			o.attrs[name] = ndFattr(a)
			if e.attr != nil {
				o.attrs[name] = *e.attr
			}
		}
		sort.Strings(names)
		o.info = "[" + strings.Join(names, " ") + "]"
		return o
	}, func() ndOutcome {
		abs, o := r.refLookup(rel)
		if o != nil {
			return *o
		}
		if ndLstatType(abs) == unix.S_IFLNK {
			return r.ruled("dir-is-symlink", "not called: opendir(3) follows the symlink")
		}
		fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return ndErrOutcome(err) // ENOTDIR
		}
		unix.Close(fd)
		des, err := os.ReadDir(abs)
		if err != nil {
			return ndErrOutcome(err)
		}
		out := ndOutcome{st: nfsOK, attrs: map[string]ndAttr{}}
		var names []string
		for _, de := range des {
			names = append(names, de.Name())
			a, err := r.refAttr(abs + "/" + de.Name())
			if err != nil {
				return ndErrOutcome(err)
			}
			out.attrs[de.Name()] = a
		}
		out.info = "[" + strings.Join(names, " ") + "]"
		return out
	})
}

func (r *ndRun) opCommit() error {
	rel := r.pathOf("f", 0.85)
	r.op("COMMIT %s", rel)
	return r.pair(func() ndOutcome {
		st, fh, _ := r.nfsPath(rel)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, rp := r.w.nfs(ndProcCommit, args(fh, uint64(0), uint32(0)))
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		skipWcc(rp)
		verf := rp.fixed(8)
		o := ndOutcome{st: st}
		switch {
		case rp.err != nil:
			o.bad = "COMMIT reply does not decode"
		case r.verf != nil && !bytes.Equal(verf, r.verf):
			o.bad = fmt.Sprintf("COMMIT verifier %x, WRITE gave %x: the client would resend its writes", verf, r.verf)
		}
		return o
	}, func() ndOutcome {
		abs, o := r.refLookup(rel)
		if o != nil {
			return *o
		}
		typ := ndLstatType(abs)
		fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Fsync(fd)
			unix.Close(fd)
		}
		switch typ {
		case unix.S_IFDIR:
			return r.ruled("commit-dir", err)
		case unix.S_IFREG:
			return ndErrOutcome(err)
		}
		return r.ruled("commit-special", err)
	})
}

func (r *ndRun) opLookup() error {
	var rel string
	switch x := r.rng.Float64(); {
	case x < 0.3:
		rel = r.pathOf("fdlp", 1)
	case x < 0.55:
		rel = r.newPath() // often missing
	case x < 0.80:
		// Below a non-directory.
		if p, ok := r.existing("flp"); ok {
			rel = p + "/" + r.name()
		} else {
			rel = r.newPath()
		}
	case x < 0.90:
		rel = r.longName("l")
	default:
		rel = "nx/" + r.name() + "/" + r.name()
	}
	r.op("LOOKUP %s", ndShort(rel))
	return r.pair(func() ndOutcome {
		st, _, a := r.nfsPath(rel)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		return ndOK(map[string]ndAttr{"": ndFattr(a)})
	}, func() ndOutcome {
		abs, o := r.refLookup(rel)
		if o != nil {
			return *o
		}
		return r.refOK(abs)
	})
}

// ACCESS bits asked: all six.
const ndAccessAll = accessRead | accessLookup | accessModify | accessExtend | accessDelete | accessExecute

func (r *ndRun) opAccess() error {
	rel := r.pathOf("fdlp", 0.9)
	r.op("ACCESS %s", rel)
	return r.pair(func() ndOutcome {
		st, fh, _ := r.nfsPath(rel)
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		st, rp := r.w.nfs(ndProcAccess, args(fh, uint32(ndAccessAll)))
		if st != nfsOK {
			return ndOutcome{st: st}
		}
		skipPostOp(rp)
		o := ndOutcome{st: st, info: fmt.Sprintf("access=%#x", rp.u32())}
		if rp.err != nil {
			o.bad = "ACCESS reply does not decode"
		}
		return o
	}, func() ndOutcome {
		abs, o := r.refLookup(rel)
		if o != nil {
			return *o
		}
		// faccessat(2) of the object itself, mapped as knfsd maps the
		// bits (nfs3_regaccess, nfs3_diraccess): directories have LOOKUP
		// and DELETE, other objects EXECUTE.
		may := func(mode uint32) bool {
			return unix.Faccessat(unix.AT_FDCWD, abs, mode, unix.AT_EACCESS|unix.AT_SYMLINK_NOFOLLOW) == nil
		}
		dir := ndLstatType(abs) == unix.S_IFDIR
		var got uint32
		if may(unix.R_OK) {
			got |= accessRead
		}
		if may(unix.W_OK) {
			got |= accessModify | accessExtend
			if dir {
				got |= accessDelete
			}
		}
		if may(unix.X_OK) {
			if dir {
				got |= accessLookup
			} else {
				got |= accessExecute
			}
		}
		return ndOutcome{st: nfsOK, info: fmt.Sprintf("access=%#x", got)}
	})
}

// --- final comparison ---

// compareTrees walks both trees (objfs through READDIRPLUS, LOOKUP,
// GETATTR, READ and READLINK) and returns the differences (at most a few
// dozen).
func (r *ndRun) compareTrees() []string {
	var diffs []string
	add := func(format string, args ...any) {
		if len(diffs) < 40 {
			diffs = append(diffs, fmt.Sprintf(format, args...))
		}
	}
	// Hard-link structure: each inode's first path, on both sides.
	firstPath := [2]map[uint64]string{{}, {}}
	st, wa := r.w.getattr(r.work)
	if st != nfsOK {
		add("GETATTR of the work directory: %s", ndStatusName(st))
		return diffs
	}
	if ra, err := r.refAttr(r.ref); err != nil {
		add("reference work directory: %v", err)
	} else if d := ndDiffAttr(ndFattr(wa), ra); d != "" {
		add("the work directory: %s", d)
	}
	var walk func(rel string, fh []byte)
	walk = func(rel string, fh []byte) {
		st, ents, bad := r.nfsList(fh, 32768)
		if st != nfsOK || bad != "" {
			add("%s/: READDIRPLUS: %s %s", rel, ndStatusName(st), bad)
			return
		}
		des, err := os.ReadDir(r.refPath(rel))
		if err != nil {
			add("%s/: reference: %v", rel, err)
			return
		}
		inRef := map[string]bool{}
		for _, de := range des {
			inRef[de.Name()] = true
		}
		var extra []string
		for name := range ents {
			if !inRef[name] {
				extra = append(extra, name)
			}
		}
		sort.Strings(extra)
		for _, name := range extra {
			add("%s: exists only on objfs", ndJoin(rel, name))
		}
		for _, de := range des {
			child := ndJoin(rel, de.Name())
			e, ok := ents[de.Name()]
			if !ok {
				add("%s: missing on objfs", child)
				continue
			}
			if h := r.compareEntry(child, fh, de.Name(), e, firstPath, add); h != nil {
				walk(child, h)
			}
		}
	}
	walk("", r.work)
	return diffs
}

// compareEntry compares one entry and returns its handle when both sides
// are directories to descend into, nil otherwise.
func (r *ndRun) compareEntry(rel string, dir []byte, name string, e ndDirEnt, firstPath [2]map[uint64]string, add func(string, ...any)) []byte {
	st, fh, la, bad := r.w.ndLookup(dir, name)
	if st != nfsOK || bad != "" {
		add("%s: LOOKUP: %s %s", rel, ndStatusName(st), bad)
		return nil
	}
	if e.fh != nil && !bytes.Equal(fh, e.fh) {
		add("%s: READDIRPLUS handle %x, LOOKUP handle %x", rel, e.fh, fh)
	}
	st, ga := r.w.getattr(fh)
	if st != nfsOK {
		add("%s: GETATTR: %s", rel, ndStatusName(st))
		return nil
	}
	got := ndFattr(ga)
	// LOOKUP's and READDIRPLUS's attributes must be GETATTR's.
	others := []struct {
		what string
		a    *ndAttr
	}{{"LOOKUP", &ndAttr{}}, {"READDIRPLUS", e.attr}}
	*others[0].a = ndFattr(la)
	for _, o := range others {
		if o.a != nil && (o.a.String() != got.String() || o.a.fileid != got.fileid) {
			add("%s: %s attributes %s (fileid %d), GETATTR %s (fileid %d)", rel, o.what, o.a, o.a.fileid, got, got.fileid)
		}
	}
	abs := r.refPath(rel)
	want, err := r.refAttr(abs)
	if err != nil {
		add("%s: reference: %v", rel, err)
		return nil
	}
	if d := ndDiffAttr(got, want); d != "" {
		add("%s: %s", rel, d)
	}
	if got.typ != want.typ {
		return nil
	}
	switch want.typ {
	case nf3Dir:
		return fh
	case nf3Lnk:
		st, rp := r.w.nfs(ndProcReadlink, args(fh))
		if st != nfsOK {
			add("%s: READLINK: %s", rel, ndStatusName(st))
			break
		}
		skipPostOp(rp)
		target := string(rp.opaque(maxPath))
		buf := make([]byte, 8192)
		n, err := unix.Readlink(abs, buf)
		if err != nil {
			add("%s: reference readlink: %v", rel, err)
		} else if target != string(buf[:n]) {
			add("%s: symlink target: objfs %q, reference %q", rel, ndShort(target), ndShort(string(buf[:n])))
		}
	case nf3Reg:
		data, msg := r.nfsReadAll(fh)
		if msg != "" {
			add("%s: %s", rel, msg)
			break
		}
		ref, err := os.ReadFile(abs)
		if err != nil {
			add("%s: reference: %v", rel, err)
		} else if !bytes.Equal(data, ref) {
			add("%s: content: %s", rel, ndDescribeDiff(data, ref))
		}
	}
	// Hard links: the same set of names must share an inode on both sides.
	var fp [2]string
	for i, id := range []uint64{got.fileid, want.fileid} {
		if p, ok := firstPath[i][id]; ok {
			fp[i] = p
		} else {
			firstPath[i][id] = rel
			fp[i] = rel
		}
	}
	if fp[0] != fp[1] {
		add("%s: hard links differ: on objfs it is the same file as %s, on the reference as %s", rel, fp[0], fp[1])
	}
	return nil
}

// nfsReadAll reads a whole file with READs of maxData bytes until eof.
func (r *ndRun) nfsReadAll(fh []byte) ([]byte, string) {
	var out []byte
	for {
		st, rp := r.w.nfs(ndProcRead, args(fh, uint64(len(out)), uint32(maxData)))
		if st != nfsOK {
			return nil, fmt.Sprintf("READ at %d: %s", len(out), ndStatusName(st))
		}
		skipPostOp(rp)
		n := rp.u32()
		eof := rp.bool()
		data := rp.opaque(maxData)
		if rp.err != nil || int(n) != len(data) {
			return nil, fmt.Sprintf("READ at %d: bad reply", len(out))
		}
		out = append(out, data...)
		if eof {
			return out, ""
		}
		if len(data) == 0 {
			return nil, fmt.Sprintf("READ at %d: no data and no eof", len(out))
		}
	}
}
