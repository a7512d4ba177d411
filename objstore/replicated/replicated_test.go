package replicated

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
	"github.com/objfs/objfs/objstore/faulty"
	"github.com/objfs/objfs/objstore/metered"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// verifyBlock is the check the file system uses: a block key names the
// SHA-256 of its content; other keys pass.
func verifyBlock(key string, data []byte) bool {
	id, ok := meta.ParseObjectKey(key)
	if !ok {
		return true
	}
	return sha256.Sum256(data) == id
}

// block returns distinct content number n and its object key.
func block(n int) (string, []byte) {
	data := fmt.Appendf(nil, "block content %d", n)
	id := meta.BlockID(sha256.Sum256(data))
	return id.ObjectKey(), data
}

// rig is a replicated store over local directory stores, each behind a
// fault injector, with direct access to the directories underneath.
type rig struct {
	t     *testing.T
	ctx   context.Context
	inner []objstore.Store
	fault []*faulty.Store
	s     *Store
}

func newRig(t *testing.T, nstores, replicas, quorum int) *rig {
	t.Helper()
	r := &rig{t: t, ctx: context.Background()}
	var stores []objstore.Store
	for i := 0; i < nstores; i++ {
		d, err := objstore.NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		f := faulty.New(d, int64(i))
		r.inner = append(r.inner, d)
		r.fault = append(r.fault, f)
		stores = append(stores, f)
	}
	s, err := New(stores, replicas, quorum, verifyBlock, quiet)
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	t.Cleanup(func() { _ = s.Close() })
	return r
}

// copies returns which backing stores hold a good copy of key.
func (r *rig) copies(key string, want []byte) []int {
	var out []int
	for i, st := range r.inner {
		data, err := st.Get(r.ctx, key)
		if err == nil && string(data) == string(want) {
			out = append(out, i)
		}
	}
	return out
}

// waitCopies waits until key has n good copies, failing after a while.
func (r *rig) waitCopies(key string, want []byte, n int) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := r.copies(key, want)
		if len(got) == n {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("key %s: good copies on stores %v, want %d copies", key, got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewRejectsBadParameters(t *testing.T) {
	d, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	two := []objstore.Store{d, d}
	tests := []struct {
		name             string
		stores           []objstore.Store
		replicas, quorum int
	}{
		{"no stores", nil, 1, 1},
		{"zero replicas", two, 0, 1},
		{"more replicas than stores", two, 3, 1},
		{"zero quorum", two, 2, 0},
		{"quorum above replicas", two, 1, 2},
		{"nil store", []objstore.Store{d, nil}, 2, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.stores, tc.replicas, tc.quorum, nil, quiet)
			if err == nil {
				_ = s.Close()
				t.Fatal("New accepted bad parameters")
			}
		})
	}
}

func TestPlacement(t *testing.T) {
	const nstores, replicas = 5, 3
	counts := make([]int, nstores)
	for i := 0; i < 3000; i++ {
		key, _ := block(i)
		p := placement(key, nstores, replicas)
		if !slices.Equal(p, placement(key, nstores, replicas)) {
			t.Fatalf("placement of %s is not stable", key)
		}
		sorted := slices.Clone(p)
		slices.Sort(sorted)
		if len(slices.Compact(sorted)) != replicas {
			t.Fatalf("placement of %s = %v: not %d distinct stores", key, p, replicas)
		}
		for _, idx := range p {
			counts[idx]++
		}
	}
	// Each store should hold about 3000*3/5 = 1800 copies.
	for i, c := range counts {
		if c < 1500 || c > 2100 {
			t.Errorf("store %d holds %d copies; want about 1800 (counts %v)", i, c, counts)
		}
	}
}

func TestPutQuorum(t *testing.T) {
	tests := []struct {
		name             string
		replicas, quorum int
		vanished         []int // indexes into the key's placement
		wantErr          bool
		wantCopies       int
	}{
		{"all up", 3, 2, nil, false, 3},
		{"one down, quorum 2", 3, 2, []int{0}, false, 2},
		{"two down, quorum 2", 3, 2, []int{0, 2}, true, 1},
		{"one down, quorum 3", 3, 3, []int{1}, true, 2},
		{"two down, quorum 1", 3, 1, []int{0, 1}, false, 1},
		{"two replicas of three stores", 2, 2, nil, false, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 3, tc.replicas, tc.quorum)
			key, data := block(1)
			place := r.s.Placement(key)
			for _, p := range tc.vanished {
				r.fault[place[p]].SetVanished(true)
			}
			err := r.s.Put(r.ctx, key, data)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Put = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), key) {
				t.Errorf("error %q does not name the key", err)
			}
			r.waitCopies(key, data, tc.wantCopies)
			for _, idx := range r.copies(key, data) {
				if !slices.Contains(place, idx) {
					t.Errorf("copy on store %d, outside the placement %v", idx, place)
				}
			}
		})
	}
}

// TestPutReturnsAtQuorum: a slow replica does not delay the write, and its
// copy still lands afterwards.
func TestPutReturnsAtQuorum(t *testing.T) {
	r := newRig(t, 3, 3, 2)
	key, data := block(2)
	slow := r.s.Placement(key)[1]
	r.fault[slow].SetLatency(faulty.OpPut, 3*time.Second)
	start := time.Now()
	if err := r.s.Put(r.ctx, key, data); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Put took %v; it should return at the quorum, before the slow copy", d)
	}
	r.waitCopies(key, data, 3)
}

// TestFailedCopyIsRepaired: a copy that fails after the quorum is reached
// is rewritten by the background repairer.
func TestFailedCopyIsRepaired(t *testing.T) {
	r := newRig(t, 3, 3, 2)
	key, data := block(3)
	bad := r.s.Placement(key)[2]
	r.fault[bad].FailNext(faulty.OpPut, 2) // the write and the first repair
	if err := r.s.Put(r.ctx, key, data); err != nil {
		t.Fatal(err)
	}
	r.waitCopies(key, data, 3)
	if calls := r.fault[bad].Calls(faulty.OpPut); calls < 3 {
		t.Errorf("store %d saw %d puts; want the write, a failed repair and a retry", bad, calls)
	}
}

func TestGetFallbackAndRepair(t *testing.T) {
	const (
		ok = iota
		missing
		corrupt
		down
	)
	tests := []struct {
		name      string
		state     [3]int // of each copy, in placement order
		wantErr   error  // nil: the right data
		anyErr    bool   // an error that is neither ErrNotFound nor ErrCorrupt
		repairsOK bool   // missing and corrupt copies come back
	}{
		{"all good", [3]int{ok, ok, ok}, nil, false, true},
		{"one missing", [3]int{missing, ok, ok}, nil, false, true},
		{"two missing", [3]int{missing, missing, ok}, nil, false, true},
		{"one corrupt", [3]int{corrupt, ok, ok}, nil, false, true},
		{"two corrupt", [3]int{ok, corrupt, corrupt}, nil, false, true},
		{"corrupt and missing", [3]int{corrupt, missing, ok}, nil, false, true},
		{"one store down", [3]int{down, ok, missing}, nil, false, false},
		{"all missing", [3]int{missing, missing, missing}, objstore.ErrNotFound, false, false},
		{"all corrupt", [3]int{corrupt, corrupt, corrupt}, ErrCorrupt, false, false},
		{"corrupt or missing", [3]int{missing, corrupt, missing}, ErrCorrupt, false, false},
		{"down or missing", [3]int{missing, down, missing}, nil, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 3, 3, 2)
			key, data := block(4)
			if err := r.s.Put(r.ctx, key, data); err != nil {
				t.Fatal(err)
			}
			r.waitCopies(key, data, 3)
			place := r.s.Placement(key)
			for i, st := range tc.state {
				idx := place[i]
				switch st {
				case missing:
					if err := r.inner[idx].Delete(r.ctx, key); err != nil {
						t.Fatal(err)
					}
				case corrupt:
					bad := append([]byte("rotten "), data...)
					if err := r.inner[idx].Put(r.ctx, key, bad); err != nil {
						t.Fatal(err)
					}
				case down:
					r.fault[idx].SetVanished(true)
				}
			}
			// Several reads, so that each copy is tried first once;
			// GetInto too, whose buffer the caller reuses at once: a
			// repair must write its own copy of the data, not the
			// buffer.
			buf := make([]byte, 4096)
			for i := 0; i < 6; i++ {
				get := r.s.Get
				if i%2 == 1 {
					get = func(ctx context.Context, key string) ([]byte, error) { return r.s.GetInto(ctx, key, buf) }
				}
				got, err := get(r.ctx, key)
				switch {
				case tc.anyErr:
					if err == nil || errors.Is(err, objstore.ErrNotFound) || errors.Is(err, ErrCorrupt) {
						t.Fatalf("Get = %v; want a store error", err)
					}
				case tc.wantErr != nil:
					if !errors.Is(err, tc.wantErr) {
						t.Fatalf("Get = %v; want %v", err, tc.wantErr)
					}
					if !strings.Contains(err.Error(), key) {
						t.Errorf("error %q does not name the key", err)
					}
				default:
					if err != nil || string(got) != string(data) {
						t.Fatalf("Get = %q, %v; want the data", got, err)
					}
				}
				if err != nil && got != nil {
					t.Errorf("Get returned bytes with an error")
				}
				copy(buf, strings.Repeat("scribbled ", 400))
			}
			if tc.repairsOK {
				r.waitCopies(key, data, 3)
			}
		})
	}
}

func TestGetCorruptionInTransit(t *testing.T) {
	// Copies that read back corrupt (a flaky link) are never returned.
	r := newRig(t, 3, 3, 2)
	key, data := block(5)
	if err := r.s.Put(r.ctx, key, data); err != nil {
		t.Fatal(err)
	}
	r.waitCopies(key, data, 3)
	place := r.s.Placement(key)
	r.fault[place[0]].SetCorruptRate(1)
	r.fault[place[1]].SetCorruptRate(1)
	for i := 0; i < 6; i++ {
		got, err := r.s.Get(r.ctx, key)
		if err != nil || string(got) != string(data) {
			t.Fatalf("Get = %q, %v", got, err)
		}
	}
	r.fault[place[2]].SetCorruptRate(1)
	if _, err := r.s.Get(r.ctx, key); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("every copy corrupt in transit: Get = %v, want ErrCorrupt", err)
	}
}

func TestDelete(t *testing.T) {
	r := newRig(t, 3, 2, 1)
	key, data := block(6)
	if err := r.s.Put(r.ctx, key, data); err != nil {
		t.Fatal(err)
	}
	r.waitCopies(key, data, 2)
	// A stray copy outside the placement goes too.
	for i := range r.inner {
		if !slices.Contains(r.s.Placement(key), i) {
			if err := r.inner[i].Put(r.ctx, key, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 0; i < 2; i++ { // the second time, nothing is there
		if err := r.s.Delete(r.ctx, key); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if c := r.copies(key, data); len(c) != 0 {
		t.Errorf("copies left on %v", c)
	}
	if _, err := r.s.Get(r.ctx, key); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
}

func TestListMerge(t *testing.T) {
	tests := []struct {
		name    string
		keys    [3][]string // put directly into each store
		prefix  string
		want    []string
		failIdx int // store whose List fails, or -1
	}{
		{"empty", [3][]string{}, "", nil, -1},
		{"disjoint", [3][]string{{"a", "d"}, {"b", "e"}, {"c"}}, "", []string{"a", "b", "c", "d", "e"}, -1},
		{"overlapping", [3][]string{{"a", "b", "c"}, {"b", "c", "d"}, {"a", "d"}}, "", []string{"a", "b", "c", "d"}, -1},
		{"key order across directories", [3][]string{{"x/y"}, {"x-z"}, {"x.a", "x/b"}}, "", []string{"x-z", "x.a", "x/b", "x/y"}, -1},
		{"prefix", [3][]string{{"p/1", "q/1"}, {"p/2"}, {"p/1", "r"}}, "p/", []string{"p/1", "p/2"}, -1},
		{"one store fails", [3][]string{{"a"}, {"b"}, {"c"}}, "", nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 3, 3, 2)
			for i, keys := range tc.keys {
				for _, k := range keys {
					if err := r.inner[i].Put(r.ctx, k, []byte(k)); err != nil {
						t.Fatal(err)
					}
				}
			}
			if tc.failIdx >= 0 {
				r.fault[tc.failIdx].FailNext(faulty.OpList, 1)
			}
			var got []string
			err := r.s.List(r.ctx, tc.prefix, func(k string, size int64) error {
				if size != int64(len(k)) {
					t.Errorf("key %s: size %d, want %d", k, size, len(k))
				}
				got = append(got, k)
				return nil
			})
			if tc.failIdx >= 0 {
				if err == nil {
					t.Fatalf("List with a failing store = nil, listed %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("List = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestListStopsEarly: an error from fn ends List at once and leaves no
// listing goroutine behind, however many keys remain.
func TestListStopsEarly(t *testing.T) {
	r := newRig(t, 3, 3, 2)
	for i := 0; i < 300; i++ {
		k := fmt.Sprintf("k%04d", i)
		if err := r.inner[i%3].Put(r.ctx, k, nil); err != nil {
			t.Fatal(err)
		}
	}
	before := runtime.NumGoroutine()
	stop := errors.New("stop")
	n := 0
	err := r.s.List(r.ctx, "", func(string, int64) error {
		if n++; n == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 10 {
		t.Fatalf("List = %v after %d keys, want stop after 10", err, n)
	}
	waitGoroutines(t, before)
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCloseStopsGoroutines: Close cancels background copies that are still
// running and waits for every goroutine the store started.
// TestCloseFinishesCopies: a copy still being written when Close is
// called, after its Put returned at the quorum, is finished, not
// cancelled and left to scrub (the cause of a flaky fsck/scrub test: the
// unmount right after a write cancelled the third copy).
func TestCloseFinishesCopies(t *testing.T) {
	r := newRig(t, 3, 3, 2)
	key, data := block(9)
	slow := r.s.Placement(key)[2]
	r.fault[slow].SetLatency(faulty.OpPut, 300*time.Millisecond)
	if err := r.s.Put(r.ctx, key, data); err != nil {
		t.Fatal(err)
	}
	if err := r.s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := r.copies(key, data); len(got) != 3 {
		t.Errorf("after Close: good copies on stores %v, want all 3", got)
	}
}

func TestCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	r := newRig(t, 3, 3, 2)
	// A repair that keeps failing stays queued with backoff.
	key2, data2 := block(8)
	bad := r.s.Placement(key2)[1]
	r.fault[bad].FailNext(faulty.OpPut, 100)
	if err := r.s.Put(r.ctx, key2, data2); err != nil {
		t.Fatal(err)
	}
	// A copy that never finishes keeps a background goroutine busy. It is
	// on the failing store, so the other two make the quorum.
	key, data := block(7)
	r.fault[bad].SetLatency(faulty.OpPut, time.Hour)
	if err := r.s.Put(r.ctx, key, data); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return: a background copy was not cancelled")
	}
	waitGoroutines(t, before)
	if err := r.s.Put(r.ctx, key, data); err == nil {
		t.Error("Put after Close succeeded")
	}
}

func TestScrub(t *testing.T) {
	r := newRig(t, 4, 3, 2)
	key, data := block(9)
	if err := r.s.Put(r.ctx, key, data); err != nil {
		t.Fatal(err)
	}
	r.waitCopies(key, data, 3)
	place := r.s.Placement(key)
	if err := r.inner[place[0]].Delete(r.ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := r.inner[place[2]].Put(r.ctx, key, []byte("rot")); err != nil {
		t.Fatal(err)
	}
	res, err := r.s.Scrub(r.ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	want := ScrubResult{OK: 1, Missing: 1, Corrupt: 1, Restored: 2}
	if res != want {
		t.Errorf("first scrub: %+v, want %+v", res, want)
	}
	if c := r.copies(key, data); len(c) != 3 {
		t.Errorf("after scrub: good copies on %v, want 3", c)
	}
	// Running it again finds everything in order.
	res, err = r.s.Scrub(r.ctx, key)
	if err != nil || res != (ScrubResult{OK: 3}) {
		t.Errorf("second scrub: %+v, %v; want 3 OK", res, err)
	}
	// A store that cannot be written counts as failed, not restored.
	if err := r.inner[place[1]].Delete(r.ctx, key); err != nil {
		t.Fatal(err)
	}
	r.fault[place[1]].FailNext(faulty.OpPut, 1)
	res, err = r.s.Scrub(r.ctx, key)
	if err != nil || res != (ScrubResult{OK: 2, Missing: 1, Failed: 1}) {
		t.Errorf("scrub with an unwritable store: %+v, %v", res, err)
	}
	// Nothing good anywhere: lost.
	for _, idx := range place {
		if err := r.inner[idx].Put(r.ctx, key, []byte("rot")); err != nil {
			t.Fatal(err)
		}
	}
	res, err = r.s.Scrub(r.ctx, key)
	if err != nil || !res.Lost || res.Corrupt != 3 {
		t.Errorf("scrub of a lost key: %+v, %v", res, err)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	cancel()
	if _, err := r.s.Scrub(ctx, key); !errors.Is(err, context.Canceled) {
		t.Errorf("scrub with a cancelled context: %v", err)
	}
}

// TestBackgroundCopiesBounded: with one store hung, Puts keep returning at
// the quorum, the stragglers beyond maxBackgroundCopies are cancelled (not
// left holding memory), and their copies are queued for repair.
func TestBackgroundCopiesBounded(t *testing.T) {
	r := newRig(t, 3, 3, 2)
	const puts = maxBackgroundCopies + 20
	hung := 0
	r.fault[hung].SetLatency(faulty.OpPut, time.Hour)
	for i := 0; i < puts; i++ {
		key, data := block(1000 + i)
		if err := r.s.Put(r.ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.s.background.Load(); n > maxBackgroundCopies {
		t.Errorf("%d background copies in flight, want at most %d", n, maxBackgroundCopies)
	}
	// The repairer may hold one of them (blocked on the hung store).
	deadline := time.Now().Add(5 * time.Second)
	for r.s.Pending() < puts-maxBackgroundCopies-1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d repairs queued, want at least %d", r.s.Pending(), puts-maxBackgroundCopies)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGetVerified: what a replicated store returns passed its verifier, and
// it says so (its readers then need not hash again), also through a metered
// wrapper; without a verifier, or for a failed read, it says nothing was
// checked.
func TestGetVerified(t *testing.T) {
	r := newRig(t, 2, 2, 2)
	key, data := block(9)
	if err := r.s.Put(r.ctx, key, data); err != nil {
		t.Fatal(err)
	}
	got, verified, err := objstore.GetVerified(r.ctx, r.s, key, nil)
	if err != nil || !verified || !bytes.Equal(got, data) {
		t.Errorf("GetVerified = %q, %v, %v; want the data, verified", got, verified, err)
	}
	// A store over the same directories without a verifier checks nothing.
	plain, err := New(r.inner, 2, 2, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, verified, err := objstore.GetVerified(r.ctx, plain, key, nil); err != nil || verified {
		t.Errorf("without a verifier: verified %v, %v; want false", verified, err)
	}
	// A failed read is never verified.
	if _, verified, err := objstore.GetVerified(r.ctx, r.s, "blocks/none", nil); err == nil || verified {
		t.Errorf("missing key: verified %v, err %v", verified, err)
	}
	// Through a metered wrapper the answer is the same.
	if _, verified, err := objstore.GetVerified(r.ctx, metered.New(r.s, prometheus.NewRegistry()), key, nil); err != nil || !verified {
		t.Errorf("through metered: verified %v, %v; want true", verified, err)
	}
}
