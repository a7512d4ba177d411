// Package replicated keeps several copies of every object on distinct
// backing stores: writes succeed at a quorum, reads verify a copy and fall
// back to (and repair from) another one, and Scrub restores a key's full
// copy count.
package replicated

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/objfs/objfs/objstore"
)

// ErrCorrupt is wrapped by Get when copies of the object exist but none of
// them passes verification.
var ErrCorrupt = errors.New("no copy of the object passes verification")

// errClosed is returned by every operation after Close.
var errClosed = errors.New("replicated store is closed")

// maxBackgroundCopies bounds the copies still being written after their
// Put returned (each holds its data). Past it, a Put's stragglers are
// cancelled and queued for repair, which re-reads the data later, so a
// hung store cannot make memory grow with the write rate.
const maxBackgroundCopies = 64

// maxReadRepairs bounds the read-repair goroutines (each holds one object
// in memory); beyond it repairs go to the queue, which re-reads the data
// later instead of holding it.
const maxReadRepairs = 8

// Store is an objstore.Store that keeps `replicas` copies of each key on
// distinct stores of its list.
type Store struct {
	stores      []objstore.Store
	replicas    int
	writeQuorum int
	verify      func(key string, data []byte) bool
	checks      bool // verify is the caller's (not accept-all): see GetVerified
	log         *slog.Logger

	// life is cancelled by Close; every background goroutine runs under it.
	life   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards closed against the wg.Add calls of new operations, so that
	// Close never waits on a WaitGroup that is still growing.
	mu     sync.RWMutex
	closed bool

	next        atomic.Uint64 // rotates the first copy Get tries
	background  atomic.Int64  // copies in flight after their Put returned
	readRepairs chan struct{} // semaphore of maxReadRepairs slots
	queue       *repairQueue
	journal     atomic.Pointer[journal] // nil without OpenJournal
}

var _ objstore.Store = (*Store)(nil)

// New returns a store over stores that puts each key on replicas of them
// and reports a Put durable once writeQuorum copies are. verify (nil: accept
// everything) tells whether data read for key is intact; when one is given,
// GetVerified reports what Get returns as verified, so readers skip their
// own check: verify must check all they would (the file system's checks
// that a block's content hashes to its key). New starts the
// background repairer; Close stops it.
func New(stores []objstore.Store, replicas, writeQuorum int, verify func(key string, data []byte) bool, log *slog.Logger) (*Store, error) {
	switch {
	case len(stores) == 0:
		return nil, errors.New("replicated: no stores")
	case replicas < 1 || replicas > len(stores):
		return nil, fmt.Errorf("replicated: %d replicas over %d stores: need 1 to %d", replicas, len(stores), len(stores))
	case writeQuorum < 1 || writeQuorum > replicas:
		return nil, fmt.Errorf("replicated: write quorum %d with %d replicas: need 1 to %d", writeQuorum, replicas, replicas)
	}
	for i, s := range stores {
		if s == nil {
			return nil, fmt.Errorf("replicated: store %d is nil", i)
		}
	}
	checks := verify != nil
	if verify == nil {
		verify = func(string, []byte) bool { return true }
	}
	if log == nil {
		log = slog.Default()
	}
	life, cancel := context.WithCancel(context.Background())
	s := &Store{
		stores:      slices.Clone(stores),
		replicas:    replicas,
		writeQuorum: writeQuorum,
		verify:      verify,
		checks:      checks,
		log:         log,
		life:        life,
		cancel:      cancel,
		readRepairs: make(chan struct{}, maxReadRepairs),
		queue:       newRepairQueue(),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.repairLoop()
	}()
	return s, nil
}

// String lists the backing stores.
func (s *Store) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "replicated(%d/%d:", s.replicas, s.writeQuorum)
	for i, st := range s.stores {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte(' ')
		b.WriteString(st.String())
	}
	b.WriteByte(')')
	return b.String()
}

// closeGrace is how long Close lets copies still in flight after their
// Put returned finish before it cancels them.
const closeGrace = 2 * time.Second

// Close stops the background copies and repairs (queued repairs are
// dropped: scrub restores them), waits for their goroutines, and closes
// every backing store. Copies still in flight get closeGrace to finish
// first: on healthy stores a clean close then leaves every block with all
// its copies, rather than leaving the last ones to scrub.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	for deadline := time.Now().Add(closeGrace); s.background.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	s.cancel()
	s.wg.Wait()
	var errs []error
	j := s.journal.Load()
	if n := s.queue.len(); n > 0 && j == nil {
		s.log.Warn("replicated: closing with repairs still queued; run scrub to restore them", "pending", n)
	} else if n > 0 {
		s.log.Info("replicated: closing with repairs still queued; the next start resumes them", "pending", n)
	}
	if j != nil {
		if err := j.close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, st := range s.stores {
		if err := st.Close(); err != nil {
			errs = append(errs, fmt.Errorf("replicated: close %s: %w", st, err))
		}
	}
	return errors.Join(errs...)
}

// start registers n goroutines about to be started, or reports that the
// store is closed.
func (s *Store) start(n int) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	s.wg.Add(n)
	return nil
}

// Placement returns the indexes (in the list given to New) of the stores
// that hold key, most preferred first. It is rendezvous hashing: each store
// scores the key independently, so the placement of a key depends only on
// the key and the number of stores, and is spread evenly.
func (s *Store) Placement(key string) []int {
	return placement(key, len(s.stores), s.replicas)
}

func placement(key string, nstores, replicas int) []int {
	type scored struct {
		idx   int
		score uint64
	}
	all := make([]scored, nstores)
	for i := range all {
		all[i] = scored{i, score(key, i)}
	}
	slices.SortFunc(all, func(a, b scored) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return a.idx - b.idx
	})
	out := make([]int, replicas)
	for i := range out {
		out[i] = all[i].idx
	}
	return out
}

// score is the rendezvous weight of store idx for key. FNV is stable across
// processes and releases (unlike hash/maphash), which placement must be; the
// final mix spreads FNV's weak low bits.
func score(key string, idx int) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(idx))
	_, _ = h.Write(b[:])
	_, _ = h.Write([]byte(key))
	x := h.Sum64()
	// splitmix64 finalizer.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

type putResult struct {
	store int
	err   error
}

// Put writes the copies in parallel and returns once writeQuorum of them
// are durable. The other copies go on in the background; those that fail
// are queued for repair.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("replicated: put %q: %w", key, err)
	}
	targets := s.Placement(key)
	// The copies may outlive this call, and the caller may reuse data once
	// it returns.
	buf := bytes.Clone(data)
	if buf == nil {
		buf = []byte{}
	}
	if err := s.start(len(targets) + 1); err != nil {
		return fmt.Errorf("replicated: put %q: %w", key, err)
	}
	// The copies run under the store's lifetime, and under the caller's
	// context only until the quorum is reached: a caller that returns (and
	// cancels) must not abort the remaining copies.
	pctx, pcancel := context.WithCancel(s.life)
	stopFollowing := context.AfterFunc(ctx, pcancel)
	results := make(chan putResult, len(targets))
	for _, idx := range targets {
		go func() {
			defer s.wg.Done()
			results <- putResult{idx, s.stores[idx].Put(pctx, key, buf)}
		}()
	}

	var errs []error
	ok := 0
	received := 0
	decided := false
	var failed []int // stores whose copy failed, for repair
	for !decided && received < len(targets) {
		select {
		case r := <-results:
			received++
			if r.err == nil {
				ok++
			} else {
				errs = append(errs, r.err)
				failed = append(failed, r.store)
			}
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
			decided = true
		}
		if ok >= s.writeQuorum || len(targets)-len(failed) < s.writeQuorum {
			decided = true
		}
	}
	success := ok >= s.writeQuorum
	stragglers := int64(len(targets) - received)
	reserved := false
	if success {
		stopFollowing()
		if reserved = s.reserveBackground(stragglers); !reserved {
			s.log.Debug("replicated: too many background copies; cancelling and queueing for repair", "key", key)
			pcancel()
		}
	}
	// The collector owns the remaining results: it queues repairs of
	// copies that failed once the write as a whole succeeded (a failed Put
	// is the caller's to retry), then releases the copies' context.
	go func() {
		defer s.wg.Done()
		defer pcancel()
		defer stopFollowing()
		if reserved {
			defer s.background.Add(-stragglers)
		}
		for ; received < len(targets); received++ {
			r := <-results
			if r.err != nil {
				failed = append(failed, r.store)
				if success {
					s.log.Warn("replicated: background copy failed; queued for repair", "key", key, "store", s.stores[r.store].String(), "err", r.err)
				}
			}
		}
		if success && len(failed) > 0 {
			s.enqueue(key, failed)
		}
	}()
	if success {
		return nil
	}
	return fmt.Errorf("replicated: put %q: %d of %d copies written, %d needed: %w", key, ok, len(targets), s.writeQuorum, errors.Join(errs...))
}

// reserveBackground counts n more background copies, unless that would
// pass maxBackgroundCopies.
func (s *Store) reserveBackground(n int64) bool {
	for {
		cur := s.background.Load()
		if cur+n > maxBackgroundCopies {
			return false
		}
		if s.background.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// Get returns a verified copy of key, trying its copies in turn from a
// rotating start. Missing or corrupt copies met on the way are rewritten
// in the background.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	return s.GetInto(ctx, key, nil)
}

// GetVerified implements objstore.VerifyingGetter: what GetInto returns
// passed verify, when New was given one.
func (s *Store) GetVerified(ctx context.Context, key string, buf []byte) ([]byte, bool, error) {
	data, err := s.GetInto(ctx, key, buf)
	return data, err == nil && s.checks, err
}

// GetInto is Get reading each copy into buf where its store can (see
// objstore.IntoGetter).
func (s *Store) GetInto(ctx context.Context, key string, buf []byte) ([]byte, error) {
	targets := s.Placement(key)
	first := int(s.next.Add(1) % uint64(len(targets)))
	var (
		bad      []int // missing or corrupt copies, to rewrite
		errs     []error
		missing  int
		corrupts int
	)
	for i := range targets {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("replicated: get %q: %w", key, err)
		}
		idx := targets[(first+i)%len(targets)]
		st := s.stores[idx]
		data, err := objstore.GetInto(ctx, st, key, buf)
		switch {
		case errors.Is(err, objstore.ErrNotFound):
			missing++
			bad = append(bad, idx)
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		case !s.verify(key, data):
			corrupts++
			bad = append(bad, idx)
			s.log.Warn("replicated: corrupt copy", "key", key, "store", st.String(), "size", len(data))
			errs = append(errs, fmt.Errorf("copy in %s: %w", st, ErrCorrupt))
			continue
		}
		if len(bad) > 0 {
			// The rewrite outlives this call, the caller's buffer not.
			s.readRepair(key, bytes.Clone(data), bad)
		}
		return data, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("replicated: get %q: %w", key, err)
	}
	switch {
	case missing == len(targets):
		return nil, fmt.Errorf("replicated: get %q: no store has it: %w", key, objstore.ErrNotFound)
	case corrupts > 0 && corrupts+missing == len(targets):
		return nil, fmt.Errorf("replicated: get %q: %d corrupt and %d missing copies: %w", key, corrupts, missing, ErrCorrupt)
	}
	return nil, fmt.Errorf("replicated: get %q: no readable copy (%d missing): %w", key, missing, errors.Join(errs...))
}

// readRepair rewrites good data over the copies in bad, in the background.
// When too many rewrites are already running it queues the key instead, so
// that a read storm over a lost store cannot pile up memory.
func (s *Store) readRepair(key string, data []byte, bad []int) {
	select {
	case s.readRepairs <- struct{}{}:
	default:
		s.enqueue(key, bad)
		return
	}
	if err := s.start(1); err != nil {
		<-s.readRepairs
		return
	}
	go func() {
		defer s.wg.Done()
		defer func() { <-s.readRepairs }()
		var failed []int
		for _, idx := range bad {
			if err := s.stores[idx].Put(s.life, key, data); err != nil {
				failed = append(failed, idx)
				continue
			}
			s.log.Info("replicated: repaired copy on read", "key", key, "store", s.stores[idx].String())
		}
		if len(failed) > 0 && s.life.Err() == nil {
			s.enqueue(key, failed)
		}
	}()
}

// Delete removes key from every store, not only from its placement, so
// that copies left by an earlier placement or a stray repair go too.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("replicated: delete %q: %w", key, err)
	}
	// A queued repair must not bring the object back. A repair already
	// under way can still write one copy after this Delete; that copy is
	// unreferenced, and gc's sweep of unreferenced objects removes it.
	s.queue.remove(key)
	errs := make([]error, len(s.stores))
	var wg sync.WaitGroup
	for i, st := range s.stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := st.Delete(ctx, key); err != nil {
				errs[i] = fmt.Errorf("delete from %s: %w", st, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("replicated: delete %q: %w", key, err)
	}
	return nil
}

// ScrubResult counts what Scrub found for one key.
type ScrubResult struct {
	OK       int // copies present and verified
	Missing  int // copies absent
	Corrupt  int // copies present that failed verification
	Restored int // missing or corrupt copies rewritten from a good one
	Failed   int // copies that could not be read or rewritten (store errors)
	Lost     bool
}

// Scrub reads every copy of key, verifies it, and rewrites the missing and
// corrupt ones from a good copy. Lost is set when no copy is good; an error
// is returned only when ctx ends.
func (s *Store) Scrub(ctx context.Context, key string) (ScrubResult, error) {
	var r ScrubResult
	var good []byte
	var bad []int
	for _, idx := range s.Placement(key) {
		if err := ctx.Err(); err != nil {
			return r, fmt.Errorf("replicated: scrub %q: %w", key, err)
		}
		st := s.stores[idx]
		data, err := st.Get(ctx, key)
		switch {
		case errors.Is(err, objstore.ErrNotFound):
			r.Missing++
			bad = append(bad, idx)
		case err != nil:
			if ctx.Err() != nil {
				return r, fmt.Errorf("replicated: scrub %q: %w", key, ctx.Err())
			}
			r.Failed++
			s.log.Warn("replicated: scrub cannot read copy", "key", key, "store", st.String(), "err", err)
		case !s.verify(key, data):
			r.Corrupt++
			bad = append(bad, idx)
			s.log.Warn("replicated: scrub found corrupt copy", "key", key, "store", st.String(), "size", len(data))
		default:
			r.OK++
			if good == nil {
				good = data
			}
		}
	}
	if good == nil {
		r.Lost = true
		return r, nil
	}
	for _, idx := range bad {
		st := s.stores[idx]
		if err := st.Put(ctx, key, good); err != nil {
			if ctx.Err() != nil {
				return r, fmt.Errorf("replicated: scrub %q: %w", key, ctx.Err())
			}
			r.Failed++
			s.log.Warn("replicated: scrub cannot restore copy", "key", key, "store", st.String(), "err", err)
			continue
		}
		r.Restored++
	}
	return r, nil
}

// Pending reports how many keys wait in the repair queue.
func (s *Store) Pending() int { return s.queue.len() }
