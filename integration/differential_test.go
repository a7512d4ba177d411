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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/objfs/objfs/integration/difftest"
)

// TestDifferential applies one seeded random sequence of filesystem
// operations to an objfs mount and to a plain directory on the local disk in
// lock step. Every operation must give the same errno (and the same data,
// link target, attributes...) on both sides; at the end, and again after an
// unmount and remount, the two trees must be identical.
//
// OBJFS_DIFF_SEED fixes the seed, OBJFS_DIFF_OPS the number of operations.
// On failure the test searches for the shortest failing prefix of the
// sequence (each try on a fresh volume) and prints its last operations.
func TestDifferential(t *testing.T) {
	requirePrereqs(t)
	seed := envSeed(t, "OBJFS_DIFF_SEED")
	nops := 20000
	if s := os.Getenv("OBJFS_DIFF_OPS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			t.Fatalf("OBJFS_DIFF_OPS=%q: want a count", s)
		}
		nops = v
	}
	t.Logf("seed %d, %d operations (rerun with OBJFS_DIFF_SEED=%d OBJFS_DIFF_OPS=%d)", seed, nops, seed, nops)

	// Modes are part of what is compared; do not let the umask hide bits.
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	// The sequence of operations is a pure function of the seed and the
	// reference directory, so a prefix of length n replays exactly the
	// first n operations.
	difftest.Check(t, seed, nops, func(k int, full bool) *difftest.Failure { return runDifferential(t, seed, k, full) },
		15, 150*time.Second, "OBJFS_DIFF_SEED", "OBJFS_DIFF_OPS")
}

// --- the run ---

// diffSide is one of the two trees: 0 is objfs, 1 is the reference.
type diffSide struct {
	name string
	top  string // directory holding the work directory "w"
	root string // top + "/w": every operation's path is relative to it
	idx  int
}

func (s diffSide) p(rel string) string {
	if rel == "" {
		return s.root
	}
	return s.root + "/" + rel
}

type diffHandle struct {
	id     int
	fd     [2]int
	path   string
	flags  int
	refIno uint64
}

type diffRun struct {
	rng      *rand.Rand
	data     *rand.ChaCha8
	sides    [2]diffSide
	handles  []*diffHandle
	nextID   int
	tree     difftest.Tree            // the reference side's paths
	mtimes   map[uint64]unix.Timespec // reference inode -> mtime set by utimens since its last change
	dirNlink bool
	ignore   map[string]bool // names in the mount root that predate the run
	desc     string
	outcome  string
	trace    []string
	stats    difftest.Counts
	sizeSum  int
}

const (
	maxHandles = 8
	maxDepth   = 4
	bigTree    = 40
)

var namePool = []string{"a", "b", "c", "d", "e", "f"}

// runDifferential runs the first nops operations of the sequence for seed on
// a fresh volume and a fresh reference directory, then compares the trees,
// and (if remount) compares again after a remount. It returns nil on success.
func runDifferential(t *testing.T, seed uint64, nops int, remount bool) *difftest.Failure {
	t.Helper()
	return runDifferentialOn(t, newVolume, seed, nops, remount)
}

// runDifferentialOn is runDifferential on a volume made by newVol (e.g. one
// whose blocks live in an S3 bucket).
func runDifferentialOn(t *testing.T, newVol func(testing.TB) *volume, seed uint64, nops int, remount bool) *difftest.Failure {
	t.Helper()
	v := newVol(t)
	defer v.destroy(t)
	refTop := t.TempDir()
	defer os.RemoveAll(refTop)
	v.mount(t)

	r := &diffRun{
		rng:    rand.New(rand.NewPCG(seed, 0x6f626a6673)),
		data:   difftest.Data(seed),
		mtimes: map[uint64]unix.Timespec{},
		ignore: map[string]bool{},
	}
	r.sides[0] = diffSide{name: "objfs", top: v.mnt, root: v.mnt + "/w", idx: 0}
	r.sides[1] = diffSide{name: "reference", top: refTop, root: refTop + "/w", idx: 1}
	r.tree.Root = r.sides[1].root

	fail := func(step int, phase, msg string) *difftest.Failure {
		if ok, why := v.alive(); !ok {
			msg += "\n" + why
		} else {
			msg += fmt.Sprintf("\n(objfs log: %s)", v.proc.logPath)
		}
		return &difftest.Failure{Step: step, Phase: phase, Msg: msg, Trace: r.trace}
	}

	names, err := readNames(v.mnt)
	if err != nil {
		return fail(-1, "setup", fmt.Sprintf("listing the fresh mount: %v", err))
	}
	for _, n := range names {
		r.ignore[n] = true
	}
	for _, s := range r.sides {
		if err := os.Mkdir(s.root, 0o755); err != nil {
			return fail(-1, "setup", fmt.Sprintf("mkdir %s: %v", s.root, err))
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(r.sides[0].root, &st); err != nil {
		return fail(-1, "setup", fmt.Sprintf("lstat %s: %v", r.sides[0].root, err))
	}
	r.dirNlink = st.Nlink == 2
	if !r.dirNlink && remount {
		t.Logf("note: an empty objfs directory has nlink %d (ext4: 2); directory link counts are not compared", st.Nlink)
	}

	// A stall watchdog, re-armed after every operation.
	stall := 60 * time.Second
	p := v.proc
	wd := time.AfterFunc(stall, func() {
		fmt.Fprintf(os.Stderr, "integration: differential: an operation took over %v; SIGQUIT to objfs (goroutine dump in %s)\n", stall, p.logPath)
		p.signal(syscall.SIGQUIT)
		p.waitFor(5 * time.Second)
		_ = p.forceStop()
	})
	defer wd.Stop()

	for i := range nops {
		r.desc, r.outcome = "", ""
		err := r.step()
		r.trace = append(r.trace, fmt.Sprintf("#%d %s%s", i, r.desc, r.outcome))
		if err != nil {
			return fail(i, "op", err.Error())
		}
		wd.Reset(stall)
	}
	r.desc, r.outcome = "", ""
	for len(r.handles) > 0 {
		h := r.handles[0]
		if err := r.closeHandle(h); err != nil {
			return fail(-1, "closing handles", err.Error())
		}
	}
	wd.Stop()
	if remount {
		t.Log(r.summary())
	}
	if diffs := r.compareTrees(); len(diffs) > 0 {
		return fail(-1, "final comparison", "trees differ:\n  "+strings.Join(diffs, "\n  "))
	}
	if !remount {
		return nil
	}
	v.unmount(t)
	v.status(t)
	v.mount(t)
	if diffs := r.compareTrees(); len(diffs) > 0 {
		return fail(-1, "comparison after remount", "trees differ:\n  "+strings.Join(diffs, "\n  "))
	}
	v.unmount(t)
	// Every invariant the operations must keep (reference counts, files'
	// allocated bytes, slices within the size...).
	if out, err := runObjfs(5*time.Minute, "fsck", v.dir); err != nil || !strings.Contains(out, "; 0 errors") {
		return fail(-1, "fsck", fmt.Sprintf("%v\n%s", err, out))
	}
	return nil
}

// --- random choices ---

func (r *diffRun) list() []difftest.Entry { return r.tree.List() }

func (r *diffRun) changed() { r.tree.Changed() }

func (r *diffRun) chance(p float64) bool { return r.rng.Float64() < p }

// existing returns a random existing path of one of the given kinds.
func (r *diffRun) existing(kinds string) (string, bool) { return r.tree.Existing(r.rng, kinds) }

// newPath returns a pool name inside a random existing directory (or the
// work root) that is not too deep; the name may well exist already.
func (r *diffRun) newPath() string {
	dirs := r.tree.Dirs(maxDepth)
	dir := dirs[r.rng.IntN(len(dirs))]
	name := namePool[r.rng.IntN(len(namePool))]
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// mixPath is any path: mostly existing or new ones, sometimes one below a
// non-directory, below a missing directory, or with a trailing slash.
func (r *diffRun) mixPath() string {
	x := r.rng.Float64()
	switch {
	case x < 0.50:
		if p, ok := r.existing("fdl"); ok {
			return p
		}
	case x < 0.85:
	case x < 0.91:
		if p, ok := r.existing("fl"); ok {
			return p + "/" + namePool[r.rng.IntN(len(namePool))]
		}
	case x < 0.97:
		return "nx/" + namePool[r.rng.IntN(len(namePool))]
	default:
		if p, ok := r.existing("fdl"); ok {
			return p + "/"
		}
	}
	return r.newPath()
}

// pathOf prefers an existing entry of the given kinds (with probability p),
// else any path.
func (r *diffRun) pathOf(kinds string, p float64) string {
	if r.chance(p) {
		if rel, ok := r.existing(kinds); ok {
			return rel
		}
	}
	return r.mixPath()
}

func (r *diffRun) randMode(dir bool) uint32 {
	m := uint32(r.rng.IntN(0o1000))
	if r.chance(0.1) {
		m |= unix.S_ISVTX
	}
	if !dir {
		if r.chance(0.05) {
			m |= unix.S_ISUID
		}
		if r.chance(0.05) {
			m |= unix.S_ISGID
		}
	}
	return m
}

func (r *diffRun) randTarget() string {
	x := r.rng.Float64()
	switch {
	case x < 0.45:
		return namePool[r.rng.IntN(len(namePool))]
	case x < 0.70:
		return namePool[r.rng.IntN(len(namePool))] + "/" + namePool[r.rng.IntN(len(namePool))]
	case x < 0.85:
		return "../" + namePool[r.rng.IntN(len(namePool))]
	case x < 0.92:
		return "/nonexistent-objfs/" + namePool[r.rng.IntN(len(namePool))]
	default:
		// A long target (components stay below NAME_MAX).
		n := 1 + r.rng.IntN(4000)
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

// refSize is the size of the regular file rel (following symlinks) on the
// reference side, or 0.
func (r *diffRun) refSize(rel string) int64 {
	var st unix.Stat_t
	if unix.Stat(r.sides[1].p(rel), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0
	}
	return st.Size
}

func (r *diffRun) randWriteSize() int {
	x := r.rng.Float64()
	switch {
	case x < 0.45:
		return r.rng.IntN(513)
	case x < 0.70:
		return 513 + r.rng.IntN(16<<10)
	case x < 0.85:
		return 16<<10 + r.rng.IntN(112<<10)
	case x < 0.92:
		return 128<<10 + r.rng.IntN(896<<10+1)
	case x < 0.97:
		return 0
	default:
		return 1 << 20
	}
}

// randOffset picks a write/truncate offset for a file of the given size:
// inside, at EOF, just past EOF (a hole), near block-ish boundaries, or far
// out (up to ~8 MiB).
func (r *diffRun) randOffset(size int64) int64 {
	x := r.rng.Float64()
	switch {
	case x < 0.40:
		return r.rng.Int64N(size + 1)
	case x < 0.60:
		return size
	case x < 0.75:
		return size + 1 + r.rng.Int64N(64<<10)
	case x < 0.83:
		return 0
	case x < 0.92:
		return r.rng.Int64N(8 << 20)
	default:
		bounds := []int64{4 << 10, 64 << 10, 1 << 20, 4 << 20, 8 << 20}
		return bounds[r.rng.IntN(len(bounds))] + int64(r.rng.IntN(9)) - 4
	}
}

func (r *diffRun) randData(n int) []byte {
	b := make([]byte, n)
	x := r.rng.Float64()
	switch {
	case x < 0.8:
		r.data.Read(b)
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

func (r *diffRun) randTime() unix.Timespec {
	x := r.rng.Float64()
	var sec int64
	switch {
	case x < 0.85:
		sec = 1_000_000_000 + r.rng.Int64N(1_000_000_000)
	case x < 0.90:
		sec = 0
	case x < 0.95:
		sec = 1<<32 + r.rng.Int64N(1<<32) // after 2106
	default:
		sec = -r.rng.Int64N(2_000_000_000) // before 1970
	}
	return unix.Timespec{Sec: sec, Nsec: r.rng.Int64N(1_000_000_000)}
}

// --- mtime tracking ---

// forget drops the explicit mtimes of everything the given paths (followed
// or not) and their parent directories refer to on the reference side.
func (r *diffRun) forget(rels ...string) {
	for _, rel := range rels {
		for _, p := range []string{rel, path.Dir(strings.TrimSuffix(rel, "/"))} {
			if p == "." {
				p = ""
			}
			full := r.sides[1].p(p)
			var st unix.Stat_t
			if unix.Lstat(full, &st) == nil {
				delete(r.mtimes, st.Ino)
			}
			if unix.Stat(full, &st) == nil {
				delete(r.mtimes, st.Ino)
			}
		}
	}
}

// --- executing one operation on both sides ---

type opResult struct {
	errno syscall.Errno
	info  string // compared when errnos match
	data  []byte // compared byte for byte when errnos match
}

func (o opResult) String() string {
	s := errName(o.errno)
	if o.info != "" {
		s += " " + o.info
	}
	if o.data != nil {
		s += fmt.Sprintf(" (%d bytes)", len(o.data))
	}
	return s
}

func errName(e syscall.Errno) string {
	if e == 0 {
		return "ok"
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno(%d)", int(e))
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.Errno(0xfff) // not a syscall error: never equal to a real one
}

func res(err error, info string) opResult { return opResult{errno: errnoOf(err), info: info} }

func (r *diffRun) op(format string, args ...any) { r.desc = fmt.Sprintf(format, args...) }

// pair runs f on objfs and then on the reference, and compares.
func (r *diffRun) pair(f func(s diffSide) opResult) (opResult, error) {
	a := f(r.sides[0])
	b := f(r.sides[1])
	r.outcome = " -> " + b.String()
	if a.errno != b.errno || a.info != b.info {
		return b, fmt.Errorf("objfs: %s; reference: %s", a, b)
	}
	if !bytes.Equal(a.data, b.data) {
		return b, fmt.Errorf("data differs: %s", describeDiff(a.data, b.data))
	}
	return b, nil
}

func describeDiff(got, want []byte) string {
	n := min(len(got), len(want))
	for i := range n {
		if got[i] != want[i] {
			end := min(i+16, n)
			return fmt.Sprintf("objfs %d bytes, reference %d bytes; first difference at offset %d: objfs % x, reference % x", len(got), len(want), i, got[i:end], want[i:end])
		}
	}
	return fmt.Sprintf("objfs %d bytes, reference %d bytes; equal up to the shorter length", len(got), len(want))
}

func closeInfo(fd int) string {
	if err := unix.Close(fd); err != nil {
		return " close=" + errName(errnoOf(err))
	}
	return ""
}

// preadFull reads len(buf) bytes at off, stopping early only at EOF.
func preadFull(fd int, buf []byte, off int64) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Pread(fd, buf[n:], off+int64(n))
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

func pwriteFull(fd int, buf []byte, off int64) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Pwrite(fd, buf[n:], off+int64(n))
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

func statInfo(st *unix.Stat_t, dirNlink bool) string {
	typ := st.Mode & unix.S_IFMT
	s := fmt.Sprintf("%s mode=%#o uid=%d gid=%d", typeName(typ), st.Mode&0o7777, st.Uid, st.Gid)
	if typ != unix.S_IFDIR {
		s += fmt.Sprintf(" size=%d nlink=%d", st.Size, st.Nlink)
	} else if dirNlink {
		s += fmt.Sprintf(" nlink=%d", st.Nlink)
	}
	return s
}

func typeName(typ uint32) string {
	switch typ {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	}
	return fmt.Sprintf("type%#o", typ)
}

func flagString(fl int) string {
	var parts []string
	switch fl & unix.O_ACCMODE {
	case unix.O_RDONLY:
		parts = append(parts, "RDONLY")
	case unix.O_WRONLY:
		parts = append(parts, "WRONLY")
	default:
		parts = append(parts, "RDWR")
	}
	for _, f := range []struct {
		bit  int
		name string
	}{{unix.O_CREAT, "CREAT"}, {unix.O_EXCL, "EXCL"}, {unix.O_TRUNC, "TRUNC"}, {unix.O_APPEND, "APPEND"}} {
		if fl&f.bit != 0 {
			parts = append(parts, f.name)
		}
	}
	return strings.Join(parts, "|")
}

// --- the operations ---

type diffOp = difftest.Op[*diffRun]

var diffOps = []diffOp{
	{Name: "create", Weight: 12, Fn: (*diffRun).opCreate},
	{Name: "mkdir", Weight: 8, Fn: (*diffRun).opMkdir},
	{Name: "symlink", Weight: 3, Fn: (*diffRun).opSymlink},
	{Name: "write", Weight: 12, Fn: (*diffRun).opWrite},
	{Name: "read", Weight: 8, Fn: (*diffRun).opRead},
	{Name: "truncate", Weight: 4, Fn: (*diffRun).opTruncate},
	{Name: "rename", Weight: 9, Fn: (*diffRun).opRename},
	{Name: "link", Weight: 4, Fn: (*diffRun).opLink},
	{Name: "unlink", Weight: 4, Fn: (*diffRun).opUnlink},
	{Name: "rmdir", Weight: 3, Fn: (*diffRun).opRmdir},
	{Name: "readlink", Weight: 2, Fn: (*diffRun).opReadlink},
	{Name: "chmod", Weight: 3, Fn: (*diffRun).opChmod},
	{Name: "chown", Weight: 2, Fn: (*diffRun).opChown},
	{Name: "utimens", Weight: 3, Fn: (*diffRun).opUtimens},
	{Name: "fsync", Weight: 1, Fn: (*diffRun).opFsyncPath},
	{Name: "lstat", Weight: 3, Fn: (*diffRun).opLstat},
	{Name: "readdir", Weight: 2, Fn: (*diffRun).opReaddir},
	{Name: "open", Weight: 4, Fn: (*diffRun).opOpen},
	{Name: "close", Weight: 3, Fn: (*diffRun).opClose},
	{Name: "hwrite", Weight: 8, Fn: (*diffRun).opHWrite},
	{Name: "hread", Weight: 4, Fn: (*diffRun).opHRead},
	{Name: "htruncate", Weight: 2, Fn: (*diffRun).opHTruncate},
	{Name: "hpunch", Weight: 2, Fn: (*diffRun).opHPunch},
	{Name: "hfsync", Weight: 1, Fn: (*diffRun).opHFsync},
	{Name: "hfstat", Weight: 2, Fn: (*diffRun).opHFstat},
	{Name: "hpathgone", Weight: 2, Fn: (*diffRun).opHPathGone},
	{Name: "hcopy", Weight: 3, Fn: (*diffRun).opHCopy},
	{Name: "xattr", Weight: 4, Fn: (*diffRun).opXattr},
	{Name: "hmmap", Weight: 3, Fn: (*diffRun).opHMmap},
}

var shrinkOps = []diffOp{
	{Name: "unlink", Weight: 5, Fn: (*diffRun).opUnlink},
	{Name: "rmdir", Weight: 3, Fn: (*diffRun).opRmdir},
	{Name: "rmtree", Weight: 2, Fn: (*diffRun).opRmtree},
}

func (r *diffRun) step() error {
	ops := diffOps
	r.sizeSum += len(r.list())
	if len(r.list()) > bigTree && r.chance(0.5) {
		ops = shrinkOps
	}
	o := difftest.Pick(r.rng, ops)
	err := o.Fn(r)
	if r.stats == nil {
		r.stats = difftest.Counts{}
	}
	r.stats.Add(o.Name, strings.Contains(r.outcome, "-> ok"))
	return err
}

// summary tells how often each kind of operation ran and succeeded.
func (r *diffRun) summary() string {
	return fmt.Sprintf("operations (succeeded/run):%s; tree size: %.1f entries on average, %d at the end",
		r.stats, float64(r.sizeSum)/float64(max(1, len(r.trace))), len(r.list()))
}

func (r *diffRun) opCreate() error {
	rel := r.mixPath()
	mode := r.randMode(false)
	r.op("create %s %#o", rel, mode)
	r.forget(rel)
	defer r.changed()
	_, err := r.pair(func(s diffSide) opResult {
		fd, err := unix.Open(s.p(rel), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, mode)
		if err != nil {
			return res(err, "")
		}
		return res(nil, closeInfo(fd))
	})
	r.changed()
	r.forget(rel)
	return err
}

func (r *diffRun) opMkdir() error {
	rel := r.mixPath()
	mode := r.randMode(true)
	r.op("mkdir %s %#o", rel, mode)
	r.forget(rel)
	_, err := r.pair(func(s diffSide) opResult { return res(unix.Mkdir(s.p(rel), mode), "") })
	r.changed()
	r.forget(rel)
	return err
}

func (r *diffRun) opSymlink() error {
	rel := r.mixPath()
	target := r.randTarget()
	short := target
	if len(short) > 40 {
		short = fmt.Sprintf("%s...(%d bytes)", short[:20], len(target))
	}
	r.op("symlink %q %s", short, rel)
	r.forget(rel)
	_, err := r.pair(func(s diffSide) opResult { return res(unix.Symlink(target, s.p(rel)), "") })
	r.changed()
	r.forget(rel)
	return err
}

func (r *diffRun) opWrite() error {
	rel := r.pathOf("fl", 0.85)
	off := r.randOffset(r.refSize(rel))
	data := r.randData(r.randWriteSize())
	flags := unix.O_WRONLY
	if r.chance(0.1) {
		flags = unix.O_RDWR
	}
	if r.chance(0.05) {
		flags |= unix.O_APPEND
	}
	if r.chance(0.03) {
		flags |= unix.O_TRUNC
	}
	if r.chance(0.05) {
		flags |= unix.O_CREAT
	}
	r.op("write %s %s off=%d len=%d", rel, flagString(flags), off, len(data))
	r.forget(rel)
	_, err := r.pair(func(s diffSide) opResult {
		fd, err := unix.Open(s.p(rel), flags|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return res(err, "open")
		}
		n, err := pwriteFull(fd, data, off)
		ci := closeInfo(fd)
		if err != nil {
			return res(err, "pwrite"+ci)
		}
		return res(nil, fmt.Sprintf("n=%d%s", n, ci))
	})
	if flags&unix.O_CREAT != 0 {
		r.changed()
	}
	r.forget(rel)
	return err
}

func (r *diffRun) readArgs(size int64) (int64, int) {
	var off int64
	switch x := r.rng.Float64(); {
	case x < 0.3:
		off = 0
	case x < 0.9:
		off = r.rng.Int64N(size + 1)
	default:
		off = size + r.rng.Int64N(8192)
	}
	var n int
	switch x := r.rng.Float64(); {
	case x < 0.6:
		n = r.rng.IntN(8 << 10)
	case x < 0.9:
		n = r.rng.IntN(256 << 10)
	default:
		n = int(size - off + 1)
		if n < 0 {
			n = 1
		}
	}
	return off, n
}

func (r *diffRun) opRead() error {
	rel := r.pathOf("fl", 0.85)
	off, n := r.readArgs(r.refSize(rel))
	r.op("read %s off=%d len=%d", rel, off, n)
	_, err := r.pair(func(s diffSide) opResult {
		fd, err := unix.Open(s.p(rel), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return res(err, "open")
		}
		buf := make([]byte, n)
		m, err := preadFull(fd, buf, off)
		ci := closeInfo(fd)
		if err != nil {
			return res(err, "pread"+ci)
		}
		return opResult{info: ci, data: buf[:m]}
	})
	return err
}

func (r *diffRun) truncSize(size int64) int64 {
	switch x := r.rng.Float64(); {
	case x < 0.3:
		return r.rng.Int64N(size + 1)
	case x < 0.5:
		return size + r.rng.Int64N(64<<10)
	case x < 0.65:
		return 0
	case x < 0.8:
		return r.rng.Int64N(8 << 20)
	default:
		return r.randOffset(size)
	}
}

func (r *diffRun) opTruncate() error {
	rel := r.pathOf("fl", 0.85)
	size := r.truncSize(r.refSize(rel))
	r.op("truncate %s %d", rel, size)
	r.forget(rel)
	_, err := r.pair(func(s diffSide) opResult { return res(unix.Truncate(s.p(rel), size), "") })
	r.forget(rel)
	return err
}

func (r *diffRun) opRename() error {
	src := r.pathOf("fdl", 0.85)
	var dst string
	switch x := r.rng.Float64(); {
	case x < 0.40:
		dst = r.pathOf("fdl", 1)
	case x < 0.85:
		dst = r.newPath()
	case x < 0.93:
		dst = strings.TrimSuffix(src, "/") + "/" + namePool[r.rng.IntN(len(namePool))] // into its own subtree
	default:
		dst = r.mixPath()
	}
	var flags uint
	name := "rename"
	switch x := r.rng.Float64(); {
	case x < 0.15:
		flags, name = unix.RENAME_NOREPLACE, "rename(NOREPLACE)"
	case x < 0.30:
		flags, name = unix.RENAME_EXCHANGE, "rename(EXCHANGE)"
	}
	r.op("%s %s %s", name, src, dst)
	r.forget(src, dst)
	_, err := r.pair(func(s diffSide) opResult {
		if flags == 0 {
			return res(unix.Rename(s.p(src), s.p(dst)), "")
		}
		return res(unix.Renameat2(unix.AT_FDCWD, s.p(src), unix.AT_FDCWD, s.p(dst), flags), "")
	})
	r.changed()
	r.forget(src, dst)
	return err
}

func (r *diffRun) opLink() error {
	src := r.pathOf("fl", 0.8)
	dst := r.newPath()
	if r.chance(0.3) {
		dst = r.mixPath()
	}
	r.op("link %s %s", src, dst)
	r.forget(src, dst)
	_, err := r.pair(func(s diffSide) opResult {
		return res(unix.Linkat(unix.AT_FDCWD, s.p(src), unix.AT_FDCWD, s.p(dst), 0), "")
	})
	r.changed()
	r.forget(src, dst)
	return err
}

func (r *diffRun) opUnlink() error {
	rel := r.pathOf("fl", 0.85)
	r.op("unlink %s", rel)
	r.forget(rel)
	_, err := r.pair(func(s diffSide) opResult { return res(unix.Unlink(s.p(rel)), "") })
	r.changed()
	r.forget(rel)
	return err
}

func (r *diffRun) opRmdir() error {
	rel := r.pathOf("d", 0.8)
	r.op("rmdir %s", rel)
	r.forget(rel)
	_, err := r.pair(func(s diffSide) opResult { return res(unix.Rmdir(s.p(rel)), "") })
	r.changed()
	r.forget(rel)
	return err
}

func (r *diffRun) opRmtree() error {
	rel, ok := r.existing("d")
	if !ok {
		return r.opUnlink()
	}
	r.op("rm -rf %s", rel)
	r.forget(rel)
	_, err := r.pair(func(s diffSide) opResult { return res(os.RemoveAll(s.p(rel)), "") })
	r.changed()
	return err
}

func (r *diffRun) opReadlink() error {
	rel := r.pathOf("l", 0.8)
	r.op("readlink %s", rel)
	_, err := r.pair(func(s diffSide) opResult {
		buf := make([]byte, 8192)
		n, err := unix.Readlink(s.p(rel), buf)
		if err != nil {
			return res(err, "")
		}
		return opResult{data: buf[:n]}
	})
	return err
}

func (r *diffRun) opChmod() error {
	rel := r.pathOf("fdl", 0.9)
	var st unix.Stat_t
	isDir := unix.Stat(r.sides[1].p(rel), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
	// Set-group-ID on directories is left out: it makes new entries
	// inherit the group (BSD semantics), which is tested nowhere else.
	mode := r.randMode(isDir)
	r.op("chmod %s %#o", rel, mode)
	_, err := r.pair(func(s diffSide) opResult { return res(unix.Fchmodat(unix.AT_FDCWD, s.p(rel), mode, 0), "") })
	return err
}

var chownIDs = []int{-1, 0, 1, 1000, 4242, 65534}

func (r *diffRun) opChown() error {
	rel := r.pathOf("fdl", 0.9)
	uid := chownIDs[r.rng.IntN(len(chownIDs))]
	gid := chownIDs[r.rng.IntN(len(chownIDs))]
	r.op("lchown %s %d %d", rel, uid, gid)
	_, err := r.pair(func(s diffSide) opResult { return res(unix.Lchown(s.p(rel), uid, gid), "") })
	return err
}

func (r *diffRun) opUtimens() error {
	rel := r.pathOf("fdl", 0.9)
	ts := []unix.Timespec{r.randTime(), r.randTime()}
	flags, how := 0, "utimensat"
	if r.chance(0.5) {
		flags, how = unix.AT_SYMLINK_NOFOLLOW, "utimensat(NOFOLLOW)"
	}
	r.op("%s %s atime=%d.%09d mtime=%d.%09d", how, rel, ts[0].Sec, ts[0].Nsec, ts[1].Sec, ts[1].Nsec)
	res, err := r.pair(func(s diffSide) opResult { return res(unix.UtimesNanoAt(unix.AT_FDCWD, s.p(rel), ts, flags), "") })
	if err == nil && res.errno == 0 {
		var st unix.Stat_t
		var serr error
		if flags == 0 {
			serr = unix.Stat(r.sides[1].p(rel), &st)
		} else {
			serr = unix.Lstat(r.sides[1].p(rel), &st)
		}
		if serr == nil {
			r.mtimes[st.Ino] = ts[1]
		}
	}
	return err
}

func (r *diffRun) opFsyncPath() error {
	rel := r.pathOf("fdl", 0.9)
	r.op("fsync %s", rel)
	_, err := r.pair(func(s diffSide) opResult {
		fd, err := unix.Open(s.p(rel), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return res(err, "open")
		}
		err = unix.Fsync(fd)
		return res(err, "fsync"+closeInfo(fd))
	})
	return err
}

func (r *diffRun) opLstat() error {
	rel := r.pathOf("fdl", 0.9)
	r.op("lstat %s", rel)
	_, err := r.pair(func(s diffSide) opResult {
		var st unix.Stat_t
		if err := unix.Lstat(s.p(rel), &st); err != nil {
			return res(err, "")
		}
		return opResult{info: statInfo(&st, r.dirNlink)}
	})
	return err
}

// xattrNames are the extended attributes the test uses: few, so that
// sets, replaces and removes meet, and small values, so that every file
// stays within what ext4 keeps in one block (a larger total is ENOSPC
// there).
var xattrNames = []string{"user.a", "user.b", "user.a-much-longer-attribute-name", "trusted.t"}

// opXattr sets (with XATTR_CREATE, XATTR_REPLACE or neither), reads (into
// a buffer large enough, too small, or none to ask the size), lists or
// removes an extended attribute. user.* attributes of symlinks and special
// files are refused by the kernel on both sides (EPERM).
func (r *diffRun) opXattr() error {
	rel := r.pathOf("fdl", 0.9)
	name := xattrNames[r.rng.IntN(len(xattrNames))]
	var err error
	switch x := r.rng.Float64(); {
	case x < 0.45:
		value := make([]byte, r.rng.IntN(4)*r.rng.IntN(80))
		for i := range value {
			value[i] = byte(r.rng.IntN(256))
		}
		flags := 0
		switch y := r.rng.Float64(); {
		case y < 0.2:
			flags = unix.XATTR_CREATE
		case y < 0.4:
			flags = unix.XATTR_REPLACE
		}
		r.op("setxattr %s %s (%d bytes, flags %d)", rel, name, len(value), flags)
		_, err = r.pair(func(s diffSide) opResult { return res(unix.Lsetxattr(s.p(rel), name, value, flags), "") })
	case x < 0.70:
		size := []int{0, 3, 1024}[r.rng.IntN(3)]
		r.op("getxattr %s %s (buffer %d)", rel, name, size)
		_, err = r.pair(func(s diffSide) opResult {
			var buf []byte
			if size > 0 {
				buf = make([]byte, size)
			}
			n, err := unix.Lgetxattr(s.p(rel), name, buf)
			if err != nil {
				return res(err, "")
			}
			if size == 0 {
				return opResult{info: fmt.Sprintf("size %d", n)}
			}
			return opResult{data: buf[:n]}
		})
	case x < 0.85:
		r.op("listxattr %s", rel)
		_, err = r.pair(func(s diffSide) opResult {
			names, err := listXattrs(s.p(rel))
			return res(err, strings.Join(names, ","))
		})
	default:
		r.op("removexattr %s %s", rel, name)
		_, err = r.pair(func(s diffSide) opResult { return res(unix.Lremovexattr(s.p(rel), name), "") })
	}
	return err
}

// listXattrs returns the sorted names of path's extended attributes (of a
// symlink itself).
func listXattrs(path string) ([]string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name != "" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// xattrSummary is every extended attribute of path with its value, for
// comparing trees.
func xattrSummary(path string) (string, error) {
	names, err := listXattrs(path)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, name := range names {
		buf := make([]byte, 65536)
		n, err := unix.Lgetxattr(path, name, buf)
		if err != nil {
			return "", fmt.Errorf("getxattr %s: %w", name, err)
		}
		fmt.Fprintf(&b, "%s=%x ", name, buf[:n])
	}
	return b.String(), nil
}

func (r *diffRun) opReaddir() error {
	rel := r.pathOf("d", 0.9)
	r.op("readdir %s", rel)
	_, err := r.pair(func(s diffSide) opResult {
		des, err := os.ReadDir(s.p(rel))
		if err != nil {
			return res(err, "")
		}
		var parts []string
		for _, de := range des {
			parts = append(parts, de.Name()+":"+de.Type().String())
		}
		return opResult{info: "[" + strings.Join(parts, " ") + "]"}
	})
	return err
}

// --- open handles ---

func (r *diffRun) pickHandle() *diffHandle {
	if len(r.handles) == 0 {
		return nil
	}
	return r.handles[r.rng.IntN(len(r.handles))]
}

func (r *diffRun) opOpen() error {
	if len(r.handles) >= maxHandles {
		return r.opClose()
	}
	rel := r.pathOf("fdl", 0.8)
	flags := []int{unix.O_RDONLY, unix.O_WRONLY, unix.O_RDWR, unix.O_RDWR}[r.rng.IntN(4)]
	if flags != unix.O_RDONLY {
		if r.chance(0.1) {
			flags |= unix.O_APPEND
		}
		if r.chance(0.1) {
			flags |= unix.O_TRUNC
		}
	}
	if r.chance(0.2) {
		flags |= unix.O_CREAT
		if r.chance(0.3) {
			flags |= unix.O_EXCL
		}
	}
	mode := r.randMode(false)
	id := r.nextID
	r.op("open h%d %s %s %#o", id, rel, flagString(flags), mode)
	r.forget(rel)
	var fds [2]int
	res, err := r.pair(func(s diffSide) opResult {
		fd, err := unix.Open(s.p(rel), flags|unix.O_CLOEXEC, mode)
		if err == nil {
			fds[s.idx] = fd
		}
		return res(err, "")
	})
	if flags&unix.O_CREAT != 0 {
		r.changed()
	}
	r.forget(rel)
	if err != nil || res.errno != 0 {
		for _, fd := range fds {
			if fd > 0 {
				unix.Close(fd)
			}
		}
		return err
	}
	h := &diffHandle{id: id, fd: fds, path: rel, flags: flags}
	var st unix.Stat_t
	if unix.Fstat(fds[1], &st) == nil {
		h.refIno = st.Ino
	}
	r.nextID++
	r.handles = append(r.handles, h)
	return nil
}

func (r *diffRun) closeHandle(h *diffHandle) error {
	r.op("close h%d", h.id)
	for i, x := range r.handles {
		if x == h {
			r.handles = append(r.handles[:i], r.handles[i+1:]...)
			break
		}
	}
	_, err := r.pair(func(s diffSide) opResult { return res(unix.Close(h.fd[s.idx]), "") })
	return err
}

func (r *diffRun) opClose() error {
	h := r.pickHandle()
	if h == nil {
		return r.opOpen()
	}
	return r.closeHandle(h)
}

func (r *diffRun) handleSize(h *diffHandle) int64 {
	var st unix.Stat_t
	if unix.Fstat(h.fd[1], &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0
	}
	return st.Size
}

func (r *diffRun) opHWrite() error {
	h := r.pickHandle()
	if h == nil {
		return r.opOpen()
	}
	off := r.randOffset(r.handleSize(h))
	data := r.randData(r.randWriteSize())
	delete(r.mtimes, h.refIno)
	switch x := r.rng.Float64(); {
	case x < 0.7:
		r.op("pwrite h%d off=%d len=%d", h.id, off, len(data))
		_, err := r.pair(func(s diffSide) opResult {
			n, err := pwriteFull(h.fd[s.idx], data, off)
			return res(err, fmt.Sprintf("n=%d", n))
		})
		return err
	case x < 0.85:
		r.op("write h%d len=%d (at the current offset)", h.id, len(data))
	default:
		r.op("lseek h%d %d + write len=%d", h.id, off, len(data))
		if _, err := r.pair(func(s diffSide) opResult {
			pos, err := unix.Seek(h.fd[s.idx], off, io.SeekStart)
			return res(err, fmt.Sprintf("pos=%d", pos))
		}); err != nil {
			return err
		}
	}
	_, err := r.pair(func(s diffSide) opResult {
		n, err := unix.Write(h.fd[s.idx], data)
		pos, _ := unix.Seek(h.fd[s.idx], 0, io.SeekCurrent)
		return res(err, fmt.Sprintf("n=%d pos=%d", n, pos))
	})
	return err
}

// opHMmap maps part of an open file (MAP_SHARED, from a page boundary) and
// reads it, or writes into it and perhaps msyncs, as databases and linkers
// do; the descriptor's access mode decides whether the kernel allows it.
// The mapping never reaches past the end of the file (touching a page
// there is SIGBUS), and it is unmapped before the operation ends.
func (r *diffRun) opHMmap() error {
	h := r.pickHandle()
	if h == nil {
		return r.opOpen()
	}
	size := r.handleSize(h)
	if size == 0 {
		return r.opHWrite()
	}
	const page = 4096
	off := r.rng.Int64N(size) / page * page
	length := min(size-off, int64(1+r.rng.IntN(256<<10)))
	write, sync := r.chance(0.6), r.chance(0.5)
	prot := unix.PROT_READ
	var pos int64
	var data []byte
	if write {
		prot |= unix.PROT_WRITE
		pos = r.rng.Int64N(length)
		data = r.randData(int(min(length-pos, int64(r.randWriteSize()))))
		delete(r.mtimes, h.refIno)
		r.op("mmap h%d off=%d len=%d, write %d bytes at %d, msync %v", h.id, off, length, len(data), pos, sync)
	} else {
		r.op("mmap h%d off=%d len=%d, read", h.id, off, length)
	}
	_, err := r.pair(func(s diffSide) opResult {
		m, err := unix.Mmap(h.fd[s.idx], off, int(length), prot, unix.MAP_SHARED)
		if err != nil {
			return res(err, "mmap")
		}
		defer unix.Munmap(m)
		if !write {
			return opResult{data: slices.Clone(m)}
		}
		copy(m[pos:], data)
		if sync {
			return res(unix.Msync(m, unix.MS_SYNC), "msync")
		}
		return opResult{}
	})
	return err
}

// opHCopy copies a range between two open files (perhaps the same) with
// copy_file_range(2), asking again after a short copy as cp does. Offset
// 0 on both sides, which is chunk-aligned, lets objfs share blocks.
func (r *diffRun) opHCopy() error {
	from, to := r.pickHandle(), r.pickHandle()
	if from == nil {
		return r.opOpen()
	}
	offIn, offOut := r.randOffset(r.handleSize(from)), r.randOffset(r.handleSize(to))
	if r.rng.IntN(3) == 0 {
		offIn, offOut = 0, 0
	}
	n := r.randWriteSize()
	size := r.handleSize(from)
	if r.rng.IntN(4) == 0 && size <= 4<<20 {
		// To the end of the source; not of big ones, or files would
		// keep doubling and every later comparison take longer.
		n = 1 << 30
	}
	// As cp, no further than the source's end when the copy begins: a
	// copy to just past a file's end within that file would otherwise
	// chase its own tail, each call finding more to copy.
	if offIn < size {
		n = int(min(int64(n), size-offIn))
	}
	delete(r.mtimes, to.refIno)
	r.op("copy_file_range h%d off=%d -> h%d off=%d len=%d", from.id, offIn, to.id, offOut, n)
	_, err := r.pair(func(s diffSide) opResult {
		in, out := offIn, offOut
		total := 0
		for total < n {
			k, err := unix.CopyFileRange(from.fd[s.idx], &in, to.fd[s.idx], &out, n-total, 0)
			if err != nil {
				return res(err, fmt.Sprintf("copied %d", total))
			}
			if k == 0 {
				break
			}
			total += k
		}
		return res(nil, fmt.Sprintf("copied %d", total))
	})
	return err
}

func (r *diffRun) opHRead() error {
	h := r.pickHandle()
	if h == nil {
		return r.opOpen()
	}
	off, n := r.readArgs(r.handleSize(h))
	r.op("pread h%d off=%d len=%d", h.id, off, n)
	_, err := r.pair(func(s diffSide) opResult {
		buf := make([]byte, n)
		m, err := preadFull(h.fd[s.idx], buf, off)
		if err != nil {
			return res(err, "")
		}
		return opResult{data: buf[:m]}
	})
	return err
}

func (r *diffRun) opHTruncate() error {
	h := r.pickHandle()
	if h == nil {
		return r.opOpen()
	}
	size := r.truncSize(r.handleSize(h))
	r.op("ftruncate h%d %d", h.id, size)
	delete(r.mtimes, h.refIno)
	_, err := r.pair(func(s diffSide) opResult { return res(unix.Ftruncate(h.fd[s.idx], size), "") })
	return err
}

// opHPunch punches a hole in (or zeroes a range of) an open file: the
// reference directory's file system must support both (ext4 does).
func (r *diffRun) opHPunch() error {
	h := r.pickHandle()
	if h == nil {
		return r.opOpen()
	}
	off := r.randOffset(r.handleSize(h))
	n := 1 + r.rng.Int64N(256<<10)
	if r.chance(0.1) {
		n = 1 + r.rng.Int64N(8<<20)
	}
	mode, name := uint32(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE), "punch"
	switch x := r.rng.Float64(); {
	case x < 0.2:
		mode, name = unix.FALLOC_FL_ZERO_RANGE, "zero range"
	case x < 0.35:
		mode, name = unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, "zero range (keep size)"
	case x < 0.45:
		mode, name = 0, "allocate"
	case x < 0.5:
		mode, name = unix.FALLOC_FL_KEEP_SIZE, "allocate (keep size)"
	}
	r.op("fallocate %s h%d %d+%d", name, h.id, off, n)
	delete(r.mtimes, h.refIno)
	_, err := r.pair(func(s diffSide) opResult { return res(unix.Fallocate(h.fd[s.idx], mode, off, n), "") })
	return err
}

func (r *diffRun) opHFsync() error {
	h := r.pickHandle()
	if h == nil {
		return r.opOpen()
	}
	if r.chance(0.3) {
		r.op("fdatasync h%d", h.id)
		_, err := r.pair(func(s diffSide) opResult { return res(unix.Fdatasync(h.fd[s.idx]), "") })
		return err
	}
	r.op("fsync h%d", h.id)
	_, err := r.pair(func(s diffSide) opResult { return res(unix.Fsync(h.fd[s.idx]), "") })
	return err
}

func (r *diffRun) opHFstat() error {
	h := r.pickHandle()
	if h == nil {
		return r.opOpen()
	}
	r.op("fstat h%d", h.id)
	_, err := r.pair(func(s diffSide) opResult {
		var st unix.Stat_t
		if err := unix.Fstat(h.fd[s.idx], &st); err != nil {
			return res(err, "")
		}
		return opResult{info: statInfo(&st, r.dirNlink)}
	})
	return err
}

// opHPathGone unlinks or renames away the path an open handle was opened
// with, so later handle operations act on an unlinked or moved file.
func (r *diffRun) opHPathGone() error {
	h := r.pickHandle()
	if h == nil {
		return r.opOpen()
	}
	if r.chance(0.5) {
		r.op("unlink %s (path of h%d)", h.path, h.id)
		r.forget(h.path)
		_, err := r.pair(func(s diffSide) opResult { return res(unix.Unlink(s.p(h.path)), "") })
		r.changed()
		return err
	}
	dst := r.newPath()
	r.op("rename %s %s (path of h%d)", h.path, dst, h.id)
	r.forget(h.path, dst)
	_, err := r.pair(func(s diffSide) opResult { return res(unix.Rename(s.p(h.path), s.p(dst)), "") })
	r.changed()
	r.forget(h.path, dst)
	return err
}

// --- final comparison ---

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// compareTrees compares the whole objfs tree with the reference tree and
// returns the differences (at most a few dozen).
func (r *diffRun) compareTrees() []string {
	var diffs []string
	add := func(format string, args ...any) {
		if len(diffs) < 40 {
			diffs = append(diffs, fmt.Sprintf(format, args...))
		}
	}
	// Hard-link structure: each inode's first path, on both sides.
	firstPath := [2]map[uint64]string{{}, {}}
	var walk func(rel string)
	walk = func(rel string) {
		var names [2][]string
		for i, s := range r.sides {
			n, err := readNames(s.top + rel)
			if err != nil {
				add("%s: readdir on %s: %v", rel, s.name, err)
				return
			}
			if rel == "" && i == 0 {
				kept := n[:0]
				for _, name := range n {
					if !r.ignore[name] {
						kept = append(kept, name)
					}
				}
				n = kept
			}
			names[i] = n
		}
		inRef := map[string]bool{}
		for _, n := range names[1] {
			inRef[n] = true
		}
		inObjfs := map[string]bool{}
		for _, n := range names[0] {
			inObjfs[n] = true
			if !inRef[n] {
				add("%s/%s: exists only on objfs", rel, n)
			}
		}
		for _, n := range names[1] {
			if !inObjfs[n] {
				add("%s/%s: missing on objfs", rel, n)
				continue
			}
			if child := r.compareEntry(rel+"/"+n, firstPath, add); child {
				walk(rel + "/" + n)
			}
		}
	}
	walk("")
	return diffs
}

// compareEntry compares one path (relative to the tops, with a leading
// slash) and reports whether both sides are directories to descend into.
func (r *diffRun) compareEntry(rel string, firstPath [2]map[uint64]string, add func(string, ...any)) bool {
	var st [2]unix.Stat_t
	for i, s := range r.sides {
		if err := unix.Lstat(s.top+rel, &st[i]); err != nil {
			add("%s: lstat on %s: %v", rel, s.name, err)
			return false
		}
	}
	a, b := &st[0], &st[1]
	if x, y := statInfo(a, r.dirNlink), statInfo(b, r.dirNlink); x != y {
		add("%s: objfs %s; reference %s", rel, x, y)
	}
	if a.Mode&unix.S_IFMT != b.Mode&unix.S_IFMT {
		return false
	}
	var xa [2]string
	for i, s := range r.sides {
		x, err := xattrSummary(s.top + rel)
		if err != nil {
			add("%s: extended attributes on %s: %v", rel, s.name, err)
		}
		xa[i] = x
	}
	if xa[0] != xa[1] {
		add("%s: extended attributes: objfs %q, reference %q", rel, xa[0], xa[1])
	}
	// Compare mtimes only where utimensat set them and nothing changed them
	// since (if the reference disagrees too, our tracking missed a change).
	if want, ok := r.mtimes[b.Ino]; ok && b.Mtim == want {
		if a.Mtim != want {
			add("%s: mtime set by utimensat to %d.%09d; objfs has %d.%09d", rel, want.Sec, want.Nsec, a.Mtim.Sec, a.Mtim.Nsec)
		}
	}
	switch b.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return true
	case unix.S_IFLNK:
		var t [2]string
		for i, s := range r.sides {
			buf := make([]byte, 8192)
			n, err := unix.Readlink(s.top+rel, buf)
			if err != nil {
				add("%s: readlink on %s: %v", rel, s.name, err)
				return false
			}
			t[i] = string(buf[:n])
		}
		if t[0] != t[1] {
			add("%s: symlink target: objfs %q, reference %q", rel, t[0], t[1])
		}
	case unix.S_IFREG:
		if msg := compareContent(r.sides[0].top+rel, r.sides[1].top+rel); msg != "" {
			add("%s: content: %s", rel, msg)
		}
	}
	// Hard links: the same set of names must share an inode on both sides.
	var fp [2]string
	for i := range 2 {
		ino := st[i].Ino
		if p, ok := firstPath[i][ino]; ok {
			fp[i] = p
		} else {
			firstPath[i][ino] = rel
			fp[i] = rel
		}
	}
	if fp[0] != fp[1] {
		add("%s: hard-link structure differs: on objfs it is the same inode as %s, on the reference as %s", rel, fp[0], fp[1])
	}
	return false
}

func compareContent(pa, pb string) string {
	fa, err := os.Open(pa)
	if err != nil {
		return fmt.Sprintf("open on objfs: %v", err)
	}
	defer fa.Close()
	fb, err := os.Open(pb)
	if err != nil {
		return fmt.Sprintf("open on reference: %v", err)
	}
	defer fb.Close()
	ba := make([]byte, 1<<20)
	bb := make([]byte, 1<<20)
	var off int64
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if ea != nil && ea != io.EOF && ea != io.ErrUnexpectedEOF {
			return fmt.Sprintf("read on objfs at %d: %v", off, ea)
		}
		if eb != nil && eb != io.EOF && eb != io.ErrUnexpectedEOF {
			return fmt.Sprintf("read on reference at %d: %v", off, eb)
		}
		if !bytes.Equal(ba[:na], bb[:nb]) {
			return fmt.Sprintf("in the 1 MiB block at offset %d: %s", off, describeDiff(ba[:na], bb[:nb]))
		}
		if na < len(ba) {
			return ""
		}
		off += int64(na)
	}
}
