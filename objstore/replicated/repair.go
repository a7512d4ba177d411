package replicated

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/objfs/objfs/objstore"
)

// Repair queue limits. The queue lives in memory; with OpenJournal it is
// also written to a journal, and the next start resumes it (see journal).
const (
	maxQueued      = 100_000 // keys; beyond this new repairs are dropped (scrub finds them)
	repairAttempts = 8
	repairBackoff  = 100 * time.Millisecond // doubled after each failed attempt
	maxBackoff     = 30 * time.Second
	// repairTimeout keeps one hung store from stalling every other repair.
	repairTimeout = 2 * time.Minute
)

type repairItem struct {
	targets   []int // store indexes whose copy is missing or bad
	attempts  int
	notBefore time.Time
}

// repairQueue holds the keys with copies to rewrite, one entry per key.
type repairQueue struct {
	mu      sync.Mutex
	items   map[string]*repairItem
	wake    chan struct{} // signalled (without blocking) when an item is added
	dropped bool          // a full-queue warning is pending
}

func newRepairQueue() *repairQueue {
	return &repairQueue{items: map[string]*repairItem{}, wake: make(chan struct{}, 1)}
}

// add queues key for rewriting on targets, merging with an entry already
// queued for it. It reports false when the queue is full.
func (q *repairQueue) add(key string, targets []int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if it, ok := q.items[key]; ok {
		it.targets = mergeTargets(it.targets, targets)
		return true
	}
	if len(q.items) >= maxQueued {
		q.dropped = true
		return false
	}
	q.items[key] = &repairItem{targets: slices.Clone(targets)}
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

func (q *repairQueue) remove(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.items, key)
}

func (q *repairQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// due removes and returns up to limit items whose backoff has passed, and
// the time the earliest remaining item becomes due (zero if none).
func (q *repairQueue) due(now time.Time, limit int) (map[string]*repairItem, time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := map[string]*repairItem{}
	var next time.Time
	for k, it := range q.items {
		if !it.notBefore.After(now) && len(out) < limit {
			out[k] = it
			delete(q.items, k)
			continue
		}
		if next.IsZero() || it.notBefore.Before(next) {
			next = it.notBefore
		}
	}
	return out, next
}

// retry puts a failed item back with a longer backoff, unless it has had
// all its attempts or the key was queued again meanwhile (the two merge).
func (q *repairQueue) retry(key string, it *repairItem, now time.Time) bool {
	it.attempts++
	if it.attempts >= repairAttempts {
		return false
	}
	it.notBefore = now.Add(min(repairBackoff<<(it.attempts-1), maxBackoff))
	q.mu.Lock()
	defer q.mu.Unlock()
	if cur, ok := q.items[key]; ok {
		cur.targets = mergeTargets(cur.targets, it.targets)
		return true
	}
	q.items[key] = it
	return true
}

// enqueue queues key's copies on targets for repair, and journals them.
func (s *Store) enqueue(key string, targets []int) {
	if !s.queue.add(key, targets) {
		return // full: the warning follows, and scrub finds them
	}
	if j := s.journal.Load(); j != nil {
		j.add(key, targets)
	}
}

// OpenJournal keeps the repair queue in the journal at path from now on,
// and queues what an earlier run left there. Call it once, before use.
func (s *Store) OpenJournal(path string) error {
	j, left, err := openJournal(path, s.log)
	if err != nil {
		return err
	}
	if !s.journal.CompareAndSwap(nil, j) {
		_ = j.close()
		return errors.New("replicated: a repair journal is open already")
	}
	for key, targets := range left {
		if slices.ContainsFunc(targets, func(t int) bool { return t >= len(s.stores) }) {
			j.done(key, targets) // a journal of another store list: scrub's job
			continue
		}
		s.queue.add(key, targets)
	}
	if len(left) > 0 {
		s.log.Info("replicated: resuming repairs left by the last run", "keys", len(left))
	}
	return nil
}

// repairLoop runs until Close, rewriting queued copies from a good one.
func (s *Store) repairLoop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		batch, next := s.queue.due(now, 64)
		for key, it := range batch {
			if s.life.Err() != nil {
				return
			}
			ctx, cancel := context.WithTimeout(s.life, repairTimeout)
			err := s.repairOne(ctx, key, it.targets)
			cancel()
			if j := s.journal.Load(); j != nil && err == nil {
				j.done(key, it.targets)
			}
			if err != nil {
				if s.life.Err() != nil {
					return
				}
				if !s.queue.retry(key, it, time.Now()) {
					s.log.Warn("replicated: giving up on repair; scrub will restore it", "key", key, "attempts", it.attempts, "err", err)
				} else {
					s.log.Debug("replicated: repair failed; will retry", "key", key, "attempt", it.attempts, "err", err)
				}
			}
		}
		s.queue.mu.Lock()
		if s.queue.dropped {
			s.queue.dropped = false
			s.log.Warn("replicated: repair queue full; some repairs were dropped (run scrub)")
		}
		s.queue.mu.Unlock()
		if len(batch) > 0 {
			continue // more may be due already
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), time.Millisecond)
		}
		// Since Go 1.23 Reset also discards a stale expiry, so no drain.
		timer.Reset(wait)
		select {
		case <-s.life.Done():
			return
		case <-s.queue.wake:
		case <-timer.C:
		}
	}
}

// errNoGoodCopy means a repair found nothing to copy from.
var errNoGoodCopy = errors.New("no good copy to repair from")

// repairOne copies key from a verified copy onto each store in targets.
// A key that no store has any more (deleted meanwhile) needs no repair,
// nor does a target that holds a good copy already: restored by a scrub,
// or a copy that landed after all (a journal replayed after a restart may
// name repairs done meanwhile; each would rewrite a whole block).
func (s *Store) repairOne(ctx context.Context, key string, targets []int) error {
	targets = slices.DeleteFunc(slices.Clone(targets), func(idx int) bool {
		data, err := s.stores[idx].Get(ctx, key)
		return err == nil && s.verify(key, data)
	})
	if len(targets) == 0 {
		return nil
	}
	var good []byte
	missing := 0
	placement := s.Placement(key)
	for _, idx := range placement {
		if slices.Contains(targets, idx) {
			continue
		}
		data, err := s.stores[idx].Get(ctx, key)
		if errors.Is(err, objstore.ErrNotFound) {
			missing++
			continue
		}
		if err == nil && s.verify(key, data) {
			good = data
			break
		}
	}
	if good == nil {
		if missing == len(placement)-len(targets) {
			return nil // deleted everywhere else: nothing to restore
		}
		return errNoGoodCopy
	}
	var errs []error
	for _, idx := range targets {
		if err := s.stores[idx].Put(ctx, key, good); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Info("replicated: repaired copy", "key", key, "store", s.stores[idx].String())
	}
	return errors.Join(errs...)
}
