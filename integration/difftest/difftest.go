// Package difftest holds what the differential tests of the FUSE mount
// and of both front ends (integration) and of the NFS server (nfs) share:
// the weighted choice of random operations, the reference tree paths are
// chosen from, the failure a run reports, and the search for the shortest
// prefix of a seeded sequence that still fails; and the items that the
// rename-into-place pipeline tests of both packages move.
package difftest

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Op is one kind of operation of a run of type R, chosen by Weight.
type Op[R any] struct {
	Name   string
	Weight int
	Fn     func(R) error
}

// Pick chooses one of ops at random, in proportion to the weights.
func Pick[R any](rng *rand.Rand, ops []Op[R]) Op[R] {
	total := 0
	for _, o := range ops {
		total += o.Weight
	}
	x := rng.IntN(total)
	for _, o := range ops {
		if x < o.Weight {
			return o
		}
		x -= o.Weight
	}
	return ops[len(ops)-1] // unreachable with positive weights
}

// Failure is the first divergence of a run.
type Failure struct {
	Step  int    // index of the failing operation, -1 for the checks after the operations
	Phase string // where it failed
	Msg   string
	Trace []string // one line per operation run
}

func (f *Failure) String() string {
	if f.Step >= 0 {
		return fmt.Sprintf("operation #%d (%s) diverged: %s", f.Step, f.Trace[len(f.Trace)-1], f.Msg)
	}
	return fmt.Sprintf("%s after %d operations: %s", f.Phase, len(f.Trace), f.Msg)
}

// LastOps formats the last n lines of a trace, indented.
func LastOps(trace []string, n int) string {
	if len(trace) > n {
		trace = trace[len(trace)-n:]
	}
	return "  " + strings.Join(trace, "\n  ")
}

// Shrink searches for the shortest failing prefix of a sequence of n
// operations whose full run failed with first: run(k) replays the first k
// operations on a fresh volume (a pure function of the seed) and returns
// its failure, nil if it passed. It bisects for at most maxRuns runs and
// budget, logging each with logf, and returns the shortest failure found,
// its length, and a note when the search stopped early or found the
// failure to depend on timing.
func Shrink(n int, first *Failure, run func(k int) *Failure, maxRuns int, budget time.Duration, logf func(format string, args ...any)) (best *Failure, length int, note string) {
	hi := n
	if first.Step >= 0 {
		hi = first.Step + 1
	}
	best, lo, runs := first, 0, 0
	var flaky []string
	start := time.Now()
	for hi-lo > 1 && runs < maxRuns && time.Since(start) < budget {
		mid := lo + (hi-lo)/2
		runs++
		verdict := "passes"
		if g := run(mid); g == nil {
			lo = mid
		} else {
			lines := strings.SplitN(g.String(), "\n", 3)
			verdict = "fails: " + strings.Join(lines[:min(2, len(lines))], " ")
			k := mid
			if g.Step >= 0 && g.Step+1 < k {
				k = g.Step + 1
			}
			if k <= lo {
				// A shorter prefix passed before: the failure depends on
				// timing, not only on the operations.
				flaky = append(flaky, fmt.Sprintf("prefix %d passed, but a run of %d operations failed at #%d", lo, mid, k-1))
				lo = 0
			}
			hi, best = k, g
		}
		logf("bisect: prefix %d %s; now searching (%d, %d]", mid, verdict, lo, hi)
	}
	if hi-lo > 1 {
		note = fmt.Sprintf(" (search stopped after %d runs; a prefix between %d and %d may also fail)", runs, lo+1, hi)
	}
	if len(flaky) > 0 {
		note += "\nNOT DETERMINISTIC: " + strings.Join(flaky, "; ")
	}
	return best, hi, note
}

// Check runs the whole sequence for seed, run(nops, true), logging how
// long it took; if it fails, Investigate replays prefixes with run(k,
// false).
func Check(t testing.TB, seed uint64, nops int, run func(k int, full bool) *Failure, maxRuns int, budget time.Duration, seedKnob, opsKnob string) {
	t.Helper()
	start := time.Now()
	f := run(nops, true)
	t.Logf("the full run took %v", time.Since(start).Round(time.Millisecond))
	if f != nil {
		Investigate(t, seed, nops, f, func(k int) *Failure { return run(k, false) }, maxRuns, budget, seedKnob, opsKnob)
	}
}

// Investigate reports the failure first of a full run of nops operations
// for seed, then searches for its shortest failing prefix (Shrink, with
// rerun, maxRuns and budget) and reports that, with the values of the
// knobs seedKnob and opsKnob that replay it.
func Investigate(t testing.TB, seed uint64, nops int, first *Failure, rerun func(k int) *Failure, maxRuns int, budget time.Duration, seedKnob, opsKnob string) {
	t.Helper()
	t.Errorf("seed %d: %s", seed, first)
	t.Logf("last operations of the full run (index, operation -> reference outcome):\n%s", LastOps(first.Trace, 15))
	best, n, note := Shrink(nops, first, rerun, maxRuns, budget, t.Logf)
	t.Errorf("seed %d: shortest failing prefix found: %d operations%s\nfailure: %s\nlast operations (index, operation -> reference outcome):\n%s\nrerun with %s=%d %s=%d",
		seed, n, note, best, LastOps(best.Trace, 12), seedKnob, seed, opsKnob, n)
}

// Data returns the stream of bytes a run for seed writes, the same on
// every replay.
func Data(seed uint64) *rand.ChaCha8 {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(key)
}

// EnvUint reads an unsigned integer knob from the environment, def when it
// is unset; a malformed value fails the test.
func EnvUint(t testing.TB, name string, def uint64) uint64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: want an unsigned integer", name, s)
	}
	return v
}

// Entry is a path of a reference tree, relative to its root, with its kind
// ('f' file, 'd' directory, 'l' symlink, 'p' FIFO, '?' other) and depth
// (1 for the root's entries).
type Entry struct {
	Rel   string
	Kind  byte
	Depth int
}

// Tree lists the reference directory Root, from which runs choose their
// paths; the list is kept until Changed.
type Tree struct {
	Root    string
	entries []Entry
	fresh   bool
}

// Changed says the reference directory changed: the next List walks it.
func (t *Tree) Changed() { t.fresh = false }

// List returns every path under Root, parents before their children.
func (t *Tree) List() []Entry {
	if t.fresh {
		return t.entries
	}
	t.entries = t.entries[:0]
	var walk func(rel string, depth int)
	walk = func(rel string, depth int) {
		des, err := os.ReadDir(filepath.Join(t.Root, rel))
		if err != nil {
			return
		}
		for _, de := range des {
			child := path.Join(rel, de.Name())
			kind := byte('?')
			switch m := de.Type(); {
			case m.IsRegular():
				kind = 'f'
			case m.IsDir():
				kind = 'd'
			case m&os.ModeSymlink != 0:
				kind = 'l'
			case m&os.ModeNamedPipe != 0:
				kind = 'p'
			}
			t.entries = append(t.entries, Entry{Rel: child, Kind: kind, Depth: depth + 1})
			if kind == 'd' {
				walk(child, depth+1)
			}
		}
	}
	walk("", 0)
	t.fresh = true
	return t.entries
}

// Existing returns a random listed path of one of kinds.
func (t *Tree) Existing(rng *rand.Rand, kinds string) (string, bool) {
	var cands []string
	for _, e := range t.List() {
		if strings.IndexByte(kinds, e.Kind) >= 0 {
			cands = append(cands, e.Rel)
		}
	}
	if len(cands) == 0 {
		return "", false
	}
	return cands[rng.IntN(len(cands))], true
}

// Dirs returns "" (the root) and the listed directories less than
// maxDepth deep: where a new entry may go.
func (t *Tree) Dirs(maxDepth int) []string {
	dirs := []string{""}
	for _, e := range t.List() {
		if e.Kind == 'd' && e.Depth < maxDepth {
			dirs = append(dirs, e.Rel)
		}
	}
	return dirs
}

// Counts tallies how often each kind of operation ran and succeeded.
type Counts map[string]*[2]int // name -> {succeeded, failed}

// Add counts one run of the operation name.
func (c Counts) Add(name string, ok bool) {
	n := c[name]
	if n == nil {
		n = new([2]int)
		c[name] = n
	}
	if ok {
		n[0]++
	} else {
		n[1]++
	}
}

// String lists " name=succeeded/run" for every operation, by name.
func (c Counts) String() string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(c)) {
		n := c[name]
		fmt.Fprintf(&b, " %s=%d/%d", name, n[0], n[0]+n[1])
	}
	return b.String()
}

// PipelineItem is item id's data in the pipeline tests: its size varies
// (100 bytes to 300 KiB), so that some items are kept in the metadata and
// some span several NFS WRITEs and data blocks; it starts with its id.
func PipelineItem(id int) []byte {
	n := 100 + (id*7919)%(300<<10)
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(id*31 + i*7)
	}
	copy(b, fmt.Sprintf("item %d|", id))
	return b
}
