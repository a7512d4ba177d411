// Package bench is the workload and report of `objfs bench`: a fixed set of
// file system operations run on any directory, so that objfs and the local
// disk beneath it can be compared row by row.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
	"unsafe"
)

const (
	mib       = 1 << 20
	smallSize = 4096
	ioSize    = 4096 // random I/O request size, also the O_DIRECT alignment
)

// Row keys, in table order. They are stable: --json consumers depend on them.
const (
	SeqWrite   = "seq_write"
	SeqRead    = "seq_read"
	Create     = "create"
	Stat       = "stat"
	List       = "ls_l"
	SmallRead  = "small_read"
	Delete     = "delete"
	Rename     = "rename"
	RandRead   = "rand_read"
	RandWrite  = "rand_write"
	RandSync   = "rand_write_fsync"
	unitMiBps  = "MiB/s"
	unitOps    = "ops/s"
	unitIOPS   = "IOPS"
	unitEntrps = "entries/s"
)

// Sizes is the workload at some scale.
type Sizes struct {
	SeqBytes   int64         `json:"seq_bytes"`      // sequential file, written and read in 1 MiB requests
	Files      int           `json:"files"`          // small files created, stat'ed, listed, read, deleted
	Renames    int           `json:"renames"`        // renames across directories
	RandBytes  int64         `json:"rand_bytes"`     // file for 4 KiB random I/O
	RandPeriod time.Duration `json:"rand_period_ns"` // duration of each random I/O phase
}

// SizesFor scales the full workload (1 GiB, 10,000 files, 1,000 renames,
// 256 MiB, 10 s) by scale, keeping at least one of everything so that tiny
// scales still exercise every row.
func SizesFor(scale float64) Sizes {
	mibs := func(n float64) int64 { return max(1, int64(math.Round(n*scale))) * mib }
	count := func(n float64) int { return max(1, int(math.Round(n*scale))) }
	return Sizes{
		SeqBytes:   mibs(1024),
		Files:      count(10000),
		Renames:    count(1000),
		RandBytes:  mibs(256),
		RandPeriod: max(20*time.Millisecond, time.Duration(float64(10*time.Second)*scale)),
	}
}

// Config says how to run the workload.
type Config struct {
	Sizes Sizes
	Seed  uint64
	// DropCaches runs between phases that read back what an earlier phase
	// wrote, so reads are not answered from memory. Nil: caches are kept.
	DropCaches func(ctx context.Context) error
	Log        *slog.Logger
	// Rounds repeats the workload; rows report the median (0 or 1: once).
	Rounds int
}

// Result is one row of one run. Value is a rate, so higher is better for
// every row and objfs/raw ratios read the same way everywhere.
type Result struct {
	Key     string  `json:"key"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	Ops     int64   `json:"ops"`
	Seconds float64 `json:"seconds"`
	Note    string  `json:"note,omitempty"`
	// Values are the values of every round, when there were several;
	// Value is their median, Ops and Seconds their totals.
	Values []float64 `json:"values,omitempty"`
}

// Run runs the whole workload in a fresh directory inside dir and removes
// it afterwards, also on failure.
func Run(ctx context.Context, dir string, cfg Config) ([]Result, error) {
	res, err := RunAll(ctx, []string{dir}, cfg)
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// RunAll runs the workload on every directory of dirs (in a fresh
// subdirectory of each, removed afterwards, also on failure) and returns
// one list of rows per directory. It goes group by group (sequential I/O,
// small files, renames, random I/O), running each group on every
// directory in turn before the next: rows of different directories are
// then measured seconds apart instead of a whole run apart, which keeps
// their ratios honest on a shared machine whose speed drifts. With
// cfg.Rounds > 1 the whole sequence is repeated, each round starting with
// the next directory, and each row reports the median of its rounds
// (Values lists them all).
func RunAll(ctx context.Context, dirs []string, cfg Config) (res [][]Result, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	rounds := max(cfg.Rounds, 1)
	runners := make([]*runner, 0, len(dirs))
	defer func() {
		for _, r := range runners {
			if rerr := os.RemoveAll(r.work); rerr != nil && err == nil {
				err = fmt.Errorf("clean up %s: %w", r.work, rerr)
			}
		}
	}()
	pool := newPool(cfg.Seed) // read only: the directories share it
	for _, d := range dirs {
		work, err := os.MkdirTemp(d, ".objfs-bench-")
		if err != nil {
			return nil, fmt.Errorf("create work directory: %w", err)
		}
		rcfg := cfg
		rcfg.Log = cfg.Log.With("dir", d)
		runners = append(runners, &runner{ctx: ctx, cfg: rcfg, work: work, pool: pool})
	}
	groups := []func(*runner) ([]Result, error){(*runner).sequential, (*runner).smallFiles, (*runner).renames, (*runner).random}
	all := make([][][]Result, len(dirs)) // directory, round, row
	for round := range rounds {
		for i := range runners {
			all[i] = append(all[i], nil)
		}
		for _, group := range groups {
			for k := range runners {
				// Each round starts with the next directory: what the
				// one before leaves behind (freed memory the VM's host
				// reclaims, dirty pages) then favours no directory in
				// the medians.
				i := (k + round) % len(runners)
				r := runners[i]
				// Start from a synced disk and empty caches: the group
				// before (on this directory or another on the same
				// disk) leaves writeback and freed blocks behind, which
				// would otherwise land in this group's first rows
				// (measured: objfs's seq write 397 MiB/s right after the
				// raw and loopback runs, 582 alone).
				if err := r.drop(); err != nil {
					return nil, err
				}
				if rounds > 1 {
					r.cfg.Log.Info("bench round", "round", round+1, "of", rounds)
				}
				rs, err := group(r)
				if err != nil {
					return nil, err
				}
				all[i][round] = append(all[i][round], rs...)
			}
		}
	}
	for _, byRound := range all {
		res = append(res, medians(byRound))
	}
	return res, nil
}

// medians folds the rows of several rounds into one row each: the median
// value, every round's value (when there are several), the operations and
// seconds of all rounds, and the first note.
func medians(rounds [][]Result) []Result {
	if len(rounds) == 1 {
		return rounds[0]
	}
	out := make([]Result, len(rounds[0]))
	for row := range out {
		r := rounds[0][row]
		r.Values = nil
		r.Ops, r.Seconds = 0, 0
		for _, rr := range rounds {
			x := rr[row]
			r.Values = append(r.Values, x.Value)
			r.Ops += x.Ops
			r.Seconds += x.Seconds
			if r.Note == "" {
				r.Note = x.Note
			}
		}
		sorted := slices.Sorted(slices.Values(r.Values))
		mid := len(sorted) / 2
		r.Value = sorted[mid]
		if len(sorted)%2 == 0 {
			r.Value = (sorted[mid-1] + sorted[mid]) / 2
		}
		out[row] = r
	}
	return out
}

type runner struct {
	ctx  context.Context
	cfg  Config
	work string
	pool []byte
}

// newPool returns random bytes that writes take slices of. Content-addressed
// blocks would deduplicate repeated data, so every write must differ; slicing
// one random pool at distinct offsets gives that without spending CPU on
// generating data inside the timed loops.
func newPool(seed uint64) []byte {
	p := make([]byte, 2*mib)
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	_, _ = rand.NewChaCha8(key).Read(p) // never fails
	return p
}

// chunk returns the n-byte slice of the pool for request i. The odd stride
// makes offsets of up to 2^20 requests differ by a non-multiple of any
// power-of-two block size, so no two requests share a block's content.
func (r *runner) chunk(i int64, n int) []byte {
	off := (i * 1021) % int64(len(r.pool)-n+1)
	return r.pool[off : off+int64(n)]
}

func (r *runner) drop() error {
	if r.cfg.DropCaches == nil {
		return nil
	}
	if err := r.cfg.DropCaches(r.ctx); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// timed runs op n times (or until it says stop) and returns the rate.
func (r *runner) timed(key, unit string, n int64, op func(i int64) error) (Result, error) {
	r.cfg.Log.Info("bench phase", "phase", key, "ops", n)
	start := time.Now()
	for i := range n {
		if err := r.ctx.Err(); err != nil {
			return Result{}, err
		}
		if err := op(i); err != nil {
			return Result{}, fmt.Errorf("%s: %w", key, err)
		}
	}
	return rate(key, unit, n, time.Since(start)), nil
}

func rate(key, unit string, ops int64, d time.Duration) Result {
	secs := max(d.Seconds(), 1e-9)
	return Result{Key: key, Value: float64(ops) / secs, Unit: unit, Ops: ops, Seconds: d.Seconds()}
}

// sequential writes a file in 1 MiB requests, fsyncs it (counted: the data
// must be durable, not just in some cache), drops caches and reads it back.
func (r *runner) sequential() ([]Result, error) {
	path := filepath.Join(r.work, "seq")
	n := r.cfg.Sizes.SeqBytes / mib
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("seq write: %w", err)
	}
	r.cfg.Log.Info("bench phase", "phase", SeqWrite, "bytes", r.cfg.Sizes.SeqBytes)
	start := time.Now()
	for i := range n {
		if err := r.ctx.Err(); err != nil {
			f.Close()
			return nil, err
		}
		if _, err := f.Write(r.chunk(i, mib)); err != nil {
			f.Close()
			return nil, fmt.Errorf("seq write: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("seq write: fsync: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("seq write: close: %w", err)
	}
	write := rate(SeqWrite, unitMiBps, n, time.Since(start))

	if err := r.drop(); err != nil {
		return nil, err
	}
	f, err = os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("seq read: %w", err)
	}
	defer f.Close()
	buf := make([]byte, mib)
	var total int64
	read, err := r.timed(SeqRead, unitMiBps, n, func(int64) error {
		m, err := io.ReadFull(f, buf)
		total += int64(m)
		return err
	})
	if err != nil {
		return nil, err
	}
	if total != r.cfg.Sizes.SeqBytes {
		return nil, fmt.Errorf("seq read: read %d bytes back, wrote %d", total, r.cfg.Sizes.SeqBytes)
	}
	return []Result{write, read}, os.Remove(path)
}

// smallFiles creates, stats, lists (ls -l), reads and deletes 4 KiB files in
// one directory. Caches are dropped before the listing, so ls -l and the
// reads after it start cold, as a user's would the next morning.
func (r *runner) smallFiles() ([]Result, error) {
	dir := filepath.Join(r.work, "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("small files: %w", err)
	}
	n := int64(r.cfg.Sizes.Files)
	name := func(i int64) string { return filepath.Join(dir, fmt.Sprintf("f%06d", i)) }
	create, err := r.timed(Create, unitOps, n, func(i int64) error {
		f, err := os.OpenFile(name(i), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		if _, err := f.Write(r.chunk(i, smallSize)); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	if err != nil {
		return nil, err
	}
	stat, err := r.timed(Stat, unitOps, n, func(i int64) error {
		_, err := os.Lstat(name(i))
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := r.drop(); err != nil {
		return nil, err
	}
	list, err := r.listLong(dir, n)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, smallSize+1)
	read, err := r.timed(SmallRead, unitOps, n, func(i int64) error {
		f, err := os.Open(name(i))
		if err != nil {
			return err
		}
		defer f.Close()
		m, err := io.ReadFull(f, buf)
		if err != io.ErrUnexpectedEOF || m != smallSize {
			return fmt.Errorf("%s: read %d bytes, want %d (%v)", name(i), m, smallSize, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	del, err := r.timed(Delete, unitOps, n, func(i int64) error { return os.Remove(name(i)) })
	if err != nil {
		return nil, err
	}
	return []Result{create, stat, list, read, del}, os.Remove(dir)
}

// listLong does what `ls -l` does: read the whole directory, then lstat
// every entry.
func (r *runner) listLong(dir string, want int64) (Result, error) {
	r.cfg.Log.Info("bench phase", "phase", List, "entries", want)
	start := time.Now()
	d, err := os.Open(dir)
	if err != nil {
		return Result{}, fmt.Errorf("ls -l: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return Result{}, fmt.Errorf("ls -l: readdir: %w", err)
	}
	for _, nm := range names {
		if _, err := os.Lstat(filepath.Join(dir, nm)); err != nil {
			return Result{}, fmt.Errorf("ls -l: %w", err)
		}
	}
	if int64(len(names)) != want {
		return Result{}, fmt.Errorf("ls -l: listed %d entries, created %d", len(names), want)
	}
	return rate(List, unitEntrps, want, time.Since(start)), nil
}

// renames moves files from one directory to another: the namespace
// transaction that object stores alone cannot do.
func (r *runner) renames() ([]Result, error) {
	a, b := filepath.Join(r.work, "ren-a"), filepath.Join(r.work, "ren-b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("rename: %w", err)
		}
	}
	n := int64(r.cfg.Sizes.Renames)
	name := func(i int64) string { return fmt.Sprintf("r%06d", i) }
	for i := range n {
		if err := os.WriteFile(filepath.Join(a, name(i)), nil, 0o644); err != nil {
			return nil, fmt.Errorf("rename: prepare: %w", err)
		}
	}
	ren, err := r.timed(Rename, unitOps, n, func(i int64) error {
		return os.Rename(filepath.Join(a, name(i)), filepath.Join(b, name(i)))
	})
	if err != nil {
		return nil, err
	}
	return []Result{ren}, errors.Join(os.RemoveAll(a), os.RemoveAll(b))
}

// random measures 4 KiB random read, then random write IOPS on one file for
// a fixed period each, with a seeded offset sequence, then random writes
// each followed by fsync. O_DIRECT keeps the kernel page cache out; where
// the file system refuses it, buffered I/O is used and the row says so.
// Random writes end with an fsync, counted.
func (r *runner) random() ([]Result, error) {
	path := filepath.Join(r.work, "rand")
	size := r.cfg.Sizes.RandBytes
	if err := r.fill(path, size); err != nil {
		return nil, err
	}
	if err := r.drop(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 0x5eed))
	blocks := size / ioSize
	buf := alignedBuf(ioSize)

	read, err := r.randomPhase(path, RandRead, os.O_RDONLY, func(f *os.File, i int64) error {
		_, err := f.ReadAt(buf, rng.Int64N(blocks)*ioSize)
		return err
	})
	if err != nil {
		return nil, err
	}
	write, err := r.randomPhase(path, RandWrite, os.O_WRONLY, func(f *os.File, i int64) error {
		copy(buf, r.chunk(i, ioSize))
		_, err := f.WriteAt(buf, rng.Int64N(blocks)*ioSize)
		return err
	})
	if err != nil {
		return nil, err
	}
	// A database's writes: each one fsynced before the next.
	synced, err := r.randomPhase(path, RandSync, os.O_WRONLY, func(f *os.File, i int64) error {
		copy(buf, r.chunk(i+1<<20, ioSize))
		if _, err := f.WriteAt(buf, rng.Int64N(blocks)*ioSize); err != nil {
			return err
		}
		return f.Sync()
	})
	if err != nil {
		return nil, err
	}
	return []Result{read, write, synced}, os.Remove(path)
}

// fill writes the random I/O file, untimed, with distinct content.
func (r *runner) fill(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("random I/O: prepare: %w", err)
	}
	for i := range size / mib {
		// Offsets beyond the sequential file's keep blocks distinct from it.
		if _, err := f.Write(r.chunk(i+1<<16, mib)); err != nil {
			f.Close()
			return fmt.Errorf("random I/O: prepare: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("random I/O: prepare: fsync: %w", err)
	}
	return f.Close()
}

func (r *runner) randomPhase(path, key string, flag int, op func(f *os.File, i int64) error) (Result, error) {
	f, note, err := openDirect(path, flag)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", key, err)
	}
	defer f.Close()
	// The first request shows whether O_DIRECT I/O (not just the open)
	// works; some file systems accept the flag and fail every request.
	if err := op(f, 0); errors.Is(err, syscall.EINVAL) && note == "" {
		f.Close()
		f, err = os.OpenFile(path, flag, 0)
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", key, err)
		}
		note = "buffered: O_DIRECT I/O refused (EINVAL)"
	} else if err != nil {
		return Result{}, fmt.Errorf("%s: %w", key, err)
	}
	r.cfg.Log.Info("bench phase", "phase", key, "period", r.cfg.Sizes.RandPeriod, "o_direct", note == "")
	var ops int64
	start := time.Now()
	for deadline := start.Add(r.cfg.Sizes.RandPeriod); time.Now().Before(deadline); ops++ {
		if err := r.ctx.Err(); err != nil {
			return Result{}, err
		}
		if err := op(f, ops); err != nil {
			return Result{}, fmt.Errorf("%s: %w", key, err)
		}
	}
	if flag != os.O_RDONLY {
		if err := f.Sync(); err != nil {
			return Result{}, fmt.Errorf("%s: fsync: %w", key, err)
		}
	}
	res := rate(key, unitIOPS, ops, time.Since(start))
	res.Note = note
	return res, nil
}

// openDirect opens path with O_DIRECT, or buffered with a note saying why
// not when the file system refuses the flag.
func openDirect(path string, flag int) (*os.File, string, error) {
	f, err := os.OpenFile(path, flag|syscall.O_DIRECT, 0)
	if err == nil {
		return f, "", nil
	}
	if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.EOPNOTSUPP) {
		return nil, "", err
	}
	f, err = os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, "", err
	}
	return f, "buffered: O_DIRECT open refused", nil
}

// alignedBuf returns n bytes aligned for O_DIRECT, which Go's allocator
// does not promise.
func alignedBuf(n int) []byte {
	b := make([]byte, n+ioSize)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (ioSize - 1))
	if off != 0 {
		off = ioSize - off
	}
	return b[off : off+n]
}
