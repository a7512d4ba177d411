package meta

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"slices"
)

// blockRefs counts the references Check finds to each block, in bounded
// memory. Slices reference blocks in no useful order, so a map of every
// block would grow with the volume (about 100 bytes a block). Instead,
// references gather in memory up to a limit; then they are sorted, merged
// per block and written to a temporary file as a sorted run. Each merges
// the runs and yields every block once, in ID order, which is also the
// order of the refcount records and of the object store's keys.
type blockRefs struct {
	dir      string // where the runs' directory is made; "" for os.TempDir
	limit    int    // references kept in memory before a run is written
	maxRuns  int    // runs open at once; more are first merged into one
	conflict func(first, other refEntry)

	mem     []refEntry
	tmp     string     // the runs' directory, once made
	runs    []*os.File // sorted runs: runs[:merged] are merges of others
	merged  int
	written int // runs written, for file names
}

// refEntry is one block's references as far as counted; ino and idx name
// the chunk of its first reference, for reports.
type refEntry struct {
	id   BlockID
	size uint32
	idx  uint32
	ino  uint64
	refs int64
}

const refEntrySize = 32 + 4 + 4 + 8 + 8

// 1 Mi references (56 MiB) in memory; a billion distinct blocks then makes
// 1,000 runs, whose first 256 are merged into one, then the next 255, and
// so on, so that each reference is written twice at most. (Variables so
// that tests can make runs of a few references.)
var (
	refsInMemory = 1 << 20
	refsMaxRuns  = 256
)

// newBlockRefs returns a counter whose runs go to a directory made in dir
// ("" for the system's). conflict is called for a block referenced with
// two different sizes (first is the reference kept).
func newBlockRefs(dir string, conflict func(first, other refEntry)) *blockRefs {
	return &blockRefs{dir: dir, limit: refsInMemory, maxRuns: refsMaxRuns, conflict: conflict}
}

// add counts one reference to block id of the given size, from chunk idx
// of inode ino.
func (r *blockRefs) add(id BlockID, size uint32, ino, idx uint64) error {
	r.mem = append(r.mem, refEntry{id: id, size: size, idx: uint32(min(idx, 1<<32-1)), ino: ino, refs: 1})
	if len(r.mem) < r.limit {
		return nil
	}
	return r.spill()
}

// combine folds b, a later entry for the same block, into a.
func (r *blockRefs) combine(a *refEntry, b refEntry) {
	if a.size != b.size && r.conflict != nil {
		r.conflict(*a, b)
	}
	a.refs += b.refs
}

// compact sorts the entries in memory and merges those of one block.
func (r *blockRefs) compact() {
	slices.SortStableFunc(r.mem, func(a, b refEntry) int { return bytes.Compare(a.id[:], b.id[:]) })
	out := r.mem[:0]
	for _, e := range r.mem {
		if n := len(out); n > 0 && out[n-1].id == e.id {
			r.combine(&out[n-1], e)
			continue
		}
		out = append(out, e)
	}
	r.mem = out
}

// spill writes the entries in memory as a sorted run.
func (r *blockRefs) spill() error {
	r.compact()
	if len(r.mem) < r.limit/2 {
		return nil // many references to few blocks: room left
	}
	if len(r.runs) >= r.maxRuns {
		from := r.merged
		if len(r.runs)-from < 2 {
			from = 0 // nothing but merged runs: merge them all
		}
		if err := r.mergeRuns(from); err != nil {
			return err
		}
	}
	f, err := r.newRun()
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, e := range r.mem {
		if err := writeRefEntry(w, e); err != nil {
			return fmt.Errorf("write block reference run: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write block reference run: %w", err)
	}
	r.runs = append(r.runs, f)
	r.mem = r.mem[:0]
	return nil
}

func (r *blockRefs) newRun() (*os.File, error) {
	if r.tmp == "" {
		d, err := os.MkdirTemp(r.dir, "objfs-fsck-refs-")
		if err != nil {
			return nil, fmt.Errorf("directory for block reference runs: %w", err)
		}
		r.tmp = d
	}
	r.written++
	f, err := os.OpenFile(fmt.Sprintf("%s/run-%06d", r.tmp, r.written), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("block reference run: %w", err)
	}
	return f, nil
}

// mergeRuns merges runs[from:] into one.
func (r *blockRefs) mergeRuns(from int) error {
	f, err := r.newRun()
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	old := slices.Clone(r.runs[from:])
	r.runs = r.runs[:from]
	err = r.merge(old, nil, func(e refEntry) error { return writeRefEntry(w, e) })
	if err == nil {
		err = w.Flush()
	}
	for _, o := range old {
		o.Close()
		os.Remove(o.Name())
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("merge block reference runs: %w", err)
	}
	r.runs = append(r.runs, f)
	r.merged = len(r.runs)
	return nil
}

// each calls fn for every block counted, once, in ID order, with its
// references merged.
func (r *blockRefs) each(fn func(e refEntry) error) error {
	r.compact()
	return r.merge(r.runs, r.mem, fn)
}

// all is each as an iterator; an error ends it and is kept in err.
func (r *blockRefs) all(err *error) iter.Seq[refEntry] {
	return func(yield func(refEntry) bool) {
		stopped := errors.New("stopped")
		e := r.each(func(e refEntry) error {
			if !yield(e) {
				return stopped
			}
			return nil
		})
		if e != nil && e != stopped {
			*err = e
		}
	}
}

// close removes the runs.
func (r *blockRefs) close() {
	for _, f := range r.runs {
		f.Close()
	}
	r.runs = nil
	if r.tmp != "" {
		os.RemoveAll(r.tmp)
		r.tmp = ""
	}
}

// merge yields the entries of the sorted runs and of the sorted slice mem
// in ID order, combining those of one block.
func (r *blockRefs) merge(runs []*os.File, mem []refEntry, fn func(e refEntry) error) error {
	h := &refHeap{}
	for _, f := range runs {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("read block reference run: %w", err)
		}
		s := &refSource{r: bufio.NewReaderSize(f, 64<<10)}
		if err := s.next(); err != nil {
			return err
		}
		if !s.done {
			heap.Push(h, s)
		}
	}
	if len(mem) > 0 {
		s := &refSource{mem: mem}
		if err := s.next(); err != nil {
			return err
		}
		heap.Push(h, s)
	}
	var cur refEntry
	have := false
	for h.Len() > 0 {
		s := (*h)[0]
		e := s.cur
		if err := s.next(); err != nil {
			return err
		}
		if s.done {
			heap.Pop(h)
		} else {
			heap.Fix(h, 0)
		}
		if have && cur.id == e.id {
			r.combine(&cur, e)
			continue
		}
		if have {
			if err := fn(cur); err != nil {
				return err
			}
		}
		cur, have = e, true
	}
	if have {
		return fn(cur)
	}
	return nil
}

// refSource is one sorted input of a merge: a run file or a slice.
type refSource struct {
	r    *bufio.Reader
	mem  []refEntry
	cur  refEntry
	done bool
}

func (s *refSource) next() error {
	if s.r == nil {
		if len(s.mem) == 0 {
			s.done = true
			return nil
		}
		s.cur, s.mem = s.mem[0], s.mem[1:]
		return nil
	}
	var b [refEntrySize]byte
	if _, err := io.ReadFull(s.r, b[:]); err != nil {
		if errors.Is(err, io.EOF) {
			s.done = true
			return nil
		}
		return fmt.Errorf("read block reference run: %w", err)
	}
	copy(s.cur.id[:], b[:32])
	s.cur.size = binary.LittleEndian.Uint32(b[32:])
	s.cur.idx = binary.LittleEndian.Uint32(b[36:])
	s.cur.ino = binary.LittleEndian.Uint64(b[40:])
	s.cur.refs = int64(binary.LittleEndian.Uint64(b[48:]))
	return nil
}

func writeRefEntry(w *bufio.Writer, e refEntry) error {
	var b [refEntrySize]byte
	copy(b[:32], e.id[:])
	binary.LittleEndian.PutUint32(b[32:], e.size)
	binary.LittleEndian.PutUint32(b[36:], e.idx)
	binary.LittleEndian.PutUint64(b[40:], e.ino)
	binary.LittleEndian.PutUint64(b[48:], uint64(e.refs))
	_, err := w.Write(b[:])
	return err
}

// refHeap orders merge sources by their current block ID.
type refHeap []*refSource

func (h refHeap) Len() int { return len(h) }
func (h refHeap) Less(i, j int) bool {
	return bytes.Compare(h[i].cur.id[:], h[j].cur.id[:]) < 0
}
func (h refHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *refHeap) Push(x any)   { *h = append(*h, x.(*refSource)) }
func (h *refHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	*h = old[:len(old)-1]
	return s
}
